//! The incident console: its HTTP JSON API (roles, tenants, field-naming
//! errors, the live tail, exports, TLS) against a real ledgerd, and the page
//! itself in Debian's Chromium, driven headless by selenium
//! (tests/console/console_ui.py): sign-in, search, waterfall, detail,
//! redaction, follow, downloads, an altering proxy, another tenant, and an
//! entry tampered with in RocksDB.

use ledger_client::{Client, Event, EventKind, Outcome, RiskTier};
use ledger_e2e::{Server, http_get, keys, pki, tamper_tool_name, verify_json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

const TWO_TENANTS: &str = r#"
[auth]
required = true

[console]
listen = "127.0.0.1:0"

[[logs]]
id = "acme"
origin = "ledger.example.com/acme"

[[logs]]
id = "globex"
origin = "ledger.example.com/globex"
"#;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const AGENT: &str = "billing-agent";
const REASON: &str = "GDPR erasure, ticket 4411";

/// A server with two tenants, credentials of each role, and one acme trace
/// of nested spans (approvals, a denial, a policy violation, a kill switch,
/// payloads, one of them redacted).
struct Scene {
    server: Server,
    reader: String,
    auditor: String,
    writer: String,
    admin: String,
    other_reader: String,
    other_vkey: String,
}

fn span(n: u64) -> String {
    format!("00f067aa0ba9{n:04x}")
}

async fn scene(dir: &Path) -> Scene {
    let server = Server::start_with(dir, Some(TWO_TENANTS));
    let key = |tenant: &str, role: &str| {
        keys(
            &server,
            &[
                "create",
                "--tenant",
                tenant,
                "--role",
                role,
                "--note",
                "console test",
            ],
        )
    };
    let (reader, auditor, writer, admin) = (
        key("acme", "reader"),
        key("acme", "auditor"),
        key("acme", "writer"),
        key("acme", "admin"),
    );
    let other_reader = key("globex", "reader");
    let ready: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(server.data_dir.with_extension("ready")).unwrap(),
    )
    .unwrap();
    let other_vkey = ready["logs"][1]["verifier_key"]
        .as_str()
        .unwrap()
        .to_string();

    let c = Client::connect(&server.grpc)
        .await
        .unwrap()
        .with_token(&writer)
        .unwrap();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_600_000);
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let ev = |kind, s: u64, parent: u64, ms: u64| {
        let e = Event::new(kind, AGENT)
            .correlation_id(TRACE)
            .span(span(s))
            .occurred_at(at(ms));
        if parent > 0 {
            e.parent_span(span(parent))
        } else {
            e
        }
    };
    let events = vec![
        ev(EventKind::AgentStep, 1, 0, 0)
            .action("invoke_agent")
            .principal("alice@example.com"),
        ev(EventKind::ModelCall, 2, 1, 100)
            .action("chat")
            .payload_json(&serde_json::json!({"prompt": "customer 42's card number"})),
        ev(EventKind::ApprovalRequested, 3, 1, 500)
            .tool("sql.execute")
            .risk(RiskTier::High),
        ev(EventKind::ApprovalGranted, 3, 1, 1500)
            .tool("sql.execute")
            .principal("bob@example.com")
            .outcome(Outcome::Success),
        ev(EventKind::ToolCall, 4, 1, 2000)
            .tool("sql.execute")
            .action("DELETE")
            .resource("db://prod/customers")
            .risk(RiskTier::High)
            .attribute("db.system", "postgresql")
            .payload_json(
                &serde_json::json!({"query": "DELETE FROM customers WHERE plan = 'trial'"}),
            ),
        ev(EventKind::PolicyViolation, 5, 4, 2500)
            .action("mass-delete")
            .outcome(Outcome::Denied),
        ev(EventKind::ToolResult, 4, 1, 3000)
            .tool("sql.execute")
            .outcome(Outcome::Success)
            .payload_json(&serde_json::json!({"rows": 1423})),
        ev(EventKind::ApprovalDenied, 6, 1, 3500)
            .tool("sql.drop")
            .outcome(Outcome::Denied),
        ev(EventKind::KillSwitch, 7, 1, 4000).action("kill"),
    ];
    for (i, e) in events.into_iter().enumerate() {
        let ack = c.append(e.build()).await.unwrap();
        assert_eq!(ack.index, i as u64);
    }
    // Another agent, another trace.
    c.append(Event::new(EventKind::Decision, "other-agent").build())
        .await
        .unwrap();
    let a = Client::connect(&server.grpc)
        .await
        .unwrap()
        .with_token(&admin)
        .unwrap();
    a.redact(1, REASON).await.unwrap();
    Scene {
        server,
        reader,
        auditor,
        writer,
        admin,
        other_reader,
        other_vkey,
    }
}

fn console_addr(s: &Server) -> String {
    s.console
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

fn get_json(s: &Server, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let (code, body) = http_get(&console_addr(s), path, token);
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("{path}: not JSON: {}", String::from_utf8_lossy(&body)));
    (code, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_api_answers_as_the_grpc_api_with_its_roles_tenants_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let sc = scene(dir.path()).await;
    let s = &sc.server;

    // The page and its files are served.
    let (code, page) = http_get(&console_addr(s), "/", None);
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&page).contains("verify.js"));

    // Who the caller is, and the log.
    let (code, v) = get_json(s, "/api/v1/session", Some(&sc.reader));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["caller"]["role"], "reader");
    assert_eq!(v["log"]["origin"], "ledger.example.com/acme");

    // A trace: entries with their bytes, proofs, decoded fields, the
    // redaction that erased a payload, and the checkpoint.
    let (code, v) = get_json(
        s,
        &format!("/api/v1/traces/{TRACE}?include_payloads=true&with_proofs=true"),
        Some(&sc.reader),
    );
    assert_eq!(code, 200, "{v}");
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 9);
    assert_eq!(v["checkpoint"]["tree_size"], 11);
    let e4 = &entries[4];
    assert_eq!(e4["event"]["tool_name"], "sql.execute");
    assert_eq!(e4["event"]["kind"], "tool_call");
    assert_eq!(e4["event"]["risk_tier"], "high");
    assert_eq!(e4["event"]["attributes"]["db.system"], "postgresql");
    assert_eq!(e4["event"]["occurred_at"], "2026-11-25T09:46:42Z");
    assert_eq!(e4["inclusion"]["tree_size"], 11);
    assert!(e4["payload"].is_string() && e4["payload_salt"].is_string());
    let e1 = &entries[1];
    assert_eq!(e1["payload_redacted"], true);
    assert!(e1.get("payload").is_none());
    assert_eq!(e1["redacted_by"]["index"], 10);
    assert_eq!(e1["redacted_by"]["redaction"]["reason"], REASON);
    assert_eq!(e1["redacted_by"]["redaction"]["target_index"], 1);
    assert!(e1["redacted_by"]["inclusion"]["hashes"].is_array());
    assert_eq!(v["root_span_ids"], serde_json::json!([span(1)]));

    // Filters by the query API's field names; enum names in any spelling.
    let (code, v) = get_json(
        s,
        "/api/v1/events?agent_id=billing-agent&kinds=approval_granted,APPROVAL_DENIED&with_proofs=true",
        Some(&sc.reader),
    );
    assert_eq!(code, 200, "{v}");
    let idx: Vec<u64> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, vec![3, 7]);
    // Stable paging.
    let (_, p1) = get_json(s, "/api/v1/events?page_size=4", Some(&sc.reader));
    let token = p1["next_page_token"].as_str().unwrap().to_string();
    let (_, p2) = get_json(
        s,
        &format!("/api/v1/events?page_size=4&page_token={token}"),
        Some(&sc.reader),
    );
    assert_eq!(p2["entries"][0]["index"], 4);

    // Bad input: 400 naming the field, as gRPC does.
    for (path, field) in [
        ("/api/v1/events?kinds=teleport", "filter.kinds"),
        ("/api/v1/events?correlation_id=xyz", "filter.correlation_id"),
        (
            "/api/v1/events?occurred_from=yesterday",
            "filter.occurred_from",
        ),
        ("/api/v1/events?agnet_id=x", "agnet_id"),
        ("/api/v1/events?page_size=lots", "page_size"),
        ("/api/v1/traces/nothex", "correlation_id"),
    ] {
        let (code, v) = get_json(s, path, Some(&sc.reader));
        assert_eq!(code, 400, "{path}: {v}");
        assert_eq!(v["error"]["code"], "INVALID_ARGUMENT", "{path}: {v}");
        assert_eq!(v["error"]["field"], field, "{path}: {v}");
    }

    // Roles and tenants, as on gRPC.
    let (code, v) = get_json(s, "/api/v1/events", None);
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    let (code, v) = get_json(s, "/api/v1/events", Some("alk_not_a_key"));
    assert_eq!(code, 401, "{v}");
    let (code, v) = get_json(s, "/api/v1/events", Some(&sc.writer));
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (403, Some("PERMISSION_DENIED"))
    );
    let (code, v) = get_json(s, "/api/v1/events?log=acme", Some(&sc.other_reader));
    assert_eq!(code, 403, "{v}");
    let (code, v) = get_json(
        s,
        &format!("/api/v1/traces/{TRACE}"),
        Some(&sc.other_reader),
    );
    assert_eq!(code, 200);
    assert_eq!(
        v["entries"],
        serde_json::json!([]),
        "globex sees acme's trace"
    );
    let (code, v) = get_json(s, "/api/v1/events", Some(&sc.other_reader));
    assert_eq!((code, v["entries"].as_array().unwrap().len()), (200, 0));
    let (code, _) = http_get(
        &console_addr(s),
        "/api/v1/export?start=0&end=9",
        Some(&sc.reader),
    );
    assert_eq!(code, 403, "export needs the auditor role");

    // Consistency from an earlier size to the latest checkpoint.
    let (code, v) = get_json(s, "/api/v1/consistency?old_size=3", Some(&sc.reader));
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["old_size"].as_u64(), v["new_size"].as_u64()),
        (Some(3), Some(11))
    );
    assert_eq!(v["checkpoint"]["tree_size"], 11);
    assert!(!v["hashes"].as_array().unwrap().is_empty());

    // The export is a bundle ledger-verify accepts.
    let (code, bundle) = http_get(
        &console_addr(s),
        "/api/v1/export?start=0&end=9&include_payloads=true",
        Some(&sc.auditor),
    );
    assert_eq!(code, 200);
    let file = dir.path().join("trace.bundle");
    std::fs::write(&file, bundle).unwrap();
    let key = s.verifier.to_string();
    let (code, v) = verify_json(
        &["bundle", "--quiet", "--key", &key, file.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{v}");
}

/// Reads server-sent events from a raw HTTP/1.1 connection until `until`
/// holds for the text so far.
fn read_sse_until(
    addr: &str,
    path: &str,
    token: &str,
    until: impl Fn(&str) -> bool,
    during: impl FnOnce(),
) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: ledger\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 8192];
    let mut during = Some(during);
    loop {
        let n = s
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("no SSE data within 30 s ({e}); so far: {text}"));
        assert!(n > 0, "the stream ended: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        if let Some(f) = during.take() {
            f();
        }
        if until(&text) {
            return text;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_sends_each_new_checkpoint_with_its_consistency_proof_then_proved_entries() {
    let dir = tempfile::tempdir().unwrap();
    let sc = scene(dir.path()).await;
    let s = &sc.server;
    let grpc = s.grpc.clone();
    let writer = sc.writer.clone();
    let rt = tokio::runtime::Handle::current();
    let text = tokio::task::spawn_blocking({
        let addr = console_addr(s);
        let reader = sc.reader.clone();
        move || {
            read_sse_until(
                &addr,
                &format!("/api/v1/tail?correlation_id={TRACE}&from_index=11&known_size=11"),
                &reader,
                |t| t.contains("event: entry"),
                move || {
                    rt.block_on(async {
                        let c = Client::connect(&grpc)
                            .await
                            .unwrap()
                            .with_token(&writer)
                            .unwrap();
                        // One outside the filter, one inside.
                        c.append(Event::new(EventKind::Decision, "other-agent").build())
                            .await
                            .unwrap();
                        c.append(
                            Event::new(EventKind::Decision, AGENT)
                                .correlation_id(TRACE)
                                .build(),
                        )
                        .await
                        .unwrap();
                    })
                },
            )
        }
    })
    .await
    .unwrap();
    let data = |kind: &str| -> serde_json::Value {
        let at = text.find(&format!("event: {kind}\n")).unwrap();
        let line = text[at..].lines().nth(1).unwrap();
        serde_json::from_str(line.trim_start_matches("data: ")).unwrap()
    };
    let cp = data("checkpoint");
    let entry = data("entry");
    assert_eq!(entry["index"], 12, "{text}");
    assert_eq!(entry["event"]["correlation_id"], TRACE);
    let size = cp["tree_size"].as_u64().unwrap();
    assert!(size >= 13, "{cp}");
    assert_eq!(entry["inclusion"]["tree_size"], size);
    assert_eq!(cp["consistency"]["old_size"], 11);
    assert_eq!(cp["consistency"]["new_size"], size);
    assert!(!cp["consistency"]["hashes"].as_array().unwrap().is_empty());
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("content-type: text/event-stream"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_over_tls_when_the_server_has_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pki(d);
    let config = format!(
        "[console]\nlisten = \"127.0.0.1:0\"\n[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        d.join("server.pem").display().to_string(),
        d.join("server.key").display().to_string(),
    );
    let server = Server::start_with(d, Some(&config));
    assert!(server.console.starts_with("https://"), "{}", server.console);
    let port = server
        .console
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/');
    let script = format!(
        "import ssl, urllib.request, json\n\
         ctx = ssl.create_default_context(cafile={ca:?})\n\
         r = urllib.request.urlopen('https://localhost:{port}/api/v1/session', context=ctx)\n\
         print(json.load(r)['log']['origin'])\n\
         try:\n    urllib.request.urlopen('http://127.0.0.1:{port}/api/v1/session', timeout=5)\n    print('plaintext answered')\n\
         except Exception:\n    print('plaintext refused')\n",
        ca = d.join("ca.pem").display().to_string(),
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "ledger.local/default\nplaintext refused\n");
}

/// Runs a phase of tests/console/console_ui.py with `cfg`.
fn browser_phase(phase: &str, cfg: &serde_json::Value, dir: &Path) {
    let file = dir.join(format!("{phase}.json"));
    std::fs::write(&file, cfg.to_string()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/console/console_ui.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(phase)
        .arg(&file)
        .output()
        .expect("python3 with selenium, and Debian's chromium and chromium-driver (.ci/run installs them)");
    assert!(
        out.status.success(),
        "console_ui.py {phase} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_the_console_shows_verifies_follows_and_catches_what_was_altered() {
    let dir = tempfile::tempdir().unwrap();
    let mut sc = scene(dir.path()).await;
    let s = &sc.server;
    // Screenshots land in docs/ when asked (CONSOLE_SCREENSHOTS=docs/...).
    let shots = std::env::var("CONSOLE_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("shots"));
    std::fs::create_dir_all(&shots).unwrap();
    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let (_, session) = get_json(s, "/api/v1/session", Some(&sc.admin));
    let cfg = serde_json::json!({
        "console": s.console,
        "grpc": s.grpc,
        "vkey": s.verifier.to_string(),
        "reader": sc.reader,
        "auditor": sc.auditor,
        "writer": sc.writer,
        "other_reader": sc.other_reader,
        "other_vkey": sc.other_vkey,
        "trace": TRACE,
        "agent": AGENT,
        "agent_events": 9,
        "root_span": span(1),
        // Depth first; a span's events by time, then its children by
        // their first event's time.
        "order": [0, 1, 2, 3, 4, 6, 5, 7, 8],
        "tool_indexes": [4, 6],
        "payload_index": 4,
        "payload_key": "DELETE FROM customers",
        "attributes": {"db.system": "postgresql"},
        "redacted_index": 1,
        "redaction_reason": REASON,
        "redactor": session["caller"]["name"],
        "screenshots": shots,
        "downloads": downloads,
    });
    browser_phase("main", &cfg, dir.path());
    // The bundle the page downloaded (auditor) passes the offline audit.
    let bundle = std::fs::read_dir(&downloads)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "bundle"))
        .expect("a downloaded bundle");
    let key = s.verifier.to_string();
    let (code, v) = verify_json(
        &["bundle", "--quiet", "--key", &key, bundle.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{v}");

    // An entry's bytes changed inside RocksDB, as the tamper suite does.
    sc.server.stop();
    tamper_tool_name(&sc.server.data_dir.join("logs/acme/db"), 4, "harmless.read");
    sc.server.restart();
    let mut cfg = cfg;
    cfg["console"] = sc.server.console.clone().into();
    cfg["tampered"] = 4.into();
    browser_phase("tampered", &cfg, dir.path());
}
