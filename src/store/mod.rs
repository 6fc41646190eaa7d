//! Durable state in the embedded store (redb in `state.dir`): flow states and their enabling
//! order, monthly counts per license and per flow (and per license per day, for charts),
//! raised warnings, the clock high-water mark and the audit trail. The only module that
//! does disk I/O for state; counts reach it through the group-commit [`writer`], which in
//! strict durability makes them durable in the count [`journal`] first and folds them into
//! redb later. Opening the store replays what the journal holds beyond the last fold.

pub mod bench;
mod committer;
mod counts;
pub mod fleet;
mod frame;
mod journal;
mod journal_file;
pub mod writer;

pub use counts::CountBatch;
pub use writer::{CountItem, Recorder};

use std::cell::Cell;
use std::collections::BTreeMap;
use std::panic::UnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once, RwLock};

use chrono::{DateTime, Utc};
use rand_core::{OsRng, RngCore};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// File name of the store inside `state.dir`.
const FILE: &str = "tollgate.redb";

/// `license|YYYY-MM` → committed records.
const LICENSE_MONTHS: TableDefinition<&str, u64> = TableDefinition::new("license_months");
/// `flow|YYYY-MM` → committed records.
const FLOW_MONTHS: TableDefinition<&str, u64> = TableDefinition::new("flow_months");
/// `license|YYYY-MM-DD` → committed records that day.
const LICENSE_DAYS: TableDefinition<&str, u64> = TableDefinition::new("license_days");
/// `license|YYYY-MM` → "warning" or "limit" flags raised that month (JSON).
const MARKS: TableDefinition<&str, &str> = TableDefinition::new("marks");
/// Flow id → its stored state (JSON).
const FLOWS: TableDefinition<&str, &str> = TableDefinition::new("flows");
/// Singletons: the clock high-water mark.
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
/// Sequence → audit event (JSON), append-only.
const AUDIT: TableDefinition<u64, &str> = TableDefinition::new("audit");

/// Key of the clock high-water mark in `META` (milliseconds since the epoch).
const HIGH_WATER: &str = "clock_high_water_ms";
/// Key of the month counts were last kept in (`year * 12 + month0`), to notice a month that
/// turned while the sidecar was down.
const COUNTED_MONTH: &str = "counted_month";
/// Key of the store's random id, which its count journal carries, so that a journal is never
/// replayed into another store.
const STORE_ID: &str = "store_id";
/// Key of the number of the last count journal frame whose counts are in the tables.
const JOURNAL_FOLDED: &str = "journal_folded";

/// Records per license or flow id.
pub type Tally = BTreeMap<String, u64>;

/// A store operation failed; carries one sentence.
#[derive(Debug, Clone, thiserror::Error)]
#[error("state store: {0}")]
pub struct StoreError(pub String);

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(err: E) -> Self {
        StoreError(err.into().to_string())
    }
}

/// A flow's persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFlow {
    /// Whether the flow is wanted enabled.
    pub enabled: bool,
    /// Why it is disabled (`operator`, `points-exhausted`, …).
    pub reason: String,
    /// Enabling order.
    pub order: u64,
}

/// Marks raised for a license in a month.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marks {
    /// The warning at `used >= limit` was raised.
    pub warning: bool,
    /// The hard limit was reached.
    pub limit: bool,
}

/// One audit event as stored and listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Sequence number, increasing; the paging cursor.
    #[serde(default)]
    pub seq: u64,
    /// When it happened (RFC 3339).
    pub time: String,
    /// What happened: `license-added`, `license-removed`, `flow-enabled`, `flow-disabled`,
    /// `records-warning`, `records-limit`, `records-reset`, `clock-rollback`.
    pub kind: String,
    /// The details (ids, reasons, numbers).
    pub detail: Value,
}

/// Opens the database again after an I/O failure (redb refuses every transaction after one
/// until it is reopened; opening repairs it).
type Reopen = Box<dyn Fn() -> Result<Database, StoreError> + Send + Sync>;

/// Why the store file cannot be opened, in the operator's terms.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    /// Another process holds the file's lock.
    #[error("{} is in use by another process (another tollgate on the same state.dir?)", path.display())]
    InUse {
        /// The store file.
        path: PathBuf,
    },
    /// The file is not a database redb can read: overwritten, cut short or not redb at all.
    #[error("{} is damaged ({detail}); the file is kept as it is: move it away to start with an empty store", path.display())]
    Damaged {
        /// The store file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// Anything else redb refused (permissions, an older file format, a failed repair).
    #[error("cannot open {}: {source}; the file is kept as it is", path.display())]
    Failed {
        /// The store file.
        path: PathBuf,
        /// redb's reason.
        source: redb::DatabaseError,
    },
}

impl OpenError {
    /// Sorts redb's refusal of `path` into what the operator should do about it.
    fn new(path: &Path, err: redb::DatabaseError) -> OpenError {
        let path = path.to_owned();
        let damaged = |detail: &str| OpenError::Damaged {
            path: path.clone(),
            detail: detail.to_owned(),
        };
        match &err {
            redb::DatabaseError::DatabaseAlreadyOpen => OpenError::InUse { path },
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => damaged(detail),
            redb::DatabaseError::Storage(redb::StorageError::Io(io)) => match io.kind() {
                std::io::ErrorKind::InvalidData => damaged("it is not a redb database"),
                std::io::ErrorKind::UnexpectedEof => damaged("it ends inside its header"),
                _ => OpenError::Failed { path, source: err },
            },
            _ => OpenError::Failed { path, source: err },
        }
    }
}

impl From<OpenError> for StoreError {
    fn from(err: OpenError) -> Self {
        StoreError(err.to_string())
    }
}

impl From<journal::JournalError> for StoreError {
    fn from(err: journal::JournalError) -> Self {
        StoreError(err.to_string())
    }
}

/// Opens the count journal of the store with the given id: its bytes and its path.
type OpenJournal =
    Box<dyn FnOnce(u64) -> Result<(Box<dyn journal::Medium>, PathBuf), journal::JournalError>>;

/// Opens (or creates) the database file. A file redb cannot use is reported and left untouched:
/// redb refuses most damage with an error but asserts on some (a file cut short of the length
/// its header records, a zeroed region), so a panic inside it is caught and reported too.
fn open_file(path: &Path) -> Result<Database, StoreError> {
    match catch_quietly(|| Database::create(path)) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(err)) => Err(OpenError::new(path, err).into()),
        Err(panic) => {
            tracing::debug!(file = %path.display(), panic = panic_message(&*panic), "redb gave up on the store file");
            Err(OpenError::Damaged {
                path: path.to_owned(),
                detail: "its layout is inconsistent: cut short or overwritten".to_owned(),
            }
            .into())
        }
    }
}

thread_local! {
    /// Set while this thread runs [`catch_quietly`]: its panics are caught, not reported.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `work`, catching a panic without the panic hook printing it (other threads' panics
/// are reported as before).
fn catch_quietly<T>(work: impl FnOnce() -> T + UnwindSafe) -> std::thread::Result<T> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                report(info);
            }
        }));
    });
    QUIET.with(|quiet| quiet.set(true));
    let result = std::panic::catch_unwind(work);
    QUIET.with(|quiet| quiet.set(false));
    result
}

/// The message a panic carries, if it is text.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("")
}

/// The embedded store.
pub struct Store {
    /// The open database; `None` only while it is being reopened after an I/O failure.
    db: RwLock<Option<Arc<Database>>>,
    reopen: Reopen,
    /// The count journal, replayed; the writer takes it in strict durability.
    journal: Mutex<Option<journal::Journal>>,
}

/// How long recovery waits for readers of the failed database to finish.
const RECOVERY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Store {
    /// Opens (or creates) the store in `dir` and replays its count journal; a corrupt or
    /// unreadable store or journal is an error, never reset.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|err| StoreError(format!("cannot create {}: {err}", dir.display())))?;
        let path = dir.join(FILE);
        let db = open_file(&path)?;
        let journal_dir = dir.to_owned();
        Store::with_database(
            db,
            Box::new(move || open_file(&path)),
            Box::new(move |store_id| {
                let (file, path) = journal_file::open(&journal_dir, store_id)?;
                Ok((Box::new(file), path))
            }),
        )
    }

    /// A store over an open database, creating every table so that readers never meet a missing
    /// one, with its journal replayed: counts the journal holds beyond the folded mark are
    /// folded before anything reads them.
    fn with_database(
        db: Database,
        reopen: Reopen,
        open_journal: OpenJournal,
    ) -> Result<Store, StoreError> {
        let store = Store {
            db: RwLock::new(Some(Arc::new(db))),
            reopen,
            journal: Mutex::new(None),
        };
        let tx = store.database()?.begin_write()?;
        tx.open_table(LICENSE_MONTHS)?;
        tx.open_table(FLOW_MONTHS)?;
        tx.open_table(LICENSE_DAYS)?;
        tx.open_table(MARKS)?;
        tx.open_table(FLOWS)?;
        tx.open_table(AUDIT)?;
        let (store_id, folded) = {
            let mut meta = tx.open_table(META)?;
            let id = meta.get(STORE_ID)?.map(|v| v.value());
            let id = match id {
                Some(id) => id,
                None => {
                    let id = OsRng.next_u64() as i64;
                    meta.insert(STORE_ID, id)?;
                    id
                }
            };
            let folded = meta.get(JOURNAL_FOLDED)?.map_or(0, |v| v.value());
            (id as u64, folded as u64)
        };
        tx.commit()?;
        let (medium, path) = open_journal(store_id)?;
        let (journal, replay) = journal::Journal::open(medium, path, store_id, folded)?;
        if let Some(last) = replay.last {
            store.commit_counts(&replay.counts, replay.high_water, Some(last))?;
            tracing::info!(
                frames = last - folded,
                "counts from the journal were replayed into the store"
            );
        }
        *store.journal.lock().map_err(|_| poisoned())? = Some(journal);
        Ok(store)
    }

    /// The count journal, for the writer thread (strict durability); `None` once taken.
    fn take_journal(&self) -> Option<journal::Journal> {
        self.journal.lock().ok().and_then(|mut slot| slot.take())
    }

    /// The open database (reopened first if an earlier I/O failure closed it).
    fn database(&self) -> Result<Arc<Database>, StoreError> {
        if let Some(db) = self.db.read().map_err(|_| poisoned())?.as_ref() {
            return Ok(db.clone());
        }
        let mut slot = self.db.write().map_err(|_| poisoned())?;
        if slot.is_none() {
            let db = (self.reopen)()
                .map_err(|err| StoreError(format!("cannot reopen the store: {err}")))?;
            tracing::info!("the store was reopened after an I/O failure");
            *slot = Some(Arc::new(db));
        }
        slot.as_ref()
            .cloned()
            .ok_or_else(|| StoreError("the store is not open".into()))
    }

    /// Runs a write; where it failed on I/O (disk full, write error), closes the database so that
    /// the next operation reopens (and repairs) it instead of failing forever.
    fn write<T>(&self, work: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let result = work();
        if result.is_err() {
            self.close_if_failed();
        }
        result
    }

    fn close_if_failed(&self) {
        let failed = self.database().is_ok_and(|db| {
            matches!(
                db.begin_write(),
                Err(redb::TransactionError::Storage(
                    redb::StorageError::PreviousIo
                ))
            )
        });
        let Ok(mut slot) = self.db.write() else {
            return;
        };
        if !failed {
            return;
        }
        let Some(mut db) = slot.take() else { return };
        // Readers hold the old database only for one short transaction.
        let deadline = std::time::Instant::now() + RECOVERY_WAIT;
        loop {
            match Arc::try_unwrap(db) {
                Ok(closed) => {
                    drop(closed);
                    tracing::warn!("the store failed on I/O; it is reopened for the next commit");
                    return;
                }
                Err(still_shared) if std::time::Instant::now() < deadline => {
                    db = still_shared;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(still_shared) => {
                    *slot = Some(still_shared);
                    return;
                }
            }
        }
    }

    /// Adds counts (and raises the high-water mark) in one durable transaction; with
    /// `journal_folded`, also records that the journal's frames up to that number are in.
    pub fn commit_counts(
        &self,
        batch: &CountBatch,
        high_water: Option<DateTime<Utc>>,
        journal_folded: Option<u64>,
    ) -> Result<(), StoreError> {
        self.write(|| self.commit_counts_once(batch, high_water, journal_folded))
    }

    fn commit_counts_once(
        &self,
        batch: &CountBatch,
        high_water: Option<DateTime<Utc>>,
        journal_folded: Option<u64>,
    ) -> Result<(), StoreError> {
        let sums = batch.tables();
        let mut tx = self.database()?.begin_write()?;
        tx.set_durability(Durability::Immediate);
        {
            add_all(&mut tx.open_table(LICENSE_MONTHS)?, &sums.license_months)?;
            add_all(&mut tx.open_table(FLOW_MONTHS)?, &sums.flow_months)?;
            add_all(&mut tx.open_table(LICENSE_DAYS)?, &sums.license_days)?;
            let mut meta = tx.open_table(META)?;
            if let Some(now) = high_water {
                let current = meta.get(HIGH_WATER)?.map(|v| v.value());
                if current.is_none_or(|ms| ms < now.timestamp_millis()) {
                    meta.insert(HIGH_WATER, now.timestamp_millis())?;
                }
            }
            if let Some(seq) = journal_folded {
                let seq = i64::try_from(seq)
                    .map_err(|_| StoreError("the journal's frame number overflowed".into()))?;
                meta.insert(JOURNAL_FOLDED, seq)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The number of the last journal frame whose counts are in the tables (0 before any).
    pub fn journal_folded(&self) -> Result<u64, StoreError> {
        let tx = self.database()?.begin_read()?;
        let table = tx.open_table(META)?;
        Ok(table
            .get(JOURNAL_FOLDED)?
            .map_or(0, |v| u64::try_from(v.value()).unwrap_or(0)))
    }

    /// Committed records of a license in a month.
    pub fn license_month(&self, license: &str, month: &str) -> Result<u64, StoreError> {
        let tx = self.database()?.begin_read()?;
        let table = tx.open_table(LICENSE_MONTHS)?;
        Ok(table
            .get(key(license, month).as_str())?
            .map_or(0, |v| v.value()))
    }

    /// Committed records of a flow in a month.
    pub fn flow_month(&self, flow: &str, month: &str) -> Result<u64, StoreError> {
        let tx = self.database()?.begin_read()?;
        let table = tx.open_table(FLOW_MONTHS)?;
        Ok(table
            .get(key(flow, month).as_str())?
            .map_or(0, |v| v.value()))
    }

    /// Every license's and every flow's records in a month: `(licenses, flows)`.
    pub fn month(&self, month: &str) -> Result<(Tally, Tally), StoreError> {
        let tx = self.database()?.begin_read()?;
        let pick =
            |table: redb::ReadOnlyTable<&str, u64>| -> Result<BTreeMap<String, u64>, StoreError> {
                let mut out = BTreeMap::new();
                for entry in table.iter()? {
                    let (k, v) = entry?;
                    if let Some((id, m)) = k.value().rsplit_once('|') {
                        if m == month {
                            out.insert(id.to_owned(), v.value());
                        }
                    }
                }
                Ok(out)
            };
        Ok((
            pick(tx.open_table(LICENSE_MONTHS)?)?,
            pick(tx.open_table(FLOW_MONTHS)?)?,
        ))
    }

    /// A license's records per day of a month (`YYYY-MM-DD` → records).
    pub fn license_days(
        &self,
        license: &str,
        month: &str,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let tx = self.database()?.begin_read()?;
        let table = tx.open_table(LICENSE_DAYS)?;
        let prefix = format!("{license}|{month}-");
        let mut out = BTreeMap::new();
        for entry in table.range(prefix.as_str()..)? {
            let (k, v) = entry?;
            let Some(day) = k.value().strip_prefix(&prefix) else {
                break;
            };
            out.insert(format!("{month}-{day}"), v.value());
        }
        Ok(out)
    }

    /// The marks raised for a license in a month.
    pub fn marks(&self, license: &str, month: &str) -> Result<Marks, StoreError> {
        let tx = self.database()?.begin_read()?;
        let table = tx.open_table(MARKS)?;
        Ok(table
            .get(key(license, month).as_str())?
            .and_then(|v| serde_json::from_str(v.value()).ok())
            .unwrap_or_default())
    }

    /// Records the marks raised for a license in a month (durably).
    pub fn set_marks(&self, license: &str, month: &str, marks: &Marks) -> Result<(), StoreError> {
        self.write(|| {
            let json = serde_json::to_string(marks).map_err(|err| StoreError(err.to_string()))?;
            let tx = self.database()?.begin_write()?;
            tx.open_table(MARKS)?
                .insert(key(license, month).as_str(), json.as_str())?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Every stored flow state, by flow id.
    pub fn flows(&self) -> Result<BTreeMap<String, StoredFlow>, StoreError> {
        let tx = self.database()?.begin_read()?;
        let table = tx.open_table(FLOWS)?;
        let mut out = BTreeMap::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            let flow: StoredFlow = serde_json::from_str(v.value())
                .map_err(|err| StoreError(format!("flow {:?}: {err}", k.value())))?;
            out.insert(k.value().to_owned(), flow);
        }
        Ok(out)
    }

    /// Replaces the stored flow states and appends audit events, in one durable transaction.
    pub fn save_flows(
        &self,
        flows: &BTreeMap<String, StoredFlow>,
        events: &[AuditEvent],
    ) -> Result<(), StoreError> {
        self.write(|| {
            let tx = self.database()?.begin_write()?;
            {
                let mut table = tx.open_table(FLOWS)?;
                let stale: Vec<String> = table
                    .iter()?
                    .filter_map(Result::ok)
                    .map(|(k, _)| k.value().to_owned())
                    .filter(|id| !flows.contains_key(id))
                    .collect();
                for id in stale {
                    table.remove(id.as_str())?;
                }
                for (id, flow) in flows {
                    let json =
                        serde_json::to_string(flow).map_err(|err| StoreError(err.to_string()))?;
                    table.insert(id.as_str(), json.as_str())?;
                }
                append(&mut tx.open_table(AUDIT)?, events)?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Appends audit events (durably).
    pub fn audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        self.write(|| {
            if events.is_empty() {
                return Ok(());
            }
            let tx = self.database()?.begin_write()?;
            append(&mut tx.open_table(AUDIT)?, events)?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Up to `limit` audit events older than `before` (a sequence number), newest first.
    pub fn audit_page(
        &self,
        limit: usize,
        before: Option<u64>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let tx = self.database()?.begin_read()?;
        let table = tx.open_table(AUDIT)?;
        let mut out = Vec::new();
        for entry in table.range(..before.unwrap_or(u64::MAX))?.rev().take(limit) {
            let (k, v) = entry?;
            let mut event: AuditEvent = serde_json::from_str(v.value())
                .map_err(|err| StoreError(format!("audit event {}: {err}", k.value())))?;
            event.seq = k.value();
            out.push(event);
        }
        Ok(out)
    }

    /// The month counts were last kept in, if any.
    pub fn counted_month(&self) -> Result<Option<u32>, StoreError> {
        let tx = self.database()?.begin_read()?;
        let table = tx.open_table(META)?;
        Ok(table
            .get(COUNTED_MONTH)?
            .and_then(|v| u32::try_from(v.value()).ok()))
    }

    /// Records the month counts are kept in (durably).
    pub fn set_counted_month(&self, month: u32) -> Result<(), StoreError> {
        self.write(|| {
            let tx = self.database()?.begin_write()?;
            tx.open_table(META)?
                .insert(COUNTED_MONTH, i64::from(month))?;
            tx.commit()?;
            Ok(())
        })
    }

    /// The latest time the sidecar has seen, if any.
    pub fn high_water(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let tx = self.database()?.begin_read()?;
        let table = tx.open_table(META)?;
        Ok(table
            .get(HIGH_WATER)?
            .and_then(|v| DateTime::from_timestamp_millis(v.value())))
    }
}

fn poisoned() -> StoreError {
    StoreError("the store's lock is poisoned".into())
}

fn key(id: &str, period: &str) -> String {
    format!("{id}|{period}")
}

fn add_all(
    table: &mut redb::Table<&str, u64>,
    counts: &BTreeMap<String, u64>,
) -> Result<(), StoreError> {
    for (key, n) in counts {
        let current = table.get(key.as_str())?.map_or(0, |v| v.value());
        table.insert(key.as_str(), current + n)?;
    }
    Ok(())
}

fn append(table: &mut redb::Table<u64, &str>, events: &[AuditEvent]) -> Result<(), StoreError> {
    let first = table.last()?.map_or(1, |(k, _)| k.value() + 1);
    for (seq, event) in (first..).zip(events) {
        let json = serde_json::to_string(event).map_err(|err| StoreError(err.to_string()))?;
        table.insert(seq, json.as_str())?;
    }
    Ok(())
}

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod test_disk;

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` records of `license` and `flow` on `day` (`YYYY-MM-DD`), in the day's month.
    pub(super) fn batch(license: &str, flow: &str, day: &str, n: u64) -> CountBatch {
        let day = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap();
        let mut batch = CountBatch::default();
        batch.add(
            counts::CountKey {
                license: Some(license.into()),
                flow: flow.into(),
                month: crate::clock::month_index(
                    day.and_hms_opt(12, 0, 0).unwrap().and_utc(),
                    chrono_tz::UTC,
                ),
                day,
            },
            n,
        );
        batch
    }

    #[test]
    fn counts_add_up_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .commit_counts(&batch("L", "f", "2026-11-26", 3), None, None)
                .unwrap();
            store
                .commit_counts(&batch("L", "f", "2026-11-27", 2), None, None)
                .unwrap();
            store
                .commit_counts(&batch("L", "g", "2026-12-01", 1), None, None)
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.license_month("L", "2026-11").unwrap(), 5);
        assert_eq!(store.flow_month("f", "2026-11").unwrap(), 5);
        assert_eq!(store.flow_month("g", "2026-11").unwrap(), 0);
        let (licenses, flows) = store.month("2026-12").unwrap();
        assert_eq!(licenses.get("L"), Some(&1));
        assert_eq!(flows.get("g"), Some(&1));
        let days = store.license_days("L", "2026-11").unwrap();
        assert_eq!(
            days.into_iter().collect::<Vec<_>>(),
            vec![("2026-11-26".to_owned(), 3), ("2026-11-27".to_owned(), 2)]
        );
    }

    #[test]
    fn the_high_water_mark_only_rises() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let later = DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let earlier = DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(store.high_water().unwrap(), None);
        store
            .commit_counts(&CountBatch::default(), Some(later), None)
            .unwrap();
        store
            .commit_counts(&CountBatch::default(), Some(earlier), None)
            .unwrap();
        assert_eq!(store.high_water().unwrap(), Some(later));
    }

    #[test]
    fn flows_marks_and_audit_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut flows = BTreeMap::new();
        flows.insert(
            "a".to_owned(),
            StoredFlow {
                enabled: false,
                reason: "operator".into(),
                order: 4,
            },
        );
        flows.insert(
            "b".to_owned(),
            StoredFlow {
                enabled: true,
                reason: "operator".into(),
                order: 1,
            },
        );
        let event = |kind: &str| AuditEvent {
            seq: 0,
            time: "2026-11-26T00:00:00Z".into(),
            kind: kind.into(),
            detail: serde_json::json!({"flow": "a"}),
        };
        store.save_flows(&flows, &[event("flow-disabled")]).unwrap();
        flows.remove("b");
        store.save_flows(&flows, &[]).unwrap();
        store
            .audit(&[event("one"), event("two"), event("three")])
            .unwrap();
        assert_eq!(store.flows().unwrap(), flows);
        let page = store.audit_page(2, None).unwrap();
        assert_eq!(
            page.iter()
                .map(|e| (e.seq, e.kind.as_str()))
                .collect::<Vec<_>>(),
            vec![(4, "three"), (3, "two")]
        );
        let next = store.audit_page(10, Some(3)).unwrap();
        assert_eq!(
            next.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
            vec!["one", "flow-disabled"]
        );
        store
            .set_marks(
                "L",
                "2026-11",
                &Marks {
                    warning: true,
                    limit: false,
                },
            )
            .unwrap();
        assert_eq!(
            store.marks("L", "2026-11").unwrap(),
            Marks {
                warning: true,
                limit: false
            }
        );
        assert_eq!(store.marks("L", "2026-12").unwrap(), Marks::default());
    }

    /// A store file with some counts in it, and its bytes.
    fn stored(dir: &Path) -> Vec<u8> {
        let store = Store::open(dir).unwrap();
        store
            .commit_counts(&batch("L", "f", "2026-11-26", 3), None, None)
            .unwrap();
        drop(store);
        std::fs::read(dir.join(FILE)).unwrap()
    }

    #[test]
    fn a_damaged_store_is_refused_by_name_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let original = stored(dir.path());
        let garbage: Vec<u8> = (0..original.len() as u64)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut zeroed = original[..4096].to_vec();
        zeroed.resize(original.len(), 0);
        let mut after_magic = original[..9].to_vec();
        after_magic.extend_from_slice(&garbage[9..]);
        let cases = [
            ("cut to 4 KiB", original[..4096].to_vec()),
            ("cut in half", original[..original.len() / 2].to_vec()),
            ("cut inside the header", original[..100].to_vec()),
            ("cut inside the magic number", original[..5].to_vec()),
            ("garbage", garbage),
            ("garbage after the magic number", after_magic),
            ("zeroed after the header", zeroed),
            (
                "not redb at all",
                b"this is not a redb file, and it must stay as it is".to_vec(),
            ),
        ];
        for (damage, bytes) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let err = Store::open(dir.path())
                .err()
                .unwrap_or_else(|| panic!("{damage}: the store was opened"));
            let message = err.to_string();
            assert!(
                message.contains(&path.display().to_string())
                    && message.contains("is damaged")
                    && message.contains("kept as it is"),
                "{damage}: {message}"
            );
            assert!(
                std::fs::read(&path).unwrap() == bytes,
                "{damage}: the file changed"
            );
        }
        std::fs::write(&path, &original).unwrap();
        assert_eq!(
            Store::open(dir.path())
                .unwrap()
                .license_month("L", "2026-11")
                .unwrap(),
            3,
            "the intact file still opens"
        );
    }

    #[test]
    fn a_store_in_use_is_refused_as_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let _open = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path())
            .err()
            .expect("a second open is refused");
        assert!(
            err.to_string().contains("in use by another process"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod fault_tests {
    use std::sync::atomic::Ordering;

    use super::test_disk::MemoryStore;
    use super::tests::batch;
    use super::*;

    #[test]
    fn a_full_disk_fails_the_commit_and_the_store_recovers_when_space_returns() {
        let disks = MemoryStore::new(64 << 10);
        let store = disks.open().unwrap();
        let one = |n| batch("L", "f", "2026-11-26", n);
        store.commit_counts(&one(2), None, None).unwrap();

        disks.full.store(true, Ordering::SeqCst);
        let err = store
            .commit_counts(&one(3), None, None)
            .expect_err("a full disk fails the commit");
        assert!(err.to_string().contains("no space left"), "{err}");
        assert!(
            store.commit_counts(&one(3), None, None).is_err(),
            "still full"
        );

        // Space returns: the store reopens (repairing) and the retried counts land.
        disks.full.store(false, Ordering::SeqCst);
        store.commit_counts(&one(3), None, None).unwrap();
        assert_eq!(
            store.license_month("L", "2026-11").unwrap(),
            5,
            "nothing lost, nothing counted twice"
        );
    }

    fn item() -> CountItem {
        let at = DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        CountItem {
            records: 1,
            license: Some("L".into()),
            flow: "f".into(),
            month: 2026 * 12 + 10,
            day: at.date_naive(),
            at,
        }
    }

    #[tokio::test]
    async fn strict_loads_are_answered_from_the_journal_while_redb_s_disk_is_full() {
        let disks = MemoryStore::new(64 << 10);
        let store = Arc::new(disks.open().unwrap());
        let recorder =
            Recorder::start(store.clone(), true, std::time::Duration::from_millis(200)).unwrap();
        disks.full.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            recorder.record(item()).await.unwrap();
        }
        assert!(
            recorder.flushed().await.is_err(),
            "the fold into redb fails while its disk is full"
        );
        // The journal is preallocated: it takes counts without new space.
        recorder.record(item()).await.unwrap();

        // A crash now: the journal has every answered count.
        let reopened = disks.crashed_copy().open().unwrap();
        assert_eq!(reopened.license_month("L", "2026-11").unwrap(), 4);

        // Or space returns: the next fold puts them into redb.
        disks.full.store(false, Ordering::SeqCst);
        recorder.flushed().await.unwrap();
        assert_eq!(store.license_month("L", "2026-11").unwrap(), 4);
        assert_eq!(store.flow_month("f", "2026-11").unwrap(), 4);
    }

    #[tokio::test]
    async fn a_load_whose_count_cannot_be_journaled_fails_and_its_count_is_kept_for_later() {
        let disks = MemoryStore::new(64 << 10);
        let store = Arc::new(disks.open().unwrap());
        let recorder =
            Recorder::start(store.clone(), true, std::time::Duration::from_millis(200)).unwrap();
        disks.journal.set_failing(true);
        let err = recorder
            .record(item())
            .await
            .expect_err("strict: the load is not answered as counted");
        assert!(err.to_string().contains("tollgate.journal"), "{err}");
        disks.journal.set_failing(false);
        recorder.record(item()).await.unwrap();
        recorder.flushed().await.unwrap();
        assert_eq!(
            store.license_month("L", "2026-11").unwrap(),
            2,
            "the failed load's count was kept and stored"
        );
        assert_eq!(store.flow_month("f", "2026-11").unwrap(), 2);
    }
}
