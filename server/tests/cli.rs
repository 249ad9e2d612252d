//! The `ledgerd` binary's command line: usage and configuration checking.

use std::process::Command;

fn ledgerd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ledgerd"))
        .args(args)
        .output()
        .expect("run ledgerd")
}

#[test]
fn help_prints_real_usage() {
    let o = ledgerd(&["--help"]);
    assert!(o.status.success());
    let s = String::from_utf8_lossy(&o.stdout);
    for word in [
        "Usage: ledgerd",
        "--config",
        "--data-dir",
        "--listen",
        "--metrics-listen",
        "--check-config",
    ] {
        assert!(s.contains(word), "help lacks {word}: {s}");
    }
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:9999\"\n[[logs]]\nid = \"acme\"\norigin = \"ledger.example.com/acme\"\n").unwrap();
    let o = ledgerd(&[
        "--check-config",
        "--config",
        path.to_str().unwrap(),
        "--data-dir",
        "/srv/ledger",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("listen = \"127.0.0.1:9999\""), "{s}");
    assert!(s.contains("data_dir = \"/srv/ledger\""), "{s}");
    assert!(s.contains("origin = \"ledger.example.com/acme\""), "{s}");

    std::fs::write(&path, "[[logs]]\nid = \"Not Valid\"\norigin = \"x\"\n").unwrap();
    let o = ledgerd(&["--check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("logs.id"));
}
