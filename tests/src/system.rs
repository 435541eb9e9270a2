//! `System`: a whole newsflow (nats-server, the NewsAPI mock, data-streams and workers) with
//! fast timings for tests, and helpers to stop, kill and restart each part on the same stores.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use crate::api::Api;
use crate::bins::{program_spec, Program};
use crate::bus::Bus;
use crate::mock::{MockClient, DEMO_KEY};
use crate::nats_cluster::NatsCluster;
use crate::nats_server::NatsServer;
use crate::process::{Proc, Spec};
use crate::scratch::Scratch;

/// How long data-streams may take to answer `GET /readyz` with 200 after starting.
pub const DS_READY_WITHIN: Duration = Duration::from_secs(30);

/// Worker flags that make tests fast: frequent heartbeats and short retry waits.
pub const FAST_WORKER_ARGS: [&str; 6] = [
    "--heartbeat-ms",
    "300",
    "--retry-base-ms",
    "50",
    "--retry-max-ms",
    "500",
];
/// data-streams flags that make tests fast: quick worker-loss detection and reconciliation.
pub const FAST_DS_ARGS: [&str; 4] = ["--worker-timeout-ms", "1200", "--reconcile-ms", "200"];

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct SystemBuilder {
    label: Option<String>,
    workers: usize,
    no_data_streams: bool,
    mock_args: Vec<String>,
    ds_args: Vec<String>,
    worker_args: Vec<String>,
    api_token: Option<String>,
    nats_config: Option<String>,
    cluster: bool,
}

impl SystemBuilder {
    /// Names the temporary directory (default: the test's thread name).
    pub fn label(mut self, label: &str) -> Self {
        self.label = Some(label.to_owned());
        self
    }

    /// Starts `n` workers (ids `worker-1`..`worker-n`); 0 by default.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Does not start data-streams (start it later with [`System::start_data_streams`]).
    pub fn without_data_streams(mut self) -> Self {
        self.no_data_streams = true;
        self
    }

    /// Adds flags to the mock (`--latency-ms 300`, `--fault rate_limited:2`...).
    pub fn mock_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.mock_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds flags to every start of data-streams.
    pub fn data_streams_args<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        args: I,
    ) -> Self {
        self.ds_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds flags to every worker started.
    pub fn worker_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.worker_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Starts data-streams with `--api-token token`; [`System::api`] then sends it.
    pub fn api_token(mut self, token: &str) -> Self {
        self.api_token = Some(token.to_owned());
        self
    }

    /// Gives nats-server this configuration text (auth tests). Processes get no NATS
    /// credentials from the harness: pass them with `data_streams_args`/`worker_args`.
    pub fn nats_config(mut self, config: &str) -> Self {
        self.nats_config = Some(config.to_owned());
        self
    }

    /// Runs on a 3-node nats-server cluster instead of one server: every program is given all
    /// three URLs and `--stream-replicas 3`.
    pub fn cluster(mut self) -> Self {
        self.cluster = true;
        for args in [&mut self.ds_args, &mut self.worker_args] {
            args.extend(["--stream-replicas".to_owned(), "3".to_owned()]);
        }
        self
    }

    /// Starts everything and waits until each part is ready.
    pub async fn start(self) -> System {
        let label = self.label.clone().unwrap_or_else(|| {
            std::thread::current()
                .name()
                .map(|name| name.rsplit("::").next().unwrap_or(name).to_owned())
                .unwrap_or_else(|| "system".to_owned())
        });
        let dir = Scratch::new(&label);
        let (nats, cluster) = match (&self.nats_config, self.cluster) {
            (_, true) => (None, Some(NatsCluster::start_in(dir.path()).await)),
            (Some(config), false) => (
                Some(NatsServer::with_config(dir.path(), config).await),
                None,
            ),
            (None, false) => (Some(NatsServer::start_in(dir.path()).await), None),
        };
        let data_dir = dir.subdir("data-streams");
        let mut system = System {
            workers: Vec::new(),
            data_streams: None,
            replicas: Vec::new(),
            mock: None,
            retired: Vec::new(),
            nats,
            cluster,
            mock_addr: "127.0.0.1:0".to_owned(),
            data_dir,
            builder: self,
            next_worker: 0,
            dir: Some(dir),
        };
        system.start_mock().await;
        if !system.builder.no_data_streams {
            system.start_data_streams().await;
        }
        for _ in 0..system.builder.workers {
            system.start_worker().await;
        }
        system
    }
}

#[derive(Debug)]
struct WorkerSlot {
    id: String,
    proc: Option<Proc>,
}

/// A running newsflow. Everything is killed when it is dropped; when the test is failing,
/// every process's log tail is printed and the temporary directory is kept.
#[derive(Debug)]
pub struct System {
    workers: Vec<WorkerSlot>,
    data_streams: Option<Proc>,
    replicas: Vec<WorkerSlot>,
    mock: Option<Proc>,
    retired: Vec<Proc>,
    nats: Option<NatsServer>,
    cluster: Option<NatsCluster>,
    mock_addr: String,
    data_dir: PathBuf,
    builder: SystemBuilder,
    next_worker: usize,
    dir: Option<Scratch>,
}

impl System {
    /// What to start.
    pub fn builder() -> SystemBuilder {
        SystemBuilder::default()
    }

    /// The test's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the directory lives as long as the system")
            .path()
    }

    /// data-streams' `--data-dir`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The broker (of a system started without [`SystemBuilder::cluster`]).
    pub fn nats(&mut self) -> &mut NatsServer {
        self.nats
            .as_mut()
            .expect("a system on one broker (this one runs on a cluster)")
    }

    /// The cluster (of a system started with [`SystemBuilder::cluster`]).
    pub fn cluster(&mut self) -> &mut NatsCluster {
        self.cluster
            .as_mut()
            .expect("a system on a cluster (this one runs on one broker)")
    }

    /// `nats://127.0.0.1:<port>`, or every node's URL, comma-separated, on a cluster.
    pub fn nats_url(&self) -> String {
        match (&self.nats, &self.cluster) {
            (_, Some(cluster)) => cluster.urls(),
            (Some(nats), None) => nats.url(),
            (None, None) => unreachable!("a system has a broker or a cluster"),
        }
    }

    /// A fresh NATS connection of the test's own.
    pub async fn bus(&self) -> Bus {
        Bus::connect(&self.nats_url()).await
    }

    /// A client of the running data-streams (with the API token, when one is set).
    pub fn api(&self) -> Api {
        let api = Api::new(&self.data_streams().http_addr());
        match &self.builder.api_token {
            Some(token) => api.with_token(token.clone()),
            None => api,
        }
    }

    /// The running data-streams process.
    pub fn data_streams(&self) -> &Proc {
        self.data_streams
            .as_ref()
            .expect("data-streams is not running")
    }

    /// The running data-streams process, mutably (to signal it or read its exit).
    pub fn data_streams_mut(&mut self) -> &mut Proc {
        self.data_streams
            .as_mut()
            .expect("data-streams is not running")
    }

    /// Starts data-streams on the data dir with the builder's flags and waits for
    /// `GET /readyz` = 200.
    pub async fn start_data_streams(&mut self) {
        self.start_data_streams_with(&[]).await;
    }

    /// Like [`System::start_data_streams`], with extra flags for this start (`--rebuild`).
    pub async fn start_data_streams_with(&mut self, extra: &[&str]) {
        assert!(
            self.data_streams.is_none(),
            "data-streams is already running"
        );
        let spec = self.data_streams_spec("data-streams", &self.data_dir, extra);
        self.data_streams = Some(Proc::spawn(spec).await);
        self.api().wait_ready(DS_READY_WITHIN).await;
    }

    fn data_streams_spec(&self, name: &str, data_dir: &Path, extra: &[&str]) -> Spec {
        let mut args: Vec<String> = vec![
            "--http-addr".into(),
            "127.0.0.1:0".into(),
            "--nats-url".into(),
            self.nats_url(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        args.extend(FAST_DS_ARGS.iter().map(|s| (*s).to_owned()));
        if let Some(token) = &self.builder.api_token {
            args.extend(["--api-token".to_owned(), token.clone()]);
        }
        args.extend(self.builder.ds_args.iter().cloned());
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        self.spec(Program::DataStreams, name, args)
            .ready_when("data-streams listening on http://")
    }

    /// Starts (or restarts) a second data-streams named `name` on the same broker, as a read
    /// replica: its own data dir (`<dir>/<name>`) and durable consumer (`--consumer-name
    /// <name>`), the builder's flags and `extra`; waits for `GET /readyz` = 200.
    pub async fn start_replica(&mut self, name: &str, extra: &[&str]) {
        if let Some(slot) = self.replicas.iter().find(|slot| slot.id == name) {
            assert!(slot.proc.is_none(), "replica {name} is already running");
        }
        let data_dir = self.dir().join(name);
        let mut args = vec!["--consumer-name", name];
        args.extend_from_slice(extra);
        let spec = self.data_streams_spec(name, &data_dir, &args);
        let proc = Proc::spawn(spec).await;
        let api = self.api_at(&proc.http_addr());
        match self.replicas.iter_mut().find(|slot| slot.id == name) {
            Some(slot) => slot.proc = Some(proc),
            None => self.replicas.push(WorkerSlot {
                id: name.to_owned(),
                proc: Some(proc),
            }),
        }
        api.wait_ready(DS_READY_WITHIN).await;
    }

    /// A client of the replica `name` (with the API token, when one is set).
    pub fn replica_api(&self, name: &str) -> Api {
        let proc = self
            .replicas
            .iter()
            .find(|slot| slot.id == name)
            .and_then(|slot| slot.proc.as_ref())
            .unwrap_or_else(|| panic!("replica {name} is not running"));
        self.api_at(&proc.http_addr())
    }

    /// Kills the replica `name` with SIGKILL.
    pub fn kill_replica(&mut self, name: &str) {
        let mut proc = self
            .replicas
            .iter_mut()
            .find(|slot| slot.id == name)
            .and_then(|slot| slot.proc.take())
            .unwrap_or_else(|| panic!("replica {name} is not running"));
        proc.kill9();
        self.retired.push(proc);
    }

    fn api_at(&self, addr: &str) -> Api {
        let api = Api::new(addr);
        match &self.builder.api_token {
            Some(token) => api.with_token(token.clone()),
            None => api,
        }
    }

    /// Sends SIGTERM to data-streams and returns its exit status.
    pub async fn terminate_data_streams(&mut self) -> ExitStatus {
        let mut proc = self
            .data_streams
            .take()
            .expect("data-streams is not running");
        let status = proc.terminate().await;
        self.retired.push(proc);
        status
    }

    /// Kills data-streams with SIGKILL.
    pub fn kill_data_streams(&mut self) {
        let mut proc = self
            .data_streams
            .take()
            .expect("data-streams is not running");
        proc.kill9();
        self.retired.push(proc);
    }

    /// SIGTERM, assert exit 0, start again on the same data dir.
    pub async fn restart_data_streams(&mut self) {
        let status = self.terminate_data_streams().await;
        assert!(
            status.success(),
            "data-streams exited with {status} on SIGTERM"
        );
        self.start_data_streams().await;
    }

    /// Starts a worker with the next id `worker-<n>`; returns its id once it is ready.
    pub async fn start_worker(&mut self) -> String {
        self.next_worker += 1;
        let id = format!("worker-{}", self.next_worker);
        self.start_worker_with(&id, &[]).await;
        id
    }

    /// Starts (or restarts) the worker `id` with extra flags and waits for
    /// `worker ready id=<id>`.
    pub async fn start_worker_with(&mut self, id: &str, extra: &[&str]) {
        if let Some(slot) = self.workers.iter().find(|slot| slot.id == id) {
            assert!(slot.proc.is_none(), "worker {id} is already running");
        }
        let mut args: Vec<String> = vec![
            "--nats-url".into(),
            self.nats_url(),
            "--newsapi-url".into(),
            format!("http://{}", self.mock_addr),
            "--newsapi-key".into(),
            DEMO_KEY.into(),
            "--worker-id".into(),
            id.into(),
        ];
        args.extend(FAST_WORKER_ARGS.iter().map(|s| (*s).to_owned()));
        args.extend(self.builder.worker_args.iter().cloned());
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let spec = self
            .spec(Program::Worker, id, args)
            .ready_when(format!("worker ready id={id}"));
        let proc = Proc::spawn(spec).await;
        match self.workers.iter_mut().find(|slot| slot.id == id) {
            Some(slot) => slot.proc = Some(proc),
            None => self.workers.push(WorkerSlot {
                id: id.to_owned(),
                proc: Some(proc),
            }),
        }
    }

    /// Restarts worker `id` with the same id (it must not be running).
    pub async fn restart_worker(&mut self, id: &str) {
        self.start_worker_with(id, &[]).await;
    }

    /// The ids of the running workers, in start order.
    pub fn worker_ids(&self) -> Vec<String> {
        self.workers
            .iter()
            .filter(|slot| slot.proc.is_some())
            .map(|slot| slot.id.clone())
            .collect()
    }

    /// The running worker `id`.
    pub fn worker(&mut self, id: &str) -> &mut Proc {
        self.workers
            .iter_mut()
            .find(|slot| slot.id == id)
            .and_then(|slot| slot.proc.as_mut())
            .unwrap_or_else(|| panic!("worker {id} is not running"))
    }

    fn take_worker(&mut self, id: &str) -> Proc {
        self.workers
            .iter_mut()
            .find(|slot| slot.id == id)
            .and_then(|slot| slot.proc.take())
            .unwrap_or_else(|| panic!("worker {id} is not running"))
    }

    /// Sends SIGTERM to worker `id` and returns its exit status.
    pub async fn terminate_worker(&mut self, id: &str) -> ExitStatus {
        let mut proc = self.take_worker(id);
        let status = proc.terminate().await;
        self.retired.push(proc);
        status
    }

    /// Kills worker `id` with SIGKILL.
    pub fn kill_worker(&mut self, id: &str) {
        let mut proc = self.take_worker(id);
        proc.kill9();
        self.retired.push(proc);
    }

    /// A client of the mock (direct NewsAPI requests and `/__mock/*` control).
    pub fn mock(&self) -> MockClient {
        MockClient::new(&self.mock_addr)
    }

    /// The mock's process.
    pub fn mock_proc(&mut self) -> &mut Proc {
        self.mock.as_mut().expect("the mock is not running")
    }

    /// Starts the mock (on port 0 the first time, on the same address afterwards).
    pub async fn start_mock(&mut self) {
        assert!(self.mock.is_none(), "the mock is already running");
        let mut args = vec!["--addr".to_owned(), self.mock_addr.clone()];
        args.extend(self.builder.mock_args.iter().cloned());
        let spec = self
            .spec(Program::NewsapiMock, "newsapi-mock", args)
            .ready_when("newsapi-mock listening on http://");
        let proc = Proc::spawn(spec).await;
        self.mock_addr = proc.http_addr();
        self.mock = Some(proc);
    }

    /// Stops the mock with SIGTERM (workers then see connection errors).
    pub async fn stop_mock(&mut self) -> ExitStatus {
        let mut proc = self.mock.take().expect("the mock is not running");
        let status = proc.terminate().await;
        self.retired.push(proc);
        status
    }

    fn spec(&self, program: Program, name: &str, args: Vec<String>) -> Spec {
        program_spec(program, name, self.dir()).args(args)
    }

    /// Every process's log tail (also printed automatically when a test fails).
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        let procs = self
            .workers
            .iter()
            .filter_map(|slot| slot.proc.as_ref())
            .chain(self.data_streams.as_ref())
            .chain(self.replicas.iter().filter_map(|slot| slot.proc.as_ref()))
            .chain(self.mock.as_ref())
            .chain(self.retired.iter());
        for proc in procs {
            out.push_str(&proc.log_tails(lines));
        }
        out
    }
}

impl Drop for System {
    fn drop(&mut self) {
        // Workers first (so they do not log a flood of errors), the broker next to last, the
        // directory everything writes to last.
        for slot in &mut self.workers {
            slot.proc.take();
        }
        self.data_streams.take();
        for slot in &mut self.replicas {
            slot.proc.take();
        }
        self.mock.take();
        self.retired.clear();
        self.nats.take();
        self.cluster.take();
        self.dir.take();
    }
}
