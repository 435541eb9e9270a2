//! `newsflow-watch`: prints newsflow's NATS traffic as it arrives, one line per message, so
//! anyone can see articles and batch markers flow without installing the `nats` CLI. It is a
//! plain core-NATS subscriber: it creates no JetStream consumer and changes nothing.
//!
//! # Layout
//! - [`connect`]: the services' NATS flags, connecting and reporting the connection quietly.
//! - [`line`]: the printed line for a subject and payload (article, batch marker, or raw).
//! - [`run`] (here): subscribe and print until shutdown.

use std::future::Future;
use std::io::Write;

use futures::StreamExt as _;
use newsflow_nats::connect::NatsArgs;

pub mod connect;
pub mod line;

/// `newsflow-watch [subject]`: the NATS flags of the services and what to subscribe to.
#[derive(Debug, clap::Parser)]
#[command(
    version,
    about = "Prints newsflow's articles and batch markers as they arrive."
)]
pub struct Cli {
    /// How to reach NATS.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The subject to watch; `news.>` is everything newsflow publishes, `news.batches.>` only
    /// the batch markers, `news.articles.<job>.>` one job's articles.
    #[arg(default_value = "news.>")]
    pub subject: String,
}

/// Why watching stopped before a shutdown was asked for.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The server refused the subscription (a bad subject, a permission).
    #[error("subscribing to {subject}: {source}")]
    Subscribe {
        /// The subject asked for.
        subject: String,
        /// The client's reason.
        source: async_nats::SubscribeError,
    },
    /// The server did not confirm the subscription.
    #[error("confirming the subscription to {subject}: {reason}")]
    Confirm {
        /// The subject asked for.
        subject: String,
        /// The client's reason.
        reason: String,
    },
    /// The connection ended for good, so no message can come any more.
    #[error("the NATS connection closed")]
    Closed,
    /// Printing failed (a closed pipe is one: `newsflow-watch | head`).
    #[error("writing to stdout: {0}")]
    Write(#[from] std::io::Error),
}

/// Subscribes to `subject` and writes one line per message to `out` until `shutdown`
/// resolves. Says on stderr once the server has the subscription, so whoever publishes next
/// is seen.
pub async fn run(
    client: &async_nats::Client,
    subject: &str,
    mut out: impl Write,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WatchError> {
    let mut messages = client
        .subscribe(subject.to_owned())
        .await
        .map_err(|source| WatchError::Subscribe {
            subject: subject.to_owned(),
            source,
        })?;
    client.flush().await.map_err(|e| WatchError::Confirm {
        subject: subject.to_owned(),
        reason: e.to_string(),
    })?;
    eprintln!("watching {subject} (Ctrl-C stops)");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            message = messages.next() => {
                let Some(message) = message else { return Err(WatchError::Closed) };
                let text = line::format(&message.subject, &message.payload, newsflow_core::now_utc());
                writeln!(out, "{text}")?;
                out.flush()?;
            }
        }
    }
}
