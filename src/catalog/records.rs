//! Counting the records of a bulk load: the elements of the array a JSON pointer names in a
//! request body, and the created elements (optionally those whose flag is `true`) in the
//! target's answer.
//!
//! The body is walked once by serde_json's streaming parser: members and elements off the
//! pointer's path are skipped without being built (`IgnoredAny`), and member names are compared
//! where they lie, so counting a 16 MiB body allocates nothing per element. The whole body is
//! still parsed, so a body that is not JSON is refused as one, trailing bytes included.
//!
//! A member on the pointer's path that the body names twice, or in two spellings that differ
//! only in case (ASCII, or Unicode simple case folding: `recordſ` with a long s, which Go's
//! `encoding/json` reads as `records`), is refused as ambiguous: targets differ in which of the two they read
//! (first, last, or either case), and counting one while the target loads the other would let
//! a batch through as a smaller one.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::config::JsonPointer;

/// Why a body's records cannot be counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    /// The body is not JSON.
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// Nothing is at the pointer.
    #[error("the body has no value at {0:?}")]
    Missing(String),
    /// The value at the pointer is not an array.
    #[error("the value at {pointer:?} is {found}, not an array of records")]
    NotArray {
        /// The pointer, as configured.
        pointer: String,
        /// What is there instead (`an object`, `a string`, …).
        found: &'static str,
    },
    /// A member on the pointer's path is named more than once.
    #[error("the body names member {member:?} more than once (or in two spellings of case): which one the target reads is not certain")]
    Ambiguous {
        /// The member, as the pointer spells it.
        member: String,
    },
}

/// The number of elements of the array at `at` in `body`.
pub fn count_records(body: &[u8], at: &JsonPointer) -> Result<u64, RecordsError> {
    walk(body, at, &Elements { flag: None })
}

/// The number of elements of the array at `at` in `body` (a target's answer), counting only
/// those whose value at `flag` is `true` when a flag is given.
pub fn count_accepted(
    body: &[u8],
    at: &JsonPointer,
    flag: Option<&JsonPointer>,
) -> Result<u64, RecordsError> {
    walk(body, at, &Elements { flag })
}

/// Walks `body` along `at` and applies `target` to the value there.
fn walk<T: Target>(body: &[u8], at: &JsonPointer, target: &T) -> Result<u64, RecordsError> {
    // JSON is UTF-8 (RFC 8259), and serde_json skips the strings it ignores unchecked.
    if let Err(err) = std::str::from_utf8(body) {
        return Err(RecordsError::NotJson(format!(
            "it is not UTF-8 (byte {})",
            err.valid_up_to()
        )));
    }
    let semantic = Cell::new(None);
    let context = Context {
        semantic: &semantic,
        pointer: at.as_str(),
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let found = Walk {
        rest: at.tokens(),
        target,
        context: &context,
    }
    .deserialize(&mut de)
    .and_then(|found| de.end().map(|()| found));
    match (found, semantic.take()) {
        // The walk stopped early: a body that is not JSON further on is reported as such.
        (_, Some(err)) => match serde_json::from_slice::<IgnoredAny>(body) {
            Ok(_) => Err(err),
            Err(not_json) => Err(RecordsError::NotJson(not_json.to_string())),
        },
        (Ok(Some(count)), None) => Ok(count),
        (Ok(None), None) => Err(RecordsError::Missing(at.as_str().to_owned())),
        (Err(err), None) => Err(RecordsError::NotJson(err.to_string())),
    }
}

/// Visitor methods for scalars where the walk expects more (the pointer leads on, or a flag
/// that is not `true`): nothing there, nothing counted.
macro_rules! lead_nowhere {
    ($($method:ident($($value:ty)?)),*) => {
        $(
            fn $method<E: de::Error>(self $(, _: $value)?) -> Result<Option<u64>, E> {
                Ok(None)
            }
        )*
    };
}

/// What the walk shares: where a semantic refusal is left (serde errors carry text only), and
/// the pointer for messages.
struct Context<'a> {
    semantic: &'a Cell<Option<RecordsError>>,
    pointer: &'a str,
}

impl Context<'_> {
    /// Leaves `err` for [`walk`] and stops the parse.
    fn refuse<E: de::Error>(&self, err: RecordsError) -> E {
        self.semantic.set(Some(err));
        E::custom("refused")
    }
}

/// What to do with the value at the end of the pointer.
trait Target {
    /// Reads the value at the pointer; `Ok(None)` where it does not count (a flag that is not
    /// `true`), a semantic refusal through the context.
    fn at<'de, D: Deserializer<'de>>(
        &self,
        de: D,
        context: &Context<'_>,
    ) -> Result<Option<u64>, D::Error>;
}

/// The array at the pointer: its elements counted, or with a flag, those whose value at the
/// flag is `true`.
struct Elements<'p> {
    flag: Option<&'p JsonPointer>,
}

impl Target for Elements<'_> {
    fn at<'de, D: Deserializer<'de>>(
        &self,
        de: D,
        context: &Context<'_>,
    ) -> Result<Option<u64>, D::Error> {
        de.deserialize_any(ArrayAt {
            flag: self.flag,
            context,
        })
        .map(Some)
    }
}

/// Visits the value at the pointer, which must be an array.
struct ArrayAt<'p, 'c, 'a> {
    flag: Option<&'p JsonPointer>,
    context: &'c Context<'a>,
}

impl ArrayAt<'_, '_, '_> {
    fn not_array<E: de::Error>(&self, found: &'static str) -> E {
        self.context.refuse(RecordsError::NotArray {
            pointer: self.context.pointer.to_owned(),
            found,
        })
    }
}

impl<'de> Visitor<'de> for ArrayAt<'_, '_, '_> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut count = 0;
        let Some(flag) = self.flag else {
            while seq.next_element::<IgnoredAny>()?.is_some() {
                count += 1;
            }
            return Ok(count);
        };
        let flag_context = Context {
            semantic: self.context.semantic,
            pointer: flag.as_str(),
        };
        while let Some(flagged) = seq.next_element_seed(Walk {
            rest: flag.tokens(),
            target: &IsTrue,
            context: &flag_context,
        })? {
            count += flagged.unwrap_or(0);
        }
        Ok(count)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        // Parsed to its end all the same, so a broken body is reported as not JSON.
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Err(self.not_array("an object"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<u64, E> {
        Err(self.not_array("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<u64, E> {
        Err(self.not_array("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<u64, E> {
        Err(self.not_array("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<u64, E> {
        Err(self.not_array("a number"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<u64, E> {
        Err(self.not_array("a string"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Err(self.not_array("null"))
    }
}

/// 1 for a `true` at the flag pointer, else nothing.
struct IsTrue;

impl Target for IsTrue {
    fn at<'de, D: Deserializer<'de>>(
        &self,
        de: D,
        _context: &Context<'_>,
    ) -> Result<Option<u64>, D::Error> {
        struct Flag;
        impl<'de> Visitor<'de> for Flag {
            type Value = Option<u64>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Option<u64>, E> {
                Ok(v.then_some(1))
            }
            lead_nowhere!(
                visit_i64(i64),
                visit_u64(u64),
                visit_f64(f64),
                visit_str(&str),
                visit_unit()
            );
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<u64>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(None)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<u64>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(None)
            }
        }
        de.deserialize_any(Flag)
    }
}

/// One step of the walk: the value here, with `rest` of the pointer still to follow. `None`
/// where the pointer leads nowhere.
struct Walk<'p, 'c, 'a, T> {
    rest: &'p [Box<str>],
    target: &'p T,
    context: &'c Context<'a>,
}

impl<'de, T: Target> DeserializeSeed<'de> for Walk<'_, '_, '_, T> {
    type Value = Option<u64>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Option<u64>, D::Error> {
        if self.rest.is_empty() {
            return self.target.at(de, self.context);
        }
        de.deserialize_any(self)
    }
}

impl<'de, T: Target> Visitor<'de> for Walk<'_, '_, '_, T> {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<u64>, A::Error> {
        let (token, rest) = (&*self.rest[0], &self.rest[1..]);
        let mut found = None;
        let mut spellings = 0;
        while let Some(name) = map.next_key_seed(Name(token))? {
            match name {
                NameIs::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                NameIs::Exact | NameIs::OtherCase => spellings += 1,
            }
            if spellings > 1 {
                return Err(self.context.refuse(RecordsError::Ambiguous {
                    member: token.to_owned(),
                }));
            }
            if name == NameIs::Exact {
                found = map.next_value_seed(Walk {
                    rest,
                    target: self.target,
                    context: self.context,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<u64>, A::Error> {
        let wanted = array_index(&self.rest[0]);
        let mut found = None;
        let mut index = 0usize;
        loop {
            if Some(index) == wanted {
                match seq.next_element_seed(Walk {
                    rest: &self.rest[1..],
                    target: self.target,
                    context: self.context,
                })? {
                    Some(value) => found = value,
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            index += 1;
        }
        Ok(found)
    }

    lead_nowhere!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64),
        visit_str(&str),
        visit_unit()
    );
}

/// An array index token (RFC 6901: `0`, or digits without a leading zero); `None` for
/// anything else (`-`, names), which no element matches.
fn array_index(token: &str) -> Option<usize> {
    let leading_zero = token.len() > 1 && token.starts_with('0');
    if token.is_empty() || leading_zero || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

/// How a member name compares with the pointer's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameIs {
    /// The token itself.
    Exact,
    /// The token in another case (ASCII, or Unicode simple case folding as Go's
    /// `encoding/json` and others match member names: `recordſ` and `records` are one name
    /// to them).
    OtherCase,
    /// Another member.
    Other,
}

/// Reads a member name and compares it with the token where it lies (no allocation unless
/// the name has escapes, which serde_json decodes into its scratch buffer).
struct Name<'t>(&'t str);

impl<'de> DeserializeSeed<'de> for Name<'_> {
    type Value = NameIs;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<NameIs, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Name<'_> {
    type Value = NameIs;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<NameIs, E> {
        Ok(if name == self.0 {
            NameIs::Exact
        } else if name.eq_ignore_ascii_case(self.0)
            || (!name.is_ascii() && folds_equal(name, self.0))
        {
            NameIs::OtherCase
        } else {
            NameIs::Other
        })
    }
}

/// Whether two names are equal under simple (one character to one) case folding.
fn folds_equal(a: &str, b: &str) -> bool {
    a.chars().map(fold).eq(b.chars().map(fold))
}

/// A character's simple case fold: lower case of its upper case where each is one character
/// (`ſ` and `S` fold to `s`, the Kelvin sign to `k`).
fn fold(c: char) -> char {
    let upper = one(c.to_uppercase()).unwrap_or(c);
    one(upper.to_lowercase()).unwrap_or(upper)
}

/// The only character of a case mapping, if it maps to one.
fn one(mut chars: impl Iterator<Item = char>) -> Option<char> {
    let first = chars.next()?;
    chars.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;

    fn pointer(text: &str) -> JsonPointer {
        JsonPointer::parse(text).unwrap()
    }

    fn records(body: &str, at: &str) -> Result<u64, RecordsError> {
        count_records(body.as_bytes(), &pointer(at))
    }

    #[test]
    fn the_array_at_the_pointer_is_counted() {
        let jira = r#"{"issueUpdates":[{"fields":{"summary":"a"}},{"fields":{"summary":"b"}},{"fields":{}}]}"#;
        assert_eq!(records(jira, "/issueUpdates"), Ok(3));
        assert_eq!(records("[1,2,3,4]", ""), Ok(4));
        assert_eq!(records(r#"{"a":{"b":[[1],[2,3]]}}"#, "/a/b/1"), Ok(2));
        assert_eq!(records(r#"{"a/b":{"m~n":[0]}}"#, "/a~1b/m~0n"), Ok(1));
        assert_eq!(records(r#"{"records":[]}"#, "/records"), Ok(0));
        assert_eq!(
            records(r#"{"x":1,"records":[1,2],"y":{"records":[1]}}"#, "/records"),
            Ok(2),
            "only the member at the pointer counts"
        );
        assert_eq!(
            records(r#"{"issue\u0055pdates":[1,2]}"#, "/issueUpdates"),
            Ok(2),
            "escaped member names are compared decoded"
        );
    }

    #[test]
    fn a_body_without_the_array_is_refused_with_the_reason() {
        assert_eq!(
            records(r#"{"other":[1]}"#, "/records"),
            Err(RecordsError::Missing("/records".into()))
        );
        assert_eq!(
            records(r#"{"records":{"a":1}}"#, "/records"),
            Err(RecordsError::NotArray {
                pointer: "/records".into(),
                found: "an object"
            })
        );
        assert_eq!(
            records(r#"{"records":"1,2"}"#, "/records"),
            Err(RecordsError::NotArray {
                pointer: "/records".into(),
                found: "a string"
            })
        );
        assert_eq!(
            records("[1,2]", "/01"),
            Err(RecordsError::Missing("/01".into()))
        );
        assert!(matches!(
            records(r#"{"records":[1,2]"#, "/records"),
            Err(RecordsError::NotJson(_))
        ));
        assert!(matches!(
            records(r#"{"records":[1,2]} x"#, "/records"),
            Err(RecordsError::NotJson(_))
        ));
        assert!(matches!(
            records(r#"{"records":[1,2,]}"#, "/records"),
            Err(RecordsError::NotJson(_))
        ));
        assert!(matches!(
            records(r#"{"records":{"a":1,}}"#, "/records"),
            Err(RecordsError::NotJson(_))
        ));
        assert!(matches!(
            records("", "/records"),
            Err(RecordsError::NotJson(_))
        ));
        assert!(matches!(
            count_records(b"{\"records\":[\"\xff\"]}", &pointer("/records")),
            Err(RecordsError::NotJson(_))
        ));
    }

    #[test]
    fn deep_nesting_off_the_path_is_skipped_without_recursion() {
        let deep = format!("[{}{}]", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(records(&deep, ""), Ok(1));
        let unbalanced = format!("[{}]", "[".repeat(100_000));
        assert!(matches!(
            records(&unbalanced, ""),
            Err(RecordsError::NotJson(_))
        ));
    }

    #[test]
    fn a_member_named_twice_on_the_path_is_ambiguous() {
        let ambiguous = RecordsError::Ambiguous {
            member: "records".into(),
        };
        assert_eq!(
            records(r#"{"records":[1],"records":[1,2,3]}"#, "/records"),
            Err(ambiguous.clone())
        );
        assert_eq!(
            records(r#"{"records":[1],"Records":[1,2,3]}"#, "/records"),
            Err(ambiguous.clone())
        );
        assert_eq!(
            records(r#"{"RECORDS":[1,2,3],"records":[]}"#, "/records"),
            Err(ambiguous.clone())
        );
        // Spellings that fold to the same name outside ASCII: a long s, the Kelvin sign.
        assert_eq!(
            records(r#"{"records":[],"recordſ":[1,2,3]}"#, "/records"),
            Err(ambiguous.clone())
        );
        assert_eq!(
            records(r#"{"records":[],"RECORDſ":[1,2,3]}"#, "/records"),
            Err(ambiguous)
        );
        assert_eq!(
            records("{\"keys\":[1],\"\u{212A}eys\":[1,2]}", "/keys"),
            Err(RecordsError::Ambiguous {
                member: "keys".into()
            })
        );
        assert_eq!(
            records(r#"{"records":[1],"recordß":[1,2]}"#, "/records"),
            Ok(1),
            "a name that only folds to another by expansion is another name"
        );
        assert_eq!(
            records(r#"{"Records":[1,2,3]}"#, "/records"),
            Err(RecordsError::Missing("/records".into())),
            "another spelling alone is not the member"
        );
        assert_eq!(
            records(r#"{"records":[{"a":1,"a":2}]}"#, "/records"),
            Ok(1),
            "names off the path are the target's business"
        );
    }

    #[test]
    fn accepted_elements_count_where_their_flag_is_true() {
        let salesforce = r#"[{"id":"001","success":true,"errors":[]},{"success":false,"errors":[{"statusCode":"X"}]},{"id":"003","success":true}]"#;
        let at = pointer("");
        assert_eq!(
            count_accepted(salesforce.as_bytes(), &at, Some(&pointer("/success"))),
            Ok(2)
        );
        assert_eq!(count_accepted(salesforce.as_bytes(), &at, None), Ok(3));
        let odd =
            r#"[{"success":"true"},{"success":1},{},3,{"success":{"x":true}},{"success":true}]"#;
        assert_eq!(
            count_accepted(odd.as_bytes(), &at, Some(&pointer("/success"))),
            Ok(1),
            "only a JSON true counts"
        );
        let jira = r#"{"issues":[{"id":"1","key":"A-1"},{"id":"2","key":"A-2"}],"errors":[{"failedElementNumber":2}]}"#;
        assert_eq!(
            count_accepted(jira.as_bytes(), &pointer("/issues"), None),
            Ok(2)
        );
    }

    /// A small JSON document with lower-case member names (so no two differ only in case).
    fn document() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            "[a-z ]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-d]{1,2}", inner, 0..5)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// A pointer into a document: mostly a path that exists, sometimes not.
    fn pointer_into(doc: &Value, choices: &[usize], miss: bool) -> String {
        let mut text = String::new();
        let mut here = doc;
        for &choice in choices {
            let next = match here {
                Value::Array(items) if !items.is_empty() => {
                    let i = choice % items.len();
                    text.push_str(&format!("/{i}"));
                    &items[i]
                }
                Value::Object(map) if !map.is_empty() => {
                    let (key, value) = map.iter().nth(choice % map.len()).unwrap();
                    text.push('/');
                    text.push_str(key);
                    value
                }
                _ => break,
            };
            here = next;
        }
        if miss {
            text.push_str("/zz");
        }
        text
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// The streaming count agrees with building the document and following the pointer.
        #[test]
        fn counting_agrees_with_the_built_document(
            doc in document(),
            choices in prop::collection::vec(any::<usize>(), 0..5),
            miss in prop::bool::weighted(0.2),
        ) {
            let text = pointer_into(&doc, &choices, miss);
            let body = serde_json::to_vec(&doc).unwrap();
            let counted = count_records(&body, &pointer(&text));
            match doc.pointer(&text) {
                Some(Value::Array(items)) => prop_assert_eq!(counted, Ok(items.len() as u64)),
                Some(_) => prop_assert!(matches!(counted, Err(RecordsError::NotArray { .. })), "{:?}", counted),
                None => prop_assert_eq!(counted, Err(RecordsError::Missing(text.clone()))),
            }
            let flag = pointer("/a");
            if let Some(Value::Array(items)) = doc.pointer(&text) {
                let expected = items.iter().filter(|item| item.pointer("/a") == Some(&json!(true))).count() as u64;
                prop_assert_eq!(count_accepted(&body, &pointer(&text), Some(&flag)), Ok(expected));
            }
        }

        /// No byte string makes the counter panic, and what it counts is valid JSON.
        #[test]
        fn any_bytes_are_counted_or_refused(body in prop::collection::vec(any::<u8>(), 0..64)) {
            if count_records(&body, &pointer("")).is_ok() {
                prop_assert!(serde_json::from_slice::<Value>(&body).is_ok());
            }
            let _ = count_accepted(&body, &pointer("/a"), Some(&pointer("/b")));
        }

        /// Bodies that are nearly JSON (a valid document with a byte changed) are refused as
        /// not JSON exactly when serde_json's own check of the whole text refuses them (it
        /// takes numbers of any size, as RFC 8259 does; a `Value` would refuse `1e999`).
        #[test]
        fn damaged_documents_are_refused(doc in document(), cut in any::<usize>(), byte in any::<u8>()) {
            let mut body = serde_json::to_vec(&json!({"r": [doc]})).unwrap();
            let at = cut % body.len();
            body[at] = byte;
            let valid = std::str::from_utf8(&body).is_ok()
                && serde_json::from_slice::<IgnoredAny>(&body).is_ok();
            let counted = count_records(&body, &pointer("/r"));
            if !valid {
                prop_assert!(matches!(counted, Err(RecordsError::NotJson(_))), "{:?}", counted);
            } else {
                prop_assert!(!matches!(counted, Err(RecordsError::NotJson(_))), "{:?}", counted);
            }
        }
    }
}
