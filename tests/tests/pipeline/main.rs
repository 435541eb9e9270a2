//! Pipelines (issue 12): what a job's stages and the cleaning before them do to what
//! subscribers see, against real processes: the served articles and the stream obey a filter;
//! enrich and fields shape what a NATS subscriber receives; NewsAPI's placeholders and HTML
//! entities never reach anyone; dedupe memory survives a worker's kill -9, a move to another
//! worker and a data-streams restart; each invalid stage is a 422 naming it.

use std::time::Duration;

use newsflow_tests::serde_json::Value;
use newsflow_tests::Api;

mod cleaning;
mod dedupe;
mod edits;
mod refusals;
mod stages;

/// Long enough for a batch on a loaded 2-core machine.
const WITHIN: Duration = Duration::from_secs(40);

/// The served articles of the job's latest complete batch, and that batch.
async fn latest_batch(api: &Api, job: &str) -> (Value, Vec<Value>) {
    let page = api.wait_for_latest(job, None, WITHIN).await;
    let batch = page["batch"].clone();
    let id = batch["id"].as_str().expect("batch id").to_owned();
    let articles = api.batch_articles(job, &id, 100).await;
    (batch, articles)
}

/// The `GET /jobs/{id}/batches` entry of batch `id`.
async fn batch_entry(api: &Api, job: &str, id: &str) -> Value {
    api.batches(job)
        .await
        .into_iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("batch {id} of {job} is not listed"))
}

/// The lower-cased words of `text`, as the filter stage reads them.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}
