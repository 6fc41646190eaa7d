//! Decisions compiled from config and licenses: which flow gets which point, and what the
//! enabled flows use of each environment's entitlements.

mod entitlements;
mod plan;
mod points;

pub use entitlements::{tally, EnvironmentTally};
pub use plan::{plan_flows, FlowOutcome, FlowPlan};
pub use points::{PointLedger, PointRefusal, PointSource};
