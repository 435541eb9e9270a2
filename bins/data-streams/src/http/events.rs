//! The server-sent event streams: `GET /events` and `GET /jobs/{id}/events`.
//!
//! A stream subscribes to live events first, then replays from the store the batch events
//! after the client's `Last-Event-ID`, then forwards live ones, skipping any batch event it
//! already replayed: no gap, none twice. A client that falls a whole channel behind is ended
//! (it reconnects with `Last-Event-ID`); the comment line every 10 s keeps proxies open.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt as _};
use newsflow_core::{BatchId, JobId};
use tokio::sync::{broadcast, OwnedSemaphorePermit};

use super::error::{AppError, ErrorBody};
use super::jobs::path_job;
use super::AppState;
use crate::events::{Event, Kind};
use crate::state::Shared;
use crate::store::events::EventId;

/// Batch events read from the store at a time while replaying.
const REPLAY_PAGE: usize = 256;
/// A comment line at least this often.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Live events of every job.
#[utoipa::path(get, path = "/events", tag = "events",
    params(("Last-Event-ID" = Option<String>, Header, description = "the id of the last event received: the batch events after it are replayed from the store first")),
    responses(
        (status = 200, description = "`text/event-stream`: `event: batch` (data `{\"job_id\",\"batch\":Batch}`) when a batch reaches a final status; `event: job` (data: Job, or `{\"id\",\"deleted\":true}`) when a job is created, started, stopped, deleted or moves to another worker. Ids sort in time.", content_type = "text/event-stream", body = String),
        (status = 400, description = "Malformed Last-Event-ID", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 503, description = "`too_many_streams`: --max-sse-clients streams are open", body = ErrorBody),
    ))]
pub async fn all(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    open(&state, &headers, None)
}

/// Live events of one job.
#[utoipa::path(get, path = "/jobs/{id}/events", tag = "events",
    params(("id" = String, Path), ("Last-Event-ID" = Option<String>, Header, description = "the id of the last event received")),
    responses(
        (status = 200, description = "`text/event-stream`: the job's `batch` and `job` events, as for /events", content_type = "text/event-stream", body = String),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, description = "`too_many_streams`", body = ErrorBody),
    ))]
pub async fn of_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let job = path_job(&id)?;
    if !state.shared.store.job_exists(&job)? {
        return Err(AppError::job_not_found(job.as_str()));
    }
    open(&state, &headers, Some(job))
}

fn open(state: &AppState, headers: &HeaderMap, job: Option<JobId>) -> Result<Response, AppError> {
    let last = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(resume_point(state, value.to_str().unwrap_or_default())?),
    };
    let shared = state.shared.clone();
    let permit = shared
        .events
        .clients
        .clone()
        .try_acquire_owned()
        .map_err(|_| AppError::TooManyStreams)?;
    // Subscribed before the store is read: whatever is published meanwhile is not lost.
    let live = shared.events.subscribe();
    let client = Client {
        shared: shared.clone(),
        _permit: permit,
    };
    shared.metrics.sse_clients.inc();
    let events = stream(client, live, last, job)
        .take_until(shared.events.closing.clone().cancelled_owned())
        .map(|event| {
            Ok::<_, std::convert::Infallible>(
                SseEvent::default()
                    .id(event.wire_id.as_str())
                    .event(event.kind.name())
                    .data(&event.data),
            )
        });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// Where a stream resumes, from the `Last-Event-ID` a client sent back: after a batch event's
/// batch id, at that event's place in the index; after a job event's ULID (or a batch the index
/// no longer holds), after the millisecond it names, so nothing is missed (a batch event of
/// that very millisecond may come again); the 32-hex ids of earlier versions are positions.
fn resume_point(state: &AppState, text: &str) -> Result<EventId, AppError> {
    if let Some(position) = EventId::parse(text) {
        return Ok(position);
    }
    let bad = || {
        AppError::BadRequest {
        code: "bad_last_event_id",
        message: "Last-Event-ID must be the id of an event this server sent (a batch id or a job event's ULID)".to_owned(),
    }
    };
    let ulid = ulid::Ulid::from_string(text).map_err(|_| bad())?;
    if let Ok(batch) = BatchId::parse(text) {
        if let Some(position) = state.shared.store.batch_event_position(batch)? {
            return Ok(position);
        }
    }
    Ok(EventId::before(ulid.timestamp_ms()))
}

/// An open stream: holds its slot and counts in the gauge until dropped.
struct Client {
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shared.metrics.sse_clients.dec();
    }
}

struct Cursor {
    client: Client,
    live: broadcast::Receiver<Arc<Event>>,
    job: Option<JobId>,
    /// Replaying after this id; `None` once live.
    replay_after: Option<EventId>,
    /// The newest batch event sent: live batch events up to it were replayed already.
    sent_up_to: Option<EventId>,
    page: std::vec::IntoIter<Arc<Event>>,
}

fn stream(
    client: Client,
    live: broadcast::Receiver<Arc<Event>>,
    last: Option<EventId>,
    job: Option<JobId>,
) -> impl Stream<Item = Arc<Event>> {
    let cursor = Cursor {
        client,
        live,
        job,
        replay_after: last,
        sent_up_to: last,
        page: Vec::new().into_iter(),
    };
    futures::stream::unfold(cursor, |mut cursor| async move {
        let event = next(&mut cursor).await?;
        Some((event, cursor))
    })
}

async fn next(cursor: &mut Cursor) -> Option<Arc<Event>> {
    loop {
        if let Some(event) = cursor.page.next() {
            cursor.sent_up_to = Some(event.id);
            return Some(event);
        }
        if let Some(after) = cursor.replay_after {
            let store = &cursor.client.shared.store;
            let found = match store.batch_events_after(after, cursor.job.as_ref(), REPLAY_PAGE) {
                Ok(found) => found,
                Err(error) => {
                    tracing::error!(
                        error = format!("{error:#}"),
                        "replaying batch events failed; ending the stream"
                    );
                    return None;
                }
            };
            cursor.replay_after = match found.last() {
                Some((id, _)) if found.len() == REPLAY_PAGE => Some(*id),
                _ => None,
            };
            cursor.page = found
                .iter()
                .map(|(id, stored)| Arc::new(Event::from_batch(*id, stored)))
                .collect::<Vec<_>>()
                .into_iter();
            continue;
        }
        match cursor.live.recv().await {
            Ok(event) => {
                if cursor.job.as_ref().is_some_and(|job| job != &event.job) {
                    continue;
                }
                if event.kind == Kind::Batch {
                    if cursor.sent_up_to.is_some_and(|sent| event.id <= sent) {
                        continue;
                    }
                    cursor.sent_up_to = Some(event.id);
                }
                return Some(event);
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::info!(
                    missed,
                    "an event stream fell behind; dropping it (it can resume with Last-Event-ID)"
                );
                return None;
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;

    use super::super::{router, AppState};
    use crate::control::{Control, ControlSettings};
    use crate::events::{Event, Kind};
    use crate::state::{Shared, SharedSettings};

    fn app(dir: &std::path::Path) -> (axum::Router, Arc<Shared>) {
        let (ingest, _) = tokio::sync::mpsc::channel(1);
        let shared = Arc::new(Shared::new(
            crate::store::Store::open(dir).expect("the store opens"),
            ingest,
            SharedSettings {
                api_token: None,
                max_body_bytes: 4096,
                max_in_flight: 16,
                default_keep_batches: newsflow_core::KeepBatches::DEFAULT,
                max_sse_clients: 1,
            },
        ));
        shared.role.control_alone();
        let control = Arc::new(Control::new(ControlSettings {
            worker_timeout: Duration::from_secs(15),
            reconcile_every: Duration::from_secs(5),
            command_timeout: Duration::from_secs(2),
            rebalance: false,
        }));
        (
            router(AppState {
                shared: shared.clone(),
                control,
            }),
            shared,
        )
    }

    fn events() -> Request<Body> {
        Request::get("/events")
            .body(Body::empty())
            .expect("a request")
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_gets_a_comment_line_within_fifteen_seconds() {
        use futures::StreamExt as _;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (app, _shared) = app(dir.path());
        let response = app.oneshot(events()).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        let started = tokio::time::Instant::now();
        let mut body = response.into_body().into_data_stream();
        let frame = body.next().await.expect("a frame").expect("readable");
        assert!(frame.starts_with(b":"), "{frame:?}");
        assert!(
            started.elapsed() <= Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_client_a_whole_channel_behind_is_dropped_and_its_slot_freed() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (app, shared) = app(dir.path());
        let response = app.clone().oneshot(events()).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(shared.metrics.sse_clients.get(), 1);
        let job = newsflow_core::JobId::parse("busy").expect("valid");
        // Publishing never waits for the client, however far behind it is.
        for _ in 0..crate::events::CHANNEL + 10 {
            shared.events.publish(Event {
                id: shared.store.next_event_id(),
                wire_id: String::new(),
                kind: Kind::Job,
                job: job.clone(),
                data: "{}".to_owned(),
            });
        }
        // When it reads at last, its stream ends rather than delivering a stale backlog.
        let body = tokio::time::timeout(
            Duration::from_secs(5),
            axum::body::to_bytes(response.into_body(), usize::MAX),
        )
        .await
        .expect("the lagging stream ends")
        .expect("a body");
        assert!(body.is_empty(), "{}", String::from_utf8_lossy(&body));
        assert_eq!(shared.metrics.sse_clients.get(), 0);
        let again = app.oneshot(events()).await.expect("infallible");
        assert_eq!(again.status(), StatusCode::OK, "the slot is free again");
    }
}
