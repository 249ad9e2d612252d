//! Harness for end-to-end tests: starts real `ledgerd` processes on ports
//! chosen at run time, talks to them over gRPC, kills and restarts them.
//!
//! The binaries are the ones `cargo test --workspace` builds into the target
//! directory (next to the test executables); set `LEDGERD_BIN` to use another.

pub mod items;
pub mod raw;

use ledger_proto::v1::ingest_client::IngestClient;
use ledger_proto::v1::proofs_client::ProofsClient;
use ledger_proto::v1::{AuditEvent, EventKind, RiskTier};
use ledger_verify::note::NoteVerifier;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Path of a workspace binary built alongside the tests.
pub fn binary(name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(format!("{}_BIN", name.to_uppercase().replace('-', "_"))) {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-exe> → target/<profile>/<name>
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run the tests with `cargo test --workspace` so the binaries are built",
        path.display()
    );
    path
}

/// How to reach a server: cheap to clone into spawned tasks.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub grpc: String,
    pub verifier: NoteVerifier,
}

impl Endpoint {
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.grpc.clone())
            .expect("uri")
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("connect to ledgerd")
    }

    pub async fn ingest(&self) -> IngestClient<Channel> {
        IngestClient::new(self.channel().await)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    pub async fn proofs(&self) -> ProofsClient<Channel> {
        ProofsClient::new(self.channel().await)
    }
}

/// A running `ledgerd`.
pub struct Server {
    pub data_dir: PathBuf,
    pub endpoint: Endpoint,
    pub metrics: String,
    /// The tlog-tiles HTTP read API (`host:port`).
    pub tiles: String,
    /// OTLP/HTTP (`host:port`).
    pub otlp_http: String,
    /// The incident console's URL (`http://host:port/`), when configured.
    pub console: String,
    pub config: Option<PathBuf>,
    child: Option<Child>,
    log_path: PathBuf,
}

impl Server {
    /// Starts a server on a fresh data directory.
    pub fn start(dir: &Path) -> Server {
        Server::start_with(dir, None)
    }

    /// Starts a server that signs a checkpoint with every commit group
    /// (`checkpoint.interval_ms = 0`), for tests about many checkpoints.
    pub fn start_signing_every_group(dir: &Path) -> Server {
        Server::start_with(dir, Some("[checkpoint]\ninterval_ms = 0\n"))
    }

    /// Starts a server with a TOML config (the data dir and addresses are
    /// always given by flags).
    pub fn start_with(dir: &Path, config_toml: Option<&str>) -> Server {
        let config = config_toml.map(|t| {
            let p = dir.join("ledgerd.toml");
            std::fs::write(&p, t).expect("write config");
            p
        });
        Server::spawn(
            dir.join("data"),
            config,
            dir.join("ledgerd.log"),
            "127.0.0.1:0",
        )
        .unwrap_or_else(|e| panic!("ledgerd did not start: {e}"))
    }

    fn spawn(
        data_dir: PathBuf,
        config: Option<PathBuf>,
        log_path: PathBuf,
        listen: &str,
    ) -> Result<Server, String> {
        let ready = data_dir.with_extension("ready");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(binary("ledgerd"));
        cmd.arg("--data-dir")
            .arg(&data_dir)
            .args([
                "--listen",
                listen,
                "--metrics-listen",
                "127.0.0.1:0",
                "--tiles-listen",
                "127.0.0.1:0",
                "--otlp-http-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .arg("--ready-file")
            .arg(&ready)
            .env("RUST_LOG", "info")
            // For S3 anchoring against the test S3 server.
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        if let Some(c) = &config {
            cmd.arg("--config").arg(c);
        }
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let v: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| e.to_string())?;
                let key = v["logs"][0]["verifier_key"].as_str().unwrap_or_default();
                return Ok(Server {
                    endpoint: Endpoint {
                        grpc: format!("http://{}", v["grpc"].as_str().unwrap_or_default()),
                        verifier: key
                            .parse()
                            .map_err(|e| format!("verifier key {key:?}: {e}"))?,
                    },
                    metrics: v["metrics"].as_str().unwrap_or_default().to_string(),
                    tiles: v["tiles"].as_str().unwrap_or_default().to_string(),
                    otlp_http: v["otlp_http"].as_str().unwrap_or_default().to_string(),
                    console: v["console"].as_str().unwrap_or_default().to_string(),
                    data_dir,
                    config,
                    child: Some(child),
                    log_path,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("exited with {status}:\n{log}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("not ready after 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a server that anchors to `<dir>/anchors` every second;
    /// returns it and that directory.
    pub fn start_with_dir_anchors(dir: &Path) -> (Server, PathBuf) {
        let anchors = dir.join("anchors");
        let config = format!(
            "[anchor]\nbackend = \"dir\"\ndir = {:?}\ninterval_secs = 1\n",
            anchors.display().to_string()
        );
        (Server::start_with(dir, Some(&config)), anchors)
    }

    /// Starts ledgerd again on the same data directory.
    pub fn restart(&mut self) {
        self.stop();
        *self = self
            .try_restart()
            .unwrap_or_else(|e| panic!("restart failed: {e}"));
    }

    /// Starts ledgerd on this data directory and the same gRPC port (so
    /// clients can reconnect), returning its failure if any.
    pub fn try_restart(&self) -> Result<Server, String> {
        Server::spawn(
            self.data_dir.clone(),
            self.config.clone(),
            self.log_path.clone(),
            self.grpc.trim_start_matches("http://"),
        )
    }

    /// SIGTERM and wait: the graceful path.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("ledgerd did not stop within 30 s of SIGTERM");
        }
    }

    /// The server process's resident memory in KiB (Linux), if running.
    pub fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL: the crash path.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Runs `ledgerd restore --from FROM` on this server's data directory
    /// and configuration (the server must be stopped); returns whether it
    /// succeeded and what it printed.
    pub fn restore_from(&self, from: &str) -> (bool, String) {
        let mut cmd = Command::new(binary("ledgerd"));
        cmd.arg("--data-dir").arg(&self.data_dir);
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        let out = cmd
            .args(["restore", "--from", from])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("RUST_LOG", "warn")
            .output()
            .expect("run ledgerd restore");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// The Prometheus text of the metrics endpoint.
    pub fn scrape(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.metrics).expect("connect metrics");
        write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read metrics");
        out
    }
}

impl std::ops::Deref for Server {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A valid event with a distinct id; `n` varies agent, tool and trace.
///
/// The same `(id, n)` makes the same event, field for field, within one
/// test process (`occurred_at` is a start time fixed at the first call plus
/// `n` µs), so sending it twice is a true retry.
pub fn event(id: &str, n: u64) -> AuditEvent {
    static START: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
    });
    let now = start + Duration::from_micros(n);
    AuditEvent {
        event_id: id.to_string(),
        correlation_id: format!("{:032x}", 0xabc0_0000_u64 + n % 7 + 1),
        span_id: format!("{:016x}", n + 1),
        parent_span_id: String::new(),
        agent_id: format!("agent-{}", n % 5),
        session_id: "s-1".into(),
        principal: "alice@example.com".into(),
        kind: EventKind::ToolCall as i32,
        tool_name: format!("tool-{}", n % 3),
        action: "execute".into(),
        resource: "db://prod/users".into(),
        risk_tier: RiskTier::High as i32,
        outcome: 0,
        occurred_at: Some(prost_types::Timestamp {
            seconds: now.as_secs() as i64,
            nanos: now.subsec_nanos() as i32,
        }),
        attributes: [("k".to_string(), format!("v{n}"))].into_iter().collect(),
        payload: format!("{{\"n\":{n}}}").into_bytes(),
        payload_content_type: "application/json".into(),
    }
}

/// The seed of a fuzz run: `LEDGER_FUZZ_SEED` if set (to replay one), else
/// the clock. Printed, so a failure can be replayed.
pub fn fuzz_seed(what: &str) -> u64 {
    let seed = std::env::var("LEDGER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos() as u64
        });
    println!("{what} seed: {seed} (replay with LEDGER_FUZZ_SEED={seed})");
    seed
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A real S3 API server (moto, from PyPI; `.ci/run` installs it) on
/// 127.0.0.1, with Object Lock support. Killed on drop.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
}

impl S3Server {
    pub fn start() -> S3Server {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server not found: install it with `pip install 'moto[server]'` (.ci/run does)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// An S3 client for this server (test credentials, path-style).
    pub fn client(&self) -> aws_sdk_s3::Client {
        s3_client(&self.endpoint)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An S3 client for `endpoint` with moto's test credentials.
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A TCP forwarder that can be cut off and restored: an outage of whatever
/// is behind it, as seen by its clients.
pub struct Outage {
    pub addr: std::net::SocketAddr,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Outage {
    /// Forwards a fresh 127.0.0.1 port to `target`.
    pub async fn start(target: std::net::SocketAddr) -> Outage {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> =
            Default::default();
        let accept = {
            let (down, conns) = (down.clone(), conns.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if down.load(Ordering::SeqCst) {
                        continue; // Dropped: connection reset.
                    }
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    conns.lock().unwrap().push(task);
                }
            })
        };
        Outage {
            addr,
            down,
            conns,
            accept,
        }
    }

    /// Cuts every connection and refuses new ones.
    pub fn cut(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub fn restore(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// `GET path` over plain HTTP/1.0, with a bearer token if given: the
/// status code and the body.
pub fn http_get(addr: &str, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: ledger\r\n{auth}\r\n").expect("send");
    read_response(s)
}

/// Reads an HTTP/1.0 response to its end: the status code and the body.
fn read_response(mut s: std::net::TcpStream) -> (u16, Vec<u8>) {
    use std::io::Read;
    let mut out = Vec::new();
    // A server may close early (413 before the body is read): keep what came.
    let _ = s.read_to_end(&mut out);
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (status, out[split + 4..].to_vec())
}

/// `POST` to `host:port/path` over plain HTTP/1.0 with a content type and
/// an optional bearer token: the status code and the body.
pub fn http_post(
    url: &str,
    content_type: &str,
    body: &[u8],
    token: Option<&str>,
) -> (u16, Vec<u8>) {
    use std::io::Write;
    let (addr, path) = url.split_once('/').expect("host:port/path");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "POST /{path} HTTP/1.0\r\nHost: ledger\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{auth}\r\n",
        body.len()
    )
    .expect("send");
    // The server may answer (413) before reading it all.
    let _ = s.write_all(body);
    read_response(s)
}

/// Runs `ledger-verify --format json ARGS` with extra environment; returns
/// its exit code and its JSON report.
pub fn verify_json(args: &[&str], env: &[(&str, &str)]) -> (i32, serde_json::Value) {
    let mut cmd = Command::new(binary("ledger-verify"));
    cmd.args(["--format", "json"]).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run ledger-verify");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "ledger-verify {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

/// `ledgerd keys …` against the server's data directory and configuration.
pub fn keys(server: &Server, args: &[&str]) -> String {
    let mut cmd = Command::new(binary("ledgerd"));
    cmd.arg("--data-dir").arg(&server.data_dir);
    if let Some(c) = &server.config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd.arg("keys").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ledgerd keys {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A CA, a server certificate for localhost and two client certificates.
pub fn pki(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    // A name of its own: OpenSSL takes a leaf whose issuer name equals its
    // subject name for self-signed.
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Agent Ledger test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    for (name, sans) in [
        ("server", vec!["localhost".to_string()]),
        ("client", vec![]),
        ("stranger", vec![]),
    ] {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(sans)
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

/// Changes the tool name inside the stored bytes of entry `index` in the
/// RocksDB store at `db` (the server stopped): tampering the server's own
/// start-up check does not see (it covers the tail and the tiles' root).
pub fn tamper_tool_name(db: &Path, index: u64, tool: &str) {
    use ledgerd::store::{StoreWriter, be, cf};
    use prost::Message;
    let store = StoreWriter::open(db).unwrap();
    let bytes = store.entry(index).unwrap().unwrap();
    let mut e = ledger_proto::v1::LedgerEntry::decode(bytes.as_slice()).unwrap();
    e.event.as_mut().unwrap().tool_name = tool.into();
    let mut batch = store.new_batch();
    store.put(&mut batch, cf::ENTRIES, &be(index), &e.encode_to_vec());
    store.commit(batch).unwrap();
}

/// Asserts that `version` of `key` is locked in COMPLIANCE mode: deleting
/// it and a write-once put over the key are both refused.
pub async fn assert_locked(client: &aws_sdk_s3::Client, bucket: &str, key: &str, version: &str) {
    let head = client
        .head_object()
        .bucket(bucket)
        .key(key)
        .version_id(version)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)));
    assert_eq!(head.object_lock_mode().unwrap().as_str(), "COMPLIANCE");
    let del = client
        .delete_object()
        .bucket(bucket)
        .key(key)
        .version_id(version)
        .send()
        .await;
    assert!(del.is_err(), "{key}: a locked version was deleted");
    let over = client
        .put_object()
        .bucket(bucket)
        .key(key)
        .if_none_match("*")
        .body(b"forged".to_vec().into())
        .send()
        .await;
    assert!(over.is_err(), "{key}: a write-once object was overwritten");
}
