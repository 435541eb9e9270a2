//! One printed line per message, decided from its subject and payload alone, so the format is
//! unit-tested without a broker.

use newsflow_core::{ArticleMessage, BatchMarker, MarkerStatus};
use newsflow_nats::subjects::{self, DataKind};
use time::macros::format_description;
use time::OffsetDateTime;

/// How many characters of a payload that is neither an article nor a marker are shown.
pub const RAW_PAYLOAD_CHARS: usize = 200;
/// How many characters of any one text field (a title, a source name) are shown.
const FIELD_CHARS: usize = 160;

/// The line for a message on `subject` with `payload`, received at `received`:
/// - article: `HH:MM:SS  <job>  <source>  <title>  (published <time>)`
/// - marker: `HH:MM:SS  <job>  batch <id> <status> <n> articles` (and the error of a failed one)
/// - anything else, or a payload that does not parse: `HH:MM:SS  <subject>  <payload>`, cut.
///
/// Payload text comes from the network, so control characters are replaced: a title must
/// not be able to move the cursor or recolour the terminal.
pub fn format(subject: &str, payload: &[u8], received: OffsetDateTime) -> String {
    let clock = clock(received);
    let parsed = subjects::parse_data(subject).and_then(|data| match data.kind {
        DataKind::Article => serde_json::from_slice::<ArticleMessage>(payload)
            .ok()
            .map(|message| article(&message)),
        DataKind::Marker => serde_json::from_slice::<BatchMarker>(payload)
            .ok()
            .map(|marker| batch(&marker)),
    });
    match parsed {
        Some(text) => format!("{clock}  {text}"),
        None => format!(
            "{clock}  {}  {}",
            clean(subject, FIELD_CHARS),
            clean(&String::from_utf8_lossy(payload), RAW_PAYLOAD_CHARS)
        ),
    }
}

fn article(message: &ArticleMessage) -> String {
    let article = &message.article;
    let source = article.source.name.as_deref().unwrap_or("(no source)");
    let title = article.title.as_deref().unwrap_or("(no title)");
    let mut line = format!(
        "{}  {}  {}",
        article.job_id,
        clean(source, FIELD_CHARS),
        clean(title, FIELD_CHARS)
    );
    if let Some(published) = article.published_at.and_then(rfc3339) {
        line.push_str(&format!("  (published {published})"));
    }
    line
}

fn batch(marker: &BatchMarker) -> String {
    let status = match marker.status {
        MarkerStatus::Complete => "complete",
        MarkerStatus::Failed => "failed",
    };
    let mut line = format!(
        "{}  batch {} {status} {} articles",
        marker.job_id, marker.batch_id, marker.article_count
    );
    if let Some(error) = &marker.error {
        line.push_str(&format!(
            ": {} ({})",
            clean(&error.message, FIELD_CHARS),
            clean(&error.code, FIELD_CHARS)
        ));
    }
    line
}

fn clock(at: OffsetDateTime) -> String {
    at.format(format_description!("[hour]:[minute]:[second]"))
        .unwrap_or_else(|_| "--:--:--".to_owned())
}

fn rfc3339(at: OffsetDateTime) -> Option<String> {
    at.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// `text` on one line, control characters replaced by spaces, cut to `max` characters with
/// `…` marking the cut.
fn clean(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use newsflow_core::{Article, ArticleId, BatchId, ErrorInfo, JobId, Source};
    use time::macros::datetime;

    use super::*;

    const RECEIVED: OffsetDateTime = datetime!(2026-12-02 06:21:03 UTC);

    fn job() -> JobId {
        JobId::parse("demo").expect("a valid job id")
    }

    fn batch_id() -> BatchId {
        BatchId::parse("01JDEMXQ000000000000000000").expect("a valid batch id")
    }

    fn article_message(title: Option<&str>) -> ArticleMessage {
        let url = "https://example.com/a".to_owned();
        ArticleMessage {
            article: Article {
                id: ArticleId::from_url(&url),
                job_id: job(),
                batch_id: batch_id(),
                source: Source {
                    id: None,
                    name: Some("Circuit Review".to_owned()),
                },
                author: None,
                title: title.map(str::to_owned),
                description: None,
                url,
                url_to_image: None,
                published_at: Some(datetime!(2026-11-20 12:00:00 UTC)),
                content: None,
                fetched_at: RECEIVED,
                extra: None,
            },
            seq: 0,
        }
    }

    fn marker(status: MarkerStatus, error: Option<ErrorInfo>) -> BatchMarker {
        BatchMarker {
            job_id: job(),
            batch_id: batch_id(),
            status,
            article_count: 20,
            started_at: RECEIVED,
            finished_at: RECEIVED,
            error,
            fetched_count: None,
            dropped: None,
        }
    }

    fn line_for(subject: &str, payload: &[u8]) -> String {
        format(subject, payload, RECEIVED)
    }

    #[test]
    fn an_article_shows_its_job_source_title_and_publication_time() {
        let message = article_message(Some("Bitcoin lifts small businesses"));
        let payload = serde_json::to_vec(&message).expect("serializes");
        let subject = subjects::articles(&job(), batch_id());

        assert_eq!(
            line_for(&subject, &payload),
            "06:21:03  demo  Circuit Review  Bitcoin lifts small businesses  (published 2026-11-20T12:00:00Z)"
        );
    }

    #[test]
    fn an_article_without_a_title_says_so() {
        let payload = serde_json::to_vec(&article_message(None)).expect("serializes");
        let subject = subjects::articles(&job(), batch_id());

        assert!(line_for(&subject, &payload).contains("Circuit Review  (no title)"));
    }

    #[test]
    fn a_complete_marker_shows_the_batch_and_its_article_count() {
        let payload =
            serde_json::to_vec(&marker(MarkerStatus::Complete, None)).expect("serializes");
        let subject = subjects::batch_marker(&job(), batch_id());

        assert_eq!(
            line_for(&subject, &payload),
            "06:21:03  demo  batch 01JDEMXQ000000000000000000 complete 20 articles"
        );
    }

    #[test]
    fn a_failed_marker_shows_why() {
        let error = ErrorInfo::new("rate_limited", "NewsAPI said slow down");
        let payload =
            serde_json::to_vec(&marker(MarkerStatus::Failed, Some(error))).expect("serializes");
        let subject = subjects::batch_marker(&job(), batch_id());

        assert!(line_for(&subject, &payload)
            .ends_with("failed 20 articles: NewsAPI said slow down (rate_limited)"));
    }

    #[test]
    fn other_subjects_show_the_subject_and_the_raw_payload() {
        let line = line_for("news.ctl.heartbeat", br#"{"worker_id":"w-1","jobs":[]}"#);

        assert_eq!(
            line,
            r#"06:21:03  news.ctl.heartbeat  {"worker_id":"w-1","jobs":[]}"#
        );
    }

    #[test]
    fn an_article_subject_with_a_payload_that_does_not_parse_is_shown_raw() {
        let subject = subjects::articles(&job(), batch_id());

        assert_eq!(
            line_for(&subject, b"not json"),
            format!("06:21:03  {subject}  not json")
        );
    }

    #[test]
    fn long_raw_payloads_are_cut_with_a_mark() {
        let payload = "x".repeat(RAW_PAYLOAD_CHARS + 50);

        let line = line_for("other.subject", payload.as_bytes());

        let shown = line.rsplit("  ").next().expect("a payload column");
        assert_eq!(shown.chars().count(), RAW_PAYLOAD_CHARS + 1);
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn control_characters_from_the_network_never_reach_the_terminal() {
        let message = article_message(Some("evil\u{1b}[2J\ntitle"));
        let payload = serde_json::to_vec(&message).expect("serializes");
        let subject = subjects::articles(&job(), batch_id());

        let line = line_for(&subject, &payload);

        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(line.contains("evil [2J title"));
        let raw = line_for("x", b"a\x07b\xffc");
        assert!(!raw.chars().any(char::is_control), "{raw:?}");
    }
}
