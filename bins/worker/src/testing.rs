//! Test doubles of the two seams of a run: where pages come from and where batches go.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use newsflow_core::newsapi::{FetchError, PageOutcome};
use newsflow_core::pipeline::Memory;
use newsflow_core::{ArticleMessage, BatchMarker, JobId};
use newsflow_nats::publish::{Outgoing, PublishError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::run::{PageRequest, PageSource, Publisher};

/// Answers fetches from a script; once the script is used up, hangs (and says so).
#[derive(Default)]
pub struct ScriptedSource {
    script: Mutex<VecDeque<Result<PageOutcome, FetchError>>>,
    pub asked: Mutex<Vec<u32>>,
    pub hanging: Notify,
}

impl ScriptedSource {
    pub fn new(script: impl IntoIterator<Item = Result<PageOutcome, FetchError>>) -> Self {
        Self {
            script: Mutex::new(script.into_iter().collect()),
            ..Self::default()
        }
    }

    pub fn pages_asked(&self) -> Vec<u32> {
        self.asked.lock().expect("not poisoned").clone()
    }
}

impl PageSource for ScriptedSource {
    async fn fetch(&self, request: PageRequest<'_>) -> Result<PageOutcome, FetchError> {
        let page = request.page;
        self.asked.lock().expect("not poisoned").push(page);
        let next = self.script.lock().expect("not poisoned").pop_front();
        match next {
            Some(answer) => {
                // A refusal of the budget stands for a request that was never sent.
                if !answer.as_ref().is_err_and(FetchError::is_budget) {
                    request
                        .sent
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                answer
            }
            None => {
                self.hanging.notify_one();
                std::future::pending().await
            }
        }
    }
}

/// Records what is published and keeps dedupe memory in memory; can be told to give up on
/// pages.
#[derive(Default)]
pub struct Recorder {
    pub sent_articles: Mutex<Vec<Outgoing>>,
    pub sent_markers: Mutex<Vec<Outgoing>>,
    pub give_up_on_pages: bool,
    pub memory: Mutex<HashMap<JobId, Memory>>,
}

impl Recorder {
    pub fn articles(&self) -> Vec<ArticleMessage> {
        self.sent_articles
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|m| serde_json::from_slice(&m.payload).expect("article JSON"))
            .collect()
    }

    pub fn markers(&self) -> Vec<(BatchMarker, Outgoing)> {
        self.sent_markers
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|m| {
                (
                    serde_json::from_slice(&m.payload).expect("marker JSON"),
                    m.clone(),
                )
            })
            .collect()
    }
}

impl Publisher for Recorder {
    async fn publish_page(
        &self,
        messages: &[Outgoing],
        _cancel: &CancellationToken,
    ) -> Result<(), PublishError> {
        if self.give_up_on_pages {
            return Err(PublishError::GaveUp {
                msg_id: messages[0].msg_id.clone(),
                elapsed: Duration::from_secs(120),
                last: "no responders".to_owned(),
            });
        }
        self.sent_articles
            .lock()
            .expect("not poisoned")
            .extend_from_slice(messages);
        Ok(())
    }

    async fn publish_marker(
        &self,
        marker: &Outgoing,
        _cancel: &CancellationToken,
    ) -> Result<(), PublishError> {
        self.sent_markers
            .lock()
            .expect("not poisoned")
            .push(marker.clone());
        Ok(())
    }

    async fn recall(&self, job: &JobId) -> Result<Memory, PublishError> {
        let memory = self.memory.lock().expect("not poisoned");
        Ok(memory.get(job).cloned().unwrap_or_default())
    }

    async fn remember(&self, job: &JobId, memory: &Memory) -> Result<(), PublishError> {
        let mut memories = self.memory.lock().expect("not poisoned");
        memories.insert(job.clone(), memory.clone());
        Ok(())
    }
}
