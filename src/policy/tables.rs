//! What a snapshot takes from the configuration alone: the instance table with its
//! classifiers, the id and authority maps, and per flow its instances, pair, counters and
//! entitlement keys. Licenses and flow settings change far more often than the config (every
//! license upload, flow toggle and time-driven recompile), so a recompile of the same config
//! takes these from the previous snapshot instead of building them again.

use std::sync::{Arc, OnceLock};

use rustc_hash::{FxHashMap, FxHashSet};

use super::classify::Classifiers;
use super::entitlements::{contributions, Contribution, KeyNames};
use super::snapshot::{FlowInfo, InstanceEntry, Resources};
use crate::catalog::{flow_pair, InstancePair, SystemPair};
use crate::config::{Config, Entity};
use crate::license::Pricing;
use crate::observe::{RequestStats, UNKNOWN};

/// The config-derived tables of a snapshot, shared by every snapshot compiled from one config.
#[derive(Debug)]
pub(super) struct Tables {
    /// Instances in config order.
    pub(super) instances: Arc<[InstanceEntry]>,
    /// Instance indexes by id (FxHash: the keys come from the config, not from requests).
    pub(super) instance_ids: FxHashMap<Box<str>, u32>,
    /// Flow indexes by id.
    pub(super) flow_ids: FxHashMap<Box<str>, u32>,
    /// Instances by the lowercased host of their base URI: `(port, instance)` each.
    pub(super) authorities: FxHashMap<Box<str>, Vec<(u16, u32)>>,
    /// Per flow (config order), for two-system flows: its instance pair, numbered (flows of
    /// one pair have one number), and the pair's system types (one allocation per distinct
    /// pair of types, from `system_pairs`).
    pub(super) pairs: Vec<Option<(u32, Arc<SystemPair>)>>,
    /// Every pair of system types the flows have, once each.
    system_pairs: FxHashSet<Arc<SystemPair>>,
    /// Per flow (config order): what its entry in every snapshot holds.
    pub(super) flows: Vec<FlowInfo>,
    /// Per flow, what it uses of its environment's entitlements under endpoint pricing, with
    /// the names of the keys.
    endpoint: OnceLock<(Vec<Contribution>, Arc<KeyNames>)>,
    /// The same under platform pricing.
    platform: OnceLock<(Vec<Contribution>, Arc<KeyNames>)>,
}

impl Tables {
    /// Builds the tables of `config`, with counters from `resources`.
    pub(super) fn new(config: &Config, resources: &mut Resources) -> Tables {
        let instances = index_instances(config, &mut resources.stats);
        let found: Vec<Option<(InstancePair, SystemPair)>> = config
            .flows
            .iter()
            .map(|flow| flow_pair(config, flow))
            .collect();
        let mut numbers: FxHashMap<&InstancePair, u32> = FxHashMap::default();
        let mut system_pairs: FxHashSet<Arc<SystemPair>> = FxHashSet::default();
        let pairs: Vec<Option<(u32, Arc<SystemPair>)>> = found
            .iter()
            .map(|found| {
                let (pair, systems) = found.as_ref()?;
                let next = numbers.len() as u32;
                let systems = match system_pairs.get(systems) {
                    Some(shared) => shared.clone(),
                    None => {
                        let shared = Arc::new(systems.clone());
                        system_pairs.insert(shared.clone());
                        shared
                    }
                };
                Some((*numbers.entry(pair).or_insert(next), systems))
            })
            .collect();
        let mut flow_ids =
            FxHashMap::with_capacity_and_hasher(config.flows.len(), Default::default());
        let mut flows = Vec::with_capacity(config.flows.len());
        for (index, (flow, pair)) in config.flows.iter().zip(&found).enumerate() {
            flow_ids.insert(flow.id.as_str().into(), index as u32);
            let systems: Vec<u32> = flow
                .systems
                .iter()
                .filter_map(|id| instances.ids.get(id.as_str()).copied())
                .collect();
            let requests = systems
                .iter()
                .map(|&instance| {
                    let id = &config.instances[instance as usize].id;
                    (instance, resources.stats.counts(&flow.id, id))
                })
                .collect();
            flows.push(FlowInfo {
                id: flow.id.as_str().into(),
                systems: systems.into(),
                pair_key: pair.as_ref().map(|(pair, _)| pair.key().into()),
                meter: resources.meters.flow(&flow.id),
                requests,
                shadow_log: resources.stats.shadow_log(&flow.id),
            });
        }
        Tables {
            instances: instances.entries.into(),
            instance_ids: instances.ids,
            flow_ids,
            authorities: instances.authorities,
            pairs,
            system_pairs,
            flows,
            endpoint: OnceLock::new(),
            platform: OnceLock::new(),
        }
    }

    /// `systems` as the flows' pairs hold it, where a flow has that pair of system types:
    /// a license's types then compare with a flow's by address.
    pub(super) fn shared_system_pair(&self, systems: SystemPair) -> Arc<SystemPair> {
        self.system_pairs
            .get(&systems)
            .cloned()
            .unwrap_or_else(|| Arc::new(systems))
    }

    /// What each flow (config order) uses of its environment's entitlements under `pricing`,
    /// and the names of the keys it numbers.
    pub(super) fn contributions(
        &self,
        config: &Config,
        pricing: Pricing,
    ) -> &(Vec<Contribution>, Arc<KeyNames>) {
        let cell = match pricing {
            Pricing::Endpoint => &self.endpoint,
            Pricing::Platform => &self.platform,
        };
        cell.get_or_init(|| {
            let (contributions, names) = contributions(config, pricing);
            (contributions, Arc::new(names))
        })
    }
}

/// The instance table: entries in config order, the index of each id, and instances by the
/// host (lowercased) and port of their base URI.
pub(super) struct Instances {
    pub(super) entries: Vec<InstanceEntry>,
    pub(super) ids: FxHashMap<Box<str>, u32>,
    pub(super) authorities: FxHashMap<Box<str>, Vec<(u16, u32)>>,
}

/// Every instance with its base path, its authority and the patterns of every flow on it.
pub(super) fn index_instances(config: &Config, stats: &mut RequestStats) -> Instances {
    let mut ids = FxHashMap::with_capacity_and_hasher(config.instances.len(), Default::default());
    for (index, instance) in config.instances.iter().enumerate() {
        ids.insert(instance.id.as_str().into(), index as u32);
    }
    // Every flow's entities, grouped by the instance they are on (in config order).
    let mut entities: Vec<Vec<&Entity>> = vec![Vec::new(); config.instances.len()];
    for entity in config.flows.iter().flat_map(|flow| &flow.entities) {
        if let Some(&index) = ids.get(&*entity.instance) {
            entities[index as usize].push(entity);
        }
    }
    let mut table = Instances {
        entries: Vec::with_capacity(config.instances.len()),
        ids,
        authorities: FxHashMap::default(),
    };
    let mut classifiers = Classifiers::default();
    for ((index, instance), entities) in config.instances.iter().enumerate().zip(entities) {
        let index = index as u32;
        let uri = instance
            .base_uri
            .as_deref()
            .and_then(|uri| uri.parse::<http::Uri>().ok());
        if let Some(authority) = uri.as_ref().and_then(http::Uri::authority) {
            let https = uri.as_ref().and_then(http::Uri::scheme_str) == Some("https");
            let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
            table
                .authorities
                .entry(authority.host().to_ascii_lowercase().into_boxed_str())
                .or_default()
                .push((port, index));
        }
        table.entries.push(InstanceEntry {
            id: instance.id.as_str().into(),
            base_path: uri.as_ref().map(base_path).unwrap_or_default().into(),
            unclaimed: stats.counts(UNKNOWN, &instance.id),
            classifier: classifiers.get(&entities, instance.paths_case_insensitive),
        });
    }
    table
}

/// A base URI's path without its trailing `/` (empty for the root).
fn base_path(uri: &http::Uri) -> String {
    uri.path().trim_end_matches('/').to_owned()
}
