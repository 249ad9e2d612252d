//! `ledger mcp`, the audit gateway, with the real Python MCP SDK on both
//! sides (an MCPServer whose tools have side effects, driven by the SDK's
//! client over stdio): calls are recorded before they act, refused when the
//! ledger cannot record them (unless --fail-open, which records them once
//! the ledger is back), held for approval, stopped by the kill switch; other
//! traffic passes through.

use ledger_client::Client;
use ledger_client::event::kind_name;
use ledger_e2e::{Server, binary};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const AGENT: &str = "agent-m";

fn python(name: &str) -> String {
    format!("{}/python/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The gateway command the MCP client starts, in front of the side-effect
/// server writing to `effects`.
fn gateway(server: &Server, effects: &Path, extra: &[&str]) -> Vec<String> {
    let mut c = vec![
        binary("ledger").display().to_string(),
        "--server".into(),
        server.grpc.clone(),
        "mcp".into(),
        "--agent".into(),
        AGENT.into(),
    ];
    c.extend(extra.iter().map(|s| s.to_string()));
    c.extend([
        "--spool".into(),
        effects.with_extension("spool").display().to_string(),
    ]);
    c.extend([
        "--".into(),
        "python3".into(),
        python("mcp_server.py"),
        effects.display().to_string(),
    ]);
    c
}

fn start_client(cmd: &[String], calls: Value, concurrent: bool) -> Child {
    let mut c = Command::new("python3");
    c.arg(python("mcp_client.py"))
        .arg(serde_json::to_string(cmd).unwrap())
        .arg(calls.to_string());
    if concurrent {
        c.arg("concurrent");
    }
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with mcp")
}

/// The client's result lines (tools list, resource, then one per call).
fn finish(child: Child) -> Vec<Value> {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mcp_client.py: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn effects(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn events(server: &Server) -> Vec<ledger_client::read::Record> {
    Client::connect(&server.grpc)
        .await
        .unwrap()
        .list_events(
            ledger_client::EventFilter {
                agent_id: AGENT.into(),
                ..Default::default()
            },
            1000,
            None,
            false,
            ledger_client::read::ReadOptions {
                payloads: true,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .records
}

fn secs(t: &prost_types::Timestamp) -> f64 {
    t.seconds as f64 + f64::from(t.nanos) / 1e9
}

fn ledger_cli(server: &Server, args: &[&str]) -> String {
    let out = Command::new(binary("ledger"))
        .args(["--server", &server.grpc])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ledger {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Waits for an approval request of `tool` in the ledger; its event id.
async fn approval_request(server: &Server, tool: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for r in events(server).await {
            let e = r.event().unwrap();
            if kind_name(e.kind) == "approval_requested" && e.tool_name == tool {
                return e.event_id.clone();
            }
        }
        assert!(Instant::now() < deadline, "no approval request for {tool}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_recorded_before_it_acts_and_other_traffic_passes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let fx = dir.path().join("effects.jsonl");
    let out = finish(start_client(
        &gateway(&server, &fx, &[]),
        json!([["write_note", {"text": "a"}], ["run_sql", {"query": "SELECT 1"}], ["fail", {}]]),
        false,
    ));
    assert_eq!(out[0]["tools"], json!(["fail", "run_sql", "write_note"]));
    assert_eq!(out[1]["resource"], "read me");
    assert_eq!(out[2]["ok"], true, "{out:?}");
    assert_eq!(out[3]["text"], "ok");
    assert_eq!(out[4]["ok"], false, "the failing tool answers isError");
    let done = effects(&fx);
    assert_eq!(done.len(), 2);
    let recs = events(&server).await;
    let calls: Vec<_> = recs
        .iter()
        .filter(|r| kind_name(r.event().unwrap().kind) == "tool_call")
        .collect();
    let results: Vec<_> = recs
        .iter()
        .filter(|r| kind_name(r.event().unwrap().kind) == "tool_result")
        .collect();
    assert_eq!(calls.len(), 3);
    assert_eq!(results.len(), 3);
    for fx in &done {
        let call = calls
            .iter()
            .find(|r| r.event().unwrap().tool_name == fx["tool"].as_str().unwrap())
            .unwrap();
        let acked = secs(call.entry.integrated_at.as_ref().unwrap());
        assert!(
            acked <= fx["at"].as_f64().unwrap(),
            "recorded before the side effect"
        );
        let payload: Value = serde_json::from_slice(call.payload.as_ref().unwrap()).unwrap();
        assert_eq!(payload["arguments"], fx["args"]);
    }
    let outcome = |tool: &str| {
        let r = results
            .iter()
            .find(|r| r.event().unwrap().tool_name == tool)
            .unwrap();
        ledger_client::event::outcome_name(r.event().unwrap().outcome)
    };
    assert_eq!(outcome("write_note"), "success");
    assert_eq!(outcome("fail"), "failure");
    // One MCP session, one trace; results are children of their calls.
    let trace = &calls[0].event().unwrap().correlation_id;
    assert!(
        recs.iter()
            .all(|r| &r.event().unwrap().correlation_id == trace)
    );
    for r in &results {
        let parent = &r.event().unwrap().parent_span_id;
        assert!(calls.iter().any(|c| &c.event().unwrap().span_id == parent));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ledger_calls_are_refused_unless_fail_open_which_records_them_later() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let fx = dir.path().join("effects.jsonl");
    server.kill9();
    let out = finish(start_client(
        &gateway(&server, &fx, &[]),
        json!([["write_note", {"text": "closed"}]]),
        false,
    ));
    assert_eq!(out[2]["ok"], false);
    assert!(
        out[2]["error"].as_str().unwrap().contains("not forwarded"),
        "{out:?}"
    );
    assert!(effects(&fx).is_empty(), "no side effect without a record");

    // Fail-open: forwarded now, recorded once the ledger is back (the
    // gateway stays up while the client sleeps).
    let child = start_client(
        &gateway(&server, &fx, &["--fail-open"]),
        json!([["write_note", {"text": "open"}]]),
        false,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while effects(&fx).is_empty() {
        assert!(Instant::now() < deadline, "fail-open did not forward");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = finish(child);
    assert_eq!(out[2]["ok"], true);
    // The ledger comes back; the next gateway replays the spool first.
    server.restart();
    let out = finish(start_client(
        &gateway(&server, &fx, &["--fail-open"]),
        json!([["write_note", {"text": "after"}]]),
        false,
    ));
    assert_eq!(out[2]["ok"], true);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let recs = events(&server).await;
        let late = recs.iter().find(|r| {
            r.event()
                .unwrap()
                .attributes
                .get("ledger.recorded_late")
                .map(String::as_str)
                == Some("fail-open")
        });
        if let Some(r) = late {
            let payload: Value = serde_json::from_slice(r.payload.as_ref().unwrap()).unwrap();
            assert_eq!(payload["arguments"]["text"], "open");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fail-open call was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn policy(dir: &Path) -> PathBuf {
    let p = dir.join("policy.toml");
    std::fs::write(
        &p,
        "default_risk = \"low\"\n[[tools]]\nname = \"run_sql\"\nrisk = \"medium\"\n[[rules]]\ntool = \"run_sql\"\nargument = \"(?i)\\\\b(delete|drop)\\\\b\"\nrisk = \"high\"\napproval = true\n",
    )
    .unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_call_waits_for_an_approver_and_a_denial_or_time_out_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let fx = dir.path().join("effects.jsonl");
    let pol = policy(dir.path());
    let pol = pol.to_str().unwrap();
    // Granted from another process: then it runs.
    let child = start_client(
        &gateway(&server, &fx, &["--policy", pol]),
        json!([["run_sql", {"query": "DELETE FROM customers"}], ["run_sql", {"query": "SELECT 1"}]]),
        false,
    );
    let req = approval_request(&server, "run_sql").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(effects(&fx).is_empty(), "held until approved");
    let said = ledger_cli(&server, &["approve", &req, "--reason", "ticket 42"]);
    assert!(said.contains("granted"), "{said}");
    let out = finish(child);
    assert_eq!(out[2]["ok"], true, "{out:?}");
    assert_eq!(effects(&fx).len(), 2);
    let recs = events(&server).await;
    let grant = recs
        .iter()
        .find(|r| kind_name(r.event().unwrap().kind) == "approval_granted")
        .unwrap();
    assert!(
        grant.entry.writer.starts_with("anonymous@"),
        "the decision names who decided"
    );
    assert!(
        secs(grant.entry.integrated_at.as_ref().unwrap())
            <= effects(&fx)[0]["at"].as_f64().unwrap()
    );
    let call = recs
        .iter()
        .find(|r| {
            r.event().unwrap().tool_name == "run_sql"
                && kind_name(r.event().unwrap().kind) == "tool_call"
        })
        .unwrap();
    assert_eq!(
        ledger_client::event::risk_name(call.event().unwrap().risk_tier),
        "high"
    );
    // A writer cannot forge a decision: the reserved ids are refused.
    let forged = Client::connect(&server.grpc)
        .await
        .unwrap()
        .append(
            ledger_client::Event::new(ledger_client::EventKind::ApprovalGranted, AGENT)
                .event_id(format!("ledger:decision:{}", "0".repeat(32)))
                .build(),
        )
        .await
        .unwrap_err();
    assert!(forged.to_string().contains("reserved"), "{forged}");

    // Denied: no side effect, a clear error.
    std::fs::remove_file(&fx).unwrap();
    let child = start_client(
        &gateway(&server, &fx, &["--policy", pol]),
        json!([["run_sql", {"query": "DROP TABLE t"}]]),
        false,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let req = loop {
        let recs = events(&server).await;
        let open: Vec<_> = recs
            .iter()
            .filter(|r| kind_name(r.event().unwrap().kind) == "approval_requested")
            .map(|r| r.event().unwrap().event_id.clone())
            .collect();
        if open.len() == 2 {
            break open[1].clone();
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ledger_cli(&server, &["deny", &req, "--reason", "not in prod"]);
    let out = finish(child);
    assert_eq!(out[2]["ok"], false);
    assert!(
        out[2]["error"].as_str().unwrap().contains("denied by"),
        "{out:?}"
    );
    assert!(out[2]["error"].as_str().unwrap().contains("not in prod"));
    assert!(effects(&fx).is_empty());

    // Nobody decides: the time-out denies.
    let out = finish(start_client(
        &gateway(&server, &fx, &["--policy", pol, "--approval-timeout", "1"]),
        json!([["run_sql", {"query": "DELETE FROM t"}]]),
        false,
    ));
    assert!(
        out[2]["error"].as_str().unwrap().contains("no approval"),
        "{out:?}"
    );
    assert!(effects(&fx).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_stops_held_and_new_calls_until_revived() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let fx = dir.path().join("effects.jsonl");
    let pol = policy(dir.path());
    // A call held for approval, then the kill: refused at once, not run.
    let started = Instant::now();
    let child = start_client(
        &gateway(&server, &fx, &["--policy", pol.to_str().unwrap()]),
        json!([["run_sql", {"query": "DELETE FROM t"}]]),
        false,
    );
    approval_request(&server, "run_sql").await;
    let said = ledger_cli(
        &server,
        &["kill", "--agent", AGENT, "--reason", "deleting prod data"],
    );
    assert!(said.contains("KILLED"), "{said}");
    let out = finish(child);
    assert!(
        out[2]["error"].as_str().unwrap().contains("kill switch"),
        "{out:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(200),
        "not left to the approval time-out"
    );
    // A gateway started later reads the state first: every call refused,
    // in flight at once or not.
    let out = finish(start_client(
        &gateway(&server, &fx, &[]),
        json!([["write_note", {"text": "1"}], ["write_note", {"text": "2"}], ["write_note", {"text": "3"}]]),
        true,
    ));
    assert!(
        out[2..].iter().all(
            |r| r["ok"] == false && r["error"].as_str().unwrap().contains("deleting prod data")
        ),
        "{out:?}"
    );
    assert!(effects(&fx).is_empty());
    let state = ledger_cli(&server, &["agent-state", "--agent", AGENT, "--json"]);
    let state: Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["killed"], true);
    let kill_index = state["index"].as_u64().unwrap();
    // Revived: service resumes.
    ledger_cli(&server, &["revive", "--agent", AGENT, "--reason", "fixed"]);
    let out = finish(start_client(
        &gateway(&server, &fx, &[]),
        json!([["write_note", {"text": "back"}]]),
        false,
    ));
    assert_eq!(out[2]["ok"], true, "{out:?}");
    assert_eq!(effects(&fx).len(), 1);
    // Nothing was forwarded between the kill and the revive.
    let recs = events(&server).await;
    let revive = recs
        .iter()
        .filter(|r| kind_name(r.event().unwrap().kind) == "kill_switch")
        .map(|r| r.index)
        .max()
        .unwrap();
    let results_between = recs.iter().filter(|r| {
        kind_name(r.event().unwrap().kind) == "tool_result"
            && r.index > kill_index
            && r.index < revive
    });
    assert_eq!(results_between.count(), 0);
    let _ = SystemTime::now();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_traffic_passes_byte_for_byte_both_ways() {
    use std::io::{BufRead, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let seen = dir.path().join("seen.jsonl");
    let mut gw = Command::new(binary("ledger"))
        .args(["--server", &server.grpc, "mcp", "--agent", AGENT, "--spool"])
        .arg(dir.path().join("spool"))
        .args(["--", "python3", &python("raw_mcp_server.py")])
        .arg(&seen)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Odd spacing, key order, escapes, a notification, a batch-like oddity.
    let sent = [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#,
        r#"{ "method" : "notifications/initialized" , "jsonrpc": "2.0" }"#,
        r#"{"id":"two","jsonrpc":"2.0","method":"tools/list","params":{"cursor":"\u00e9"}}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"notes://readme"}}"#,
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"write_note","arguments":{"text":"x"}}}"#,
    ];
    let mut stdin = gw.stdin.take().unwrap();
    for line in sent {
        writeln!(stdin, "{line}").unwrap();
    }
    stdin.flush().unwrap();
    let mut out = std::io::BufReader::new(gw.stdout.take().unwrap());
    let mut got = Vec::new();
    for _ in 0..4 {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        got.push(l.trim_end_matches('\n').to_string());
    }
    drop(stdin);
    let _ = gw.wait();
    // The server received exactly what the client sent, byte for byte (the
    // tools/call too: it is recorded, not rewritten).
    let received = std::fs::read_to_string(&seen).unwrap();
    assert_eq!(received.lines().collect::<Vec<_>>(), sent);
    // And the client received exactly what the server answered.
    got.sort();
    let mut want = vec![
        r#"{ "jsonrpc":"2.0" ,"id": 1, "result": {"echo": "initialize", "z": 1, "a": [ 1,2 ]} }"#.to_string(),
        r#"{ "jsonrpc":"2.0" ,"id": "two", "result": {"echo": "tools/list", "z": 1, "a": [ 1,2 ]} }"#.to_string(),
        r#"{ "jsonrpc":"2.0" ,"id": 3, "result": {"echo": "resources/read", "z": 1, "a": [ 1,2 ]} }"#.to_string(),
        r#"{"result": {"content": [{"type": "text", "text": "done \u00e9"}], "isError": false}, "jsonrpc": "2.0", "id": 4}"#.to_string(),
    ];
    want.sort();
    assert_eq!(got, want);
    // Only the tool call was recorded (call and result).
    let recs = events(&server).await;
    let kinds: Vec<String> = recs
        .iter()
        .map(|r| kind_name(r.event().unwrap().kind))
        .collect();
    assert_eq!(kinds, ["tool_call", "tool_result"]);
}

/// Waits until something accepts connections on `port`.
fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streamable_http_transport_records_before_it_acts_and_obeys_the_kill_switch() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let fx = dir.path().join("effects.jsonl");
    let (up, gw_port) = (ledger_e2e::free_port(), ledger_e2e::free_port());
    let _upstream = Killed(
        Command::new("python3")
            .arg(python("mcp_server.py"))
            .arg(&fx)
            .args(["http", &up.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(up);
    let _gateway = Killed(
        Command::new(binary("ledger"))
            .args(["--server", &server.grpc, "mcp", "--agent", AGENT])
            .args(["--listen", &format!("127.0.0.1:{gw_port}")])
            .args(["--upstream", &format!("http://127.0.0.1:{up}/mcp")])
            .arg("--spool")
            .arg(dir.path().join("spool"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(gw_port);
    let url = Value::String(format!("http://127.0.0.1:{gw_port}/mcp"));
    let run = |calls: Value| {
        let child = Command::new("python3")
            .arg(python("mcp_client.py"))
            .arg(url.to_string())
            .arg(calls.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        finish(child)
    };
    let out = run(json!([["write_note", {"text": "over http"}], ["fail", {}]]));
    assert_eq!(out[0]["tools"], json!(["fail", "run_sql", "write_note"]));
    assert_eq!(out[1]["resource"], "read me");
    assert_eq!(out[2]["ok"], true, "{out:?}");
    assert_eq!(out[3]["ok"], false);
    let done = effects(&fx);
    assert_eq!(done.len(), 1);
    let recs = events(&server).await;
    let call = recs
        .iter()
        .find(|r| {
            kind_name(r.event().unwrap().kind) == "tool_call"
                && r.event().unwrap().tool_name == "write_note"
        })
        .unwrap();
    assert!(secs(call.entry.integrated_at.as_ref().unwrap()) <= done[0]["at"].as_f64().unwrap());
    let outcomes: Vec<String> = recs
        .iter()
        .filter(|r| kind_name(r.event().unwrap().kind) == "tool_result")
        .map(|r| ledger_client::event::outcome_name(r.event().unwrap().outcome))
        .collect();
    assert_eq!(outcomes, ["success", "failure"]);
    // One MCP session, one trace.
    let traces: std::collections::BTreeSet<_> = recs
        .iter()
        .map(|r| r.event().unwrap().correlation_id.clone())
        .collect();
    assert_eq!(traces.len(), 1);
    // Killed: refused over HTTP too, nothing runs.
    ledger_cli(&server, &["kill", "--agent", AGENT, "--reason", "stop"]);
    let out = run(json!([["write_note", {"text": "after kill"}]]));
    assert!(
        out[2]["error"]
            .as_str()
            .unwrap_or("")
            .contains("kill switch"),
        "{out:?}"
    );
    assert_eq!(effects(&fx).len(), 1);
}
