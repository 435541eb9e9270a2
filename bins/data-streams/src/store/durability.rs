//! Durability and stall detection.
//!
//! sled 0.34 deadlocks when several `flush_async` calls run at once (spacejam/sled#1308,
//! #1241), so nothing here ever calls it: one flusher thread performs every flush with sled's
//! synchronous `flush()`, and every writer (HTTP job writes, ingest, deletes) applies its change
//! and then awaits a flush that started after the change. Requests that arrive while a flush
//! runs are answered together by the next one: group commit for every writer. sled's own
//! periodic flusher is off; this thread also flushes once a second when nobody asked, so a
//! write that is not awaited (an owner recorded after a start ack) is durable soon after.
//!
//! [`StallWatch`] records every flush and store call in progress; the data-streams runtime
//! checks it from a plain thread (which keeps running when every async worker is stuck) and
//! turns a call older than the stall limit into a 503 and an exit.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// How often the flusher flushes when nobody asked.
const PERIODIC_FLUSH: Duration = Duration::from_secs(1);

/// A flush failed (sled's error, as text: the same error answers every waiter).
#[derive(Debug, Clone, thiserror::Error)]
#[error("flushing the sled store failed: {0}")]
pub struct FlushError(String);

type Waiter = oneshot::Sender<Result<(), FlushError>>;

enum Request {
    Flush(Waiter),
    Stop,
}

/// The handle writers use to await durability. Cloned with the store; when the last handle is
/// dropped the flusher thread flushes once more and is joined, so the database is closed (and
/// its lock released) by the time the store is gone.
#[derive(Clone)]
pub struct Flusher {
    requests: mpsc::Sender<Request>,
    _thread: Arc<Joined>,
}

struct Joined {
    stop: mpsc::Sender<Request>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Joined {
    fn drop(&mut self) {
        let _ = self.stop.send(Request::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Flusher {
    /// Starts the flusher thread for `db`. `stall_file`: a test hook that holds every flush
    /// while that file exists, to show the watchdog at work.
    pub fn start(
        db: sled::Db,
        watch: Arc<StallWatch>,
        stall_file: Option<PathBuf>,
    ) -> std::io::Result<Self> {
        // Unbounded by type, bounded in practice: each entry is one caller awaiting a flush,
        // and callers are bounded by the in-flight request limit plus the one ingest task.
        let (requests, incoming) = mpsc::channel::<Request>();
        let thread = std::thread::Builder::new()
            .name("store-flusher".to_owned())
            .spawn(move || flush_loop(db, &watch, &incoming, stall_file.as_deref()))?;
        Ok(Self {
            _thread: Arc::new(Joined {
                stop: requests.clone(),
                thread: Some(thread),
            }),
            requests,
        })
    }

    /// Resolves once every write made before this call is durable.
    pub async fn flush(&self) -> Result<(), FlushError> {
        let (done, wait) = oneshot::channel();
        self.requests
            .send(Request::Flush(done))
            .map_err(|_| FlushError("the flusher has stopped".to_owned()))?;
        wait.await
            .map_err(|_| FlushError("the flusher has stopped".to_owned()))?
    }
}

fn flush_loop(
    db: sled::Db,
    watch: &Arc<StallWatch>,
    incoming: &mpsc::Receiver<Request>,
    stall_file: Option<&std::path::Path>,
) {
    let mut stopping = false;
    while !stopping {
        let mut waiters = Vec::new();
        let first = match incoming.recv_timeout(PERIODIC_FLUSH) {
            Ok(request) => Some(request),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => Some(Request::Stop),
        };
        for request in first.into_iter().chain(incoming.try_iter()) {
            match request {
                Request::Flush(waiter) => waiters.push(waiter),
                Request::Stop => stopping = true,
            }
        }
        let what = if waiters.is_empty() {
            "periodic flush"
        } else {
            "flush"
        };
        let result = {
            let _call = watch.begin(what, waiters.len());
            if let Some(file) = stall_file {
                while file.exists() {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            db.flush().map(drop).map_err(|e| FlushError(e.to_string()))
        };
        if let Err(error) = &result {
            tracing::error!(%error, waiters = waiters.len(), "store flush failed");
        }
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}

/// The flushes and store calls in progress, with when each began.
#[derive(Default)]
pub struct StallWatch {
    calls: Mutex<HashMap<u64, Call>>,
    next: AtomicU64,
}

struct Call {
    what: &'static str,
    waiting: usize,
    since: Instant,
}

/// A call in progress; it ends when dropped.
pub struct CallGuard {
    watch: Arc<StallWatch>,
    id: u64,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.watch.calls().remove(&self.id);
    }
}

/// The oldest call in progress, as the watchdog reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// How long it has been running.
    pub running_for: Duration,
    /// What it is, and what else is in progress.
    pub description: String,
}

impl StallWatch {
    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Call>> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a call (`waiting`: how many callers it holds up) until the guard is dropped.
    pub fn begin(self: &Arc<Self>, what: &'static str, waiting: usize) -> CallGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.calls().insert(
            id,
            Call {
                what,
                waiting,
                since: Instant::now(),
            },
        );
        CallGuard {
            watch: self.clone(),
            id,
        }
    }

    /// The oldest call in progress if it has run for at least `limit`, described with
    /// everything else in progress.
    pub fn stalled(&self, limit: Duration) -> Option<Stall> {
        let calls = self.calls();
        let oldest = calls.values().min_by_key(|call| call.since)?;
        let running_for = oldest.since.elapsed();
        if running_for < limit {
            return None;
        }
        let waiting: usize = calls.values().map(|call| call.waiting.max(1)).sum();
        let mut kinds: Vec<&str> = calls.values().map(|call| call.what).collect();
        kinds.sort_unstable();
        kinds.dedup();
        Some(Stall {
            running_for,
            description: format!(
                "a store {} has been running for {} s; {} call(s) in progress ({}) holding up {} caller(s)",
                oldest.what,
                running_for.as_secs(),
                calls.len(),
                kinds.join(", "),
                waiting
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_a_stall_only_once_older_than_the_limit() {
        let watch = Arc::new(StallWatch::default());
        let call = watch.begin("flush", 3);
        assert_eq!(watch.stalled(Duration::from_secs(60)), None);
        let stall = watch
            .stalled(Duration::ZERO)
            .expect("stalled at a zero limit");
        assert!(stall.description.contains("flush"), "{stall:?}");
        assert!(stall.description.contains("holding up 3"), "{stall:?}");
        drop(call);
        assert_eq!(watch.stalled(Duration::ZERO), None);
    }

    #[tokio::test]
    async fn concurrent_writers_share_flushes_and_all_see_their_writes_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new()
            .path(dir.path())
            .flush_every_ms(None)
            .open()
            .expect("opens");
        let flusher =
            Flusher::start(db.clone(), Arc::new(StallWatch::default()), None).expect("starts");
        let writers = (0..200u32).map(|i| {
            let (db, flusher) = (db.clone(), flusher.clone());
            tokio::spawn(async move {
                db.insert(i.to_be_bytes(), &[1]).expect("inserts");
                flusher.flush().await
            })
        });
        let all = tokio::time::timeout(Duration::from_secs(20), futures::future::join_all(writers))
            .await
            .expect("200 concurrent writers never wait forever for a flush");
        for writer in all {
            writer.expect("joins").expect("flushed");
        }
        assert_eq!(db.len(), 200);
    }

    #[test]
    fn a_held_flush_is_seen_by_the_watch_until_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hold = dir.path().join("hold");
        std::fs::write(&hold, b"").expect("writes");
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .expect("opens");
        let watch = Arc::new(StallWatch::default());
        let flusher = Flusher::start(db, watch.clone(), Some(hold.clone())).expect("starts");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let waiting = std::thread::spawn(move || runtime.block_on(flusher.flush()));
        let deadline = Instant::now() + Duration::from_secs(5);
        while watch.stalled(Duration::from_millis(100)).is_none() {
            assert!(Instant::now() < deadline, "the held flush was never seen");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::remove_file(&hold).expect("removes");
        waiting
            .join()
            .expect("joins")
            .expect("flushed once released");
    }
}
