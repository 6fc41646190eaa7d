//! What `benches/journal.rs` times, reachable from outside the crate: a strict commit batch
//! through the count journal beside the same batch committed straight into redb (the commit
//! before the journal), and one `fdatasync` of the disk.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::committer::Committer;
use super::counts::{CountBatch, CountKey};
use super::{Store, StoreError};

pub use super::CountItem;

/// A store in a directory of the disk under test, with its journal.
pub struct CommitBench {
    store: Store,
    committer: Committer,
}

impl CommitBench {
    /// Opens (or creates) a store in `dir`.
    pub fn open(dir: &Path) -> Result<CommitBench, StoreError> {
        let store = Store::open(dir)?;
        let committer = Committer::new(&store)?;
        Ok(CommitBench { store, committer })
    }

    /// `loads` counted loads of one record, spread over `flows` flows of one license.
    pub fn items(loads: usize, flows: usize) -> Vec<CountItem> {
        let at = DateTime::<Utc>::from_timestamp(1_795_000_000, 0).unwrap_or_default();
        let flows: Vec<Arc<str>> = (0..flows.max(1))
            .map(|flow| Arc::from(format!("flow-{flow}")))
            .collect();
        let license: Arc<str> = Arc::from("LIC-BENCH");
        (0..loads)
            .map(|load| CountItem {
                records: 1,
                license: Some(license.clone()),
                flow: flows[load % flows.len()].clone(),
                month: 2026 * 12 + 10,
                day: at.date_naive(),
                at,
            })
            .collect()
    }

    /// A strict commit batch as the writer makes it: the loads summed per key, one journal
    /// frame written and synced (and, when the journal is full, a fold first).
    pub fn journal(&mut self, items: Vec<CountItem>) -> Result<(), StoreError> {
        let (mut counts, mut high_water) = gather(items);
        self.committer
            .commit(&self.store, &mut counts, &mut high_water)
    }

    /// The same batch committed straight into redb in one durable transaction, as strict
    /// durability did before the journal.
    pub fn redb(&mut self, items: Vec<CountItem>) -> Result<(), StoreError> {
        let (counts, high_water) = gather(items);
        self.store.commit_counts(&counts, high_water, None)
    }
}

fn gather(items: Vec<CountItem>) -> (CountBatch, Option<DateTime<Utc>>) {
    let mut counts = CountBatch::default();
    let mut high_water = None;
    for item in items {
        high_water = high_water.max(Some(item.at));
        let key = CountKey {
            license: item.license,
            flow: item.flow,
            month: item.month,
            day: item.day,
        };
        counts.add(key, item.records);
    }
    (counts, high_water)
}

/// Times `syncs` fdatasyncs of a file preallocated in `dir` (1 MiB), each after a 64-byte write
/// to another page: what one strict commit batch waits for on that disk.
pub fn fdatasync_times(dir: &Path, syncs: usize) -> io::Result<Vec<Duration>> {
    let path = dir.join("fdatasync-probe");
    let file = File::create(&path)?;
    file.write_all_at(&vec![0; 1 << 20], 0)?;
    file.sync_all()?;
    let mut times = Vec::with_capacity(syncs);
    for sync in 0..syncs {
        file.write_all_at(&[b'x'; 64], (sync as u64 * 4096) % (1 << 20))?;
        let start = Instant::now();
        file.sync_data()?;
        times.push(start.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(times)
}
