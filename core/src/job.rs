//! What a job fetches and how often, and the parser of the `POST /jobs` body.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Endpoint, JobId, NewsQuery, Pipeline, ValidationError};

/// The fields the `POST /jobs` body may have; any other is refused.
pub const CREATE_FIELDS: [&str; 8] = [
    "id",
    "endpoint",
    "params",
    "interval_secs",
    "max_pages",
    "page_size",
    "keep_batches",
    "pipeline",
];

/// How often a job runs: 1 second to 1 day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Interval(u32);

impl Interval {
    /// The default interval: five minutes.
    pub const DEFAULT: Self = Self(300);
    const MAX: u64 = 86_400;

    /// Parses seconds.
    pub fn from_secs(secs: u64) -> Result<Self, ValidationError> {
        if (1..=Self::MAX).contains(&secs) {
            Ok(Self(secs as u32))
        } else {
            Err(out_of_range("interval_secs", secs, 1, Self::MAX))
        }
    }

    /// The interval as seconds.
    pub fn secs(self) -> u64 {
        u64::from(self.0)
    }

    /// The interval as a duration.
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.secs())
    }
}

impl TryFrom<u64> for Interval {
    type Error = ValidationError;
    fn try_from(secs: u64) -> Result<Self, Self::Error> {
        Self::from_secs(secs)
    }
}

impl From<Interval> for u64 {
    fn from(interval: Interval) -> Self {
        interval.secs()
    }
}

/// How many pages one run fetches at most: 1 to 10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct MaxPages(u8);

impl MaxPages {
    /// One page per run.
    pub const DEFAULT: Self = Self(1);
    const MAX: u64 = 10;

    /// Parses a page count.
    pub fn new(pages: u64) -> Result<Self, ValidationError> {
        if (1..=Self::MAX).contains(&pages) {
            Ok(Self(pages as u8))
        } else {
            Err(out_of_range("max_pages", pages, 1, Self::MAX))
        }
    }

    /// The page count.
    pub fn get(self) -> u32 {
        u32::from(self.0)
    }
}

impl TryFrom<u64> for MaxPages {
    type Error = ValidationError;
    fn try_from(pages: u64) -> Result<Self, Self::Error> {
        Self::new(pages)
    }
}

impl From<MaxPages> for u64 {
    fn from(pages: MaxPages) -> Self {
        u64::from(pages.0)
    }
}

/// How many articles one page asks for: 1 to 100 (NewsAPI's maximum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct PageSize(u8);

impl PageSize {
    /// A full page of 100.
    pub const DEFAULT: Self = Self(100);
    const MAX: u64 = 100;

    /// Parses a page size.
    pub fn new(size: u64) -> Result<Self, ValidationError> {
        if (1..=Self::MAX).contains(&size) {
            Ok(Self(size as u8))
        } else {
            Err(out_of_range("page_size", size, 1, Self::MAX))
        }
    }

    /// The page size.
    pub fn get(self) -> u32 {
        u32::from(self.0)
    }
}

impl TryFrom<u64> for PageSize {
    type Error = ValidationError;
    fn try_from(size: u64) -> Result<Self, Self::Error> {
        Self::new(size)
    }
}

impl From<PageSize> for u64 {
    fn from(size: PageSize) -> Self {
        u64::from(size.0)
    }
}

/// How many of a job's newest batches the store keeps: 1 to 1000. Older ones are deleted with
/// their articles (the latest complete batch always stays), so a job's disk use is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct KeepBatches(u16);

impl KeepBatches {
    /// The default of data-streams' `--keep-batches`.
    pub const DEFAULT: Self = Self(20);
    const MAX: u64 = 1000;

    /// Parses a batch count.
    pub fn new(count: u64) -> Result<Self, ValidationError> {
        if (1..=Self::MAX).contains(&count) {
            Ok(Self(count as u16))
        } else {
            Err(out_of_range("keep_batches", count, 1, Self::MAX))
        }
    }

    /// The batch count.
    pub fn get(self) -> usize {
        usize::from(self.0)
    }
}

impl TryFrom<u64> for KeepBatches {
    type Error = ValidationError;
    fn try_from(count: u64) -> Result<Self, Self::Error> {
        Self::new(count)
    }
}

impl From<KeepBatches> for u64 {
    fn from(count: KeepBatches) -> Self {
        u64::from(count.0)
    }
}

fn out_of_range(field: &str, value: impl std::fmt::Display, min: u64, max: u64) -> ValidationError {
    ValidationError::new(
        field,
        "out_of_range",
        format!("{field} is out of range: it must be between {min} and {max}, got {value}"),
    )
}

/// The desired state of a job, owned by data-streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// A worker should be fetching it on its interval.
    Running,
    /// No worker should fetch it.
    Stopped,
}

/// Everything a worker needs to run a job. Serialized as the contract's job fields
/// (`id, endpoint, params, interval_secs, max_pages, page_size`, and `keep_batches` when the
/// job chose one); deserializing re-checks every
/// rule, so a spec read from the network or the disk is as trustworthy as one built here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawSpec", into = "RawSpec")]
pub struct JobSpec {
    id: JobId,
    query: NewsQuery,
    interval: Interval,
    max_pages: MaxPages,
    page_size: PageSize,
    /// `None` when the job did not choose: data-streams' `--keep-batches` then applies, so a
    /// later change of that flag reaches every job that left it to the default.
    keep_batches: Option<KeepBatches>,
    /// What the worker does to each batch between the fetch and the publish; empty by default.
    pipeline: Pipeline,
}

impl JobSpec {
    /// The job's id.
    pub fn id(&self) -> &JobId {
        &self.id
    }
    /// What the job asks NewsAPI.
    pub fn query(&self) -> &NewsQuery {
        &self.query
    }
    /// How often it runs.
    pub fn interval(&self) -> Interval {
        self.interval
    }
    /// How many pages a run fetches at most.
    pub fn max_pages(&self) -> MaxPages {
        self.max_pages
    }
    /// How many articles a page asks for.
    pub fn page_size(&self) -> PageSize {
        self.page_size
    }
    /// How many batches the job chose to keep; `None` leaves it to data-streams' default.
    pub fn keep_batches(&self) -> Option<KeepBatches> {
        self.keep_batches
    }
    /// The job's pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Parses the `POST /jobs` body. Every field but `params` is optional; unknown fields are
    /// rejected; `id` is generated when absent. Each error names the field and what to fix.
    pub fn from_create_request(body: &Value) -> Result<Self, ValidationError> {
        let Some(fields) = body.as_object() else {
            return Err(ValidationError::new(
                "body",
                "invalid_type",
                "the body must be a JSON object",
            ));
        };
        if let Some(unknown) = fields.keys().find(|k| !CREATE_FIELDS.contains(&k.as_str())) {
            return Err(ValidationError::new(
                unknown.clone(),
                "unknown_field",
                format!(
                    "unknown field {:?}; a job accepts: {}",
                    crate::ids::truncate_for_message(unknown),
                    CREATE_FIELDS.join(", ")
                ),
            ));
        }
        let id = match present(fields, "id") {
            None => JobId::generate(),
            Some(Value::String(s)) => JobId::parse(s)?,
            Some(_) => return Err(wrong_type("id", "a string")),
        };
        let endpoint = match present(fields, "endpoint") {
            None => Endpoint::default(),
            Some(Value::String(s)) => Endpoint::parse(s)?,
            Some(_) => return Err(wrong_type("endpoint", "a string")),
        };
        let query = match present(fields, "params") {
            None => NewsQuery::parse(endpoint, &Map::new())?,
            Some(Value::Object(params)) => NewsQuery::parse(endpoint, params)?,
            Some(_) => {
                return Err(wrong_type(
                    "params",
                    "an object of NewsAPI query parameters",
                ))
            }
        };
        Ok(Self {
            id,
            query,
            interval: integer(fields, "interval_secs")?
                .map_or(Ok(Interval::DEFAULT), Interval::from_secs)?,
            max_pages: integer(fields, "max_pages")?
                .map_or(Ok(MaxPages::DEFAULT), MaxPages::new)?,
            page_size: integer(fields, "page_size")?
                .map_or(Ok(PageSize::DEFAULT), PageSize::new)?,
            keep_batches: integer(fields, "keep_batches")?
                .map(KeepBatches::new)
                .transpose()?,
            pipeline: present(fields, "pipeline")
                .map_or(Ok(Pipeline::default()), Pipeline::parse)?,
        })
    }
}

fn present<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    fields.get(name).filter(|v| !v.is_null())
}

fn integer(fields: &Map<String, Value>, name: &str) -> Result<Option<u64>, ValidationError> {
    match present(fields, name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(negative)) => Err(ValidationError::new(
                name,
                "out_of_range",
                format!(
                    "{name} is out of range: it must be a positive whole number, got {negative}"
                ),
            )),
            // A whole number too large for any field (1e30, 2^64): out of range, not mistyped.
            _ if n.as_f64().is_some_and(|f| f.abs() >= u64::MAX as f64) => {
                Err(ValidationError::new(
                    name,
                    "out_of_range",
                    format!("{name} is out of range: {n} is far larger than it allows"),
                ))
            }
            _ => Err(wrong_type(name, "a whole number")),
        },
        Some(_) => Err(wrong_type(name, "a whole number")),
    }
}

fn wrong_type(field: &str, expected: &str) -> ValidationError {
    ValidationError::new(field, "invalid_type", format!("{field} must be {expected}"))
}

/// The serialized form of [`JobSpec`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    id: String,
    endpoint: Endpoint,
    params: Map<String, Value>,
    interval_secs: u64,
    max_pages: u64,
    page_size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keep_batches: Option<u64>,
    #[serde(default, skip_serializing_if = "Pipeline::is_empty")]
    pipeline: Pipeline,
}

impl TryFrom<RawSpec> for JobSpec {
    type Error = ValidationError;
    fn try_from(raw: RawSpec) -> Result<Self, Self::Error> {
        Ok(Self {
            id: JobId::parse(&raw.id)?,
            query: NewsQuery::parse(raw.endpoint, &raw.params)?,
            interval: Interval::from_secs(raw.interval_secs)?,
            max_pages: MaxPages::new(raw.max_pages)?,
            page_size: PageSize::new(raw.page_size)?,
            keep_batches: raw.keep_batches.map(KeepBatches::new).transpose()?,
            pipeline: raw.pipeline,
        })
    }
}

impl From<JobSpec> for RawSpec {
    fn from(spec: JobSpec) -> Self {
        Self {
            id: spec.id.into(),
            endpoint: spec.query.endpoint(),
            params: spec
                .query
                .params()
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
            interval_secs: spec.interval.secs(),
            max_pages: u64::from(spec.max_pages),
            page_size: u64::from(spec.page_size),
            keep_batches: spec.keep_batches.map(u64::from),
            pipeline: spec.pipeline,
        }
    }
}

#[cfg(test)]
mod create_refusals;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn code(body: Value) -> Option<&'static str> {
        JobSpec::from_create_request(&body).err().map(|e| e.code)
    }

    #[test]
    fn a_minimal_body_gets_the_contract_defaults() {
        let spec = JobSpec::from_create_request(&json!({"params":{"q":"bitcoin"}})).expect("valid");
        assert_eq!(spec.query().endpoint(), Endpoint::Everything);
        assert_eq!(spec.interval().secs(), 300);
        assert_eq!(spec.max_pages().get(), 1);
        assert_eq!(spec.page_size().get(), 100);
        assert_eq!(spec.keep_batches(), None);
        assert!(spec.id().as_str().starts_with("job-"));
    }

    #[test]
    fn a_full_body_round_trips_through_the_wire_form() {
        let body = json!({"id":"bitcoin","endpoint":"top-headlines","params":{"country":"us"},"interval_secs":60,"max_pages":3,"page_size":20,"keep_batches":7});
        let spec = JobSpec::from_create_request(&body).expect("valid");
        let wire = serde_json::to_value(&spec).expect("serializes");
        assert_eq!(wire, body);
        let back: JobSpec = serde_json::from_value(wire).expect("deserializes");
        assert_eq!(back, spec);
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(code(json!([])), Some("invalid_type"));
        assert_eq!(
            code(json!({"params":{"q":"x"},"colour":"red"})),
            Some("unknown_field")
        );
        assert_eq!(
            code(json!({"id":"Bad Id","params":{"q":"x"}})),
            Some("invalid_id")
        );
        assert_eq!(
            code(json!({"id":7,"params":{"q":"x"}})),
            Some("invalid_type")
        );
        assert_eq!(
            code(json!({"endpoint":"sources","params":{"q":"x"}})),
            Some("unknown_endpoint")
        );
        assert_eq!(code(json!({"params":"q=x"})), Some("invalid_type"));
        assert_eq!(code(json!({})), Some("scope_missing"));
        for (field, bad) in [
            ("interval_secs", json!(0)),
            ("interval_secs", json!(86_401)),
            ("max_pages", json!(11)),
            ("page_size", json!(101)),
            ("page_size", json!(-1)),
            ("keep_batches", json!(0)),
            ("keep_batches", json!(1001)),
        ] {
            assert_eq!(
                code(json!({"params":{"q":"x"}, field: bad})),
                Some("out_of_range"),
                "{field}={bad}"
            );
        }
        assert_eq!(
            code(json!({"params":{"q":"x"},"interval_secs":"300"})),
            Some("invalid_type")
        );
        assert_eq!(
            code(json!({"params":{"q":"x"},"max_pages":1.5})),
            Some("invalid_type")
        );
    }

    /// Any JSON value, with object keys drawn mostly from the create body's and NewsAPI's
    /// names.
    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            3 => proptest::sample::select(vec![
                "id", "endpoint", "params", "interval_secs", "max_pages", "page_size", "q",
                "sources", "country", "apiKey", "page",
            ])
            .prop_map(str::to_owned),
            1 => ".{0,12}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,40}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 8, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(key.clone(), inner, 0..8)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// Mostly a plausible value, sometimes anything.
    fn mostly<S: Strategy<Value = Value> + 'static>(plausible: S) -> BoxedStrategy<Value> {
        prop_oneof![4 => plausible, 1 => arbitrary_json()].boxed()
    }

    /// A NewsAPI parameter map: known names with plausible values (and a little of anything),
    /// so that every rule of both endpoints is reached.
    fn params() -> impl Strategy<Value = Value> {
        let name = prop_oneof![
            8 => proptest::sample::select(vec![
                "q", "qInTitle", "searchIn", "sources", "domains", "excludeDomains", "from",
                "to", "language", "sortBy", "country", "category", "apiKey", "page", "pageSize",
            ])
            .prop_map(str::to_owned),
            1 => ".{0,12}",
        ];
        let value = mostly(
            prop_oneof![
                proptest::sample::select(vec![
                    "bitcoin",
                    "en",
                    "xx",
                    "us",
                    "zz",
                    "business",
                    "gossip",
                    "bbc-news,cnn",
                    "Bad Source",
                    "2026-11-20",
                    "2026-11-20T08:00:00Z",
                    "2026-13-45",
                    "publishedAt",
                    "newest",
                    "title,content",
                    "body",
                    "a.com,b.org",
                    "not a domain",
                    " ",
                    "",
                ])
                .prop_map(str::to_owned),
                "[a-z]{1,8}(,[a-z]{1,8}){0,25}",
                "[a-z ]{0,600}",
            ]
            .prop_map(Value::from),
        );
        proptest::collection::btree_map(name, value, 0..5)
            .prop_map(|map| Value::Object(map.into_iter().collect()))
    }

    /// A `POST /jobs` body: the contract's fields, each absent, plausible or anything, and
    /// now and then an unknown one.
    fn create_body() -> impl Strategy<Value = Value> {
        let number = || mostly(prop_oneof![0u64..=12, 0u64..=100_000].prop_map(Value::from));
        (
            proptest::option::of(mostly("[a-z0-9][a-z0-9_-]{0,70}".prop_map(Value::from))),
            proptest::option::of(mostly(
                proptest::sample::select(vec!["everything", "top-headlines", "sources"])
                    .prop_map(Value::from),
            )),
            proptest::option::of(prop_oneof![6 => params(), 1 => arbitrary_json()]),
            proptest::option::of(number()),
            proptest::option::of(number()),
            proptest::option::of(number()),
            proptest::option::weighted(0.05, (".{0,12}", arbitrary_json())),
        )
            .prop_map(|(id, endpoint, params, interval, pages, size, extra)| {
                let mut body = serde_json::Map::new();
                for (name, value) in [
                    ("id", id),
                    ("endpoint", endpoint),
                    ("params", params),
                    ("interval_secs", interval),
                    ("max_pages", pages),
                    ("page_size", size),
                ] {
                    if let Some(value) = value {
                        body.insert(name.to_owned(), value);
                    }
                }
                if let Some((name, value)) = extra {
                    body.insert(name, value);
                }
                Value::Object(body)
            })
    }

    /// A body the parser must accept: random but valid values for every field.
    fn valid_body() -> impl Strategy<Value = Value> {
        (
            "[a-z0-9][a-z0-9_-]{0,63}",
            any::<bool>(),
            "[a-zA-Z0-9 ]{0,40}[a-z]",
            proptest::option::of(proptest::sample::select(vec!["en", "de", "fr", "zh"])),
            proptest::sample::select(vec!["us", "gb", "de", "jp"]),
            1u64..=86_400,
            1u64..=10,
            1u64..=100,
        )
            .prop_map(|(id, headlines, q, language, country, interval, pages, size)| {
                let (endpoint, params) = if headlines {
                    ("top-headlines", json!({"country":country,"q":q}))
                } else {
                    let mut params = json!({"q":q});
                    if let Some(language) = language {
                        params["language"] = json!(language);
                    }
                    ("everything", params)
                };
                json!({"id":id,"endpoint":endpoint,"params":params,"interval_secs":interval,"max_pages":pages,"page_size":size})
            })
    }

    proptest! {
        /// The `POST /jobs` parser on arbitrary JSON and on near-valid bodies: never panics,
        /// and whatever it accepts survives the wire form (what workers and the store
        /// re-check) unchanged.
        #[test]
        fn arbitrary_create_bodies_never_panic_and_accepted_ones_round_trip(
            body in prop_oneof![1 => arbitrary_json(), 4 => create_body(), 1 => valid_body()],
            must_accept in valid_body(),
        ) {
            prop_assert!(JobSpec::from_create_request(&must_accept).is_ok(), "{}", must_accept);
            if let Ok(spec) = JobSpec::from_create_request(&body) {
                let wire = serde_json::to_value(&spec).expect("an accepted spec serializes");
                let back: JobSpec =
                    serde_json::from_value(wire).expect("an accepted spec re-parses");
                prop_assert_eq!(back, spec);
            }
        }
    }

    #[test]
    fn keep_batches_accepts_one_to_a_thousand_and_stays_absent_when_not_chosen() {
        for count in [1u64, 20, 1000] {
            let spec =
                JobSpec::from_create_request(&json!({"params":{"q":"x"},"keep_batches":count}))
                    .expect("valid");
            assert_eq!(spec.keep_batches().map(u64::from), Some(count));
        }
        let unchosen = JobSpec::from_create_request(&json!({"params":{"q":"x"}})).expect("valid");
        let wire = serde_json::to_value(&unchosen).expect("serializes");
        assert!(wire.get("keep_batches").is_none(), "{wire}");
    }

    #[test]
    fn a_wire_spec_from_before_keep_batches_still_parses() {
        let wire = json!({"id":"a","endpoint":"everything","params":{"q":"x"},"interval_secs":1,"max_pages":1,"page_size":1});
        let spec: JobSpec = serde_json::from_value(wire).expect("parses");
        assert_eq!(spec.keep_batches(), None);
    }

    #[test]
    fn a_pipeline_is_parsed_with_the_spec_and_rides_the_wire_form() {
        let body = json!({"id":"a","endpoint":"everything","params":{"q":"x"},"interval_secs":1,"max_pages":1,"page_size":1,
            "pipeline":[{"type":"filter","include":["ai"],"fields":["title"]},{"type":"limit","max":3}]});
        let spec = JobSpec::from_create_request(&body).expect("valid");
        assert_eq!(spec.pipeline().stages().len(), 2);
        let wire = serde_json::to_value(&spec).expect("serializes");
        assert_eq!(wire, body);
        let back: JobSpec = serde_json::from_value(wire).expect("deserializes");
        assert_eq!(back, spec);
        let bad = JobSpec::from_create_request(
            &json!({"params":{"q":"x"},"pipeline":[{"type":"limit","max":3},{"type":"sharpen"}]}),
        )
        .expect_err("unknown stage");
        assert_eq!(
            (bad.field.as_str(), bad.code),
            ("pipeline[1]", "unknown_stage")
        );
        assert!(bad.message.contains("sharpen"), "{}", bad.message);
        let none = JobSpec::from_create_request(&json!({"params":{"q":"x"},"pipeline":null}))
            .expect("null is the default");
        assert!(none.pipeline().is_empty());
    }

    #[test]
    fn a_tampered_wire_spec_is_rejected() {
        let wire = json!({"id":"a","endpoint":"everything","params":{"q":"x"},"interval_secs":0,"max_pages":1,"page_size":1});
        assert!(serde_json::from_value::<JobSpec>(wire).is_err());
    }
}
