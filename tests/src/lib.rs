//! Black-box test harness of newsflow: real processes (`nats-server`, `newsapi-mock`,
//! `data-streams`, `worker`) spawned from the built binaries, each test with its own ports,
//! stores and temporary directory, everything killed on drop and every log tail printed when
//! a test fails. Tests synchronise by polling for conditions with deadlines, never by sleeping.
//!
//! ```no_run
//! # async fn demo() {
//! use newsflow_tests::{System, serde_json::json};
//! let system = System::builder().workers(1).start().await;
//! let api = system.api();
//! api.create_job_ok(&json!({"id":"btc","params":{"q":"bitcoin"},"interval_secs":1})).await;
//! let latest = api.wait_for_latest("btc", None, std::time::Duration::from_secs(20)).await;
//! assert_eq!(latest["batch"]["status"], "complete");
//! # }
//! ```
//!
//! # Layout
//! - [`bins`]: where the programs' binaries are; builds them once when missing.
//! - [`scratch`]: a test's temporary directory, kept when the test fails.
//! - [`process`]: `Proc`, a spawned program with log files, a ready line, SIGTERM and SIGKILL.
//! - [`nats_server`]: `NatsServer`, a JetStream broker on a free port that can be restarted.
//! - [`nats_cluster`]: `NatsCluster`, three routed JetStream nodes on loopback.
//! - [`system`]: `System`, the whole newsflow with fast timings and restart helpers.
//! - [`api`]: `Api`, the data-streams HTTP client with typed helpers and cursor paging.
//! - [`mock`]: `MockClient`, direct NewsAPI requests to the mock and its control API.
//! - [`bus`]: `Bus`, the test's own NATS connection: publish to the stream, heartbeats, reads.
//! - [`fake_worker`]: `FakeWorker`, a worker played over NATS: addressed starts, stops, job lists.
//! - [`sse`]: `EventStream`, a reader of the server-sent event streams.
//! - [`poll`]: `wait_for`, `poll_until` and `hold_for`, deadlines instead of sleeps.
//! - [`contract`]: assertions of the contract's JSON shapes.
//! - [`tls`]: a throw-away CA, server and client certificates, made in-process.

pub mod api;
pub mod bins;
pub mod bus;
pub mod contract;
pub mod fake_worker;
pub mod faults_support;
pub mod hostile;
pub mod mock;
pub mod nats_cluster;
pub mod nats_server;
pub mod poll;
pub mod process;
pub mod scratch;
pub mod sse;
pub mod system;
pub mod tls;

pub use api::Api;
pub use bus::{Bus, Heartbeats};
pub use mock::MockClient;
pub use nats_cluster::NatsCluster;
pub use nats_server::NatsServer;
pub use poll::{hold_for, poll_until, wait_for};
pub use process::{Proc, Spec};
pub use scratch::Scratch;
pub use system::{System, SystemBuilder};

pub use reqwest::StatusCode;
pub use serde_json;
