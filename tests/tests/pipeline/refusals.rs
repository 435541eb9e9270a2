//! Each invalid stage is a 422 naming it (the whole table of refusals is unit-tested in core;
//! these are representatives of each class through the real HTTP API).

use newsflow_tests::serde_json::json;
use newsflow_tests::{StatusCode, System};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_invalid_stage_is_a_422_naming_it() {
    let system = System::builder().start().await;
    let api = system.api();
    let cases = [
        (json!({"type":"sharpen"}), "unknown_stage", "sharpen"),
        (
            json!({"type":"filter","include":["x"],"colour":"red"}),
            "invalid_stage",
            "colour",
        ),
        (json!({"type":"filter"}), "invalid_stage", "include"),
        (
            json!({"type":"domains","deny":["https://a.com/x"]}),
            "invalid_stage",
            "domain",
        ),
        (
            json!({"type":"dedupe","window_batches":0}),
            "invalid_stage",
            "window_batches",
        ),
        (
            json!({"type":"dedupe","window_batches":1001}),
            "invalid_stage",
            "window_batches",
        ),
        (
            json!({"type":"enrich","add":["mood"]}),
            "invalid_stage",
            "mood",
        ),
        (
            json!({"type":"fields","drop":["url"]}),
            "invalid_stage",
            "url cannot be dropped",
        ),
        (
            json!({"type":"fields","drop":["id"]}),
            "invalid_stage",
            "id cannot be dropped",
        ),
        (json!({"type":"limit","max":0}), "invalid_stage", "max"),
        (json!("limit"), "invalid_stage", "object"),
    ];
    for (stage, code, hint) in cases {
        let body = json!({"params":{"q":"x"},"pipeline":[{"type":"limit","max":5}, stage]});
        let (status, error) = api.create_job(&body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
        assert_eq!(error["error"]["code"], code, "{body}: {error}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("pipeline[1]"), "{message}");
        assert!(message.contains(hint), "{hint} in {message}");
    }
    let seventeen =
        json!({"params":{"q":"x"},"pipeline":vec![json!({"type":"limit","max":5}); 17]});
    let (status, error) = api.create_job(&seventeen).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["error"]["code"], "out_of_range", "{error}");
    let (_, jobs) = api.get("/jobs").await;
    assert_eq!(jobs["jobs"], json!([]), "no refused job was created");
}
