//! What can go wrong in the control plane, as types: start-up failures, failures to carry a
//! change out, and refusals of admin changes (which become problem answers).

use std::path::PathBuf;

use serde_json::Value;

use crate::config::ConfigError;
use crate::license::{ForeignHost, KeyError};
use crate::policy::CompileError;
use crate::problem::{Problem, ProblemCode};
use crate::store::fleet::FleetError;
use crate::store::StoreError;
use crate::upstream::UpstreamError;

/// Why the control plane could not do what it was asked (start-up or a change).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The configuration file is refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A trusted key named by the config cannot be read.
    #[error("{}: {source}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why it is refused.
        source: KeyError,
    },
    /// `licensing.host` claims an identity this machine does not have.
    #[error("{}: licensing.host[{}]: {source}", config.display(), source.index)]
    ForeignHost {
        /// The config file.
        config: PathBuf,
        /// The refused entry.
        source: ForeignHost,
    },
    /// A file or directory operation failed.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The snapshot cannot be compiled.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// An instance's client cannot be built (e.g. its `ca_file`).
    #[error("instance {instance:?}: {source}")]
    Upstream {
        /// The instance id.
        instance: String,
        /// Why.
        source: UpstreamError,
    },
    /// Fleet mode cannot start (its Redis settings are unusable).
    #[error("state.redis: {0}")]
    Fleet(FleetError),
    /// The control plane's thread is gone (it stopped, or it could not start).
    #[error("the control plane has stopped")]
    Stopped,
}

impl ControlError {
    /// An I/O failure on `path` while doing `what`.
    pub(super) fn io(path: impl Into<PathBuf>, what: &'static str, source: std::io::Error) -> Self {
        ControlError::Io {
            path: path.into(),
            what,
            source,
        }
    }
}

/// Why an admin change was refused; maps onto a problem answer.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No flow or license with that id (404).
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with licensing (409 with this problem code and reason).
    #[error("{detail}")]
    Conflict {
        /// `points-exhausted`, `license-invalid`, `entitlement-exceeded`, `records-limit-exceeded`.
        code: ProblemCode,
        /// The `reason` field, where the code has one.
        reason: Option<&'static str>,
        /// One sentence for `detail`.
        detail: String,
        /// Further problem members (the entitlement, its environment, numbers).
        fields: serde_json::Map<String, Value>,
    },
    /// The input is bad (400), e.g. a license file that does not verify.
    #[error("{0}")]
    BadInput(String),
    /// The change needs the fleet's store, which cannot be reached now (503).
    #[error("{0}")]
    Unavailable(String),
    /// tollgate could not carry the change out (500), e.g. the license directory is not writable.
    #[error(transparent)]
    Failed(#[from] ControlError),
}

impl From<Refusal> for Problem {
    fn from(refusal: Refusal) -> Problem {
        match refusal {
            Refusal::NotFound(detail) => Problem::new(ProblemCode::NotFound, detail),
            Refusal::BadInput(detail) => Problem::new(ProblemCode::InvalidLicense, detail),
            Refusal::Failed(err) => Problem::new(ProblemCode::InternalError, err.to_string()),
            Refusal::Unavailable(detail) => Problem::new(ProblemCode::StoreUnavailable, detail),
            Refusal::Conflict {
                code,
                reason,
                detail,
                fields,
            } => {
                let mut problem =
                    Problem::new(code, detail).with_status(http::StatusCode::CONFLICT);
                problem.fields.extend(fields);
                match reason {
                    Some(reason) => problem.with("reason", reason),
                    None => problem,
                }
            }
        }
    }
}
