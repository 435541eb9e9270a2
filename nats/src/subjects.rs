//! Every subject and message id of the contract, built and parsed in one place.

use newsflow_core::{BatchId, JobId};

use crate::wire::WorkerId;

/// Start commands, request-reply, taken by one worker of [`WORKERS_QUEUE`].
pub const START: &str = "news.ctl.start";
/// The queue group workers take start commands in.
pub const WORKERS_QUEUE: &str = "workers";
/// Worker heartbeats.
pub const HEARTBEAT: &str = "news.ctl.heartbeat";
/// Job-changing HTTP requests a read replica forwards to the data-streams that controls jobs
/// (request-reply; only the lease holder subscribes).
pub const CONTROL_API: &str = "news.ctl.api";
/// Everything under the control prefix.
pub const CONTROL_WILDCARD: &str = "news.ctl.>";
/// The stream.
pub const STREAM: &str = "NEWS";
/// The stream's article subjects.
pub const ARTICLES_WILDCARD: &str = "news.articles.>";
/// The stream's marker subjects.
pub const BATCHES_WILDCARD: &str = "news.batches.>";
/// Optional marker header carrying the job's spec as JSON, so a store rebuilt from the
/// stream alone can recreate jobs it lost.
pub const JOB_SPEC_HEADER: &str = "Newsflow-Job-Spec";
/// Optional header naming the publishing worker.
pub const WORKER_HEADER: &str = "Newsflow-Worker";

/// `news.ctl.worker.<worker_id>.start`: a start for one worker, so data-streams can place
/// jobs evenly rather than leave it to the queue group's random pick.
pub fn start_on(worker: &WorkerId) -> String {
    format!("news.ctl.worker.{worker}.start")
}

/// `news.ctl.worker.<worker_id>.jobs`: pages of the jobs one worker runs.
pub fn worker_jobs(worker: &WorkerId) -> String {
    format!("news.ctl.worker.{worker}.jobs")
}

/// `news.ctl.worker.<worker_id>.stop`.
pub fn stop(worker: &WorkerId) -> String {
    format!("news.ctl.worker.{worker}.stop")
}

/// `news.articles.<job_id>.*`: every article of one job.
pub fn job_articles(job: &JobId) -> String {
    format!("news.articles.{job}.*")
}

/// `news.batches.<job_id>.*`: every marker of one job.
pub fn job_batches(job: &JobId) -> String {
    format!("news.batches.{job}.*")
}

/// `news.articles.<job_id>.<batch_id>`.
pub fn articles(job: &JobId, batch: BatchId) -> String {
    format!("news.articles.{job}.{batch}")
}

/// `news.batches.<job_id>.<batch_id>`.
pub fn batch_marker(job: &JobId, batch: BatchId) -> String {
    format!("news.batches.{job}.{batch}")
}

/// `<job_id>.<batch_id>.<seq>`: an article's `Nats-Msg-Id`.
pub fn article_msg_id(job: &JobId, batch: BatchId, seq: u32) -> String {
    format!("{job}.{batch}.{seq}")
}

/// `<job_id>.<batch_id>.end`: a marker's `Nats-Msg-Id`.
pub fn marker_msg_id(job: &JobId, batch: BatchId) -> String {
    format!("{job}.{batch}.end")
}

/// What a stream message is, read from its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// `news.articles.*.*`
    Article,
    /// `news.batches.*.*`
    Marker,
}

/// A parsed stream subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSubject {
    /// Article or marker.
    pub kind: DataKind,
    /// The job.
    pub job: JobId,
    /// The batch.
    pub batch: BatchId,
}

/// Parses `news.articles.<job>.<batch>` or `news.batches.<job>.<batch>`; `None` for anything
/// else (a poison message).
pub fn parse_data(subject: &str) -> Option<DataSubject> {
    let mut parts = subject.split('.');
    let (Some("news"), Some(kind), Some(job), Some(batch), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let kind = match kind {
        "articles" => DataKind::Article,
        "batches" => DataKind::Marker,
        _ => return None,
    };
    Some(DataSubject {
        kind,
        job: JobId::parse(job).ok()?,
        batch: BatchId::parse(batch).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_subjects_round_trip() {
        let job = JobId::parse("bitcoin").expect("valid");
        let batch = BatchId::generate();
        assert_eq!(
            parse_data(&articles(&job, batch)),
            Some(DataSubject {
                kind: DataKind::Article,
                job: job.clone(),
                batch
            })
        );
        assert_eq!(
            parse_data(&batch_marker(&job, batch)),
            Some(DataSubject {
                kind: DataKind::Marker,
                job: job.clone(),
                batch
            })
        );
        assert_eq!(article_msg_id(&job, batch, 7), format!("bitcoin.{batch}.7"));
        assert_eq!(marker_msg_id(&job, batch), format!("bitcoin.{batch}.end"));
    }

    #[test]
    fn foreign_subjects_are_not_data() {
        let batch = BatchId::generate();
        for subject in [
            "news.articles.bitcoin".to_owned(),
            format!("news.articles.Bad.{batch}"),
            "news.articles.bitcoin.not-a-ulid".to_owned(),
            format!("news.articles.bitcoin.{batch}.extra"),
            format!("news.other.bitcoin.{batch}"),
            format!("olds.articles.bitcoin.{batch}"),
        ] {
            assert_eq!(parse_data(&subject), None, "{subject}");
        }
    }
}
