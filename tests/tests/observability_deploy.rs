//! `deploy/`: the Prometheus alerting rules and the Grafana dashboard parse, and every metric
//! name in every expression exists in real scrapes of data-streams and a worker that have done
//! some work, so the rules and panels cannot drift from the code.

use std::collections::BTreeSet;
use std::time::Duration;

use newsflow_tests::bins::workspace_root;
use newsflow_tests::process::message_of;
use newsflow_tests::System;
use prometheus_parse::Scrape;
use serde_json::{json, Value};
use yaml_rust2::YamlLoader;

/// Every `newsflow_*` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("newsflow_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The families and sample names of a scrape of `http://{addr}/metrics`.
async fn exposed(addr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics text");
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("a scrape");
    let families = scrape.docs.keys().cloned().collect();
    let samples = scrape.samples.iter().map(|s| s.metric.clone()).collect();
    (families, samples)
}

/// Whether `name` (as written in PromQL) is exposed: a sample name, or a declared family
/// with a counter's `_total` or a histogram's `_bucket`, `_sum` or `_count`.
fn is_exposed(name: &str, families: &BTreeSet<String>, samples: &BTreeSet<String>) -> bool {
    samples.contains(name)
        || families.contains(name)
        || ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .any(|family| families.contains(family))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_alert_rules_and_the_dashboard_is_exposed_by_the_services() {
    let root = workspace_root();
    let rules_text = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml"))
        .expect("deploy/prometheus/alerts.yml");
    let rules = YamlLoader::load_from_str(&rules_text).expect("the rules are YAML");
    let mut expressions: Vec<(String, String)> = Vec::new();
    for group in rules[0]["groups"].as_vec().expect("rule groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            let alert = rule["alert"].as_str().expect("every rule is an alert");
            let expr = rule["expr"].as_str().expect("every rule has an expression");
            expressions.push((format!("alert {alert}"), expr.to_owned()));
        }
    }
    let alerts: BTreeSet<&str> = expressions.iter().map(|(w, _)| w.as_str()).collect();
    for wanted in [
        "alert NewsflowJobFailingRepeatedly",
        "alert NewsflowConsumerLagGrowing",
        "alert NewsflowNoLiveWorker",
        "alert NewsflowBudgetNearlySpent",
        "alert NewsflowDeadLetters",
    ] {
        assert!(alerts.contains(wanted), "{wanted} in {alerts:?}");
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/newsflow.json"))
            .expect("deploy/grafana/newsflow.json"),
    )
    .expect("the dashboard is JSON");
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("a PromQL target");
            expressions.push((format!("panel {}", panel["title"]), expr.to_owned()));
        }
    }

    // Services that did some work: a batch with a retried 429, so labelled families have samples.
    let mut system = System::builder()
        .workers(1)
        .worker_args(["--metrics-addr", "127.0.0.1:0"])
        .start()
        .await;
    let api = system.api();
    system
        .mock()
        .inject_fault(&json!({"kind": "rate_limited", "times": 1}))
        .await;
    api.create_job_ok(&json!({"id": "deployed", "params": {"q": "bitcoin"}, "interval_secs": 60}))
        .await;
    api.wait_for_latest("deployed", None, Duration::from_secs(45))
        .await;
    let worker = system
        .worker("worker-1")
        .stdout()
        .lines()
        .map(message_of)
        .find_map(|l| {
            l.split_once(" ops=http://")
                .map(|(_, addr)| addr.to_owned())
        })
        .expect("the worker's ops address");
    let (mut families, mut samples) = exposed(api.base().trim_start_matches("http://")).await;
    let (worker_families, worker_samples) = exposed(worker.trim()).await;
    families.extend(worker_families);
    samples.extend(worker_samples);

    let mut missing = Vec::new();
    let mut checked = 0;
    for (where_, expr) in &expressions {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "{where_} uses no newsflow metric: {expr}"
        );
        for name in names {
            checked += 1;
            if !is_exposed(&name, &families, &samples) {
                missing.push(format!("{where_}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not exposed by either service: {missing:#?}"
    );
    assert!(checked > 30, "only {checked} names checked");
}
