//! The incident console: a web page built into the binary, and the HTTP JSON
//! API it (and any script) uses, on `console.listen`.
//!
//! The API is a thin front for the gRPC services: each request is
//! authenticated as on gRPC (`authorization: Bearer alk_…`), then handed to
//! the very handler the gRPC method runs, so roles, tenants, validation and
//! error messages are the same. Answers are JSON (specified in
//! docs/console.md); errors are `{"error": {"code", "message", "field"}}`
//! with the HTTP status of the gRPC code.

mod api;
mod listener;

use crate::auth::Access;
use crate::service::Logs;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub use listener::{ConsoleListener, tls_acceptor};

/// The page's files, built into the binary.
const INDEX_HTML: &str = include_str!("../console/index.html");
const CONSOLE_JS: &str = include_str!("../console/console.js");
const VERIFY_JS: &str = include_str!("../console/verify.js");
const CONSOLE_CSS: &str = include_str!("../console/console.css");

/// The page may load nothing but its own files and talk to nothing but its
/// own server.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// The router: the page at `/`, its scripts and style, the API under
/// `/api/v1/`.
pub fn router(logs: Arc<Logs>, access: Arc<Access>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", CONSOLE_JS) }),
        )
        .route(
            "/verify.js",
            get(|| async { asset("text/javascript; charset=utf-8", VERIFY_JS) }),
        )
        .route(
            "/console.css",
            get(|| async { asset("text/css; charset=utf-8", CONSOLE_CSS) }),
        )
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .nest("/api/v1", api::router(logs, access))
        // gzip when the client takes it (not for the event stream, which
        // must not wait for a compressor's buffer).
        .layer(tower_http::compression::CompressionLayer::new())
}

/// Serves the console until `shutdown` resolves.
pub async fn serve(
    listener: ConsoleListener,
    logs: Arc<Logs>,
    access: Arc<Access>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(logs, access).into_make_service_with_connect_info::<listener::Peer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
