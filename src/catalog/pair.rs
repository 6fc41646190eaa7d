//! Pairs: a point belongs to a pair of instances; a pair license covers a pair of system types.

use std::fmt;

use crate::config::{Config, Flow, Instance};

/// The system type a pair license names for an instance: its `app`, else its connector.
pub fn system_type(instance: &Instance) -> String {
    match instance.app.as_deref().map(str::trim) {
        Some(app) if !app.is_empty() => app.to_lowercase(),
        _ => instance.connector.as_str().to_owned(),
    }
}

/// The instance pair of a two-system flow and its system types; `None` for a one-system flow.
pub fn flow_pair(config: &Config, flow: &Flow) -> Option<(InstancePair, SystemPair)> {
    let [a, b] = flow.systems.as_slice() else {
        return None;
    };
    let (ia, ib) = (config.instance(a)?, config.instance(b)?);
    Some((
        InstancePair::new(a, b),
        SystemPair::new(&system_type(ia), &system_type(ib)),
    ))
}

/// An unordered pair of system types, lowercased: `{servicenow, jira}` = `{Jira, ServiceNow}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SystemPair(String, String);

impl SystemPair {
    /// Builds the pair in a canonical order, case-insensitively.
    pub fn new(a: &str, b: &str) -> SystemPair {
        let (a, b) = (a.trim().to_lowercase(), b.trim().to_lowercase());
        if a <= b {
            SystemPair(a, b)
        } else {
            SystemPair(b, a)
        }
    }

    /// The two system types in canonical order.
    pub fn types(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

impl fmt::Display for SystemPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ↔ {}", self.0, self.1)
    }
}

/// An unordered pair of instance ids: the unit that holds one point.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstancePair(String, String);

impl InstancePair {
    /// Builds the pair in a canonical order; instance ids are case-sensitive.
    pub fn new(a: &str, b: &str) -> InstancePair {
        if a <= b {
            InstancePair(a.to_owned(), b.to_owned())
        } else {
            InstancePair(b.to_owned(), a.to_owned())
        }
    }

    /// The key the admin API reports as `pair_key`: the two ids joined by `+`.
    pub fn key(&self) -> String {
        format!("{}+{}", self.0, self.1)
    }
}

impl fmt::Display for InstancePair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ↔ {}", self.0, self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::testing::instance;
    use crate::config::Connector;

    #[test]
    fn system_pairs_ignore_order_and_case() {
        assert_eq!(
            SystemPair::new("ServiceNow", "jira"),
            SystemPair::new("JIRA", "servicenow")
        );
        assert_ne!(
            SystemPair::new("servicenow", "jira"),
            SystemPair::new("servicenow", "netsuite")
        );
        assert_eq!(SystemPair::new("jira", "jira").types(), ("jira", "jira"));
    }

    #[test]
    fn instance_pairs_ignore_order_only() {
        assert_eq!(
            InstancePair::new("sn-1", "jira-1"),
            InstancePair::new("jira-1", "sn-1")
        );
        assert_ne!(
            InstancePair::new("sn-1", "jira-1"),
            InstancePair::new("sn-1", "jira-2")
        );
        assert_eq!(InstancePair::new("sn-1", "jira-1").key(), "jira-1+sn-1");
    }

    #[test]
    fn system_type_is_the_app_else_the_connector() {
        let named = Instance {
            app: Some("ServiceNow".into()),
            ..instance("sn", Connector::Named)
        };
        assert_eq!(system_type(&named), "servicenow");
        assert_eq!(system_type(&instance("db", Connector::Rdbms)), "rdbms");
    }
}
