//! Prometheus metrics, served as text on a separate HTTP port.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LogLabel {
    pub log: String,
}

impl From<String> for LogLabel {
    fn from(log: String) -> Self {
        LogLabel { log }
    }
}

impl From<&str> for LogLabel {
    fn from(log: &str) -> Self {
        LogLabel {
            log: log.to_string(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabel {
    pub log: String,
    pub reason: String,
}

type HistogramFamily = Family<LogLabel, Histogram, fn() -> Histogram>;

pub struct Metrics {
    pub registry: Registry,
    /// Entries appended (not counting duplicates).
    pub appended: Family<LogLabel, Counter>,
    /// Appends refused, by reason (invalid, queue_full, unavailable).
    pub rejected: Family<RejectLabel, Counter>,
    /// Entries per commit group.
    pub batch_size: HistogramFamily,
    /// Time to build, write and fsync a commit group.
    pub commit_seconds: HistogramFamily,
    /// Appends waiting for the sequencer.
    pub queue_depth: Family<LogLabel, Gauge>,
    pub tree_size: Family<LogLabel, Gauge>,
    pub commit_failures: Family<LogLabel, Counter>,
    /// Entries signed but not yet anchored.
    pub anchor_lag: Family<LogLabel, Gauge>,
    /// Tree size of the latest anchor written.
    pub anchored_size: Family<LogLabel, Gauge>,
    /// Unix time of the latest anchor written.
    pub anchor_last_success: Family<LogLabel, Gauge>,
    pub anchor_failures: Family<LogLabel, Counter>,
    /// Entries the query indexes cover.
    pub indexed_size: Family<LogLabel, Gauge>,
    /// Tree size of the latest signed checkpoint.
    pub signed_size: Family<LogLabel, Gauge>,
    /// Tree size of the latest checkpoint in the mirror.
    pub mirrored_size: Family<LogLabel, Gauge>,
    /// Committed entries not yet in the mirror.
    pub mirror_lag_entries: Family<LogLabel, Gauge>,
    /// Age of the oldest committed entry not yet in the mirror (0: none).
    pub mirror_lag_seconds: Family<LogLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Time from an entry's integration to its arrival in the mirror.
    pub mirror_delay_seconds: HistogramFamily,
    pub mirror_failures: Family<LogLabel, Counter>,
    /// Entries the mirror read back from the store because the sequencer's
    /// in-memory feed no longer (or never) held them.
    pub mirror_read_back: Family<LogLabel, Counter>,
    /// Units of the mirror's work run at normal priority because its feed
    /// was at least half full.
    pub mirror_urgent_units: Family<LogLabel, Counter>,
}

fn batch_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 14))
}

fn delay_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 18))
}

fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("ledger");
        let appended = Family::<LogLabel, Counter>::default();
        let rejected = Family::<RejectLabel, Counter>::default();
        let batch_size: HistogramFamily = Family::new_with_constructor(batch_buckets);
        let commit_seconds: HistogramFamily = Family::new_with_constructor(latency_buckets);
        let queue_depth = Family::<LogLabel, Gauge>::default();
        let tree_size = Family::<LogLabel, Gauge>::default();
        let commit_failures = Family::<LogLabel, Counter>::default();
        let anchor_lag = Family::<LogLabel, Gauge>::default();
        let anchored_size = Family::<LogLabel, Gauge>::default();
        let anchor_last_success = Family::<LogLabel, Gauge>::default();
        let anchor_failures = Family::<LogLabel, Counter>::default();
        let indexed_size = Family::<LogLabel, Gauge>::default();
        let signed_size = Family::<LogLabel, Gauge>::default();
        let mirrored_size = Family::<LogLabel, Gauge>::default();
        let mirror_lag_entries = Family::<LogLabel, Gauge>::default();
        let mirror_lag_seconds =
            Family::<LogLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let mirror_delay_seconds: HistogramFamily = Family::new_with_constructor(delay_buckets);
        let mirror_failures = Family::<LogLabel, Counter>::default();
        let mirror_read_back = Family::<LogLabel, Counter>::default();
        let mirror_urgent_units = Family::<LogLabel, Counter>::default();
        registry.register(
            "mirrored_tree_size",
            "Tree size of the latest checkpoint published to the object-storage mirror",
            mirrored_size.clone(),
        );
        registry.register(
            "mirror_lag_entries",
            "Committed entries not yet in the mirror",
            mirror_lag_entries.clone(),
        );
        registry.register(
            "mirror_lag_seconds",
            "Age of the oldest committed entry not yet in the mirror (0 when it is caught up)",
            mirror_lag_seconds.clone(),
        );
        registry.register(
            "mirror_delay_seconds",
            "Time from an entry's integration to the mirror's checkpoint covering it, per mirrored batch (its oldest entry)",
            mirror_delay_seconds.clone(),
        );
        registry.register(
            "mirror_failures",
            "Failed attempts to publish to the mirror",
            mirror_failures.clone(),
        );
        registry.register(
            "mirror_read_back_entries",
            "Entries the mirror read back from the store to publish them, because its in-memory feed from the sequencer no longer held them (after a restart, or a mirror far behind)",
            mirror_read_back.clone(),
        );
        registry.register(
            "mirror_urgent_units",
            "Units of the mirror's work (a tile's objects, or the tiles above level 0) built and written at normal CPU priority instead of at nice 10, because the mirror had fallen half its in-memory feed behind",
            mirror_urgent_units.clone(),
        );
        registry.register(
            "indexed_tree_size",
            "Entries covered by the query indexes (the indexer follows the committed log)",
            indexed_size.clone(),
        );
        registry.register(
            "signed_tree_size",
            "Tree size of the latest signed checkpoint (acked entries may run ahead of it by up to checkpoint.interval_ms)",
            signed_size.clone(),
        );
        registry.register(
            "anchor_lag_entries",
            "Entries covered by a signed checkpoint but not yet anchored",
            anchor_lag.clone(),
        );
        registry.register(
            "anchored_tree_size",
            "Tree size of the latest checkpoint written to the anchor store",
            anchored_size.clone(),
        );
        registry.register(
            "anchor_last_success_timestamp_seconds",
            "Unix time of the latest successful anchor",
            anchor_last_success.clone(),
        );
        registry.register(
            "anchor_failures",
            "Failed attempts to write an anchor",
            anchor_failures.clone(),
        );
        registry.register(
            "appended_entries",
            "Entries appended to the log",
            appended.clone(),
        );
        registry.register(
            "rejected_appends",
            "Appends refused, by reason",
            rejected.clone(),
        );
        registry.register(
            "commit_batch_size",
            "Entries per commit group",
            batch_size.clone(),
        );
        registry.register(
            "commit_seconds",
            "Time to build and durably write a commit group",
            commit_seconds.clone(),
        );
        registry.register(
            "queue_depth",
            "Appends waiting for the sequencer",
            queue_depth.clone(),
        );
        registry.register("tree_size", "Entries in the log", tree_size.clone());
        registry.register(
            "commit_failures",
            "Commit groups that failed to write",
            commit_failures.clone(),
        );
        Arc::new(Metrics {
            registry,
            appended,
            rejected,
            batch_size,
            commit_seconds,
            queue_depth,
            tree_size,
            commit_failures,
            anchor_lag,
            anchored_size,
            anchor_last_success,
            anchor_failures,
            indexed_size,
            signed_size,
            mirrored_size,
            mirror_lag_entries,
            mirror_lag_seconds,
            mirror_delay_seconds,
            mirror_failures,
            mirror_urgent_units,
            mirror_read_back,
        })
    }

    pub fn set_anchor_lag(&self, log: &str, lag: u64) {
        self.anchor_lag.get_or_create(&log.into()).set(lag as i64);
    }

    pub fn anchored(&self, log: &str, size: u64) {
        self.anchored_size
            .get_or_create(&log.into())
            .set(size as i64);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.anchor_last_success
            .get_or_create(&log.into())
            .set(now.as_secs() as i64);
    }

    pub fn anchor_failed(&self, log: &str) {
        self.anchor_failures.get_or_create(&log.into()).inc();
    }

    pub fn reject(&self, log: &str, reason: &str) {
        self.rejected
            .get_or_create(&RejectLabel {
                log: log.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encode metrics");
        out
    }
}

/// Serves `GET /metrics` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
