//! The audit signs off only on what a signature covers, and checks every
//! statement a bundle makes: each class of lie below is built from a real
//! export of a real server and must be named with its kind and first index.

use ledger_client::{Client, Event, EventKind};
use ledger_e2e::items::{Items, assert_first, raw_item};
use ledger_e2e::{Server, verify_json};
use ledger_verify::audit::TamperKind;
use ledger_verify::proto::{BundleEnd, EntryRecord, LedgerEntry, bundle_item::Item};
use ledger_verify::{NoteVerifier, leaf_hash};
use prost::Message;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Exports of one real log: 300 events with payloads, then entry 0's
/// payload redacted by entry 300.
struct Fixture {
    key: NoteVerifier,
    /// [0, 301): everything, the redaction entry included.
    full: Vec<u8>,
    /// [0, 50), run on to the next checkpoint: entry 0 redacted by an entry
    /// outside the range.
    range: Vec<u8>,
    /// [0, 301) without payloads.
    bare: Vec<u8>,
    dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // A runtime of its own: tests here are plain #[test]s.
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(build_fixture())
        })
        .join()
        .unwrap()
    })
}

async fn build_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_signing_every_group(dir.path());
    let c = Client::connect(&server.grpc).await.unwrap();
    let a = c.appender(Default::default());
    for r in 0..10 {
        let mut acks = Vec::new();
        for i in 0..30 {
            let e = Event::new(EventKind::ToolCall, format!("agent-{}", i % 4))
                .tool("sql.execute")
                .event_id(format!("claims-{r}-{i}"))
                .payload_json(&serde_json::json!({"round": r, "i": i}))
                .build();
            acks.push(a.send(e).await.unwrap());
        }
        for ack in acks {
            ack.await.unwrap();
        }
    }
    let ack = c.redact(0, "GDPR art. 17, ticket LEGAL-7").await.unwrap();
    assert_eq!(ack.index, 300);
    let export = |start, end, payloads| {
        let c = c.clone();
        async move {
            let mut out = Vec::new();
            c.export(start, end, payloads, &mut out, |_, _| {})
                .await
                .unwrap();
            out
        }
    };
    let full = export(0, 0, true).await;
    let range = export(0, 50, true).await;
    let bare = export(0, 0, false).await;
    let key = server.verifier.clone();
    server.stop();
    Fixture {
        key,
        full,
        range,
        bare,
        dir,
    }
}

/// Runs the CLI on `bytes`, as JSON.
fn cli(name: &str, bytes: &[u8]) -> (i32, serde_json::Value) {
    let f = fixture();
    let path: PathBuf = f.dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    verify_json(
        &[
            "bundle",
            "--quiet",
            "--key",
            &f.key.to_string(),
            path.to_str().unwrap(),
        ],
        &[],
    )
}

fn assert_cli(name: &str, bytes: &[u8], kind: &str, index: u64) {
    let (code, v) = cli(name, bytes);
    assert_eq!(code, 1, "{name}: {v}");
    assert_eq!(v["ok"], false, "{name}: {v}");
    let first = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == kind)
        .unwrap_or_else(|| panic!("{name}: no {kind} finding in {v}"));
    assert_eq!(first["index"], index, "{name}: {v}");
}

/// A new entry chained after the last one of `t`, well formed, with its
/// payload committed correctly: what a forger with write access makes.
fn fabricate(t: &mut Items, n: u64) {
    let last = t
        .body
        .iter()
        .rev()
        .find_map(|i| match i {
            Item::Entry(e) => Some(e.clone()),
            _ => None,
        })
        .unwrap();
    let template = t.entry_mut(5).clone();
    let mut prev = leaf_hash(&last.entry);
    let mut index = last.index + 1;
    for k in 0..n {
        let mut e = LedgerEntry::decode(template.entry.as_slice()).unwrap();
        e.index = index;
        e.prev_leaf_hash = prev.to_vec();
        e.event.as_mut().unwrap().event_id = format!("fabricated-{k}");
        let bytes = e.encode_to_vec();
        prev = leaf_hash(&bytes);
        t.body.push(Item::Entry(EntryRecord {
            index,
            leaf_hash: prev.to_vec(),
            entry: bytes,
            payload: template.payload.clone(),
            payload_salt: template.payload_salt.clone(),
            ..Default::default()
        }));
        index += 1;
    }
    t.header.end = index;
}

#[test]
fn genuine_exports_verify_clean_including_a_redaction_outside_the_range() {
    let f = fixture();
    for (name, bytes) in [("full", &f.full), ("range", &f.range), ("bare", &f.bare)] {
        let r = Items::parse(bytes).audit(&f.key);
        assert!(r.clean(), "{name}: {:#?}", r.findings);
        assert_eq!(r.verified_size, r.tree_size, "{name}");
    }
    let full = Items::parse(&f.full).audit(&f.key);
    assert_eq!((full.tree_size, full.payloads_redacted), (301, 1));
    assert_eq!(full.redaction_entries, 1);

    // The range export carries the redaction entry 300 as evidence.
    let range = Items::parse(&f.range);
    assert!(range.header.end >= 50 && range.header.end < 300);
    assert!(
        range
            .body
            .iter()
            .any(|i| matches!(i, Item::RedactionProof(p) if p.index == 300))
    );
    let (code, v) = cli("range.bundle", &f.range);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["payloads_redacted"], 1);
    assert_eq!(v["redaction_proofs_checked"], 1);
}

#[test]
fn entries_appended_after_the_last_signed_checkpoint_are_unsigned_entries() {
    let f = fixture();
    let mut t = Items::parse(&f.full);
    fabricate(&mut t, 3);
    let r = t.audit(&f.key);
    assert_first(&r, TamperKind::UnsignedEntries, 301, "appended entries");
    assert_eq!(r.verified_size, 301);
    assert_eq!(r.tree_size, 304);
    assert_cli("appended.bundle", &t.bytes(), "unsigned_entries", 301);

    // The human output does not say OK.
    let path = f.dir.path().join("appended-human.bundle");
    std::fs::write(&path, t.bytes()).unwrap();
    let out = std::process::Command::new(ledger_e2e::binary("ledger-verify"))
        .args(["bundle", "--quiet", "--key", &f.key.to_string()])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("TAMPERED") && !text.contains("OK"), "{text}");

    // Left with the header's old end: still named first.
    let mut t = Items::parse(&f.full);
    fabricate(&mut t, 2);
    t.header.end = 301;
    assert_first(
        &t.audit(&f.key),
        TamperKind::UnsignedEntries,
        301,
        "appended, header unchanged",
    );
}

#[test]
fn the_last_checkpoint_removed_and_the_last_entry_rewritten_is_unsigned() {
    let f = fixture();
    let mut t = Items::parse(&f.full);
    let cps = t.checkpoints();
    let (last_pos, last_size) = *cps.last().unwrap();
    assert_eq!(last_size, 301);
    let before = cps[cps.len() - 2].1;
    t.body.remove(last_pos);
    let e = t.entry_mut(300);
    let mut entry = LedgerEntry::decode(e.entry.as_slice()).unwrap();
    entry.redaction.as_mut().unwrap().reason = "routine clean-up".into();
    e.entry = entry.encode_to_vec();
    e.leaf_hash = leaf_hash(&e.entry).to_vec();
    assert_first(
        &t.audit(&f.key),
        TamperKind::UnsignedEntries,
        before,
        "last checkpoint removed",
    );
    assert_cli(
        "unsigned-tail.bundle",
        &t.bytes(),
        "unsigned_entries",
        before,
    );
}

#[test]
fn a_payload_withheld_without_a_redaction_is_named() {
    let f = fixture();
    // Payload and salt removed, not marked redacted.
    let mut t = Items::parse(&f.full);
    let e = t.entry_mut(120);
    e.payload.clear();
    e.payload_salt.clear();
    assert_first(
        &t.audit(&f.key),
        TamperKind::WithheldPayload,
        120,
        "withheld payload",
    );
    assert_cli("withheld.bundle", &t.bytes(), "withheld_payload", 120);

    // Marked redacted, but no redaction names it.
    let mut t = Items::parse(&f.full);
    let e = t.entry_mut(130);
    e.payload.clear();
    e.payload_salt.clear();
    e.payload_redacted = true;
    assert_first(
        &t.audit(&f.key),
        TamperKind::WithheldPayload,
        130,
        "false redaction mark",
    );

    // A bundle without payloads must carry none.
    let mut t = Items::parse(&f.bare);
    let full = Items::parse(&f.full);
    let p = full.at(7);
    let Item::Entry(with_payload) = &full.body[p] else {
        unreachable!()
    };
    *t.entry_mut(7) = with_payload.clone();
    assert_first(
        &t.audit(&f.key),
        TamperKind::Malformed,
        7,
        "payload in a payload-less bundle",
    );
}

#[test]
fn the_evidence_for_a_redaction_outside_the_range_is_checked() {
    let f = fixture();
    let original = Items::parse(&f.range);
    let at = original
        .body
        .iter()
        .position(|i| matches!(i, Item::RedactionProof(_)))
        .unwrap();

    // Evidence removed (and the end marker made to agree).
    let mut t = original.clone();
    t.body.remove(at);
    assert_first(
        &t.audit(&f.key),
        TamperKind::WithheldPayload,
        0,
        "evidence removed",
    );

    // Its inclusion proof altered.
    let mut t = original.clone();
    if let Item::RedactionProof(p) = &mut t.body[at] {
        p.inclusion.as_mut().unwrap().hashes[0][0] ^= 1;
    }
    assert_first(
        &t.audit(&f.key),
        TamperKind::WithheldPayload,
        0,
        "evidence with a bad inclusion proof",
    );

    // Its entry rewritten to redact another entry.
    let mut t = original.clone();
    if let Item::RedactionProof(p) = &mut t.body[at] {
        let mut e = LedgerEntry::decode(p.entry.as_slice()).unwrap();
        e.redaction.as_mut().unwrap().target_index = 3;
        p.entry = e.encode_to_vec();
    }
    let r = t.audit(&f.key);
    assert!(!r.clean());
    assert_first(&r, TamperKind::WithheldPayload, 0, "evidence rewritten");

    // Its consistency proof from another size.
    let mut t = original.clone();
    if let Item::RedactionProof(p) = &mut t.body[at] {
        p.consistency.as_mut().unwrap().old_size -= 1;
    }
    assert_first(
        &t.audit(&f.key),
        TamperKind::WithheldPayload,
        0,
        "evidence from another size",
    );

    // Evidence before the last entry.
    let mut t = original.clone();
    let proof = t.body.remove(at);
    t.body.insert(t.at(10), proof);
    assert!(
        t.audit(&f.key)
            .findings
            .iter()
            .any(|x| x.kind == TamperKind::Malformed),
        "evidence among the entries"
    );
}

#[test]
fn the_end_marker_and_what_follows_it_are_checked() {
    let f = fixture();
    let t = Items::parse(&f.full);
    let end = t.end.unwrap();
    assert_eq!(end.entries, 301);

    for (case, bad) in [
        (
            "entries",
            BundleEnd {
                entries: 300,
                ..end
            },
        ),
        (
            "checkpoints",
            BundleEnd {
                checkpoints: end.checkpoints + 1,
                ..end
            },
        ),
        (
            "redaction proofs",
            BundleEnd {
                redaction_proofs: 1,
                ..end
            },
        ),
    ] {
        let bytes = t.bytes_with_end(Some(bad));
        assert_cli(&format!("end-{case}.bundle"), &bytes, "malformed", 301);
    }
    // No end marker: cut short.
    assert_cli("no-end.bundle", &t.bytes_with_end(None), "malformed", 301);
    // Anything after it.
    let mut bytes = t.bytes();
    bytes.extend(raw_item(Item::End(end)));
    assert_cli("after-end.bundle", &bytes, "malformed", 301);
    let mut bytes = t.bytes();
    bytes.push(b'\n');
    assert_cli("trailing-byte.bundle", &bytes, "malformed", 301);
}

#[test]
fn the_headers_end_and_claims_are_checked() {
    let f = fixture();
    let mut t = Items::parse(&f.full);
    t.header.end = 302;
    assert_first(
        &t.audit(&f.key),
        TamperKind::Truncated,
        301,
        "end too large",
    );
    let mut t = Items::parse(&f.full);
    t.header.end = 300;
    assert_first(
        &t.audit(&f.key),
        TamperKind::Malformed,
        300,
        "end too small",
    );
    let mut t = Items::parse(&f.full);
    t.header.verifier_key = NoteVerifier::to_string(
        &ledger_verify::NoteSigner::generate(f.key.name())
            .unwrap()
            .verifier(),
    );
    assert_first(&t.audit(&f.key), TamperKind::Malformed, 0, "verifier key");
    let mut t = Items::parse(&f.full);
    t.header.prev_leaf_hash = vec![1; 32];
    assert_first(&t.audit(&f.key), TamperKind::Malformed, 0, "prev leaf hash");
    let mut t = Items::parse(&f.bare);
    t.header.includes_payloads = true;
    assert_first(
        &t.audit(&f.key),
        TamperKind::WithheldPayload,
        0,
        "payloads claimed but absent",
    );
}

#[test]
fn checkpoints_out_of_place_duplicated_or_missing_are_named() {
    let f = fixture();
    let original = Items::parse(&f.full);
    let cps = original.checkpoints();
    // One from the middle, with room before it.
    let &(pos, size) = cps.iter().find(|(_, s)| *s > 100 && *s < 290).unwrap();

    // Moved before the entries it covers.
    let mut t = original.clone();
    let cp = t.body.remove(pos);
    t.body.insert(t.at(size - 3), cp);
    assert_first(&t.audit(&f.key), TamperKind::Malformed, size, "moved early");

    // Moved after a later entry.
    let mut t = original.clone();
    let cp = t.body.remove(pos);
    t.body.insert(t.at(size + 1) + 1, cp);
    assert_first(&t.audit(&f.key), TamperKind::Malformed, size, "moved late");

    // Duplicated.
    let mut t = original.clone();
    let cp = t.body[pos].clone();
    t.body.insert(pos, cp);
    assert_first(&t.audit(&f.key), TamperKind::Malformed, size, "duplicated");

    // Missing, against the end marker's count.
    let mut t = original.clone();
    t.body.remove(pos);
    let bytes = t.bytes_with_end(original.end);
    assert_cli("missing-checkpoint.bundle", &bytes, "malformed", 301);
    // Missing with the count made to agree: still a true statement about
    // the log (every checkpoint left is genuine, every entry covered).
    let r = t.audit(&f.key);
    assert!(r.clean(), "{:#?}", r.findings);
}

#[test]
fn convenience_fields_are_checked_against_what_they_restate() {
    let f = fixture();
    let original = Items::parse(&f.full);

    let mut t = original.clone();
    t.entry_mut(42).index = 43;
    assert_first(&t.audit(&f.key), TamperKind::Malformed, 42, "record index");

    let mut t = original.clone();
    t.entry_mut(42).leaf_hash[0] ^= 0x80;
    assert_first(&t.audit(&f.key), TamperKind::Malformed, 42, "leaf hash");

    let mut t = original.clone();
    t.entry_mut(42).inclusion = Some(Default::default());
    assert_first(&t.audit(&f.key), TamperKind::Malformed, 42, "inclusion");

    let (pos, size) = original.checkpoints()[3];
    for field in ["tree_size", "root_hash", "origin"] {
        let mut t = original.clone();
        if let Item::Checkpoint(c) = &mut t.body[pos] {
            match field {
                "tree_size" => c.tree_size += 1,
                "root_hash" => c.root_hash[5] ^= 1,
                _ => c.origin.push('x'),
            }
        }
        assert_first(&t.audit(&f.key), TamperKind::Malformed, size, field);
    }
}

#[test]
fn structurally_broken_files_are_malformed_findings_not_errors() {
    let f = fixture();
    let magic = ledger_verify::bundle::MAGIC;
    let mut oversized = magic.to_vec();
    oversized.extend([0xff, 0xff, 0xff, 0xff, 0x7f]);
    let mut no_header = magic.to_vec();
    no_header.extend(raw_item(Item::End(BundleEnd::default())));
    let mut garbage_item = magic.to_vec();
    garbage_item.extend([5, 0xff, 0xff, 0xff, 0xff, 0xff]);
    for (name, bytes) in [
        ("empty", Vec::new()),
        ("bad-magic", b"agent-ledger-bundle v2\n".to_vec()),
        ("magic-only", magic.to_vec()),
        ("oversized", oversized),
        ("no-header", no_header),
        ("garbage-item", garbage_item),
    ] {
        assert_cli(&format!("{name}.bundle"), &bytes, "malformed", 0);
    }
    // Cut in the middle: named where the reading stopped.
    let (code, v) = cli("half.bundle", &f.full[..f.full.len() / 2]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["findings"][0]["kind"], "malformed", "{v}");
    assert!(v["findings"][0]["index"].as_u64().unwrap() > 0, "{v}");
    // A file that is not there is an I/O error: exit 2.
    let (code, _) = {
        let out = std::process::Command::new(ledger_e2e::binary("ledger-verify"))
            .args(["bundle", "--quiet", "--key", &f.key.to_string()])
            .arg(f.dir.path().join("nowhere.bundle"))
            .output()
            .unwrap();
        (out.status.code(), ())
    };
    assert_eq!(code, Some(2));
}
