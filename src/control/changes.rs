//! The changes an operator makes: reloading the config, enabling and disabling flows,
//! installing and removing licenses. Each compiles a candidate snapshot and swaps it in, or
//! refuses with a typed [`Refusal`] and changes nothing else.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Map;

use super::build::{install_uploaded, read_licenses, state_before};
use super::error::{ControlError, Refusal};
use super::plane::{trust, Plane};
use super::restart::restart_required;
use super::shared::Live;
use crate::clock::month_index;
use crate::config::Config;
use crate::license::{Installed, LicenseFile, Rejection};
use crate::policy::{DisabledReason, EntitlementRefusal, FlowSetting, FlowState};
use crate::problem::ProblemCode;

/// How often an operator's change is decided again when another sidecar's change came first.
const FLEET_ATTEMPTS: usize = 3;

impl Plane {
    /// Re-reads the config file (SIGHUP); a bad one is reported and the running one stays.
    pub(super) fn reload_config(&mut self) {
        let loaded = Config::load(&self.config_path)
            .map_err(ControlError::from)
            .and_then(|config| {
                let (keys, host) = trust(&config, &self.config_path)?;
                Ok((config, keys, host))
            });
        let (config, keys, host) = match loaded {
            Ok(loaded) => loaded,
            Err(err) => {
                tracing::error!(error = %err, "configuration reload refused; the running configuration stays");
                self.config_error = Some(err.to_string());
                return;
            }
        };
        if config.licensing.license_dir != self.config.licensing.license_dir {
            tracing::warn!("the new license_dir is read now, but the directory watch follows it only after a restart");
        }
        let previous = std::mem::replace(&mut self.config, Arc::new(config));
        let previous_keys = std::mem::replace(&mut self.keys, keys);
        let previous_host = std::mem::replace(&mut self.host, host);
        let previous_settings = self.settings.clone();
        self.adopt_flows();
        // Licenses verified under the keys in force are checked again only if the keys
        // changed (a license kept from a file that broke stays while they do not).
        let keys_changed = self.keys != previous_keys;
        self.reverify |= keys_changed;
        match self.reload_licenses_now() {
            Ok(()) => {
                self.config_error = None;
                tracing::info!(file = %self.config_path.display(), "configuration reloaded");
                for key in restart_required(&self.started_with, &self.config) {
                    tracing::warn!(key, "{key} changed: the new value takes effect only on restart; the running one stays");
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "configuration reload refused; the running configuration stays");
                self.config = previous;
                self.keys = previous_keys;
                self.host = previous_host;
                self.settings.replace(previous_settings);
                // The licenses read meanwhile were verified under the keys just put back.
                self.reverify |= keys_changed;
                self.config_error = Some(err.to_string());
            }
        }
    }

    /// After a config change: new flows get a setting (after every existing one in enabling
    /// order), flows taken out of the config are forgotten (and dropped from the store).
    fn adopt_flows(&mut self) {
        let config = self.config.clone();
        for (order, flow) in config.flows.iter().enumerate() {
            if !self.settings.contains_key(&flow.id) {
                let order = self.next_order + order as u64;
                self.settings.edit().insert(
                    flow.id.clone(),
                    FlowSetting {
                        enabled: flow.enabled,
                        reason: DisabledReason::Operator,
                        order,
                    },
                );
            }
        }
        self.next_order += config.flows.len() as u64;
        self.settings
            .edit()
            .retain(|id, _| config.flow(id).is_some());
    }

    /// Enables a flow: refused when its pair cannot get a point, no valid license covers it,
    /// its environment's entitlements cannot fit it, or its license is at its hard limit.
    pub(super) fn enable_flow(&mut self, id: &str) -> Result<(), Refusal> {
        // In fleet mode the decision is made on the fleet's latest settings and holds only if
        // they have not moved on meanwhile; else it is made again on the newer ones.
        for _ in 0..FLEET_ATTEMPTS {
            let version = self.sync_from_fleet()?;
            if self.enable_flow_at(id, version)? {
                return Ok(());
            }
        }
        Err(Refusal::Unavailable(format!(
            "the fleet's flow settings changed {FLEET_ATTEMPTS} times while flow {id:?} was being enabled; try again"
        )))
    }

    /// Enables a flow on the settings at the fleet's `version` (fleet mode); `false` when the
    /// fleet's settings moved on before the change could be published (nothing changed).
    fn enable_flow_at(&mut self, id: &str, version: Option<u64>) -> Result<bool, Refusal> {
        let previous = *self
            .settings
            .get(id)
            .ok_or_else(|| Refusal::NotFound(format!("flow {id:?} is not configured")))?;
        if previous.enabled {
            return Ok(true);
        }
        let saved = self.settings.clone();
        let order = self.next_order;
        self.next_order += 1;
        self.settings.edit().insert(
            id.to_owned(),
            FlowSetting {
                enabled: true,
                reason: DisabledReason::Operator,
                order,
            },
        );
        let current = self.shared.live.load_full();
        let candidate = super::build::build(self, Some(&current)).map_err(|err| {
            self.settings.replace(saved.clone());
            self.next_order -= 1;
            Refusal::Failed(err)
        })?;
        if let Some((refusal, reason)) = self.refusal_of(&candidate, id) {
            // Nothing else changes, and the flow stays disabled with the refusal's reason.
            self.settings.replace(saved);
            self.next_order -= 1;
            if let (Some(reason), Some(setting)) = (reason, self.settings.edit().get_mut(id)) {
                if setting.reason != reason {
                    setting.reason = reason;
                    self.rebuild()?;
                }
            }
            return Err(refusal);
        }
        if let Some(version) = version {
            match self.publish_decided(version) {
                Ok(true) => {}
                Ok(false) => {
                    self.settings.replace(saved);
                    self.next_order -= 1;
                    return Ok(false);
                }
                Err(refusal) => {
                    self.settings.replace(saved);
                    self.next_order -= 1;
                    return Err(refusal);
                }
            }
        }
        self.swap(candidate);
        tracing::info!(flow = id, "flow enabled by the operator");
        Ok(true)
    }

    /// Why a candidate snapshot refuses to run flow `id`, and the reason the flow then stays
    /// disabled with (where the refusal is a disable reason).
    fn refusal_of(&self, candidate: &Live, id: &str) -> Option<(Refusal, Option<DisabledReason>)> {
        let index = candidate.flow(id)?;
        let flow = &candidate.flows[index as usize];
        match flow.state {
            FlowState::Disabled(DisabledReason::PointsExhausted) => Some((
                conflict(
                    ProblemCode::PointsExhausted,
                    None,
                    format!("no license covering the pair of flow {id:?} has a free point"),
                ),
                Some(DisabledReason::PointsExhausted),
            )),
            FlowState::Unlicensed(reason) => Some((
                conflict(
                    ProblemCode::LicenseInvalid,
                    Some(reason.as_str()),
                    format!("no valid license covers flow {id:?} ({reason})"),
                ),
                None,
            )),
            FlowState::Disabled(DisabledReason::EntitlementExceeded) => self
                .entitlement_refusals
                .iter()
                .find(|refusal| refusal.flow == index)
                .map(|refusal| {
                    (
                        entitlement_conflict(id, refusal),
                        Some(DisabledReason::EntitlementExceeded),
                    )
                }),
            FlowState::Active { .. } => {
                let license = candidate.budget_of(index)?;
                let used = license
                    .meter
                    .committed(month_index(self.shared.clock.now(), candidate.tz));
                let hard = license.hard_limit.filter(|&hard| used >= hard)?;
                Some((
                    conflict(
                        ProblemCode::RecordsLimitExceeded,
                        Some(DisabledReason::RecordsLimit.as_str()),
                        format!(
                            "license {} has transferred {used} of its {hard} records this month; flow {id:?} can run again after the reset",
                            license.id()
                        ),
                    ),
                    Some(DisabledReason::RecordsLimit),
                ))
            }
            FlowState::Disabled(_) => None,
        }
    }

    /// Disables a flow (operator); its pair's point is released with its last enabled flow.
    pub(super) fn disable_flow(&mut self, id: &str) -> Result<(), Refusal> {
        self.sync_from_fleet()?;
        let setting = self
            .settings
            .edit()
            .get_mut(id)
            .ok_or_else(|| Refusal::NotFound(format!("flow {id:?} is not configured")))?;
        if !setting.enabled && setting.reason == DisabledReason::Operator {
            return Ok(());
        }
        setting.enabled = false;
        setting.reason = DisabledReason::Operator;
        self.rebuild()?;
        tracing::info!(flow = id, "flow disabled by the operator");
        Ok(())
    }

    /// Verifies a license file and installs it atomically as `<license_dir>/<id>.lic`,
    /// replacing any installed license with the same id. Returns the license id and the flows
    /// it disabled (a downgraded subscription disables the most recently enabled first).
    pub(super) fn upload_license(
        &mut self,
        bytes: &[u8],
    ) -> Result<(String, Vec<String>), Refusal> {
        let file = LicenseFile::parse(bytes).map_err(|err| Refusal::BadInput(err.to_string()))?;
        file.verify(&self.keys)
            .map_err(|err| Refusal::BadInput(err.to_string()))?;
        let id = file.payload.common.id.clone();
        let dir = self.config.licensing.license_dir.clone();
        let target = dir.join(format!("{id}.lic"));
        write_atomically(&dir, &target, bytes)?;
        // Every other file of this id goes: those installed and those refused as its duplicates
        // (one left behind could be read before the upload and win).
        let replaced: Vec<PathBuf> = self
            .files_of(&id)
            .into_iter()
            .filter(|path| *path != target)
            .collect();
        let mut all_removed = true;
        for path in &replaced {
            if let Err(err) = std::fs::remove_file(path) {
                tracing::warn!(file = %path.display(), error = %err, "cannot remove the replaced license file");
                all_removed = false;
            }
        }
        self.rejected.retain(|r| !replaced.contains(&r.path));
        // The rename and the removals are durable once the directory is: an answered upload
        // survives a crash, and no replaced file comes back.
        sync_dir(&dir)?;
        let before = self.shared.live.load_full();
        // The installed licenses are what the directory holds only while a watcher reports
        // every change made there by hand (each is reloaded after it): then the upload's own
        // file is all that changed. Without one, a re-read picks up the rest too.
        if all_removed && self.watched.as_deref() == Some(dir.as_path()) {
            install_uploaded(
                self,
                Installed {
                    path: target.clone(),
                    file,
                },
            )?;
        } else {
            read_licenses(self)?;
        }
        self.rebuild()?;
        tracing::info!(license = %id, file = %target.display(), "license installed");
        let after = self.shared.live.load_full();
        let disabled: Vec<String> = (0..after.flows.len() as u32)
            .filter(|&index| {
                matches!(after.flows[index as usize].state, FlowState::Disabled(_))
                    && state_before(&before, &after, index)
                        .is_some_and(|was| !matches!(was, FlowState::Disabled(_)))
            })
            .map(|index| after.flow_info(index).id.to_string())
            .collect();
        if !disabled.is_empty() {
            tracing::warn!(license = %id, flows = ?disabled, "the new license disabled flows that no longer fit");
        }
        Ok((id, disabled))
    }

    /// Removes an installed license's file(s); flows holding its points are disabled
    /// (`license-removed`).
    pub(super) fn remove_license(&mut self, id: &str) -> Result<(), Refusal> {
        if !self.licenses.iter().any(|l| l.file.payload.common.id == id) {
            return Err(Refusal::NotFound(format!(
                "license {id:?} is not installed"
            )));
        }
        // Files refused as duplicates of this id go too: the next read would install one.
        for path in &self.files_of(id) {
            match std::fs::remove_file(path) {
                // Gone already (removed by hand since the last read): what was wanted.
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(
                        ControlError::io(path, "cannot remove the license file", err).into(),
                    );
                }
                _ => {}
            }
        }
        // The removal is durable once the directory is: a removed license does not come back
        // after a crash.
        sync_dir(&self.config.licensing.license_dir)?;
        self.reload_licenses_now()?;
        tracing::info!(license = id, "license removed");
        Ok(())
    }
}

impl Plane {
    /// Every file that holds license `id`: those installed, then those refused as its
    /// duplicates (which the next read of the directory could install).
    fn files_of(&self, id: &str) -> Vec<PathBuf> {
        self.licenses
            .iter()
            .filter(|l| l.file.payload.common.id == id)
            .map(|l| l.path.clone())
            .chain(self.rejected.iter().filter_map(|r| match &r.reason {
                Rejection::DuplicateId { id: duplicate, .. } if duplicate == id => {
                    Some(r.path.clone())
                }
                _ => None,
            }))
            .collect()
    }
}

/// Makes the renames and removals in the license directory `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), ControlError> {
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|err| ControlError::io(dir, "cannot sync the license directory", err))
}

/// A 409 refusal with a code, a reason and a detail.
fn conflict(code: ProblemCode, reason: Option<&'static str>, detail: String) -> Refusal {
    Refusal::Conflict {
        code,
        reason,
        detail,
        fields: Map::new(),
    }
}

/// The 409 answer to enabling a flow its environment's entitlements cannot fit.
fn entitlement_conflict(id: &str, refusal: &EntitlementRefusal) -> Refusal {
    let mut fields = Map::new();
    fields.insert("flow".into(), id.into());
    fields.insert("entitlement".into(), refusal.entitlement.as_str().into());
    fields.insert("environment".into(), refusal.environment.as_str().into());
    fields.insert("in_use".into(), refusal.in_use.into());
    fields.insert("limit".into(), refusal.limit.into());
    fields.insert("would_be".into(), refusal.would_be.into());
    Refusal::Conflict {
        code: ProblemCode::EntitlementExceeded,
        reason: Some(DisabledReason::EntitlementExceeded.as_str()),
        detail: format!(
            "enabling flow {id:?} would make {} {} in {} (limit {}, in use {})",
            refusal.would_be,
            refusal.entitlement.as_str().replace('_', " "),
            refusal.environment,
            refusal.limit,
            refusal.in_use
        ),
        fields,
    }
}

/// Writes `bytes` to `target` through a temporary file in `dir` and a rename.
fn write_atomically(dir: &Path, target: &Path, bytes: &[u8]) -> Result<(), ControlError> {
    use std::io::Write;
    let temp = dir.join(format!(".upload-{}.tmp", std::process::id()));
    let result = std::fs::File::create(&temp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, target));
    result.map_err(|err| {
        let _ = std::fs::remove_file(&temp);
        ControlError::io(target, "cannot write the license", err)
    })
}
