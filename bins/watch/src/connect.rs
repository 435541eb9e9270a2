//! Connecting with the services' NATS flags, but quietly: a watcher tells its user only what
//! matters to them (NATS cannot be reached, the connection was lost or regained) in one line on
//! stderr, not the services' logs, and it says nothing when it closes the connection itself.

use std::future::Future;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use newsflow_nats::connect::NatsArgs;

/// How long to wait between attempts while NATS cannot be reached.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// The connection `args` describe: credentials file, user and password, token, TLS.
pub async fn options(args: &NatsArgs) -> std::io::Result<ConnectOptions> {
    let mut options = match &args.creds {
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
    if let (Some(user), Some(password)) = (&args.user, &args.password) {
        options = options.user_and_password(user.clone(), password.expose().to_owned());
    }
    if let Some(token) = &args.token {
        options = options.token(token.expose().to_owned());
    }
    if let Some(ca) = &args.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let url = args.redacted_url();
    Ok(options
        .name("newsflow-watch")
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .event_callback(move |event| {
            let url = url.clone();
            async move {
                match event {
                    Event::Connected => eprintln!("connected to NATS at {url}"),
                    Event::Disconnected => eprintln!("lost the NATS connection; reconnecting"),
                    Event::Closed | Event::Draining => {}
                    other => eprintln!("NATS: {other}"),
                }
            }
        }))
}

/// Connects, trying again every second while NATS cannot be reached (saying so once), until
/// it succeeds or `shutdown` resolves (then `None`).
pub async fn connect(
    args: &NatsArgs,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<Option<Client>> {
    tokio::pin!(shutdown);
    let mut said = false;
    loop {
        match options(args).await?.connect(args.url.as_str()).await {
            Ok(client) => return Ok(Some(client)),
            Err(error) => {
                if !said {
                    eprintln!(
                        "cannot reach NATS at {}: {error}; trying again every second (Ctrl-C stops)",
                        args.redacted_url()
                    );
                    said = true;
                }
                tokio::select! {
                    () = &mut shutdown => return Ok(None),
                    () = tokio::time::sleep(RETRY_EVERY) => {}
                }
            }
        }
    }
}
