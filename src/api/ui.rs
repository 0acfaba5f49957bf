//! `/ui/`: the dashboard, three static files embedded in the binary
//! (`src/api/ui/`: HTML, vanilla JavaScript, CSS; no build step, nothing
//! fetched from elsewhere at run time).
//!
//! **Invariant: the dashboard can do nothing a token cannot.** Its files are
//! served without a token because they hold no data; everything it shows or
//! does goes through the public API (`/api/v1/…`, `/health`, `/metrics`)
//! with the `x-chroma-token` the user typed (kept in the tab's
//! `sessionStorage`), so every check of the API applies unchanged.
//!
//! The files are served with a Content-Security-Policy allowing only this
//! origin's script, style and connections (no inline script, no eval, no
//! framing), `nosniff`, and no referrer.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::AppState;

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const STYLE_CSS: &str = include_str!("ui/style.css");

/// What the dashboard's files may load and do.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route(
            "/ui/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset(STYLE_CSS, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The files change with the binary: always revalidate.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dashboard stays small, and runs under its own policy: no inline
    /// script or style, nothing from another origin.
    #[test]
    fn assets_are_small_and_need_nothing_the_policy_forbids() {
        let total = INDEX_HTML.len() + APP_JS.len() + STYLE_CSS.len();
        assert!(total < 200 * 1024, "{total} bytes");
        assert!(!INDEX_HTML.contains("<script>"), "inline script");
        assert!(!INDEX_HTML.contains("style="), "inline style");
        let handler = INDEX_HTML.match_indices(" on").any(|(at, _)| {
            let rest = &INDEX_HTML[at + 3..];
            let name = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name > 0 && rest[name..].starts_with('=')
        });
        assert!(!handler, "inline event handler");
        for file in [INDEX_HTML, APP_JS, STYLE_CSS] {
            assert!(!file.contains("http://") && !file.contains("https://"));
        }
        assert!(!APP_JS.contains("eval(") && !APP_JS.contains("innerHTML"));
    }
}
