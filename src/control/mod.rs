//! The control plane: every change (start-up, license directory, SIGHUP, admin API, time
//! passing a license boundary or a month, a license reaching its records limit) compiles a
//! new snapshot off the hot path and swaps it in, and persists flow states and the audit
//! trail. Changes are serialised by one async mutex; requests never touch it.

mod build;
mod metering;
mod reports;
mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::sync::Mutex;

pub use metering::spawn_meter_listener;
pub use watch::{spawn_boundary_ticker, spawn_license_watcher};

use crate::clock::{month_index, Clock};
use crate::config::{Config, Durability};
use crate::license::{HostIdentity, Installed, LicenseFile, Rejected, TrustedKeys};
use crate::meter::{MeterReport, Meters};
use crate::policy::{
    DisabledReason, EntitlementRefusal, FlowSetting, FlowState, Moment, Resources, Snapshot,
};
use crate::proxy::{Shared, UpstreamCache};
use crate::store::{AuditEvent, Recorder, Store};
use build::{build, journal_flow_changes, read_licenses, stored_flows};

/// Why an admin change was refused; maps onto a problem answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No flow or license with that id (404).
    NotFound(String),
    /// The change conflicts with licensing (409 with this problem code and reason).
    Conflict {
        /// Problem code: `points-exhausted`, `license-invalid`, …
        code: &'static str,
        /// The `reason` field, where the code has one.
        reason: Option<&'static str>,
        /// One sentence for `detail`.
        detail: String,
        /// Further problem members (the entitlement, its environment, numbers).
        fields: serde_json::Map<String, Value>,
    },
    /// The input is bad (400), e.g. a license file that does not verify.
    BadInput(String),
    /// Tollgate could not carry the change out (500), e.g. the license directory is not writable.
    Failed(String),
}

/// Mutable state behind the control mutex.
struct State {
    config: Arc<Config>,
    /// The config start-up applied: keys read only at start keep its values until a restart.
    started_with: Arc<Config>,
    keys: TrustedKeys,
    host: Arc<HostIdentity>,
    licenses: Vec<Arc<Installed>>,
    rejected: Vec<Rejected>,
    /// What is wanted of each flow, by flow id.
    settings: HashMap<String, FlowSetting>,
    next_order: u64,
    /// Upstream pools and counters, kept across snapshots.
    resources: Resources,
    config_error: Option<String>,
    /// Audit events not yet written.
    journal: Vec<AuditEvent>,
    /// Whether start-up is over (licenses read later are journaled as added).
    started: bool,
    /// The latest time seen (persisted), for clock-rollback detection.
    high_water: DateTime<Utc>,
    /// The high-water mark last handed to the store.
    high_water_written: DateTime<Utc>,
    /// Whether the clock is behind the high-water mark by more than `max_clock_skew`.
    rollback: bool,
    /// The month counted in, to notice rollovers.
    month: u32,
    /// Why the last compile refused flows for entitlements.
    entitlement_refusals: Vec<EntitlementRefusal>,
}

/// Owns the current snapshot and every way of changing it.
pub struct Control {
    config_path: PathBuf,
    shared: Arc<Shared>,
    store: Arc<Store>,
    state: Mutex<State>,
    ready: AtomicBool,
}

impl Control {
    /// Opens the store, loads the config, licenses and stored flow states, and compiles the
    /// first snapshot. The receiver carries warnings and limits from the request path.
    pub fn start(
        config_path: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<(Arc<Control>, UnboundedReceiver<MeterReport>), String> {
        let config = Arc::new(Config::load(config_path).map_err(|err| err.to_string())?);
        let (keys, host) = trust(&config, config_path)?;
        let dir = &config.licensing.license_dir;
        std::fs::create_dir_all(dir).map_err(|err| {
            format!(
                "{}: cannot create the license directory: {err}",
                dir.display()
            )
        })?;
        let store = Arc::new(Store::open(&config.state.dir).map_err(|err| err.to_string())?);
        let now = clock.now();
        let tz = config
            .licensing
            .timezone
            .parse()
            .unwrap_or(chrono_tz::Tz::UTC);
        let month = month_index(now, tz);
        let label = crate::clock::month_index_label(month);
        let (license_counts, flow_counts) = store.month(&label).map_err(|err| err.to_string())?;
        let meters = Meters::seeded(
            month,
            &license_counts.into_iter().collect(),
            &flow_counts.into_iter().collect(),
        );
        let stored = store.flows().map_err(|err| err.to_string())?;
        let mut settings = HashMap::new();
        for (order, flow) in config.flows.iter().enumerate() {
            let setting = match stored.get(&flow.id) {
                Some(saved) => FlowSetting {
                    enabled: saved.enabled,
                    reason: DisabledReason::parse(&saved.reason)
                        .unwrap_or(DisabledReason::Operator),
                    order: saved.order,
                },
                None => FlowSetting {
                    enabled: flow.enabled,
                    reason: DisabledReason::Operator,
                    order: order as u64,
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
        let high_water = store
            .high_water()
            .map_err(|err| err.to_string())?
            .unwrap_or(now)
            .max(now);
        let recorder = Recorder::start(
            store.clone(),
            config.state.durability == Durability::Strict,
            config.state.flush_interval,
        )
        .map_err(|err| err.to_string())?;
        let mut state = State {
            next_order,
            started_with: config.clone(),
            config,
            keys,
            host,
            licenses: Vec::new(),
            rejected: Vec::new(),
            settings,
            resources: Resources {
                stats: Default::default(),
                upstreams: UpstreamCache::new(),
                meters,
            },
            config_error: None,
            journal: Vec::new(),
            started: false,
            high_water,
            high_water_written: high_water,
            rollback: false,
            month,
            entitlement_refusals: Vec::new(),
        };
        metering::check_rollback(&mut state, now);
        // A month that turned while the sidecar was down is a rollover too.
        let counted = store.counted_month().map_err(|err| err.to_string())?;
        if let Some(counted) = counted.filter(|&counted| counted < month) {
            state.month = counted;
            metering::roll_over(&mut state, month, now);
        }
        if counted != Some(month) {
            store
                .set_counted_month(month)
                .map_err(|err| err.to_string())?;
        }
        read_licenses(&mut state, clock.as_ref())?;
        let at = moment(&state, now);
        let snapshot = build(&mut state, at, None)?;
        state.started = true;
        recorder.high_water(state.high_water);
        state.high_water_written = state.high_water;
        let (events, receiver) = unbounded_channel();
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            clock,
            recorder,
            events,
            upstream_durations: Default::default(),
            exchanges: tokio_util::task::TaskTracker::new(),
        });
        let control = Arc::new(Control {
            config_path: config_path.to_owned(),
            shared,
            store,
            state: Mutex::new(state),
            ready: AtomicBool::new(false),
        });
        {
            let mut state = control
                .state
                .try_lock()
                .map_err(|_| "control state is busy at start-up".to_owned())?;
            control.persist(&mut state);
        }
        Ok((control, receiver))
    }

    /// What the request path shares.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// Marks the sidecar ready (listeners bound); `/readyz` answers 200 from then on.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether `/readyz` should answer 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Re-reads the license directory and swaps in what it holds now.
    pub async fn reload_licenses(&self) {
        let mut state = self.state.lock().await;
        if let Err(err) = self.reload_licenses_locked(&mut state) {
            tracing::error!(error = %err, "license reload failed; the running licenses stay");
        }
    }

    fn reload_licenses_locked(&self, state: &mut State) -> Result<(), String> {
        read_licenses(state, self.shared.clock.as_ref())?;
        self.rebuild(state)
    }

    /// Re-reads the config file (SIGHUP); a bad one is reported and the running one stays.
    pub async fn reload_config(&self) {
        let mut state = self.state.lock().await;
        let loaded = Config::load(&self.config_path)
            .map_err(|err| err.to_string())
            .and_then(|config| {
                let (keys, host) = trust(&config, &self.config_path)?;
                Ok((config, keys, host))
            });
        let (config, keys, host) = match loaded {
            Ok(loaded) => loaded,
            Err(err) => {
                tracing::error!(error = %err, "configuration reload refused; the running configuration stays");
                state.config_error = Some(err);
                return;
            }
        };
        if config.licensing.license_dir != state.config.licensing.license_dir {
            tracing::warn!("the new license_dir is read now, but the directory watch follows it only after a restart");
        }
        let previous = std::mem::replace(&mut state.config, Arc::new(config));
        let (previous_keys, previous_host) = (
            std::mem::replace(&mut state.keys, keys),
            std::mem::replace(&mut state.host, host),
        );
        let config = state.config.clone();
        for (order, flow) in config.flows.iter().enumerate() {
            if !state.settings.contains_key(&flow.id) {
                let order = state.next_order + order as u64;
                state.settings.insert(
                    flow.id.clone(),
                    FlowSetting {
                        enabled: flow.enabled,
                        reason: DisabledReason::Operator,
                        order,
                    },
                );
            }
        }
        state.next_order += state.config.flows.len() as u64;
        // Flows taken out of the config are forgotten (and dropped from the store).
        let previous_settings = state.settings.clone();
        state.settings.retain(|id, _| config.flow(id).is_some());
        match self.reload_licenses_locked(&mut state) {
            Ok(()) => {
                state.config_error = None;
                tracing::info!(file = %self.config_path.display(), "configuration reloaded");
                for key in restart_required(&state.started_with, &state.config) {
                    tracing::warn!(key, "{key} changed: the new value takes effect only on restart; the running one stays");
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "configuration reload refused; the running configuration stays");
                state.config = previous;
                state.keys = previous_keys;
                state.host = previous_host;
                state.settings = previous_settings;
                state.config_error = Some(err);
            }
        }
    }

    /// Enables a flow: refused when its pair cannot get a point or no valid license covers it.
    pub async fn enable_flow(&self, id: &str) -> Result<(), Refusal> {
        let mut state = self.state.lock().await;
        let previous = *state
            .settings
            .get(id)
            .ok_or_else(|| Refusal::NotFound(format!("flow {id:?} is not configured")))?;
        if previous.enabled {
            return Ok(());
        }
        let saved = state.settings.clone();
        let order = state.next_order;
        state.next_order += 1;
        state.settings.insert(
            id.to_owned(),
            FlowSetting {
                enabled: true,
                reason: DisabledReason::Operator,
                order,
            },
        );
        let now = self.shared.clock.now();
        let at = moment(&state, now);
        let candidate = build(&mut state, at, Some(&self.snapshot())).map_err(Refusal::Failed);
        let refusal = match &candidate {
            Ok(snapshot) => {
                let index = snapshot.flow(id).map(|i| i as usize);
                match index.map(|i| snapshot.flows[i].state) {
                    Some(FlowState::Disabled(DisabledReason::PointsExhausted)) => {
                        Some(Refusal::Conflict {
                            code: "points-exhausted",
                            reason: None,
                            detail: format!(
                                "no license covering the pair of flow {id:?} has a free point"
                            ),
                            fields: serde_json::Map::new(),
                        })
                    }
                    Some(FlowState::Unlicensed(reason)) => Some(Refusal::Conflict {
                        code: "license-invalid",
                        reason: Some(reason),
                        detail: format!("no valid license covers flow {id:?} ({reason})"),
                        fields: serde_json::Map::new(),
                    }),
                    Some(FlowState::Disabled(DisabledReason::EntitlementExceeded)) => state
                        .entitlement_refusals
                        .iter()
                        .find(|refusal| snapshot.flows[refusal.flow as usize].id.as_ref() == id)
                        .map(|refusal| entitlement_conflict(id, refusal)),
                    Some(FlowState::Active { .. }) => index
                        .and_then(|i| snapshot.flows[i].budget)
                        .map(|l| &snapshot.licenses[l as usize])
                        .and_then(|license| {
                            let used = license.meter.committed(month_index(now, snapshot.tz));
                            license.hard_limit.filter(|&hard| used >= hard).map(|hard| Refusal::Conflict {
                                code: "records-limit-exceeded",
                                reason: Some("records-limit"),
                                detail: format!(
                                    "license {} has transferred {used} of its {hard} records this month; flow {id:?} can run again after the reset",
                                    license.id()
                                ),
                                fields: serde_json::Map::new(),
                            })
                        }),
                    _ => None,
                }
            }
            Err(refusal) => Some(refusal.clone()),
        };
        if let Some(refusal) = refusal {
            // Nothing else changes, and the flow stays disabled with the refusal's reason.
            state.settings = saved;
            state.next_order -= 1;
            let reason = match &refusal {
                Refusal::Conflict {
                    code: "points-exhausted",
                    ..
                } => Some(DisabledReason::PointsExhausted),
                Refusal::Conflict {
                    code: "entitlement-exceeded",
                    ..
                } => Some(DisabledReason::EntitlementExceeded),
                Refusal::Conflict {
                    code: "records-limit-exceeded",
                    ..
                } => Some(DisabledReason::RecordsLimit),
                _ => None,
            };
            if let (Some(reason), Some(setting)) = (reason, state.settings.get_mut(id)) {
                if setting.reason != reason {
                    setting.reason = reason;
                    self.rebuild(&mut state).map_err(Refusal::Failed)?;
                }
            }
            return Err(refusal);
        }
        if let Ok(snapshot) = candidate {
            self.swap(&mut state, snapshot);
        }
        tracing::info!(flow = id, "flow enabled by the operator");
        Ok(())
    }

    /// Disables a flow (operator); its pair's point is released with its last enabled flow.
    pub async fn disable_flow(&self, id: &str) -> Result<(), Refusal> {
        let mut state = self.state.lock().await;
        let setting = state
            .settings
            .get_mut(id)
            .ok_or_else(|| Refusal::NotFound(format!("flow {id:?} is not configured")))?;
        if !setting.enabled && setting.reason == DisabledReason::Operator {
            return Ok(());
        }
        setting.enabled = false;
        setting.reason = DisabledReason::Operator;
        self.rebuild(&mut state).map_err(Refusal::Failed)?;
        tracing::info!(flow = id, "flow disabled by the operator");
        Ok(())
    }

    /// Verifies a license file and installs it atomically as `<license_dir>/<id>.lic`,
    /// replacing any installed license with the same id. Returns the license id and the flows
    /// it disabled (a downgraded subscription disables the most recently enabled first).
    pub async fn upload_license(&self, bytes: &[u8]) -> Result<(String, Vec<String>), Refusal> {
        let mut state = self.state.lock().await;
        let file = LicenseFile::parse(bytes).map_err(|err| Refusal::BadInput(err.to_string()))?;
        file.verify(&state.keys)
            .map_err(|err| Refusal::BadInput(err.to_string()))?;
        let id = file.payload.common.id.clone();
        let dir = state.config.licensing.license_dir.clone();
        let target = dir.join(format!("{id}.lic"));
        write_atomically(&dir, &target, bytes).map_err(Refusal::Failed)?;
        for old in state
            .licenses
            .iter()
            .filter(|l| l.file.payload.common.id == id && l.path != target)
        {
            if let Err(err) = std::fs::remove_file(&old.path) {
                tracing::warn!(file = %old.path.display(), error = %err, "cannot remove the replaced license file");
            }
        }
        let before = self.snapshot();
        self.reload_licenses_locked(&mut state)
            .map_err(Refusal::Failed)?;
        tracing::info!(license = %id, file = %target.display(), "license installed");
        let after = self.snapshot();
        let disabled: Vec<String> = after
            .flows
            .iter()
            .filter(|flow| matches!(flow.state, FlowState::Disabled(_)))
            .filter(|flow| {
                before.flow(&flow.id).is_some_and(|i| {
                    !matches!(before.flows[i as usize].state, FlowState::Disabled(_))
                })
            })
            .map(|flow| flow.id.to_string())
            .collect();
        if !disabled.is_empty() {
            tracing::warn!(license = %id, flows = ?disabled, "the new license disabled flows that no longer fit");
        }
        Ok((id, disabled))
    }

    /// Removes an installed license's file(s); flows holding its points are disabled (`license-removed`).
    pub async fn remove_license(&self, id: &str) -> Result<(), Refusal> {
        let mut state = self.state.lock().await;
        let paths: Vec<PathBuf> = state
            .licenses
            .iter()
            .filter(|l| l.file.payload.common.id == id)
            .map(|l| l.path.clone())
            .collect();
        if paths.is_empty() {
            return Err(Refusal::NotFound(format!(
                "license {id:?} is not installed"
            )));
        }
        for path in &paths {
            std::fs::remove_file(path).map_err(|err| {
                Refusal::Failed(format!("{}: cannot remove: {err}", path.display()))
            })?;
        }
        self.reload_licenses_locked(&mut state)
            .map_err(Refusal::Failed)?;
        tracing::info!(license = id, "license removed");
        Ok(())
    }

    /// Writes pending counts, the clock high-water mark and the journal (on shutdown).
    pub async fn flush(&self) -> Result<(), String> {
        let now = self.shared.clock.now();
        self.shared.recorder.high_water(now);
        self.shared
            .recorder
            .flush()
            .await
            .map_err(|err| err.to_string())?;
        let mut state = self.state.lock().await;
        self.persist(&mut state);
        Ok(())
    }

    /// Compiles from the current state and swaps the result in.
    fn rebuild(&self, state: &mut State) -> Result<(), String> {
        let now = self.shared.clock.now();
        let at = moment(state, now);
        let snapshot = build(state, at, Some(&self.snapshot()))?;
        self.swap(state, snapshot);
        Ok(())
    }

    /// Swaps a new snapshot in, journals the flow changes and persists flow states.
    fn swap(&self, state: &mut State, snapshot: Snapshot) {
        let previous = self.shared.snapshot.swap(Arc::new(snapshot));
        let current = self.snapshot();
        journal_flow_changes(state, &previous, &current, self.shared.clock.now());
        self.persist(state);
    }

    /// Writes flow states and pending audit events; a failure is logged and retried next time.
    fn persist(&self, state: &mut State) {
        match self.store.save_flows(&stored_flows(state), &state.journal) {
            Ok(()) => state.journal.clear(),
            Err(err) => {
                tracing::error!(error = %err, "flow states could not be stored; retrying with the next change")
            }
        }
    }
}

/// The 409 answer to enabling a flow its environment's entitlements cannot fit.
fn entitlement_conflict(id: &str, refusal: &EntitlementRefusal) -> Refusal {
    let mut fields = serde_json::Map::new();
    fields.insert("flow".into(), id.into());
    fields.insert("entitlement".into(), refusal.entitlement.into());
    fields.insert("environment".into(), refusal.environment.as_str().into());
    fields.insert("in_use".into(), refusal.in_use.into());
    fields.insert("limit".into(), refusal.limit.into());
    fields.insert("would_be".into(), refusal.would_be.into());
    Refusal::Conflict {
        code: "entitlement-exceeded",
        reason: Some("entitlement-exceeded"),
        detail: format!(
            "enabling flow {id:?} would make {} {} in {} (limit {}, in use {})",
            refusal.would_be,
            refusal.entitlement.replace('_', " "),
            refusal.environment,
            refusal.limit,
            refusal.in_use
        ),
        fields,
    }
}

/// The instant and rollback floor a compile is judged at.
fn moment(state: &State, now: DateTime<Utc>) -> Moment {
    let skew = TimeDelta::from_std(state.config.licensing.max_clock_skew).unwrap_or(TimeDelta::MAX);
    Moment {
        now,
        floor: state.high_water.checked_sub_signed(skew),
    }
}

/// The keys read only at start-up whose value in `config` differs from the one `started`
/// applied: listeners and their connection settings, TLS, the admin token and the store.
fn restart_required(started: &Config, config: &Config) -> Vec<&'static str> {
    let tls = |c: &Config| {
        c.server
            .tls
            .as_ref()
            .map(|t| (t.cert.clone(), t.key.clone()))
    };
    let dedicated = |c: &Config| -> Vec<_> {
        c.instances
            .iter()
            .map(|i| (i.id.clone(), i.listen, i.flow.clone()))
            .filter(|(_, listen, _)| listen.is_some())
            .collect()
    };
    [
        (
            "server.listen",
            started.server.listen != config.server.listen,
        ),
        ("server.tls", tls(started) != tls(config)),
        (
            "server.header_read_timeout",
            started.server.header_read_timeout != config.server.header_read_timeout,
        ),
        (
            "server.max_connections",
            started.server.max_connections != config.server.max_connections,
        ),
        (
            "instances[].listen",
            dedicated(started) != dedicated(config),
        ),
        ("admin.listen", started.admin.listen != config.admin.listen),
        (
            "admin.token_file",
            started.admin.token_file != config.admin.token_file,
        ),
        ("state.dir", started.state.dir != config.state.dir),
        (
            "state.durability",
            started.state.durability != config.state.durability,
        ),
        (
            "state.flush_interval",
            started.state.flush_interval != config.state.flush_interval,
        ),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// Loads the trusted keys and the host identity a config names; a `licensing.host` entry that
/// is not this machine's is refused, naming the config file and the entry.
fn trust(config: &Config, config_path: &Path) -> Result<(TrustedKeys, Arc<HostIdentity>), String> {
    let mut keys = TrustedKeys::new();
    for path in &config.licensing.public_keys {
        keys.load_pem_file(path)
            .map_err(|err| format!("{}: {err}", path.display()))?;
    }
    let host = HostIdentity::detect()
        .with_claims(config.licensing.host.as_deref().unwrap_or_default())
        .map_err(|err| {
            format!(
                "{}: licensing.host[{}]: {err}",
                config_path.display(),
                err.index
            )
        })?;
    Ok((keys, Arc::new(host)))
}

/// Writes `bytes` to `target` through a temporary file in `dir` and a rename.
fn write_atomically(dir: &Path, target: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let temp = dir.join(format!(".upload-{}.tmp", std::process::id()));
    let result = std::fs::File::create(&temp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, target));
    if let Err(err) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(format!(
            "{}: cannot write the license: {err}",
            target.display()
        ));
    }
    Ok(())
}
