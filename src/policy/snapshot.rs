//! The immutable snapshot the request path decides on: config, licenses and flow states
//! compiled into indexed tables, so a request does one `ArcSwap::load` and a few look-ups.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use http::{HeaderName, Method};

use super::classify::{Classifier, LoadClass};
use super::entitlements::{contribution, limits_of, Contribution, InUse, ENTITLEMENTS};
use super::points::{PointLedger, PointRefusal, PointSource};
use crate::catalog::flow_pair;
use crate::config::{Config, Environment, Model};
pub use crate::license::Moment;
use crate::license::{judge, HostIdentity, Installed, Pricing, SubscriptionTerms, Terms};
use crate::meter::{FlowMeter, LicenseMeter, Meters};
use crate::observe::{DecisionCounts, RequestStats, UNKNOWN};
use crate::proxy::{Upstream, UpstreamCache};

/// Why a flow is disabled; the `reason` of `flow-disabled` answers and of `GET /v1/flows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisabledReason {
    /// The operator disabled it (config `enabled = false` or the admin API).
    Operator,
    /// No covering license had a free point when it was enabled.
    PointsExhausted,
    /// The license whose point its pair held was removed.
    LicenseRemoved,
    /// Enabling it would exceed a subscription entitlement.
    EntitlementExceeded,
    /// Its license reached the transferred-records hard limit.
    RecordsLimit,
}

impl DisabledReason {
    /// The reason as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            DisabledReason::Operator => "operator",
            DisabledReason::PointsExhausted => "points-exhausted",
            DisabledReason::LicenseRemoved => "license-removed",
            DisabledReason::EntitlementExceeded => "entitlement-exceeded",
            DisabledReason::RecordsLimit => "records-limit",
        }
    }

    /// The reason an API spelling names (as stored).
    pub fn parse(text: &str) -> Option<DisabledReason> {
        [
            DisabledReason::Operator,
            DisabledReason::PointsExhausted,
            DisabledReason::LicenseRemoved,
            DisabledReason::EntitlementExceeded,
            DisabledReason::RecordsLimit,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == text)
    }
}

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
    Unlicensed(&'static str),
    /// Disabled: requests get `flow-disabled` with this reason.
    Disabled(DisabledReason),
}

/// An instance in the snapshot.
#[derive(Debug)]
pub struct InstanceEntry {
    /// The instance id.
    pub id: Box<str>,
    /// Where its requests go; `None` for instances without a `base_uri`.
    pub upstream: Option<Arc<Upstream>>,
    /// Requests to it that no flow of it claimed (`flow="-"`).
    pub unclaimed: Arc<DecisionCounts>,
    /// The entity patterns of every flow on this instance.
    pub classifier: Classifier,
}

/// A flow in the snapshot.
#[derive(Debug)]
pub struct FlowEntry {
    /// The flow id.
    pub id: Box<str>,
    /// Its instances, as indexes into [`Snapshot::instances`].
    pub systems: Vec<u32>,
    /// Enabled or not, and why.
    pub state: FlowState,
    /// The pair of instances holding the point (`a+b`), if the flow has two systems.
    pub pair_key: Option<String>,
    /// The license this flow's refusals name (index into [`Snapshot::licenses`]): for a flow no
    /// valid license covers, the invalid one that would have; for a flow stopped by the records
    /// limit, the covering license at its hard limit.
    pub refusal_license: Option<u32>,
    /// The license whose monthly records budget the flow's main loads count against (index
    /// into [`Snapshot::licenses`]): the license lending its pair a point, or, for a
    /// single-system data loader, the valid pair license covering its system that expires first.
    pub budget: Option<u32>,
    /// The flow's record counter.
    pub meter: Arc<FlowMeter>,
    /// Request counters per instance of the flow.
    pub requests: Vec<(u32, Arc<DecisionCounts>)>,
}

/// An installed license in the snapshot.
#[derive(Debug)]
pub struct LicenseEntry {
    /// The verified license file.
    pub installed: Arc<Installed>,
    /// Points held by pairs (pair licenses).
    pub points_used: u32,
    /// Its validity when the snapshot was compiled; a change means the snapshot is stale.
    pub compiled_state: Result<(), &'static str>,
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

    /// Whether the license is valid at `moment` on this host; else the `license-invalid` reason.
    pub fn usable_at(&self, moment: Moment) -> Result<(), &'static str> {
        usable_at(&self.installed, &self.host, moment)
    }
}

/// Whether a verified license is valid on `host` at `moment`; else the `license-invalid` reason.
pub fn usable_at(
    installed: &Installed,
    host: &HostIdentity,
    moment: Moment,
) -> Result<(), &'static str> {
    judge(&installed.file.payload.common, host, moment).as_result()
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
    /// Instances in config order.
    pub instances: Vec<InstanceEntry>,
    /// Flows in config order.
    pub flows: Vec<FlowEntry>,
    /// Installed licenses, by id.
    pub licenses: Vec<LicenseEntry>,
    /// The licensing time zone, in which months begin.
    pub tz: chrono_tz::Tz,
    /// The clock-rollback floor the snapshot was compiled with.
    pub clock_floor: Option<DateTime<Utc>>,
    /// What the enabled flows use of each environment's entitlements, and the limits.
    pub entitlements: Entitlements,
    /// Requests tied to no instance (`flow="-", instance="-"`).
    pub unrouted: Arc<DecisionCounts>,
    instance_ids: HashMap<Box<str>, u32>,
    flow_ids: HashMap<Box<str>, u32>,
    /// Instances by the lowercased host of their base URI: `(port, instance)` each.
    authorities: HashMap<Box<str>, Vec<(u16, u32)>>,
}

/// The outcome of compiling: the snapshot and the flows it had to refuse.
#[derive(Debug)]
pub struct Compiled {
    /// The new snapshot.
    pub snapshot: Snapshot,
    /// Flows wanted enabled that were refused (`points-exhausted`, `entitlement-exceeded`),
    /// by flow index, in the order they were refused.
    pub refused: Vec<(u32, DisabledReason)>,
    /// Why each flow refused for an entitlement was refused.
    pub entitlement_refusals: Vec<EntitlementRefusal>,
}

/// A flow disabled because its environment's entitlements would not fit it (SPEC §1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitlementRefusal {
    /// The flow, by index.
    pub flow: u32,
    /// Its environment.
    pub environment: Environment,
    /// The entitlement it would exceed (one of `flows`, `endpoint_apps`, …).
    pub entitlement: &'static str,
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
    /// Limits per environment, in `ENTITLEMENTS` order: production, sandbox.
    pub limits: [[u64; 4]; 2],
}

/// What the enabled flows use of each environment's entitlements, and the limits.
#[derive(Debug, Clone, Default)]
pub struct Entitlements {
    /// In use: production, sandbox.
    pub in_use: [InUse; 2],
    /// The subscription limits, when subscription licensing is required and a subscription is valid.
    pub limits: Option<SubscriptionLimits>,
}

impl Entitlements {
    /// The limits enforced in `environment`, if any (none during a free period).
    pub fn enforced(&self, environment: Environment) -> Option<[u64; 4]> {
        self.limits
            .filter(|limits| !limits.unlimited)
            .map(|limits| limits.limits[env_index(environment)])
    }
}

/// Index of an environment in per-environment arrays.
pub fn env_index(environment: Environment) -> usize {
    match environment {
        Environment::Production => 0,
        Environment::Sandbox => 1,
    }
}

/// What compilation draws on and keeps across snapshots: upstream pools and record counters.
#[derive(Debug, Default)]
pub struct Resources {
    /// Upstream clients by target.
    pub upstreams: UpstreamCache,
    /// Counters by license and flow id.
    pub meters: Meters,
    /// Request counters by (flow, instance).
    pub stats: RequestStats,
}

/// Builds a snapshot from a valid config, verified licenses and a setting per flow (config order).
pub fn compile(
    config: Arc<Config>,
    licenses: &[Arc<Installed>],
    settings: &[FlowSetting],
    resources: &mut Resources,
    host: &Arc<HostIdentity>,
    moment: Moment,
    previous: Option<&Snapshot>,
) -> Result<Compiled, String> {
    let upstreams = &mut resources.upstreams;
    let generation = previous.map_or(1, |previous| previous.generation + 1);
    let flow_header = HeaderName::from_bytes(config.server.flow_header.as_bytes())
        .map_err(|err| format!("server.flow_header: {err}"))?;
    let mut instances = Vec::with_capacity(config.instances.len());
    let mut instance_ids = HashMap::with_capacity(config.instances.len());
    let mut authorities: HashMap<Box<str>, Vec<(u16, u32)>> = HashMap::new();
    for (index, instance) in config.instances.iter().enumerate() {
        let upstream = upstreams
            .get(instance)
            .map_err(|err| format!("instance {:?}: {err}", instance.id))?;
        instance_ids.insert(instance.id.as_str().into(), index as u32);
        if let Some(upstream) = &upstream {
            let (host, port) = upstream.host_and_port();
            authorities
                .entry(host.into_boxed_str())
                .or_default()
                .push((port, index as u32));
        }
        let entities = config
            .flows
            .iter()
            .flat_map(|flow| &flow.entities)
            .filter(|entity| entity.instance == instance.id);
        instances.push(InstanceEntry {
            id: instance.id.as_str().into(),
            upstream,
            unclaimed: resources.stats.counts(UNKNOWN, &instance.id),
            classifier: Classifier::new(entities, instance.paths_case_insensitive),
        });
    }

    let mut sorted: Vec<Arc<Installed>> = licenses.to_vec();
    sorted.sort_by(|a, b| a.file.payload.common.id.cmp(&b.file.payload.common.id));
    let (sources, source_license): (Vec<PointSource>, Vec<u32>) = sorted
        .iter()
        .enumerate()
        .filter_map(|(index, installed)| match &installed.file.payload.terms {
            Terms::Pair(terms) => Some((
                PointSource {
                    id: installed.file.payload.common.id.clone(),
                    systems: crate::catalog::SystemPair::new(&terms.system_a, &terms.system_b),
                    points: terms.points,
                    expire: installed.file.payload.common.expire,
                    invalid: usable_at(installed, host, moment).err(),
                },
                index as u32,
            )),
            Terms::Subscription(_) => None,
        })
        .unzip();
    let mut ledger = PointLedger::new(sources);

    let pair_model = config.requires(Model::Pair);
    let pairs: Vec<_> = config
        .flows
        .iter()
        .map(|flow| flow_pair(&config, flow))
        .collect();
    let mut states = vec![FlowState::Disabled(DisabledReason::Operator); config.flows.len()];
    let mut order: Vec<usize> = (0..config.flows.len())
        .filter(|&i| settings.get(i).is_some_and(|s| s.enabled))
        .collect();
    order.sort_by_key(|&i| (settings[i].order, i));
    let mut refused = Vec::new();
    let subscription = subscription_limits(&config, &sorted, host, moment);
    let mut refusal_license: Vec<Option<u32>> = vec![None; config.flows.len()];
    // The timezone was validated with the config.
    let tz: chrono_tz::Tz = config
        .licensing
        .timezone
        .parse()
        .unwrap_or(chrono_tz::Tz::UTC);
    let month = crate::clock::month_index(moment.now, tz);
    for (index, setting) in settings.iter().enumerate().take(config.flows.len()) {
        if setting.enabled {
            continue;
        }
        states[index] = FlowState::Disabled(setting.reason);
        if let (DisabledReason::RecordsLimit, Some((_, systems))) = (setting.reason, &pairs[index])
        {
            let mut at_hard_limit = |source: usize| {
                let license = &sorted[source_license[source] as usize];
                let hard = license.file.payload.records_limits().map(|(_, hard)| hard);
                let used = resources
                    .meters
                    .license(&license.file.payload.common.id)
                    .committed(month);
                ledger.sources()[source].systems == *systems
                    && hard.is_some_and(|hard| used >= hard)
            };
            refusal_license[index] = (0..ledger.sources().len())
                .find(|&s| at_hard_limit(s))
                .map(|s| source_license[s]);
        }
    }
    // Pairs keep the license they held in the previous snapshot where it still can lend them
    // its point; only new pairs choose (SPEC §1.1).
    if let (Some(previous), true) = (previous, pair_model) {
        let source_of: HashMap<&str, usize> = ledger
            .sources()
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        let held: HashMap<&str, &str> = previous
            .flows
            .iter()
            .filter_map(|flow| match (flow.state, &flow.pair_key) {
                (FlowState::Active { license: Some(l) }, Some(key)) => {
                    Some((key.as_str(), previous.licenses[l as usize].id()))
                }
                _ => None,
            })
            .collect();
        let mut kept = Vec::new();
        for &index in &order {
            if let Some((pair, systems)) = &pairs[index] {
                if let Some(&source) = held
                    .get(pair.key().as_str())
                    .and_then(|id| source_of.get(id))
                {
                    kept.push((pair, systems, source));
                }
            }
        }
        for (pair, systems, source) in kept {
            ledger.keep(pair, systems, source);
        }
    }
    for &index in &order {
        if let Err((reason, license)) = subscription {
            // Subscription licensing is required and no subscription is valid.
            states[index] = FlowState::Unlicensed(reason);
            refusal_license[index] = license;
            continue;
        }
        states[index] = match &pairs[index] {
            Some((pair, systems)) if pair_model => match ledger.enable(pair, systems) {
                Ok(source) => FlowState::Active {
                    license: Some(source_license[source]),
                },
                Err(PointRefusal::PointsExhausted) => {
                    refused.push((index as u32, DisabledReason::PointsExhausted));
                    FlowState::Disabled(DisabledReason::PointsExhausted)
                }
                Err(PointRefusal::LicenseInvalid(reason)) => {
                    refusal_license[index] = ledger
                        .invalid_cover(systems)
                        .map(|source| source_license[source]);
                    FlowState::Unlicensed(reason)
                }
            },
            _ => FlowState::Active { license: None },
        };
    }

    ledger.release_idle();

    // Entitlements: tally the active flows; where an environment is over a limit, disable
    // the most recently enabled flows that use the exceeded entitlement until it fits.
    let limits = subscription.ok().flatten();
    let pricing = limits.map_or(Pricing::Endpoint, |limits| limits.pricing);
    let mut entitlements = Entitlements {
        limits,
        ..Entitlements::default()
    };
    let contributions: Vec<Option<Contribution>> = (0..config.flows.len())
        .map(|index| {
            matches!(states[index], FlowState::Active { .. })
                .then(|| contribution(&config, index, pricing))
        })
        .collect();
    for contribution in contributions.iter().flatten() {
        entitlements.in_use[env_index(contribution.environment)].add(contribution);
    }
    let mut entitlement_refusals = Vec::new();
    for environment in Environment::ALL {
        let Some(enforced) = entitlements.enforced(environment) else {
            continue;
        };
        let in_use = &mut entitlements.in_use[env_index(environment)];
        while let Some(excess) = in_use.excess(enforced) {
            let slot = ENTITLEMENTS
                .iter()
                .position(|e| *e == excess.entitlement)
                .unwrap_or(0);
            let victim = order.iter().rev().copied().find(|&index| {
                matches!(states[index], FlowState::Active { .. })
                    && contributions[index]
                        .as_ref()
                        .is_some_and(|c| c.environment == environment && !c.keys[slot].is_empty())
            });
            let Some(index) = victim else { break };
            let Some(contribution) = &contributions[index] else {
                break;
            };
            in_use.remove(contribution);
            if let (Some((pair, _)), true) = (&pairs[index], pair_model) {
                ledger.disable(pair);
            }
            states[index] = FlowState::Disabled(DisabledReason::EntitlementExceeded);
            refused.push((index as u32, DisabledReason::EntitlementExceeded));
            entitlement_refusals.push(EntitlementRefusal {
                flow: index as u32,
                environment,
                entitlement: excess.entitlement,
                in_use: in_use.used()[slot],
                limit: excess.limit,
                would_be: excess.used,
            });
        }
    }

    // Which records budget each flow's main loads count against.
    let mut loader_budget = |flow: &crate::config::Flow, at_hard_limit: bool| -> Option<u32> {
        let [system] = flow.systems.as_slice() else {
            return None;
        };
        let system = crate::catalog::system_type(config.instance(system)?);
        ledger
            .sources()
            .iter()
            .enumerate()
            .filter(|(_, source)| {
                let (a, b) = source.systems.types();
                source.invalid.is_none() && (a == system || b == system)
            })
            .filter(|&(s, _)| {
                !at_hard_limit || {
                    let license = &sorted[source_license[s] as usize];
                    let hard = license.file.payload.records_limits().map(|(_, hard)| hard);
                    let used = resources
                        .meters
                        .license(&license.file.payload.common.id)
                        .committed(month);
                    hard.is_some_and(|hard| used >= hard)
                }
            })
            .min_by_key(|(_, source)| source.expire)
            .map(|(s, _)| source_license[s])
    };
    let budgets: Vec<Option<u32>> = config
        .flows
        .iter()
        .zip(&states)
        .map(|(flow, state)| match *state {
            FlowState::Active { license: Some(l) } => Some(l),
            FlowState::Active { license: None } if pair_model => loader_budget(flow, false),
            _ => None,
        })
        .collect();
    for (index, flow) in config.flows.iter().enumerate() {
        let stopped = matches!(
            states[index],
            FlowState::Disabled(DisabledReason::RecordsLimit)
        );
        if stopped && pairs[index].is_none() && refusal_license[index].is_none() {
            refusal_license[index] = loader_budget(flow, true);
        }
    }

    let mut flows = Vec::with_capacity(config.flows.len());
    let mut flow_ids = HashMap::with_capacity(config.flows.len());
    for (index, flow) in config.flows.iter().enumerate() {
        let systems: Vec<u32> = flow
            .systems
            .iter()
            .filter_map(|id| instance_ids.get(id.as_str()).copied())
            .collect();
        flow_ids.insert(flow.id.as_str().into(), index as u32);
        let requests = systems
            .iter()
            .map(|&instance| {
                (
                    instance,
                    resources
                        .stats
                        .counts(&flow.id, &config.instances[instance as usize].id),
                )
            })
            .collect();
        flows.push(FlowEntry {
            id: flow.id.as_str().into(),
            systems,
            state: states[index],
            pair_key: pairs[index].as_ref().map(|(pair, _)| pair.key()),
            refusal_license: refusal_license[index],
            budget: budgets[index],
            meter: resources.meters.flow(&flow.id),
            requests,
        });
    }

    let mut points_used = vec![0; sorted.len()];
    for (source, &license) in source_license.iter().enumerate() {
        points_used[license as usize] = ledger.used(source);
    }
    let licenses = sorted
        .into_iter()
        .zip(points_used)
        .map(|(installed, points_used)| {
            let compiled_state = usable_at(&installed, host, moment);
            let limits = installed.file.payload.records_limits();
            let meter = resources.meters.license(&installed.file.payload.common.id);
            LicenseEntry {
                installed,
                points_used,
                compiled_state,
                host: host.clone(),
                limit: limits.map(|(limit, _)| limit),
                hard_limit: limits.map(|(_, hard)| hard),
                meter,
            }
        })
        .collect();
    resources.upstreams.retain_used();
    let snapshot = Snapshot {
        generation,
        config,
        flow_header,
        instances,
        flows,
        licenses,
        tz,
        clock_floor: moment.floor,
        entitlements,
        unrouted: resources.stats.counts(UNKNOWN, UNKNOWN),
        instance_ids,
        flow_ids,
        authorities,
    };
    Ok(Compiled {
        snapshot,
        refused,
        entitlement_refusals,
    })
}

/// The subscription limits in force: `Ok(None)` when subscription licensing is not required,
/// `Err(reason)` when it is and no subscription license is valid.
fn subscription_limits(
    config: &Config,
    licenses: &[Arc<Installed>],
    host: &HostIdentity,
    moment: Moment,
) -> Result<Option<SubscriptionLimits>, (&'static str, Option<u32>)> {
    if !config.requires(Model::Subscription) {
        return Ok(None);
    }
    // Subscription licenses with their index in `licenses`.
    let subscriptions: Vec<(u32, &Installed, &SubscriptionTerms)> = licenses
        .iter()
        .enumerate()
        .filter_map(|(index, installed)| match &installed.file.payload.terms {
            Terms::Subscription(terms) => Some((index as u32, &**installed, terms)),
            Terms::Pair(_) => None,
        })
        .collect();
    let expire = |(_, installed, _): &&(u32, &Installed, &SubscriptionTerms)| {
        installed.file.payload.common.expire
    };
    let valid: Vec<&(u32, &Installed, &SubscriptionTerms)> = subscriptions
        .iter()
        .filter(|(_, installed, _)| usable_at(installed, host, moment).is_ok())
        .collect();
    let Some(last) = valid.iter().copied().max_by_key(expire) else {
        // None is valid: a refusal names the subscription that expires last.
        let latest = subscriptions.iter().max_by_key(expire);
        let reason = latest
            .and_then(|(_, installed, _)| usable_at(installed, host, moment).err())
            .unwrap_or("missing");
        return Err((reason, latest.map(|(index, _, _)| *index)));
    };
    let mut limits = [[0u64; 4]; 2];
    for (_, _, terms) in &valid {
        for (total, add) in limits
            .iter_mut()
            .zip([limits_of(&terms.production), limits_of(&terms.sandbox)])
        {
            for (t, a) in total.iter_mut().zip(add) {
                *t += a;
            }
        }
    }
    let free_until = valid
        .iter()
        .filter_map(|(_, _, terms)| terms.unlimited_until)
        .filter(|until| moment.now < *until)
        .max();
    Ok(Some(SubscriptionLimits {
        pricing: last.2.pricing,
        unlimited: free_until.is_some(),
        free_until,
        limits,
    }))
}

impl Snapshot {
    /// The index of the instance with this id.
    pub fn instance(&self, id: &str) -> Option<u32> {
        self.instance_ids.get(id).copied()
    }

    /// The index of the flow with this id.
    pub fn flow(&self, id: &str) -> Option<u32> {
        self.flow_ids.get(id).copied()
    }

    /// The instances whose base URI has this host (any case) and port.
    pub fn instances_at(&self, host: &str, port: u16) -> impl Iterator<Item = u32> + '_ {
        let entries = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.authorities.get(host.to_ascii_lowercase().as_str())
        } else {
            self.authorities.get(host)
        };
        entries
            .into_iter()
            .flatten()
            .filter(move |(p, _)| *p == port)
            .map(|(_, instance)| *instance)
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
            self.flows[flow as usize]
                .requests
                .iter()
                .find(|(i, _)| *i == instance)
        })
        .map_or(
            &*self.instances[instance as usize].unclaimed,
            |(_, counts)| &**counts,
        )
    }

    /// The index of the license with this id.
    pub fn license(&self, id: &str) -> Option<u32> {
        self.licenses
            .iter()
            .position(|license| license.id() == id)
            .map(|i| i as u32)
    }

    /// Classifies a request to `instance` by the methods it may mean and the spellings of its
    /// path (relative to the base URI): main if any flow's main pattern on the instance matches.
    pub fn classify<'m>(
        &self,
        instance: u32,
        methods: impl IntoIterator<Item = &'m Method> + Clone,
        paths: &[&str],
    ) -> LoadClass {
        self.instances[instance as usize]
            .classifier
            .classify(methods, paths)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::testing::load;
    use crate::license::{LicenseFile, SigningKey};

    const CONFIG: &str = r#"
[[instances]]
id = "sn-1"
connector = "named"
app = "servicenow"
base_uri = "https://sn.example/api/"
[[instances]]
id = "jira-1"
connector = "named"
app = "jira"
base_uri = "https://jira.example"
[[instances]]
id = "jira-2"
connector = "named"
app = "jira"
base_uri = "https://jira2.example"
[[flows]]
id = "first"
systems = ["sn-1", "jira-1"]
[[flows.entities]]
instance = "jira-1"
role = "main"
method = "POST"
path = "/rest/api/2/issue"
[[flows]]
id = "second"
systems = ["sn-1", "jira-2"]
[[flows]]
id = "off"
systems = ["sn-1", "jira-1"]
"#;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn pair_license(id: &str, points: u32, expire: &str) -> Arc<Installed> {
        let payload = format!(
            r#"{{"version":1,"id":"{id}","kind":"pair","company":"A","registered_to":"B","email":"c@d.example","start":"2026-01-01T00:00:00Z","expire":"{expire}","system_a":"jira","system_b":"servicenow","points":{points}}}"#
        );
        let text =
            crate::license::sign(payload.as_bytes(), &SigningKey::from_bytes(&[1; 32])).unwrap();
        let file = LicenseFile::parse(text.as_bytes()).unwrap();
        Arc::new(Installed {
            path: PathBuf::from(format!("{id}.lic")),
            file,
        })
    }

    fn setting(enabled: bool, order: u64) -> FlowSetting {
        FlowSetting {
            enabled,
            reason: DisabledReason::Operator,
            order,
        }
    }

    #[test]
    fn points_go_to_flows_in_enabling_order_and_the_rest_are_exhausted() {
        let config = Arc::new(load(CONFIG).unwrap());
        let licenses = [pair_license("L", 1, "2030-01-01T00:00:00Z")];
        let now = at("2026-06-01T00:00:00Z");
        // "second" was enabled before "first": it takes the only point.
        let settings = [setting(true, 5), setting(true, 2), setting(false, 0)];
        let compiled = compile(
            config,
            &licenses,
            &settings,
            &mut Resources::default(),
            &Arc::default(),
            Moment::at(now),
            None,
        )
        .unwrap();
        let snapshot = &compiled.snapshot;
        assert_eq!(snapshot.generation, 1);
        assert_eq!(
            snapshot.flows[1].state,
            FlowState::Active { license: Some(0) }
        );
        assert_eq!(
            snapshot.flows[0].state,
            FlowState::Disabled(DisabledReason::PointsExhausted)
        );
        assert_eq!(
            snapshot.flows[2].state,
            FlowState::Disabled(DisabledReason::Operator)
        );
        assert_eq!(compiled.refused, vec![(0, DisabledReason::PointsExhausted)]);
        assert_eq!(snapshot.licenses[0].points_used, 1);
        assert_eq!(snapshot.flows[0].pair_key.as_deref(), Some("jira-1+sn-1"));
    }

    #[test]
    fn tables_answer_lookups_and_classification() {
        let config = Arc::new(load(CONFIG).unwrap());
        let licenses = [pair_license("L", 5, "2030-01-01T00:00:00Z")];
        let settings = [setting(true, 0), setting(true, 1), setting(true, 2)];
        let now = at("2026-06-01T00:00:00Z");
        let snapshot = compile(
            config,
            &licenses,
            &settings,
            &mut Resources::default(),
            &Arc::default(),
            Moment::at(now),
            None,
        )
        .unwrap()
        .snapshot;
        let (jira, sn) = (
            snapshot.instance("jira-1").unwrap(),
            snapshot.instance("sn-1").unwrap(),
        );
        assert!(snapshot.flow("first").is_some());
        // The pattern is the first flow's, but it applies to every request to jira-1.
        assert_eq!(
            snapshot.classify(jira, [&Method::POST], &["/rest/api/2/issue"]),
            LoadClass::Main
        );
        assert_eq!(
            snapshot.classify(sn, [&Method::POST], &["/rest/api/2/issue"]),
            LoadClass::Other
        );
        assert_eq!(
            snapshot.instances[sn as usize]
                .upstream
                .as_ref()
                .unwrap()
                .base_path(),
            "/api"
        );
        assert_eq!(snapshot.flow("nope"), None);
        assert_eq!(snapshot.license("L"), Some(0));
    }

    #[test]
    fn expiry_makes_flows_unlicensed_and_the_snapshot_stale() {
        let config = Arc::new(load(CONFIG).unwrap());
        let licenses = [pair_license("L", 5, "2026-07-01T00:00:00Z")];
        let settings = [setting(true, 0), setting(true, 1), setting(false, 2)];
        let before = at("2026-06-30T23:59:59Z");
        let after = at("2026-07-01T00:00:00Z");
        let snapshot = compile(
            config.clone(),
            &licenses,
            &settings,
            &mut Resources::default(),
            &Arc::default(),
            Moment::at(before),
            None,
        )
        .unwrap()
        .snapshot;
        assert!(!snapshot.is_stale(Moment::at(before)));
        assert!(snapshot.is_stale(Moment::at(after)));
        assert_eq!(
            snapshot.licenses[0].usable_at(Moment::at(after)),
            Err("expired")
        );
        let expired = compile(
            config,
            &licenses,
            &settings,
            &mut Resources::default(),
            &Arc::default(),
            Moment::at(after),
            None,
        )
        .unwrap()
        .snapshot;
        assert_eq!(expired.flows[0].state, FlowState::Unlicensed("expired"));
        assert_eq!(
            expired.flows[0].refusal_license,
            Some(0),
            "the refusal names the expired license"
        );
        assert_eq!(expired.licenses[0].points_used, 0);
    }
}

#[cfg(test)]
mod subscription_tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::testing::load;
    use crate::license::{LicenseFile, SigningKey};

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn installed(payload: &str) -> Arc<Installed> {
        let text =
            crate::license::sign(payload.as_bytes(), &SigningKey::from_bytes(&[2; 32])).unwrap();
        let file = LicenseFile::parse(text.as_bytes()).unwrap();
        Arc::new(Installed {
            path: PathBuf::from("x.lic"),
            file,
        })
    }

    fn subscription(id: &str, endpoint_apps: u32, unlimited_until: Option<&str>) -> Arc<Installed> {
        let until = unlimited_until
            .map(|u| format!(r#","unlimited_until":"{u}""#))
            .unwrap_or_default();
        installed(&format!(
            r#"{{"version":1,"id":"{id}","kind":"subscription","company":"A","registered_to":"B","email":"c@d.example","start":"2026-01-01T00:00:00Z","expire":"2030-01-01T00:00:00Z","pricing":"endpoint"{until},"production":{{"flows":10,"endpoint_apps":{endpoint_apps},"trading_partners":5,"agents":5}},"sandbox":{{"flows":1,"endpoint_apps":1,"trading_partners":1,"agents":1}}}}"#
        ))
    }

    fn pair(points: u32) -> Arc<Installed> {
        installed(&format!(
            r#"{{"version":1,"id":"P","kind":"pair","company":"A","registered_to":"B","email":"c@d.example","start":"2026-01-01T00:00:00Z","expire":"2030-01-01T00:00:00Z","system_a":"netsuite","system_b":"shopify","points":{points}}}"#
        ))
    }

    /// Four flows, each adding one endpoint app (netsuite is shared); enabled in the order `orders`.
    fn config(models: &str) -> Arc<Config> {
        let body = r#"
[[instances]]
id = "ns"
connector = "named"
app = "netsuite"
base_uri = "https://ns.example"
[[instances]]
id = "shop"
connector = "named"
app = "shopify"
base_uri = "https://shop.example"
[[instances]]
id = "db"
connector = "rdbms"
engine = "mysql"
host = "db.example"
[[instances]]
id = "api"
connector = "http"
base_uri = "https://api.example"
[[instances]]
id = "loader-src"
connector = "snowflake"
account = "acme"
[[flows]]
id = "a"
systems = ["ns", "shop"]
[[flows]]
id = "b"
systems = ["ns", "db"]
[[flows]]
id = "c"
systems = ["ns", "api"]
[[flows]]
id = "load"
kind = "data-loader"
systems = ["loader-src"]
"#;
        let mut config = load(body).unwrap();
        config.licensing.models = match models {
            "subscription" => vec![Model::Subscription],
            _ => vec![Model::Pair, Model::Subscription],
        };
        Arc::new(config)
    }

    fn compile_with(
        config: Arc<Config>,
        licenses: &[Arc<Installed>],
        orders: [u64; 4],
        now: &str,
    ) -> Compiled {
        let settings: Vec<FlowSetting> = orders
            .iter()
            .map(|&order| FlowSetting {
                enabled: true,
                reason: DisabledReason::Operator,
                order,
            })
            .collect();
        compile(
            config,
            licenses,
            &settings,
            &mut Resources::default(),
            &Arc::default(),
            Moment::at(at(now)),
            None,
        )
        .unwrap()
    }

    fn states(compiled: &Compiled) -> Vec<FlowState> {
        compiled
            .snapshot
            .flows
            .iter()
            .map(|flow| flow.state)
            .collect()
    }

    const ACTIVE: FlowState = FlowState::Active { license: None };
    const EXCEEDED: FlowState = FlowState::Disabled(DisabledReason::EntitlementExceeded);

    #[test]
    fn the_most_recently_enabled_flows_give_way_until_everything_fits() {
        // 4 endpoint apps in use (netsuite, shopify, mysql, api) against a limit of 2.
        let compiled = compile_with(
            config("subscription"),
            &[subscription("S", 2, None)],
            [0, 2, 1, 3],
            "2026-06-01T00:00:00Z",
        );
        // Enabling order: a, c, b; b is the most recent, then c.
        assert_eq!(states(&compiled), vec![ACTIVE, EXCEEDED, EXCEEDED, ACTIVE]);
        let refusals: Vec<(u32, &str, u64, u64, u64)> = compiled
            .entitlement_refusals
            .iter()
            .map(|r| (r.flow, r.entitlement, r.in_use, r.limit, r.would_be))
            .collect();
        assert_eq!(
            refusals,
            vec![(1, "endpoint_apps", 3, 2, 4), (2, "endpoint_apps", 2, 2, 3)]
        );
        assert_eq!(
            compiled.snapshot.entitlements.in_use[0].keys(1),
            vec!["app:netsuite", "app:shopify"]
        );
        assert_eq!(compiled.refused.len(), 2);
    }

    #[test]
    fn several_subscriptions_add_up_and_a_free_period_lifts_every_limit() {
        let both = compile_with(
            config("subscription"),
            &[subscription("S1", 2, None), subscription("S2", 2, None)],
            [0, 1, 2, 3],
            "2026-06-01T00:00:00Z",
        );
        assert_eq!(states(&both), vec![ACTIVE; 4]);
        assert_eq!(
            both.snapshot
                .entitlements
                .enforced(Environment::Production)
                .map(|l| l[1]),
            Some(4)
        );
        let free = compile_with(
            config("subscription"),
            &[subscription("S", 1, Some("2026-07-01T00:00:00Z"))],
            [0, 1, 2, 3],
            "2026-06-01T00:00:00Z",
        );
        assert_eq!(states(&free), vec![ACTIVE; 4]);
        assert_eq!(
            free.snapshot.entitlements.enforced(Environment::Production),
            None
        );
        let after = compile_with(
            config("subscription"),
            &[subscription("S", 1, Some("2026-07-01T00:00:00Z"))],
            [0, 1, 2, 3],
            "2026-07-01T00:00:00Z",
        );
        assert_eq!(
            states(&after)[0],
            EXCEEDED,
            "one endpoint app: even the first flow uses two"
        );
    }

    #[test]
    fn without_a_valid_subscription_no_flow_runs() {
        let compiled = compile_with(
            config("subscription"),
            &[],
            [0, 1, 2, 3],
            "2026-06-01T00:00:00Z",
        );
        assert_eq!(states(&compiled), vec![FlowState::Unlicensed("missing"); 4]);
        let expired = compile_with(
            config("subscription"),
            &[subscription("S", 9, None)],
            [0, 1, 2, 3],
            "2031-01-01T00:00:00Z",
        );
        assert_eq!(states(&expired), vec![FlowState::Unlicensed("expired"); 4]);
    }

    #[test]
    fn a_pair_whose_flows_lose_their_subscription_gives_its_point_back() {
        let first = compile_with(
            config("both"),
            &[subscription("S", 9, None), pair(1)],
            [0, 1, 2, 3],
            "2026-06-01T00:00:00Z",
        );
        assert!(matches!(
            states(&first)[0],
            FlowState::Active { license: Some(_) }
        ));
        let settings: Vec<FlowSetting> = (0..4)
            .map(|order| FlowSetting {
                enabled: true,
                reason: DisabledReason::Operator,
                order,
            })
            .collect();
        let moment = Moment::at(at("2026-06-01T00:00:00Z"));
        let second = compile(
            config("both"),
            &[pair(1)],
            &settings,
            &mut Resources::default(),
            &Arc::default(),
            moment,
            Some(&first.snapshot),
        )
        .unwrap();
        assert_eq!(states(&second)[0], FlowState::Unlicensed("missing"));
        assert_eq!(
            second.snapshot.licenses[0].points_used, 0,
            "no flow of the pair runs, so no point is held"
        );
    }

    #[test]
    fn pair_and_subscription_together_need_both() {
        let compiled = compile_with(
            config("both"),
            &[subscription("S", 9, None), pair(1)],
            [0, 1, 2, 3],
            "2026-06-01T00:00:00Z",
        );
        let states = states(&compiled);
        assert!(
            matches!(states[0], FlowState::Active { license: Some(_) }),
            "netsuite ↔ shopify has a pair license and fits"
        );
        assert_eq!(
            states[1],
            FlowState::Unlicensed("missing"),
            "no pair license covers netsuite ↔ rdbms"
        );
        assert_eq!(states[3], ACTIVE, "a one-system data loader needs no point");
    }
}
