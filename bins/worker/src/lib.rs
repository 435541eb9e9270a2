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
//! - `budget`: the request budget shared by every worker on the key, kept in a JetStream bucket.
//! - `run`: one run of a job, one batch: the page loop and the marker.
//! - `pipeline`: what a run does to its articles between fetch and publish (cleaning, the
//!   job's stages).
//! - `dedupe`: the dedupe memory, a JetStream key-value bucket keyed by job id.
//! - `jobs`: the registry of running jobs and the one timer that runs them.
//! - `commands`: start, stop and list commands, parsed, acted on and answered.
//! - `service`: the NATS micro service (`$SRV.PING/INFO/STATS`) whose endpoints take them.
//! - `heartbeat`: the periodic digest (and, while short, list) of the jobs this worker runs.
//! - `plans`: each job's next run and failures in a row, written to the plans bucket.
//! - `metrics`: the Prometheus registry every module records into.
//! - `ops`: the optional ops address: `/metrics`, `/healthz`, `/readyz`.
//! - `testing` (tests only): fakes of a run's two seams, page source and publisher.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::TryFutureExt as _;
use newsflow_core::retry::Backoff;
use newsflow_nats::async_nats::jetstream;
use newsflow_nats::connect::connect_with_retry;
use newsflow_nats::kv::{open_bucket, PLANS_BUCKET};
use newsflow_nats::publish;
use newsflow_nats::stream::{ensure_stream, StreamSettings};
use newsflow_runtime::retry::{retry, Failure, RetryPolicy};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

mod breaker;
mod budget;
mod commands;
mod config;
mod dedupe;
mod fetch;
mod heartbeat;
mod jobs;
mod metrics;
mod ops;
mod pipeline;
mod plans;
mod run;
mod service;
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
    // Every line the worker writes, its jobs' included, names the worker.
    let span = tracing::info_span!("worker", worker_id = %config.worker_id);
    serve(config, shutdown).instrument(span).await
}

async fn serve(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
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

    let health = Arc::new(ops::Health::default());
    let ops_stop = CancellationToken::new();
    // Returning early (shutdown before NATS was reached) stops the ops server too.
    let _ops_guard = ops_stop.clone().drop_guard();
    let (ops, ops_addr) = match config.metrics_addr {
        Some(addr) => {
            let (task, bound) = ops::serve(addr, Arc::clone(&health), ops_stop.clone()).await?;
            (Some(task), Some(bound))
        }
        None => (None, None),
    };

    let name = format!("newsflow-worker {worker_id}");
    let Ok(connected) = connect_with_retry(&config.nats, &name, &shutdown).await;
    let Some(nats) = connected else {
        tracing::info!("shutdown before NATS was reached; exiting");
        return Ok(());
    };
    let _ = health.nats.set(nats.clone());
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
    let (service, endpoints) = service::register(&nats, &worker_id).await?;
    // The subscriptions must be on the server before anyone is told the worker is ready.
    if tokio::time::timeout(STEP_TIMEOUT, nats.flush())
        .await
        .is_err()
    {
        tracing::warn!("NATS did not confirm the subscriptions in time; going on");
    }

    let Some((budget, plan_store)) = open_buckets(&js, &config, &shutdown).await else {
        tracing::info!("shutdown before the key-value buckets were opened; exiting");
        return Ok(());
    };
    let runner = Arc::new(run::Runner {
        worker_id: worker_id.clone(),
        source: fetch::GuardedClient::new(
            news,
            breaker::Breaker::default(),
            config.max_concurrent_fetches,
            budget,
        ),
        publisher: run::JetStreamPublisher::new(js, publish::default_policy(), memory),
    });
    let plans = Arc::new(plans::PlanBoard::new(worker_id.clone()));
    let plans_stop = CancellationToken::new();
    let plan_writer = tokio::spawn({
        let (plans, stop) = (Arc::clone(&plans), plans_stop.clone());
        async move { plans.write_out(plan_store, stop).await }
    });
    let worker_span = tracing::Span::current();
    let runs = jobs::runs_of(runner);
    let registry = jobs::Registry::new(
        Arc::new(move |spec, late, cancel| {
            // Every line of a run names the worker and the job.
            let span = tracing::info_span!(parent: &worker_span, "job", job_id = %spec.id());
            Box::pin(runs(spec, late, cancel).instrument(span))
        }),
        Arc::clone(&plans),
        config.max_concurrent_runs,
    );
    let scheduler_stop = CancellationToken::new();
    let scheduler = tokio::spawn(Arc::clone(&registry).drive(scheduler_stop.clone()));
    let _ = health.registry.set(Arc::clone(&registry));
    let heartbeat_stop = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat::run(
        nats.clone(),
        worker_id.clone(),
        Arc::clone(&registry),
        config.heartbeat_every,
        heartbeat_stop.clone(),
    ));

    // With an ops address the ready line names it (the real port when 0 was asked for).
    let ops_note = ops_addr.map_or_else(String::new, |addr| format!(" ops=http://{addr}"));
    newsflow_runtime::logging::stdout_line(&format!("worker ready id={worker_id}{ops_note}"));
    tracing::info!(worker_id = %worker_id, "worker ready");

    let commands = commands::Commands {
        worker_id: worker_id.clone(),
        registry: Arc::clone(&registry),
        stop_grace: config.shutdown_grace,
    };
    health.commands_live.store(true, Ordering::Relaxed);
    let served = commands.serve(endpoints, &shutdown).await;
    health.commands_live.store(false, Ordering::Relaxed);
    if let Err(error) = &served {
        tracing::error!(%error, "no longer receiving commands; shutting down");
    }

    tracing::info!(
        grace_ms = config.shutdown_grace.as_millis() as u64,
        "shutting down: stopping jobs"
    );
    let stopped = registry.stop_all(config.shutdown_grace).await;
    tracing::info!(jobs = stopped, "shutting down: jobs stopped");
    scheduler_stop.cancel();
    if let Err(error) = scheduler.await {
        tracing::warn!(%error, "the scheduler task failed");
    }
    heartbeat_stop.cancel();
    if let Err(error) = heartbeat.await {
        tracing::warn!(%error, "the heartbeat task failed");
    }
    plans_stop.cancel();
    match tokio::time::timeout(STEP_TIMEOUT, plan_writer).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "the job plan writer failed"),
        Err(_) => tracing::warn!("writing the last job plans timed out"),
    }
    // An empty heartbeat lets data-streams hand this worker's jobs to another one at once.
    let last_beat = heartbeat::beat(
        &nats,
        &worker_id,
        newsflow_core::digest::JobSetDigest::default(),
        Some(Vec::new()),
    );
    if tokio::time::timeout(STEP_TIMEOUT, last_beat).await.is_err() {
        tracing::warn!("the last heartbeat timed out");
    }
    match tokio::time::timeout(STEP_TIMEOUT, service.stop()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "could not stop the NATS micro service"),
        Err(_) => tracing::warn!("stopping the NATS micro service timed out"),
    }
    tracing::info!("shutting down: flushing NATS");
    match tokio::time::timeout(STEP_TIMEOUT, nats.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "flushing NATS failed"),
        Err(_) => tracing::warn!("flushing NATS timed out"),
    }
    ops_stop.cancel();
    if let Some(ops) = ops {
        if let Err(error) = ops.await {
            tracing::warn!(%error, "the ops server task failed");
        }
    }
    tracing::info!(worker_id = %worker_id, "worker stopped");
    served.context("serving commands")
}

/// How start-up retries what JetStream must provide (it may still be starting).
fn provisioning() -> RetryPolicy {
    RetryPolicy::new(Backoff::new(
        Duration::from_millis(500),
        Duration::from_secs(10),
    ))
}

/// Opens the budget bucket (when a budget is set and there is a key) and the plans bucket,
/// retrying with backoff; `None` when shutdown came first.
async fn open_buckets(
    js: &jetstream::Context,
    config: &Config,
    shutdown: &CancellationToken,
) -> Option<(Option<budget::Budget>, jetstream::kv::Store)> {
    let policy = provisioning();
    let replicas = config.stream.replicas;
    let budget = match (&config.newsapi_key, config.budget) {
        (Some(key), Some(settings)) => {
            let opened = retry(
                &policy,
                shutdown,
                "could not open the budget bucket",
                || budget::Budget::open(js, key, settings, replicas).map_err(Failure::Transient),
            )
            .await
            .ok()?;
            tracing::info!(
                fingerprint = opened.fingerprint(),
                requests = settings.requests,
                window_secs = settings.window.as_secs(),
                "request budget shared with every worker on this key"
            );
            Some(opened)
        }
        _ => None,
    };
    let plans = retry(&policy, shutdown, "could not open the plans bucket", || {
        open_bucket(
            js,
            PLANS_BUCKET,
            "newsflow: each running job's next run and failures in a row, by job id",
            replicas,
        )
        .map_err(Failure::Transient)
    })
    .await
    .ok()?;
    Some((budget, plans))
}

/// Creates or updates the `NEWS` stream, retrying with backoff (JetStream may still be
/// starting); `false` when shutdown came first.
async fn provision_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
    shutdown: &CancellationToken,
) -> bool {
    let policy = provisioning();
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
    let policy = provisioning();
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
