//! Programs started next to a [`System`] with flags it does not give (a worker with slower
//! retries, data-streams expected to refuse to start), and store corruption.

use std::path::Path;

use crate::api::Api;
use crate::bins::{program_spec, Program};
use crate::mock::DEMO_KEY;
use crate::process::{Proc, Spec};
use crate::system::{System, DS_READY_WITHIN, FAST_DS_ARGS, FAST_WORKER_ARGS};

/// `defaults` (flag/value pairs) with each flag also named in `overrides` replaced, then the
/// overrides: clap refuses a flag given twice.
fn merge_flags(defaults: &[&str], overrides: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for pair in defaults.chunks(2) {
        if !overrides.contains(&pair[0]) {
            out.extend(pair.iter().map(|s| (*s).to_owned()));
        }
    }
    out.extend(overrides.iter().map(|s| (*s).to_owned()));
    out
}

fn spec(system: &System, program: Program, name: &str, args: Vec<String>) -> Spec {
    program_spec(program, name, system.dir()).args(args)
}

/// Starts a worker `id` of `system` whose flags are the `System`'s (fast timings, the mock)
/// with `overrides` replacing the same flags (`--retry-base-ms 400`, `--newsapi-url`...), and
/// waits until it is ready.
pub async fn spawn_worker_with(system: &System, id: &str, overrides: &[&str]) -> Proc {
    let (nats, mock) = (system.nats_url(), system.mock().base().to_owned());
    let mut defaults = vec![
        "--nats-url",
        nats.as_str(),
        "--newsapi-url",
        mock.as_str(),
        "--newsapi-key",
        DEMO_KEY,
        "--worker-id",
        id,
    ];
    defaults.extend(FAST_WORKER_ARGS);
    let args = merge_flags(&defaults, overrides);
    let spec = spec(system, Program::Worker, id, args).ready_when(format!("worker ready id={id}"));
    Proc::spawn(spec).await
}

fn data_streams_args(system: &System, nats_url: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--http-addr".into(),
        "127.0.0.1:0".into(),
        "--nats-url".into(),
        nats_url.to_owned(),
        "--data-dir".into(),
        system.data_dir().display().to_string(),
    ];
    args.extend(FAST_DS_ARGS.iter().map(|s| (*s).to_owned()));
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// Starts data-streams on `system`'s data dir with `extra` flags without waiting for it to
/// be ready (for starts expected to fail).
pub async fn spawn_data_streams_unready(system: &System, extra: &[&str]) -> Proc {
    let args = data_streams_args(system, &system.nats_url(), extra);
    Proc::spawn(spec(system, Program::DataStreams, "data-streams", args)).await
}

/// Starts data-streams (when `system` runs none) on its data dir, reaching NATS at
/// `nats_url` (a [`super::Partition`]), and waits until it is ready; returns it and its API.
pub async fn spawn_data_streams_through(system: &System, nats_url: &str) -> (Proc, Api) {
    let args = data_streams_args(system, nats_url, &[]);
    let spec = spec(system, Program::DataStreams, "data-streams", args)
        .ready_when("data-streams listening on http://");
    let proc = Proc::spawn(spec).await;
    let api = Api::new(&proc.http_addr());
    api.wait_ready(DS_READY_WITHIN).await;
    (proc, api)
}

/// Overwrites every file under `dir` with garbage of the same length (at least 64 bytes);
/// returns how many files were overwritten.
pub fn corrupt_files_under(dir: &Path) -> usize {
    let mut count = 0;
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            count += corrupt_files_under(&path);
            continue;
        }
        let len = std::fs::metadata(&path)
            .map_or(0, |m| m.len() as usize)
            .max(64);
        let garbage: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(0x5a))
            .collect();
        std::fs::write(&path, garbage)
            .unwrap_or_else(|e| panic!("overwriting {}: {e}", path.display()));
        count += 1;
    }
    count
}
