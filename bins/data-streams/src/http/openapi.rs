//! The OpenAPI document, generated from the handlers' annotations and the response types, so
//! it cannot drift from the code; a test checks the create body against the parser's fields.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::OpenApi;

/// The `POST /jobs` body. Parsing is done by `JobSpec::from_create_request`; this type only
/// describes it (a test keeps the two in step).
#[allow(dead_code)]
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id":"bitcoin","endpoint":"everything","params":{"q":"bitcoin","language":"en"},"interval_secs":300,"max_pages":1,"page_size":100}))]
pub struct CreateJobBody {
    /// Generated when absent; 409 when taken.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$", max_length = 64)]
    id: Option<String>,
    /// `everything` (default) or `top-headlines`.
    endpoint: Option<newsflow_core::Endpoint>,
    /// NewsAPI query parameters, checked against the endpoint's names and rules (everything:
    /// q, qInTitle, searchIn, sources, domains, excludeDomains, from, to, language, sortBy and
    /// one of q/qInTitle/sources/domains; top-headlines: country, category, sources, q, and one
    /// of them; sources not with country/category). `apiKey`, `page` and `pageSize` are refused.
    params: BTreeMap<String, String>,
    /// Seconds between runs, default 300.
    #[schema(minimum = 1, maximum = 86400)]
    interval_secs: Option<u32>,
    /// Pages per run at most, default 1.
    #[schema(minimum = 1, maximum = 10)]
    max_pages: Option<u32>,
    /// Articles per page, default 100.
    #[schema(minimum = 1, maximum = 100)]
    page_size: Option<u32>,
    /// How many of its newest batches the job keeps (of any status; its latest complete batch
    /// always stays); older ones are deleted with their articles. Default: data-streams'
    /// `--keep-batches` (20), which then also applies after that flag changes.
    #[schema(minimum = 1, maximum = 1000)]
    keep_batches: Option<u32>,
    /// What the worker does to each batch between the fetch and the publish, in order: at
    /// most 16 stages, default none. Each is `{"type":...}` with its own fields: `filter`
    /// (include/exclude whole-word phrases, fields), `domains` (allow/deny, subdomains match),
    /// `dedupe` (window_batches 1..=1000), `enrich` (add domain/word_count/reading_time_secs
    /// under `extra`), `fields` (drop: null these), `limit` (max: the newest N).
    #[schema(max_items = 16)]
    pipeline: Option<Vec<newsflow_core::pipeline::StageSpec>>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "newsflow data-streams",
        description = "Jobs that fetch NewsAPI on a schedule, and the latest complete batch of each."
    ),
    paths(
        super::jobs::create,
        super::jobs::list,
        super::jobs::get,
        super::jobs::start,
        super::jobs::stop,
        super::jobs::delete,
        super::edit::patch,
        super::edit::preview,
        super::articles::latest,
        super::articles::batches,
        super::articles::of_batch,
        super::articles::feed,
        super::events::all,
        super::events::of_job,
        super::page::index,
        super::ops::healthz,
        super::ops::readyz,
        super::quota::quota,
        super::ops::metrics,
        super::ops::dead_letters,
        super::ops::openapi,
    ),
    components(schemas(super::error::ErrorBody, CreateJobBody, super::edit::JobPatch))
)]
struct ApiDoc;

/// The document as JSON, built once for each of the two ways data-streams runs: with
/// `--api-token` every route but the ones annotated otherwise (`/healthz`) declares the bearer
/// scheme; without one, no security is declared at all, since none is asked for.
pub fn document(token_required: bool) -> &'static str {
    static WITH_TOKEN: OnceLock<String> = OnceLock::new();
    static OPEN: OnceLock<String> = OnceLock::new();
    let cell = if token_required { &WITH_TOKEN } else { &OPEN };
    cell.get_or_init(|| {
        build(token_required)
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    })
}

fn build(token_required: bool) -> utoipa::openapi::OpenApi {
    let mut openapi = ApiDoc::openapi();
    if token_required {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                BEARER,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
    for item in openapi.paths.paths.values_mut() {
        for operation in operations(item) {
            if !token_required {
                operation.security = None;
            } else if operation.security.is_none() {
                operation.security =
                    Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
            }
        }
    }
    openapi
}

/// The name of the bearer scheme in `components.securitySchemes`.
const BEARER: &str = "bearer";

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_route_is_documented() {
        let doc: serde_json::Value = serde_json::from_str(document(false)).expect("valid JSON");
        let paths = doc["paths"].as_object().expect("paths");
        for route in [
            "/jobs",
            "/jobs/{id}",
            "/jobs/{id}/start",
            "/jobs/{id}/stop",
            "/jobs/{id}/pipeline/preview",
            "/jobs/{id}/articles",
            "/jobs/{id}/batches",
            "/jobs/{id}/batches/{batch_id}/articles",
            "/articles",
            "/healthz",
            "/readyz",
            "/metrics",
            "/dead-letters",
            "/openapi.json",
        ] {
            assert!(
                paths.contains_key(route),
                "{route} is missing from the OpenAPI document"
            );
        }
        assert!(paths["/jobs/{id}"].get("delete").is_some());
        assert!(paths["/jobs/{id}"].get("patch").is_some());
    }

    #[test]
    fn the_create_body_schema_matches_what_the_parser_accepts() {
        let doc: serde_json::Value = serde_json::from_str(document(false)).expect("valid JSON");
        let properties = doc["components"]["schemas"]["CreateJobBody"]["properties"]
            .as_object()
            .expect("properties");
        let mut documented: Vec<&str> = properties.keys().map(String::as_str).collect();
        documented.sort_unstable();
        let mut accepted = newsflow_core::job::CREATE_FIELDS.to_vec();
        accepted.sort_unstable();
        assert_eq!(documented, accepted);
        // Every documented field is accepted by the parser, and an extra one is refused.
        let body = serde_json::json!({"id":"a","endpoint":"everything","params":{"q":"x"},"interval_secs":1,"max_pages":1,"page_size":1});
        assert!(newsflow_core::JobSpec::from_create_request(&body).is_ok());
        let extra = serde_json::json!({"params":{"q":"x"},"surprise":1});
        assert!(newsflow_core::JobSpec::from_create_request(&extra).is_err());
    }
}
