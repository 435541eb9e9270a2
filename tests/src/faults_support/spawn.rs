//! Programs started next to a [`System`] with flags it does not give (a worker with slower
//! retries, data-streams expected to refuse to start), and store corruption.

use std::path::Path;

use crate::bins::{binary, Program};
use crate::mock::DEMO_KEY;
use crate::process::{Proc, Spec};
use crate::system::{System, FAST_DS_ARGS, FAST_WORKER_ARGS};

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
    let mut spec = Spec::new(name, binary(program), system.dir())
        .args(args)
        .env("NO_COLOR", "1");
    if std::env::var_os("RUST_LOG").is_none() {
        spec = spec.env("RUST_LOG", "info");
    }
    spec
}

/// Starts a worker `id` of `system` whose flags are the fast defaults with `overrides`
/// replacing the same flags (`--retry-base-ms 400`...), and waits until it is ready.
pub async fn spawn_worker_with(system: &System, id: &str, overrides: &[&str]) -> Proc {
    let mut args: Vec<String> = vec![
        "--nats-url".into(),
        system.nats_url(),
        "--newsapi-url".into(),
        system.mock().base().to_owned(),
        "--newsapi-key".into(),
        DEMO_KEY.into(),
        "--worker-id".into(),
        id.into(),
    ];
    args.extend(merge_flags(&FAST_WORKER_ARGS, overrides));
    let spec = spec(system, Program::Worker, id, args).ready_when(format!("worker ready id={id}"));
    Proc::spawn(spec).await
}

/// Starts data-streams on `system`'s data dir with `extra` flags without waiting for it to
/// be ready (for starts expected to fail).
pub async fn spawn_data_streams_unready(system: &System, extra: &[&str]) -> Proc {
    let mut args: Vec<String> = vec![
        "--http-addr".into(),
        "127.0.0.1:0".into(),
        "--nats-url".into(),
        system.nats_url(),
        "--data-dir".into(),
        system.data_dir().display().to_string(),
    ];
    args.extend(FAST_DS_ARGS.iter().map(|s| (*s).to_owned()));
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    Proc::spawn(spec(system, Program::DataStreams, "data-streams", args)).await
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
