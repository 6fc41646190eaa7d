//! The subscription limits in force: the valid subscription licenses' limits added up per
//! environment, their pricing model, and any free period.

use std::sync::Arc;

use super::entitlements::{limits_of, PerEntitlement, PerEnvironment};
use super::reasons::InvalidReason;
use super::snapshot::{usable_at, SubscriptionLimits};
use crate::config::{Config, Model};
use crate::license::{HostIdentity, Installed, Moment, SubscriptionTerms, Terms};

/// `Ok(None)` when subscription licensing is not required; `Err` with the reason and the
/// license (index into `licenses`) a refusal names when it is required and none is valid:
/// the subscription that expires last, or none at all (`missing`).
pub fn subscription_limits(
    config: &Config,
    licenses: &[Arc<Installed>],
    host: &HostIdentity,
    moment: Moment,
) -> Result<Option<SubscriptionLimits>, (InvalidReason, Option<u32>)> {
    if !config.requires(Model::Subscription) {
        return Ok(None);
    }
    let subscriptions: Vec<(u32, &Installed, &SubscriptionTerms)> = licenses
        .iter()
        .enumerate()
        .filter_map(|(index, installed)| match &installed.file.payload.terms {
            Terms::Subscription(terms) => Some((index as u32, &**installed, terms)),
            Terms::Pair(_) => None,
        })
        .collect();
    let expire = |(_, installed, _): &&(u32, &Installed, &SubscriptionTerms)| {
        installed.file.payload.common.expire
    };
    let valid: Vec<&(u32, &Installed, &SubscriptionTerms)> = subscriptions
        .iter()
        .filter(|(_, installed, _)| usable_at(installed, host, moment).is_ok())
        .collect();
    let Some(last) = valid.iter().copied().max_by_key(expire) else {
        let latest = subscriptions.iter().max_by_key(expire);
        let reason = latest
            .and_then(|(_, installed, _)| usable_at(installed, host, moment).err())
            .unwrap_or(InvalidReason::Missing);
        return Err((reason, latest.map(|(index, _, _)| *index)));
    };
    let mut limits = PerEnvironment::<PerEntitlement<u64>>::default();
    for (_, _, terms) in &valid {
        add(&mut limits.production, limits_of(&terms.production));
        add(&mut limits.sandbox, limits_of(&terms.sandbox));
    }
    let free_until = valid
        .iter()
        .filter_map(|(_, _, terms)| terms.unlimited_until)
        .filter(|until| moment.now < *until)
        .max();
    Ok(Some(SubscriptionLimits {
        pricing: last.2.pricing,
        unlimited: free_until.is_some(),
        free_until,
        limits,
    }))
}

fn add(total: &mut PerEntitlement<u64>, more: PerEntitlement<u64>) {
    for (entitlement, value) in more.iter() {
        total[entitlement] += value;
    }
}
