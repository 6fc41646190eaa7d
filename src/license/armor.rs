//! The text armor around a license envelope (docs/licenses.md): BEGIN/END lines around base64 lines.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::LicenseError;

const LABEL: &str = "TOLLGATE LICENSE";
/// Longest base64 line a reader accepts.
const MAX_LINE: usize = 76;
/// Line width the writer uses (the PEM convention, within [`MAX_LINE`]).
const WRAP: usize = 64;

/// Wraps envelope bytes in the license armor, ending with a newline.
pub(crate) fn encode(envelope: &[u8]) -> String {
    wrap(LABEL, envelope)
}

/// Armors `data` under `label` the PEM way (RFC 7468): base64 lines between BEGIN and END.
pub(crate) fn wrap(label: &str, data: &[u8]) -> String {
    let b64 = STANDARD.encode(data);
    let mut text = format!("-----BEGIN {label}-----\n");
    // Base64 output is ASCII, so byte chunks are whole characters.
    for line in b64.as_bytes().chunks(WRAP) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

/// Unwraps the armor and decodes the envelope bytes; only blank lines may surround it.
pub(crate) fn decode(text: &str) -> Result<Vec<u8>, LicenseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let begin = lines
        .iter()
        .position(|l| l.starts_with("-----BEGIN"))
        .ok_or(LicenseError::MissingBegin)?;
    check_armor_line(lines[begin], "BEGIN", LicenseError::MissingBegin)?;
    if lines[..begin].iter().any(|l| !l.is_empty()) {
        return Err(LicenseError::TextBeforeArmor);
    }
    let end = begin
        + 1
        + lines[begin + 1..]
            .iter()
            .position(|l| l.starts_with("-----END"))
            .ok_or(LicenseError::MissingEnd)?;
    check_armor_line(lines[end], "END", LicenseError::MissingEnd)?;
    if lines[end + 1..].iter().any(|l| !l.is_empty()) {
        return Err(LicenseError::TextAfterArmor);
    }
    let body = &lines[begin + 1..end];
    if body.is_empty() {
        return Err(LicenseError::EmptyArmor);
    }
    let mut b64 = String::with_capacity(body.len() * WRAP);
    for (index, line) in body.iter().enumerate() {
        let number = begin + 2 + index;
        let len = line.chars().count();
        if len == 0 {
            return Err(LicenseError::BlankLine { line: number });
        }
        if len > MAX_LINE {
            return Err(LicenseError::LineTooLong { line: number, len });
        }
        b64.push_str(line);
    }
    STANDARD.decode(b64).map_err(|source| LicenseError::Base64 {
        what: "envelope",
        source,
    })
}

/// Accepts exactly `-----{word} TOLLGATE LICENSE-----`; another label is named in the error.
fn check_armor_line(line: &str, word: &str, missing: LicenseError) -> Result<(), LicenseError> {
    let label = line
        .strip_prefix("-----")
        .and_then(|rest| rest.strip_prefix(word))
        .and_then(|rest| rest.strip_prefix(' '))
        .and_then(|rest| rest.strip_suffix("-----"));
    match label {
        Some(LABEL) => Ok(()),
        Some(found) => Err(LicenseError::WrongLabel {
            found: found.to_string(),
        }),
        None => Err(missing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn armored(body: &str) -> String {
        format!("-----BEGIN TOLLGATE LICENSE-----\n{body}\n-----END TOLLGATE LICENSE-----\n")
    }

    #[test]
    fn round_trips_and_wraps_lines() {
        let data = vec![0xa5u8; 500];
        let text = encode(&data);
        assert!(text.lines().all(|l| l.len() <= MAX_LINE));
        assert!(text.lines().count() > 3);
        assert_eq!(decode(&text).unwrap(), data);
    }

    #[test]
    fn tolerates_crlf_a_bom_and_surrounding_blank_lines() {
        let text = format!(
            "\u{feff}\r\n{}\r\n\r\n",
            encode(b"hello").replace('\n', "\r\n")
        );
        assert_eq!(decode(&text).unwrap(), b"hello");
    }

    #[test]
    fn refuses_missing_or_foreign_armor() {
        assert!(matches!(
            decode("aGVsbG8="),
            Err(LicenseError::MissingBegin)
        ));
        assert!(matches!(
            decode("-----BEGIN TOLLGATE LICENSE-----\naGVsbG8=\n"),
            Err(LicenseError::MissingEnd)
        ));
        let err = decode("-----BEGIN PRIVATE KEY-----\naGVsbG8=\n-----END PRIVATE KEY-----\n")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "armor label is \"PRIVATE KEY\"; expected \"TOLLGATE LICENSE\""
        );
        let err = decode("-----BEGIN TOLLGATE LICENSE-----\naGVsbG8=\n-----END LICENSE-----\n")
            .unwrap_err();
        assert!(matches!(err, LicenseError::WrongLabel { .. }));
        assert!(matches!(
            decode("-----BEGIN TOLLGATE LICENSE\naGVsbG8=\n-----END TOLLGATE LICENSE-----\n"),
            Err(LicenseError::MissingBegin)
        ));
    }

    #[test]
    fn refuses_text_outside_the_armor() {
        let text = format!("license for Acme\n{}", armored("aGVsbG8="));
        assert!(matches!(decode(&text), Err(LicenseError::TextBeforeArmor)));
        let text = format!("{}trailer\n", armored("aGVsbG8="));
        assert!(matches!(decode(&text), Err(LicenseError::TextAfterArmor)));
    }

    #[test]
    fn refuses_bad_body_lines() {
        let long = "A".repeat(80);
        let err = decode(&armored(&long)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2 is 80 characters long; armored lines hold at most 76"
        );
        assert!(matches!(
            decode(&armored("aGVs\n\nbG8=")),
            Err(LicenseError::BlankLine { line: 3 })
        ));
        assert!(matches!(
            decode("-----BEGIN TOLLGATE LICENSE-----\n-----END TOLLGATE LICENSE-----\n"),
            Err(LicenseError::EmptyArmor)
        ));
        let err = decode(&armored("aGVsbG8!")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("envelope is not valid base64: "),
            "{err}"
        );
        // Standard alphabet with padding only.
        assert!(decode(&armored("aGVsbG8")).is_err());
        assert!(decode(&armored("aGV-bG8=")).is_err());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn armor_round_trips_any_bytes(data in prop::collection::vec(any::<u8>(), 1..2048)) {
                let text = encode(&data);
                prop_assert!(text.lines().all(|line| line.len() <= MAX_LINE));
                prop_assert_eq!(decode(&text).unwrap(), data);
            }

            #[test]
            fn decode_never_panics(text in any::<String>()) {
                let _ = decode(&text);
            }
        }
    }
}
