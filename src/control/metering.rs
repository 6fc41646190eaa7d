//! What time and counts do to the control plane: the clock high-water mark and rollback
//! detection, month rollover (resuming flows stopped by the records limit), licenses crossing
//! their start or expiry, and warnings and limits reported by the request path.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use super::build::event;
use super::plane::Plane;
use crate::clock::{month_index, month_index_label};
use crate::meter::{MeterEvent, MeterEventKind};
use crate::policy::{DisabledReason, FlowState};

/// How often the high-water mark is written while time moves on normally.
const HIGH_WATER_EVERY: TimeDelta = TimeDelta::seconds(10);

/// Updates the high-water mark and the rollback flag; returns whether the flag changed. Out
/// of a rollback the mark moves on with the monotonic clock as well as with the wall clock, so
/// setting the clock back by less than the skew again and again never holds time still; in
/// one it waits for the wall clock to catch up (a clock that was wrongly ahead and was put
/// right recovers once time has passed the mark).
pub(super) fn check_rollback(state: &mut Plane, now: DateTime<Utc>) -> bool {
    let skew = TimeDelta::from_std(state.config.licensing.max_clock_skew).unwrap_or(TimeDelta::MAX);
    let running = state.shared.clock.running();
    let ran = TimeDelta::from_std(running.saturating_sub(state.high_water_running))
        .unwrap_or(TimeDelta::MAX);
    state.high_water_running = running;
    let carried = if state.rollback {
        state.high_water
    } else {
        state
            .high_water
            .checked_add_signed(ran)
            .unwrap_or(state.high_water)
    };
    let behind = carried
        .checked_sub_signed(skew)
        .is_some_and(|floor| now < floor);
    state.high_water = carried.max(now);
    if behind == state.rollback {
        return false;
    }
    state.rollback = behind;
    let detail = json!({"now": now.to_rfc3339(), "high_water": state.high_water.to_rfc3339()});
    if behind {
        tracing::error!(now = %now, high_water = %state.high_water, "the clock is behind the latest time seen by more than max_clock_skew: every license is invalid (clock-rollback) until time catches up");
        state.journal.push(event(now, "clock-rollback", detail));
    } else {
        tracing::info!(now = %now, "the clock has caught up: licenses are judged normally again");
        state.journal.push(event(now, "clock-restored", detail));
    }
    true
}

/// Starts a new month: journals it and, with `resume_at_reset`, enables the flows the records
/// limit stopped.
pub(super) fn roll_over(state: &mut Plane, month: u32, now: DateTime<Utc>) {
    let resume = state.config.licensing.resume_at_reset;
    let mut resumed = Vec::new();
    if resume {
        for (id, setting) in state.settings.edit() {
            if !setting.enabled && setting.reason == DisabledReason::RecordsLimit {
                setting.enabled = true;
                resumed.push(id.clone());
            }
        }
    }
    resumed.sort();
    tracing::info!(month = %month_index_label(month), resumed = ?resumed, "a new month began: transferred records count from zero");
    state.journal.push(event(
        now,
        "records-reset",
        json!({"month": month_index_label(month), "resumed": resumed}),
    ));
    state.month = month;
}

impl Plane {
    /// Once a second: high-water mark, rollback, month rollover, license start and expiry.
    pub(super) fn tick(&mut self) {
        if self.fleet.is_some() {
            self.publish_to_fleet();
        }
        let now = self.shared.clock.now();
        let mut changed = check_rollback(self, now);
        if self.high_water - self.high_water_written >= HIGH_WATER_EVERY {
            self.shared.recorder.high_water(self.high_water);
            self.high_water_written = self.high_water;
        }
        let live = self.shared.live.load_full();
        let month = month_index(now, live.tz);
        if month > self.month {
            self.begin_month(month, now);
            changed = true;
        }
        if changed || live.is_stale(self.moment(now)) {
            if let Err(err) = self.rebuild() {
                tracing::error!(error = %err, "re-evaluating licenses failed");
            }
        }
    }

    /// Begins `month`: the rollover, and the month counts are kept in stored.
    fn begin_month(&mut self, month: u32, now: DateTime<Utc>) {
        roll_over(self, month, now);
        if let Err(err) = self.store.set_counted_month(month) {
            tracing::error!(error = %err, "the new month could not be stored");
        }
    }

    /// Acts on a warning or limit the request path reported.
    pub(super) fn on_meter_event(&mut self, reported: MeterEvent) {
        let now = self.shared.clock.now();
        if reported.month > self.month {
            // The request path counted in a month the once-a-second tick has not begun yet:
            // begin it here, so that what crossed its limit is journaled and acted on (on a
            // snapshot where the flows the month resumed run, so a limit stops them again).
            self.begin_month(reported.month, now);
            if let Err(err) = self.rebuild() {
                tracing::error!(error = %err, "resuming flows at the new month failed");
            }
        }
        if reported.month != self.month {
            return;
        }
        let label = month_index_label(reported.month);
        let detail = json!({"license": &*reported.license, "month": label, "used": reported.used, "limit": reported.limit, "hard_limit": reported.hard_limit});
        let mut marks = self
            .store
            .marks(&reported.license, &label)
            .unwrap_or_default();
        if let Some(fleet) = self.fleet.clone() {
            // The fleet's marks decide who journals: the sidecar that raises one first.
            let raise = |kind: &str| match fleet.raise_mark(&reported.license, &label, kind) {
                Ok(first) => !first,
                Err(err) => {
                    tracing::warn!(error = %err, "the fleet's marks cannot be read; this sidecar journals the event");
                    false
                }
            };
            if !marks.warning {
                marks.warning = raise("warning");
            }
            if reported.kind == MeterEventKind::Limit && !marks.limit && raise("limit") {
                // Another sidecar journaled the limit; its flows stop here too.
                marks.limit = true;
                self.stop_flows_of(&reported.license);
            }
        }
        // Loads commit concurrently, so the limit's event may arrive before the warning's:
        // the warning is raised once, and always before the limit.
        if !marks.warning {
            tracing::warn!(license = %reported.license, limit = reported.limit, hard_limit = reported.hard_limit, "transferred records reached the monthly limit; loads continue up to the hard limit");
            let warning = json!({"license": &*reported.license, "month": label, "used": reported.used.min(reported.limit), "limit": reported.limit, "hard_limit": reported.hard_limit});
            self.journal.push(event(now, "records-warning", warning));
            marks.warning = true;
        }
        if reported.kind == MeterEventKind::Limit && !marks.limit {
            tracing::warn!(license = %reported.license, used = reported.used, hard_limit = reported.hard_limit, "transferred records reached the hard limit; the license's flows stop until the month resets");
            self.journal.push(event(now, "records-limit", detail));
            marks.limit = true;
            self.stop_flows_of(&reported.license);
        }
        if let Err(err) = self.store.set_marks(&reported.license, &label, &marks) {
            tracing::error!(error = %err, "the warning could not be stored");
        }
        if let Err(err) = self.rebuild() {
            tracing::error!(error = %err, "stopping the license's flows failed");
        }
    }

    /// Disables (`records-limit`) every running flow whose loads count against the license:
    /// those its points cover and the single-system data loaders that draw on its budget.
    fn stop_flows_of(&mut self, license: &str) {
        let live = self.shared.live.load_full();
        for (index, (flow, info)) in live.flows.iter().zip(live.flow_infos()).enumerate() {
            let counts_here = live
                .budget_of(index as u32)
                .is_some_and(|entry| *entry.meter.id == *license);
            if counts_here && matches!(flow.state, FlowState::Active { .. }) {
                if let Some(setting) = self.settings.edit().get_mut(&*info.id) {
                    setting.enabled = false;
                    setting.reason = DisabledReason::RecordsLimit;
                }
            }
        }
    }
}
