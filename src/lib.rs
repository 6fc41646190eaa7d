//! tollgate: a sidecar reverse proxy that enforces integration-platform licenses inline.
//!
//! The module tree is the request's journey, and imports point one way, down this list
//! (`docs/architecture.md` draws the graph):
//!
//! - `cli` — the command-line verbs, on top of everything;
//! - `sidecar` — a running sidecar: listeners, the proxy, the admin API, the control plane;
//! - `proxy`, `admin` — what the engine-facing and admin listeners answer, on `control`;
//! - `control` — the one owner of the snapshot and of every change to it;
//! - `policy` — pure decisions compiled from config and licenses;
//! - `server`, `upstream`, `store` — listeners, client pools to the targets, durable state;
//! - `meter`, `observe`, `problem`, `catalog`, `license`, `config`, `intercept`, `clock` — the
//!   leaves (`intercept`: the HTTPS interception CA and the certificates it mints).

#![warn(missing_docs)]

pub(crate) mod admin;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub(crate) mod control;
pub mod intercept;
pub mod license;
pub mod meter;
pub mod observe;
pub mod policy;
pub mod problem;
pub mod proxy;
pub(crate) mod server;
pub(crate) mod sidecar;
pub(crate) mod store;
/// The store's commit paths for `benches/journal.rs` (not part of the library's interface).
#[doc(hidden)]
pub use store::bench as store_bench;
pub(crate) mod upstream;
