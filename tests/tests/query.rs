//! Queries against a real server: every filter and combinations of them,
//! paging under concurrent appends, timelines with span trees and proofs,
//! tails that survive reconnects and restarts, and exports that verify.

use ledger_client::read::ReadOptions;
use ledger_client::{AuditEvent, Client, Event, EventFilter, EventKind, Outcome, Record, RiskTier};
use ledger_e2e::Server;
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const AGENTS: [&str; 3] = ["planner", "billing-agent", "ops-bot"];
const PRINCIPALS: [&str; 3] = ["alice@example.com", "bob@example.com", ""];
const TOOLS: [&str; 3] = ["sql.execute", "http.get", "shell"];
const KINDS: [EventKind; 5] = [
    EventKind::ToolCall,
    EventKind::ToolResult,
    EventKind::Decision,
    EventKind::PolicyViolation,
    EventKind::ApprovalDenied,
];
const RISKS: [RiskTier; 3] = [RiskTier::Low, RiskTier::Medium, RiskTier::High];
const OUTCOMES: [Outcome; 4] = [
    Outcome::Unspecified,
    Outcome::Success,
    Outcome::Failure,
    Outcome::Denied,
];

fn base_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_000_000)
}

fn trace(n: u64) -> String {
    format!("{:032x}", 0x7000 + n % 6)
}

/// Event `n` of the fixture: its fields cycle with different periods so
/// that every combination of filters selects a different subset.
fn fixture_event(n: u64) -> AuditEvent {
    Event::new(KINDS[(n % 5) as usize], AGENTS[(n % 3) as usize])
        .event_id(format!("fx-{n}"))
        .correlation_id(trace(n))
        .principal(PRINCIPALS[(n % 4 % 3) as usize])
        .tool(TOOLS[(n % 7 % 3) as usize])
        .risk(RISKS[(n % 11 % 3) as usize])
        .outcome(OUTCOMES[(n % 4) as usize])
        .occurred_at(base_time() + Duration::from_secs(n))
        .payload_json(&serde_json::json!({ "n": n }))
        .build()
}

fn nanos(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// The filter's meaning, computed here independently of the server.
fn matches(f: &EventFilter, e: &AuditEvent) -> bool {
    let t = e.occurred_at.unwrap();
    let t = (t.seconds, t.nanos);
    (f.correlation_id.is_empty() || f.correlation_id == e.correlation_id)
        && (f.agent_id.is_empty() || f.agent_id == e.agent_id)
        && (f.principal.is_empty() || f.principal == e.principal)
        && (f.tool_name.is_empty() || f.tool_name == e.tool_name)
        && (f.kinds.is_empty() || f.kinds.contains(&e.kind))
        && (f.risk_tiers.is_empty() || f.risk_tiers.contains(&e.risk_tier))
        && (f.outcomes.is_empty() || f.outcomes.contains(&e.outcome))
        && f.occurred_from.is_none_or(|a| t >= (a.seconds, a.nanos))
        && f.occurred_to.is_none_or(|b| t < (b.seconds, b.nanos))
}

async fn client(server: &Server) -> Client {
    Client::connect(&server.grpc)
        .await
        .unwrap()
        .verifying_with(server.verifier.clone())
}

/// Appends the fixture and returns (index, event) pairs.
async fn load(c: &Client, count: u64) -> Vec<(u64, AuditEvent)> {
    let appender = c.appender(Default::default());
    let mut pending = Vec::new();
    for n in 0..count {
        let e = fixture_event(n);
        pending.push((appender.send(e.clone()).await.unwrap(), e));
    }
    let mut out = Vec::new();
    for (ack, e) in pending {
        out.push((ack.await.unwrap().index, e));
    }
    out
}

/// Pages through a listing, checking each page's size bound.
async fn list_all(
    c: &Client,
    f: &EventFilter,
    page: u32,
    desc: bool,
    opts: ReadOptions,
) -> Vec<Record> {
    let mut token = None;
    let mut out = Vec::new();
    loop {
        let p = c
            .list_events(f.clone(), page, token.take(), desc, opts)
            .await
            .unwrap_or_else(|e| panic!("{f:?}: {e}"));
        assert!(p.records.len() <= page as usize);
        out.extend(p.records);
        match p.next_page_token {
            Some(t) => token = Some(t),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_and_combination_returns_exactly_the_matching_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let c = client(&server).await;
    let events = load(&c, 420).await;

    let at = |s: u64| Some(nanos(base_time() + Duration::from_secs(s)));
    let mut filters = vec![
        EventFilter::default(),
        EventFilter {
            correlation_id: trace(2),
            ..Default::default()
        },
        EventFilter {
            agent_id: "billing-agent".into(),
            ..Default::default()
        },
        EventFilter {
            principal: "bob@example.com".into(),
            ..Default::default()
        },
        EventFilter {
            tool_name: "shell".into(),
            ..Default::default()
        },
        EventFilter {
            kinds: vec![
                EventKind::PolicyViolation as i32,
                EventKind::ApprovalDenied as i32,
            ],
            ..Default::default()
        },
        EventFilter {
            risk_tiers: vec![RiskTier::High as i32],
            ..Default::default()
        },
        EventFilter {
            outcomes: vec![Outcome::Denied as i32],
            ..Default::default()
        },
        EventFilter {
            occurred_from: at(50),
            occurred_to: at(130),
            ..Default::default()
        },
        EventFilter {
            occurred_from: at(400),
            ..Default::default()
        },
        EventFilter {
            occurred_to: at(10),
            ..Default::default()
        },
        // Combinations.
        EventFilter {
            agent_id: "planner".into(),
            tool_name: "http.get".into(),
            ..Default::default()
        },
        EventFilter {
            agent_id: "ops-bot".into(),
            risk_tiers: vec![RiskTier::High as i32, RiskTier::Medium as i32],
            outcomes: vec![Outcome::Failure as i32],
            ..Default::default()
        },
        EventFilter {
            correlation_id: trace(3),
            kinds: vec![EventKind::ToolCall as i32],
            ..Default::default()
        },
        EventFilter {
            principal: "alice@example.com".into(),
            occurred_from: at(100),
            occurred_to: at(300),
            ..Default::default()
        },
        EventFilter {
            tool_name: "sql.execute".into(),
            risk_tiers: vec![RiskTier::Low as i32],
            occurred_from: at(20),
            ..Default::default()
        },
        EventFilter {
            agent_id: "billing-agent".into(),
            principal: "alice@example.com".into(),
            tool_name: "sql.execute".into(),
            kinds: vec![EventKind::ToolCall as i32, EventKind::Decision as i32],
            risk_tiers: vec![RiskTier::Low as i32, RiskTier::High as i32],
            outcomes: vec![Outcome::Unspecified as i32, Outcome::Success as i32],
            occurred_from: at(0),
            occurred_to: at(400),
            ..Default::default()
        },
        // Matches nothing.
        EventFilter {
            agent_id: "nobody".into(),
            ..Default::default()
        },
    ];
    filters.push(EventFilter {
        risk_tiers: vec![RiskTier::High as i32],
        kinds: vec![EventKind::KillSwitch as i32],
        ..Default::default()
    });

    let mut nonempty = 0;
    for f in &filters {
        let expected: Vec<u64> = events
            .iter()
            .filter(|(_, e)| matches(f, e))
            .map(|(i, _)| *i)
            .collect();
        nonempty += usize::from(!expected.is_empty());
        for (page, desc) in [(1000, false), (7, false), (5, true)] {
            let got = list_all(&c, f, page, desc, ReadOptions::default()).await;
            let mut got_idx: Vec<u64> = got.iter().map(|r| r.index).collect();
            for r in &got {
                let ev = r.event().unwrap();
                assert_eq!(ev, &{
                    let mut e = events[r.index as usize].1.clone();
                    e.payload.clear();
                    e
                });
            }
            if desc {
                assert!(
                    got_idx.windows(2).all(|w| w[0] > w[1]),
                    "{f:?} not descending"
                );
                got_idx.reverse();
            } else {
                assert!(
                    got_idx.windows(2).all(|w| w[0] < w[1]),
                    "{f:?} not ascending"
                );
            }
            assert_eq!(got_idx, expected, "filter {f:?} page {page} desc {desc}");
        }
        // The server-streamed form agrees.
        let mut s = c.stream_events(f.clone(), false, false).await.unwrap();
        let mut streamed = Vec::new();
        while let Some(r) = s.next().await.unwrap() {
            streamed.push(r.index);
        }
        assert_eq!(streamed, expected, "stream {f:?}");
    }
    assert!(
        nonempty >= filters.len() - 2,
        "the fixture exercises the filters"
    );

    // Proofs on a listing: every one verified by the client against the
    // signed checkpoint, payloads match their commitments.
    let f = EventFilter {
        agent_id: "ops-bot".into(),
        ..Default::default()
    };
    let proved = list_all(
        &c,
        &f,
        50,
        false,
        ReadOptions {
            payloads: true,
            proofs: true,
            proof_size: 0,
        },
    )
    .await;
    assert_eq!(proved.len(), 140);
    for r in &proved {
        assert!(r.proved);
        let n = r
            .event()
            .unwrap()
            .event_id
            .trim_start_matches("fx-")
            .to_string();
        assert_eq!(
            r.payload.as_deref(),
            Some(format!("{{\"n\":{n}}}").as_bytes())
        );
    }

    // Malformed requests name the field.
    let bad = c
        .list_events(
            EventFilter {
                correlation_id: "XYZ".into(),
                ..Default::default()
            },
            10,
            None,
            false,
            ReadOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("filter.correlation_id"), "{bad}");
    let bad = c
        .list_events(
            EventFilter::default(),
            10,
            Some("garbage".into()),
            false,
            ReadOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("page_token"), "{bad}");
    let bad = c
        .list_events(
            EventFilter {
                occurred_from: at(10),
                occurred_to: at(5),
                ..Default::default()
            },
            10,
            None,
            false,
            ReadOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("filter.occurred_to"), "{bad}");
    // A token from one filter does not continue another.
    let p = c
        .list_events(
            EventFilter {
                agent_id: "planner".into(),
                ..Default::default()
            },
            3,
            None,
            false,
            ReadOptions::default(),
        )
        .await
        .unwrap();
    let bad = c
        .list_events(
            EventFilter::default(),
            3,
            p.next_page_token,
            false,
            ReadOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("page_token"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn paging_under_concurrent_appends_has_no_gaps_or_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let c = client(&server).await;
    load(&c, 300).await;

    // A writer keeps appending the same agents while we page.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let appender = c.appender(Default::default());
            let mut n = 1000u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                appender.append(fixture_event(n)).await.unwrap();
                n += 1;
            }
            n - 1000
        })
    };
    let size_now = |c: Client| async move { c.checkpoint(0).await.unwrap().checkpoint.size };
    while size_now(c.clone()).await <= 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (f, desc) in [
        (
            EventFilter {
                agent_id: "planner".into(),
                ..Default::default()
            },
            false,
        ),
        (EventFilter::default(), true),
        (
            EventFilter {
                occurred_from: Some(nanos(base_time())),
                ..Default::default()
            },
            false,
        ),
    ] {
        let mut token = None;
        let mut got = Vec::new();
        let mut snapshot = None;
        loop {
            let p = c
                .list_events(f.clone(), 6, token.take(), desc, ReadOptions::default())
                .await
                .unwrap();
            let size = p.checkpoint.as_ref().unwrap().checkpoint.size;
            // Every page of one listing is bounded by the same checkpoint.
            assert_eq!(*snapshot.get_or_insert(size), size);
            got.extend(p.records.iter().map(|r| r.index));
            tokio::time::sleep(Duration::from_millis(2)).await;
            match p.next_page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        let snapshot = snapshot.unwrap();
        // What the snapshot holds, read back independently.
        let mut all = c
            .stream_events(EventFilter::default(), false, false)
            .await
            .unwrap();
        let mut expected = Vec::new();
        while let Some(r) = all.next().await.unwrap() {
            if r.index < snapshot && matches(&f, r.event().unwrap()) {
                expected.push(r.index);
            }
        }
        if desc {
            got.reverse();
        }
        let unique: BTreeSet<u64> = got.iter().copied().collect();
        assert_eq!(unique.len(), got.len(), "a page repeated an entry");
        assert_eq!(
            got, expected,
            "paging {f:?} desc {desc} at snapshot {snapshot}"
        );
        assert!(snapshot > 300);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        writer.await.unwrap() > 0,
        "the writer appended during the paging"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeline_is_the_whole_trace_with_its_span_tree_and_proofs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let c = client(&server).await;
    load(&c, 60).await; // Other traces around it.

    // A trace: a decision, two tool calls under it each with a result, a
    // denied approval under the second, then a kill switch at the root.
    let trace_id = ledger_client::new_trace_id();
    let t0 = base_time() + Duration::from_secs(10_000);
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let ev = |kind, span: &str, parent: &str, ms| {
        Event::new(kind, "billing-agent")
            .correlation_id(&trace_id)
            .span(span)
            .parent_span(parent)
            .tool("sql.execute")
            .occurred_at(at(ms))
            .build()
    };
    let plan = [
        ev(EventKind::Decision, "00000000000000a1", "", 0),
        ev(
            EventKind::ToolCall,
            "00000000000000b1",
            "00000000000000a1",
            10,
        ),
        ev(
            EventKind::ToolResult,
            "00000000000000b1",
            "00000000000000a1",
            40,
        ),
        ev(
            EventKind::ToolCall,
            "00000000000000b2",
            "00000000000000a1",
            50,
        ),
        ev(
            EventKind::ApprovalDenied,
            "00000000000000c1",
            "00000000000000b2",
            70,
        ),
        ev(
            EventKind::ToolResult,
            "00000000000000b2",
            "00000000000000a1",
            90,
        ),
        ev(EventKind::KillSwitch, "00000000000000d1", "", 100),
    ];
    let mut indexes = Vec::new();
    for e in &plan {
        indexes.push(c.append(e.clone()).await.unwrap().index);
        c.append(fixture_event(9000 + indexes.len() as u64))
            .await
            .unwrap();
    }
    let t = c
        .timeline(
            &trace_id,
            ReadOptions {
                payloads: false,
                proofs: true,
                proof_size: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        t.records.iter().map(|r| r.index).collect::<Vec<_>>(),
        indexes
    );
    assert!(t.records.iter().all(|r| r.proved));
    assert_eq!(t.roots, ["00000000000000a1", "00000000000000d1"]);
    let span = |id: &str| t.spans.iter().find(|s| s.span_id == id).unwrap();
    assert_eq!(
        span("00000000000000a1").child_span_ids,
        ["00000000000000b1", "00000000000000b2"]
    );
    assert_eq!(
        span("00000000000000b2").child_span_ids,
        ["00000000000000c1"]
    );
    assert_eq!(
        span("00000000000000b2").entry_indexes,
        [indexes[3], indexes[5]]
    );
    assert_eq!(span("00000000000000c1").parent_span_id, "00000000000000b2");

    // The CLI draws it.
    let out = std::process::Command::new(ledger_e2e::binary("ledger"))
        .args([
            "--server",
            &server.grpc,
            "--key",
            &server.verifier.to_string(),
        ])
        .args(["timeline", &trace_id, "--prove"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("7 events, 5 spans, 100 ms"), "{text}");
    assert!(text.contains("7 inclusion proofs verified"), "{text}");
    assert!(text.contains("\n│     └─ span 00000000000000c1"), "{text}");
    assert!(!text.contains('\x1b'), "piped output has no colour");

    // Unknown and malformed trace ids.
    let none = c
        .timeline(&ledger_client::new_trace_id(), ReadOptions::default())
        .await
        .unwrap();
    assert!(none.records.is_empty());
    let err = c
        .timeline("not-a-trace", ReadOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("correlation_id"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn tail_misses_nothing_across_a_reconnect_and_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let c = client(&server).await;
    load(&c, 100).await;

    // Part 1: read some, drop the tail while appends go on, resume from its
    // position with a new connection.
    let mut tail = c.tail(0, EventFilter::default(), false);
    let mut seen = Vec::new();
    for _ in 0..40 {
        seen.push(tail.next().await.unwrap().index);
    }
    let resume = tail.position();
    drop(tail);
    for n in 0..50 {
        c.append(fixture_event(500 + n)).await.unwrap();
    }
    let c2 = client(&server).await;
    let mut tail = c2.tail(resume, EventFilter::default(), false);
    while seen.len() < 150 {
        seen.push(tail.next().await.unwrap().index);
    }
    assert_eq!(seen, (0..150).collect::<Vec<_>>());

    // Part 2: one Tail keeps going across a server restart (same address):
    // it reconnects by itself and resumes at the first unseen index.
    let follower = {
        let c = c2.clone();
        tokio::spawn(async move {
            let mut tail = c.tail(150, EventFilter::default(), false);
            let mut got = Vec::new();
            while got.len() < 100 {
                got.push(tail.next().await.unwrap().index);
            }
            got
        })
    };
    for n in 0..40 {
        c2.append(fixture_event(700 + n)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.restart();
    let c3 = client(&server).await;
    for n in 0..60 {
        c3.append(fixture_event(800 + n)).await.unwrap();
    }
    let got = tokio::time::timeout(Duration::from_secs(60), follower)
        .await
        .expect("the tail caught up after the restart")
        .unwrap();
    assert_eq!(got, (150..250).collect::<Vec<_>>());

    // A filtered tail only yields matches.
    let mut tail = c3.tail(
        0,
        EventFilter {
            agent_id: "ops-bot".into(),
            ..Default::default()
        },
        false,
    );
    for _ in 0..20 {
        assert_eq!(
            tail.next().await.unwrap().event().unwrap().agent_id,
            "ops-bot"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn the_export_of_a_live_log_verifies_offline() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let c = client(&server).await;
    load(&c, 500).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let appender = c.appender(Default::default());
            let mut n = 5000;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                appender.append(fixture_event(n)).await.unwrap();
                n += 1;
            }
        })
    };
    // Let the writer commit a few groups of its own first.
    while c.checkpoint(0).await.unwrap().checkpoint.size < 520 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Export while appends go on, through the library and through the CLI.
    let mut bundle = Vec::new();
    c.export(0, 0, true, &mut bundle, |_, _| {}).await.unwrap();
    let path = dir.path().join("live.bundle");
    let out = std::process::Command::new(ledger_e2e::binary("ledger"))
        .args([
            "--server",
            &server.grpc,
            "--key",
            &server.verifier.to_string(),
        ])
        .args(["export", "-o", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();

    let report =
        ledger_verify::audit::audit_bundle(bundle.as_slice(), &server.verifier, |_, _| {}).unwrap();
    assert!(report.clean(), "{:?}", report.findings);
    assert!(report.entries >= 500);
    assert_eq!(report.verified_size, report.tree_size);
    assert!(report.checkpoints_checked > 1);
    assert_eq!(report.payloads_checked, report.entries);

    // The auditor's CLI agrees, and catches one flipped payload byte.
    let verify = |file: &std::path::Path| {
        std::process::Command::new(ledger_e2e::binary("ledger-verify"))
            .args(["--format", "json", "bundle", "--quiet", "--key"])
            .arg(server.verifier.to_string())
            .arg(file)
            .output()
            .unwrap()
    };
    let out = verify(&path);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert!(v["entries"].as_u64().unwrap() >= 500);

    let mut bytes = std::fs::read(&path).unwrap();
    let needle = b"{\"n\":123}";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("payload of event 123 in the bundle");
    bytes[at + 5] = b'9';
    let tampered = dir.path().join("tampered.bundle");
    std::fs::write(&tampered, &bytes).unwrap();
    let out = verify(&tampered);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["findings"][0]["kind"], "modified_payload");

    // A range export (not from 0) verifies too, against the prefix it
    // carries; it runs on to the first checkpoint at or after its end.
    let mut part = Vec::new();
    c.export(123, 400, false, &mut part, |_, _| {})
        .await
        .unwrap();
    let r =
        ledger_verify::audit::audit_bundle(part.as_slice(), &server.verifier, |_, _| {}).unwrap();
    assert!(r.clean(), "{:?}", r.findings);
    assert_eq!(r.start, 123);
    assert!(r.tree_size >= 400);
    assert_eq!(r.verified_size, r.tree_size);
    assert!(r.checkpoints_checked > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn the_appender_resends_across_a_crash_and_each_event_is_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let c = client(&server).await;
    let appender = c.appender(ledger_client::AppenderOptions {
        window: 256,
        max_retries: 30,
    });
    let sender = {
        let appender = appender.clone();
        tokio::spawn(async move {
            let mut acks = Vec::new();
            for n in 0..3000u64 {
                acks.push(appender.send(fixture_event(n)).await.unwrap());
                if n % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            let mut out = Vec::new();
            for a in acks {
                out.push(a.await);
            }
            out
        })
    };
    // Crash the server mid-stream and bring it back on the same address.
    while c
        .checkpoint(0)
        .await
        .map(|cp| cp.checkpoint.size)
        .unwrap_or(0)
        < 500
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server = server.try_restart().unwrap();
    let results = tokio::time::timeout(Duration::from_secs(120), sender)
        .await
        .expect("the appender finished after the restart")
        .unwrap();
    let acks: Vec<_> = results
        .into_iter()
        .map(|r| r.expect("every event acked in the end"))
        .collect();
    assert_eq!(acks.len(), 3000);

    // Every event is in the log exactly once, at the index it was acked with.
    let c = client(&server).await;
    let mut all = c
        .stream_events(EventFilter::default(), false, false)
        .await
        .unwrap();
    let mut seen = std::collections::HashMap::new();
    while let Some(r) = all.next().await.unwrap() {
        let id = r.event().unwrap().event_id.clone();
        assert!(
            seen.insert(id.clone(), r.index).is_none(),
            "{id} recorded twice"
        );
    }
    assert_eq!(seen.len(), 3000);
    for a in &acks {
        assert_eq!(
            seen[&a.event_id], a.index,
            "{} acked at another index",
            a.event_id
        );
    }
}
