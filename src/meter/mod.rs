//! Counters of transferred records: per license and month (with in-flight reservations, so
//! the hard limit holds under any concurrency) and per flow and month. They live outside
//! the snapshot, so a swap never resets or forks them; the snapshot holds pre-resolved
//! handles and the hot path does atomic operations only. A counter word packs the month it
//! belongs to with its count, so the month rolls over by compare-and-swap on first use.
//!
//! In fleet mode a license's meter also holds a [`Lease`]: the block of the fleet's budget
//! this sidecar may spend without asking Redis, and what the other sidecars have counted, so
//! that admission stays one compare-and-swap and every report shows the fleet's total.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bits of a counter word that hold the count (2^44 > 17 trillion records).
const COUNT_BITS: u32 = 44;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

fn pack(month: u32, count: u64) -> u64 {
    u64::from(month) << COUNT_BITS | (count & COUNT_MASK)
}

fn unpack(word: u64) -> (u32, u64) {
    ((word >> COUNT_BITS) as u32, word & COUNT_MASK)
}

/// A count that belongs to one month and reads zero in any later month.
#[derive(Debug, Default)]
struct MonthCount(AtomicU64);

impl MonthCount {
    fn get(&self, month: u32) -> u64 {
        match unpack(self.0.load(Ordering::Acquire)) {
            (m, count) if m == month => count,
            _ => 0,
        }
    }

    /// Applies `change` to the count of `month` (zero if the word holds an earlier month);
    /// returns the new count, or `None` where the word already belongs to a later month (a
    /// load admitted before a rollover) or `change` refuses.
    fn update(&self, month: u32, mut change: impl FnMut(u64) -> Option<u64>) -> Option<u64> {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            let (m, count) = unpack(current);
            let count = match m.cmp(&month) {
                std::cmp::Ordering::Less => 0,
                std::cmp::Ordering::Equal => count,
                std::cmp::Ordering::Greater => return None,
            };
            let next = change(count)?;
            match self.0.compare_exchange_weak(
                current,
                pack(month, next),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(next),
                Err(actual) => current = actual,
            }
        }
    }
}

/// The monthly budget of one license: committed records plus in-flight reservations.
#[derive(Debug)]
pub struct LicenseMeter {
    /// License id.
    pub id: Arc<str>,
    /// Committed + reserved (by this sidecar): what admission compares with the hard limit.
    used: MonthCount,
    /// Committed by this sidecar: loads the target accepted.
    committed: MonthCount,
    /// Committed by the fleet's other sidecars, as of the last exchange with Redis.
    others: MonthCount,
    /// The fleet lease (fleet mode only).
    lease: Option<Lease>,
}

/// This sidecar's share of a license's monthly budget in fleet mode: records leased from
/// Redis and not yet drawn, and what the fleet has granted it in all.
#[derive(Debug, Default)]
pub struct Lease {
    /// Records this sidecar may still admit this month without asking Redis.
    available: MonthCount,
    /// Records Redis has granted this sidecar this month (drawn or not); this sidecar is the
    /// authority on it and tells Redis with every exchange.
    held: MonthCount,
    /// Set (to 1) while the fleet has no budget left to grant: loads are refused without a
    /// round trip until the fleet agent finds budget again.
    spent: MonthCount,
    /// The size of the last block granted, to top up before the lease runs dry.
    last_block: AtomicU64,
    /// Blocks granted since start.
    grants: AtomicU64,
    /// One exchange with Redis per license at a time, so every exchange knows what the
    /// previous one did.
    pub exchange: tokio::sync::Mutex<()>,
}

impl Lease {
    /// Records still available in `month`.
    pub fn available(&self, month: u32) -> u64 {
        self.available.get(month)
    }

    /// Records granted to this sidecar in `month`.
    pub fn held(&self, month: u32) -> u64 {
        self.held.get(month)
    }

    /// Whether the fleet said its budget for `month` is spent.
    pub fn is_spent(&self, month: u32) -> bool {
        self.spent.get(month) > 0
    }

    /// Blocks granted since start.
    pub fn grants(&self) -> u64 {
        self.grants.load(Ordering::Relaxed)
    }

    /// Whether less than a quarter of the last block granted is left in `month`: time to ask
    /// for the next one before loads find the lease empty.
    pub fn runs_low(&self, month: u32) -> bool {
        self.available(month) * 4 < self.last_block.load(Ordering::Relaxed)
    }

    /// Adds a block Redis granted: it is held and available.
    pub fn grant(&self, month: u32, records: u64) {
        self.last_block.store(records, Ordering::Relaxed);
        self.grants.fetch_add(1, Ordering::Relaxed);
        let _ = self.held.update(month, |held| Some(held + records));
        let _ = self
            .available
            .update(month, |available| Some(available + records));
    }

    /// Takes every available record of `month` back (to return them to the fleet); returns
    /// how many. Admission cannot draw them once this returns.
    pub fn take_available(&self, month: u32) -> u64 {
        let mut taken = 0;
        let _ = self.available.update(month, |available| {
            taken = available;
            Some(0)
        });
        taken
    }

    /// Records that Redis took back (returned) are no longer held.
    pub fn returned(&self, month: u32, records: u64) {
        let _ = self
            .held
            .update(month, |held| Some(held.saturating_sub(records)));
    }

    /// Sets what this sidecar holds in `month` (at start-up, from Redis and the local count).
    pub fn set_held(&self, month: u32, held: u64) {
        let _ = self.held.update(month, |_| Some(held));
    }

    /// Marks the fleet's budget of `month` as spent, or not.
    pub fn set_spent(&self, month: u32, spent: bool) {
        let _ = self.spent.update(month, |_| Some(u64::from(spent)));
    }
}

/// The records of one flow per month.
#[derive(Debug)]
pub struct FlowMeter {
    /// Flow id.
    pub id: Arc<str>,
    committed: MonthCount,
    /// Committed by the fleet's other sidecars, as of the last exchange with Redis.
    others: MonthCount,
}

impl FlowMeter {
    /// Records committed in `month`, by the whole fleet in fleet mode.
    pub fn committed(&self, month: u32) -> u64 {
        self.committed.get(month) + self.others.get(month)
    }

    /// Records this sidecar committed in `month`.
    pub fn local_committed(&self, month: u32) -> u64 {
        self.committed.get(month)
    }

    /// Sets what the other sidecars committed in `month`.
    pub fn set_others(&self, month: u32, records: u64) {
        let _ = self.others.update(month, |_| Some(records));
    }

    /// Raises this sidecar's count of `month` to at least `records` (counts Redis has that
    /// the local store lost).
    pub fn raise_committed(&self, month: u32, records: u64) {
        let _ = self
            .committed
            .update(month, |count| Some(count.max(records)));
    }
}

/// Admission refused: the license's budget for the month is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtLimit {
    /// Committed + reserved when refused.
    pub used: u64,
}

/// Why a record could not be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortfall {
    /// The month's budget is spent (the fleet's, in fleet mode).
    AtLimit(AtLimit),
    /// Fleet mode: this sidecar's lease is empty; Redis must be asked for a block.
    LeaseEmpty,
}

impl LicenseMeter {
    /// Records committed in `month`: by the whole fleet in fleet mode.
    pub fn committed(&self, month: u32) -> u64 {
        self.committed.get(month) + self.others.get(month)
    }

    /// Records this sidecar committed in `month`.
    pub fn local_committed(&self, month: u32) -> u64 {
        self.committed.get(month)
    }

    /// Committed (by the fleet) and in-flight (here) records in `month`.
    pub fn used(&self, month: u32) -> u64 {
        self.used.get(month) + self.others.get(month)
    }

    /// The fleet lease, in fleet mode.
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// Sets what the other sidecars committed in `month`.
    pub fn set_others(&self, month: u32, records: u64) {
        let _ = self.others.update(month, |_| Some(records));
    }

    /// Raises this sidecar's count of `month` to at least `records` (counts Redis has that
    /// the local store lost).
    pub fn raise_committed(&self, month: u32, records: u64) {
        let mut raised = 0;
        let _ = self.committed.update(month, |count| {
            raised = records.saturating_sub(count);
            Some(count.max(records))
        });
        if raised > 0 {
            let _ = self.used.update(month, |used| Some(used + raised));
        }
    }

    /// Reserves `records` of `month`'s budget (a bulk load reserves its whole batch at once):
    /// from the lease in fleet mode, else unless `committed + reserved + records` would pass
    /// `hard_limit`.
    pub fn reserve(
        &self,
        month: u32,
        hard_limit: Option<u64>,
        records: u64,
    ) -> Result<u32, Shortfall> {
        match (&self.lease, hard_limit) {
            (Some(lease), Some(_)) => self.draw(lease, month, records),
            _ => self
                .reserve_local(month, hard_limit, records)
                .map_err(Shortfall::AtLimit),
        }
    }

    /// Fleet mode: `records` from the lease, all or none.
    fn draw(&self, lease: &Lease, month: u32, records: u64) -> Result<u32, Shortfall> {
        if lease
            .available
            .update(month, |available| available.checked_sub(records))
            .is_some()
        {
            let _ = self.used.update(month, |used| Some(used + records));
            return Ok(month);
        }
        if lease.is_spent(month) {
            return Err(Shortfall::AtLimit(AtLimit {
                used: self.used(month),
            }));
        }
        Err(Shortfall::LeaseEmpty)
    }

    fn reserve_local(
        &self,
        month: u32,
        hard_limit: Option<u64>,
        records: u64,
    ) -> Result<u32, AtLimit> {
        let mut refused = None;
        let admitted = self.used.update(month, |used| match hard_limit {
            Some(hard) if used.saturating_add(records) > hard => {
                refused = Some(used);
                None
            }
            _ => Some(used + records),
        });
        match (admitted, refused) {
            (Some(_), _) => Ok(month),
            (None, Some(used)) => Err(AtLimit { used }),
            // The counter is already in a later month (the clock went back): count it there.
            (None, None) => {
                let (later, _) = unpack(self.used.0.load(Ordering::Acquire));
                self.reserve_local(later, hard_limit, records)
            }
        }
    }

    /// Turns `records` reserved in `month` into committed records; returns the committed count
    /// (the fleet's, in fleet mode) before and after (equal where the month has rolled over).
    fn commit(&self, month: u32, records: u64) -> (u64, u64) {
        match self.committed.update(month, |count| Some(count + records)) {
            Some(after) => {
                let others = self.others.get(month);
                (others + after - records, others + after)
            }
            None => (0, 0),
        }
    }

    /// Gives `records` reserved in `month` back (to the lease, in fleet mode).
    fn release(&self, month: u32, records: u64, drawn: bool) {
        if records == 0 {
            return;
        }
        let (m, _) = unpack(self.used.0.load(Ordering::Acquire));
        if m == month {
            let _ = self
                .used
                .update(month, |used| Some(used.saturating_sub(records)));
        }
        if let (Some(lease), true) = (&self.lease, drawn) {
            let _ = lease
                .available
                .update(month, |available| Some(available + records));
        }
    }
}

/// Reserved records (one for a load, a whole batch for a bulk load): committed with
/// [`Reservation::commit`] or [`Reservation::commit_accepted`], released when dropped
/// otherwise (non-2xx answer, upstream failure). It owns its meters, so the exchange it
/// belongs to can outlive the request that started it (an engine that hangs up does not
/// cancel a count).
#[derive(Debug)]
pub struct Reservation {
    license: Option<Arc<LicenseMeter>>,
    flow: Arc<FlowMeter>,
    month: u32,
    /// How many records are reserved.
    records: u64,
    /// Drawn from a fleet lease (given back to it if not committed).
    drawn: bool,
    done: bool,
}

/// What committing a load changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The month the records were counted in.
    pub month: u32,
    /// How many records were counted.
    pub records: u64,
    /// The license's committed records before these.
    pub before: u64,
    /// The license's committed records with these.
    pub after: u64,
}

impl Reservation {
    /// Reserves `records` for `flow`, against `license`'s budget where the flow's loads count
    /// against one: all of them or none.
    pub fn take(
        license: Option<(&Arc<LicenseMeter>, Option<u64>)>,
        flow: &Arc<FlowMeter>,
        month: u32,
        records: u64,
    ) -> Result<Reservation, Shortfall> {
        let (license, month, drawn) = match license {
            Some((meter, hard)) => {
                let drawn = meter.lease.is_some() && hard.is_some();
                (
                    Some(meter.clone()),
                    meter.reserve(month, hard, records)?,
                    drawn,
                )
            }
            None => (None, month, false),
        };
        Ok(Reservation {
            license,
            flow: flow.clone(),
            month,
            records,
            drawn,
            done: false,
        })
    }

    /// How many records are reserved.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Commits every reserved record (the target answered 2xx).
    pub fn commit(self) -> Committed {
        let records = self.records;
        self.commit_accepted(records)
    }

    /// Commits `accepted` of the reserved records (at most all of them: what the target says
    /// it created) and gives the rest back.
    pub fn commit_accepted(mut self, accepted: u64) -> Committed {
        self.done = true;
        let records = accepted.min(self.records);
        if let Some(meter) = &self.license {
            meter.release(self.month, self.records - records, self.drawn);
        }
        let _ = self
            .flow
            .committed
            .update(self.month, |count| Some(count + records));
        let (before, after) = self
            .license
            .as_ref()
            .map_or((0, 0), |meter| meter.commit(self.month, records));
        Committed {
            month: self.month,
            records,
            before,
            after,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            if let Some(meter) = &self.license {
                meter.release(self.month, self.records, self.drawn);
            }
        }
    }
}

/// What a committed load crossed, for the control plane to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeterEventKind {
    /// `used >= limit`: raise the warning.
    Warning,
    /// `used >= hard limit`: stop the license's flows.
    Limit,
}

/// A warning or limit reached by a license in a month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterEvent {
    /// Which threshold.
    pub kind: MeterEventKind,
    /// The license.
    pub license: Arc<str>,
    /// The month index.
    pub month: u32,
    /// Committed records when it was crossed.
    pub used: u64,
    /// The monthly limit.
    pub limit: u64,
    /// The hard limit.
    pub hard_limit: u64,
}

/// A meter event on its way to the control plane; where the load that raised it must not be
/// answered before the control plane has acted (the hard limit stops flows), `acted` says so.
#[derive(Debug)]
pub struct MeterReport {
    /// What was crossed.
    pub event: MeterEvent,
    /// Signalled once the control plane has acted on the event.
    pub acted: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Every meter by id, kept across snapshots (and across a license's removal and return).
#[derive(Debug, Default)]
pub struct Meters {
    licenses: HashMap<String, Arc<LicenseMeter>>,
    flows: HashMap<String, Arc<FlowMeter>>,
    /// Fleet mode: license meters carry a lease.
    fleet: bool,
}

impl Meters {
    /// Meters seeded with the committed counts of `month` (from the store at start-up); in
    /// fleet mode each license meter carries a lease.
    pub fn seeded(
        month: u32,
        licenses: &HashMap<String, u64>,
        flows: &HashMap<String, u64>,
        fleet: bool,
    ) -> Meters {
        let mut meters = Meters {
            fleet,
            ..Meters::default()
        };
        for (id, &count) in licenses {
            let meter = meters.license(id);
            meter.raise_committed(month, count);
        }
        for (id, &count) in flows {
            meters.flow(id).raise_committed(month, count);
        }
        meters
    }

    /// The meter of a license (created at zero when new).
    pub fn license(&mut self, id: &str) -> Arc<LicenseMeter> {
        if let Some(meter) = self.licenses.get(id) {
            return meter.clone();
        }
        let meter = Arc::new(LicenseMeter {
            id: id.into(),
            used: MonthCount::default(),
            committed: MonthCount::default(),
            others: MonthCount::default(),
            lease: self.fleet.then(Lease::default),
        });
        self.licenses.insert(id.to_owned(), meter.clone());
        meter
    }

    /// The meter of a flow (created at zero when new).
    pub fn flow(&mut self, id: &str) -> Arc<FlowMeter> {
        if let Some(meter) = self.flows.get(id) {
            return meter.clone();
        }
        let meter = Arc::new(FlowMeter {
            id: id.into(),
            committed: MonthCount::default(),
            others: MonthCount::default(),
        });
        self.flows.insert(id.to_owned(), meter.clone());
        meter
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use super::*;

    const NOV: u32 = 2026 * 12 + 10;
    const DEC: u32 = NOV + 1;

    #[test]
    fn the_hard_limit_holds_under_contention() {
        let mut meters = Meters::default();
        let license = meters.license("L");
        let flow = meters.flow("f");
        let barrier = Barrier::new(32);
        let admitted: u64 = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..32)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        let mut admitted = 0;
                        for _ in 0..100 {
                            if let Ok(reservation) =
                                Reservation::take(Some((&license, Some(22))), &flow, NOV, 1)
                            {
                                reservation.commit();
                                admitted += 1;
                            }
                        }
                        admitted
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(admitted, 22);
        assert_eq!(license.committed(NOV), 22);
        assert_eq!(license.used(NOV), 22);
        assert_eq!(flow.committed(NOV), 22);
    }

    #[test]
    fn released_reservations_free_their_slot() {
        let mut meters = Meters::default();
        let (license, flow) = (meters.license("L"), meters.flow("f"));
        let first = Reservation::take(Some((&license, Some(2))), &flow, NOV, 1).unwrap();
        let second = Reservation::take(Some((&license, Some(2))), &flow, NOV, 1).unwrap();
        assert_eq!(
            Reservation::take(Some((&license, Some(2))), &flow, NOV, 1).unwrap_err(),
            Shortfall::AtLimit(AtLimit { used: 2 })
        );
        drop(second);
        assert_eq!(license.used(NOV), 1);
        let third = Reservation::take(Some((&license, Some(2))), &flow, NOV, 1).unwrap();
        assert_eq!(
            first.commit(),
            Committed {
                month: NOV,
                records: 1,
                before: 0,
                after: 1
            }
        );
        assert_eq!(
            third.commit(),
            Committed {
                month: NOV,
                records: 1,
                before: 1,
                after: 2
            }
        );
        assert_eq!(flow.committed(NOV), 2);
    }

    #[test]
    fn a_new_month_starts_from_zero_and_old_reservations_do_not_leak_into_it() {
        let mut meters = Meters::seeded(
            NOV,
            &HashMap::from([("L".to_owned(), 22)]),
            &HashMap::new(),
            false,
        );
        let (license, flow) = (meters.license("L"), meters.flow("f"));
        assert_eq!(
            Reservation::take(Some((&license, Some(22))), &flow, NOV, 1).unwrap_err(),
            Shortfall::AtLimit(AtLimit { used: 22 })
        );
        let december = Reservation::take(Some((&license, Some(22))), &flow, DEC, 1).unwrap();
        assert_eq!(license.used(DEC), 1);
        assert_eq!(
            license.committed(DEC),
            0,
            "nothing is committed in December yet"
        );
        assert_eq!(
            license.committed(NOV),
            22,
            "November's count stays until December's first commit"
        );
        drop(december);
        assert_eq!(license.used(DEC), 0);
    }

    #[test]
    fn loads_without_a_license_budget_count_for_the_flow_only() {
        let mut meters = Meters::default();
        let flow = meters.flow("f");
        let reservation = Reservation::take(None, &flow, NOV, 1).unwrap();
        assert_eq!(
            reservation.commit(),
            Committed {
                month: NOV,
                records: 1,
                before: 0,
                after: 0
            }
        );
        assert_eq!(flow.committed(NOV), 1);
    }

    #[test]
    fn a_batch_is_reserved_whole_or_not_at_all_and_unaccepted_records_go_back() {
        let mut meters = Meters::default();
        let (license, flow) = (meters.license("L"), meters.flow("f"));
        let batch = Reservation::take(Some((&license, Some(110))), &flow, NOV, 50).unwrap();
        assert_eq!(license.used(NOV), 50);
        let second = Reservation::take(Some((&license, Some(110))), &flow, NOV, 50).unwrap();
        assert_eq!(
            Reservation::take(Some((&license, Some(110))), &flow, NOV, 11).unwrap_err(),
            Shortfall::AtLimit(AtLimit { used: 100 }),
            "11 do not fit in the 10 left: none is reserved"
        );
        assert_eq!(license.used(NOV), 100);
        assert_eq!(
            batch.commit_accepted(47),
            Committed {
                month: NOV,
                records: 47,
                before: 0,
                after: 47
            }
        );
        assert_eq!(license.used(NOV), 97, "the 3 not created went back");
        assert_eq!(
            second.commit_accepted(80).records,
            50,
            "never more than reserved"
        );
        assert_eq!((license.committed(NOV), flow.committed(NOV)), (97, 97));
        let last = Reservation::take(Some((&license, Some(110))), &flow, NOV, 13).unwrap();
        assert_eq!(last.records(), 13);
        drop(last);
        assert_eq!(license.used(NOV), 97);
        let nothing = Reservation::take(Some((&license, Some(110))), &flow, NOV, 0).unwrap();
        assert_eq!(nothing.commit().records, 0);
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// What a test does next to a license's meter.
    #[derive(Debug, Clone)]
    enum Step {
        /// Reserve a batch of records in the current month.
        Reserve(u64),
        /// Commit the n-th outstanding reservation (modulo how many there are), the target
        /// having created this many of its records.
        Commit(usize, u64),
        /// Drop the n-th outstanding reservation (the target refused, the upstream failed).
        Release(usize),
        /// The month turns.
        NextMonth,
        /// A clock that goes back a month (reservations land in the later month).
        PreviousMonth,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0u64..4).prop_map(|n| Step::Reserve(if n == 3 { 7 } else { 1 + n / 2 })),
            4 => (any::<usize>(), 0u64..8).prop_map(|(n, accepted)| Step::Commit(n, accepted)),
            2 => any::<usize>().prop_map(Step::Release),
            1 => Just(Step::NextMonth),
            1 => Just(Step::PreviousMonth),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Whatever the interleaving of reservations (single loads and batches), commits of all
        /// or part of a batch, releases and rollovers, no month ever has more committed records
        /// than the hard limit, a month's count is exactly the records committed in it, and a
        /// released reservation frees its slots.
        #[test]
        fn no_interleaving_passes_the_hard_limit(
            hard in 0u64..12,
            steps in prop::collection::vec(step(), 0..200),
        ) {
            const FIRST: u32 = 2026 * 12;
            let mut meters = Meters::default();
            let (license, flow) = (meters.license("L"), meters.flow("f"));
            let mut month = FIRST;
            let mut outstanding: Vec<Reservation> = Vec::new();
            let mut commits: HashMap<u32, u64> = HashMap::new();
            for step in steps {
                match step {
                    Step::Reserve(records) => {
                        if let Ok(reservation) = Reservation::take(Some((&license, Some(hard))), &flow, month, records) {
                            outstanding.push(reservation);
                        } else {
                            let (latest, _) = unpack(license.used.0.load(Ordering::Acquire));
                            prop_assert!(license.used(latest) + records > hard, "refused a batch that fits");
                        }
                    }
                    Step::Commit(n, accepted) if !outstanding.is_empty() => {
                        let reservation = outstanding.remove(n % outstanding.len());
                        let reserved = reservation.records();
                        let committed = reservation.commit_accepted(accepted);
                        prop_assert_eq!(committed.records, accepted.min(reserved));
                        if committed.after > 0 {
                            *commits.entry(committed.month).or_default() += committed.records;
                        }
                    }
                    Step::Release(n) if !outstanding.is_empty() => {
                        drop(outstanding.remove(n % outstanding.len()));
                    }
                    Step::NextMonth => month += 1,
                    Step::PreviousMonth => month = month.saturating_sub(1).max(FIRST),
                    _ => {}
                }
                for m in FIRST..=FIRST + 200 {
                    prop_assert!(license.committed(m) <= hard, "month {m} passed the hard limit");
                    prop_assert!(license.used(m) <= hard, "month {m} admitted past the hard limit");
                }
            }
            let (latest, _) = unpack(license.committed.0.load(Ordering::Acquire));
            prop_assert_eq!(license.committed(latest), commits.get(&latest).copied().unwrap_or(0));
            drop(outstanding);
            let (latest_used, _) = unpack(license.used.0.load(Ordering::Acquire));
            prop_assert_eq!(
                license.used(latest_used),
                license.committed(latest_used),
                "every outstanding reservation gave its slot back"
            );
        }
    }
}
