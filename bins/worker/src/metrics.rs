//! The worker's metrics: one `prometheus-client` registry per process, reached through
//! [`global`] so the fetch, run and schedule code records a figure with one call and no
//! extra plumbing. `/metrics` on the ops address (see `ops`) encodes it.
//!
//! One registry per process is the Prometheus model (one scrape target per process); unit
//! tests that start several runners in one process share it, and none asserts on it.

use std::sync::LazyLock;
use std::time::Duration;

use newsflow_core::newsapi::{FetchError, PageOutcome};
use newsflow_core::{Endpoint, JobId};
use prometheus_client::encoding::{text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One NewsAPI request: which endpoint, the HTTP status (`none` when no answer came) and the
/// error code (`ok` on success).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// `everything` or `top-headlines`.
    pub endpoint: &'static str,
    /// The HTTP status, or `none`.
    pub status: String,
    /// `ok`, or the error code of the contract's markers (`rate_limited`, `timeout`, ...).
    pub code: &'static str,
}

/// Which endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EndpointLabels {
    /// `everything` or `top-headlines`.
    pub endpoint: &'static str,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `complete`, `failed`, `publish_failed` or `cancelled`.
    pub outcome: &'static str,
}

/// What was published.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PublishLabels {
    /// `page` (a page's articles, acknowledged together) or `marker`.
    pub kind: &'static str,
}

/// One job. (`job_id`, not `job`: Prometheus gives every scraped series its own `job` label.)
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct JobLabels {
    /// The job's id.
    pub job_id: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Everything the worker counts. Each field's doc names its metric.
pub struct Metrics {
    registry: Registry,
    /// `newsflow_worker_newsapi_requests_total{endpoint,status,code}`: every attempt.
    pub newsapi_requests: Family<RequestLabels, Counter>,
    /// `newsflow_worker_newsapi_request_duration_seconds{endpoint}`.
    pub newsapi_duration: HistogramFamily<EndpointLabels>,
    /// `newsflow_worker_newsapi_retries_total{endpoint}`: attempts after a page's first.
    pub newsapi_retries: Family<EndpointLabels, Counter>,
    /// `newsflow_worker_breaker_trips_total`: the key breaker opening (or reopening).
    pub breaker_trips: Counter,
    /// `newsflow_worker_runs_total{outcome}`.
    pub runs: Family<OutcomeLabels, Counter>,
    /// `newsflow_worker_run_duration_seconds{outcome}`.
    pub run_duration: HistogramFamily<OutcomeLabels>,
    /// `newsflow_worker_articles_published_total`: acknowledged by JetStream.
    pub articles_published: Counter,
    /// `newsflow_worker_publish_ack_seconds{kind}`: from publishing to the last ack.
    pub publish_ack: HistogramFamily<PublishLabels>,
    /// `newsflow_worker_jobs_owned`: jobs running on this worker (set at each scrape).
    pub jobs_owned: Gauge,
    /// `newsflow_worker_job_failures_in_a_row{job_id}`: runs of a job on this worker that ended
    /// without a complete batch since its last complete one; absent while 0 and once the job
    /// leaves.
    pub job_failures_in_a_row: Family<JobLabels, Gauge>,
    /// `newsflow_worker_schedule_lateness_seconds`: how late each run started.
    pub schedule_lateness: Histogram,
    /// `newsflow_worker_nats_connected` (set at each scrape).
    pub nats_connected: Gauge,
    /// `newsflow_worker_budget_used`: requests counted in the key's shared budget window, as
    /// this worker last read the ledger (0 without a budget).
    pub budget_used: Gauge,
    /// `newsflow_worker_budget_left`: what the shared budget still allows in that window.
    pub budget_left: Gauge,
}

fn seconds_histogram() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn run_histogram() -> Histogram {
    // 10 ms to about 10 minutes.
    Histogram::new(exponential_buckets(0.01, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Self {
            registry: Registry::default(),
            newsapi_requests: Family::default(),
            newsapi_duration: Family::new_with_constructor(seconds_histogram),
            newsapi_retries: Family::default(),
            breaker_trips: Counter::default(),
            runs: Family::default(),
            run_duration: Family::new_with_constructor(run_histogram),
            articles_published: Counter::default(),
            publish_ack: Family::new_with_constructor(seconds_histogram),
            jobs_owned: Gauge::default(),
            job_failures_in_a_row: Family::default(),
            schedule_lateness: seconds_histogram(),
            nats_connected: Gauge::default(),
            budget_used: Gauge::default(),
            budget_left: Gauge::default(),
        };
        metrics.register();
        metrics
    }
}

impl Metrics {
    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "newsflow_worker_newsapi_requests",
            "NewsAPI requests (every attempt), by endpoint, HTTP status and error code.",
            self.newsapi_requests.clone(),
        );
        r.register(
            "newsflow_worker_newsapi_request_duration_seconds",
            "NewsAPI request latency, body included, by endpoint.",
            self.newsapi_duration.clone(),
        );
        r.register(
            "newsflow_worker_newsapi_retries",
            "NewsAPI attempts after a page's first one.",
            self.newsapi_retries.clone(),
        );
        r.register(
            "newsflow_worker_breaker_trips",
            "Times the API-key breaker opened and paused every fetch.",
            self.breaker_trips.clone(),
        );
        r.register(
            "newsflow_worker_runs",
            "Runs (batches) by outcome.",
            self.runs.clone(),
        );
        r.register(
            "newsflow_worker_run_duration_seconds",
            "Run (batch) duration by outcome.",
            self.run_duration.clone(),
        );
        r.register(
            "newsflow_worker_articles_published",
            "Article messages acknowledged by JetStream.",
            self.articles_published.clone(),
        );
        r.register(
            "newsflow_worker_publish_ack_seconds",
            "Time from publishing to JetStream's last acknowledgement, per page of articles or marker.",
            self.publish_ack.clone(),
        );
        r.register(
            "newsflow_worker_jobs_owned",
            "Jobs running on this worker.",
            self.jobs_owned.clone(),
        );
        r.register(
            "newsflow_worker_job_failures_in_a_row",
            "Runs of a job since its last complete batch, on this worker.",
            self.job_failures_in_a_row.clone(),
        );
        r.register(
            "newsflow_worker_schedule_lateness_seconds",
            "How late each run started after its due time.",
            self.schedule_lateness.clone(),
        );
        r.register(
            "newsflow_worker_nats_connected",
            "1 when NATS is connected.",
            self.nats_connected.clone(),
        );
        r.register(
            "newsflow_worker_budget_used",
            "NewsAPI requests counted in the key's shared budget window, as last read.",
            self.budget_used.clone(),
        );
        r.register(
            "newsflow_worker_budget_left",
            "NewsAPI requests the key's shared budget still allows in its window, as last read.",
            self.budget_left.clone(),
        );
    }

    /// Records the shared budget as a ledger read just now showed it.
    pub fn budget(&self, used: u64, budget: u64) {
        self.budget_used
            .set(i64::try_from(used).unwrap_or(i64::MAX));
        self.budget_left
            .set(i64::try_from(budget.saturating_sub(used)).unwrap_or(i64::MAX));
    }

    /// The exposition text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = text::encode(&mut out, &self.registry);
        out
    }

    /// Records one NewsAPI attempt: its status (`None` when no HTTP answer came), its result
    /// and how long it took.
    pub fn newsapi_request(
        &self,
        endpoint: Endpoint,
        status: Option<u16>,
        result: &Result<PageOutcome, FetchError>,
        took: Duration,
    ) {
        let endpoint = endpoint.as_str();
        let code = match result {
            Ok(_) => "ok",
            Err(error) => bounded_code(&error.to_info().code),
        };
        self.newsapi_requests
            .get_or_create(&RequestLabels {
                endpoint,
                status: status.map_or_else(|| "none".to_owned(), |s| s.to_string()),
                code,
            })
            .inc();
        self.newsapi_duration
            .get_or_create(&EndpointLabels { endpoint })
            .observe(took.as_secs_f64());
    }

    /// Counts an attempt after a page's first.
    pub fn retried(&self, endpoint: Endpoint) {
        self.newsapi_retries
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.as_str(),
            })
            .inc();
    }

    /// Records one finished run.
    pub fn run_finished(&self, outcome: &'static str, took: Duration) {
        let labels = OutcomeLabels { outcome };
        self.runs.get_or_create(&labels).inc();
        self.run_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Shows `job`'s runs in a row without a complete batch; a job with none has no series,
    /// so 100,000 healthy jobs cost no memory here.
    pub fn job_failures(&self, job: &JobId, runs_failed: u32) {
        let labels = JobLabels {
            job_id: job.as_str().to_owned(),
        };
        if runs_failed == 0 {
            self.job_failures_in_a_row.remove(&labels);
        } else {
            self.job_failures_in_a_row
                .get_or_create(&labels)
                .set(i64::from(runs_failed));
        }
    }

    /// Forgets a job that left this worker.
    pub fn job_left(&self, job: &JobId) {
        self.job_failures_in_a_row.remove(&JobLabels {
            job_id: job.as_str().to_owned(),
        });
    }

    /// Records how long publishing `kind` took until its last ack.
    pub fn published(&self, kind: &'static str, took: Duration) {
        self.publish_ack
            .get_or_create(&PublishLabels { kind })
            .observe(took.as_secs_f64());
    }
}

/// Error codes as labels: the contract's own and NewsAPI's documented ones; a code a server
/// made up becomes `other`, so a hostile server cannot grow the label set.
fn bounded_code(code: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "api_key_disabled",
        "api_key_exhausted",
        "api_key_invalid",
        "api_key_missing",
        "parameter_invalid",
        "parameters_missing",
        "rate_limited",
        "sources_too_many",
        "source_does_not_exist",
        "maximum_results_reached",
        "unexpected_error",
        "bad_request",
        "upstream_error",
        "timeout",
        "connection_failed",
        "response_too_large",
        "malformed_response",
    ];
    KNOWN
        .iter()
        .find(|known| **known == code)
        .copied()
        .unwrap_or("other")
}

/// Sets a gauge from an unsigned figure (saturating).
pub fn set(gauge: &Gauge, value: u64) {
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
}

/// This process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_up_error_code_is_counted_as_other() {
        assert_eq!(bounded_code("rate_limited"), "rate_limited");
        assert_eq!(bounded_code("i_am_a_new_label_each_time_42"), "other");
    }

    #[test]
    fn a_request_is_counted_by_endpoint_status_and_code() {
        let metrics = Metrics::default();
        let limited = Err(FetchError::RateLimited {
            code: "rateLimited".to_owned(),
            message: "slow down".to_owned(),
            retry_after: None,
        });
        metrics.newsapi_request(
            Endpoint::Everything,
            Some(429),
            &limited,
            Duration::from_millis(3),
        );
        let text = metrics.encode();
        assert!(
            text.contains(r#"newsflow_worker_newsapi_requests_total{endpoint="everything",status="429",code="rate_limited"} 1"#),
            "{text}"
        );
    }
}
