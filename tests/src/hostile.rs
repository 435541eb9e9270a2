//! Tools of the bad-input and security suites: a scripted NewsAPI that answers whatever a test
//! tells it to (nulls, missing URLs, wrong types, oversized or key-echoing bodies), raw HTTP
//! requests that no well-behaved client would send, workers started with flags of the test's
//! choosing (key, NATS credentials, TLS), the example NATS permissions of `deploy/`, and a
//! search of every file a test wrote for a secret.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::bins::{binary, program_spec, workspace_root, Program};
use crate::process::{Proc, Spec};
use crate::system::{FAST_DS_ARGS, FAST_WORKER_ARGS};

/// One request the scripted API received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The request line's target: path and query, as sent.
    pub target: String,
    /// Headers, names lowercase.
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    /// The value of header `name` (lowercase), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// One answer of the scripted API.
#[derive(Debug, Clone)]
pub struct Canned {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Whether to send `Content-Length` (otherwise the body ends when the connection closes).
    pub content_length: bool,
}

impl Canned {
    /// `status` with a JSON body and its length.
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Self {
            status,
            body: body.to_string().into_bytes(),
            content_length: true,
        }
    }

    /// `status` with raw bytes and their length.
    pub fn bytes(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            body: body.into(),
            content_length: true,
        }
    }

    /// The same answer without `Content-Length`: the reader must cap what it reads itself.
    pub fn without_length(mut self) -> Self {
        self.content_length = false;
        self
    }
}

type Responder = dyn Fn(&Recorded) -> Canned + Send + Sync;

/// A NewsAPI stand-in on a free port: every request is recorded and answered by the test's
/// function. One request per connection. Stopped when dropped.
pub struct ScriptedApi {
    addr: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ScriptedApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedApi")
            .field("addr", &self.addr)
            .finish()
    }
}

impl ScriptedApi {
    /// Starts answering with `respond`.
    pub async fn start(respond: impl Fn(&Recorded) -> Canned + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding the scripted API: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("reading the scripted API's address: {e}"))
            .to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let respond: Arc<Responder> = Arc::new(respond);
        let seen = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let respond = Arc::clone(&respond);
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let _ = serve_one(stream, respond.as_ref(), &seen).await;
                });
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    /// `http://host:port`, what a worker gets as `--newsapi-url`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for ScriptedApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one(
    mut stream: TcpStream,
    respond: &Responder,
    seen: &Mutex<Vec<Recorded>>,
) -> std::io::Result<()> {
    let head = read_head(&mut stream).await?;
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let target = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or("")
        .to_owned();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let request = Recorded { target, headers };
    let canned = respond(&request);
    seen.lock().unwrap_or_else(|p| p.into_inner()).push(request);
    let mut head = format!(
        "HTTP/1.1 {} Scripted\r\nContent-Type: application/json\r\nConnection: close\r\n",
        canned.status
    );
    if canned.content_length {
        head.push_str(&format!("Content-Length: {}\r\n", canned.body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&canned.body).await?;
    stream.shutdown().await
}

/// Reads up to the end of the head (`\r\n\r\n`), at most 64 KiB.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

/// A response read off a raw connection.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`Null` when empty, a JSON string when not JSON).
    pub body: serde_json::Value,
}

impl RawResponse {
    /// The value of header `name` (lowercase), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `head` (request line and headers, without the blank line; `Connection: close` and
/// the blank line are added) and then `body` in pieces, over a fresh connection to `addr`,
/// and reads the answer until the server closes. Writing stops quietly when the server
/// answers early and closes (as it may for a body over the limit).
pub async fn raw_http(addr: &str, head: &str, body: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let head = format!("{head}\r\nConnection: close\r\n\r\n");
    let send = async {
        stream.write_all(head.as_bytes()).await?;
        for chunk in body.chunks(16 * 1024) {
            stream.write_all(chunk).await?;
        }
        stream.flush().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(15), send).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer));
    match read.await {
        Ok(Ok(_)) => {}
        // A reset after the answer was written still leaves the answer readable.
        Ok(Err(_)) if !answer.is_empty() => {}
        Ok(Err(e)) => panic!("reading the answer from {addr}: {e}"),
        Err(_) => panic!("no answer from {addr} within 15s to {head:?}"),
    }
    parse_raw_response(&answer)
}

fn parse_raw_response(answer: &[u8]) -> RawResponse {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(answer)));
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut body = answer[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    let text = String::from_utf8_lossy(&body);
    let body = if text.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| serde_json::Value::String(text.into()))
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        raw = &raw[end + 2..];
        if size == 0 || raw.len() < size {
            break;
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or(&[]);
    }
    out
}

/// Starts `program` as `name` with exactly `args` and `env` (plus `NO_COLOR`, and
/// `RUST_LOG=info` unless set), logging into `dir`; waits for a stdout line starting with
/// `ready` when given.
pub async fn spawn_program(
    program: Program,
    dir: &Path,
    name: &str,
    args: &[String],
    env: &[(&str, &str)],
    ready: Option<&str>,
) -> Proc {
    // The caller's variables come last, so they win.
    let mut spec = program_spec(program, name, dir).args(args.iter().cloned());
    for (key, value) in env {
        spec = spec.env(*key, *value);
    }
    if let Some(ready) = ready {
        spec = spec.ready_when(ready);
    }
    Proc::spawn(spec).await
}

/// Starts a worker outside [`crate::System`] with id `id`, the fast test timings and exactly
/// the flags and environment given (key, NATS credentials, TLS); waits for its ready line.
pub async fn spawn_worker(dir: &Path, id: &str, args: &[String], env: &[(&str, &str)]) -> Proc {
    let mut all = vec!["--worker-id".to_owned(), id.to_owned()];
    all.extend(FAST_WORKER_ARGS.iter().map(|s| (*s).to_owned()));
    all.extend(args.iter().cloned());
    let ready = format!("worker ready id={id}");
    spawn_program(Program::Worker, dir, id, &all, env, Some(&ready)).await
}

/// Starts data-streams outside [`crate::System`] on a free port with its data in
/// `dir/data-streams-own`, the fast test timings and exactly the flags and environment given;
/// waits for its listening line (not for readiness).
pub async fn spawn_data_streams(dir: &Path, args: &[String], env: &[(&str, &str)]) -> Proc {
    let data = dir.join("data-streams-own");
    let mut all = vec![
        "--http-addr".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--data-dir".to_owned(),
        data.display().to_string(),
    ];
    all.extend(FAST_DS_ARGS.iter().map(|s| (*s).to_owned()));
    all.extend(args.iter().cloned());
    let ready = "data-streams listening on http://";
    spawn_program(
        Program::DataStreams,
        dir,
        "data-streams",
        &all,
        env,
        Some(ready),
    )
    .await
}

/// Runs `program` with `args` and `env` until it exits (at most 30 s); returns its exit code
/// (`None` when killed by a signal) and everything it printed.
pub async fn run_to_exit(
    program: Program,
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let mut spec = Spec::new(program.file_name(), binary(program), dir)
        .args(args.iter().copied())
        .env("NO_COLOR", "1");
    for (key, value) in env {
        spec = spec.env(*key, *value);
    }
    let mut proc = Proc::spawn(spec).await;
    match proc.wait_exit(Duration::from_secs(30)).await {
        Some(status) => (status.code(), proc.logs()),
        None => {
            proc.kill9();
            panic!(
                "{} {args:?} did not exit within 30s\n{}",
                program.file_name(),
                proc.log_tails(40)
            );
        }
    }
}

/// The NATS users of `deploy/nats-permissions.conf`.
pub const DS_NATS_USER: &str = "newsflow-data-streams";
/// The worker's NATS user in `deploy/nats-permissions.conf`.
pub const WORKER_NATS_USER: &str = "newsflow-worker";

/// `deploy/nats-permissions.conf` with its password variables defined ahead of it, ready to
/// give to nats-server.
pub fn permissions_config(ds_password: &str, worker_password: &str) -> String {
    let path = workspace_root()
        .join("deploy")
        .join("nats-permissions.conf");
    let example = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    format!(
        "NEWSFLOW_DS_PASSWORD: {ds}\nNEWSFLOW_WORKER_PASSWORD: {worker}\n\n{example}",
        ds = serde_json::Value::from(ds_password),
        worker = serde_json::Value::from(worker_password),
    )
}

/// Every file under `dir` (recursively) whose bytes contain `needle`, except those `skip`
/// names.
pub fn files_containing(dir: &Path, needle: &[u8], skip: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if !skip(&path) {
                if let Ok(bytes) = std::fs::read(&path) {
                    if contains(&bytes, needle) {
                        found.push(path);
                    }
                }
            }
        }
    }
    found
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every message the `NEWS` stream holds, as `subject headers payload` lines, read over
/// `client` (a connection with credentials, which [`crate::Bus`] does not take).
pub async fn stream_text(client: &async_nats::Client) -> (usize, String) {
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js
        .get_stream(newsflow_nats::subjects::STREAM)
        .await
        .unwrap_or_else(|e| panic!("looking up the NEWS stream: {e}"));
    let state = stream
        .info()
        .await
        .unwrap_or_else(|e| panic!("reading the NEWS stream's info: {e}"))
        .state
        .clone();
    let mut text = String::new();
    let mut count = 0;
    if state.messages == 0 {
        return (0, text);
    }
    for seq in state.first_sequence..=state.last_sequence {
        if let Ok(message) = stream.get_raw_message(seq).await {
            count += 1;
            text.push_str(&format!(
                "{} {:?} {}\n",
                message.subject,
                message.headers,
                String::from_utf8_lossy(&message.payload)
            ));
        }
    }
    (count, text)
}
