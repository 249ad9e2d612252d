//! Anchoring: the latest signed checkpoint of each log is copied, now and
//! then and on shutdown, to write-once storage outside the ledger's machine,
//! so that a later rewrite or rollback of the ledger contradicts something
//! the operator cannot change.
//!
//! The anchor logic knows nothing of the backend: an [`AnchorStore`] writes
//! an object once under a key and refuses to overwrite it. Backends: a local
//! directory (files made read-only; the embedded default) and S3 with Object
//! Lock in compliance mode. Keys sort by tree size:
//! `<origin>/checkpoint.<size, 20 digits>`.

use crate::log::Log;
use crate::metrics::Metrics;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Key of the anchor of `origin` at `size`.
pub fn anchor_key(origin: &str, size: u64) -> String {
    format!("{origin}/checkpoint.{size:020}")
}

/// Tree size in an anchor key, if it is one.
pub fn size_of_key(key: &str) -> Option<u64> {
    key.rsplit_once("/checkpoint.")?.1.parse().ok()
}

#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// Transient or not: the anchorer retries with back-off either way.
    #[error("{0}")]
    Store(String),
    /// The key exists with different content: two different checkpoints
    /// for one size were anchored. Never retried.
    #[error("anchor {key} already exists with different content: the log forked")]
    Conflict { key: String },
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    /// The same bytes were already there (an earlier attempt got through).
    AlreadyThere,
}

/// Write-once object storage.
pub trait AnchorStore: Send + Sync + 'static {
    /// Writes `body` under `key` unless the key exists.
    fn put(&self, key: &str, body: &[u8]) -> impl Future<Output = Result<Put, AnchorError>> + Send;
    /// Where the anchors go, for logs.
    fn describe(&self) -> String;
}

/// A local directory. Files are written to a temporary name, fsync'd, made
/// read-only and hard-linked into place (which fails if the name exists).
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    pub fn new(root: &Path) -> std::io::Result<DirStore> {
        std::fs::create_dir_all(root)?;
        Ok(DirStore {
            root: root.to_path_buf(),
        })
    }

    fn put_blocking(root: &Path, key: &str, body: &[u8]) -> Result<Put, AnchorError> {
        use std::io::Write;
        let io = |what: &str, e: std::io::Error| AnchorError::Store(format!("{what}: {e}"));
        let path = root.join(key);
        let dir = path
            .parent()
            .ok_or_else(|| AnchorError::Store("bad key".into()))?;
        std::fs::create_dir_all(dir).map_err(|e| io("creating anchor directory", e))?;
        let mut rnd = [0u8; 8];
        getrandom::fill(&mut rnd).map_err(|e| AnchorError::Store(e.to_string()))?;
        let tmp = dir.join(format!(".tmp-{}", hex::encode(rnd)));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io("creating anchor file", e))?;
        let result = (|| {
            f.write_all(body).map_err(|e| io("writing anchor", e))?;
            f.sync_all().map_err(|e| io("syncing anchor", e))?;
            let mut perm = f
                .metadata()
                .map_err(|e| io("anchor metadata", e))?
                .permissions();
            perm.set_readonly(true);
            std::fs::set_permissions(&tmp, perm).map_err(|e| io("making anchor read-only", e))?;
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => {
                    std::fs::File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| io("syncing anchor directory", e))?;
                    Ok(Put::Created)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let existing = std::fs::read(&path).map_err(|e| io("reading anchor", e))?;
                    if existing == body {
                        Ok(Put::AlreadyThere)
                    } else {
                        Err(AnchorError::Conflict {
                            key: key.to_string(),
                        })
                    }
                }
                Err(e) => Err(io("linking anchor into place", e)),
            }
        })();
        let _ = std::fs::remove_file(&tmp);
        result
    }
}

impl AnchorStore for DirStore {
    fn put(&self, key: &str, body: &[u8]) -> impl Future<Output = Result<Put, AnchorError>> + Send {
        let (root, key, body) = (self.root.clone(), key.to_string(), body.to_vec());
        async move {
            tokio::task::spawn_blocking(move || DirStore::put_blocking(&root, &key, &body))
                .await
                .map_err(|e| AnchorError::Store(e.to_string()))?
        }
    }

    fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }
}

/// S3 with Object Lock: every object is written in COMPLIANCE mode with a
/// retain-until date, and only if its key does not exist yet.
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    retention: Duration,
}

/// Settings of the S3 backend (credentials come from the standard
/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`).
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    pub prefix: String,
    pub region: String,
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    pub retention: Duration,
}

/// An S3 client from explicit settings and the standard credential
/// environment variables.
pub fn s3_client(
    region: &str,
    endpoint: Option<&str>,
    path_style: bool,
) -> anyhow::Result<aws_sdk_s3::Client> {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let key = std::env::var("AWS_ACCESS_KEY_ID").map_err(|_| {
        anyhow::anyhow!("AWS_ACCESS_KEY_ID is not set (S3 anchoring needs credentials)")
    })?;
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY")
        .map_err(|_| anyhow::anyhow!("AWS_SECRET_ACCESS_KEY is not set"))?;
    let token = std::env::var("AWS_SESSION_TOKEN").ok();
    let mut b = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .credentials_provider(Credentials::new(key, secret, token, None, "environment"))
        .force_path_style(path_style);
    if let Some(e) = endpoint {
        b = b.endpoint_url(e);
    }
    Ok(aws_sdk_s3::Client::from_conf(b.build()))
}

impl S3Store {
    /// Connects and checks that the bucket has Object Lock enabled.
    pub async fn connect(s: &S3Settings) -> anyhow::Result<S3Store> {
        let client = s3_client(&s.region, s.endpoint.as_deref(), s.force_path_style)?;
        let lock = client
            .get_object_lock_configuration()
            .bucket(&s.bucket)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "anchor.s3.bucket {:?}: cannot read its Object Lock configuration: {}",
                    s.bucket,
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )
            })?;
        let enabled = lock
            .object_lock_configuration()
            .and_then(|c| c.object_lock_enabled())
            .is_some_and(|e| e.as_str() == "Enabled");
        anyhow::ensure!(
            enabled,
            "anchor.s3.bucket {:?}: Object Lock is not enabled; anchors there could be deleted",
            s.bucket
        );
        Ok(S3Store {
            client,
            bucket: s.bucket.clone(),
            prefix: s.prefix.trim_end_matches('/').to_string(),
            retention: s.retention,
        })
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }
}

impl AnchorStore for S3Store {
    fn put(&self, key: &str, body: &[u8]) -> impl Future<Output = Result<Put, AnchorError>> + Send {
        use aws_sdk_s3::primitives::{ByteStream, DateTime};
        use aws_sdk_s3::types::ObjectLockMode;
        let full = self.full_key(key);
        let key = key.to_string();
        let body = body.to_vec();
        let until = SystemTime::now() + self.retention;
        async move {
            let put = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&full)
                .content_type("text/plain; charset=utf-8")
                .object_lock_mode(ObjectLockMode::Compliance)
                .object_lock_retain_until_date(DateTime::from(until))
                .if_none_match("*")
                .body(ByteStream::from(body.clone()))
                .send()
                .await;
            match put {
                Ok(_) => Ok(Put::Created),
                Err(e) => {
                    let status = e.raw_response().map(|r| r.status().as_u16());
                    if status == Some(412) {
                        // The key exists: the same bytes mean an earlier try
                        // got through; anything else is a fork.
                        let existing = self
                            .client
                            .get_object()
                            .bucket(&self.bucket)
                            .key(&full)
                            .send()
                            .await
                            .map_err(|e| {
                                AnchorError::Store(
                                    aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
                                )
                            })?
                            .body
                            .collect()
                            .await
                            .map_err(|e| AnchorError::Store(e.to_string()))?
                            .into_bytes();
                        return if existing.as_ref() == body.as_slice() {
                            Ok(Put::AlreadyThere)
                        } else {
                            Err(AnchorError::Conflict { key })
                        };
                    }
                    Err(AnchorError::Store(format!(
                        "s3 put {full}: {}",
                        aws_sdk_s3::error::DisplayErrorContext(&e)
                    )))
                }
            }
        }
    }

    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}

/// Copies each log's latest checkpoint to the anchor store every
/// `interval`, retrying failures with back-off; never touches ingest.
pub struct Anchorer<S: AnchorStore> {
    pub store: Arc<S>,
    pub log: Arc<Log>,
    pub metrics: Arc<Metrics>,
    pub interval: Duration,
}

impl<S: AnchorStore> Anchorer<S> {
    /// Anchors the latest checkpoint if the tree grew since the last
    /// anchor. Returns the anchored size.
    async fn anchor_latest(&self, anchored: u64) -> Result<u64, AnchorError> {
        let Some(cp) = self.log.latest_checkpoint() else {
            return Ok(anchored);
        };
        let size = cp.checkpoint.size;
        self.metrics
            .set_anchor_lag(&self.log.id, size.saturating_sub(anchored));
        if size <= anchored {
            return Ok(anchored);
        }
        let key = anchor_key(&self.log.origin, size);
        let put = self.store.put(&key, cp.note.as_bytes()).await?;
        self.log
            .record_anchor(size)
            .await
            .map_err(|e| AnchorError::Store(format!("recording the anchor: {e}")))?;
        tracing::info!(log = %self.log.id, size, key, outcome = ?put, "anchored checkpoint");
        self.metrics.anchored(&self.log.id, size);
        let lag = self
            .log
            .latest_checkpoint()
            .map_or(0, |c| c.checkpoint.size.saturating_sub(size));
        self.metrics.set_anchor_lag(&self.log.id, lag);
        Ok(size)
    }

    /// Runs until `stop` turns true, then makes one last attempt (bounded
    /// by `final_timeout`) so a clean shutdown leaves the latest state anchored.
    pub async fn run(self, mut stop: watch::Receiver<bool>, final_timeout: Duration) {
        let mut anchored = self.log.anchored_size().await;
        let mut backoff = Duration::from_secs(1);
        let mut wait = Duration::from_millis(0);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            match self.anchor_latest(anchored).await {
                Ok(size) => {
                    anchored = size;
                    backoff = Duration::from_secs(1);
                    wait = self.interval;
                }
                Err(e) => {
                    self.metrics.anchor_failed(&self.log.id);
                    tracing::warn!(log = %self.log.id, store = %self.store.describe(), error = %e, retry_in = ?backoff, "anchoring failed");
                    wait = backoff.min(self.interval);
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
        match tokio::time::timeout(final_timeout, self.anchor_latest(anchored)).await {
            Ok(Ok(size)) => tracing::info!(log = %self.log.id, size, "final anchor written"),
            Ok(Err(e)) => {
                self.metrics.anchor_failed(&self.log.id);
                tracing::error!(log = %self.log.id, error = %e, "final anchor failed");
            }
            Err(_) => tracing::error!(log = %self.log.id, "final anchor timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_size() {
        let mut keys: Vec<String> = [10u64, 9, 100, 2]
            .iter()
            .map(|s| anchor_key("o/x", *s))
            .collect();
        keys.sort();
        let sizes: Vec<u64> = keys.iter().map(|k| size_of_key(k).unwrap()).collect();
        assert_eq!(sizes, [2, 9, 10, 100]);
    }

    #[tokio::test]
    async fn a_directory_anchor_is_written_once_and_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path()).unwrap();
        let key = anchor_key("ledger.local/default", 5);
        assert_eq!(store.put(&key, b"note A").await.unwrap(), Put::Created);
        assert_eq!(store.put(&key, b"note A").await.unwrap(), Put::AlreadyThere);
        assert!(matches!(
            store.put(&key, b"note B").await,
            Err(AnchorError::Conflict { .. })
        ));
        let path = dir.path().join(&key);
        assert_eq!(std::fs::read(&path).unwrap(), b"note A");
        assert!(std::fs::metadata(&path).unwrap().permissions().readonly());
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }
}
