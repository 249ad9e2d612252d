//! The HTTP JSON API under `/api/v1/` (docs/console.md): each endpoint
//! authenticates the caller, builds the gRPC request and runs the gRPC
//! handler itself, then writes its answer as JSON.

use super::listener::Peer;
use crate::auth::{Access, Action, Identity};
use crate::log::Log;
use crate::query::Filter;
use crate::service::Logs;
use crate::service::export::ExportService;
use crate::service::proofs::{ProofsService, blocking, internal};
use crate::service::query::{QueryService, RecordOptions, records};
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::StreamExt as _;
use ledger_proto::v1::export_server::Export;
use ledger_proto::v1::proofs_server::Proofs;
use ledger_proto::v1::query_server::Query;
use ledger_proto::v1::{
    AuditEvent, EntryRecord, EventFilter, EventKind, ExportRequest, GetCheckpointRequest,
    GetConsistencyProofRequest, GetLogStatusRequest, InclusionProof, ListEventsRequest, Outcome,
    RiskTier, SignedCheckpoint, TimelineRequest,
};
use ledger_verify::entry::decode_entry;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

#[derive(Clone)]
struct Ctx {
    logs: Arc<Logs>,
    access: Arc<Access>,
    query: Arc<QueryService>,
    proofs: Arc<ProofsService>,
    export: Arc<ExportService>,
}

pub fn router(logs: Arc<Logs>, access: Arc<Access>) -> axum::Router {
    use axum::routing::get;
    let ctx = Ctx {
        query: Arc::new(QueryService { logs: logs.clone() }),
        proofs: Arc::new(ProofsService { logs: logs.clone() }),
        export: Arc::new(ExportService { logs: logs.clone() }),
        logs,
        access,
    };
    axum::Router::new()
        .route("/session", get(session))
        .route("/checkpoint", get(checkpoint))
        .route("/events", get(events))
        .route("/traces/{correlation_id}", get(trace))
        .route("/consistency", get(consistency))
        .route("/tail", get(tail))
        .route("/export", get(export))
        .fallback(|| async {
            ApiError(Status::not_found(
                "path: no such endpoint (see docs/console.md)",
            ))
        })
        .with_state(ctx)
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// A gRPC status, answered as HTTP.
#[derive(Debug)]
struct ApiError(Status);

impl From<Status> for ApiError {
    fn from(s: Status) -> ApiError {
        ApiError(s)
    }
}

/// The HTTP status of a gRPC code (as google.rpc.Code documents it).
fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code::*;
    match code {
        Ok => StatusCode::OK,
        InvalidArgument | FailedPrecondition | OutOfRange => StatusCode::BAD_REQUEST,
        Unauthenticated => StatusCode::UNAUTHORIZED,
        PermissionDenied => StatusCode::FORBIDDEN,
        NotFound => StatusCode::NOT_FOUND,
        AlreadyExists | Aborted => StatusCode::CONFLICT,
        ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Cancelled | Unknown | Internal | DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The field a message names: its text before the first `: `, when that is
/// a field path.
fn field_of(message: &str) -> &str {
    match message.split_once(": ") {
        Some((f, _))
            if !f.is_empty()
                && f.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']')) =>
        {
            f
        }
        _ => "",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let s = self.0;
        let body = json!({"error": {
            "code": grpc_code_name(s.code()),
            "message": s.message(),
            "field": field_of(s.message()),
        }});
        let mut r = json_response(http_status(s.code()), &body);
        if s.code() == tonic::Code::Unauthenticated {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"agent-ledger\""),
            );
        }
        r
    }
}

/// `INVALID_ARGUMENT`, `NOT_FOUND`, … as the gRPC specification spells them.
fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        serde_json::to_vec(body).unwrap_or_default(),
    )
        .into_response()
}

fn ok(body: Value) -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, &body))
}

// ---------------------------------------------------------------------------
// Query parameters
// ---------------------------------------------------------------------------

/// The query string's parameters; each endpoint takes the ones it knows,
/// and any left over is refused by name (a typo must not widen a search).
struct Params(Vec<(String, String)>);

fn bad(field: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError(Status::invalid_argument(format!("{field}: {reason}")))
}

impl Params {
    fn parse(q: Option<String>) -> Params {
        Params(
            form_urlencoded::parse(q.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// Every value of `name` (repeated, or comma-separated).
    fn all(&mut self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.0.retain(|(k, v)| {
            if k != name {
                return true;
            }
            out.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            );
            false
        });
        out
    }

    /// The value of `name`, given at most once.
    fn one(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        let mut found: Vec<String> = Vec::new();
        self.0.retain(|(k, v)| {
            if k == name {
                found.push(v.clone());
                false
            } else {
                true
            }
        });
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => Err(bad(name, "given more than once")),
        }
    }

    fn text(&mut self, name: &str) -> Result<String, ApiError> {
        Ok(self.one(name)?.unwrap_or_default())
    }

    /// A whole number; None when absent or empty.
    fn optional_number(&mut self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.one(name)? {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| bad(name, format!("{} is not a whole number", quote(&v)))),
        }
    }

    /// A whole number; 0 when absent or empty (the proto's default).
    fn number(&mut self, name: &str) -> Result<u64, ApiError> {
        Ok(self.optional_number(name)?.unwrap_or(0))
    }

    /// `true`/`1`/(no value) or `false`/`0`.
    fn flag(&mut self, name: &str) -> Result<bool, ApiError> {
        match self.one(name)?.as_deref() {
            None | Some("false") | Some("0") => Ok(false),
            Some("") | Some("true") | Some("1") => Ok(true),
            Some(v) => Err(bad(name, format!("{} is not true or false", quote(v)))),
        }
    }

    fn time(
        &mut self,
        name: &str,
        field: &str,
    ) -> Result<Option<prost_types::Timestamp>, ApiError> {
        match self.one(name)? {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => {
                let t = chrono::DateTime::parse_from_rfc3339(&v).map_err(|e| {
                    bad(field, format!("{} is not an RFC 3339 time: {e}", quote(&v)))
                })?;
                Ok(Some(prost_types::Timestamp {
                    seconds: t.timestamp(),
                    nanos: t.timestamp_subsec_nanos() as i32,
                }))
            }
        }
    }

    /// Refuses what no one took.
    fn finish(self) -> Result<(), ApiError> {
        match self.0.first() {
            None => Ok(()),
            Some((k, _)) => Err(bad(
                k,
                "unknown parameter for this endpoint (see docs/console.md)",
            )),
        }
    }
}

fn quote(s: &str) -> String {
    crate::service::answers::quote(s)
}

/// Parses enum names as the CLI writes them (`tool_call`), or as the proto
/// does (`TOOL_CALL`, `EVENT_KIND_TOOL_CALL`).
fn enum_values(
    p: &mut Params,
    name: &str,
    field: &str,
    prefix: &str,
    parse: fn(&str) -> Option<i32>,
) -> Result<Vec<i32>, ApiError> {
    p.all(name)
        .into_iter()
        .map(|v| {
            let up = v.to_ascii_uppercase();
            parse(&up)
                .or_else(|| parse(&format!("{prefix}{up}")))
                .ok_or_else(|| bad(field, format!("unknown value {}", quote(&v))))
        })
        .collect()
}

/// The event filter of a query string: the names of `EventFilter`'s fields.
fn filter(p: &mut Params) -> Result<EventFilter, ApiError> {
    Ok(EventFilter {
        correlation_id: p.text("correlation_id")?,
        agent_id: p.text("agent_id")?,
        principal: p.text("principal")?,
        tool_name: p.text("tool_name")?,
        kinds: enum_values(p, "kinds", "filter.kinds", "EVENT_KIND_", |s| {
            EventKind::from_str_name(s).map(|k| k as i32)
        })?,
        risk_tiers: enum_values(p, "risk_tiers", "filter.risk_tiers", "RISK_TIER_", |s| {
            RiskTier::from_str_name(s).map(|k| k as i32)
        })?,
        outcomes: enum_values(p, "outcomes", "filter.outcomes", "OUTCOME_", |s| {
            Outcome::from_str_name(s).map(|k| k as i32)
        })?,
        occurred_from: p.time("occurred_from", "filter.occurred_from")?,
        occurred_to: p.time("occurred_to", "filter.occurred_to")?,
    })
}

// ---------------------------------------------------------------------------
// JSON forms
// ---------------------------------------------------------------------------

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits, as few as show the
/// value exactly (`2026-11-25T10:00:00.250Z`).
fn time_json(t: Option<prost_types::Timestamp>) -> Value {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)))
        .unwrap_or(Value::Null)
}

/// `tool_call` for EVENT_KIND_TOOL_CALL; the number, as text, for a value
/// the API does not define.
fn enum_name(known: Option<&str>, prefix: &str, value: i32) -> String {
    match known {
        Some(n) => n.trim_start_matches(prefix).to_ascii_lowercase(),
        None => value.to_string(),
    }
}

fn event_json(e: &AuditEvent) -> Value {
    let attributes: BTreeMap<&String, &String> = e.attributes.iter().collect();
    json!({
        "event_id": e.event_id,
        "correlation_id": e.correlation_id,
        "span_id": e.span_id,
        "parent_span_id": e.parent_span_id,
        "agent_id": e.agent_id,
        "session_id": e.session_id,
        "principal": e.principal,
        "kind": enum_name(EventKind::try_from(e.kind).ok().map(|k| k.as_str_name()), "EVENT_KIND_", e.kind),
        "tool_name": e.tool_name,
        "action": e.action,
        "resource": e.resource,
        "risk_tier": enum_name(RiskTier::try_from(e.risk_tier).ok().map(|k| k.as_str_name()), "RISK_TIER_", e.risk_tier),
        "outcome": enum_name(Outcome::try_from(e.outcome).ok().map(|k| k.as_str_name()), "OUTCOME_", e.outcome),
        "occurred_at": time_json(e.occurred_at),
        "attributes": attributes,
        "payload_content_type": e.payload_content_type,
    })
}

fn inclusion_json(p: &InclusionProof) -> Value {
    json!({
        "leaf_index": p.leaf_index,
        "tree_size": p.tree_size,
        "hashes": p.hashes.iter().map(|h| b64(h)).collect::<Vec<_>>(),
    })
}

fn checkpoint_json(cp: &SignedCheckpoint) -> Value {
    json!({
        "note": cp.note,
        "origin": cp.origin,
        "tree_size": cp.tree_size,
        "root_hash": b64(&cp.root_hash),
    })
}

/// A record: the stored entry bytes (what proofs cover) and, for
/// convenience, what they decode to.
fn record_json(r: &EntryRecord, redactions: &HashMap<u64, EntryRecord>) -> Value {
    let mut v = json!({
        "index": r.index,
        "entry": b64(&r.entry),
        "leaf_hash": b64(&r.leaf_hash),
        "payload_redacted": r.payload_redacted,
    });
    if let Ok(e) = decode_entry(&r.entry) {
        v["integrated_at"] = time_json(e.integrated_at);
        v["writer"] = e.writer.into();
        v["payload_commitment"] = b64(&e.payload_commitment).into();
        v["payload_size"] = e.payload_size.into();
        v["event"] = e.event.as_ref().map(event_json).unwrap_or(Value::Null);
        v["redaction"] = e
            .redaction
            .map(|r| json!({"target_index": r.target_index, "reason": r.reason}))
            .unwrap_or(Value::Null);
    }
    if !r.payload_salt.is_empty() {
        v["payload"] = b64(&r.payload).into();
        v["payload_salt"] = b64(&r.payload_salt).into();
    }
    if let Some(p) = &r.inclusion {
        v["inclusion"] = inclusion_json(p);
    }
    if let Some(red) = redactions.get(&r.index) {
        v["redacted_by"] = record_json(red, &HashMap::new());
    }
    v
}

fn records_json(rs: &[EntryRecord], redactions: &HashMap<u64, EntryRecord>) -> Value {
    Value::Array(rs.iter().map(|r| record_json(r, redactions)).collect())
}

/// The redaction entries that erased the payloads of `rs`, by the index of
/// the entry they erased, with inclusion proofs in the tree of `size` when
/// it covers them.
async fn redactions_of(
    log: &Arc<Log>,
    rs: &[EntryRecord],
    size: u64,
) -> Result<HashMap<u64, EntryRecord>, Status> {
    let targets: Vec<u64> = rs
        .iter()
        .filter(|r| r.payload_redacted)
        .map(|r| r.index)
        .collect();
    if targets.is_empty() {
        return Ok(HashMap::new());
    }
    let store = log.store.clone();
    blocking(move || {
        let mut out = HashMap::new();
        for t in targets {
            let key = crate::sequencer::redaction_key(t);
            let Some(at) = store.dedup(&key).map_err(internal)? else {
                continue;
            };
            let Some(bytes) = store.entry(at).map_err(internal)? else {
                continue;
            };
            let opts = RecordOptions {
                payloads: false,
                proofs_at: (at < size).then_some(size),
            };
            if let Some(r) = records(&store, [(at, bytes)], opts)?.pop() {
                out.insert(t, r);
            }
        }
        Ok(out)
    })
    .await
}

// ---------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------

/// An API call: its caller, authenticated as on gRPC, and its query
/// parameters.
struct Call {
    who: Identity,
    params: Params,
}

impl FromRequestParts<Ctx> for Call {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Ctx) -> Result<Call, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<Peer>>()
            .map(|c| c.0.0.ip())
            .ok_or_else(|| ApiError(Status::internal("no peer address")))?;
        let who = crate::auth::authenticate_http(&ctx.access, parts.headers.clone(), peer).await?;
        Ok(Call {
            who,
            params: Params::parse(parts.uri.query().map(String::from)),
        })
    }
}

/// A gRPC request carrying the caller, as the interceptor would build it.
fn request<T>(who: &Identity, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.extensions_mut().insert(who.clone());
    r
}

async fn session(
    State(ctx): State<Ctx>,
    Call { who, params: mut p }: Call,
) -> Result<Response, ApiError> {
    let log = p.text("log")?;
    p.finish()?;
    let s = ctx
        .proofs
        .get_log_status(request(&who, GetLogStatusRequest { log }))
        .await?
        .into_inner();
    ok(json!({
        "caller": {"name": who.name, "role": who.role, "tenant": who.tenant},
        "log": {
            "id": s.log,
            "origin": s.origin,
            "committed_size": s.committed_size,
            "signed_size": s.signed_size,
            "indexed_size": s.indexed_size,
            "anchored_size": s.anchored_size,
            "mirrored_size": s.mirrored_size,
        },
    }))
}

async fn checkpoint(
    State(ctx): State<Ctx>,
    Call { who, params: mut p }: Call,
) -> Result<Response, ApiError> {
    let req = GetCheckpointRequest {
        log: p.text("log")?,
        tree_size: p.number("tree_size")?,
    };
    p.finish()?;
    let cp = ctx
        .proofs
        .get_checkpoint(request(&who, req))
        .await?
        .into_inner();
    ok(checkpoint_json(&cp))
}

async fn events(
    State(ctx): State<Ctx>,
    Call { who, params: mut p }: Call,
) -> Result<Response, ApiError> {
    let req = ListEventsRequest {
        log: p.text("log")?,
        filter: Some(filter(&mut p)?),
        page_size: p.number("page_size")?.min(u32::MAX as u64) as u32,
        page_token: p.text("page_token")?,
        include_payloads: p.flag("include_payloads")?,
        with_proofs: p.flag("with_proofs")?,
        proof_tree_size: p.number("proof_tree_size")?,
        descending: p.flag("descending")?,
    };
    p.finish()?;
    let log = ctx.logs.authorize(&who, Action::Read, &req.log)?.clone();
    let r = ctx
        .query
        .list_events(request(&who, req))
        .await?
        .into_inner();
    let cp = r.checkpoint.unwrap_or_default();
    let redactions = redactions_of(&log, &r.entries, cp.tree_size).await?;
    ok(json!({
        "entries": records_json(&r.entries, &redactions),
        "next_page_token": r.next_page_token,
        "checkpoint": checkpoint_json(&cp),
    }))
}

async fn trace(
    State(ctx): State<Ctx>,
    Call { who, params: mut p }: Call,
    Path(correlation_id): Path<String>,
) -> Result<Response, ApiError> {
    let req = TimelineRequest {
        log: p.text("log")?,
        correlation_id,
        include_payloads: p.flag("include_payloads")?,
        with_proofs: p.flag("with_proofs")?,
        proof_tree_size: p.number("proof_tree_size")?,
    };
    p.finish()?;
    let log = ctx.logs.authorize(&who, Action::Read, &req.log)?.clone();
    let r = ctx
        .query
        .get_timeline(request(&who, req))
        .await?
        .into_inner();
    let cp = r.checkpoint.unwrap_or_default();
    let redactions = redactions_of(&log, &r.entries, cp.tree_size).await?;
    let spans: Vec<Value> = r
        .spans
        .iter()
        .map(|s| {
            json!({
                "span_id": s.span_id,
                "parent_span_id": s.parent_span_id,
                "entry_indexes": s.entry_indexes,
                "child_span_ids": s.child_span_ids,
            })
        })
        .collect();
    ok(json!({
        "entries": records_json(&r.entries, &redactions),
        "spans": spans,
        "root_span_ids": r.root_span_ids,
        "checkpoint": checkpoint_json(&cp),
    }))
}

async fn consistency(
    State(ctx): State<Ctx>,
    Call { who, params: mut p }: Call,
) -> Result<Response, ApiError> {
    let req = GetConsistencyProofRequest {
        log: p.text("log")?,
        old_size: p.number("old_size")?,
        new_size: p.number("new_size")?,
    };
    p.finish()?;
    let r = ctx
        .proofs
        .get_consistency_proof(request(&who, req))
        .await?
        .into_inner();
    let proof = r.proof.unwrap_or_default();
    ok(json!({
        "old_size": proof.old_size,
        "new_size": proof.new_size,
        "hashes": proof.hashes.iter().map(|h| b64(h)).collect::<Vec<_>>(),
        "checkpoint": checkpoint_json(&r.new_checkpoint.unwrap_or_default()),
    }))
}

async fn export(
    State(ctx): State<Ctx>,
    Call { who, params: mut p }: Call,
) -> Result<Response, ApiError> {
    let req = ExportRequest {
        log: p.text("log")?,
        start: p.number("start")?,
        end: p.number("end")?,
        include_payloads: p.flag("include_payloads")?,
    };
    p.finish()?;
    let name = format!("ledger-{}-{}.bundle", req.start, req.end);
    let chunks = ctx.export.export(request(&who, req)).await?.into_inner();
    let body = Body::from_stream(chunks.map(|c| c.map(|c| axum::body::Bytes::from(c.data))));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        body,
    )
        .into_response())
}

/// Server-sent events: a `checkpoint` event (with the consistency proof
/// from the one sent before, or from `known_size`), then an `entry` event
/// for each new matching entry, with its inclusion proof in that
/// checkpoint; again at every new checkpoint that covers a match.
async fn tail(
    State(ctx): State<Ctx>,
    Call { who, params: mut p }: Call,
) -> Result<Response, ApiError> {
    let log_name = p.text("log")?;
    let from_index = p.optional_number("from_index")?;
    let known_size = p.number("known_size")?;
    let payloads = p.flag("include_payloads")?;
    let f = filter(&mut p)?;
    p.finish()?;
    let log = ctx.logs.authorize(&who, Action::Read, &log_name)?.clone();
    let f = Filter::from_proto(Some(&f)).map_err(Status::from)?;
    // Fresh: covers every entry acked so far (signed now if need be).
    let latest = match crate::service::proofs::checkpoint_at(&log, 0).await {
        Ok(cp) => cp.tree_size,
        Err(s) if s.code() == tonic::Code::NotFound => 0,
        Err(s) => return Err(s.into()),
    };
    if known_size > latest {
        return Err(bad(
            "known_size",
            format!("{known_size} is past the latest checkpoint ({latest})"),
        ));
    }
    let next = from_index.unwrap_or(latest);
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(64);
    tokio::spawn(follow(log, f, next, known_size, payloads, tx));
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// One batch of the tail: the checkpoint, its consistency proof from
/// `proved_from`, and the matching entries of [start, end) proved in it.
struct TailBatch {
    checkpoint: Value,
    entries: Vec<Value>,
}

async fn follow(
    log: Arc<Log>,
    filter: Filter,
    mut next: u64,
    mut proved_from: u64,
    payloads: bool,
    tx: mpsc::Sender<Result<Event, Infallible>>,
) {
    // A first comment sends the headers at once: the client knows the
    // tail is open before any entry comes.
    let hello = Event::default().comment(format!("following from index {next}"));
    if tx.send(Ok(hello)).await.is_err() {
        return;
    }
    let mut checkpoints = log.watch_checkpoints();
    loop {
        let cp = checkpoints.borrow_and_update().clone();
        if let Some(cp) = cp.filter(|c| c.checkpoint.size > next) {
            let size = cp.checkpoint.size;
            let end = size.min(next + 1024);
            let batch = tail_batch(&log, &filter, &cp, next, end, proved_from, payloads).await;
            match batch {
                Ok(Some(b)) => {
                    let mut events = vec![
                        Event::default()
                            .event("checkpoint")
                            .data(b.checkpoint.to_string()),
                    ];
                    events.extend(
                        b.entries
                            .into_iter()
                            .map(|e| Event::default().event("entry").data(e.to_string())),
                    );
                    for e in events {
                        if tx.send(Ok(e)).await.is_err() {
                            return;
                        }
                    }
                    proved_from = size;
                }
                Ok(None) => {}
                Err(s) => {
                    let body = json!({"code": grpc_code_name(s.code()), "message": s.message()});
                    let _ = tx
                        .send(Ok(Event::default().event("error").data(body.to_string())))
                        .await;
                    return;
                }
            }
            next = end;
            if next < size {
                continue;
            }
        }
        tokio::select! {
            changed = checkpoints.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
    }
}

async fn tail_batch(
    log: &Arc<Log>,
    filter: &Filter,
    cp: &crate::sequencer::SignedCheckpoint,
    start: u64,
    end: u64,
    proved_from: u64,
    payloads: bool,
) -> Result<Option<TailBatch>, Status> {
    let size = cp.checkpoint.size;
    let store = log.store.clone();
    let filter = filter.clone();
    let (matching, consistency) = blocking(move || {
        let rows = crate::service::query::range(&store, start, end)?;
        let rows = rows
            .into_iter()
            .filter(|(_, bytes)| decode_entry(bytes).is_ok_and(|e| filter.matches(&e)));
        let opts = RecordOptions {
            payloads,
            proofs_at: Some(size),
        };
        let matching = records(&store, rows, opts)?;
        let consistency = if matching.is_empty() || proved_from == 0 || proved_from == size {
            Vec::new()
        } else {
            ledger_verify::tree::consistency_proof(&*store, proved_from, size).map_err(internal)?
        };
        Ok((matching, consistency))
    })
    .await?;
    if matching.is_empty() {
        return Ok(None);
    }
    let redactions = redactions_of(log, &matching, size).await?;
    let mut checkpoint = checkpoint_json(&cp.to_proto());
    checkpoint["consistency"] = json!({
        "old_size": proved_from,
        "new_size": size,
        "hashes": consistency.iter().map(|h| b64(h.as_ref())).collect::<Vec<_>>(),
    });
    Ok(Some(TailBatch {
        checkpoint,
        entries: matching
            .iter()
            .map(|r| record_json(r, &redactions))
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_taken_from_messages_that_name_one() {
        assert_eq!(field_of("filter.kinds: unknown value"), "filter.kinds");
        assert_eq!(field_of("the log is empty: no checkpoint"), "");
        assert_eq!(field_of("no colon"), "");
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused_by_name() {
        let mut p = Params::parse(Some("agent_id=a&agnet_id=b".into()));
        let f = filter(&mut p).unwrap();
        assert_eq!(f.agent_id, "a");
        let e = p.finish().err().unwrap().0;
        assert!(e.message().starts_with("agnet_id: unknown parameter"));
        let mut p = Params::parse(Some("tree_size=1&tree_size=2".into()));
        assert!(p.number("tree_size").is_err());
    }

    #[test]
    fn enum_filters_take_every_spelling_and_name_the_field() {
        let mut p = Params::parse(Some(
            "kinds=tool_call,TOOL_RESULT&kinds=EVENT_KIND_KILL_SWITCH&risk_tiers=high".into(),
        ));
        let f = filter(&mut p).unwrap();
        assert_eq!(
            f.kinds,
            vec![
                EventKind::ToolCall as i32,
                EventKind::ToolResult as i32,
                EventKind::KillSwitch as i32
            ]
        );
        assert_eq!(f.risk_tiers, vec![RiskTier::High as i32]);
        let mut p = Params::parse(Some("outcomes=maybe".into()));
        let e = filter(&mut p).err().unwrap().0;
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with("filter.outcomes: unknown value"));
    }

    #[test]
    fn times_print_as_few_fraction_digits_as_show_them() {
        let t = |s, n| {
            time_json(Some(prost_types::Timestamp {
                seconds: s,
                nanos: n,
            }))
        };
        assert_eq!(t(0, 0), json!("1970-01-01T00:00:00Z"));
        assert_eq!(t(0, 250_000_000), json!("1970-01-01T00:00:00.250Z"));
        assert_eq!(t(0, 250_500_000), json!("1970-01-01T00:00:00.250500Z"));
        assert_eq!(t(0, 1), json!("1970-01-01T00:00:00.000000001Z"));
    }
}
