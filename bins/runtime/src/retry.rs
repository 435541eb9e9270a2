//! The one retry helper of newsflow: an operation is tried, and tried again after a capped,
//! jittered backoff, until it succeeds, says retrying cannot help, runs out of attempts or
//! time, or the caller cancels. Every retry is logged once, here, with the same fields.
//!
//! Retries do not nest: a function that retries is called once by its caller, never inside
//! another retry.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use newsflow_core::retry::Backoff;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How patiently to retry: the waits between attempts and when to give up.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    backoff: Backoff,
    max_attempts: Option<u32>,
    give_up_after: Option<Duration>,
    max_asked_wait: Option<Duration>,
    jitter: fn() -> f64,
}

impl RetryPolicy {
    /// Retries forever (until cancelled), waiting per `backoff` with random jitter.
    pub fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            max_attempts: None,
            give_up_after: None,
            max_asked_wait: None,
            jitter: rand::random::<f64>,
        }
    }

    /// Makes at most `attempts` attempts in all, the first included (at least one).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// Makes no new attempt once this long has passed since the first one began.
    pub fn give_up_after(mut self, limit: Duration) -> Self {
        self.give_up_after = Some(limit);
        self
    }

    /// Honours a wait the other side asked for ([`Failure::TransientAfter`]) up to `cap`;
    /// without this, asked waits are ignored and the backoff alone decides.
    pub fn honour_asked_waits_up_to(mut self, cap: Duration) -> Self {
        self.max_asked_wait = Some(cap);
        self
    }

    /// Replaces the random jitter (drawn from `[0, 1)`), so tests see exact waits.
    pub fn with_jitter(mut self, jitter: fn() -> f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The wait before retry number `retry` (0-based), given what the other side asked for.
    fn wait_before(&self, retry: u32, asked: Option<Duration>) -> Duration {
        let jitter = (self.jitter)();
        match self.max_asked_wait {
            Some(cap) => self.backoff.delay_honouring(retry, jitter, asked, cap),
            None => self.backoff.delay(retry, jitter),
        }
    }
}

/// Why one attempt failed, and whether another one can help.
#[derive(Debug)]
pub enum Failure<E> {
    /// Worth another attempt after the backoff's wait.
    Transient(E),
    /// Worth another attempt, but not before the other side asked (e.g. `Retry-After`).
    TransientAfter(E, Duration),
    /// Retrying cannot help: give up at once.
    Permanent(E),
}

impl<E> From<E> for Failure<E> {
    fn from(error: E) -> Self {
        Self::Transient(error)
    }
}

/// The operation did not succeed and will not be tried again.
#[derive(Debug)]
pub struct GaveUp<E> {
    /// The last attempt's error.
    pub error: E,
    /// How many attempts were made.
    pub attempts: u32,
    /// Time from the start of the first attempt to giving up.
    pub elapsed: Duration,
}

impl<E: fmt::Display> fmt::Display for GaveUp<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave up after {} attempt(s) in {:?}: {}",
            self.attempts, self.elapsed, self.error
        )
    }
}

impl<E: std::error::Error + 'static> std::error::Error for GaveUp<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// How a cancellable retry ended without a result.
#[derive(Debug)]
pub enum RetryError<E> {
    /// The cancel token fired first; the attempt or wait in hand was abandoned.
    Cancelled,
    /// The operation failed for good.
    GaveUp(GaveUp<E>),
}

impl<E: fmt::Display> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cancelled => f.write_str("cancelled"),
            Self::GaveUp(gave_up) => gave_up.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for RetryError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Cancelled => None,
            Self::GaveUp(gave_up) => Some(&gave_up.error),
        }
    }
}

/// Runs `op` until it succeeds, following `policy`, and stops as soon as `cancel` fires
/// (before an attempt, during one, or during a wait). `what` says what failed in the words an
/// operator greps for ("cannot reach NATS"); each retry logs `"{what}; retrying"` at warn
/// level with the error, the attempt number and the wait.
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    cancel: &CancellationToken,
    what: &str,
    op: F,
) -> Result<T, RetryError<E>>
where
    E: fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure<E>>>,
{
    match drive(policy, cancel.cancelled(), what, op).await {
        Ok(value) => Ok(value),
        Err(Stop::Cancelled(())) => Err(RetryError::Cancelled),
        Err(Stop::GaveUp(gave_up)) => Err(RetryError::GaveUp(gave_up)),
    }
}

/// [`retry`] for an operation whose owner cancels it by dropping the future (a page fetch
/// inside a job's run): there is no token, so the only ending without a result is giving up.
pub async fn retry_until_dropped<T, E, F, Fut>(
    policy: &RetryPolicy,
    what: &str,
    op: F,
) -> Result<T, GaveUp<E>>
where
    E: fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure<E>>>,
{
    match drive(policy, std::future::pending::<Infallible>(), what, op).await {
        Ok(value) => Ok(value),
        Err(Stop::Cancelled(never)) => match never {},
        Err(Stop::GaveUp(gave_up)) => Err(gave_up),
    }
}

enum Stop<E, C> {
    Cancelled(C),
    GaveUp(GaveUp<E>),
}

async fn drive<T, E, C, F, Fut>(
    policy: &RetryPolicy,
    cancel: C,
    what: &str,
    mut op: F,
) -> Result<T, Stop<E, C::Output>>
where
    E: fmt::Display,
    C: Future,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure<E>>>,
{
    tokio::pin!(cancel);
    let started = Instant::now();
    let mut retries = 0u32;
    loop {
        let result = tokio::select! {
            biased;
            cancelled = &mut cancel => return Err(Stop::Cancelled(cancelled)),
            result = op() => result,
        };
        let attempts = retries.saturating_add(1);
        let gave_up = |error| {
            Stop::GaveUp(GaveUp {
                error,
                attempts,
                elapsed: started.elapsed(),
            })
        };
        let (error, asked) = match result {
            Ok(value) => return Ok(value),
            Err(Failure::Permanent(error)) => return Err(gave_up(error)),
            Err(Failure::Transient(error)) => (error, None),
            Err(Failure::TransientAfter(error, asked)) => (error, Some(asked)),
        };
        let out_of_attempts = policy.max_attempts.is_some_and(|max| attempts >= max);
        let out_of_time = policy
            .give_up_after
            .is_some_and(|limit| started.elapsed() >= limit);
        if out_of_attempts || out_of_time {
            return Err(gave_up(error));
        }
        let wait = policy.wait_before(retries, asked);
        tracing::warn!(
            %error,
            attempt = attempts,
            retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            "{what}; retrying"
        );
        tokio::select! {
            biased;
            cancelled = &mut cancel => return Err(Stop::Cancelled(cancelled)),
            () = tokio::time::sleep(wait) => {}
        }
        retries = attempts;
    }
}

#[cfg(test)]
mod tests;
