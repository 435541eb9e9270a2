//! The cluster phase (figure 11): a worker publishing on a real 3-node nats-server cluster
//! with `NEWS` at 3 replicas, and the node leading the stream killed with SIGKILL, round after
//! round. Failover time is from the kill to the first message the stream stored afterwards
//! (by the server's own clock), and to a complete batch of every job.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use futures::StreamExt as _;
use newsflow_core::{BatchMarker, MarkerStatus};
use newsflow_nats::command::send_start;
use newsflow_nats::subjects::{self, DataKind};
use newsflow_nats::wire::StartJob;
use newsflow_tests::{NatsCluster, Proc, Spec};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::articles::job_spec;
use crate::report::{Row, Unit};
use crate::stats::summarize;
use crate::Ctx;

/// Jobs publishing through the kills, each a 2-page batch every second.
const JOBS: usize = 4;
/// The longest a failover may take before the round counts as failed.
const FAILOVER_WITHIN: Duration = Duration::from_secs(60);

/// Runs the phase.
pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let mut cluster = NatsCluster::start_in(&ctx.dir.join("cluster")).await;
    let urls = cluster.urls();
    let worker = Proc::spawn(
        Spec::new("worker-cluster", ctx.bins.dir().join("worker"), &ctx.dir)
            .env("RUST_LOG", "info")
            .args(["--nats-url", &urls, "--newsapi-key", "demo-key"])
            .args(["--stream-replicas", "3", "--request-budget", "0"])
            .args([
                "--newsapi-url".to_owned(),
                format!("http://{}", ctx.mock_addr),
            ])
            .ready_when("worker ready"),
    )
    .await;
    let servers: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("parsing the cluster's URLs")?;
    let client = async_nats::connect(servers)
        .await
        .context("connecting to the cluster")?;
    let js = async_nats::jetstream::new(client.clone());
    let jobs: Vec<String> = (0..JOBS).map(|i| format!("cl-{i}")).collect();
    for job in &jobs {
        let spec = job_spec(job, job, 1, 2, 50)?;
        send_start(&client, &StartJob::now(spec), Duration::from_secs(10))
            .await
            .with_context(|| format!("starting {job}"))?;
    }
    let rounds = ctx.sizes.cluster_rounds.max(1);
    let (mut resumed, mut every_job) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        wait_whole(&client).await?;
        wait_markers_after(&js, &jobs, last_seq(&client).await?).await?;
        let (leader, seq_at_kill) = leader_and_last_seq(&client).await?;
        let index = cluster
            .index_of(&leader)
            .with_context(|| format!("leader {leader} is not a node name"))?;
        let killed = OffsetDateTime::now_utc();
        cluster.node(index).kill9();
        let after = wait_markers_after(&js, &jobs, seq_at_kill).await?;
        let first = (after.first_stored - killed).as_seconds_f64() * 1000.0;
        let all = (after.last_marker - killed).as_seconds_f64() * 1000.0;
        eprintln!("round {round}: leader {leader} killed; first message stored after {first:.0} ms, a complete batch of every job after {all:.0} ms");
        resumed.push(first);
        every_job.push(all);
        cluster.node(index).start_again().await;
    }
    drop(worker);
    let (resumed, every_job) = (
        summarize(resumed).context("no round")?,
        summarize(every_job).context("no round")?,
    );
    ctx.report.row(
        11,
        Row::info(
            "kill -9 of the NEWS leader -> first message stored (median)",
            Unit::Ms,
            resumed.p50,
        ),
    );
    ctx.report.row(
        11,
        Row::info(
            "kill -9 of the NEWS leader -> a complete batch of every job (median)",
            Unit::Ms,
            every_job.p50,
        ),
    );
    ctx.report.detail(
        11,
        "rounds",
        json!({"rounds": rounds, "first_stored_ms": resumed, "every_job_ms": every_job, "jobs": JOBS}),
    );
    Ok(())
}

/// A raw JetStream API request with a short timeout (a request lost with a node would
/// otherwise wait out the client's 10 s).
async fn js_api(client: &async_nats::Client, subject: &str) -> Option<Value> {
    let reply = tokio::time::timeout(
        Duration::from_secs(1),
        client.request(subject.to_owned(), bytes::Bytes::new()),
    )
    .await
    .ok()?
    .ok()?;
    let body: Value = serde_json::from_slice(&reply.payload).ok()?;
    body.get("error").is_none().then_some(body)
}

async fn stream_info(client: &async_nats::Client) -> Option<Value> {
    js_api(client, &format!("$JS.API.STREAM.INFO.{}", subjects::STREAM)).await
}

async fn last_seq(client: &async_nats::Client) -> anyhow::Result<u64> {
    Ok(leader_and_last_seq(client).await?.1)
}

/// The stream leader's server name and the stream's last sequence, once there is a leader.
async fn leader_and_last_seq(client: &async_nats::Client) -> anyhow::Result<(String, u64)> {
    let deadline = Instant::now() + FAILOVER_WITHIN;
    loop {
        if let Some(info) = stream_info(client).await {
            if let (Some(leader), Some(seq)) = (
                info["cluster"]["leader"].as_str(),
                info["state"]["last_seq"].as_u64(),
            ) {
                return Ok((leader.to_owned(), seq));
            }
        }
        if Instant::now() > deadline {
            bail!("the NEWS stream has no leader after {FAILOVER_WITHIN:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the stream has a leader and two current replicas.
async fn wait_whole(client: &async_nats::Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + FAILOVER_WITHIN;
    loop {
        if let Some(info) = stream_info(client).await {
            let replicas = info["cluster"]["replicas"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let whole = info["cluster"]["leader"].is_string()
                && replicas.len() == 2
                && replicas.iter().all(|r| r["current"] == true);
            if whole {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the NEWS stream has not three current replicas after {FAILOVER_WITHIN:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the stream stored after a sequence.
struct After {
    /// When the first message after it was stored.
    first_stored: OffsetDateTime,
    /// When the last job's first complete marker after it was stored.
    last_marker: OffsetDateTime,
}

/// Reads the stream from `seq + 1` until every job has a complete marker.
async fn wait_markers_after(
    js: &async_nats::jetstream::Context,
    jobs: &[String],
    seq: u64,
) -> anyhow::Result<After> {
    let deadline = Instant::now() + FAILOVER_WITHIN;
    let mut waiting: BTreeSet<&str> = jobs.iter().map(String::as_str).collect();
    let (mut first_stored, mut last_marker) = (None, None);
    let mut next = seq + 1;
    while !waiting.is_empty() {
        if Instant::now() > deadline {
            bail!("no complete batch of {waiting:?} within {FAILOVER_WITHIN:?}");
        }
        let consumer = async {
            js.get_stream(subjects::STREAM)
                .await
                .ok()?
                .create_consumer(pull::Config {
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: next,
                    },
                    ack_policy: AckPolicy::None,
                    inactive_threshold: Duration::from_secs(30),
                    ..Default::default()
                })
                .await
                .ok()
        };
        let Some(consumer) = tokio::time::timeout(Duration::from_secs(2), consumer)
            .await
            .ok()
            .flatten()
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(mut messages) = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_millis(500))
            .messages()
            .await
        else {
            continue;
        };
        while let Some(Ok(message)) = messages.next().await {
            let Ok(info) = message.info() else { continue };
            next = info.stream_sequence + 1;
            let stored = info.published;
            first_stored.get_or_insert(stored);
            let Some(data) = subjects::parse_data(&message.subject) else {
                continue;
            };
            if data.kind != DataKind::Marker {
                continue;
            }
            let complete = serde_json::from_slice::<BatchMarker>(&message.payload)
                .is_ok_and(|marker| marker.status == MarkerStatus::Complete);
            if complete && waiting.remove(data.job.as_str()) {
                last_marker = Some(stored);
            }
        }
    }
    Ok(After {
        first_stored: first_stored.context("nothing stored")?,
        last_marker: last_marker.context("no marker")?,
    })
}
