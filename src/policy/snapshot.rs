//! The immutable snapshot the request path decides on: config, licenses and flow states
//! compiled into indexed tables, so a request does one `ArcSwap::load` and a few look-ups.
//! The snapshot is pure data: no client pools, no I/O (those live beside it in the control
//! plane).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use http::HeaderName;

use super::classify::Classifier;
use super::entitlements::{Entitlement, InUse, PerEntitlement, PerEnvironment};
use super::reasons::{DisabledReason, InvalidReason};
use super::tables::Tables;
use crate::config::{Config, Environment};
use crate::license::{judge, HostIdentity, Installed, Moment, Pricing};
use crate::meter::{FlowMeter, LicenseMeter, Meters};
use crate::observe::{DecisionCounts, RequestStats, ShadowLog};

/// What the operator (or a past refusal) wants of a flow; the input to compilation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowSetting {
    /// Whether the flow should be enabled.
    pub enabled: bool,
    /// Why it is disabled, when it is.
    pub reason: DisabledReason,
    /// Enabling order: flows take points in ascending order.
    pub order: u64,
}

/// A flow's state in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowState {
    /// Requests pass; under pair licensing `license` is the license whose point the pair holds.
    Active {
        /// Index into [`Snapshot::licenses`].
        license: Option<u32>,
    },
    /// Enabled, but no valid license covers it: requests get `license-invalid` with this reason.
    Unlicensed(InvalidReason),
    /// Disabled: requests get `flow-disabled` (or `records-limit-exceeded`) with this reason.
    Disabled(DisabledReason),
}

/// An instance in the snapshot.
#[derive(Debug)]
pub struct InstanceEntry {
    /// The instance id.
    pub id: Box<str>,
    /// The base URI's path, normalised, without a trailing `/` (empty for the root): what the
    /// request path is appended to, and what absolute-form paths must lie under.
    pub base_path: Box<str>,
    /// Requests to it that no flow of it claimed (`flow="-"`).
    pub unclaimed: Arc<DecisionCounts>,
    /// The entity patterns of every flow on this instance (shared by instances whose
    /// patterns are the same).
    pub classifier: Arc<Classifier>,
}

/// A flow as its config describes it, with its counters: built once per config and shared
/// by every snapshot compiled from it, so a swap copies none of it.
#[derive(Debug)]
pub struct FlowInfo {
    /// The flow id.
    pub id: Box<str>,
    /// Its instances, as indexes into [`Snapshot::instances`].
    pub systems: Box<[u32]>,
    /// The pair of instances holding the point (`a+b`), if the flow has two systems.
    pub pair_key: Option<Box<str>>,
    /// The flow's record counter.
    pub meter: Arc<FlowMeter>,
    /// Request counters per instance of the flow.
    pub requests: Box<[(u32, Arc<DecisionCounts>)]>,
    /// Shadow mode's log throttle for the flow.
    pub shadow_log: Arc<ShadowLog>,
}

/// A flow's standing in one snapshot (what licenses and settings decided), beside its
/// [`FlowInfo`]: plain data, so the flow table of a swap is one flat copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowEntry {
    /// Enabled or not, and why.
    pub state: FlowState,
    /// The license this flow's refusals name (index into [`Snapshot::licenses`]): for a flow no
    /// valid license covers, the invalid one that would have; for a flow stopped by the records
    /// limit, the covering license at its hard limit.
    pub refusal_license: Option<u32>,
    /// The license whose monthly records budget the flow's main loads count against (index
    /// into [`Snapshot::licenses`]): the license lending its pair a point, or, for a
    /// single-system data loader, the valid pair license covering its system that expires first.
    pub budget: Option<u32>,
}

/// An installed license in the snapshot.
#[derive(Debug)]
pub struct LicenseEntry {
    /// The verified license file.
    pub installed: Arc<Installed>,
    /// Points held by pairs (pair licenses).
    pub points_used: u32,
    /// Its validity when the snapshot was compiled; a change means the snapshot is stale.
    pub compiled_state: Result<(), InvalidReason>,
    /// The host identity it is judged on.
    pub host: Arc<HostIdentity>,
    /// The monthly transferred-records limit (pair licenses that set one).
    pub limit: Option<u64>,
    /// `limit + limit / 10`: loads are admitted only below it.
    pub hard_limit: Option<u64>,
    /// The license's record counter.
    pub meter: Arc<LicenseMeter>,
}

impl LicenseEntry {
    /// The license id.
    pub fn id(&self) -> &str {
        &self.installed.file.payload.common.id
    }

    /// Whether the license is valid at `moment` on this host; else why not.
    pub fn usable_at(&self, moment: Moment) -> Result<(), InvalidReason> {
        usable_at(&self.installed, &self.host, moment)
    }
}

/// Whether a verified license is valid on `host` at `moment`; else why not.
pub fn usable_at(
    installed: &Installed,
    host: &HostIdentity,
    moment: Moment,
) -> Result<(), InvalidReason> {
    match InvalidReason::of(judge(&installed.file.payload.common, host, moment)) {
        None => Ok(()),
        Some(reason) => Err(reason),
    }
}

/// A flow disabled because its environment's entitlements would not fit it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitlementRefusal {
    /// The flow, by index.
    pub flow: u32,
    /// Its environment.
    pub environment: Environment,
    /// The entitlement it would exceed.
    pub entitlement: Entitlement,
    /// Distinct keys in use without it.
    pub in_use: u64,
    /// The limit.
    pub limit: u64,
    /// Distinct keys in use with it.
    pub would_be: u64,
}

/// Subscription limits in force: the valid subscription licenses' limits added up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionLimits {
    /// Pricing model (of the valid subscription that expires last, where they differ).
    pub pricing: Pricing,
    /// A free period (`unlimited_until` in the future) lifts every limit.
    pub unlimited: bool,
    /// When the free period ends (the latest `unlimited_until` still ahead).
    pub free_until: Option<DateTime<Utc>>,
    /// Limits per environment.
    pub limits: PerEnvironment<PerEntitlement<u64>>,
}

/// What the enabled flows use of each environment's entitlements, and the limits.
#[derive(Debug, Clone, Default)]
pub struct Entitlements {
    /// In use per environment.
    pub in_use: PerEnvironment<InUse>,
    /// The subscription limits, when subscription licensing is required and a subscription is valid.
    pub limits: Option<SubscriptionLimits>,
}

impl Entitlements {
    /// The limits enforced in `environment`, if any (none during a free period).
    pub fn enforced(&self, environment: Environment) -> Option<PerEntitlement<u64>> {
        self.limits
            .filter(|limits| !limits.unlimited)
            .map(|limits| limits.limits[environment])
    }
}

/// What compilation draws on and keeps across snapshots: record and request counters.
#[derive(Debug, Default)]
pub struct Resources {
    /// Counters by license and flow id.
    pub meters: Meters,
    /// Request counters by (flow, instance).
    pub stats: RequestStats,
}

/// Everything a request is decided on, immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases with every swap; shown in the admin status.
    pub generation: u64,
    /// The configuration it was built from.
    pub config: Arc<Config>,
    /// The flow header, parsed once.
    pub flow_header: HeaderName,
    /// Instances in config order (shared by the snapshots of one config).
    pub instances: Arc<[InstanceEntry]>,
    /// Each flow's standing, in config order (its config-derived parts: [`Snapshot::flow_info`]).
    pub flows: Vec<FlowEntry>,
    /// Installed licenses, in id order (ids are unique).
    pub licenses: Vec<LicenseEntry>,
    /// The licensing time zone, in which months begin.
    pub tz: chrono_tz::Tz,
    /// The clock-rollback floor the snapshot was compiled with.
    pub clock_floor: Option<DateTime<Utc>>,
    /// What the enabled flows use of each environment's entitlements, and the limits.
    pub entitlements: Entitlements,
    /// Requests tied to no instance (`flow="-", instance="-"`).
    pub unrouted: Arc<DecisionCounts>,
    /// Shadow mode's log throttle for requests without a flow.
    pub flowless_shadow_log: Arc<ShadowLog>,
    /// For `server.infer_flow`: by instance index, the one enabled flow with that instance
    /// among its systems (`None` where none or several have it); empty without the setting.
    pub inferred_flows: Vec<Option<u32>>,
    /// What the config alone decides: id and authority maps, per-flow parts.
    pub(super) tables: Arc<Tables>,
}

impl Snapshot {
    /// The index of the instance with this id.
    pub fn instance(&self, id: &str) -> Option<u32> {
        self.tables.instance_ids.get(id).copied()
    }

    /// The index of the flow with this id.
    pub fn flow(&self, id: &str) -> Option<u32> {
        self.tables.flow_ids.get(id).copied()
    }

    /// What the config says of flow `flow` (an index from [`Snapshot::flow`] or a decision).
    pub fn flow_info(&self, flow: u32) -> &FlowInfo {
        &self.tables.flows[flow as usize]
    }

    /// What the config says of every flow, in config order (beside [`Snapshot::flows`]).
    pub fn flow_infos(&self) -> &[FlowInfo] {
        &self.tables.flows
    }

    /// The instances whose base URI has this host (any case) and port.
    pub fn instances_at(&self, host: &str, port: u16) -> impl Iterator<Item = u32> + '_ {
        let entries = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.tables
                .authorities
                .get(host.to_ascii_lowercase().as_str())
        } else {
            self.tables.authorities.get(host)
        };
        entries
            .into_iter()
            .flatten()
            .filter(move |(p, _)| *p == port)
            .map(|(_, instance)| *instance)
    }

    /// The index of the license with this id.
    pub fn license(&self, id: &str) -> Option<u32> {
        // The table is in id order (and ids are unique).
        self.licenses
            .binary_search_by(|license| license.id().cmp(id))
            .ok()
            .map(|i| i as u32)
    }

    /// Whether time has moved any license across its start or expiry, or ended a free
    /// period, since compilation.
    pub fn is_stale(&self, moment: Moment) -> bool {
        let free_period_over = self
            .entitlements
            .limits
            .and_then(|limits| limits.free_until)
            .is_some_and(|until| moment.now >= until);
        free_period_over
            || self
                .licenses
                .iter()
                .any(|license| license.usable_at(moment) != license.compiled_state)
    }

    /// The request counters for a request tied to `flow` and `instance` as far as it got.
    pub fn request_counts(&self, flow: Option<u32>, instance: Option<u32>) -> &DecisionCounts {
        let Some(instance) = instance else {
            return &self.unrouted;
        };
        flow.and_then(|flow| {
            self.flow_info(flow)
                .requests
                .iter()
                .find(|(i, _)| *i == instance)
        })
        .map_or(
            &*self.instances[instance as usize].unclaimed,
            |(_, counts)| &**counts,
        )
    }

    /// The bulk settings a [`LoadClass::Bulk`] of `instance` names.
    pub fn bulk(&self, instance: u32, bulk: u32) -> Option<&crate::config::Bulk> {
        self.instances
            .get(instance as usize)
            .and_then(|entry| entry.classifier.bulk(bulk))
    }

    /// The license a flow's main loads count against, if any.
    pub fn budget_of(&self, flow: u32) -> Option<&LicenseEntry> {
        self.flows[flow as usize]
            .budget
            .map(|index| &self.licenses[index as usize])
    }
}
