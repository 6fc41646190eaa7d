//! Entitlement accounting (SPEC §1.2): what each flow adds to its environment when enabled,
//! what the enabled flows use, and which limit a set of flows would exceed.

use std::collections::BTreeMap;

use crate::catalog::{canonical_endpoint, trading_partner_host};
use crate::config::{Config, Environment, FlowKind};
use crate::license::{EnvLimits, Pricing};

/// The four entitlements, as the API and problem answers name them.
pub const ENTITLEMENTS: [&str; 4] = ["flows", "endpoint_apps", "trading_partners", "agents"];

/// What one flow uses of its environment's entitlements while enabled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contribution {
    /// The environment.
    pub environment: Environment,
    /// Keys per entitlement, in [`ENTITLEMENTS`] order: the flow id (if it counts as an
    /// active flow), canonical endpoint keys, trading-partner hosts, agent ids.
    pub keys: [Vec<String>; 4],
}

/// What flow `index` of `config` uses under `pricing`.
pub fn contribution(config: &Config, index: usize, pricing: Pricing) -> Contribution {
    let flow = &config.flows[index];
    let mut keys: [Vec<String>; 4] = Default::default();
    let counts_as_flow = match flow.kind {
        FlowKind::Flow => true,
        FlowKind::DataLoader => false,
        FlowKind::IntegrationApp => pricing == Pricing::Platform,
    };
    if counts_as_flow {
        keys[0].push(flow.id.clone());
    }
    for instance in flow.systems.iter().filter_map(|id| config.instance(id)) {
        if flow.kind != FlowKind::DataLoader {
            keys[1].extend(canonical_endpoint(instance));
        }
        if pricing == Pricing::Endpoint {
            keys[2].extend(trading_partner_host(instance));
        }
        keys[3].extend(instance.agent.clone());
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
    keys: [BTreeMap<String, u32>; 4],
}

/// A limit that a set of flows exceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Excess {
    /// Which entitlement (one of [`ENTITLEMENTS`]).
    pub entitlement: &'static str,
    /// Distinct keys in use.
    pub used: u64,
    /// The limit.
    pub limit: u64,
}

impl InUse {
    /// Adds an enabled flow.
    pub fn add(&mut self, contribution: &Contribution) {
        for (keys, added) in self.keys.iter_mut().zip(&contribution.keys) {
            for key in added {
                *keys.entry(key.clone()).or_default() += 1;
            }
        }
    }

    /// Removes a flow added before.
    pub fn remove(&mut self, contribution: &Contribution) {
        for (keys, removed) in self.keys.iter_mut().zip(&contribution.keys) {
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

    /// Distinct keys in use per entitlement, in [`ENTITLEMENTS`] order.
    pub fn used(&self) -> [u64; 4] {
        self.keys.each_ref().map(|keys| keys.len() as u64)
    }

    /// The keys in use of entitlement `index` (see [`ENTITLEMENTS`]), sorted.
    pub fn keys(&self, index: usize) -> Vec<&str> {
        self.keys[index].keys().map(String::as_str).collect()
    }

    /// The first entitlement whose limit (in [`ENTITLEMENTS`] order) the flows exceed, if any.
    pub fn excess(&self, limits: [u64; 4]) -> Option<Excess> {
        ENTITLEMENTS
            .iter()
            .zip(self.used())
            .zip(limits)
            .find(|((_, used), limit)| used > limit)
            .map(|((entitlement, used), limit)| Excess {
                entitlement,
                used,
                limit,
            })
    }
}

/// An environment's limits in [`ENTITLEMENTS`] order.
pub fn limits_of(limits: &EnvLimits) -> [u64; 4] {
    [
        limits.flows,
        limits.endpoint_apps,
        limits.trading_partners,
        limits.agents,
    ]
    .map(u64::from)
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
    ) -> [Vec<String>; 4] {
        let mut in_use = InUse::default();
        for index in (0..config.flows.len()).filter(|&i| enabled(i)) {
            let contribution = contribution(config, index, pricing);
            if contribution.environment == environment {
                in_use.add(&contribution);
            }
        }
        [0, 1, 2, 3].map(|i| in_use.keys(i).into_iter().map(str::to_owned).collect())
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
        assert_eq!(used[0], set(&["invoices", "orders"]));
        assert_eq!(
            used[1],
            set(&[
                "app:netsuite",
                "ftp:partner.example:22",
                "ftp:partner.example:2121"
            ])
        );
        assert_eq!(used[2], set(&["partner.example"]));
        assert_eq!(used[3], set(&["agent-1", "agent-2"]));
    }

    #[test]
    fn platform_pricing_counts_integration_apps_and_no_partners() {
        let config = load(CONFIG).unwrap();
        let used = tally(&config, Environment::Production, Pricing::Platform, |_| {
            true
        });
        assert_eq!(used[0], set(&["app", "invoices", "orders"]));
        assert!(used[2].is_empty());
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
        assert_eq!(used[0], set(&["orders"]));
        assert_eq!(used[3], set(&["agent-1"]));
        let sandbox = tally(&config, Environment::Sandbox, Pricing::Endpoint, |_| true);
        assert_eq!(
            sandbox,
            <[Vec<String>; 4]>::default(),
            "data loaders use no entitlement"
        );
    }
}

#[cfg(test)]
mod in_use_tests {
    use super::*;

    fn contribution(flow: &str, endpoints: &[&str]) -> Contribution {
        let mut keys: [Vec<String>; 4] = Default::default();
        keys[0].push(flow.to_owned());
        keys[1] = endpoints.iter().map(|e| e.to_string()).collect();
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
        assert_eq!(in_use.used(), [2, 2, 0, 0]);
        in_use.remove(&a);
        assert_eq!(in_use.keys(1), vec!["app:jira"]);
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
                entitlement: "endpoint_apps",
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
