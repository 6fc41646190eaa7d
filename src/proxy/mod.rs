//! The request path of the engine-facing listeners: each request is checked, routed,
//! identified, gated on the current snapshot, admitted against its budget, forwarded to its
//! target and, for a counted load, counted. The phases read top to bottom in `service`.

mod body;
mod bulk;
mod counted;
mod credentials;
mod path;
mod role;
mod service;
mod tunnel;

pub use body::ProxyBody;
pub use path::{decode_segment, normalize, split_first, Normal, PathError};
pub use role::ListenerRole;
pub use service::{decide, handle, Decision, TOLLGATE_WARNING};
pub use tunnel::dispatch;
