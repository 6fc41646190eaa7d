//! The control plane: every change (start-up, license directory, SIGHUP, admin API, time
//! passing a license boundary) compiles a new snapshot off the hot path and swaps it in.
//! Changes are serialised by one async mutex; requests never touch it.

mod watch;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::{json, Value};
use tokio::sync::Mutex;

pub use watch::{spawn_boundary_ticker, spawn_license_watcher};

use crate::clock::Clock;
use crate::config::Config;
use crate::license::{self, HostIdentity, Installed, LicenseFile, Rejected, TrustedKeys};
use crate::policy::{compile, DisabledReason, FlowSetting, FlowState, Snapshot};
use crate::proxy::{Shared, UpstreamCache};

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
    },
    /// The input is bad (400), e.g. a license file that does not verify.
    BadInput(String),
    /// Tollgate could not carry the change out (500), e.g. the license directory is not writable.
    Failed(String),
}

/// Mutable state behind the control mutex.
struct State {
    config: Arc<Config>,
    keys: TrustedKeys,
    host: HostIdentity,
    licenses: Vec<Arc<Installed>>,
    rejected: Vec<Rejected>,
    /// What is wanted of each flow, by flow id.
    settings: HashMap<String, FlowSetting>,
    next_order: u64,
    upstreams: UpstreamCache,
    config_error: Option<String>,
}

/// Owns the current snapshot and every way of changing it.
pub struct Control {
    config_path: PathBuf,
    shared: Arc<Shared>,
    state: Mutex<State>,
    ready: AtomicBool,
}

impl Control {
    /// Loads the config and licenses and compiles the first snapshot.
    pub fn start(config_path: &Path, clock: Arc<dyn Clock>) -> Result<Arc<Control>, String> {
        let config = Arc::new(Config::load(config_path).map_err(|err| err.to_string())?);
        let (keys, host) = trust(&config)?;
        let dir = &config.licensing.license_dir;
        std::fs::create_dir_all(dir).map_err(|err| {
            format!(
                "{}: cannot create the license directory: {err}",
                dir.display()
            )
        })?;
        let settings = config
            .flows
            .iter()
            .enumerate()
            .map(|(order, flow)| {
                (
                    flow.id.clone(),
                    FlowSetting {
                        enabled: flow.enabled,
                        reason: DisabledReason::Operator,
                        order: order as u64,
                    },
                )
            })
            .collect();
        let mut state = State {
            next_order: config.flows.len() as u64,
            config,
            keys,
            host,
            licenses: Vec::new(),
            rejected: Vec::new(),
            settings,
            upstreams: UpstreamCache::new(),
            config_error: None,
        };
        read_licenses(&mut state, clock.as_ref())?;
        let snapshot = build(&mut state, clock.as_ref(), None)?;
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            clock,
        });
        Ok(Arc::new(Control {
            config_path: config_path.to_owned(),
            shared,
            state: Mutex::new(state),
            ready: AtomicBool::new(false),
        }))
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
        let clock = self.shared.clock.as_ref();
        read_licenses(state, clock)?;
        self.rebuild(state)
    }

    /// Re-reads the config file (SIGHUP); a bad one is reported and the running one stays.
    pub async fn reload_config(&self) {
        let mut state = self.state.lock().await;
        let loaded = Config::load(&self.config_path)
            .map_err(|err| err.to_string())
            .and_then(|config| {
                let (keys, host) = trust(&config)?;
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
        if config.server.listen != state.config.server.listen
            || config.admin.listen != state.config.admin.listen
        {
            tracing::warn!("listen addresses change only on restart");
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
        match self.reload_licenses_locked(&mut state) {
            Ok(()) => {
                state.config_error = None;
                tracing::info!(file = %self.config_path.display(), "configuration reloaded");
            }
            Err(err) => {
                tracing::error!(error = %err, "configuration reload refused; the running configuration stays");
                state.config = previous;
                state.keys = previous_keys;
                state.host = previous_host;
                state.config_error = Some(err);
            }
        }
    }

    /// Recompiles if time has moved a license across its start or expiry since the last build.
    pub async fn reevaluate(&self) {
        let now = self.shared.clock.now();
        if self.snapshot().is_stale(now) {
            let mut state = self.state.lock().await;
            if let Err(err) = self.rebuild(&mut state) {
                tracing::error!(error = %err, "re-evaluating licenses failed");
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
        let clock = self.shared.clock.as_ref();
        let candidate = build(&mut state, clock, Some(&self.snapshot())).map_err(Refusal::Failed);
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
                        })
                    }
                    Some(FlowState::Unlicensed(reason)) => Some(Refusal::Conflict {
                        code: "license-invalid",
                        reason: Some(reason),
                        detail: format!("no valid license covers flow {id:?} ({reason})"),
                    }),
                    _ => None,
                }
            }
            Err(refusal) => Some(refusal.clone()),
        };
        if let Some(refusal) = refusal {
            state.settings.insert(id.to_owned(), previous);
            state.next_order -= 1;
            return Err(refusal);
        }
        if let Ok(snapshot) = candidate {
            self.swap(snapshot);
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
    /// replacing any installed license with the same id. Returns the license id.
    pub async fn upload_license(&self, bytes: &[u8]) -> Result<String, Refusal> {
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
        self.reload_licenses_locked(&mut state)
            .map_err(Refusal::Failed)?;
        tracing::info!(license = %id, file = %target.display(), "license installed");
        Ok(id)
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

    /// The admin status: generation, rejected license files, the last config error.
    pub async fn status(&self) -> Value {
        let state = self.state.lock().await;
        let rejected: Vec<Value> = state
            .rejected
            .iter()
            .map(|r| json!({"path": r.path.display().to_string(), "reason": r.reason.to_string()}))
            .collect();
        json!({
            "generation": self.snapshot().generation,
            "config": self.config_path.display().to_string(),
            "config_error": state.config_error,
            "rejected": rejected,
            "host": state.host.entries(),
            "trusted_keys": state.keys.len(),
        })
    }

    /// Compiles from the current state and swaps the result in.
    fn rebuild(&self, state: &mut State) -> Result<(), String> {
        let snapshot = build(state, self.shared.clock.as_ref(), Some(&self.snapshot()))?;
        self.swap(snapshot);
        Ok(())
    }

    fn swap(&self, snapshot: Snapshot) {
        let previous = self.shared.snapshot.swap(Arc::new(snapshot));
        let current = self.snapshot();
        log_flow_changes(&previous, &current);
    }
}

/// Loads the trusted keys and the host identity a config names.
fn trust(config: &Config) -> Result<(TrustedKeys, HostIdentity), String> {
    let mut keys = TrustedKeys::new();
    for path in &config.licensing.public_keys {
        keys.load_pem_file(path)
            .map_err(|err| format!("{}: {err}", path.display()))?;
    }
    let host = match &config.licensing.host {
        Some(entries) => HostIdentity::from_entries(entries),
        None => HostIdentity::detect(),
    };
    Ok((keys, host))
}

/// Reads the license directory into the state, logging files that are refused.
fn read_licenses(state: &mut State, clock: &dyn Clock) -> Result<(), String> {
    let dir = &state.config.licensing.license_dir;
    let listing = license::read_dir(dir, &state.keys, &state.host, clock.now()).map_err(|err| {
        format!(
            "{}: cannot read the license directory: {err}",
            dir.display()
        )
    })?;
    for rejected in &listing.rejected {
        let known = state.rejected.iter().any(|r| {
            r.path == rejected.path && r.reason.to_string() == rejected.reason.to_string()
        });
        if !known {
            tracing::error!(file = %rejected.path.display(), reason = %rejected.reason, "license file refused");
        }
    }
    state.licenses = listing.installed.into_iter().map(Arc::new).collect();
    state.rejected = listing.rejected;
    Ok(())
}

/// Compiles a snapshot from the state; flows that lost their license or a point are disabled
/// for good (until the operator enables them again), as SPEC §1.1 says.
fn build(
    state: &mut State,
    clock: &dyn Clock,
    previous: Option<&Snapshot>,
) -> Result<Snapshot, String> {
    if let Some(previous) = previous {
        let ids: HashSet<&str> = state
            .licenses
            .iter()
            .map(|l| l.file.payload.common.id.as_str())
            .collect();
        for flow in &previous.flows {
            if let FlowState::Active {
                license: Some(index),
            } = flow.state
            {
                let license = previous.licenses[index as usize].id();
                if !ids.contains(license) {
                    if let Some(setting) = state.settings.get_mut(&*flow.id) {
                        setting.enabled = false;
                        setting.reason = DisabledReason::LicenseRemoved;
                        tracing::warn!(flow = %flow.id, license, "flow disabled: its license was removed");
                    }
                }
            }
        }
    }
    let settings: Vec<FlowSetting> = state
        .config
        .flows
        .iter()
        .map(|flow| {
            state
                .settings
                .get(&flow.id)
                .copied()
                .unwrap_or(FlowSetting {
                    enabled: false,
                    reason: DisabledReason::Operator,
                    order: u64::MAX,
                })
        })
        .collect();
    let compiled = compile(
        state.config.clone(),
        &state.licenses,
        &settings,
        &mut state.upstreams,
        clock.now(),
        previous,
    )?;
    for &index in &compiled.exhausted {
        let flow = &state.config.flows[index as usize];
        if let Some(setting) = state.settings.get_mut(&flow.id) {
            setting.enabled = false;
            setting.reason = DisabledReason::PointsExhausted;
        }
    }
    Ok(compiled.snapshot)
}

/// One log line per flow whose state changed between two snapshots.
fn log_flow_changes(previous: &Snapshot, current: &Snapshot) {
    for flow in &current.flows {
        let before = previous
            .flow(&flow.id)
            .map(|i| previous.flows[i as usize].state);
        let describe = |state: FlowState, snapshot: &Snapshot| match state {
            FlowState::Active {
                license: Some(index),
            } => format!(
                "enabled (license {})",
                snapshot.licenses[index as usize].id()
            ),
            FlowState::Active { license: None } => "enabled".to_owned(),
            FlowState::Unlicensed(reason) => format!("enabled, no valid license ({reason})"),
            FlowState::Disabled(reason) => format!("disabled ({})", reason.as_str()),
        };
        let now = describe(flow.state, current);
        let was = before.map(|state| describe(state, previous));
        if was.as_deref() != Some(now.as_str()) {
            tracing::info!(flow = %flow.id, state = %now, was = was.as_deref().unwrap_or("new"), "flow state changed");
        }
    }
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
