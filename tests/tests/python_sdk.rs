//! The Python SDK's pytest suite (client/python/tests), run against this
//! workspace's ledgerd: appends, tool calls, the decorator, the async
//! client, resend after kill -9, offline checkpoint and proof checks, and
//! the generated stubs against the proto.

use std::process::Command;

#[test]
fn the_python_sdk_test_suite_passes() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../client/python");
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(dir)
        .env("LEDGERD_BIN", ledger_e2e::binary("ledgerd"))
        .output()
        .expect("python3 with pytest, grpcio and grpcio-tools (.ci/run installs them)");
    assert!(
        out.status.success(),
        "pytest failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
