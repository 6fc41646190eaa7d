//! Decisions compiled from config and licenses: which flow gets which point, and what the
//! enabled flows use of each environment's entitlements.

mod classify;
mod entitlements;
mod plan;
mod points;
mod snapshot;

pub use classify::{Classifier, LoadClass};
pub use entitlements::{tally, EnvironmentTally};
pub use plan::{plan_flows, FlowOutcome, FlowPlan};
pub use points::{PointLedger, PointRefusal, PointSource};
pub use snapshot::{
    compile, usable_at, Compiled, DisabledReason, FlowEntry, FlowSetting, FlowState, InstanceEntry,
    LicenseEntry, Moment, Resources, Snapshot,
};
