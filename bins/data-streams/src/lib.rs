//! data-streams: newsflow's HTTP API. It owns jobs (their desired state is the truth), tells
//! workers to start and stop them over NATS request-reply, consumes the `NEWS` stream with one
//! durable pull consumer into sled, and serves only the latest complete batch of each job.
//!
//! # Layout
//! - [`config`]: flags and the validated configuration.
//! - [`store`]: the sled store (jobs, batches, articles, feed, dead letters).
//! - [`consumer`]: the ingest task: group commit (apply, flush, ack).
//! - [`control`]: start/stop commands, heartbeats, the ownership reconciler.
//! - [`lease`]: the control lease in the `newsflow_control` bucket.
//! - [`controller`]: contending for the lease; the control tasks run only while it is held.
//! - [`replicate`]: job records published to the `newsflow_jobs` bucket and applied from it.
//! - [`events`]: live batch and job events fanned out to SSE streams.
//! - [`http`]: routes, errors, OpenAPI.
//! - [`metrics`]: the Prometheus registry behind `/metrics`, and the consumer-lag poller.
//! - [`mirror`]: in-memory copies of the workers' buckets: job plans and request ledgers.
//! - [`state`]: what the tasks share (metrics, the batch cache, the ingest channel).
//! - [`tasks`]: the supervisor that owns, joins and watches every background task.

pub mod config;
pub mod consumer;
pub mod control;
pub mod controller;
pub mod events;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod mirror;
pub mod replicate;
pub mod state;
pub mod store;
pub mod tasks;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use newsflow_core::retry::Backoff;
use newsflow_nats::stream::{delete_consumer, ensure_stream, ConsumerSettings};
use newsflow_runtime::retry::{retry, Failure, RetryError, RetryPolicy};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use config::{Cli, Config};

use crate::control::Control;
use crate::state::{Shared, SharedSettings};
use crate::store::{Ingest, Store};
use crate::tasks::Supervisor;

/// How long shutdown waits for the ingest task to finish the group in hand.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long shutdown waits for NATS to take the last acknowledgements.
const ACK_FLUSH_WITHIN: Duration = Duration::from_secs(2);

/// Serves the API on `listener` and ingests the stream until `shutdown`; then stops intake,
/// finishes the request and message group in hand, flushes the store and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let store = open_store(
        &config.data_dir,
        config.rebuild,
        config.hold_flushes_while.clone(),
    )?;
    if config.rebuild {
        store.clear_stream_data()?;
        store.flush().await?;
        tracing::info!("store cleared of stream data; it will be rebuilt from the stream");
    }
    let instance_id = match &config.instance_id {
        Some(id) => id.clone(),
        None => kept_instance_id(&config.data_dir)?,
    };
    let ingest = Ingest::new(store.clone())?.with_retention(config.retention);
    let (commands_tx, commands) = mpsc::channel(64);
    let shared = Arc::new(Shared::new(
        store,
        commands_tx,
        SharedSettings {
            api_token: config.api_token.clone(),
            max_body_bytes: config.http.max_body_bytes,
            max_in_flight: config.http.max_in_flight,
            default_keep_batches: config.retention.default_keep,
            max_sse_clients: config.max_sse_clients,
        },
    ));
    watch_for_stalls(Arc::downgrade(&shared), config.store_stall)?;
    let limits = config.http;
    let control = Arc::new(Control::new(config.control));
    let addr = listener
        .local_addr()
        .context("reading the listener's address")?;
    let supervisor = Supervisor::new(shared.clone(), shutdown.clone());
    http::forward::set_timing(http::forward::ForwardTiming::new(
        config.lease_life,
        config.control.command_timeout,
    ));
    let app = http::router(http::AppState {
        shared: shared.clone(),
        control: control.clone(),
    });
    let me = lease::Holder {
        instance_id,
        http_url: config
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}")),
    };
    let (groups_tx, groups) = mpsc::channel(1);
    let writer = consumer::Writer {
        ingest,
        commands,
        groups,
        shared: shared.clone(),
        settings: consumer_settings(&config),
        sweep_every: sweep_period(config.retention.abandon_after),
    };
    supervisor.spawn("store writer", writer.run(shutdown.clone()));
    supervisor.spawn(
        "ingest",
        background(
            config,
            Replication {
                me,
                router: app.clone(),
            },
            shared.clone(),
            control.clone(),
            groups_tx,
            supervisor.clone(),
            shutdown.clone(),
        ),
    );
    newsflow_runtime::logging::stdout_line(&format!("data-streams listening on http://{addr}"));
    tracing::info!(%addr, "data-streams listening");
    let closing = shared.events.closing.clone();
    let stopping = shutdown.clone();
    // Open event streams end at shutdown, so the server drains instead of waiting on them.
    tokio::spawn(async move {
        stopping.cancelled().await;
        closing.cancel();
    });
    http::serve::serve(listener, app, limits, shutdown.clone()).await;
    shutdown.cancel();
    tracing::info!("HTTP stopped; waiting for ingest to finish the messages in hand");
    if !supervisor.wait(SHUTDOWN_GRACE).await {
        tracing::warn!("background tasks did not finish within the grace period; unacknowledged messages will be redelivered");
    }
    control.tasks().close();
    if tokio::time::timeout(SHUTDOWN_GRACE, control.tasks().wait())
        .await
        .is_err()
    {
        tracing::warn!("start and stop commands in flight did not finish within the grace period");
    }
    shared.store.flush().await?;
    tracing::info!("store flushed; bye");
    match shared.dead_task.get() {
        Some(reason) => Err(anyhow::anyhow!("{reason}")),
        None => Ok(()),
    }
}

/// Exit status when the store stalled: a supervisor restarts the process, and the stream
/// redelivers whatever was not acknowledged.
pub const EXIT_STORE_STALLED: i32 = 3;
/// How long a stalled process keeps answering `/readyz` with 503 before it exits.
const STALL_EXIT_AFTER: Duration = Duration::from_secs(2);

/// Watches the store's calls from a plain thread, which keeps running when every async worker
/// is stuck in the store: a call older than `limit` marks the process not ready, is logged
/// with what it holds up, and ends the process with [`EXIT_STORE_STALLED`].
/// How often the writer looks for abandoned batches: often enough that an operator's
/// `--abandon-after-secs` is honoured within about half of it, and twice a minute by default
/// (the default abandon time is at least 10 minutes).
fn sweep_period(abandon_after: Option<Duration>) -> Duration {
    abandon_after.map_or(Duration::from_secs(30), |after| {
        (after / 2).clamp(Duration::from_secs(1), Duration::from_secs(30))
    })
}

fn watch_for_stalls(shared: Weak<Shared>, limit: Duration) -> anyhow::Result<()> {
    let every = (limit / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    std::thread::Builder::new()
        .name("store-watchdog".to_owned())
        .spawn(move || loop {
            std::thread::sleep(every);
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let Some(stall) = shared.store.stall_watch().stalled(limit) else {
                continue;
            };
            let reason = format!("store stalled: {}", stall.description);
            tracing::error!(
                %reason,
                limit_secs = limit.as_secs(),
                "the store is stalled; exiting so that a supervisor restarts data-streams (unacknowledged messages will be redelivered)"
            );
            let _ = shared.store_stalled.set(reason);
            std::thread::sleep(STALL_EXIT_AFTER);
            std::process::exit(EXIT_STORE_STALLED);
        })
        .context("starting the store watchdog thread")?;
    Ok(())
}

fn open_store(
    dir: &Path,
    rebuild: bool,
    hold_flushes_while: Option<PathBuf>,
) -> anyhow::Result<Store> {
    match Store::open_with(dir, hold_flushes_while.clone()) {
        Ok(store) => Ok(store),
        Err(error) if rebuild => {
            let aside = dir.with_extension(format!(
                "corrupt-{}",
                newsflow_core::now_utc().unix_timestamp()
            ));
            tracing::error!(error = format!("{error:#}"), aside = %aside.display(), "the store cannot be opened; moving it aside and rebuilding");
            std::fs::rename(dir, &aside)
                .with_context(|| format!("moving the broken store to {}", aside.display()))?;
            Store::open_with(dir, hold_flushes_while)
        }
        Err(error) => Err(error.context(
            "the store cannot be opened; run with --rebuild to rebuild it from the stream",
        )),
    }
}

/// The durable consumer's settings, under this instance's consumer name.
fn consumer_settings(config: &Config) -> ConsumerSettings {
    ConsumerSettings {
        durable: config.consumer_name.clone(),
        ..ConsumerSettings::default()
    }
}

/// This instance's id kept in `dir/instance-id`, generated on the first start.
fn kept_instance_id(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("instance-id");
    if let Ok(kept) = std::fs::read_to_string(&path) {
        let kept = kept.trim();
        if !kept.is_empty() {
            return Ok(kept.to_owned());
        }
    }
    let id = format!("ds-{}", ulid::Ulid::new().to_string().to_lowercase());
    std::fs::write(&path, &id)
        .with_context(|| format!("keeping the instance id in {}", path.display()))?;
    Ok(id)
}

/// What the instance needs to take part in control: who it is, and its API for forwarded
/// requests.
struct Replication {
    me: lease::Holder,
    router: axum::Router,
}

/// Connects to NATS, provisions the stream, follows the jobs bucket, contends for control
/// (which runs the ownership tasks while held), and pulls the stream for the writer until
/// `shutdown`.
#[allow(clippy::too_many_arguments)]
async fn background(
    config: Config,
    replication: Replication,
    shared: Arc<Shared>,
    control: Arc<Control>,
    groups: mpsc::Sender<consumer::Group>,
    supervisor: Supervisor,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let connected =
        newsflow_nats::connect::connect_with_retry(&config.nats, "data-streams", &shutdown).await;
    let Ok(Some(client)) = connected else {
        return Ok(());
    };
    let _ = shared.nats.set(client.clone());
    let js = jetstream::new(client.clone());
    let policy = RetryPolicy::new(Backoff::new(
        Duration::from_millis(500),
        Duration::from_secs(5),
    ));
    let provisioned = retry(
        &policy,
        &shutdown,
        "cannot provision the NEWS stream",
        || {
            let (js, settings) = (&js, &config.stream);
            async move {
                ensure_stream(js, settings)
                    .await
                    .map_err(Failure::Transient)
            }
        },
    )
    .await;
    let stream = match provisioned {
        Ok(stream) => stream,
        Err(RetryError::Cancelled) => return Ok(()),
        Err(RetryError::GaveUp(gave_up)) => {
            anyhow::bail!("provisioning the NEWS stream: {gave_up}")
        }
    };
    let consumer_settings = consumer_settings(&config);
    if config.rebuild {
        match delete_consumer(&stream, &consumer_settings.durable).await {
            Ok(()) => tracing::info!("durable consumer reset; consuming the stream from its start"),
            Err(error) => {
                tracing::error!(%error, "could not reset the durable consumer; the rebuild starts where it left off")
            }
        }
    }
    let replicas = config.stream.replicas;
    supervisor.spawn(
        "job records",
        Arc::clone(&shared.jobs).follow(shared.clone(), js.clone(), replicas, shutdown.clone()),
    );
    supervisor.spawn(
        "heartbeats",
        crate::control::run_heartbeats(
            control.clone(),
            shared.clone(),
            client.clone(),
            shutdown.clone(),
        ),
    );
    supervisor.spawn(
        "control lease",
        controller::run(
            controller::Context {
                shared: shared.clone(),
                control,
                client: client.clone(),
                replicas,
                lease: lease::LeaseSettings {
                    life: config.lease_life,
                    me: replication.me,
                },
                router: replication.router,
            },
            shutdown.clone(),
        ),
    );
    supervisor.spawn(
        "job plans",
        Arc::clone(&shared.plans).follow(
            js.clone(),
            replicas,
            "newsflow: each running job's next run and failures in a row, by job id",
            shutdown.clone(),
        ),
    );
    supervisor.spawn(
        "request budgets",
        Arc::clone(&shared.budgets).follow(
            js.clone(),
            replicas,
            "newsflow: NewsAPI requests per key fingerprint in the current window",
            shutdown.clone(),
        ),
    );
    supervisor.spawn(
        "consumer lag",
        metrics::poll_consumer_lag(
            stream.clone(),
            consumer_settings.durable.clone(),
            shared.clone(),
            shutdown.clone(),
        ),
    );
    consumer::pull(stream, shared, consumer_settings, groups, shutdown).await?;
    // With NATS down a flush waits for a reconnect that may never come.
    match tokio::time::timeout(ACK_FLUSH_WITHIN, client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "could not flush acks to NATS before exit; those messages will be redelivered")
        }
        Err(_) => tracing::warn!(
            "NATS did not take the last acks in time; those messages will be redelivered"
        ),
    }
    Ok(())
}
