//! Fleet mode: several sidecars share one set of licenses through Redis. Admission takes
//! records from a block of the month's budget leased atomically in Redis ([`lease`], the
//! arithmetic in [`book`]); counts stay durable in each sidecar's embedded store and are
//! shipped to Redis idempotently; flow settings, warnings and the audit trail are the
//! fleet's ([`state`]); a background agent keeps all of it in step ([`agent`]). docs/fleet.md
//! tells the whole design.

mod agent;
pub mod book;
mod keys;
mod lease;
mod link;
mod probe;
mod scripts;
mod state;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use chrono_tz::Tz;
use serde_json::{json, Value};
use tokio::sync::Notify;

pub use lease::{Budget, Refill};
pub use probe::probe;
pub use state::{FleetFlows, Publish};

use crate::clock::Clock;
use crate::config::{redact, FleetSettings};
use crate::meter::{FlowMeter, LicenseMeter, MeterEvent};
use keys::Keys;
use link::Link;

/// A fleet exchange that did not happen as asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FleetError {
    /// The Redis URL or password is unusable.
    #[error("the Redis settings are unusable: {0}")]
    Config(String),
    /// Redis could not be reached (or the connection dropped).
    #[error("Redis is unreachable: {0}")]
    Unavailable(String),
    /// Redis did not answer in time.
    #[error("Redis did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// Redis answered with an error.
    #[error("Redis refused the exchange: {0}")]
    Redis(String),
    /// Redis answered something the scripts never return.
    #[error("Redis answered unexpectedly: {0}")]
    Protocol(String),
    /// Another running sidecar has claimed this sidecar's node name.
    #[error("node name {0:?} is in use by another running sidecar of the fleet (or by this one before a crash, until its claim expires): give every sidecar its own state.node")]
    NodeTaken(String),
    /// This sidecar has not settled its lease with the fleet since it started.
    #[error(
        "this sidecar has not joined the fleet yet (Redis has not been reachable since it started)"
    )]
    NotJoined,
    /// This sidecar's clock disagrees with Redis' by more than `licensing.max_clock_skew`.
    #[error("{0}")]
    ClockSkew(String),
}

/// What the fleet tells the control plane.
#[derive(Debug)]
pub enum FleetNotice {
    /// The fleet's flow settings (after a change by any sidecar, or on joining).
    Flows(FleetFlows),
    /// The fleet's count of a license crossed its limit or hard limit.
    Crossed(MeterEvent),
}

/// A license whose budget the fleet shares: its meter and its limits.
#[derive(Debug, Clone)]
pub struct TrackedLicense {
    /// The meter (with its lease).
    pub meter: Arc<LicenseMeter>,
    /// The monthly limit.
    pub limit: Option<u64>,
    /// The hard limit.
    pub hard: Option<u64>,
}

/// What the fleet agent keeps in step: set by the control plane after every compile.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// The licensing time zone (months begin in it).
    pub tz: Tz,
    /// The installed licenses.
    pub licenses: Vec<TrackedLicense>,
    /// The configured flows.
    pub flows: Vec<Arc<FlowMeter>>,
    /// `licensing.max_clock_skew` as the running config has it.
    pub max_skew: Duration,
}

/// One sidecar's line in a license's lease book, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLease {
    /// The node name.
    pub node: String,
    /// Records granted to it this month.
    pub held: u64,
    /// Records it counted this month.
    pub committed: u64,
    /// Heard from within `lease_ttl`.
    pub live: bool,
}

/// A license's lease book as last read, for the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookView {
    /// The month (`YYYY-MM`).
    pub month: String,
    /// Records the fleet has granted (the sum of what every sidecar holds).
    pub granted: u64,
    /// Each sidecar's line.
    pub nodes: Vec<NodeLease>,
}

/// The handle on fleet mode, shared by the control plane, the request path and the admin API.
pub struct Fleet {
    settings: FleetSettings,
    keys: Keys,
    link: Link,
    clock: Arc<dyn Clock>,
    /// Counts are durable before answers (strict): a restart returns the unused lease.
    strict: bool,
    seq: AtomicU64,
    /// This run's random id, which holds the claim of the node name.
    incarnation: String,
    /// The first settlement after start is done: leases may be granted.
    joined: AtomicBool,
    /// Why counted loads are refused for the clock, if they are.
    skew: ArcSwapOption<String>,
    tracked: ArcSwapOption<Tracked>,
    /// Each license's book as last read (written by every exchange, read by the operator
    /// view and the agent; never by admission).
    views: Mutex<BTreeMap<Arc<str>, BookView>>,
    /// Crossings already reported (license, month, hard?), so each is reported once.
    crossed: Mutex<HashSet<(Arc<str>, u32, bool)>>,
    /// The flow settings version last handed to the control plane.
    version: AtomicU64,
    /// Rung when a change is announced, so the agent re-reads the settings at once.
    changed: Notify,
    /// Rung to stop the agent.
    stop: Notify,
    stopped: AtomicBool,
    notify: Box<dyn Fn(FleetNotice) + Send + Sync>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("fleet", &self.settings.fleet)
            .field("node", &self.settings.node)
            .finish_non_exhaustive()
    }
}

/// A random id for this run of the sidecar.
fn incarnation() -> String {
    use rand_core::RngCore;
    format!("{:016x}", rand_core::OsRng.next_u64())
}

/// The least lifetime of a node-name claim: a few agent rounds, so a busy machine does not
/// lose its own name between two refreshes.
const NODE_CLAIM_MIN: Duration = Duration::from_secs(2);

impl Fleet {
    /// Claims the node name for this run (or refreshes the claim); `NodeTaken` when another
    /// running sidecar holds it.
    async fn claim_node(&self) -> Result<(), FleetError> {
        let lifetime = self.settings.lease_ttl.max(NODE_CLAIM_MIN);
        let mut invocation = scripts::CLAIM_NODE.key(self.keys.node(&self.settings.node));
        invocation
            .arg(&self.incarnation)
            .arg(u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX));
        let mut connection = self.link.connection();
        let claimed: u64 = self
            .link
            .call(
                self.control_deadline(),
                invocation.invoke_async(&mut connection),
            )
            .await?;
        if claimed == 1 {
            Ok(())
        } else {
            Err(self
                .link
                .failed(FleetError::NodeTaken(self.settings.node.clone())))
        }
    }
}

impl Fleet {
    /// Gives the node name back (shutdown, after the leases went back).
    async fn release_node(&self) -> Result<(), FleetError> {
        let mut invocation = scripts::RELEASE_NODE.key(self.keys.node(&self.settings.node));
        invocation.arg(&self.incarnation);
        let mut connection = self.link.connection();
        let _: u64 = self
            .link
            .call(
                self.control_deadline(),
                invocation.invoke_async(&mut connection),
            )
            .await?;
        Ok(())
    }
}

/// How long the control plane waits for one fleet exchange: longer than a request may, as an
/// operator's change is worth a short wait, but bounded all the same.
const CONTROL_WAIT_FACTOR: u32 = 4;

impl Fleet {
    /// Connects (lazily: Redis may be down) and starts the agent on `runtime`.
    pub fn start(
        settings: FleetSettings,
        clock: Arc<dyn Clock>,
        strict: bool,
        runtime: tokio::runtime::Handle,
        notify: Box<dyn Fn(FleetNotice) + Send + Sync>,
    ) -> Result<Arc<Fleet>, FleetError> {
        let link = {
            let _entered = runtime.enter();
            Link::new(&settings, settings.redis_timeout)?
        };
        let fleet = Arc::new(Fleet {
            keys: Keys::new(&settings.fleet),
            link,
            clock,
            strict,
            seq: AtomicU64::new(0),
            incarnation: incarnation(),
            joined: AtomicBool::new(false),
            skew: ArcSwapOption::empty(),
            tracked: ArcSwapOption::empty(),
            views: Mutex::default(),
            crossed: Mutex::new(HashSet::new()),
            version: AtomicU64::new(0),
            changed: Notify::new(),
            stop: Notify::new(),
            stopped: AtomicBool::new(false),
            notify,
            runtime: runtime.clone(),
            settings,
        });
        runtime.spawn(agent::run(fleet.clone()));
        runtime.spawn(agent::listen(fleet.clone()));
        Ok(fleet)
    }

    /// The settings fleet mode runs with.
    pub fn settings(&self) -> &FleetSettings {
        &self.settings
    }

    /// Hands the agent what to keep in step (after every compile).
    pub fn track(&self, tracked: Tracked) {
        self.tracked.store(Some(Arc::new(tracked)));
    }

    /// Whether the last exchange with Redis succeeded.
    pub fn is_connected(&self) -> bool {
        self.link.is_up()
    }

    /// Whether this sidecar may serve: connected, joined and its clock in step with Redis'.
    pub fn is_ready(&self) -> bool {
        self.is_connected() && self.joined.load(Ordering::Acquire) && self.skew.load().is_none()
    }

    /// Why counted loads are refused for the clock, if they are.
    pub fn clock_skew(&self) -> Option<String> {
        self.skew.load_full().map(|why| (*why).clone())
    }

    /// Fleet mode's part of `/v1/status`.
    pub fn status(&self) -> Value {
        json!({
            "redis": redact(&self.settings.url),
            "fleet": self.settings.fleet,
            "node": self.settings.node,
            "connected": self.is_connected(),
            "joined": self.joined.load(Ordering::Acquire),
            "clock_skew": self.clock_skew(),
            "version": self.version.load(Ordering::Acquire),
            "lease_max": self.settings.lease_max,
            "lease_ttl_ms": u64::try_from(self.settings.lease_ttl.as_millis()).unwrap_or(u64::MAX),
            "redis_timeout_ms": u64::try_from(self.settings.redis_timeout.as_millis()).unwrap_or(u64::MAX),
            "errors": self.link.errors(),
            "last_error": self.link.last_error(),
        })
    }

    /// A license's lease as `/v1/licenses` shows it: this sidecar's share and every node's.
    pub fn lease_view(&self, meter: &LicenseMeter, month: u32) -> Value {
        let lease = meter.lease();
        let views = self.views();
        let view = views
            .get(&meter.id)
            .filter(|view| view.month == crate::clock::month_index_label(month));
        let nodes: Vec<Value> = view
            .map(|view| {
                view.nodes
                    .iter()
                    .map(|n| json!({"node": n.node, "held": n.held, "committed": n.committed, "live": n.live}))
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "node": self.settings.node,
            "available": lease.map_or(0, |lease| lease.available(month)),
            "held": lease.map_or(0, |lease| lease.held(month)),
            "granted": view.map_or(0, |view| view.granted),
            "nodes": nodes,
        })
    }

    /// The books as last read.
    fn views(&self) -> std::sync::MutexGuard<'_, BTreeMap<Arc<str>, BookView>> {
        self.views
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Round trips to Redis: `(sum in seconds, count, buckets)`.
    pub fn round_trips(&self) -> (f64, u64, Vec<(f64, u64)>) {
        self.link.round_trips.snapshot()
    }

    /// Failed exchanges since start.
    pub fn errors(&self) -> u64 {
        self.link.errors()
    }

    /// The next sequence number: above every earlier one, also across restarts (it starts
    /// from the clock, in thousandths of a millisecond, which stays exact in Lua's doubles).
    fn next_seq(&self) -> u64 {
        let floor = u64::try_from(self.clock.now().timestamp_millis()).unwrap_or(0) * 1000;
        let mut current = self.seq.load(Ordering::Acquire);
        loop {
            let next = (current + 1).max(floor);
            match self
                .seq
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return next,
                Err(actual) => current = actual,
            }
        }
    }

    /// Moves the sequence past what Redis last saw from this node (after a stale answer).
    fn skip_seq_past(&self, last: u64) {
        self.seq.fetch_max(last, Ordering::AcqRel);
    }

    /// The deadline of an exchange the control plane or the agent waits for.
    fn control_deadline(&self) -> Instant {
        Instant::now() + self.settings.redis_timeout * CONTROL_WAIT_FACTOR
    }

    /// Runs an exchange from the control plane's thread (not a runtime thread), bounded.
    fn block_on<T>(
        &self,
        exchange: impl Future<Output = Result<T, FleetError>>,
    ) -> Result<T, FleetError> {
        self.runtime.block_on(exchange)
    }

    /// Asks the agent to stop (shutdown, after [`Fleet::leave`]).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.stop.notify_waiters();
        self.changed.notify_waiters();
    }
}
