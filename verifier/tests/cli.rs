//! The `ledger-verify` binary: real usage, the three verdicts and exit codes.

use ledger_verify::checkpoint::Checkpoint;
use ledger_verify::hash::leaf_hash;
use ledger_verify::note::NoteSigner;
use ledger_verify::tlog_proof::TlogProof;
use ledger_verify::tree::{MemoryTree, consistency_proof, inclusion_proof};
use std::process::{Command, Output};

fn verify(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ledger-verify"))
        .args(args)
        .output()
        .expect("run ledger-verify")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn help_prints_real_usage() {
    let o = verify(&["--help"]);
    assert!(o.status.success());
    let s = stdout(&o);
    for word in [
        "Usage: ledger-verify",
        "checkpoint",
        "proof",
        "consistency",
        "--format",
    ] {
        assert!(s.contains(word), "help lacks {word}: {s}");
    }
    assert_eq!(verify(&["no-such-command"]).status.code(), Some(2));
}

#[test]
fn checkpoint_proof_and_consistency_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let signer = NoteSigner::from_seed("test.example/log", &[9; 32]).unwrap();
    let key = signer.verifier().to_string();
    let mut tree = MemoryTree::new();
    // Stored entries state their own index.
    let entries: Vec<Vec<u8>> = (0..20u64)
        .map(|i| {
            prost::Message::encode_to_vec(&ledger_verify::proto::LedgerEntry {
                index: i,
                writer: format!("w{i}"),
                ..Default::default()
            })
        })
        .collect();
    for e in &entries {
        tree.push(leaf_hash(e));
    }
    let root_at = |n: u64| ledger_verify::tree::root_at(&tree, n).unwrap();
    let cp7 = Checkpoint::new("test.example/log", 7, root_at(7))
        .sign(&signer)
        .unwrap();
    let cp20 = Checkpoint::new("test.example/log", 20, root_at(20))
        .sign(&signer)
        .unwrap();
    std::fs::write(p("cp7"), &cp7).unwrap();
    std::fs::write(p("cp20"), &cp20).unwrap();

    // Checkpoint: good, then tampered.
    let o = verify(&["checkpoint", "--key", &key, &p("cp7")]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("size 7"));
    std::fs::write(p("bad"), cp7.replacen("\n7\n", "\n6\n", 1)).unwrap();
    let o = verify(&["--format", "json", "checkpoint", "--key", &key, &p("bad")]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["ok"], false);

    // Inclusion proof of entry 5 at size 20, from the entry bytes.
    let proof = TlogProof {
        extra: None,
        index: 5,
        proof: inclusion_proof(&tree, 5, 20).unwrap(),
        checkpoint_note: cp20.clone(),
    };
    std::fs::write(p("proof"), proof.to_text()).unwrap();
    std::fs::write(p("entry5"), &entries[5]).unwrap();
    std::fs::write(p("entry6"), &entries[6]).unwrap();
    assert_eq!(
        verify(&["proof", "--key", &key, "--entry", &p("entry5"), &p("proof")])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        verify(&["proof", "--key", &key, "--entry", &p("entry6"), &p("proof")])
            .status
            .code(),
        Some(1)
    );
    // An entry whose bytes say another index than the proof's: refused even
    // if its leaf hash were in the tree there.
    let liar = prost::Message::encode_to_vec(&ledger_verify::proto::LedgerEntry {
        index: 6,
        ..Default::default()
    });
    let mut t2 = MemoryTree::new();
    for (i, e) in entries.iter().enumerate() {
        t2.push(leaf_hash(if i == 5 { &liar } else { e }));
    }
    let cp_liar = Checkpoint::new("test.example/log", 20, t2.root())
        .sign(&signer)
        .unwrap();
    let liar_proof = TlogProof {
        extra: None,
        index: 5,
        proof: inclusion_proof(&t2, 5, 20).unwrap(),
        checkpoint_note: cp_liar,
    };
    std::fs::write(p("liar-proof"), liar_proof.to_text()).unwrap();
    std::fs::write(p("liar"), &liar).unwrap();
    let o = verify(&[
        "proof",
        "--key",
        &key,
        "--entry",
        &p("liar"),
        &p("liar-proof"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("index 6"), "{}", stdout(&o));
    // The same proof with only the leaf hash proves a hash, and says so.
    let o = verify(&[
        "proof",
        "--key",
        &key,
        "--leaf-hash",
        &leaf_hash(&liar).to_hex(),
        &p("liar-proof"),
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("leaf hash"), "{}", stdout(&o));
    // A proof file that does not parse is a rejection, not a usage error.
    std::fs::write(p("garbled"), "c2sp.org/tlog-proof@v1\nindex x\n\n").unwrap();
    assert_eq!(
        verify(&[
            "proof",
            "--key",
            &key,
            "--leaf-hash",
            &leaf_hash(&liar).to_hex(),
            &p("garbled")
        ])
        .status
        .code(),
        Some(1)
    );

    // Consistency 7 -> 20, and the same proof against a forked size-7 tree.
    let cproof: String = consistency_proof(&tree, 7, 20)
        .unwrap()
        .iter()
        .map(|h| {
            use base64::Engine;
            format!(
                "{}\n",
                base64::engine::general_purpose::STANDARD.encode(h.0)
            )
        })
        .collect();
    std::fs::write(p("cproof"), cproof).unwrap();
    let args = [
        "consistency",
        "--key",
        &key,
        "--old",
        &p("cp7"),
        "--new",
        &p("cp20"),
        "--proof",
        &p("cproof"),
    ];
    assert_eq!(verify(&args).status.code(), Some(0));
    let mut forked = MemoryTree::new();
    for i in 0..7u8 {
        forked.push(leaf_hash(&[i ^ 0xff]));
    }
    let fork7 = Checkpoint::new("test.example/log", 7, forked.root())
        .sign(&signer)
        .unwrap();
    std::fs::write(p("fork7"), fork7).unwrap();
    let args = [
        "consistency",
        "--key",
        &key,
        "--old",
        &p("fork7"),
        "--new",
        &p("cp20"),
        "--proof",
        &p("cproof"),
    ];
    let o = verify(&args);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("REJECTED"));
    // A proof file that is not a proof: rejected (1), not a usage error.
    std::fs::write(p("cproof-bad"), "not base64!\n").unwrap();
    let o = verify(&[
        "consistency",
        "--key",
        &key,
        "--old",
        &p("cp7"),
        "--new",
        &p("cp20"),
        "--proof",
        &p("cproof-bad"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));

    // An anchor store holding none of the log's anchors vouches for
    // nothing: a finding (exit 1), not a clean result.
    std::fs::create_dir_all(p("no-anchors")).unwrap();
    let o = verify(&[
        "--format",
        "json",
        "anchors",
        "--key",
        &key,
        &p("no-anchors"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["findings"][0]["kind"], "truncated");

    // I/O error: exit 2.
    assert_eq!(
        verify(&["checkpoint", "--key", &key, &p("missing")])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        verify(&["checkpoint", "--key", "not-a-key", &p("cp7")])
            .status
            .code(),
        Some(2)
    );
}
