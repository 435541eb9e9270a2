//! Filter, enrich and fields, as the HTTP API serves them and as the stream carries them.

use futures::StreamExt;
use newsflow_tests::serde_json::{json, Value};
use newsflow_tests::System;

use super::{batch_entry, latest_batch, words, WITHIN};

fn title_words(article: &Value) -> Vec<String> {
    words(article["title"].as_str().unwrap_or_default())
}

/// Whether the title holds "explainer" or the phrase "what the".
fn obeys_filter(article: &Value) -> bool {
    let words = title_words(article);
    words.iter().any(|w| w == "explainer")
        || words
            .windows(2)
            .any(|pair| pair[0] == "what" && pair[1] == "the")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_jobs_served_articles_and_stream_messages_obey_the_filter() {
    let system = System::builder().workers(1).start().await;
    let api = system.api();
    let bus = system.bus().await;
    api.create_job_ok(&json!({
        "id":"filtered","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":40,
        "pipeline":[{"type":"filter","include":["Explainer","what the"],"fields":["title"]}]
    }))
    .await;

    let (batch, served) = latest_batch(&api, "filtered").await;

    let kept = served.len();
    assert!(
        kept > 0 && kept < 40,
        "the mock's titles vary: kept {kept} of 40"
    );
    assert!(served.iter().all(obeys_filter), "{served:#?}");
    assert_eq!(batch["article_count"], kept);
    let entry = batch_entry(&api, "filtered", batch["id"].as_str().expect("id")).await;
    assert_eq!(entry["fetched_count"], 40, "{entry}");
    assert_eq!(entry["dropped"], json!({"filter": 40 - kept}), "{entry}");
    let prefix = format!(
        "news.articles.filtered.{}",
        batch["id"].as_str().expect("id")
    );
    let messages = bus.stream_messages(&prefix).await;
    assert_eq!(messages.len(), kept);
    for message in messages {
        let payload: Value = serde_json::from_slice(&message.payload).expect("JSON");
        assert!(obeys_filter(&payload), "{payload}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_and_fields_shape_what_a_nats_subscriber_receives() {
    let system = System::builder().workers(1).start().await;
    let api = system.api();
    let bus = system.bus().await;
    let mut live = bus.subscribe("news.articles.shaped.>").await;
    api.create_job_ok(&json!({
        "id":"shaped","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":5,
        "pipeline":[
            {"type":"enrich","add":["domain","word_count","reading_time_secs"]},
            {"type":"fields","drop":["content","url_to_image","author"]}
        ]
    }))
    .await;

    let mut received = Vec::new();
    while received.len() < 5 {
        let message = tokio::time::timeout(WITHIN, live.next())
            .await
            .expect("five article messages in time")
            .expect("the subscription stays open");
        received.push(serde_json::from_slice::<Value>(&message.payload).expect("JSON"));
    }

    for article in &received {
        let url = article["url"].as_str().expect("url");
        let host = url.split('/').nth(2).expect("host");
        let extra = &article["extra"];
        assert_eq!(extra["domain"], host, "{article}");
        let word_count = extra["word_count"].as_u64().expect("word_count");
        assert!(word_count >= 5, "the title alone has more words: {article}");
        assert_eq!(
            extra["reading_time_secs"].as_u64(),
            Some((word_count * 60).div_ceil(200)),
            "{article}"
        );
        for dropped in ["content", "url_to_image", "author"] {
            assert!(article[dropped].is_null(), "{dropped} of {article}");
        }
        assert!(article["title"].is_string(), "{article}");
        assert!(article["seq"].is_u64(), "{article}");
    }
    let (_, served) = latest_batch(&api, "shaped").await;
    assert_eq!(served.len(), 5);
    assert!(served
        .iter()
        .all(|a| a["extra"]["domain"].is_string() && a["content"].is_null()));
}
