//! `Proc`: one spawned program with its output in log files, its ready line, and a clean or
//! brutal end. Killed when dropped; its log tails are printed when a test fails.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::bins::tail;

/// How long a program may take to print its ready line.
pub const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long a program may take to exit after SIGTERM.
pub const EXIT_WITHIN: Duration = Duration::from_secs(20);

static SPAWNED: AtomicUsize = AtomicUsize::new(0);

/// What to run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// A short name for logs and messages (`nats`, `data-streams`, `worker-1`...).
    pub name: String,
    /// The binary.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment variables.
    pub env: Vec<(OsString, OsString)>,
    /// Where its `<name>.<n>.stdout.log` and `.stderr.log` go.
    pub log_dir: PathBuf,
    /// The start of the stdout line that says it is ready; `None` to not wait.
    pub ready_prefix: Option<String>,
}

impl Spec {
    /// A spec with no arguments that does not wait for a ready line.
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>, log_dir: &Path) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            log_dir: log_dir.to_path_buf(),
            ready_prefix: None,
        }
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Waits for a stdout line starting with `prefix` before `spawn` returns.
    pub fn ready_when(mut self, prefix: impl Into<String>) -> Self {
        self.ready_prefix = Some(prefix.into());
        self
    }
}

/// A running (or ended) program.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    exit: Option<ExitStatus>,
    stdout: PathBuf,
    stderr: PathBuf,
    ready_line: Option<String>,
}

impl Proc {
    /// Starts `spec` and, when it names a ready line, waits for it (panicking with the logs
    /// if the program exits first or is silent past [`READY_WITHIN`]).
    pub async fn spawn(spec: Spec) -> Self {
        let n = SPAWNED.fetch_add(1, Ordering::Relaxed);
        let stdout = spec.log_dir.join(format!("{}.{n}.stdout.log", spec.name));
        let stderr = spec.log_dir.join(format!("{}.{n}.stderr.log", spec.name));
        let open = |path: &Path| {
            File::create(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()))
        };
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(open(&stdout))
            .stderr(open(&stderr));
        for (key, value) in &spec.env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} ({}): {e}", spec.name, spec.program.display()));
        let mut proc = Self {
            name: spec.name,
            child,
            exit: None,
            stdout,
            stderr,
            ready_line: None,
        };
        if let Some(prefix) = spec.ready_prefix {
            proc.ready_line = Some(proc.wait_for_stdout_line(&prefix, READY_WITHIN).await);
        }
        proc
    }

    async fn wait_for_stdout_line(&mut self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
            if let Some(line) = out
                .lines()
                .map(message_of)
                .find(|line| line.starts_with(prefix))
            {
                return line;
            }
            if let Some(status) = self.try_exit() {
                panic!(
                    "{} exited with {status} before printing {prefix:?}\n{}",
                    self.name,
                    self.log_tails(60)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not print {prefix:?} within {within:?}\n{}",
                    self.name,
                    self.log_tails(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The name given in its spec.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The ready line it printed, if the spec asked to wait for one.
    pub fn ready_line(&self) -> Option<&str> {
        self.ready_line.as_deref()
    }

    /// The `host:port` of a ready line ending in `http://host:port`.
    pub fn http_addr(&self) -> String {
        let line = self
            .ready_line
            .as_deref()
            .unwrap_or_else(|| panic!("{} has no ready line", self.name));
        let (_, addr) = line.split_once("http://").unwrap_or_else(|| {
            panic!("{}'s ready line {line:?} has no http:// address", self.name)
        });
        addr.trim().trim_end_matches('/').to_owned()
    }

    /// Whether it has exited, and how (without blocking).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Sends SIGTERM and waits up to [`EXIT_WITHIN`] for it to exit; returns its exit status.
    /// Panics (after killing it) when it does not exit in time.
    pub async fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.try_exit() {
            return status;
        }
        self.signal("TERM");
        match self.wait_exit(EXIT_WITHIN).await {
            Some(status) => status,
            None => {
                self.kill9();
                panic!(
                    "{} did not exit within {EXIT_WITHIN:?} of SIGTERM\n{}",
                    self.name,
                    self.log_tails(60)
                );
            }
        }
    }

    /// Waits up to `within` for it to exit on its own; returns its exit status, `None` when it
    /// is still running (left running: the caller decides what that means).
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Kills it with SIGKILL and reaps it: a crash, with no chance to clean up.
    pub fn kill9(&mut self) {
        if self.try_exit().is_some() {
            return;
        }
        let _ = self.child.kill();
        self.exit = self.child.wait().ok();
    }

    /// Sends a signal by name (`TERM`, `INT`, `STOP`, `CONT`...) with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap_or_else(|e| panic!("running kill -{name}: {e}"));
        assert!(
            status.success(),
            "kill -{name} {} ({}) failed: {status}",
            self.pid(),
            self.name
        );
    }

    /// Everything it wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        format!("{out}{err}")
    }

    /// What it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The last `lines` lines of its stdout and stderr, labelled.
    pub fn log_tails(&self, lines: usize) -> String {
        format!(
            "----- {name} stdout ({out}) -----\n{}\n----- {name} stderr ({err}) -----\n{}\n",
            tail(&self.stdout(), lines),
            tail(&self.stderr(), lines),
            name = self.name,
            out = self.stdout.display(),
            err = self.stderr.display(),
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(80));
        }
    }
}

/// A stdout line's text: the line itself, or the message of a JSON line (`--log-format json`
/// writes `{"timestamp",...,"fields":{"message":"<text>"}}`), so ready lines read the same in
/// either format.
pub fn message_of(line: &str) -> String {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v["fields"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| line.to_owned())
}
