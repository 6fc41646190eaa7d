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

/// What one flow uses of its environment's entitlements while enabled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contribution {
    /// The environment.
    pub environment: Environment,
    /// Keys per entitlement: the flow id (if it counts as an active flow), canonical endpoint
    /// keys, trading-partner hosts, agent ids.
    pub keys: PerEntitlement<Vec<Arc<str>>>,
}

/// What flow `index` of `config` uses under `pricing`.
pub fn contribution(config: &Config, index: usize, pricing: Pricing) -> Contribution {
    let flow = &config.flows[index];
    let mut keys = PerEntitlement::<Vec<Arc<str>>>::default();
    let counts_as_flow = match flow.kind {
        FlowKind::Flow => true,
        FlowKind::DataLoader => false,
        FlowKind::IntegrationApp => pricing == Pricing::Platform,
    };
    if counts_as_flow {
        keys.flows.push(flow.id.as_str().into());
    }
    for instance in flow.systems.iter().filter_map(|id| config.instance(id)) {
        if flow.kind != FlowKind::DataLoader {
            keys.endpoint_apps
                .extend(canonical_endpoint(instance).map(Arc::from));
        }
        if pricing == Pricing::Endpoint {
            keys.trading_partners
                .extend(trading_partner_host(instance).map(Arc::from));
        }
        keys.agents.extend(instance.agent.as_deref().map(Arc::from));
    }
    Contribution {
        environment: flow.environment,
        keys,
    }
}

/// What the enabled flows of one environment use: each key with the number of enabled flows
/// using it, so that removing a flow frees exactly what no other flow still uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InUse {
    keys: PerEntitlement<FxHashMap<Arc<str>, u32>>,
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
    /// Adds an enabled flow.
    pub fn add(&mut self, contribution: &Contribution) {
        for (entitlement, added) in contribution.keys.iter() {
            let keys = &mut self.keys[entitlement];
            for key in added {
                *keys.entry(key.clone()).or_default() += 1;
            }
        }
    }

    /// Removes a flow added before.
    pub fn remove(&mut self, contribution: &Contribution) {
        for (entitlement, removed) in contribution.keys.iter() {
            let keys = &mut self.keys[entitlement];
            for key in removed {
                if let Some(count) = keys.get_mut(key) {
                    *count -= 1;
                    if *count == 0 {
                        keys.remove(key);
                    }
                }
            }
        }
    }

    /// Distinct keys in use per entitlement.
    pub fn used(&self) -> PerEntitlement<u64> {
        self.keys.map(|keys| keys.len() as u64)
    }

    /// The keys in use of an entitlement, sorted.
    pub fn keys(&self, entitlement: Entitlement) -> Vec<&str> {
        let mut keys: Vec<&str> = self.keys[entitlement].keys().map(|k| &**k).collect();
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
        let mut in_use = InUse::default();
        for index in (0..config.flows.len()).filter(|&i| enabled(i)) {
            let contribution = contribution(config, index, pricing);
            if contribution.environment == environment {
                in_use.add(&contribution);
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

    fn contribution(flow: &str, endpoints: &[&str]) -> Contribution {
        let mut keys = PerEntitlement::<Vec<Arc<str>>>::default();
        keys.flows.push(flow.into());
        keys.endpoint_apps = endpoints.iter().map(|&e| e.into()).collect();
        Contribution {
            environment: Environment::Production,
            keys,
        }
    }

    #[test]
    fn shared_keys_are_freed_only_by_their_last_flow() {
        let (a, b) = (
            contribution("a", &["app:jira", "app:servicenow"]),
            contribution("b", &["app:jira"]),
        );
        let mut in_use = InUse::default();
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
        in_use.remove(&b);
        assert_eq!(in_use, InUse::default());
    }

    #[test]
    fn the_first_exceeded_limit_is_named() {
        let mut in_use = InUse::default();
        in_use.add(&contribution("a", &["app:jira", "app:servicenow"]));
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
