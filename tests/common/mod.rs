//! The integration-test harness: the real `tollgate` binary driven through its contract
//! only (a config file, license files signed with `tollgate license sign`, the ready file
//! of `tollgate run --ready-file`, the engine-facing and dedicated listeners, the admin API
//! and signals sent by process id), in front of HTTP upstreams started in-process.
//!
//! Every test file declares this module as `pub mod common;`. Each test file is its own
//! crate and uses only part of the harness; declaring the module `pub` makes its public
//! items part of that crate's interface, so rustc does not report the helpers that other
//! test files use as dead code, while private items nothing uses are still reported. No
//! `allow(dead_code)` is needed anywhere in the harness.

/// The admin API client: authenticated requests and the views read through them.
pub mod admin;
/// A mock target with the bulk APIs of Jira, Salesforce and ServiceNow.
pub mod bulk_target;
/// hyper requests to the sidecar's listeners and the assertions on their answers.
pub mod client;
/// The scratch directory and `tollgate.toml` builder, and starting the sidecar on it.
pub mod config;
/// Fleets of sidecars sharing one issuer, license files and Redis; concurrent loaders.
pub mod fleet;
/// HTTPS interception from the engine's side: the CA, tunnels opened by hand (`CONNECT`,
/// TLS with rustls, hyper over it), and curl and Python `requests` as engines.
pub mod intercept;
/// License payload builders, the issuer, and armor / unarmor / tamper.
pub mod licenses;
/// Waiting for asynchronous outcomes.
pub mod poll;
/// `tollgate run` as a process: readiness, log, signals, restarts; one-shot CLI runs.
pub mod process;
/// Byte-exact HTTP/1.1 over TCP, responses parsed with `httparse`.
pub mod raw_http;
/// A real `redis-server` child process: start, freeze, thaw, restart, kill; raw RESP.
pub mod redis;
/// The in-process mock target, plain HTTP or TLS.
pub mod upstream;

// Re-exported so that a test file needs only `use common::*;`.
pub use client::*;
pub use config::*;
pub use intercept::*;
pub use licenses::*;
pub use poll::*;
pub use process::*;
pub use raw_http::*;
pub use upstream::*;
