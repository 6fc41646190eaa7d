//! License fixtures: payload builders, an issuer whose keys and signatures come from the
//! binary's own `license keygen` and `license sign`, and the armor, unarmor and tamper
//! helpers that write and damage license files independently of tollgate's code.
//!
//! The armor is the license file format: the envelope JSON
//! (`{"alg", "kid", "payload", "sig"}`) in base64, wrapped between the
//! `-----BEGIN TOLLGATE LICENSE-----` and `-----END TOLLGATE LICENSE-----` lines.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::process::{stderr, tollgate_output};

/// The first line of an armored license.
const BEGIN: &str = "-----BEGIN TOLLGATE LICENSE-----";
/// The last line of an armored license.
const END: &str = "-----END TOLLGATE LICENSE-----";
/// Base64 characters per armor line (the PEM convention, within the 76 the format allows).
const ARMOR_WIDTH: usize = 64;

// ---------------------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------------------

/// A valid, unbound pair license payload for `{a, b}` with `points` points, 2020 to 2099.
pub fn pair_license(id: &str, system_a: &str, system_b: &str, points: u32) -> Value {
    json!({
        "version": 1,
        "id": id,
        "kind": "pair",
        "company": "Acme Corp",
        "registered_to": "Jane Doe",
        "email": "jane@acme.example",
        "start": "2020-01-01T00:00:00Z",
        "expire": "2099-01-01T00:00:00Z",
        "system_a": system_a,
        "system_b": system_b,
        "points": points,
    })
}

/// A valid, unbound subscription license payload, 2020 to 2099, with `pricing` (`endpoint`
/// | `platform`) and the limits `[flows, endpoint_apps, trading_partners, agents]` of each
/// environment.
pub fn subscription_license(
    id: &str,
    pricing: &str,
    production: [u64; 4],
    sandbox: [u64; 4],
) -> Value {
    json!({
        "version": 1,
        "id": id,
        "kind": "subscription",
        "company": "Acme Corp",
        "registered_to": "Jane Doe",
        "email": "jane@acme.example",
        "start": "2020-01-01T00:00:00Z",
        "expire": "2099-01-01T00:00:00Z",
        "pricing": pricing,
        "production": env_limits(production),
        "sandbox": env_limits(sandbox),
    })
}

/// One environment's limits as a subscription payload spells them, from
/// `[flows, endpoint_apps, trading_partners, agents]`.
fn env_limits(limits: [u64; 4]) -> Value {
    json!({
        "flows": limits[0],
        "endpoint_apps": limits[1],
        "trading_partners": limits[2],
        "agents": limits[3],
    })
}

/// `payload` with `key` set to `value` (e.g. `bound_to`, `transferred_records`).
pub fn with(mut payload: Value, key: &str, value: impl Into<Value>) -> Value {
    payload[key] = value.into();
    payload
}

/// `payload` valid from `start` to `expire` (RFC 3339 instants).
pub fn during(payload: Value, start: &str, expire: &str) -> Value {
    with(with(payload, "start", start), "expire", expire)
}

/// A pair license that expired in 2021.
pub fn expired_pair_license(id: &str, system_a: &str, system_b: &str, points: u32) -> Value {
    during(
        pair_license(id, system_a, system_b, points),
        "2020-01-01T00:00:00Z",
        "2021-01-01T00:00:00Z",
    )
}

/// A pair license that only starts in 2098.
pub fn future_pair_license(id: &str, system_a: &str, system_b: &str, points: u32) -> Value {
    during(
        pair_license(id, system_a, system_b, points),
        "2098-01-01T00:00:00Z",
        "2099-01-01T00:00:00Z",
    )
}

// ---------------------------------------------------------------------------------------
// The issuer
// ---------------------------------------------------------------------------------------

/// An issuer key pair made by `tollgate license keygen` (`issuer.key`, `issuer.pub`) in a
/// directory, and signing with it.
pub struct Issuer {
    dir: PathBuf,
    /// Numbers the scratch files of [`Issuer::sign`].
    signed: AtomicUsize,
    /// The temporary directory of [`Issuer::scratch`], removed with the issuer.
    _scratch: Option<tempfile::TempDir>,
}

impl Issuer {
    /// Writes `issuer.key` and `issuer.pub` into `dir` (created if missing).
    pub fn new(dir: &Path) -> Issuer {
        Issuer::keygen(dir.to_owned(), None)
    }

    /// An issuer in a temporary directory of its own, removed when the issuer is dropped.
    pub fn scratch() -> Issuer {
        let scratch = tempfile::tempdir().expect("create a temporary directory for an issuer");
        Issuer::keygen(scratch.path().to_owned(), Some(scratch))
    }

    fn keygen(dir: PathBuf, scratch: Option<tempfile::TempDir>) -> Issuer {
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|err| panic!("create {}: {err}", dir.display()));
        run_ok(&[
            "license".as_ref(),
            "keygen".as_ref(),
            "--out".as_ref(),
            dir.as_os_str(),
        ]);
        Issuer {
            dir,
            signed: AtomicUsize::new(0),
            _scratch: scratch,
        }
    }

    /// The directory holding the key pair.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `name` inside the issuer's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The private key file (PKCS#8 PEM).
    pub fn private_key(&self) -> PathBuf {
        self.path("issuer.key")
    }

    /// The public key file (SPKI PEM).
    pub fn public_key(&self) -> PathBuf {
        self.path("issuer.pub")
    }

    /// The key id licenses signed by this issuer carry.
    pub fn kid(&self) -> String {
        let public = self.public_key();
        let pem = std::fs::read_to_string(&public)
            .unwrap_or_else(|err| panic!("read {}: {err}", public.display()));
        kid_of_public_pem(&pem)
    }

    /// Signs `payload` with `tollgate license sign`; returns the armored license text.
    pub fn sign(&self, payload: &Value) -> String {
        let n = self.signed.fetch_add(1, Ordering::SeqCst);
        let scratch = self.path("signed");
        std::fs::create_dir_all(&scratch)
            .unwrap_or_else(|err| panic!("create {}: {err}", scratch.display()));
        let license = scratch.join(format!("license-{n}.lic"));
        self.sign_text(
            &payload.to_string(),
            &scratch.join(format!("payload-{n}.json")),
            &license,
        );
        std::fs::read_to_string(&license)
            .unwrap_or_else(|err| panic!("read {}: {err}", license.display()))
    }

    /// Signs the payload text `payload_json` with `tollgate license sign` into the file
    /// `name` in the issuer's directory (the payload goes to `name.json` beside it); returns
    /// the license file's path.
    pub fn sign_file(&self, payload_json: &str, name: &str) -> PathBuf {
        let license = self.path(name);
        self.sign_text(payload_json, &self.path(&format!("{name}.json")), &license);
        license
    }

    fn sign_text(&self, payload_json: &str, input: &Path, license: &Path) {
        std::fs::write(input, payload_json)
            .unwrap_or_else(|err| panic!("write {}: {err}", input.display()));
        run_ok(&sign_args(&self.private_key(), input, license));
    }

    /// Signs `payload_json` the way the license format prescribes, without checking the
    /// payload (for payloads `tollgate license sign` rightly refuses); returns the armored
    /// license text.
    pub fn sign_unchecked(&self, payload_json: &str) -> String {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        use ed25519_dalek::Signer;
        let path = self.private_key();
        let pem = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem)
            .unwrap_or_else(|err| panic!("{} is not a PKCS#8 Ed25519 key: {err}", path.display()));
        let payload = STANDARD.encode(payload_json);
        let signature = key.sign(format!("tollgate-license-v1.{payload}").as_bytes());
        armor(&json!({
            "alg": "ed25519",
            "kid": self.kid(),
            "payload": payload,
            "sig": STANDARD.encode(signature.to_bytes()),
        }))
    }

    /// Runs `tollgate license verify --pub <public key> <license>`.
    pub fn verify(&self, license: &Path) -> Output {
        tollgate_output([
            "license".as_ref(),
            "verify".as_ref(),
            "--pub".as_ref(),
            self.public_key().as_os_str(),
            license.as_os_str(),
        ])
    }
}

/// The arguments of `tollgate license sign --key key --in input --out out`.
pub fn sign_args<'a>(key: &'a Path, input: &'a Path, out: &'a Path) -> [&'a std::ffi::OsStr; 8] {
    [
        "license".as_ref(),
        "sign".as_ref(),
        "--key".as_ref(),
        key.as_os_str(),
        "--in".as_ref(),
        input.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]
}

/// Runs the tollgate binary with `args`; panics with its stderr unless it exits 0.
fn run_ok(args: &[&std::ffi::OsStr]) {
    let out = tollgate_output(args);
    assert!(
        out.status.success(),
        "tollgate {args:?} failed ({}): {}",
        out.status,
        stderr(&out)
    );
}

/// The key id of an SPKI PEM public key: the first 8 bytes of the SHA-256 of the raw
/// Ed25519 key (the DER's last 32 bytes), in hex.
pub fn kid_of_public_pem(pem: &str) -> String {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD
        .decode(b64)
        .unwrap_or_else(|err| panic!("the public key PEM is not base64 ({err}):\n{pem}"));
    assert!(der.len() >= 32, "the public key DER is too short:\n{pem}");
    let digest = Sha256::digest(&der[der.len() - 32..]);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// Armor
// ---------------------------------------------------------------------------------------

/// Armors an envelope into license file text.
pub fn armor(envelope: &Value) -> String {
    let encoded = STANDARD.encode(envelope.to_string());
    let mut text = format!("{BEGIN}\n");
    // Base64 is ASCII, so byte chunks are whole characters.
    for line in encoded.as_bytes().chunks(ARMOR_WIDTH) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str(END);
    text.push('\n');
    text
}

/// The envelope JSON inside armored license text.
pub fn unarmor(text: &str) -> Value {
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    let json = STANDARD
        .decode(b64)
        .unwrap_or_else(|err| panic!("the armor is not base64 ({err}):\n{text}"));
    serde_json::from_slice(&json)
        .unwrap_or_else(|err| panic!("the envelope is not JSON ({err}):\n{text}"))
}

/// License text with its envelope edited by `edit`; the signature stays as it was.
pub fn tampered(text: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut envelope = unarmor(text);
    edit(&mut envelope);
    armor(&envelope)
}

/// Rewrites the envelope of the license file `license` in place with `edit`; the signature
/// stays as it was.
pub fn tamper(license: &Path, edit: impl FnOnce(&mut Value)) {
    let text = std::fs::read_to_string(license)
        .unwrap_or_else(|err| panic!("read {}: {err}", license.display()));
    std::fs::write(license, tampered(&text, edit))
        .unwrap_or_else(|err| panic!("write {}: {err}", license.display()));
}
