//! Where the programs under test live, building them once when they are missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::process::Spec;

/// The programs of the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// `data-streams`: the HTTP API and the stream consumer.
    DataStreams,
    /// `worker`: fetches NewsAPI and publishes batches.
    Worker,
    /// `newsapi-mock`: the NewsAPI-compatible mock server.
    NewsapiMock,
    /// `newsflow-watch`: prints NATS traffic as it arrives.
    Watch,
}

impl Program {
    /// The binary's file name.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::DataStreams => "data-streams",
            Self::Worker => "worker",
            Self::NewsapiMock => "newsapi-mock",
            Self::Watch => "newsflow-watch",
        }
    }
}

/// A spec for `program` as the suites run it: plain logs (`NO_COLOR`), `RUST_LOG=info` unless
/// the caller's environment sets `RUST_LOG`, and for a worker no request budget
/// (`NEWSAPI_REQUEST_BUDGET=0`): the mock is not metered, and the suites that test the budget
/// pass `--request-budget`, which beats the environment.
pub fn program_spec(program: Program, name: &str, dir: &Path) -> Spec {
    let mut spec = Spec::new(name, binary(program), dir).env("NO_COLOR", "1");
    if std::env::var_os("RUST_LOG").is_none() {
        spec = spec.env("RUST_LOG", "info");
    }
    if program == Program::Worker {
        spec = spec.env("NEWSAPI_REQUEST_BUDGET", "0");
    }
    spec
}

/// The workspace's root directory (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The cargo target directory: `CARGO_TARGET_DIR`, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// Serialises the one-time build so that parallel tests do not race to run cargo.
static BUILD: Mutex<Option<Result<(), String>>> = Mutex::new(None);

/// Set to `1` to run `cargo build --bins` once per test process even when the binaries exist,
/// so `cargo test -p newsflow-tests` never tests stale programs.
pub const BUILD_ENV: &str = "NEWSFLOW_TESTS_BUILD";

/// The path of `program`'s debug binary. When it is missing (or [`BUILD_ENV`] is `1`),
/// `cargo build --bins` runs once per test process; a failed build fails every test with
/// cargo's reason.
pub fn binary(program: Program) -> PathBuf {
    let path = target_dir().join("debug").join(program.file_name());
    let always = std::env::var(BUILD_ENV).is_ok_and(|v| v == "1");
    if path.is_file() && !always {
        return path;
    }
    let mut guard = BUILD
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let outcome = guard.get_or_insert_with(build_bins).clone();
    drop(guard);
    if let Err(reason) = outcome {
        panic!(
            "{} is missing and `cargo build --bins` failed: {reason}",
            path.display()
        );
    }
    assert!(
        path.is_file(),
        "`cargo build --bins` succeeded but {} is still missing",
        path.display()
    );
    path
}

fn build_bins() -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--bins"])
        .current_dir(workspace_root())
        .output()
        .map_err(|e| format!("could not run cargo: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!("{}\n{}", output.status, tail(&stderr, 40)))
    }
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
