//! The `ledger` command line without a server: usage, and clear failures.
//! (Its commands against a real server are tested in `tests/`.)

use std::process::Command;

fn ledger(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(args)
        .env_remove("LEDGER_SERVER")
        .env_remove("LEDGER_KEY")
        .output()
        .expect("run ledger")
}

#[test]
fn help_lists_every_command() {
    let o = ledger(&["--help"]);
    assert!(o.status.success());
    let s = String::from_utf8_lossy(&o.stdout);
    for cmd in [
        "append",
        "checkpoint",
        "proof",
        "timeline",
        "events",
        "tail",
        "export",
        "consistency",
        "--json",
        "--key",
    ] {
        assert!(s.contains(cmd), "--help lacks {cmd}: {s}");
    }
}

#[test]
fn an_unreachable_server_is_a_clear_error_with_exit_2() {
    // Port 1 on loopback: nothing listens there.
    let o = ledger(&["--server", "http://127.0.0.1:1", "checkpoint"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot reach the ledger at http://127.0.0.1:1"),
        "{err}"
    );
}

#[test]
fn a_malformed_key_is_refused_before_anything_is_sent() {
    let o = ledger(&["--key", "not-a-key", "checkpoint"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--key"));
}
