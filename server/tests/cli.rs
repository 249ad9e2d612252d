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

/// The configurations shipped in deploy/ (container, compose, Kubernetes)
/// load and validate.
#[test]
fn the_deploy_configurations_load() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let mut configs = vec![
        (
            "deploy/ledgerd.toml",
            std::fs::read_to_string(root.join("deploy/ledgerd.toml")).unwrap(),
        ),
        (
            "deploy/compose/ledgerd.toml",
            std::fs::read_to_string(root.join("deploy/compose/ledgerd.toml")).unwrap(),
        ),
    ];
    // The ConfigMap's embedded file: the block under `ledgerd.toml: |`.
    let cm = std::fs::read_to_string(root.join("deploy/k8s/configmap.yaml")).unwrap();
    let block: String = cm
        .split_once("ledgerd.toml: |\n")
        .expect("configmap holds ledgerd.toml")
        .1
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    configs.push(("deploy/k8s/configmap.yaml", block));
    for (name, text) in configs {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, &text).unwrap();
        let o = ledgerd(&["--check-config", "--config", path.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let effective = String::from_utf8_lossy(&o.stdout);
        assert!(effective.contains("[anchor]"), "{name}: {effective}");
    }
}

#[test]
fn generate_key_prints_a_signing_key_for_the_origin() {
    let o = ledgerd(&["--generate-key", "ledger.example.com/shard-0"]);
    assert!(o.status.success());
    let private = String::from_utf8_lossy(&o.stdout);
    let signer: ledger_verify::NoteSigner = private.trim().parse().unwrap();
    assert_eq!(signer.name(), "ledger.example.com/shard-0");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("verifier key: {}", signer.verifier())),
        "{err}"
    );
}

/// docs/configuration.md is what `ledgerd --config-reference` generates from
/// the configuration types: regenerate it when they change.
#[test]
fn the_configuration_reference_is_up_to_date() {
    let o = ledgerd(&["--config-reference"]);
    assert!(o.status.success());
    let generated = String::from_utf8(o.stdout).unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(
        generated == committed,
        "docs/configuration.md is stale: run `ledgerd --config-reference > docs/configuration.md`"
    );
    for key in [
        "data_dir",
        "interval_secs",
        "retention_days",
        "queue_bytes",
        "key_file",
    ] {
        assert!(
            generated.contains(&format!("`{key}`")),
            "{key} undocumented"
        );
    }
}
