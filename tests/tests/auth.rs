//! Who may write what: credentials, roles, tenants, limits, TLS and
//! redaction, against a real server.

use ledger_client::{Client, Event, EventFilter, EventKind, TlsOptions};
use ledger_e2e::{Server, binary, keys, pki, verify_json};
use ledger_proto::v1::{
    AppendRequest, ExportRequest, GetCheckpointRequest, GetConsistencyProofRequest,
    GetEntriesRequest, GetInclusionProofRequest, ListEventsRequest, RedactRequest, TailRequest,
    TimelineRequest, append_response, get_inclusion_proof_request::Leaf,
};
use std::process::Command;
use std::time::Duration;
use tonic::Code;

const TWO_TENANTS: &str = r#"
[auth]
required = true

[[logs]]
id = "acme"
origin = "ledger.example.com/acme"

[[logs]]
id = "globex"
origin = "ledger.example.com/globex"
"#;

async fn as_key(server: &Server, token: &str) -> Client {
    Client::connect(&server.grpc)
        .await
        .unwrap()
        .with_token(token)
        .unwrap()
}

fn event(agent: &str, id: &str) -> ledger_client::AuditEvent {
    Event::new(EventKind::ToolCall, agent)
        .tool("sql.execute")
        .event_id(id)
        .payload_json(&serde_json::json!({"id": id}))
        .build()
}

/// The outcome of calling `rpc` as `c` on `log`: Ok, or the status code.
async fn call(c: &Client, rpc: &str, log: &str) -> Result<(), Code> {
    let log = log.to_string();
    let trace = format!("{:032x}", 7);
    let r: Result<(), tonic::Status> = match rpc {
        "Append" => c
            .ingest()
            .append(AppendRequest {
                log,
                event: Some(event("agent-a", &ledger_client::new_event_id())),
                receipt: false,
            })
            .await
            .map(|_| ()),
        "AppendStream" => {
            let req = AppendRequest {
                log,
                event: Some(event("agent-a", &ledger_client::new_event_id())),
                receipt: false,
            };
            let mut s = c
                .ingest()
                .append_stream(tokio_stream::iter(vec![req]))
                .await
                .map_err(|s| s.code())?
                .into_inner();
            match s
                .message()
                .await
                .map_err(|s| s.code())?
                .and_then(|m| m.result)
            {
                Some(append_response::Result::Ack(_)) => Ok(()),
                Some(append_response::Result::Rejection(r)) => {
                    Err(tonic::Status::new(Code::from(r.code), r.message))
                }
                None => Err(tonic::Status::internal("no response")),
            }
        }
        "AppendBatch" => {
            let req = ledger_proto::v1::AppendBatchRequest {
                log,
                events: vec![event("agent-a", &ledger_client::new_event_id())],
                receipt: false,
            };
            let results = c
                .ingest()
                .append_batch(req)
                .await
                .map_err(|s| s.code())?
                .into_inner()
                .results;
            match results.into_iter().next().and_then(|m| m.result) {
                Some(append_response::Result::Ack(_)) => Ok(()),
                Some(append_response::Result::Rejection(r)) => {
                    Err(tonic::Status::new(Code::from(r.code), r.message))
                }
                None => Err(tonic::Status::internal("no result")),
            }
        }
        "GetTimeline" => c
            .query()
            .get_timeline(TimelineRequest {
                log,
                correlation_id: trace,
                ..Default::default()
            })
            .await
            .map(|_| ()),
        "ListEvents" => c
            .query()
            .list_events(ListEventsRequest {
                log,
                ..Default::default()
            })
            .await
            .map(|_| ()),
        "StreamEvents" => c
            .query()
            .stream_events(ListEventsRequest {
                log,
                ..Default::default()
            })
            .await
            .map(|_| ()),
        "Tail" => c
            .query()
            .tail(TailRequest {
                log,
                ..Default::default()
            })
            .await
            .map(|_| ()),
        "GetEntries" => c
            .query()
            .get_entries(GetEntriesRequest {
                log,
                ..Default::default()
            })
            .await
            .map(|_| ()),
        "GetCheckpoint" => c
            .proofs()
            .get_checkpoint(GetCheckpointRequest { log, tree_size: 0 })
            .await
            .map(|_| ()),
        "GetInclusionProof" => c
            .proofs()
            .get_inclusion_proof(GetInclusionProofRequest {
                log,
                leaf: Some(Leaf::Index(0)),
                tree_size: 0,
            })
            .await
            .map(|_| ()),
        "GetConsistencyProof" => c
            .proofs()
            .get_consistency_proof(GetConsistencyProofRequest {
                log,
                old_size: 1,
                new_size: 0,
            })
            .await
            .map(|_| ()),
        "Export" => {
            let mut s = ledger_proto::v1::export_client::ExportClient::new(c.transport())
                .export(ExportRequest {
                    log,
                    ..Default::default()
                })
                .await
                .map_err(|s| s.code())?
                .into_inner();
            s.message().await.map(|_| ())
        }
        "Redact" => c
            .admin()
            .redact(RedactRequest {
                log,
                target_index: 0,
                reason: "GDPR art. 17 request #1".into(),
            })
            .await
            .map(|_| ()),
        "GetLogStatus" => c
            .proofs()
            .get_log_status(ledger_proto::v1::GetLogStatusRequest { log })
            .await
            .map(|_| ()),
        "Decide" => {
            // A fresh approval request each time (the first decision stands).
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            c.governance()
                .decide(ledger_proto::v1::DecideRequest {
                    log,
                    request_event_id: format!("req-{n}"),
                    grant: true,
                    reason: "matrix".into(),
                })
                .await
                .map(|_| ())
        }
        "AwaitDecision" => c
            .governance()
            .await_decision(ledger_proto::v1::AwaitDecisionRequest {
                log,
                request_event_id: "req-none".into(),
                wait_seconds: 0,
            })
            .await
            .map(|_| ()),
        "SetAgentState" => c
            .governance()
            .set_agent_state(ledger_proto::v1::SetAgentStateRequest {
                log,
                agent_id: "agent-a".into(),
                killed: false,
                reason: "matrix".into(),
            })
            .await
            .map(|_| ()),
        "GetAgentState" => c
            .governance()
            .get_agent_state(ledger_proto::v1::GetAgentStateRequest {
                log,
                agent_id: "agent-a".into(),
            })
            .await
            .map(|_| ()),
        "WatchAgentState" => {
            let mut s = c
                .governance()
                .watch_agent_state(ledger_proto::v1::GetAgentStateRequest {
                    log,
                    agent_id: "agent-a".into(),
                })
                .await
                .map_err(|s| s.code())?
                .into_inner();
            s.message().await.map(|_| ())
        }
        "OtlpExport" => {
            use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
            use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
            // OTLP has no log field: the caller's own log.
            if !log.is_empty() && log != "acme" {
                return Err(Code::PermissionDenied);
            }
            TraceServiceClient::new(c.transport())
                .export(ExportTraceServiceRequest::default())
                .await
                .map(|_| ())
        }
        other => panic!("unknown rpc {other}"),
    };
    r.map_err(|s| s.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_on_every_rpc_in_its_own_and_another_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), Some(TWO_TENANTS));
    // Some history in both logs, written by their admins.
    for tenant in ["acme", "globex"] {
        let admin = as_key(
            &server,
            &keys(&server, &["create", "--tenant", tenant, "--role", "admin"]),
        )
        .await;
        for i in 0..3 {
            admin
                .append(event("agent-a", &format!("{tenant}-{i}")))
                .await
                .unwrap();
        }
    }
    let rpcs = [
        "Append",
        "AppendStream",
        "AppendBatch",
        "GetTimeline",
        "ListEvents",
        "StreamEvents",
        "Tail",
        "GetEntries",
        "GetCheckpoint",
        "GetInclusionProof",
        "GetConsistencyProof",
        "Export",
        "Redact",
        "GetLogStatus",
        "Decide",
        "AwaitDecision",
        "SetAgentState",
        "GetAgentState",
        "WatchAgentState",
        "OtlpExport",
    ];
    let observe = ["AwaitDecision", "GetAgentState", "WatchAgentState"];
    let govern = ["Decide", "SetAgentState"];
    let writes = |rpc: &str| rpc.starts_with("Append") || rpc == "OtlpExport";
    let reads =
        |rpc: &str| !writes(rpc) && !govern.contains(&rpc) && rpc != "Export" && rpc != "Redact";
    let allowed = |role: &str, rpc: &str| match role {
        "admin" => true,
        "writer" => writes(rpc) || observe.contains(&rpc),
        "reader" => reads(rpc),
        "auditor" => reads(rpc) || rpc == "Export",
        "approver" => reads(rpc) || govern.contains(&rpc),
        _ => unreachable!(),
    };
    // Approval requests for the Decide calls to decide on.
    {
        let admin = as_key(
            &server,
            &keys(&server, &["create", "--tenant", "acme", "--role", "admin"]),
        )
        .await;
        for n in 0..40 {
            let mut e = event("agent-a", &format!("req-{n}"));
            e.kind = ledger_client::EventKind::ApprovalRequested as i32;
            admin.append(e).await.unwrap();
        }
    }
    for role in ["writer", "reader", "auditor", "approver", "admin"] {
        let c = as_key(
            &server,
            &keys(&server, &["create", "--tenant", "acme", "--role", role]),
        )
        .await;
        for rpc in rpcs {
            // Own tenant, named or implied.
            for log in ["", "acme"] {
                let got = call(&c, rpc, log).await;
                if allowed(role, rpc) {
                    assert_eq!(got, Ok(()), "{role} {rpc} on {log:?}");
                } else {
                    assert_eq!(got, Err(Code::PermissionDenied), "{role} {rpc} on {log:?}");
                }
            }
            // Another tenant: never.
            assert_eq!(
                call(&c, rpc, "globex").await,
                Err(Code::PermissionDenied),
                "{role} {rpc} on another tenant"
            );
        }
    }
    // No credential, or a made-up one: nothing at all.
    let anon = Client::connect(&server.grpc).await.unwrap();
    let forged = as_key(&server, "alk_000000000000.bm90LWEtcmVhbC1rZXk").await;
    for rpc in rpcs.into_iter().filter(|r| *r != "Decide") {
        assert_eq!(
            call(&anon, rpc, "").await,
            Err(Code::Unauthenticated),
            "anonymous {rpc}"
        );
        assert_eq!(
            call(&forged, rpc, "").await,
            Err(Code::Unauthenticated),
            "forged {rpc}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_are_pinned_recorded_and_revocable() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), Some(TWO_TENANTS));
    let token = keys(
        &server,
        &[
            "create",
            "--tenant",
            "acme",
            "--role",
            "writer",
            "--agent",
            "agent-a",
            "--note",
            "gateway A",
        ],
    );
    let id = token
        .trim_start_matches("alk_")
        .split('.')
        .next()
        .unwrap()
        .to_string();
    let w = as_key(&server, &token).await;

    let ack = w.append(event("agent-a", "as-a")).await.unwrap();
    let err = w
        .append(event("agent-b", "as-b"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("event.agent_id"), "{err}");
    // In a batch, only the event of another agent is refused.
    let batch = w
        .append_batch(vec![
            event("agent-b", "batch-as-b"),
            event("agent-a", "batch-as-a"),
        ])
        .await
        .unwrap();
    let refused = batch[0].as_ref().unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("event.agent_id"), "{refused}");
    let batch_ack = batch[1].as_ref().unwrap();
    assert_eq!(batch_ack.event_id, "batch-as-a");
    assert_eq!(batch_ack.index, ack.index + 1);

    // The entry names the credential, whatever the event says.
    let reader = as_key(
        &server,
        &keys(&server, &["create", "--tenant", "acme", "--role", "reader"]),
    )
    .await;
    let page = reader
        .list_events(EventFilter::default(), 10, None, false, Default::default())
        .await
        .unwrap();
    let rec = page.records.iter().find(|r| r.index == ack.index).unwrap();
    assert_eq!(rec.entry.writer, format!("key:{id}@acme"));

    // Revoked while the server runs: refused within a couple of seconds.
    let out = keys(&server, &["revoke", &id]);
    assert!(out.contains(&id));
    let mut refused = false;
    for _ in 0..50 {
        if let Err(e) = w
            .append(event("agent-a", &ledger_client::new_event_id()))
            .await
        {
            assert!(
                e.to_string().contains("Unauthenticated") || e.to_string().contains("revoked"),
                "{e}"
            );
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "a revoked key still works");
    assert!(keys(&server, &["list"]).contains("REVOKED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_noisy_writer_hits_its_own_limit_and_others_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{TWO_TENANTS}\n[limits]\nevents_per_second = 100\nburst_events = 100\n");
    let server = Server::start_with(dir.path(), Some(&config));
    let noisy = as_key(
        &server,
        &keys(&server, &["create", "--tenant", "acme", "--role", "writer"]),
    )
    .await;
    let quiet = as_key(
        &server,
        &keys(&server, &["create", "--tenant", "acme", "--role", "writer"]),
    )
    .await;
    let flood = tokio::spawn(async move {
        let (mut ok, mut limited) = (0, 0);
        for i in 0..1500 {
            match noisy.append(event("noisy", &format!("n-{i}"))).await {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert!(e.to_string().contains("rate limit"), "{e}");
                    limited += 1
                }
            }
        }
        (ok, limited)
    });
    for i in 0..30 {
        quiet
            .append(event("quiet", &format!("q-{i}")))
            .await
            .expect("the quiet writer is not held back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ok, limited) = flood.await.unwrap();
    assert!(limited > 0, "the flood was never limited");
    assert!(ok >= 100, "the burst got through: {ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_quota_is_per_credential() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{TWO_TENANTS}\n[limits]\ndaily_events = 20\n");
    let server = Server::start_with(dir.path(), Some(&config));
    let a = as_key(
        &server,
        &keys(&server, &["create", "--tenant", "acme", "--role", "writer"]),
    )
    .await;
    let b = as_key(
        &server,
        &keys(&server, &["create", "--tenant", "acme", "--role", "writer"]),
    )
    .await;
    for i in 0..20 {
        a.append(event("a", &format!("a-{i}"))).await.unwrap();
    }
    let err = a.append(event("a", "a-20")).await.unwrap_err();
    assert!(err.to_string().contains("quota"), "{err}");
    assert!(matches!(&err, ledger_client::Error::Status(s) if s.code() == Code::ResourceExhausted));
    b.append(event("b", "b-0"))
        .await
        .expect("another credential has its own quota");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_registered_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pki(d);
    let config = format!(
        "{TWO_TENANTS}\n[tls]\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\nclient_auth = \"required\"\n",
        d.join("server.pem").display().to_string(),
        d.join("server.key").display().to_string(),
        d.join("ca.pem").display().to_string()
    );
    let server = Server::start_with(d, Some(&config));
    keys(
        &server,
        &[
            "add-cert",
            "--tenant",
            "acme",
            "--role",
            "writer",
            d.join("client.pem").to_str().unwrap(),
        ],
    );
    let addr = server.grpc.replace("http://", "https://");
    let tls = |who: Option<&str>| TlsOptions {
        ca_pem: Some(std::fs::read(d.join("ca.pem")).unwrap()),
        identity: who.map(|w| {
            (
                std::fs::read(d.join(format!("{w}.pem"))).unwrap(),
                std::fs::read(d.join(format!("{w}.key"))).unwrap(),
            )
        }),
        domain: Some("localhost".into()),
    };
    // A registered client certificate: in, and recorded as itself.
    let c = Client::connect_tls(&addr, Some(tls(Some("client"))))
        .await
        .unwrap();
    let ack = c.append(event("agent-a", "over-mtls")).await.unwrap();
    assert_eq!(ack.index, 0);
    // Without a client certificate the handshake (or the first call) fails.
    match Client::connect_tls(&addr, Some(tls(None))).await {
        Err(_) => {}
        Ok(c) => assert!(c.append(event("agent-a", "no-cert")).await.is_err()),
    }
    // A certificate from the right CA that nobody registered: unauthenticated.
    let stranger = Client::connect_tls(&addr, Some(tls(Some("stranger"))))
        .await
        .unwrap();
    let err = stranger
        .append(event("agent-a", "stranger"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not registered"), "{err}");
    // Plaintext to a TLS port fails.
    let plain = Client::connect(&server.grpc).await;
    if let Ok(p) = plain {
        assert!(p.append(event("agent-a", "plain")).await.is_err());
    }
}

#[test]
fn plaintext_or_anonymous_beyond_loopback_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let check = |toml: &str| {
        let p = dir.path().join("c.toml");
        std::fs::write(&p, toml).unwrap();
        Command::new(binary("ledgerd"))
            .args(["--check-config", "--config", p.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let o = check("listen = \"0.0.0.0:7400\"\n[auth]\nrequired = true\n");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("plaintext"));
    let o = check("listen = \"0.0.0.0:7400\"\n[tls]\nallow_plaintext = true\n");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("anonymous"));
    let o = check(
        "listen = \"0.0.0.0:7400\"\n[tls]\nallow_plaintext = true\n[auth]\nrequired = true\n",
    );
    assert!(o.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redaction_erases_a_payload_on_the_record_and_the_audit_stays_clean() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), Some(TWO_TENANTS));
    let admin = as_key(
        &server,
        &keys(&server, &["create", "--tenant", "acme", "--role", "admin"]),
    )
    .await;
    let writer = as_key(
        &server,
        &keys(&server, &["create", "--tenant", "acme", "--role", "writer"]),
    )
    .await;
    for i in 0..10 {
        writer
            .append(event("agent-a", &format!("e-{i}")))
            .await
            .unwrap();
    }
    // Only an admin may redact, and must say why.
    assert!(writer.redact(4, "because").await.is_err());
    let err = admin.redact(4, "  ").await.unwrap_err().to_string();
    assert!(err.contains("reason"), "{err}");
    let ack = admin
        .redact(4, "GDPR art. 17, ticket LEGAL-42")
        .await
        .unwrap();
    assert_eq!(ack.index, 10);
    let again = admin
        .redact(4, "GDPR art. 17, ticket LEGAL-42")
        .await
        .unwrap();
    assert!(
        again.duplicate && again.index == 10,
        "redaction is idempotent"
    );
    assert!(
        admin.redact(10, "no payload").await.is_err(),
        "a redaction entry has no payload"
    );

    // The payload is gone; the redaction entry names who and why.
    let entries = admin.entries(4, 11).await.unwrap();
    assert!(entries.is_empty() || entries[0].index == 4);
    let page = admin
        .list_events(
            EventFilter::default(),
            100,
            None,
            false,
            ledger_client::ReadOptions {
                payloads: true,
                proofs: false,
                proof_size: 0,
            },
        )
        .await
        .unwrap();
    let target = page.records.iter().find(|r| r.index == 4).unwrap();
    assert!(target.payload_redacted && target.payload.is_none());
    let mut all = admin.entries(10, 11).await.unwrap();
    let red = ledger_verify::entry::decode_entry(&all.pop().unwrap().entry).unwrap();
    let r = red.redaction.unwrap();
    assert_eq!(
        (r.target_index, r.reason.as_str()),
        (4, "GDPR art. 17, ticket LEGAL-42")
    );
    assert!(red.writer.starts_with("key:") && red.writer.ends_with("@acme"));

    // The audit is clean and reports the redaction.
    let file = dir.path().join("acme.bundle");
    let mut f = std::fs::File::create(&file).unwrap();
    admin.export(0, 0, true, &mut f, |_, _| {}).await.unwrap();
    let key = keys_verifier(&server, "acme");
    let (code, v) = verify_json(
        &["bundle", "--quiet", "--key", &key, file.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["redaction_entries"], 1);
    assert_eq!(v["payloads_redacted"], 1);
    assert_eq!(v["payloads_checked"], 9);
}

/// The verifier key of a log, from the server's ready file.
fn keys_verifier(server: &Server, log: &str) -> String {
    let ready: serde_json::Value =
        serde_json::from_slice(&std::fs::read(server.data_dir.with_extension("ready")).unwrap())
            .unwrap();
    ready["logs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == log)
        .unwrap()["verifier_key"]
        .as_str()
        .unwrap()
        .to_string()
}
