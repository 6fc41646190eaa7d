//! A strict commit batch through the count journal (one frame, one durable write) beside the
//! same batch committed straight into redb (one durable transaction, as strict durability did
//! before the journal), for batches of 1 and 32 loads: wall time, and the committing thread's
//! CPU time (user and system, from `/proc/thread-self/schedstat`), which a shared disk's
//! moods do not move; and the disk's own fdatasync, printed first as the median of 200 (the
//! unit a strict load waits for).
//!
//! The stores live in a temporary directory under `target/`, so on the repository's disk,
//! like `benches/overhead.sh`'s.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tollgate::store_bench::{fdatasync_times, CommitBench, CountItem};

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

/// CPU time this thread has run, user and system.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let ns = stat
        .split_whitespace()
        .next()
        .and_then(|ns| ns.parse().ok())
        .expect("schedstat's first field");
    Duration::from_nanos(ns)
}

/// Which clock a group reads.
#[derive(Clone, Copy)]
enum Clock {
    Wall,
    Cpu,
}

/// One way of making a strict commit batch durable (panics if it fails).
type Commit = fn(&mut CommitBench, Vec<CountItem>);

fn commits(c: &mut Criterion) {
    for (clock, name) in [
        (Clock::Wall, "strict commit batch, wall time"),
        (Clock::Cpu, "strict commit batch, CPU time"),
    ] {
        let mut group = c.benchmark_group(name);
        for (loads, flows) in [(1, 1), (32, 1), (32, 32)] {
            let label = format!("{loads} loads, {flows} flows");
            let items = CommitBench::items(loads, flows);
            let ways: [(&str, Commit); 2] = [
                ("journal", |bench, batch| {
                    bench.journal(batch).expect("journal")
                }),
                ("redb", |bench, batch| bench.redb(batch).expect("commit")),
            ];
            for (way, commit) in ways {
                let dir = scratch();
                let mut bench = CommitBench::open(dir.path()).expect("open a store");
                group.bench_with_input(BenchmarkId::new(way, &label), &items, |b, items| {
                    b.iter_custom(|iters| {
                        timed(clock, iters, items, |batch| commit(&mut bench, batch))
                    })
                });
            }
        }
        group.finish();
    }
}

/// The time `iters` commits of `items` take on `clock`, read once around all of them (the
/// kernel updates a thread's CPU time when it blocks, which every commit does, so the figure is
/// exact up to the first and last moments of the loop); the batches are made beforehand.
fn timed(
    clock: Clock,
    iters: u64,
    items: &[CountItem],
    mut commit: impl FnMut(Vec<CountItem>),
) -> Duration {
    let batches: Vec<Vec<CountItem>> = (0..iters).map(|_| items.to_vec()).collect();
    let (wall, cpu) = (Instant::now(), thread_cpu());
    for batch in batches {
        commit(batch);
    }
    match clock {
        Clock::Wall => wall.elapsed(),
        Clock::Cpu => thread_cpu() - cpu,
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = fdatasync, commits
}
criterion_main!(benches);
