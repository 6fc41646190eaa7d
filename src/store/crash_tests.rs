//! Crashes and damage around the count journal: every count a commit acknowledged is in the
//! store after a restart, nothing is counted twice, and a journal that cannot be trusted is
//! refused with a sentence naming it. The disks are in memory ([`super::test_disk`]): a crash
//! loses the journal's unsynced writes, whole or by the sector.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use chrono::NaiveDate;
use proptest::prelude::*;

use super::committer::Committer;
use super::counts::{CountBatch, CountKey};
use super::test_disk::MemoryStore;
use super::{frame, Store};

/// Frames start here in a journal file (after the header).
const FRAMES: usize = 4096;
const NOVEMBER: u32 = 2026 * 12 + 10;

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
}

/// `records` of each of `flows` (all under license `L`).
fn counts(flows: &[(usize, u64)]) -> CountBatch {
    let mut batch = CountBatch::default();
    for &(flow, records) in flows {
        batch.add(
            CountKey {
                license: Some("L".into()),
                flow: format!("flow-{flow}").into(),
                month: NOVEMBER,
                day: day(),
            },
            records,
        );
    }
    batch
}

/// Records per flow in the store's tables, and the license's total.
fn stored(store: &Store) -> (BTreeMap<String, u64>, u64) {
    let (licenses, flows) = store.month("2026-11").unwrap();
    let days = store.license_days("L", "2026-11").unwrap();
    let license = licenses.get("L").copied().unwrap_or(0);
    assert_eq!(
        days.values().sum::<u64>(),
        license,
        "the daily chart adds up to the month"
    );
    assert_eq!(
        flows.values().sum::<u64>(),
        license,
        "the flows add up to the license"
    );
    (flows.into_iter().collect(), license)
}

fn totals(batch: &CountBatch) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (key, records) in batch.iter() {
        *out.entry(key.flow.to_string()).or_default() += records;
    }
    out
}

/// Journals `batch` durably (asserting it worked).
fn commit(committer: &mut Committer, store: &Store, batch: &[(usize, u64)]) {
    let mut batch = counts(batch);
    committer
        .commit(store, &mut batch, &mut None)
        .expect("journaled");
    assert!(batch.is_empty());
}

fn flow_counts(pairs: &[(usize, u64)]) -> BTreeMap<String, u64> {
    totals(&counts(pairs))
}

#[test]
fn crash_after_the_journal_write_before_the_fold_replays_the_frames_once() {
    let disks = MemoryStore::new(FRAMES + (64 << 10));
    let store = disks.open().unwrap();
    let mut committer = Committer::new(&store).unwrap();
    commit(&mut committer, &store, &[(1, 2), (2, 1)]);
    commit(&mut committer, &store, &[(1, 3)]);
    assert_eq!(stored(&store).1, 0, "nothing folded yet");
    drop((committer, store));

    // Restart after restart: the frames are applied once, however often it crashes again.
    for _ in 0..3 {
        disks.journal.crash(|_| false);
        let store = disks.open().unwrap();
        assert_eq!(stored(&store), (flow_counts(&[(1, 5), (2, 1)]), 6));
    }
}

#[test]
fn crash_mid_fold_keeps_the_frames_for_replay() {
    let disks = MemoryStore::new(FRAMES + (64 << 10));
    let store = disks.open().unwrap();
    let mut committer = Committer::new(&store).unwrap();
    commit(&mut committer, &store, &[(1, 4)]);
    disks.full.store(true, Ordering::SeqCst);
    assert!(
        committer.fold(&store).is_err(),
        "the fold's transaction fails"
    );
    drop((committer, store));
    disks.full.store(false, Ordering::SeqCst);
    disks.journal.crash(|_| false);
    let store = disks.open().unwrap();
    assert_eq!(stored(&store), (flow_counts(&[(1, 4)]), 4));
}

#[test]
fn crash_after_the_fold_before_new_frames_applies_nothing_twice() {
    let disks = MemoryStore::new(FRAMES + (64 << 10));
    let store = disks.open().unwrap();
    let mut committer = Committer::new(&store).unwrap();
    commit(&mut committer, &store, &[(1, 4)]);
    commit(&mut committer, &store, &[(2, 1)]);
    committer.fold(&store).unwrap();
    drop((committer, store));
    disks.journal.crash(|_| false);
    let store = disks.open().unwrap();
    assert_eq!(stored(&store), (flow_counts(&[(1, 4), (2, 1)]), 5));

    // After a fold the next frame overwrites the first folded one; a crash that tears it
    // leaves the folded frames behind it, which replay skips.
    let mut committer = Committer::new(&store).unwrap();
    let mut batch = counts(&[(3, 7)]);
    disks.journal.set_failing_syncs(true);
    assert!(committer.commit(&store, &mut batch, &mut None).is_err());
    drop((committer, store));
    disks.journal.set_failing_syncs(false);
    disks.journal.crash(|sector| sector == 0);
    let store = disks.open().unwrap();
    let (flows, license) = stored(&store);
    assert!(
        license == 5 || (license == 12 && flows.get("flow-3") == Some(&7)),
        "the unacknowledged frame is applied whole or not at all: {flows:?}"
    );
}

#[test]
fn a_frame_whose_sync_failed_left_behind_by_a_fold_is_not_mistaken_for_damage() {
    let disks = MemoryStore::new(FRAMES + (64 << 10));
    let store = disks.open().unwrap();
    let mut committer = Committer::new(&store).unwrap();
    // Frame 1 spans more than a sector, so frame 2 lies in the next one.
    let wide: Vec<(usize, u64)> = (0..20).map(|flow| (flow, 1)).collect();
    commit(&mut committer, &store, &wide);
    disks.journal.set_failing_syncs(true);
    let mut pending = counts(&[(30, 1)]);
    assert!(committer.commit(&store, &mut pending, &mut None).is_err());
    committer.fold(&store).unwrap();
    // Frame 2 again, now at the start, with more in it; its sync fails too.
    pending.merge(&counts(&wide));
    assert!(committer.commit(&store, &mut pending, &mut None).is_err());
    drop((committer, store));
    // The crash keeps the first write (frame 2 behind frame 1) and the first sector of the
    // second (so the frame at the start is torn).
    disks.journal.crash(|sector| sector <= 1);
    let store = disks.open().expect("an unacknowledged frame is not damage");
    assert_eq!(stored(&store), (flow_counts(&wide), 20));
}

#[test]
fn a_full_journal_is_folded_and_written_from_its_start_again() {
    // Room for a few frames only.
    let disks = MemoryStore::new(FRAMES + 256);
    let store = disks.open().unwrap();
    let mut committer = Committer::new(&store).unwrap();
    for _ in 0..40 {
        commit(&mut committer, &store, &[(1, 1), (2, 2)]);
    }
    assert!(stored(&store).1 > 0, "full journals were folded");
    drop((committer, store));
    disks.journal.crash(|_| false);
    let store = disks.open().unwrap();
    assert_eq!(stored(&store), (flow_counts(&[(1, 40), (2, 80)]), 120));
}

#[test]
fn a_batch_larger_than_the_whole_journal_goes_there_in_parts() {
    let disks = MemoryStore::new(FRAMES + 256);
    let store = disks.open().unwrap();
    let mut committer = Committer::new(&store).unwrap();
    let many: Vec<(usize, u64)> = (0..50).map(|flow| (flow, 1)).collect();
    commit(&mut committer, &store, &many);
    drop((committer, store));
    disks.journal.crash(|_| false);
    let store = disks.open().unwrap();
    assert_eq!(stored(&store), (flow_counts(&many), 50));
}

/// The error a store refuses to open with.
fn refusal(disks: &MemoryStore) -> String {
    match disks.open() {
        Ok(_) => panic!("the store opened"),
        Err(err) => err.to_string(),
    }
}

/// Flips a byte inside the journal's second frame (past its header); returns where the
/// frame starts.
fn damage_second_frame(disks: &MemoryStore) -> usize {
    let bytes = disks.journal.durable();
    let (_, first) = frame::decode(&bytes[FRAMES..]).unwrap();
    disks.journal.damage(FRAMES + first + 24, b"\xff");
    FRAMES + first
}

#[test]
fn a_frame_damaged_before_acknowledged_ones_refuses_the_journal_and_keeps_it() {
    let disks = MemoryStore::new(FRAMES + (64 << 10));
    let store = disks.open().unwrap();
    let mut committer = Committer::new(&store).unwrap();
    for flow in 1..=3 {
        commit(&mut committer, &store, &[(flow, 1)]);
    }
    drop((committer, store));
    let second = damage_second_frame(&disks);
    let damaged = disks.journal.durable();

    let message = refusal(&disks);
    assert!(
        message.contains("state/tollgate.journal is damaged")
            && message.contains(&format!("the frame at byte {second}"))
            && message.contains("kept as it is"),
        "{message}"
    );
    assert!(disks.journal.durable() == damaged, "the journal changed");
}

#[test]
fn a_journal_damaged_at_its_last_frame_is_read_as_a_write_a_crash_cut_short() {
    let disks = MemoryStore::new(FRAMES + (64 << 10));
    let store = disks.open().unwrap();
    let mut committer = Committer::new(&store).unwrap();
    commit(&mut committer, &store, &[(1, 1)]);
    commit(&mut committer, &store, &[(2, 1)]);
    drop((committer, store));
    damage_second_frame(&disks);
    let store = disks.open().unwrap();
    assert_eq!(stored(&store), (flow_counts(&[(1, 1)]), 1));
}

#[test]
fn a_journal_with_a_damaged_header_or_cut_short_is_refused() {
    for (damage, expect) in [
        ("overwritten", "it is not a tollgate journal"),
        ("header changed", "its header is damaged"),
        ("cut short", "it is cut short"),
    ] {
        let disks = MemoryStore::new(FRAMES + 1024);
        drop(disks.open().unwrap());
        match damage {
            "overwritten" => disks.journal.damage(0, b"not a journal"),
            "header changed" => disks.journal.damage(30, b"\x00\x01"),
            _ => disks.journal.cut(FRAMES + 512),
        }
        let message = refusal(&disks);
        assert!(
            message.contains("state/tollgate.journal is damaged") && message.contains(expect),
            "{damage}: {message}"
        );
    }
}

#[test]
fn a_journal_of_another_store_is_refused() {
    let ours = MemoryStore::new(FRAMES + 1024);
    drop(ours.open().unwrap());
    let other = MemoryStore::new(FRAMES + 1024);
    drop(other.open().unwrap());
    let mut mixed = ours.crashed_copy();
    mixed.journal = other.crashed_copy().journal;
    let message = refusal(&mixed);
    assert!(message.contains("belongs to another store"), "{message}");
}

#[test]
fn a_store_older_than_its_journal_is_refused() {
    let disks = MemoryStore::new(FRAMES + (64 << 10));
    let store = disks.open().unwrap();
    let mut committer = Committer::new(&store).unwrap();
    commit(&mut committer, &store, &[(1, 1)]);
    let older = disks.crashed_copy();
    committer.fold(&store).unwrap();
    commit(&mut committer, &store, &[(1, 1)]);
    committer.fold(&store).unwrap();
    commit(&mut committer, &store, &[(1, 1)]);
    drop((committer, store));
    let mut mixed = disks.crashed_copy();
    mixed.db = older.db;
    let message = refusal(&mixed);
    assert!(
        message.contains("does not follow") && message.contains("frame 3"),
        "{message}"
    );
}

#[derive(Debug, Clone)]
enum Step {
    /// Journal a batch of (flow, records).
    Commit(Vec<(usize, u64)>),
    /// Fold the journal into redb.
    Fold,
    /// redb's disk fills up (folds fail mid-transaction) or has room again.
    RedbFull(bool),
    /// The journal's writes fail outright.
    JournalFails(bool),
    /// The journal's writes land but syncs fail: what is written may survive a crash or not.
    SyncFails(bool),
    /// The process dies; of the journal's unsynced writes the sectors the mask picks survive.
    Crash(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => prop::collection::vec((0usize..12, 1u64..5), 1..8).prop_map(Step::Commit),
        1 => prop::collection::vec((0usize..40, 1u64..3), 20..40).prop_map(Step::Commit),
        2 => Just(Step::Fold),
        1 => any::<bool>().prop_map(Step::RedbFull),
        1 => any::<bool>().prop_map(Step::JournalFails),
        1 => any::<bool>().prop_map(Step::SyncFails),
        2 => any::<u64>().prop_map(Step::Crash),
    ]
}

/// Restarts after a crash and checks what the store holds against what was acknowledged.
fn restart(
    disks: &MemoryStore,
    acknowledged: &mut BTreeMap<String, u64>,
    unacknowledged: &BTreeMap<String, u64>,
) -> Result<(Store, Committer), TestCaseError> {
    disks.full.store(false, Ordering::SeqCst);
    disks.journal.set_failing(false);
    disks.journal.set_failing_syncs(false);
    let store = disks
        .open()
        .map_err(|err| TestCaseError::fail(format!("the store did not reopen: {err}")))?;
    let (flows, _) = stored(&store);
    for flow in acknowledged.keys().chain(unacknowledged.keys()) {
        let got = flows.get(flow).copied().unwrap_or(0);
        let least = acknowledged.get(flow).copied().unwrap_or(0);
        let most = least + unacknowledged.get(flow).copied().unwrap_or(0);
        prop_assert!(
            (least..=most).contains(&got),
            "{flow}: stored {got}, acknowledged {least}, written at most {most}"
        );
    }
    for flow in flows.keys() {
        prop_assert!(
            acknowledged.contains_key(flow) || unacknowledged.contains_key(flow),
            "{flow} was never counted"
        );
    }
    *acknowledged = flows;
    let committer = Committer::new(&store).map_err(|err| TestCaseError::fail(err.to_string()))?;
    Ok((store, committer))
}

proptest! {
    // Each restart opens redb again, tens of milliseconds in a debug build: 48 sequences
    // (about 250 crashes) take about 20 s.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn after_any_crash_the_store_holds_every_acknowledged_count_and_nothing_unwritten(
        steps in prop::collection::vec(step(), 1..40)
    ) {
        // A small journal, so that it fills, folds and wraps often.
        let disks = MemoryStore::new(FRAMES + 512);
        let mut store = disks.open().unwrap();
        let mut committer = Committer::new(&store).unwrap();
        let mut acknowledged = BTreeMap::new();
        // Counted by the in-memory counters but not yet durable (their loads were refused).
        let mut pending = CountBatch::default();
        for step in steps.into_iter().chain([Step::Crash(0)]) {
            match step {
                Step::Commit(batch) => {
                    pending.merge(&counts(&batch));
                    let before = totals(&pending);
                    let _ = committer.commit(&store, &mut pending, &mut None);
                    // What left `pending` is journaled (the whole batch when the commit
                    // succeeded; a batch too large for the journal may get there in part).
                    let after = totals(&pending);
                    for (flow, n) in before {
                        let journaled = n - after.get(&flow).copied().unwrap_or(0);
                        *acknowledged.entry(flow).or_default() += journaled;
                    }
                }
                Step::Fold => {
                    let _ = committer.fold(&store);
                }
                Step::RedbFull(full) => disks.full.store(full, Ordering::SeqCst),
                Step::JournalFails(failing) => disks.journal.set_failing(failing),
                Step::SyncFails(failing) => disks.journal.set_failing_syncs(failing),
                Step::Crash(mask) => {
                    drop((committer, store));
                    disks.journal.crash(|sector| mask >> (sector % 64) & 1 == 1);
                    (store, committer) = restart(&disks, &mut acknowledged, &totals(&pending))?;
                    pending = CountBatch::default();
                }
            }
        }
    }
}
