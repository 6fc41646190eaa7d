//! The control plane in fleet mode: flow settings and the audit trail are the fleet's (every
//! local change is published, every change announced by another sidecar is applied), the
//! fleet agent is told which meters to keep in step after every compile, and an admin change
//! is made on the fleet's latest settings or refused while Redis is unreachable.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::build::stored_flows;
use super::error::Refusal;
use super::plane::{Command, Plane};
use crate::policy::{DisabledReason, FlowSetting};
use crate::store::fleet::{
    Fleet, FleetError, FleetFlows, FleetNotice, Publish, Tracked, TrackedLicense,
};
use crate::store::StoredFlow;

impl Plane {
    /// Tells the fleet agent what the current snapshot meters.
    pub(super) fn track_fleet(&self) {
        let Some(fleet) = &self.fleet else {
            return;
        };
        let live = self.shared.live.load_full();
        fleet.track(Tracked {
            tz: live.tz,
            licenses: live
                .licenses
                .iter()
                .map(|entry| TrackedLicense {
                    meter: entry.meter.clone(),
                    limit: entry.limit,
                    hard: entry.hard_limit,
                })
                .collect(),
            flows: live
                .flow_infos()
                .iter()
                .map(|flow| flow.meter.clone())
                .collect(),
            max_skew: self.config.licensing.max_clock_skew,
        });
    }

    /// Writes the audit events not yet in the fleet's trail (first, so the trail names the
    /// sidecar where a change was made) and publishes the flow settings that differ from the
    /// fleet's; what fails is tried again on the next change or tick.
    pub(super) fn publish_to_fleet(&mut self) {
        let Some(fleet) = self.fleet.clone() else {
            return;
        };
        if self.published.is_none() {
            // Not joined yet: the fleet's settings win once it is, and the events wait.
            return;
        }
        if !self.fleet_journal.is_empty() {
            match fleet.append_audit(&self.fleet_journal) {
                Ok(()) => self.fleet_journal.clear(),
                Err(err) => {
                    tracing::warn!(error = %err, "audit events could not be written to the fleet's trail; retrying")
                }
            }
        }
        if let Err(err) = self.publish_unpublished(&fleet, Publish::Set) {
            tracing::warn!(error = %err, "flow settings could not be published to the fleet; retrying")
        }
    }

    /// This sidecar's flow settings that differ from what the fleet has, as far as it knows
    /// (none before it has joined: then the fleet's settings win).
    fn unpublished(&self) -> BTreeMap<String, StoredFlow> {
        let Some(published) = &self.published else {
            return BTreeMap::new();
        };
        stored_flows(self)
            .into_iter()
            .filter(|(id, flow)| published.get(id) != Some(flow))
            .collect()
    }

    /// Publishes the unpublished settings `how` asks; `None` where [`Publish::IfAt`] found the
    /// fleet moved on. What is published is what the fleet has from then on.
    fn publish_unpublished(
        &mut self,
        fleet: &Fleet,
        how: Publish,
    ) -> Result<Option<u64>, FleetError> {
        let changed = self.unpublished();
        let version = fleet.publish_flows(&changed, how)?;
        if let (Some(_), Some(published)) = (version, &mut self.published) {
            published.extend(changed);
        }
        Ok(version)
    }

    /// Acts on what the fleet agent reports.
    pub(super) fn on_fleet(&mut self, notice: FleetNotice) {
        match notice {
            FleetNotice::Flows(flows) => self.apply_fleet_flows(flows),
            FleetNotice::Crossed(event) => self.on_meter_event(event),
        }
    }

    /// Takes the fleet's flow settings as this sidecar's; the first sidecar of a fleet seeds
    /// the fleet with its own. Local changes not published yet (Redis was away) stay, and go
    /// out with the next publish instead of being undone by the fleet's older state.
    fn apply_fleet_flows(&mut self, fleet_flows: FleetFlows) {
        let Some(fleet) = self.fleet.clone() else {
            return;
        };
        let mut published = fleet_flows.flows;
        let ours = stored_flows(self);
        let unpublished: Vec<String> = self.unpublished().into_keys().collect();
        let missing: BTreeMap<String, StoredFlow> = ours
            .iter()
            .filter(|(id, _)| !published.contains_key(*id))
            .map(|(id, flow)| (id.clone(), flow.clone()))
            .collect();
        if !missing.is_empty() {
            match fleet.publish_flows(&missing, Publish::Seed) {
                Ok(_) => published.extend(missing),
                Err(err) => {
                    tracing::warn!(error = %err, "flow settings could not be seeded in the fleet; retrying")
                }
            }
        }
        let mut changed = false;
        for (id, stored) in &published {
            if unpublished.contains(id) {
                continue;
            }
            let Some(setting) = self.settings.edit().get_mut(id) else {
                continue;
            };
            let wanted = FlowSetting {
                enabled: stored.enabled,
                reason: DisabledReason::parse(&stored.reason).unwrap_or(DisabledReason::Operator),
                order: stored.order,
            };
            if *setting != wanted {
                *setting = wanted;
                changed = true;
            }
            self.next_order = self.next_order.max(stored.order + 1);
        }
        for id in &unpublished {
            published.remove(id);
        }
        self.published = Some(published);
        if changed {
            tracing::info!(
                version = fleet_flows.version,
                "flow settings changed in the fleet"
            );
            // The sidecar where the change was made journals it for the fleet; the changes it
            // causes here are journaled locally only.
            self.applying_fleet = true;
            if let Err(err) = self.rebuild() {
                tracing::error!(error = %err, "the fleet's flow settings could not be applied");
            }
            self.applying_fleet = false;
        }
    }

    /// Before an admin change in fleet mode: the fleet's latest settings and their version,
    /// or a refusal while Redis is unreachable (a change only this sidecar knew of would be
    /// lost). `None` outside fleet mode.
    pub(super) fn sync_from_fleet(&mut self) -> Result<Option<u64>, Refusal> {
        let Some(fleet) = self.fleet.clone() else {
            return Ok(None);
        };
        if self.published.is_none() {
            return Err(unreachable("this sidecar has not joined the fleet yet"));
        }
        let flows = fleet.read_flows_blocking().map_err(unreachable)?;
        let version = flows.version;
        self.apply_fleet_flows(flows);
        Ok(Some(version))
    }

    /// An operator's change, decided on the fleet's settings at `version`: publishes what it
    /// changes only if the fleet is still at that version. `false` when another sidecar's
    /// change came first (the caller decides again on the newer settings).
    pub(super) fn publish_decided(&mut self, version: u64) -> Result<bool, Refusal> {
        let Some(fleet) = self.fleet.clone() else {
            return Ok(true);
        };
        match self.publish_unpublished(&fleet, Publish::IfAt(version)) {
            Ok(version) => Ok(version.is_some()),
            Err(err) => Err(unreachable(err)),
        }
    }
}

/// An admin change refused because the fleet's settings cannot be read or written now.
fn unreachable(why: impl std::fmt::Display) -> Refusal {
    Refusal::Unavailable(format!(
        "flow settings are the fleet's and Redis cannot be reached ({why}); try again when it is back"
    ))
}

/// Starts fleet mode when the config asks for it; the agent reports to the control plane
/// through its command channel.
pub(super) fn start(
    config: &crate::config::Config,
    clock: Arc<dyn crate::clock::Clock>,
    runtime: Option<tokio::runtime::Handle>,
    commands: std::sync::mpsc::Sender<Command>,
) -> Result<Option<Arc<Fleet>>, crate::store::fleet::FleetError> {
    let Some(settings) = config.state.fleet() else {
        return Ok(None);
    };
    let runtime = runtime.ok_or_else(|| {
        crate::store::fleet::FleetError::Config("fleet mode needs the async runtime".to_owned())
    })?;
    let notify = Box::new(move |notice| {
        let _ = commands.send(Command::Fleet(notice));
    });
    let strict = config.state.durability == crate::config::Durability::Strict;
    Fleet::start(settings, clock, strict, runtime, notify).map(Some)
}
