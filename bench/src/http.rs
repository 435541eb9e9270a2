//! HTTP for the benchmark: a minimal keep-alive HTTP/1.1 client (cheap enough that the load
//! it generates measures the server, not itself), the fixed-duration read load, and the
//! ceiling: an axum handler serving the same bytes from memory on its own runtime.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::stats;

/// A response, with the headers the benchmark looks at.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `ETag`.
    pub etag: Option<String>,
    /// The body.
    pub body: Bytes,
}

/// One keep-alive connection.
#[derive(Debug)]
pub struct Conn {
    addr: String,
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to `addr` (`host:port`).
    pub async fn connect(addr: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        Ok(Self {
            addr: addr.to_owned(),
            stream,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// `GET path` with extra headers.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Response> {
        self.request("GET", path, headers, None).await
    }

    /// `method path` with extra headers and, when given, a JSON body.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        json: Option<&[u8]>,
    ) -> anyhow::Result<Response> {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for (name, value) in headers {
            request.push_str(name);
            request.push_str(": ");
            request.push_str(value);
            request.push_str("\r\n");
        }
        let mut bytes = match json {
            Some(body) => {
                request.push_str("Content-Type: application/json\r\n");
                request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
                let mut bytes = request.into_bytes();
                bytes.extend_from_slice(body);
                bytes
            }
            None => {
                request.push_str("\r\n");
                request.into_bytes()
            }
        };
        self.stream
            .write_all(&bytes)
            .await
            .context("sending a request")?;
        bytes.clear();
        self.read_response().await
    }

    async fn read_response(&mut self) -> anyhow::Result<Response> {
        let head_end = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).context("response head")?;
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .context("a response without a status line")?;
        let (mut length, mut content_type, mut etag) = (None, None, None);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().context("Content-Length")?);
            } else if name.eq_ignore_ascii_case("content-type") {
                content_type = Some(value.to_owned());
            } else if name.eq_ignore_ascii_case("etag") {
                etag = Some(value.to_owned());
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                bail!("chunked responses are not supported by the bench's client");
            }
        }
        let length = match (length, status) {
            (Some(length), _) => length,
            (None, 204 | 304) => 0,
            (None, _) => bail!("a {status} response without Content-Length"),
        };
        let total = head_end + 4 + length;
        while self.buf.len() < total {
            self.fill().await?;
        }
        let body = Bytes::copy_from_slice(&self.buf[head_end + 4..total]);
        self.buf.drain(..total);
        Ok(Response {
            status,
            content_type,
            etag,
            body,
        })
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        self.buf.reserve(32 * 1024);
        let read = self
            .stream
            .read_buf(&mut self.buf)
            .await
            .context("reading a response")?;
        if read == 0 {
            bail!("the server closed the connection");
        }
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A connection that reconnects once when the server dropped it: for control requests.
#[derive(Debug)]
pub struct Client {
    addr: String,
    conn: Option<Conn>,
}

impl Client {
    /// A client of `addr`; connects on first use.
    pub fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_owned(),
            conn: None,
        }
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Response> {
        self.get_with(path, &[]).await
    }

    /// `GET path` with extra headers.
    pub async fn get_with(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Response> {
        for attempt in 0..2 {
            match self.conn().await?.get(path, headers).await {
                Ok(response) => return Ok(response),
                // A keep-alive connection the server dropped: once more on a fresh one.
                Err(_) if attempt == 0 => self.conn = None,
                Err(error) => return Err(error),
            }
        }
        bail!("unreachable: two attempts")
    }

    /// `method path` with extra headers and an optional JSON body (no retry: a write is not
    /// repeated on a dropped connection).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        json: Option<&[u8]>,
    ) -> anyhow::Result<Response> {
        let outcome = self
            .conn()
            .await?
            .request(method, path, headers, json)
            .await;
        if outcome.is_err() {
            self.conn = None;
        }
        outcome
    }

    /// The connection, made when there is none.
    async fn conn(&mut self) -> anyhow::Result<&mut Conn> {
        if self.conn.is_none() {
            self.conn = Some(Conn::connect(&self.addr).await?);
        }
        self.conn.as_mut().context("a connection")
    }
}

/// Clients holding `GET path` open as server-sent event streams, each counting the events
/// (`data:` lines) it receives.
pub struct SseClients {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    events: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SseClients {
    /// Opens `count` streams of `GET path` and checks each was answered 200.
    pub async fn open(
        addr: &str,
        path: &str,
        count: usize,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let events = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = Vec::with_capacity(count);
        let mut head =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        for _ in 0..count {
            let mut stream = TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting an SSE client to {addr}"))?;
            stream
                .write_all(head.as_bytes())
                .await
                .context("sending an SSE request")?;
            let mut buf = Vec::with_capacity(4096);
            let end = loop {
                if let Some(end) = find(&buf, b"\r\n\r\n") {
                    break end;
                }
                if stream
                    .read_buf(&mut buf)
                    .await
                    .context("reading an SSE head")?
                    == 0
                {
                    bail!("the server closed an SSE stream before answering");
                }
            };
            let status = std::str::from_utf8(&buf[..end])
                .ok()
                .and_then(|head| head.split(' ').nth(1))
                .unwrap_or("?")
                .to_owned();
            if status != "200" {
                bail!("GET {path} as an event stream answered {status}");
            }
            buf.drain(..end + 4);
            let events = events.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let seen = buf.windows(5).filter(|w| w == b"data:").count();
                    events.fetch_add(seen as u64, std::sync::atomic::Ordering::Relaxed);
                    // Keep the tail: a `data:` may be split between two reads.
                    let keep = buf.len().min(4);
                    buf.drain(..buf.len() - keep);
                    match stream.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            }));
        }
        Ok(Self { tasks, events })
    }

    /// Events received so far, over every client.
    pub fn events(&self) -> u64 {
        self.events.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many streams are still open.
    pub fn open_count(&self) -> usize {
        self.tasks.iter().filter(|t| !t.is_finished()).count()
    }
}

impl Drop for SseClients {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What a read load measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    /// Successful requests in the window.
    pub requests: u64,
    /// Failed requests (error, wrong status or wrong length).
    pub errors: u64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Largest latency, ms.
    pub max_ms: f64,
    /// Latency at [`stats::DISTRIBUTION_POINTS`], ms.
    pub distribution: stats::Distribution,
}

/// What each request of a read load sends and must get back.
#[derive(Debug, Clone)]
pub struct ReadSpec {
    /// The path.
    pub path: String,
    /// Extra headers (`Authorization`, `If-None-Match`).
    pub headers: Vec<(String, String)>,
    /// The status every answer must have.
    pub status: u16,
    /// The body length every answer must have.
    pub length: usize,
}

impl ReadSpec {
    /// A plain `GET path` answered 200 with `length` bytes.
    pub fn ok(path: &str, length: usize) -> Self {
        Self {
            path: path.to_owned(),
            headers: Vec::new(),
            status: 200,
            length,
        }
    }

    /// The same request with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The same request expecting an empty `304 Not Modified`.
    pub fn not_modified(mut self) -> Self {
        self.status = 304;
        self.length = 0;
        self
    }
}

/// `connections` keep-alive connections each sending `spec`'s request back to back for
/// `warmup` (not counted) and then `duration`; every answer must match `spec`.
pub async fn load(
    addr: &str,
    spec: &ReadSpec,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let addr = addr.to_owned();
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            let headers: Vec<(&str, &str)> = spec
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let mut conn = Conn::connect(&addr).await?;
            let mut latencies: Vec<f64> = Vec::with_capacity(200_000);
            let mut errors = 0u64;
            tokio::time::sleep_until(start.into()).await;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let outcome = conn.get(&spec.path, &headers).await;
                let done = Instant::now();
                let good = matches!(&outcome, Ok(r) if r.status == spec.status && r.body.len() == spec.length);
                if sent >= measure_from {
                    if good {
                        latencies.push(done.duration_since(sent).as_secs_f64() * 1000.0);
                    } else {
                        errors += 1;
                    }
                }
                if outcome.is_err() {
                    conn = Conn::connect(&addr).await?;
                }
            }
            anyhow::Ok((latencies, errors))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, task_errors) = task.await.context("a load task panicked")??;
        all.extend(latencies);
        errors += task_errors;
    }
    let requests = all.len() as u64;
    let summary = stats::summarize(all).context("the read load completed no request")?;
    Ok(LoadResult {
        requests,
        errors,
        rps: requests as f64 / duration.as_secs_f64(),
        p50_ms: summary.p50,
        p99_ms: summary.p99,
        max_ms: summary.max,
        distribution: summary.distribution,
    })
}

/// An axum server in the bench answering `GET /jobs/{id}/articles` with fixed bytes from
/// memory (a 304 when `If-None-Match` is their ETag), on its own runtime with as many threads
/// as data-streams gets: the read ceiling.
pub struct MemoryServer {
    addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MemoryServer {
    /// Starts serving `response`'s body, content type and ETag.
    pub fn start(response: &Response) -> anyhow::Result<Self> {
        use axum::http::header;
        let body = response.body.clone();
        let content_type = response
            .content_type
            .clone()
            .unwrap_or_else(|| "application/json".to_owned());
        let etag = response.etag.clone();
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("binding the ceiling server")?;
        listener
            .set_nonblocking(true)
            .context("making the ceiling listener non-blocking")?;
        let addr = listener
            .local_addr()
            .context("the ceiling's address")?
            .to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("ceiling-http")
            .build()
            .context("building the ceiling's runtime")?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let handler = move |request: axum::http::HeaderMap| {
                    let body = body.clone();
                    let content_type = content_type.clone();
                    let etag = etag.clone();
                    async move {
                        let unchanged = etag.as_deref().is_some_and(|etag| {
                            request
                                .get(header::IF_NONE_MATCH)
                                .is_some_and(|given| given.as_bytes() == etag.as_bytes())
                        });
                        let mut response = if unchanged {
                            let mut response =
                                axum::response::Response::new(axum::body::Body::empty());
                            *response.status_mut() = axum::http::StatusCode::NOT_MODIFIED;
                            response
                        } else {
                            axum::response::Response::new(axum::body::Body::from(body))
                        };
                        let headers = response.headers_mut();
                        if let Ok(value) = content_type.parse() {
                            headers.insert(header::CONTENT_TYPE, value);
                        }
                        if let Some(Ok(value)) = etag.as_deref().map(str::parse) {
                            headers.insert(header::ETAG, value);
                        }
                        response
                    }
                };
                let app =
                    axum::Router::new().route("/jobs/{id}/articles", axum::routing::get(handler));
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

impl Drop for MemoryServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
