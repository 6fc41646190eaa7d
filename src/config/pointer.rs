//! JSON pointers (RFC 6901) in the config file: where a bulk load's records are in its body,
//! and where the created ones are in the target's answer. Parsed once when the config is
//! read, so a bad pointer is an error naming its key, and the request path only compares
//! reference tokens.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A parsed JSON pointer: `""` is the whole document, `/a/0/b~1c` is member `a`, element (or
/// member) `0`, member `b/c`.
#[derive(Clone, PartialEq, Eq)]
pub struct JsonPointer {
    /// The pointer as written.
    text: Box<str>,
    /// The reference tokens, unescaped (`~1` → `/`, `~0` → `~`).
    tokens: Box<[Box<str>]>,
}

/// Why text is not a JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    /// A non-empty pointer must start with `/`.
    #[error("{0:?} is not a JSON pointer: it must be empty (the whole document) or start with '/' (e.g. \"/records\")")]
    NoLeadingSlash(String),
    /// `~` must be followed by `0` or `1`.
    #[error("{0:?} is not a JSON pointer: '~' must be followed by 0 ('~') or 1 ('/')")]
    BadEscape(String),
}

impl JsonPointer {
    /// Parses RFC 6901 text.
    pub fn parse(text: &str) -> Result<JsonPointer, PointerError> {
        if text.is_empty() {
            return Ok(JsonPointer {
                text: "".into(),
                tokens: Box::new([]),
            });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(PointerError::NoLeadingSlash(text.to_owned()));
        };
        let tokens = rest
            .split('/')
            .map(|token| unescape(token).ok_or_else(|| PointerError::BadEscape(text.to_owned())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(JsonPointer {
            text: text.into(),
            tokens: tokens.into(),
        })
    }

    /// The reference tokens, unescaped, outermost first.
    pub fn tokens(&self) -> &[Box<str>] {
        &self.tokens
    }

    /// The pointer as written in the config.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A reference token with `~1` and `~0` decoded; `None` for a `~` followed by anything else.
fn unescape(token: &str) -> Option<Box<str>> {
    if !token.contains('~') {
        return Some(token.into());
    }
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out.into())
}

impl fmt::Debug for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for JsonPointer {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<JsonPointer, D::Error> {
        let text = String::deserialize(de)?;
        JsonPointer::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn tokens(text: &str) -> Vec<String> {
        JsonPointer::parse(text)
            .unwrap()
            .tokens()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn the_rfc_examples_parse_to_their_tokens() {
        assert!(tokens("").is_empty());
        assert_eq!(tokens("/foo"), ["foo"]);
        assert_eq!(tokens("/foo/0"), ["foo", "0"]);
        assert_eq!(tokens("/"), [""]);
        assert_eq!(tokens("/a~1b"), ["a/b"]);
        assert_eq!(tokens("/m~0n"), ["m~n"]);
        assert_eq!(
            tokens("/~01"),
            ["~1"],
            "~0 is decoded last: ~01 is ~1, not /"
        );
        assert_eq!(tokens("/issueUpdates"), ["issueUpdates"]);
    }

    #[test]
    fn bad_pointers_say_what_is_wrong() {
        assert_eq!(
            JsonPointer::parse("records"),
            Err(PointerError::NoLeadingSlash("records".into()))
        );
        assert_eq!(
            JsonPointer::parse("/a~2"),
            Err(PointerError::BadEscape("/a~2".into()))
        );
        assert_eq!(
            JsonPointer::parse("/a~"),
            Err(PointerError::BadEscape("/a~".into()))
        );
    }

    proptest! {
        /// Escaping tokens and parsing the pointer gives the tokens back, whatever they hold.
        #[test]
        fn escaped_tokens_round_trip(raw in prop::collection::vec(".{0,8}", 0..5)) {
            let text: String = raw
                .iter()
                .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
                .collect();
            let parsed = JsonPointer::parse(&text).unwrap();
            let back: Vec<&str> = parsed.tokens().iter().map(|t| &**t).collect();
            prop_assert_eq!(back, raw.iter().map(String::as_str).collect::<Vec<_>>());
            prop_assert_eq!(parsed.as_str(), text.as_str());
        }

        /// No text makes the parser panic; what it accepts is empty or starts with '/'.
        #[test]
        fn any_text_parses_or_is_refused(text in ".{0,24}") {
            if JsonPointer::parse(&text).is_ok() {
                prop_assert!(text.is_empty() || text.starts_with('/'));
            }
        }
    }
}
