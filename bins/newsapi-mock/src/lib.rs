//! A NewsAPI v2 compatible mock server.
//!
//! It speaks NewsAPI's protocol faithfully enough that a client cannot tell it from the real
//! service: the same routes, parameters, validation, error codes and messages, the free plan's
//! 100-result cap, and deterministic articles per query. On top of that it can be told, at start
//! or at run time through `/__mock/*`, to misbehave the ways the real service and the network
//! do (rate limits, 5xx, slow or broken answers, dropped connections), and it counts requests so
//! tests can check how a client reacted.
//!
//! # Layout
//! - `articles`: deterministic articles of a query, cheap to make by the hundred thousand.
//! - `catalog`: the outlets, words and names articles are made of; the sources listing.
//! - `control`: the `/__mock/*` control API and request statistics.
//! - `faults`: fault kinds, their `kind[:times]` syntax and the FIFO fault queue.
//! - `protocol`: NewsAPI error bodies, the query string and the API key.
//! - `query`: request parameters validated into the query an endpoint answers.
//! - `server`: shared state, the router and the `/v2/*` handlers.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;

pub mod articles;
pub mod catalog;
pub mod control;
pub mod faults;
pub mod protocol;
pub mod query;
pub mod server;

pub use faults::{FaultKind, FaultSpec};
pub use server::{router, AppState};

/// How the mock behaves.
#[derive(Clone)]
pub struct Config {
    /// The key it accepts; `None` accepts any key but still requires one.
    pub api_key: Option<String>,
    /// Results of every query; `None` derives 120..=400 from the query.
    pub total_results: Option<u32>,
    /// The plan's cap: asking for results past it is a 426.
    pub max_results: u32,
    /// Faults queued at start, applied in order.
    pub faults: Vec<FaultSpec>,
    /// Added to every `/v2/*` response.
    pub latency: Duration,
    /// Varies every generated article; the same seed gives the same articles.
    pub seed: u64,
    /// When set, a new article appears at the top of every result list this often.
    pub rotate_every: Option<Duration>,
    /// When set to N, one result in N is NewsAPI's `[Removed]` placeholder and the one after
    /// it carries HTML entities in its title and description, as real pages do. `None` serves
    /// clean pages, which suites comparing stored articles with the mock's byte for byte need.
    pub dirty_every: Option<u32>,
}

impl Default for Config {
    /// The free developer plan with the demo key, no faults and no latency.
    fn default() -> Self {
        Self {
            api_key: Some("demo-key".to_owned()),
            total_results: None,
            max_results: 100,
            faults: Vec::new(),
            latency: Duration::ZERO,
            seed: 0,
            rotate_every: None,
            dirty_every: None,
        }
    }
}

/// Shows everything but the key.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("total_results", &self.total_results)
            .field("max_results", &self.max_results)
            .field("faults", &self.faults)
            .field("latency", &self.latency)
            .field("seed", &self.seed)
            .field("rotate_every", &self.rotate_every)
            .field("dirty_every", &self.dirty_every)
            .finish()
    }
}

/// Serves the mock on `listener` until `shutdown` completes, then finishes the requests in
/// hand and returns.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("reading the listener's address")?;
    tracing::info!(%addr, ?config, "serving the NewsAPI v2 mock");
    axum::serve(listener, router(AppState::new(&config)))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")?;
    tracing::info!("stopped");
    Ok(())
}
