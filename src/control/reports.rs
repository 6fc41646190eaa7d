//! What the admin API reads from the control plane beyond the snapshot: status, usage per
//! month (live counters or the store) and the audit trail.

use serde_json::{json, Value};

use super::plane::Plane;
use super::restart::restart_required;
use crate::clock::month_index;
use crate::store::StoreError;

impl Plane {
    /// The admin status: generation, rejected license files, the last config error.
    pub(super) fn status(&self) -> Value {
        let state = self;
        let rejected: Vec<Value> = state
            .rejected
            .iter()
            .map(|r| json!({"path": r.path.display().to_string(), "reason": r.reason.to_string()}))
            .collect();
        json!({
            "generation": self.shared.live.load().generation,
            "config": self.config_path.display().to_string(),
            "config_error": state.config_error,
            "restart_required": restart_required(&state.started_with, &state.config),
            "rejected": rejected,
            "host": state.host.entries(),
            "trusted_keys": state.keys.len(),
            "clock_rollback": state.rollback,
            "clock_high_water": state.high_water.to_rfc3339(),
            "month": crate::clock::month_index_label(state.month),
            "fleet": state.fleet.as_ref().map(|fleet| fleet.status()),
            "enforcement": state.config.licensing.enforcement,
        })
    }

    /// Records for a month (`YYYY-MM`) per license and per flow: the live counters for the
    /// current month, the store for any other (and for the daily chart), after every count
    /// recorded so far has been put into the store's tables.
    pub(super) fn usage(&self, month: u32) -> Result<Value, StoreError> {
        self.shared.recorder.flush_blocking()?;
        let snapshot = self.shared.live.load_full();
        let label = crate::clock::month_index_label(month);
        let current = month_index(self.shared.clock.now(), snapshot.tz);
        let (stored_licenses, stored_flows) = match &self.fleet {
            Some(fleet) if month != current => {
                let ids: Vec<String> = snapshot
                    .licenses
                    .iter()
                    .map(|l| l.id().to_owned())
                    .collect();
                fleet
                    .month_totals(&label, &ids)
                    .map_err(|err| StoreError(err.to_string()))?
            }
            _ => self.store.month(&label)?,
        };
        let mut licenses: Vec<Value> = Vec::new();
        for entry in &snapshot.licenses {
            let used = if month == current {
                entry.meter.committed(month)
            } else {
                stored_licenses.get(entry.id()).copied().unwrap_or(0)
            };
            licenses.push(json!({"id": entry.id(), "used": used, "limit": entry.limit, "hard_limit": entry.hard_limit}));
        }
        for (id, used) in &stored_licenses {
            if snapshot.license(id).is_none() {
                licenses.push(json!({"id": id, "used": used, "limit": null, "hard_limit": null, "installed": false}));
            }
        }
        let flows: Vec<Value> = snapshot
            .flow_infos()
            .iter()
            .map(|flow| {
                let used = if month == current {
                    flow.meter.committed(month)
                } else {
                    stored_flows.get(&*flow.id).copied().unwrap_or(0)
                };
                json!({"id": &*flow.id, "used": used})
            })
            .collect();
        let mut daily = serde_json::Map::new();
        for entry in &snapshot.licenses {
            let days = self.store.license_days(entry.id(), &label)?;
            daily.insert(entry.id().to_owned(), json!(days));
        }
        Ok(
            json!({"month": label, "timezone": snapshot.tz.name(), "licenses": licenses, "flows": flows, "daily": daily}),
        )
    }

    /// A page of the audit trail, newest first: `{events, next}` where `next` is the cursor of
    /// the following page.
    pub(super) fn audit(&self, limit: usize, before: Option<u64>) -> Result<Value, StoreError> {
        if let Some(fleet) = &self.fleet {
            let events = fleet
                .audit_page(limit, before)
                .map_err(|err| StoreError(err.to_string()))?;
            let next = if events.len() == limit {
                events
                    .last()
                    .and_then(|e| e.get("seq"))
                    .and_then(Value::as_u64)
            } else {
                None
            };
            return Ok(json!({"events": events, "next": next}));
        }
        let events = self.store.audit_page(limit, before)?;
        let next = if events.len() == limit {
            events.last().map(|e| e.seq)
        } else {
            None
        };
        Ok(json!({"events": events, "next": next}))
    }
}
