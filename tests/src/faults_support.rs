//! Fault-injection helpers for `tests/faults.rs` and `tests/soak.rs`: count what JetStream
//! acknowledged, then check that data-streams stores every one of those exactly once.
//!
//! # Layout
//! - [`ledger`]: a conforming publisher of synthetic batches that records every server ack.
//! - [`stream`]: reading the whole `NEWS` stream, the durable consumer's progress.
//! - [`audit`]: the stream (what was acknowledged) against what data-streams serves.
//! - [`watch`]: background observers: request timing at the mock, heartbeats, a reader that
//!   counts partial batches.
//! - [`partition`]: a proxy that cuts one program off from the broker.
//! - [`probes`]: a job's owner and its runs, caught at the right moment.
//! - [`spawn`]: programs started with flags the `System` does not give, and store corruption.

pub mod audit;
pub mod ledger;
pub mod partition;
pub mod probes;
pub mod spawn;
pub mod storm;
pub mod stream;
pub mod watch;

pub use audit::{audit, Audit};
pub use ledger::{spawn_publisher, synthetic_articles, Ledger, PublisherHandle};
pub use partition::Partition;
pub use probes::{owner, wait_for_half_batch, wait_for_owner};
pub use spawn::{
    corrupt_files_under, spawn_data_streams_through, spawn_data_streams_unready, spawn_worker_with,
};
pub use storm::{Storm, StormFigures};
pub use stream::{consumer_info, read_stream, wait_until_ingested, StreamRecord, INGEST_WITHIN};
pub use watch::{BatchReader, Exchange, HeartbeatLog, ReaderFigures, TimingProxy};
