//! A strict commit batch through the count journal (one frame, one write, one fdatasync)
//! beside the same batch committed straight into redb (one durable transaction, as strict
//! durability did before the journal), for batches of 1 and 32 loads; and the disk's own
//! fdatasync, printed first as the median of 200 (the unit a strict load waits for).
//!
//! The stores live in a temporary directory under `target/`, so on the repository's disk,
//! like `benches/overhead.sh`'s.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use tollgate::store_bench::{fdatasync_times, CommitBench};

fn scratch() -> tempfile::TempDir {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).expect("create target/");
    tempfile::tempdir_in(target).expect("a temporary directory under target/")
}

fn fdatasync(c: &mut Criterion) {
    let dir = scratch();
    let mut times = fdatasync_times(dir.path(), 200).expect("time fdatasync");
    times.sort();
    println!(
        "fdatasync of this disk: p50 {:.0} µs, p10 {:.0} µs, p90 {:.0} µs (200 syncs, each after a 64-byte write)",
        micros(times[100]),
        micros(times[20]),
        micros(times[180]),
    );
    c.bench_function("fdatasync after a 64-byte write", |b| {
        b.iter_custom(|iters| {
            fdatasync_times(dir.path(), iters as usize)
                .expect("time fdatasync")
                .into_iter()
                .sum()
        })
    });
}

fn micros(time: Duration) -> f64 {
    time.as_secs_f64() * 1e6
}

fn commits(c: &mut Criterion) {
    let mut group = c.benchmark_group("strict commit batch");
    for (loads, flows) in [(1, 1), (32, 1), (32, 32)] {
        let label = format!("{loads} loads, {flows} flows");
        let items = CommitBench::items(loads, flows);
        let journal_dir = scratch();
        let mut journal = CommitBench::open(journal_dir.path()).expect("open a store");
        group.bench_with_input(BenchmarkId::new("journal", &label), &items, |b, items| {
            b.iter_batched(
                || items.clone(),
                |items| journal.journal(items).expect("journal"),
                BatchSize::SmallInput,
            )
        });
        let redb_dir = scratch();
        let mut redb = CommitBench::open(redb_dir.path()).expect("open a store");
        group.bench_with_input(BenchmarkId::new("redb", &label), &items, |b, items| {
            b.iter_batched(
                || items.clone(),
                |items| redb.redb(items).expect("commit"),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = fdatasync, commits
}
criterion_main!(benches);
