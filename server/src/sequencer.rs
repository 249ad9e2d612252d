//! The sequencer: the one place that orders and commits a log's entries.
//!
//! One OS thread per log drains the queue of validated appends into commit
//! groups. For each group it assigns indexes, builds and encodes the entries
//! (hash chain, payload commitments), extends the tree and writes all of it
//! (entries, payloads, tiles, dedup records, the tree size and, when one is
//! due, a signed checkpoint) in one synced RocksDB batch. Only then are the
//! group's appends acknowledged. While one group is being fsync'd the next
//! one queues up, so group size adapts to load.
//!
//! Checkpoints are thinned: a group signs one only when the last signature
//! is at least `interval` old (so the first group after a quiet spell signs
//! at once), when a reader asked for one (`Msg::Sign`), or when the interval
//! runs out with entries still unsigned. The query indexes are not written
//! here: the indexer (`indexer.rs`) follows the committed size.

use crate::metrics::Metrics;
use crate::mirror::feed::{Feed, Held};
use crate::store::{
    CommitBatch, DedupRecord, IndexValues, StagedEntry, Store, StoreError, StoreWriter,
};
use ledger_proto::v1::{AppendAck, AuditEvent, LedgerEntry};
use ledger_verify::checkpoint::Checkpoint;
use ledger_verify::entry::{
    SALT_LEN, decode_entry, encode_entry, encode_entry_with_event, entry_len_with_event,
    payload_commitment,
};
use ledger_verify::hash::{Hash, leaf_hash};
use ledger_verify::note::NoteSigner;
use ledger_verify::tiles::{TILE_HEIGHT, TILE_WIDTH};
use ledger_verify::tree::{CompactRange, NodeId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};

/// A validated event waiting to be sequenced.
pub struct AppendJob {
    pub content: Content,
    /// Authenticated identity of the sender, recorded in the entry.
    pub writer: String,
    pub reply: oneshot::Sender<AckResult>,
    /// Share of the queue's byte budget, returned when the job is done.
    pub budget: Option<tokio::sync::OwnedSemaphorePermit>,
    /// SHA-256 of what was asked for (the event's canonical encoding, or the
    /// redaction's), kept with the event id: a later append under the same
    /// id is a retry only if its digest is the same.
    pub digest: Hash,
}

/// What a job appends.
pub enum Content {
    /// An event, prepared by the thread that received it.
    Event(Box<PreparedEvent>),
    /// A redaction: the entry records it instead of an event, and the
    /// target's stored payload is dropped in the same batch. `event_id`
    /// (`#redact/<target>`) only serves to make it idempotent.
    Redaction {
        event_id: String,
        redaction: ledger_proto::v1::Redaction,
    },
}

impl AppendJob {
    /// The id the job is deduplicated by.
    fn event_id(&self) -> &str {
        match &self.content {
            Content::Event(p) => &p.event_id,
            Content::Redaction { event_id, .. } => event_id,
        }
    }

    /// About what the job adds to a commit batch: its entry (the event and
    /// the entry's own fields), its salted payload, its dedup record, keys
    /// and the batch's per-record framing.
    fn staged_bytes(&self) -> usize {
        const FIXED: usize = 320;
        match &self.content {
            Content::Event(p) => FIXED + p.encoded.len() + p.payload.len() + 2 * p.event_id.len(),
            Content::Redaction {
                event_id,
                redaction,
            } => FIXED + redaction.reason.len() + 2 * event_id.len(),
        }
    }
}

/// An event made ready for its entry off the sequencer's thread: encoded
/// once without its payload, the payload committed to under a fresh salt,
/// its index values taken out. The sequencer then only wraps the encoded
/// event in its entry; the event itself is dropped where it was decoded.
pub struct PreparedEvent {
    pub event_id: String,
    /// What the query indexes key it by.
    pub index: IndexValues,
    /// The canonical encoding of the event with `payload` emptied, as the
    /// entry holds it.
    pub encoded: Vec<u8>,
    pub payload: Vec<u8>,
    pub salt: [u8; SALT_LEN],
    /// SHA-256(salt || payload); empty without a payload.
    pub commitment: Vec<u8>,
}

impl PreparedEvent {
    /// Encoded size of the event it was prepared from (payload included).
    pub fn event_len(&self) -> usize {
        let payload = if self.payload.is_empty() {
            0
        } else {
            prost::encoding::bytes::encoded_len(16, &self.payload)
        };
        self.encoded.len() + payload
    }

    /// Prepares `event`; also returns its [`event_digest`], computed from the
    /// same encoding (the payload, field 16, sits between fields 15 and 17).
    pub fn new(mut event: AuditEvent) -> Result<(PreparedEvent, Hash), SequencerError> {
        use prost::encoding::{WireType, encode_key, encode_varint, string};
        let payload = std::mem::take(&mut event.payload);
        let content_type = std::mem::take(&mut event.payload_content_type);
        // Sized once, for the event and the content type after it (the
        // length is computed once: `encode_to_vec` would compute it again).
        let before_payload = prost::Message::encoded_len(&event);
        let mut encoded =
            Vec::with_capacity(before_payload + string::encoded_len(17, &content_type));
        prost::Message::encode_raw(&event, &mut encoded);
        let mut payload_key = Vec::with_capacity(8);
        if !payload.is_empty() {
            encode_key(16, WireType::LengthDelimited, &mut payload_key);
            encode_varint(payload.len() as u64, &mut payload_key);
        }
        if !content_type.is_empty() {
            string::encode(17, &content_type, &mut encoded);
        }
        let digest = ledger_verify::hash::sha256(&[
            &encoded[..before_payload],
            &payload_key,
            &payload,
            &encoded[before_payload..],
        ]);
        event.payload_content_type = content_type;
        let salt = fresh_salt()?;
        let commitment = if payload.is_empty() {
            Vec::new()
        } else {
            payload_commitment(&salt, &payload).to_vec()
        };
        let prepared = PreparedEvent {
            event_id: std::mem::take(&mut event.event_id),
            index: IndexValues::take(&mut event),
            encoded,
            payload,
            salt,
            commitment,
        };
        Ok((prepared, digest))
    }
}

/// A salt from the operating system's randomness, drawn 128 salts at a time
/// per thread (one system call for many appends).
fn fresh_salt() -> Result<[u8; SALT_LEN], SequencerError> {
    const POOL: usize = 128 * SALT_LEN;
    thread_local! {
        static SALTS: std::cell::RefCell<(Box<[u8; POOL]>, usize)> =
            std::cell::RefCell::new((Box::new([0; POOL]), POOL));
    }
    SALTS.with_borrow_mut(|(pool, used)| {
        if *used == POOL {
            getrandom::fill(&mut pool[..])
                .map_err(|e| SequencerError::Randomness(e.to_string()))?;
            *used = 0;
        }
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&pool[*used..*used + SALT_LEN]);
        // Never hand out the same bytes twice.
        pool[*used..*used + SALT_LEN].fill(0);
        *used += SALT_LEN;
        Ok(salt)
    })
}

/// Largest encoded `LedgerEntry` a log holds: C2SP tlog-tiles entry bundles
/// prefix each entry with a big-endian u16 length.
pub const MAX_ENTRY_BYTES: usize = 65_535;

/// The digest of a request to append `event` (see [`AppendJob::digest`]).
pub fn event_digest(event: &AuditEvent) -> Hash {
    ledger_verify::hash::sha256(&[&prost::Message::encode_to_vec(event)])
}

/// The ack of a freshly appended entry.
fn new_ack(event_id: &str, index: u64, leaf: Hash, at: prost_types::Timestamp) -> AppendAck {
    AppendAck {
        event_id: event_id.to_string(),
        index,
        leaf_hash: leaf.to_vec(),
        integrated_at: Some(at),
        ..Default::default()
    }
}

/// The dedup key of the redaction of entry `target` ('#' cannot occur in a
/// client's event_id, so no event can take it).
pub fn redaction_key(target: u64) -> String {
    format!("#redact/{target}")
}

pub enum Msg {
    Append(Box<AppendJob>),
    /// Sign a checkpoint of every committed entry now (if any is unsigned)
    /// and answer with the latest checkpoint.
    Sign(oneshot::Sender<SignResult>),
    /// Finish everything queued before this message, then stop.
    Shutdown,
}

/// The result handed back for one job.
pub type AckResult = Result<AppendAck, SequencerError>;
type Reply = (oneshot::Sender<AckResult>, AckResult);
/// The answer to `Msg::Sign`: the latest checkpoint, covering every entry
/// committed before the request.
pub type SignResult = Result<Option<Arc<SignedCheckpoint>>, SequencerError>;

/// What the sequencer publishes: the latest signed checkpoint, and the
/// number of committed (durable, acked) entries, which may run ahead of it.
pub struct Feeds {
    pub checkpoints: watch::Receiver<Option<Arc<SignedCheckpoint>>>,
    pub committed: watch::Receiver<u64>,
    /// The committed events themselves, for the indexer.
    pub handoff: Arc<crate::indexer::Handoff>,
}
/// What `Sequencer::recover` hands back.
pub type Started = (Sequencer, Feeds);

#[derive(Debug, Clone, thiserror::Error)]
pub enum SequencerError {
    #[error("storage failure, nothing from this group was written: {0}")]
    Storage(String),
    #[error("stored entry {0} is unreadable")]
    Corrupt(u64),
    /// A sync of the write-ahead log failed: nothing written since the last
    /// durable group is acknowledged, and nothing more is accepted.
    #[error(
        "the log is halted: syncing its write-ahead log failed ({0}); nothing written since the last durable group is acknowledged, and no append is accepted until the server restarts"
    )]
    Halted(String),
    #[error("no randomness for payload salts, nothing from this group was written: {0}")]
    Randomness(String),
    #[error("signing the checkpoint failed, nothing from this group was written: {0}")]
    Signing(String),
    /// The event's entry would not fit a tile's entry bundle.
    #[error(
        "event: its stored entry would encode to {size} bytes, over the {MAX_ENTRY_BYTES} a log entry may hold (C2SP tlog-tiles entry bundles prefix each entry with a 16-bit length); move large content (tool arguments, results, prompts) into event.payload, which has no such limit"
    )]
    EntryTooLarge { size: usize },
    /// The event id is taken by a different event.
    #[error(
        "event_id {event_id} is already used by entry {index} for a different event (the digest of the event as received differs); a retry must resend the same event, a new event needs a new event_id"
    )]
    Conflict { event_id: String, index: u64 },
}

/// The latest signed checkpoint, as published to readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    pub note: String,
}

impl SignedCheckpoint {
    /// The API message: the note and its convenience fields.
    pub fn to_proto(&self) -> ledger_proto::v1::SignedCheckpoint {
        ledger_proto::v1::SignedCheckpoint {
            note: self.note.clone(),
            origin: self.checkpoint.origin.clone(),
            tree_size: self.checkpoint.size,
            root_hash: self.checkpoint.root.to_vec(),
        }
    }
}

/// One commit group on its way to disk.
struct Group {
    /// The writes of the group; taken by `seal`.
    batch: Option<CommitBatch>,
    /// Each job's answer, sent once the batch is durable.
    replies: Vec<Reply>,
    /// Event ids appended earlier in this group: where their ack is in
    /// `replies`, and their digests.
    in_group: HashMap<String, (usize, Hash)>,
    /// New entries staged (retries and refusals are not).
    appended: usize,
    /// Queue budget of the group's jobs, released once written.
    budgets: Vec<Option<tokio::sync::OwnedSemaphorePermit>>,
    /// The time recorded in every entry of the group.
    integrated_at: prost_types::Timestamp,
    /// The group's new events, handed to the indexer once durable (it reads
    /// them back from the store when this hand-off is full or skipped).
    to_index: Vec<(u64, IndexValues)>,
    /// The group's new entries for the mirror's feed, if it has one, and
    /// the entries whose payloads the group's redactions erase.
    to_mirror: Vec<Held>,
    erased: Vec<u64>,
}

fn now_timestamp() -> prost_types::Timestamp {
    SystemTime::now().into()
}

/// The in-memory right edge of the tree and of its tiles.
#[derive(Clone)]
struct TreeEdge {
    range: CompactRange,
    prev_leaf: Hash,
    /// Current (partial) row of each tile level.
    rows: Vec<Vec<Hash>>,
}

impl TreeEdge {
    fn size(&self) -> u64 {
        self.range.size()
    }
}

/// A written group (or checkpoint) on its way to the syncer, which makes
/// it durable and then publishes it.
#[derive(Default)]
struct Durable {
    replies: Vec<Reply>,
    /// Queue budget of the group's jobs, released once published.
    budgets: Vec<Option<tokio::sync::OwnedSemaphorePermit>>,
    /// The checkpoint written with it.
    checkpoint: Option<Arc<SignedCheckpoint>>,
    to_index: Vec<(u64, IndexValues)>,
    to_mirror: Vec<Held>,
    erased: Vec<u64>,
    /// Tree size once it is written, and the entries it appended.
    size: u64,
    appended: usize,
    /// When the group was started (None: a checkpoint alone).
    started: Option<Instant>,
    /// Whether anything was written (else there is nothing to sync).
    wrote: bool,
    /// Asked for the latest checkpoint once this is published.
    waiters: Vec<oneshot::Sender<SignResult>>,
}

/// What becomes visible once a group is durable: metrics, the mirror's
/// feed, the new checkpoint, the indexer's hand-off, the committed size,
/// then the acks. Owned by the syncer; the sequencer only reads it.
struct Publisher {
    checkpoint_tx: watch::Sender<Option<Arc<SignedCheckpoint>>>,
    committed_tx: watch::Sender<u64>,
    /// Committed events for the indexer.
    handoff: Arc<crate::indexer::Handoff>,
    /// Committed entries for the mirror, if the log has one.
    feed: Option<Arc<Feed>>,
    metrics: Arc<Metrics>,
    log_label: String,
}

impl Publisher {
    /// Publishes `d`, now durable; or, if `failed`, answers its jobs with
    /// that error and publishes nothing.
    fn publish(&self, d: Durable, failed: Option<&SequencerError>) {
        drop(d.budgets);
        if let Some(err) = failed {
            for (reply, _) in d.replies {
                let _ = reply.send(Err(err.clone()));
            }
            for w in d.waiters {
                let _ = w.send(Err(err.clone()));
            }
            return;
        }
        let label = self.log_label.clone().into();
        if let Some(started) = d.started {
            self.metrics
                .commit_seconds
                .get_or_create(&label)
                .observe(started.elapsed().as_secs_f64());
            self.metrics
                .batch_size
                .get_or_create(&label)
                .observe(d.appended as f64);
        }
        self.metrics
            .appended
            .get_or_create(&label)
            .inc_by(d.appended as u64);
        self.metrics
            .tree_size
            .get_or_create(&label)
            .set(d.size as i64);
        if let Some(feed) = &self.feed {
            // Before the new checkpoint and size are published: a mirror
            // round that covers a redaction never finds the payload it
            // erased, and finds the group's entries in the feed.
            feed.push(d.size - d.appended as u64, d.to_mirror);
            for target in d.erased {
                feed.erase(target);
            }
        }
        if let Some(cp) = d.checkpoint {
            self.metrics
                .signed_size
                .get_or_create(&label)
                .set(cp.checkpoint.size as i64);
            self.checkpoint_tx.send_replace(Some(cp));
        }
        self.handoff.offer(d.to_index);
        self.committed_tx.send_replace(d.size);
        for (reply, result) in d.replies {
            let _ = reply.send(result);
        }
        if !d.waiters.is_empty() {
            let latest = self.checkpoint_tx.borrow().clone();
            for w in d.waiters {
                let _ = w.send(Ok(latest.clone()));
            }
        }
    }
}

/// The error of every append once a sync failed.
fn halted_error(why: &str) -> SequencerError {
    SequencerError::Halted(why.to_string())
}

/// Makes written groups durable, in the order written: one sync of the
/// write-ahead log for every group written since the last one, then each
/// is published. A failed sync halts the log (what RocksDB has applied
/// cannot be taken back, so nothing after it may be acknowledged). Runs on
/// its own thread while the sequencer runs, and in place at start-up.
struct Syncer {
    store: StoreWriter,
    publisher: Publisher,
    /// Set once a sync failed: from then on the log acknowledges nothing
    /// until the server restarts.
    halted: std::sync::atomic::AtomicBool,
    origin: String,
}

impl Syncer {
    fn run(&self, written: std::sync::mpsc::Receiver<Durable>) {
        while let Ok(first) = written.recv() {
            let mut ready = vec![first];
            ready.extend(written.try_iter());
            self.settle(ready);
        }
    }

    /// Syncs what `ready` wrote, then publishes each (or, once the log is
    /// halted, answers each with the error).
    fn settle(&self, ready: Vec<Durable>) {
        let mut failed = self.refusal();
        if failed.is_none()
            && ready.iter().any(|d| d.wrote)
            && let Err(e) = self.store.sync_wal()
        {
            tracing::error!(log = %self.origin, error = %e, "syncing the write-ahead log failed: the log halts and acknowledges nothing more until the server restarts");
            self.publisher
                .metrics
                .commit_failures
                .get_or_create(&self.publisher.log_label.clone().into())
                .inc();
            failed = Some(self.halt(&e.to_string()));
        }
        for d in ready {
            self.publisher.publish(d, failed.as_ref());
        }
    }

    /// Halts the log; the error its appends get from now on.
    fn halt(&self, why: &str) -> SequencerError {
        self.halted.store(true, std::sync::atomic::Ordering::SeqCst);
        halted_error(why)
    }

    fn is_halted(&self) -> bool {
        self.halted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The error every append gets once the log is halted.
    fn refusal(&self) -> Option<SequencerError> {
        self.is_halted()
            .then(|| halted_error("an earlier sync failed"))
    }
}

pub struct Sequencer {
    origin: String,
    store: StoreWriter,
    signer: NoteSigner,
    edge: TreeEdge,
    max_batch: usize,
    /// Makes written groups durable and publishes them.
    syncer: Arc<Syncer>,
    /// Where written groups wait for the syncer's thread (set while `run`
    /// runs; None: synced and published in place).
    pipe: Option<std::sync::mpsc::Sender<Durable>>,
    metrics: Arc<Metrics>,
    log_label: String,
    /// Least time between two signed checkpoints (zero: every group).
    interval: Duration,
    /// Tree size of the latest signed checkpoint.
    signed_size: u64,
    /// When it was signed (None: not since start-up).
    last_signed: Option<Instant>,
}

/// How a sequencer runs (the log's settings it needs).
pub struct SequencerSettings {
    pub max_batch: usize,
    pub checkpoint_interval: Duration,
    /// Where committed entries go for the mirror (None: no mirror).
    pub feed: Option<Arc<Feed>>,
}

/// A start-up check that failed: the store, or what it holds.
enum Check {
    Store(StoreError),
    Mismatch(String),
}

impl From<StoreError> for Check {
    fn from(e: StoreError) -> Check {
        Check::Store(e)
    }
}

impl Check {
    fn into_recovery(self, origin: &str) -> RecoveryError {
        match self {
            Check::Store(e) => RecoveryError::Store(e),
            Check::Mismatch(detail) => RecoveryError::Mismatch {
                origin: origin.to_string(),
                detail,
            },
        }
    }
}

/// The last stored checkpoint must verify with the log key and sign the
/// root of the stored tree at its size (which may be short of the tree's:
/// entries acked after it were not signed yet when the server stopped).
/// Returns it and the tree at its size, rebuilt from the tiles.
fn check_last_checkpoint(
    store: &Store,
    size: u64,
    verifier: &ledger_verify::NoteVerifier,
) -> Result<(Option<Arc<SignedCheckpoint>>, CompactRange), Check> {
    let Some((cp_size, note)) = store.latest_checkpoint()? else {
        return if size == 0 {
            Ok((None, CompactRange::new()))
        } else {
            Err(Check::Mismatch(format!("{size} entries but no checkpoint")))
        };
    };
    let cp = ledger_verify::open_checkpoint(&note, verifier).map_err(|e| {
        Check::Mismatch(format!(
            "last checkpoint does not verify with the log key: {e}"
        ))
    })?;
    if cp.size != cp_size || cp_size > size {
        return Err(Check::Mismatch(format!(
            "tree holds {size} entries, last checkpoint is for {}",
            cp.size
        )));
    }
    let range = CompactRange::from_source(store, cp_size).map_err(|e| {
        Check::Mismatch(format!("cannot rebuild the tree of {cp_size} entries: {e}"))
    })?;
    if cp.root != range.root() {
        return Err(Check::Mismatch(format!(
            "root of the stored tree at {cp_size} is {}, checkpoint {cp_size} says {}",
            range.root(),
            cp.root
        )));
    }
    Ok((
        Some(Arc::new(SignedCheckpoint {
            checkpoint: cp,
            note,
        })),
        range,
    ))
}

/// The unsigned tail, entries `signed..size` (acked, not yet signed when the
/// server stopped), checked one by one because no signature covers them:
/// each hashes to its stored leaf where the tiles already hold one (a tile
/// that filled; the partial rows are written with checkpoints) and chains to
/// the one before; the newest signed entry is checked the same way, and
/// nothing may be stored past the end. Returns the newest leaf hash (zeros
/// for an empty log) and the tail's leaf hashes, in order.
fn check_tail(store: &Store, size: u64, signed: u64) -> Result<(Hash, Vec<Hash>), Check> {
    if store.entry(size)?.is_some() {
        return Err(Check::Mismatch(format!(
            "an entry is stored at index {size}, past the end of the tree"
        )));
    }
    let mut tail = Vec::with_capacity((size - signed.min(size)) as usize);
    if size == 0 {
        return Ok((Hash::ZERO, tail));
    }
    let first = signed.saturating_sub(1).min(size - 1);
    let mut prev: Option<Hash> = None;
    let mut row: Option<(u64, Vec<Hash>)> = None;
    for index in first..size {
        let bytes = store
            .entry(index)?
            .ok_or_else(|| Check::Mismatch(format!("entry {index} is missing")))?;
        let leaf = leaf_hash(&bytes);
        let tile = index / TILE_WIDTH;
        if row.as_ref().is_none_or(|(t, _)| *t != tile) {
            row = Some((tile, store.tile(0, tile)?));
        }
        let stored = row
            .as_ref()
            .and_then(|(_, r)| r.get((index % TILE_WIDTH) as usize));
        let signed_entry = index < signed;
        if stored.is_some_and(|s| *s != leaf) || (signed_entry && stored.is_none()) {
            return Err(Check::Mismatch(format!(
                "entry {index} does not match its leaf hash"
            )));
        }
        if let Some(p) = prev {
            let entry = decode_entry(&bytes)
                .map_err(|e| Check::Mismatch(format!("entry {index} does not decode: {e}")))?;
            if entry.prev_leaf_hash != p.as_bytes() {
                return Err(Check::Mismatch(format!(
                    "entry {index} does not chain to entry {}",
                    index - 1
                )));
            }
        }
        if !signed_entry {
            tail.push(leaf);
        }
        prev = Some(leaf);
    }
    Ok((prev.unwrap_or(Hash::ZERO), tail))
}

/// The partial tile row at each level of a tree of `size` leaves: the
/// first hashes of the stored row (which may hold more, written later).
fn partial_rows(store: &Store, size: u64) -> Result<Vec<Vec<Hash>>, Check> {
    let mut rows = Vec::new();
    let mut level = 0u32;
    loop {
        let hashes_at_level = size >> (level * u32::from(TILE_HEIGHT));
        if hashes_at_level == 0 {
            return Ok(rows);
        }
        let partial = (hashes_at_level % TILE_WIDTH) as usize;
        let row = if partial == 0 {
            Vec::new()
        } else {
            let mut r = store.tile(level as u8, hashes_at_level / TILE_WIDTH)?;
            if r.len() < partial {
                return Err(Check::Mismatch(format!(
                    "tile {level}/{} holds {} hashes, expected at least {partial}",
                    hashes_at_level / TILE_WIDTH,
                    r.len()
                )));
            }
            r.truncate(partial);
            r
        };
        rows.push(row);
        level += 1;
    }
}

/// Why a log cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "log {origin}: the stored tree no longer matches its last signed checkpoint ({detail}). \
         The data directory was modified outside ledgerd or restored from an inconsistent copy; \
         refusing to serve it. Audit it with `ledger-verify` and restore from a faithful backup."
    )]
    Mismatch { origin: String, detail: String },
}

impl Sequencer {
    /// Rebuilds the tree edge from the store and checks it against the last
    /// signed checkpoint before anything is served.
    pub fn recover(
        origin: &str,
        store: StoreWriter,
        signer: NoteSigner,
        settings: SequencerSettings,
        metrics: Arc<Metrics>,
        log_label: &str,
    ) -> Result<Started, RecoveryError> {
        let mismatch = |detail: String| RecoveryError::Mismatch {
            origin: origin.to_string(),
            detail,
        };
        let size = store.tree_size()?;
        // The tree at the last signed size, from the tiles; then the
        // unsigned tail replayed from the entries themselves.
        let (published, range) = check_last_checkpoint(&store, size, &signer.verifier())
            .map_err(|e| e.into_recovery(origin))?;
        let signed_size = published.as_ref().map_or(0, |c| c.checkpoint.size);
        let rows = partial_rows(&store, signed_size).map_err(|e| e.into_recovery(origin))?;
        let (prev_leaf, tail) =
            check_tail(&store, size, signed_size).map_err(|e| e.into_recovery(origin))?;

        let (checkpoint_tx, checkpoint_rx) = watch::channel(published);
        let (committed_tx, committed_rx) = watch::channel(size);
        metrics
            .tree_size
            .get_or_create(&log_label.into())
            .set(size as i64);
        let sync_writer = StoreWriter::new(store.store());
        let mut sequencer = Sequencer {
            origin: origin.to_string(),
            store,
            signer,
            edge: TreeEdge {
                range,
                prev_leaf,
                rows,
            },
            max_batch: settings.max_batch,
            syncer: Arc::new(Syncer {
                store: sync_writer,
                publisher: Publisher {
                    checkpoint_tx,
                    committed_tx,
                    handoff: Default::default(),
                    feed: settings.feed,
                    metrics: metrics.clone(),
                    log_label: log_label.to_string(),
                },
                halted: Default::default(),
                origin: origin.to_string(),
            }),
            pipe: None,
            metrics,
            log_label: log_label.to_string(),
            interval: settings.checkpoint_interval,
            signed_size,
            last_signed: None,
        };
        if size > signed_size {
            // Acked before the server stopped, checked above: extend the
            // tree with them (rewriting any tile they filled, byte for
            // byte), then sign them.
            let mut batch = sequencer.store.new_batch();
            for leaf in tail {
                sequencer.extend_tree(&mut batch, leaf);
            }
            sequencer.store.commit(batch)?;
            sequencer
                .sign_now(Vec::new())
                .map_err(|e| mismatch(e.to_string()))?;
            if sequencer.is_halted() {
                return Err(mismatch(
                    "syncing the checkpoint of the unsigned tail failed".into(),
                ));
            }
            tracing::info!(log = %origin, from = signed_size, to = size, "signed the entries the last run acked but had not signed yet");
        }
        let handoff = sequencer.syncer.publisher.handoff.clone();
        Ok((
            sequencer,
            Feeds {
                checkpoints: checkpoint_rx,
                committed: committed_rx,
                handoff,
            },
        ))
    }

    /// Runs until a `Shutdown` message (or every sender is gone), committing
    /// everything queued before it and signing it. A second thread, the
    /// syncer, makes written groups durable and publishes them, so the next
    /// group is prepared and written while the last one's sync runs.
    pub fn run(mut self, rx: mpsc::Receiver<Msg>) {
        // Only for waiting on the queue with a deadline (the next signature).
        let timer = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(log = %self.origin, error = %e, "sequencer cannot start its timer");
                return;
            }
        };
        let (pipe, written) = std::sync::mpsc::channel();
        let syncer = self.syncer.clone();
        std::thread::scope(|scope| {
            let spawned = std::thread::Builder::new()
                .name(format!("syncer-{}", self.log_label))
                .spawn_scoped(scope, move || syncer.run(written));
            if let Err(e) = spawned {
                tracing::error!(log = %self.origin, error = %e, "sequencer cannot start its syncer");
                return;
            }
            self.pipe = Some(pipe);
            self.serve(rx, &timer);
            if let Err(e) = self.sign_now(Vec::new()) {
                tracing::error!(log = %self.origin, error = %e, "signing the last entries on shutdown failed; the next start signs them");
            }
            // The syncer finishes what was written, then stops.
            self.pipe = None;
        });
        if let Err(e) = self.store.flush() {
            tracing::warn!(log = %self.origin, error = %e, "flush on shutdown failed (the WAL still holds everything)");
        }
        tracing::info!(log = %self.origin, size = self.edge.size(), "sequencer stopped");
    }

    /// The sequencer's loop: groups from the queue, and signatures when due.
    fn serve(&mut self, mut rx: mpsc::Receiver<Msg>, timer: &tokio::runtime::Runtime) {
        let mut stop = false;
        while !stop {
            let first = match self.signature_due() {
                None => rx.blocking_recv(),
                Some(due) => {
                    let waited = timer
                        .block_on(async { tokio::time::timeout_at(due.into(), rx.recv()).await });
                    match waited {
                        Ok(msg) => msg,
                        Err(_elapsed) => {
                            if let Err(e) = self.sign_now(Vec::new()) {
                                tracing::error!(log = %self.origin, error = %e, "signing a checkpoint failed; retrying after the interval");
                                self.last_signed = Some(Instant::now());
                            }
                            continue;
                        }
                    }
                }
            };
            let Some(first) = first else { break };
            let mut jobs = Vec::with_capacity(64);
            let mut waiters = Vec::new();
            match first {
                Msg::Append(j) => jobs.push(*j),
                Msg::Sign(w) => waiters.push(w),
                Msg::Shutdown => break,
            }
            while jobs.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(Msg::Append(j)) => jobs.push(*j),
                    Ok(Msg::Sign(w)) => waiters.push(w),
                    Ok(Msg::Shutdown) => {
                        stop = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.metrics
                .queue_depth
                .get_or_create(&self.log_label.clone().into())
                .set(rx.len() as i64);
            if !jobs.is_empty() {
                self.commit_group(jobs, !waiters.is_empty());
            }
            if !waiters.is_empty()
                && let Err(e) = self.sign_now(waiters)
            {
                tracing::error!(log = %self.origin, error = %e, "signing a checkpoint on request failed");
            }
        }
    }

    /// When the next checkpoint must be signed: some committed entries are
    /// not signed yet and the interval since the last signature runs out
    /// then (None: everything is signed).
    fn signature_due(&self) -> Option<Instant> {
        if self.edge.size() == self.signed_size {
            return None;
        }
        Some(
            self.last_signed
                .map_or_else(Instant::now, |t| t + self.interval),
        )
    }

    /// Whether the group now being sealed signs a checkpoint.
    fn signs_now(&self) -> bool {
        self.last_signed
            .is_none_or(|t| t.elapsed() >= self.interval)
    }

    /// Signs and stores a checkpoint of every written entry, if any is
    /// unsigned; once it (and everything before it) is durable it is
    /// published and `waiters` get the latest checkpoint. An error here is
    /// also theirs.
    pub fn sign_now(
        &mut self,
        waiters: Vec<oneshot::Sender<SignResult>>,
    ) -> Result<(), SequencerError> {
        let mut checkpoint = None;
        let mut wrote = false;
        if self.edge.size() > self.signed_size && !self.is_halted() {
            let mut batch = self.store.new_batch();
            let signed = self.sign_into(&mut batch).and_then(|cp| {
                self.store.write(batch).map_err(|e| {
                    tracing::error!(log = %self.origin, error = %e, "storing a checkpoint failed");
                    SequencerError::Storage(e.to_string())
                })?;
                Ok(cp)
            });
            match signed {
                Ok(cp) => {
                    self.signed(&cp);
                    checkpoint = Some(cp);
                    wrote = true;
                }
                Err(e) => {
                    for w in waiters {
                        let _ = w.send(Err(e.clone()));
                    }
                    return Err(e);
                }
            }
        }
        self.hand_over(Durable {
            checkpoint,
            waiters,
            wrote,
            size: self.edge.size(),
            ..Durable::default()
        });
        Ok(())
    }

    /// Whether a failed sync halted the log.
    fn is_halted(&self) -> bool {
        self.syncer.is_halted()
    }

    /// Whether the log has a mirror to feed.
    fn feeds_mirror(&self) -> bool {
        self.syncer.publisher.feed.is_some()
    }

    /// Passes a written group to the syncer's thread; without one (at
    /// start-up), the syncer settles it here.
    fn hand_over(&self, d: Durable) {
        match &self.pipe {
            Some(pipe) => {
                if let Err(std::sync::mpsc::SendError(d)) = pipe.send(d) {
                    // The syncer is gone: nothing written is acknowledged.
                    let err = self.syncer.halt("the syncer stopped");
                    self.syncer.publisher.publish(d, Some(&err));
                }
            }
            None => self.syncer.settle(vec![d]),
        }
    }

    /// Signs a checkpoint of the current tree into `batch`.
    fn sign_into(&self, batch: &mut CommitBatch) -> Result<Arc<SignedCheckpoint>, SequencerError> {
        let size = self.edge.size();
        // The tiles' right edge is stored with each checkpoint (not each
        // group): readers only ask for tiles of signed trees, and start-up
        // rebuilds anything after the last signature from the entries.
        self.flush_partial_rows(batch);
        let cp = Checkpoint::new(&self.origin, size, self.edge.range.root());
        // Only fails with an invalid origin, which start-up refuses.
        let note = cp
            .sign(&self.signer)
            .map_err(|e| SequencerError::Signing(e.to_string()))?;
        self.store.stage_checkpoint(batch, size, &note);
        Ok(Arc::new(SignedCheckpoint {
            checkpoint: cp,
            note,
        }))
    }

    /// A checkpoint is written (durable and published once the syncer has
    /// synced it): the next signature is due an interval from now.
    fn signed(&mut self, cp: &SignedCheckpoint) {
        self.signed_size = cp.checkpoint.size;
        self.last_signed = Some(Instant::now());
    }

    /// Fills in which checkpoint covers an acked entry (see the API's
    /// `AppendAck.checkpoint_size` and `checkpoint_due`).
    fn cover(&self, ack: &mut AppendAck) {
        if ack.index < self.signed_size {
            ack.checkpoint_size = self.signed_size;
            ack.checkpoint_due = None;
        } else if let Some(due) = self.signature_due() {
            let wait = due.saturating_duration_since(Instant::now());
            ack.checkpoint_size = 0;
            ack.checkpoint_due = Some((SystemTime::now() + wait).into());
        }
    }

    fn ack_for_existing(&self, index: u64, event_id: &str) -> Result<AppendAck, SequencerError> {
        let bytes = self
            .store
            .entry(index)
            .map_err(|e| SequencerError::Storage(e.to_string()))?
            .ok_or(SequencerError::Corrupt(index))?;
        let entry = decode_entry(&bytes).map_err(|_| SequencerError::Corrupt(index))?;
        Ok(AppendAck {
            event_id: event_id.to_string(),
            index,
            leaf_hash: leaf_hash(&bytes).to_vec(),
            integrated_at: entry.integrated_at,
            duplicate: true,
            ..Default::default()
        })
    }

    /// Adds the encoded entry `bytes` at the next index: chains and hashes
    /// it into the tree, and stores it with its dedup record. Returns its
    /// leaf hash.
    fn push_entry(
        &mut self,
        batch: &mut CommitBatch,
        bytes: &[u8],
        dedup_id: &str,
        digest: Hash,
        payload: Option<(&[u8], &[u8])>,
    ) -> Hash {
        let leaf = leaf_hash(bytes);
        self.extend_tree(batch, leaf);
        self.edge.prev_leaf = leaf;
        self.store.stage_entry(
            batch,
            StagedEntry {
                index: self.edge.size() - 1,
                bytes,
                dedup_id,
                digest: Some(digest),
                payload,
            },
        );
        leaf
    }

    /// Commits one group: prepare (dedup look-ups, salts), stage each job,
    /// seal (sign and write the batch, synced), publish (checkpoint, acks).
    fn commit_group(&mut self, jobs: Vec<AppendJob>, sign: bool) {
        let started = Instant::now();
        if let Some(feed) = &self.syncer.publisher.feed {
            feed.free_released();
        }
        if let Some(err) = self.syncer.refusal() {
            for j in jobs {
                let _ = j.reply.send(Err(err.clone()));
            }
            return;
        }
        let existing = match self.dedup_records(&jobs) {
            Ok(v) => v,
            Err(err) => {
                for j in jobs {
                    let _ = j.reply.send(Err(err.clone()));
                }
                return;
            }
        };
        let before = self.edge.clone();
        // Sized for the group up front: a batch that grows by doubling
        // copies a large group's writes once more on the way.
        let size = jobs.iter().map(AppendJob::staged_bytes).sum::<usize>() + 4096;
        let mut group = Group {
            batch: Some(self.store.new_batch_sized(size)),
            replies: Vec::with_capacity(jobs.len()),
            in_group: HashMap::with_capacity(jobs.len()),
            appended: 0,
            budgets: Vec::with_capacity(jobs.len()),
            integrated_at: now_timestamp(),
            to_index: Vec::with_capacity(jobs.len()),
            to_mirror: Vec::with_capacity(if self.feeds_mirror() { jobs.len() } else { 0 }),
            erased: Vec::new(),
        };
        for (job, existing) in jobs.into_iter().zip(existing) {
            self.stage_job(&mut group, job, existing);
        }
        match self.seal(&mut group, sign || self.signs_now()) {
            Ok(published) => self.publish(group, published, started),
            Err(err) => self.fail_group(before, group.replies, err),
        }
    }

    /// The dedup records of the group's event ids.
    fn dedup_records(
        &self,
        jobs: &[AppendJob],
    ) -> Result<Vec<Option<DedupRecord>>, SequencerError> {
        let ids: Vec<&str> = jobs.iter().map(AppendJob::event_id).collect();
        self.store
            .dedup_many(&ids)
            .map_err(|e| SequencerError::Storage(e.to_string()))
    }

    /// One job: a retry or a conflict answered from its dedup record or
    /// from earlier in the group, else a new entry staged into the batch.
    fn stage_job(&mut self, g: &mut Group, job: AppendJob, existing: Option<DedupRecord>) {
        let event_id = job.event_id().to_string();
        g.budgets.push(job.budget);
        let digest = job.digest;
        let conflict = |index| SequencerError::Conflict {
            event_id: event_id.clone(),
            index,
        };
        if let Some(rec) = existing {
            // Records from before digests were kept compare by id alone.
            let ack = if rec.digest.is_some_and(|d| d != digest) {
                Err(conflict(rec.index))
            } else {
                self.ack_for_existing(rec.index, &event_id)
            };
            g.replies.push((job.reply, ack));
            return;
        }
        if let Some(&(first, first_digest)) = g.in_group.get(&event_id) {
            let ack = match &g.replies[first].1 {
                Ok(first) if first_digest != digest => Err(conflict(first.index)),
                Ok(first) => Ok(AppendAck {
                    duplicate: true,
                    ..first.clone()
                }),
                Err(e) => Err(e.clone()), // Not kept: only acks are.
            };
            g.replies.push((job.reply, ack));
            return;
        }
        let index = self.edge.size();
        let at = g.integrated_at;
        let Some(batch) = g.batch.as_mut() else {
            return; // Only taken by `seal`, after every job.
        };
        let mut entry = LedgerEntry {
            index,
            prev_leaf_hash: self.edge.prev_leaf.to_vec(),
            integrated_at: Some(at),
            writer: job.writer,
            ..Default::default()
        };
        let leaf = match job.content {
            Content::Redaction { redaction, .. } => {
                let target = redaction.target_index;
                entry.redaction = Some(redaction);
                let bytes = encode_entry(&entry);
                let leaf = self.push_entry(batch, &bytes, &event_id, digest, None);
                self.store.stage_erasure(batch, target);
                if self.feeds_mirror() {
                    g.to_mirror.push(Held {
                        entry: bytes.into(),
                        payload: None,
                        redacts: Some(target),
                    });
                    g.erased.push(target);
                }
                leaf
            }
            Content::Event(p) => {
                let PreparedEvent {
                    index: values,
                    encoded,
                    payload,
                    salt,
                    commitment,
                    ..
                } = *p;
                entry.payload_commitment = commitment;
                entry.payload_size = payload.len() as u64;
                let size = entry_len_with_event(&entry, encoded.len());
                if size > MAX_ENTRY_BYTES {
                    g.replies
                        .push((job.reply, Err(SequencerError::EntryTooLarge { size })));
                    return;
                }
                let bytes = encode_entry_with_event(&entry, &encoded);
                let staged = (!payload.is_empty()).then_some((&salt[..], &payload[..]));
                let leaf = self.push_entry(batch, &bytes, &event_id, digest, staged);
                g.to_index.push((index, values));
                if self.feeds_mirror() {
                    g.to_mirror.push(Held {
                        entry: bytes.into(),
                        payload: (!payload.is_empty()).then(|| (salt, payload.into())),
                        redacts: None,
                    });
                }
                leaf
            }
        };
        let ack = new_ack(&event_id, index, leaf, at);
        g.in_group.insert(event_id, (g.replies.len(), digest));
        g.replies.push((job.reply, Ok(ack)));
        g.appended += 1;
    }

    /// Writes the group, synced, with a signed checkpoint of the new size if
    /// `sign`; nothing to write when every job was a retry or refused.
    fn seal(
        &mut self,
        g: &mut Group,
        sign: bool,
    ) -> Result<Option<Arc<SignedCheckpoint>>, SequencerError> {
        let Some(mut batch) = g.batch.take() else {
            return Ok(None);
        };
        if g.appended == 0 {
            return Ok(None);
        }
        self.store.set_tree_size(&mut batch, self.edge.size());
        let signed = if sign {
            Some(self.sign_into(&mut batch)?)
        } else {
            None
        };
        // Not synced here: the syncer syncs the write-ahead log for every
        // group written since its last sync, and only then are they acked.
        self.store.write(batch).map_err(|e| {
            tracing::error!(log = %self.origin, error = %e, "commit failed; group not acknowledged");
            SequencerError::Storage(e.to_string())
        })?;
        Ok(signed)
    }

    /// After the group's write: what covers its acks, then on to the
    /// syncer, which acks them once the write is durable.
    fn publish(&mut self, g: Group, published: Option<Arc<SignedCheckpoint>>, started: Instant) {
        if let Some(cp) = &published {
            self.signed(cp);
        }
        let mut replies = g.replies;
        for (_, result) in &mut replies {
            if let Ok(ack) = result {
                self.cover(ack);
            }
        }
        self.hand_over(Durable {
            replies,
            budgets: g.budgets,
            checkpoint: published,
            to_index: g.to_index,
            to_mirror: g.to_mirror,
            erased: g.erased,
            size: self.edge.size(),
            appended: g.appended,
            started: Some(started),
            wrote: g.appended > 0,
            waiters: Vec::new(),
        });
    }

    fn fail_group(&mut self, before: TreeEdge, replies: Vec<Reply>, err: SequencerError) {
        self.edge = before;
        self.metrics
            .commit_failures
            .get_or_create(&self.log_label.clone().into())
            .inc();
        for (reply, _) in replies {
            let _ = reply.send(Err(err.clone()));
        }
    }

    /// Adds a leaf to the tree and records every node at a tile boundary
    /// level in its tile row, writing rows that fill up.
    fn extend_tree(&mut self, batch: &mut CommitBatch, leaf: Hash) {
        let mut completed: Vec<(NodeId, Hash)> = Vec::with_capacity(2);
        self.edge.range.push_with(leaf, |id, h| {
            if id.level % TILE_HEIGHT == 0 {
                completed.push((id, *h));
            }
        });
        for (id, h) in completed {
            let level = (id.level / TILE_HEIGHT) as usize;
            if self.edge.rows.len() <= level {
                self.edge.rows.push(Vec::new());
            }
            let row = &mut self.edge.rows[level];
            row.push(h);
            if row.len() as u64 == TILE_WIDTH {
                self.store
                    .put_tile(batch, level as u8, id.index / TILE_WIDTH, row);
                row.clear();
            }
        }
    }

    /// Writes the partial rows (the right edge of each tile level).
    fn flush_partial_rows(&self, batch: &mut CommitBatch) {
        let size = self.edge.size();
        for (level, row) in self.edge.rows.iter().enumerate() {
            if row.is_empty() {
                continue;
            }
            let hashes_at_level = size >> (level as u32 * u32::from(TILE_HEIGHT));
            self.store
                .put_tile(batch, level as u8, hashes_at_level / TILE_WIDTH, row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Vec<AuditEvent> {
        let full = AuditEvent {
            event_id: "e-1".into(),
            correlation_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            agent_id: "agent".into(),
            kind: 3,
            attributes: [("a".to_string(), "b".to_string())].into(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 1,
            }),
            payload: b"{\"rows\": 1200}".to_vec(),
            payload_content_type: "application/json".into(),
            ..Default::default()
        };
        vec![
            AuditEvent::default(),
            full.clone(),
            AuditEvent {
                payload: Vec::new(),
                ..full.clone()
            },
            AuditEvent {
                payload_content_type: String::new(),
                ..full.clone()
            },
            AuditEvent {
                payload: vec![0; 70_000],
                ..full
            },
        ]
    }

    #[test]
    fn a_prepared_event_has_the_digest_and_encoding_of_the_event() {
        for event in events() {
            let (p, digest) = PreparedEvent::new(event.clone()).unwrap();
            assert_eq!(digest, event_digest(&event), "{event:?}");
            let stripped = AuditEvent {
                payload: Vec::new(),
                ..event.clone()
            };
            assert_eq!(p.event_id, event.event_id);
            let mut indexed = event.clone();
            assert_eq!(p.index, IndexValues::take(&mut indexed));
            assert_eq!(p.index.agent, event.agent_id);
            assert_eq!(p.encoded, prost::Message::encode_to_vec(&stripped));
            assert_eq!(p.payload, event.payload);
            // What the queue's byte budget is charged.
            assert_eq!(p.event_len(), prost::Message::encoded_len(&event));
            if event.payload.is_empty() {
                assert!(p.commitment.is_empty());
            } else {
                assert_eq!(
                    p.commitment,
                    payload_commitment(&p.salt, &event.payload).to_vec()
                );
            }
        }
    }

    #[test]
    fn salts_are_never_reused() {
        let salts: std::collections::HashSet<_> =
            (0..1000).map(|_| fresh_salt().unwrap()).collect();
        assert_eq!(salts.len(), 1000);
        assert!(!salts.contains(&[0u8; SALT_LEN]));
    }
}
