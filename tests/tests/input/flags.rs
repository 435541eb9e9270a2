//! Unusable flags and environment: each program stops at start, non-zero, with the reason and
//! without echoing a secret.

use newsflow_tests::bins::Program;
use newsflow_tests::hostile::run_to_exit;
use newsflow_tests::Scratch;

/// A program, its flags, its environment, and what its refusal must name.
type FlagCase<'a> = (Program, Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_flags_and_environment_stop_a_program_at_start_with_the_reason() {
    let dir = Scratch::new("bad-flags");
    let data = dir.subdir("data");
    let data = data.to_str().expect("a UTF-8 path");
    let secret_pw = "flag-password-Zq81";
    let cases: Vec<FlagCase> = vec![
        (
            Program::DataStreams,
            vec!["--data-dir", data, "--api-token", ""],
            vec![],
            "--api-token",
        ),
        (
            Program::DataStreams,
            vec!["--data-dir", data],
            vec![("DS_API_TOKEN", "")],
            "--api-token",
        ),
        (
            Program::DataStreams,
            vec!["--data-dir", data, "--http-addr", "nowhere"],
            vec![],
            "--http-addr",
        ),
        (
            Program::DataStreams,
            vec!["--data-dir", data],
            vec![("DS_HTTP_ADDR", "300.1.1.1:80")],
            "--http-addr",
        ),
        (
            Program::DataStreams,
            vec!["--data-dir", data, "--max-body-bytes", "10"],
            vec![],
            "--max-body-bytes",
        ),
        (
            Program::DataStreams,
            vec!["--data-dir", data, "--stream-replicas", "9"],
            vec![],
            "--stream-replicas",
        ),
        (
            Program::DataStreams,
            vec!["--data-dir", data, "--worker-timeout-ms", "0"],
            vec![],
            "--worker-timeout-ms",
        ),
        (
            Program::DataStreams,
            vec!["--data-dir", data, "--log-format", "xml"],
            vec![],
            "--log-format",
        ),
        (
            Program::DataStreams,
            vec!["--data-dir", data, "--nats-tls-cert", "/x.pem"],
            vec![],
            "--nats-tls-key",
        ),
        (
            Program::Worker,
            vec!["--newsapi-url", "newsapi.org"],
            vec![],
            "--newsapi-url",
        ),
        (
            Program::Worker,
            vec!["--newsapi-url", "ftp://newsapi.org"],
            vec![],
            "--newsapi-url",
        ),
        (
            Program::Worker,
            vec![],
            vec![("NEWSAPI_URL", "https://u:flag-password-Zq81@newsapi.org")],
            "credentials",
        ),
        (
            Program::Worker,
            vec!["--worker-id", "a.b"],
            vec![],
            "--worker-id",
        ),
        (
            Program::Worker,
            vec![],
            vec![("WORKER_ID", "a>")],
            "--worker-id",
        ),
        (
            Program::Worker,
            vec!["--heartbeat-ms", "0"],
            vec![],
            "--heartbeat-ms",
        ),
        (
            Program::Worker,
            vec!["--max-response-bytes", "0"],
            vec![],
            "--max-response-bytes",
        ),
        (
            Program::Worker,
            vec!["--newsapi-key", "line\nbreak-Zq81"],
            vec![],
            "header",
        ),
        (
            Program::Worker,
            vec!["--nats-creds", "/does/not/exist.creds"],
            vec![],
            "/does/not/exist.creds",
        ),
    ];
    for (program, args, env, needle) in &cases {
        let (code, output) = run_to_exit(*program, dir.path(), args, env).await;
        let what = format!("{} {args:?} {env:?}", program.file_name());
        assert!(
            matches!(code, Some(c) if c != 0),
            "{what} must exit non-zero, got {code:?}\n{output}"
        );
        assert!(
            output.contains(needle),
            "{what}: the reason names {needle:?}\n{output}"
        );
        assert!(!output.contains("panicked"), "{what} panicked\n{output}");
        assert!(
            !output.contains(secret_pw) && !output.contains("break-Zq81"),
            "{what} echoes a secret\n{output}"
        );
    }
    eprintln!("unusable flags and variables refused: {}", cases.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_streams_with_an_unreadable_nats_credentials_file_exits_with_the_reason() {
    let dir = Scratch::new("bad-creds");
    let data = dir.subdir("data");
    let (code, output) = run_to_exit(
        Program::DataStreams,
        dir.path(),
        &[
            "--http-addr",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().expect("UTF-8"),
            "--nats-creds",
            "/does/not/exist.creds",
        ],
        &[],
    )
    .await;
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}\n{output}");
    assert!(output.contains("/does/not/exist.creds"), "{output}");
}
