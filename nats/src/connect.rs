//! Connection flags and connecting with logged retries.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::{Client, ConnectOptions};
use newsflow_core::retry::Backoff;
use newsflow_core::Secret;
use tokio_util::sync::CancellationToken;

/// NATS connection flags, following the usual NATS client conventions. Secret values are
/// hidden from `--help` and from `Debug`.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated.
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
    #[arg(long = "nats-user", env = "NATS_USER")]
    pub user: Option<String>,
    /// Password for user/password authentication.
    #[arg(long = "nats-password", env = "NATS_PASSWORD", hide_env_values = true)]
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

    /// The URL with any `user:password@` part removed, fit for logs.
    pub fn redacted_url(&self) -> String {
        self.url
            .split(',')
            .map(redact)
            .collect::<Vec<_>>()
            .join(",")
    }

    async fn options(&self, name: &str) -> std::io::Result<ConnectOptions> {
        let mut options = match &self.creds {
            Some(path) => ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("reading the NATS credentials file {}: {e}", path.display()),
                    )
                })?,
            None => ConnectOptions::new(),
        };
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.expose().to_owned());
        }
        if let Some(token) = &self.token {
            options = options.token(token.expose().to_owned());
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let url = self.redacted_url();
        Ok(options
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
            }))
    }
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

/// Connects, retrying with capped backoff and saying so in the log until it succeeds or
/// `cancel` fires (then `None`). A process that cannot reach NATS never exits silently.
pub async fn connect_with_retry(
    args: &NatsArgs,
    name: &str,
    cancel: &CancellationToken,
) -> Result<Option<Client>, std::io::Error> {
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let url = args.redacted_url();
    let mut attempt = 0u32;
    loop {
        let options = args.options(name).await?;
        match options.connect(args.url.as_str()).await {
            Ok(client) => return Ok(Some(client)),
            Err(error) => {
                let wait = backoff.delay(attempt, rand::random::<f64>());
                tracing::warn!(%url, %error, attempt = attempt + 1, retry_in_ms = wait.as_millis() as u64, "cannot reach NATS; retrying");
                tokio::select! {
                    () = cancel.cancelled() => return Ok(None),
                    () = tokio::time::sleep(wait) => {}
                }
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_redacted() {
        let args = NatsArgs::for_url("nats://alice:s3cret@host:4222,nats://host2:4222");
        assert_eq!(
            args.redacted_url(),
            "nats://***@host:4222,nats://host2:4222"
        );
        assert_eq!(redact("tok@host"), "***@host");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let mut args = NatsArgs::for_url("nats://h");
        args.password = Some(Secret::new("pw-distinctive"));
        args.token = Some(Secret::new("tok-distinctive"));
        let shown = format!("{args:?}");
        assert!(!shown.contains("distinctive"), "{shown}");
    }
}
