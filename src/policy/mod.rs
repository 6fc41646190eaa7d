//! Decisions compiled from config and licenses: which flow gets which point, what the
//! enabled flows use of each environment's entitlements, which budget each flow's loads
//! draw on, and how requests are classified. Pure: no client pools, no I/O.

mod classify;
mod compile;
mod entitlements;
mod points;
mod reasons;
mod snapshot;
mod subscription;
mod tables;

pub use classify::{Classifier, LoadClass};
pub use compile::{compile, CompileError, Compiled};
pub use entitlements::{
    contributions, limits_of, Contribution, Entitlement, Excess, InUse, KeyNames, PerEntitlement,
    PerEnvironment,
};
pub use points::{PointLedger, PointRefusal, PointSource};
pub use reasons::{DisabledReason, InvalidReason};
pub use snapshot::{
    usable_at, EntitlementRefusal, Entitlements, FlowEntry, FlowInfo, FlowSetting, FlowState,
    InstanceEntry, LicenseEntry, Resources, Snapshot, SubscriptionLimits,
};

pub use crate::license::Moment;
