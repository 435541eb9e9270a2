//! Black-box tests: a real server on a free port, spoken to over HTTP.

mod binary;
mod control;
mod faults;
mod protocol;
mod support;
