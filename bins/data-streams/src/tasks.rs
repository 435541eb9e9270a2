//! Every background task data-streams runs has an owner: it is spawned on one tracker, joined
//! at shutdown, and watched. A task that panics, fails, or ends while the process is not
//! shutting down is logged with its name, recorded for `/readyz`, and stops the process, which
//! then exits non-zero: better restarted by a supervisor than serving stale data for ever.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::state::Shared;

/// Spawns and watches the background tasks.
#[derive(Clone)]
pub struct Supervisor {
    tracker: TaskTracker,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

impl Supervisor {
    /// Watches tasks that share `shared` and stop on `shutdown`.
    pub fn new(shared: Arc<Shared>, shutdown: CancellationToken) -> Self {
        Self {
            tracker: TaskTracker::new(),
            shared,
            shutdown,
        }
    }

    /// Runs `task` as the background task `name` until it ends, which it must only do at
    /// shutdown.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (shared, shutdown) = (self.shared.clone(), self.shutdown.clone());
        self.tracker.spawn(async move {
            let outcome = AssertUnwindSafe(task).catch_unwind().await;
            let Some(reason) = failure(name, outcome, shutdown.is_cancelled()) else {
                return;
            };
            tracing::error!(task = name, %reason, "a background task died; data-streams stops");
            let _ = shared.dead_task.set(reason);
            shutdown.cancel();
        });
    }

    /// Waits (at most `within`) for every task to end; `false` when some did not.
    pub async fn wait(&self, within: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(within, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// What a task's end means: nothing at shutdown, a death otherwise.
fn failure(
    name: &str,
    outcome: Result<anyhow::Result<()>, Box<dyn Any + Send>>,
    shutting_down: bool,
) -> Option<String> {
    match outcome {
        Ok(Ok(())) if shutting_down => None,
        Ok(Ok(())) => Some(format!("the {name} task ended before shutdown")),
        Ok(Err(error)) => Some(format!("the {name} task failed: {error:#}")),
        Err(panic) => Some(format!("the {name} task panicked: {}", panic_text(&*panic))),
    }
}

fn panic_text(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(dir: &std::path::Path) -> Arc<Shared> {
        let (ingest, _) = tokio::sync::mpsc::channel(1);
        Arc::new(Shared::new(
            crate::store::Store::open(dir).expect("opens"),
            ingest,
            crate::state::SharedSettings {
                api_token: None,
                max_body_bytes: 1024,
                max_in_flight: 1,
                default_keep_batches: newsflow_core::KeepBatches::DEFAULT,
                max_sse_clients: 4,
            },
        ))
    }

    #[tokio::test]
    async fn a_panicking_task_is_recorded_and_stops_the_process_and_its_siblings_are_joined() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shared = shared(dir.path());
        let shutdown = CancellationToken::new();
        let supervisor = Supervisor::new(shared.clone(), shutdown.clone());
        let sibling = shutdown.clone();
        supervisor.spawn("reconciler", async move {
            sibling.cancelled().await;
            Ok(())
        });
        supervisor.spawn("heartbeats", async {
            if shared_is_broken() {
                panic!("heartbeat state is broken");
            }
            Ok(())
        });
        tokio::time::timeout(Duration::from_secs(5), shutdown.cancelled())
            .await
            .expect("the death cancels the shutdown token");
        assert!(
            supervisor.wait(Duration::from_secs(5)).await,
            "every task joined"
        );
        assert_eq!(
            shared.dead_task.get().map(String::as_str),
            Some("the heartbeats task panicked: heartbeat state is broken")
        );
    }

    fn shared_is_broken() -> bool {
        true
    }

    #[test]
    fn a_task_ending_at_shutdown_is_fine_and_any_other_end_is_a_death() {
        assert_eq!(failure("reconciler", Ok(Ok(())), true), None);
        assert_eq!(
            failure("reconciler", Ok(Ok(())), false).as_deref(),
            Some("the reconciler task ended before shutdown")
        );
        let failed = failure("ingest", Ok(Err(anyhow::anyhow!("disk gone"))), true);
        assert_eq!(failed.as_deref(), Some("the ingest task failed: disk gone"));
        let panicked = failure("heartbeats", Err(Box::new("index out of bounds")), false);
        assert_eq!(
            panicked.as_deref(),
            Some("the heartbeats task panicked: index out of bounds")
        );
        let owned = failure("heartbeats", Err(Box::new(String::from("boom"))), false);
        assert_eq!(owned.as_deref(), Some("the heartbeats task panicked: boom"));
    }
}
