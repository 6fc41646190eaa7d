//! The one multiplexed connection a sidecar keeps to Redis (redis-rs' `ConnectionManager`,
//! which pipelines concurrent commands on one socket and reconnects in the background with
//! backoff), and the bound on every exchange: nothing waits on Redis longer than the
//! deadline it is given. Every exchange is timed and its outcome tracked, for `/readyz`,
//! `/v1/status` and `/metrics`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, RedisResult};

use super::FleetError;
use crate::config::FleetSettings;
use crate::observe::{DurationHistogram, ROUND_TRIP_BUCKETS};

/// The least time between two reconnection attempts.
const RECONNECT_MIN: Duration = Duration::from_millis(50);
/// The most time between two reconnection attempts, so a Redis that comes back is found soon.
const RECONNECT_MAX: Duration = Duration::from_secs(1);

/// The connection and what is known about it.
pub struct Link {
    client: Client,
    config: ConnectionManagerConfig,
    /// Replaced by a fresh one when Redis says it is a read-only replica (after a failover
    /// the old primary keeps the socket open and answers `READONLY` to every write).
    manager: ArcSwap<ConnectionManager>,
    up: AtomicBool,
    /// What the log last said (so each change is said once).
    was_up: AtomicBool,
    errors: AtomicU64,
    last_error: ArcSwapOption<String>,
    /// Round trips to Redis, for `/metrics`.
    pub round_trips: DurationHistogram,
}

impl Link {
    /// A connection to the fleet's Redis (with the password of `redis_password_file`, where
    /// set), made on first use: a sidecar starts whether Redis is up or not. Every exchange
    /// and connection attempt times out after `timeout`.
    pub fn new(fleet: &FleetSettings, timeout: Duration) -> Result<Link, FleetError> {
        let mut info = fleet
            .url
            .as_str()
            .into_connection_info()
            .map_err(|err| FleetError::Config(err.to_string()))?;
        if let Some(path) = &fleet.password_file {
            let password = std::fs::read_to_string(path).map_err(|err| {
                FleetError::Config(format!("cannot read {}: {err}", path.display()))
            })?;
            let settings = info.redis_settings().clone().set_password(password.trim());
            info = info.set_redis_settings(settings);
        }
        let client = Client::open(info).map_err(|err| FleetError::Config(err.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout))
            .set_min_delay(RECONNECT_MIN)
            .set_max_delay(RECONNECT_MAX)
            .set_number_of_retries(2);
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|err| FleetError::Config(err.to_string()))?;
        Ok(Link {
            client,
            config,
            manager: ArcSwap::from_pointee(manager),
            up: AtomicBool::new(false),
            was_up: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            last_error: ArcSwapOption::empty(),
            round_trips: DurationHistogram::with_bounds(&ROUND_TRIP_BUCKETS),
        })
    }

    /// A handle on the multiplexed connection (cheap: one per exchange).
    pub fn connection(&self) -> ConnectionManager {
        ConnectionManager::clone(&self.manager.load())
    }

    /// The client, for the subscription (a connection of its own).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs one exchange with Redis, waiting at most until `deadline`.
    pub async fn call<T>(
        &self,
        deadline: Instant,
        exchange: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, FleetError> {
        let started = Instant::now();
        let outcome = tokio::time::timeout_at(deadline.into(), exchange).await;
        let result = match outcome {
            Ok(Ok(value)) => {
                self.round_trips.observe(started.elapsed());
                self.up.store(true, Ordering::Release);
                if !self.was_up.swap(true, Ordering::AcqRel) {
                    tracing::info!("Redis is reachable");
                }
                return Ok(value);
            }
            Ok(Err(err)) if err.code() == Some("READONLY") => {
                // The old primary after a failover: find the new one.
                self.up.store(false, Ordering::Release);
                self.reconnect();
                FleetError::Unavailable(format!("{err} (a replica after a failover: reconnecting)"))
            }
            Ok(Err(err))
                if !err.is_io_error()
                    && !err.is_timeout()
                    && !err.is_connection_dropped()
                    && !err.is_connection_refusal() =>
            {
                // An answer, but a refusal (out of memory, loading, a script error): Redis is
                // not serving this sidecar, so it is not ready either.
                self.round_trips.observe(started.elapsed());
                self.up.store(false, Ordering::Release);
                FleetError::Redis(err.to_string())
            }
            Ok(Err(err)) => {
                self.up.store(false, Ordering::Release);
                FleetError::Unavailable(err.to_string())
            }
            Err(_) => {
                self.up.store(false, Ordering::Release);
                FleetError::Timeout(deadline.saturating_duration_since(started))
            }
        };
        Err(self.failed(result))
    }

    /// Counts a failed exchange (also one that failed after Redis answered) and says so in
    /// the log when Redis has just become unusable.
    pub fn failed(&self, err: FleetError) -> FleetError {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.last_error
            .store(Some(std::sync::Arc::new(err.to_string())));
        if self.was_up.swap(false, Ordering::AcqRel) {
            tracing::warn!(error = %err, "Redis is not serving this sidecar: counted loads beyond the leased records get 503 and /readyz answers 503 until it is back");
        }
        err
    }

    /// Drops the connection for a new one (made on next use), e.g. to find the new primary.
    fn reconnect(&self) {
        match ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone()) {
            Ok(manager) => self.manager.store(std::sync::Arc::new(manager)),
            Err(err) => tracing::warn!(error = %err, "cannot make a new Redis connection"),
        }
    }

    /// Whether the last exchange reached Redis.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Exchanges that failed since start.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The last failure, in one sentence.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.load_full().map(|err| (*err).clone())
    }
}
