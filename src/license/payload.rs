//! License payloads (docs/licenses.md): the typed attributes and their strict JSON form.
//!
//! Parsing is strict on purpose: a signed file is a contract, so anything the issuer may have
//! meant differently (an unknown field, a later version, an out-of-range number) is refused
//! rather than guessed at.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::LicenseError;

/// Largest `points` a pair license may carry.
const MAX_POINTS: u64 = 1_000_000;
/// Largest monthly `transferred_records` a pair license may carry.
const MAX_RECORDS: u64 = 1_000_000_000_000;
/// Largest value of each subscription entitlement.
const MAX_ENTITLEMENT: u64 = 1_000_000;
/// Longest license `id`; it becomes a file name.
const MAX_ID_LEN: usize = 128;

/// Fields every license kind carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Common {
    /// Unique license id; also the file name it is installed under.
    pub id: String,
    /// Licensee company.
    pub company: String,
    /// Person the license is registered to.
    pub registered_to: String,
    /// Contact email of the licensee.
    pub email: String,
    /// Host (IP or FQDN) the license is bound to; `None` means unbound.
    pub bound_to: Option<String>,
    /// First instant the license is valid.
    pub start: DateTime<Utc>,
    /// First instant the license is no longer valid.
    pub expire: DateTime<Utc>,
}

/// Terms of a pair license (docs/licenses.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairTerms {
    /// One system type of the pair, as written by the issuer.
    pub system_a: String,
    /// The other system type of the pair; order does not matter.
    pub system_b: String,
    /// Number of instance pairs this license unlocks.
    pub points: u32,
    /// Monthly limit of transferred main records; `None` means unlimited.
    pub transferred_records: Option<u64>,
}

/// How a subscription counts flows and trading partners (docs/licenses.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pricing {
    /// `endpoint`: trading partners count; integration-app flows do not.
    Endpoint,
    /// `platform`: integration-app flows count; trading partners do not.
    Platform,
}

impl Pricing {
    /// The payload spelling, for output.
    pub fn as_str(self) -> &'static str {
        match self {
            Pricing::Endpoint => "endpoint",
            Pricing::Platform => "platform",
        }
    }
}

/// Entitlement limits of one environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvLimits {
    /// Maximum active flows.
    pub flows: u32,
    /// Maximum distinct canonical endpoints.
    pub endpoint_apps: u32,
    /// Maximum distinct trading partners.
    pub trading_partners: u32,
    /// Maximum distinct agents.
    pub agents: u32,
}

/// Terms of a subscription license (docs/licenses.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionTerms {
    /// Pricing model.
    pub pricing: Pricing,
    /// End of the free period without entitlement limits, if any.
    pub unlimited_until: Option<DateTime<Utc>>,
    /// Limits of the production environment.
    pub production: EnvLimits,
    /// Limits of the sandbox environment.
    pub sandbox: EnvLimits,
}

/// What a license grants, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Terms {
    /// A pair license: points and transferred records.
    Pair(PairTerms),
    /// A subscription license: entitlements per environment.
    Subscription(SubscriptionTerms),
}

/// A parsed payload (docs/licenses.md), version 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Fields shared by every kind.
    pub common: Common,
    /// Kind-specific terms.
    pub terms: Terms,
}

/// The license kinds, with the fields each allows and requires beside the common ones.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Pair,
    Subscription,
}

const COMMON_FIELDS: &[&str] = &[
    "version",
    "kind",
    "id",
    "company",
    "registered_to",
    "email",
    "bound_to",
    "start",
    "expire",
];
const COMMON_REQUIRED: &[&str] = &[
    "version",
    "kind",
    "id",
    "company",
    "registered_to",
    "email",
    "start",
    "expire",
];
const PAIR_FIELDS: &[&str] = &["system_a", "system_b", "points", "transferred_records"];
const PAIR_REQUIRED: &[&str] = &["system_a", "system_b", "points"];
const SUBSCRIPTION_FIELDS: &[&str] = &["pricing", "unlimited_until", "production", "sandbox"];
const SUBSCRIPTION_REQUIRED: &[&str] = &["pricing", "production", "sandbox"];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Pair => "pair",
            Kind::Subscription => "subscription",
        }
    }

    fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Pair => PAIR_FIELDS,
            Kind::Subscription => SUBSCRIPTION_FIELDS,
        }
    }

    fn required(self) -> &'static [&'static str] {
        match self {
            Kind::Pair => PAIR_REQUIRED,
            Kind::Subscription => SUBSCRIPTION_REQUIRED,
        }
    }
}

/// The payload as JSON spells it; every field of both kinds, checked per kind afterwards.
/// `version` and `kind` were already checked on the untyped value, so they are only matched.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(rename = "version")]
    _version: u64,
    #[serde(rename = "kind")]
    _kind: String,
    id: String,
    company: String,
    registered_to: String,
    email: String,
    bound_to: Option<String>,
    start: String,
    expire: String,
    system_a: Option<String>,
    system_b: Option<String>,
    points: Option<u64>,
    transferred_records: Option<u64>,
    pricing: Option<Pricing>,
    unlimited_until: Option<String>,
    production: Option<EnvWire>,
    sandbox: Option<EnvWire>,
}

/// One environment's limits as JSON spells them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvWire {
    flows: u64,
    endpoint_apps: u64,
    trading_partners: u64,
    agents: u64,
}

impl Payload {
    /// Parses and checks a payload; every rule of the license format (docs/licenses.md) plus sanity ranges.
    pub fn from_json(bytes: &[u8]) -> Result<Payload, LicenseError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| LicenseError::Payload(format!("not valid JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| invalid("not a JSON object".to_string()))?;
        check_version(object)?;
        let kind = read_kind(object)?;
        check_shape(object, kind)?;
        // Second pass over the bytes, typed: catches wrong types and duplicate keys.
        let wire: Wire =
            serde_json::from_slice(bytes).map_err(|e| LicenseError::Payload(e.to_string()))?;
        build(wire, kind)
    }

    /// The payload in the JSON shape of the documented examples (absent optional fields omitted).
    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.common;
        let mut m = Map::new();
        m.insert("version".into(), 1.into());
        m.insert("id".into(), c.id.clone().into());
        m.insert("kind".into(), self.kind().into());
        m.insert("company".into(), c.company.clone().into());
        m.insert("registered_to".into(), c.registered_to.clone().into());
        m.insert("email".into(), c.email.clone().into());
        if let Some(bound_to) = &c.bound_to {
            m.insert("bound_to".into(), bound_to.clone().into());
        }
        m.insert("start".into(), format_time(c.start).into());
        m.insert("expire".into(), format_time(c.expire).into());
        match &self.terms {
            Terms::Pair(p) => {
                m.insert("system_a".into(), p.system_a.clone().into());
                m.insert("system_b".into(), p.system_b.clone().into());
                m.insert("points".into(), p.points.into());
                if let Some(records) = p.transferred_records {
                    m.insert("transferred_records".into(), records.into());
                }
            }
            Terms::Subscription(s) => {
                m.insert("pricing".into(), s.pricing.as_str().into());
                if let Some(until) = s.unlimited_until {
                    m.insert("unlimited_until".into(), format_time(until).into());
                }
                m.insert("production".into(), env_json(&s.production));
                m.insert("sandbox".into(), env_json(&s.sandbox));
            }
        }
        Value::Object(m)
    }

    /// The monthly transferred-records limit and its hard limit (`limit + limit / 10`), for a pair license that sets one.
    pub fn records_limits(&self) -> Option<(u64, u64)> {
        match &self.terms {
            Terms::Pair(terms) => terms
                .transferred_records
                .map(|limit| (limit, limit + limit / 10)),
            Terms::Subscription(_) => None,
        }
    }

    /// The payload's `kind`: `"pair"` or `"subscription"`.
    pub fn kind(&self) -> &'static str {
        match self.terms {
            Terms::Pair(_) => Kind::Pair.name(),
            Terms::Subscription(_) => Kind::Subscription.name(),
        }
    }
}

/// Formats an instant as RFC 3339 in UTC with a `Z`, as the documented examples do.
pub(crate) fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn env_json(limits: &EnvLimits) -> Value {
    serde_json::json!({
        "flows": limits.flows,
        "endpoint_apps": limits.endpoint_apps,
        "trading_partners": limits.trading_partners,
        "agents": limits.agents,
    })
}

fn invalid(detail: String) -> LicenseError {
    LicenseError::Payload(detail)
}

fn check_version(object: &Map<String, Value>) -> Result<(), LicenseError> {
    match object.get("version") {
        None => Err(invalid("missing field `version`".to_string())),
        Some(v) if v.as_u64() == Some(1) => Ok(()),
        Some(v @ Value::Number(_)) => Err(LicenseError::UnsupportedVersion(v.to_string())),
        Some(_) => Err(invalid("field `version` must be a number".to_string())),
    }
}

fn read_kind(object: &Map<String, Value>) -> Result<Kind, LicenseError> {
    match object.get("kind") {
        None => Err(invalid("missing field `kind`".to_string())),
        Some(Value::String(s)) if s == "pair" => Ok(Kind::Pair),
        Some(Value::String(s)) if s == "subscription" => Ok(Kind::Subscription),
        Some(Value::String(s)) => Err(LicenseError::UnknownKind(s.clone())),
        Some(_) => Err(invalid("field `kind` must be a string".to_string())),
    }
}

fn check_shape(object: &Map<String, Value>, kind: Kind) -> Result<(), LicenseError> {
    let other = match kind {
        Kind::Pair => Kind::Subscription,
        Kind::Subscription => Kind::Pair,
    };
    for key in object.keys() {
        let key = key.as_str();
        if COMMON_FIELDS.contains(&key) || kind.fields().contains(&key) {
            continue;
        }
        if other.fields().contains(&key) {
            return Err(invalid(format!(
                "field `{key}` belongs to {} licenses, not {} licenses",
                other.name(),
                kind.name()
            )));
        }
        return Err(invalid(format!("unknown field `{key}`")));
    }
    for field in COMMON_REQUIRED.iter().chain(kind.required()) {
        if !object.contains_key(*field) {
            return Err(invalid(format!("missing field `{field}`")));
        }
    }
    // serde would also take an array for a struct; an environment must be an object.
    for field in ["production", "sandbox"] {
        if object.get(field).is_some_and(|v| !v.is_object()) {
            return Err(invalid(format!("field `{field}` must be an object")));
        }
    }
    Ok(())
}

fn build(wire: Wire, kind: Kind) -> Result<Payload, LicenseError> {
    let common = Common {
        id: check_id(wire.id)?,
        company: check_text("company", wire.company)?,
        registered_to: check_text("registered_to", wire.registered_to)?,
        email: check_text("email", wire.email)?,
        bound_to: wire
            .bound_to
            .map(|b| check_text("bound_to", b))
            .transpose()?,
        start: parse_time("start", &wire.start)?,
        expire: parse_time("expire", &wire.expire)?,
    };
    if common.start >= common.expire {
        return Err(invalid(format!(
            "start {} is not before expire {}",
            wire.start, wire.expire
        )));
    }
    let terms = match kind {
        Kind::Pair => Terms::Pair(PairTerms {
            system_a: check_text("system_a", required("system_a", wire.system_a)?)?,
            system_b: check_text("system_b", required("system_b", wire.system_b)?)?,
            points: in_range("points", required("points", wire.points)?, 1, MAX_POINTS)?,
            transferred_records: wire
                .transferred_records
                .map(|r| in_range::<u64>("transferred_records", r, 1, MAX_RECORDS))
                .transpose()?,
        }),
        Kind::Subscription => Terms::Subscription(SubscriptionTerms {
            pricing: required("pricing", wire.pricing)?,
            unlimited_until: wire
                .unlimited_until
                .map(|t| parse_time("unlimited_until", &t))
                .transpose()?,
            production: env_limits("production", required("production", wire.production)?)?,
            sandbox: env_limits("sandbox", required("sandbox", wire.sandbox)?)?,
        }),
    };
    Ok(Payload { common, terms })
}

/// A kind-specific field; `null` counts as missing.
fn required<T>(field: &str, value: Option<T>) -> Result<T, LicenseError> {
    value.ok_or_else(|| invalid(format!("missing field `{field}`")))
}

fn check_text(field: &str, value: String) -> Result<String, LicenseError> {
    if value.trim().is_empty() {
        return Err(invalid(format!("field `{field}` is empty")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!(
            "field `{field}` contains a control character"
        )));
    }
    Ok(value)
}

/// The id becomes a file name in `license_dir`, so only a safe alphabet is allowed.
fn check_id(id: String) -> Result<String, LicenseError> {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if id.is_empty() || id.len() > MAX_ID_LEN || id.starts_with('.') || !id.chars().all(safe) {
        return Err(invalid(format!(
            "id {id:?} must be 1 to {MAX_ID_LEN} characters of A-Z, a-z, 0-9, '.', '_' or '-', not starting with '.'"
        )));
    }
    Ok(id)
}

fn parse_time(field: &str, text: &str) -> Result<DateTime<Utc>, LicenseError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| invalid(format!("field `{field}` is not an RFC 3339 time: {text:?}")))
}

fn in_range<T: TryFrom<u64>>(
    field: &str,
    value: u64,
    min: u64,
    max: u64,
) -> Result<T, LicenseError> {
    if value < min || value > max {
        return Err(invalid(format!(
            "field `{field}` must be between {min} and {max}, not {value}"
        )));
    }
    T::try_from(value).map_err(|_| invalid(format!("field `{field}` is out of range: {value}")))
}

fn env_limits(env: &str, wire: EnvWire) -> Result<EnvLimits, LicenseError> {
    let limit = |name: &str, value: u64| {
        in_range::<u32>(&format!("{env}.{name}"), value, 0, MAX_ENTITLEMENT)
    };
    Ok(EnvLimits {
        flows: limit("flows", wire.flows)?,
        endpoint_apps: limit("endpoint_apps", wire.endpoint_apps)?,
        trading_partners: limit("trading_partners", wire.trading_partners)?,
        agents: limit("agents", wire.agents)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::fixtures::{at, edit_json, PAIR_JSON, SUBSCRIPTION_JSON};

    fn refusal(json: &str) -> String {
        Payload::from_json(json.as_bytes()).unwrap_err().to_string()
    }

    fn pair_with(edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        edit_json(PAIR_JSON, edit)
    }

    #[test]
    fn parses_the_spec_pair_example() {
        let payload = Payload::from_json(PAIR_JSON.as_bytes()).unwrap();
        assert_eq!(payload.kind(), "pair");
        assert_eq!(payload.common.id, "LIC-0001");
        assert_eq!(
            payload.common.bound_to.as_deref(),
            Some("integration-host.acme.example")
        );
        assert_eq!(payload.common.start, at("2026-01-01T00:00:00Z"));
        assert_eq!(payload.common.expire, at("2027-01-01T00:00:00Z"));
        assert_eq!(
            payload.terms,
            Terms::Pair(PairTerms {
                system_a: "servicenow".into(),
                system_b: "jira".into(),
                points: 2,
                transferred_records: Some(100_000),
            })
        );
    }

    #[test]
    fn parses_the_spec_subscription_example() {
        let payload = Payload::from_json(SUBSCRIPTION_JSON.as_bytes()).unwrap();
        assert_eq!(payload.kind(), "subscription");
        assert_eq!(payload.common.bound_to, None);
        let Terms::Subscription(terms) = payload.terms else {
            panic!("not a subscription")
        };
        assert_eq!(terms.pricing, Pricing::Endpoint);
        assert_eq!(terms.unlimited_until, Some(at("2026-01-31T00:00:00Z")));
        assert_eq!(
            terms.production,
            EnvLimits {
                flows: 10,
                endpoint_apps: 5,
                trading_partners: 2,
                agents: 1
            }
        );
        assert_eq!(
            terms.sandbox,
            EnvLimits {
                flows: 5,
                endpoint_apps: 3,
                trading_partners: 1,
                agents: 1
            }
        );
    }

    #[test]
    fn to_json_has_the_spec_shape_and_round_trips() {
        for json in [PAIR_JSON, SUBSCRIPTION_JSON] {
            let original: Value = serde_json::from_str(json).unwrap();
            let payload = Payload::from_json(json.as_bytes()).unwrap();
            assert_eq!(payload.to_json(), original);
        }
    }

    #[test]
    fn optional_fields_may_be_absent() {
        let json = pair_with(|m| {
            m.remove("bound_to");
            m.remove("transferred_records");
        });
        let payload = Payload::from_json(json.as_bytes()).unwrap();
        assert_eq!(payload.common.bound_to, None);
        let Terms::Pair(terms) = &payload.terms else {
            panic!("not a pair")
        };
        assert_eq!(terms.transferred_records, None);
        assert_eq!(
            payload.to_json(),
            serde_json::from_str::<Value>(&json).unwrap()
        );
    }

    #[test]
    fn times_with_offsets_are_converted_to_utc() {
        let json = pair_with(|m| {
            m.insert("start".into(), "2026-01-01T02:00:00+02:00".into());
        });
        let payload = Payload::from_json(json.as_bytes()).unwrap();
        assert_eq!(payload.common.start, at("2026-01-01T00:00:00Z"));
    }

    #[test]
    fn refuses_an_unknown_field() {
        let json = pair_with(|m| {
            m.insert("foo".into(), 1.into());
        });
        assert_eq!(refusal(&json), "payload: unknown field `foo`");
    }

    #[test]
    fn refuses_a_field_of_the_other_kind() {
        let json = pair_with(|m| {
            m.insert("pricing".into(), "endpoint".into());
        });
        assert_eq!(
            refusal(&json),
            "payload: field `pricing` belongs to subscription licenses, not pair licenses"
        );
    }

    #[test]
    fn refuses_an_unknown_field_in_an_environment() {
        let json = edit_json(SUBSCRIPTION_JSON, |m| {
            m["sandbox"]["seats"] = 1.into();
        });
        assert!(
            refusal(&json).contains("unknown field `seats`"),
            "{}",
            refusal(&json)
        );
        let json = edit_json(SUBSCRIPTION_JSON, |m| {
            m.insert("sandbox".into(), serde_json::json!([5, 3, 1, 1]));
        });
        assert_eq!(refusal(&json), "payload: field `sandbox` must be an object");
    }

    #[test]
    fn refuses_other_versions() {
        let json = pair_with(|m| {
            m.insert("version".into(), 2.into());
            m.insert("new_thing".into(), true.into());
        });
        assert_eq!(refusal(&json), "unsupported payload version 2");
        let json = pair_with(|m| {
            m.insert("version".into(), "1".into());
        });
        assert_eq!(refusal(&json), "payload: field `version` must be a number");
        let json = pair_with(|m| {
            m.remove("version");
        });
        assert_eq!(refusal(&json), "payload: missing field `version`");
    }

    #[test]
    fn refuses_an_unknown_kind() {
        let json = pair_with(|m| {
            m.insert("kind".into(), "site".into());
        });
        assert_eq!(
            refusal(&json),
            "unknown license kind \"site\"; expected \"pair\" or \"subscription\""
        );
    }

    #[test]
    fn refuses_missing_required_fields() {
        for field in [
            "id",
            "company",
            "registered_to",
            "email",
            "start",
            "expire",
            "kind",
        ] {
            let json = pair_with(|m| {
                m.remove(field);
            });
            assert_eq!(refusal(&json), format!("payload: missing field `{field}`"));
        }
        for field in ["system_a", "system_b", "points"] {
            let json = pair_with(|m| {
                m.remove(field);
            });
            assert_eq!(refusal(&json), format!("payload: missing field `{field}`"));
        }
        for field in ["pricing", "production", "sandbox"] {
            let json = edit_json(SUBSCRIPTION_JSON, |m| {
                m.remove(field);
            });
            assert_eq!(refusal(&json), format!("payload: missing field `{field}`"));
        }
        let json = pair_with(|m| {
            m.insert("points".into(), Value::Null);
        });
        assert_eq!(refusal(&json), "payload: missing field `points`");
    }

    #[test]
    fn refuses_duplicate_keys_and_wrong_types() {
        let json = PAIR_JSON.replacen("\"points\":2", "\"points\":2,\"points\":200", 1);
        assert!(
            refusal(&json).contains("duplicate field `points`"),
            "{}",
            refusal(&json)
        );
        let json = pair_with(|m| {
            m.insert("points".into(), "2".into());
        });
        assert!(
            refusal(&json).starts_with("payload: invalid type"),
            "{}",
            refusal(&json)
        );
        assert_eq!(refusal("[1]"), "payload: not a JSON object");
        assert!(refusal("{").starts_with("payload: not valid JSON"));
    }

    #[test]
    fn refuses_out_of_range_numbers() {
        for (field, value) in [
            ("points", 0u64),
            ("points", 1_000_001),
            ("transferred_records", 0),
            ("transferred_records", 1_000_000_000_001),
        ] {
            let json = pair_with(|m| {
                m.insert(field.into(), value.into());
            });
            assert!(
                refusal(&json).starts_with(&format!("payload: field `{field}` must be between")),
                "{}",
                refusal(&json)
            );
        }
        let json = edit_json(SUBSCRIPTION_JSON, |m| {
            m["production"]["agents"] = 1_000_001.into();
        });
        assert_eq!(
            refusal(&json),
            "payload: field `production.agents` must be between 0 and 1000000, not 1000001"
        );
        let zero = edit_json(SUBSCRIPTION_JSON, |m| {
            m["sandbox"]["flows"] = 0.into();
        });
        assert!(Payload::from_json(zero.as_bytes()).is_ok());
    }

    #[test]
    fn refuses_an_empty_or_reversed_window() {
        let json = pair_with(|m| {
            m.insert("expire".into(), "2026-01-01T00:00:00Z".into());
        });
        assert_eq!(
            refusal(&json),
            "payload: start 2026-01-01T00:00:00Z is not before expire 2026-01-01T00:00:00Z"
        );
        let json = pair_with(|m| {
            m.insert("start".into(), "2026-01-01".into());
        });
        assert_eq!(
            refusal(&json),
            "payload: field `start` is not an RFC 3339 time: \"2026-01-01\""
        );
    }

    #[test]
    fn refuses_ids_that_are_not_safe_file_names() {
        for id in ["", "..", ".hidden", "a/b", "a b", "ü", &"x".repeat(129)] {
            let json = pair_with(|m| {
                m.insert("id".into(), id.into());
            });
            assert!(
                refusal(&json).starts_with("payload: id "),
                "{id}: {}",
                refusal(&json)
            );
        }
        let json = pair_with(|m| {
            m.insert("id".into(), "Lic_2026.01-a".into());
        });
        assert!(Payload::from_json(json.as_bytes()).is_ok());
    }

    #[test]
    fn refuses_empty_text_and_control_characters() {
        for field in ["email", "company", "system_a", "system_b", "bound_to"] {
            let json = pair_with(|m| {
                m.insert(field.into(), "  ".into());
            });
            assert_eq!(refusal(&json), format!("payload: field `{field}` is empty"));
        }
        let json = pair_with(|m| {
            m.insert("company".into(), "Acme\u{1b}[2J".into());
        });
        assert_eq!(
            refusal(&json),
            "payload: field `company` contains a control character"
        );
    }

    #[test]
    fn pricing_must_be_known() {
        let json = edit_json(SUBSCRIPTION_JSON, |m| {
            m.insert("pricing".into(), "seat".into());
        });
        assert!(
            refusal(&json).contains("unknown variant `seat`"),
            "{}",
            refusal(&json)
        );
        let json = edit_json(SUBSCRIPTION_JSON, |m| {
            m.insert("pricing".into(), "platform".into());
        });
        let payload = Payload::from_json(json.as_bytes()).unwrap();
        let Terms::Subscription(terms) = payload.terms else {
            panic!("not a subscription")
        };
        assert_eq!(terms.pricing, Pricing::Platform);
    }
}
