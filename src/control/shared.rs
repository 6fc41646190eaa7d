//! What the request path shares with the control plane: the live snapshot (swapped whole on
//! every change), the clock, the count recorder, the way back to the control plane for
//! meter events, and the counted exchanges in flight.

use std::sync::mpsc::Sender;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::task::TaskTracker;

use super::plane::Command;
use crate::clock::Clock;
use crate::meter::MeterReport;
use crate::observe::DurationHistogram;
use crate::policy::Snapshot;
use crate::store::fleet::Fleet;
use crate::store::Recorder;
use crate::upstream::Upstream;

/// What requests are decided and forwarded on: the pure policy snapshot and, beside it, the
/// client pool each instance's requests go to (by instance index).
#[derive(Debug)]
pub struct Live {
    /// The decisions.
    pub snapshot: Snapshot,
    /// Client pools by instance index; `None` for an instance without a `base_uri` (shared
    /// by the snapshots of one config).
    pub upstreams: Arc<[Option<Arc<Upstream>>]>,
}

impl std::ops::Deref for Live {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.snapshot
    }
}

impl Live {
    /// The client pool of an instance.
    pub fn upstream(&self, instance: u32) -> Option<&Arc<Upstream>> {
        self.upstreams
            .get(instance as usize)
            .and_then(Option::as_ref)
    }
}

/// What every request handler shares.
pub struct Shared {
    /// The live snapshot requests are decided on; swapped whole on every change.
    pub live: ArcSwap<Live>,
    /// The time licenses are judged at.
    pub clock: Arc<dyn Clock>,
    /// Where counted loads are persisted.
    pub recorder: Recorder,
    /// How long targets take to answer, for `/metrics`.
    pub upstream_durations: DurationHistogram,
    /// Counted exchanges in flight, which shutdown waits for before the last flush.
    pub exchanges: TaskTracker,
    /// Fleet mode: leases, the fleet's counts and state in Redis.
    pub fleet: Option<Arc<Fleet>>,
    commands: Sender<Command>,
}

impl Shared {
    /// What the request path shares, around the first live snapshot.
    pub(super) fn new(
        live: Live,
        clock: Arc<dyn Clock>,
        recorder: Recorder,
        commands: Sender<Command>,
        fleet: Option<Arc<Fleet>>,
    ) -> Shared {
        Shared {
            live: ArcSwap::from_pointee(live),
            clock,
            recorder,
            upstream_durations: DurationHistogram::default(),
            exchanges: TaskTracker::new(),
            fleet,
            commands,
        }
    }

    /// Hands a warning or limit the request path crossed to the control plane (never blocks).
    pub fn report(&self, report: MeterReport) {
        if self.commands.send(Command::Meter(report)).is_err() {
            tracing::warn!("the control plane has stopped; a records event is dropped");
        }
    }
}
