//! The one multiplexed connection a sidecar keeps to Redis (redis-rs' `ConnectionManager`,
//! which pipelines concurrent commands on one socket and reconnects in the background with
//! backoff), and the bound on every exchange: nothing waits on Redis longer than the
//! deadline it is given. Every exchange is timed and its outcome tracked, for `/readyz`,
//! `/v1/status` and `/metrics`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, RedisResult};

use super::FleetError;
use crate::observe::DurationHistogram;

/// The least time between two reconnection attempts.
const RECONNECT_MIN: Duration = Duration::from_millis(50);
/// The most time between two reconnection attempts, so a Redis that comes back is found soon.
const RECONNECT_MAX: Duration = Duration::from_secs(1);

/// The connection and what is known about it.
pub struct Link {
    client: Client,
    manager: ConnectionManager,
    up: AtomicBool,
    errors: AtomicU64,
    last_error: ArcSwapOption<String>,
    /// Round trips to Redis, for `/metrics`.
    pub round_trips: DurationHistogram,
}

impl Link {
    /// A connection to `url` (with `password` where the URL does not carry one), made on first
    /// use: a sidecar starts whether Redis is up or not.
    pub fn new(url: &str, password: Option<&str>, timeout: Duration) -> Result<Link, FleetError> {
        let mut info = url
            .into_connection_info()
            .map_err(|err| FleetError::Config(err.to_string()))?;
        if let Some(password) = password {
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = Client::open(info).map_err(|err| FleetError::Config(err.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout))
            .set_min_delay(RECONNECT_MIN)
            .set_max_delay(RECONNECT_MAX)
            .set_number_of_retries(2);
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|err| FleetError::Config(err.to_string()))?;
        Ok(Link {
            client,
            manager,
            up: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            last_error: ArcSwapOption::empty(),
            round_trips: DurationHistogram::default(),
        })
    }

    /// A handle on the multiplexed connection (cheap: one per exchange).
    pub fn connection(&self) -> ConnectionManager {
        self.manager.clone()
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
                return Ok(value);
            }
            Ok(Err(err))
                if !err.is_io_error()
                    && !err.is_timeout()
                    && !err.is_connection_dropped()
                    && !err.is_connection_refusal() =>
            {
                self.round_trips.observe(started.elapsed());
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
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.last_error
            .store(Some(std::sync::Arc::new(result.to_string())));
        Err(result)
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
