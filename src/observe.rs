//! Request statistics for `/metrics`: lock-free counters per (flow, instance, decision) and
//! a histogram of upstream answer times. Handles are resolved when a snapshot is compiled;
//! the request path only does atomic increments.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::problem::ProblemCode;

/// How a request on a proxy listener ended: forwarded, or refused with a problem code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forwarded to its target (whatever the target answered).
    Allowed,
    /// Answered by tollgate with this problem.
    Refused(ProblemCode),
    /// Shadow mode: forwarded, though this license decision would have refused it.
    Shadowed(ProblemCode),
}

impl Decision {
    /// Counter slots: `allowed`, then one per problem code, then one per license decision
    /// shadow mode can let through.
    const SLOTS: usize = ProblemCode::ALL.len() + ProblemCode::LICENSE_DECISIONS.len() + 1;

    fn slot(self) -> usize {
        match self {
            Decision::Allowed => 0,
            Decision::Refused(code) => code as usize + 1,
            // Only license decisions are shadowed (the request path shadows nothing else);
            // a release build never panics over it.
            Decision::Shadowed(code) => {
                debug_assert!(code.is_license_decision(), "{code} is not shadowed");
                let index = code
                    .license_decision_index()
                    .unwrap_or(ProblemCode::LICENSE_DECISIONS.len() - 1);
                ProblemCode::ALL.len() + index + 1
            }
        }
    }

    fn of_slot(slot: usize) -> Decision {
        let codes = ProblemCode::ALL.len();
        match slot.checked_sub(1) {
            None => Decision::Allowed,
            Some(index) if index < codes => Decision::Refused(ProblemCode::ALL[index]),
            Some(index) => Decision::Shadowed(ProblemCode::LICENSE_DECISIONS[index - codes]),
        }
    }

    /// The `decision` label: `allowed`, the problem code, or `shadow:` and the code.
    pub fn label(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Refused(code) => code.as_str(),
            Decision::Shadowed(code) => code.shadow_label(),
        }
    }
}

/// The label used for a flow or instance a request could not be tied to.
pub const UNKNOWN: &str = "-";

/// Requests per decision for one (flow, instance) label pair. The counters are allocated by
/// the first request: most pairs of a large configuration never see one.
#[derive(Debug)]
pub struct DecisionCounts {
    /// The `flow` label.
    pub flow: Arc<str>,
    /// The `instance` label.
    pub instance: Arc<str>,
    counts: OnceLock<Box<[AtomicU64; Decision::SLOTS]>>,
}

impl DecisionCounts {
    /// Counts one request that ended in `decision`.
    pub fn record(&self, decision: Decision) {
        self.counts
            .get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU64::new(0))))[decision.slot()]
        .fetch_add(1, Ordering::Relaxed);
    }

    /// `(decision label, count)` for every decision seen at least once.
    pub fn seen(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.counts
            .get()
            .into_iter()
            .flat_map(|counts| counts.iter().enumerate())
            .map(|(slot, c)| (Decision::of_slot(slot).label(), c.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
    }
}

/// How often shadow mode says, per flow and code, that it let a request through.
const SHADOW_LOG_EVERY_SECS: u64 = 60;

/// When shadow mode last logged each code for one flow, so that a busy flow over its limits
/// is one log line a minute, not one per request.
#[derive(Debug)]
pub struct ShadowLog {
    /// Unix seconds of the last line, per problem code.
    last: [AtomicU64; ProblemCode::LICENSE_DECISIONS.len()],
}

impl ShadowLog {
    /// Whether to log `code` now (and if so, the next line waits a minute).
    pub fn should_log(&self, code: ProblemCode, now_secs: u64) -> bool {
        let Some(index) = code.license_decision_index() else {
            return false;
        };
        let last = &self.last[index];
        let seen = last.load(Ordering::Relaxed);
        (seen == 0 || now_secs >= seen + SHADOW_LOG_EVERY_SECS)
            && last
                .compare_exchange(seen, now_secs.max(1), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }
}

/// Every label pair's counters, kept across snapshots so a swap never resets them. Look-ups
/// of known pairs allocate nothing, and each label's text is held once.
#[derive(Debug, Default)]
pub struct RequestStats {
    /// By flow label, then instance label.
    counts: FxHashMap<Arc<str>, FxHashMap<Arc<str>, Arc<DecisionCounts>>>,
    shadow_logs: FxHashMap<Arc<str>, Arc<ShadowLog>>,
    labels: FxHashSet<Arc<str>>,
}

impl RequestStats {
    /// The shadow-mode log throttle of a flow (`-` for requests without one).
    pub fn shadow_log(&mut self, flow: &str) -> Arc<ShadowLog> {
        if let Some(log) = self.shadow_logs.get(flow) {
            return log.clone();
        }
        let log = Arc::new(ShadowLog {
            last: std::array::from_fn(|_| AtomicU64::new(0)),
        });
        let label = self.label(flow);
        self.shadow_logs.insert(label, log.clone());
        log
    }

    /// The counters of a (flow, instance) label pair, created at zero when new.
    pub fn counts(&mut self, flow: &str, instance: &str) -> Arc<DecisionCounts> {
        if let Some(counts) = self.counts.get(flow).and_then(|by| by.get(instance)) {
            return counts.clone();
        }
        let (flow, instance) = (self.label(flow), self.label(instance));
        let counts = Arc::new(DecisionCounts {
            flow: flow.clone(),
            instance: instance.clone(),
            counts: OnceLock::new(),
        });
        self.counts
            .entry(flow)
            .or_default()
            .insert(instance, counts.clone());
        counts
    }

    /// The one shared copy of a label's text.
    fn label(&mut self, text: &str) -> Arc<str> {
        if let Some(label) = self.labels.get(text) {
            return label.clone();
        }
        let label: Arc<str> = text.into();
        self.labels.insert(label.clone());
        label
    }
}

/// Upper bounds of the upstream-duration buckets, in seconds.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds of the buckets of round trips to a store on the local network (fleet mode's
/// Redis), in seconds: a healthy round trip is a fraction of a millisecond.
pub const ROUND_TRIP_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A lock-free histogram of durations: how long targets take to answer (until the response
/// head), or round trips to Redis.
#[derive(Debug)]
pub struct DurationHistogram {
    bounds: &'static [f64; 12],
    buckets: [AtomicU64; 12],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for DurationHistogram {
    fn default() -> Self {
        DurationHistogram::with_bounds(&DURATION_BUCKETS)
    }
}

impl DurationHistogram {
    /// A histogram with these bucket bounds (upstream answers use [`DURATION_BUCKETS`]).
    pub fn with_bounds(bounds: &'static [f64; 12]) -> DurationHistogram {
        DurationHistogram {
            bounds,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(slot) = self.bounds.iter().position(|bound| seconds <= *bound) {
            self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// `(sum in seconds, count, per-bucket counts)`, the last bucket being `+Inf` (`f64::MAX`),
    /// as prometheus-client's encoder takes them (it accumulates them itself).
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let count = self.count.load(Ordering::Relaxed);
        let mut buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .zip(&self.buckets)
            .map(|(bound, n)| (*bound, n.load(Ordering::Relaxed)))
            .collect();
        let within: u64 = buckets.iter().map(|(_, n)| n).sum();
        buckets.push((f64::MAX, count.saturating_sub(within)));
        (
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count,
            buckets,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_to_redis_get_sub_millisecond_buckets() {
        let histogram = DurationHistogram::with_bounds(&ROUND_TRIP_BUCKETS);
        histogram.observe(Duration::from_micros(300));
        histogram.observe(Duration::from_secs(2));
        let (_, count, buckets) = histogram.snapshot();
        assert_eq!(count, 2);
        assert_eq!(buckets[2], (0.0005, 1), "300 µs falls in the 500 µs bucket");
        assert_eq!(buckets[12], (f64::MAX, 1), "2 s falls in +Inf only");
    }

    #[test]
    fn shadow_mode_logs_a_flow_and_code_at_most_once_a_minute() {
        let log = RequestStats::default().shadow_log("f");
        assert!(log.should_log(ProblemCode::RecordsLimitExceeded, 1_000));
        assert!(!log.should_log(ProblemCode::RecordsLimitExceeded, 1_059));
        assert!(
            log.should_log(ProblemCode::LicenseInvalid, 1_059),
            "each code on its own"
        );
        assert!(log.should_log(ProblemCode::RecordsLimitExceeded, 1_060));
    }

    #[test]
    fn shadowed_requests_have_their_own_decision_label() {
        let counts = RequestStats::default().counts("f", "i");
        counts.record(Decision::Shadowed(ProblemCode::FlowDisabled));
        counts.record(Decision::Refused(ProblemCode::FlowDisabled));
        let seen: Vec<_> = counts.seen().collect();
        assert_eq!(seen, [("flow-disabled", 1), ("shadow:flow-disabled", 1)]);
    }

    #[test]
    fn decisions_are_counted_per_label_pair_and_kept() {
        let mut stats = RequestStats::default();
        let counts = stats.counts("incidents", "jira-1");
        counts.record(Decision::Allowed);
        counts.record(Decision::Allowed);
        counts.record(Decision::Refused(ProblemCode::LicenseInvalid));
        assert!(Arc::ptr_eq(&counts, &stats.counts("incidents", "jira-1")));
        let seen: Vec<_> = counts.seen().collect();
        assert_eq!(seen, vec![("allowed", 2), ("license-invalid", 1)]);
        let other = stats.counts("escalations", "jira-1");
        assert_eq!(
            other.seen().count(),
            0,
            "a pair no request reached has no counts"
        );
        assert!(
            Arc::ptr_eq(&other.instance, &counts.instance),
            "a label's text is held once"
        );
    }

    #[test]
    fn every_answer_falls_in_one_bucket() {
        let histogram = DurationHistogram::default();
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_millis(40));
        histogram.observe(Duration::from_secs(60));
        let (sum, count, buckets) = histogram.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 60.043).abs() < 1e-6);
        assert_eq!(buckets[0], (0.001, 0));
        assert_eq!(buckets[1], (0.005, 1));
        assert_eq!(buckets[4], (0.05, 1));
        assert_eq!(buckets[11], (10.0, 0));
        assert_eq!(buckets[12], (f64::MAX, 1), "60 s falls in +Inf only");
    }
}
