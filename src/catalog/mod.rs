//! What the config names, in the terms licenses speak: canonical endpoints (docs/licenses.md),
//! system types, pairs of instances, and the records a bulk load carries.

mod endpoint;
mod pair;
mod records;

pub use endpoint::{canonical_endpoint, trading_partner_host};
pub use pair::{flow_pair, system_type, InstancePair, SystemPair};
pub use records::{count_accepted, count_records, RecordsError};

/// Instances for tests, built without a config file.
#[cfg(test)]
pub(crate) mod testing {
    use std::time::Duration;

    use crate::config::{Connector, Environment, Instance};

    /// An instance with only a connector and an id; tests fill in attributes.
    pub fn instance(id: &str, connector: Connector) -> Instance {
        Instance {
            id: id.to_owned(),
            connector,
            app: None,
            base_uri: None,
            engine: None,
            host: None,
            port: None,
            account: None,
            client_email: None,
            cluster: None,
            region: None,
            access_key_id: None,
            environment: Environment::Production,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            ca_file: None,
            listen: None,
            flow: None,
            agent: None,
            trading_partner: false,
            paths_case_insensitive: false,
        }
    }
}
