//! Configuration: one typed struct, read from a TOML file, overridden by
//! environment variables and flags. The defaults run a single local log with
//! data in `./ledger-data`, needing no file at all.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where logs keep their databases and keys.
    pub data_dir: PathBuf,
    /// gRPC address.
    pub listen: SocketAddr,
    /// Prometheus metrics address (`/metrics`).
    pub metrics_listen: SocketAddr,
    /// `human` or `json` log lines.
    pub log_format: LogFormat,
    pub ingest: IngestConfig,
    /// How often checkpoints are signed.
    pub checkpoint: CheckpointConfig,
    /// Where signed checkpoints are anchored.
    pub anchor: AnchorConfig,
    /// The object-storage mirror of every log (C2SP tlog-tiles).
    pub mirror: MirrorConfig,
    /// The tlog-tiles read API over HTTP.
    pub tiles: TilesConfig,
    /// The incident console (web page and HTTP JSON API).
    pub console: ConsoleConfig,
    /// OpenTelemetry trace ingest (OTLP/gRPC on `listen`, OTLP/HTTP here).
    pub otlp: OtlpConfig,
    /// Who may call, and how they prove it.
    pub auth: AuthConfig,
    /// TLS for the gRPC port.
    pub tls: TlsConfig,
    /// Per-caller limits.
    pub limits: LimitsConfig,
    /// The logs (one per tenant). The first is the default log.
    pub logs: Vec<LogConfig>,
}

#[derive(
    Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Appends that may wait for the sequencer, per log.
    pub queue_events: usize,
    /// Bytes of appends that may wait for the sequencer, per log.
    pub queue_bytes: usize,
    /// Most entries in one commit group.
    pub max_batch: usize,
    /// Largest event payload accepted, in bytes.
    pub max_payload_bytes: usize,
    /// Most attributes on one event.
    pub max_attributes: usize,
    /// Longest attribute key, in bytes.
    pub max_attribute_key_bytes: usize,
    /// Longest attribute value, in bytes.
    pub max_attribute_value_bytes: usize,
    /// How far in the future an event's occurred_at may be.
    pub max_future_skew_secs: u64,
}

/// Checkpoint signing. Every ack is durable at once; the signed checkpoint
/// covering it may follow, at most `interval_ms` later (the ack's
/// `checkpoint_size` / `checkpoint_due` say which). A group that arrives
/// when the last signature is older than the interval signs at once, and a
/// reader asking for the latest checkpoint (or a receipt) gets one covering
/// every acked entry, so a trickle of appends is not one checkpoint each
/// while nobody waits for a signature.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Least time between two signed checkpoints, in milliseconds (0: every
    /// commit group signs one).
    pub interval_ms: u64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { interval_ms: 100 }
    }
}

/// Authentication. Credentials (API keys, client certificates) are managed
/// with `ledgerd keys …` and kept, hashed, in `<data_dir>/access.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Refuse callers without a valid credential. When false every caller is
    /// an anonymous admin of every log, recorded as `anonymous@<ip>`: only
    /// allowed on a loopback address unless `allow_anonymous_remote` is set.
    pub required: bool,
    /// Allow unauthenticated callers on a non-loopback address (unsafe).
    pub allow_anonymous_remote: bool,
}

/// TLS (rustls) for gRPC. With `client_ca_file`, clients may (or, with
/// `client_auth = "required"`, must) present a certificate signed by it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate chain (PEM). TLS is on when this is set.
    pub cert_file: Option<PathBuf>,
    /// Server private key (PEM).
    pub key_file: Option<PathBuf>,
    /// CA (PEM) that signs client certificates, for mutual TLS.
    pub client_ca_file: Option<PathBuf>,
    /// `optional` or `required` client certificates (with `client_ca_file`).
    pub client_auth: ClientAuth,
    /// Serve plaintext gRPC on a non-loopback address (behind a TLS proxy).
    pub allow_plaintext: bool,
}

#[derive(
    Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    Optional,
    Required,
}

/// Per-caller limits (0 = unlimited).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Sustained events per second one credential may append.
    pub events_per_second: u64,
    /// Burst above the sustained rate.
    pub burst_events: u64,
    /// Events one credential may append per UTC day (counted in memory:
    /// a restart starts the day's count afresh).
    pub daily_events: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AnchorBackend {
    /// A local directory (files made read-only). Protects against nothing
    /// that can write to this machine: use `s3` in production.
    Dir,
    /// S3 (or compatible) with Object Lock in compliance mode.
    S3,
    /// No anchoring.
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AnchorConfig {
    /// Where anchors go: `dir` (a local directory; protects against nothing
    /// that can write to this machine), `s3` (Object Lock, compliance mode),
    /// or `none`.
    pub backend: AnchorBackend,
    /// Directory of the `dir` backend; default `<data_dir>/anchors`.
    pub dir: Option<PathBuf>,
    /// Seconds between anchors (only when the log grew). Also anchored on
    /// shutdown.
    pub interval_secs: u64,
    pub s3: S3AnchorConfig,
}

/// The S3 backend. Credentials come from `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, never from this file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct S3AnchorConfig {
    /// A bucket created with Object Lock enabled.
    pub bucket: String,
    /// Key prefix; objects go under `<prefix>/<origin>/checkpoint.<size>`.
    pub prefix: String,
    /// AWS region of the bucket.
    pub region: String,
    /// Endpoint URL for S3-compatible stores (MinIO, …); empty for AWS.
    pub endpoint: String,
    /// Path-style addressing (needed by most S3-compatible stores).
    pub force_path_style: bool,
    /// Compliance-mode retention of each anchor, in days.
    pub retention_days: u64,
}

impl Default for AnchorConfig {
    fn default() -> Self {
        AnchorConfig {
            backend: AnchorBackend::Dir,
            dir: None,
            interval_secs: 60,
            s3: S3AnchorConfig::default(),
        }
    }
}

impl Default for S3AnchorConfig {
    fn default() -> Self {
        S3AnchorConfig {
            bucket: String::new(),
            prefix: "agent-ledger".into(),
            region: "us-east-1".into(),
            endpoint: String::new(),
            force_path_style: false,
            retention_days: 2557,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MirrorBackend {
    /// No mirror: the entries live on this machine's disk only.
    None,
    /// A local directory (for tests and demos; mount something that is not
    /// this disk to survive losing it).
    Dir,
    /// S3 (or compatible); write-once objects get COMPLIANCE Object Lock
    /// retention where the bucket has Object Lock.
    S3,
}

/// The mirror: every log's committed entries, hash tiles and checkpoint
/// published to object storage as C2SP tlog-tiles under `<origin>/` (plus
/// payload bundles under `<origin>/payload/`), so the record survives the
/// loss of this disk (`ledgerd restore`) and auditors read it without the
/// server (`ledger-verify mirror`). With a mirror, anchors only ever vouch
/// for mirrored checkpoints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MirrorConfig {
    /// `none`, `dir` or `s3`.
    pub backend: MirrorBackend,
    /// Directory of the `dir` backend; default `<data_dir>/mirror`.
    pub dir: Option<PathBuf>,
    /// Acks wait until the mirror holds the entry and a checkpoint covering
    /// it (nothing acked is lost with the disk, at a latency cost; see
    /// docs/mirror.md). After 30 s without it the append answers
    /// UNAVAILABLE; a retry with the same event_id waits again.
    pub ack_after_mirror: bool,
    /// Work in flight per log: a third as many tiles (rounded up) are built
    /// and written at once, each tile's objects (entry bundle, level-0 tile,
    /// and its payload bundle while its group of 16 tiles is not whole) one
    /// after another; a whole group's payload bundle counts as one more
    /// tile. A `dir` mirror does each on a
    /// thread of its own (a pool of that many threads at nice 10, at least
    /// two, and as many at normal priority for when the mirror has fallen
    /// half its in-memory feed behind).
    pub concurrency: usize,
    pub s3: S3MirrorConfig,
}

/// The S3 backend of the mirror. Credentials come from `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, never from this file.
/// A versioned bucket keeps every version of each `checkpoint` object; if
/// the bucket has a default retention rule, redacted payloads cannot be
/// erased there (use `payload_bucket`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct S3MirrorConfig {
    pub bucket: String,
    /// Key prefix; objects go under `<prefix>/<origin>/`.
    pub prefix: String,
    /// Bucket for payload bundles (no compliance lock, so a redaction can
    /// erase); empty: the mirror's bucket.
    pub payload_bucket: String,
    pub region: String,
    /// Endpoint URL for S3-compatible stores; empty for AWS.
    pub endpoint: String,
    pub force_path_style: bool,
    /// Compliance-mode retention of write-once objects, in days (when the
    /// bucket has Object Lock).
    pub retention_days: u64,
}

/// Connection settings of an S3 section.
fn s3_settings(
    bucket: &str,
    prefix: &str,
    region: &str,
    endpoint: &str,
    force_path_style: bool,
    retention_days: u64,
) -> crate::objects::S3Settings {
    crate::objects::S3Settings {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
        region: region.to_string(),
        endpoint: (!endpoint.is_empty()).then(|| endpoint.to_string()),
        force_path_style,
        retention: std::time::Duration::from_secs(retention_days * 86_400),
    }
}

impl S3AnchorConfig {
    pub fn settings(&self) -> crate::objects::S3Settings {
        s3_settings(
            &self.bucket,
            &self.prefix,
            &self.region,
            &self.endpoint,
            self.force_path_style,
            self.retention_days,
        )
    }
}

impl S3MirrorConfig {
    /// The settings for `bucket` (the mirror's, or its payload bucket).
    pub fn settings(&self, bucket: &str) -> crate::objects::S3Settings {
        s3_settings(
            bucket,
            &self.prefix,
            &self.region,
            &self.endpoint,
            self.force_path_style,
            self.retention_days,
        )
    }
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            backend: MirrorBackend::None,
            dir: None,
            ack_after_mirror: false,
            concurrency: 16,
            s3: S3MirrorConfig::default(),
        }
    }
}

impl Default for S3MirrorConfig {
    fn default() -> Self {
        S3MirrorConfig {
            bucket: String::new(),
            prefix: "agent-ledger".into(),
            payload_bucket: String::new(),
            region: "us-east-1".into(),
            endpoint: String::new(),
            force_path_style: false,
            retention_days: 2557,
        }
    }
}

/// The C2SP tlog-tiles read paths of each log over plain HTTP:
/// `GET /<log id>/checkpoint`, `/<log id>/tile/<L>/<N>[.p/<W>]`,
/// `/<log id>/tile/entries/<N>[.p/<W>]`, the same bytes the mirror holds.
/// Callers authenticate as on gRPC (`authorization: Bearer …`, reader role
/// or above) when `auth.required` is set.
/// OpenTelemetry trace ingest. OTLP/gRPC (`TraceService/Export`) is always
/// served on the main gRPC port; OTLP/HTTP (`POST /v1/traces`, protobuf or
/// JSON) on `http_listen`. GenAI spans become audit events (docs/otlp.md),
/// with the same authentication, roles (writer), limits and durability as
/// `Append`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    /// OTLP/HTTP address; unset: not served. When the default address is
    /// taken (another server on this machine) the server starts without
    /// OTLP/HTTP and says so; an address set explicitly must bind.
    pub http_listen: Option<SocketAddr>,
    /// Also record spans that are not GenAI spans (as `custom` events).
    pub keep_non_genai: bool,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            http_listen: Some(default_otlp_http()),
            keep_non_genai: false,
        }
    }
}

/// The OTLP/HTTP port every exporter defaults to.
pub fn default_otlp_http() -> SocketAddr {
    "127.0.0.1:4318".parse().expect("valid default address")
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TilesConfig {
    /// Serve the read API on this address (port 0 picks a free port);
    /// unset: not served.
    pub listen: Option<SocketAddr>,
}

/// The incident console: a web page that searches events, draws a trace
/// as a waterfall and verifies every event it shows in the browser, plus
/// the HTTP JSON API it uses (`/api/v1/…`, docs/console.md). Callers
/// authenticate as on gRPC (API key, reader role or above). Served over TLS
/// with the `[tls]` certificate when one is configured.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console on this address (port 0 picks a free port);
    /// unset: not served.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Short name used in requests and paths: [a-z0-9-], 1 to 64 characters.
    pub id: String,
    /// The log's origin line in checkpoints and its key name, e.g.
    /// `ledger.example.com/acme`. Must be unique worldwide for the log.
    pub origin: String,
    /// Private signing key file; default `<data_dir>/logs/<id>/log.key`,
    /// generated on first start.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./ledger-data"),
            listen: "127.0.0.1:7400".parse().expect("valid default address"),
            metrics_listen: "127.0.0.1:7401".parse().expect("valid default address"),
            log_format: LogFormat::Human,
            ingest: IngestConfig::default(),
            checkpoint: CheckpointConfig::default(),
            anchor: AnchorConfig::default(),
            mirror: MirrorConfig::default(),
            tiles: TilesConfig::default(),
            console: ConsoleConfig::default(),
            otlp: OtlpConfig::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            limits: LimitsConfig::default(),
            logs: vec![LogConfig {
                id: "default".into(),
                origin: "ledger.local/default".into(),
                key_file: None,
            }],
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            queue_events: 100_000,
            queue_bytes: 256 << 20,
            max_batch: 8192,
            max_payload_bytes: 1 << 20,
            max_attributes: 64,
            max_attribute_key_bytes: 128,
            max_attribute_value_bytes: 4096,
            max_future_skew_secs: 300,
        }
    }
}

impl Config {
    /// A listener beyond loopback needs TLS (or `tls.allow_plaintext`
    /// behind a TLS proxy) and authentication (or
    /// `auth.allow_anonymous_remote`).
    fn check_exposure(
        &self,
        setting: &str,
        addr: SocketAddr,
        protocol: &str,
    ) -> anyhow::Result<()> {
        let loopback = addr.ip().is_loopback();
        anyhow::ensure!(
            loopback || self.tls.cert_file.is_some() || self.tls.allow_plaintext,
            "{setting} {addr}: plaintext {protocol} beyond loopback; configure [tls] (or set tls.allow_plaintext = true behind a TLS proxy)"
        );
        anyhow::ensure!(
            loopback || self.auth.required || self.auth.allow_anonymous_remote,
            "{setting} {addr}: anonymous callers beyond loopback; set auth.required = true and create keys with `ledgerd keys create`"
        );
        Ok(())
    }

    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.logs.is_empty(), "logs: at least one log is required");
        let mut seen = std::collections::BTreeSet::new();
        for l in &self.logs {
            anyhow::ensure!(
                !l.id.is_empty()
                    && l.id.len() <= 64
                    && l.id
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "logs.id {:?}: 1 to 64 characters of [a-z0-9-]",
                l.id
            );
            anyhow::ensure!(seen.insert(&l.id), "logs.id {:?} appears twice", l.id);
            anyhow::ensure!(
                !l.origin.is_empty() && !l.origin.chars().any(|c| c.is_whitespace() || c == '+'),
                "logs.origin {:?} (log {}): must be non-empty, without spaces or '+'",
                l.origin,
                l.id
            );
        }
        let t = &self.tls;
        anyhow::ensure!(
            t.cert_file.is_some() == t.key_file.is_some(),
            "tls.cert_file and tls.key_file go together"
        );
        anyhow::ensure!(
            t.client_ca_file.is_some() || t.client_auth == ClientAuth::Optional,
            "tls.client_auth = \"required\" needs tls.client_ca_file"
        );
        self.check_exposure("listen", self.listen, "gRPC")?;
        // The console too: API keys travel in its requests, and browsers
        // give the page Web Crypto only over HTTPS (or on loopback).
        if let Some(console) = self.console.listen {
            self.check_exposure("console.listen", console, "HTTP")?;
        }
        anyhow::ensure!(
            self.checkpoint.interval_ms <= 60_000,
            "checkpoint.interval_ms: at most 60000 (a minute); acked entries wait that long for a signature"
        );
        let a = &self.anchor;
        anyhow::ensure!(a.interval_secs > 0, "anchor.interval_secs must be positive");
        if a.backend == AnchorBackend::S3 {
            anyhow::ensure!(
                !a.s3.bucket.is_empty(),
                "anchor.s3.bucket is required with backend = \"s3\""
            );
            anyhow::ensure!(
                a.s3.retention_days > 0,
                "anchor.s3.retention_days must be positive"
            );
        }
        let m = &self.mirror;
        anyhow::ensure!(m.concurrency > 0, "mirror.concurrency must be positive");
        if m.backend == MirrorBackend::S3 {
            anyhow::ensure!(
                !m.s3.bucket.is_empty(),
                "mirror.s3.bucket is required with backend = \"s3\""
            );
        }
        anyhow::ensure!(
            !m.ack_after_mirror || m.backend != MirrorBackend::None,
            "mirror.ack_after_mirror needs a mirror (mirror.backend = \"dir\" or \"s3\")"
        );
        let i = &self.ingest;
        anyhow::ensure!(
            i.queue_events > 0 && i.max_batch > 0,
            "ingest.queue_events and ingest.max_batch must be positive"
        );
        anyhow::ensure!(
            i.queue_bytes >= i.max_payload_bytes + (64 << 10),
            "ingest.queue_bytes must hold at least one event of max_payload_bytes"
        );
        Ok(())
    }

    pub fn anchor_dir(&self) -> PathBuf {
        self.anchor
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("anchors"))
    }

    pub fn mirror_dir(&self) -> PathBuf {
        self.mirror
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("mirror"))
    }

    pub fn log_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("logs").join(id)
    }

    pub fn key_file(&self, log: &LogConfig) -> PathBuf {
        log.key_file
            .clone()
            .unwrap_or_else(|| self.log_dir(&log.id).join("log.key"))
    }
}

/// The configuration reference, in Markdown, generated from the types above
/// (their doc comments) and the defaults: `ledgerd --config-reference`,
/// kept as docs/configuration.md.
pub fn reference() -> String {
    use serde_json::Value;
    let schema = serde_json::to_value(schemars::schema_for!(Config)).expect("schema is JSON");
    let defs = schema.get("$defs").cloned().unwrap_or(Value::Null);
    let defaults = serde_json::to_value(Config::default()).expect("defaults are JSON");
    let resolve = |v: &Value| -> Value {
        let r = v
            .get("$ref")
            .or_else(|| v.get("allOf").and_then(|a| a[0].get("$ref")))
            .and_then(Value::as_str);
        match r {
            Some(r) => defs[r.trim_start_matches("#/$defs/")].clone(),
            None => v.clone(),
        }
    };
    let type_of = |v: &Value| -> String {
        let v = resolve(v);
        if let Some(e) = v.get("enum").and_then(Value::as_array) {
            return e
                .iter()
                .map(|x| format!("`{}`", x.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(" \\| ");
        }
        if let Some(one) = v.get("oneOf").and_then(Value::as_array) {
            return one
                .iter()
                .filter_map(|x| x.get("const").or_else(|| x.get("enum").map(|e| &e[0])))
                .map(|x| format!("`{}`", x.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(" \\| ");
        }
        match &v["type"] {
            Value::String(t) => t.clone(),
            Value::Array(ts) => ts
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect::<Vec<_>>()
                .join(" or "),
            _ => "table".into(),
        }
    };
    let one_line = |v: &Value| -> String {
        resolve(v)
            .get("description")
            .or_else(|| v.get("description"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .replace('\n', " ")
    };
    let show = |v: &Value| -> String {
        match v {
            Value::Null => "(none)".into(),
            Value::String(s) if s.is_empty() => "`\"\"`".into(),
            Value::String(s) => format!("`{s:?}`"),
            other => format!("`{other}`"),
        }
    };
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from the configuration types by `ledgerd --config-reference`; a \
         test keeps this file in step with them. Settings come from the defaults, \
         then `--config FILE` (TOML), then the `LEDGERD_*` environment variables \
         and flags of `ledgerd --help`. Unknown keys are refused.\n",
    );
    // (section path, title, schema, defaults) in depth-first order.
    let mut stack = vec![(
        String::new(),
        "top level".to_string(),
        schema.clone(),
        defaults.clone(),
    )];
    while let Some((section, title, node, dflt)) = stack.pop() {
        let node = resolve(&node);
        let Some(props) = node.get("properties").and_then(Value::as_object) else {
            continue;
        };
        let _ = write!(out, "\n## {title}\n\n");
        if let Some(d) = node.get("description").and_then(Value::as_str)
            && !section.is_empty()
        {
            let _ = writeln!(out, "{}\n", d.replace('\n', " "));
        }
        out.push_str("| key | type | default | meaning |\n|---|---|---|---|\n");
        let mut nested = Vec::new();
        for (key, prop) in props {
            let target = resolve(prop);
            let d = dflt.get(key).cloned().unwrap_or(Value::Null);
            if target.get("properties").is_some() {
                let name = if section.is_empty() {
                    key.clone()
                } else {
                    format!("{section}.{key}")
                };
                nested.push((name.clone(), format!("`[{name}]`"), target, d));
                continue;
            }
            if let Some(items) = target.get("items") {
                let item = resolve(items);
                if item.get("properties").is_some() {
                    let first = d.get(0).cloned().unwrap_or(Value::Null);
                    let title = format!(
                        "`[[{key}]]` (repeated; defaults are those of the built-in first entry)"
                    );
                    nested.push((key.clone(), title, item, first));
                    continue;
                }
            }
            let _ = writeln!(
                out,
                "| `{key}` | {} | {} | {} |",
                type_of(prop),
                show(&d),
                one_line(prop)
            );
        }
        stack.extend(nested.into_iter().rev());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_a_file_overrides_them() {
        Config::default().validate().unwrap();
        let c: Config = toml::from_str(
            "listen = \"127.0.0.1:9000\"\n[ingest]\nmax_batch = 10\n[[logs]]\nid = \"acme\"\norigin = \"ledger.example.com/acme\"\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.ingest.max_batch, 10);
        assert_eq!(c.ingest.queue_events, IngestConfig::default().queue_events);
        assert_eq!(c.logs[0].origin, "ledger.example.com/acme");
        c.validate().unwrap();
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(toml::from_str::<Config>("nonsense = 1").is_err());
        let mut c = Config::default();
        c.logs[0].id = "Bad Id".into();
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.logs[0].origin = "has space".into();
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.logs.push(c.logs[0].clone());
        assert!(c.validate().is_err());
    }

    #[test]
    fn the_console_beyond_loopback_needs_tls_and_authentication() {
        let mut c = Config::default();
        c.console.listen = Some("127.0.0.1:8080".parse().unwrap());
        c.validate().unwrap();
        c.console.listen = Some("0.0.0.0:8080".parse().unwrap());
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("console.listen") && e.contains("plaintext"),
            "{e}"
        );
        c.tls.allow_plaintext = true;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("console.listen") && e.contains("anonymous"),
            "{e}"
        );
        c.auth.required = true;
        c.validate().unwrap();
    }
}
