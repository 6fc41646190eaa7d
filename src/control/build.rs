//! Compiling the control state into a live snapshot (the policy snapshot and the client pool
//! of each instance), and journaling what changed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::error::ControlError;
use super::plane::Plane;
use super::shared::Live;
use crate::license::{self, Installed, Listing, Rejected, Rejection};
use crate::policy::{compile, DisabledReason, FlowState, Snapshot};
use crate::store::{AuditEvent, StoredFlow};

/// An audit event stamped now.
pub(super) fn event(now: DateTime<Utc>, kind: &str, detail: serde_json::Value) -> AuditEvent {
    AuditEvent {
        seq: 0,
        time: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        kind: kind.to_owned(),
        detail,
    }
}

/// Reads the license directory into the state, logging refused files and journaling
/// licenses that appeared or disappeared; says whether the installed licenses changed (a
/// directory that holds what is installed, under the same keys, needs no new snapshot).
pub(super) fn read_licenses(state: &mut Plane) -> Result<bool, ControlError> {
    let dir = &state.config.licensing.license_dir;
    let now = state.shared.clock.now();
    // Licenses verified under the keys in force are not checked again (see `Plane::reverify`).
    let verified: &[Arc<license::Installed>] = if state.reverify { &[] } else { &state.licenses };
    let mut listing = license::read_dir_reusing(dir, &state.keys, verified)
        .map_err(|err| ControlError::io(dir, "cannot read the license directory", err))?;
    if !state.reverify {
        keep_licenses_of_broken_files(&state.licenses, &mut listing);
    }
    for rejected in &listing.rejected {
        if !state.rejected.iter().any(|r| same_rejection(r, rejected)) {
            tracing::error!(file = %rejected.path.display(), reason = %rejected.reason, "license file refused");
        }
    }
    let before: HashSet<String> = state
        .licenses
        .iter()
        .map(|l| l.file.payload.common.id.clone())
        .collect();
    let after: HashSet<String> = listing
        .installed
        .iter()
        .map(|l| l.file.payload.common.id.clone())
        .collect();
    for installed in &listing.installed {
        if !before.contains(&installed.file.payload.common.id) {
            journal_license_added(state, installed, now);
        }
    }
    for id in before.difference(&after) {
        tracing::warn!(license = %id, "license removed");
        state
            .journal
            .push(event(now, "license-removed", json!({"license": id})));
    }
    let changed = state.reverify
        || listing.installed.len() != state.licenses.len()
        || listing
            .installed
            .iter()
            .zip(&state.licenses)
            .any(|(now, was)| now.path != was.path || !now.file.signs_the_same(&was.file));
    state.licenses = listing.installed.into_iter().map(Arc::new).collect();
    state.rejected = listing.rejected;
    state.reverify = false;
    Ok(changed)
}

/// A file that held an installed license and now fails to parse or verify (under the keys
/// that verified it) leaves that license in force: a broken file is never installed and the
/// running snapshot is kept, with the file's error reported as any refusal is. Deleting the
/// file removes the license; a valid file of the same id elsewhere takes its place.
fn keep_licenses_of_broken_files(previous: &[Arc<license::Installed>], listing: &mut Listing) {
    for was in previous {
        let broken = listing.rejected.iter().any(|r| {
            r.path == was.path && matches!(r.reason, Rejection::Parse(_) | Rejection::Signature(_))
        });
        let id = &was.file.payload.common.id;
        if broken
            && !listing
                .installed
                .iter()
                .any(|l| l.file.payload.common.id == *id)
        {
            tracing::warn!(license = %id, file = %was.path.display(), "the license file no longer reads; the license installed from it stays in force until the file is mended or deleted");
            let at = listing.installed.partition_point(|l| l.path < was.path);
            listing.installed.insert(at, (**was).clone());
        }
    }
}

/// Puts an uploaded license (written at its path, every other file of its id removed) among
/// the installed ones as re-reading the directory would, without reading the other files
/// again. Where the file it replaced decided other files' standing (a license of another id
/// at its path, a file refused beside it), or the keys changed, the directory is re-read.
pub(super) fn install_uploaded(state: &mut Plane, uploaded: Installed) -> Result<(), ControlError> {
    let id = uploaded.file.payload.common.id.as_str();
    let path = uploaded.path.as_path();
    let entangled = state.reverify
        || state
            .licenses
            .iter()
            .any(|l| l.path == path && l.file.payload.common.id != id)
        || state.rejected.iter().any(|r| {
            r.path == path
                || matches!(&r.reason, Rejection::DuplicateId { id: other_id, other }
                    if other_id == id || other == path)
        });
    if entangled {
        return read_licenses(state).map(|_| ());
    }
    if !state
        .licenses
        .iter()
        .any(|l| l.file.payload.common.id == id)
    {
        let now = state.shared.clock.now();
        journal_license_added(state, &uploaded, now);
    }
    state.licenses.retain(|l| l.file.payload.common.id != id);
    // Installed licenses are kept in file-name order, as the directory is read.
    let at = state.licenses.partition_point(|l| l.path < uploaded.path);
    state.licenses.insert(at, Arc::new(uploaded));
    Ok(())
}

/// Logs and journals a license that was not installed before (not at start, when every
/// license is new).
fn journal_license_added(state: &mut Plane, installed: &Installed, now: DateTime<Utc>) {
    if !state.started {
        return;
    }
    let id = &installed.file.payload.common.id;
    tracing::info!(license = %id, file = %installed.path.display(), "license added");
    state.journal.push(event(
        now,
        "license-added",
        json!({"license": id, "file": installed.path.display().to_string()}),
    ));
}

fn same_rejection(a: &Rejected, b: &Rejected) -> bool {
    a.path == b.path && a.reason.to_string() == b.reason.to_string()
}

/// Compiles a live snapshot from the state. Flows whose license was removed, and flows
/// refused a point, are disabled for good (until the operator enables them again).
pub(super) fn build(state: &mut Plane, previous: Option<&Live>) -> Result<Live, ControlError> {
    if let Some(previous) = previous {
        disable_flows_of_removed_licenses(state, previous);
    }
    let settings = state.settings.in_order(&state.config);
    let moment = state.moment(state.shared.clock.now());
    let compiled = compile(
        state.config.clone(),
        &state.licenses,
        &settings,
        &mut state.resources,
        &state.host,
        moment,
        previous.map(|live| &live.snapshot),
    )?;
    for &(index, reason) in &compiled.refused {
        let flow = &state.config.flows[index as usize];
        if let Some(setting) = state.settings.edit().get_mut(&flow.id) {
            setting.enabled = false;
            setting.reason = reason;
        }
    }
    state.entitlement_refusals = compiled.entitlement_refusals;
    // The same config has the same upstreams: a license or flow change reuses them.
    if let Some(previous) = previous.filter(|live| Arc::ptr_eq(&live.config, &state.config)) {
        return Ok(Live {
            snapshot: compiled.snapshot,
            upstreams: previous.upstreams.clone(),
        });
    }
    let mut upstreams = Vec::with_capacity(state.config.instances.len());
    for instance in &state.config.instances {
        let upstream = state
            .upstreams
            .get(instance)
            .map_err(|source| ControlError::Upstream {
                instance: instance.id.clone(),
                source,
            })?;
        upstreams.push(upstream);
    }
    state.upstreams.retain_used();
    Ok(Live {
        snapshot: compiled.snapshot,
        upstreams: upstreams.into(),
    })
}

/// Flows holding a point of a license that is no longer installed become disabled
/// (`license-removed`).
fn disable_flows_of_removed_licenses(state: &mut Plane, previous: &Snapshot) {
    let ids: HashSet<&str> = state
        .licenses
        .iter()
        .map(|l| l.file.payload.common.id.as_str())
        .collect();
    // By the previous snapshot's license index.
    let removed: Vec<bool> = previous
        .licenses
        .iter()
        .map(|license| !ids.contains(license.id()))
        .collect();
    if !removed.contains(&true) {
        return;
    }
    for (flow, info) in previous.flows.iter().zip(previous.flow_infos()) {
        if let FlowState::Active {
            license: Some(index),
        } = flow.state
        {
            if removed.get(index as usize) == Some(&true) {
                if let Some(setting) = state.settings.edit().get_mut(&*info.id) {
                    setting.enabled = false;
                    setting.reason = DisabledReason::LicenseRemoved;
                }
            }
        }
    }
}

/// How a flow's state reads in logs and the audit trail.
fn describe(state: FlowState, snapshot: &Snapshot) -> (bool, String) {
    match state {
        FlowState::Active {
            license: Some(index),
        } => (
            true,
            format!(
                "enabled (license {})",
                snapshot.licenses[index as usize].id()
            ),
        ),
        FlowState::Active { license: None } => (true, "enabled".to_owned()),
        FlowState::Unlicensed(reason) => (true, format!("enabled, no valid license ({reason})")),
        FlowState::Disabled(reason) => (false, format!("disabled ({})", reason.as_str())),
    }
}

/// Whether a previous state and a current one read the same (the license of an active flow
/// by its id, since its index may differ between snapshots: `current_license` maps each
/// previous license index to the current index of the same id); what [`describe`] tells
/// apart, without its text.
fn same_state(was: FlowState, is: FlowState, current_license: &[Option<u32>]) -> bool {
    match (was, is) {
        (FlowState::Active { license: Some(x) }, FlowState::Active { license: Some(y) }) => {
            current_license.get(x as usize).copied().flatten() == Some(y)
        }
        (a, b) => a == b,
    }
}

/// The state flow `index` of `current` had in `previous`, if it was there: at the same place
/// when both were compiled from one config, else found by its id.
pub(super) fn state_before(
    previous: &Snapshot,
    current: &Snapshot,
    index: u32,
) -> Option<FlowState> {
    let at = if Arc::ptr_eq(&previous.config, &current.config) {
        Some(index)
    } else {
        previous.flow(&current.flow_info(index).id)
    };
    at.and_then(|i| previous.flows.get(i as usize))
        .map(|flow| flow.state)
}

/// Logs and journals every flow whose state changed between two snapshots.
pub(super) fn journal_flow_changes(
    state: &mut Plane,
    previous: &Snapshot,
    current: &Snapshot,
    now: DateTime<Utc>,
) {
    let current_license: Vec<Option<u32>> = previous
        .licenses
        .iter()
        .map(|license| current.license(license.id()))
        .collect();
    for (index, (flow, info)) in current.flows.iter().zip(current.flow_infos()).enumerate() {
        let was = state_before(previous, current, index as u32);
        if was.is_some_and(|was| same_state(was, flow.state, &current_license)) {
            continue;
        }
        let before = was.map(|was| describe(was, previous));
        let (enabled, now_text) = describe(flow.state, current);
        if before.as_ref().map(|(_, text)| text.as_str()) == Some(now_text.as_str()) {
            continue;
        }
        let was = before.map_or_else(|| "new".to_owned(), |(_, text)| text);
        tracing::info!(flow = %info.id, state = %now_text, was = %was, "flow state changed");
        let reason = match flow.state {
            FlowState::Disabled(reason) => Some(reason.as_str()),
            FlowState::Unlicensed(reason) => Some(reason.as_str()),
            FlowState::Active { .. } => None,
        };
        let kind = if enabled {
            "flow-enabled"
        } else {
            "flow-disabled"
        };
        state.journal.push(event(
            now,
            kind,
            json!({"flow": &*info.id, "state": now_text, "was": was, "reason": reason}),
        ));
    }
}

/// The flow settings as the store keeps them.
pub(super) fn stored_flows(state: &Plane) -> BTreeMap<String, StoredFlow> {
    state
        .settings
        .iter()
        .map(|(id, setting)| {
            let stored = StoredFlow {
                enabled: setting.enabled,
                reason: setting.reason.as_str().to_owned(),
                order: setting.order,
            };
            (id.clone(), stored)
        })
        .collect()
}
