//! The Jepsen-style check: every article the stream acknowledged (and every one a test's own
//! publisher saw acknowledged) against what data-streams serves, batch by batch, as sets.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use newsflow_core::{ArticleMessage, BatchMarker, MarkerStatus};
use newsflow_nats::subjects::{self, DataKind};
use serde_json::Value;

use super::ledger::{BatchKey, Ledger};
use super::stream::read_stream;
use crate::api::Api;
use crate::bus::Bus;
use crate::contract::id_of;

/// What the audit found. Each list holds one line per problem.
#[derive(Debug, Default, Clone)]
pub struct Audit {
    /// Distinct article messages the stream holds: every one was acknowledged by the server.
    pub acknowledged: usize,
    /// Batches with a `complete` marker, checked article by article.
    pub complete_batches: usize,
    /// Batches without a marker (abandoned or in progress), checked by stored count.
    pub markerless_batches: usize,
    /// Acknowledged articles missing from data-streams (or from the stream itself).
    pub lost: Vec<String>,
    /// Articles served twice, or stored twice in the stream under one `Nats-Msg-Id`.
    pub duplicated: Vec<String>,
    /// Articles served that were never acknowledged.
    pub phantom: Vec<String>,
}

impl Audit {
    /// Lost articles.
    pub fn lost_count(&self) -> usize {
        self.lost.len()
    }

    /// Duplicated articles.
    pub fn duplicated_count(&self) -> usize {
        self.duplicated.len()
    }

    /// Panics, listing the first problems, unless nothing was lost, duplicated or invented.
    pub fn assert_exactly_once(&self) {
        assert!(
            self.lost.is_empty() && self.duplicated.is_empty() && self.phantom.is_empty(),
            "not exactly once: {self}"
        );
    }
}

impl fmt::Display for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} acknowledged articles in {} complete and {} markerless batches: {} lost, {} duplicated, {} phantom",
            self.acknowledged,
            self.complete_batches,
            self.markerless_batches,
            self.lost.len(),
            self.duplicated.len(),
            self.phantom.len()
        )?;
        for (what, list) in [
            ("lost", &self.lost),
            ("duplicated", &self.duplicated),
            ("phantom", &self.phantom),
        ] {
            for line in list.iter().take(10) {
                write!(f, "\n  {what}: {line}")?;
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct StreamBatch {
    articles: BTreeMap<u32, String>,
    marker: Option<BatchMarker>,
}

/// Reads the whole stream and compares it (and `ledger`, when given) with what data-streams
/// serves. Call it once data-streams has consumed the whole stream.
pub async fn audit(api: &Api, bus: &Bus, ledger: Option<&Ledger>) -> Audit {
    let mut report = Audit::default();
    let mut batches: BTreeMap<BatchKey, StreamBatch> = BTreeMap::new();
    let mut msg_ids: BTreeMap<String, u64> = BTreeMap::new();
    for record in read_stream(bus).await {
        let Some(data) = subjects::parse_data(&record.subject) else {
            continue;
        };
        if let Some(id) = &record.msg_id {
            if let Some(first) = msg_ids.insert(id.clone(), record.seq) {
                report.duplicated.push(format!(
                    "Nats-Msg-Id {id} stored twice in the stream (#{first} and #{})",
                    record.seq
                ));
            }
        }
        let key = (data.job.to_string(), data.batch.to_string());
        match data.kind {
            DataKind::Article => {
                if let Ok(message) = serde_json::from_slice::<ArticleMessage>(&record.payload) {
                    let id = message.article.id.as_str().to_owned();
                    batches
                        .entry(key)
                        .or_default()
                        .articles
                        .insert(message.seq, id);
                }
            }
            DataKind::Marker => {
                if let Ok(marker) = serde_json::from_slice::<BatchMarker>(&record.payload) {
                    batches.entry(key).or_default().marker = Some(marker);
                }
            }
        }
    }
    if let Some(ledger) = ledger {
        for (key, acked) in ledger.articles() {
            let in_stream = batches.get(&key).map(|b| &b.articles);
            for (seq, id) in acked {
                if in_stream.and_then(|a| a.get(&seq)) != Some(&id) {
                    report.lost.push(format!(
                        "{}/{} seq {seq}: acknowledged to the publisher, not in the stream",
                        key.0, key.1
                    ));
                }
            }
        }
    }
    let mut listed: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for ((job, batch), stream_batch) in &batches {
        report.acknowledged += stream_batch.articles.len();
        if !listed.contains_key(job) {
            let (status, body) = api.get(&format!("/jobs/{job}/batches?limit=1000")).await;
            let by_id = if status.is_success() {
                body["batches"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| (id_of(b), b.clone()))
                    .collect()
            } else {
                BTreeMap::new()
            };
            listed.insert(job.clone(), by_id);
        }
        let view = listed.get(job).and_then(|by_id| by_id.get(batch));
        check_batch(api, job, batch, stream_batch, view, &mut report).await;
    }
    report
}

async fn check_batch(
    api: &Api,
    job: &str,
    batch: &str,
    stream_batch: &StreamBatch,
    view: Option<&Value>,
    report: &mut Audit,
) {
    let acked: BTreeSet<&String> = stream_batch.articles.values().collect();
    let Some(view) = view else {
        if !acked.is_empty() {
            report.lost.push(format!(
                "{job}/{batch}: {} acknowledged articles, batch unknown to data-streams",
                acked.len()
            ));
        }
        return;
    };
    match &stream_batch.marker {
        Some(marker) if marker.status == MarkerStatus::Complete => {
            report.complete_batches += 1;
            if view["status"] != "complete" {
                report.lost.push(format!(
                    "{job}/{batch}: complete in the stream, {} in data-streams: {view}",
                    view["status"]
                ));
                return;
            }
            let served = api.batch_articles(job, batch, 1000).await;
            let mut unique = BTreeSet::new();
            for article in &served {
                let id = id_of(article);
                if article["batch_id"] != batch {
                    report
                        .phantom
                        .push(format!("{job}/{batch}: serves {id} of another batch"));
                }
                if !unique.insert(id.clone()) {
                    report
                        .duplicated
                        .push(format!("{job}/{batch}: article {id} served twice"));
                }
            }
            for id in &acked {
                if !unique.contains(*id) {
                    report.lost.push(format!(
                        "{job}/{batch}: acknowledged article {id} not served"
                    ));
                }
            }
            for id in &unique {
                if !acked.contains(id) {
                    report
                        .phantom
                        .push(format!("{job}/{batch}: serves {id}, never acknowledged"));
                }
            }
        }
        Some(_) => {}
        None => {
            report.markerless_batches += 1;
            let stored = view["article_count"].as_u64().unwrap_or(0) as usize;
            if stored < acked.len() {
                report.lost.push(format!(
                    "{job}/{batch} (no marker): {} acknowledged articles, {stored} stored",
                    acked.len()
                ));
            }
        }
    }
}
