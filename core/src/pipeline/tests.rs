//! The pipeline as a whole: parsing a job's `pipeline` field, drop counts, and the properties
//! every stage keeps (a pipeline never grows a batch, and changes a kept article only as its
//! stages say).

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::{ArticleId, BatchId, JobId};

/// An article with `url`, `title` and `description`, the rest empty.
pub fn article_with(url: &str, title: &str, description: Option<&str>) -> Article {
    Article {
        id: ArticleId::from_url(url),
        job_id: JobId::parse("j").expect("valid"),
        batch_id: BatchId::from_parts(1_000, 0),
        source: crate::Source::default(),
        author: None,
        title: Some(title.to_owned()),
        description: description.map(str::to_owned),
        url: url.to_owned(),
        url_to_image: None,
        published_at: None,
        content: None,
        fetched_at: time::OffsetDateTime::UNIX_EPOCH,
        extra: None,
    }
}

fn refusal(value: Value) -> ValidationError {
    Pipeline::parse(&value).expect_err("refused")
}

#[test]
fn every_stage_type_parses_and_round_trips() {
    let value = json!([
        {"type":"filter","include":["ai","open source"],"exclude":["sponsored"],"fields":["title","content"]},
        {"type":"domains","allow":["example.com"],"deny":["ads.example.com"]},
        {"type":"dedupe","window_batches":3},
        {"type":"enrich","add":["domain","word_count","reading_time_secs"]},
        {"type":"fields","drop":["content","url_to_image"]},
        {"type":"limit","max":10}
    ]);
    let pipeline = Pipeline::parse(&value).expect("valid");
    assert_eq!(pipeline.stages().len(), 6);
    assert_eq!(pipeline.memory_window(), 3);
    assert!(pipeline.whole_batch(), "limit needs the whole batch");
    let per_article = Pipeline::parse(
        &json!([{"type":"filter","include":["x"]},{"type":"dedupe","window_batches":1}]),
    )
    .expect("valid");
    assert!(!per_article.whole_batch());
    assert_eq!(serde_json::to_value(&pipeline).expect("serializes"), value);
    let back: Pipeline = serde_json::from_value(value).expect("deserializes");
    assert_eq!(back, pipeline);
}

#[test]
fn a_filter_without_fields_reads_title_and_description() {
    let pipeline = Pipeline::parse(&json!([{"type":"filter","include":["x"]}])).expect("valid");
    assert_eq!(
        serde_json::to_value(&pipeline).expect("serializes"),
        json!([{"type":"filter","include":["x"],"fields":["title","description"]}])
    );
}

#[test]
fn each_bad_stage_is_named_with_what_is_wrong() {
    let cases = [
        (json!({"type":"filter"}), "pipeline", "invalid_type", "list"),
        (
            json!([{"type":"sharpen"}]),
            "pipeline[0]",
            "unknown_stage",
            "sharpen",
        ),
        (
            json!([{"include":["x"]}]),
            "pipeline[0]",
            "invalid_stage",
            "type",
        ),
        (json!(["filter"]), "pipeline[0]", "invalid_stage", "object"),
        (
            json!([{"type":"limit","max":1},{"type":"filter","include":["x"],"colour":"red"}]),
            "pipeline[1]",
            "invalid_stage",
            "colour",
        ),
        (
            json!([{"type":"filter"}]),
            "pipeline[0]",
            "invalid_stage",
            "include",
        ),
        (
            json!([{"type":"filter","include":"x"}]),
            "pipeline[0]",
            "invalid_stage",
            "sequence",
        ),
        (
            json!([{"type":"filter","include":["x"],"fields":["author"]}]),
            "pipeline[0]",
            "invalid_stage",
            "author",
        ),
        (
            json!([{"type":"domains","deny":["https://a.com"]}]),
            "pipeline[0]",
            "invalid_stage",
            "domain",
        ),
        (
            json!([{"type":"dedupe","window_batches":0}]),
            "pipeline[0]",
            "invalid_stage",
            "window_batches",
        ),
        (
            json!([{"type":"dedupe","window_batches":1001}]),
            "pipeline[0]",
            "invalid_stage",
            "window_batches",
        ),
        (
            json!([{"type":"dedupe"}]),
            "pipeline[0]",
            "invalid_stage",
            "window_batches",
        ),
        (
            json!([{"type":"enrich","add":["sentiment"]}]),
            "pipeline[0]",
            "invalid_stage",
            "sentiment",
        ),
        (
            json!([{"type":"fields","drop":["url"]}]),
            "pipeline[0]",
            "invalid_stage",
            "url cannot be dropped",
        ),
        (
            json!([{"type":"fields","drop":["seq"]}]),
            "pipeline[0]",
            "invalid_stage",
            "seq",
        ),
        (
            json!([{"type":"limit","max":0}]),
            "pipeline[0]",
            "invalid_stage",
            "max",
        ),
        (
            json!([{"type":"limit","max":-1}]),
            "pipeline[0]",
            "invalid_stage",
            "-1",
        ),
    ];
    for (value, field, code, hint) in cases {
        let error = refusal(value.clone());
        assert_eq!(error.field, field, "{value}: {error:?}");
        assert_eq!(error.code, code, "{value}: {error:?}");
        assert!(
            error.message.to_lowercase().contains(&hint.to_lowercase()),
            "{value}: {}",
            error.message
        );
    }
}

#[test]
fn at_most_sixteen_stages() {
    let stage = json!({"type":"limit","max":5});
    assert!(Pipeline::parse(&Value::Array(vec![stage.clone(); 16])).is_ok());
    let error = refusal(Value::Array(vec![stage; 17]));
    assert_eq!(
        (error.field.as_str(), error.code),
        ("pipeline", "out_of_range")
    );
}

#[test]
fn drops_are_counted_per_stage_type_and_an_empty_pipeline_keeps_all() {
    let articles = vec![
        article_with("https://a.test/1", "AI wins", None),
        article_with("https://b.test/2", "AI loses", None),
        article_with("https://a.test/3", "Cats", None),
        article_with("https://a.test/4", "AI again", None),
    ];
    let memory = Memory {
        batches: vec![vec![ArticleId::from_url("https://a.test/4")
            .as_str()
            .to_owned()]],
    };
    let pipeline = Pipeline::parse(&json!([
        {"type":"filter","include":["ai"]},
        {"type":"domains","deny":["b.test"]},
        {"type":"dedupe","window_batches":1},
        {"type":"filter","exclude":["nothing"]}
    ]))
    .expect("valid");
    let outcome = pipeline.run(articles.clone(), &memory);
    assert_eq!(outcome.kept.len(), 1);
    assert_eq!(outcome.kept[0].url, "https://a.test/1");
    let dropped: Vec<(&str, u32)> = outcome
        .dropped
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(dropped, [("dedupe", 1), ("domains", 1), ("filter", 1)]);
    let nothing = Pipeline::default().run(articles.clone(), &memory);
    assert_eq!(nothing.kept, articles);
    assert!(nothing.dropped.is_empty());
    assert!(Pipeline::default().run(vec![], &memory).kept.is_empty());
}

/// A stage, valid, drawn from small vocabularies so that it often matches.
fn stage() -> impl Strategy<Value = Value> {
    let phrase = proptest::sample::select(vec!["ai", "chips", "open source", "said", "über", "x"]);
    let domain = proptest::sample::select(vec!["a.test", "b.test", "sub.a.test", "c.org"]);
    let phrases = proptest::collection::vec(phrase, 0..3);
    let domains = proptest::collection::vec(domain, 0..3);
    prop_oneof![
        (phrases.clone(), phrases)
            .prop_filter("a filter needs a phrase", |(i, e)| !(i.is_empty() && e.is_empty()))
            .prop_map(|(include, exclude)| json!({"type":"filter","include":include,"exclude":exclude,"fields":["title","description","content"]})),
        (domains.clone(), domains)
            .prop_filter("a domains stage needs a domain", |(a, d)| !(a.is_empty() && d.is_empty()))
            .prop_map(|(allow, deny)| json!({"type":"domains","allow":allow,"deny":deny})),
        (1u32..4).prop_map(|n| json!({"type":"dedupe","window_batches":n})),
        proptest::sample::subsequence(vec!["domain", "word_count", "reading_time_secs"], 1..=3)
            .prop_map(|add| json!({"type":"enrich","add":add})),
        proptest::sample::subsequence(fields::DROPPABLE.to_vec(), 1..=3)
            .prop_map(|drop| json!({"type":"fields","drop":drop})),
        (1u32..8).prop_map(|max| json!({"type":"limit","max":max})),
    ]
}

fn articles() -> impl Strategy<Value = Vec<Article>> {
    let host = proptest::sample::select(vec!["a.test", "b.test", "sub.a.test", "c.org", "d.net"]);
    let text = proptest::sample::select(vec![
        "AI chips",
        "she said",
        "Open source",
        "ÜBER x",
        "",
        "news",
    ]);
    proptest::collection::vec(
        (
            host,
            0u32..20,
            text.clone(),
            proptest::option::of(text),
            proptest::option::of(0i64..5),
        ),
        0..20,
    )
    .prop_map(|rows| {
        let mut seen = std::collections::HashSet::new();
        rows.into_iter()
            .filter_map(|(host, n, title, description, hour)| {
                let url = format!("https://{host}/{n}");
                seen.insert(url.clone()).then(|| {
                    let mut article = article_with(&url, title, description);
                    article.content = description.map(|d| format!("{d} body"));
                    article.published_at =
                        hour.map(|h| time::OffsetDateTime::UNIX_EPOCH + time::Duration::hours(h));
                    article
                })
            })
            .collect()
    })
}

fn memory() -> impl Strategy<Value = Memory> {
    proptest::collection::vec(
        proptest::collection::vec(
            (
                proptest::sample::select(vec!["a.test", "b.test", "c.org"]),
                0u32..20,
            )
                .prop_map(|(host, n)| {
                    ArticleId::from_url(&format!("https://{host}/{n}"))
                        .as_str()
                        .to_owned()
                }),
            0..5,
        ),
        0..4,
    )
    .prop_map(|batches| Memory { batches })
}

/// The fields a pipeline may change on an article it keeps: `extra` (enrich) and the droppable
/// ones (fields), which only ever become null.
fn unchanged_except_as_stages_say(before: &Article, after: &Article, pipeline: &Pipeline) -> bool {
    let may_enrich = pipeline
        .stages()
        .iter()
        .any(|s| matches!(s, StageSpec::Enrich(_)));
    let dropped: Vec<String> = pipeline
        .stages()
        .iter()
        .filter_map(|s| match s {
            StageSpec::Fields(f) => serde_json::to_value(f).ok(),
            _ => None,
        })
        .flat_map(|v| v["drop"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let before_json = serde_json::to_value(before).expect("serializes");
    let after_json = serde_json::to_value(after).expect("serializes");
    let (Value::Object(b), Value::Object(a)) = (before_json, after_json) else {
        return false;
    };
    let keys: std::collections::BTreeSet<String> = b.keys().chain(a.keys()).cloned().collect();
    keys.iter().all(|key| {
        let (was, is) = (
            b.get(key).unwrap_or(&Value::Null),
            a.get(key).unwrap_or(&Value::Null),
        );
        was == is || (dropped.contains(key) && is.is_null()) || (key == "extra" && may_enrich)
    })
}

proptest! {
    /// A pipeline never grows a batch, keeps articles in their order (each kept one came in),
    /// changes a kept article only as its stages say, and counts exactly what it dropped.
    #[test]
    fn a_pipeline_never_grows_a_batch_nor_changes_what_it_keeps_beyond_its_stages(
        stages in proptest::collection::vec(stage(), 0..6),
        articles in articles(),
        memory in memory(),
    ) {
        let pipeline = Pipeline::parse(&Value::Array(stages)).expect("generated stages are valid");
        let outcome = pipeline.run(articles.clone(), &memory);
        prop_assert!(outcome.kept.len() <= articles.len());
        let dropped: u32 = outcome.dropped.values().sum();
        prop_assert_eq!(dropped as usize, articles.len() - outcome.kept.len());
        let mut rest = articles.iter();
        for kept in &outcome.kept {
            let original = rest.find(|a| a.url == kept.url);
            prop_assert!(original.is_some(), "kept an article out of order or new: {}", kept.url);
            let original = original.expect("checked");
            prop_assert!(unchanged_except_as_stages_say(original, kept, &pipeline));
        }
    }

    /// Parsing arbitrary stage-shaped JSON never panics, and what parses round-trips.
    #[test]
    fn arbitrary_pipelines_never_panic_and_accepted_ones_round_trip(
        value in proptest::collection::vec(prop_oneof![
            stage(),
            (proptest::sample::select(vec!["filter","domains","dedupe","enrich","fields","limit","x"]),
             proptest::sample::select(vec!["include","exclude","fields","allow","deny","window_batches","add","drop","max","other"]),
             prop_oneof![Just(json!(null)), Just(json!(1)), Just(json!(-3)), Just(json!("x")), Just(json!(["x"])), Just(json!([])), Just(json!({}))])
                .prop_map(|(t, k, v)| json!({"type":t, k: v})),
        ], 0..20),
    ) {
        if let Ok(pipeline) = Pipeline::parse(&Value::Array(value)) {
            let wire = serde_json::to_value(&pipeline).expect("serializes");
            let back = Pipeline::parse(&wire).expect("re-parses");
            prop_assert_eq!(back, pipeline);
        }
    }
}
