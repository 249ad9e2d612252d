//! The console's figure: time to first render of a 1,000-event trace with
//! every proof verified in the browser (Debian's Chromium, headless, via
//! tests/console/console_ui.py), in a log of `noise` other events, and the
//! page's transfer size.

use super::{ConsoleArgs, event, run_id, spawn_server_with, template};
use anyhow::{Context, Result, bail};
use ledger_proto::v1::ingest_client::IngestClient;
use ledger_proto::v1::{AppendRequest, AuditEvent, EventKind, append_response};
use std::time::{Duration, SystemTime};

/// Appends `events` over one stream; fails on any rejection.
async fn append_all(grpc: &str, events: Vec<AuditEvent>) -> Result<()> {
    let mut client = IngestClient::connect(grpc.to_string()).await?;
    let n = events.len();
    let reqs = events.into_iter().map(|e| AppendRequest {
        event: Some(e),
        ..Default::default()
    });
    let mut acks = client
        .append_stream(tokio_stream::iter(reqs))
        .await?
        .into_inner();
    let mut got = 0;
    while let Some(r) = acks.message().await? {
        if let Some(append_response::Result::Rejection(x)) = r.result {
            bail!("rejected: {}", x.message);
        }
        got += 1;
    }
    if got != n {
        bail!("{got} of {n} acked");
    }
    Ok(())
}

/// One trace of `n` events: spans of a call and a result, each child of
/// one of the previous ten spans, 2 ms apart, with small JSON payloads.
fn trace(n: usize, run: &str) -> (String, Vec<AuditEvent>) {
    let id = "c05013c05013c05013c05013c05013c0".to_string();
    let t0 = SystemTime::now() - Duration::from_secs(60);
    let events = (0..n)
        .map(|i| {
            let span = i / 2 + 1;
            let parent = if span > 1 { (span - 1) / 10 + 1 } else { 0 };
            let at = t0 + Duration::from_millis(2 * i as u64);
            let since = at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            AuditEvent {
                event_id: format!("{run}-trace-{i}"),
                correlation_id: id.clone(),
                span_id: format!("{span:016x}"),
                parent_span_id: if parent > 0 && parent != span {
                    format!("{parent:016x}")
                } else {
                    String::new()
                },
                agent_id: format!("agent-{}", i % 5),
                kind: if i % 2 == 0 {
                    EventKind::ToolCall
                } else {
                    EventKind::ToolResult
                } as i32,
                tool_name: format!("tool.{}", i % 7),
                occurred_at: Some(prost_types::Timestamp {
                    seconds: since.as_secs() as i64,
                    nanos: since.subsec_nanos() as i32,
                }),
                payload: format!("{{\"step\":{i},\"args\":{{\"query\":\"select {i}\"}}}}")
                    .into_bytes(),
                payload_content_type: "application/json".into(),
                ..template()
            }
        })
        .collect();
    (id, events)
}

pub async fn run(a: ConsoleArgs) -> Result<()> {
    let dir = a.dir.join("console");
    let spawned = spawn_server_with(&dir, true, Some("[console]\nlisten = \"127.0.0.1:0\"\n"))?;
    let ready: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("ready.json"))?)?;
    let console = ready["console"]
        .as_str()
        .context("no console in the ready file")?;
    let run = run_id();
    let noise: Vec<AuditEvent> = (0..a.noise as u64)
        .map(|i| event(i as usize % 64, i, 512, &run))
        .collect();
    append_all(&spawned.grpc, noise)
        .await
        .context("filling the log")?;
    let (id, events) = trace(a.events, &run);
    append_all(&spawned.grpc, events)
        .await
        .context("appending the trace")?;
    println!(
        "console: a trace of {} events in a log of {} entries; {} fresh page loads in headless Chromium",
        a.events,
        a.noise + a.events,
        a.runs
    );
    let cfg = serde_json::json!({
        "console": console,
        "vkey": spawned.verifier_key,
        "trace": id,
        "events": a.events,
        "runs": a.runs,
    });
    let file = dir.join("render.json");
    std::fs::write(&file, cfg.to_string())?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/console/console_ui.py"
    );
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg("render")
        .arg(&file)
        .output()
        .context("running python3 (selenium, chromium and chromium-driver)")?;
    if !out.status.success() {
        bail!("console_ui.py: {}", String::from_utf8_lossy(&out.stderr));
    }
    let runs: Vec<serde_json::Value> = serde_json::from_slice(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .context("no output")?
            .as_bytes(),
    )?;
    let col = |k: &str| {
        let mut v: Vec<f64> = runs.iter().filter_map(|r| r[k].as_f64()).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let med = |v: &[f64]| v[v.len() / 2];
    for (name, key) in [
        ("fetch (API answer with proofs)", "fetch_ms"),
        ("verify (checkpoint, proofs, payloads)", "verify_ms"),
        ("render (waterfall)", "render_ms"),
        ("page load to verified render", "since_navigation_ms"),
    ] {
        let v = col(key);
        println!(
            "  {name:<40} median {:>7.1} ms   best {:>7.1} ms   worst {:>7.1} ms",
            med(&v),
            v[0],
            v[v.len() - 1]
        );
    }
    let bytes = col("transfer_bytes");
    println!(
        "  transfer (page, scripts, style, API)      {:.0} KiB",
        med(&bytes) / 1024.0
    );
    Ok(())
}
