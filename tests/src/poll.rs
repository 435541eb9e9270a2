//! Waiting on conditions with deadlines instead of sleeping: `wait_for` polls until a probe
//! yields a value, `hold_for` checks that a condition keeps holding for a while.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often probes run.
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// Runs `probe` every [`POLL_EVERY`] until it returns `Some`, and returns that value.
/// Panics with `what` when `within` passes first.
pub async fn wait_for<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Runs `check` every [`POLL_EVERY`] for `duration`; `check` returns `Some(violation)` when
/// the condition is broken, and the test panics with `what` and the violation.
pub async fn hold_for<F, Fut>(duration: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<String>>,
{
    let end = Instant::now() + duration;
    loop {
        if let Some(violation) = check().await {
            panic!("expected {what} for {duration:?}, but: {violation}");
        }
        if Instant::now() > end {
            return;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
