//! Path normalisation before routing and classification (RFC 3986 §6.2.2): percent-encoded
//! unreserved characters are decoded, other escapes upper-cased, empty segments collapsed and
//! dot segments resolved, so that `%2e%2e`, `..` or `//` can neither climb out of an
//! instance's root nor disguise a counted path.

use std::borrow::Cow;

/// Why a path cannot be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// A `..` segment would climb above the root it is resolved in.
    AboveRoot,
    /// A `%` not followed by two hex digits.
    BadEscape,
}

impl PathError {
    /// One sentence for the problem's `detail`.
    pub fn describe(self) -> &'static str {
        match self {
            PathError::AboveRoot => "the path climbs above the instance's root with '..'",
            PathError::BadEscape => "the path has a '%' that is not followed by two hex digits",
        }
    }
}

/// Normalises an absolute path (without query); borrows when it is already normal.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    let mut decoded = decode_unreserved(path)?;
    if !decoded.starts_with('/') {
        decoded.insert(0, '/');
    }
    let mut out: Vec<&str> = Vec::new();
    for segment in decoded.split('/').skip(1) {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop().ok_or(PathError::AboveRoot)?;
            }
            _ => out.push(segment),
        }
    }
    let trailing = decoded.len() > 1
        && (decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/.."));
    let mut normal = String::with_capacity(decoded.len());
    for segment in &out {
        normal.push('/');
        normal.push_str(segment);
    }
    if normal.is_empty() || (trailing && !out.is_empty()) {
        normal.push('/');
    }
    Ok(Cow::Owned(normal))
}

/// Splits a normal path into its first segment and the rest (`/a/b?` → `a`, `/b`).
pub fn split_first(path: &str) -> (&str, &str) {
    let tail = path.strip_prefix('/').unwrap_or(path);
    match tail.find('/') {
        Some(i) => (&tail[..i], &tail[i..]),
        None => (tail, "/"),
    }
}

/// Decodes one path segment (an instance id); `None` if an escape is broken or is not an
/// unreserved character, since no id contains one.
pub fn decode_segment(segment: &str) -> Option<Cow<'_, str>> {
    if !segment.contains('%') {
        return Some(Cow::Borrowed(segment));
    }
    let decoded = decode_unreserved(segment).ok()?;
    (!decoded.contains('%')).then_some(Cow::Owned(decoded))
}

/// Fast check: no escapes, no empty or dot segments.
fn is_normal(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains('%')
        && !path.contains("//")
        && !path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
}

/// Decodes `%XX` for unreserved characters and upper-cases the hex of every other escape.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            let next = path[i..].find('%').map_or(bytes.len(), |offset| i + offset);
            out.push_str(&path[i..next]);
            i = next;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
        let value = match (hex_value(hex[0]), hex_value(hex[1])) {
            (Some(high), Some(low)) => high << 4 | low,
            _ => return Err(PathError::BadEscape),
        };
        if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(value));
        } else {
            out.push('%');
            out.push(char::from(hex[0].to_ascii_uppercase()));
            out.push(char::from(hex[1].to_ascii_uppercase()));
        }
        i += 3;
    }
    Ok(out)
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for path in ["/", "/jira-1/rest/api/2/issue", "/a/b/", "/a.b/c..d/.e"] {
            assert!(
                matches!(normalize(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn dot_segments_and_empty_segments_are_resolved() {
        let cases = [
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/a//b", "/a/b"),
            ("//a///b//", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a/b/../../c", "/c"),
            ("/a/..", "/"),
        ];
        for (path, expected) in cases {
            assert_eq!(normalize(path).as_deref(), Ok(expected), "{path}");
        }
    }

    #[test]
    fn encoded_dots_and_unreserved_characters_are_decoded() {
        assert_eq!(normalize("/a/%2e%2E/b").as_deref(), Ok("/b"));
        assert_eq!(
            normalize("/rest/api/2/%69ssue").as_deref(),
            Ok("/rest/api/2/issue")
        );
        assert_eq!(normalize("/a/%7Euser").as_deref(), Ok("/a/~user"));
    }

    #[test]
    fn encoded_separators_stay_encoded_inside_their_segment() {
        assert_eq!(normalize("/jira-1%2fx").as_deref(), Ok("/jira-1%2Fx"));
        assert_eq!(split_first("/jira-1%2Fx"), ("jira-1%2Fx", "/"));
        assert_eq!(normalize("/a/%2e%2e%2fb").as_deref(), Ok("/a/..%2Fb"));
        assert_eq!(normalize("/a/b%5c..").as_deref(), Ok("/a/b%5C.."));
    }

    #[test]
    fn climbing_above_the_root_is_refused() {
        assert_eq!(normalize("/.."), Err(PathError::AboveRoot));
        assert_eq!(normalize("/a/../../b"), Err(PathError::AboveRoot));
        assert_eq!(normalize("/%2e%2e/jira-1/x"), Err(PathError::AboveRoot));
    }

    #[test]
    fn broken_escapes_are_refused() {
        assert_eq!(normalize("/a%2"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadEscape));
    }

    #[test]
    fn segments_decode_only_to_unreserved_characters() {
        assert_eq!(decode_segment("jira-1").as_deref(), Some("jira-1"));
        assert_eq!(decode_segment("%6Aira-1").as_deref(), Some("jira-1"));
        assert_eq!(decode_segment("%2e%2e").as_deref(), Some(".."));
        assert_eq!(decode_segment("jira-1%2fx"), None);
        assert_eq!(decode_segment("jira%"), None);
    }

    #[test]
    fn the_first_segment_is_split_off() {
        assert_eq!(split_first("/jira-1/rest/api"), ("jira-1", "/rest/api"));
        assert_eq!(split_first("/jira-1"), ("jira-1", "/"));
        assert_eq!(split_first("/"), ("", "/"));
    }
}
