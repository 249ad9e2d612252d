//! The C2SP tlog-tiles read API over plain HTTP: `GET /<log id>/checkpoint`,
//! `/<log id>/tile/<L>/<N>[.p/<W>]` and `/<log id>/tile/entries/<N>[.p/<W>]`,
//! built by the same functions as the mirror's objects, so a standard tile
//! client reads a live log and gets the bytes the mirror holds.
//!
//! The tree served is that of the latest signed checkpoint: a tile beyond
//! it is 404 until a checkpoint covers it. Callers authenticate as on gRPC
//! (`authorization: Bearer alk_…`; reader role or above) when the server
//! requires authentication.

use crate::auth::{Access, Action};
use crate::mirror::{entry_bundle, hash_tile};
use crate::service::Logs;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ledger_verify::tiles::{TilesObject, parse_path};
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone)]
struct Ctx {
    logs: Arc<Logs>,
    access: Arc<Access>,
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body + "\n",
    )
        .into_response()
}

/// Maps a gRPC status of the shared authorisation code to HTTP.
fn refused(s: tonic::Status) -> Response {
    let code = match s.code() {
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut r = text(code, s.message().to_string());
    if code == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"agent-ledger\""),
        );
    }
    r
}

async fn object(
    State(ctx): State<Ctx>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((log_id, rest)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let who = match crate::auth::authenticate_http(&ctx.access, headers, peer.ip()).await {
        Ok(who) => who,
        Err(s) => return refused(s),
    };
    let log = match ctx.logs.authorize(&who, Action::Read, &log_id) {
        Ok(l) => l.clone(),
        Err(s) => return refused(s),
    };
    let Some(what) = parse_path(&rest) else {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "{rest}: not a tlog-tiles path (checkpoint, tile/<L>/<N>[.p/<W>], tile/entries/<N>[.p/<W>])"
            ),
        );
    };
    let Some(cp) = log.latest_checkpoint() else {
        return text(StatusCode::NOT_FOUND, "the log is empty".into());
    };
    let size = cp.checkpoint.size;
    if what == TilesObject::Checkpoint {
        return (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            cp.note.clone(),
        )
            .into_response();
    }
    let store = log.store.clone();
    let built = tokio::task::spawn_blocking(move || match what {
        TilesObject::Tile(id) => hash_tile(&store, id, size),
        TilesObject::Entries(n, w) => entry_bundle(&store, n, w, size),
        TilesObject::Checkpoint => Ok(None),
    })
    .await;
    match built {
        Ok(Ok(Some(bytes))) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                // Tiles never change; the data is not public.
                (
                    header::CACHE_CONTROL,
                    "private, max-age=31536000, immutable",
                ),
            ],
            bytes,
        )
            .into_response(),
        Ok(Ok(None)) => text(
            StatusCode::NOT_FOUND,
            format!("{rest}: not in the tree of the latest checkpoint (size {size})"),
        ),
        Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Serves the read API until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    logs: Arc<Logs>,
    access: Arc<Access>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/{log}/{*rest}", axum::routing::get(object))
        .with_state(Ctx { logs, access });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
