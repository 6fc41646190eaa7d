//! Compiling config, licenses and flow settings into a [`Snapshot`], as a pipeline of small
//! stages that take and return plain data:
//!
//! 1. [`index_instances`]: ids, base paths, authorities and the classifier of each instance;
//! 2. [`point_sources`]: the pair licenses as the point ledger sees them, judged now;
//! 3. [`disabled_states`]: flows the operator or a past refusal disabled;
//! 4. [`keep_held_pairs`]: pairs keep the license they held before, where it still can lend;
//! 5. [`allocate_points`]: enabled flows take points in enabling order;
//! 6. [`enforce_entitlements`]: the most recently enabled flows give way until each
//!    environment fits its subscription limits;
//! 7. [`budgets`]: which license's records budget each flow's loads count against;
//! 8. [`flow_table`] and [`license_table`]: the indexed tables requests are decided on.

use std::sync::Arc;

use http::HeaderName;
use rustc_hash::FxHashMap;

use super::entitlements::{Contribution, InUse, PerEnvironment};
use super::points::{PointLedger, PointRefusal, PointSource};
use super::reasons::{DisabledReason, InvalidReason};
use super::snapshot::{
    usable_at, EntitlementRefusal, Entitlements, FlowEntry, FlowSetting, FlowState, LicenseEntry,
    Resources, Snapshot,
};
use super::subscription::subscription_limits;
use super::tables::Tables;
use crate::catalog::{system_type, SystemPair};
use crate::config::{Config, Environment, Model};
use crate::license::{HostIdentity, Installed, Moment, Pricing, Terms};
use crate::observe::UNKNOWN;

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

/// Why a configuration cannot be compiled (validation rules these out; kept as a guard).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// `server.flow_header` is not a header name.
    #[error("server.flow_header {0:?} is not a valid header name")]
    FlowHeader(String),
}

/// Builds a snapshot from a valid config, verified licenses and a setting per flow (config
/// order), judged on `host` at `moment`; `previous` keeps pairs on the licenses they held.
pub fn compile(
    config: Arc<Config>,
    licenses: &[Arc<Installed>],
    settings: &[FlowSetting],
    resources: &mut Resources,
    host: &Arc<HostIdentity>,
    moment: Moment,
    previous: Option<&Snapshot>,
) -> Result<Compiled, CompileError> {
    let flow_header = HeaderName::from_bytes(config.server.flow_header.as_bytes())
        .map_err(|_| CompileError::FlowHeader(config.server.flow_header.clone()))?;
    // The timezone was validated with the config.
    let tz: chrono_tz::Tz = config
        .licensing
        .timezone
        .parse()
        .unwrap_or(chrono_tz::Tz::UTC);
    let month = crate::clock::month_index(moment.now, tz);
    let tables = match previous {
        Some(previous) if Arc::ptr_eq(&previous.config, &config) => previous.tables.clone(),
        _ => Arc::new(Tables::new(&config, resources)),
    };

    let mut sorted: Vec<Arc<Installed>> = licenses.to_vec();
    sorted.sort_by(|a, b| a.file.payload.common.id.cmp(&b.file.payload.common.id));
    let (sources, source_license) = point_sources(&sorted, &tables, host, moment);
    let mut ledger = PointLedger::new(sources);
    ledger.reserve(tables.pairs.len());
    let at_hard_limit = at_hard_limit(&sorted, resources, month);

    let pair_model = config.requires(Model::Pair);
    let pairs = &tables.pairs;
    let order = enabling_order(settings, config.flows.len());
    let mut plan = disabled_states(settings, config.flows.len());
    let subscription = subscription_limits(&config, &sorted, host, moment);
    if let (Some(previous), true) = (previous, pair_model) {
        keep_held_pairs(&mut ledger, previous, &tables, &order);
    }
    allocate_points(
        &mut plan,
        &mut ledger,
        &order,
        pairs,
        &source_license,
        pair_model,
        subscription.as_ref().err().copied(),
    );
    ledger.release_idle();
    let limits = subscription.ok().flatten();
    let (entitlements, entitlement_refusals) = enforce_entitlements(
        &config,
        &tables,
        &mut plan,
        &mut ledger,
        &order,
        pair_model,
        limits,
    );
    let cover = Cover {
        config: &config,
        ledger: &ledger,
        source_license: &source_license,
        at_hard_limit: &at_hard_limit,
    };
    let budgets = budgets(&cover, &plan.states, pair_model);
    name_stopped_flows(&cover, pairs, &mut plan);

    let flows = flow_table(&plan, &budgets);
    let licenses = license_table(sorted, &ledger, &source_license, resources, host, moment);
    let inferred_flows = if config.server.infer_flow {
        infer_flows(&tables, &flows)
    } else {
        Vec::new()
    };
    let snapshot = Snapshot {
        generation: previous.map_or(1, |previous| previous.generation + 1),
        flow_header,
        instances: tables.instances.clone(),
        flows,
        licenses,
        tz,
        clock_floor: moment.floor,
        entitlements,
        unrouted: resources.stats.counts(UNKNOWN, UNKNOWN),
        flowless_shadow_log: resources.stats.shadow_log(UNKNOWN),
        inferred_flows,
        tables,
        config,
    };
    Ok(Compiled {
        snapshot,
        refused: plan.refused,
        entitlement_refusals,
    })
}

/// Stage 9: for `server.infer_flow`, each instance's one enabled flow (none where no enabled
/// flow or several have it among their systems).
fn infer_flows(tables: &Tables, flows: &[FlowEntry]) -> Vec<Option<u32>> {
    let mut inferred: Vec<Option<Option<u32>>> = vec![None; tables.instances.len()];
    for (index, (flow, info)) in flows.iter().zip(&tables.flows).enumerate() {
        if matches!(flow.state, FlowState::Disabled(_)) {
            continue;
        }
        for &instance in info.systems.iter() {
            let slot = &mut inferred[instance as usize];
            *slot = match slot {
                None => Some(Some(index as u32)),
                Some(_) => Some(None),
            };
        }
    }
    inferred.into_iter().map(Option::flatten).collect()
}

/// Which licenses (in `sorted` order) have counted their hard limit this month.
fn at_hard_limit(sorted: &[Arc<Installed>], resources: &mut Resources, month: u32) -> Vec<bool> {
    sorted
        .iter()
        .map(|license| {
            let hard = license.file.payload.records_limits().map(|(_, hard)| hard);
            let used = resources
                .meters
                .license(&license.file.payload.common.id)
                .committed(month);
            hard.is_some_and(|hard| used >= hard)
        })
        .collect()
}

/// Stage 2: the pair licenses (in id order) as point sources, each judged at `moment`, and
/// the index in `sorted` of each source's license.
fn point_sources(
    sorted: &[Arc<Installed>],
    tables: &Tables,
    host: &HostIdentity,
    moment: Moment,
) -> (Vec<PointSource>, Vec<u32>) {
    sorted
        .iter()
        .enumerate()
        .filter_map(|(index, installed)| match &installed.file.payload.terms {
            Terms::Pair(terms) => Some((
                PointSource {
                    id: installed.file.payload.common.id.clone(),
                    systems: tables
                        .shared_system_pair(SystemPair::new(&terms.system_a, &terms.system_b)),
                    points: terms.points,
                    expire: installed.file.payload.common.expire,
                    invalid: usable_at(installed, host, moment).err(),
                },
                index as u32,
            )),
            Terms::Subscription(_) => None,
        })
        .unzip()
}

/// The enabled flows in the order they take points (ascending setting order, then config order).
fn enabling_order(settings: &[FlowSetting], flows: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..flows)
        .filter(|&i| settings.get(i).is_some_and(|s| s.enabled))
        .collect();
    order.sort_by_key(|&i| (settings[i].order, i));
    order
}

/// Flow states as compilation works them out, with what it refused on the way.
#[derive(Debug)]
struct Plan {
    states: Vec<FlowState>,
    refusal_license: Vec<Option<u32>>,
    refused: Vec<(u32, DisabledReason)>,
}

/// Stage 3: flows the operator (or a past refusal) disabled keep their reason; enabled flows
/// start out as disabled by the operator until allocation decides.
fn disabled_states(settings: &[FlowSetting], flows: usize) -> Plan {
    let states = (0..flows)
        .map(|index| match settings.get(index) {
            Some(setting) if !setting.enabled => FlowState::Disabled(setting.reason),
            _ => FlowState::Disabled(DisabledReason::Operator),
        })
        .collect();
    Plan {
        states,
        refusal_license: vec![None; flows],
        refused: Vec::new(),
    }
}

/// Stage 4: pairs keep the license they held in the previous snapshot where it can still
/// lend them its point; only new pairs choose.
fn keep_held_pairs(
    ledger: &mut PointLedger,
    previous: &Snapshot,
    tables: &Tables,
    order: &[usize],
) {
    // The source of each of the previous snapshot's licenses, by its index there.
    let source_of: FxHashMap<&str, usize> = ledger
        .sources()
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let previous_source: Vec<Option<usize>> = previous
        .licenses
        .iter()
        .map(|license| source_of.get(license.id()).copied())
        .collect();
    let license_of = |flow: &FlowEntry| match flow.state {
        FlowState::Active { license: Some(l) } => {
            previous_source.get(l as usize).copied().flatten()
        }
        _ => None,
    };
    // The source each pair held, by pair number (pairs are numbered densely, at most one per
    // flow); where several flows name one pair, the last one read wins.
    let mut held: Vec<Option<usize>> = vec![None; tables.pairs.len()];
    let mut hold = |number: u32, source: usize| {
        if let Some(slot) = held.get_mut(number as usize) {
            *slot = Some(source);
        }
    };
    // Pairs are numbered per config: the previous snapshot of the same config names them by
    // number, one of another config by their key.
    if std::ptr::eq(&*previous.tables, tables) {
        for (flow, pair) in previous.flows.iter().zip(&tables.pairs) {
            if let (Some((number, _)), Some(source)) = (pair, license_of(flow)) {
                hold(*number, source);
            }
        }
    } else {
        let by_key: FxHashMap<&str, usize> = previous
            .flows
            .iter()
            .zip(previous.flow_infos())
            .filter_map(|(flow, info)| Some((info.pair_key.as_deref()?, license_of(flow)?)))
            .collect();
        for (pair, info) in tables.pairs.iter().zip(&tables.flows) {
            let source = info
                .pair_key
                .as_deref()
                .and_then(|key| by_key.get(key).copied());
            if let (Some((number, _)), Some(source)) = (pair, source) {
                hold(*number, source);
            }
        }
    }
    for &index in order {
        if let Some((pair, systems)) = &tables.pairs[index] {
            if let Some(source) = held.get(*pair as usize).copied().flatten() {
                ledger.keep(*pair, systems, source);
            }
        }
    }
}

/// Stage 5: enabled flows, in enabling order, take a point of a covering license (or share
/// their pair's); without a valid subscription where one is required, none runs.
fn allocate_points(
    plan: &mut Plan,
    ledger: &mut PointLedger,
    order: &[usize],
    pairs: &[Option<(u32, Arc<SystemPair>)>],
    source_license: &[u32],
    pair_model: bool,
    no_subscription: Option<(InvalidReason, Option<u32>)>,
) {
    for &index in order {
        if let Some((reason, license)) = no_subscription {
            plan.states[index] = FlowState::Unlicensed(reason);
            plan.refusal_license[index] = license;
            continue;
        }
        plan.states[index] = match &pairs[index] {
            Some((pair, systems)) if pair_model => match ledger.enable(*pair, systems) {
                Ok(source) => FlowState::Active {
                    license: Some(source_license[source]),
                },
                Err(PointRefusal::PointsExhausted) => {
                    plan.refused
                        .push((index as u32, DisabledReason::PointsExhausted));
                    FlowState::Disabled(DisabledReason::PointsExhausted)
                }
                Err(PointRefusal::LicenseInvalid(reason)) => {
                    plan.refusal_license[index] = ledger
                        .invalid_cover(systems)
                        .map(|source| source_license[source]);
                    FlowState::Unlicensed(reason)
                }
            },
            _ => FlowState::Active { license: None },
        };
    }
}

/// Stage 6: tallies what the active flows use per environment; while an environment is over
/// a limit, the most recently enabled active flow that uses the exceeded entitlement is
/// disabled (`entitlement-exceeded`) and its point released.
fn enforce_entitlements(
    config: &Config,
    tables: &Tables,
    plan: &mut Plan,
    ledger: &mut PointLedger,
    order: &[usize],
    pair_model: bool,
    limits: Option<super::snapshot::SubscriptionLimits>,
) -> (Entitlements, Vec<EntitlementRefusal>) {
    let pricing = limits.map_or(Pricing::Endpoint, |limits| limits.pricing);
    let (all, names) = tables.contributions(config, pricing);
    let mut entitlements = Entitlements {
        limits,
        in_use: PerEnvironment {
            production: InUse::new(names.clone()),
            sandbox: InUse::new(names.clone()),
        },
    };
    let contributions: Vec<Option<&Contribution>> = all
        .iter()
        .zip(&plan.states)
        .map(|(contribution, state)| {
            matches!(state, FlowState::Active { .. }).then_some(contribution)
        })
        .collect();
    for contribution in contributions.iter().flatten() {
        entitlements.in_use[contribution.environment].add(contribution);
    }
    let mut refusals = Vec::new();
    for environment in Environment::ALL {
        let Some(enforced) = entitlements.enforced(environment) else {
            continue;
        };
        let in_use = &mut entitlements.in_use[environment];
        while let Some(excess) = in_use.excess(enforced) {
            let uses = |index: usize| {
                contributions[index].is_some_and(|c| {
                    c.environment == environment && !c.keys[excess.entitlement].is_empty()
                })
            };
            let victim = order.iter().rev().copied().find(|&index| {
                matches!(plan.states[index], FlowState::Active { .. }) && uses(index)
            });
            let Some((index, contribution)) =
                victim.and_then(|index| Some((index, contributions[index]?)))
            else {
                break;
            };
            in_use.remove(contribution);
            if let (Some((pair, _)), true) = (&tables.pairs[index], pair_model) {
                ledger.disable(*pair);
            }
            plan.states[index] = FlowState::Disabled(DisabledReason::EntitlementExceeded);
            plan.refused
                .push((index as u32, DisabledReason::EntitlementExceeded));
            refusals.push(EntitlementRefusal {
                flow: index as u32,
                environment,
                entitlement: excess.entitlement,
                in_use: in_use.used()[excess.entitlement],
                limit: excess.limit,
                would_be: excess.used,
            });
        }
    }
    (entitlements, refusals)
}

/// What the budget stages look at: the pair licenses as point sources, and which of them
/// are at their hard limit this month.
struct Cover<'a> {
    config: &'a Config,
    ledger: &'a PointLedger,
    source_license: &'a [u32],
    /// By index into the sorted licenses.
    at_hard_limit: &'a [bool],
}

impl Cover<'_> {
    /// The valid pair license covering a single-system flow's system type that expires first
    /// (ties: lowest id), optionally only among those at their hard limit.
    fn loader_license(&self, flow: &crate::config::Flow, at_hard_limit: bool) -> Option<u32> {
        let [system] = flow.systems.as_slice() else {
            return None;
        };
        let system = system_type(self.config.instance(system)?);
        self.ledger
            .sources()
            .iter()
            .enumerate()
            .filter(|(_, source)| {
                let (a, b) = source.systems.types();
                source.invalid.is_none() && (a == system || b == system)
            })
            .filter(|&(s, _)| !at_hard_limit || self.at_hard_limit[self.source_license[s] as usize])
            .min_by_key(|(_, source)| source.expire)
            .map(|(s, _)| self.source_license[s])
    }

    /// The license at its hard limit that stopped a two-system flow: one covering its pair's
    /// system types.
    fn stopping_license(&self, systems: &SystemPair) -> Option<u32> {
        (0..self.ledger.sources().len())
            .find(|&s| {
                *self.ledger.sources()[s].systems == *systems
                    && self.at_hard_limit[self.source_license[s] as usize]
            })
            .map(|s| self.source_license[s])
    }
}

/// Stage 7: the license whose records budget each flow's main loads count against: the one
/// lending its pair a point, or, for a single-system data loader, the covering license.
fn budgets(cover: &Cover<'_>, states: &[FlowState], pair_model: bool) -> Vec<Option<u32>> {
    cover
        .config
        .flows
        .iter()
        .zip(states)
        .map(|(flow, state)| match *state {
            FlowState::Active { license: Some(l) } => Some(l),
            FlowState::Active { license: None } if pair_model => cover.loader_license(flow, false),
            _ => None,
        })
        .collect()
}

/// Flows stopped by the records limit name the license at its hard limit in their refusals.
fn name_stopped_flows(
    cover: &Cover<'_>,
    pairs: &[Option<(u32, Arc<SystemPair>)>],
    plan: &mut Plan,
) {
    for (index, flow) in cover.config.flows.iter().enumerate() {
        if plan.states[index] != FlowState::Disabled(DisabledReason::RecordsLimit)
            || plan.refusal_license[index].is_some()
        {
            continue;
        }
        plan.refusal_license[index] = match &pairs[index] {
            Some((_, systems)) => cover.stopping_license(systems),
            None => cover.loader_license(flow, true),
        };
    }
}

/// Stage 8: the flow table, each entry the flow's state and the licenses it names.
fn flow_table(plan: &Plan, budgets: &[Option<u32>]) -> Vec<FlowEntry> {
    plan.states
        .iter()
        .zip(&plan.refusal_license)
        .zip(budgets)
        .map(|((&state, &refusal_license), &budget)| FlowEntry {
            state,
            refusal_license,
            budget,
        })
        .collect()
}

/// Stage 8: the license table, in id order, with points held and counters resolved.
fn license_table(
    sorted: Vec<Arc<Installed>>,
    ledger: &PointLedger,
    source_license: &[u32],
    resources: &mut Resources,
    host: &Arc<HostIdentity>,
    moment: Moment,
) -> Vec<LicenseEntry> {
    let mut points_used = vec![0; sorted.len()];
    for (source, &license) in source_license.iter().enumerate() {
        points_used[license as usize] = ledger.used(source);
    }
    sorted
        .into_iter()
        .zip(points_used)
        .map(|(installed, points_used)| {
            let limits = installed.file.payload.records_limits();
            LicenseEntry {
                compiled_state: usable_at(&installed, host, moment),
                meter: resources.meters.license(&installed.file.payload.common.id),
                host: host.clone(),
                limit: limits.map(|(limit, _)| limit),
                hard_limit: limits.map(|(_, hard)| hard),
                installed,
                points_used,
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;
