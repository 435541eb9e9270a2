//! The binary: flags and environment, the listening line, and shutdown.

use std::process::Stdio;

use reqwest::StatusCode;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts the binary on a free port and returns it with its base URL, read from stdout.
async fn spawn(args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_newsapi-mock"))
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .next_line()
        .await
        .unwrap()
        .unwrap();
    let base = line
        .strip_prefix("newsapi-mock listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_owned();
    (child, base)
}

#[tokio::test]
async fn binary_prints_its_address_and_reads_faults_and_key_from_the_environment() {
    let (_child, base) = spawn(
        &["--total-results", "42"],
        &[
            ("MOCK_API_KEY", "s3cret"),
            ("MOCK_FAULTS", "server_error:1,rate_limited:1"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let get = || {
        client
            .get(format!("{base}/v2/everything?q=ai"))
            .header("X-Api-Key", "s3cret")
            .send()
    };

    let statuses = [
        get().await.unwrap().status(),
        get().await.unwrap().status(),
        get().await.unwrap().status(),
    ];

    assert_eq!(
        statuses,
        [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::OK
        ]
    );
    let body = get().await.unwrap().text().await.unwrap();
    assert!(body.contains(r#""totalResults":42"#), "{body}");
}

#[tokio::test]
async fn binary_rejects_an_unknown_fault_kind() {
    let output = Command::new(env!("CARGO_BIN_EXE_newsapi-mock"))
        .args(["--addr", "127.0.0.1:0", "--fault", "teapot"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown fault kind `teapot`"));
}

#[cfg(unix)]
#[tokio::test]
async fn binary_exits_cleanly_on_sigterm() {
    let (mut child, _base) = spawn(&[], &[]).await;
    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    assert!(child.wait().await.unwrap().success());
}
