//! The count writer: one thread that owns count commits. In `strict` durability every load
//! waiting at a moment shares one transaction and one fsync (group commit) and is answered
//! only after it; in `batched` durability counts are flushed every `flush_interval`. A
//! failed commit keeps its counts for the next attempt, so the store catches up with the
//! in-memory counters instead of silently undercounting.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::{CountBatch, Store, StoreError};

/// One counted load (of one record, or a bulk load's accepted records) to persist.
#[derive(Debug, Clone)]
pub struct CountItem {
    /// How many records it counted.
    pub records: u64,
    /// The license whose budget it used, if any.
    pub license: Option<Arc<str>>,
    /// The flow it belongs to.
    pub flow: Arc<str>,
    /// `YYYY-MM` in the licensing time zone.
    pub month: String,
    /// `YYYY-MM-DD` in the licensing time zone.
    pub day: String,
    /// When the load was counted; commits raise the clock high-water mark to it.
    pub at: DateTime<Utc>,
}

enum Message {
    Count(CountItem, Option<oneshot::Sender<Result<(), StoreError>>>),
    HighWater(DateTime<Utc>),
    Flush(oneshot::Sender<Result<(), StoreError>>),
    /// Commit what is pending and end the thread.
    Stop,
}

/// The handle the request path records counted loads with.
#[derive(Clone)]
pub struct Recorder {
    tx: Sender<Message>,
    strict: bool,
    /// The writer thread, joined by [`Recorder::stop_blocking`].
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Recorder {
    /// Starts the writer thread over `store`.
    pub fn start(
        store: Arc<Store>,
        strict: bool,
        flush_interval: Duration,
    ) -> Result<Recorder, StoreError> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tollgate-store-writer".into())
            .spawn(move || run(&store, &rx, strict, flush_interval))
            .map_err(|err| StoreError(format!("cannot start the writer thread: {err}")))?;
        Ok(Recorder {
            tx,
            strict,
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
        done.await.map_err(|_| stopped())?
    }

    /// Raises the persisted clock high-water mark (written with the next commit).
    pub fn high_water(&self, now: DateTime<Utc>) {
        let _ = self.tx.send(Message::HighWater(now));
    }

    /// Writes everything pending, durably; waits on the calling thread (the control plane's,
    /// never the async runtime's).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx.send(Message::Flush(ack)).map_err(|_| stopped())?;
        done.blocking_recv().map_err(|_| stopped())?
    }

    /// Commits what is pending, ends the writer thread and joins it (shutdown, after the last
    /// counted load); later records fail with "the store writer has stopped".
    pub fn stop_blocking(&self) {
        let _ = self.tx.send(Message::Stop);
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
    batch: CountBatch,
    high_water: Option<DateTime<Utc>>,
    acks: Vec<oneshot::Sender<Result<(), StoreError>>>,
}

impl Pending {
    fn take(&mut self, message: Message) {
        match message {
            Message::Count(item, ack) => {
                if let Some(license) = &item.license {
                    *self
                        .batch
                        .license_months
                        .entry((license.to_string(), item.month.clone()))
                        .or_default() += item.records;
                    *self
                        .batch
                        .license_days
                        .entry((license.to_string(), item.day))
                        .or_default() += item.records;
                }
                *self
                    .batch
                    .flow_months
                    .entry((item.flow.to_string(), item.month))
                    .or_default() += item.records;
                self.high_water = self.high_water.max(Some(item.at));
                self.acks.extend(ack);
            }
            Message::HighWater(now) => self.high_water = self.high_water.max(Some(now)),
            Message::Flush(ack) => self.acks.push(ack),
            Message::Stop => {}
        }
    }

    /// Commits what is pending; on failure keeps the counts and fails the waiting loads.
    fn commit(&mut self, store: &Store) {
        if self.batch.is_empty() && self.high_water.is_none() && self.acks.is_empty() {
            return;
        }
        let result = store.commit_counts(&self.batch, self.high_water, true);
        match &result {
            Ok(()) => {
                self.batch = CountBatch::default();
                self.high_water = None;
            }
            Err(err) => {
                tracing::error!(error = %err, "counts could not be committed; they are kept and retried")
            }
        }
        for ack in self.acks.drain(..) {
            let _ = ack.send(result.clone());
        }
    }
}

fn run(store: &Store, rx: &Receiver<Message>, strict: bool, flush_interval: Duration) {
    let mut pending = Pending::default();
    if strict {
        // Group commit: block for the first message, take everything that queued meanwhile.
        while let Ok(message) = rx.recv() {
            let mut stop = matches!(message, Message::Stop);
            pending.take(message);
            while let Ok(message) = rx.try_recv() {
                stop |= matches!(message, Message::Stop);
                pending.take(message);
            }
            pending.commit(store);
            if stop {
                return;
            }
        }
    } else {
        let mut deadline = Instant::now() + flush_interval;
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(message @ Message::Flush(_)) => {
                    pending.take(message);
                    pending.commit(store);
                }
                Ok(Message::Stop) => break,
                Ok(message) => pending.take(message),
                Err(RecvTimeoutError::Timeout) => {
                    pending.commit(store);
                    deadline = Instant::now() + flush_interval;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    }
    pending.commit(store);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(flow: &str) -> CountItem {
        CountItem {
            records: 1,
            license: Some("L".into()),
            flow: flow.into(),
            month: "2026-11".into(),
            day: "2026-11-26".into(),
            at: DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
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
        assert_eq!(store.license_month("L", "2026-11").unwrap(), 100);
        assert_eq!(store.flow_month("a", "2026-11").unwrap(), 25);
        assert_eq!(store.flow_month("b", "2026-11").unwrap(), 75);
        assert_eq!(
            store
                .license_days("L", "2026-11")
                .unwrap()
                .get("2026-11-26"),
            Some(&100)
        );
        assert_eq!(
            store.high_water().unwrap(),
            Some(item("a").at),
            "count commits carry the high-water mark"
        );
    }

    #[tokio::test]
    async fn stopping_commits_what_is_pending_and_joins_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let recorder = Recorder::start(store.clone(), false, Duration::from_secs(3600)).unwrap();
        for _ in 0..3 {
            recorder.record(item("a")).await.unwrap();
        }
        let stopping = recorder.clone();
        tokio::task::spawn_blocking(move || stopping.stop_blocking())
            .await
            .unwrap();
        assert_eq!(store.flow_month("a", "2026-11").unwrap(), 3);
        assert!(
            recorder.record(item("a")).await.is_err(),
            "the writer is gone"
        );
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
        let flushing = recorder.clone();
        tokio::task::spawn_blocking(move || flushing.flush_blocking())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(store.flow_month("a", "2026-11").unwrap(), 7);
    }
}
