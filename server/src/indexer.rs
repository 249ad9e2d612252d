//! The indexer: the only writer of a log's five query indexes (correlation
//! id, agent, principal, tool, time). It follows the committed size the
//! sequencer publishes, reads the new entries back from the store and writes
//! their index keys with its own progress in one (unsynced) batch, so the
//! indexes never sit in the sequencer's synced commit and never delay an
//! ack. After a crash it starts again from its persisted progress and
//! re-indexes what the lost tail held (index writes are idempotent).
//! Queries wait until it has covered the tree size they view.

use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use ledger_verify::entry::decode_entry;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Entries read and indexed per batch.
const CHUNK: u64 = 4096;

pub struct Indexer {
    store: Arc<Store>,
    committed: watch::Receiver<u64>,
    indexed_tx: watch::Sender<u64>,
    metrics: Arc<Metrics>,
    log_label: String,
}

impl Indexer {
    /// An indexer starting from the store's persisted progress, and the
    /// feed of how far it has got.
    pub fn new(
        store: Arc<Store>,
        committed: watch::Receiver<u64>,
        metrics: Arc<Metrics>,
        log_label: &str,
    ) -> Result<(Indexer, watch::Receiver<u64>), StoreError> {
        let start = store.indexed_size()?;
        let (indexed_tx, indexed_rx) = watch::channel(start);
        Ok((
            Indexer {
                store,
                committed,
                indexed_tx,
                metrics,
                log_label: log_label.to_string(),
            },
            indexed_rx,
        ))
    }

    /// Runs until the sequencer stops, indexing everything it committed.
    pub fn run(mut self) {
        let waiter = match tokio::runtime::Builder::new_current_thread().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(log = %self.log_label, error = %e, "indexer cannot start");
                return;
            }
        };
        loop {
            let target = *self.committed.borrow_and_update();
            self.catch_up(target);
            // Err: the sequencer has stopped; one last catch-up, then end.
            if waiter.block_on(self.committed.changed()).is_err() {
                let target = *self.committed.borrow();
                self.catch_up(target);
                return;
            }
        }
    }

    /// Indexes up to `target`, retrying after a failure (a store that
    /// cannot be written is retried once a second; queries wait meanwhile).
    fn catch_up(&mut self, target: u64) {
        loop {
            let from = *self.indexed_tx.borrow();
            if from >= target {
                return;
            }
            let to = target.min(from + CHUNK);
            match self.index_range(from, to) {
                Ok(()) => {
                    self.indexed_tx.send_replace(to);
                    self.metrics
                        .indexed_size
                        .get_or_create(&self.log_label.clone().into())
                        .set(to as i64);
                }
                Err(e) => {
                    tracing::error!(log = %self.log_label, from, error = %e, "indexing failed; retrying in a second");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    /// Writes the index keys of entries `[from, to)` and the new progress.
    fn index_range(&self, from: u64, to: u64) -> Result<(), StoreError> {
        let mut batch = self.store.new_batch();
        let mut next = from;
        for row in self.store.scan(
            crate::store::cf::ENTRIES,
            &crate::store::be(from),
            &crate::store::be(to),
            None,
            false,
        ) {
            let (key, bytes) = row?;
            let index = crate::store::read_index_key(&key)?;
            if index != next {
                return Err(StoreError::Corrupt(format!("entry {next} is missing")));
            }
            let entry = decode_entry(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("entry {index}: {e}")))?;
            if let Some(event) = &entry.event {
                self.store.stage_index(&mut batch, index, event);
            }
            next += 1;
        }
        if next != to {
            return Err(StoreError::Corrupt(format!("entry {next} is missing")));
        }
        self.store.set_indexed_size(&mut batch, to);
        self.store.commit_unsynced(batch)
    }
}
