//! The object-storage mirror, against real servers, a local directory and a
//! real S3 API (moto on 127.0.0.1): the mirror catches up and serves the
//! same bytes as the live read API; its objects cannot be changed through
//! the store; tampering with them is found, by kind and index; the ledger
//! survives the loss of its disk (kill -9, data directory deleted, restore
//! from the mirror, the same log continues); an S3 outage does not touch
//! ingest and the mirror catches up after it.

use ledger_client::{Client, Event, EventKind};
use ledger_e2e::{Outage, S3Server, Server, assert_locked, http_get, verify_json as verify};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ORIGIN: &str = "ledger.local/default";

fn event(tag: &str, i: usize) -> ledger_proto::v1::AuditEvent {
    Event::new(EventKind::ToolCall, "agent-m")
        .tool("sql.execute")
        .event_id(format!("{tag}-{i}"))
        .payload("text/plain", format!("SELECT {i} -- {tag}"))
        .build()
}

/// Appends `n` events with payloads, all acked.
async fn append(server: &Server, n: usize, tag: &str) {
    let c = Client::connect(&server.grpc).await.unwrap();
    let a = c.appender(Default::default());
    let mut acks = Vec::new();
    for i in 0..n {
        acks.push(a.send(event(tag, i)).await.unwrap());
    }
    for ack in acks {
        ack.await.unwrap();
    }
}

async fn status(server: &Server) -> ledger_proto::v1::LogStatus {
    Client::connect(&server.grpc)
        .await
        .unwrap()
        .status()
        .await
        .unwrap()
}

/// Waits until the mirror holds every committed entry.
async fn caught_up(server: &Server, secs: u64) -> ledger_proto::v1::LogStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = status(server).await;
        if s.mirrored_size == s.committed_size && s.mirror_lag_entries == 0 {
            return s;
        }
        if Instant::now() >= deadline {
            let log = server.log_text();
            let tail: String = log
                .lines()
                .filter(|l| l.contains("mirror"))
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join("\n");
            panic!("the mirror did not catch up: {s:?}\n{tail}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every file under `dir`, as paths relative to it.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// Overwrites a (read-only) mirror file, as someone with the disk would.
fn tamper(path: &Path, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let saved = std::fs::read(path).unwrap();
    let mut bytes = saved.clone();
    f(&mut bytes);
    let mut perm = std::fs::metadata(path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(path, perm).unwrap();
    std::fs::write(path, bytes).unwrap();
    saved
}

fn first_finding(report: &serde_json::Value) -> (String, u64) {
    let f = &report["findings"][0];
    (
        f["kind"].as_str().unwrap_or_default().to_string(),
        f["index"].as_u64().unwrap_or(u64::MAX),
    )
}

/// A server mirroring to the directory `<dir>/mirror`, and that directory.
fn with_dir_mirror(dir: &Path) -> (Server, std::path::PathBuf) {
    let mirror = dir.join("mirror");
    let config = format!(
        "[mirror]\nbackend = \"dir\"\ndir = {:?}\n",
        mirror.display().to_string()
    );
    (Server::start_with(dir, Some(&config)), mirror)
}

/// `ledger-verify mirror` of a directory mirror: exit code and report.
fn verify_mirror(key: &str, mirror: &Path) -> (i32, serde_json::Value) {
    verify(
        &["mirror", "--key", key, "--quiet", mirror.to_str().unwrap()],
        &[],
    )
}

/// `ledger-verify mirror` of the S3 mirror `src` (`s3://bucket/prefix`) on
/// `s3`: exit code and report.
fn verify_s3_mirror(s3: &S3Server, key: &str, src: &str) -> (i32, serde_json::Value) {
    let env = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_ENDPOINT_URL", s3.endpoint.as_str()),
    ];
    verify(&["mirror", "--key", key, "--quiet", src], &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_mirror_catches_up_serves_the_live_bytes_and_finds_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mirror) = with_dir_mirror(dir.path());
    let key = server.verifier.to_string();
    append(&server, 700, "d").await;
    let s = caught_up(&server, 30).await;
    assert_eq!((s.committed_size, s.mirrored_size), (700, 700));
    assert!(s.mirror_enabled);
    let scraped = server.scrape();
    assert!(
        scraped.contains("ledger_mirror_lag_entries{log=\"default\"} 0"),
        "{scraped}"
    );
    assert!(scraped.contains("ledger_mirrored_tree_size{log=\"default\"} 700"));
    // Every entry was published from the sequencer's feed, none read back.
    let counter = |scraped: &str, name: &str| {
        scraped
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{log=\"default\"}} ")))
            .map(|v| v.parse::<u64>().unwrap())
    };
    let read_back = |scraped: &str| counter(scraped, "ledger_mirror_read_back_entries_total");
    assert_eq!(read_back(&scraped), Some(0), "{scraped}");
    // A mirror that keeps up gives way to ingest throughout.
    assert_eq!(
        counter(&scraped, "ledger_mirror_urgent_units_total"),
        Some(0),
        "{scraped}"
    );

    // Every object but the payload bundles is what the live read API serves
    // for the same path, byte for byte.
    let root = mirror.join(ORIGIN);
    let objects = files(&root);
    for want in [
        "checkpoint",
        "tile/0/000",
        "tile/0/001",
        "tile/0/002.p/188",
        "tile/1/000.p/2",
        "tile/entries/000",
        "tile/entries/002.p/188",
        "payload/000",
    ] {
        assert!(objects.iter().any(|o| o == want), "{want} in {objects:?}");
    }
    for o in objects.iter().filter(|o| !o.starts_with("payload/")) {
        let (code, body) = http_get(&server.tiles, &format!("/default/{o}"), None);
        assert_eq!(code, 200, "{o}");
        assert_eq!(body, std::fs::read(root.join(o)).unwrap(), "{o}");
        if o != "checkpoint" {
            assert!(
                std::fs::metadata(root.join(o))
                    .unwrap()
                    .permissions()
                    .readonly(),
                "{o} is written read-only"
            );
        }
    }
    // Beyond the signed tree, or not a tiles path: 404.
    assert_eq!(http_get(&server.tiles, "/default/tile/0/003", None).0, 404);
    assert_eq!(
        http_get(&server.tiles, "/default/tile/0/x000/001", None).0,
        404
    );
    assert_eq!(http_get(&server.tiles, "/nolog/checkpoint", None).0, 404);

    // The whole mirror audits clean, with no server involved.
    let (rc, v) = verify_mirror(&key, &mirror);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["entries"], 700);
    assert_eq!(v["payloads_checked"], 700);
    assert_eq!(v["tiles_checked"], 4);

    // Tampering with each kind of object is found, with its kind and index.
    let run = || verify_mirror(&key, &mirror);
    type Change = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: [(&str, Change, &str, u64); 4] = [
        // Hash 7 of the second level-0 tile: leaf 263.
        (
            "tile/0/001",
            Box::new(|b| b[7 * 32] ^= 1),
            "modified_tile",
            263,
        ),
        // A byte near the end of the first bundle: its last entry, 255.
        (
            "tile/entries/000",
            Box::new(|b| {
                let n = b.len() - 2;
                b[n] ^= 1
            }),
            "modified_entry",
            255,
        ),
        // The last byte of the first payload bundle: entry 255's payload.
        (
            "payload/000",
            Box::new(|b| {
                let n = b.len() - 1;
                b[n] ^= 1
            }),
            "modified_payload",
            255,
        ),
        // The checkpoint's root.
        (
            "checkpoint",
            Box::new(|b| {
                let i = b.iter().position(|&c| c == b'=').unwrap() - 1;
                b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            }),
            "bad_signature",
            0,
        ),
    ];
    for (path, change, kind, index) in cases {
        let p = root.join(path);
        let saved = tamper(&p, change);
        let (rc, v) = run();
        assert_eq!(rc, 1, "{path}: {v}");
        assert_eq!(first_finding(&v), (kind.to_string(), index), "{path}: {v}");
        std::fs::write(&p, saved).unwrap();
    }
    // A deleted bundle.
    let p = root.join("tile/entries/001");
    let saved = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    let (rc, v) = run();
    assert_eq!(rc, 1);
    assert_eq!(first_finding(&v), ("deleted_entry".into(), 256), "{v}");
    std::fs::write(&p, saved).unwrap();
    assert_eq!(run().0, 0, "clean again once every object is back");

    // A redaction erases the payload in the mirror too; the audit accepts
    // the erased payload because a redaction entry names it.
    let c = Client::connect(&server.grpc).await.unwrap();
    c.redact(3, "erasure request").await.unwrap();
    caught_up(&server, 30).await;
    let bundle = std::fs::read(root.join("payload/000")).unwrap();
    let records = ledger_verify::mirror::decode_payload_bundle(&bundle).unwrap();
    assert!(records[3].is_none(), "the redacted payload is gone");
    assert!(records[4].is_some());
    let (rc, v) = run();
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["payloads_redacted"], 1);
    // The feed keeps the entries of the payload group not yet whole (the
    // first 4,096), so the bundle was rewritten from memory.
    assert_eq!(read_back(&server.scrape()), Some(0));

    // A redaction in the tile the feed still holds (the partial one): the
    // payload is gone from the rewritten bundle too, nothing read back.
    c.redact(690, "erasure request").await.unwrap();
    caught_up(&server, 30).await;
    let bundle = std::fs::read(root.join("payload/002")).unwrap();
    let records = ledger_verify::mirror::decode_payload_bundle(&bundle).unwrap();
    assert_eq!(records.len(), 190, "entries 512 to 701");
    assert!(records[690 - 512].is_none(), "the redacted payload is gone");
    assert!(records[689 - 512].is_some());
    assert_eq!(read_back(&server.scrape()), Some(0));
    let (rc, v) = run();
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["payloads_redacted"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_payload_group_is_one_bundle_that_replaces_its_tiles_bundles() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mirror) = with_dir_mirror(dir.path());
    let key = server.verifier.to_string();
    let root = mirror.join(ORIGIN);
    // Group 0 (entries 0 to 4095) mirrored tile by tile while incomplete.
    append(&server, 2000, "a").await;
    caught_up(&server, 30).await;
    assert!(root.join("payload/007").exists());
    assert!(!root.join("payload/group/000").exists());
    // Then whole: one bundle for its 16 tiles, theirs deleted; the tiles
    // of group 1 have their own.
    append(&server, 2500, "b").await;
    caught_up(&server, 60).await;
    let payloads: Vec<String> = files(&root.join("payload"));
    assert_eq!(payloads, ["016", "017", "group/000"], "{payloads:?}");
    let bundle = std::fs::read(root.join("payload/group/000")).unwrap();
    let records = ledger_verify::mirror::decode_payload_bundle(&bundle).unwrap();
    assert_eq!(records.len(), 4096);
    assert!(records.iter().all(Option::is_some));

    let run = || verify_mirror(&key, &mirror);
    let (rc, v) = run();
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["entries"], 4500);
    assert_eq!(v["payloads_checked"], 4500);
    // The group bundle's last byte: entry 4095's payload.
    let p = root.join("payload/group/000");
    let saved = tamper(&p, |b| {
        let n = b.len() - 1;
        b[n] ^= 1
    });
    let (rc, v) = run();
    assert_eq!(rc, 1, "{v}");
    assert_eq!(first_finding(&v), ("modified_payload".into(), 4095), "{v}");
    // Gone: its first payload is withheld.
    std::fs::remove_file(&p).unwrap();
    let (rc, v) = run();
    assert_eq!(rc, 1, "{v}");
    assert_eq!(first_finding(&v), ("withheld_payload".into(), 0), "{v}");
    std::fs::write(&p, saved).unwrap();
    assert_eq!(run().0, 0);

    // A redaction in the whole group rewrites the group's bundle.
    let c = Client::connect(&server.grpc).await.unwrap();
    c.redact(1000, "erasure request").await.unwrap();
    caught_up(&server, 30).await;
    let bundle = std::fs::read(root.join("payload/group/000")).unwrap();
    let records = ledger_verify::mirror::decode_payload_bundle(&bundle).unwrap();
    assert!(records[1000].is_none(), "the redacted payload is gone");
    assert!(records[999].is_some() && records[1001].is_some());
    let (rc, v) = run();
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["payloads_redacted"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_api_requires_a_reader_when_authentication_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), Some("[auth]\nrequired = true\n"));
    let key = |role: &str| {
        let out = std::process::Command::new(ledger_e2e::binary("ledgerd"))
            .arg("--data-dir")
            .arg(&server.data_dir)
            .args(["keys", "create", "--tenant", "default", "--role", role])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (reader, writer) = (key("reader"), key("writer"));
    let c = Client::connect(&server.grpc)
        .await
        .unwrap()
        .with_token(&writer)
        .unwrap();
    c.append(event("auth", 0)).await.unwrap();
    Client::connect(&server.grpc)
        .await
        .unwrap()
        .with_token(&reader)
        .unwrap()
        .verifying_with(server.verifier.clone())
        .checkpoint(0)
        .await
        .unwrap();
    assert_eq!(http_get(&server.tiles, "/default/checkpoint", None).0, 401);
    assert_eq!(
        http_get(&server.tiles, "/default/checkpoint", Some("alk_no.such")).0,
        401
    );
    assert_eq!(
        http_get(&server.tiles, "/default/checkpoint", Some(&writer)).0,
        403
    );
    let (code, body) = http_get(
        &server.tiles,
        "/default/tile/entries/000.p/1",
        Some(&reader),
    );
    assert_eq!(code, 200);
    let entries = ledger_verify::mirror::decode_entry_bundle(&body).unwrap();
    assert_eq!(entries.len(), 1);
}

/// Appends from 16 concurrent callers until `stop`, recording each acked
/// event's index (plain unary calls: nothing is resent after a crash).
fn load(
    server: &Server,
    tag: &'static str,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (
    tokio::task::JoinHandle<()>,
    Arc<Mutex<HashMap<String, u64>>>,
) {
    let acked = Arc::new(Mutex::new(HashMap::new()));
    let grpc = server.grpc.clone();
    let out = acked.clone();
    let task = tokio::spawn(async move {
        let c = Client::connect(&grpc).await.unwrap();
        let mut callers = Vec::new();
        for s in 0..16 {
            let mut ingest = c.ingest();
            let (stop, out) = (stop.clone(), out.clone());
            callers.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let e = event(tag, s * 1_000_000 + i);
                    let id = e.event_id.clone();
                    let req = ledger_proto::v1::AppendRequest {
                        event: Some(e),
                        ..Default::default()
                    };
                    match ingest.append(req).await {
                        Ok(ack) => {
                            out.lock().unwrap().insert(id, ack.into_inner().index);
                        }
                        Err(_) => return,
                    }
                    i += 1;
                }
            }));
        }
        for c in callers {
            let _ = c.await;
        }
    });
    (task, acked)
}

/// Event id per index of the log, read back from the server.
async fn event_ids(server: &Server, size: u64) -> Vec<String> {
    let c = Client::connect(&server.grpc).await.unwrap();
    let mut out = Vec::new();
    let mut start = 0;
    while start < size {
        let end = (start + 5000).min(size);
        for r in c.entries(start, end).await.unwrap() {
            let e = ledger_verify::entry::decode_entry(&r.entry).unwrap();
            out.push(e.event.map(|e| e.event_id).unwrap_or_default());
        }
        start = end;
    }
    out
}

/// The disaster: load, kill -9, the data directory deleted (the key kept
/// apart, as a backup would), restore from the mirror, restart.
async fn disaster(dir: &Path, config: &str, from: &str, every_ack_survives: bool) -> String {
    let mut server = Server::start_with(dir, Some(config));
    let key = server.verifier.to_string();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (task, acked) = load(&server, "x", stop.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 3000 {
        assert!(Instant::now() < deadline, "load did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Until the mirror holds a whole payload group (and the tiles after
    // it), so the restore reads a group's bundle and tiles' own.
    while status(&server).await.mirrored_size < 4096 + 300 {
        assert!(
            Instant::now() < deadline,
            "the mirror did not get past 4,396"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = task.await;
    let acked: HashMap<String, u64> = acked.lock().unwrap().clone();
    std::fs::remove_dir_all(&server.data_dir).unwrap();

    let (ok, out) = server.restore_from(from);
    assert!(ok, "restore failed: {out}");
    let size: u64 = out
        .split("): ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("restored size in {out:?}"));
    server.restart();
    let s = status(&server).await;
    assert_eq!(s.committed_size, size, "{out}");
    assert_eq!(
        s.mirrored_size, size,
        "the restored log starts in step with its mirror: {s:?}"
    );
    // Every event acked before the last mirrored checkpoint is there, at
    // its index; with ack_after_mirror, every acked event.
    let ids = event_ids(&server, size).await;
    let mut before = 0;
    for (id, index) in &acked {
        if *index < size {
            assert_eq!(&ids[*index as usize], id, "entry {index}");
            before += 1;
        } else {
            assert!(
                !every_ack_survives,
                "acked entry {index} ({id}) was lost; mirror had {size}"
            );
        }
    }
    assert!(before > 0);
    // The same log continues at the next index, signed by the same key.
    let c = Client::connect(&server.grpc)
        .await
        .unwrap()
        .verifying_with(server.verifier.clone());
    let ack = c.append(event("after", 0)).await.unwrap();
    assert_eq!(ack.index, size);
    assert_eq!(server.verifier.to_string(), key);
    caught_up(&server, 30).await;
    // The indexes were rebuilt: a query finds the restored events.
    let page = c
        .list_events(
            ledger_proto::v1::EventFilter {
                agent_id: "agent-m".into(),
                ..Default::default()
            },
            10,
            None,
            false,
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(page.records.len(), 10);
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn after_losing_its_disk_the_log_is_restored_from_s3_and_continues() {
    let s3 = S3Server::start();
    let client = s3.client();
    let bucket = "ledger-mirror";
    client
        .create_bucket()
        .bucket(bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("keys/default.key");
    let config = format!(
        "[[logs]]\nid = \"default\"\norigin = \"{ORIGIN}\"\nkey_file = {:?}\n\
         [anchor]\nbackend = \"s3\"\ninterval_secs = 1\n[anchor.s3]\nbucket = \"{bucket}\"\nprefix = \"audit\"\nendpoint = \"{e}\"\nforce_path_style = true\nretention_days = 1\n\
         [mirror]\nbackend = \"s3\"\n[mirror.s3]\nbucket = \"{bucket}\"\nprefix = \"audit\"\nendpoint = \"{e}\"\nforce_path_style = true\nretention_days = 1\n",
        key_file.display().to_string(),
        e = s3.endpoint
    );
    let key = disaster(dir.path(), &config, &format!("s3://{bucket}/audit"), false).await;

    // Mirrored objects are locked: neither overwritten nor deleted.
    let tile = format!("audit/{ORIGIN}/tile/entries/000");
    let head = client
        .head_object()
        .bucket(bucket)
        .key(&tile)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{tile}: {}", aws_sdk_s3::error::DisplayErrorContext(e)));
    let version = head.version_id().unwrap().to_string();
    assert_locked(&client, bucket, &tile, &version).await;

    // Group 0's payloads are in one bundle; the bundles its tiles had
    // before it was whole are gone, every version.
    let listed = client
        .list_object_versions()
        .bucket(bucket)
        .prefix(format!("audit/{ORIGIN}/payload/"))
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = listed
        .versions()
        .iter()
        .filter_map(|v| v.key())
        .chain(listed.delete_markers().iter().filter_map(|m| m.key()))
        .collect();
    let group = format!("audit/{ORIGIN}/payload/group/000");
    assert!(keys.contains(&group.as_str()), "{keys:?}");
    for t in 0..16 {
        let own = format!("audit/{ORIGIN}/payload/{t:03}");
        assert!(!keys.contains(&own.as_str()), "{own} in {keys:?}");
    }

    // The auditor's verifier reads the whole log from S3, anchors beside it.
    let src = format!("s3://{bucket}/audit");
    let (rc, v) = verify_s3_mirror(&s3, &key, &src);
    assert_eq!(rc, 0, "{v}");
    assert!(v["anchors_matched"].as_u64().unwrap() > 0, "{v}");
    // Someone with the bucket writes a new version of a tile (the current
    // version is what readers get): found.
    client
        .put_object()
        .bucket(bucket)
        .key(format!("audit/{ORIGIN}/tile/0/000"))
        .body(vec![0u8; 256 * 32].into())
        .send()
        .await
        .unwrap();
    let (rc, v) = verify_s3_mirror(&s3, &key, &src);
    assert_eq!(rc, 1, "{v}");
    assert_eq!(first_finding(&v), ("modified_tile".into(), 0), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn with_ack_after_mirror_every_acked_event_survives_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    let key_file = dir.path().join("default.key");
    let config = format!(
        "[[logs]]\nid = \"default\"\norigin = \"{ORIGIN}\"\nkey_file = {:?}\n\
         [anchor]\nbackend = \"none\"\n\
         [mirror]\nbackend = \"dir\"\ndir = {:?}\nack_after_mirror = true\n",
        key_file.display().to_string(),
        mirror.display().to_string()
    );
    disaster(dir.path(), &config, mirror.to_str().unwrap(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_restore_refuses_a_mirror_that_does_not_check_out() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    let key_file = dir.path().join("default.key");
    let config = format!(
        "[[logs]]\nid = \"default\"\norigin = \"{ORIGIN}\"\nkey_file = {:?}\n\
         [mirror]\nbackend = \"dir\"\ndir = {:?}\n",
        key_file.display().to_string(),
        mirror.display().to_string()
    );
    let mut server = Server::start_with(dir.path(), Some(&config));
    append(&server, 300, "r").await;
    caught_up(&server, 30).await;
    server.stop();
    // Restoring over a live data directory is refused.
    let (ok, out) = server.restore_from(mirror.to_str().unwrap());
    assert!(!ok && out.contains("already has a store"), "{out}");
    std::fs::remove_dir_all(&server.data_dir).unwrap();
    // A tampered bundle: refused, naming what and where; nothing is kept.
    let p = mirror.join(ORIGIN).join("tile/entries/000");
    let saved = tamper(&p, |b| b[40] ^= 1);
    let (ok, out) = server.restore_from(mirror.to_str().unwrap());
    assert!(!ok, "{out}");
    assert!(out.contains("ModifiedEntry at 0"), "{out}");
    assert!(!server.data_dir.join("logs/default/db").exists());
    std::fs::write(&p, saved).unwrap();
    // Without the signing key: refused (a new key would be another log).
    std::fs::rename(&key_file, dir.path().join("elsewhere.key")).unwrap();
    let (ok, out) = server.restore_from(mirror.to_str().unwrap());
    assert!(!ok && out.contains("signing key"), "{out}");
    std::fs::rename(dir.path().join("elsewhere.key"), &key_file).unwrap();
    let (ok, out) = server.restore_from(mirror.to_str().unwrap());
    assert!(ok, "{out}");
    assert!(out.contains("300 entries"), "{out}");
    server.restart();
    assert_eq!(status(&server).await.committed_size, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn an_s3_outage_leaves_ingest_alone_and_the_mirror_catches_up() {
    let s3 = S3Server::start();
    let client = s3.client();
    let bucket = "ledger-mirror";
    client.create_bucket().bucket(bucket).send().await.unwrap();
    let target: std::net::SocketAddr = s3.endpoint.trim_start_matches("http://").parse().unwrap();
    let link = Outage::start(target).await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[mirror]\nbackend = \"s3\"\n[mirror.s3]\nbucket = \"{bucket}\"\nprefix = \"m\"\nendpoint = \"http://{}\"\nforce_path_style = true\n",
        link.addr
    );
    let server = Server::start_with(dir.path(), Some(&config));
    append(&server, 100, "before").await;
    caught_up(&server, 30).await;
    link.cut();
    append(&server, 2000, "during").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = status(&server).await;
    assert_eq!(s.committed_size, 2100, "ingest carried on");
    assert!(
        s.mirror_lag_entries > 0,
        "the mirror is behind during the outage: {s:?}"
    );
    link.restore();
    let s = caught_up(&server, 60).await;
    assert_eq!(s.mirrored_size, 2100);
    let key = server.verifier.to_string();
    let (rc, v) = verify_s3_mirror(&s3, &key, &format!("s3://{bucket}/m"));
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["entries"], 2100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn on_s3_a_payload_bundle_a_lost_history_left_is_emptied_and_a_tile_without_payloads_gets_none()
 {
    let s3 = S3Server::start();
    let client = s3.client();
    let bucket = "ledger-mirror";
    client.create_bucket().bucket(bucket).send().await.unwrap();
    // A history lost in a restore had got further than this one will be
    // when its mirror reaches tile 1, and left that tile a payload bundle
    // (the mirror's checkpoint never covered it).
    let stale = format!("m/{ORIGIN}/payload/001");
    let mut leftover = (5u32 + 32).to_be_bytes().to_vec();
    leftover.extend([7u8; 32]);
    leftover.extend(b"stale");
    client
        .put_object()
        .bucket(bucket)
        .key(&stale)
        .body(leftover.into())
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[mirror]\nbackend = \"s3\"\n[mirror.s3]\nbucket = \"{bucket}\"\nprefix = \"m\"\nendpoint = \"{}\"\nforce_path_style = true\n",
        s3.endpoint
    );
    let server = Server::start_with(dir.path(), Some(&config));
    // This history's entries have no payload: tile 0 fills, tile 1 holds 44.
    let c = Client::connect(&server.grpc).await.unwrap();
    let a = c.appender(Default::default());
    let mut acks = Vec::new();
    for i in 0..300 {
        let e = Event::new(EventKind::ToolCall, "agent-m")
            .tool("sql.execute")
            .event_id(format!("bare-{i}"))
            .build();
        acks.push(a.send(e).await.unwrap());
    }
    for ack in acks {
        ack.await.unwrap();
    }
    assert_eq!(caught_up(&server, 30).await.mirrored_size, 300);
    let get = async |key: &str| match client.get_object().bucket(bucket).key(key).send().await {
        Ok(o) => Some(o.body.collect().await.unwrap().into_bytes().to_vec()),
        Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => None,
        Err(e) => panic!("{key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)),
    };
    // Tile 0 has no payload and found no leftover: no bundle.
    assert_eq!(get(&format!("m/{ORIGIN}/payload/000")).await, None);
    // Tile 1's leftover is replaced by this history's empty records.
    let bundle = get(&stale).await.expect("tile 1's bundle");
    assert_eq!(
        ledger_verify::mirror::decode_payload_bundle(&bundle).unwrap(),
        vec![None; 44]
    );
    let key = server.verifier.to_string();
    let (rc, v) = verify_s3_mirror(&s3, &key, &format!("s3://{bucket}/m"));
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["entries"], 300);
}
