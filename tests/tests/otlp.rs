//! OpenTelemetry ingest with real clients: the Python OpenTelemetry SDK and
//! its OTLP gRPC and HTTP exporters emit GenAI spans of one agent run; the
//! events appear in the trace's timeline with the right kinds, tools, agent
//! and span tree, and a re-export adds nothing. Bad OTLP input gets clear
//! answers and the server keeps serving.

use ledger_client::Client;
use ledger_client::event::{kind_name, outcome_name};
use ledger_client::read::ReadOptions;
use ledger_e2e::{Server, event, http_post};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use std::process::Command;

/// Runs tests/python/otel_emit.py; returns the trace id it printed.
fn emit(transport: &str, endpoint: &str, token: Option<&str>) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/otel_emit.py");
    let mut cmd = Command::new("python3");
    cmd.args([script, transport, endpoint]);
    if let Some(t) = token {
        cmd.arg(t);
    }
    let out = cmd
        .output()
        .expect("python3 with opentelemetry-sdk (.ci/run installs it)");
    assert!(
        out.status.success(),
        "otel_emit.py {transport}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn check_run(server: &Server, trace: &str) {
    let c = Client::connect(&server.grpc)
        .await
        .unwrap()
        .verifying_with(server.verifier.clone());
    let t = c
        .timeline(
            trace,
            ReadOptions {
                payloads: true,
                proofs: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Four GenAI spans; the health check is not one. Exported twice: once
    // in the log.
    assert_eq!(t.records.len(), 4, "{:?}", t.records);
    assert!(t.records.iter().all(|r| r.proved));
    let by_name = |name: &str| {
        t.records
            .iter()
            .find(|r| {
                r.event()
                    .unwrap()
                    .attributes
                    .get("otel.span_name")
                    .map(String::as_str)
                    == Some(name)
            })
            .unwrap_or_else(|| panic!("no span {name}"))
    };
    let agent = by_name("invoke_agent billing-agent")
        .event()
        .unwrap()
        .clone();
    assert_eq!(kind_name(agent.kind), "agent_step");
    assert_eq!(agent.session_id, "conv-42");
    assert!(agent.parent_span_id.is_empty());
    let chat = by_name("chat gpt-4o").event().unwrap().clone();
    assert_eq!(kind_name(chat.kind), "model_call");
    assert_eq!(chat.resource, "gpt-4o");
    assert_eq!(chat.attributes["gen_ai.usage.input_tokens"], "120");
    let sql = by_name("execute_tool sql.execute");
    let e = sql.event().unwrap();
    assert_eq!(kind_name(e.kind), "tool_call");
    assert_eq!(e.tool_name, "sql.execute");
    assert_eq!(e.attributes["gen_ai.tool.call.id"], "call_1");
    assert_eq!(outcome_name(e.outcome), "success");
    let payload: serde_json::Value =
        serde_json::from_slice(sql.payload.as_ref().expect("the arguments are the payload"))
            .unwrap();
    assert_eq!(payload["arguments"]["query"], "DELETE FROM customers");
    assert_eq!(payload["result"]["rows"], 1200);
    assert!(
        !sql.entry.payload_commitment.is_empty(),
        "committed, so redactable"
    );
    let mail = by_name("execute_tool send_email").event().unwrap().clone();
    assert_eq!(outcome_name(mail.outcome), "error");
    for e in [&chat, sql.event().unwrap(), &mail] {
        assert_eq!(
            e.parent_span_id, agent.span_id,
            "children of the agent span"
        );
        assert_eq!(
            e.agent_id, "billing-agent",
            "attributed to the agent of their parent"
        );
        assert!(e.event_id.starts_with("otel-"));
    }
    assert_eq!(t.roots, vec![agent.span_id.clone()]);
    // The writer is the authenticated caller, never something the span says.
    assert!(!sql.entry.writer.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_otlp_grpc_and_http_exporters_land_genai_spans_in_the_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let trace = emit("grpc", &server.grpc, None);
    check_run(&server, &trace).await;
    let trace2 = emit(
        "http",
        &format!("http://{}/v1/traces", server.otlp_http),
        None,
    );
    assert_ne!(trace, trace2);
    check_run(&server, &trace2).await;
    let s = Client::connect(&server.grpc)
        .await
        .unwrap()
        .status()
        .await
        .unwrap();
    assert_eq!(
        s.committed_size, 8,
        "each span once, though each was exported twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_callers_authenticate_like_every_other_caller() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), Some("[auth]\nrequired = true\n"));
    let key = |role: &str| {
        let out = Command::new(ledger_e2e::binary("ledgerd"))
            .arg("--data-dir")
            .arg(&server.data_dir)
            .args([
                "keys", "create", "--tenant", "default", "--role", role, "--note", "otel",
            ])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let writer = key("writer");
    let reader = key("reader");
    let url = format!("{}/v1/traces", server.otlp_http);
    let (code, _) = http_post(&url, "application/json", b"{}", None);
    assert_eq!(code, 401);
    let (code, _) = http_post(&url, "application/json", b"{}", Some(&reader));
    assert_eq!(code, 403, "a reader may not write");
    let trace = emit("grpc", &server.grpc, Some(&writer));
    let c = Client::connect(&server.grpc)
        .await
        .unwrap()
        .with_token(&reader)
        .unwrap()
        .verifying_with(server.verifier.clone());
    let t = c.timeline(&trace, Default::default()).await.unwrap();
    assert_eq!(t.records.len(), 4);
    assert!(
        t.records[0].entry.writer.starts_with("key:"),
        "{}",
        t.records[0].entry.writer
    );
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
    }
}

fn tool_span(trace: [u8; 16], span: [u8; 8]) -> Span {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    Span {
        trace_id: trace.to_vec(),
        span_id: span.to_vec(),
        name: "execute_tool x".into(),
        start_time_unix_nano: now,
        end_time_unix_nano: now + 1000,
        attributes: vec![
            kv("gen_ai.operation.name", "execute_tool"),
            kv("gen_ai.tool.name", "x"),
            kv("gen_ai.agent.name", "a"),
        ],
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_otlp_input_is_answered_clearly_and_nothing_is_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let url = format!("{}/v1/traces", server.otlp_http);
    // Not protobuf, not JSON, not a known content type, too large.
    let (code, body) = http_post(&url, "application/x-protobuf", b"\xff\xff\xff\x0f", None);
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    let (code, body) = http_post(&url, "application/json", b"{\"resourceSpans\": 5}", None);
    assert_eq!(code, 400);
    assert!(
        String::from_utf8_lossy(&body).contains("OTLP/JSON"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (code, _) = http_post(&url, "text/plain", b"hello", None);
    assert_eq!(code, 415);
    let big = vec![b' '; 16 << 20];
    let (code, _) = http_post(&url, "application/json", &big, None);
    assert_eq!(code, 413);

    // Spans with missing or zero ids, beside a good one: the good one is
    // appended, the others named in the partial success.
    let good = tool_span([1; 16], [2; 8]);
    let mut no_trace = tool_span([1; 16], [3; 8]);
    no_trace.trace_id.clear();
    let zero_span = tool_span([1; 16], [0; 8]);
    let mut c = TraceServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    let resp = c
        .export(request(vec![good.clone(), no_trace, zero_span]))
        .await
        .unwrap()
        .into_inner();
    let partial = resp.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_spans, 2, "{}", partial.error_message);
    assert!(
        partial.error_message.contains("trace_id: 0 bytes"),
        "{}",
        partial.error_message
    );
    assert!(
        partial.error_message.contains("span_id: all zero"),
        "{}",
        partial.error_message
    );
    // A span the server refuses on validation names the field.
    let mut future = tool_span([4; 16], [5; 8]);
    future.start_time_unix_nano += 3600 * 1_000_000_000;
    let resp = c.export(request(vec![future])).await.unwrap().into_inner();
    let partial = resp.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains("occurred_at"),
        "{}",
        partial.error_message
    );
    // A gRPC request that does not decode.
    let status = c
        .export(request(vec![Span {
            name: "x".repeat(8 << 20),
            ..tool_span([6; 16], [7; 8])
        }]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");

    // Only the good span was written, and the server carries on.
    let client = Client::connect(&server.grpc).await.unwrap();
    assert_eq!(client.status().await.unwrap().committed_size, 1);
    client.append(event("after", 0)).await.unwrap();
    assert_eq!(client.status().await.unwrap().committed_size, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_agents_sdk_run_lands_its_tool_calls_in_one_trace() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/openai_agents_run.py");
    let out = Command::new("python3")
        .args([script, &server.grpc])
        .output()
        .expect("python3 with openai-agents (.ci/run installs it)");
    assert!(
        out.status.success(),
        "openai_agents_run.py: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let c = Client::connect(&server.grpc).await.unwrap();
    let page = c
        .list_events(
            ledger_client::EventFilter {
                kinds: vec![ledger_client::EventKind::ToolCall as i32],
                ..Default::default()
            },
            100,
            None,
            false,
            ReadOptions {
                payloads: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let tools: Vec<_> = page
        .records
        .iter()
        .map(|r| r.event().unwrap().clone())
        .collect();
    let mut names: Vec<&str> = tools.iter().map(|e| e.tool_name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["lookup_customer", "refund"], "{tools:?}");
    assert!(
        tools.iter().all(|e| e.agent_id == "support-agent"),
        "{tools:?}"
    );
    assert_eq!(
        tools[0].correlation_id, tools[1].correlation_id,
        "one trace"
    );
    let refund = page
        .records
        .iter()
        .find(|r| r.event().unwrap().tool_name == "refund")
        .unwrap();
    let payload = String::from_utf8(refund.payload.clone().unwrap()).unwrap();
    assert!(
        payload.contains("c-42") && payload.contains("refunded 10"),
        "{payload}"
    );
    // The whole run is one trace: every event of it shares the id.
    let t = c
        .timeline(&tools[0].correlation_id, Default::default())
        .await
        .unwrap();
    assert!(t.records.len() >= 4, "{}", t.records.len());
    assert!(
        t.records
            .iter()
            .any(|r| kind_name(r.event().unwrap().kind) == "agent_step")
    );
}
