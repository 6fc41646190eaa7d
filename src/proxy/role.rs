//! What an engine-facing listener is for, which decides how its requests are routed.

use std::sync::Arc;

use super::credentials::ProxyCredentials;

/// The engine-facing listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerRole {
    /// The main listener: `/{instance-id}/…`, or absolute-form in forward-proxy mode.
    Engine,
    /// A dedicated listener: every request goes to this instance.
    Instance {
        /// The instance id.
        id: Arc<str>,
        /// The flow bound to the listener, used when a request names none.
        flow: Option<Arc<str>>,
    },
    /// Inside a `CONNECT` tunnel opened on the main listener: every request goes to the one
    /// instance at the tunnel's authority, as an absolute-form request to it would.
    Tunnel {
        /// The host of the `CONNECT` target, lowercase (an IPv6 address in brackets).
        host: Box<str>,
        /// Its port.
        port: u16,
        /// The `CONNECT`'s `Proxy-Authorization`: its user name names the flow of requests
        /// that carry no flow header (engines send credentials on the `CONNECT` only).
        credentials: ProxyCredentials,
    },
}

impl std::fmt::Display for ListenerRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenerRole::Engine => f.write_str("engine"),
            ListenerRole::Instance { id, .. } => write!(f, "instance:{id}"),
            ListenerRole::Tunnel { host, port, .. } => write!(f, "tunnel:{host}:{port}"),
        }
    }
}
