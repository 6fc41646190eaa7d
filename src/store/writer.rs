//! The count writer: one thread that owns count commits. In `strict` durability every load
//! waiting at a moment shares one journal frame, written with one `write` and one `fdatasync`
//! (group commit), and is answered only after it; the journal is folded into redb off the
//! request path ([`super::committer`]). In `batched` durability counts gather in memory and
//! go to redb every `flush_interval`, without waking the writer per load. A failed commit keeps
//! its counts for the next attempt, so the store catches up with the in-memory counters instead
//! of silently undercounting.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::Thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use tokio::sync::oneshot;

use super::committer::Committer;
use super::counts::{CountBatch, CountKey};
use super::{Store, StoreError};

/// One counted load (of one record, or a bulk load's accepted records) to persist.
#[derive(Debug, Clone)]
pub struct CountItem {
    /// How many records it counted.
    pub records: u64,
    /// The license whose budget it used, if any.
    pub license: Option<Arc<str>>,
    /// The flow it belongs to.
    pub flow: Arc<str>,
    /// The month whose budget it counted against (`year * 12 + month0`, licensing time zone).
    pub month: u32,
    /// The local day it was counted on (licensing time zone), for the daily chart.
    pub day: NaiveDate,
    /// When the load was counted; commits raise the clock high-water mark to it.
    pub at: DateTime<Utc>,
}

/// Answers whoever waits for a commit (a flush).
type Ack = oneshot::Sender<Result<(), StoreError>>;

/// Answers a strict load waiting for its count to be durable.
type LoadAck = oneshot::Sender<Answer>;

/// A commit batch's outcome as one waiting load gets it. The writer wakes one load of the
/// batch from its thread and hands it the others' answers to pass on from the async runtime,
/// where waking a task needs no system call: one cross-thread wake-up per batch, not per load.
struct Answer {
    result: Result<(), StoreError>,
    /// The other loads of the batch, answered when this answer is dropped.
    relay: Vec<LoadAck>,
}

impl Drop for Answer {
    /// Answers the relayed loads: on the runtime once the load read its answer, or wherever the
    /// answer is dropped when its load was gone.
    fn drop(&mut self) {
        for other in self.relay.drain(..) {
            let _ = other.send(Answer {
                result: self.result.clone(),
                relay: Vec::new(),
            });
        }
    }
}

enum Message {
    Count(CountItem, Option<LoadAck>),
    HighWater(DateTime<Utc>),
    /// Put everything recorded so far into redb's tables.
    Flush(Ack),
    /// Commit what is pending and end the thread.
    Stop,
}

/// The handle the request path records counted loads with.
#[derive(Clone)]
pub struct Recorder {
    tx: Sender<Message>,
    strict: bool,
    /// The writer thread, woken for flushes in batched durability (it does not wait on the
    /// channel there, so that a count costs no wake-up).
    writer: Thread,
    /// The writer thread, joined by [`Recorder::stop_blocking`].
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Recorder {
    /// Starts the writer thread over `store` (in strict durability with the store's journal).
    pub fn start(
        store: Arc<Store>,
        strict: bool,
        flush_interval: Duration,
    ) -> Result<Recorder, StoreError> {
        let committer = strict.then(|| Committer::new(&store)).transpose()?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tollgate-store-writer".into())
            .spawn(move || match committer {
                Some(committer) => run_strict(&store, &rx, committer),
                None => run_batched(&store, &rx, flush_interval),
            })
            .map_err(|err| StoreError(format!("cannot start the writer thread: {err}")))?;
        Ok(Recorder {
            tx,
            strict,
            writer: thread.thread().clone(),
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
        })
    }

    /// Records a counted load; in strict durability resolves once its count is on disk.
    pub async fn record(&self, item: CountItem) -> Result<(), StoreError> {
        if !self.strict {
            return self
                .tx
                .send(Message::Count(item, None))
                .map_err(|_| stopped());
        }
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Message::Count(item, Some(ack)))
            .map_err(|_| stopped())?;
        let answer = done.await.map_err(|_| stopped())?;
        let result = answer.result.clone();
        drop(answer);
        result
    }

    /// Raises the persisted clock high-water mark (written with the next commit).
    pub fn high_water(&self, now: DateTime<Utc>) {
        let _ = self.tx.send(Message::HighWater(now));
    }

    /// Puts every count recorded so far into the store's tables, durably (strict: folds the
    /// journal; batched: commits what is pending), so that readers of the tables see them.
    /// Waits on the calling thread (the control plane's, never the async runtime's).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx.send(Message::Flush(ack)).map_err(|_| stopped())?;
        self.writer.unpark();
        done.blocking_recv().map_err(|_| stopped())?
    }

    /// Commits what is pending, ends the writer thread and joins it (shutdown, after the last
    /// counted load); later records fail with "the store writer has stopped".
    pub fn stop_blocking(&self) {
        let _ = self.tx.send(Message::Stop);
        self.writer.unpark();
        let thread = self.thread.lock().ok().and_then(|mut thread| thread.take());
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!("the store writer thread panicked");
            }
        }
    }
}

fn stopped() -> StoreError {
    StoreError("the store writer has stopped".into())
}

/// What the writer holds between commits.
#[derive(Default)]
struct Pending {
    counts: CountBatch,
    high_water: Option<DateTime<Utc>>,
    /// Loads waiting for their counts to be durable.
    loads: Vec<LoadAck>,
    /// Flushes waiting for everything to be in redb's tables.
    flushes: Vec<Ack>,
    stop: bool,
}

impl Pending {
    fn take(&mut self, message: Message) {
        match message {
            Message::Count(item, ack) => {
                let key = CountKey {
                    license: item.license,
                    flow: item.flow,
                    month: item.month,
                    day: item.day,
                };
                self.counts.add(key, item.records);
                self.high_water = self.high_water.max(Some(item.at));
                self.loads.extend(ack);
            }
            Message::HighWater(now) => self.high_water = self.high_water.max(Some(now)),
            Message::Flush(ack) => self.flushes.push(ack),
            Message::Stop => self.stop = true,
        }
    }

    /// Takes every message already queued; false once every sender is gone.
    fn drain(&mut self, rx: &Receiver<Message>) -> bool {
        loop {
            match rx.try_recv() {
                Ok(message) => self.take(message),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Strict: journals the pending counts and answers the loads waiting on them.
    fn journal(&mut self, store: &Store, committer: &mut Committer) {
        let result = committer.commit(store, &mut self.counts, &mut self.high_water);
        if let Err(err) = &result {
            tracing::error!(error = %err, "counts could not be journaled; they are kept and retried");
        }
        answer_loads(&mut self.loads, &result);
    }

    /// Batched: commits the pending counts to redb.
    fn commit(&mut self, store: &Store) -> Result<(), StoreError> {
        if self.counts.is_empty() && self.high_water.is_none() {
            return Ok(());
        }
        let result = store.commit_counts(&self.counts, self.high_water, None);
        match &result {
            Ok(()) => {
                self.counts.clear();
                self.high_water = None;
            }
            Err(err) => {
                tracing::error!(error = %err, "counts could not be committed; they are kept and retried")
            }
        }
        result
    }
}

/// Answers the waiting loads through one of them (see [`Answer`]).
fn answer_loads(waiting: &mut Vec<LoadAck>, result: &Result<(), StoreError>) {
    let mut rest = std::mem::take(waiting);
    if let Some(first) = rest.pop() {
        // A load that is gone drops the answer here, which answers the others.
        let _ = first.send(Answer {
            result: result.clone(),
            relay: rest,
        });
    }
}

fn answer(waiting: &mut Vec<Ack>, result: &Result<(), StoreError>) {
    for ack in waiting.drain(..) {
        let _ = ack.send(result.clone());
    }
}

/// Folds, answering the flushes waiting on it; a failure is logged and retried later.
fn fold(store: &Store, committer: &mut Committer, flushes: &mut Vec<Ack>) {
    let result = committer.fold(store);
    if let Err(err) = &result {
        tracing::error!(error = %err, "journaled counts could not be folded into the store; they stay in the journal and are retried");
    }
    answer(flushes, &result);
}

fn run_strict(store: &Store, rx: &Receiver<Message>, mut committer: Committer) {
    let mut pending = Pending::default();
    loop {
        // Group commit: block for the first message (or until a fold is due), then take
        // everything that queued meanwhile.
        let first = match committer.fold_due() {
            Some(due) => match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => {
                    fold(store, &mut committer, &mut Vec::new());
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(message) => message,
                Err(_) => break,
            },
        };
        pending.take(first);
        // Let the request path run on until it waits too (it shares a CPU with this thread
        // when the sidecar is pinned to one): the loads it counts meanwhile join this batch,
        // so a frame carries more loads and the wake-ups and device writes per load drop.
        // Where this thread has a CPU of its own the yield returns at once.
        std::thread::yield_now();
        let connected = pending.drain(rx);
        pending.journal(store, &mut committer);
        if !pending.flushes.is_empty() || committer.should_fold() {
            fold(store, &mut committer, &mut pending.flushes);
        }
        if pending.stop || !connected {
            break;
        }
    }
    pending.journal(store, &mut committer);
    fold(store, &mut committer, &mut pending.flushes);
}

fn run_batched(store: &Store, rx: &Receiver<Message>, flush_interval: Duration) {
    let mut pending = Pending::default();
    let mut deadline = Instant::now() + flush_interval;
    loop {
        // Counts queue without waking this thread; flushes and stops unpark it.
        std::thread::park_timeout(deadline.saturating_duration_since(Instant::now()));
        let connected = pending.drain(rx);
        let due = Instant::now() >= deadline;
        if due || !pending.flushes.is_empty() || pending.stop || !connected {
            let result = pending.commit(store);
            answer(&mut pending.flushes, &result);
            if due {
                deadline = Instant::now() + flush_interval;
            }
        }
        if pending.stop || !connected {
            return;
        }
    }
}

#[cfg(test)]
impl Recorder {
    /// Flushes from async test code, on a blocking thread (a flush blocks until it is done).
    pub(super) async fn flushed(&self) -> Result<(), StoreError> {
        let recorder = self.clone();
        tokio::task::spawn_blocking(move || recorder.flush_blocking())
            .await
            .expect("the flush's thread")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(flow: &str) -> CountItem {
        let at = DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        CountItem {
            records: 1,
            license: Some("L".into()),
            flow: flow.into(),
            month: 2026 * 12 + 10,
            day: at.date_naive(),
            at,
        }
    }

    #[tokio::test]
    async fn strict_records_are_on_disk_when_they_resolve_bulk_loads_included() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let recorder = Recorder::start(store.clone(), true, Duration::from_millis(200)).unwrap();
        let loads: Vec<_> = (0..50)
            .map(|i| {
                let recorder = recorder.clone();
                tokio::spawn(async move {
                    // Odd loads are bulk loads of three records.
                    let load = match i % 2 {
                        0 => item("a"),
                        _ => CountItem {
                            records: 3,
                            ..item("b")
                        },
                    };
                    recorder.record(load).await
                })
            })
            .collect();
        for load in loads {
            load.await.unwrap().unwrap();
        }
        // On disk in the journal: a store opened from the files as they are now (a crash
        // here) has them all.
        let copy = tempfile::tempdir().unwrap();
        for file in [super::super::FILE, super::super::journal::FILE] {
            std::fs::copy(dir.path().join(file), copy.path().join(file)).unwrap();
        }
        let reopened = Store::open(copy.path()).unwrap();
        assert_eq!(reopened.license_month("L", "2026-11").unwrap(), 100);
        assert_eq!(reopened.flow_month("a", "2026-11").unwrap(), 25);
        assert_eq!(reopened.flow_month("b", "2026-11").unwrap(), 75);
        assert_eq!(
            reopened
                .license_days("L", "2026-11")
                .unwrap()
                .get("2026-11-26"),
            Some(&100)
        );
        assert_eq!(
            reopened.high_water().unwrap(),
            Some(item("a").at),
            "count commits carry the high-water mark"
        );
        // A flush folds the journal into the running store's tables.
        recorder.flushed().await.unwrap();
        assert_eq!(store.license_month("L", "2026-11").unwrap(), 100);
    }

    #[tokio::test]
    async fn every_load_of_a_batch_is_answered_even_when_the_one_woken_is_gone() {
        let loads: Vec<_> = (0..4).map(|_| oneshot::channel::<Answer>()).collect();
        let (mut acks, mut waits): (Vec<_>, Vec<_>) = loads.into_iter().unzip();
        // The writer wakes the last load of the batch; that one was dropped.
        drop(waits.pop());
        answer_loads(&mut acks, &Err(StoreError("disk on fire".into())));
        for wait in waits {
            let answer = wait.await.expect("answered");
            assert_eq!(answer.result.clone().unwrap_err().0, "disk on fire");
        }
    }

    #[tokio::test]
    async fn stopping_commits_what_is_pending_and_joins_the_writer() {
        for strict in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(Store::open(dir.path()).unwrap());
            let recorder =
                Recorder::start(store.clone(), strict, Duration::from_secs(3600)).unwrap();
            for _ in 0..3 {
                recorder.record(item("a")).await.unwrap();
            }
            let stopping = recorder.clone();
            tokio::task::spawn_blocking(move || stopping.stop_blocking())
                .await
                .unwrap();
            assert_eq!(
                store.flow_month("a", "2026-11").unwrap(),
                3,
                "strict {strict}"
            );
            assert!(
                recorder.record(item("a")).await.is_err(),
                "the writer is gone"
            );
        }
    }

    #[tokio::test]
    async fn batched_records_reach_disk_by_the_flush() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let recorder = Recorder::start(store.clone(), false, Duration::from_secs(3600)).unwrap();
        for _ in 0..7 {
            recorder.record(item("a")).await.unwrap();
        }
        assert_eq!(
            store.flow_month("a", "2026-11").unwrap(),
            0,
            "not before the flush"
        );
        recorder.flushed().await.unwrap();
        assert_eq!(store.flow_month("a", "2026-11").unwrap(), 7);
    }

    #[tokio::test]
    async fn batched_records_reach_disk_within_the_flush_interval_without_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let recorder = Recorder::start(store.clone(), false, Duration::from_millis(50)).unwrap();
        for _ in 0..4 {
            recorder.record(item("a")).await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.flow_month("a", "2026-11").unwrap() < 4 {
            assert!(
                Instant::now() < deadline,
                "the interval's commit never came"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
