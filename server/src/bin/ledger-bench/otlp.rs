//! OTLP ingest figures, on one fresh ledgerd: gRPC `AppendStream` at
//! saturation (the reference), a Rust OTLP/gRPC load generator (concurrent
//! `Export` calls of 512-span batches), the Python OpenTelemetry SDK's
//! OTLP/gRPC exporter, and the Python SDK's streaming appender and batches.

use super::{OtlpArgs, Until, drive, report, run_id, spawn_server_with};
use anyhow::{Context, Result, bail};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
    }
}

/// A batch of `n` tool spans of one trace, about 512 bytes each.
fn batch(worker: u64, seq: u64, n: usize) -> ExportTraceServiceRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut trace = [0u8; 16];
    trace[..8].copy_from_slice(&(worker + 1).to_be_bytes());
    trace[8..].copy_from_slice(&(seq + 1).to_be_bytes());
    let spans = (0..n as u64)
        .map(|i| Span {
            trace_id: trace.to_vec(),
            span_id: (i + 1).to_be_bytes().to_vec(),
            name: "execute_tool sql.execute".into(),
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1_000_000,
            attributes: vec![
                kv("gen_ai.operation.name", "execute_tool"),
                kv("gen_ai.tool.name", "sql.execute"),
                kv("gen_ai.agent.name", "bench-agent"),
                kv(
                    "gen_ai.tool.call.arguments",
                    &format!("{{\"query\":\"{}\"}}", "x".repeat(300)),
                ),
            ],
            ..Default::default()
        })
        .collect();
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

/// Concurrent exporters for `seconds`; spans acked per second.
async fn rust_otlp(grpc: &str, workers: usize, seconds: u64) -> Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let spans = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let mut c = TraceServiceClient::connect(grpc.to_string())
            .await
            .context("connecting")?
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let (stop, spans) = (stop.clone(), spans.clone());
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r = c.export(batch(w as u64, seq, 512)).await?.into_inner();
                let refused = r.partial_success.map_or(0, |p| p.rejected_spans);
                if refused > 0 {
                    bail!("{refused} spans refused");
                }
                spans.fetch_add(512, Ordering::Relaxed);
                seq += 1;
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (n0, t0) = (spans.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let rate = (spans.load(Ordering::Relaxed) - n0) as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok(rate)
}

/// Runs a Python snippet with the server's address; returns its last line
/// (a rate).
fn python(code: &str, grpc: &str) -> Result<f64> {
    let out = std::process::Command::new("python3")
        .args(["-c", code, grpc])
        .output()
        .context("running python3")?;
    if !out.status.success() {
        bail!("python: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .context("python printed no rate")
}

const PY_EXPORTER: &str = r#"
import sys, time, json
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
mem = InMemorySpanExporter()
p = TracerProvider(); p.add_span_processor(SimpleSpanProcessor(mem))
t = p.get_tracer("bench")
for i in range(20000):
    with t.start_as_current_span("execute_tool sql.execute") as s:
        s.set_attribute("gen_ai.operation.name", "execute_tool")
        s.set_attribute("gen_ai.tool.name", "sql.execute")
        s.set_attribute("gen_ai.agent.name", "bench-agent")
        s.set_attribute("gen_ai.tool.call.arguments", json.dumps({"query": "x" * 300}))
spans = mem.get_finished_spans()
e = OTLPSpanExporter(endpoint=sys.argv[1], insecure=True)
start = time.time()
for i in range(0, len(spans), 512):
    assert e.export(spans[i:i + 512]).name == "SUCCESS"
print(len(spans) / (time.time() - start))
"#;

const PY_APPENDER: &str = r#"
import sys, time
from agent_ledger import Ledger
led = Ledger(sys.argv[1])
a = led.appender(window=4096)
n = 20000
start = time.time()
fs = [a.send("tool_call", "py-agent", tool="sql.execute", payload={"query": "x" * 300}) for _ in range(n)]
for f in fs:
    f.result()
print(n / (time.time() - start))
"#;

const PY_BATCH: &str = r#"
import sys, time
from agent_ledger import Ledger, build_event
led = Ledger(sys.argv[1])
n = 20000
events = [build_event("tool_call", "py-agent", tool="sql.execute", payload={"query": "x" * 300}) for _ in range(n)]
start = time.time()
for i in range(0, n, 512):
    assert all(not isinstance(r, Exception) for r in led.append_batch(events[i:i + 512]))
print(n / (time.time() - start))
"#;

pub async fn run(a: OtlpArgs) -> Result<()> {
    let cfg = "[anchor]\nbackend = \"none\"\n";
    let s = spawn_server_with(&a.load.dir, true, Some(cfg))?;
    println!(
        "ledger-bench otlp: {} s per phase, spans and events of about 512 bytes, server {}",
        a.seconds, s.grpc
    );
    let ch = super::connect(&s.grpc, a.load.connections).await?;
    let run = run_id();
    let p = drive(
        &ch,
        &a.load,
        super::wire::bench_events(run, a.load.event_bytes),
        Until::Elapsed(Duration::from_secs(a.seconds)),
        None,
    )
    .await?;
    let append = report("AppendStream", &p);
    let rust = rust_otlp(&s.grpc, a.otlp_workers, a.seconds).await?;
    println!(
        "otlp (Rust)  {rust:>10.0} spans/s    {} concurrent Export calls of 512 spans ({:.2}× AppendStream)",
        a.otlp_workers,
        rust / append
    );
    let addr = s.grpc.trim_start_matches("http://").to_string();
    match python(PY_EXPORTER, &format!("http://{addr}")) {
        Ok(r) => println!(
            "otlp (Python){r:>10.0} spans/s    opentelemetry-sdk OTLP/gRPC exporter, batches of 512, one caller"
        ),
        Err(e) => println!("otlp (Python) skipped: {e}"),
    }
    match python(PY_APPENDER, &format!("http://{addr}")) {
        Ok(r) => println!(
            "python sdk   {r:>10.0} events/s   agent_ledger streaming appender, one stream"
        ),
        Err(e) => println!("python sdk   skipped: {e}"),
    }
    match python(PY_BATCH, &format!("http://{addr}")) {
        Ok(r) => println!(
            "python batch{r:>11.0} events/s   agent_ledger append_batch of 512, one caller"
        ),
        Err(e) => println!("python batch skipped: {e}"),
    }
    Ok(())
}
