//! `Storm`: rounds of concurrent writes (creates from a pool of ids, start/stop of one job)
//! and reads against data-streams, run in the background through kill cycles. Each request
//! is answered (any HTTP status), refused (data-streams down: the connection fails at once) or
//! unanswered (no answer within the client's timeout: what a frozen store looks like).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use serde_json::json;

/// Requests per kind in one round.
const PER_ROUND: usize = 20;
/// Distinct job ids the creates cycle through (201 the first time, 409 after).
const ID_POOL: usize = 100;
/// Longer than any answer data-streams should ever take.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

/// The storm's counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StormFigures {
    /// Requests sent.
    pub sent: u64,
    /// Answered with any HTTP status.
    pub answered: u64,
    /// The connection failed (data-streams was down).
    pub refused: u64,
    /// No answer within the timeout.
    pub unanswered: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    answered: AtomicU64,
    refused: AtomicU64,
    unanswered: AtomicU64,
}

/// A storm running in the background until stopped.
pub struct Storm {
    base: Arc<Mutex<String>>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Storm {
    /// Starts the storm against `base` (`http://host:port`); `toggled` is the job it starts
    /// and stops (it must exist).
    pub fn start(base: &str, toggled: &str) -> Self {
        let base = Arc::new(Mutex::new(base.to_owned()));
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(
            base.clone(),
            counters.clone(),
            stop.clone(),
            toggled.to_owned(),
        ));
        Self {
            base,
            counters,
            stop,
            task,
        }
    }

    /// Points the storm at data-streams' new address.
    pub fn follow(&self, base: &str) {
        *self.base.lock().unwrap_or_else(|e| e.into_inner()) = base.to_owned();
    }

    /// The counts so far.
    pub fn figures(&self) -> StormFigures {
        let c = &self.counters;
        StormFigures {
            sent: c.sent.load(Ordering::Relaxed),
            answered: c.answered.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            unanswered: c.unanswered.load(Ordering::Relaxed),
        }
    }

    /// Stops after the round in hand and returns the counts.
    pub async fn stop(mut self) -> StormFigures {
        self.stop.store(true, Ordering::Relaxed);
        let _ = (&mut self.task).await;
        self.figures()
    }
}

async fn run(
    base: Arc<Mutex<String>>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    toggled: String,
) {
    let http = reqwest::Client::builder()
        .timeout(ANSWER_WITHIN)
        .build()
        .unwrap_or_else(|e| panic!("building an HTTP client: {e}"));
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let base = base.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let requests = (0..PER_ROUND).flat_map(|i| {
            let id = format!("storm-{}", (round * PER_ROUND + i) % ID_POOL);
            let create = http
                .post(format!("{base}/jobs"))
                .json(&json!({"id": id, "params": {"q": "storm"}, "interval_secs": 86400, "page_size": 1, "keep_batches": 1000}));
            let action = if i % 2 == 0 { "stop" } else { "start" };
            let toggle = http.post(format!("{base}/jobs/{toggled}/{action}"));
            let read = http.get(format!("{base}/jobs?limit=20"));
            [create, toggle, read]
        });
        let answers = join_all(requests.map(|request| {
            let counters = counters.clone();
            async move {
                counters.sent.fetch_add(1, Ordering::Relaxed);
                let counter = match request.send().await {
                    Ok(_) => &counters.answered,
                    Err(error) if error.is_timeout() => &counters.unanswered,
                    Err(_) => &counters.refused,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
        answers.await;
        round += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
