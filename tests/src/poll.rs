//! Waiting on conditions with deadlines instead of sleeping: `wait_for` polls until a probe
//! yields a value (`poll_until` when the caller words its own failure), `hold_for` checks that
//! a condition keeps holding for a while.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often probes run.
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// Runs `probe` every [`POLL_EVERY`] until it returns `Some`, and returns that value.
/// Panics with `what` when `within` passes first.
pub async fn wait_for<T, F, Fut>(within: Duration, what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll_until(within, probe).await {
        Some(value) => value,
        None => panic!("timed out after {within:?} waiting for {what}"),
    }
}

/// Runs `probe` every [`POLL_EVERY`] until it returns `Some`, and returns that value; `None`
/// once `within` passed. For a caller whose failure message must say what it saw meanwhile.
pub async fn poll_until<T, F, Fut>(within: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
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
