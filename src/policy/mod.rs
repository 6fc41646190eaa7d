//! Decisions compiled from config and licenses: which flow gets which point, and what the
//! enabled flows use of each environment's entitlements.

mod classify;
mod entitlements;
mod points;
mod snapshot;

pub use classify::{Classifier, LoadClass};
pub use entitlements::{contribution, limits_of, Contribution, Excess, InUse, ENTITLEMENTS};
pub use points::{PointLedger, PointRefusal, PointSource};
pub use snapshot::{
    compile, usable_at, Compiled, DisabledReason, FlowEntry, FlowSetting, FlowState, InstanceEntry,
    LicenseEntry, Moment, Resources, Snapshot,
};
pub use snapshot::{env_index, EntitlementRefusal, Entitlements, SubscriptionLimits};
