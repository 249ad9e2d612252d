//! OpenTelemetry trace ingest: OTLP/gRPC (`TraceService/Export` on the main
//! gRPC port) and OTLP/HTTP (`POST /v1/traces`, protobuf or JSON). Each
//! GenAI span becomes one audit event, appended exactly as `Append` would:
//! the same authentication, writer identity, agent pinning, rate limits,
//! validation and durability. The mapping is specified in docs/otlp.md.

use crate::auth::{Access, Identity, RateLimiter};
use crate::log::{Log, Rejection};
use crate::service::Logs;
use crate::service::ingest::admit;
use ledger_proto::v1::{AppendRequest, AuditEvent, EventKind, Outcome, RiskTier};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, status::StatusCode};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What a span says about itself, attribute by attribute.
struct Attrs<'a>(BTreeMap<&'a str, &'a AnyValue>);

/// An attribute value as text (arrays and maps as JSON).
fn text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex::encode(b),
        other => json(&AnyValue {
            value: other.clone(),
        })
        .to_string(),
    }
}

/// An attribute value as JSON (a string holding JSON is parsed).
fn json(v: &AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.value {
        None => J::Null,
        Some(any_value::Value::StringValue(s)) => {
            serde_json::from_str(s).unwrap_or_else(|_| J::String(s.clone()))
        }
        Some(any_value::Value::BoolValue(b)) => J::Bool(*b),
        Some(any_value::Value::IntValue(i)) => J::from(*i),
        Some(any_value::Value::DoubleValue(d)) => J::from(*d),
        Some(any_value::Value::BytesValue(b)) => J::String(hex::encode(b)),
        Some(any_value::Value::ArrayValue(a)) => J::Array(a.values.iter().map(json).collect()),
        Some(any_value::Value::KvlistValue(kv)) => J::Object(
            kv.values
                .iter()
                .map(|k| (k.key.clone(), k.value.as_ref().map_or(J::Null, json)))
                .collect(),
        ),
    }
}

impl<'a> Attrs<'a> {
    fn of(kvs: &'a [KeyValue]) -> Attrs<'a> {
        Attrs(
            kvs.iter()
                .filter_map(|kv| kv.value.as_ref().map(|v| (kv.key.as_str(), v)))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).map(|v| text(v)).filter(|s| !s.is_empty())
    }

    /// The first of `keys` present.
    fn first(&self, keys: &[&str]) -> Option<String> {
        keys.iter().find_map(|k| self.get(k))
    }
}

/// Attributes whose values go into the payload, by the name they get there.
const PAYLOAD_KEYS: [(&str, &str); 12] = [
    ("gen_ai.tool.call.arguments", "arguments"),
    ("gen_ai.tool.call.result", "result"),
    ("gen_ai.input.messages", "input_messages"),
    ("gen_ai.output.messages", "output_messages"),
    ("gen_ai.system_instructions", "system_instructions"),
    ("gen_ai.prompt", "prompt"),
    ("gen_ai.completion", "completion"),
    ("input.value", "input"),
    ("output.value", "output"),
    ("tool.parameters", "parameters"),
    ("traceloop.entity.input", "input"),
    ("traceloop.entity.output", "output"),
];

/// How a span is classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Tool,
    Model,
    Agent,
    /// Not a GenAI span.
    Other,
}

fn classify(a: &Attrs<'_>) -> (Class, Option<String>) {
    let op = a.get("gen_ai.operation.name");
    if let Some(op) = &op {
        let class = match op.as_str() {
            "execute_tool" => Class::Tool,
            "chat" | "text_completion" | "generate_content" | "embeddings" | "completion" => {
                Class::Model
            }
            "invoke_agent" | "create_agent" | "invoke_workflow" => Class::Agent,
            _ => Class::Agent,
        };
        return (class, Some(op.clone()));
    }
    if let Some(k) = a.get("openinference.span.kind") {
        let class = match k.to_ascii_uppercase().as_str() {
            "TOOL" => Class::Tool,
            "LLM" | "EMBEDDING" => Class::Model,
            _ => Class::Agent,
        };
        return (class, Some(k.to_ascii_lowercase()));
    }
    if let Some(k) = a.get("traceloop.span.kind") {
        let class = match k.as_str() {
            "tool" => Class::Tool,
            _ => Class::Agent,
        };
        return (class, Some(k));
    }
    if a.get("mcp.method.name").is_some() && a.get("gen_ai.tool.name").is_some() {
        return (Class::Tool, a.get("mcp.method.name"));
    }
    // Older conventions: a model call names its system.
    if a.first(&["gen_ai.system", "gen_ai.provider.name"])
        .is_some()
    {
        return (Class::Model, a.get("llm.request.type"));
    }
    (Class::Other, None)
}

/// Lowercase hex of an id of `len` bytes, not all zero.
fn id_hex(bytes: &[u8], len: usize, field: &str) -> Result<String, String> {
    if bytes.len() != len {
        return Err(format!(
            "{field}: {} bytes, a span needs {len}",
            bytes.len()
        ));
    }
    if bytes.iter().all(|b| *b == 0) {
        return Err(format!("{field}: all zero"));
    }
    Ok(hex::encode(bytes))
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Mapping settings.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// Keep spans that are not GenAI spans (as `custom` events).
    pub keep_non_genai: bool,
    pub max_attributes: usize,
    pub max_attribute_key_bytes: usize,
    pub max_attribute_value_bytes: usize,
}

/// The event of one span; `None` for a span that is dropped (not a GenAI
/// span); `Err` for a span that cannot be recorded, with the reason.
/// `agent_hint` is the agent of the nearest ancestor in the same request.
pub fn map_span(
    resource: &[KeyValue],
    scope: &str,
    span: &Span,
    agent_hint: Option<&str>,
    m: &Mapping,
) -> Result<Option<AuditEvent>, String> {
    let a = Attrs::of(&span.attributes);
    let r = Attrs::of(resource);
    let (class, op) = classify(&a);
    if class == Class::Other && !m.keep_non_genai {
        return Ok(None);
    }
    let trace = id_hex(&span.trace_id, 16, "trace_id")?;
    let span_id = id_hex(&span.span_id, 8, "span_id")?;
    let parent = if span.parent_span_id.is_empty() {
        String::new()
    } else {
        id_hex(&span.parent_span_id, 8, "parent_span_id")?
    };
    if span.start_time_unix_nano == 0 {
        return Err("start_time_unix_nano: required".into());
    }
    let agent = a
        .first(&["gen_ai.agent.id", "gen_ai.agent.name", "agent.name"])
        .or_else(|| agent_hint.map(str::to_string))
        .or_else(|| r.get("service.name"))
        .unwrap_or_else(|| "unknown-agent".into());
    let tool = a.first(&[
        "gen_ai.tool.name",
        "tool.name",
        "traceloop.entity.name",
        "mcp.tool.name",
    ]);
    let (kind, tool) = match class {
        Class::Tool => (
            EventKind::ToolCall,
            Some(tool.unwrap_or_else(|| span.name.clone())),
        ),
        Class::Model => (EventKind::ModelCall, tool),
        Class::Agent => (EventKind::AgentStep, tool),
        Class::Other => (EventKind::Custom, tool),
    };
    let failed = span
        .status
        .as_ref()
        .is_some_and(|s| s.code == StatusCode::Error as i32)
        || a.get("error.type").is_some();
    let outcome = if failed {
        Outcome::Error
    } else {
        Outcome::Success
    };
    let risk = a
        .first(&["agent_ledger.risk_tier", "ledger.risk_tier"])
        .and_then(|r| RiskTier::from_str_name(&format!("RISK_TIER_{}", r.to_ascii_uppercase())))
        .unwrap_or(RiskTier::Unspecified);
    // The payload: arguments, results, messages (committed, so redactable).
    let mut payload = serde_json::Map::new();
    for (key, name) in PAYLOAD_KEYS {
        if let Some(v) = a.0.get(key) {
            payload.insert(name.to_string(), json(v));
        }
    }
    // Everything else is kept as attributes, within the limits.
    let mut attributes = BTreeMap::new();
    let mut put = |k: String, v: String| {
        if attributes.len() < m.max_attributes && !k.is_empty() {
            let k = cut(k, m.max_attribute_key_bytes);
            let v: String = v.chars().filter(|c| !c.is_control()).collect();
            attributes.insert(k, cut(v, m.max_attribute_value_bytes));
        }
    };
    put("otel.span_name".into(), span.name.clone());
    if !scope.is_empty() {
        put("otel.scope".into(), scope.to_string());
    }
    if let Some(s) = span.status.as_ref().filter(|s| !s.message.is_empty()) {
        put("otel.status_message".into(), s.message.clone());
    }
    let end = span.end_time_unix_nano;
    if end > span.start_time_unix_nano {
        put(
            "otel.duration_ms".into(),
            format!("{:.3}", (end - span.start_time_unix_nano) as f64 / 1e6),
        );
    }
    for (k, v) in &a.0 {
        if !PAYLOAD_KEYS.iter().any(|(p, _)| p == k) {
            put(k.to_string(), text(v));
        }
    }
    let start = span.start_time_unix_nano;
    let small = |s: Option<String>, max: usize| cut(s.unwrap_or_default(), max);
    let event = AuditEvent {
        // Deterministic: a re-export of the same span is the same event.
        event_id: format!("otel-{trace}-{span_id}"),
        correlation_id: trace,
        span_id,
        parent_span_id: parent,
        agent_id: cut(agent, 256),
        session_id: small(a.first(&["gen_ai.conversation.id", "session.id"]), 256),
        principal: small(a.first(&["enduser.id", "user.id"]), 256),
        kind: kind as i32,
        tool_name: small(tool, 256),
        action: small(op.or_else(|| Some(span.name.clone())), 256),
        resource: small(
            a.first(&[
                "gen_ai.request.model",
                "gen_ai.response.model",
                "server.address",
            ]),
            1024,
        ),
        risk_tier: risk as i32,
        outcome: outcome as i32,
        occurred_at: Some(prost_types::Timestamp {
            seconds: (start / 1_000_000_000) as i64,
            nanos: (start % 1_000_000_000) as i32,
        }),
        attributes,
        payload_content_type: if payload.is_empty() {
            String::new()
        } else {
            "application/json".into()
        },
        payload: if payload.is_empty() {
            Vec::new()
        } else {
            serde_json::to_vec(&serde_json::Value::Object(payload)).unwrap_or_default()
        },
    };
    Ok(Some(event))
}

/// Where OTLP spans are appended, and how.
pub struct OtlpIngest {
    pub logs: Arc<Logs>,
    pub limiter: Arc<RateLimiter>,
    pub mapping: Mapping,
}

/// One span's reference in messages: `span <id> of trace <id>`.
fn span_ref(s: &Span) -> String {
    format!(
        "span {} of trace {}",
        hex::encode(&s.span_id),
        hex::encode(&s.trace_id)
    )
}

impl OtlpIngest {
    /// Appends the GenAI spans of a request, each as `Append` would, and
    /// answers with a partial success naming the spans refused and why.
    pub async fn export(
        &self,
        who: &Identity,
        req: ExportTraceServiceRequest,
    ) -> ExportTraceServiceResponse {
        // Agents of the spans in this request, for spans that do not name
        // theirs (a tool span under an invoke_agent span).
        let mut agents: HashMap<Vec<u8>, String> = HashMap::new();
        let mut parents: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        for rs in &req.resource_spans {
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    let a = Attrs::of(&s.attributes);
                    if let Some(agent) =
                        a.first(&["gen_ai.agent.id", "gen_ai.agent.name", "agent.name"])
                    {
                        agents.insert(s.span_id.clone(), agent);
                    }
                    parents.insert(s.span_id.clone(), s.parent_span_id.clone());
                }
            }
        }
        let hint = |span: &Span| -> Option<String> {
            let mut at = span.parent_span_id.clone();
            for _ in 0..64 {
                if let Some(a) = agents.get(&at) {
                    return Some(a.clone());
                }
                at = parents.get(&at)?.clone();
            }
            None
        };
        let mut pending = Vec::new();
        let mut refused: Vec<String> = Vec::new();
        for rs in req.resource_spans {
            let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
            for ss in rs.scope_spans {
                let scope = ss.scope.map(|s| s.name).unwrap_or_default();
                for span in ss.spans {
                    let event = match map_span(
                        &resource,
                        &scope,
                        &span,
                        hint(&span).as_deref(),
                        &self.mapping,
                    ) {
                        Ok(Some(e)) => e,
                        Ok(None) => continue,
                        Err(why) => {
                            refused.push(format!("{}: {why}", span_ref(&span)));
                            continue;
                        }
                    };
                    let req = AppendRequest {
                        log: String::new(),
                        event: Some(event),
                        receipt: false,
                    };
                    match admit(&self.logs, &self.limiter, who, req) {
                        Ok((rx, log)) => pending.push((span_ref(&span), rx, log)),
                        Err(r) => refused.push(format!("{}: {}", span_ref(&span), describe(&r))),
                    }
                }
            }
        }
        for (what, rx, log) in pending {
            let acked = match Log::await_ack(rx).await {
                Ok(ack) => log.settle(ack).await,
                Err(r) => Err(r),
            };
            if let Err(r) = acked {
                refused.push(format!("{what}: {}", describe(&r)));
            }
        }
        let partial_success = (!refused.is_empty()).then(|| ExportTracePartialSuccess {
            rejected_spans: refused.len() as i64,
            error_message: cut(refused.join("; "), 4096),
        });
        ExportTraceServiceResponse { partial_success }
    }
}

fn describe(r: &Rejection) -> String {
    if r.field.is_empty() || r.message.starts_with(&r.field) {
        format!("{:?}: {}", r.code, r.message)
    } else {
        format!("{:?}: {}: {}", r.code, r.field, r.message)
    }
}

/// The OTLP/gRPC service (behind the same authentication interceptor as
/// every other RPC).
pub struct OtlpGrpc(pub Arc<OtlpIngest>);

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let who = crate::auth::caller(&req)?;
        who.check(crate::auth::Action::Append, "")?;
        Ok(tonic::Response::new(
            self.0.export(&who, req.into_inner()).await,
        ))
    }
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// OTLP/HTTP: `POST /v1/traces`.
pub mod http {
    use super::*;
    use axum::body::Bytes;
    use axum::extract::{ConnectInfo, State};
    use axum::http::{HeaderMap, StatusCode as Http, header};
    use axum::response::{IntoResponse, Response};
    use std::net::SocketAddr;

    #[derive(Clone)]
    struct Ctx {
        ingest: Arc<OtlpIngest>,
        access: Arc<Access>,
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Format {
        Protobuf,
        Json,
    }

    fn answer(format: Format, status: Http, body: Vec<u8>) -> Response {
        let ct = match format {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        };
        (status, [(header::CONTENT_TYPE, ct)], body).into_response()
    }

    fn error(format: Format, status: Http, code: tonic::Code, message: String) -> Response {
        let s = RpcStatus {
            code: code as i32,
            message: cut(message, 1024),
        };
        let body = match format {
            Format::Protobuf => prost::Message::encode_to_vec(&s),
            Format::Json => serde_json::to_vec(&s).unwrap_or_default(),
        };
        let mut r = answer(format, status, body);
        if status == Http::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"agent-ledger\""),
            );
        }
        r
    }

    async fn traces(
        State(ctx): State<Ctx>,
        ConnectInfo(peer): ConnectInfo<SocketAddr>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let format = match ct.as_str() {
            "application/x-protobuf" | "application/protobuf" => Format::Protobuf,
            "application/json" => Format::Json,
            other => {
                return error(
                    Format::Json,
                    Http::UNSUPPORTED_MEDIA_TYPE,
                    tonic::Code::InvalidArgument,
                    format!(
                        "content-type {other:?}: send application/x-protobuf or application/json"
                    ),
                );
            }
        };
        if let Some(enc) = headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .filter(|e| !e.eq_ignore_ascii_case("identity"))
        {
            return error(
                format,
                Http::UNSUPPORTED_MEDIA_TYPE,
                tonic::Code::InvalidArgument,
                format!("content-encoding {enc:?} is not supported: send uncompressed requests"),
            );
        }
        let who = match crate::auth::authenticate_http(&ctx.access, headers, peer.ip()).await {
            Ok(who) => who,
            Err(s) if s.code() == tonic::Code::Internal => {
                return error(
                    format,
                    Http::INTERNAL_SERVER_ERROR,
                    s.code(),
                    s.message().into(),
                );
            }
            Err(s) => return error(format, Http::UNAUTHORIZED, s.code(), s.message().into()),
        };
        if let Err(s) = who.check(crate::auth::Action::Append, "") {
            return error(format, Http::FORBIDDEN, s.code(), s.message().into());
        }
        let decoded: Result<ExportTraceServiceRequest, String> = match format {
            Format::Protobuf => prost::Message::decode(body)
                .map_err(|e| format!("the body is not an ExportTraceServiceRequest: {e}")),
            Format::Json => serde_json::from_slice(&body).map_err(|e| {
                format!("the body is not an OTLP/JSON ExportTraceServiceRequest: {e}")
            }),
        };
        let req = match decoded {
            Ok(r) => r,
            Err(m) => {
                return error(format, Http::BAD_REQUEST, tonic::Code::InvalidArgument, m);
            }
        };
        let resp = ctx.ingest.export(&who, req).await;
        let body = match format {
            Format::Protobuf => prost::Message::encode_to_vec(&resp),
            Format::Json => serde_json::to_vec(&resp).unwrap_or_default(),
        };
        answer(format, Http::OK, body)
    }

    /// Serves `POST /v1/traces` until `shutdown` resolves; bodies over
    /// `limit` bytes are refused (413).
    pub async fn serve(
        listener: tokio::net::TcpListener,
        ingest: Arc<OtlpIngest>,
        access: Arc<Access>,
        limit: usize,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(traces))
            .layer(axum::extract::DefaultBodyLimit::max(limit))
            .with_state(Ctx { ingest, access });
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    }
}
