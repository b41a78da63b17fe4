//! The web console at `/`: the bundle built from `console/` (checked in under
//! `console/dist/`, so building the binary needs no npm), embedded in the binary and
//! gzipped when the browser accepts it. It talks only to the public REST routes.

use axum::{Router, response::IntoResponse, routing::get};
use http::header;

const PAGE: &[u8] = include_bytes!("../../../../console/dist/index.html");
const SCRIPT: &[u8] = include_bytes!("../../../../console/dist/app.js");
const STYLESHEET: &[u8] = include_bytes!("../../../../console/dist/app.css");

/// The console's routes; the page names its assets with a content hash in the query
/// string, so they can be cached for good while the page itself is revalidated.
pub(super) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route("/console/app.js", get(script))
        .route("/console/app.css", get(stylesheet))
        .layer(tower_http::compression::CompressionLayer::new())
}

/// The page holds API keys and the admin token in session storage: it runs only its own
/// script, talks only to its own origin and cannot be framed (clickjacking the Keys view).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
}

async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn stylesheet() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLESHEET)
}

fn asset(content_type: &'static str, bytes: &'static [u8]) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        bytes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_names_the_assets_the_router_serves() {
        let page = std::str::from_utf8(PAGE).expect("console/dist/index.html is UTF-8");
        assert!(page.contains(r#"src="/console/app.js?v="#), "{page}");
        assert!(page.contains(r#"href="/console/app.css?v="#), "{page}");
        assert!(!SCRIPT.is_empty() && !STYLESHEET.is_empty());
    }
}
