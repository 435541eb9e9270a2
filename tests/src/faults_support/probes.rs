//! Probes of a job's state over the HTTP API, for tests that act at a precise moment.

use std::time::Duration;

use crate::api::Api;
use crate::contract::{id_of, owner_of};
use crate::poll::wait_for;

/// The id of the worker that owns `job`, if any.
pub async fn owner(api: &Api, job: &str) -> Option<String> {
    owner_of(&api.job(job).await)
}

/// Waits until `worker` owns `job`.
pub async fn wait_for_owner(api: &Api, job: &str, worker: &str, within: Duration) {
    wait_for(within, &format!("{worker} to own {job}"), || async {
        (owner(api, job).await.as_deref() == Some(worker)).then_some(())
    })
    .await;
}

/// Waits for a batch of `job` in progress with between 1 and `at_most` articles stored (a run
/// caught with pages still to fetch) and returns its id.
pub async fn wait_for_half_batch(api: &Api, job: &str, at_most: u64, within: Duration) -> String {
    wait_for(
        within,
        &format!("a batch of {job} in progress with 1 to {at_most} articles stored"),
        || async {
            api.batches(job).await.into_iter().find_map(|b| {
                let count = b["article_count"].as_u64().unwrap_or(0);
                (b["status"] == "in_progress" && (1..=at_most).contains(&count)).then(|| id_of(&b))
            })
        },
    )
    .await
}
