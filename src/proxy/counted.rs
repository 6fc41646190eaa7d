//! A counted load's exchange runs in the request's own task, and, should the request's future
//! be dropped before it ends (hyper drops it when the engine hangs up), it goes on to its end
//! in a task of its own: a load the target accepted is always counted. Until it ends it holds
//! a token of the counted exchanges' tracker, which shutdown waits for before the last flush.
//!
//! Running it in the request's task (rather than spawning a task for every counted load and
//! awaiting it) saves a task, its scheduling and a wake-up per load; only an exchange whose
//! engine left pays for a task.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

/// An exchange that must reach its end whatever happens to the request that started it.
pub(super) struct Counted<F: Future + Send + 'static> {
    /// Boxed, so that it can be handed to a task of its own if the request is dropped.
    exchange: Option<Pin<Box<F>>>,
    /// Counts the exchange as in flight until it ends.
    token: Option<TaskTrackerToken>,
}

impl<F: Future + Send + 'static> Counted<F> {
    /// Starts tracking `exchange` (it runs when this is polled).
    pub(super) fn new(tracker: &TaskTracker, exchange: F) -> Counted<F> {
        Counted {
            exchange: Some(Box::pin(exchange)),
            token: Some(tracker.token()),
        }
    }
}

impl<F: Future + Send + 'static> Future for Counted<F> {
    type Output = F::Output;

    /// Polls the exchange; not to be polled again once it has answered.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let Some(exchange) = &mut this.exchange else {
            return Poll::Pending;
        };
        let output = std::task::ready!(exchange.as_mut().poll(cx));
        this.exchange = None;
        this.token = None;
        Poll::Ready(output)
    }
}

impl<F: Future + Send + 'static> Drop for Counted<F> {
    fn drop(&mut self) {
        let (Some(exchange), token) = (self.exchange.take(), self.token.take()) else {
            return;
        };
        // The request went away mid-exchange: finish it in a task of its own, still tracked.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _token = token;
                    // Nobody is left to read the answer; the count is what matters.
                    drop(exchange.await);
                });
            }
            Err(_) => tracing::error!("a counted exchange was cut off outside the runtime"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn an_exchange_dropped_midway_finishes_and_is_waited_for() {
        let tracker = TaskTracker::new();
        let finished = Arc::new(AtomicBool::new(false));
        let exchange = {
            let finished = finished.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                finished.store(true, Ordering::SeqCst);
            }
        };
        let mut counted = Box::pin(Counted::new(&tracker, exchange));
        // Polled once (the exchange starts), then dropped, as hyper drops a request's future.
        let waker = std::task::Waker::noop();
        assert!(counted
            .as_mut()
            .poll(&mut Context::from_waker(waker))
            .is_pending());
        drop(counted);
        tracker.close();
        assert!(!finished.load(Ordering::SeqCst));
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .expect("the tracker waits for the detached exchange");
        assert!(
            finished.load(Ordering::SeqCst),
            "the exchange ran to its end"
        );
    }

    #[tokio::test]
    async fn an_exchange_that_ends_inline_leaves_nothing_in_flight() {
        let tracker = TaskTracker::new();
        Counted::new(&tracker, async {}).await;
        assert!(tracker.is_empty());
    }
}
