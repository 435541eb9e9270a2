//! Poison on the bus: stream messages data-streams cannot use, and garbage commands.

use std::collections::BTreeSet;
use std::time::Duration;

use newsflow_core::{ArticleMessage, BatchId};
use newsflow_tests::contract::{assert_error_info, assert_keys, ids};
use newsflow_tests::faults_support::{
    consumer_info, owner, synthetic_articles, wait_until_ingested, INGEST_WITHIN,
};
use newsflow_tests::{hold_for, StatusCode, System};
use serde_json::json;

use crate::{assert_whole, BATCH_WITHIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_stream_messages_are_terminated_counted_and_kept_while_good_ones_flow() {
    let system = System::builder().workers(0).start().await;
    let api = system.api();
    let bus = system.bus().await;
    api.create_job_ok(&json!({"id":"good","params":{"q":"bitcoin"},"interval_secs":3600}))
        .await;
    let (b1, b2) = (BatchId::generate(), BatchId::generate());
    let stray = serde_json::to_vec(&ArticleMessage {
        article: synthetic_articles("other", b1, 1).remove(0),
        seq: 0,
    })
    .expect("JSON");
    let marker_b1 = serde_json::to_vec(&json!({"job_id":"good","batch_id":b1.to_string(),"status":"complete",
        "article_count":0,"started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:00:01Z","error":null}))
    .expect("JSON");
    let poison: Vec<(String, Vec<u8>)> = vec![
        ("news.articles.x".to_owned(), b"not json".to_vec()),
        (format!("news.articles.good.{b1}"), b"{garbage".to_vec()),
        ("news.articles.a.b.c".to_owned(), b"{}".to_vec()),
        (format!("news.articles.good.{b1}"), stray),
        (format!("news.batches.good.{b2}"), b"[]".to_vec()),
        (format!("news.batches.good.{b2}"), marker_b1),
    ];

    for (subject, payload) in &poison {
        bus.publish(subject, None, &[], payload.clone()).await;
    }
    let good = synthetic_articles("good", BatchId::generate(), 5);
    let marker = bus.publish_complete_batch(&good).await;

    let page = api.wait_for_latest("good", None, BATCH_WITHIN).await;
    assert_eq!(page["batch"]["id"], marker.batch_id.to_string());
    assert_whole(&page);
    let served: BTreeSet<String> = ids(page["articles"].as_array().expect("articles"))
        .into_iter()
        .collect();
    let sent: BTreeSet<String> = good.iter().map(|a| a.id.as_str().to_owned()).collect();
    assert_eq!(served, sent);
    wait_until_ingested(&bus, INGEST_WITHIN).await;
    let count = poison.len() as u64;
    assert_eq!(api.counter("newsflow_poison_messages_total").await, count);
    let letters = api.ok("/dead-letters?limit=100").await;
    let letters = letters["dead_letters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let subjects: Vec<&str> = letters
        .iter()
        .map(|l| l["subject"].as_str().unwrap_or_default())
        .collect();
    let want: Vec<&str> = poison.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(subjects, want, "every poison message is kept, in order");
    for letter in &letters {
        assert!(
            letter["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{letter}"
        );
        assert!(letter["stream_seq"].as_u64().is_some(), "{letter}");
    }
    hold_for(
        Duration::from_secs(3),
        "poison never to be redelivered",
        || async {
            let info = consumer_info(&bus).await.unwrap_or_default();
            if info["num_redelivered"].as_u64().unwrap_or(0) > 0
                || info["num_ack_pending"].as_u64().unwrap_or(0) > 0
            {
                return Some(format!("consumer: {info}"));
            }
            let now = api.counter("newsflow_poison_messages_total").await;
            (now != count).then(|| format!("poison counted {now} times"))
        },
    )
    .await;
    let (status, _) = api.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_commands_get_error_replies_and_nothing_crashes() {
    let mut system = System::builder().workers(1).start().await;
    let api = system.api();
    let bus = system.bus().await;
    let stop = "news.ctl.worker.worker-1.stop";
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("news.ctl.start", b"not json".to_vec()),
        ("news.ctl.start", b"{}".to_vec()),
        ("news.ctl.start", br#"{"job":{"id":"Bad Id"}}"#.to_vec()),
        ("news.ctl.start", vec![b' '; 70 * 1024]),
        (stop, b"garbage".to_vec()),
        (stop, br#"{"job":1}"#.to_vec()),
        ("news.ctl.heartbeat", b"{\"worker_id\":".to_vec()),
    ];

    for (subject, payload) in garbage {
        let reply = bus
            .request_bytes(subject, payload, Duration::from_secs(10))
            .await;
        assert_keys(&reply, &["ok", "error"], &format!("the reply on {subject}"));
        assert_eq!(reply["ok"], false, "{subject}: {reply}");
        assert_error_info(&reply["error"], &format!("the error on {subject}"));
    }

    assert!(system.worker("worker-1").is_running());
    assert!(system.data_streams_mut().is_running());
    assert_eq!(api.counter("newsflow_invalid_heartbeats_total").await, 1);
    api.create_job_ok(
        &json!({"id":"after-garbage","params":{"q":"bitcoin"},"interval_secs":3600,"page_size":5}),
    )
    .await;
    let page = api
        .wait_for_latest("after-garbage", None, BATCH_WITHIN)
        .await;
    assert_whole(&page);
    assert_eq!(
        owner(&api, "after-garbage").await.as_deref(),
        Some("worker-1")
    );
}
