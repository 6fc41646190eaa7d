//! HTTPS interception (`server.intercept_ca`): the CA whose certificates the engine trusts,
//! read and checked from its PEM files ([`Authority`]) or made anew for `tollgate ca init`
//! ([`generate`]); the leaf certificate for each tunnelled host, minted with that CA on first
//! use ([`Authority::issue`]); and the bounded per-host cache of TLS server settings that
//! share one session-ticket key and one session cache ([`Leaves`]).
//!
//! Nothing here knows about requests: the proxy decides which host a tunnel may be opened
//! to, and the server terminates TLS with what [`Leaves`] gives it.

mod authority;
mod leaves;

pub use authority::{generate, Authority, CaError, CaFile, GeneratedCa, Leaf};
pub use leaves::{Leaves, MintError, MAX_LEAVES};
