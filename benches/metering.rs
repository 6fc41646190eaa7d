//! Admission and commit of main-entity loads (`Reservation::take` + `commit`) with 1, 2 and
//! 8 threads contending for one license's monthly budget: the atomic work every counted load
//! adds on the request path. Times are wall time per load across all threads.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tollgate::meter::{Meters, Reservation};

const MONTH: u32 = 2026 * 12 + 10;
const HARD_LIMIT: Option<u64> = Some(1 << 40);

fn contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("reserve + commit, one license");
    for threads in [1usize, 2, 8] {
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{threads} threads")),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    let mut meters = Meters::default();
                    let license = meters.license("LIC-BENCH");
                    let flows: Vec<_> = (0..threads)
                        .map(|i| meters.flow(&format!("flow-{i}")))
                        .collect();
                    let per_thread = iters.div_ceil(threads as u64);
                    let barrier = Barrier::new(threads + 1);
                    std::thread::scope(|scope| {
                        for flow in &flows {
                            let (license, barrier) = (&license, &barrier);
                            scope.spawn(move || {
                                barrier.wait();
                                for _ in 0..per_thread {
                                    if let Ok(reservation) = Reservation::take(
                                        Some((license, HARD_LIMIT)),
                                        flow,
                                        MONTH,
                                        1,
                                    ) {
                                        std::hint::black_box(reservation.commit());
                                    }
                                }
                            });
                        }
                        barrier.wait();
                        // Taken when every thread is released; read after the scope has joined them,
                        // so the figure is wall time per load across all threads.
                        Instant::now()
                    })
                    .elapsed()
                    .max(Duration::from_nanos(1))
                })
            },
        );
    }
    group.bench_function("reserve + release (refused by the target)", |b| {
        let mut meters = Meters::default();
        let (license, flow) = (meters.license("LIC-BENCH"), meters.flow("flow"));
        b.iter(|| {
            drop(Reservation::take(
                Some((&license, HARD_LIMIT)),
                &flow,
                MONTH,
                1,
            ))
        });
    });
    group.finish();
}

criterion_group!(benches, contended);
criterion_main!(benches);
