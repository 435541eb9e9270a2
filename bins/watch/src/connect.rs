//! Connecting with the services' NATS flags, but quietly: a watcher tells its user only what
//! matters to them (NATS cannot be reached, the connection was lost or regained) in one line on
//! stderr, not the services' logs, and it says nothing when it closes the connection itself.

use std::future::Future;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use newsflow_nats::connect::NatsConfig;

/// How long to wait between attempts while NATS cannot be reached.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// The checked connection settings, reporting events in one line each on stderr.
fn options(config: &NatsConfig) -> ConnectOptions {
    let url = config.redacted_url().to_owned();
    config
        .base_options()
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
        })
}

/// Connects, trying again every second while NATS cannot be reached (saying so once), until
/// it succeeds or `shutdown` resolves (then `None`).
pub async fn connect(config: &NatsConfig, shutdown: impl Future<Output = ()>) -> Option<Client> {
    tokio::pin!(shutdown);
    let mut said = false;
    loop {
        match options(config).connect(config.servers().to_vec()).await {
            Ok(client) => return Some(client),
            Err(error) => {
                if !said {
                    eprintln!(
                        "cannot reach NATS at {}: {error}; trying again every second (Ctrl-C stops)",
                        config.redacted_url()
                    );
                    said = true;
                }
                tokio::select! {
                    () = &mut shutdown => return None,
                    () = tokio::time::sleep(RETRY_EVERY) => {}
                }
            }
        }
    }
}
