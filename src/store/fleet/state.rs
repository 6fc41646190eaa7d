//! The fleet's shared state beyond the lease books: flow settings with their version (every
//! change announced on a channel), the warnings and limits raised, the audit trail (each event
//! written once however many sidecars journal it), per-flow counts, and past months' totals.
//! The control plane calls these from its own thread; each is bounded by the control deadline.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use redis::AsyncCommands;
use redis::Value as RedisValue;
use serde_json::Value;

use super::{Fleet, FleetError};
use crate::meter::FlowMeter;
use crate::store::{AuditEvent, StoredFlow, Tally};

/// How long two copies of one audit event count as the same event: every sidecar journals
/// what time does to licenses (an expiry, a month's reset) within a second or so of the
/// others; an operator repeating the very same change within this window is not told apart.
const AUDIT_ONCE_MS: u64 = 2_000;

/// How flow settings are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// Written as they are (a change the fleet must take whatever it has).
    Set,
    /// Written only where the fleet has no setting yet.
    Seed,
    /// Written only if the fleet's settings are still at this version: an operator's change
    /// decided on them (two sidecars enabling flows that need the same point cannot both win).
    IfAt(u64),
}

/// The fleet's flow settings at a version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetFlows {
    /// Bumped by every change.
    pub version: u64,
    /// By flow id.
    pub flows: BTreeMap<String, StoredFlow>,
}

impl Fleet {
    /// Writes changed flow settings for the whole fleet (control plane); `None` when `how` is
    /// [`Publish::IfAt`] and the fleet's settings have moved on.
    pub fn publish_flows(
        &self,
        flows: &BTreeMap<String, StoredFlow>,
        how: Publish,
    ) -> Result<Option<u64>, FleetError> {
        if flows.is_empty() {
            return Ok(Some(self.version.load(Ordering::Acquire)));
        }
        let mut invocation = super::scripts::PUBLISH_FLOWS.key(self.keys.flows());
        invocation
            .key(self.keys.version())
            .arg(self.keys.changes())
            .arg(self.version.load(Ordering::Acquire));
        match how {
            Publish::Set => invocation.arg("set"),
            Publish::Seed => invocation.arg("seed"),
            Publish::IfAt(version) => invocation.arg(version),
        };
        for (id, flow) in flows {
            let json =
                serde_json::to_string(flow).map_err(|err| FleetError::Protocol(err.to_string()))?;
            invocation.arg(id).arg(json);
        }
        let deadline = self.control_deadline();
        let version: i64 = self.block_on(async {
            let mut connection = self.link.connection();
            self.link
                .call(deadline, invocation.invoke_async(&mut connection))
                .await
        })?;
        Ok(u64::try_from(version).ok())
    }

    /// Reads the fleet's flow settings and their version.
    pub(super) async fn read_flows(&self) -> Result<FleetFlows, FleetError> {
        let mut invocation = super::scripts::READ_FLOWS.key(self.keys.flows());
        invocation.key(self.keys.version());
        let mut connection = self.link.connection();
        let reply: Vec<RedisValue> = self
            .link
            .call(
                self.control_deadline(),
                invocation.invoke_async(&mut connection),
            )
            .await?;
        let version = match reply.first() {
            Some(RedisValue::Int(n)) => u64::try_from(*n).unwrap_or(0),
            other => {
                return Err(FleetError::Protocol(format!(
                    "flow settings version {other:?}"
                )))
            }
        };
        let mut flows = BTreeMap::new();
        for pair in reply[1..].chunks_exact(2) {
            let (RedisValue::BulkString(id), RedisValue::BulkString(json)) = (&pair[0], &pair[1])
            else {
                continue;
            };
            let id = String::from_utf8_lossy(id).into_owned();
            match serde_json::from_slice::<StoredFlow>(json) {
                Ok(flow) => {
                    flows.insert(id, flow);
                }
                Err(err) => {
                    tracing::warn!(flow = %id, error = %err, "a flow setting in Redis is unreadable; ignored")
                }
            }
        }
        Ok(FleetFlows { version, flows })
    }

    /// Reads the fleet's flow settings from the control plane's thread.
    pub fn read_flows_blocking(&self) -> Result<FleetFlows, FleetError> {
        self.block_on(self.read_flows())
    }

    /// The settings version Redis has now (the agent's once-a-second check).
    pub(super) async fn read_version(&self) -> Result<u64, FleetError> {
        let mut connection = self.link.connection();
        let version: Option<u64> = self
            .link
            .call(self.control_deadline(), connection.get(self.keys.version()))
            .await?;
        Ok(version.unwrap_or(0))
    }

    /// Appends audit events to the fleet's trail (each written once across the fleet).
    pub fn append_audit(&self, events: &[AuditEvent]) -> Result<(), FleetError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut invocation = super::scripts::APPEND_AUDIT.key(self.keys.audit());
        invocation.key(self.keys.audit_seq());
        let mut bodies = Vec::with_capacity(events.len());
        for event in events {
            let detail = serde_json::to_string(&event.detail)
                .map_err(|err| FleetError::Protocol(err.to_string()))?;
            invocation.key(self.keys.once(&event.kind, &detail));
            let body =
                serde_json::json!({"time": event.time, "kind": event.kind, "detail": event.detail});
            bodies.push(body.to_string());
        }
        invocation.arg(&self.settings.node).arg(AUDIT_ONCE_MS);
        for body in &bodies {
            invocation.arg(body);
        }
        let deadline = self.control_deadline();
        let _: u64 = self.block_on(async {
            let mut connection = self.link.connection();
            self.link
                .call(deadline, invocation.invoke_async(&mut connection))
                .await
        })?;
        Ok(())
    }

    /// A page of the fleet's audit trail, newest first, before the cursor `before`.
    pub fn audit_page(&self, limit: usize, before: Option<u64>) -> Result<Vec<Value>, FleetError> {
        let max = before.map_or_else(|| "+inf".to_owned(), |before| format!("({before}"));
        let key = self.keys.audit();
        let deadline = self.control_deadline();
        let limit = isize::try_from(limit).unwrap_or(isize::MAX);
        let raw: Vec<String> = self.block_on(async {
            let mut connection = self.link.connection();
            self.link
                .call(
                    deadline,
                    connection.zrevrangebyscore_limit(&key, max, "-inf", 0, limit),
                )
                .await
        })?;
        Ok(raw
            .iter()
            .filter_map(|text| serde_json::from_str(text).ok())
            .collect())
    }

    /// Raises a mark (`warning` or `limit`) of a license's month for the fleet; whether this
    /// call raised it (false: some sidecar did before).
    pub fn raise_mark(&self, license: &str, month: &str, kind: &str) -> Result<bool, FleetError> {
        let key = self.keys.marks();
        let field = format!("{license}|{month}|{kind}");
        let deadline = self.control_deadline();
        self.block_on(async {
            let mut connection = self.link.connection();
            self.link
                .call(deadline, connection.hset_nx(&key, &field, 1))
                .await
        })
    }

    /// Ships this sidecar's per-flow counts of a month and takes in the fleet's.
    pub(super) async fn ship_flows(
        &self,
        month: u32,
        flows: &[std::sync::Arc<FlowMeter>],
    ) -> Result<(), FleetError> {
        let label = crate::clock::month_index_label(month);
        let mut invocation = super::scripts::FLOW_COUNTS.key(self.keys.flow_counts(&label));
        invocation.arg(&self.settings.node);
        for flow in flows {
            let count = flow.local_committed(month);
            if count > 0 {
                invocation.arg(&*flow.id).arg(count);
            }
        }
        let mut connection = self.link.connection();
        let flat: Vec<String> = self
            .link
            .call(
                self.control_deadline(),
                invocation.invoke_async(&mut connection),
            )
            .await?;
        let (totals, mine) = flow_totals(&flat, &self.settings.node);
        for flow in flows {
            let total = totals.get(&*flow.id).copied().unwrap_or(0);
            let own = mine.get(&*flow.id).copied().unwrap_or(0);
            flow.raise_committed(month, own);
            flow.set_others(
                month,
                total.saturating_sub(flow.local_committed(month).max(own)),
            );
        }
        Ok(())
    }

    /// The fleet's totals of a month per license and per flow (for months other than the
    /// current one, whose totals the meters carry).
    pub fn month_totals(
        &self,
        month: &str,
        licenses: &[String],
    ) -> Result<(Tally, Tally), FleetError> {
        let deadline = self.control_deadline();
        let flows_key = self.keys.flow_counts(month);
        let books: Vec<String> = licenses
            .iter()
            .map(|id| self.keys.book(id, month))
            .collect();
        self.block_on(async {
            let mut connection = self.link.connection();
            let flat: Vec<String> = self
                .link
                .call(deadline, connection.hgetall::<_, Vec<String>>(&flows_key))
                .await?;
            let (flows, _) = flow_totals(&flat, &self.settings.node);
            let mut totals = Tally::new();
            for (id, key) in licenses.iter().zip(&books) {
                let book: Vec<String> = self
                    .link
                    .call(deadline, connection.hgetall::<_, Vec<String>>(key))
                    .await?;
                let sum: u64 = book
                    .chunks_exact(2)
                    .filter(|pair| pair[0].starts_with("c:"))
                    .filter_map(|pair| pair[1].parse::<u64>().ok())
                    .sum();
                if sum > 0 {
                    totals.insert(id.clone(), sum);
                }
            }
            Ok((totals, flows.into_iter().collect()))
        })
    }
}

/// Sums a flow-counts hash (`node/flow` → count) per flow; also returns `node`'s own counts.
fn flow_totals(flat: &[String], node: &str) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let mut totals = BTreeMap::new();
    let mut mine = BTreeMap::new();
    for pair in flat.chunks_exact(2) {
        let Some((owner, flow)) = pair[0].split_once('/') else {
            continue;
        };
        let Ok(count) = pair[1].parse::<u64>() else {
            continue;
        };
        *totals.entry(flow.to_owned()).or_default() += count;
        if owner == node {
            mine.insert(flow.to_owned(), count);
        }
    }
    (totals, mine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_totals_sum_every_node_and_keep_this_ones_apart() {
        let flat: Vec<String> = [
            "a/incidents",
            "3",
            "b/incidents",
            "4",
            "b/sync/x",
            "1",
            "junk",
            "9",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (totals, mine) = flow_totals(&flat, "b");
        assert_eq!(totals.get("incidents"), Some(&7));
        assert_eq!(
            totals.get("sync/x"),
            Some(&1),
            "a flow id may hold a slash: the node may not"
        );
        assert_eq!(mine.get("incidents"), Some(&4));
        assert_eq!(totals.len(), 2);
    }
}
