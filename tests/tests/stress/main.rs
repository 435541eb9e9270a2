//! The freeze issue's suite: data-streams under many concurrent writers, a stalled store, slow
//! and idle clients, and batches that say one thing while the stream holds another.
//!
//! # Layout
//! - [`storm`]: rounds of concurrent creates and start/stop on one job, with reads, during
//!   ingest; a kill -9 in the middle of a storm of creates.
//! - [`stall`]: a flush held by the test hook: 503, a log line, exit 3, nothing lost.
//! - [`clients`]: slow-header, idle and oversized-body clients; repeated `Authorization`.
//! - [`exact`]: a complete batch is exactly what its marker says; unknown jobs serve nothing.

mod clients;
mod exact;
mod stall;
mod storm;

use std::time::{Duration, Instant};

pub use newsflow_tests::bus::sample_article as article;

/// Latencies, summarised.
pub struct Latencies(Vec<Duration>);

impl Latencies {
    /// Sorts the samples.
    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Self(samples)
    }

    /// The `p`-th percentile (0..=100).
    pub fn percentile(&self, p: usize) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let index = (self.0.len() * p / 100).min(self.0.len() - 1);
        self.0[index]
    }

    /// How many samples.
    pub fn count(&self) -> usize {
        self.0.len()
    }
}

/// Times `work`.
pub async fn timed<T>(work: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let value = work.await;
    (value, started.elapsed())
}
