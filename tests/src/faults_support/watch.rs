//! Observers running in the background while a test injects faults: when each request reached
//! the mock, which worker announced which jobs, and what readers of the latest batch saw.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use newsflow_nats::subjects;
use newsflow_nats::wire::Heartbeat;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::bus::Bus;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One request that went through a [`TimingProxy`].
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    /// When the request's first bytes reached the proxy.
    pub sent: Instant,
    /// The response's status, once it came back.
    pub status: Option<u16>,
    /// When the response's status line passed through the proxy.
    pub answered: Option<Instant>,
}

/// A TCP proxy in front of the mock that timestamps every HTTP request going through it and
/// reads each response's status: exact request timing at the API, whatever the load.
#[derive(Debug)]
pub struct TimingProxy {
    addr: String,
    exchanges: Arc<Mutex<Vec<Exchange>>>,
    task: JoinHandle<()>,
}

impl TimingProxy {
    /// Listens on a free port and forwards every connection to `target` (`host:port`).
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding the timing proxy: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("reading the timing proxy's address: {e}"))
            .to_string();
        let exchanges = Arc::new(Mutex::new(Vec::new()));
        let (log, target) = (exchanges.clone(), target.to_owned());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, target.clone(), log.clone()));
            }
        });
        Self {
            addr,
            exchanges,
            task,
        }
    }

    /// `http://host:port`, what a worker gets as `--newsapi-url`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests so far, in the order they were sent.
    pub fn exchanges(&self) -> Vec<Exchange> {
        lock(&self.exchanges).clone()
    }

    /// Each request's status and the time from its answer (from the request itself when no
    /// answer came) to the next request: the client's wait, without the server's time.
    pub fn gaps(&self) -> Vec<(Option<u16>, Duration)> {
        self.exchanges()
            .windows(2)
            .map(|pair| {
                let from = pair[0].answered.unwrap_or(pair[0].sent);
                (pair[0].status, pair[1].sent.saturating_duration_since(from))
            })
            .collect()
    }
}

impl Drop for TimingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, target: String, log: Arc<Mutex<Vec<Exchange>>>) {
    let Ok(upstream) = TcpStream::connect(&target).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let pending: Arc<Mutex<VecDeque<usize>>> = Arc::default();
    let (up_log, up_pending) = (log.clone(), pending.clone());
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = client_read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if buf[..n].starts_with(b"GET ") {
                let mut log = lock(&up_log);
                lock(&up_pending).push_back(log.len());
                log.push(Exchange {
                    sent: Instant::now(),
                    status: None,
                    answered: None,
                });
            }
            if upstream_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = upstream_write.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = upstream_read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if let Some(status) = response_status(&buf[..n]) {
                if let Some(index) = lock(&pending).pop_front() {
                    if let Some(exchange) = lock(&log).get_mut(index) {
                        exchange.status = Some(status);
                        exchange.answered = Some(Instant::now());
                    }
                }
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(up, down);
}

/// The status of a chunk that starts an HTTP/1.1 response.
fn response_status(chunk: &[u8]) -> Option<u16> {
    let rest = chunk.strip_prefix(b"HTTP/1.1 ")?;
    std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()
}

/// Every heartbeat published, with when the test received it.
#[derive(Debug)]
pub struct HeartbeatLog {
    beats: Arc<Mutex<Vec<(Instant, Heartbeat)>>>,
    task: JoinHandle<()>,
}

impl HeartbeatLog {
    /// Subscribes to heartbeats (flushed, so nothing published after this is missed).
    pub async fn start(bus: &Bus) -> Self {
        let mut subscriber = bus.subscribe(subjects::HEARTBEAT).await;
        let beats = Arc::new(Mutex::new(Vec::new()));
        let sink = beats.clone();
        let task = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                if let Ok(beat) = serde_json::from_slice::<Heartbeat>(&message.payload) {
                    lock(&sink).push((Instant::now(), beat));
                }
            }
        });
        Self { beats, task }
    }

    /// Heartbeats received at or after `since`.
    pub fn since(&self, since: Instant) -> Vec<(Instant, Heartbeat)> {
        lock(&self.beats)
            .iter()
            .filter(|(at, _)| *at >= since)
            .cloned()
            .collect()
    }

    /// Waits for a heartbeat received after `since` that satisfies `pred`; returns it.
    pub async fn wait_for(
        &self,
        within: Duration,
        what: &str,
        since: Instant,
        pred: impl Fn(&Heartbeat) -> bool,
    ) -> (Instant, Heartbeat) {
        crate::poll::wait_for(within, what, || async {
            self.since(since).into_iter().find(|(_, beat)| pred(beat))
        })
        .await
    }

    /// Two workers announcing `job` at the same time since `since`: at each heartbeat, the
    /// workers whose latest heartbeat (received within `live` before it) lists the job.
    pub fn double_ownership(&self, job: &str, since: Instant, live: Duration) -> Option<String> {
        let mut latest: BTreeMap<String, (Instant, bool)> = BTreeMap::new();
        for (at, beat) in self.since(since) {
            let lists = beat.jobs.iter().flatten().any(|j| j.as_str() == job);
            latest.insert(beat.worker_id.to_string(), (at, lists));
            let owners: Vec<&String> = latest
                .iter()
                .filter(|(_, (seen, lists))| *lists && at.duration_since(*seen) < live)
                .map(|(worker, _)| worker)
                .collect();
            if owners.len() > 1 {
                return Some(format!("{owners:?} all announce {job}"));
            }
        }
        None
    }

    /// The workers whose heartbeats since `since` listed `job`.
    pub fn workers_listing(&self, job: &str, since: Instant) -> Vec<String> {
        let mut workers: Vec<String> = self
            .since(since)
            .into_iter()
            .filter(|(_, beat)| beat.jobs.iter().flatten().any(|j| j.as_str() == job))
            .map(|(_, beat)| beat.worker_id.to_string())
            .collect();
        workers.sort();
        workers.dedup();
        workers
    }
}

impl Drop for HeartbeatLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a [`BatchReader`] saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReaderFigures {
    /// Pages read with a 200.
    pub reads: u64,
    /// Pages whose article count differs from their batch's `article_count`.
    pub partial: u64,
    /// Pages mixing articles of several batches (or of another batch than the page's).
    pub mixed: u64,
    /// Pages whose batch is older than one already served for the job.
    pub regressions: u64,
    /// Requests that failed (data-streams down or restarting).
    pub unavailable: u64,
}

#[derive(Debug, Default)]
struct ReaderCounters {
    reads: AtomicU64,
    partial: AtomicU64,
    mixed: AtomicU64,
    regressions: AtomicU64,
    unavailable: AtomicU64,
}

/// Polls `GET /jobs/{id}/articles` of some jobs throughout a test and counts every page that
/// is not one whole batch. Follows data-streams to its new address after a restart.
#[derive(Debug)]
pub struct BatchReader {
    base: Arc<Mutex<String>>,
    counters: Arc<ReaderCounters>,
    problems: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl BatchReader {
    /// Starts reading `jobs` from the data-streams at `base` (`http://host:port`).
    pub fn start(base: &str, jobs: &[&str]) -> Self {
        let base = Arc::new(Mutex::new(base.to_owned()));
        let counters = Arc::new(ReaderCounters::default());
        let problems = Arc::new(Mutex::new(Vec::new()));
        let jobs: Vec<String> = jobs.iter().map(|j| (*j).to_owned()).collect();
        let task = tokio::spawn(read_loop(
            base.clone(),
            counters.clone(),
            problems.clone(),
            jobs,
        ));
        Self {
            base,
            counters,
            problems,
            task,
        }
    }

    /// Points the reader at data-streams' new address.
    pub fn follow(&self, base: &str) {
        *lock(&self.base) = base.to_owned();
    }

    /// The figures so far.
    pub fn figures(&self) -> ReaderFigures {
        let c = &self.counters;
        ReaderFigures {
            reads: c.reads.load(Ordering::Relaxed),
            partial: c.partial.load(Ordering::Relaxed),
            mixed: c.mixed.load(Ordering::Relaxed),
            regressions: c.regressions.load(Ordering::Relaxed),
            unavailable: c.unavailable.load(Ordering::Relaxed),
        }
    }

    /// The first problems seen, described.
    pub fn problems(&self) -> Vec<String> {
        lock(&self.problems).clone()
    }
}

impl Drop for BatchReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_loop(
    base: Arc<Mutex<String>>,
    counters: Arc<ReaderCounters>,
    problems: Arc<Mutex<Vec<String>>>,
    jobs: Vec<String>,
) {
    let http = reqwest::Client::new();
    let mut newest: BTreeMap<String, String> = BTreeMap::new();
    let problem = |text: String| {
        let mut problems = lock(&problems);
        if problems.len() < 20 {
            problems.push(text);
        }
    };
    loop {
        for job in &jobs {
            let url = format!("{}/jobs/{job}/articles?limit=1000", lock(&base).clone());
            let page = match http.get(&url).timeout(Duration::from_secs(10)).send().await {
                Ok(response) if response.status().is_success() => response.json::<Value>().await,
                _ => {
                    counters.unavailable.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            let Ok(page) = page else {
                counters.unavailable.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            counters.reads.fetch_add(1, Ordering::Relaxed);
            let articles = page["articles"].as_array().cloned().unwrap_or_default();
            let batch = &page["batch"];
            let Some(id) = batch["id"].as_str() else {
                if !articles.is_empty() {
                    counters.partial.fetch_add(1, Ordering::Relaxed);
                    problem(format!("{job}: articles without a batch"));
                }
                continue;
            };
            if batch["article_count"].as_u64() != Some(articles.len() as u64)
                || batch["status"] != "complete"
            {
                counters.partial.fetch_add(1, Ordering::Relaxed);
                problem(format!(
                    "{job}: batch {batch} served with {} articles",
                    articles.len()
                ));
            }
            if articles.iter().any(|a| a["batch_id"] != id) {
                counters.mixed.fetch_add(1, Ordering::Relaxed);
                problem(format!("{job}: page of batch {id} mixes other batches"));
            }
            let last = newest.entry(job.clone()).or_default();
            if id < last.as_str() {
                counters.regressions.fetch_add(1, Ordering::Relaxed);
                problem(format!("{job}: latest went back from {last} to {id}"));
            } else {
                *last = id.to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
