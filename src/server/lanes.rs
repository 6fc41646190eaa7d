//! Connection lanes: with more than one worker thread, each thread runs a single-threaded
//! runtime of its own (a *lane*), and an accepted engine connection is handed to one lane,
//! which serves it for its whole life: its requests, their upstream connections (each lane
//! keeps its own idle connections, see `upstream::pool`) and their timers stay on one thread
//! and one epoll instance. A work-stealing runtime instead moves a connection's tasks between
//! threads and wakes parked threads to share the work, which costs more CPU per request than
//! it wins on a proxy whose requests are short (the nginx-worker and pingora shape).
//!
//! The listeners, the admin API and background work stay on the main runtime; connections are
//! handed out in turn.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::watch;

thread_local! {
    /// The lane this thread runs, numbered from 0 (0 also on any thread that is not a lane).
    static LANE: Cell<usize> = const { Cell::new(0) };
}

/// The lane the calling thread runs (0 outside lanes): indexes per-lane state.
pub fn current() -> usize {
    LANE.with(Cell::get)
}

/// The lanes of a process: a single-threaded runtime per thread, and the turn of the next
/// connection.
pub struct Lanes {
    handles: Box<[Handle]>,
    next: AtomicUsize,
    stop: watch::Sender<bool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Lanes {
    /// How many lanes there are: per-lane state (idle upstream connections) has as many slots.
    pub fn count(&self) -> usize {
        self.handles.len()
    }

    /// Starts `count` lane threads (named `tollgate-lane-N`), each running its runtime until
    /// [`Lanes::stop`].
    pub fn start(count: usize) -> std::io::Result<Lanes> {
        let count = count.max(1);
        let (stop, stopped) = watch::channel(false);
        let mut handles = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for lane in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let mut stopped = stopped.clone();
            let thread = std::thread::Builder::new()
                .name(format!("tollgate-lane-{lane}"))
                .spawn(move || {
                    LANE.with(|current| current.set(lane));
                    runtime.block_on(async move {
                        while !*stopped.borrow_and_update() {
                            if stopped.changed().await.is_err() {
                                break;
                            }
                        }
                    });
                })?;
            threads.push(thread);
        }
        Ok(Lanes {
            handles: handles.into_boxed_slice(),
            next: AtomicUsize::new(0),
            stop,
            threads: Mutex::new(threads),
        })
    }

    /// Runs `future` on the next lane in turn.
    pub fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[turn].spawn(future);
    }

    /// Stops every lane and waits for its thread; what still runs on a lane is dropped (call
    /// it after the connections have drained).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for thread in threads {
            if thread.join().is_err() {
                tracing::warn!("a connection lane's thread panicked");
            }
        }
    }
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes")
            .field("lanes", &self.handles.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_handed_to_the_lanes_in_turn_and_run_on_their_threads() {
        let lanes = Lanes::start(2).unwrap();
        assert_eq!(lanes.count(), 2);
        let (seen, mut ran) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..4 {
            let seen = seen.clone();
            lanes.spawn(async move {
                let thread = std::thread::current().name().map(str::to_owned);
                let _ = seen.send((current(), thread));
            });
        }
        let mut lanes_seen = Vec::new();
        for _ in 0..4 {
            let (lane, thread) = ran.blocking_recv().unwrap();
            assert_eq!(thread, Some(format!("tollgate-lane-{lane}")));
            lanes_seen.push(lane);
        }
        lanes_seen.sort_unstable();
        assert_eq!(lanes_seen, [0, 0, 1, 1]);
        lanes.stop();
        assert_eq!(current(), 0, "the test's thread is no lane");
    }
}
