//! The request path: listeners accept, then each request is routed, gated on the current
//! snapshot and forwarded to its target system (SPEC §5).

mod body;
mod deadline;
mod forward;
mod framing;
mod path;
mod problem;
mod server;
mod service;

pub use body::{EngineBody, EngineBodyError, ProxyBody};
pub use forward::{remove_hop_by_hop, ForwardError, Upstream, UpstreamCache};
pub use path::{decode_segment, normalize, split_first, Normal, PathError};
pub use problem::{Problem, TOLLGATE_REASON};
pub use server::{bind, serve, BoundListener, ListenerRole, ServeOptions};
pub use service::{decide, handle, Decision, Shared};
