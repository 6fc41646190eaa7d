//! What an engine-facing listener is for, which decides how its requests are routed.

use std::sync::Arc;

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
}

impl std::fmt::Display for ListenerRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenerRole::Engine => f.write_str("engine"),
            ListenerRole::Instance { id, .. } => write!(f, "instance:{id}"),
        }
    }
}
