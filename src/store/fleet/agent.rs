//! The fleet agent: a task that keeps this sidecar in step with the fleet. It joins once
//! Redis is reachable (settling the lease it held before a restart), ships counts every
//! round, reads everyone's back, tops leases up, returns the idle ones, and re-reads the flow
//! settings when a change is announced on the channel or, should the message be lost, when
//! the version it checks every second has moved.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::lease::Budget;
use super::{Fleet, FleetError, FleetNotice, Tracked};
use crate::clock::month_index;

/// How often counts are shipped and the fleet's read back: the fleet's totals in every
/// sidecar's reports are at most this much (plus one round trip) behind.
const ROUND: Duration = Duration::from_millis(200);
/// How often the settings version is checked (a lost announcement costs at most this).
const VERSION_CHECK: Duration = Duration::from_secs(1);
/// Near the hard limit, leftovers nobody draws from go back after this, not after `lease_ttl`.
const TIGHT_IDLE: Duration = Duration::from_secs(1);
/// How often a sidecar that cannot join says so again.
const JOIN_WARN_EVERY: Duration = Duration::from_secs(30);
/// Wait between two attempts to subscribe to the channel.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

/// What the agent remembers of a lease between rounds, to notice an idle one.
struct Idle {
    available: u64,
    since: Instant,
}

/// Runs the agent until [`Fleet::stop`].
pub(super) async fn run(fleet: Arc<Fleet>) {
    let mut rounds = tokio::time::interval(ROUND);
    rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_version_check = Instant::now();
    let mut idle: HashMap<Arc<str>, Idle> = HashMap::new();
    let mut warned: Option<Instant> = None;
    let mut last_month: Option<u32> = None;
    loop {
        tokio::select! {
            _ = rounds.tick() => {}
            _ = fleet.changed.notified() => {
                if !fleet.stopped.load(Ordering::Acquire) {
                    refresh_flows(&fleet, true).await;
                }
            }
            _ = fleet.stop.notified() => {}
        }
        if fleet.stopped.load(Ordering::Acquire) {
            return;
        }
        let Some(tracked) = fleet.tracked.load_full() else {
            continue;
        };
        if !fleet.joined.load(Ordering::Acquire) {
            if let Err(err) = join(&fleet, &tracked).await {
                // Once, then every JOIN_WARN_EVERY: a Redis that stays down is one line, not five a second.
                if warned.is_none_or(|at| at.elapsed() >= JOIN_WARN_EVERY) {
                    tracing::warn!(error = %err, "cannot join the fleet yet: counted loads are refused with 503 and /readyz answers 503 until Redis is reachable; retrying");
                    warned = Some(Instant::now());
                }
            }
            continue;
        }
        let month = month_index(fleet.clock.now(), tracked.tz);
        if let Some(previous) = last_month.filter(|&previous| previous < month) {
            close_month(&fleet, &tracked, previous).await;
        }
        last_month = Some(month);
        round(&fleet, &tracked, month, &mut idle).await;
        if Instant::now() >= next_version_check {
            next_version_check = Instant::now() + VERSION_CHECK;
            refresh_flows(&fleet, false).await;
        }
    }
}

/// The first exchanges after start: settle every lease, take in the fleet's counts and flow
/// settings; then leases may be granted.
async fn join(fleet: &Fleet, tracked: &Tracked) -> Result<(), FleetError> {
    fleet.claim_node().await?;
    let month = month_index(fleet.clock.now(), tracked.tz);
    for license in &tracked.licenses {
        fleet
            .settle_after_start(Budget::from(license), month)
            .await?;
    }
    fleet.ship_flows(month, &tracked.flows).await?;
    let flows = fleet.read_flows().await?;
    fleet.version.store(flows.version, Ordering::Release);
    (fleet.notify)(FleetNotice::Flows(flows));
    fleet.joined.store(true, Ordering::Release);
    tracing::info!(fleet = %fleet.settings.fleet, node = %fleet.settings.node, "joined the fleet");
    Ok(())
}

/// One round: ship counts (topping up low leases), return idle leftovers, ship flow counts.
async fn round(fleet: &Fleet, tracked: &Tracked, month: u32, idle: &mut HashMap<Arc<str>, Idle>) {
    match fleet.claim_node().await {
        Ok(()) => {}
        Err(err @ FleetError::NodeTaken(_)) => {
            // Another run writes this node's lines now: stop granting until the name is ours.
            tracing::error!(error = %err, "this sidecar lost its node name; it stops drawing on the fleet's budget");
            for license in &tracked.licenses {
                if let Some(lease) = license.meter.lease() {
                    lease.take_available(month);
                }
            }
            fleet.joined.store(false, Ordering::Release);
            return;
        }
        Err(_) => return,
    }
    let now = Instant::now();
    for license in &tracked.licenses {
        let budget = Budget::from(license);
        let Some(lease) = license.meter.lease() else {
            continue;
        };
        let available = lease.available(month);
        let entry = idle.entry(license.meter.id.clone()).or_insert(Idle {
            available,
            since: now,
        });
        let drawn = entry.available != available;
        if drawn {
            *entry = Idle {
                available,
                since: now,
            };
        }
        let tight = lease.is_spent(month) || fleet.is_tight(&license.meter.id, license.hard);
        let idle_after = if tight {
            TIGHT_IDLE
        } else {
            fleet.settings.lease_ttl
        };
        let skewed = fleet.skew.load().is_some();
        let result = if available > 0 && (skewed || now.duration_since(entry.since) >= idle_after) {
            let outcome = fleet.give_back(budget, month).await;
            if let Ok(back) = &outcome {
                tracing::debug!(license = %license.meter.id, records = back, "idle lease returned to the fleet");
            }
            *entry = Idle {
                available: 0,
                since: now,
            };
            outcome.map(|_| ())
        } else {
            // A lease in use is topped up before it runs dry; an idle one is left alone (it
            // goes back after idle_after), and a spent budget is re-read by the exchange, so
            // records another sidecar gives back are found.
            fleet.ship(budget, month, drawn && !skewed).await
        };
        if let Err(err) = result {
            tracing::debug!(license = %license.meter.id, error = %err, "fleet round failed");
            if matches!(err, FleetError::Unavailable(_) | FleetError::Timeout(_)) {
                // Redis is away: the rest of the round would only wait for it too.
                return;
            }
        }
    }
    if let Err(err) = fleet.ship_flows(month, &tracked.flows).await {
        tracing::debug!(error = %err, "shipping flow counts failed");
    }
}

/// The month turned: ships the last counts of the month that ended (loads counted in the
/// round before the turn), so its totals in Redis are complete.
async fn close_month(fleet: &Fleet, tracked: &Tracked, month: u32) {
    for license in &tracked.licenses {
        if let Err(err) = fleet.ship(Budget::from(license), month, false).await {
            tracing::warn!(license = %license.meter.id, error = %err, "the last counts of the month could not be shipped");
        }
    }
    if let Err(err) = fleet.ship_flows(month, &tracked.flows).await {
        tracing::warn!(error = %err, "the last flow counts of the month could not be shipped");
    }
}

/// Reads the flow settings when the version moved (or when told a change was announced).
async fn refresh_flows(fleet: &Fleet, announced: bool) {
    if !fleet.joined.load(Ordering::Acquire) {
        return;
    }
    if !announced {
        match fleet.read_version().await {
            Ok(version) if version == fleet.version.load(Ordering::Acquire) => return,
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(error = %err, "checking the fleet's settings version failed");
                return;
            }
        }
    }
    match fleet.read_flows().await {
        Ok(flows) => {
            let previous = fleet.version.swap(flows.version, Ordering::AcqRel);
            if flows.version != previous {
                (fleet.notify)(FleetNotice::Flows(flows));
            }
        }
        Err(err) => tracing::debug!(error = %err, "reading the fleet's flow settings failed"),
    }
}

/// Listens for announced changes on the fleet's channel, resubscribing after every failure.
pub(super) async fn listen(fleet: Arc<Fleet>) {
    let channel = fleet.keys.changes();
    while !fleet.stopped.load(Ordering::Acquire) {
        let subscribed = async {
            let mut pubsub = fleet.link.client().get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub =
            tokio::time::timeout(fleet.control_deadline() - Instant::now(), subscribed).await;
        match pubsub {
            Ok(Ok(mut pubsub)) => {
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        message = messages.next() => match message {
                            Some(_) => fleet.changed.notify_one(),
                            None => break,
                        },
                        _ = fleet.stop.notified() => return,
                    }
                }
            }
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "cannot subscribe to the fleet's channel")
            }
            Err(_) => tracing::debug!("subscribing to the fleet's channel timed out"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RESUBSCRIBE) => {}
            _ = fleet.stop.notified() => return,
        }
    }
}

impl Fleet {
    /// Whether the fleet's budget of a license is (nearly) all granted: leftovers should
    /// then go back soon, so the last records go to whoever still has loads.
    fn is_tight(&self, license: &str, hard: Option<u64>) -> bool {
        let Some(hard) = hard else {
            return false;
        };
        self.views().get(license).is_some_and(|view| {
            hard.saturating_sub(view.granted) < 4 * view.nodes.len().max(1) as u64
        })
    }

    /// Shutdown: ships the last counts and returns every lease, so the fleet can spend it at
    /// once. Bounded: a Redis that is down costs one deadline per license at most.
    pub async fn leave(&self) {
        let Some(tracked) = self.tracked.load_full() else {
            return;
        };
        let month = month_index(self.clock.now(), tracked.tz);
        for license in &tracked.licenses {
            match self.give_back(Budget::from(license), month).await {
                Ok(back) if back > 0 => {
                    tracing::info!(license = %license.meter.id, records = back, "lease returned to the fleet")
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(license = %license.meter.id, error = %err, "the lease could not be returned to the fleet: it goes back when this sidecar restarts with the same node (strict durability), or stays spent until the month ends")
                }
            }
        }
        if let Err(err) = self.ship_flows(month, &tracked.flows).await {
            tracing::warn!(error = %err, "the last flow counts could not be shipped");
        }
        if let Err(err) = self.release_node().await {
            tracing::debug!(error = %err, "the node name could not be given back; it expires by itself");
        }
    }
}
