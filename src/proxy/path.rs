//! Path normalisation for routing, classification and forwarding alike (RFC 3986, section 6.2.2
//! plus the ways real targets read paths):
//!
//! - escapes of unreserved characters are decoded, other escapes upper-cased;
//! - empty, `.` and `..` segments are resolved within the instance's root, and a `..` above
//!   that root is refused;
//! - encoded separators (`%2F`, `%5C`) stay as sent (identifiers such as `group%2Fproject`
//!   work), but a segment that, split at an encoded separator or a backslash, or with its
//!   `;parameters` removed, has a `.` or `..` part (`..%2F`, `%2e%2e%5c`, `..\`, `..;`) is
//!   refused, so no target, however it decodes, is reached outside the instance's base path;
//! - `%00` is refused (targets that stop at a NUL would see another path).
//!
//! What is forwarded is the normalised path; what is classified is the same path as a target
//! reads it ([`Normal::classify`]): without `;parameters` (Tomcat strips them), every other
//! escape decoded (`%24batch` is `$batch`, `%28` is `(`, `%3B` is a `;` of the data) and no
//! empty segments; plus, when the path carries encoded separators, backslashes or `%3B`, the
//! spelling a target that decodes first would see, splitting at the separators and stripping
//! parameters at the decoded `;` ([`Normal::variant`]). A request counts under either.

use std::borrow::Cow;

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// A `..` segment would climb above the root it is resolved in: 404.
    AboveRoot,
    /// A `%` not followed by two hex digits: 400.
    BadEscape,
    /// A dot segment hidden behind an encoded separator, a backslash or parameters: 400.
    HiddenDotSegment,
    /// An encoded NUL: 400.
    Nul,
}

impl PathError {
    /// One sentence for the problem's `detail`.
    pub fn describe(self) -> &'static str {
        match self {
            PathError::AboveRoot => "the path climbs above the instance's root with '..'",
            PathError::BadEscape => "the path has a '%' that is not followed by two hex digits",
            PathError::HiddenDotSegment => "the path has a '.' or '..' segment hidden behind an encoded separator, a backslash or ';' parameters",
            PathError::Nul => "the path has an encoded NUL (%00)",
        }
    }
}

/// A normalised path relative to an instance's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normal<'a> {
    /// What the target receives (after the base path).
    pub forward: Cow<'a, str>,
    /// `forward` as entity patterns see it, where that differs: without `;parameters` or
    /// empty segments, with escapes other than of `/` and `\` decoded.
    pub classified: Option<String>,
    /// The classification path as a target that decodes first would see it (`%2F`/`%5C` and
    /// `\` as `/`, a decoded `%3B` starting parameters), when the path has any of them.
    pub variant: Option<String>,
}

impl Normal<'_> {
    /// What entity patterns are matched against (see [`Normal::classified`]).
    pub fn classify(&self) -> &str {
        self.classified.as_deref().unwrap_or(&self.forward)
    }
}

/// Normalises an absolute path (without query); borrows when it is already normal.
pub fn normalize(path: &str) -> Result<Normal<'_>, PathError> {
    if is_normal(path) {
        return Ok(Normal {
            forward: Cow::Borrowed(path),
            classified: None,
            variant: None,
        });
    }
    let decoded = decode_unreserved(path)?;
    let decoded = if decoded.starts_with('/') {
        decoded
    } else {
        format!("/{decoded}")
    };
    let mut out: Vec<&str> = Vec::new();
    let mut separators = false;
    for segment in decoded.split('/').skip(1) {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop().ok_or(PathError::AboveRoot)?;
            }
            _ => {
                separators |= check_segment(segment)?;
                out.push(segment);
            }
        }
    }
    let trailing = decoded.len() > 1
        && (decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/.."));
    let forward = join(out.iter().copied(), trailing);
    let classified = forward
        .contains([';', '%'])
        .then(|| as_classified(out.iter().copied(), trailing))
        .filter(|classified| *classified != forward);
    let encoded_semicolon = out.iter().any(|segment| segment.contains("%3B"));
    let variant = (separators || encoded_semicolon).then(|| decoded_separators(&out, trailing));
    Ok(Normal {
        forward: Cow::Owned(forward),
        classified,
        variant,
    })
}

/// Splits a path into its first segment and the rest (`/a/b` → `a`, `/b`).
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

/// Fast check: nothing to decode, resolve, strip or refuse.
fn is_normal(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains(['%', ';', '\\'])
        && !path.contains("//")
        && !path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
}

/// Refuses a segment that hides a dot segment; returns whether it holds an encoded separator
/// or a backslash (so the decoded-separator spelling must be classified too).
fn check_segment(segment: &str) -> Result<bool, PathError> {
    let separators = segment.contains("%2F") || segment.contains("%5C") || segment.contains('\\');
    if !separators && !segment.contains(';') && !segment.contains("%3B") {
        return Ok(false);
    }
    for part in separator_parts(segment) {
        let bare = strip_params(part);
        let bare = bare.split("%3B").next().unwrap_or(bare);
        if bare == "." || bare == ".." {
            return Err(PathError::HiddenDotSegment);
        }
    }
    Ok(separators)
}

/// The parts of a segment between encoded separators and backslashes.
fn separator_parts(segment: &str) -> impl Iterator<Item = &str> {
    segment
        .split('\\')
        .flat_map(|part| part.split("%2F"))
        .flat_map(|part| part.split("%5C"))
}

/// A segment without its `;parameters`.
fn strip_params(segment: &str) -> &str {
    segment.split(';').next().unwrap_or(segment)
}

/// Joins segments into an absolute path, with a trailing `/` where the original had one.
fn join<'s>(segments: impl Iterator<Item = &'s str>, trailing: bool) -> String {
    let mut path = String::new();
    let mut any = false;
    for segment in segments {
        path.push('/');
        path.push_str(segment);
        any = true;
    }
    if !any || trailing {
        path.push('/');
    }
    path
}

/// The classification path a target that decodes first would see: split at encoded
/// separators, parameters stripped at a decoded `%3B` too.
fn decoded_separators(segments: &[&str], trailing: bool) -> String {
    join_read(
        segments
            .iter()
            .flat_map(|segment| separator_parts(segment))
            .map(|part| classified_segment(part, true)),
        trailing,
    )
}

/// Joins segments as a target that strips parameters before it decodes reads them (see
/// [`classified_segment`]).
fn as_classified<'s>(segments: impl Iterator<Item = &'s str>, trailing: bool) -> String {
    join_read(
        segments.map(|segment| classified_segment(segment, false)),
        trailing,
    )
}

/// Joins segments as read, leaving out those that come to nothing.
fn join_read<'s>(segments: impl Iterator<Item = Cow<'s, str>>, trailing: bool) -> String {
    let read: Vec<Cow<'s, str>> = segments.filter(|segment| !segment.is_empty()).collect();
    join(read.iter().map(|segment| &**segment), trailing)
}

/// One normalised segment as a target reads it: up to its `;parameters` (a literal `;`, and
/// a `%3B` where `decoded_semicolon_starts_parameters`, else that is a `;` of the data), every
/// escape but those of `/` and `\` decoded (the separators are split by
/// [`decoded_separators`] for targets that decode them). Escapes are well-formed here.
fn classified_segment(segment: &str, decoded_semicolon_starts_parameters: bool) -> Cow<'_, str> {
    if !segment.contains([';', '%']) {
        return Cow::Borrowed(segment);
    }
    let bytes = segment.as_bytes();
    let mut read = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b';' => break,
            b'%' => {
                let value = bytes
                    .get(i + 1..i + 3)
                    .and_then(|hex| Some(hex_value(hex[0])? << 4 | hex_value(hex[1])?));
                match value {
                    Some(b';') if decoded_semicolon_starts_parameters => break,
                    Some(b'/' | b'\\') => read.extend_from_slice(&bytes[i..i + 3]),
                    Some(value) => read.push(value),
                    None => {
                        read.push(b'%');
                        i += 1;
                        continue;
                    }
                }
                i += 3;
            }
            byte => {
                read.push(byte);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&read).into_owned())
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
        if value == 0 {
            return Err(PathError::Nul);
        }
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
    use proptest::prelude::*;

    use super::*;

    fn forward(path: &str) -> Result<String, PathError> {
        normalize(path).map(|n| n.forward.into_owned())
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for path in ["/", "/jira-1/rest/api/2/issue", "/a/b/", "/a.b/c..d/.e"] {
            let normal = normalize(path).unwrap();
            assert!(
                matches!(normal.forward, Cow::Borrowed(p) if p == path),
                "{path}"
            );
            assert_eq!(normal.classify(), path);
            assert_eq!(normal.classified, None);
            assert_eq!(normal.variant, None);
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
            ("/a;x/../b", "/b"),
        ];
        for (path, expected) in cases {
            assert_eq!(forward(path).as_deref(), Ok(expected), "{path}");
        }
    }

    #[test]
    fn encoded_dots_and_unreserved_characters_are_decoded() {
        assert_eq!(forward("/a/%2e%2E/b").as_deref(), Ok("/b"));
        assert_eq!(forward("/a/.%2e/b").as_deref(), Ok("/b"));
        assert_eq!(
            forward("/rest/api/2/%69ssue").as_deref(),
            Ok("/rest/api/2/issue")
        );
        assert_eq!(forward("/a/%7Euser").as_deref(), Ok("/a/~user"));
    }

    #[test]
    fn encoded_separators_stay_encoded_and_are_classified_both_ways() {
        let normal = normalize("/api/v4/projects/group%2fproject/issues").unwrap();
        assert_eq!(normal.forward, "/api/v4/projects/group%2Fproject/issues");
        assert_eq!(normal.classify(), "/api/v4/projects/group%2Fproject/issues");
        assert_eq!(
            normal.variant.as_deref(),
            Some("/api/v4/projects/group/project/issues")
        );
        let spelled = normalize("/rest%2Fapi%5C2\\issue").unwrap();
        assert_eq!(spelled.variant.as_deref(), Some("/rest/api/2/issue"));
    }

    #[test]
    fn dot_segments_hidden_behind_separators_or_parameters_are_refused() {
        for path in [
            "/..%2Fservicenow-1%2Fsecret",
            "/a/%2e%2e%2fb",
            "/a/..%5Cb",
            "/a/%2e%2e%5cb",
            "/a/..\\b",
            "/a/.\\b",
            "/a/b%2F..",
            "/a/..;/b",
            "/a/.;x/b",
            "/a/..;jsessionid=1/b",
            "/a/..%3B/b",
            "/a/b%2F..;x",
        ] {
            assert_eq!(
                normalize(path).map(|n| n.forward.into_owned()),
                Err(PathError::HiddenDotSegment),
                "{path}"
            );
        }
    }

    #[test]
    fn parameters_are_kept_for_the_target_and_ignored_for_classification() {
        let normal = normalize("/rest/api/2/issue;jsessionid=ABC").unwrap();
        assert_eq!(normal.forward, "/rest/api/2/issue;jsessionid=ABC");
        assert_eq!(normal.classify(), "/rest/api/2/issue");
        let inner = normalize("/rest;x=1/api/2/issue/").unwrap();
        assert_eq!(inner.classify(), "/rest/api/2/issue/");
        // An encoded `;` is data to a target that strips before it decodes (or never
        // strips), and starts parameters for one that decodes first: both are classified.
        let encoded = normalize("/rest/api/2/issue%3bx=1").unwrap();
        assert_eq!(encoded.forward, "/rest/api/2/issue%3Bx=1");
        assert_eq!(encoded.classify(), "/rest/api/2/issue;x=1");
        assert_eq!(encoded.variant.as_deref(), Some("/rest/api/2/issue"));
        let value = normalize("/sobjects/Account/Ext__c/%3Babc").unwrap();
        assert_eq!(value.classify(), "/sobjects/Account/Ext__c/;abc");
        assert_eq!(value.variant.as_deref(), Some("/sobjects/Account/Ext__c"));
        // A segment that is all parameters is read as an empty one, which targets skip.
        assert_eq!(
            normalize("/rest/;x/api/2/issue").unwrap().classify(),
            "/rest/api/2/issue"
        );
    }

    #[test]
    fn escapes_a_target_decodes_are_classified_decoded_and_forwarded_as_sent() {
        for (path, forwarded, classified) in [
            (
                "/api/data/v9.2/%24batch",
                "/api/data/v9.2/%24batch",
                "/api/data/v9.2/$batch",
            ),
            (
                "/_api/web/lists/getbytitle%28%27Tasks%27%29/items",
                "/_api/web/lists/getbytitle%28%27Tasks%27%29/items",
                "/_api/web/lists/getbytitle('Tasks')/items",
            ),
            (
                "/v1/documents%3acommit",
                "/v1/documents%3Acommit",
                "/v1/documents:commit",
            ),
            (
                "/b%C3%BCro/new%20item",
                "/b%C3%BCro/new%20item",
                "/büro/new item",
            ),
            ("/a/%25", "/a/%25", "/a/%"),
        ] {
            let normal = normalize(path).unwrap();
            assert_eq!(normal.forward, forwarded, "{path}");
            assert_eq!(normal.classify(), classified, "{path}");
        }
        // Encoded separators stay encoded in the plain spelling; the variant splits them.
        let both = normalize("/a%2Fb%24").unwrap();
        assert_eq!(both.classify(), "/a%2Fb$");
        assert_eq!(both.variant.as_deref(), Some("/a/b$"));
    }

    #[test]
    fn climbing_above_the_root_is_refused() {
        assert_eq!(forward("/.."), Err(PathError::AboveRoot));
        assert_eq!(forward("/a/../../b"), Err(PathError::AboveRoot));
        assert_eq!(forward("/%2e%2e/jira-1/x"), Err(PathError::AboveRoot));
    }

    #[test]
    fn broken_escapes_and_nul_are_refused() {
        assert_eq!(forward("/a%2"), Err(PathError::BadEscape));
        assert_eq!(forward("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(forward("/a%00b"), Err(PathError::Nul));
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

    /// How a target that decodes once, reads `\` as `/` and strips `;parameters` resolves a
    /// path it receives: the segments it ends up at, or `None` where it climbs above its root.
    fn as_a_lenient_target_resolves(path: &str) -> Option<Vec<String>> {
        let mut bytes = Vec::new();
        let raw = path.as_bytes();
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'%' && i + 2 < raw.len() {
                let hex = std::str::from_utf8(&raw[i + 1..i + 3]).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            } else {
                bytes.push(raw[i]);
                i += 1;
            }
        }
        let text = String::from_utf8_lossy(&bytes).replace('\\', "/");
        let mut out: Vec<String> = Vec::new();
        for segment in text.split('/') {
            match segment.split(';').next().unwrap_or("") {
                "" | "." => {}
                ".." => {
                    out.pop()?;
                }
                other => out.push(other.to_owned()),
            }
        }
        Some(out)
    }

    /// Path pieces that hostile requests combine.
    fn piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "/", "a", "b", "..", ".", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "\\", ";", ";x=1",
            "%3b", "%25", "%2e%2e", "issue", "%20", "~", "%7e", "//", "%24", "$", "%28", "%3A",
            "%C3%BC", "%41",
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        /// Whatever is forwarded resolves under the instance's root for a target that
        /// decodes once, treats `\` as `/` and strips `;` parameters.
        #[test]
        fn what_is_forwarded_never_resolves_above_the_root(pieces in prop::collection::vec(piece(), 0..12)) {
            let path = format!("/{}", pieces.concat());
            if let Ok(normal) = normalize(&path) {
                prop_assert!(
                    as_a_lenient_target_resolves(&normal.forward).is_some(),
                    "{path} was forwarded as {} which climbs out", normal.forward
                );
            }
        }

        /// A counted path under any spelling that reaches the target is classified as that
        /// path: the segments patterns are matched against, taken literally, are those the
        /// target ends up at (the decoded-separator variant where there is one).
        #[test]
        fn every_spelling_that_reaches_the_target_is_classified_as_what_it_resolves_to(
            pieces in prop::collection::vec(piece(), 0..12)
        ) {
            let path = format!("/{}", pieces.concat());
            if let Ok(normal) = normalize(&path) {
                let target = as_a_lenient_target_resolves(&normal.forward).unwrap_or_default();
                let classified = normal.variant.as_deref().unwrap_or(normal.classify());
                let literally: Vec<String> = classified
                    .split('/')
                    .filter(|segment| !segment.is_empty())
                    .map(str::to_owned)
                    .collect();
                prop_assert_eq!(literally, target, "{} classified as {}", path, classified);
            }
        }

        /// Arbitrary text never panics the normaliser.
        #[test]
        fn arbitrary_paths_never_panic(path in "\\PC{0,64}") {
            let _ = normalize(&path);
            let _ = decode_segment(&path);
            let _ = split_first(&path);
        }
    }
}
