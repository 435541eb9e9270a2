//! Process plumbing shared by newsflow's programs, kept out of the messaging crate: how a
//! program logs, stops, retries and refuses a bad configuration.
//!
//! # Layout
//! - [`logging`]: the global subscriber (text or JSON, colour only on a terminal).
//! - [`signals`]: a cancellation token fired by SIGINT or SIGTERM.
//! - [`retry`]: the one retry helper: backoff, attempt and time limits, cancellation.
//! - [`config`]: configuration errors as one line on stderr and exit status 2.

pub mod config;
pub mod logging;
pub mod retry;
pub mod signals;
