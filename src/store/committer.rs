//! Strict durability's commit path, synchronous (the writer thread drives it): a commit batch
//! becomes one journal frame, written and synced once; what the journal holds is folded into
//! redb every [`FOLD_EVERY`], when the journal is half full, and when a reader or shutdown asks.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::counts::CountBatch;
use super::journal::Journal;
use super::{Store, StoreError};

/// How long journaled counts wait at most before they are folded into redb.
pub(super) const FOLD_EVERY: Duration = Duration::from_secs(1);

/// The journal and what it holds that redb does not yet.
pub(super) struct Committer {
    journal: Journal,
    /// Counts of the frames since the last fold.
    unfolded: CountBatch,
    /// The high-water mark to write with the next fold.
    high_water: Option<DateTime<Utc>>,
    /// The last frame redb holds.
    folded: u64,
    /// When the oldest thing not yet folded arrived.
    since: Option<Instant>,
}

impl Committer {
    /// Takes the store's journal (replayed at open, so redb holds every frame written so far).
    pub(super) fn new(store: &Store) -> Result<Committer, StoreError> {
        let journal = store
            .take_journal()
            .ok_or_else(|| StoreError("the count journal is in use by another writer".into()))?;
        Ok(Committer {
            folded: journal.last_seq(),
            journal,
            unfolded: CountBatch::default(),
            high_water: None,
            since: None,
        })
    }

    /// Makes `counts` durable in the journal, emptying it (and taking `high_water`) once they are;
    /// on failure what was not journaled stays in `counts`. A full journal is folded first; a
    /// batch larger than the whole journal goes there in parts.
    pub(super) fn commit(
        &mut self,
        store: &Store,
        counts: &mut CountBatch,
        high_water: &mut Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        if self.append(counts, high_water)? {
            return Ok(());
        }
        self.fold(store)?;
        if self.append(counts, high_water)? {
            return Ok(());
        }
        if counts.len() < 2 {
            return Err(StoreError(
                "a count's ids are larger than the whole count journal".into(),
            ));
        }
        let mut rest = counts.split_off_half();
        let first = self.commit(store, counts, high_water);
        let second = first
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|()| self.commit(store, &mut rest, &mut None));
        counts.merge(&rest);
        second
    }

    /// One frame of `counts`; false when it does not fit in what is left of the journal.
    fn append(
        &mut self,
        counts: &mut CountBatch,
        high_water: &mut Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        if counts.is_empty() {
            self.raise(high_water.take());
            return Ok(true);
        }
        if self.journal.append(counts, *high_water)?.is_none() {
            return Ok(false);
        }
        self.unfolded.merge(counts);
        counts.clear();
        self.raise(high_water.take());
        Ok(true)
    }

    /// Raises the high-water mark the next fold writes.
    pub(super) fn raise(&mut self, high_water: Option<DateTime<Utc>>) {
        if high_water.is_some() {
            self.high_water = self.high_water.max(high_water);
            self.since.get_or_insert_with(Instant::now);
        }
        if !self.unfolded.is_empty() {
            self.since.get_or_insert_with(Instant::now);
        }
    }

    /// When the next fold is due, if anything waits for one.
    pub(super) fn fold_due(&self) -> Option<Instant> {
        self.since.map(|since| since + FOLD_EVERY)
    }

    /// Whether a fold should run now: one is due, or the journal is half full.
    pub(super) fn should_fold(&self) -> bool {
        self.journal.half_full() || self.fold_due().is_some_and(|due| Instant::now() >= due)
    }

    /// Adds what the journal holds since the last fold into redb, with the number of the last
    /// frame, in one durable transaction; then the journal starts over. A commit that reports a
    /// failure but landed (its mark is in redb) counts as done, so nothing is added twice.
    pub(super) fn fold(&mut self, store: &Store) -> Result<(), StoreError> {
        let last = self.journal.last_seq();
        if last == self.folded && self.high_water.is_none() {
            return Ok(());
        }
        let mark = (last > self.folded).then_some(last);
        if let Err(err) = store.commit_counts(&self.unfolded, self.high_water, mark) {
            let landed = mark.is_some() && store.journal_folded().ok() == mark;
            if !landed {
                return Err(err);
            }
        }
        self.folded = last;
        self.unfolded.clear();
        self.high_water = None;
        self.since = None;
        self.journal.reset();
        Ok(())
    }
}
