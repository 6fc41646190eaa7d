//! Entitlement accounting (SPEC §1.2): what the enabled flows of an environment use.

use std::collections::BTreeSet;

use crate::catalog::{canonical_endpoint, trading_partner_host};
use crate::config::{Config, Environment, FlowKind};
use crate::license::Pricing;

/// What one environment's enabled flows use, as the sets the limits apply to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvironmentTally {
    /// Ids of the flows that count as active flows.
    pub flows: BTreeSet<String>,
    /// Canonical endpoint keys in use.
    pub endpoint_apps: BTreeSet<String>,
    /// Lowercased trading-partner hosts in use (endpoint pricing only).
    pub trading_partners: BTreeSet<String>,
    /// Agent ids in use.
    pub agents: BTreeSet<String>,
}

/// Tallies an environment's use under `pricing`, counting the flows for which `enabled` holds.
pub fn tally(
    config: &Config,
    environment: Environment,
    pricing: Pricing,
    enabled: impl Fn(usize) -> bool,
) -> EnvironmentTally {
    let mut tally = EnvironmentTally::default();
    for (index, flow) in config.flows.iter().enumerate() {
        if flow.environment != environment || !enabled(index) {
            continue;
        }
        let counts_as_flow = match flow.kind {
            FlowKind::Flow => true,
            FlowKind::DataLoader => false,
            FlowKind::IntegrationApp => pricing == Pricing::Platform,
        };
        if counts_as_flow {
            tally.flows.insert(flow.id.clone());
        }
        for instance in flow.systems.iter().filter_map(|id| config.instance(id)) {
            if flow.kind != FlowKind::DataLoader {
                tally.endpoint_apps.extend(canonical_endpoint(instance));
            }
            if pricing == Pricing::Endpoint {
                tally
                    .trading_partners
                    .extend(trading_partner_host(instance));
            }
            tally.agents.extend(instance.agent.clone());
        }
    }
    tally
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
agent = "agent-1"
[[instances]]
id = "ns-2"
connector = "named"
app = "NetSuite"
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

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
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
            EnvironmentTally::default(),
            "data loaders use no entitlement"
        );
    }
}
