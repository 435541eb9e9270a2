//! Start-up configuration: a list of NATS URLs works, and a setting that can never work
//! (an unparsable URL, a missing credentials file, a short NewsAPI key, a bad flag value)
//! ends the program at once with status 2 and a one-line reason, never a retry loop.

use std::time::{Duration, Instant};

use newsflow_tests::bins::{binary, Program};
use newsflow_tests::{wait_for, Api, NatsServer, Proc, Scratch, Spec};

/// How long a program refusing its configuration may take to exit.
const REFUSED_WITHIN: Duration = Duration::from_secs(2);

/// Runs `program` with `args` and returns its exit code and stderr once it exits, failing the
/// test if it is still running after [`REFUSED_WITHIN`].
async fn refused(scratch: &Scratch, program: Program, args: &[&str]) -> (Option<i32>, String) {
    let started = Instant::now();
    let mut proc = Proc::spawn(
        Spec::new(program.file_name(), binary(program), scratch.path())
            .args(args.iter().copied())
            .env("NO_COLOR", "1"),
    )
    .await;
    loop {
        if let Some(status) = proc.try_exit() {
            return (status.code(), proc.stderr());
        }
        if started.elapsed() > REFUSED_WITHIN {
            proc.kill9();
            panic!(
                "{} {args:?} still running after {REFUSED_WITHIN:?}\n{}",
                program.file_name(),
                proc.log_tails(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_get_ready_when_the_first_nats_url_of_a_list_is_dead() {
    let scratch = Scratch::new("url-list");
    let nats = NatsServer::start_in(&scratch.subdir("nats")).await;
    let urls = format!("nats://127.0.0.1:1,nats://127.0.0.1:{}", nats.port());

    let data_streams = Proc::spawn(
        Spec::new("data-streams", binary(Program::DataStreams), scratch.path())
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--nats-url",
                urls.as_str(),
                "--data-dir",
                scratch.subdir("data").to_str().expect("UTF-8 path"),
            ])
            .ready_when("data-streams listening on http://"),
    )
    .await;
    Api::new(&data_streams.http_addr())
        .wait_ready(Duration::from_secs(30))
        .await;
    let worker = Proc::spawn(
        Spec::new("worker", binary(Program::Worker), scratch.path())
            .args([
                "--nats-url",
                urls.as_str(),
                "--newsapi-key",
                "demo-key",
                "--worker-id",
                "listed",
            ])
            .ready_when("worker ready id=listed"),
    )
    .await;

    // Their stderr is a file, not a terminal: plain text, no colour codes.
    for proc in [&data_streams, &worker] {
        let what = format!("{} to log its NATS connection", proc.name());
        let logs = wait_for(Duration::from_secs(10), &what, || async {
            let logs = proc.stderr();
            logs.contains("connected to NATS").then_some(logs)
        })
        .await;
        assert!(
            !logs.contains('\u{1b}'),
            "{} logs carry ANSI codes\n{logs}",
            proc.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_can_never_work_exit_with_status_2_and_one_line_at_once() {
    // Each program once untimed, so what is timed is the refusal, not reading a large debug
    // binary from a cold disk.
    for program in [Program::Worker, Program::DataStreams] {
        let warm = std::process::Command::new(binary(program))
            .arg("--help")
            .output()
            .unwrap_or_else(|e| panic!("running {} --help: {e}", program.file_name()));
        assert!(warm.status.success(), "{} --help", program.file_name());
    }
    let scratch = Scratch::new("config-errors");
    let data = scratch.subdir("data");
    let data = data.to_str().expect("UTF-8 path");
    let ds = |extra: &'static [&'static str]| {
        let mut args = vec!["--http-addr", "127.0.0.1:0", "--data-dir", data];
        args.extend_from_slice(extra);
        args
    };
    let cases: Vec<(Program, Vec<&str>, &str)> = vec![
        (
            Program::Worker,
            vec![
                "--nats-url",
                "nats://127.0.0.1:4222,nats://127.0.0.1:notaport",
            ],
            "nats://127.0.0.1:notaport",
        ),
        (
            Program::DataStreams,
            ds(&["--nats-url", "nats://127.0.0.1:99999"]),
            "--nats-url",
        ),
        (
            Program::Worker,
            vec!["--nats-creds", "/does/not/exist.creds"],
            "/does/not/exist.creds",
        ),
        (
            Program::DataStreams,
            ds(&["--nats-creds", "/does/not/exist.creds"]),
            "/does/not/exist.creds",
        ),
        (
            Program::Worker,
            vec!["--newsapi-key", "Short7x"],
            "at least 8",
        ),
        (
            Program::Worker,
            vec!["--heartbeat-ms", "zero"],
            "--heartbeat-ms",
        ),
        (
            Program::DataStreams,
            ds(&["--keep-batches", "1001"]),
            "--keep-batches",
        ),
        (
            Program::DataStreams,
            ds(&["--abandon-after-secs", "0"]),
            "--abandon-after-secs",
        ),
    ];
    for (program, args, needle) in &cases {
        let (code, stderr) = refused(&scratch, *program, args).await;
        let what = format!("{} {args:?}", program.file_name());
        assert_eq!(code, Some(2), "{what}\n{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{what}: one line\n{stderr}");
        assert!(
            stderr.starts_with(&format!("{}: ", program.file_name())),
            "{what}: names the program\n{stderr}"
        );
        assert!(
            stderr.contains(needle),
            "{what}: names {needle:?}\n{stderr}"
        );
        assert!(
            !stderr.contains("Short7x"),
            "{what} echoes the key\n{stderr}"
        );
    }
}
