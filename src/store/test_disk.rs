//! Disks for the store's tests: a journal medium that loses unsynced writes (sector by sector)
//! when it "crashes", and a redb backend that fails every write like a full disk when told to.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redb::backends::InMemoryBackend;
use redb::{Database, StorageBackend};

use super::journal::{self, Medium};
use super::{Store, StoreError};

/// The unit a disk writes whole (or not at all) when the power goes.
const SECTOR: u64 = 512;

#[derive(Default)]
struct JournalBytes {
    /// What survives a crash.
    durable: Vec<u8>,
    /// Writes since the last sync, in order.
    unsynced: Vec<(u64, Vec<u8>)>,
    /// Writes and syncs fail (an I/O error).
    failing: bool,
    /// Writes work but syncs fail: what was written may or may not survive a crash.
    failing_syncs: bool,
}

impl JournalBytes {
    fn apply(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
        let start = offset as usize;
        if bytes.len() < start + data.len() {
            bytes.resize(start + data.len(), 0);
        }
        bytes[start..start + data.len()].copy_from_slice(data);
    }
}

/// A journal file in memory; clones share the bytes.
#[derive(Clone, Default)]
pub(super) struct JournalDisk(Arc<Mutex<JournalBytes>>);

impl JournalDisk {
    /// A handle to open the journal with.
    pub fn medium(&self) -> Box<dyn Medium> {
        Box::new(self.clone())
    }

    /// Loses the unsynced writes but for the sectors `keep` picks (numbered in write order).
    pub fn crash(&self, mut keep: impl FnMut(usize) -> bool) {
        let mut bytes = self.0.lock().unwrap();
        let unsynced = std::mem::take(&mut bytes.unsynced);
        let mut sector = 0;
        for (offset, data) in unsynced {
            let mut at = offset;
            while at < offset + data.len() as u64 {
                let end = ((at / SECTOR + 1) * SECTOR).min(offset + data.len() as u64);
                if keep(sector) {
                    let part = &data[(at - offset) as usize..(end - offset) as usize];
                    JournalBytes::apply(&mut bytes.durable, at, part);
                }
                sector += 1;
                at = end;
            }
        }
    }

    /// Makes every write and sync fail, or work again.
    pub fn set_failing(&self, failing: bool) {
        self.0.lock().unwrap().failing = failing;
    }

    /// Makes every sync fail (writes still work), or work again.
    pub fn set_failing_syncs(&self, failing: bool) {
        self.0.lock().unwrap().failing_syncs = failing;
    }

    /// Changes durable bytes in place (damage).
    pub fn damage(&self, at: usize, with: &[u8]) {
        let mut bytes = self.0.lock().unwrap();
        bytes.durable[at..at + with.len()].copy_from_slice(with);
    }

    /// Cuts the durable bytes to `len`.
    pub fn cut(&self, len: usize) {
        self.0.lock().unwrap().durable.truncate(len);
    }

    /// The durable bytes.
    pub fn durable(&self) -> Vec<u8> {
        self.0.lock().unwrap().durable.clone()
    }
}

impl Medium for JournalDisk {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let bytes = self.0.lock().unwrap();
        let mut view = bytes.durable.clone();
        for (offset, data) in &bytes.unsynced {
            JournalBytes::apply(&mut view, *offset, data);
        }
        Ok(view)
    }

    fn write_durably(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut bytes = self.0.lock().unwrap();
        if bytes.failing {
            return Err(io::Error::other("input/output error"));
        }
        bytes.unsynced.push((offset, data.to_vec()));
        if bytes.failing_syncs {
            return Err(io::Error::other("input/output error"));
        }
        for (offset, data) in std::mem::take(&mut bytes.unsynced) {
            JournalBytes::apply(&mut bytes.durable, offset, &data);
        }
        Ok(())
    }
}

/// An in-memory redb disk that can be made to fail every write and sync, like a full disk.
#[derive(Debug)]
pub(super) struct FlakyDisk {
    bytes: Arc<InMemoryBackend>,
    full: Arc<AtomicBool>,
}

impl FlakyDisk {
    fn check(&self) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device",
            ))
        } else {
            Ok(())
        }
    }
}

impl StorageBackend for FlakyDisk {
    fn len(&self) -> io::Result<u64> {
        self.bytes.len()
    }
    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.bytes.read(offset, len)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check()?;
        self.bytes.set_len(len)
    }
    fn sync_data(&self, eventual: bool) -> io::Result<()> {
        self.check()?;
        self.bytes.sync_data(eventual)
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check()?;
        self.bytes.write(offset, data)
    }
}

/// A whole store in memory: redb's bytes, the switch that fills its disk, and the journal.
#[derive(Clone)]
pub(super) struct MemoryStore {
    /// redb's file.
    pub db: Arc<InMemoryBackend>,
    /// While set, redb's writes fail like a full disk.
    pub full: Arc<AtomicBool>,
    /// The journal file (empty until the first open makes it).
    pub journal: JournalDisk,
    /// The length the first open gives the journal.
    journal_len: usize,
}

impl MemoryStore {
    /// Empty disks; the journal (of `journal_len` bytes) is made at the first open.
    pub fn new(journal_len: usize) -> MemoryStore {
        MemoryStore {
            db: Arc::new(InMemoryBackend::new()),
            full: Arc::new(AtomicBool::new(false)),
            journal: JournalDisk::default(),
            journal_len,
        }
    }

    /// The disks as a crash now would leave them: redb's bytes as they are, the journal's
    /// unsynced writes lost; the copy's disk is not full.
    pub fn crashed_copy(&self) -> MemoryStore {
        let db = InMemoryBackend::new();
        let len = self.db.len().unwrap();
        db.set_len(len).unwrap();
        db.write(0, &self.db.read(0, len as usize).unwrap())
            .unwrap();
        let journal = JournalDisk::default();
        journal.0.lock().unwrap().durable = self.journal.durable();
        MemoryStore {
            db: Arc::new(db),
            full: Arc::new(AtomicBool::new(false)),
            journal,
            journal_len: self.journal_len,
        }
    }

    /// Opens the store over these disks (replaying the journal), as a start-up does.
    pub fn open(&self) -> Result<Store, StoreError> {
        let open = {
            let (bytes, full) = (self.db.clone(), self.full.clone());
            move || {
                Database::builder()
                    .create_with_backend(FlakyDisk {
                        bytes: bytes.clone(),
                        full: full.clone(),
                    })
                    .map_err(StoreError::from)
            }
        };
        let (journal, len) = (self.journal.clone(), self.journal_len);
        Store::with_database(
            open()?,
            Box::new(open),
            Box::new(move |store_id| {
                {
                    let mut bytes = journal.0.lock().unwrap();
                    if bytes.durable.is_empty() {
                        bytes.durable = journal::image(store_id, len);
                    }
                }
                Ok((journal.medium(), PathBuf::from("state/tollgate.journal")))
            }),
        )
    }
}
