//! Command-line flags (each also read from the environment) and the `Config` they become.

use std::time::Duration;

use newsflow_core::Secret;
use newsflow_nats::connect::{NatsArgs, NatsConfig, NatsConfigError};
use newsflow_nats::stream::StreamSettings;
use newsflow_nats::wire::WorkerId;
use newsflow_runtime::logging::LogFormat;
use reqwest::header::HeaderValue;
use reqwest::Url;

use crate::fetch::FetchSettings;

/// The worker's flags. Every flag also reads the environment variable named in its help, and
/// the defaults let a worker run next to a local `nats-server` with no flags at all.
#[derive(Debug, clap::Parser)]
#[command(name = "worker", version, about)]
pub struct Cli {
    /// NATS connection.
    #[command(flatten)]
    pub nats: NatsArgs,

    /// Base URL of the NewsAPI-compatible server (`/v2/...` is appended).
    #[arg(long, env = "NEWSAPI_URL", default_value = "https://newsapi.org")]
    pub newsapi_url: String,

    /// NewsAPI key (at least 8 characters), sent only as the `X-Api-Key` header and never
    /// logged. Without one the worker still runs, and NewsAPI answers every fetch with
    /// `apiKeyMissing`.
    #[arg(long, env = "NEWSAPI_KEY", hide_env_values = true)]
    pub newsapi_key: Option<Secret>,

    /// This worker's id (1 to 64 of `[A-Za-z0-9_-]`); generated, unique per process, when absent.
    #[arg(long, env = "WORKER_ID")]
    pub worker_id: Option<WorkerId>,

    /// Log line format; the level comes from `RUST_LOG`.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Milliseconds between heartbeats on `news.ctl.heartbeat`.
    #[arg(long, env = "WORKER_HEARTBEAT_MS", default_value_t = 2_000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub heartbeat_ms: u64,

    /// Milliseconds one NewsAPI request may take, body included, before it counts as a timeout.
    #[arg(long, env = "WORKER_FETCH_TIMEOUT_MS", default_value_t = 15_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub fetch_timeout_ms: u64,

    /// Retries of a page after its first attempt fails with a retryable error (429, 5xx,
    /// timeout, connection or malformed answer). Other 4xx are never retried.
    #[arg(long, env = "WORKER_FETCH_RETRIES", default_value_t = 4)]
    pub fetch_retries: u32,

    /// Milliseconds of the first retry's backoff; it doubles per retry, with jitter.
    #[arg(long, env = "WORKER_RETRY_BASE_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_base_ms: u64,

    /// Longest backoff between two retries, in milliseconds.
    #[arg(long, env = "WORKER_RETRY_MAX_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_max_ms: u64,

    /// Longest `Retry-After` honoured, in seconds; a server asking for more waits this long.
    #[arg(long, env = "WORKER_MAX_RETRY_AFTER_SECS", default_value_t = 120)]
    pub max_retry_after_secs: u64,

    /// Largest NewsAPI response body accepted, in bytes; a larger one fails the fetch.
    #[arg(long, env = "WORKER_MAX_RESPONSE_BYTES", default_value_t = 4 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    pub max_response_bytes: u64,

    /// How many jobs may fetch from NewsAPI at the same time on this worker.
    #[arg(long, env = "WORKER_MAX_CONCURRENT_FETCHES", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_concurrent_fetches: u64,

    /// How many job runs may be in hand at the same time on this worker; due jobs beyond it
    /// wait their turn.
    #[arg(long, env = "WORKER_MAX_CONCURRENT_RUNS", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_concurrent_runs: u64,

    /// Replicas of the `NEWS` stream (1 by default, 3 on a cluster).
    #[arg(long, env = "NEWS_STREAM_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=5))]
    pub stream_replicas: u64,

    /// Seconds the `NEWS` stream keeps messages.
    #[arg(long, env = "NEWS_STREAM_MAX_AGE_SECS", default_value_t = 604_800,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub stream_max_age_secs: u64,

    /// Milliseconds shutdown waits for running jobs to wind down before leaving them.
    #[arg(long, env = "WORKER_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,

    /// NewsAPI requests all workers on this key may send together in any window of
    /// `--budget-window-secs` (0: no limit). The default is the free Developer plan's.
    #[arg(long, env = "NEWSAPI_REQUEST_BUDGET", default_value_t = 50)]
    pub request_budget: u32,

    /// The window of `--request-budget`, in seconds.
    #[arg(long, env = "NEWSAPI_BUDGET_WINDOW_SECS", default_value_t = 43_200,
          value_parser = clap::value_parser!(u64).range(1..=31_622_400))]
    pub budget_window_secs: u64,
    /// Address of the ops HTTP server (`/metrics`, `/healthz`, `/readyz`), e.g.
    /// `127.0.0.1:9464`; unset, there is none.
    #[arg(long, env = "WORKER_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Everything [`crate::run`] needs. `Debug` is safe to log: the key prints as `***`.
#[derive(Debug, Clone)]
pub struct Config {
    /// How to reach NATS.
    pub nats: NatsConfig,
    /// Base URL of the NewsAPI-compatible server.
    pub newsapi_url: Url,
    /// The NewsAPI key, if any.
    pub newsapi_key: Option<Secret>,
    /// This worker's id: its stop subject and the name in its heartbeats.
    pub worker_id: WorkerId,
    /// Time between heartbeats.
    pub heartbeat_every: Duration,
    /// Timeouts, retries and size cap of NewsAPI requests.
    pub fetch: FetchSettings,
    /// How many jobs may fetch at the same time.
    pub max_concurrent_fetches: usize,
    /// How many runs may be in hand at the same time.
    pub max_concurrent_runs: usize,
    /// How the `NEWS` stream is provisioned.
    pub stream: StreamSettings,
    /// How long shutdown waits for running jobs.
    pub shutdown_grace: Duration,
    /// Where the ops routes are served, if anywhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The request budget shared with every worker on the same key; `None`: no limit.
    pub budget: Option<BudgetSettings>,
}

/// A request budget: at most `requests` in any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSettings {
    /// Requests per window.
    pub requests: u32,
    /// The window.
    pub window: Duration,
}

/// The shortest NewsAPI key accepted. NewsAPI's keys have 32 characters; a shorter value is
/// a placeholder or a typo, and masking a very short key in logs would mask ordinary words.
/// The mock's `demo-key` has exactly 8.
pub const MIN_KEY_CHARS: usize = 8;

/// A flag value that parses but cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The NATS flags can never work.
    #[error(transparent)]
    Nats(#[from] NatsConfigError),
    /// `--newsapi-key` is shorter than [`MIN_KEY_CHARS`].
    #[error("--newsapi-key (NEWSAPI_KEY) has {chars} character(s); a NewsAPI key has at least {MIN_KEY_CHARS} (unset it to run without one)")]
    KeyTooShort {
        /// How many characters it has.
        chars: usize,
    },
    /// `--newsapi-key` cannot be sent as a header value.
    #[error("--newsapi-key (NEWSAPI_KEY) contains characters an HTTP header cannot carry")]
    KeyNotSendable,
    /// `--newsapi-url` is not an absolute http(s) URL without credentials.
    #[error("--newsapi-url {url:?} {reason}")]
    NewsApiUrl {
        /// The value given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl TryFrom<Cli> for Config {
    type Error = ConfigError;

    fn try_from(cli: Cli) -> Result<Self, Self::Error> {
        Ok(Self {
            newsapi_url: parse_newsapi_url(&cli.newsapi_url)?,
            nats: NatsConfig::try_from(cli.nats)?,
            newsapi_key: cli.newsapi_key.map(check_key).transpose()?,
            worker_id: cli.worker_id.unwrap_or_else(WorkerId::generate),
            heartbeat_every: Duration::from_millis(cli.heartbeat_ms),
            fetch: FetchSettings {
                timeout: Duration::from_millis(cli.fetch_timeout_ms),
                retries: cli.fetch_retries,
                retry_base: Duration::from_millis(cli.retry_base_ms),
                retry_max: Duration::from_millis(cli.retry_max_ms),
                max_retry_after: Duration::from_secs(cli.max_retry_after_secs),
                max_response_bytes: usize::try_from(cli.max_response_bytes).unwrap_or(usize::MAX),
            },
            max_concurrent_fetches: usize::try_from(cli.max_concurrent_fetches).unwrap_or(1),
            max_concurrent_runs: usize::try_from(cli.max_concurrent_runs).unwrap_or(1),
            stream: StreamSettings {
                replicas: usize::try_from(cli.stream_replicas).unwrap_or(1),
                max_age: Duration::from_secs(cli.stream_max_age_secs),
                ..StreamSettings::default()
            },
            shutdown_grace: Duration::from_millis(cli.shutdown_grace_ms),
            budget: (cli.request_budget > 0).then(|| BudgetSettings {
                requests: cli.request_budget,
                window: Duration::from_secs(cli.budget_window_secs),
            }),
            metrics_addr: cli.metrics_addr,
        })
    }
}

fn check_key(key: Secret) -> Result<Secret, ConfigError> {
    let chars = key.expose().chars().count();
    if chars < MIN_KEY_CHARS {
        return Err(ConfigError::KeyTooShort { chars });
    }
    if HeaderValue::from_str(key.expose()).is_err() {
        return Err(ConfigError::KeyNotSendable);
    }
    Ok(key)
}

fn parse_newsapi_url(raw: &str) -> Result<Url, ConfigError> {
    let invalid = |reason| ConfigError::NewsApiUrl {
        url: without_credentials(raw),
        reason,
    };
    let url = Url::parse(raw).map_err(|_| invalid("is not an absolute URL"))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(invalid("must be an http:// or https:// URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "must not carry credentials: give the key with --newsapi-key",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query or a fragment"));
    }
    Ok(url)
}

/// `raw` with any `user:password@` part replaced by `***@`: error messages are logged.
fn without_credentials(raw: &str) -> String {
    match (raw.find("://"), raw.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***@{}", &raw[..scheme + 3], &raw[at + 1..])
        }
        (None, Some(at)) => format!("***@{}", &raw[at + 1..]),
        _ => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("worker").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Config::try_from(cli).map_err(|e| e.to_string())
    }

    #[test]
    fn no_flags_give_the_documented_defaults() {
        let config = config(&[]).expect("defaults are valid");
        assert_eq!(config.newsapi_url.as_str(), "https://newsapi.org/");
        assert!(config.worker_id.as_str().starts_with("w-"));
        assert_eq!(config.heartbeat_every, Duration::from_secs(2));
        assert_eq!(config.fetch.timeout, Duration::from_secs(15));
        assert_eq!(config.fetch.retries, 4);
        assert_eq!(config.fetch.retry_base, Duration::from_millis(500));
        assert_eq!(config.fetch.retry_max, Duration::from_secs(30));
        assert_eq!(config.fetch.max_retry_after, Duration::from_secs(120));
        assert_eq!(config.fetch.max_response_bytes, 4_194_304);
        assert_eq!(config.max_concurrent_fetches, 16);
        assert_eq!(config.max_concurrent_runs, 256);
        assert_eq!(config.stream.replicas, 1);
        assert_eq!(config.stream.max_age, Duration::from_secs(604_800));
        assert_eq!(config.stream.duplicate_window, Duration::from_secs(300));
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
        assert_eq!(
            config.budget,
            Some(BudgetSettings {
                requests: 50,
                window: Duration::from_secs(43_200)
            })
        );
    }

    #[test]
    fn a_request_budget_of_zero_means_no_limit() {
        let unlimited = config(&["--request-budget", "0"]).expect("valid");
        assert_eq!(unlimited.budget, None);
        let monthly = config(&[
            "--request-budget",
            "1000",
            "--budget-window-secs",
            "2592000",
        ])
        .expect("valid");
        assert_eq!(
            monthly.budget,
            Some(BudgetSettings {
                requests: 1000,
                window: Duration::from_secs(2_592_000)
            })
        );
        assert!(config(&["--budget-window-secs", "0"]).is_err());
    }

    #[test]
    fn flags_override_the_defaults() {
        let config = config(&[
            "--newsapi-url",
            "http://127.0.0.1:8081",
            "--newsapi-key",
            "k-for-tests",
            "--worker-id",
            "w1",
            "--fetch-retries",
            "0",
            "--stream-replicas",
            "3",
        ])
        .expect("valid");
        assert_eq!(config.worker_id.as_str(), "w1");
        assert_eq!(config.fetch.retries, 0);
        assert_eq!(config.stream.replicas, 3);
        assert_eq!(
            config.newsapi_key.as_ref().map(Secret::expose),
            Some("k-for-tests")
        );
    }

    #[test]
    fn the_mocks_key_and_a_list_of_nats_urls_are_accepted() {
        let config = config(&[
            "--newsapi-key",
            "demo-key",
            "--nats-url",
            "nats://127.0.0.1:1,nats://127.0.0.1:4222",
        ])
        .expect("valid");
        assert_eq!(config.nats.servers().len(), 2);
        assert_eq!(
            config.newsapi_key.as_ref().map(Secret::expose),
            Some("demo-key")
        );
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let config = config(&["--newsapi-key", "key-distinctive-42"]).expect("valid");
        let shown = format!("{config:?}");
        assert!(!shown.contains("key-distinctive-42"), "{shown}");
    }

    #[test]
    fn unusable_values_are_refused_with_the_flag_named() {
        for (args, needle) in [
            (&["--newsapi-url", "newsapi.org"][..], "--newsapi-url"),
            (&["--newsapi-url", "ftp://newsapi.org"][..], "--newsapi-url"),
            (
                &["--newsapi-url", "https://u:p@newsapi.org"][..],
                "credentials",
            ),
            (
                &["--newsapi-url", "https://user:pw-distinctive@newsapi.org"][..],
                "https://***@newsapi.org",
            ),
            (&["--worker-id", "a.b"][..], "--worker-id"),
            (&["--heartbeat-ms", "0"][..], "--heartbeat-ms"),
            (
                &["--max-concurrent-fetches", "0"][..],
                "--max-concurrent-fetches",
            ),
            (&["--log-format", "xml"][..], "--log-format"),
            (&["--newsapi-key", "k"][..], "at least 8"),
            (&["--newsapi-key", ""][..], "0 character(s)"),
            (&["--newsapi-key", "line\nbreak-distinctive"][..], "header"),
            (&["--nats-url", "nats://127.0.0.1:99999"][..], "--nats-url"),
            (&["--nats-url", "nats://a:1,nats://b:x"][..], "nats://b:x"),
            (
                &["--nats-creds", "/does/not/exist.creds"][..],
                "--nats-creds",
            ),
        ] {
            let error = config(args).expect_err("refused");
            assert!(error.contains(needle), "{args:?}: {error}");
            assert!(
                !error.contains("distinctive"),
                "{args:?} echoes a secret: {error}"
            );
        }
    }
}
