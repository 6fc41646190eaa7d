//! What the config names, in the terms licenses speak: canonical endpoints (SPEC §1.3),
//! system types and pairs of instances.

mod endpoint;
mod pair;

pub use endpoint::{canonical_endpoint, trading_partner_host};
pub use pair::{system_type, InstancePair, SystemPair};
