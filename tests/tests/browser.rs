//! The web page in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`) driven over WebDriver. The page asks for the token, a job is created
//! through the form, its articles appear without a reload, an invalid form shows the API's
//! message beside the field, the job is stopped, and a screenshot is taken. With 100 jobs the
//! page's weight and load time are measured (reported, never asserted).
//!
//! This test fails when chromedriver is missing: `.ci/run` and `./dev` install it.

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use newsflow_tests::bins::{target_dir, workspace_root};
use newsflow_tests::nats_server::free_port;
use newsflow_tests::{wait_for, System};
use serde_json::{json, Value};

const TOKEN: &str = "browser-token-7Qm";
const WITHIN: Duration = Duration::from_secs(30);

/// `CHROMEDRIVER`, else `chromedriver` on the PATH, else Debian's path; a panic when none.
fn chromedriver() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMEDRIVER") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("chromedriver"))
        .chain([PathBuf::from("/usr/lib/chromium/chromedriver")])
        .find(|path| path.is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "chromedriver is missing: install Debian's chromium and chromium-driver \
             (apt-get install -y chromium chromium-driver; ./dev and .ci/run do it), \
             or point CHROMEDRIVER at one"
        )
    })
}

/// A chromedriver on a free port, killed on drop, and a headless Chromium session on it.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Self {
        let port = free_port();
        let driver = tokio::process::Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting chromedriver: {e}"));
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        wait_for(WITHIN, "chromedriver to answer /status", || {
            let request = http.get(format!("{url}/status"));
            async move {
                request
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
            }
        })
        .await;
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut capabilities = serde_json::Map::new();
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1280,1000".to_owned(),
        ];
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut options = json!({ "args": args });
        if let Some(binary) = std::env::var_os("CHROMIUM") {
            options["binary"] = json!(binary.to_string_lossy());
        }
        capabilities.insert("goog:chromeOptions".to_owned(), options);
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("starting a Chromium session: {e}"));
        Self {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("running {script}: {e}"))
    }

    /// Waits until `script` (an expression) is truthy; returns its value.
    async fn until(&self, what: &str, expression: &str) -> Value {
        let script = format!("return ({expression}) || null;");
        wait_for(WITHIN, what, || async {
            let value = self.js(&script).await;
            (!value.is_null()).then_some(value)
        })
        .await
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("finding {css}: {e}"));
        field
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clearing {css}: {e}"));
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("finding {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_creates_a_job_shows_its_articles_live_explains_a_bad_form_and_stops_the_job() {
    let system = System::builder().workers(1).api_token(TOKEN).start().await;
    let api = system.api();
    let base = api.base().to_owned();
    let browser = Browser::start().await;

    // The page needs no token; the API does, so the page asks for it.
    browser
        .client
        .goto(&format!("{base}/"))
        .await
        .expect("the page loads");
    browser
        .until(
            "the token form",
            "!document.querySelector('#token-form').hidden",
        )
        .await;
    browser.fill("#token", TOKEN).await;
    browser.click("#token-form button[type=submit]").await;
    browser
        .until(
            "the live stream",
            "document.querySelector('#live').textContent === 'live'",
        )
        .await;
    assert_eq!(
        browser
            .js("return document.querySelectorAll('#articles li').length;")
            .await,
        json!(0)
    );

    // Create a job through the form.
    browser.fill("#f-id", "browser").await;
    browser.fill("#f-q", "bitcoin").await;
    browser.fill("#f-interval_secs", "3600").await;
    browser.fill("#f-page_size", "5").await;
    browser.click("#create-form button[type=submit]").await;
    browser
        .until(
            "the job's row",
            "document.querySelector('#jobs tr[data-job=\"browser\"]')",
        )
        .await;
    // Its articles arrive over the event stream, without a reload.
    let titles = browser
        .until(
            "articles to appear live",
            "document.querySelectorAll('#articles li').length >= 5 && [...document.querySelectorAll('#articles li a')].map(a => a.textContent)",
        )
        .await;
    let served = api.latest("browser").await;
    let expected: Vec<Value> = served["articles"]
        .as_array()
        .expect("articles")
        .iter()
        .map(|a| a["title"].clone())
        .collect();
    for title in &expected {
        assert!(
            titles.as_array().expect("titles").contains(title),
            "{title} is on the page: {titles}"
        );
    }
    browser
        .until(
            "the row to show the batch",
            "document.querySelector('#jobs tr[data-job=\"browser\"] [data-field=latest]').textContent.includes('5 articles')",
        )
        .await;

    // An invalid form shows the API's message beside the field at fault.
    browser.fill("#f-id", "").await;
    browser.fill("#f-q", "ethereum").await;
    browser.fill("#f-interval_secs", "0").await;
    browser.click("#create-form button[type=submit]").await;
    let message = browser
        .until(
            "the interval's error message",
            "document.querySelector('#e-interval_secs').textContent",
        )
        .await;
    let message = message.as_str().expect("text").to_owned();
    assert!(message.contains("interval_secs"), "{message}");
    assert_eq!(
        browser
            .js("return document.querySelector('#f-interval_secs').getAttribute('aria-invalid');")
            .await,
        json!("true")
    );
    assert_eq!(
        api.ok("/jobs").await["jobs"].as_array().map(Vec::len),
        Some(1)
    );

    // Stop the job from its row.
    browser
        .click("#jobs button[data-action=stop][data-job=browser]")
        .await;
    browser
        .until(
            "the row to say stopped",
            "document.querySelector('#jobs tr[data-job=\"browser\"] [data-field=state]').textContent === 'stopped'",
        )
        .await;
    assert_eq!(api.job("browser").await["state"], "stopped");

    // The job's batch history and latest batch.
    browser
        .click("#jobs button[data-action=show][data-job=browser]")
        .await;
    browser
        .until(
            "the job's latest batch and history",
            "document.querySelectorAll('#detail-articles li').length === 5 && document.querySelectorAll('#detail-batches tbody tr').length >= 1",
        )
        .await;

    browser.js("window.scrollTo(0, 0); return null;").await;
    let png = browser.client.screenshot().await.expect("a screenshot");
    let shots = target_dir().join("browser");
    std::fs::create_dir_all(&shots).expect("a screenshot directory");
    std::fs::write(shots.join("newsflow.png"), &png).expect("the screenshot is saved");
    if std::env::var_os("NEWSFLOW_UPDATE_SCREENSHOTS").is_some() {
        let docs = workspace_root().join("docs").join("screenshots");
        std::fs::create_dir_all(&docs).expect("docs/screenshots");
        std::fs::write(docs.join("newsflow.png"), &png).expect("the README's screenshot");
    }

    // With 100 jobs: the page's weight and load time, as the browser measured them.
    for n in 0..99 {
        api.create_job_ok(&json!({"id": format!("load-{n:02}"), "params": {"q": "bitcoin"}, "interval_secs": 3600, "page_size": 5}))
            .await;
    }
    browser
        .client
        .goto(&format!("{base}/"))
        .await
        .expect("the page loads again");
    browser
        .until(
            "100 job rows",
            "document.querySelectorAll('#jobs tbody tr').length === 100 && performance.getEntriesByName('jobs-rendered').length > 0",
        )
        .await;
    let timing = browser
        .js("const nav = performance.getEntriesByType('navigation')[0];
             const assets = performance.getEntriesByType('resource')
               .filter(r => r.name.endsWith('/app.js') || r.name.endsWith('/app.css'));
             const marks = performance.getEntriesByName('jobs-rendered');
             return {
               page_bytes: nav.decodedBodySize + assets.reduce((n, r) => n + r.decodedBodySize, 0),
               dom_content_loaded_ms: nav.domContentLoadedEventEnd,
               load_ms: nav.loadEventEnd,
               jobs_rendered_ms: marks[marks.length - 1].startTime,
             };")
        .await;
    let report = format!("page load with 100 jobs (headless Chromium, debug build): {timing}");
    println!("{report}");
    std::fs::write(shots.join("load-timing.json"), timing.to_string()).expect("saved");
    assert!(
        timing["page_bytes"].as_f64().is_some_and(|b| b > 0.0),
        "{report}"
    );
    browser.client.close().await.expect("the session closes");
}
