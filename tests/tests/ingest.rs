//! End-to-end tests of the durable append path, against real `ledgerd`
//! processes: concurrency, idempotency, validation, backpressure, restarts,
//! crashes and the start-up self-check.

use ledger_e2e::{Endpoint, Server, event};
use ledger_proto::v1::{
    AppendAck, AppendRejection, AppendRequest, AppendResponse, GetCheckpointRequest,
    GetConsistencyProofRequest, GetInclusionProofRequest, append_response,
    get_inclusion_proof_request::Leaf,
};
use ledger_verify::checkpoint::{Checkpoint, open_checkpoint};
use ledger_verify::hash::{Hash, leaf_hash};
use ledger_verify::proof::{verify_consistency, verify_inclusion};
use std::collections::{BTreeMap, HashSet};
use tokio_stream::StreamExt;
use tonic::Code;

fn h(b: &[u8]) -> Hash {
    Hash::from_slice(b).expect("32-byte hash")
}

async fn latest(server: &Endpoint) -> Checkpoint {
    let cp = server
        .proofs()
        .await
        .get_checkpoint(GetCheckpointRequest::default())
        .await
        .unwrap()
        .into_inner();
    open_checkpoint(&cp.note, &server.verifier).expect("checkpoint signed by the log key")
}

/// Proves each ack is in the tree of the latest checkpoint with the leaf
/// hash it was acked with.
async fn assert_all_included(server: &Endpoint, acks: &[AppendAck]) -> Checkpoint {
    let cp = latest(server).await;
    let mut proofs = server.proofs().await;
    for ack in acks {
        let r = proofs
            .get_inclusion_proof(GetInclusionProofRequest {
                leaf: Some(Leaf::Index(ack.index)),
                tree_size: cp.size,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("proof for {}: {s}", ack.index))
            .into_inner();
        let proof: Vec<Hash> = r.proof.unwrap().hashes.iter().map(|b| h(b)).collect();
        assert_eq!(
            r.leaf_hash, ack.leaf_hash,
            "stored leaf of {} differs from its ack",
            ack.index
        );
        verify_inclusion(ack.index, cp.size, &h(&ack.leaf_hash), &proof, &cp.root)
            .unwrap_or_else(|e| panic!("entry {} not provably in the tree: {e}", ack.index));
    }
    cp
}

/// Streams `ids` on one stream, returning one response per id, in order.
async fn stream_events(server: &Endpoint, ids: Vec<(String, u64)>) -> Vec<AppendResponse> {
    let mut client = server.ingest().await;
    let reqs: Vec<AppendRequest> = ids
        .iter()
        .map(|(id, n)| AppendRequest {
            log: String::new(),
            event: Some(event(id, *n)),
            receipt: false,
        })
        .collect();
    let mut responses = client
        .append_stream(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(r) = responses.next().await {
        out.push(r.expect("stream response"));
    }
    out
}

fn ack_of(r: &AppendResponse) -> &AppendAck {
    match &r.result {
        Some(append_response::Result::Ack(a)) => a,
        other => panic!("expected an ack, got {other:?}"),
    }
}

fn rejection_of(r: &AppendResponse) -> &AppendRejection {
    match &r.result {
        Some(append_response::Result::Rejection(x)) => x,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_streams_every_ack_is_in_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    const CLIENTS: u64 = 16;
    const PER: u64 = 400;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let srv = server.endpoint.clone();
        let ids: Vec<(String, u64)> = (0..PER)
            .map(|i| (format!("c{c}-e{i}"), c * PER + i))
            .collect();
        tasks.push(tokio::spawn(async move {
            let responses = stream_events(&srv, ids.clone()).await;
            assert_eq!(responses.len(), ids.len());
            // Acks come back in request order.
            responses
                .iter()
                .zip(&ids)
                .map(|(r, (id, _))| {
                    let a = ack_of(r).clone();
                    assert_eq!(&a.event_id, id);
                    assert!(!a.duplicate);
                    a
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await.unwrap());
    }
    let n = CLIENTS * PER;
    let indexes: HashSet<u64> = acks.iter().map(|a| a.index).collect();
    assert_eq!(indexes.len() as u64, n, "indexes are unique");
    assert_eq!(indexes, (0..n).collect(), "indexes are exactly 0..n");
    let cp = assert_all_included(&server, &acks).await;
    assert_eq!(cp.size, n);

    // The stored entries decode, chain, and say what was sent.
    let store_check = acks.iter().find(|a| a.index == n - 1).unwrap().clone();
    let metrics = server.scrape();
    assert!(
        metrics.contains("ledger_appended_entries_total{log=\"default\"} 6400"),
        "{metrics}"
    );
    assert!(metrics.contains("ledger_commit_batch_size"));
    drop(server);
    let store = ledgerd::store::Store::open(&dir.path().join("data/logs/default/db")).unwrap();
    let mut chain = ledger_verify::entry::ChainChecker::new();
    for i in 0..n {
        let bytes = store.entry(i).unwrap().expect("entry stored");
        let (leaf, entry) = chain.check(&bytes);
        let entry = entry.unwrap_or_else(|e| panic!("entry {i}: {e}"));
        let ev = entry.event.unwrap();
        assert!(ev.payload.is_empty(), "payload is not in the leaf");
        let (salt, payload) = store
            .payload(i)
            .unwrap()
            .expect("payload stored beside the entry");
        let salt: [u8; 32] = salt.try_into().unwrap();
        assert_eq!(
            ledger_verify::entry::payload_commitment(&salt, &payload).to_vec(),
            entry.payload_commitment
        );
        assert!(
            entry.writer.starts_with("anonymous@127.0.0.1"),
            "{}",
            entry.writer
        );
        if i == store_check.index {
            assert_eq!(leaf.to_vec(), store_check.leaf_hash);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_event_ids_return_the_original_ack() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut c = server.ingest().await;
    let first = c
        .append(AppendRequest {
            log: String::new(),
            event: Some(event("retry-me", 1)),
            receipt: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!first.duplicate);
    // A retry of the same event changes nothing.
    let again = c
        .append(AppendRequest {
            log: String::new(),
            event: Some(event("retry-me", 1)),
            receipt: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(
        (again.index, &again.leaf_hash, &again.integrated_at),
        (first.index, &first.leaf_hash, &first.integrated_at)
    );
    assert_eq!(latest(&server).await.size, 1);

    // Within one stream and across restarts too.
    let r = stream_events(
        &server,
        vec![("s-1".into(), 3), ("s-1".into(), 3), ("retry-me".into(), 1)],
    )
    .await;
    let (a, b, c2) = (ack_of(&r[0]), ack_of(&r[1]), ack_of(&r[2]));
    assert!(!a.duplicate && b.duplicate && c2.duplicate);
    assert_eq!(a.index, b.index);
    assert_eq!(c2.index, first.index);
    assert_eq!(latest(&server).await.size, 2);
    let mut server = server;
    server.restart();
    let mut c = server.ingest().await;
    let after = c
        .append(AppendRequest {
            log: String::new(),
            event: Some(event("s-1", 3)),
            receipt: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(after.duplicate);
    assert_eq!(after.index, a.index);
    assert_eq!(latest(&server).await.size, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_are_refused_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut c = server.ingest().await;
    type Mutation = Box<dyn Fn(&mut ledger_proto::v1::AuditEvent)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "event.correlation_id",
            Box::new(|e| e.correlation_id = "not-a-trace-id".into()),
        ),
        (
            "event.correlation_id",
            Box::new(|e| e.correlation_id = "0".repeat(32)),
        ),
        ("event.agent_id", Box::new(|e| e.agent_id.clear())),
        ("event.kind", Box::new(|e| e.kind = 0)),
        ("event.event_id", Box::new(|e| e.event_id.clear())),
        ("event.span_id", Box::new(|e| e.span_id = "zz".into())),
        ("event.occurred_at", Box::new(|e| e.occurred_at = None)),
        (
            "event.occurred_at",
            Box::new(|e| e.occurred_at.as_mut().unwrap().seconds += 3600),
        ),
        (
            "event.attributes",
            Box::new(|e| {
                for i in 0..65 {
                    e.attributes.insert(format!("k{i}"), "v".into());
                }
            }),
        ),
        (
            "event.attributes[big]",
            Box::new(|e| {
                e.attributes.insert("big".into(), "x".repeat(5000));
            }),
        ),
        (
            "event.payload",
            Box::new(|e| e.payload = vec![7; (1 << 20) + 1]),
        ),
    ];
    for (i, (field, mutate)) in cases.iter().enumerate() {
        let mut e = event(&format!("bad-{i}"), i as u64);
        mutate(&mut e);
        let status = c
            .append(AppendRequest {
                log: String::new(),
                event: Some(e),
                receipt: false,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(&format!("{field}:")),
            "{field}: {}",
            status.message()
        );
    }
    let status = c
        .append(AppendRequest {
            log: String::new(),
            event: None,
            receipt: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message().starts_with("event:")),
        (Code::InvalidArgument, true)
    );
    let status = c
        .append(AppendRequest {
            log: "no-such-log".into(),
            event: Some(event("x", 1)),
            receipt: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().starts_with("log:"));
    // Nothing was written.
    let cp = server
        .proofs()
        .await
        .get_checkpoint(GetCheckpointRequest::default())
        .await
        .unwrap_err();
    assert_eq!(cp.code(), Code::NotFound);

    // In a stream the bad event is rejected in place and the stream goes on.
    let mut bad = event("s-bad", 9);
    bad.correlation_id = "XYZ".into();
    let mut client = server.ingest().await;
    let reqs = vec![
        AppendRequest {
            log: String::new(),
            event: Some(event("s-ok-1", 1)),
            receipt: false,
        },
        AppendRequest {
            log: String::new(),
            event: Some(bad),
            receipt: false,
        },
        AppendRequest {
            log: String::new(),
            event: Some(event("s-ok-2", 2)),
            receipt: false,
        },
        // Accepted at admission, refused by the sequencer: its id is taken
        // by a different event. The answer still comes in its place.
        AppendRequest {
            log: String::new(),
            event: Some(event("s-ok-1", 5)),
            receipt: false,
        },
    ];
    let mut rs = client
        .append_stream(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(r) = rs.next().await {
        out.push(r.unwrap());
    }
    assert_eq!(out.len(), 4);
    assert_eq!(ack_of(&out[0]).index, 0);
    let bad = rejection_of(&out[1]);
    assert_eq!(bad.event_id, "s-bad");
    assert_eq!(bad.code, Code::InvalidArgument as i32);
    assert_eq!(bad.field, "event.correlation_id");
    assert_eq!(ack_of(&out[2]).index, 1);
    let taken = rejection_of(&out[3]);
    assert_eq!(taken.event_id, "s-ok-1");
    assert_eq!(taken.code, Code::AlreadyExists as i32);
    assert_eq!(taken.field, "event.event_id");
    assert_eq!(latest(&server).await.size, 2);
    let m = server.scrape();
    assert!(
        m.contains("ledger_rejected_appends_total{log=\"default\",reason=\"invalid\"} 13"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_resource_exhausted_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Room for one large event at a time.
    let server = Server::start_with(
        dir.path(),
        Some(
            "[ingest]\nmax_payload_bytes = 524288\nqueue_bytes = 600000\n[[logs]]\nid = \"default\"\norigin = \"test.local/q\"\n",
        ),
    );
    let mut acked: Vec<AppendAck> = Vec::new();
    let mut exhausted = 0;
    for round in 0..20 {
        let mut tasks = Vec::new();
        for i in 0..32u64 {
            let ep = server.endpoint.clone();
            tasks.push(tokio::spawn(async move {
                let mut e = event(&format!("big-{round}-{i}"), i);
                e.payload = vec![b'x'; 500_000];
                ep.ingest()
                    .await
                    .append(AppendRequest {
                        log: String::new(),
                        event: Some(e),
                        receipt: false,
                    })
                    .await
            }));
        }
        for t in tasks {
            match t.await.unwrap() {
                Ok(a) => acked.push(a.into_inner()),
                Err(s) => {
                    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                    exhausted += 1;
                }
            }
        }
        if exhausted > 0 && round >= 1 {
            break;
        }
    }
    assert!(exhausted > 0, "the byte budget never filled");
    assert!(!acked.is_empty());
    let cp = assert_all_included(&server, &acked).await;
    assert_eq!(
        cp.size,
        acked.len() as u64,
        "every acked event and nothing else was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_everything_and_the_log_grows_consistently() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let r = stream_events(&server, (0..300).map(|i| (format!("a{i}"), i)).collect()).await;
    let acks: Vec<AppendAck> = r.iter().map(|r| ack_of(r).clone()).collect();
    let before = latest(&server).await;
    server.restart();
    let after = latest(&server).await;
    assert_eq!(after, before, "same checkpoint after a clean restart");
    assert_all_included(&server, &acks).await;

    let r = stream_events(&server, (300..350).map(|i| (format!("a{i}"), i)).collect()).await;
    assert_eq!(ack_of(&r[0]).index, 300);
    let grown = latest(&server).await;
    assert_eq!(grown.size, 350);
    let p = server
        .proofs()
        .await
        .get_consistency_proof(GetConsistencyProofRequest {
            log: String::new(),
            old_size: before.size,
            new_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let hashes: Vec<Hash> = p.proof.unwrap().hashes.iter().map(|b| h(b)).collect();
    verify_consistency(before.size, grown.size, &hashes, &before.root, &grown.root).unwrap();
    // Each checkpoint ever signed is kept and retrievable by size.
    let old = server
        .proofs()
        .await
        .get_checkpoint(GetCheckpointRequest {
            log: String::new(),
            tree_size: 300,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        open_checkpoint(&old.note, &server.verifier).unwrap(),
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_never_loses_an_acked_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let mut all_acks: BTreeMap<u64, AppendAck> = BTreeMap::new();
    let mut last_seen: Option<Checkpoint> = None;
    for round in 0..4u64 {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for c in 0..8u64 {
            let ep = server.endpoint.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut acks = Vec::new();
                let mut client = ep.ingest().await;
                let mut i = 0u64;
                // Unary appends: each Ok is an ack the server owes us.
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = format!("r{round}-c{c}-{i}");
                    match client
                        .append(AppendRequest {
                            log: String::new(),
                            event: Some(event(&id, i)),
                            receipt: false,
                        })
                        .await
                    {
                        Ok(a) => acks.push(a.into_inner()),
                        Err(_) => break, // The server died under us.
                    }
                    i += 1;
                }
                acks
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(400 + 150 * round)).await;
        server.kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut round_acks = 0;
        for t in tasks {
            for a in t.await.unwrap() {
                round_acks += 1;
                assert!(
                    all_acks.insert(a.index, a).is_none(),
                    "index handed out twice"
                );
            }
        }
        assert!(
            round_acks > 0,
            "round {round} acked nothing before the kill"
        );
        server = server
            .try_restart()
            .unwrap_or_else(|e| panic!("restart after kill -9 failed: {e}"));
        let cp = latest(&server).await;
        assert!(
            cp.size > *all_acks.keys().last().unwrap(),
            "tree of {} lost acked index",
            cp.size
        );
        if let Some(prev) = &last_seen {
            let p = server
                .proofs()
                .await
                .get_consistency_proof(GetConsistencyProofRequest {
                    log: String::new(),
                    old_size: prev.size,
                    new_size: cp.size,
                })
                .await
                .unwrap()
                .into_inner();
            let hashes: Vec<Hash> = p.proof.unwrap().hashes.iter().map(|b| h(b)).collect();
            verify_consistency(prev.size, cp.size, &hashes, &prev.root, &cp.root)
                .expect("no rollback across crashes");
        }
        last_seen = Some(cp);
    }
    let acks: Vec<AppendAck> = all_acks.into_values().collect();
    assert_all_included(&server, &acks).await;
    // Each acked entry holds the event that was acked.
    drop(server);
    let store = ledgerd::store::Store::open(&dir.path().join("data/logs/default/db")).unwrap();
    for a in &acks {
        let bytes = store.entry(a.index).unwrap().expect("acked entry on disk");
        assert_eq!(leaf_hash(&bytes).to_vec(), a.leaf_hash);
        let e = ledger_verify::entry::decode_entry(&bytes).unwrap();
        assert_eq!(e.event.unwrap().event_id, a.event_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_refuses_a_store_that_no_longer_matches_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    stream_events(&server, (0..20).map(|i| (format!("t{i}"), i)).collect()).await;
    server.stop();
    {
        // Rewrite the newest entry behind ledgerd's back.
        let store =
            ledgerd::store::StoreWriter::open(&dir.path().join("data/logs/default/db")).unwrap();
        let mut bytes = store.entry(19).unwrap().unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let mut b = store.new_batch();
        store.put(
            &mut b,
            ledgerd::store::cf::ENTRIES,
            &19u64.to_be_bytes(),
            &bytes,
        );
        store.commit(b).unwrap();
    }
    let err = match server.try_restart() {
        Ok(_) => panic!("ledgerd served a tampered store"),
        Err(e) => e,
    };
    assert!(err.contains("refusing to serve"), "{err}");
    assert!(
        err.contains("entry 19 does not match its leaf hash"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_batch_answers_each_event_in_order_and_refuses_only_the_bad_ones() {
    use ledger_proto::v1::AppendBatchRequest;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut c = server.ingest().await;
    let mut events: Vec<_> = (0..6).map(|n| event(&format!("b-{n}"), n)).collect();
    let mut bad = event("b-bad", 6);
    bad.correlation_id = "not-a-trace-id".into();
    events.insert(2, bad);
    // The same event twice in one batch: one entry, the second a duplicate.
    events.push(event("b-0", 0));
    let mut reserved = event("ledger:forged", 7);
    reserved.agent_id = "gateway".into();
    events.push(reserved);
    let batch = AppendBatchRequest {
        log: String::new(),
        events: events.clone(),
        receipt: false,
    };
    let results = c
        .append_batch(batch.clone())
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), events.len(), "one result per event");
    let invalid = rejection_of(&results[2]);
    assert_eq!(invalid.event_id, "b-bad");
    assert_eq!(Code::from(invalid.code), Code::InvalidArgument);
    assert_eq!(invalid.field, "event.correlation_id");
    let forged = rejection_of(&results[8]);
    assert_eq!(Code::from(forged.code), Code::InvalidArgument);
    assert_eq!(forged.field, "event.event_id");

    let acks: Vec<AppendAck> = [0, 1, 3, 4, 5, 6]
        .iter()
        .map(|&i| ack_of(&results[i]).clone())
        .collect();
    for (ack, e) in acks
        .iter()
        .zip(events.iter().filter(|e| e.event_id != "b-bad"))
    {
        assert_eq!(ack.event_id, e.event_id, "results in request order");
        assert!(!ack.duplicate);
    }
    let again = ack_of(&results[7]);
    assert!(
        again.duplicate,
        "the repeat within the batch is a duplicate"
    );
    assert_eq!(again.index, acks[0].index);
    let mut indexes: Vec<u64> = acks.iter().map(|a| a.index).collect();
    indexes.sort();
    assert_eq!(indexes, (0..6).collect::<Vec<_>>(), "six entries, no gaps");
    assert_eq!(assert_all_included(&server, &acks).await.size, 6);

    // Resending the whole batch (a client retry) writes nothing new.
    let retried = c.append_batch(batch).await.unwrap().into_inner().results;
    for (i, ack) in [0, 1, 3, 4, 5, 6].iter().zip(&acks) {
        let r = ack_of(&retried[*i]);
        assert!(r.duplicate);
        assert_eq!((r.index, &r.leaf_hash), (ack.index, &ack.leaf_hash));
    }
    assert_eq!(latest(&server).await.size, 6);

    // What the batch as a whole may not be.
    let call = |events: Vec<ledger_proto::v1::AuditEvent>, log: &str| AppendBatchRequest {
        log: log.into(),
        events,
        receipt: false,
    };
    let empty = c.append_batch(call(vec![], "")).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(
        empty.message().starts_with("events:"),
        "{}",
        empty.message()
    );
    let huge: Vec<_> = (0..4097).map(|n| event(&format!("h-{n}"), n)).collect();
    let over = c.append_batch(call(huge, "")).await.unwrap_err();
    assert_eq!(over.code(), Code::InvalidArgument);
    assert!(over.message().contains("4096"), "{}", over.message());
    let nowhere = c
        .append_batch(call(vec![event("x", 1)], "no-such-log"))
        .await
        .unwrap_err();
    assert_eq!(nowhere.code(), Code::NotFound);
    assert!(
        nowhere.message().starts_with("log:"),
        "{}",
        nowhere.message()
    );
    assert_eq!(
        latest(&server).await.size,
        6,
        "refused batches wrote nothing"
    );

    // A batch of the largest size is taken whole.
    let full: Vec<_> = (0..4096).map(|n| event(&format!("f-{n}"), n)).collect();
    let results = c
        .append_batch(call(full, ""))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 4096);
    for (n, r) in results.iter().enumerate() {
        let ack = ack_of(r);
        assert_eq!(ack.event_id, format!("f-{n}"));
        assert!(!ack.duplicate);
    }
    assert_eq!(latest(&server).await.size, 6 + 4096);
}
