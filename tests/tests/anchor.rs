//! Anchoring to write-once storage, against a real server and a real S3 API
//! (moto on 127.0.0.1): anchors appear and are locked, cannot be deleted or
//! overwritten, survive an S3 outage, and the auditor's verifier holds the
//! log to them.

use ledger_client::{Client, Event, EventKind};
use ledger_e2e::{Outage, S3Server, Server, assert_locked, verify_json as verify};
use std::time::{Duration, Instant};

async fn append(server: &Server, n: usize, tag: &str) {
    let c = Client::connect(&server.grpc).await.unwrap();
    let a = c.appender(Default::default());
    let mut acks = Vec::new();
    for i in 0..n {
        let e = Event::new(EventKind::ToolCall, "agent-a")
            .tool("sql.execute")
            .event_id(format!("{tag}-{i}"))
            .build();
        acks.push(a.send(e).await.unwrap());
    }
    for ack in acks {
        ack.await.unwrap();
    }
}

async fn tree_size(server: &Server) -> u64 {
    Client::connect(&server.grpc)
        .await
        .unwrap()
        .verifying_with(server.verifier.clone())
        .checkpoint(0)
        .await
        .unwrap()
        .checkpoint
        .size
}

/// Value of a metric line (first sample whose name matches).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn wait_for(what: &str, secs: u64, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_anchors_are_written_read_only_and_hold_the_log_to_them() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, anchors) = Server::start_with_dir_anchors(dir.path());
    let key = server.verifier.to_string();
    append(&server, 200, "a").await;
    let size = tree_size(&server).await;
    let log_dir = anchors.join("ledger.local").join("default");
    let expected = log_dir.join(format!("checkpoint.{size:020}"));
    // The file is made durable, then the anchor recorded and counted.
    wait_for("the anchor of the current size", 30, async || {
        expected.exists() && metric(&server.scrape(), "ledger_anchored_tree_size") == size as f64
    })
    .await;
    assert!(
        std::fs::metadata(&expected)
            .unwrap()
            .permissions()
            .readonly()
    );

    // Appends after the last anchor are anchored on a clean shutdown.
    append(&server, 10, "b").await;
    server.stop();
    let last = log_dir.join(format!("checkpoint.{:020}", size + 10));
    assert!(last.exists(), "final anchor written on shutdown");

    let dir_arg = anchors.to_str().unwrap();
    let (code, v) = verify(&["anchors", "--key", &key, dir_arg], &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["latest_size"], size + 10);

    server.restart();
    let (code, v) = verify(
        &[
            "live",
            "--key",
            &key,
            "--server",
            &server.grpc,
            "--anchors",
            dir_arg,
        ],
        &[],
    );
    assert_eq!(code, 0, "{v}");
    let bundle = dir.path().join("log.bundle");
    let c = Client::connect(&server.grpc).await.unwrap();
    let mut f = std::fs::File::create(&bundle).unwrap();
    c.export(0, 0, true, &mut f, |_, _| {}).await.unwrap();
    let (code, v) = verify(
        &[
            "bundle",
            "--quiet",
            "--key",
            &key,
            "--anchors",
            dir_arg,
            bundle.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{v}");
    assert!(v["anchors_matched"].as_u64().unwrap() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn s3_anchors_are_locked_refuse_change_and_catch_up_after_an_outage() {
    let s3 = S3Server::start();
    let client = s3.client();
    let bucket = "ledger-anchors";
    client
        .create_bucket()
        .bucket(bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    // The ledger reaches S3 through a link we can cut.
    let target: std::net::SocketAddr = s3.endpoint.trim_start_matches("http://").parse().unwrap();
    let link = Outage::start(target).await;

    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[anchor]\nbackend = \"s3\"\ninterval_secs = 1\n[anchor.s3]\nbucket = \"{bucket}\"\nprefix = \"audit\"\nendpoint = \"http://{}\"\nforce_path_style = true\nretention_days = 30\n",
        link.addr
    );
    let server = Server::start_with(dir.path(), Some(&config));
    let key_str = server.verifier.to_string();
    append(&server, 100, "a").await;
    let size = tree_size(&server).await;
    let key = format!("audit/ledger.local/default/checkpoint.{size:020}");
    wait_for("the S3 anchor", 30, async || {
        client
            .head_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .is_ok()
    })
    .await;

    // Locked in compliance mode, for the configured retention (as the
    // object's lock headers say).
    let head = client
        .head_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.object_lock_mode().unwrap().as_str(), "COMPLIANCE");
    let until =
        std::time::SystemTime::try_from(*head.object_lock_retain_until_date().unwrap()).unwrap();
    let days = until
        .duration_since(std::time::SystemTime::now())
        .unwrap()
        .as_secs_f64()
        / 86_400.0;
    assert!((29.0..=30.1).contains(&days), "retention of {days} days");
    let body = client
        .get_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    let version = body.version_id().unwrap().to_string();
    let note = String::from_utf8(body.body.collect().await.unwrap().into_bytes().to_vec()).unwrap();
    assert_eq!(
        ledger_verify::open_checkpoint(&note, &server.verifier)
            .unwrap()
            .size,
        size
    );

    // Neither deleted nor overwritten.
    assert_locked(&client, bucket, &key, &version).await;
    let still = client
        .get_object()
        .bucket(bucket)
        .key(&key)
        .version_id(&version)
        .send()
        .await
        .unwrap();
    assert_eq!(
        still.body.collect().await.unwrap().into_bytes().as_ref(),
        note.as_bytes()
    );

    // S3 goes away: ingest carries on, failures are counted, and once S3
    // is back the anchor catches up with the current size.
    link.cut();
    let failures_before = metric(&server.scrape(), "ledger_anchor_failures_total");
    let t = Instant::now();
    append(&server, 100, "b").await;
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "ingest waited on the anchor store"
    );
    let grown = tree_size(&server).await;
    assert_eq!(grown, size + 100);
    wait_for("anchor failures to be counted", 30, async || {
        metric(&server.scrape(), "ledger_anchor_failures_total") > failures_before
    })
    .await;
    assert!(metric(&server.scrape(), "ledger_anchor_lag_entries") >= 100.0);
    link.restore();
    let key2 = format!("audit/ledger.local/default/checkpoint.{grown:020}");
    wait_for("the anchor to catch up", 60, async || {
        client
            .head_object()
            .bucket(bucket)
            .key(&key2)
            .send()
            .await
            .is_ok()
    })
    .await;

    // The auditor's verifier reads the bucket and agrees.
    let env = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_ENDPOINT_URL", s3.endpoint.as_str()),
    ];
    let src = format!("s3://{bucket}/audit");
    let (code, v) = verify(&["anchors", "--key", &key_str, &src], &env);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["latest_size"], grown);
    let (code, v) = verify(
        &[
            "live",
            "--key",
            &key_str,
            "--server",
            &server.grpc,
            "--anchors",
            &src,
        ],
        &env,
    );
    assert_eq!(code, 0, "{v}");
}
