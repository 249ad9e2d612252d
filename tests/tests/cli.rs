//! The `ledger` and `ledger-verify` command lines against a real server.

use ledger_e2e::{Server, binary};
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn ledger(server: &Server, key: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(binary("ledger"))
        .arg("--server")
        .arg(&server.grpc)
        .arg("--key")
        .arg(key)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ledger");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    assert!(
        o.status.success(),
        "ledger failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[test]
fn append_checkpoint_proof_and_consistency_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let key = server.verifier.to_string();

    // From flags.
    let o = ledger(
        &server,
        &key,
        &[
            "--json",
            "append",
            "--kind",
            "tool_call",
            "--agent",
            "billing-agent",
            "--tool",
            "sql.execute",
            "--risk",
            "high",
            "--attr",
            "rows=1200",
            "--payload",
            r#"{"query":"DELETE FROM customers"}"#,
            "--event-id",
            "cli-1",
        ],
        None,
    );
    let acks = json_lines(&o);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0]["event_id"], "cli-1");
    assert_eq!(acks[0]["index"], 0);
    assert_eq!(acks[0]["duplicate"], false);

    // A different event under cli-1 is refused, naming the id and the entry
    // that holds it; nothing is written.
    let other = r#"{"event_id":"cli-1","kind":"tool_call","agent_id":"billing-agent","tool_name":"sql.execute"}"#;
    let o = ledger(&server, &key, &["append"], Some(other));
    assert_ne!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cli-1") && err.contains("entry 0") && err.contains("already"),
        "{err}"
    );

    // JSON lines on stdin, including a true retry of an event (the same
    // event, field for field) sent before.
    let retry = r#"{"event_id":"cli-r","correlation_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","kind":"decision","agent_id":"billing-agent","occurred_at":"2026-11-24T08:00:00Z","payload":{"n":1}}"#;
    let first = json_lines(&ledger(&server, &key, &["--json", "append"], Some(retry)));
    assert_eq!(
        (first[0]["index"].as_u64(), first[0]["duplicate"].as_bool()),
        (Some(1), Some(false))
    );
    let lines = format!(
        "{retry}\n\n{}",
        concat!(
            r#"{"kind":"decision","agent_id":"billing-agent","risk_tier":"low","payload_text":"ok"}"#,
            "\n",
            r#"{"kind":"approval_denied","agent_id":"billing-agent","outcome":"denied"}"#,
            "\n"
        )
    );
    let acks = json_lines(&ledger(&server, &key, &["--json", "append"], Some(&lines)));
    assert_eq!(acks.len(), 3);
    assert_eq!(acks[0]["index"], 1);
    assert_eq!(acks[0]["duplicate"], true);
    assert_eq!(acks[1]["index"], 2);
    assert_eq!(acks[2]["index"], 3);
    // Each ack says which checkpoint covers it, or by when one will.
    for a in &acks {
        let size = a["checkpoint_size"].as_u64().unwrap();
        let due = a["checkpoint_due"].as_f64();
        assert!(
            (size > a["index"].as_u64().unwrap() && due.is_none()) || (size == 0 && due.is_some()),
            "{a}"
        );
    }

    // A bad line names the line and the field; the good line before it landed.
    let bad = concat!(
        r#"{"kind":"decision","agent_id":"a"}"#,
        "\n",
        r#"{"kind":"tool_call","agent_id":"a"}"#,
        "\n"
    );
    let o = ledger(&server, &key, &["append"], Some(bad));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("stdin line 2") && err.contains("event.tool_name"),
        "{err}"
    );

    // Checkpoint, kept as a note; the auditor's verifier accepts it.
    let note = dir.path().join("trusted.note");
    let cp = json_lines(&ledger(
        &server,
        &key,
        &["--json", "checkpoint", "-o", note.to_str().unwrap()],
        None,
    ));
    assert_eq!(cp[0]["tree_size"], 5);
    assert_eq!(cp[0]["verified"], true);
    let v = Command::new(binary("ledger-verify"))
        .args(["checkpoint", "--key", &key, note.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));

    // Proof by index and by event id.
    let p = json_lines(&ledger(&server, &key, &["--json", "proof", "2"], None));
    assert_eq!(p[0]["index"], 2);
    assert_eq!(p[0]["tree_size"], 5);
    assert_eq!(p[0]["leaf_hash"], acks[1]["leaf_hash"]);
    let p = json_lines(&ledger(
        &server,
        &key,
        &["--json", "proof", "--event-id", "cli-1"],
        None,
    ));
    assert_eq!(p[0]["index"], 0);

    // An offline proof file the auditor's verifier checks with the entry.
    let proof_file = dir.path().join("entry2.tlog-proof");
    let entry_file = dir.path().join("entry2.bin");
    let o = ledger(
        &server,
        &key,
        &[
            "proof",
            "2",
            "-o",
            proof_file.to_str().unwrap(),
            "--entry-out",
            entry_file.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = Command::new(binary("ledger-verify"))
        .args(["inclusion", "--key", &key, "--entry"])
        .arg(&entry_file)
        .arg(&proof_file)
        .output()
        .unwrap();
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    let mut other_entry = std::fs::read(&entry_file).unwrap();
    let last = other_entry.len() - 1;
    other_entry[last] ^= 1;
    std::fs::write(&entry_file, other_entry).unwrap();
    let v = Command::new(binary("ledger-verify"))
        .args(["inclusion", "--key", &key, "--entry"])
        .arg(&entry_file)
        .arg(&proof_file)
        .output()
        .unwrap();
    assert_eq!(
        v.status.code(),
        Some(1),
        "a changed entry is not in the log"
    );

    // The log grows; consistency with the kept note holds.
    let o = ledger(
        &server,
        &key,
        &[
            "append",
            "--kind",
            "kill_switch",
            "--agent",
            "billing-agent",
        ],
        None,
    );
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("→ entry 5"));
    let c = json_lines(&ledger(
        &server,
        &key,
        &["--json", "consistency", "--old", note.to_str().unwrap()],
        None,
    ));
    assert_eq!(c[0]["old_size"], 5);
    assert_eq!(c[0]["new_size"], 6);

    // A receipt: offline proof the ledger accepted an event, checked by the
    // auditor's verifier with nothing but the key.
    let receipt = dir.path().join("approval.receipt");
    let o = ledger(
        &server,
        &key,
        &[
            "append",
            "--kind",
            "approval_granted",
            "--agent",
            "billing-agent",
            "--principal",
            "alice@example.com",
            "--event-id",
            "approve-7",
            "--payload",
            r#"{"ticket":"CHG-7"}"#,
            "--receipt",
            receipt.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("receipt: entry 6"));
    let verify_receipt = |file: &std::path::Path| {
        Command::new(binary("ledger-verify"))
            .args(["--format", "json", "receipt", "--key", &key])
            .arg(file)
            .output()
            .unwrap()
    };
    let v = verify_receipt(&receipt);
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    let r: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(
        (r["index"].as_u64(), r["event_id"].as_str()),
        (Some(6), Some("approve-7"))
    );
    assert!(r["writer"].as_str().unwrap().starts_with("anonymous@"));
    // A receipt rewritten to claim another event proves nothing.
    let text = std::fs::read_to_string(&receipt).unwrap();
    let forged = dir.path().join("forged.receipt");
    std::fs::write(&forged, text.replacen("index 6", "index 5", 1)).unwrap();
    assert_eq!(verify_receipt(&forged).status.code(), Some(1));
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let extra = lines.iter().position(|l| l.starts_with("extra ")).unwrap();
    let flipped = if &lines[extra][10..11] == "A" {
        "B"
    } else {
        "A"
    };
    lines[extra].replace_range(10..11, flipped);
    std::fs::write(&forged, lines.join("\n") + "\n").unwrap();
    assert_eq!(verify_receipt(&forged).status.code(), Some(1));

    // Under someone else's key nothing verifies: exit 1, said plainly.
    let other = ledger_verify::NoteSigner::generate("ledger.local/default")
        .unwrap()
        .verifier()
        .to_string();
    let o = ledger(&server, &other, &["checkpoint"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("verification failed"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn every_binary_prints_real_usage() {
    for (bin, words) in [
        (
            "ledger",
            &["Usage: ledger", "append", "checkpoint", "proof"][..],
        ),
        ("ledger-verify", &["Usage: ledger-verify", "checkpoint"][..]),
        ("ledgerd", &["Usage: ledgerd", "--data-dir", "--listen"][..]),
    ] {
        let o = Command::new(binary(bin)).arg("--help").output().unwrap();
        assert!(o.status.success(), "{bin} --help failed");
        let s = String::from_utf8_lossy(&o.stdout);
        for w in words {
            assert!(s.contains(w), "{bin} --help lacks {w}: {s}");
        }
    }
}
