//! `NatsServer`: a real `nats-server` with JetStream on a free port and its own store
//! directory, stopped, restarted on the same port and store, or killed, killed on drop.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::process::{Proc, Spec};
use crate::scratch::Scratch;

/// How long the server may take to accept connections and answer JetStream requests.
pub const NATS_READY_WITHIN: Duration = Duration::from_secs(20);

/// The `nats-server` binary: `NATS_SERVER_BIN`, else `nats-server` on `PATH`, else
/// `/usr/sbin/nats-server`.
pub fn nats_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from("/usr/sbin/nats-server")
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("binding a free port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("reading a bound port: {e}"))
        .port()
}

/// A running `nats-server -js`.
#[derive(Debug)]
pub struct NatsServer {
    proc: Option<Proc>,
    retired: Vec<Proc>,
    port: u16,
    store_dir: PathBuf,
    log_dir: PathBuf,
    config: Option<PathBuf>,
    own_dir: Option<Scratch>,
}

impl NatsServer {
    /// Starts a server in its own temporary directory.
    pub async fn start() -> Self {
        let scratch = Scratch::new("nats");
        let mut server = Self::start_in(scratch.path()).await;
        server.own_dir = Some(scratch);
        server
    }

    /// Starts a server whose store and logs live under `dir`.
    pub async fn start_in(dir: &Path) -> Self {
        Self::launch(dir, None).await
    }

    /// Starts a server under `dir` that also reads `config` (nats-server configuration text,
    /// e.g. `authorization { ... }`). Port, address, JetStream and store come from flags.
    pub async fn with_config(dir: &Path, config: &str) -> Self {
        let path = dir.join("nats-server.conf");
        std::fs::write(&path, config).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        Self::launch(dir, Some(path)).await
    }

    async fn launch(dir: &Path, config: Option<PathBuf>) -> Self {
        let store_dir = dir.join("nats-store");
        std::fs::create_dir_all(&store_dir)
            .unwrap_or_else(|e| panic!("creating {}: {e}", store_dir.display()));
        let mut server = Self {
            proc: None,
            retired: Vec::new(),
            port: free_port(),
            store_dir,
            log_dir: dir.to_path_buf(),
            config,
            own_dir: None,
        };
        // A port found free can be taken by another test's server before this one binds it:
        // then this one exits at once, and it tries another port.
        for _ in 0..5 {
            match server.try_start().await {
                Ok(()) => return server,
                Err(why) if why.contains("address already in use") => {
                    server.stop().await;
                    server.port = free_port();
                }
                Err(why) => panic!("{why}"),
            }
        }
        panic!("nats-server found no free port in 5 attempts");
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its JetStream store directory.
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// The running process, if any.
    pub fn proc(&self) -> Option<&Proc> {
        self.proc.as_ref()
    }

    /// Stops it with SIGTERM and waits for it to exit.
    pub async fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.terminate().await;
            self.retired.push(proc);
        }
    }

    /// Kills it with SIGKILL: a crash of the broker.
    pub fn kill9(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill9();
            self.retired.push(proc);
        }
    }

    /// Starts it (again) on the same port and store directory and waits until it is ready.
    /// Stops a running one first.
    pub async fn start_again(&mut self) {
        if let Err(why) = self.try_start().await {
            panic!("{why}");
        }
    }

    async fn try_start(&mut self) -> Result<(), String> {
        self.stop().await;
        let mut args: Vec<String> = Vec::new();
        if let Some(config) = &self.config {
            args.push("-c".into());
            args.push(config.display().to_string());
        }
        args.extend([
            "-a".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            self.port.to_string(),
            "-js".to_owned(),
            "-sd".to_owned(),
            self.store_dir.display().to_string(),
        ]);
        let spec = Spec::new("nats", nats_server_bin(), &self.log_dir).args(args);
        self.proc = Some(Proc::spawn(spec).await);
        self.wait_ready().await
    }

    /// Polls until this very process says it is ready, accepts TCP, announces JetStream, and
    /// (without a config file that may require credentials) answers a JetStream account
    /// request; `Err` with its logs when it exits first or takes too long.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + NATS_READY_WITHIN;
        loop {
            let proc = self.proc.as_mut().expect("a started server");
            if let Some(status) = proc.try_exit() {
                return Err(format!(
                    "nats-server exited with {status} during start-up\n{}",
                    proc.log_tails(40)
                ));
            }
            // Another server on the same port would pass the probe: only this one's log counts.
            let own = proc.logs().contains("Server is ready");
            let last = match self.probe().await {
                Ok(()) if own => return Ok(()),
                Ok(()) => "not ready by its own log yet".to_owned(),
                Err(why) => why,
            };
            let proc = self.proc.as_mut().expect("a started server");
            if Instant::now() > deadline {
                return Err(format!(
                    "nats-server on port {} not ready within {NATS_READY_WITHIN:?}: {last}\n{}",
                    self.port,
                    proc.log_tails(40)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn probe(&self) -> Result<(), String> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .map_err(|e| format!("tcp: {e}"))?;
        let mut info = vec![0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut info))
            .await
            .map_err(|_| "no INFO line".to_owned())?
            .map_err(|e| format!("reading INFO: {e}"))?;
        let info = String::from_utf8_lossy(&info[..read]);
        if !info.contains("\"jetstream\":true") {
            return Err(format!("INFO does not announce JetStream: {info}"));
        }
        if self.config.is_some() {
            return Ok(());
        }
        jetstream_info(&self.url()).await
    }
}

/// One `$JS.API.INFO` request to the server at `url` (answered only once JetStream is up, and
/// on a cluster once it has a meta leader), within 3 s. A raw request: the typed account query
/// of the client library does not parse the answers of every server version.
pub async fn jetstream_info(url: &str) -> Result<(), String> {
    let client = async_nats::connect(url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let reply = tokio::time::timeout(
        Duration::from_secs(3),
        client.request("$JS.API.INFO", bytes::Bytes::new()),
    )
    .await
    .map_err(|_| "no JetStream account info within 3 s".to_owned())?
    .map_err(|e| format!("JetStream account info: {e}"))?;
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload)
        .map_err(|e| format!("JetStream account info is not JSON: {e}"))?;
    match reply.get("error") {
        None => Ok(()),
        Some(error) => Err(format!("JetStream account info: {error}")),
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // Processes before the directory they write to.
        self.proc.take();
        self.retired.clear();
        self.own_dir.take();
    }
}
