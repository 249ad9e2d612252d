//! The indexer: the only writer of a log's five query indexes (correlation
//! id, agent, principal, tool, time). It follows the committed size the
//! sequencer publishes, takes the new events from the sequencer's hand-off
//! (or, when that was full or after a restart, reads the entries back from
//! the store and decodes them) and writes
//! their index keys with its own progress in one (unsynced) batch, so the
//! indexes never sit in the sequencer's synced commit and never delay an
//! ack. After a crash it starts again from its persisted progress and
//! re-indexes what the lost tail held (index writes are idempotent).
//! Queries wait until it has covered the tree size they view.
//!
//! It is paced: after each catch-up it rests ([`PACE`]) before the next,
//! unless a query is waiting for it. Under load that turns about a thousand
//! small index writes a second (one per commit group) into a hundred larger
//! ones, which halves the indexer's CPU per event at 50,000 events/s; a
//! query never waits for the rest (it wakes the indexer).

use crate::metrics::Metrics;
use crate::store::{IndexValues, StoreError, StoreWriter};
use ledger_verify::entry::decode_entry;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// How long the indexer rests between catch-ups when no query waits (the
/// server's setting; tests choose their own).
pub const PACE: Duration = Duration::from_millis(10);

/// Committed events passed from the sequencer to the indexer in memory, so
/// the indexer need not read and decode them back. Bounded: while the
/// indexer is behind, further batches are dropped and read from the store.
#[derive(Default)]
pub struct Handoff {
    /// Batches in log order, and the events they hold.
    queue: std::sync::Mutex<(std::collections::VecDeque<Batch>, usize)>,
}

/// Events of consecutive entries (a commit group's), with their indexes.
type Batch = Vec<(u64, IndexValues)>;

/// Events a [`Handoff`] holds at most.
const HANDOFF_EVENTS: usize = 65_536;

impl Handoff {
    /// Offers a group's events, once they are durable.
    pub fn offer(&self, batch: Batch) {
        if batch.is_empty() {
            return;
        }
        let Ok(mut q) = self.queue.lock() else { return };
        if q.1 + batch.len() > HANDOFF_EVENTS {
            return;
        }
        q.1 += batch.len();
        q.0.push_back(batch);
    }

    /// The batches that start at entry `from`, follow one another and end
    /// before `to`, merged (up to [`CHUNK`] events), if the first is held
    /// (batches before `from` are dropped on the way).
    fn take(&self, from: u64, to: u64) -> Option<Batch> {
        let mut q = self.queue.lock().ok()?;
        let mut out: Option<Batch> = None;
        loop {
            let next = out
                .as_ref()
                .map_or(from, |b| b.last().map_or(from, |e| e.0 + 1));
            let Some((first, last)) = q.0.front().and_then(|b| Some((b.first()?.0, b.last()?.0)))
            else {
                return out;
            };
            if out.is_none() && last < from {
                let n = q.0.pop_front().map_or(0, |b| b.len());
                q.1 -= n;
                continue;
            }
            let room = out.as_ref().map_or(0, Vec::len) as u64 + (last - first + 1) <= CHUNK;
            if first != next || last >= to || (out.is_some() && !room) {
                return out;
            }
            let b = q.0.pop_front()?;
            q.1 -= b.len();
            match &mut out {
                None => out = Some(b),
                Some(o) => o.extend(b),
            }
        }
    }
}

/// Entries read and indexed per batch.
const CHUNK: u64 = 4096;

pub struct Indexer {
    store: StoreWriter,
    committed: watch::Receiver<u64>,
    handoff: Arc<Handoff>,
    indexed_tx: watch::Sender<u64>,
    /// Notified by a query that waits for entries not indexed yet: ends
    /// the rest early.
    wanted: Arc<Notify>,
    pace: Duration,
    metrics: Arc<Metrics>,
    log_label: String,
}

impl Indexer {
    /// An indexer starting from the store's persisted progress, and the
    /// feed of how far it has got. `wanted` wakes it from its rest.
    pub fn new(
        store: StoreWriter,
        committed: watch::Receiver<u64>,
        handoff: Arc<Handoff>,
        wanted: Arc<Notify>,
        pace: Duration,
        metrics: Arc<Metrics>,
        log_label: &str,
    ) -> Result<(Indexer, watch::Receiver<u64>), StoreError> {
        let mut start = store.indexed_size()?;
        let committed_size = *committed.borrow();
        if start > committed_size {
            // Indexes of a longer history than the record holds (a record
            // restored from an older copy beside newer indexes): rebuild.
            tracing::warn!(log = %log_label, indexed = start, size = committed_size, "the indexes are ahead of the log; rebuilding them from the entries");
            store.forget_indexes()?;
            start = 0;
        }
        let (indexed_tx, indexed_rx) = watch::channel(start);
        Ok((
            Indexer {
                store,
                committed,
                handoff,
                indexed_tx,
                wanted,
                pace,
                metrics,
                log_label: log_label.to_string(),
            },
            indexed_rx,
        ))
    }

    /// Runs until the sequencer stops, indexing everything it committed.
    pub fn run(mut self) {
        let waiter = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(log = %self.log_label, error = %e, "indexer cannot start");
                return;
            }
        };
        loop {
            let target = *self.committed.borrow_and_update();
            self.catch_up(target);
            // Rest, unless the sequencer has stopped (then the log is
            // shutting down and waits for the last catch-up).
            if self.committed.has_changed().is_ok() {
                waiter.block_on(async {
                    tokio::select! {
                        () = tokio::time::sleep(self.pace) => {}
                        () = self.wanted.notified() => {}
                    }
                });
            }
            // Err: the sequencer has stopped; one last catch-up, then end.
            if waiter.block_on(self.committed.changed()).is_err() {
                let target = *self.committed.borrow();
                self.catch_up(target);
                if let Err(e) = self.store.flush_index() {
                    tracing::warn!(log = %self.log_label, error = %e, "flushing the indexes on shutdown failed; the next start rebuilds what was lost");
                }
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
            match self.index_next(from, target) {
                Ok(to) => {
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

    /// Indexes the next entries from `from` (below `target`): the hand-off's
    /// batch that starts there, else up to a chunk read from the store.
    /// Writes their index keys and the new progress; returns it.
    fn index_next(&self, from: u64, target: u64) -> Result<u64, StoreError> {
        let mut batch = self.store.new_batch();
        let to = match self.handoff.take(from, target) {
            Some(events) => {
                let to = events.last().map_or(from, |e| e.0 + 1);
                self.store
                    .stage_indexes(&mut batch, events.iter().map(|(i, e)| (*i, e)));
                to
            }
            None => {
                let to = target.min(from + CHUNK);
                let mut events = Vec::new();
                self.store.visit_entries(from, to, |index, bytes| {
                    let entry = decode_entry(bytes)
                        .map_err(|e| StoreError::Corrupt(format!("entry {index}: {e}")))?;
                    if let Some(mut event) = entry.event {
                        events.push((index, IndexValues::take(&mut event)));
                    }
                    Ok(())
                })?;
                self.store
                    .stage_indexes(&mut batch, events.iter().map(|(i, e)| (*i, e)));
                to
            }
        };
        self.store.set_indexed_size(&mut batch, to);
        self.store.commit_index(batch)?;
        Ok(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(from: u64, n: u64) -> Batch {
        (from..from + n)
            .map(|i| {
                (
                    i,
                    IndexValues {
                        agent: format!("agent-{i}"),
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    #[test]
    fn the_handoff_gives_the_batches_that_start_where_the_indexer_is() {
        let h = Handoff::default();
        h.offer(batch(0, 3));
        h.offer(batch(3, 2));
        h.offer(batch(7, 2)); // 5 and 6 were a redaction-only group, say.
        // A batch past the committed target is not taken.
        assert!(h.take(0, 2).is_none());
        // Batches that follow one another are merged, up to the target.
        let b = h.take(0, 4).unwrap();
        assert_eq!(b.iter().map(|e| e.0).collect::<Vec<_>>(), vec![0, 1, 2]);
        h.offer(batch(9, 1));
        let b = h.take(3, 10).unwrap();
        assert_eq!(b.iter().map(|e| e.0).collect::<Vec<_>>(), vec![3, 4]);
        // Where the indexer read from the store instead, older batches
        // are dropped on the way.
        assert!(h.take(6, 10).is_none());
        let b = h.take(7, 10).unwrap();
        assert_eq!(b.iter().map(|e| e.0).collect::<Vec<_>>(), vec![7, 8, 9]);
        assert!(h.take(10, 11).is_none());
        assert_eq!(h.queue.lock().unwrap().1, 0);
    }

    #[test]
    fn merged_batches_stay_within_a_chunk() {
        let h = Handoff::default();
        h.offer(batch(0, CHUNK - 1));
        h.offer(batch(CHUNK - 1, 2));
        let b = h.take(0, u64::MAX).unwrap();
        assert_eq!(b.len() as u64, CHUNK - 1);
        let b = h.take(CHUNK - 1, u64::MAX).unwrap();
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn the_handoff_is_bounded() {
        let h = Handoff::default();
        h.offer(batch(0, HANDOFF_EVENTS as u64));
        h.offer(batch(HANDOFF_EVENTS as u64, 1));
        let q = h.queue.lock().unwrap();
        assert_eq!((q.0.len(), q.1), (1, HANDOFF_EVENTS));
    }
}
