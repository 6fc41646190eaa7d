//! The control plane's own thread: it owns every piece of mutable control state (config,
//! licenses, flow settings, counters' registry, the journal) and carries out every change one
//! at a time, compiling a new snapshot off the request path and swapping it in. Store and
//! file work happens here, never on the async runtime; the runtime only sends commands and
//! awaits their replies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use rustc_hash::FxHashMap;
use serde_json::Value;
use tokio::sync::oneshot;

use super::build::{build, journal_flow_changes, read_licenses, stored_flows};
use super::error::{ControlError, Refusal};
use super::metering;
use super::settings::FlowSettings;
use super::shared::{Live, Shared};
use crate::clock::{month_index, month_index_label, Clock};
use crate::config::{Config, Durability};
use crate::license::{HostIdentity, Installed, Moment, Rejected, TrustedKeys};
use crate::meter::{MeterReport, Meters};
use crate::policy::{DisabledReason, EntitlementRefusal, FlowSetting, Resources};
use crate::store::fleet::{Fleet, FleetNotice};
use crate::store::{AuditEvent, Recorder, Store, StoreError, StoredFlow};
use crate::upstream::UpstreamCache;

/// How often the plane re-judges licenses against time (start, expiry, month, rollback).
const TICK: Duration = Duration::from_secs(1);
/// Quiet time after a license-directory event before reloading, so one copy is one reload.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// A reply the caller awaits.
pub(super) type Reply<T> = oneshot::Sender<T>;

/// Everything the control plane is asked to do.
pub(super) enum Command {
    /// The license directory changed (from the watcher).
    LicenseDirChanged,
    /// The watcher now watches this directory: until then (or when the config names another
    /// one) changes made there by hand reach the plane only through a whole re-read.
    Watching(PathBuf),
    /// Re-read the config file (SIGHUP).
    ReloadConfig(Reply<()>),
    /// Enable a flow.
    EnableFlow(String, Reply<Result<(), Refusal>>),
    /// Disable a flow.
    DisableFlow(String, Reply<Result<(), Refusal>>),
    /// Install an uploaded license file.
    UploadLicense(Bytes, Reply<Result<(String, Vec<String>), Refusal>>),
    /// Remove an installed license.
    RemoveLicense(String, Reply<Result<(), Refusal>>),
    /// A warning or limit the request path crossed.
    Meter(MeterReport),
    /// The admin status.
    Status(Reply<Value>),
    /// Records of a month.
    Usage(u32, Reply<Result<Value, StoreError>>),
    /// A page of the audit trail.
    Audit(usize, Option<u64>, Reply<Result<Value, StoreError>>),
    /// Write pending counts, the high-water mark and the journal.
    Flush(Reply<Result<(), StoreError>>),
    /// Fleet mode: what the fleet agent reports.
    Fleet(FleetNotice),
    /// Stop the thread.
    Stop,
}

/// The control state, owned by the plane's thread.
pub(super) struct Plane {
    pub(super) config_path: PathBuf,
    pub(super) shared: Arc<Shared>,
    pub(super) store: Arc<Store>,
    pub(super) config: Arc<Config>,
    /// The config start-up applied: keys read only at start keep its values until a restart.
    pub(super) started_with: Arc<Config>,
    pub(super) keys: TrustedKeys,
    pub(super) host: Arc<HostIdentity>,
    pub(super) licenses: Vec<Arc<Installed>>,
    /// Whether the trusted keys changed since `licenses` were verified: the next read of the
    /// license directory checks every signature again.
    pub(super) reverify: bool,
    pub(super) rejected: Vec<Rejected>,
    /// What is wanted of each flow, by flow id.
    pub(super) settings: FlowSettings,
    /// The settings last written to the store, with their epoch (`None` before the first write).
    pub(super) saved: Option<(u64, FxHashMap<String, FlowSetting>)>,
    pub(super) next_order: u64,
    /// Counters, kept across snapshots.
    pub(super) resources: Resources,
    /// Client pools, kept across snapshots.
    pub(super) upstreams: UpstreamCache,
    pub(super) config_error: Option<String>,
    /// Audit events not yet written.
    pub(super) journal: Vec<AuditEvent>,
    /// Whether start-up is over (licenses read later are journaled as added).
    pub(super) started: bool,
    /// The latest time seen (persisted), for clock-rollback detection.
    pub(super) high_water: DateTime<Utc>,
    /// The high-water mark last handed to the store.
    pub(super) high_water_written: DateTime<Utc>,
    /// The clock's monotonic reading when the high-water mark was last moved on.
    pub(super) high_water_running: std::time::Duration,
    /// Whether the clock is behind the high-water mark by more than `max_clock_skew`.
    pub(super) rollback: bool,
    /// The month counted in, to notice rollovers.
    pub(super) month: u32,
    /// Why the last compile refused flows for entitlements.
    pub(super) entitlement_refusals: Vec<EntitlementRefusal>,
    /// Fleet mode.
    pub(super) fleet: Option<Arc<Fleet>>,
    /// Fleet mode: the flow settings the fleet has, as far as this sidecar knows (none until
    /// it has joined).
    pub(super) published: Option<BTreeMap<String, StoredFlow>>,
    /// Fleet mode: audit events not yet in the fleet's trail.
    pub(super) fleet_journal: Vec<AuditEvent>,
    /// How many of `journal`'s events are already queued for the fleet.
    pub(super) journal_sent: usize,
    /// Applying the fleet's settings: what that changes is not journaled for the fleet again.
    pub(super) applying_fleet: bool,
    /// The license directory a watcher reports changes of, if any: an upload into it may
    /// install its own file alone, since every change made there by hand comes as a reload.
    pub(super) watched: Option<PathBuf>,
}

/// The state read from disk before the first snapshot.
struct Loaded {
    config: Arc<Config>,
    keys: TrustedKeys,
    host: Arc<HostIdentity>,
    store: Arc<Store>,
    recorder: Recorder,
    meters: Meters,
    settings: FxHashMap<String, FlowSetting>,
    next_order: u64,
    high_water: DateTime<Utc>,
    /// The clock's monotonic reading when `high_water` was read.
    high_water_running: std::time::Duration,
    month: u32,
}

impl Plane {
    /// Loads the config, its keys and host identity, opens the store, seeds the counters and
    /// the flow settings, and compiles the first snapshot.
    pub(super) fn start(
        config_path: &Path,
        clock: Arc<dyn Clock>,
        commands: Sender<Command>,
        runtime: Option<tokio::runtime::Handle>,
        lanes: usize,
    ) -> Result<Plane, ControlError> {
        let loaded = load(config_path, clock.as_ref())?;
        let placeholder = Live {
            snapshot: empty_snapshot(&loaded.config, &loaded.host, clock.now())?,
            upstreams: Arc::new([]),
        };
        let fleet = super::fleet::start(&loaded.config, clock.clone(), runtime, commands.clone())
            .map_err(ControlError::Fleet)?;
        let shared = Arc::new(Shared::new(
            placeholder,
            clock,
            loaded.recorder,
            commands,
            fleet.clone(),
        ));
        let mut plane = Plane {
            config_path: config_path.to_owned(),
            shared,
            store: loaded.store,
            started_with: loaded.config.clone(),
            config: loaded.config,
            keys: loaded.keys,
            host: loaded.host,
            licenses: Vec::new(),
            reverify: false,
            rejected: Vec::new(),
            settings: FlowSettings::new(loaded.settings),
            saved: None,
            next_order: loaded.next_order,
            resources: Resources {
                meters: loaded.meters,
                stats: Default::default(),
            },
            upstreams: UpstreamCache::new(lanes),
            config_error: None,
            journal: Vec::new(),
            started: false,
            high_water: loaded.high_water,
            high_water_written: loaded.high_water,
            high_water_running: loaded.high_water_running,
            rollback: false,
            month: loaded.month,
            entitlement_refusals: Vec::new(),
            fleet,
            published: None,
            fleet_journal: Vec::new(),
            journal_sent: 0,
            applying_fleet: false,
            watched: None,
        };
        plane.catch_up_on_time()?;
        read_licenses(&mut plane)?;
        let live = build(&mut plane, None)?;
        plane.shared.live.store(Arc::new(live));
        plane.track_fleet();
        plane.started = true;
        plane.shared.recorder.high_water(plane.high_water);
        plane.high_water_written = plane.high_water;
        plane.persist();
        Ok(plane)
    }

    /// Start-up only: the clock against the stored high-water mark, and a month that turned
    /// while the sidecar was down (a rollover too).
    fn catch_up_on_time(&mut self) -> Result<(), ControlError> {
        let now = self.shared.clock.now();
        metering::check_rollback(self, now);
        let month = self.month;
        let counted = self.store.counted_month()?;
        if let Some(counted) = counted.filter(|&counted| counted < month) {
            self.month = counted;
            metering::roll_over(self, month, now);
        }
        if counted != Some(month) {
            self.store.set_counted_month(month)?;
        }
        Ok(())
    }

    /// Runs the plane until [`Command::Stop`] (or until every sender is gone), ticking once a
    /// second and reloading licenses after the directory settles.
    pub(super) fn run(mut self, commands: Receiver<Command>) {
        let mut next_tick = Instant::now() + TICK;
        let mut reload_at: Option<Instant> = None;
        loop {
            let wake = reload_at.map_or(next_tick, |at| at.min(next_tick));
            match commands.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(Command::LicenseDirChanged) => reload_at = Some(Instant::now() + DEBOUNCE),
                Ok(command) => self.handle(command),
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            if reload_at.is_some_and(|at| now >= at) {
                reload_at = None;
                self.reload_licenses();
            }
            if now >= next_tick {
                self.tick();
                next_tick = now + TICK;
            }
        }
        self.persist();
        self.shared.recorder.stop_blocking();
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::ReloadConfig(reply) => {
                self.reload_config();
                let _ = reply.send(());
            }
            Command::EnableFlow(id, reply) => {
                let _ = reply.send(self.enable_flow(&id));
            }
            Command::DisableFlow(id, reply) => {
                let _ = reply.send(self.disable_flow(&id));
            }
            Command::UploadLicense(bytes, reply) => {
                let _ = reply.send(self.upload_license(&bytes));
            }
            Command::RemoveLicense(id, reply) => {
                let _ = reply.send(self.remove_license(&id));
            }
            Command::Meter(report) => {
                self.on_meter_event(report.event);
                if let Some(acted) = report.acted {
                    let _ = acted.send(());
                }
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Usage(month, reply) => {
                let _ = reply.send(self.usage(month));
            }
            Command::Audit(limit, before, reply) => {
                let _ = reply.send(self.audit(limit, before));
            }
            Command::Flush(reply) => {
                let _ = reply.send(self.flush());
            }
            Command::Fleet(notice) => self.on_fleet(notice),
            Command::Watching(dir) => self.watched = Some(dir),
            Command::LicenseDirChanged | Command::Stop => {}
        }
    }

    /// Re-reads the license directory and swaps in what it holds now.
    pub(super) fn reload_licenses(&mut self) {
        let reloaded = read_licenses(self).and_then(|changed| {
            if changed {
                self.rebuild()
            } else {
                tracing::debug!(
                    "the license directory holds the installed licenses; nothing to swap"
                );
                Ok(())
            }
        });
        if let Err(err) = reloaded {
            tracing::error!(error = %err, "license reload failed; the running licenses stay");
        }
    }

    /// Re-reads the license directory and swaps in a snapshot compiled from it.
    pub(super) fn reload_licenses_now(&mut self) -> Result<(), ControlError> {
        read_licenses(self)?;
        self.rebuild()
    }

    /// Writes the clock high-water mark, pending counts and the journal (shutdown).
    fn flush(&mut self) -> Result<(), StoreError> {
        let now = self.shared.clock.now();
        self.shared.recorder.high_water(self.high_water.max(now));
        self.shared.recorder.flush_blocking()?;
        self.persist();
        Ok(())
    }

    /// Compiles from the current state and swaps the result in.
    pub(super) fn rebuild(&mut self) -> Result<(), ControlError> {
        let previous = self.shared.live.load_full();
        let live = build(self, Some(&previous))?;
        self.swap(live);
        Ok(())
    }

    /// Swaps a new snapshot in, journals the flow changes and persists flow states.
    pub(super) fn swap(&mut self, live: Live) {
        let previous = self.shared.live.swap(Arc::new(live));
        let current = self.shared.live.load_full();
        journal_flow_changes(self, &previous, &current, self.shared.clock.now());
        self.track_fleet();
        self.persist();
    }

    /// Writes flow states and pending audit events (and, in fleet mode, publishes them to the
    /// fleet); a failure is logged and retried next time.
    pub(super) fn persist(&mut self) {
        if self.fleet.is_some() && !self.journal.is_empty() {
            let start = self.journal_sent.min(self.journal.len());
            if !self.applying_fleet {
                self.fleet_journal
                    .extend(self.journal[start..].iter().cloned());
            }
            self.journal_sent = self.journal.len();
        }
        // Most swaps (a license uploaded again, a recompile on time) change no flow setting.
        let unchanged = self.journal.is_empty()
            && self.saved.as_ref().is_some_and(|(epoch, saved)| {
                *epoch == self.settings.epoch() || *saved == *self.settings
            });
        if !unchanged {
            match self.store.save_flows(&stored_flows(self), &self.journal) {
                Ok(()) => {
                    self.journal.clear();
                    self.journal_sent = 0;
                    self.saved = Some((self.settings.epoch(), (*self.settings).clone()));
                }
                Err(err) => {
                    tracing::error!(error = %err, "flow states could not be stored; retrying with the next change")
                }
            }
        }
        self.publish_to_fleet();
    }

    /// The instant and rollback floor a compile is judged at.
    pub(super) fn moment(&self, now: DateTime<Utc>) -> Moment {
        let skew =
            TimeDelta::from_std(self.config.licensing.max_clock_skew).unwrap_or(TimeDelta::MAX);
        Moment {
            now,
            floor: self.high_water.checked_sub_signed(skew),
        }
    }
}

/// Reads what the first snapshot is built from: config, keys, host, store and its contents.
fn load(config_path: &Path, clock: &dyn Clock) -> Result<Loaded, ControlError> {
    let config = Arc::new(Config::load(config_path)?);
    let (keys, host) = trust(&config, config_path)?;
    let dir = &config.licensing.license_dir;
    std::fs::create_dir_all(dir)
        .map_err(|err| ControlError::io(dir, "cannot create the license directory", err))?;
    let store = Arc::new(Store::open(&config.state.dir)?);
    let now = clock.now();
    let high_water_running = clock.running();
    let tz = config
        .licensing
        .timezone
        .parse()
        .unwrap_or(chrono_tz::Tz::UTC);
    let high_water = store.high_water()?.unwrap_or(now).max(now);
    // Counting goes on in the latest month already seen: a clock set back across a month's
    // start (within max_clock_skew) must not reopen the previous month's budget and then
    // start the new one from zero again when it comes round.
    let month = month_index(high_water, tz).max(store.counted_month()?.unwrap_or(0));
    let (license_counts, flow_counts) = store.month(&month_index_label(month))?;
    let meters = Meters::seeded(
        month,
        &license_counts.into_iter().collect(),
        &flow_counts.into_iter().collect(),
        config.state.redis.is_some(),
    );
    let (settings, next_order) = stored_settings(&config, &store)?;
    let recorder = Recorder::start(
        store.clone(),
        config.state.durability == Durability::Strict,
        config.state.flush_interval,
    )?;
    Ok(Loaded {
        config,
        keys,
        host,
        store,
        recorder,
        meters,
        settings,
        next_order,
        high_water,
        high_water_running,
        month,
    })
}

/// Each flow's setting: as stored, else as the config says (enabling order = config order);
/// and the next enabling order to hand out.
fn stored_settings(
    config: &Config,
    store: &Store,
) -> Result<(FxHashMap<String, FlowSetting>, u64), ControlError> {
    let stored = store.flows()?;
    // A flow new to the config takes its turn after every flow already stored, as one added
    // by a reload does: a restart must not let it take the point of a flow already running.
    let first_new = stored.values().map(|s| s.order + 1).max().unwrap_or(0);
    let mut settings = FxHashMap::default();
    for (position, flow) in config.flows.iter().enumerate() {
        let setting = match stored.get(&flow.id) {
            Some(saved) => FlowSetting {
                enabled: saved.enabled,
                reason: DisabledReason::parse(&saved.reason).unwrap_or(DisabledReason::Operator),
                order: saved.order,
            },
            None => FlowSetting {
                enabled: flow.enabled,
                reason: DisabledReason::Operator,
                order: first_new + position as u64,
            },
        };
        settings.insert(flow.id.clone(), setting);
    }
    let next_order = settings
        .values()
        .map(|s| s.order + 1)
        .max()
        .unwrap_or(0)
        .max(config.flows.len() as u64);
    Ok((settings, next_order))
}

/// The snapshot `Shared` holds until the first real one is swapped in (before any listener
/// is bound, so no request ever sees it): the config's settings without instances or flows,
/// so it costs nothing to compile however large the configuration is.
fn empty_snapshot(
    config: &Config,
    host: &Arc<HostIdentity>,
    now: DateTime<Utc>,
) -> Result<crate::policy::Snapshot, ControlError> {
    let compiled = crate::policy::compile(
        Arc::new(config.bare()),
        &[],
        &[],
        &mut Resources::default(),
        host,
        Moment::at(now),
        None,
    )?;
    Ok(compiled.snapshot)
}

/// Loads the trusted keys and the host identity a config names; a `licensing.host` entry that
/// is not this machine's is refused, naming the config file and the entry.
pub(super) fn trust(
    config: &Config,
    config_path: &Path,
) -> Result<(TrustedKeys, Arc<HostIdentity>), ControlError> {
    let mut keys = TrustedKeys::new();
    for path in &config.licensing.public_keys {
        keys.load_pem_file(path)
            .map_err(|source| ControlError::Key {
                path: path.clone(),
                source,
            })?;
    }
    let host = HostIdentity::detect()
        .with_claims(config.licensing.host.as_deref().unwrap_or_default())
        .map_err(|source| ControlError::ForeignHost {
            config: config_path.to_owned(),
            source,
        })?;
    Ok((keys, Arc::new(host)))
}
