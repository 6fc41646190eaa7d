//! The integration-test harness: the real `tollgate` binary driven through its contract
//! only (a config file, license files signed with `tollgate license sign`, the ready file
//! of `tollgate run --ready-file`, the engine-facing and dedicated listeners, the admin API
//! and signals sent by process id), in front of HTTP upstreams started in-process.
//!
//! | module      | for                                                               |
//! |-------------|-------------------------------------------------------------------|
//! | `licenses`  | payload builders, the issuer, armor / unarmor / tamper            |
//! | `upstream`  | the in-process mock target (plain HTTP or TLS)                    |
//! | `config`    | the scratch directory and `tollgate.toml` builder                 |
//! | `process`   | `tollgate run` as a process: readiness, log, signals, restarts    |
//! | `client`    | hyper requests to tollgate and the assertions on their answers    |
//! | `admin`     | the admin API client                                              |
//! | `raw_http`  | byte-exact HTTP/1.1 over TCP, responses parsed with `httparse`    |
//! | `poll`      | waiting for asynchronous outcomes                                 |
//!
//! Every test file declares this module as `pub mod common;`. Each test file is its own
//! crate and uses only part of the harness; declaring the module `pub` makes its public
//! items part of that crate's interface, so rustc does not report the helpers other test
//! files use as dead code, while private items that nothing uses are still reported. No
//! `allow(dead_code)` is needed anywhere in the harness.

pub mod admin;
pub mod client;
pub mod config;
pub mod licenses;
pub mod poll;
pub mod process;
pub mod raw_http;
pub mod upstream;

pub use client::*;
pub use config::*;
pub use licenses::*;
pub use poll::*;
pub use process::*;
pub use raw_http::*;
pub use upstream::*;
