//! License files (SPEC §3): the signed envelope inside the armor, parsing, signing and
//! signature verification.

use std::path::Path;

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
}

impl LicenseFile {
    /// Parses a license file's bytes; refuses anything that breaks SPEC §3.
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
        })
    }

    /// Reads and parses a license file, refusing one over the size limit without reading it.
    pub fn read(path: &Path) -> Result<LicenseFile, LicenseError> {
        match read_capped(path, MAX_LICENSE_BYTES)? {
            Capped::Fits(bytes) => Self::parse(&bytes),
            Capped::TooLarge(size) => Err(LicenseError::TooLarge { size }),
        }
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
}
