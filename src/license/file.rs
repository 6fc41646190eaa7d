//! License files (docs/licenses.md): the signed envelope inside the armor, parsing, signing and
//! signature verification.

use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::keys::{is_kid, kid, TrustedKeys};
use super::read::{read_capped, Capped};
use super::{armor, LicenseError, Payload, MAX_LICENSE_BYTES, SIGNING_CONTEXT};

/// The only signature algorithm of format version 1.
const ALG: &str = "ed25519";

/// The envelope's fields, all required.
const ENVELOPE_FIELDS: [&str; 4] = ["alg", "kid", "payload", "sig"];

/// The envelope JSON: field order here is the order `sign` writes.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    alg: String,
    kid: String,
    payload: String,
    sig: String,
}

/// Why a well-formed license file's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    /// The file names an issuer key that is not trusted.
    #[error("signed by unknown issuer key {kid}")]
    UnknownIssuer {
        /// The key id from the envelope.
        kid: String,
    },
    /// The signature does not verify under the issuer key the file names.
    #[error("invalid signature: the license was altered or signed by another key")]
    InvalidSignature,
}

/// A license file as read from disk: armor, envelope and payload parsed; signature not yet checked.
#[derive(Debug, Clone)]
pub struct LicenseFile {
    /// Id of the issuer key the file claims to be signed by.
    pub kid: String,
    /// The parsed payload.
    pub payload: Payload,
    /// The payload exactly as it appears in the envelope: what the signature covers.
    payload_b64: String,
    signature: Signature,
    /// The file as read: a directory re-read finds an unchanged file by its bytes.
    bytes: FileBytes,
}

/// A license file's bytes, shown by their length in debug output.
#[derive(Clone)]
struct FileBytes(Arc<[u8]>);

impl std::fmt::Debug for FileBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl LicenseFile {
    /// Parses a license file's bytes; refuses anything that breaks the license format (docs/licenses.md).
    pub fn parse(bytes: &[u8]) -> Result<LicenseFile, LicenseError> {
        if bytes.len() > MAX_LICENSE_BYTES {
            return Err(LicenseError::TooLarge {
                size: bytes.len() as u64,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| LicenseError::NotText)?;
        let envelope = parse_envelope(&armor::decode(text)?)?;
        if envelope.alg != ALG {
            return Err(LicenseError::UnsupportedAlg(envelope.alg));
        }
        if !is_kid(&envelope.kid) {
            return Err(LicenseError::BadKid(envelope.kid));
        }
        let payload_json = decode_b64("payload", &envelope.payload)?;
        let sig = decode_b64("sig", &envelope.sig)?;
        let sig: [u8; 64] = sig
            .as_slice()
            .try_into()
            .map_err(|_| LicenseError::SignatureLength(sig.len()))?;
        Ok(LicenseFile {
            kid: envelope.kid,
            payload: Payload::from_json(&payload_json)?,
            payload_b64: envelope.payload,
            signature: Signature::from_bytes(&sig),
            bytes: FileBytes(bytes.into()),
        })
    }

    /// Reads and parses a license file, refusing one over the size limit without reading it.
    pub fn read(path: &Path) -> Result<LicenseFile, LicenseError> {
        Self::read_reusing(path, None)
    }

    /// [`LicenseFile::read`], taking `known` as it is when the file holds exactly the bytes
    /// `known` was parsed from (a directory re-read after one upload parses one file, not all).
    pub fn read_reusing(
        path: &Path,
        known: Option<&LicenseFile>,
    ) -> Result<LicenseFile, LicenseError> {
        match read_capped(path, MAX_LICENSE_BYTES)? {
            Capped::Fits(bytes) => match known {
                Some(known) if *known.bytes.0 == *bytes => Ok(known.clone()),
                _ => Self::parse(&bytes),
            },
            Capped::TooLarge(size) => Err(LicenseError::TooLarge { size }),
        }
    }

    /// Whether `other` is the same signed license: the same key id, payload and signature, so
    /// that a verdict of [`LicenseFile::verify`] on one holds for the other under the same keys.
    pub fn signs_the_same(&self, other: &LicenseFile) -> bool {
        self.kid == other.kid
            && self.payload_b64 == other.payload_b64
            && self.signature == other.signature
    }

    /// Checks the signature against the trusted issuer keys.
    pub fn verify(&self, keys: &TrustedKeys) -> Result<(), SignatureError> {
        let key = keys
            .get(&self.kid)
            .ok_or_else(|| SignatureError::UnknownIssuer {
                kid: self.kid.clone(),
            })?;
        key.verify_strict(&signed_message(&self.payload_b64), &self.signature)
            .map_err(|_| SignatureError::InvalidSignature)
    }
}

/// Signs a payload: checks it with [`Payload::from_json`], then returns the armored file text.
pub fn sign(payload_json: &[u8], key: &SigningKey) -> Result<String, LicenseError> {
    Payload::from_json(payload_json)?;
    let payload = STANDARD.encode(payload_json);
    let signature = key.sign(&signed_message(&payload));
    let envelope = Envelope {
        alg: ALG.to_string(),
        kid: kid(&key.verifying_key()),
        payload,
        sig: STANDARD.encode(signature.to_bytes()),
    };
    let json = serde_json::to_vec(&envelope).map_err(|e| LicenseError::Envelope(e.to_string()))?;
    let text = armor::encode(&json);
    if text.len() > MAX_LICENSE_BYTES {
        return Err(LicenseError::SignedTooLarge { size: text.len() });
    }
    Ok(text)
}

/// Parses the envelope JSON; it must be an object (serde would also take an array).
fn parse_envelope(json: &[u8]) -> Result<Envelope, LicenseError> {
    let invalid = |e: serde_json::Error| LicenseError::Envelope(e.to_string());
    let value: serde_json::Value = serde_json::from_slice(json).map_err(invalid)?;
    let object = value
        .as_object()
        .ok_or_else(|| LicenseError::Envelope("not a JSON object".to_string()))?;
    if let Some(key) = object
        .keys()
        .find(|k| !ENVELOPE_FIELDS.contains(&k.as_str()))
    {
        return Err(LicenseError::Envelope(format!("unknown field `{key}`")));
    }
    if let Some(field) = ENVELOPE_FIELDS.iter().find(|f| !object.contains_key(**f)) {
        return Err(LicenseError::Envelope(format!("missing field `{field}`")));
    }
    // Typed pass over the bytes: also refuses duplicate keys, which the untyped value hides.
    serde_json::from_slice(json).map_err(invalid)
}

/// The bytes the signature covers: the context string, then the payload's base64 text.
fn signed_message(payload_b64: &str) -> Vec<u8> {
    [SIGNING_CONTEXT, payload_b64.as_bytes()].concat()
}

fn decode_b64(what: &'static str, text: &str) -> Result<Vec<u8>, LicenseError> {
    STANDARD
        .decode(text)
        .map_err(|source| LicenseError::Base64 { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::fixtures::{
        edit_envelope, edit_json, key, replace_payload, trusting, PAIR_JSON, SUBSCRIPTION_JSON,
    };

    fn signed() -> String {
        sign(PAIR_JSON.as_bytes(), &key(1)).unwrap()
    }

    fn parse_error(text: &str) -> String {
        LicenseFile::parse(text.as_bytes()).unwrap_err().to_string()
    }

    fn verify_error(text: &str) -> SignatureError {
        LicenseFile::parse(text.as_bytes())
            .unwrap()
            .verify(&trusting(&key(1)))
            .unwrap_err()
    }

    #[test]
    fn round_trip_sign_parse_verify() {
        for json in [PAIR_JSON, SUBSCRIPTION_JSON] {
            let text = sign(json.as_bytes(), &key(1)).unwrap();
            assert!(text.starts_with("-----BEGIN TOLLGATE LICENSE-----\n"));
            assert!(text.ends_with("-----END TOLLGATE LICENSE-----\n"));
            assert!(text.lines().all(|l| l.len() <= 76));
            let file = LicenseFile::parse(text.as_bytes()).unwrap();
            assert_eq!(file.kid, kid(&key(1).verifying_key()));
            assert_eq!(file.payload, Payload::from_json(json.as_bytes()).unwrap());
            file.verify(&trusting(&key(1))).unwrap();
        }
    }

    #[test]
    fn the_signature_covers_the_context_and_the_payload_text() {
        let file = LicenseFile::parse(signed().as_bytes()).unwrap();
        let message = [
            b"tollgate-license-v1.".as_slice(),
            file.payload_b64.as_bytes(),
        ]
        .concat();
        key(1)
            .verifying_key()
            .verify_strict(&message, &file.signature)
            .unwrap();
    }

    #[test]
    fn sign_refuses_an_invalid_payload() {
        let json = edit_json(PAIR_JSON, |m| {
            m.insert("foo".into(), 1.into());
        });
        let err = sign(json.as_bytes(), &key(1)).unwrap_err();
        assert_eq!(err.to_string(), "payload: unknown field `foo`");
    }

    #[test]
    fn sign_refuses_a_result_over_the_size_limit() {
        let json = edit_json(PAIR_JSON, |m| {
            m.insert("company".into(), "A".repeat(50_000).into());
        });
        let err = sign(json.as_bytes(), &key(1)).unwrap_err();
        assert!(matches!(err, LicenseError::SignedTooLarge { .. }), "{err}");
    }

    #[test]
    fn a_changed_payload_fails_verification() {
        let tampered = edit_json(PAIR_JSON, |m| {
            m.insert("points".into(), 3.into());
        });
        let text = replace_payload(&signed(), &tampered);
        assert_eq!(verify_error(&text), SignatureError::InvalidSignature);
    }

    #[test]
    fn a_changed_signature_fails_verification() {
        let text = edit_envelope(&signed(), |env| {
            let other = sign(SUBSCRIPTION_JSON.as_bytes(), &key(1)).unwrap();
            let other = LicenseFile::parse(other.as_bytes()).unwrap();
            env.insert(
                "sig".into(),
                STANDARD.encode(other.signature.to_bytes()).into(),
            );
        });
        assert_eq!(verify_error(&text), SignatureError::InvalidSignature);
    }

    #[test]
    fn an_unknown_kid_is_an_unknown_issuer() {
        let text = edit_envelope(&signed(), |env| {
            env.insert("kid".into(), "0123456789abcdef".into());
        });
        assert_eq!(
            verify_error(&text),
            SignatureError::UnknownIssuer {
                kid: "0123456789abcdef".into()
            }
        );
        assert_eq!(
            verify_error(&text).to_string(),
            "signed by unknown issuer key 0123456789abcdef"
        );
    }

    #[test]
    fn a_wrong_key_is_refused() {
        // Signed by key 2, which is not trusted.
        let text = sign(PAIR_JSON.as_bytes(), &key(2)).unwrap();
        assert!(matches!(
            verify_error(&text),
            SignatureError::UnknownIssuer { .. }
        ));
        // Signed by key 2 but claiming the trusted key 1.
        let text = edit_envelope(&text, |env| {
            env.insert("kid".into(), kid(&key(1).verifying_key()).into());
        });
        assert_eq!(verify_error(&text), SignatureError::InvalidSignature);
        // No trusted key at all.
        let file = LicenseFile::parse(signed().as_bytes()).unwrap();
        assert!(file.verify(&TrustedKeys::new()).is_err());
    }

    #[test]
    fn a_truncated_file_is_refused() {
        let text = signed();
        let half = &text[..text.len() / 2];
        assert_eq!(
            parse_error(half),
            "missing the -----END TOLLGATE LICENSE----- line"
        );
        let lines: Vec<&str> = text.lines().collect();
        let without_a_body_line = [&lines[..1], &lines[2..]].concat().join("\n");
        assert!(LicenseFile::parse(without_a_body_line.as_bytes()).is_err());
    }

    #[test]
    fn armor_problems_are_refused() {
        let text = signed();
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        assert_eq!(
            parse_error(&body),
            "missing the -----BEGIN TOLLGATE LICENSE----- line"
        );
        let relabeled = text.replace("TOLLGATE LICENSE", "TOLLGATE LICENCE");
        assert_eq!(
            parse_error(&relabeled),
            "armor label is \"TOLLGATE LICENCE\"; expected \"TOLLGATE LICENSE\""
        );
        let one_line =
            format!("-----BEGIN TOLLGATE LICENSE-----\n{body}\n-----END TOLLGATE LICENSE-----\n");
        assert!(parse_error(&one_line).starts_with("line 2 is "));
        let bad = text.replacen("\n", "\n*", 1);
        assert!(parse_error(&bad).starts_with("envelope is not valid base64"));
        assert_eq!(
            parse_error("\u{ff}\u{fe}"),
            "missing the -----BEGIN TOLLGATE LICENSE----- line"
        );
        assert_eq!(
            LicenseFile::parse(&[0xff, 0xfe, 0x00])
                .unwrap_err()
                .to_string(),
            "license file is not UTF-8 text"
        );
    }

    #[test]
    fn envelope_problems_are_refused() {
        let text = edit_envelope(&signed(), |env| {
            env.insert("alg".into(), "rsa".into());
        });
        assert_eq!(
            parse_error(&text),
            "alg \"rsa\" is not supported; only ed25519"
        );
        let text = edit_envelope(&signed(), |env| {
            env.insert("x5c".into(), "".into());
        });
        assert_eq!(parse_error(&text), "envelope: unknown field `x5c`");
        let text = edit_envelope(&signed(), |env| {
            env.remove("sig");
        });
        assert_eq!(parse_error(&text), "envelope: missing field `sig`");
        let text = edit_envelope(&signed(), |env| {
            env.insert("sig".into(), 5.into());
        });
        assert!(parse_error(&text).starts_with("envelope: invalid type: integer `5`"));
        let text = edit_envelope(&signed(), |env| {
            env.insert("kid".into(), "ISSUER".into());
        });
        assert_eq!(
            parse_error(&text),
            "kid \"ISSUER\" is not 16 lowercase hex digits"
        );
        let text = edit_envelope(&signed(), |env| {
            env.insert("payload".into(), "not base64!".into());
        });
        assert!(parse_error(&text).starts_with("payload is not valid base64: "));
        let text = edit_envelope(&signed(), |env| {
            env.insert("sig".into(), "c2ln".into());
        });
        assert_eq!(
            parse_error(&text),
            "sig is 3 bytes; an Ed25519 signature is 64"
        );
        let armored_array = crate::license::armor::encode(b"[]");
        assert_eq!(parse_error(&armored_array), "envelope: not a JSON object");
        let positional =
            crate::license::armor::encode(br#"["ed25519","0123456789abcdef","e30=","c2ln"]"#);
        assert_eq!(parse_error(&positional), "envelope: not a JSON object");
        let twice = crate::license::armor::encode(
            br#"{"alg":"ed25519","alg":"ed25519","kid":"0123456789abcdef","payload":"e30=","sig":"c2ln"}"#,
        );
        assert!(parse_error(&twice).starts_with("envelope: duplicate field `alg`"));
    }

    #[test]
    fn payload_problems_are_refused_even_when_signed() {
        let cases = [
            (
                edit_json(PAIR_JSON, |m| {
                    m.insert("foo".into(), 1.into());
                }),
                "payload: unknown field `foo`",
            ),
            (
                edit_json(PAIR_JSON, |m| {
                    m.insert("version".into(), 2.into());
                }),
                "unsupported payload version 2",
            ),
            (
                edit_json(PAIR_JSON, |m| {
                    m.insert("kind".into(), "seat".into());
                }),
                "unknown license kind \"seat\"; expected \"pair\" or \"subscription\"",
            ),
            (
                edit_json(PAIR_JSON, |m| {
                    m.remove("expire");
                }),
                "payload: missing field `expire`",
            ),
        ];
        for (json, message) in cases {
            let text = replace_payload(&signed(), &json);
            assert_eq!(parse_error(&text), message);
        }
    }

    #[test]
    fn a_file_over_64_kib_is_refused_first() {
        let text = format!("{}{}", signed(), " ".repeat(70_000 - signed().len()));
        assert_eq!(
            parse_error(&text),
            "license file is 70000 bytes, over the 64 KiB limit"
        );
        let garbage = vec![0u8; MAX_LICENSE_BYTES + 1];
        assert!(matches!(
            LicenseFile::parse(&garbage),
            Err(LicenseError::TooLarge { size: 65537 })
        ));
    }

    #[test]
    fn read_refuses_a_large_file_by_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.lic");
        std::fs::write(&path, vec![b' '; 70_000]).unwrap();
        assert_eq!(
            LicenseFile::read(&path).unwrap_err().to_string(),
            "license file is 70000 bytes, over the 64 KiB limit"
        );
        let path = dir.path().join("good.lic");
        std::fs::write(&path, signed()).unwrap();
        assert_eq!(
            LicenseFile::read(&path).unwrap().payload.common.id,
            "LIC-0001"
        );
        let missing = LicenseFile::read(&dir.path().join("none.lic")).unwrap_err();
        assert!(
            missing.to_string().starts_with("cannot be read: "),
            "{missing}"
        );
    }

    #[test]
    fn a_file_read_again_with_the_same_bytes_is_taken_as_known_and_any_change_is_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.lic");
        std::fs::write(&path, signed()).unwrap();
        let known = LicenseFile::read(&path).unwrap();
        let again = LicenseFile::read_reusing(&path, Some(&known)).unwrap();
        assert!(
            Arc::ptr_eq(&again.bytes.0, &known.bytes.0),
            "not parsed again"
        );
        let other = edit_json(PAIR_JSON, |m| {
            m.insert("company".into(), "Changed".into());
        });
        std::fs::write(&path, sign(other.as_bytes(), &key(1)).unwrap()).unwrap();
        let changed = LicenseFile::read_reusing(&path, Some(&known)).unwrap();
        assert!(!changed.signs_the_same(&known));
        assert_eq!(changed.payload.common.company, "Changed");
        // A change that breaks the file is refused, not covered by what was known.
        std::fs::write(&path, "not a license").unwrap();
        assert!(LicenseFile::read_reusing(&path, Some(&known)).is_err());
        assert_eq!(
            format!("{:?}", known.bytes),
            format!("<{} bytes>", signed().len())
        );
    }
}

/// Properties of parsing and verification over generated and mutated inputs.
#[cfg(test)]
mod properties {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use chrono::DateTime;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;
    use crate::license::fixtures::{edit_envelope, key, trusting, PAIR_JSON, SUBSCRIPTION_JSON};

    /// Cases per property: enough to shake the parser, a few seconds each.
    const CASES: u32 = 256;

    /// A validly signed file (by key 1) of one of the documented examples.
    fn signed(subscription: bool) -> String {
        let json = if subscription {
            SUBSCRIPTION_JSON
        } else {
            PAIR_JSON
        };
        sign(json.as_bytes(), &key(1)).unwrap()
    }

    /// Whether a file's bytes parse and verify under key 1 (and key 2, also trusted).
    fn verifies(text: &[u8]) -> bool {
        let mut keys = trusting(&key(1));
        keys.add(key(2).verifying_key());
        LicenseFile::parse(text).is_ok_and(|file| file.verify(&keys).is_ok())
    }

    /// One change to a file's bytes.
    #[derive(Debug, Clone)]
    enum Mutation {
        /// XOR one byte (at a position scaled to the length) with a non-zero mask.
        Flip(prop::sample::Index, u8),
        /// Keep only a prefix.
        Truncate(prop::sample::Index),
        /// Insert a byte.
        Insert(prop::sample::Index, u8),
        /// Remove a byte.
        Remove(prop::sample::Index),
        /// Re-wrap the armor's base64 lines at another width (some over the limit).
        Rewrap(usize),
        /// Join two neighbouring lines.
        JoinLines(prop::sample::Index),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<prop::sample::Index>(), 1..=u8::MAX).prop_map(|(i, m)| Mutation::Flip(i, m)),
            any::<prop::sample::Index>().prop_map(Mutation::Truncate),
            (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
            any::<prop::sample::Index>().prop_map(Mutation::Remove),
            (1usize..120).prop_map(Mutation::Rewrap),
            any::<prop::sample::Index>().prop_map(Mutation::JoinLines),
        ]
    }

    impl Mutation {
        fn apply(&self, bytes: &mut Vec<u8>) {
            match self {
                Mutation::Flip(at, mask) if !bytes.is_empty() => {
                    let at = at.index(bytes.len());
                    bytes[at] ^= mask;
                }
                Mutation::Truncate(at) => bytes.truncate(at.index(bytes.len() + 1)),
                Mutation::Insert(at, byte) => bytes.insert(at.index(bytes.len() + 1), *byte),
                Mutation::Remove(at) if !bytes.is_empty() => {
                    bytes.remove(at.index(bytes.len()));
                }
                Mutation::Rewrap(width) => *bytes = rewrap(bytes, *width),
                Mutation::JoinLines(at) => {
                    let newlines: Vec<usize> =
                        (0..bytes.len()).filter(|&i| bytes[i] == b'\n').collect();
                    if !newlines.is_empty() {
                        bytes.remove(newlines[at.index(newlines.len())]);
                    }
                }
                Mutation::Flip(..) | Mutation::Remove(_) => {}
            }
        }
    }

    /// The armor's body lines joined and cut again every `width` characters.
    fn rewrap(bytes: &[u8], width: usize) -> Vec<u8> {
        let text = String::from_utf8_lossy(bytes);
        let (armor, body): (Vec<&str>, Vec<&str>) =
            text.lines().partition(|line| line.starts_with("-----"));
        let joined: String = body.concat();
        let mut out = format!("{}\n", armor.first().copied().unwrap_or(""));
        for chunk in joined.as_bytes().chunks(width) {
            out.push_str(&String::from_utf8_lossy(chunk));
            out.push('\n');
        }
        out.push_str(armor.get(1).copied().unwrap_or(""));
        out.push('\n');
        out.into_bytes()
    }

    /// Bytes that differ from `original`, made from it by up to three mutations or at random.
    fn changed(original: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
        let mutated = prop::collection::vec(mutation(), 1..=3).prop_map(move |mutations| {
            let mut bytes = original.clone();
            for mutation in &mutations {
                mutation.apply(&mut bytes);
            }
            bytes
        });
        prop_oneof![4 => mutated, 1 => prop::collection::vec(any::<u8>(), 0..256)]
    }

    /// The envelope of a file as a JSON object.
    fn envelope(text: &str) -> serde_json::Map<String, Value> {
        let bytes = armor::decode(text).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Text the payload checks accept: non-empty after trimming, no control characters.
    fn field_text() -> impl Strategy<Value = String> {
        "[^\\p{Cc}]{0,16}[^\\p{Cc}\\s]"
    }

    /// An RFC 3339 instant between 1970 and 2100, whole seconds, as license files write them.
    fn instant(seconds: i64) -> String {
        crate::license::format_time(DateTime::from_timestamp(seconds, 0).unwrap())
    }

    /// A valid payload of either kind, with every optional field present or not.
    fn payload() -> impl Strategy<Value = Value> {
        let common = (
            "[A-Za-z0-9_-][A-Za-z0-9._-]{0,30}",
            field_text(),
            field_text(),
            field_text(),
            proptest::option::of(field_text()),
            0i64..4_000_000_000,
            1i64..1_000_000_000,
        );
        let env = (0u32..=1_000_000, 0u32..=1_000_000, 0u32..=1_000_000, 0u32..=1_000_000)
            .prop_map(|(f, e, t, a)| {
                json!({"flows": f, "endpoint_apps": e, "trading_partners": t, "agents": a})
            });
        let pair = (
            field_text(),
            field_text(),
            1u32..=1_000_000,
            proptest::option::of(1u64..=1_000_000_000_000),
        )
            .prop_map(|(a, b, points, records)| {
                let mut terms =
                    json!({"kind": "pair", "system_a": a, "system_b": b, "points": points});
                if let Some(records) = records {
                    terms["transferred_records"] = records.into();
                }
                terms
            });
        let subscription = (
            prop_oneof![Just("endpoint"), Just("platform")],
            proptest::option::of(0i64..4_000_000_000),
            env.clone(),
            env,
        )
            .prop_map(|(pricing, until, production, sandbox)| {
                let mut terms = json!({"kind": "subscription", "pricing": pricing, "production": production, "sandbox": sandbox});
                if let Some(until) = until {
                    terms["unlimited_until"] = instant(until).into();
                }
                terms
            });
        (common, prop_oneof![pair, subscription]).prop_map(
            |((id, company, registered_to, email, bound_to, start, length), terms)| {
                let mut payload = json!({
                    "version": 1, "id": id, "company": company, "registered_to": registered_to,
                    "email": email, "start": instant(start), "expire": instant(start + length),
                });
                if let Some(bound_to) = bound_to {
                    payload["bound_to"] = bound_to.into();
                }
                if let (Value::Object(payload), Value::Object(terms)) = (&mut payload, terms) {
                    payload.extend(terms);
                }
                payload
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn parse_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
            let _ = LicenseFile::parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_arbitrary_text(text in any::<String>()) {
            let _ = LicenseFile::parse(text.as_bytes());
        }

        #[test]
        fn parse_never_panics_on_a_mutated_signed_file(
            subscription in any::<bool>(),
            mutations in prop::collection::vec(mutation(), 1..=4),
        ) {
            let mut bytes = signed(subscription).into_bytes();
            for mutation in &mutations {
                mutation.apply(&mut bytes);
            }
            if let Ok(file) = LicenseFile::parse(&bytes) {
                let _ = file.verify(&trusting(&key(1)));
            }
        }

        #[test]
        fn a_changed_payload_never_verifies(
            (original, payload) in Just(PAIR_JSON.as_bytes().to_vec())
                .prop_flat_map(|original| (Just(original.clone()), changed(original))),
        ) {
            prop_assume!(payload != original);
            let mut env = envelope(&signed(false));
            env.insert("payload".into(), STANDARD.encode(&payload).into());
            let text = armor::encode(Value::Object(env).to_string().as_bytes());
            prop_assert!(!verifies(text.as_bytes()));
        }

        #[test]
        fn a_changed_signature_never_verifies(
            (original, sig) in Just(signature_of(&signed(false)))
                .prop_flat_map(|original| (Just(original.clone()), changed(original))),
        ) {
            prop_assume!(sig != original);
            let text = edit_envelope(&signed(false), |env| {
                env.insert("sig".into(), STANDARD.encode(&sig).into());
            });
            prop_assert!(!verifies(text.as_bytes()));
        }

        #[test]
        fn a_changed_kid_never_verifies(
            kid in prop_oneof![
                Just(crate::license::kid(&key(2).verifying_key())),
                "[0-9a-f]{16}",
                any::<String>(),
            ],
        ) {
            let original = signed(false);
            prop_assume!(kid != envelope(&original)["kid"]);
            let text = edit_envelope(&original, |env| {
                env.insert("kid".into(), kid.into());
            });
            prop_assert!(!verifies(text.as_bytes()));
        }

        #[test]
        fn signing_then_parsing_gives_back_the_payload(payload in payload()) {
            let json = payload.to_string();
            let text = sign(json.as_bytes(), &key(1)).unwrap();
            let file = LicenseFile::parse(text.as_bytes()).unwrap();
            prop_assert_eq!(&file.payload, &Payload::from_json(json.as_bytes()).unwrap());
            prop_assert_eq!(file.payload.to_json(), payload);
            prop_assert_eq!(file.kid.clone(), crate::license::kid(&key(1).verifying_key()));
            prop_assert!(file.verify(&trusting(&key(1))).is_ok());
        }
    }

    /// The decoded signature bytes of a file.
    fn signature_of(text: &str) -> Vec<u8> {
        LicenseFile::parse(text.as_bytes())
            .unwrap()
            .signature
            .to_bytes()
            .to_vec()
    }
}
