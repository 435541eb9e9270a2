//! The programs under test, started from the built binaries with the test harness's `Proc`,
//! and what the benchmark reads off them: readiness, metrics, RSS, disk usage.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use newsflow_tests::{Proc, Spec};

use crate::http::Client;

/// Where the three programs are.
#[derive(Debug, Clone)]
pub struct Bins {
    dir: PathBuf,
}

impl Bins {
    /// `dir`, else the directory of this executable; each program must be there.
    pub fn locate(dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let dir = match dir {
            Some(dir) => dir,
            None => std::env::current_exe()
                .context("locating the bench executable")?
                .parent()
                .context("the bench executable has no directory")?
                .to_path_buf(),
        };
        for name in ["data-streams", "worker", "newsapi-mock"] {
            let path = dir.join(name);
            if !path.is_file() {
                bail!(
                    "{} is missing: build the programs first (`cargo build --release --bins`) or pass --bin-dir",
                    path.display()
                );
            }
        }
        Ok(Self { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn spec(&self, name: &str, program: &str, log_dir: &Path) -> Spec {
        Spec::new(name, self.dir.join(program), log_dir).env("RUST_LOG", "info")
    }

    /// Starts `newsapi-mock` with `args`; returns it and its `host:port`.
    pub async fn mock(&self, log_dir: &Path, name: &str, args: &[&str]) -> (Proc, String) {
        let spec = self
            .spec(name, "newsapi-mock", log_dir)
            .args(["--addr", "127.0.0.1:0"])
            .args(args.iter().copied())
            .ready_when("newsapi-mock listening on");
        let proc = Proc::spawn(spec).await;
        let addr = proc.http_addr();
        (proc, addr)
    }

    /// Starts a worker against `nats_url` and the mock at `mock_addr`, ready for commands.
    pub async fn worker(
        &self,
        log_dir: &Path,
        name: &str,
        nats_url: &str,
        mock_addr: &str,
    ) -> Proc {
        let spec = self
            .spec(name, "worker", log_dir)
            .args(["--nats-url", nats_url, "--newsapi-key", "demo-key"])
            // The mock is not metered; the budget's own cost is not what this measures.
            .args(["--request-budget", "0"])
            .args(["--newsapi-url".to_owned(), format!("http://{mock_addr}")])
            .ready_when("worker ready");
        Proc::spawn(spec).await
    }

    /// Starts data-streams on `data_dir` on a free port, without waiting for anything: the
    /// caller times its start-up with [`wait_ready`]. Returns it and its `host:port`.
    pub async fn data_streams(
        &self,
        log_dir: &Path,
        name: &str,
        nats_url: &str,
        data_dir: &Path,
    ) -> (Proc, String) {
        self.data_streams_with(log_dir, name, nats_url, data_dir, &[])
            .await
    }

    /// [`Bins::data_streams`] with more flags.
    pub async fn data_streams_with(
        &self,
        log_dir: &Path,
        name: &str,
        nats_url: &str,
        data_dir: &Path,
        flags: &[&str],
    ) -> (Proc, String) {
        let addr = format!("127.0.0.1:{}", newsflow_tests::nats_server::free_port());
        let spec = self
            .spec(name, "data-streams", log_dir)
            .args(["--http-addr", &addr, "--nats-url", nats_url])
            .args(["--data-dir".into(), data_dir.as_os_str().to_owned()])
            .args(flags.iter().copied());
        (Proc::spawn(spec).await, addr)
    }
}

/// Polls the process's stdout every `every` until it prints `line`; returns when it was first
/// seen. data-streams prints its address once its store is open, before it connects to NATS.
pub async fn wait_for_line(
    proc: &mut Proc,
    line: &str,
    every: Duration,
    within: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + within;
    loop {
        if proc.stdout().contains(line) {
            return Ok(Instant::now());
        }
        if let Some(status) = proc.try_exit() {
            bail!(
                "{} exited with {status}\n{}",
                proc.name(),
                proc.log_tails(30)
            );
        }
        if Instant::now() > deadline {
            bail!("{} did not print {line:?} within {within:?}", proc.name());
        }
        tokio::time::sleep(every).await;
    }
}

/// Polls `GET /readyz` every `every` until 200; returns when it was first seen. Fails when
/// the process exits or `within` passes first.
pub async fn wait_ready(
    proc: &mut Proc,
    addr: &str,
    every: Duration,
    within: Duration,
) -> anyhow::Result<Instant> {
    wait_ready_with(proc, addr, &[], every, within).await
}

/// [`wait_ready`] sending `headers` (the bearer token of a data-streams that has one).
pub async fn wait_ready_with(
    proc: &mut Proc,
    addr: &str,
    headers: &[(&str, &str)],
    every: Duration,
    within: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + within;
    let mut client = Client::new(addr);
    loop {
        if let Ok(response) = client.get_with("/readyz", headers).await {
            if response.status == 200 {
                return Ok(Instant::now());
            }
        }
        if let Some(status) = proc.try_exit() {
            bail!(
                "{} exited with {status}\n{}",
                proc.name(),
                proc.log_tails(30)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{} at {addr} not ready within {within:?}\n{}",
                proc.name(),
                proc.log_tails(30)
            );
        }
        tokio::time::sleep(every).await;
    }
}

/// One counter or gauge of a Prometheus text page.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok()).flatten()
        })
}

/// Reads `GET /metrics` and returns `name`.
pub async fn read_metric(client: &mut Client, name: &str) -> anyhow::Result<f64> {
    let response = client.get("/metrics").await?;
    let text = std::str::from_utf8(&response.body).context("metrics text")?;
    metric(text, name).with_context(|| format!("/metrics has no {name}"))
}

/// The resident set of process `pid`, in bytes (`VmRSS` of /proc/<pid>/status).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let kb = line
            .strip_prefix("VmRSS:")?
            .trim()
            .strip_suffix("kB")?
            .trim();
        kb.parse::<u64>().ok().map(|kb| kb * 1024)
    })
}

/// Samples a process's RSS in the background and keeps the largest value.
pub struct RssSampler {
    max: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    /// Samples `pid` every 50 ms.
    pub fn start(pid: u32) -> Self {
        let max = Arc::new(AtomicU64::new(rss_bytes(pid).unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (max, stop) = (max.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = rss_bytes(pid) {
                        max.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        Self { max, stop, task }
    }

    /// Stops sampling; the largest RSS seen.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.max.load(Ordering::Relaxed)
    }
}

/// Bytes allocated on disk under `dir` (blocks, not apparent sizes).
pub fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => disk_bytes(&entry.path()),
            Ok(meta) => meta.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_by_exact_name() {
        let text = "# HELP a_total x\n# TYPE a_total counter\na_total 12\na_total_more 3\n";
        assert_eq!(metric(text, "a_total"), Some(12.0));
        assert_eq!(metric(text, "a"), None);
    }

    #[test]
    fn this_process_has_a_resident_set() {
        assert!(rss_bytes(std::process::id()).is_some_and(|rss| rss > 0));
    }
}
