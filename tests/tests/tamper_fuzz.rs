//! The tamper fuzzer: thousands of random alterations of real exports,
//! checkpoints, tlog-proof files and anchors, each of which must be found
//! or mean exactly what the original meant; and arbitrary bytes, which must
//! never make the verifier panic.
//!
//! The seed is printed; `LEDGER_FUZZ_SEED=<seed>` replays a run and
//! `LEDGER_FUZZ_SCALE=<n>` multiplies the number of cases.
//!
//! "Means what the original meant" is judged on the decoded items, not the
//! bytes: a clean verdict must come with the same header (but for
//! `created_at`, which nothing signs and the format documents as
//! informative), the same entries, payloads and redaction proofs in the same
//! order, and checkpoints that are a subsequence of the original's (a bundle
//! that leaves out an intermediate checkpoint, with an end marker that says
//! so, still states only true things: every checkpoint left is genuine and
//! every entry covered).

use fastrand::Rng;
use ledger_client::{Client, Event, EventKind};
use ledger_e2e::Server;
use ledger_e2e::items::Items;
use ledger_proto::v1::GetInclusionProofRequest;
use ledger_proto::v1::get_inclusion_proof_request::Leaf;
use ledger_verify::anchors::{Anchor, check_anchors};
use ledger_verify::audit::audit_bundle;
use ledger_verify::entry::{SALT_LEN, payload_commitment};
use ledger_verify::proto::{BundleHeader, EntryRecord, LedgerEntry, bundle_item::Item};
use ledger_verify::tlog_proof::TlogProof;
use ledger_verify::{Checkpoint, Hash, NoteVerifier, leaf_hash, open_checkpoint};
use prost::Message;
use std::time::{Duration, Instant};

/// Whole-run cap: the fuzzer stops early, saying so, rather than run long
/// on a slow machine.
const TIME_BUDGET: Duration = Duration::from_secs(120);

fn scale() -> usize {
    std::env::var("LEDGER_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

struct Material {
    key: NoteVerifier,
    bundles: Vec<(&'static str, Vec<u8>)>,
    /// A tlog-proof file and the leaf hash it proves.
    proof: (String, Hash),
    anchors: Vec<Anchor>,
}

async fn material(dir: &std::path::Path) -> Material {
    let (mut server, anchor_dir) = Server::start_with_dir_anchors(dir);
    let c = Client::connect(&server.grpc).await.unwrap();
    let a = c.appender(Default::default());
    for r in 0..4 {
        let mut acks = Vec::new();
        for i in 0..15 {
            let mut e = Event::new(EventKind::ToolCall, format!("agent-{}", i % 3))
                .tool("fs.write")
                .event_id(format!("fuzz-{r}-{i}"));
            if i % 5 != 4 {
                e = e.payload_json(&serde_json::json!({"round": r, "i": i}));
            }
            acks.push(a.send(e.build()).await.unwrap());
        }
        for ack in acks {
            ack.await.unwrap();
        }
    }
    c.redact(2, "fuzz: erase entry 2").await.unwrap();
    let mut bundles = Vec::new();
    for (name, start, end, payloads) in [
        ("full", 0, 0, true),
        ("range", 0, 20, true),
        ("middle", 17, 40, false),
    ] {
        let mut out = Vec::new();
        c.export(start, end, payloads, &mut out, |_, _| {})
            .await
            .unwrap();
        bundles.push((name, out));
    }
    let r = server
        .endpoint
        .proofs()
        .await
        .get_inclusion_proof(GetInclusionProofRequest {
            leaf: Some(Leaf::Index(33)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let p = r.proof.unwrap();
    let proof = TlogProof {
        extra: None,
        index: p.leaf_index,
        proof: p
            .hashes
            .iter()
            .map(|h| Hash::from_slice(h).unwrap())
            .collect(),
        checkpoint_note: r.checkpoint.unwrap().note,
    };
    let leaf = Hash::from_slice(&r.leaf_hash).unwrap();
    let key = server.verifier.clone();
    server.stop(); // Anchors the final checkpoint.
    let mut anchors = Vec::new();
    for e in walk(&anchor_dir) {
        let name = e.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("checkpoint.") {
            anchors.push(Anchor {
                key: e.display().to_string(),
                note: std::fs::read(&e).unwrap(),
                written_at: None,
            });
        }
    }
    assert!(!anchors.is_empty(), "no anchors written");
    Material {
        key,
        bundles,
        proof: (proof.to_text(), leaf),
        anchors,
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn flip(rng: &mut Rng, bytes: &mut [u8]) {
    if !bytes.is_empty() {
        let i = rng.usize(..bytes.len());
        bytes[i] ^= 1 << rng.u8(..8);
    }
}

/// Flips a bit of a character of `s`, keeping it text.
fn flip_text(rng: &mut Rng, s: &mut String) {
    let mut b = std::mem::take(s).into_bytes();
    flip(rng, &mut b);
    *s = String::from_utf8_lossy(&b).into_owned();
}

/// One alteration of one field of an item (or of the header).
fn alter_field(rng: &mut Rng, t: &mut Items) -> String {
    if t.body.is_empty() || rng.u8(..8) == 0 {
        let h: &mut BundleHeader = &mut t.header;
        return match rng.u8(..9) {
            0 => {
                h.start = h.start.wrapping_add(rng.u64(1..3));
                "header.start".into()
            }
            1 => {
                h.end = if rng.bool() {
                    h.end + 1
                } else {
                    h.end.saturating_sub(1)
                };
                "header.end".into()
            }
            2 => match h.prefix_hashes.first_mut() {
                Some(p) => {
                    flip(rng, p);
                    "header.prefix_hashes[0]".into()
                }
                None => {
                    h.prefix_hashes.push(vec![7; 32]);
                    "header.prefix_hashes added".into()
                }
            },
            3 => {
                flip(rng, &mut h.prev_leaf_hash);
                "header.prev_leaf_hash".into()
            }
            4 => {
                h.includes_payloads = !h.includes_payloads;
                "header.includes_payloads".into()
            }
            5 => {
                flip_text(rng, &mut h.verifier_key);
                "header.verifier_key".into()
            }
            6 => {
                flip_text(rng, &mut h.origin);
                "header.origin".into()
            }
            7 => {
                if let Some(ts) = h.created_at.as_mut() {
                    ts.seconds -= rng.i64(1..1_000_000);
                }
                "header.created_at".into()
            }
            _ => {
                h.prefix_hashes.pop();
                "header.prefix_hashes dropped".into()
            }
        };
    }
    let i = rng.usize(..t.body.len());
    match &mut t.body[i] {
        Item::Entry(e) => match rng.u8(..8) {
            0 => {
                flip(rng, &mut e.entry);
                format!("entry bytes of item {i}")
            }
            1 => {
                flip(rng, &mut e.payload);
                format!("payload of item {i}")
            }
            2 => {
                flip(rng, &mut e.payload_salt);
                format!("salt of item {i}")
            }
            3 => {
                flip(rng, &mut e.leaf_hash);
                format!("leaf_hash of item {i}")
            }
            4 => {
                e.index = e.index.wrapping_add(rng.u64(1..4));
                format!("index of item {i}")
            }
            5 => {
                e.payload_redacted = !e.payload_redacted;
                format!("payload_redacted of item {i}")
            }
            6 => {
                e.inclusion = Some(ledger_verify::proto::InclusionProof {
                    leaf_index: e.index,
                    ..Default::default()
                });
                format!("inclusion proof added to item {i}")
            }
            _ => {
                e.payload.clear();
                e.payload_salt.clear();
                format!("payload and salt of item {i} removed")
            }
        },
        Item::Checkpoint(c) => match rng.u8(..4) {
            0 => {
                flip_text(rng, &mut c.note);
                format!("note of checkpoint item {i}")
            }
            1 => {
                c.tree_size = c.tree_size.wrapping_add(rng.u64(1..3));
                format!("tree_size of checkpoint item {i}")
            }
            2 => {
                flip(rng, &mut c.root_hash);
                format!("root_hash of checkpoint item {i}")
            }
            _ => {
                flip_text(rng, &mut c.origin);
                format!("origin of checkpoint item {i}")
            }
        },
        Item::RedactionProof(p) => match rng.u8(..5) {
            0 => {
                flip(rng, &mut p.entry);
                format!("entry of redaction proof {i}")
            }
            1 => {
                p.index = p.index.wrapping_add(1);
                format!("index of redaction proof {i}")
            }
            2 => {
                let inc = p.inclusion.get_or_insert_default();
                match inc.hashes.first_mut() {
                    Some(h) => flip(rng, h),
                    None => inc.tree_size += 1,
                }
                format!("inclusion of redaction proof {i}")
            }
            3 => {
                let con = p.consistency.get_or_insert_default();
                match con.hashes.first_mut() {
                    Some(h) => flip(rng, h),
                    None => con.old_size += 1,
                }
                format!("consistency of redaction proof {i}")
            }
            _ => {
                flip_text(rng, &mut p.checkpoint.get_or_insert_default().note);
                format!("checkpoint of redaction proof {i}")
            }
        },
        Item::Header(_) | Item::End(_) => "nothing".into(),
    }
}

/// Re-commits the payload of entry item `i` (new payload, salt and
/// commitment) and re-chains every entry after it: a careful forger.
fn recommit(rng: &mut Rng, t: &mut Items) -> String {
    let entries: Vec<usize> = (0..t.body.len())
        .filter(|&p| matches!(&t.body[p], Item::Entry(_)))
        .collect();
    if entries.is_empty() {
        return "nothing".into();
    }
    let from = entries[rng.usize(..entries.len())];
    let mut prev: Option<Hash> = None;
    let mut index = 0;
    for &p in entries.iter().filter(|&&p| p >= from) {
        let Item::Entry(rec) = &mut t.body[p] else {
            unreachable!()
        };
        let Ok(mut e) = LedgerEntry::decode(rec.entry.as_slice()) else {
            return "nothing".into();
        };
        if p == from {
            index = e.index;
            let salt = [rng.u8(..); SALT_LEN];
            let payload = format!("{{\"forged\":{}}}", rng.u32(..)).into_bytes();
            e.payload_commitment = payload_commitment(&salt, &payload).to_vec();
            e.payload_size = payload.len() as u64;
            rec.payload = payload;
            rec.payload_salt = salt.to_vec();
            rec.payload_redacted = false;
        }
        if let Some(h) = prev {
            e.prev_leaf_hash = h.to_vec();
        }
        rec.entry = e.encode_to_vec();
        let leaf = leaf_hash(&rec.entry);
        rec.leaf_hash = leaf.to_vec();
        prev = Some(leaf);
    }
    format!("payload of entry {index} re-committed, the chain after it rebuilt")
}

/// Well-formed entries chained after the last one.
fn fabricate(rng: &mut Rng, t: &mut Items) -> String {
    let Some(Item::Entry(last)) = t
        .body
        .iter()
        .rev()
        .find(|i| matches!(i, Item::Entry(_)))
        .cloned()
    else {
        return "nothing".into();
    };
    let Ok(mut e) = LedgerEntry::decode(last.entry.as_slice()) else {
        return "nothing".into();
    };
    let n = rng.u64(1..4);
    let mut prev = leaf_hash(&last.entry);
    for k in 0..n {
        e.index += 1;
        e.prev_leaf_hash = prev.to_vec();
        e.payload_commitment.clear();
        e.payload_size = 0;
        e.redaction = None;
        let bytes = e.encode_to_vec();
        prev = leaf_hash(&bytes);
        let at = if rng.bool() {
            t.body.len()
        } else {
            // Before any trailing redaction proofs.
            t.body
                .iter()
                .position(|i| matches!(i, Item::RedactionProof(_)))
                .unwrap_or(t.body.len())
        };
        t.body.insert(
            at,
            Item::Entry(EntryRecord {
                index: e.index,
                leaf_hash: prev.to_vec(),
                entry: bytes,
                ..Default::default()
            }),
        );
        let _ = k;
    }
    if rng.bool() {
        t.header.end = e.index + 1;
    }
    format!("{n} entries fabricated after the last one")
}

/// One random alteration; returns the altered file and what was done.
fn mutate(rng: &mut Rng, original: &[u8], parsed: &Items, donor: &Items) -> (Vec<u8>, String) {
    let mut t = parsed.clone();
    let what = match rng.u8(..14) {
        0 => {
            let mut b = original.to_vec();
            let n = rng.usize(1..4);
            for _ in 0..n {
                flip(rng, &mut b);
            }
            return (b, format!("{n} bit(s) flipped in the file"));
        }
        1 => {
            let mut b = original.to_vec();
            let at = rng.usize(..b.len());
            b.truncate(at);
            return (b, format!("cut at byte {at}"));
        }
        2 => {
            let mut b = original.to_vec();
            let n = rng.usize(1..64);
            b.extend((0..n).map(|_| rng.u8(..)));
            return (b, format!("{n} random bytes appended"));
        }
        3 => {
            let mut b = original.to_vec();
            let at = rng.usize(..b.len());
            let n = rng.usize(1..16).min(b.len() - at);
            b.drain(at..at + n);
            return (b, format!("{n} bytes removed at {at}"));
        }
        4..=6 => alter_field(rng, &mut t),
        7 if !t.body.is_empty() => {
            let i = rng.usize(..t.body.len());
            t.body.remove(i);
            format!("item {i} dropped")
        }
        8 if !t.body.is_empty() => {
            let i = rng.usize(..t.body.len());
            let j = rng.usize(..=t.body.len());
            let item = t.body[i].clone();
            t.body.insert(j, item);
            format!("item {i} duplicated at {j}")
        }
        9 if t.body.len() > 1 => {
            let i = rng.usize(..t.body.len());
            let item = t.body.remove(i);
            let j = rng.usize(..=t.body.len());
            t.body.insert(j, item);
            format!("item {i} moved to {j}")
        }
        10 if !donor.body.is_empty() => {
            let i = rng.usize(..donor.body.len());
            let j = rng.usize(..=t.body.len());
            t.body.insert(j, donor.body[i].clone());
            format!("item {i} of another bundle inserted at {j}")
        }
        11 => fabricate(rng, &mut t),
        12 => recommit(rng, &mut t),
        _ => {
            let a = rng.usize(..t.body.len().max(1));
            if a + 1 < t.body.len() {
                t.body.swap(a, a + 1);
            }
            format!("items {a} and {} swapped", a + 1)
        }
    };
    let bytes = match rng.u8(..4) {
        0 => t.bytes_with_end(parsed.end),
        _ => t.bytes(),
    };
    (bytes, what)
}

/// True when `m` states only what `o` states (see the module docs).
fn same_meaning(o: &Items, m: &Items) -> bool {
    let strip = |h: &BundleHeader| BundleHeader {
        created_at: None,
        ..h.clone()
    };
    if strip(&o.header) != strip(&m.header) {
        return false;
    }
    let non_cp = |t: &Items| -> Vec<Item> {
        t.body
            .iter()
            .filter(|i| !matches!(i, Item::Checkpoint(_)))
            .cloned()
            .collect()
    };
    if non_cp(o) != non_cp(m) {
        return false;
    }
    // m's body is a subsequence of o's.
    let mut it = o.body.iter();
    m.body.iter().all(|x| it.any(|y| y == x))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_alterations_of_real_material_are_found_or_mean_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let m = material(dir.path()).await;
    let seed = ledger_e2e::fuzz_seed("tamper fuzzer");
    let mut rng = Rng::with_seed(seed);
    let started = Instant::now();
    let per_bundle = 1500 * scale();
    let (mut found, mut same, mut cases) = (0u64, 0u64, 0u64);
    let parsed: Vec<Items> = m.bundles.iter().map(|(_, b)| Items::parse(b)).collect();
    for (k, (name, original)) in m.bundles.iter().enumerate() {
        let r = audit_bundle(original.as_slice(), &m.key, |_, _| {}).unwrap();
        assert!(r.clean(), "{name}: the genuine export: {:#?}", r.findings);
        let donor = &parsed[(k + 1) % parsed.len()];
        for n in 0..per_bundle {
            if started.elapsed() > TIME_BUDGET {
                println!("time budget reached after {cases} cases");
                break;
            }
            let (bytes, what) = mutate(&mut rng, original, &parsed[k], donor);
            cases += 1;
            let r = audit_bundle(bytes.as_slice(), &m.key, |_, _| {}).unwrap();
            if !r.clean() {
                found += 1;
                continue;
            }
            same += 1;
            let altered = Items::try_parse(&bytes).unwrap_or_else(|e| {
                panic!("seed {seed}, {name} case {n} ({what}): passed but does not parse: {e}")
            });
            assert!(
                same_meaning(&parsed[k], &altered),
                "seed {seed}, {name} case {n} ({what}): passed the audit but says something else"
            );
        }
    }
    println!("bundles: {cases} altered files, {found} found, {same} of the same meaning");
    assert!(
        found > cases * 3 / 4,
        "too few alterations found: {found}/{cases}"
    );

    // Arbitrary bytes, with and without the magic line: never a panic.
    let magic = ledger_verify::bundle::MAGIC;
    for _ in 0..500 * scale() {
        let n = rng.usize(..512);
        let mut b: Vec<u8> = if rng.bool() {
            magic.to_vec()
        } else {
            Vec::new()
        };
        b.extend((0..n).map(|_| rng.u8(..)));
        let r = audit_bundle(b.as_slice(), &m.key, |_, _| {}).unwrap();
        assert!(!r.clean(), "seed {seed}: random bytes passed the audit");
    }

    // Checkpoints: a note that still opens says what the original said.
    let note = m.proof.0.split_once("\n\n").unwrap().1.to_string();
    let want = open_checkpoint(&note, &m.key).unwrap();
    for n in 0..1000 * scale() {
        let (altered, what) = mutate_text(&mut rng, &note);
        if let Ok(cp) = open_checkpoint(&altered, &m.key) {
            assert_eq!(cp, want, "seed {seed}, checkpoint case {n} ({what})");
        }
    }

    // tlog-proof files: one that verifies proves the same entry in the same
    // checkpoint (its `extra` line is not covered, by the spec).
    let (text, leaf) = &m.proof;
    let genuine = TlogProof::parse(text).unwrap();
    let want_cp = genuine.verify(&m.key, leaf).unwrap();
    for n in 0..1000 * scale() {
        let (altered, what) = mutate_text(&mut rng, text);
        if let Ok(p) = TlogProof::parse(&altered)
            && let Ok(cp) = p.verify(&m.key, leaf)
        {
            assert_eq!(
                (p.index, &p.proof, cp.clone()),
                (genuine.index, &genuine.proof, want_cp.clone()),
                "seed {seed}, tlog-proof case {n} ({what})"
            );
        }
    }

    // Anchors: a set that checks clean holds the original checkpoints.
    let clean = check_anchors(&m.anchors, &m.key);
    assert!(clean.findings.is_empty(), "{:?}", clean.findings);
    for n in 0..500 * scale() {
        let mut set = m.anchors.clone();
        let i = rng.usize(..set.len());
        let what = match rng.u8(..3) {
            0 => {
                flip(&mut rng, &mut set[i].note);
                "note bits"
            }
            1 => {
                let mut k = std::mem::take(&mut set[i].key);
                flip_text(&mut rng, &mut k);
                set[i].key = k;
                "object key"
            }
            _ => {
                let text = String::from_utf8_lossy(&set[i].note).into_owned();
                set[i].note = mutate_text(&mut rng, &text).0.into_bytes();
                "note text"
            }
        };
        let c = check_anchors(&set, &m.key);
        if c.findings.is_empty() {
            assert_eq!(
                c.checkpoints, clean.checkpoints,
                "seed {seed}, anchor case {n} ({what})"
            );
        }
    }
    // Random text never opens.
    for _ in 0..300 {
        let s: String = (0..rng.usize(..300))
            .map(|_| {
                rng.choice(['a', '\n', ' ', '+', '\u{2014}', '0', '='])
                    .unwrap()
            })
            .collect();
        assert!(open_checkpoint(&s, &m.key).is_err());
        let _ = TlogProof::parse(&s).map(|p| p.verify(&m.key, leaf));
        let _ = Checkpoint::parse(&s);
    }
}

/// One alteration of a text: a flipped bit, a removed, inserted or doubled
/// character or line, two lines swapped.
fn mutate_text(rng: &mut Rng, text: &str) -> (String, &'static str) {
    let mut s = text.to_string();
    let what = match rng.u8(..6) {
        0 => {
            flip_text(rng, &mut s);
            "bit flipped"
        }
        1 => {
            let chars: Vec<char> = s.chars().collect();
            let i = rng.usize(..chars.len());
            s = chars
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, c)| c)
                .collect();
            "character removed"
        }
        2 => {
            let chars: Vec<char> = s.chars().collect();
            let i = rng.usize(..=chars.len());
            let c = rng.choice(['\n', ' ', 'A', '0', '=', '+']).unwrap();
            s = chars[..i]
                .iter()
                .chain(std::iter::once(&c))
                .chain(chars[i..].iter())
                .collect();
            "character inserted"
        }
        3 => {
            let mut lines: Vec<&str> = text.split('\n').collect();
            let i = rng.usize(..lines.len());
            lines.insert(i, lines[i]);
            s = lines.join("\n");
            "line doubled"
        }
        4 => {
            let mut lines: Vec<&str> = text.split('\n').collect();
            let i = rng.usize(..lines.len());
            lines.remove(i);
            s = lines.join("\n");
            "line removed"
        }
        _ => {
            let mut lines: Vec<&str> = text.split('\n').collect();
            if lines.len() > 1 {
                let i = rng.usize(..lines.len() - 1);
                lines.swap(i, i + 1);
            }
            s = lines.join("\n");
            "lines swapped"
        }
    };
    (s, what)
}
