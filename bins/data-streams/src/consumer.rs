//! The ingest task: one durable pull consumer over the whole stream, in stream order. Each
//! group of messages is applied to sled, flushed once, and only then acknowledged.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use futures::{FutureExt as _, StreamExt as _};
use newsflow_core::retry::Backoff;
use newsflow_core::Promotion;
use newsflow_nats::stream::{ensure_consumer, ConsumerSettings};
use newsflow_nats::subjects;
use newsflow_runtime::retry::{retry, Failure, RetryError, RetryPolicy};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::state::{IngestCommand, Shared};
use crate::store::events::{EventId, StoredBatchEvent};
use crate::store::{self, Ingest, Parsed};

/// The most messages applied under one flush.
pub const MAX_GROUP: usize = 1000;
/// How long a group waits for more messages before it is committed: bounds what group commit
/// adds to the latency of a marker becoming visible.
const GROUP_WINDOW: Duration = Duration::from_millis(2);

/// What becomes of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored durably (or rightly dropped): acknowledge.
    Ack,
    /// The store failed: redeliver later.
    Nak(Duration),
    /// Poison: never redeliver (it is kept in the dead letters).
    Term,
}

/// Decides one message's outcome and applies it to the store (not yet flushed). Driven by the
/// ingest loop, and by tests without a broker.
pub fn step(
    ingest: &mut Ingest,
    metrics: &Metrics,
    message: &RawMessage<'_>,
    settings: &ConsumerSettings,
) -> (Outcome, Option<Promotion>) {
    match store::ingest::parse(message.subject, message.spec_header, message.payload) {
        Parsed::Poison(reason) => terminate(ingest, metrics, message, &reason),
        parsed => match ingest.apply(parsed, message.stream_seq) {
            Ok(store::ingest::Applied::Article) => {
                metrics.articles_stored.inc();
                (Outcome::Ack, None)
            }
            Ok(store::ingest::Applied::Marker(decision, job)) => {
                match decision {
                    Promotion::Promote => {
                        metrics.batches_promoted.inc();
                    }
                    Promotion::Failed => {
                        metrics.batches_failed.inc();
                    }
                    Promotion::CountMismatch { expected, stored } => {
                        tracing::warn!(%job, expected, stored, "a complete marker counts more articles than are stored; batch incomplete");
                        metrics.batches_incomplete.inc();
                    }
                    Promotion::Superseded => {}
                }
                (Outcome::Ack, Some(decision))
            }
            Ok(store::ingest::Applied::Deleted) => {
                metrics.messages_of_deleted_jobs.inc();
                (Outcome::Ack, None)
            }
            Ok(store::ingest::Applied::Refused(reason)) => {
                terminate(ingest, metrics, message, &reason)
            }
            Err(error) if message.delivered >= settings.max_deliver - 1 => terminate(
                ingest,
                metrics,
                message,
                &format!("store kept failing: {error:#}"),
            ),
            Err(error) => {
                tracing::error!(
                    subject = message.subject,
                    error = format!("{error:#}"),
                    "could not store a message; it will be redelivered"
                );
                (Outcome::Nak(Duration::from_secs(1)), None)
            }
        },
    }
}

/// Keeps a message that must never be redelivered as a dead letter, and terminates it.
fn terminate(
    ingest: &mut Ingest,
    metrics: &Metrics,
    message: &RawMessage<'_>,
    reason: &str,
) -> (Outcome, Option<Promotion>) {
    tracing::warn!(subject = message.subject, stream_seq = message.stream_seq, %reason, "terminating a message; kept in /dead-letters");
    metrics.poison_messages.inc();
    if let Err(error) =
        ingest.dead_letter(message.stream_seq, message.subject, reason, message.payload)
    {
        tracing::error!(error = format!("{error:#}"), "could not keep a dead letter");
    }
    (Outcome::Term, None)
}

/// The parts of a stream message the step needs.
pub struct RawMessage<'a> {
    /// Subject.
    pub subject: &'a str,
    /// The optional job-spec header.
    pub spec_header: Option<&'a str>,
    /// Payload.
    pub payload: &'a [u8],
    /// Stream sequence.
    pub stream_seq: u64,
    /// How many times it was delivered.
    pub delivered: i64,
}

/// A group of stream messages, applied under one flush.
pub type Group = Vec<jetstream::Message>;

/// The one writer of stream data: owns the ingest state, applies groups of messages as the
/// puller hands them over, and executes the API's deletes between groups (also while NATS is
/// unreachable, since nothing here waits for it).
pub struct Writer {
    /// The ingest state.
    pub ingest: Ingest,
    /// Deletes from the HTTP side.
    pub commands: mpsc::Receiver<IngestCommand>,
    /// Groups from the puller.
    pub groups: mpsc::Receiver<Group>,
    /// What the tasks share.
    pub shared: Arc<Shared>,
    /// The consumer's settings (delivery cap).
    pub settings: ConsumerSettings,
    /// How often batches whose marker never came are looked for.
    pub sweep_every: Duration,
}

impl Writer {
    /// Applies groups one after another until `shutdown`; each group's flush and acks run
    /// while the next group is applied (a write is visible to readers once applied, durable
    /// once flushed, and acked only then), so a marker never waits for the flush of the
    /// articles before it to become visible.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut in_flight = None;
        // Prunes a crash interrupted are finished before anything else.
        self.retain().await;
        let mut sweep = tokio::time::interval(self.sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(command) = self.commands.recv() => {
                    execute(command, &mut self.ingest, &self.shared).await;
                }
                _ = sweep.tick() => {
                    let now_ms = newsflow_core::unix_ms(newsflow_core::now_utc());
                    match self.ingest.sweep_abandoned(now_ms) {
                        Ok(abandoned) => {
                            self.shared.metrics.batches_abandoned.inc_by(abandoned as u64);
                            self.publish_when_durable().await;
                        }
                        Err(error) => tracing::error!(error = format!("{error:#}"), "could not look for abandoned batches"),
                    }
                    if let Err(error) = self.shared.store.prune_batch_events(now_ms) {
                        tracing::error!(error = format!("{error:#}"), "could not prune old batch events");
                    }
                    self.retain().await;
                }
                group = self.groups.recv() => {
                    let Some(group) = group else { break };
                    let outcomes = apply_group(&group, &self.shared, &mut self.ingest, &self.settings);
                    let events = self.ingest.take_events();
                    // One flush in flight at a time: acks stay in group order, and the flush
                    // covers every write applied before it, this group's included.
                    settle(&mut in_flight).await;
                    in_flight = Some(tokio::spawn(flush_then_ack(group, outcomes, events, self.shared.clone())));
                    self.retain().await;
                }
            }
        }
        settle(&mut in_flight).await;
        Ok(())
    }

    /// Publishes the batch events of writes made outside a group (abandoned batches) once a
    /// flush has made them durable.
    async fn publish_when_durable(&mut self) {
        let events = self.ingest.take_events();
        if events.is_empty() {
            return;
        }
        match self.shared.store.flush().await {
            Ok(()) => {
                for (id, event) in &events {
                    self.shared
                        .events
                        .publish(crate::events::Event::from_batch(*id, event));
                }
            }
            Err(error) => {
                tracing::error!(error = format!("{error:#}"), "could not flush abandoned batches; their events are replayed from the store only");
            }
        }
    }

    /// Deletes the batches jobs no longer keep (after markers or abandoned batches), and
    /// forgets their cached pages. A failure is logged; the batches are pruned after the
    /// job's next marker instead.
    async fn retain(&mut self) {
        match self.ingest.prune_due().await {
            Ok(pruned) => {
                for (job, batch) in &pruned {
                    self.shared.cache.forget_batch(job, *batch);
                }
                self.shared
                    .metrics
                    .batches_pruned
                    .inc_by(pruned.len() as u64);
            }
            Err(error) => {
                tracing::error!(error = format!("{error:#}"), "could not prune old batches");
            }
        }
    }
}

/// Waits for the group in flight to be flushed and acknowledged.
async fn settle(in_flight: &mut Option<tokio::task::JoinHandle<()>>) {
    if let Some(task) = in_flight.take() {
        if let Err(error) = task.await {
            tracing::error!(%error, "a group's flush and acks did not finish; its messages will be redelivered");
        }
    }
}

/// Pulls the stream with the durable consumer until `shutdown`: binds it (retrying), and hands
/// the writer groups of up to [`MAX_GROUP`] messages, each gathered for at most
/// `GROUP_WINDOW` once its first message is in, so a backlog is committed in large groups.
pub async fn pull(
    stream: jetstream::stream::Stream,
    shared: Arc<Shared>,
    settings: ConsumerSettings,
    groups: mpsc::Sender<Group>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let policy = RetryPolicy::new(Backoff::new(
        Duration::from_millis(200),
        Duration::from_secs(5),
    ));
    while !shutdown.is_cancelled() {
        let bound = retry(
            &policy,
            &shutdown,
            "cannot bind the durable consumer",
            || {
                let (stream, settings) = (&stream, &settings);
                async move {
                    ensure_consumer(stream, settings)
                        .await
                        .map_err(Failure::Transient)
                }
            },
        )
        .await;
        let consumer = match bound {
            Ok(consumer) => consumer,
            Err(RetryError::Cancelled) => break,
            Err(RetryError::GaveUp(gave_up)) => {
                anyhow::bail!("binding the durable consumer: {gave_up}")
            }
        };
        shared.consumer_bound.store(true, Ordering::Relaxed);
        tracing::info!(durable = %settings.durable, "consumer bound; ingesting");
        let rebind_in = pull_groups(&consumer, &groups, &shutdown).await;
        shared.consumer_bound.store(false, Ordering::Relaxed);
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(rebind_in) => {}
        }
    }
    Ok(())
}

/// Hands groups to the writer until the pull fails (or `shutdown`); returns how long to wait
/// before binding again.
async fn pull_groups(
    consumer: &PullConsumer,
    groups: &mpsc::Sender<Group>,
    shutdown: &CancellationToken,
) -> Duration {
    let messages = consumer
        .stream()
        .max_messages_per_batch(MAX_GROUP)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await;
    let mut messages = match messages {
        Ok(messages) => messages,
        Err(error) => {
            tracing::warn!(%error, "cannot pull from the consumer; rebinding");
            return Duration::from_secs(1);
        }
    };
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return Duration::ZERO,
            next = messages.next() => next,
        };
        let mut group = match first {
            None => return Duration::ZERO,
            Some(Ok(message)) => vec![message],
            Some(Err(error)) => {
                tracing::warn!(%error, "pull error; rebinding the consumer");
                return Duration::from_millis(500);
            }
        };
        let deadline = tokio::time::Instant::now() + GROUP_WINDOW;
        while group.len() < MAX_GROUP {
            let next = match messages.next().now_or_never() {
                Some(next) => next,
                None => match tokio::time::timeout_at(deadline, messages.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
            };
            match next {
                Some(Ok(message)) => group.push(message),
                _ => break,
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return Duration::ZERO,
            sent = groups.send(group) => if sent.is_err() {
                // The writer is gone: the process is stopping.
                return Duration::ZERO;
            },
        }
    }
}

/// Applies a group to the store (visible to readers, not yet durable) and returns each
/// message's outcome.
fn apply_group(
    group: &[jetstream::Message],
    shared: &Arc<Shared>,
    ingest: &mut Ingest,
    settings: &ConsumerSettings,
) -> Vec<Outcome> {
    let _call = shared.store.watched("ingest apply");
    let mut outcomes = Vec::with_capacity(group.len());
    for message in group {
        let (stream_seq, delivered) = message
            .info()
            .map(|i| (i.stream_sequence, i.delivered))
            .unwrap_or((0, 1));
        let spec_header = message
            .headers
            .as_ref()
            .and_then(|h| h.get(subjects::JOB_SPEC_HEADER))
            .map(|v| v.as_str());
        let raw = RawMessage {
            subject: message.subject.as_str(),
            spec_header,
            payload: &message.payload,
            stream_seq,
            delivered,
        };
        outcomes.push(step(ingest, &shared.metrics, &raw, settings).0);
    }
    outcomes
}

/// Makes a group durable with one flush, then acknowledges each message with its outcome.
async fn flush_then_ack(
    group: Vec<jetstream::Message>,
    outcomes: Vec<Outcome>,
    events: Vec<(EventId, StoredBatchEvent)>,
    shared: Arc<Shared>,
) {
    let started = Instant::now();
    if let Err(error) = shared.store.flush().await {
        tracing::error!(
            error = format!("{error:#}"),
            "flush failed; the group will be redelivered"
        );
        for message in &group {
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
            shared.metrics.messages_naked.inc();
        }
        return;
    }
    let flushed = started.elapsed();
    // Durable now: a client that misses these live replays them from the store.
    for (id, event) in &events {
        shared
            .events
            .publish(crate::events::Event::from_batch(*id, event));
    }
    let metrics = &shared.metrics;
    metrics
        .flush_micros
        .inc_by(u64::try_from(flushed.as_micros()).unwrap_or(u64::MAX));
    metrics.flush_seconds.observe(flushed.as_secs_f64());
    metrics.group_size.observe(group.len() as f64);
    metrics.ingest_groups.inc();
    for (message, outcome) in group.iter().zip(outcomes) {
        let (kind, counter) = match outcome {
            Outcome::Ack => (AckKind::Ack, &metrics.messages_acked),
            Outcome::Nak(delay) => (AckKind::Nak(Some(delay)), &metrics.messages_naked),
            Outcome::Term => (AckKind::Term, &metrics.messages_terminated),
        };
        if message.info().is_ok_and(|info| info.delivered > 1) {
            metrics.messages_redelivered.inc();
        }
        if let Err(error) = message.ack_with(kind).await {
            tracing::warn!(%error, "could not acknowledge a message; it will be redelivered and re-applied idempotently");
        } else {
            counter.inc();
        }
    }
}

async fn execute(command: IngestCommand, ingest: &mut Ingest, shared: &Shared) {
    match command {
        IngestCommand::DeleteJob(job, reply) => {
            let result = ingest.delete_job_unflushed(&job);
            shared.cache.forget_job(&job);
            // The answer waits for the flush that makes the deletion durable; the writer
            // does not (concurrent waits share one flush).
            let store = shared.store.clone();
            tokio::spawn(async move {
                let result = match result {
                    Ok(existed) => store.flush().await.map(|()| existed),
                    Err(error) => Err(error),
                };
                let _ = reply.send(result);
            });
        }
    }
}
