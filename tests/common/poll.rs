//! Waiting for a condition that becomes true asynchronously (a count landing, a file
//! being swapped in, a month rolling over), with a bound and a message naming what was
//! awaited.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`eventually`] checks.
const INTERVAL: Duration = Duration::from_millis(50);

/// Polls `check` every 50 ms until it yields `Some`, or panics naming `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(INTERVAL).await;
    }
}
