//! data-streams' metrics, registered once in a `prometheus-client` registry and encoded on
//! each scrape of `/metrics` (OpenMetrics text, which Prometheus reads natively).
//!
//! Counters are bumped where things happen; gauges that mirror state held elsewhere (jobs,
//! workers, the store's size, the consumer's lag) are set just before encoding or by the
//! poller that reads them, so the registry never has to reach into the rest of the service.

use prometheus_client::encoding::{text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One HTTP request: the route template (`/jobs/:id`, never the id itself, so the label
/// set stays bounded), the method and the status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route template, or `unmatched`.
    pub route: &'static str,
    /// GET, POST, ...
    pub method: &'static str,
    /// The response status code.
    pub status: u16,
}

/// The route template and method of a request, for the latency histogram.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route template, or `unmatched`.
    pub route: &'static str,
    /// GET, POST, ...
    pub method: &'static str,
}

/// A job's desired state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StateLabels {
    /// `running` or `stopped`.
    pub state: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Everything data-streams counts. Each field's doc names its metric.
pub struct Metrics {
    registry: Registry,
    /// `newsflow_articles_stored_total`.
    pub articles_stored: Counter,
    /// `newsflow_batches_promoted_total`.
    pub batches_promoted: Counter,
    /// `newsflow_batches_failed_total`.
    pub batches_failed: Counter,
    /// `newsflow_batches_incomplete_total`.
    pub batches_incomplete: Counter,
    /// `newsflow_batches_abandoned_total`: no marker within the abandon limit.
    pub batches_abandoned: Counter,
    /// `newsflow_batches_pruned_total`.
    pub batches_pruned: Counter,
    /// `newsflow_poison_messages_total`: terminated as poison and kept as dead letters.
    pub poison_messages: Counter,
    /// `newsflow_messages_of_deleted_jobs_total`.
    pub messages_of_deleted_jobs: Counter,
    /// `newsflow_messages_acked_total`.
    pub messages_acked: Counter,
    /// `newsflow_messages_naked_total`.
    pub messages_naked: Counter,
    /// `newsflow_messages_terminated_total`: every `Term` acknowledgement sent.
    pub messages_terminated: Counter,
    /// `newsflow_messages_redelivered_total`: messages taken with a delivery count above 1.
    pub messages_redelivered: Counter,
    /// `newsflow_ingest_groups_total`.
    pub ingest_groups: Counter,
    /// `newsflow_ingest_flush_microseconds_total` (kept for the benchmark's arithmetic).
    pub flush_micros: Counter,
    /// `newsflow_ingest_group_size`: messages per group commit.
    pub group_size: Histogram,
    /// `newsflow_ingest_flush_seconds`: one group commit's flush.
    pub flush_seconds: Histogram,
    /// `newsflow_invalid_heartbeats_total`.
    pub invalid_heartbeats: Counter,
    /// `newsflow_starts_acked_total`.
    pub starts_acked: Counter,
    /// `newsflow_stops_sent_total`.
    pub stops_sent: Counter,
    /// `newsflow_commands_failed_total`.
    pub commands_failed: Counter,
    /// `newsflow_read_cache_hits_total`.
    pub cache_hits: Counter,
    /// `newsflow_http_requests_total{route,method,status}`.
    pub http_requests: Family<RequestLabels, Counter>,
    /// `newsflow_http_request_duration_seconds{route,method}`.
    pub http_duration: HistogramFamily<RouteLabels>,
    /// `newsflow_consumer_pending`: stream messages the durable consumer has yet to deliver.
    pub consumer_pending: Gauge,
    /// `newsflow_consumer_ack_pending`: delivered, not yet acknowledged.
    pub consumer_ack_pending: Gauge,
    /// `newsflow_consumer_redelivered`: messages the server is redelivering right now.
    pub consumer_redelivered: Gauge,
    /// `newsflow_jobs`.
    pub jobs: Gauge,
    /// `newsflow_jobs_by_state{state}`.
    pub jobs_by_state: Family<StateLabels, Gauge>,
    /// `newsflow_workers_alive`.
    pub workers_alive: Gauge,
    /// `newsflow_consumer_bound`.
    pub consumer_bound: Gauge,
    /// `newsflow_nats_connected`.
    pub nats_connected: Gauge,
    /// `newsflow_store_bytes`.
    pub store_bytes: Gauge,
    /// `newsflow_sse_clients`: open event streams.
    pub sse_clients: Gauge,
    /// `newsflow_controls_jobs`: 1 while this instance holds the control lease.
    pub controls: Gauge,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Self {
            registry: Registry::default(),
            articles_stored: Counter::default(),
            batches_promoted: Counter::default(),
            batches_failed: Counter::default(),
            batches_incomplete: Counter::default(),
            batches_abandoned: Counter::default(),
            batches_pruned: Counter::default(),
            poison_messages: Counter::default(),
            messages_of_deleted_jobs: Counter::default(),
            messages_acked: Counter::default(),
            messages_naked: Counter::default(),
            messages_terminated: Counter::default(),
            messages_redelivered: Counter::default(),
            ingest_groups: Counter::default(),
            flush_micros: Counter::default(),
            group_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            flush_seconds: latency_histogram(),
            invalid_heartbeats: Counter::default(),
            starts_acked: Counter::default(),
            stops_sent: Counter::default(),
            commands_failed: Counter::default(),
            cache_hits: Counter::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            consumer_pending: Gauge::default(),
            consumer_ack_pending: Gauge::default(),
            consumer_redelivered: Gauge::default(),
            jobs: Gauge::default(),
            jobs_by_state: Family::default(),
            workers_alive: Gauge::default(),
            consumer_bound: Gauge::default(),
            nats_connected: Gauge::default(),
            store_bytes: Gauge::default(),
            sse_clients: Gauge::default(),
            controls: Gauge::default(),
        };
        metrics.register();
        metrics
    }
}

impl Metrics {
    fn register(&mut self) {
        let r = &mut self.registry;
        let counters = [
            (
                "newsflow_articles_stored",
                "Articles written to the store.",
                &self.articles_stored,
            ),
            (
                "newsflow_batches_promoted",
                "Complete batches that became a job's latest.",
                &self.batches_promoted,
            ),
            (
                "newsflow_batches_failed",
                "Failed batch markers.",
                &self.batches_failed,
            ),
            (
                "newsflow_batches_incomplete",
                "Complete markers whose article count did not match the store.",
                &self.batches_incomplete,
            ),
            (
                "newsflow_batches_abandoned",
                "Batches made incomplete because no marker came within the abandon limit.",
                &self.batches_abandoned,
            ),
            (
                "newsflow_batches_pruned",
                "Batches deleted with their articles because their job keeps newer ones.",
                &self.batches_pruned,
            ),
            (
                "newsflow_poison_messages",
                "Stream messages terminated as poison and kept in /dead-letters.",
                &self.poison_messages,
            ),
            (
                "newsflow_messages_of_deleted_jobs",
                "Stream messages dropped because their job was deleted.",
                &self.messages_of_deleted_jobs,
            ),
            (
                "newsflow_messages_acked",
                "Stream messages acknowledged after a durable write.",
                &self.messages_acked,
            ),
            (
                "newsflow_messages_naked",
                "Stream messages negatively acknowledged for redelivery.",
                &self.messages_naked,
            ),
            (
                "newsflow_messages_terminated",
                "Stream messages terminated (never redelivered).",
                &self.messages_terminated,
            ),
            (
                "newsflow_messages_redelivered",
                "Stream messages taken on a second or later delivery.",
                &self.messages_redelivered,
            ),
            (
                "newsflow_ingest_groups",
                "Group commits (one flush each).",
                &self.ingest_groups,
            ),
            (
                "newsflow_ingest_flush_microseconds",
                "Time spent flushing the store, in microseconds.",
                &self.flush_micros,
            ),
            (
                "newsflow_invalid_heartbeats",
                "Heartbeats that could not be parsed.",
                &self.invalid_heartbeats,
            ),
            (
                "newsflow_starts_acked",
                "Start commands acknowledged by a worker.",
                &self.starts_acked,
            ),
            (
                "newsflow_stops_sent",
                "Stop commands sent to workers.",
                &self.stops_sent,
            ),
            (
                "newsflow_commands_failed",
                "Commands that got no positive answer.",
                &self.commands_failed,
            ),
            (
                "newsflow_read_cache_hits",
                "Article reads served from the batch cache.",
                &self.cache_hits,
            ),
        ];
        for (name, help, counter) in counters {
            r.register(name, help, counter.clone());
        }
        let gauges = [
            ("newsflow_jobs", "Jobs stored.", &self.jobs),
            (
                "newsflow_workers_alive",
                "Workers heard from recently.",
                &self.workers_alive,
            ),
            (
                "newsflow_consumer_bound",
                "1 when the durable consumer is bound.",
                &self.consumer_bound,
            ),
            (
                "newsflow_nats_connected",
                "1 when NATS is connected.",
                &self.nats_connected,
            ),
            (
                "newsflow_store_bytes",
                "Bytes the sled store occupies on disk.",
                &self.store_bytes,
            ),
            (
                "newsflow_sse_clients",
                "Open server-sent event streams (GET /events, GET /jobs/{id}/events).",
                &self.sse_clients,
            ),
            (
                "newsflow_controls_jobs",
                "1 while this instance holds the control lease (reconciles, commands workers, answers job changes); 0 on a read replica.",
                &self.controls,
            ),
            (
                "newsflow_consumer_pending",
                "Stream messages the durable consumer has not delivered yet (its lag).",
                &self.consumer_pending,
            ),
            (
                "newsflow_consumer_ack_pending",
                "Messages delivered to data-streams and not yet acknowledged.",
                &self.consumer_ack_pending,
            ),
            (
                "newsflow_consumer_redelivered",
                "Messages the server is redelivering to the consumer.",
                &self.consumer_redelivered,
            ),
        ];
        for (name, help, gauge) in gauges {
            r.register(name, help, gauge.clone());
        }
        r.register(
            "newsflow_jobs_by_state",
            "Jobs by desired state.",
            self.jobs_by_state.clone(),
        );
        r.register(
            "newsflow_ingest_group_size",
            "Messages per group commit.",
            self.group_size.clone(),
        );
        r.register(
            "newsflow_ingest_flush_seconds",
            "How long one group commit's flush took.",
            self.flush_seconds.clone(),
        );
        r.register(
            "newsflow_http_requests",
            "HTTP requests answered, by route template, method and status.",
            self.http_requests.clone(),
        );
        r.register(
            "newsflow_http_request_duration_seconds",
            "HTTP request latency, by route template and method.",
            self.http_duration.clone(),
        );
    }

    /// The exposition text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = text::encode(&mut out, &self.registry);
        out
    }

    /// Counts one answered HTTP request.
    /// Labels are static strings (see `http::route_label`): counting a request allocates
    /// nothing once its label set exists.
    pub fn observe_request(
        &self,
        route: &'static str,
        method: &'static str,
        status: u16,
        seconds: f64,
    ) {
        self.http_requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels { route, method })
            .observe(seconds);
    }
}

/// Sets a gauge from an unsigned figure (saturating; no figure here comes near `i64::MAX`).
pub fn set(gauge: &Gauge, value: u64) {
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
}

/// How often the consumer's lag is read from the server.
pub const LAG_POLL_EVERY: std::time::Duration = std::time::Duration::from_secs(3);

/// Reads the durable consumer's info every [`LAG_POLL_EVERY`] into the lag gauges until
/// `shutdown`. A failed read (NATS down, consumer not yet created) leaves the last figures
/// and is logged at debug level: `/readyz` and `newsflow_nats_connected` already say so.
pub async fn poll_consumer_lag(
    stream: async_nats::jetstream::stream::Stream,
    durable: String,
    shared: std::sync::Arc<crate::state::Shared>,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let mut every = tokio::time::interval(LAG_POLL_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = every.tick() => {}
        }
        let read = tokio::time::timeout(LAG_POLL_EVERY, stream.consumer_info(&durable)).await;
        match read {
            Ok(Ok(info)) => {
                let metrics = &shared.metrics;
                set(&metrics.consumer_pending, info.num_pending);
                set(&metrics.consumer_ack_pending, info.num_ack_pending as u64);
                set(&metrics.consumer_redelivered, info.num_redelivered as u64);
            }
            Ok(Err(error)) => tracing::debug!(%error, "could not read the consumer's info"),
            Err(_) => tracing::debug!("reading the consumer's info timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_counter_with_its_total_suffix_and_labels_routes_by_template() {
        let metrics = Metrics::default();
        metrics.messages_acked.inc_by(3);
        metrics.observe_request("/jobs/:id", "GET", 200, 0.004);
        let text = metrics.encode();
        assert!(text.contains("newsflow_messages_acked_total 3"), "{text}");
        assert!(
            text.contains(
                r#"newsflow_http_requests_total{route="/jobs/:id",method="GET",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("newsflow_http_request_duration_seconds_count"),
            "{text}"
        );
        assert!(text.contains("newsflow_ingest_flush_microseconds_total 0"));
    }
}
