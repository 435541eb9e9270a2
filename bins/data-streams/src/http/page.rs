//! The web page at `GET /`: hand-written HTML, CSS and JS compiled into the binary (no build
//! step, no CDN, works offline). The page itself needs no token; the data it reads does, and
//! it asks for the token when the API answers 401.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../../assets/index.html");
const SCRIPT: &str = include_str!("../../assets/app.js");
const STYLE: &str = include_str!("../../assets/app.css");

/// The paths the page is made of: open without a token.
pub const PATHS: &[&str] = &["/", "/app.js", "/app.css"];

/// Everything the page loads comes from this server; nothing inline runs.
const POLICY: &str = "default-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Revalidated on each load, so a new binary's page is seen at once.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

/// The page.
#[utoipa::path(get, path = "/", tag = "page", security(()),
    responses((status = 200, description = "The web page (text/html); no token needed", content_type = "text/html", body = String)))]
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// The page's script.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// The page's style sheet.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// The page's weight: what a first load transfers, uncompressed.
pub fn weight() -> usize {
    INDEX.len() + SCRIPT.len() + STYLE.len()
}
