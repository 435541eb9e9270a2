//! Connection flags, checked once at start-up into a [`NatsConfig`], and connecting with
//! logged retries.
//!
//! A setting that can never work (a URL that does not parse, a credentials file that cannot
//! be read) is a configuration error the program reports before it starts; only what the
//! network can fix is retried.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, ServerAddr};
use newsflow_core::retry::Backoff;
use newsflow_core::Secret;
use newsflow_runtime::retry::{retry, Failure, RetryPolicy};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// NATS connection flags, following the usual NATS client conventions. Secret values are
/// hidden from `--help` and from `Debug`.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated; the client picks among them and fails over.
    #[arg(
        long = "nats-url",
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub url: String,
    /// A credentials file (JWT + nkey seed).
    #[arg(long = "nats-creds", env = "NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// User name for user/password authentication.
    #[arg(long = "nats-user", env = "NATS_USER", requires = "password")]
    pub user: Option<String>,
    /// Password for user/password authentication.
    #[arg(
        long = "nats-password",
        env = "NATS_PASSWORD",
        hide_env_values = true,
        requires = "user"
    )]
    pub password: Option<Secret>,
    /// Token authentication.
    #[arg(long = "nats-token", env = "NATS_TOKEN", hide_env_values = true)]
    pub token: Option<Secret>,
    /// CA certificate (PEM) to verify the server's TLS certificate; enables TLS.
    #[arg(long = "nats-tls-ca", env = "NATS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long = "nats-tls-cert", env = "NATS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(long = "nats-tls-key", env = "NATS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl NatsArgs {
    /// Flags for a plain connection to `url`.
    pub fn for_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            creds: None,
            user: None,
            password: None,
            token: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// A NATS setting that can never work.
#[derive(Debug, thiserror::Error)]
pub enum NatsConfigError {
    /// `--nats-url` names no server.
    #[error("--nats-url (NATS_URL) names no server")]
    NoServer,
    /// One entry of `--nats-url` is not a NATS URL.
    #[error("--nats-url (NATS_URL): {url:?} is not a NATS server URL: {reason}")]
    Url {
        /// The entry, credentials masked.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A file named by a flag cannot be read or used.
    #[error("{flag}: {path}: {reason}")]
    File {
        /// The flag and its variable.
        flag: &'static str,
        /// The file.
        path: String,
        /// Why it cannot be used.
        reason: String,
    },
}

/// Checked NATS connection settings: every server URL parsed, the credentials file read and
/// parsed, the TLS files present. Built once at start-up by [`NatsConfig::try_from`].
#[derive(Clone)]
pub struct NatsConfig {
    servers: Vec<ServerAddr>,
    redacted: String,
    options: ConnectOptions,
}

impl TryFrom<NatsArgs> for NatsConfig {
    type Error = NatsConfigError;

    fn try_from(args: NatsArgs) -> Result<Self, Self::Error> {
        let servers = parse_servers(&args.url)?;
        let redacted = entries(&args.url).map(redact).collect::<Vec<_>>().join(",");
        let mut options = match &args.creds {
            Some(path) => {
                let file_error = |reason: String| NatsConfigError::File {
                    flag: "--nats-creds (NATS_CREDS)",
                    path: path.display().to_string(),
                    reason,
                };
                let contents = std::fs::read_to_string(path)
                    .map_err(|e| file_error(format!("cannot read it: {e}")))?;
                ConnectOptions::with_credentials(&contents)
                    .map_err(|e| file_error(format!("not a NATS credentials file: {e}")))?
            }
            None => ConnectOptions::new(),
        };
        if let (Some(user), Some(password)) = (args.user, &args.password) {
            options = options.user_and_password(user, password.expose().to_owned());
        }
        if let Some(token) = &args.token {
            options = options.token(token.expose().to_owned());
        }
        if let Some(ca) = args.tls_ca {
            readable("--nats-tls-ca (NATS_TLS_CA)", &ca)?;
            options = options.add_root_certificates(ca).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
            readable("--nats-tls-cert (NATS_TLS_CERT)", &cert)?;
            readable("--nats-tls-key (NATS_TLS_KEY)", &key)?;
            options = options.add_client_certificate(cert, key);
        }
        Ok(Self {
            servers,
            redacted,
            options,
        })
    }
}

impl NatsConfig {
    /// The server URLs with any `user:password@` part masked, fit for logs.
    pub fn redacted_url(&self) -> &str {
        &self.redacted
    }

    /// The servers, in the order given.
    pub fn servers(&self) -> &[ServerAddr] {
        &self.servers
    }

    /// The checked credentials and TLS settings, for a client that reports its connection
    /// events its own way (`newsflow-watch`).
    pub fn base_options(&self) -> ConnectOptions {
        self.options.clone()
    }

    fn options(&self, name: &str) -> ConnectOptions {
        let url = self.redacted.clone();
        self.options
            .clone()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .event_callback(move |event| {
                let url = url.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => tracing::info!(%url, "connected to NATS"),
                        async_nats::Event::Disconnected => {
                            tracing::warn!(%url, "disconnected from NATS; reconnecting")
                        }
                        other => tracing::warn!(%url, event = %other, "NATS connection event"),
                    }
                }
            })
    }
}

impl fmt::Debug for NatsConfig {
    /// Only the masked URLs: a `ServerAddr` prints its password and the options their token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("servers", &self.redacted)
            .finish_non_exhaustive()
    }
}

/// Parses a comma-separated list of NATS URLs (`nats://`, `tls://`, `ws://`, `wss://`, or a
/// bare `host:port`); blanks around entries and empty entries are ignored.
pub fn parse_servers(list: &str) -> Result<Vec<ServerAddr>, NatsConfigError> {
    let servers = entries(list)
        .map(|url| {
            url.parse::<ServerAddr>()
                .map_err(|error| NatsConfigError::Url {
                    url: redact(url),
                    reason: error.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err(NatsConfigError::NoServer);
    }
    Ok(servers)
}

fn entries(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|url| !url.is_empty())
}

fn readable(flag: &'static str, path: &Path) -> Result<(), NatsConfigError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| NatsConfigError::File {
            flag,
            path: path.display().to_string(),
            reason: format!("cannot read it: {e}"),
        })
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***@{}", &url[..scheme + 3], &url[at + 1..])
        }
        (None, Some(at)) => format!("***@{}", &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// Connects, retrying with capped backoff and saying so in the log ("cannot reach NATS;
/// retrying") until it succeeds or `cancel` fires (then `None`). A process that cannot reach
/// NATS never exits silently. Nothing here can fail for good: the settings were checked when
/// the `NatsConfig` was built.
pub async fn connect_with_retry(
    config: &NatsConfig,
    name: &str,
    cancel: &CancellationToken,
) -> Result<Option<Client>, std::convert::Infallible> {
    let policy = RetryPolicy::new(Backoff::new(
        Duration::from_millis(200),
        Duration::from_secs(5),
    ));
    let connected = retry(&policy, cancel, "cannot reach NATS", || {
        let options = config.options(name);
        async move {
            options
                .connect(config.servers.as_slice())
                .await
                .map_err(Failure::Transient)
        }
    })
    .instrument(tracing::warn_span!("nats", url = %config.redacted_url()))
    .await;
    Ok(connected.ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: NatsArgs) -> Result<NatsConfig, String> {
        NatsConfig::try_from(args).map_err(|e| e.to_string())
    }

    #[test]
    fn a_comma_separated_list_gives_every_server_in_order() {
        let servers = parse_servers("nats://127.0.0.1:1, nats://127.0.0.1:4222,,tls://h:7422")
            .expect("valid list");
        let hosts: Vec<_> = servers
            .iter()
            .map(|s| format!("{}://{}:{}", s.scheme(), s.host(), s.port()))
            .collect();
        assert_eq!(
            hosts,
            [
                "nats://127.0.0.1:1",
                "nats://127.0.0.1:4222",
                "tls://h:7422"
            ]
        );
    }

    #[test]
    fn a_bare_host_and_port_is_a_nats_url() {
        let servers = parse_servers("localhost:4333").expect("valid");
        assert_eq!((servers[0].scheme(), servers[0].port()), ("nats", 4333));
    }

    #[test]
    fn an_unparsable_entry_is_named_without_its_password() {
        for (list, needle) in [
            ("nats://a:4222,nats://b:notaport", "nats://b:notaport"),
            ("http://a:4222", "http://a:4222"),
            ("nats://alice:pw-distinctive@b:99999", "nats://***@b:99999"),
        ] {
            let error = parse_servers(list).expect_err("refused").to_string();
            assert!(error.contains(needle), "{list}: {error}");
            assert!(error.starts_with("--nats-url"), "{error}");
            assert!(!error.contains("distinctive"), "{error}");
        }
        assert!(matches!(
            parse_servers(" , "),
            Err(NatsConfigError::NoServer)
        ));
    }

    #[test]
    fn a_missing_or_invalid_credentials_file_is_a_configuration_error() {
        let mut args = NatsArgs::for_url("nats://h");
        args.creds = Some(PathBuf::from("/does/not/exist.creds"));
        let error = config(args.clone()).expect_err("refused");
        assert!(
            error.contains("--nats-creds") && error.contains("/does/not/exist.creds"),
            "{error}"
        );

        let dir = std::env::temp_dir().join(format!("newsflow-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let garbage = dir.join("garbage.creds");
        std::fs::write(&garbage, "not a creds file").expect("written");
        args.creds = Some(garbage);
        let error = config(args).expect_err("refused");
        assert!(error.contains("not a NATS credentials file"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_missing_tls_file_is_a_configuration_error() {
        let mut args = NatsArgs::for_url("nats://h");
        args.tls_ca = Some(PathBuf::from("/does/not/ca.pem"));
        let error = config(args).expect_err("refused");
        assert!(
            error.contains("--nats-tls-ca") && error.contains("/does/not/ca.pem"),
            "{error}"
        );
    }

    #[test]
    fn credentials_in_urls_are_redacted() {
        let config = config(NatsArgs::for_url(
            "nats://alice:s3cret@host:4222, nats://host2:4222",
        ))
        .expect("valid");
        assert_eq!(
            config.redacted_url(),
            "nats://***@host:4222,nats://host2:4222"
        );
        assert_eq!(redact("tok@host"), "***@host");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let mut args = NatsArgs::for_url("nats://u:url-distinctive@h");
        args.user = Some("u".to_owned());
        args.password = Some(Secret::new("pw-distinctive"));
        args.token = Some(Secret::new("tok-distinctive"));
        let shown = format!("{args:?}");
        assert!(
            !shown.contains("pw-distinctive") && !shown.contains("tok-"),
            "{shown}"
        );
        let shown = format!("{:?}", NatsConfig::try_from(args).expect("valid"));
        assert!(!shown.contains("distinctive"), "{shown}");
    }
}
