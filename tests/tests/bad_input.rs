//! Bad input, as an outside client sends it, on a real server: every answer
//! is a documented status a client can act on, with a bounded message, and
//! nothing is lost or half-written. Ends with a structure-aware gRPC fuzz
//! and abuse run beside a well-behaved writer.

use fastrand::Rng;
use ledger_client::{Client, Event, EventKind};
use ledger_e2e::raw::{RpcKind, call};
use ledger_e2e::{Server, event};
use ledger_proto::v1::ingest_client::IngestClient;
use ledger_proto::v1::query_client::QueryClient;
use ledger_proto::v1::{
    AppendRequest, AuditEvent, EventFilter, ExportRequest, GetCheckpointRequest,
    GetConsistencyProofRequest, GetEntriesRequest, GetInclusionProofRequest, ListEventsRequest,
    RedactRequest, TailRequest, TimelineRequest, append_response,
};
use prost::Message;
use std::time::{Duration, Instant};
use tonic::Code;

const APPEND: &str = "/agentledger.v1.Ingest/Append";
const APPEND_STREAM: &str = "/agentledger.v1.Ingest/AppendStream";

/// The longest status message the API sends (see ledger.proto).
const MAX_MESSAGE: usize = 1100;

/// An append of `e` to the caller's own log.
fn req(e: AuditEvent) -> AppendRequest {
    AppendRequest {
        log: String::new(),
        event: Some(e),
        receipt: false,
    }
}

fn append_body(e: AuditEvent) -> Vec<u8> {
    req(e).encode_to_vec()
}

/// A hand-made AppendRequest whose event's field `tag` holds `value` bytes
/// of wire type LEN (2).
fn with_raw_event_field(tag: u32, value: &[u8]) -> Vec<u8> {
    let mut event = event("raw-1", 1).encode_to_vec();
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut event);
    prost::encoding::encode_varint(value.len() as u64, &mut event);
    event.extend_from_slice(value);
    let mut req = Vec::new();
    prost::encoding::bytes::encode(2, &event, &mut req);
    req
}

async fn unary(server: &Server, method: &'static str, body: Vec<u8>) -> ledger_e2e::raw::Outcome {
    call(
        server.endpoint.channel().await,
        method,
        vec![body],
        RpcKind::Unary,
        64 << 20,
    )
    .await
}

fn assert_status(out: ledger_e2e::raw::Outcome, code: Code, needle: &str, case: &str) {
    let s = out.expect_err(case);
    assert_eq!(s.code(), code, "{case}: {s:?}");
    assert!(
        s.message().contains(needle),
        "{case}: {:?} lacks {needle:?}",
        s.message()
    );
    assert!(s.message().len() <= MAX_MESSAGE, "{case}: message too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_and_oversized_requests_get_invalid_argument_or_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());

    // Invalid UTF-8 in a string field: named.
    let bad_utf8 = with_raw_event_field(2, &[0xff, 0xfe, 0x41]);
    assert_status(
        unary(&server, APPEND, bad_utf8.clone()).await,
        Code::InvalidArgument,
        "correlation_id",
        "invalid UTF-8",
    );
    // Truncated bytes, random bytes, a wrong wire type.
    let good = append_body(event("ok-1", 1));
    assert_status(
        unary(&server, APPEND, good[..good.len() - 3].to_vec()).await,
        Code::InvalidArgument,
        "decode",
        "truncated",
    );
    assert_status(
        unary(&server, APPEND, vec![0xff; 40]).await,
        Code::InvalidArgument,
        "decode",
        "random bytes",
    );
    // Field 1 (log, a string) sent as a varint.
    assert_status(
        unary(&server, APPEND, vec![0x08, 0x01]).await,
        Code::InvalidArgument,
        "wire type",
        "wrong wire type",
    );
    // Absurd nesting: 200 groups of an unknown field, one inside another.
    let mut nested = Vec::new();
    for _ in 0..200 {
        prost::encoding::encode_key(15, prost::encoding::WireType::StartGroup, &mut nested);
    }
    for _ in 0..200 {
        prost::encoding::encode_key(15, prost::encoding::WireType::EndGroup, &mut nested);
    }
    assert_status(
        unary(&server, APPEND, nested).await,
        Code::InvalidArgument,
        "recursion",
        "nesting",
    );
    // The same on a query RPC: never INTERNAL.
    assert_status(
        unary(
            &server,
            "/agentledger.v1.Query/GetTimeline",
            vec![0x12, 0x05, 0xff],
        )
        .await,
        Code::InvalidArgument,
        "decode",
        "query bytes",
    );

    // Over the request limit: the same answer on every RPC, naming the limit
    // and the setting.
    let huge = {
        let mut e = event("huge-1", 1);
        e.payload = vec![b'x'; 2 << 20];
        append_body(e)
    };
    for method in [
        APPEND,
        "/agentledger.v1.Ingest/AppendBatch",
        "/agentledger.v1.Admin/Redact",
        "/agentledger.v1.Query/GetTimeline",
        "/agentledger.v1.Proofs/GetCheckpoint",
    ] {
        assert_status(
            unary(&server, method, huge.clone()).await,
            Code::ResourceExhausted,
            "ingest.max_payload_bytes",
            method,
        );
    }

    // In a stream: the good events before the bad message are acked, then
    // the stream ends with the reason, not a clean close.
    let out = call(
        server.endpoint.channel().await,
        APPEND_STREAM,
        vec![
            append_body(event("stream-ok-1", 1)),
            append_body(event("stream-ok-2", 2)),
            bad_utf8,
        ],
        RpcKind::Bidi,
        64 << 20,
    )
    .await;
    assert_status(out, Code::InvalidArgument, "correlation_id", "stream");
    let mut proofs = server.endpoint.proofs().await;
    for id in ["stream-ok-1", "stream-ok-2"] {
        proofs
            .get_inclusion_proof(GetInclusionProofRequest {
                leaf: Some(ledger_proto::v1::get_inclusion_proof_request::Leaf::EventId(id.into())),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{id} was acked before the bad message: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_messages_never_echo_unbounded_input() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut ingest = server.endpoint.ingest().await;
    let big = "k".repeat(1 << 20);

    let mut e = event("big-key", 1);
    e.attributes.insert(big.clone(), "v".into());
    let s = ingest.append(req(e)).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().starts_with("event.attributes"), "{s:?}");
    assert!(s.message().len() < 300, "{} bytes", s.message().len());

    let s = ingest
        .append(AppendRequest {
            log: big.clone(),
            event: Some(event("big-log", 1)),
            receipt: false,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    assert!(s.message().starts_with("log:") && s.message().len() < 300);

    let s = server
        .endpoint
        .proofs()
        .await
        .get_inclusion_proof(GetInclusionProofRequest {
            leaf: Some(ledger_proto::v1::get_inclusion_proof_request::Leaf::EventId(big.clone())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(s.message().len() < 300, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_event_id_with_other_content_is_already_exists() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut ingest = server.endpoint.ingest().await;
    let first = event("shared-id", 1);
    let ack = ingest
        .append(req(first.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(!ack.duplicate);

    // The same event again: the original ack.
    let again = ingest
        .append(req(first.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate);
    assert_eq!((again.index, &again.leaf_hash), (ack.index, &ack.leaf_hash));

    // Another event under the id: refused, naming the id and the index.
    let mut other = first.clone();
    other.agent_id = "another-agent".into();
    let s = ingest.append(req(other.clone())).await.unwrap_err();
    assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");
    assert!(
        s.message().contains("shared-id") && s.message().contains(&format!("entry {}", ack.index)),
        "{s:?}"
    );
    // A different payload is different content too.
    let mut other_payload = first.clone();
    other_payload.payload = b"{\"n\":2}".to_vec();
    let s = ingest.append(req(other_payload)).await.unwrap_err();
    assert_eq!(s.code(), Code::AlreadyExists);

    // Within one commit group (one stream, back to back): the second is
    // refused, the first acked.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let a = event("group-id", 2);
    let mut b = a.clone();
    b.tool_name = "other.tool".into();
    tx.send(req(a)).await.unwrap();
    tx.send(req(b)).await.unwrap();
    drop(tx);
    let mut out = ingest
        .append_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let r1 = out.message().await.unwrap().unwrap().result.unwrap();
    let r2 = out.message().await.unwrap().unwrap().result.unwrap();
    assert!(matches!(r1, append_response::Result::Ack(_)), "{r1:?}");
    match r2 {
        append_response::Result::Rejection(r) => {
            assert_eq!(r.code, Code::AlreadyExists as i32);
            assert_eq!(r.field, "event.event_id");
        }
        other => panic!("{other:?}"),
    }
    // Nothing was written for the refused ones: the log holds 2 entries.
    let cp = server
        .endpoint
        .proofs()
        .await
        .get_checkpoint(GetCheckpointRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cp.tree_size, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_entry_exceeds_65535_bytes_is_invalid_and_says_use_the_payload() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut ingest = server.endpoint.ingest().await;
    // Every attribute within its own limits; the entry around them is not.
    let mut big = event("too-big", 1);
    for i in 0..20 {
        big.attributes.insert(format!("k{i}"), "v".repeat(4000));
    }
    let s = ingest.append(req(big.clone())).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(
        s.message().starts_with("event:")
            && s.message().contains("65535")
            && s.message().contains("event.payload"),
        "{s:?}"
    );
    // On a stream it is a rejection in place, naming the field.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(req(big)).await.unwrap();
    tx.send(req(event("fine", 2))).await.unwrap();
    drop(tx);
    let mut out = ingest
        .append_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    match out.message().await.unwrap().unwrap().result.unwrap() {
        append_response::Result::Rejection(r) => {
            assert_eq!(
                (r.code, r.field.as_str()),
                (Code::InvalidArgument as i32, "event")
            );
        }
        other => panic!("{other:?}"),
    }
    let ack = match out.message().await.unwrap().unwrap().result.unwrap() {
        append_response::Result::Ack(a) => a,
        other => panic!("{other:?}"),
    };
    assert_eq!(ack.index, 0, "the refused event took no index");
    // The same content as a payload is accepted.
    let mut as_payload = event("as-payload", 3);
    as_payload.payload = vec![b'v'; 80_000];
    let ack = ingest.append(req(as_payload)).await.unwrap().into_inner();
    assert_eq!(ack.index, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_validate_like_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut ingest = server.endpoint.ingest().await;
    for i in 0..3 {
        ingest
            .append(req(event(&format!("q-{i}"), i)))
            .await
            .unwrap();
    }
    let mut q = QueryClient::new(server.endpoint.channel().await);
    let list = |filter: EventFilter| ListEventsRequest {
        filter: Some(filter),
        ..Default::default()
    };
    for (filter, field) in [
        (
            EventFilter {
                kinds: vec![1, 99],
                ..Default::default()
            },
            "filter.kinds",
        ),
        (
            EventFilter {
                kinds: vec![0],
                ..Default::default()
            },
            "filter.kinds",
        ),
        (
            EventFilter {
                risk_tiers: vec![7],
                ..Default::default()
            },
            "filter.risk_tiers",
        ),
        (
            EventFilter {
                outcomes: vec![-3],
                ..Default::default()
            },
            "filter.outcomes",
        ),
        (
            EventFilter {
                agent_id: "a".repeat(300),
                ..Default::default()
            },
            "filter.agent_id",
        ),
        (
            EventFilter {
                occurred_from: Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: 2_000_000_000,
                }),
                ..Default::default()
            },
            "filter.occurred_from: nanos",
        ),
    ] {
        let s = q.list_events(list(filter)).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{field}: {s:?}");
        assert!(s.message().starts_with(field), "{field}: {s:?}");
    }
    // GetEntries with start > end says so.
    let s = q
        .get_entries(GetEntriesRequest {
            start: 2,
            end: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().starts_with("start:"), "{s:?}");
    // end = 0 is the whole log.
    let mut all = q
        .get_entries(GetEntriesRequest {
            start: 1,
            end: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while all.message().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_timestamps_and_a_malformed_authorization_header_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut ingest = server.endpoint.ingest().await;
    let mut e = event("ts-1", 1);
    e.occurred_at.as_mut().unwrap().nanos = -5;
    let s = ingest.append(req(e)).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().starts_with("event.occurred_at: nanos is -5"),
        "{s:?}"
    );

    // Authentication is off, but a credential sent is checked, and the
    // answer says what to do.
    let mut request = tonic::Request::new(req(event("auth-1", 1)));
    request
        .metadata_mut()
        .insert("authorization", "Basic dXNlcjpwdw==".parse().unwrap());
    let s = IngestClient::new(server.endpoint.channel().await)
        .append(request)
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(
        s.message().contains("authentication is off") && s.message().contains("send none"),
        "{s:?}"
    );
}

/// Every RPC, its shape, and a structured random request for it.
fn rpcs() -> Vec<(&'static str, RpcKind)> {
    vec![
        (APPEND, RpcKind::Unary),
        (APPEND_STREAM, RpcKind::Bidi),
        ("/agentledger.v1.Ingest/AppendBatch", RpcKind::Unary),
        ("/agentledger.v1.Proofs/GetCheckpoint", RpcKind::Unary),
        ("/agentledger.v1.Proofs/GetInclusionProof", RpcKind::Unary),
        ("/agentledger.v1.Proofs/GetConsistencyProof", RpcKind::Unary),
        ("/agentledger.v1.Query/GetTimeline", RpcKind::Unary),
        ("/agentledger.v1.Query/ListEvents", RpcKind::Unary),
        (
            "/agentledger.v1.Query/StreamEvents",
            RpcKind::ServerStreaming,
        ),
        ("/agentledger.v1.Query/Tail", RpcKind::ServerStreaming),
        ("/agentledger.v1.Query/GetEntries", RpcKind::ServerStreaming),
        ("/agentledger.v1.Export/Export", RpcKind::ServerStreaming),
        ("/agentledger.v1.Admin/Redact", RpcKind::Unary),
    ]
}

fn rand_string(rng: &mut Rng) -> String {
    match rng.u8(..6) {
        0 => String::new(),
        1 => hex::encode((0..16).map(|_| rng.u8(..)).collect::<Vec<u8>>()),
        2 => "x".repeat(rng.usize(..5000)),
        3 => (0..rng.usize(..40)).map(|_| rng.char(..)).collect(),
        4 => format!("evt-{}", rng.u32(..)),
        _ => "default".into(),
    }
}

fn rand_u64(rng: &mut Rng) -> u64 {
    match rng.u8(..4) {
        0 => 0,
        1 => rng.u64(..50),
        2 => u64::MAX - rng.u64(..3),
        _ => rng.u64(..),
    }
}

fn rand_i32(rng: &mut Rng) -> i32 {
    match rng.u8(..3) {
        0 => rng.i32(0..13),
        1 => rng.i32(..),
        _ => -1,
    }
}

fn rand_ts(rng: &mut Rng) -> Option<prost_types::Timestamp> {
    rng.bool().then(|| prost_types::Timestamp {
        seconds: rng.i64(-10..5_000_000_000),
        nanos: rand_i32(rng),
    })
}

fn rand_filter(rng: &mut Rng) -> Option<EventFilter> {
    rng.bool().then(|| EventFilter {
        correlation_id: rand_string(rng),
        agent_id: rand_string(rng),
        principal: rand_string(rng),
        tool_name: rand_string(rng),
        kinds: (0..rng.usize(..3)).map(|_| rand_i32(rng)).collect(),
        risk_tiers: (0..rng.usize(..3)).map(|_| rand_i32(rng)).collect(),
        outcomes: (0..rng.usize(..3)).map(|_| rand_i32(rng)).collect(),
        occurred_from: rand_ts(rng),
        occurred_to: rand_ts(rng),
    })
}

fn rand_event(rng: &mut Rng) -> AuditEvent {
    let mut e = event(&format!("fz-{}", rng.u32(..)), rng.u64(..1000));
    match rng.u8(..10) {
        0 => e.event_id = rand_string(rng),
        1 => e.correlation_id = rand_string(rng),
        2 => e.span_id = rand_string(rng),
        3 => e.agent_id = rand_string(rng),
        4 => e.kind = rand_i32(rng),
        5 => e.occurred_at = rand_ts(rng),
        6 => {
            for _ in 0..rng.usize(..80) {
                e.attributes.insert(rand_string(rng), rand_string(rng));
            }
        }
        7 => e.payload = vec![0; rng.usize(..(2 << 20))],
        8 => e.risk_tier = rand_i32(rng),
        _ => e.outcome = rand_i32(rng),
    }
    e
}

/// A structured random request for `method`.
fn rand_request(rng: &mut Rng, method: &str) -> Vec<u8> {
    let log = if rng.u8(..4) == 0 {
        rand_string(rng)
    } else {
        String::new()
    };
    match method.rsplit('/').next().unwrap() {
        "Append" | "AppendStream" => AppendRequest {
            log,
            event: rng.u8(..10).ne(&0).then(|| rand_event(rng)),
            receipt: rng.bool(),
        }
        .encode_to_vec(),
        "AppendBatch" => ledger_proto::v1::AppendBatchRequest {
            log,
            events: (0..rng.u8(..4)).map(|_| rand_event(rng)).collect(),
            receipt: rng.bool(),
        }
        .encode_to_vec(),
        "GetCheckpoint" => GetCheckpointRequest {
            log,
            tree_size: rand_u64(rng),
        }
        .encode_to_vec(),
        "GetInclusionProof" => GetInclusionProofRequest {
            log,
            leaf: match rng.u8(..3) {
                0 => None,
                1 => Some(ledger_proto::v1::get_inclusion_proof_request::Leaf::Index(
                    rand_u64(rng),
                )),
                _ => Some(
                    ledger_proto::v1::get_inclusion_proof_request::Leaf::EventId(rand_string(rng)),
                ),
            },
            tree_size: rand_u64(rng),
        }
        .encode_to_vec(),
        "GetConsistencyProof" => GetConsistencyProofRequest {
            log,
            old_size: rand_u64(rng),
            new_size: rand_u64(rng),
        }
        .encode_to_vec(),
        "GetTimeline" => TimelineRequest {
            log,
            correlation_id: rand_string(rng),
            include_payloads: rng.bool(),
            with_proofs: rng.bool(),
            proof_tree_size: rand_u64(rng),
        }
        .encode_to_vec(),
        "ListEvents" | "StreamEvents" => ListEventsRequest {
            log,
            filter: rand_filter(rng),
            page_size: rng.u32(..),
            page_token: rand_string(rng),
            include_payloads: rng.bool(),
            with_proofs: rng.bool(),
            proof_tree_size: rand_u64(rng),
            descending: rng.bool(),
        }
        .encode_to_vec(),
        "Tail" => TailRequest {
            log,
            from_index: rand_u64(rng),
            filter: rand_filter(rng),
            include_payloads: rng.bool(),
        }
        .encode_to_vec(),
        "GetEntries" => GetEntriesRequest {
            log,
            start: rand_u64(rng),
            end: rand_u64(rng),
            include_payloads: rng.bool(),
        }
        .encode_to_vec(),
        "Export" => ExportRequest {
            log,
            start: rand_u64(rng),
            end: rand_u64(rng),
            include_payloads: rng.bool(),
        }
        .encode_to_vec(),
        _ => RedactRequest {
            log,
            target_index: rand_u64(rng),
            reason: rand_string(rng),
        }
        .encode_to_vec(),
    }
}

/// Codes a well-formed server may answer bad input with (ledger.proto).
fn documented(code: Code) -> bool {
    !matches!(code, Code::Internal | Code::Unknown | Code::DataLoss)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn fuzzing_every_rpc_leaves_the_server_up_and_a_good_writer_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let seed = ledger_e2e::fuzz_seed("gRPC fuzz");
    let rss_before = server.rss_kib().unwrap_or(0);

    // A well-behaved writer alongside, for the whole run.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let grpc = server.grpc.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let c = Client::connect(&grpc).await.unwrap();
            let mut acked = Vec::new();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("good-{n}");
                let e = Event::new(EventKind::Decision, "good-agent")
                    .event_id(id.clone())
                    .payload_json(&serde_json::json!({"n": n}))
                    .build();
                let ack = c.append(e).await.expect("the good writer is served");
                acked.push((id, ack.index));
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            acked
        })
    };

    let mut rng = Rng::with_seed(seed);
    let started = Instant::now();
    let budget = Duration::from_secs(45);
    let rpcs = rpcs();
    let channel = server.endpoint.channel().await;
    let mut cases = 0u64;
    let mut codes = std::collections::BTreeMap::<String, u64>::new();
    'outer: for round in 0..60 {
        for &(method, kind) in &rpcs {
            for _ in 0..4 {
                if started.elapsed() > budget {
                    break 'outer;
                }
                let body = match rng.u8(..5) {
                    // Random bytes of a random length.
                    0 => (0..rng.usize(..200)).map(|_| rng.u8(..)).collect(),
                    // A structured request with one byte flipped.
                    1 => {
                        let mut b = rand_request(&mut rng, method);
                        if !b.is_empty() {
                            let i = rng.usize(..b.len());
                            b[i] ^= 1 << rng.u8(..8);
                        }
                        b
                    }
                    // A structured request cut short.
                    2 => {
                        let mut b = rand_request(&mut rng, method);
                        b.truncate(rng.usize(..=b.len()));
                        b
                    }
                    _ => rand_request(&mut rng, method),
                };
                let bodies = if kind == RpcKind::Bidi {
                    (0..rng.usize(1..4))
                        .map(|_| rand_request(&mut rng, method))
                        .chain(std::iter::once(body))
                        .collect()
                } else {
                    vec![body]
                };
                cases += 1;
                // Tail waits for entries that may never come: a short look.
                let wait = if method.ends_with("/Tail") {
                    Duration::from_millis(200)
                } else {
                    Duration::from_secs(5)
                };
                let out = tokio::time::timeout(
                    wait,
                    call(channel.clone(), method, bodies, kind, 64 << 20),
                )
                .await;
                let code = match out {
                    // Tail waits for new entries; a stream still open is fine.
                    Err(_) if method.ends_with("/Tail") => "tail-open".to_string(),
                    Err(_) => panic!("seed {seed} round {round}: {method} hung"),
                    Ok(Ok(_)) => "OK".to_string(),
                    Ok(Err(s)) => {
                        assert!(
                            documented(s.code()),
                            "seed {seed} round {round}: {method} answered {s:?}"
                        );
                        assert!(
                            s.message().len() <= MAX_MESSAGE,
                            "seed {seed}: {method} sent a {}-byte message",
                            s.message().len()
                        );
                        format!("{:?}", s.code())
                    }
                };
                *codes.entry(format!("{method} {code}")).or_default() += 1;
            }
        }
        assert!(server.is_running(), "seed {seed}: the server died");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.await.unwrap();
    println!("{cases} fuzz cases in {:?}", started.elapsed());
    for (k, n) in &codes {
        println!("  {k}: {n}");
    }
    assert!(cases > 200, "only {cases} cases ran");
    assert!(acked.len() > 10, "the good writer made no progress");

    // The server is up and every event the good writer was acked is there.
    let c = Client::connect(&server.grpc).await.unwrap();
    let mut proofs = server.endpoint.proofs().await;
    for (id, index) in &acked {
        let r = proofs
            .get_inclusion_proof(GetInclusionProofRequest {
                leaf: Some(
                    ledger_proto::v1::get_inclusion_proof_request::Leaf::EventId(id.clone()),
                ),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: acked {id} is missing: {e}"));
        assert_eq!(r.into_inner().proof.unwrap().leaf_index, *index);
    }
    c.append(Event::new(EventKind::Decision, "after").build())
        .await
        .unwrap();
    let rss_after = server.rss_kib().unwrap_or(0);
    println!("server RSS: {rss_before} KiB before, {rss_after} KiB after");
    assert!(
        rss_after < 1_500_000,
        "seed {seed}: server RSS grew to {rss_after} KiB"
    );
    // And the log still audits clean.
    let mut bundle = Vec::new();
    c.export(0, 0, true, &mut bundle, |_, _| {}).await.unwrap();
    let r =
        ledger_verify::audit::audit_bundle(bundle.as_slice(), &server.verifier, |_, _| {}).unwrap();
    assert!(r.clean(), "{:?}", r.findings);
    server.stop();
}
