//! JSON shapes of the admin API, built from a snapshot.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::clock::{month_index, month_index_label, Clock};
use crate::config::Environment;
use crate::license::Terms;
use crate::policy::{Entitlement, FlowState, InvalidReason, LicenseEntry, Moment, Snapshot};
use crate::store::fleet::Fleet;

/// The fields of every license entry, `null` where the license does not set them.
const LICENSE_FIELDS: [&str; 10] = [
    "id",
    "kind",
    "company",
    "registered_to",
    "email",
    "bound_to",
    "start",
    "expire",
    "state",
    "reason",
];
/// The further fields of a pair license entry.
const PAIR_FIELDS: [&str; 5] = [
    "system_a",
    "system_b",
    "transferred_records",
    "points",
    "records",
];
/// The further fields of a subscription license entry, in place of the pair fields.
const SUBSCRIPTION_FIELDS: [&str; 4] = ["pricing", "unlimited_until", "production", "sandbox"];

/// One license as `GET /v1/licenses` lists it: every field of its kind, `null` where unset.
pub fn license(
    snapshot: &Snapshot,
    entry: &LicenseEntry,
    now: DateTime<Utc>,
    fleet: Option<&Fleet>,
) -> Value {
    let mut view = license_fields(snapshot, entry, now);
    // Fleet mode: this sidecar's lease and every node's line; null on a lone sidecar.
    let month = month_index(now, snapshot.tz);
    view.insert(
        "fleet".into(),
        fleet.map_or(Value::Null, |fleet| fleet.lease_view(&entry.meter, month)),
    );
    let kind_fields: &[&str] = match entry.installed.file.payload.terms {
        Terms::Pair(_) => &PAIR_FIELDS,
        Terms::Subscription(_) => &SUBSCRIPTION_FIELDS,
    };
    for field in LICENSE_FIELDS.iter().chain(kind_fields) {
        view.entry(*field).or_insert(Value::Null);
    }
    Value::Object(view)
}

/// The fields a license sets, with its state, file, key id and (pair) points and records.
fn license_fields(
    snapshot: &Snapshot,
    entry: &LicenseEntry,
    now: DateTime<Utc>,
) -> Map<String, Value> {
    let payload = &entry.installed.file.payload;
    let mut view = match payload.to_json() {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    view.remove("version");
    let validity = entry
        .usable_at(Moment {
            now,
            floor: snapshot.clock_floor,
        })
        .err();
    view.insert(
        "state".into(),
        validity.map_or("valid", InvalidReason::as_str).into(),
    );
    view.insert(
        "reason".into(),
        match validity {
            None => Value::Null,
            Some(InvalidReason::Expired) => {
                format!("expired at {}", payload.common.expire.to_rfc3339()).into()
            }
            Some(InvalidReason::NotYetValid) => {
                format!("valid from {}", payload.common.start.to_rfc3339()).into()
            }
            Some(other) => other.as_str().into(),
        },
    );
    view.insert(
        "file".into(),
        entry.installed.path.display().to_string().into(),
    );
    view.insert("kid".into(), entry.installed.file.kid.clone().into());
    if let Terms::Pair(terms) = &payload.terms {
        view.insert(
            "points".into(),
            json!({"total": terms.points, "used": entry.points_used}),
        );
        let month = month_index(now, snapshot.tz);
        let used = entry.meter.committed(month);
        view.insert(
            "records".into(),
            json!({
                "month": month_index_label(month),
                "used": used,
                "limit": entry.limit,
                "hard_limit": entry.hard_limit,
                "warning": entry.limit.is_some_and(|limit| used >= limit),
            }),
        );
    }
    view
}

/// All licenses.
pub fn licenses(snapshot: &Snapshot, clock: &dyn Clock, fleet: Option<&Fleet>) -> Value {
    let now = clock.now();
    Value::Array(
        snapshot
            .licenses
            .iter()
            .map(|entry| license(snapshot, entry, now, fleet))
            .collect(),
    )
}

/// One flow as `GET /v1/flows` lists it.
pub fn flow(snapshot: &Snapshot, index: u32) -> Value {
    let entry = &snapshot.flows[index as usize];
    let info = snapshot.flow_info(index);
    let config = &snapshot.config.flows[index as usize];
    let (enabled, reason, license) = match entry.state {
        FlowState::Active { license } => (
            true,
            None,
            license.map(|l| snapshot.licenses[l as usize].id().to_owned()),
        ),
        FlowState::Unlicensed(reason) => (true, Some(format!("license-invalid:{reason}")), None),
        FlowState::Disabled(reason) => (false, Some(reason.as_str().to_owned()), None),
    };
    json!({
        "id": &*info.id,
        "kind": config.kind.as_str(),
        "environment": config.environment.as_str(),
        "systems": config.systems,
        "enabled": enabled,
        "reason": reason,
        "license": license,
        "pair_key": info.pair_key.as_deref(),
    })
}

/// All flows.
pub fn flows(snapshot: &Snapshot) -> Value {
    Value::Array(
        (0..snapshot.flows.len() as u32)
            .map(|index| flow(snapshot, index))
            .collect(),
    )
}

/// `GET /v1/entitlements`: per environment, each entitlement's `{used, limit, keys}`; `limit`
/// is null where no subscription limits it (none required or valid, or a free period).
pub fn entitlements(snapshot: &Snapshot) -> Value {
    let entitlements = &snapshot.entitlements;
    let mut out = Map::new();
    for environment in Environment::ALL {
        let in_use = &entitlements.in_use[environment];
        let used = in_use.used();
        let limits = entitlements.enforced(environment);
        let mut env = Map::new();
        for entitlement in Entitlement::ALL {
            env.insert(
                entitlement.as_str().into(),
                json!({
                    "used": used[entitlement],
                    "limit": limits.map(|limits| limits[entitlement]),
                    "keys": in_use.keys(entitlement),
                }),
            );
        }
        out.insert(environment.as_str().into(), Value::Object(env));
    }
    if let Some(limits) = entitlements.limits {
        out.insert("pricing".into(), limits.pricing.as_str().into());
        out.insert("unlimited".into(), limits.unlimited.into());
    }
    Value::Object(out)
}
