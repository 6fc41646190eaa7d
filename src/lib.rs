//! tollgate: a sidecar reverse proxy that enforces integration-platform licenses inline.
//!
//! The module tree follows a request's journey (see `docs/architecture.md`): `config` and
//! `license` are read and checked, `catalog` names instances, endpoints and pairs, `policy`
//! compiles all of it into decisions, and `cli` is the thin command-line front end.

pub mod admin;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod license;
pub mod meter;
pub mod observe;
pub mod policy;
pub mod proxy;
pub mod sidecar;
pub mod store;
pub mod tls;
