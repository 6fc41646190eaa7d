//! `tollgate check --online`: one connection to the fleet's Redis to prove the settings work
//! before a sidecar relies on them: reachability, the round trip, the clock offset, and what
//! the fleet already holds.

use std::time::{Duration, Instant};

use redis::AsyncCommands;

use super::keys::Keys;
use super::link::Link;
use super::FleetError;
use crate::config::FleetSettings;

/// What a probe of the fleet's Redis found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// One `PING`'s round trip.
    pub round_trip: Duration,
    /// Redis' clock minus this machine's, in milliseconds.
    pub clock_offset_ms: i64,
    /// The fleet's flow settings version (0: no sidecar of this fleet has written yet).
    pub version: u64,
    /// Flow settings the fleet holds.
    pub flows: u64,
}

/// Connects to the fleet's Redis and reads what `check` reports, within `wait`.
pub async fn probe(
    settings: &FleetSettings,
    now_ms: impl Fn() -> i64,
    wait: Duration,
) -> Result<Probe, FleetError> {
    let link = Link::new(settings, wait)?;
    let keys = Keys::new(&settings.fleet);
    let deadline = Instant::now() + wait;
    let mut connection = link.connection();
    let started = Instant::now();
    let _: String = link
        .call(deadline, redis::cmd("PING").query_async(&mut connection))
        .await?;
    let round_trip = started.elapsed();
    let (seconds, micros): (i64, i64) = link
        .call(deadline, redis::cmd("TIME").query_async(&mut connection))
        .await?;
    let clock_offset_ms = seconds * 1000 + micros / 1000 - now_ms();
    let version: Option<u64> = link.call(deadline, connection.get(keys.version())).await?;
    let flows: u64 = link.call(deadline, connection.hlen(keys.flows())).await?;
    Ok(Probe {
        round_trip,
        clock_offset_ms,
        version: version.unwrap_or(0),
        flows,
    })
}
