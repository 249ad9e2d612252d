//! The tampering suite: a real log, tampered with in each way the verifier
//! claims to detect, each reported with its kind and first bad index; the
//! untouched log verifies clean.

use ledger_client::{Client, Event, EventKind};
use ledger_e2e::items::{Items, assert_first};
use ledger_e2e::{Server, tamper_tool_name, verify_json};
use ledger_verify::audit::{TamperKind, audit_bundle};
use ledger_verify::leaf_hash;
use ledger_verify::proto::{EntryRecord, LedgerEntry, SignedCheckpoint, bundle_item::Item};
use prost::Message;
use std::path::Path;

async fn fill(server: &Server, rounds: u64, per: u64, tag: &str) {
    let c = Client::connect(&server.grpc).await.unwrap();
    let a = c.appender(Default::default());
    for r in 0..rounds {
        let mut acks = Vec::new();
        for i in 0..per {
            let e = Event::new(EventKind::ToolCall, format!("agent-{}", i % 4))
                .tool("sql.execute")
                .event_id(format!("{tag}-{r}-{i}"))
                .payload_json(&serde_json::json!({"round": r, "i": i}))
                .build();
            acks.push(a.send(e).await.unwrap());
        }
        for ack in acks {
            ack.await.unwrap();
        }
    }
}

async fn export(server: &Server) -> Vec<u8> {
    let mut out = Vec::new();
    Client::connect(&server.grpc)
        .await
        .unwrap()
        .export(0, 0, true, &mut out, |_, _| {})
        .await
        .unwrap();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_tampering_in_a_bundle_is_named_with_its_first_index() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_signing_every_group(dir.path());
    fill(&server, 10, 30, "t").await;
    let key = server.verifier.clone();
    let original = Items::parse(&export(&server).await);

    let clean = original.audit(&key);
    assert!(clean.clean(), "{:?}", clean.findings);
    assert_eq!(clean.tree_size, 300);
    assert!(clean.checkpoints_checked >= 10);

    // Modified entry bytes (still a well-formed entry).
    let modified = |index: u64| {
        let mut t = Items::parse(&original.bytes());
        let e = t.entry_mut(index);
        let mut entry = LedgerEntry::decode(e.entry.as_slice()).unwrap();
        entry.event.as_mut().unwrap().agent_id = "someone-else".into();
        e.entry = entry.encode_to_vec();
        t
    };
    let t = modified(100);
    assert_first(
        &t.audit(&key),
        TamperKind::ModifiedEntry,
        100,
        "modified entry",
    );

    // The last entry of a group modified: the checkpoint right after it
    // fails, and the next entry's link names the entry.
    let across = (1..original.body.len() - 1)
        .find_map(|p| match &original.body[p - 1..=p + 1] {
            [Item::Entry(a), Item::Checkpoint(_), Item::Entry(b)] if b.index == a.index + 1 => {
                Some((p - 1, p + 1, a.index))
            }
            _ => None,
        })
        .expect("a checkpoint between two groups (one is signed per group)");
    let t = modified(across.2);
    assert_first(
        &t.audit(&key),
        TamperKind::ModifiedEntry,
        across.2,
        "modified last entry of a group",
    );

    // Modified payload.
    let mut t = Items::parse(&original.bytes());
    t.entry_mut(120).payload = br#"{"round":9,"i":9}"#.to_vec();
    assert_first(
        &t.audit(&key),
        TamperKind::ModifiedPayload,
        120,
        "modified payload",
    );

    // Deleted entry.
    let mut t = Items::parse(&original.bytes());
    let p = t.at(150);
    t.body.remove(p);
    assert_first(
        &t.audit(&key),
        TamperKind::DeletedEntry,
        150,
        "deleted entry",
    );

    // Inserted entry: well formed, chained to its predecessor.
    let mut t = Items::parse(&original.bytes());
    let prev = leaf_hash(&t.entry_mut(169).entry.clone());
    let mut forged = LedgerEntry::decode(t.entry_mut(170).entry.as_slice()).unwrap();
    forged.prev_leaf_hash = prev.to_vec();
    forged.event.as_mut().unwrap().event_id = "fabricated".into();
    forged.event.as_mut().unwrap().agent_id = "cover-up".into();
    // It commits to entry 170's payload, so it can carry that payload.
    let real = t.entry_mut(170).clone();
    let bytes = forged.encode_to_vec();
    let p = t.at(170);
    t.body.insert(
        p,
        Item::Entry(EntryRecord {
            index: 170,
            leaf_hash: leaf_hash(&bytes).to_vec(),
            entry: bytes,
            payload: real.payload,
            payload_salt: real.payload_salt,
            ..Default::default()
        }),
    );
    assert_first(
        &t.audit(&key),
        TamperKind::InsertedEntry,
        170,
        "inserted entry",
    );

    // Two entries swapped.
    let mut t = Items::parse(&original.bytes());
    let (a, b) = (t.at(200), t.at(201));
    t.body.swap(a, b);
    assert_first(
        &t.audit(&key),
        TamperKind::Reordered,
        200,
        "swapped entries",
    );

    // Two entries swapped across the checkpoint between their groups: the
    // look-ahead for a swap passes over checkpoints.
    let mut t = Items::parse(&original.bytes());
    t.body.swap(across.0, across.1);
    let r = t.audit(&key);
    assert_first(
        &r,
        TamperKind::Reordered,
        across.2,
        "entries swapped across a checkpoint",
    );

    // The tail cut off (its checkpoints still vouch for it).
    let mut t = Items::parse(&original.bytes());
    t.body
        .retain(|i| !matches!(i, Item::Entry(e) if e.index >= 250));
    assert_first(&t.audit(&key), TamperKind::Truncated, 250, "truncated tail");

    // A checkpoint not signed by the log key.
    let mut t = Items::parse(&original.bytes());
    let p = t
        .body
        .iter()
        .position(|i| matches!(i, Item::Checkpoint(_)))
        .unwrap();
    if let Item::Checkpoint(SignedCheckpoint { note, .. }) = &mut t.body[p] {
        // Flip one character of the signature.
        let at = note.rfind(' ').unwrap() + 10;
        let mut b = note.clone().into_bytes();
        b[at] = if b[at] == b'A' { b'B' } else { b'A' };
        *note = String::from_utf8(b).unwrap();
    }
    let r = t.audit(&key);
    assert!(
        r.findings
            .iter()
            .any(|f| f.kind == TamperKind::BadSignature),
        "{:?}",
        r.findings
    );

    // A bundle cut short in the middle of the file.
    let bytes = original.bytes();
    let r = audit_bundle(&bytes[..bytes.len() / 2], &key, |_, _| {}).unwrap();
    assert!(r.findings.iter().any(|f| f.kind == TamperKind::Malformed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_the_store_rollback_and_a_forked_history_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, anchors) = Server::start_with_dir_anchors(dir.path());
    let key = server.verifier.to_string();
    let anchors_arg = anchors.to_str().unwrap().to_string();
    fill(&server, 5, 40, "a").await;
    server.stop(); // Anchors size 200.
    let backup = dir.path().join("backup");
    copy_dir(&server.data_dir, &backup);

    // More history, anchored.
    server.restart();
    fill(&server, 5, 40, "b").await;
    server.stop(); // Anchors size 400.

    // 1. An entry's bytes changed inside RocksDB (the server's own
    //    start-up check covers only the tail and the root of its tiles).
    tamper_tool_name(
        &server.data_dir.join("logs/default/db"),
        77,
        "harmless.read",
    );
    server.restart();
    let file = dir.path().join("modified.bundle");
    std::fs::write(&file, export(&server).await).unwrap();
    let (code, v) = verify_json(
        &["bundle", "--quiet", "--key", &key, file.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["findings"][0]["kind"], "modified_entry");
    assert_eq!(v["findings"][0]["index"], 77);
    server.stop();

    // 2. The whole store rolled back to the copy taken at size 200: it is
    //    self-consistent, so the server starts, but the anchors say 400.
    std::fs::remove_dir_all(&server.data_dir).unwrap();
    copy_dir(&backup, &server.data_dir);
    // The rolled-back server must not anchor over the evidence: run it
    // without anchoring, as an operator hiding something would.
    std::fs::write(
        dir.path().join("ledgerd.toml"),
        "[anchor]\nbackend = \"none\"\n",
    )
    .unwrap();
    server.restart();
    let (code, v) = verify_json(
        &[
            "live",
            "--key",
            &key,
            "--server",
            &server.grpc,
            "--anchors",
            &anchors_arg,
        ],
        &[],
    );
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["findings"][0]["kind"], "rolled_back");
    let file = dir.path().join("rolled-back.bundle");
    std::fs::write(&file, export(&server).await).unwrap();
    let (code, v) = verify_json(
        &[
            "bundle",
            "--quiet",
            "--key",
            &key,
            "--anchors",
            &anchors_arg,
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["findings"][0]["kind"], "rolled_back");
    assert_eq!(v["findings"][0]["index"], 200);
    // Offline, without the anchors, the rolled-back log is self-consistent:
    // only the write-once copy can tell.
    let (code, _) = verify_json(
        &["bundle", "--quiet", "--key", &key, file.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0);

    // 3. A forked history signed with the right key: the rolled-back log
    //    grows again with other events, past the anchored 400.
    fill(&server, 6, 40, "fork").await;
    let (code, v) = verify_json(
        &[
            "live",
            "--key",
            &key,
            "--server",
            &server.grpc,
            "--anchors",
            &anchors_arg,
        ],
        &[],
    );
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["findings"][0]["kind"], "forked");
    let file = dir.path().join("forked.bundle");
    std::fs::write(&file, export(&server).await).unwrap();
    let (code, v) = verify_json(
        &[
            "bundle",
            "--quiet",
            "--key",
            &key,
            "--anchors",
            &anchors_arg,
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{v}");
    let forked: Vec<&serde_json::Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "forked")
        .collect();
    assert!(!forked.is_empty(), "{v}");
    // The first anchored size past the common prefix of 200 entries.
    let first = forked
        .iter()
        .map(|f| f["index"].as_u64().unwrap())
        .min()
        .unwrap();
    assert!(first > 200 && first <= 400, "{v}");
}
