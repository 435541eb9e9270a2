//! The worker-wide pause after an API-key failure.
//!
//! Every job of a worker shares one key, so a 401 or an exhausted quota seen by one job holds
//! for all of them. After such a failure the breaker opens: for 30 s, doubling with each
//! failure in a row up to an hour, no job calls NewsAPI and each run fails at once with the
//! last key error. When the pause is over one fetch probes the key while the others keep
//! failing fast; its success closes the breaker, another key failure reopens it for longer.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use newsflow_core::newsapi::{FetchError, PageOutcome};
use tokio::time::Instant;

/// The first pause.
pub const FIRST_PAUSE: Duration = Duration::from_secs(30);
/// The longest pause.
pub const MAX_PAUSE: Duration = Duration::from_secs(3600);

/// The breaker. Its lock is only held for a few field updates, never across an `.await`.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    first_pause: Duration,
    max_pause: Duration,
}

#[derive(Debug, Default)]
struct State {
    open: Option<Open>,
    probing: bool,
}

#[derive(Debug)]
struct Open {
    until: Instant,
    error: FetchError,
    trips: u32,
}

impl Default for Breaker {
    fn default() -> Self {
        Self::new(FIRST_PAUSE, MAX_PAUSE)
    }
}

impl Breaker {
    /// A closed breaker pausing `first_pause` after a key failure, doubling up to `max_pause`.
    pub fn new(first_pause: Duration, max_pause: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            first_pause,
            max_pause: max_pause.max(first_pause),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent field by field, so a panic elsewhere cannot corrupt it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets a fetch through, or refuses it with the key error that opened the breaker.
    pub fn admit(&self) -> Result<Pass<'_>, FetchError> {
        let now = Instant::now();
        let mut state = self.state();
        let probe = match &state.open {
            None => false,
            Some(open) if now < open.until || state.probing => return Err(open.error.clone()),
            Some(_) => true,
        };
        state.probing |= probe;
        Ok(Pass {
            breaker: self,
            probe,
        })
    }

    fn pause(&self, trips: u32) -> Duration {
        let factor = 1u32
            .checked_shl(trips.saturating_sub(1).min(31))
            .unwrap_or(u32::MAX);
        self.first_pause.saturating_mul(factor).min(self.max_pause)
    }

    fn record(&self, probe: bool, result: &Result<PageOutcome, FetchError>) {
        let now = Instant::now();
        let mut state = self.state();
        if probe {
            state.probing = false;
        }
        match result {
            Ok(_) => {
                if state.open.take().is_some() {
                    tracing::info!("NewsAPI accepts the API key again; fetching resumes");
                }
            }
            Err(error) if error.is_key_failure() => {
                let trips = match &state.open {
                    // Another job already opened it during this request: same failure.
                    Some(open) if !probe && now < open.until => {
                        let trips = open.trips;
                        let until = open.until;
                        state.open = Some(Open {
                            until,
                            error: error.clone(),
                            trips,
                        });
                        return;
                    }
                    Some(open) => open.trips.saturating_add(1),
                    None => 1,
                };
                let pause = self.pause(trips);
                crate::metrics::global().breaker_trips.inc();
                tracing::warn!(
                    code = %error.to_info().code,
                    pause_secs = pause.as_secs(),
                    trips,
                    "NewsAPI refused the API key; pausing every job's fetches"
                );
                state.open = Some(Open {
                    until: now + pause,
                    error: error.clone(),
                    trips,
                });
            }
            Err(_) => {}
        }
    }
}

/// Permission for one fetch; report its result with [`Pass::record`]. A pass dropped without a
/// result (the run was cancelled) gives the probe back.
#[derive(Debug)]
pub struct Pass<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Pass<'_> {
    /// Closes the breaker on success, opens it (longer each time) on a key failure.
    pub fn record(mut self, result: &Result<PageOutcome, FetchError>) {
        let probe = std::mem::take(&mut self.probe);
        self.breaker.record(probe, result);
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.breaker.state().probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use newsflow_core::newsapi::NewsPage;

    fn unauthorized() -> Result<PageOutcome, FetchError> {
        Err(FetchError::Unauthorized {
            code: "apiKeyInvalid".to_owned(),
            message: "bad key".to_owned(),
        })
    }

    fn page() -> Result<PageOutcome, FetchError> {
        Ok(PageOutcome::Page(NewsPage::default()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_failure_pauses_every_fetch_until_the_pause_is_over() {
        let breaker = Breaker::default();
        breaker.admit().expect("closed").record(&unauthorized());

        let refused = breaker.admit().expect_err("open");
        assert_eq!(refused.to_info().code, "api_key_invalid");
        tokio::time::advance(FIRST_PAUSE - Duration::from_millis(1)).await;
        assert!(breaker.admit().is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(breaker.admit().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn only_one_fetch_probes_the_key_after_a_pause() {
        let breaker = Breaker::default();
        breaker.admit().expect("closed").record(&unauthorized());
        tokio::time::advance(FIRST_PAUSE).await;

        let probe = breaker.admit().expect("probe");
        assert!(
            breaker.admit().is_err(),
            "a second fetch waits for the probe"
        );
        probe.record(&page());
        assert!(breaker.admit().is_ok());
        assert!(breaker.admit().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_lets_the_next_fetch_probe() {
        let breaker = Breaker::default();
        breaker.admit().expect("closed").record(&unauthorized());
        tokio::time::advance(FIRST_PAUSE).await;

        drop(breaker.admit().expect("probe"));
        assert!(breaker.admit().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_double_with_each_failed_probe_up_to_an_hour() {
        let breaker = Breaker::default();
        breaker.admit().expect("closed").record(&unauthorized());
        let mut expected = FIRST_PAUSE;
        for _ in 0..10 {
            tokio::time::advance(expected - Duration::from_millis(1)).await;
            assert!(breaker.admit().is_err());
            tokio::time::advance(Duration::from_millis(1)).await;
            breaker.admit().expect("probe").record(&unauthorized());
            expected = (expected * 2).min(MAX_PAUSE);
        }
        assert_eq!(expected, MAX_PAUSE);
    }

    #[tokio::test(start_paused = true)]
    async fn other_failures_neither_open_nor_close_it() {
        let breaker = Breaker::default();
        let timeout = Err(FetchError::Timeout(Duration::from_secs(1)));
        breaker.admit().expect("closed").record(&timeout);
        assert!(breaker.admit().is_ok());

        breaker.admit().expect("closed").record(&unauthorized());
        tokio::time::advance(FIRST_PAUSE).await;
        breaker.admit().expect("probe").record(&timeout);
        assert!(breaker.admit().is_ok(), "the next fetch probes again");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_key_failures_count_as_one() {
        let breaker = Breaker::default();
        let first = breaker.admit().expect("closed");
        let second = breaker.admit().expect("closed");
        first.record(&unauthorized());
        second.record(&unauthorized());
        tokio::time::advance(FIRST_PAUSE).await;
        assert!(breaker.admit().is_ok(), "paused once, not twice as long");
    }
}
