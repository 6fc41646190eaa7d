//! Issuer keys (docs/licenses.md): PEM files (PKCS#8 private, SubjectPublicKeyInfo public), key ids,
//! and the set of trusted issuer keys a license must be signed by.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_core::OsRng;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::armor;
use super::read::{read_capped, Capped};

/// Largest key file read; an Ed25519 PEM key is about 120 bytes.
const MAX_KEY_BYTES: usize = 16 * 1024;
/// DER of an Ed25519 PKCS#8 v1 private key up to the 32-byte seed (RFC 8410, section 7).
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// DER of an Ed25519 SubjectPublicKeyInfo up to the 32-byte public key (RFC 8410, section 4).
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A key file that cannot be read or is not an Ed25519 key of the expected kind.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The file could not be opened or read.
    #[error("cannot be read: {0}")]
    Read(#[from] std::io::Error),
    /// The file is far larger than any PEM key.
    #[error("key file is {size} bytes, too large for a PEM key")]
    TooLarge {
        /// Size of the file in bytes.
        size: u64,
    },
    /// The file has no PEM BEGIN line.
    #[error("not a PEM file: no -----BEGIN {expected}----- line")]
    NotPem {
        /// The label that was expected.
        expected: &'static str,
    },
    /// A PEM file of another kind, such as a public key given where a private key belongs.
    #[error("PEM label is {found:?}; expected {expected:?}")]
    WrongLabel {
        /// The label found.
        found: String,
        /// The label that was expected.
        expected: &'static str,
    },
    /// The private key is not an Ed25519 PKCS#8 key.
    #[error("not an Ed25519 private key (PKCS#8): {0}")]
    BadPrivate(ed25519_dalek::pkcs8::Error),
    /// The public key is not an Ed25519 SubjectPublicKeyInfo key.
    #[error("not an Ed25519 public key (SubjectPublicKeyInfo): {0}")]
    BadPublic(ed25519_dalek::pkcs8::spki::Error),
    /// A small-order public key, under which forged signatures could verify.
    #[error("weak Ed25519 public key (small order); it cannot be trusted")]
    WeakKey,
}

/// The issuer keys licenses may be signed by, looked up by key id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: BTreeMap<String, VerifyingKey>,
}

impl TrustedKeys {
    /// An empty set: no license verifies against it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts `key`; returns its key id.
    pub fn add(&mut self, key: VerifyingKey) -> String {
        let id = kid(&key);
        self.keys.insert(id.clone(), key);
        id
    }

    /// Reads a public key PEM file and trusts it; returns its key id.
    pub fn load_pem_file(&mut self, path: &Path) -> Result<String, KeyError> {
        Ok(self.add(read_verifying_key(path)?))
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys are trusted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The trusted key with this id.
    pub(crate) fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }
}

/// The key id of a license file (docs/licenses.md): lowercase hex of the first 8 bytes of SHA-256 of the public key.
pub fn kid(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest[..8]
        .iter()
        .fold(String::with_capacity(16), |mut s, b| {
            // Writing to a String cannot fail.
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Whether `text` has the form [`kid`] produces.
pub(crate) fn is_kid(text: &str) -> bool {
    text.len() == 16 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Reads an issuer private key from a PEM (PKCS#8) file.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    signing_key_from_pem(&read_key_text(path)?)
}

/// Reads an issuer public key from a PEM (SubjectPublicKeyInfo) file.
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    verifying_key_from_pem(&read_key_text(path)?)
}

/// Parses an issuer private key from PEM (PKCS#8) text, e.g. from `openssl genpkey`.
pub fn signing_key_from_pem(text: &str) -> Result<SigningKey, KeyError> {
    check_pem_label(text, "PRIVATE KEY")?;
    SigningKey::from_pkcs8_pem(text).map_err(KeyError::BadPrivate)
}

/// Parses an issuer public key from PEM (SubjectPublicKeyInfo) text, e.g. from `openssl pkey -pubout`.
pub fn verifying_key_from_pem(text: &str) -> Result<VerifyingKey, KeyError> {
    check_pem_label(text, "PUBLIC KEY")?;
    let key = VerifyingKey::from_public_key_pem(text).map_err(KeyError::BadPublic)?;
    if key.is_weak() {
        return Err(KeyError::WeakKey);
    }
    Ok(key)
}

/// A fresh issuer key pair as PEM text: (private PKCS#8, public SubjectPublicKeyInfo),
/// in the same form `openssl genpkey -algorithm ed25519` writes.
pub fn generate_keypair() -> (String, String) {
    let key = SigningKey::generate(&mut OsRng);
    let mut private_der = PKCS8_PREFIX.to_vec();
    private_der.extend_from_slice(key.as_bytes());
    let mut public_der = SPKI_PREFIX.to_vec();
    public_der.extend_from_slice(key.verifying_key().as_bytes());
    (
        armor::wrap("PRIVATE KEY", &private_der),
        armor::wrap("PUBLIC KEY", &public_der),
    )
}

fn read_key_text(path: &Path) -> Result<String, KeyError> {
    match read_capped(path, MAX_KEY_BYTES)? {
        Capped::Fits(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Capped::TooLarge(size) => Err(KeyError::TooLarge { size }),
    }
}

/// Names a mix-up (public for private, or another PEM kind) before the DER decoder would.
fn check_pem_label(text: &str, expected: &'static str) -> Result<(), KeyError> {
    let found = text.lines().find_map(|line| {
        line.trim_end()
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
    });
    match found {
        None => Err(KeyError::NotPem { expected }),
        Some(label) if label == expected => Ok(()),
        Some(label) => Err(KeyError::WrongLabel {
            found: label.to_string(),
            expected,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, Verifier};

    /// RFC 8032, section 7.1 test 1.
    const RFC8032_SECRET: [u8; 32] = [
        0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c,
        0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae,
        0x7f, 0x60,
    ];

    #[test]
    fn kid_known_answer() {
        // sha256(d75a9801…511a) = 21fe31dfa154a261…; computed independently with sha256sum.
        let key = SigningKey::from_bytes(&RFC8032_SECRET);
        assert_eq!(kid(&key.verifying_key()), "21fe31dfa154a261");
        assert!(is_kid("21fe31dfa154a261"));
        assert!(!is_kid("21FE31DFA154A261"));
        assert!(!is_kid("21fe31dfa154a26"));
    }

    #[test]
    fn generated_pem_keys_parse_and_match() {
        let (private_pem, public_pem) = generate_keypair();
        assert!(private_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let signing = signing_key_from_pem(&private_pem).unwrap();
        let verifying = verifying_key_from_pem(&public_pem).unwrap();
        assert_eq!(signing.verifying_key(), verifying);
        let signature = signing.sign(b"message");
        verifying.verify(b"message", &signature).unwrap();
        assert_ne!(generate_keypair().0, private_pem);
    }

    #[test]
    fn reads_the_openssl_pem_forms() {
        // `openssl genpkey -algorithm ed25519` / `openssl pkey -pubout` of RFC 8032 test 1.
        let private_pem = "-----BEGIN PRIVATE KEY-----\n\
            MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n\
            -----END PRIVATE KEY-----\n";
        let public_pem = "-----BEGIN PUBLIC KEY-----\n\
            MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n\
            -----END PUBLIC KEY-----\n";
        let signing = signing_key_from_pem(private_pem).unwrap();
        assert_eq!(signing.to_bytes(), RFC8032_SECRET);
        assert_eq!(
            verifying_key_from_pem(public_pem).unwrap(),
            signing.verifying_key()
        );
    }

    #[test]
    fn mixups_are_named() {
        let (private_pem, public_pem) = generate_keypair();
        assert_eq!(
            verifying_key_from_pem(&private_pem)
                .unwrap_err()
                .to_string(),
            "PEM label is \"PRIVATE KEY\"; expected \"PUBLIC KEY\""
        );
        assert_eq!(
            signing_key_from_pem(&public_pem).unwrap_err().to_string(),
            "PEM label is \"PUBLIC KEY\"; expected \"PRIVATE KEY\""
        );
        assert_eq!(
            signing_key_from_pem("hello").unwrap_err().to_string(),
            "not a PEM file: no -----BEGIN PRIVATE KEY----- line"
        );
        let broken = public_pem.replacen("MCow", "MCox", 1);
        assert!(matches!(
            verifying_key_from_pem(&broken),
            Err(KeyError::BadPublic(_))
        ));
    }

    #[test]
    fn a_weak_public_key_is_refused() {
        // The identity point: every signature with s = 0 would verify under it.
        let mut der = SPKI_PREFIX.to_vec();
        let mut identity = [0u8; 32];
        identity[0] = 1;
        der.extend_from_slice(&identity);
        let pem = armor::wrap("PUBLIC KEY", &der);
        assert!(matches!(
            verifying_key_from_pem(&pem),
            Err(KeyError::WeakKey)
        ));
    }

    #[test]
    fn trusted_keys_are_looked_up_by_kid() {
        let mut keys = TrustedKeys::new();
        assert!(keys.is_empty());
        let key = SigningKey::from_bytes(&RFC8032_SECRET).verifying_key();
        assert_eq!(keys.add(key), "21fe31dfa154a261");
        assert_eq!(keys.add(key), "21fe31dfa154a261");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys.get("21fe31dfa154a261"), Some(&key));
        assert_eq!(keys.get("0000000000000000"), None);
    }

    #[test]
    fn key_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let (private_pem, public_pem) = generate_keypair();
        let private_path = dir.path().join("issuer.key");
        let public_path = dir.path().join("issuer.pub");
        std::fs::write(&private_path, &private_pem).unwrap();
        std::fs::write(&public_path, &public_pem).unwrap();
        let signing = read_signing_key(&private_path).unwrap();
        let mut keys = TrustedKeys::new();
        assert_eq!(
            keys.load_pem_file(&public_path).unwrap(),
            kid(&signing.verifying_key())
        );
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'A'; MAX_KEY_BYTES + 1]).unwrap();
        assert!(matches!(
            read_verifying_key(&big),
            Err(KeyError::TooLarge { .. })
        ));
        let missing = read_verifying_key(&dir.path().join("none.pub")).unwrap_err();
        assert!(
            missing.to_string().starts_with("cannot be read: "),
            "{missing}"
        );
    }
}
