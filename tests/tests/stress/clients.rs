//! Slow, idle and oversized clients cannot exhaust data-streams, and every refusal arrives in
//! the contract's shape.

use std::time::{Duration, Instant};

use newsflow_tests::{StatusCode, System};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::{timed, Latencies};

const SLOW_CLIENTS: usize = 2000;

/// Reads until the peer closes or `within` passes; returns what was read and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&seen).into_owned(), true),
            Ok(Ok(n)) => seen.extend_from_slice(&buffer[..n]),
            Err(_) => return (String::from_utf8_lossy(&seen).into_owned(), false),
        }
    }
}

/// Reads one response head (up to the blank line), within `within`.
async fn read_head(stream: &mut TcpStream, within: Duration) -> String {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    let deadline = Instant::now() + within;
    while !seen.ends_with(b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut byte)).await {
            Ok(Ok(1)) => seen.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_slow_header_clients_leave_others_served_and_are_closed_after_the_timeout() {
    let mut system = System::builder().without_data_streams().start().await;
    system
        .start_data_streams_with(&["--header-timeout-ms", "3000"])
        .await;
    let addr = system.data_streams().http_addr();
    let api = system.api();

    let mut slow = Vec::with_capacity(SLOW_CLIENTS);
    for _ in 0..SLOW_CLIENTS {
        let mut stream = TcpStream::connect(&addr).await.expect("connects");
        stream
            .write_all(b"GET /jobs HTTP/1.1\r\nHost: slow\r\n")
            .await
            .expect("sends part of a head");
        slow.push(stream);
    }
    let opened = Instant::now();
    let mut served = Vec::new();
    for _ in 0..20 {
        let ((status, _), took) = timed(api.get("/jobs")).await;
        assert_eq!(status, StatusCode::OK);
        served.push(took);
    }
    let served = Latencies::new(served);
    assert!(
        served.percentile(100) < Duration::from_secs(1),
        "with {SLOW_CLIENTS} slow clients connected, a request took {:?}",
        served.percentile(100)
    );
    let mut closed = 0;
    for stream in &mut slow {
        let left = Duration::from_secs(10).saturating_sub(opened.elapsed());
        if read_until_closed(stream, left).await.1 {
            closed += 1;
        }
    }
    let closed_after = opened.elapsed();
    assert_eq!(closed, SLOW_CLIENTS, "every slow client is disconnected");
    assert!(
        closed_after >= Duration::from_millis(2500),
        "slow clients were closed before their timeout: {closed_after:?}"
    );
    eprintln!(
        "{SLOW_CLIENTS} slow-header clients: others served with max {:?}; all closed {closed_after:?} after opening",
        served.percentile(100)
    );

    // An idle keep-alive connection is closed after the same timeout.
    let mut idle = TcpStream::connect(&addr).await.expect("connects");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: idle\r\n\r\n")
        .await
        .expect("sends a request");
    let head = read_head(&mut idle, Duration::from_secs(2)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(8)).await;
    assert!(closed, "an idle keep-alive connection is closed");
}

#[tokio::test]
async fn a_body_announced_too_large_is_refused_at_once_and_the_refusal_reaches_the_sender() {
    let system = System::builder().without_data_streams().start().await;
    let mut system = system;
    system.start_data_streams().await;
    let addr = system.data_streams().http_addr();

    for expect in ["", "Expect: 100-continue\r\n"] {
        let mut stream = TcpStream::connect(&addr).await.expect("connects");
        let head = format!(
            "POST /jobs HTTP/1.1\r\nHost: big\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n{expect}\r\n"
        );
        stream
            .write_all(head.as_bytes())
            .await
            .expect("sends the head");
        let (answer, took) = timed(read_head(&mut stream, Duration::from_secs(5))).await;
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "{expect:?}: answered {answer:?}"
        );
        assert!(!answer.contains("100 Continue"), "{answer}");
        assert!(took < Duration::from_secs(1), "the 413 took {took:?}");
    }

    // A client that sends the whole 2 MB body still gets the 413, not a reset.
    let body = format!("{{\"params\":{{\"q\":\"{}\"}}}}", "x".repeat(2_000_000));
    for _ in 0..5 {
        let response = reqwest::Client::new()
            .post(format!("http://{addr}/jobs"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("the 413 arrives instead of a connection reset");
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let error: serde_json::Value = response.json().await.expect("a JSON error");
        assert_eq!(error["error"]["code"], "payload_too_large");
    }
    // The same with a chunked body (no Content-Length): refused once the limit is passed.
    let stream = TcpStream::connect(&addr).await.expect("connects");
    let (mut reader, mut writer) = stream.into_split();
    let sender = tokio::spawn(async move {
        let head = "POST /jobs HTTP/1.1\r\nHost: big\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        writer.write_all(head.as_bytes()).await?;
        let chunk = format!("{:x}\r\n{}\r\n", 32 * 1024, " ".repeat(32 * 1024));
        for _ in 0..64 {
            writer.write_all(chunk.as_bytes()).await?;
        }
        writer.write_all(b"0\r\n\r\n").await
    });
    let mut answer = vec![0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), reader.read_exact(&mut answer))
        .await
        .expect("answered in time")
        .expect("the 413 arrives for a chunked body too");
    assert_eq!(&answer, b"HTTP/1.1 413");
    let _ = sender.await;
}

#[tokio::test]
async fn two_authorization_headers_are_a_bad_request() {
    let system = System::builder().api_token("secret-token-1").start().await;
    let addr = system.data_streams().http_addr();
    let mut stream = TcpStream::connect(&addr).await.expect("connects");
    stream
        .write_all(
            b"GET /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret-token-1\r\nAuthorization: Bearer other\r\n\r\n",
        )
        .await
        .expect("sends");
    let head = read_head(&mut stream, Duration::from_secs(5)).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_beyond_the_in_flight_bound_get_503_overloaded_while_probes_still_answer() {
    let mut system = System::builder().without_data_streams().start().await;
    let hold = system.dir().join("hold-flushes");
    let hold_arg = hold.display().to_string();
    system
        .start_data_streams_with(&[
            "--max-in-flight",
            "2",
            "--test-hold-flushes-while",
            &hold_arg,
        ])
        .await;
    let api = system.api();
    std::fs::write(&hold, b"").expect("creating the hold file");
    // Two creates wait on a held flush and fill the bound.
    let held: Vec<_> = (0..2)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                api.create_job(
                    &serde_json::json!({"id": format!("held-{i}"), "params": {"q": "x"}}),
                )
                .await
                .0
            })
        })
        .collect();
    let (status, body) =
        newsflow_tests::wait_for(Duration::from_secs(10), "a 503 overloaded", || {
            let api = api.clone();
            async move {
                let (status, body) = api.get("/jobs").await;
                (status == StatusCode::SERVICE_UNAVAILABLE).then_some((status, body))
            }
        })
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    let (probe, _) = api.get("/healthz").await;
    assert_eq!(probe, StatusCode::OK, "probes are exempt from the bound");

    std::fs::remove_file(&hold).expect("releasing the flushes");
    for create in held {
        assert_eq!(create.await.expect("joins"), StatusCode::CREATED);
    }
    let (status, _) = api.get("/jobs").await;
    assert_eq!(status, StatusCode::OK);
}
