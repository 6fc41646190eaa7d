//! Entitlement accounting: what each flow adds to its environment when enabled, what the
//! enabled flows use, and which limit a set of flows would exceed.

use std::ops::{Index, IndexMut};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::catalog::{canonical_endpoint, trading_partner_host};
use crate::config::{Config, Environment, FlowKind};
use crate::license::{EnvLimits, Pricing};

/// The four entitlements of a subscription environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entitlement {
    /// Active flows.
    Flows,
    /// Distinct canonical endpoints.
    EndpointApps,
    /// Distinct trading-partner hosts.
    TradingPartners,
    /// Distinct agents.
    Agents,
}

impl Entitlement {
    /// Every entitlement, in the order reports list them.
    pub const ALL: [Entitlement; 4] = [
        Entitlement::Flows,
        Entitlement::EndpointApps,
        Entitlement::TradingPartners,
        Entitlement::Agents,
    ];

    /// The name the API, the payload and problem answers use.
    pub fn as_str(self) -> &'static str {
        match self {
            Entitlement::Flows => "flows",
            Entitlement::EndpointApps => "endpoint_apps",
            Entitlement::TradingPartners => "trading_partners",
            Entitlement::Agents => "agents",
        }
    }
}

impl std::fmt::Display for Entitlement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value per entitlement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerEntitlement<T> {
    /// Active flows.
    pub flows: T,
    /// Endpoint apps.
    pub endpoint_apps: T,
    /// Trading partners.
    pub trading_partners: T,
    /// Agents.
    pub agents: T,
}

impl<T> PerEntitlement<T> {
    /// `(entitlement, value)` in [`Entitlement::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Entitlement, &T)> {
        Entitlement::ALL.into_iter().map(move |e| (e, &self[e]))
    }

    /// The same shape with every value mapped.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> PerEntitlement<U> {
        PerEntitlement {
            flows: f(&self.flows),
            endpoint_apps: f(&self.endpoint_apps),
            trading_partners: f(&self.trading_partners),
            agents: f(&self.agents),
        }
    }
}

impl<T> Index<Entitlement> for PerEntitlement<T> {
    type Output = T;

    fn index(&self, entitlement: Entitlement) -> &T {
        match entitlement {
            Entitlement::Flows => &self.flows,
            Entitlement::EndpointApps => &self.endpoint_apps,
            Entitlement::TradingPartners => &self.trading_partners,
            Entitlement::Agents => &self.agents,
        }
    }
}

impl<T> IndexMut<Entitlement> for PerEntitlement<T> {
    fn index_mut(&mut self, entitlement: Entitlement) -> &mut T {
        match entitlement {
            Entitlement::Flows => &mut self.flows,
            Entitlement::EndpointApps => &mut self.endpoint_apps,
            Entitlement::TradingPartners => &mut self.trading_partners,
            Entitlement::Agents => &mut self.agents,
        }
    }
}

/// One value per environment: nothing is traded between production and sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerEnvironment<T> {
    /// Production.
    pub production: T,
    /// Sandbox.
    pub sandbox: T,
}

impl<T> Index<Environment> for PerEnvironment<T> {
    type Output = T;

    fn index(&self, environment: Environment) -> &T {
        match environment {
            Environment::Production => &self.production,
            Environment::Sandbox => &self.sandbox,
        }
    }
}

impl<T> IndexMut<Environment> for PerEnvironment<T> {
    fn index_mut(&mut self, environment: Environment) -> &mut T {
        match environment {
            Environment::Production => &mut self.production,
            Environment::Sandbox => &mut self.sandbox,
        }
    }
}

/// Every key the flows of one config can use, numbered per entitlement, so that tallying
/// what the enabled flows use indexes counters instead of hashing texts (built once per
/// config and pricing, shared by its snapshots).
#[derive(Debug, Default)]
pub struct KeyNames {
    names: PerEntitlement<Vec<Arc<str>>>,
    numbers: PerEntitlement<FxHashMap<Arc<str>, u32>>,
}

impl KeyNames {
    /// The number of `key` among the keys of `entitlement`, given on first sight.
    pub fn number(&mut self, entitlement: Entitlement, key: &str) -> u32 {
        if let Some(&number) = self.numbers[entitlement].get(key) {
            return number;
        }
        let names = &mut self.names[entitlement];
        let number = names.len() as u32;
        let key: Arc<str> = key.into();
        names.push(key.clone());
        self.numbers[entitlement].insert(key, number);
        number
    }

    /// The key numbered `number` among the keys of `entitlement`.
    pub fn name(&self, entitlement: Entitlement, number: u32) -> Option<&str> {
        self.names[entitlement]
            .get(number as usize)
            .map(|name| &**name)
    }

    /// How many keys of `entitlement` are numbered.
    pub fn len(&self, entitlement: Entitlement) -> usize {
        self.names[entitlement].len()
    }
}

/// What one flow uses of its environment's entitlements while enabled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contribution {
    /// The environment.
    pub environment: Environment,
    /// Keys per entitlement, by their number in the config's [`KeyNames`]: the flow id (if it
    /// counts as an active flow), canonical endpoint keys, trading-partner hosts, agent ids.
    pub keys: PerEntitlement<Vec<u32>>,
}

/// What every flow of `config` (config order) uses under `pricing`, and the names of the keys.
pub fn contributions(config: &Config, pricing: Pricing) -> (Vec<Contribution>, KeyNames) {
    let mut names = KeyNames::default();
    let contributions = (0..config.flows.len())
        .map(|index| contribution(config, index, pricing, &mut names))
        .collect();
    (contributions, names)
}

/// What flow `index` of `config` uses under `pricing`, its keys numbered in `names`.
fn contribution(
    config: &Config,
    index: usize,
    pricing: Pricing,
    names: &mut KeyNames,
) -> Contribution {
    let flow = &config.flows[index];
    let mut keys = PerEntitlement::<Vec<u32>>::default();
    let counts_as_flow = match flow.kind {
        FlowKind::Flow => true,
        FlowKind::DataLoader => false,
        FlowKind::IntegrationApp => pricing == Pricing::Platform,
    };
    let mut add = |entitlement: Entitlement, key: &str| {
        keys[entitlement].push(names.number(entitlement, key));
    };
    if counts_as_flow {
        add(Entitlement::Flows, &flow.id);
    }
    for instance in flow.systems.iter().filter_map(|id| config.instance(id)) {
        if flow.kind != FlowKind::DataLoader {
            if let Some(endpoint) = canonical_endpoint(instance) {
                add(Entitlement::EndpointApps, &endpoint);
            }
        }
        if pricing == Pricing::Endpoint {
            if let Some(host) = trading_partner_host(instance) {
                add(Entitlement::TradingPartners, &host);
            }
        }
        if let Some(agent) = instance.agent.as_deref() {
            add(Entitlement::Agents, agent);
        }
    }
    Contribution {
        environment: flow.environment,
        keys,
    }
}

/// What the enabled flows of one environment use: each key with the number of enabled flows
/// using it, so that removing a flow frees exactly what no other flow still uses.
#[derive(Debug, Clone, Default)]
pub struct InUse {
    /// The names of the keys the contributions number.
    names: Arc<KeyNames>,
    /// Per entitlement, by key number, the enabled flows using the key.
    flows: PerEntitlement<Vec<u32>>,
    /// Per entitlement, the keys at least one enabled flow uses.
    used: PerEntitlement<u64>,
}

/// A limit that a set of flows exceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Excess {
    /// Which entitlement.
    pub entitlement: Entitlement,
    /// Distinct keys in use.
    pub used: u64,
    /// The limit.
    pub limit: u64,
}

impl InUse {
    /// Nothing in use yet, of the keys `names` numbers.
    pub fn new(names: Arc<KeyNames>) -> InUse {
        let zeros = |entitlement| vec![0; names.len(entitlement)];
        let flows = PerEntitlement {
            flows: zeros(Entitlement::Flows),
            endpoint_apps: zeros(Entitlement::EndpointApps),
            trading_partners: zeros(Entitlement::TradingPartners),
            agents: zeros(Entitlement::Agents),
        };
        InUse {
            names,
            flows,
            used: PerEntitlement::default(),
        }
    }

    /// Adds an enabled flow.
    pub fn add(&mut self, contribution: &Contribution) {
        for (entitlement, added) in contribution.keys.iter() {
            let flows = &mut self.flows[entitlement];
            for &key in added {
                let key = key as usize;
                if key >= flows.len() {
                    flows.resize(key + 1, 0);
                }
                if flows[key] == 0 {
                    self.used[entitlement] += 1;
                }
                flows[key] += 1;
            }
        }
    }

    /// Removes a flow added before.
    pub fn remove(&mut self, contribution: &Contribution) {
        for (entitlement, removed) in contribution.keys.iter() {
            let flows = &mut self.flows[entitlement];
            for &key in removed {
                if let Some(count) = flows.get_mut(key as usize).filter(|count| **count > 0) {
                    *count -= 1;
                    if *count == 0 {
                        self.used[entitlement] -= 1;
                    }
                }
            }
        }
    }

    /// Distinct keys in use per entitlement.
    pub fn used(&self) -> PerEntitlement<u64> {
        self.used
    }

    /// The keys in use of an entitlement, sorted.
    pub fn keys(&self, entitlement: Entitlement) -> Vec<&str> {
        let mut keys: Vec<&str> = self.flows[entitlement]
            .iter()
            .enumerate()
            .filter(|(_, &flows)| flows > 0)
            .filter_map(|(key, _)| self.names.name(entitlement, key as u32))
            .collect();
        keys.sort_unstable();
        keys
    }

    /// The first entitlement whose limit (in [`Entitlement::ALL`] order) the flows exceed.
    pub fn excess(&self, limits: PerEntitlement<u64>) -> Option<Excess> {
        let used = self.used();
        Entitlement::ALL
            .into_iter()
            .find(|&e| used[e] > limits[e])
            .map(|entitlement| Excess {
                entitlement,
                used: used[entitlement],
                limit: limits[entitlement],
            })
    }
}

/// An environment's limits.
pub fn limits_of(limits: &EnvLimits) -> PerEntitlement<u64> {
    PerEntitlement {
        flows: limits.flows.into(),
        endpoint_apps: limits.endpoint_apps.into(),
        trading_partners: limits.trading_partners.into(),
        agents: limits.agents.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::load;

    const CONFIG: &str = r#"
[[instances]]
id = "ns-1"
connector = "named"
app = "netsuite"
base_uri = "https://ns-1.example"
agent = "agent-1"
[[instances]]
id = "ns-2"
connector = "named"
app = "NetSuite"
base_uri = "https://ns-2.example"
agent = "agent-2"
[[instances]]
id = "sftp-a"
connector = "sftp"
host = "Partner.example"
trading_partner = true
[[instances]]
id = "ftp-a"
connector = "ftp"
host = "partner.example"
port = 2121
trading_partner = true
[[instances]]
id = "hook"
connector = "webhook"
[[instances]]
id = "db"
connector = "rdbms"
engine = "mysql"
host = "db.example"
[[instances]]
id = "sb"
connector = "named"
app = "jira"
base_uri = "https://sb.example"
environment = "sandbox"
[[flows]]
id = "orders"
systems = ["ns-1", "sftp-a"]
[[flows]]
id = "invoices"
systems = ["ns-2", "ftp-a"]
[[flows]]
id = "app"
kind = "integration-app"
systems = ["hook", "ns-1"]
[[flows]]
id = "load"
kind = "data-loader"
systems = ["db"]
[[flows]]
id = "sandbox-load"
kind = "data-loader"
environment = "sandbox"
systems = ["sb"]
"#;

    /// What the flows `enabled` says use of `environment`, as key lists per entitlement.
    fn tally(
        config: &Config,
        environment: Environment,
        pricing: Pricing,
        enabled: impl Fn(usize) -> bool,
    ) -> PerEntitlement<Vec<String>> {
        let (contributions, names) = contributions(config, pricing);
        let mut in_use = InUse::new(Arc::new(names));
        for (index, contribution) in contributions.iter().enumerate() {
            if enabled(index) && contribution.environment == environment {
                in_use.add(contribution);
            }
        }
        let mut keys = PerEntitlement::<Vec<String>>::default();
        for entitlement in Entitlement::ALL {
            keys[entitlement] = in_use
                .keys(entitlement)
                .into_iter()
                .map(str::to_owned)
                .collect();
        }
        keys
    }

    /// Keys as `InUse::keys` lists them: sorted.
    fn set(items: &[&str]) -> Vec<String> {
        let mut keys: Vec<String> = items.iter().map(|s| s.to_string()).collect();
        keys.sort();
        keys
    }

    #[test]
    fn endpoint_pricing_counts_partners_but_not_integration_apps() {
        let config = load(CONFIG).unwrap();
        let used = tally(&config, Environment::Production, Pricing::Endpoint, |_| {
            true
        });
        assert_eq!(used.flows, set(&["invoices", "orders"]));
        assert_eq!(
            used.endpoint_apps,
            set(&[
                "app:netsuite",
                "ftp:partner.example:22",
                "ftp:partner.example:2121"
            ])
        );
        assert_eq!(used.trading_partners, set(&["partner.example"]));
        assert_eq!(used.agents, set(&["agent-1", "agent-2"]));
    }

    #[test]
    fn platform_pricing_counts_integration_apps_and_no_partners() {
        let config = load(CONFIG).unwrap();
        let used = tally(&config, Environment::Production, Pricing::Platform, |_| {
            true
        });
        assert_eq!(used.flows, set(&["app", "invoices", "orders"]));
        assert!(used.trading_partners.is_empty());
    }

    #[test]
    fn only_enabled_flows_of_the_environment_count() {
        let config = load(CONFIG).unwrap();
        let used = tally(
            &config,
            Environment::Production,
            Pricing::Endpoint,
            |flow| flow == 0,
        );
        assert_eq!(used.flows, set(&["orders"]));
        assert_eq!(used.agents, set(&["agent-1"]));
        let sandbox = tally(&config, Environment::Sandbox, Pricing::Endpoint, |_| true);
        assert_eq!(
            sandbox,
            PerEntitlement::<Vec<String>>::default(),
            "data loaders use no entitlement"
        );
    }
}

#[cfg(test)]
mod in_use_tests {
    use super::*;

    fn contribution(names: &mut KeyNames, flow: &str, endpoints: &[&str]) -> Contribution {
        let mut keys = PerEntitlement::<Vec<u32>>::default();
        keys.flows.push(names.number(Entitlement::Flows, flow));
        keys.endpoint_apps = endpoints
            .iter()
            .map(|&e| names.number(Entitlement::EndpointApps, e))
            .collect();
        Contribution {
            environment: Environment::Production,
            keys,
        }
    }

    #[test]
    fn shared_keys_are_freed_only_by_their_last_flow() {
        let mut names = KeyNames::default();
        let (a, b) = (
            contribution(&mut names, "a", &["app:jira", "app:servicenow"]),
            contribution(&mut names, "b", &["app:jira"]),
        );
        let mut in_use = InUse::new(Arc::new(names));
        in_use.add(&a);
        in_use.add(&b);
        assert_eq!(
            in_use.used(),
            PerEntitlement {
                flows: 2,
                endpoint_apps: 2,
                trading_partners: 0,
                agents: 0
            }
        );
        in_use.remove(&a);
        assert_eq!(in_use.keys(Entitlement::EndpointApps), vec!["app:jira"]);
        assert_eq!(in_use.keys(Entitlement::Flows), vec!["b"]);
        in_use.remove(&b);
        assert_eq!(in_use.used(), PerEntitlement::default());
        assert!(in_use.keys(Entitlement::EndpointApps).is_empty());
        in_use.remove(&b);
        assert_eq!(
            in_use.used(),
            PerEntitlement::default(),
            "a flow removed twice frees nothing twice"
        );
    }

    #[test]
    fn the_first_exceeded_limit_is_named() {
        let mut names = KeyNames::default();
        let a = contribution(&mut names, "a", &["app:jira", "app:servicenow"]);
        let mut in_use = InUse::new(Arc::new(names));
        in_use.add(&a);
        let limits = EnvLimits {
            flows: 5,
            endpoint_apps: 1,
            trading_partners: 0,
            agents: 0,
        };
        assert_eq!(
            in_use.excess(limits_of(&limits)),
            Some(Excess {
                entitlement: Entitlement::EndpointApps,
                used: 2,
                limit: 1
            })
        );
        let roomy = EnvLimits {
            flows: 1,
            endpoint_apps: 2,
            trading_partners: 0,
            agents: 0,
        };
        assert_eq!(in_use.excess(limits_of(&roomy)), None);
    }
}
