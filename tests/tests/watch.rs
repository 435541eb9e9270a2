//! `newsflow-watch` against a real nats-server: one readable line per article and batch
//! marker published, anything else raw, and a clean exit on Ctrl-C.

use std::time::Duration;

use newsflow_core::{Article, ArticleId, ArticleMessage, BatchId, JobId, Source};
use newsflow_nats::subjects;
use newsflow_tests::bins::{binary, Program};
use newsflow_tests::bus::complete_marker;
use newsflow_tests::{wait_for, Bus, NatsServer, Proc, Scratch, Spec};
use time::macros::datetime;

const WITHIN: Duration = Duration::from_secs(20);

fn article(job: &JobId, batch: BatchId) -> ArticleMessage {
    let url = "https://watch.example/bitcoin-lifts-small-businesses".to_owned();
    ArticleMessage {
        article: Article {
            id: ArticleId::from_url(&url),
            job_id: job.clone(),
            batch_id: batch,
            source: Source {
                id: None,
                name: Some("Circuit Review".to_owned()),
            },
            author: None,
            title: Some("Bitcoin lifts small businesses".to_owned()),
            description: None,
            url,
            url_to_image: None,
            published_at: Some(datetime!(2026-11-20 12:00:00 UTC)),
            content: None,
            fetched_at: newsflow_core::now_utc(),
            extra: None,
        },
        seq: 0,
    }
}

/// Its stdout lines without the leading `HH:MM:SS  ` receive time.
fn printed(watch: &Proc) -> Vec<String> {
    watch
        .stdout()
        .lines()
        .map(|line| {
            line.split_once("  ")
                .map_or(line, |(_, rest)| rest)
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_a_line_per_article_and_marker_and_stops_cleanly_on_ctrl_c() {
    let nats = NatsServer::start().await;
    let scratch = Scratch::new("watch");
    let mut watch = Proc::spawn(
        Spec::new("watch", binary(Program::Watch), scratch.path()).env("NATS_URL", nats.url()),
    )
    .await;
    wait_for(WITHIN, "the watcher to confirm its subscription", || {
        let subscribed = watch.stderr().contains("watching news.>");
        async move { subscribed.then_some(()) }
    })
    .await;
    let job = JobId::parse("demo").expect("a valid job id");
    let batch = BatchId::generate();
    let marker = complete_marker(&job, batch, 1, newsflow_core::now_utc());

    let bus = Bus::connect(&nats.url()).await;
    let client = bus.client();
    for (subject, payload) in [
        (
            subjects::articles(&job, batch),
            serde_json::to_vec(&article(&job, batch)).expect("serializes"),
        ),
        (
            subjects::batch_marker(&job, batch),
            serde_json::to_vec(&marker).expect("serializes"),
        ),
        ("news.other".to_owned(), b"{\"hello\":1}".to_vec()),
    ] {
        client
            .publish(subject, payload.into())
            .await
            .expect("publishes");
    }
    client.flush().await.expect("flushes");

    let lines = wait_for(WITHIN, "three printed lines", || {
        let lines = printed(&watch);
        async move { (lines.len() >= 3).then_some(lines) }
    })
    .await;
    assert_eq!(
        lines,
        [
            "demo  Circuit Review  Bitcoin lifts small businesses  (published 2026-11-20T12:00:00Z)"
                .to_owned(),
            format!("demo  batch {batch} complete 1 articles"),
            "news.other  {\"hello\":1}".to_owned(),
        ]
    );
    let clock = watch.stdout();
    let clock = clock.get(..8).unwrap_or_default();
    assert!(
        clock.len() == 8 && clock.as_bytes()[2] == b':' && clock.as_bytes()[5] == b':',
        "lines start with HH:MM:SS, got {clock:?}"
    );

    watch.signal("INT");
    let status = wait_for(WITHIN, "the watcher to exit after SIGINT", || {
        let status = watch.try_exit();
        async move { status }
    })
    .await;
    assert!(status.success(), "exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_logs_in_with_the_services_user_and_password_variables() {
    let scratch = Scratch::new("watch-auth");
    let nats = NatsServer::with_config(
        scratch.path(),
        "authorization { user: watcher, password: s3cret-pass }",
    )
    .await;
    let mut watch = Proc::spawn(
        Spec::new("watch", binary(Program::Watch), scratch.path())
            .env("NATS_URL", nats.url())
            .env("NATS_USER", "watcher")
            .env("NATS_PASSWORD", "s3cret-pass")
            .args(["news.batches.>"]),
    )
    .await;
    wait_for(WITHIN, "the watcher to confirm its subscription", || {
        let subscribed = watch.stderr().contains("watching news.batches.>");
        async move { subscribed.then_some(()) }
    })
    .await;

    let client = async_nats::ConnectOptions::with_user_and_password(
        "watcher".to_owned(),
        "s3cret-pass".to_owned(),
    )
    .connect(nats.url())
    .await
    .expect("the test logs in");
    client
        .publish("news.batches.x.y", "not a marker".into())
        .await
        .expect("publishes");
    client.flush().await.expect("flushes");

    let lines = wait_for(WITHIN, "a printed line", || {
        let lines = printed(&watch);
        async move { (!lines.is_empty()).then_some(lines) }
    })
    .await;
    assert_eq!(lines, ["news.batches.x.y  not a marker"]);
    watch.signal("TERM");
    let status = wait_for(WITHIN, "the watcher to exit after SIGTERM", || {
        let status = watch.try_exit();
        async move { status }
    })
    .await;
    assert!(status.success(), "exited with {status}");
}
