//! Planning the initial state of every flow: flows are enabled in config order, each pair
//! taking its point as SPEC §1.1 says, and a flow that cannot get one stays disabled.

use crate::catalog::{system_type, InstancePair, SystemPair};
use crate::config::{Config, Flow, Model};

use super::points::{PointLedger, PointRefusal, PointSource};

/// Where a flow stands after planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowOutcome {
    /// Enabled; under pair licensing, `license` indexes the license whose point the pair holds.
    Enabled {
        /// Index into the ledger's sources, `None` where no point is needed.
        license: Option<usize>,
    },
    /// Disabled by the operator (`enabled = false`).
    Disabled,
    /// Wanted enabled but refused.
    Refused(PointRefusal),
}

/// A flow's pair and outcome.
#[derive(Debug, Clone)]
pub struct FlowPlan {
    /// The pair of instances that holds the point; `None` for a single-system data loader.
    pub pair: Option<InstancePair>,
    /// The pair's system types, which a license must cover.
    pub systems: Option<SystemPair>,
    /// Enabled, disabled or refused.
    pub outcome: FlowOutcome,
}

/// Plans every flow of a valid config against the pair licenses, in config order.
pub fn plan_flows(config: &Config, sources: Vec<PointSource>) -> (Vec<FlowPlan>, PointLedger) {
    let mut ledger = PointLedger::new(sources);
    let plans = config
        .flows
        .iter()
        .map(|flow| {
            let (pair, systems) = pair_of(config, flow).unzip();
            let outcome = if !flow.enabled {
                FlowOutcome::Disabled
            } else {
                match (&pair, &systems) {
                    (Some(pair), Some(systems)) if config.requires(Model::Pair) => {
                        match ledger.enable(pair, systems) {
                            Ok(license) => FlowOutcome::Enabled {
                                license: Some(license),
                            },
                            Err(refusal) => FlowOutcome::Refused(refusal),
                        }
                    }
                    _ => FlowOutcome::Enabled { license: None },
                }
            };
            FlowPlan {
                pair,
                systems,
                outcome,
            }
        })
        .collect();
    (plans, ledger)
}

/// The instance pair of a two-system flow and its system types.
pub(super) fn pair_of(config: &Config, flow: &Flow) -> Option<(InstancePair, SystemPair)> {
    let [a, b] = flow.systems.as_slice() else {
        return None;
    };
    let (ia, ib) = (config.instance(a)?, config.instance(b)?);
    Some((
        InstancePair::new(a, b),
        SystemPair::new(&system_type(ia), &system_type(ib)),
    ))
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::config::testing::load;

    const CONFIG: &str = r#"
[[instances]]
id = "sn-1"
connector = "named"
app = "ServiceNow"
[[instances]]
id = "jira-1"
connector = "named"
app = "jira"
[[instances]]
id = "jira-2"
connector = "named"
app = "jira"
[[instances]]
id = "db"
connector = "rdbms"
engine = "mysql"
host = "db.example"
[[flows]]
id = "a"
systems = ["sn-1", "jira-1"]
[[flows]]
id = "off"
systems = ["sn-1", "jira-2"]
enabled = false
[[flows]]
id = "b"
systems = ["jira-1", "sn-1"]
[[flows]]
id = "c"
systems = ["sn-1", "jira-2"]
[[flows]]
id = "loader"
kind = "data-loader"
systems = ["db"]
[[flows]]
id = "db-sync"
systems = ["db", "jira-1"]
"#;

    fn one_point() -> Vec<PointSource> {
        let expire = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).single().unwrap();
        vec![PointSource {
            id: "L".into(),
            systems: SystemPair::new("jira", "servicenow"),
            points: 1,
            expire,
            invalid: None,
        }]
    }

    #[test]
    fn flows_are_enabled_in_config_order_and_share_their_pair_point() {
        let config = load(CONFIG).unwrap();
        let (plans, ledger) = plan_flows(&config, one_point());
        let outcomes: Vec<&FlowOutcome> = plans.iter().map(|plan| &plan.outcome).collect();
        assert_eq!(
            outcomes,
            [
                &FlowOutcome::Enabled { license: Some(0) },
                &FlowOutcome::Disabled,
                &FlowOutcome::Enabled { license: Some(0) },
                &FlowOutcome::Refused(PointRefusal::PointsExhausted),
                &FlowOutcome::Enabled { license: None },
                &FlowOutcome::Refused(PointRefusal::LicenseInvalid("missing")),
            ]
        );
        assert_eq!(ledger.used(0), 1);
        assert_eq!(
            plans[0].pair, plans[2].pair,
            "flows a and b are one pair whatever the order of systems"
        );
        assert_eq!(
            plans[4].pair, None,
            "a single-system data loader has no pair"
        );
        assert_eq!(plans[5].systems, Some(SystemPair::new("rdbms", "jira")));
    }

    #[test]
    fn without_the_pair_model_no_point_is_needed() {
        let mut config = load(CONFIG).unwrap();
        config.licensing.models = vec![Model::Subscription];
        let (plans, _) = plan_flows(&config, Vec::new());
        assert!(plans
            .iter()
            .all(|plan| plan.outcome != FlowOutcome::Refused(PointRefusal::PointsExhausted)));
        assert_eq!(plans[3].outcome, FlowOutcome::Enabled { license: None });
    }
}
