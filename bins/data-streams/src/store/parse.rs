//! Parsing of stream messages: subject first, then the payload, which must agree with it;
//! anything else is poison.

use newsflow_core::{ArticleMessage, BatchId, BatchMarker, JobId, JobSpec};
use newsflow_nats::subjects::{self, DataKind};

/// The largest seq accepted from the stream (10 pages of 100 is 1,000; external publishers get
/// room, but not enough to make a marker's count scan unbounded).
pub const MAX_SEQ: u32 = 100_000;

/// A stream message, understood.
#[derive(Debug)]
pub enum Parsed {
    /// An article of a batch.
    Article {
        /// The job.
        job: JobId,
        /// The batch.
        batch: BatchId,
        /// Its place in the batch.
        seq: u32,
        /// The article as the HTTP API serves it, serialized once here.
        json: Vec<u8>,
    },
    /// A batch's end marker.
    Marker {
        /// The marker (boxed, like the spec: both dwarf an article's variant).
        marker: Box<BatchMarker>,
        /// The job's spec, when the publisher attached it.
        spec: Option<Box<JobSpec>>,
    },
    /// Not something this stream should hold.
    Poison(String),
}

/// Parses one stream message: subject first, then the payload, which must agree with it.
pub fn parse(subject: &str, spec_header: Option<&str>, payload: &[u8]) -> Parsed {
    let Some(data) = subjects::parse_data(subject) else {
        return Parsed::Poison(
            "subject is not news.articles.<job_id>.<batch_id> or news.batches.<job_id>.<batch_id>"
                .to_owned(),
        );
    };
    match data.kind {
        DataKind::Article => {
            let message: ArticleMessage = match serde_json::from_slice(payload) {
                Ok(message) => message,
                Err(e) => return Parsed::Poison(format!("article payload is not valid: {e}")),
            };
            let mut article = message.article;
            if article.job_id != data.job || article.batch_id != data.batch {
                return Parsed::Poison(
                    "article's job_id/batch_id disagree with its subject".to_owned(),
                );
            }
            if message.seq >= MAX_SEQ {
                return Parsed::Poison(format!(
                    "article seq {} is above the limit {MAX_SEQ}",
                    message.seq
                ));
            }
            article.id = newsflow_core::ArticleId::from_url(&article.url);
            match serde_json::to_vec(&article) {
                Ok(json) => Parsed::Article {
                    job: data.job,
                    batch: data.batch,
                    seq: message.seq,
                    json,
                },
                Err(e) => Parsed::Poison(format!("article cannot be re-encoded: {e}")),
            }
        }
        DataKind::Marker => {
            let marker: BatchMarker = match serde_json::from_slice(payload) {
                Ok(marker) => marker,
                Err(e) => return Parsed::Poison(format!("marker payload is not valid: {e}")),
            };
            if marker.job_id != data.job || marker.batch_id != data.batch {
                return Parsed::Poison(
                    "marker's job_id/batch_id disagree with its subject".to_owned(),
                );
            }
            if marker.article_count > MAX_SEQ {
                return Parsed::Poison(format!(
                    "marker article_count {} is above the limit {MAX_SEQ}",
                    marker.article_count
                ));
            }
            let spec = spec_header
                .and_then(|text| serde_json::from_str::<JobSpec>(text).ok())
                .filter(|spec| spec.id() == &marker.job_id);
            Parsed::Marker {
                marker: Box::new(marker),
                spec: spec.map(Box::new),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn garbage_and_mismatched_messages_are_poison() {
        let batch = BatchId::generate();
        assert!(matches!(
            parse("news.other.x", None, b"{}"),
            Parsed::Poison(_)
        ));
        assert!(matches!(
            parse(&format!("news.articles.j.{batch}"), None, b"not json"),
            Parsed::Poison(_)
        ));
        assert!(matches!(
            parse(&format!("news.batches.j.{batch}"), None, b"{\"job_id\":1}"),
            Parsed::Poison(_)
        ));
        let other = BatchId::generate();
        let marker = format!(
            r#"{{"job_id":"j","batch_id":"{other}","status":"complete","article_count":0,"started_at":"2026-11-20T08:00:00Z","finished_at":"2026-11-20T08:00:01Z","error":null}}"#
        );
        assert!(matches!(
            parse(&format!("news.batches.j.{batch}"), None, marker.as_bytes()),
            Parsed::Poison(_)
        ));
    }

    /// A stream message: mostly the stream's subject shapes and payloads whose job and batch
    /// agree with the subject, with fields replaced by arbitrary values; sometimes anything.
    fn message() -> impl Strategy<Value = (String, Vec<u8>)> {
        let kind = prop_oneof![
            6 => proptest::sample::select(vec!["articles", "batches"]),
            1 => proptest::sample::select(vec!["ctl", "", "articles.x", "Articles"]),
        ];
        let job = prop_oneof![
            6 => "[a-z0-9][a-z0-9_-]{0,8}",
            1 => ".{0,10}",
        ];
        let batch = prop_oneof![
            6 => any::<u128>().prop_map(|n| ulid::Ulid(n).to_string()),
            1 => "[0-9A-Za-z]{0,30}",
        ];
        let value = prop_oneof![
            Just(serde_json::Value::Null),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u32>().prop_map(serde_json::Value::from),
            (MAX_SEQ - 2..MAX_SEQ + 2).prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            ".{0,20}".prop_map(serde_json::Value::from),
            Just(serde_json::json!({"id":null,"name":"x"})),
            Just(serde_json::json!({"code":"c","message":"m"})),
            Just(serde_json::json!("2026-11-20T08:00:00Z")),
            Just(serde_json::json!("https://example.com/a")),
            proptest::sample::select(vec!["complete", "failed", "in_progress"])
                .prop_map(serde_json::Value::from),
        ];
        let field = proptest::sample::select(vec![
            "id",
            "job_id",
            "batch_id",
            "source",
            "author",
            "title",
            "description",
            "url",
            "url_to_image",
            "published_at",
            "content",
            "fetched_at",
            "seq",
            "status",
            "article_count",
            "started_at",
            "finished_at",
            "error",
            "extra",
        ]);
        let structured = (
            kind,
            job,
            batch,
            any::<bool>(),
            proptest::collection::vec((field, value), 0..3),
        )
            .prop_map(|(kind, job, batch, is_article, changes)| {
                let mut base = if is_article {
                    serde_json::json!({
                        "id":"00000000000000000000000000000000","job_id":job,"batch_id":batch,
                        "source":{"id":null,"name":"n"},"author":null,"title":"t",
                        "description":null,"url":"https://example.com/a","url_to_image":null,
                        "published_at":null,"content":null,"fetched_at":"2026-11-20T08:00:00Z",
                        "seq":0
                    })
                } else {
                    serde_json::json!({
                        "job_id":job,"batch_id":batch,"status":"complete","article_count":1,
                        "started_at":"2026-11-20T08:00:00Z",
                        "finished_at":"2026-11-20T08:00:01Z","error":null
                    })
                };
                for (name, value) in changes {
                    base[name] = value;
                }
                let payload = serde_json::to_vec(&base).unwrap_or_default();
                (format!("news.{kind}.{job}.{batch}"), payload)
            });
        prop_oneof![
            3 => structured,
            1 => (".{0,60}", proptest::collection::vec(any::<u8>(), 0..256)),
        ]
    }

    proptest! {
        /// The stream-message parser on arbitrary subjects, payloads and spec headers: never
        /// panics, and an article it accepts belongs to the subject's job and batch.
        #[test]
        fn arbitrary_stream_messages_never_panic_the_parser(
            (subject, payload) in message(),
            header in proptest::option::of(prop_oneof![
                ".{0,40}",
                Just(r#"{"id":"j","endpoint":"everything","params":{"q":"x"},"interval_secs":1,"max_pages":1,"page_size":1}"#.to_owned()),
            ]),
        ) {
            match parse(&subject, header.as_deref(), &payload) {
                Parsed::Article { job, batch, seq, json } => {
                    let data = subjects::parse_data(&subject).expect("an accepted subject parses");
                    prop_assert_eq!(&job, &data.job);
                    prop_assert_eq!(batch, data.batch);
                    prop_assert!(seq < MAX_SEQ);
                    let article: newsflow_core::Article = serde_json::from_slice(&json).expect("stored JSON re-parses");
                    prop_assert_eq!(article.id, newsflow_core::ArticleId::from_url(&article.url));
                }
                Parsed::Marker { marker, spec } => {
                    prop_assert!(marker.article_count <= MAX_SEQ);
                    if let Some(spec) = spec {
                        prop_assert_eq!(spec.id(), &marker.job_id);
                    }
                }
                Parsed::Poison(reason) => prop_assert!(!reason.is_empty()),
            }
        }
    }
}
