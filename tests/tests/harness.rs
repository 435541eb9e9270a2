//! The harness itself: the broker restarts on its port and store, processes start, report
//! their address and stop cleanly.

use std::time::Duration;

use newsflow_tests::bins::{binary, Program};
use newsflow_tests::{MockClient, NatsServer, Proc, Scratch, Spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_keeps_its_streams_across_a_restart_on_the_same_port() {
    let mut nats = NatsServer::start().await;
    let port = nats.port();
    let client = async_nats::connect(nats.url()).await.expect("connects");
    let js = async_nats::jetstream::new(client);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "PROBE".into(),
        subjects: vec!["probe.>".into()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("creates a stream");
    js.publish("probe.one", "hello".into())
        .await
        .expect("publishes")
        .await
        .expect("is acked");

    nats.stop().await;
    nats.start_again().await;

    assert_eq!(nats.port(), port);
    let client = async_nats::connect(nats.url()).await.expect("reconnects");
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("PROBE").await.expect("the stream survived");
    assert_eq!(stream.info().await.expect("info").state.messages, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_reports_its_address_and_exits_cleanly_on_sigterm() {
    let dir = Scratch::new("mock");
    let mut mock = Proc::spawn(
        Spec::new("newsapi-mock", binary(Program::NewsapiMock), dir.path())
            .args(["--addr", "127.0.0.1:0"])
            .ready_when("newsapi-mock listening on http://"),
    )
    .await;
    let client = MockClient::new(&mock.http_addr());

    let first = client.expected_articles(&[("q", "bitcoin")], 2, 10).await;
    let again = client.expected_articles(&[("q", "bitcoin")], 2, 10).await;

    assert_eq!(first.len(), 20);
    assert_eq!(first, again, "the mock is deterministic");
    assert!(client.stats().await["requests"].as_u64() >= Some(4));
    let status = tokio::time::timeout(Duration::from_secs(30), mock.terminate())
        .await
        .expect("terminates");
    assert!(status.success(), "{status}");
}
