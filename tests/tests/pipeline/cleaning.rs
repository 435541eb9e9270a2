//! Clean by default: NewsAPI's `[Removed]` placeholders are dropped and counted, HTML entities
//! in titles and descriptions are decoded, with no pipeline at all.

use newsflow_tests::serde_json::json;
use newsflow_tests::System;

use super::{batch_entry, latest_batch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholders_never_reach_the_store_and_entities_are_decoded() {
    let system = System::builder()
        .workers(1)
        .mock_args(["--dirty-every", "4"])
        .start()
        .await;
    let api = system.api();
    api.create_job_ok(
        &json!({"id":"dirty","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":20}),
    )
    .await;

    let (batch, served) = latest_batch(&api, "dirty").await;

    assert_eq!(batch["article_count"], 15, "{batch}");
    assert_eq!(served.len(), 15);
    for article in &served {
        assert_ne!(article["url"], "https://removed.com", "{article}");
        assert_ne!(article["title"], "[Removed]", "{article}");
        let published = article["published_at"].as_str().unwrap_or_default();
        assert!(!published.starts_with("1970"), "{article}");
        for field in ["title", "description"] {
            let text = article[field].as_str().unwrap_or_default();
            assert!(
                !text.contains("&amp;") && !text.contains("&#x27;") && !text.contains("&quot;"),
                "{field}: {text}"
            );
        }
    }
    let decoded = served
        .iter()
        .filter(|a| {
            a["title"]
                .as_str()
                .is_some_and(|t| t.ends_with("& what's next"))
        })
        .count();
    assert_eq!(decoded, 5, "one in four titles was entity-encoded");
    let entry = batch_entry(&api, "dirty", batch["id"].as_str().expect("id")).await;
    assert_eq!(entry["fetched_count"], 20, "{entry}");
    assert_eq!(entry["dropped"], json!({"removed": 5}), "{entry}");
    let (_, everywhere) = api.get("/articles?q=Removed").await;
    assert_eq!(everywhere["articles"], json!([]), "{everywhere}");
}
