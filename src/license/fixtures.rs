//! Shared test fixtures: the example payloads of docs/licenses.md, fixed keys and file editors.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use serde_json::{Map, Value};

use super::{armor, Installed, LicenseFile, TrustedKeys};

/// The pair example of docs/licenses.md.
pub(super) const PAIR_JSON: &str = r#"{"version":1,"id":"LIC-0001","kind":"pair","company":"Acme Corp","registered_to":"Jane Doe",
 "email":"jane@acme.example","bound_to":"integration-host.acme.example",
 "start":"2026-01-01T00:00:00Z","expire":"2027-01-01T00:00:00Z",
 "system_a":"servicenow","system_b":"jira","points":2,"transferred_records":100000}"#;

/// The subscription example of docs/licenses.md.
pub(super) const SUBSCRIPTION_JSON: &str = r#"{"version":1,"id":"SUB-0001","kind":"subscription","company":"Acme Corp","registered_to":"Jane Doe",
 "email":"jane@acme.example","start":"2026-01-01T00:00:00Z","expire":"2027-01-01T00:00:00Z",
 "pricing":"endpoint","unlimited_until":"2026-01-31T00:00:00Z",
 "production":{"flows":10,"endpoint_apps":5,"trading_partners":2,"agents":1},
 "sandbox":{"flows":5,"endpoint_apps":3,"trading_partners":1,"agents":1}}"#;

/// A deterministic key.
pub(super) fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// A trusted set holding only `key`'s public half.
pub(super) fn trusting(key: &SigningKey) -> TrustedKeys {
    let mut keys = TrustedKeys::new();
    keys.add(key.verifying_key());
    keys
}

/// An RFC 3339 instant.
pub(crate) fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// `json` with its top-level object changed by `edit`.
pub(super) fn edit_json(json: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> String {
    let mut value: Value = serde_json::from_str(json).unwrap();
    edit(value.as_object_mut().unwrap());
    value.to_string()
}

/// A license file text with its envelope changed by `edit`, re-armored (signature untouched).
pub(super) fn edit_envelope(text: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> String {
    let envelope = String::from_utf8(armor::decode(text).unwrap()).unwrap();
    armor::encode(edit_json(&envelope, edit).as_bytes())
}

/// A license file text whose payload is replaced by `payload_json` (signature untouched).
pub(super) fn replace_payload(text: &str, payload_json: &str) -> String {
    edit_envelope(text, |env| {
        env.insert("payload".into(), STANDARD.encode(payload_json).into());
    })
}

/// A verified license installed from `<id>.lic`: `payload_json` signed with a fixed key, for
/// tests that compile snapshots without a license directory.
pub(crate) fn installed(id: &str, payload_json: &str) -> std::sync::Arc<Installed> {
    let text = super::sign(payload_json.as_bytes(), &key(9)).expect("a valid test payload");
    std::sync::Arc::new(Installed {
        path: format!("{id}.lic").into(),
        file: LicenseFile::parse(text.as_bytes()).expect("a signed test license"),
    })
}
