//! Command payloads on `news.ctl.*`. All JSON; every payload from the network is parsed with
//! a size cap and full validation before anything acts on it.

use std::fmt;

use newsflow_core::digest::{DigestHash, JobSetDigest};
use newsflow_core::{ErrorInfo, JobId, JobSpec};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The largest command payload accepted; anything larger is answered with an error.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// A worker's id: 1 to 64 of `[A-Za-z0-9_-]`, so it is a single subject token.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WorkerId(String);

impl WorkerId {
    /// Parses an id given on the command line or the wire.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!(
                "worker id {raw:?} must be 1 to 64 letters, digits, '_' or '-'"
            ))
        }
    }

    /// A fresh id, unique per process: `w-` and a lowercase ULID.
    pub fn generate() -> Self {
        Self(format!(
            "w-{}",
            ulid::Ulid::new().to_string().to_ascii_lowercase()
        ))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for WorkerId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<WorkerId> for String {
    fn from(id: WorkerId) -> Self {
        id.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for WorkerId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// `news.ctl.start` or `news.ctl.worker.<id>.start`: run this job on its interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartJob {
    /// The whole job, re-validated by the worker.
    pub job: JobSpec,
    /// The first run is not made before this time (absent: at once). Sent when a job moves
    /// between workers, so the move does not add a run to its schedule.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "newsflow_core::rfc3339::option"
    )]
    pub not_before: Option<OffsetDateTime>,
}

impl StartJob {
    /// Start `job` with its first run at once.
    pub fn now(job: JobSpec) -> Self {
        Self {
            job,
            not_before: None,
        }
    }
}

/// `news.ctl.worker.<id>.stop`: stop running this job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopJob {
    /// The job to stop.
    pub job_id: JobId,
}

/// The reply to a command: `{"ok":true,"worker_id","job_id"}` or
/// `{"ok":false,"error":{"code","message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawAck", into = "RawAck")]
pub enum Ack {
    /// The worker did it.
    Ok {
        /// Who acknowledged.
        worker_id: WorkerId,
        /// Which job.
        job_id: JobId,
    },
    /// The worker refused; `error` says why.
    Err(ErrorInfo),
}

#[derive(Serialize, Deserialize)]
struct RawAck {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    worker_id: Option<WorkerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    job_id: Option<JobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<ErrorInfo>,
}

impl TryFrom<RawAck> for Ack {
    type Error = String;
    fn try_from(raw: RawAck) -> Result<Self, Self::Error> {
        match raw {
            RawAck {
                ok: true,
                worker_id: Some(worker_id),
                job_id: Some(job_id),
                ..
            } => Ok(Self::Ok { worker_id, job_id }),
            RawAck {
                ok: false,
                error: Some(error),
                ..
            } => Ok(Self::Err(error)),
            _ => Err(
                "an ack is {ok:true,worker_id,job_id} or {ok:false,error:{code,message}}"
                    .to_owned(),
            ),
        }
    }
}

impl From<Ack> for RawAck {
    fn from(ack: Ack) -> Self {
        match ack {
            Ack::Ok { worker_id, job_id } => Self {
                ok: true,
                worker_id: Some(worker_id),
                job_id: Some(job_id),
                error: None,
            },
            Ack::Err(error) => Self {
                ok: false,
                worker_id: None,
                job_id: None,
                error: Some(error),
            },
        }
    }
}

/// A worker running at most this many jobs lists them all in its heartbeats; above it, a
/// heartbeat carries only the count and digest (20,000 ids would be about 600 KB).
pub const HEARTBEAT_LIST_MAX: usize = 1000;

/// `news.ctl.heartbeat`: which jobs a worker runs now, as a digest of the set (always, from
/// this version on) and the sorted list itself when it holds at most [`HEARTBEAT_LIST_MAX`].
/// A heartbeat from an older worker has only the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The worker.
    pub worker_id: WorkerId,
    /// The jobs it runs, sorted, when there are few enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<Vec<JobId>>,
    /// How many jobs it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// The [`JobSetDigest`] of the jobs it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<DigestHash>,
    /// When it said so.
    #[serde(with = "newsflow_core::rfc3339")]
    pub at: OffsetDateTime,
}

impl Heartbeat {
    /// The heartbeat of a worker running `jobs` (sorted, without repeats) whose digest is
    /// `digest`: the list goes along when it is short enough.
    pub fn new(
        worker_id: WorkerId,
        jobs: impl FnOnce() -> Vec<JobId>,
        digest: JobSetDigest,
        at: OffsetDateTime,
    ) -> Self {
        let listed = usize::try_from(digest.count()).is_ok_and(|n| n <= HEARTBEAT_LIST_MAX);
        Self {
            worker_id,
            jobs: listed.then(jobs),
            count: Some(digest.count()),
            digest: Some(digest.wire_hash()),
            at,
        }
    }

    /// The digest of the jobs the worker runs: as sent, or computed from the list of an older
    /// worker. An error when the heartbeat carries neither, or a list that disagrees with its
    /// own digest.
    pub fn job_set(&self) -> Result<JobSetDigest, PayloadError> {
        let sent = match (self.digest, self.count) {
            (Some(hash), Some(count)) => Some(JobSetDigest::from_parts(hash.0, count)),
            (None, None) => None,
            _ => {
                return Err(PayloadError::Invalid(
                    "a heartbeat carries both digest and count, or neither".to_owned(),
                ))
            }
        };
        match (&self.jobs, sent) {
            (Some(jobs), Some(sent)) => {
                let listed = JobSetDigest::of(jobs);
                if listed == sent {
                    Ok(sent)
                } else {
                    Err(PayloadError::Invalid(format!(
                        "the heartbeat's list has digest {listed}, but it says {sent}"
                    )))
                }
            }
            (Some(jobs), None) => Ok(JobSetDigest::of(jobs)),
            (None, Some(sent)) => Ok(sent),
            (None, None) => Err(PayloadError::Invalid(
                "a heartbeat carries its jobs, its digest, or both".to_owned(),
            )),
        }
    }
}

/// `news.ctl.worker.<id>.jobs`: a page of the sorted ids of the jobs a worker runs, asked for
/// when its heartbeat's digest disagrees with what data-streams recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListJobs {
    /// Only ids after this one; absent: from the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<JobId>,
    /// At most this many ids, 1 to [`LIST_JOBS_MAX`].
    pub limit: u32,
}

/// The most ids one [`JobsPage`] holds (about 650 KB of JSON at the longest ids).
pub const LIST_JOBS_MAX: u32 = 10_000;

/// The reply to [`ListJobs`] (or an `ok:false` [`Ack`] when the request was invalid).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsPage {
    /// Sorted ids, after `after`.
    pub jobs: Vec<JobId>,
    /// The `after` of the next page; `None` on the last.
    pub next: Option<JobId>,
}

/// What a worker says about a job it runs, after each run: kept in the plans bucket under the
/// job's id, so `GET /jobs/{id}` can show when it runs next and whether it keeps failing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPlan {
    /// The worker running the job.
    pub worker_id: WorkerId,
    /// When its next run is due; `None` once it stopped here.
    #[serde(with = "newsflow_core::rfc3339::option", default)]
    pub next_run_at: Option<OffsetDateTime>,
    /// Runs in a row that ended without a complete batch (failed, unpublished or skipped).
    pub consecutive_failures: u32,
    /// The latest run skipped for lack of request budget, which no marker reports.
    #[serde(default)]
    pub skipped: Option<SkippedRun>,
    /// When the worker said so.
    #[serde(with = "newsflow_core::rfc3339")]
    pub at: OffsetDateTime,
}

/// A run that was not made, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRun {
    /// When.
    #[serde(with = "newsflow_core::rfc3339")]
    pub at: OffsetDateTime,
    /// Why (`budget_exhausted`, `budget_unavailable`).
    pub error: ErrorInfo,
}

/// Why a command payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Larger than the cap.
    #[error("payload is {size} bytes; the limit is {cap}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The cap.
        cap: usize,
    },
    /// Not the expected JSON.
    #[error("payload is not a valid command: {0}")]
    Invalid(String),
}

impl PayloadError {
    /// The error as an `ok:false` ack carries it.
    pub fn to_info(&self) -> ErrorInfo {
        match self {
            Self::TooLarge { .. } => ErrorInfo::new("payload_too_large", self.to_string()),
            Self::Invalid(_) => ErrorInfo::new("invalid_payload", self.to_string()),
        }
    }
}

/// The largest heartbeat accepted: a worker with tens of thousands of jobs lists them all.
pub const MAX_HEARTBEAT_BYTES: usize = 1024 * 1024;

/// Parses a command payload from the network: size-capped, then strict JSON.
pub fn parse_payload<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, PayloadError> {
    parse_capped(payload, MAX_COMMAND_BYTES)
}

/// Parses a payload with its own size cap.
pub fn parse_capped<T: serde::de::DeserializeOwned>(
    payload: &[u8],
    cap: usize,
) -> Result<T, PayloadError> {
    if payload.len() > cap {
        return Err(PayloadError::TooLarge {
            size: payload.len(),
            cap,
        });
    }
    serde_json::from_slice(payload).map_err(|e| PayloadError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn acks_have_the_contract_shape() {
        let ok = Ack::Ok {
            worker_id: WorkerId::parse("w1").expect("valid"),
            job_id: JobId::parse("j").expect("valid"),
        };
        assert_eq!(
            serde_json::to_value(&ok).expect("serializes"),
            json!({"ok":true,"worker_id":"w1","job_id":"j"})
        );
        let err = Ack::Err(ErrorInfo::new("invalid_payload", "bad"));
        assert_eq!(
            serde_json::to_value(&err).expect("serializes"),
            json!({"ok":false,"error":{"code":"invalid_payload","message":"bad"}})
        );
        assert!(serde_json::from_value::<Ack>(json!({"ok":true})).is_err());
    }

    #[test]
    fn garbage_commands_are_refused_with_a_reason() {
        assert!(matches!(
            parse_payload::<StartJob>(b"not json"),
            Err(PayloadError::Invalid(_))
        ));
        assert!(matches!(
            parse_payload::<StartJob>(br#"{"job":{"id":"Bad"}}"#),
            Err(PayloadError::Invalid(_))
        ));
        assert!(matches!(
            parse_payload::<StopJob>(br#"{"job_id":"a","extra":1}"#),
            Err(PayloadError::Invalid(_))
        ));
        let big = vec![b' '; MAX_COMMAND_BYTES + 1];
        assert_eq!(
            parse_payload::<StopJob>(&big).map_err(|e| e.to_info().code),
            Err("payload_too_large".to_owned())
        );
    }

    #[test]
    fn worker_ids_are_single_subject_tokens() {
        assert!(WorkerId::parse(WorkerId::generate().as_str()).is_ok());
        for bad in ["", "a.b", "a b", "a>", "*"] {
            assert!(WorkerId::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_command_parsers(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_payload::<StartJob>(&bytes);
            let _ = parse_payload::<StopJob>(&bytes);
            let _ = parse_payload::<Heartbeat>(&bytes);
            let _ = parse_payload::<Ack>(&bytes);
        }
    }
}
