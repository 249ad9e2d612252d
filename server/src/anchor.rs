//! Anchoring: the latest signed checkpoint of each log is copied, now and
//! then and on shutdown, to write-once storage outside the ledger's machine,
//! so that a later rewrite or rollback of the ledger contradicts something
//! the operator cannot change.
//!
//! The anchor logic knows nothing of the backend: an
//! [`ObjectStore`](crate::objects::ObjectStore) writes an object once under
//! a key and refuses to overwrite it. Backends: a local directory (files
//! made read-only; the embedded default) and S3 with Object Lock in
//! compliance mode. Keys sort by tree size:
//! `<origin>/checkpoint.<size, 20 digits>`.
//!
//! With a mirror, a log anchors only checkpoints already mirrored, so the
//! anchors never vouch for entries nobody could read back after losing the
//! ledger's disk.

use crate::log::Log;
use crate::metrics::Metrics;
use crate::objects::{ObjectError, ObjectStore};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Key of the anchor of `origin` at `size`.
pub fn anchor_key(origin: &str, size: u64) -> String {
    format!("{origin}/checkpoint.{size:020}")
}

/// Tree size in an anchor key, if it is one.
pub fn size_of_key(key: &str) -> Option<u64> {
    key.rsplit_once("/checkpoint.")?.1.parse().ok()
}

/// Copies each log's latest checkpoint to the anchor store every
/// `interval`, retrying failures with back-off; never touches ingest.
pub struct Anchorer<S: ObjectStore> {
    pub store: Arc<S>,
    pub log: Arc<Log>,
    pub metrics: Arc<Metrics>,
    pub interval: Duration,
}

impl<S: ObjectStore> Anchorer<S> {
    /// Anchors the latest checkpoint if the tree grew since the last
    /// anchor. Returns the anchored size.
    async fn anchor_latest(&self, anchored: u64) -> Result<u64, ObjectError> {
        let Some(cp) = self.log.anchorable_checkpoint() else {
            return Ok(anchored);
        };
        let size = cp.checkpoint.size;
        self.metrics
            .set_anchor_lag(&self.log.id, size.saturating_sub(anchored));
        if size <= anchored {
            return Ok(anchored);
        }
        let key = anchor_key(&self.log.origin, size);
        let put = self
            .store
            .put_once(&key, cp.note.clone().into_bytes().into())
            .await?;
        // Durable before it is recorded as anchored.
        self.store.sync().await?;
        self.log
            .record_anchor(size)
            .await
            .map_err(|e| ObjectError::Store(format!("recording the anchor: {e}")))?;
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
}
