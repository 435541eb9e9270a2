//! NewsAPI's protocol: keys, validation, paging and deterministic articles.

use newsapi_mock::Config;
use reqwest::StatusCode;

use crate::support::{assert_error, urls, Mock, KEY};

#[tokio::test]
async fn same_query_twice_returns_identical_bytes() {
    let mock = Mock::start().await;
    let path = "/v2/everything?q=bitcoin&pageSize=20&page=2";
    let first = mock.get(path).await.bytes().await.unwrap();
    let second = mock.get(path).await.bytes().await.unwrap();
    assert!(!first.is_empty());
    assert_eq!(first, second);
}

#[tokio::test]
async fn different_q_gives_different_urls_and_titles_mention_q() {
    let mock = Mock::start().await;
    let (_, rust) = mock.get_json("/v2/everything?q=rust&pageSize=10").await;
    let (_, go) = mock.get_json("/v2/everything?q=golang&pageSize=10").await;
    let rust_urls = urls(&rust);
    assert!(urls(&go).iter().all(|url| !rust_urls.contains(url)));
    for article in rust["articles"].as_array().unwrap() {
        assert!(article["title"].as_str().unwrap().contains("rust"));
    }
}

#[tokio::test]
async fn success_body_has_newsapi_shape_newest_first() {
    let mock = Mock::start().await;
    let (status, body) = mock
        .get_json("/v2/top-headlines?country=us&pageSize=30")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let articles = body["articles"].as_array().unwrap();
    assert_eq!(articles.len(), 30);
    for article in articles {
        for field in [
            "author",
            "title",
            "description",
            "url",
            "urlToImage",
            "publishedAt",
            "content",
        ] {
            assert!(article.get(field).is_some(), "{field} missing: {article}");
        }
        assert!(article["source"].get("id").is_some());
        assert!(article["source"]["name"].is_string());
    }
    let published: Vec<&str> = articles
        .iter()
        .map(|a| a["publishedAt"].as_str().unwrap())
        .collect();
    assert!(published.windows(2).all(|w| w[0] > w[1]));
    assert_eq!(published[0], "2026-11-20T12:00:00Z");
    assert!(articles.iter().any(|a| a["author"].is_null()));
}

#[tokio::test]
async fn pages_are_consecutive_slices_capped_and_total_results_is_uncapped() {
    let mock = Mock::with(Config {
        total_results: Some(250),
        ..Config::default()
    })
    .await;
    let (_, all) = mock.get_json("/v2/everything?q=ai").await;
    let (_, first) = mock
        .get_json("/v2/everything?q=ai&pageSize=60&page=1")
        .await;
    let (_, second) = mock
        .get_json("/v2/everything?q=ai&pageSize=60&page=2")
        .await;
    assert_eq!(all["totalResults"], 250);
    assert_eq!(second["totalResults"], 250);
    let all = urls(&all);
    assert_eq!(all.len(), 100);
    assert_eq!(urls(&first), all[..60]);
    assert_eq!(urls(&second), all[60..]);
}

#[tokio::test]
async fn a_dirty_mock_serves_removed_placeholders_and_entity_encoded_text_like_newsapi() {
    let mock = Mock::with(Config {
        dirty_every: Some(10),
        ..Config::default()
    })
    .await;
    let (status, body) = mock.get_json("/v2/everything?q=ai&pageSize=50").await;
    assert_eq!(status, StatusCode::OK);
    let articles = body["articles"].as_array().expect("articles");
    assert_eq!(articles.len(), 50);
    let placeholders: Vec<&serde_json::Value> = articles
        .iter()
        .filter(|a| a["url"] == "https://removed.com")
        .collect();
    assert_eq!(placeholders.len(), 5);
    for placeholder in placeholders {
        assert_eq!(
            placeholder,
            &serde_json::json!({"source":{"id":null,"name":"[Removed]"},"author":null,"title":"[Removed]","description":"[Removed]","url":"https://removed.com","urlToImage":null,"publishedAt":"1970-01-01T00:00:00Z","content":"[Removed]"})
        );
    }
    let encoded = articles
        .iter()
        .filter(|a| a["title"].as_str().is_some_and(|t| t.contains("&amp;")))
        .count();
    assert_eq!(encoded, 5);
    // The same page twice is the same page: the dirt is deterministic.
    let (_, again) = mock.get_json("/v2/everything?q=ai&pageSize=50").await;
    assert_eq!(again, body);
}

#[tokio::test]
async fn page_past_the_last_result_is_empty() {
    let mock = Mock::with(Config {
        total_results: Some(30),
        ..Config::default()
    })
    .await;
    let (_, second) = mock
        .get_json("/v2/everything?q=ai&pageSize=20&page=2")
        .await;
    let (status, third) = mock
        .get_json("/v2/everything?q=ai&pageSize=20&page=3")
        .await;
    assert_eq!(urls(&second).len(), 10);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(third["totalResults"], 30);
    assert!(urls(&third).is_empty());
}

#[tokio::test]
async fn total_results_without_override_is_between_120_and_400() {
    let mock = Mock::start().await;
    let (_, body) = mock.get_json("/v2/everything?q=elections").await;
    let total = body["totalResults"].as_u64().unwrap();
    assert!((120..=400).contains(&total), "{total}");
}

#[tokio::test]
async fn request_past_the_plan_cap_is_426_maximum_results_reached() {
    let mock = Mock::start().await;
    let message = assert_error(
        mock.get("/v2/everything?q=ai&page=2").await,
        StatusCode::UPGRADE_REQUIRED,
        "maximumResultsReached",
    )
    .await;
    assert!(
        message.contains("limited to a max of 100 results"),
        "{message}"
    );
    assert!(message.contains("results 100 to 200"), "{message}");
    let (status, _) = mock
        .get_json("/v2/everything?q=ai&page=5&pageSize=20")
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn missing_key_is_401_api_key_missing() {
    let mock = Mock::start().await;
    let message = assert_error(
        mock.get_without_key("/v2/everything?q=ai").await,
        StatusCode::UNAUTHORIZED,
        "apiKeyMissing",
    )
    .await;
    assert!(message.starts_with("Your API key is missing."));
}

#[tokio::test]
async fn wrong_key_is_401_api_key_invalid() {
    let mock = Mock::start().await;
    assert_error(
        mock.get_without_key("/v2/everything?q=ai&apiKey=nope")
            .await,
        StatusCode::UNAUTHORIZED,
        "apiKeyInvalid",
    )
    .await;
}

#[tokio::test]
async fn key_is_accepted_as_parameter_or_bearer_token() {
    let mock = Mock::start().await;
    let by_param = mock
        .get_without_key(&format!("/v2/everything?q=ai&apiKey={KEY}"))
        .await;
    let by_bearer = reqwest::Client::new()
        .get(mock.url("/v2/everything?q=ai"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(by_param.status(), StatusCode::OK);
    assert_eq!(by_bearer.status(), StatusCode::OK);
}

#[tokio::test]
async fn everything_without_scope_is_400_parameters_missing() {
    let mock = Mock::start().await;
    let message = assert_error(
        mock.get("/v2/everything?language=en").await,
        StatusCode::BAD_REQUEST,
        "parametersMissing",
    )
    .await;
    assert!(message.ends_with("q, qInTitle, sources, domains."));
}

#[tokio::test]
async fn top_headlines_without_scope_is_400_parameters_missing() {
    let mock = Mock::start().await;
    let message = assert_error(
        mock.get("/v2/top-headlines?pageSize=10").await,
        StatusCode::BAD_REQUEST,
        "parametersMissing",
    )
    .await;
    assert!(message.ends_with("sources, q, language, country, category."));
}

#[tokio::test]
async fn sources_with_country_is_400_parameters_incompatible() {
    let mock = Mock::start().await;
    assert_error(
        mock.get("/v2/top-headlines?sources=bbc-news&country=us")
            .await,
        StatusCode::BAD_REQUEST,
        "parametersIncompatible",
    )
    .await;
}

#[tokio::test]
async fn twenty_one_sources_is_400_sources_too_many() {
    let mock = Mock::start().await;
    let sources: Vec<String> = (0..21).map(|i| format!("source-{i}")).collect();
    assert_error(
        mock.get(&format!("/v2/everything?sources={}", sources.join(",")))
            .await,
        StatusCode::BAD_REQUEST,
        "sourcesTooMany",
    )
    .await;
}

#[tokio::test]
async fn bad_page_size_is_400_parameter_invalid_naming_it() {
    let mock = Mock::start().await;
    let message = assert_error(
        mock.get("/v2/everything?q=ai&pageSize=500").await,
        StatusCode::BAD_REQUEST,
        "parameterInvalid",
    )
    .await;
    assert!(message.contains("pageSize"), "{message}");
}

#[tokio::test]
async fn unknown_parameters_are_ignored() {
    let mock = Mock::start().await;
    let (_, plain) = mock.get_json("/v2/everything?q=ai&pageSize=5").await;
    let (status, extra) = mock
        .get_json("/v2/everything?q=ai&pageSize=5&utm_source=x")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(urls(&plain), urls(&extra));
}

#[tokio::test]
async fn sources_listing_is_ok_and_filtered() {
    let mock = Mock::start().await;
    let (status, body) = mock
        .get_json("/v2/top-headlines/sources?category=technology")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let sources = body["sources"].as_array().unwrap();
    assert!(!sources.is_empty());
    assert!(sources.iter().all(|s| s["category"] == "technology"));
}

#[tokio::test]
async fn healthz_is_200_without_key() {
    let mock = Mock::start().await;
    assert_eq!(
        mock.get_without_key("/healthz").await.status(),
        StatusCode::OK
    );
}
