//! How newsflow talks over NATS: subjects, wire types, stream provisioning, the command
//! request-reply client and server helpers, and acknowledged publishing. Process plumbing
//! (logging, signals, the retry helper) lives in `newsflow-runtime`.
//!
//! # Layout
//! - [`subjects`]: every subject and `Nats-Msg-Id` of the contract, built and parsed in one place.
//! - [`wire`]: command payloads (`StartJob`, `StopJob`, `Ack`, `Heartbeat`) and `WorkerId`.
//! - [`connect`]: connection flags, checked at start-up, and connecting with logged retries.
//! - [`stream`]: idempotent provisioning of the `NEWS` stream and the durable consumer.
//! - [`kv`]: the key-value buckets beside the stream: request budgets and job plans.
//! - [`publish`]: JetStream publishing that awaits acks and retries with the same message id.
//! - [`command`]: sending start/stop commands and parsing them defensively on the worker.

pub mod command;
pub mod connect;
pub mod kv;
pub mod publish;
pub mod stream;
pub mod subjects;
pub mod wire;

pub use async_nats;
