//! The newsflow worker: takes jobs over NATS, fetches NewsAPI on each job's interval and
//! publishes every run as one batch on the `NEWS` JetStream stream: its articles first, all
//! acknowledged, then the end-of-batch marker.
//!
//! [`run`] is the whole program behind a thin `main`, so tests can start a worker in-process
//! and stop it with a [`CancellationToken`].
//!
//! # Layout
//! - `config`: the command-line flags ([`Cli`]) and the [`Config`] they become.
//! - `fetch`: the NewsAPI client: size cap, error classification, retries with backoff.
//! - `breaker`: the worker-wide pause after the API key is refused.
//! - `run`: one run of a job, one batch: the page loop and the marker.
//! - `pipeline`: what a run does to its articles between fetch and publish (cleaning, the
//!   job's stages).
//! - `dedupe`: the dedupe memory, a JetStream key-value bucket keyed by job id.
//! - `jobs`: the registry of running jobs and each job's scheduling task.
//! - `commands`: start and stop commands, parsed, acted on and answered.
//! - `heartbeat`: the periodic list of jobs this worker runs.
//! - `testing` (tests only): fakes of a run's two seams, page source and publisher.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use newsflow_core::retry::Backoff;
use newsflow_nats::async_nats::jetstream;
use newsflow_nats::connect::connect_with_retry;
use newsflow_nats::publish;
use newsflow_nats::stream::{ensure_stream, StreamSettings};
use newsflow_nats::subjects;
use newsflow_runtime::retry::{retry, Failure, RetryPolicy};
use tokio_util::sync::CancellationToken;

mod breaker;
mod commands;
mod config;
mod dedupe;
mod fetch;
mod heartbeat;
mod jobs;
mod pipeline;
mod run;
#[cfg(test)]
mod testing;

pub use config::{Cli, Config, ConfigError};
pub use fetch::FetchSettings;
pub use run::LATENESS_HEADER;

/// JetStream API requests and publish acks give up after this long (publishes are retried).
const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one shutdown step on the NATS connection may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the worker until `shutdown` is cancelled: connects to NATS (retrying, and returning
/// `Ok` if shutdown comes first), provisions the stream, takes start and stop commands, runs
/// jobs and sends heartbeats. On shutdown it stops taking commands, cancels every job, waits
/// for them up to the grace period, flushes NATS and returns `Ok`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let worker_id = config.worker_id.clone();
    tracing::info!(
        worker_id = %worker_id,
        nats = %config.nats.redacted_url(),
        newsapi = %config.newsapi_url,
        "worker starting"
    );
    if config.newsapi_key.is_none() {
        tracing::warn!(
            "no NewsAPI key (--newsapi-key or NEWSAPI_KEY): NewsAPI will refuse every fetch"
        );
    }
    let news = fetch::NewsClient::new(
        &config.newsapi_url,
        config.newsapi_key.clone(),
        config.fetch.clone(),
    )
    .context("setting up the NewsAPI client")?;

    let name = format!("newsflow-worker {worker_id}");
    let Ok(connected) = connect_with_retry(&config.nats, &name, &shutdown).await;
    let Some(nats) = connected else {
        tracing::info!("shutdown before NATS was reached; exiting");
        return Ok(());
    };
    let js = jetstream::ContextBuilder::new()
        .timeout(JETSTREAM_TIMEOUT)
        .build(nats.clone());
    if !provision_stream(&js, &config.stream, &shutdown).await {
        tracing::info!("shutdown before the stream was provisioned; exiting");
        return Ok(());
    }
    let Some(memory) = provision_memory(&js, config.stream.replicas, &shutdown).await else {
        tracing::info!("shutdown before the dedupe bucket was provisioned; exiting");
        return Ok(());
    };
    let start = nats
        .queue_subscribe(subjects::START, subjects::WORKERS_QUEUE.to_owned())
        .await
        .with_context(|| format!("subscribing to {}", subjects::START))?;
    let stop_subject = subjects::stop(&worker_id);
    let stop = nats
        .subscribe(stop_subject.clone())
        .await
        .with_context(|| format!("subscribing to {stop_subject}"))?;
    // The subscriptions must be on the server before anyone is told the worker is ready.
    if tokio::time::timeout(STEP_TIMEOUT, nats.flush())
        .await
        .is_err()
    {
        tracing::warn!("NATS did not confirm the subscriptions in time; going on");
    }

    let runner = Arc::new(run::Runner {
        worker_id: worker_id.clone(),
        source: fetch::GuardedClient::new(
            news,
            breaker::Breaker::default(),
            config.max_concurrent_fetches,
        ),
        publisher: run::JetStreamPublisher::new(js, publish::default_policy(), memory),
    });
    let registry = Arc::new(jobs::Registry::new(Arc::new(move |spec, cancel| {
        tokio::spawn(jobs::run_job(Arc::clone(&runner), spec, cancel))
    })));
    let heartbeat_stop = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat::run(
        nats.clone(),
        worker_id.clone(),
        Arc::clone(&registry),
        config.heartbeat_every,
        heartbeat_stop.clone(),
    ));

    println!("worker ready id={worker_id}");
    tracing::info!(worker_id = %worker_id, "worker ready");

    let commands = commands::Commands {
        client: nats.clone(),
        worker_id: worker_id.clone(),
        registry: Arc::clone(&registry),
        stop_grace: config.shutdown_grace,
    };
    let served = commands.serve(start, stop, &shutdown).await;
    if let Err(error) = &served {
        tracing::error!(%error, "no longer receiving commands; shutting down");
    }

    tracing::info!(
        grace_ms = config.shutdown_grace.as_millis() as u64,
        "shutting down: stopping jobs"
    );
    let stopped = registry.stop_all(config.shutdown_grace).await;
    tracing::info!(jobs = stopped, "shutting down: jobs stopped");
    heartbeat_stop.cancel();
    if let Err(error) = heartbeat.await {
        tracing::warn!(%error, "the heartbeat task failed");
    }
    // An empty heartbeat lets data-streams hand this worker's jobs to another one at once.
    if tokio::time::timeout(STEP_TIMEOUT, heartbeat::beat(&nats, &worker_id, Vec::new()))
        .await
        .is_err()
    {
        tracing::warn!("the last heartbeat timed out");
    }
    tracing::info!("shutting down: flushing NATS");
    match tokio::time::timeout(STEP_TIMEOUT, nats.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "flushing NATS failed"),
        Err(_) => tracing::warn!("flushing NATS timed out"),
    }
    tracing::info!(worker_id = %worker_id, "worker stopped");
    served.context("serving commands")
}

/// Creates or updates the `NEWS` stream, retrying with backoff (JetStream may still be
/// starting); `false` when shutdown came first.
async fn provision_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
    shutdown: &CancellationToken,
) -> bool {
    let policy = RetryPolicy::new(Backoff::new(
        Duration::from_millis(500),
        Duration::from_secs(10),
    ));
    let provisioned = retry(
        &policy,
        shutdown,
        "could not provision the NEWS stream",
        || async {
            ensure_stream(js, settings)
                .await
                .map_err(Failure::Transient)
        },
    )
    .await;
    provisioned.is_ok()
}

/// Creates or opens the dedupe memory bucket, retrying like [`provision_stream`]; `None` when
/// shutdown came first.
async fn provision_memory(
    js: &jetstream::Context,
    replicas: usize,
    shutdown: &CancellationToken,
) -> Option<dedupe::MemoryBucket> {
    let policy = RetryPolicy::new(Backoff::new(
        Duration::from_millis(500),
        Duration::from_secs(10),
    ));
    retry(
        &policy,
        shutdown,
        "could not provision the dedupe bucket",
        || async {
            dedupe::MemoryBucket::provision(js, replicas)
                .await
                .map_err(|error| Failure::Transient(format!("{error:#}")))
        },
    )
    .await
    .ok()
}
