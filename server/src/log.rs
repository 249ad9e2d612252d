//! One log (one tenant): its store, signing key, sequencer queue and latest
//! checkpoint. Handlers talk to a `Log`; they never touch the store's write
//! path.

use crate::metrics::Metrics;
use crate::sequencer::{
    AppendJob, Content, Feeds, Msg, PreparedEvent, RecoveryError, Sequencer, SequencerError,
    SequencerSettings, SignedCheckpoint,
};
use crate::store::{Store, StoreWriter};
use crate::validate::{Limits, validate_event};
use anyhow::Context;
use ledger_proto::v1::{AppendAck, AuditEvent};
use ledger_verify::note::{NoteSigner, NoteVerifier};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tonic::{Code, Status};

/// Receipts computed at once per log (see `Log::receipt_slots`).
const RECEIPT_THREADS: usize = 4;

/// How an append was refused: a gRPC status plus the offending field, if any.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub code: Code,
    pub message: String,
    pub field: String,
}

impl Rejection {
    pub fn to_status(&self) -> Status {
        Status::new(self.code, self.message.clone())
    }
}

/// Settings of one log.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub id: String,
    pub origin: String,
    pub dir: PathBuf,
    /// Private key file (`PRIVATE+KEY+…`); generated on first start if absent.
    pub key_file: PathBuf,
    pub queue_events: usize,
    pub queue_bytes: usize,
    pub max_batch: usize,
    /// Least time between two signed checkpoints.
    pub checkpoint_interval: Duration,
    pub limits: Limits,
    /// The log is published to an object-storage mirror.
    pub mirrored: bool,
    /// Acks wait until the mirror holds the entry (see [`Log::settle`]).
    pub ack_after_mirror: bool,
    /// The indexer's rest between catch-ups ([`crate::indexer::PACE`]).
    pub index_pace: Duration,
    /// Bound of the mirror's in-memory feed
    /// ([`crate::mirror::feed::FEED_BYTES`]).
    pub feed_bytes: usize,
}

/// How long an ack waits for the mirror (with `ack_after_mirror`).
pub const MIRROR_WAIT: Duration = Duration::from_secs(30);

/// How long a query waits for the indexer before giving up.
const INDEX_WAIT: Duration = Duration::from_secs(30);

pub struct Log {
    pub id: String,
    pub origin: String,
    /// The read side of the store: handlers never write.
    pub store: Arc<Store>,
    pub verifier: NoteVerifier,
    pub limits: Limits,
    tx: mpsc::Sender<Msg>,
    budget: Arc<Semaphore>,
    /// Budget units are KiB so large queues fit in a semaphore's permits.
    budget_unit: usize,
    checkpoint: watch::Receiver<Option<Arc<SignedCheckpoint>>>,
    /// Writes the anchored and mirrored sizes (the sequencer and the indexer
    /// hold the other writers).
    meta_record: StoreWriter,
    /// Whether a mirror publishes this log, and whether acks wait for it.
    mirror_on: bool,
    ack_after_mirror: bool,
    /// Committed entries handed to the mirror in memory.
    mirror_feed: Option<Arc<crate::mirror::feed::Feed>>,
    /// The newest checkpoint the mirror holds (with everything below it).
    mirrored: watch::Sender<Option<Arc<SignedCheckpoint>>>,
    /// Entries committed (durable), as the sequencer publishes them.
    committed: watch::Receiver<u64>,
    /// Entries the query indexes cover (the indexer's progress).
    indexed: watch::Receiver<u64>,
    /// Wakes the indexer when a query waits for it.
    index_wanted: Arc<tokio::sync::Notify>,
    /// Hashed tiles shared by the receipts' inclusion proofs.
    tiles: Arc<crate::store::TileInteriors>,
    /// Receipts being read from the store at once: each is a few reads and
    /// a proof, so a few threads keep the cores busy, while one blocking
    /// thread per waiting receipt (thousands under load) would thrash them.
    receipt_slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    /// The sequencer's and the indexer's threads, joined on shutdown.
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// Loads the log's signing key, creating one (mode 0600) on first start.
pub fn load_or_create_key(path: &Path, origin: &str) -> anyhow::Result<NoteSigner> {
    if path.exists() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading key {}", path.display()))?;
        let signer: NoteSigner = text
            .trim()
            .parse()
            .with_context(|| format!("{} is not a PRIVATE+KEY+… signing key", path.display()))?;
        anyhow::ensure!(
            signer.name() == origin,
            "key {} is for origin {:?}, but the log's origin is {origin:?}",
            path.display(),
            signer.name()
        );
        return Ok(signer);
    }
    let signer = NoteSigner::generate(origin)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    write_private(path, &signer.to_private_key_string())?;
    tracing::info!(key = %path.display(), verifier = %signer.verifier(), "generated a new log signing key");
    Ok(signer)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(format!("{text}\n").as_bytes())?;
    f.sync_all()?;
    Ok(())
}

impl Log {
    /// Opens the store, checks it against its last checkpoint and starts the
    /// sequencer thread.
    pub fn open(settings: LogSettings, metrics: Arc<Metrics>) -> anyhow::Result<Arc<Log>> {
        let signer = load_or_create_key(&settings.key_file, &settings.origin)?;
        std::fs::create_dir_all(&settings.dir)?;
        let writer = StoreWriter::open(&settings.dir.join("db"))
            .with_context(|| format!("opening the store of log {}", settings.id))?;
        let store = writer.store().clone();
        let verifier = signer.verifier();
        let feed = settings
            .mirrored
            .then(|| Arc::new(crate::mirror::feed::Feed::new(settings.feed_bytes)));
        let (sequencer, feeds) = Sequencer::recover(
            &settings.origin,
            writer,
            signer,
            SequencerSettings {
                max_batch: settings.max_batch,
                checkpoint_interval: settings.checkpoint_interval,
                feed: feed.clone(),
            },
            metrics.clone(),
            &settings.id,
        )
        .map_err(|e: RecoveryError| anyhow::anyhow!(e))?;
        let Feeds {
            checkpoints: checkpoint,
            committed,
            handoff,
        } = feeds;
        let committed_rx = committed.clone();
        let index_wanted = Arc::new(tokio::sync::Notify::new());
        let (indexer, indexed) = crate::indexer::Indexer::new(
            StoreWriter::new(&store),
            committed,
            handoff,
            index_wanted.clone(),
            settings.index_pace,
            metrics.clone(),
            &settings.id,
        )
        .with_context(|| format!("starting the indexer of log {}", settings.id))?;
        let (tx, rx) = mpsc::channel(settings.queue_events.max(1));
        let indexer = std::thread::Builder::new()
            .name(format!("indexer-{}", settings.id))
            .spawn(move || indexer.run())?;
        let handle = std::thread::Builder::new()
            .name(format!("sequencer-{}", settings.id))
            .spawn(move || sequencer.run(rx))?;
        let budget_unit = 1024;
        let units = (settings.queue_bytes / budget_unit).clamp(1, Semaphore::MAX_PERMITS);
        let meta_record = StoreWriter::new(&store);
        let mirrored_size = store.mirrored_size()?;
        let mirrored_cp = match mirrored_size {
            0 => None,
            n => {
                let note = store.checkpoint(n)?.ok_or_else(|| {
                    anyhow::anyhow!(
                        "log {}: the mirrored checkpoint of size {n} is not in the store",
                        settings.id
                    )
                })?;
                let checkpoint =
                    ledger_verify::open_checkpoint(&note, &verifier).with_context(|| {
                        format!("log {}: the mirrored checkpoint of size {n}", settings.id)
                    })?;
                Some(Arc::new(SignedCheckpoint { checkpoint, note }))
            }
        };
        Ok(Arc::new(Log {
            meta_record,
            mirror_on: settings.mirrored,
            mirror_feed: feed,
            ack_after_mirror: settings.mirrored && settings.ack_after_mirror,
            mirrored: watch::channel(mirrored_cp).0,
            committed: committed_rx,
            id: settings.id,
            origin: settings.origin,
            store,
            verifier,
            limits: settings.limits,
            tx,
            budget: Arc::new(Semaphore::new(units)),
            budget_unit,
            checkpoint,
            indexed,
            index_wanted,
            tiles: Default::default(),
            receipt_slots: Arc::new(Semaphore::new(RECEIPT_THREADS)),
            metrics,
            threads: std::sync::Mutex::new(vec![handle, indexer]),
        }))
    }

    /// The latest checkpoint, after asking the sequencer to sign every entry
    /// acked so far (so a reader sees its own writes: checkpoints are
    /// thinned, and an acked entry may not be signed yet).
    pub async fn fresh_checkpoint(&self) -> Result<Option<Arc<SignedCheckpoint>>, Rejection> {
        let unavailable = |message: String| Rejection {
            code: Code::Unavailable,
            message,
            field: String::new(),
        };
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Sign(reply)).await.is_err() {
            // Shutting down: everything was signed on the way out.
            return Ok(self.latest_checkpoint());
        }
        match rx.await {
            Ok(Ok(cp)) => Ok(cp),
            Ok(Err(e)) => Err(unavailable(format!("signing a checkpoint failed: {e}"))),
            Err(_) => Ok(self.latest_checkpoint()),
        }
    }

    /// Tree size of the latest anchored checkpoint (0: none yet); read off
    /// the async threads.
    pub async fn anchored_size(self: &Arc<Self>) -> u64 {
        let log = self.clone();
        tokio::task::spawn_blocking(move || log.store.anchored_size())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0)
    }

    /// Records that the checkpoint of `size` entries is anchored (off the
    /// async threads; not synced: losing it only means anchoring it again).
    pub async fn record_anchor(self: &Arc<Self>, size: u64) -> Result<(), String> {
        let log = self.clone();
        tokio::task::spawn_blocking(move || log.meta_record.set_anchored_size(size))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// The checkpoint anchoring may vouch for: with a mirror, the newest one
    /// mirrored (so anchors never get ahead of what a restore can read);
    /// else the latest signed.
    pub fn anchorable_checkpoint(&self) -> Option<Arc<SignedCheckpoint>> {
        if self.mirror_on {
            self.mirrored_checkpoint()
        } else {
            self.latest_checkpoint()
        }
    }

    /// The newest checkpoint the mirror holds.
    pub fn mirrored_checkpoint(&self) -> Option<Arc<SignedCheckpoint>> {
        self.mirrored.borrow().clone()
    }

    /// The entries the sequencer hands the mirror in memory (None: no
    /// mirror).
    pub fn mirror_feed(&self) -> Option<&Arc<crate::mirror::feed::Feed>> {
        self.mirror_feed.as_ref()
    }

    /// Tree size the mirror holds (0: nothing yet).
    pub fn mirrored_size(&self) -> u64 {
        self.mirrored
            .borrow()
            .as_ref()
            .map_or(0, |c| c.checkpoint.size)
    }

    /// Records that the mirror holds `cp` and everything below it (off the
    /// async threads; not synced: losing it only means publishing again).
    pub async fn record_mirrored(
        self: &Arc<Self>,
        cp: Arc<SignedCheckpoint>,
    ) -> Result<(), String> {
        let log = self.clone();
        let size = cp.checkpoint.size;
        tokio::task::spawn_blocking(move || log.meta_record.set_mirrored_size(size))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        self.mirrored.send_replace(Some(cp));
        Ok(())
    }

    /// Entries committed so far, and a receiver that sees every change.
    pub fn watch_committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// Where the log stands (reads the store: call off the async threads).
    pub fn status(&self) -> Result<ledger_proto::v1::LogStatus, Status> {
        let storage = |e: crate::store::StoreError| Status::unavailable(e.to_string());
        let committed = *self.committed.borrow();
        let mirrored = self.mirrored_size();
        let lag = if self.mirror_on {
            committed.saturating_sub(mirrored)
        } else {
            0
        };
        let lag_seconds = if lag == 0 {
            0.0
        } else {
            self.store
                .integrated_at(mirrored)
                .map_err(storage)?
                .and_then(|t| t.elapsed().ok())
                .map_or(0.0, |d| d.as_secs_f64())
        };
        Ok(ledger_proto::v1::LogStatus {
            log: self.id.clone(),
            origin: self.origin.clone(),
            committed_size: committed,
            signed_size: self.latest_checkpoint().map_or(0, |c| c.checkpoint.size),
            indexed_size: *self.indexed.borrow(),
            anchored_size: self.store.anchored_size().map_err(storage)?,
            mirror_enabled: self.mirror_on,
            mirrored_size: mirrored,
            mirror_lag_entries: lag,
            mirror_lag_seconds: lag_seconds,
            ack_after_mirror: self.ack_after_mirror,
        })
    }

    /// Whether acks wait for the mirror.
    pub fn acks_after_mirror(&self) -> bool {
        self.ack_after_mirror
    }

    /// The ack as the caller gets it: at once, or, with
    /// `mirror.ack_after_mirror`, once the mirror holds the entry and a
    /// checkpoint covering it. After [`MIRROR_WAIT`] without that the
    /// caller gets `UNAVAILABLE` (the entry is durable here; a retry with
    /// the same event_id waits again).
    pub async fn settle(&self, ack: AppendAck) -> Result<AppendAck, Rejection> {
        if !self.ack_after_mirror {
            return Ok(ack);
        }
        let mut rx = self.mirrored.subscribe();
        let want = ack.index + 1;
        let covered = |c: &Option<Arc<SignedCheckpoint>>| {
            c.as_ref().is_some_and(|c| c.checkpoint.size >= want)
        };
        match tokio::time::timeout(MIRROR_WAIT, rx.wait_for(covered)).await {
            Ok(Ok(_)) => Ok(ack),
            Ok(Err(_)) => Err(Rejection {
                code: Code::Unavailable,
                message: format!(
                    "entry {} is durable, but the server stopped before the mirror held it; retry with the same event_id",
                    ack.index
                ),
                field: String::new(),
            }),
            Err(_) => Err(Rejection {
                code: Code::Unavailable,
                message: format!(
                    "entry {} is durable here, but the mirror has not stored it within {} s (mirror.ack_after_mirror); retry with the same event_id",
                    ack.index,
                    MIRROR_WAIT.as_secs()
                ),
                field: String::new(),
            }),
        }
    }

    /// Waits until the query indexes cover the first `size` entries.
    pub async fn indexed_through(&self, size: u64) -> Result<(), Status> {
        let mut indexed = self.indexed.clone();
        if *indexed.borrow() < size {
            // The indexer may be resting between catch-ups: wake it.
            self.index_wanted.notify_one();
        }
        let waited = tokio::time::timeout(INDEX_WAIT, indexed.wait_for(|n| *n >= size))
            .await
            .map(|r| r.is_ok());
        match waited {
            Ok(true) => Ok(()),
            Ok(false) => Err(Status::unavailable(
                "the indexer has stopped (shutting down)",
            )),
            Err(_) => Err(Status::unavailable(format!(
                "the query indexes cover {} entries, not yet the {size} this query views; retry shortly",
                *self.indexed.borrow()
            ))),
        }
    }

    /// The latest signed checkpoint, if the log is not empty.
    pub fn latest_checkpoint(&self) -> Option<Arc<SignedCheckpoint>> {
        self.checkpoint.borrow().clone()
    }

    /// A receiver that changes whenever a new checkpoint is published.
    pub fn watch_checkpoints(&self) -> watch::Receiver<Option<Arc<SignedCheckpoint>>> {
        self.checkpoint.clone()
    }

    /// Validates and queues an event; the returned future resolves with the
    /// ack once the event is durable.
    pub fn submit(
        &self,
        event: Option<AuditEvent>,
        writer: String,
    ) -> Result<oneshot::Receiver<Result<AppendAck, SequencerError>>, Rejection> {
        let invalid = |field: String, message: String| Rejection {
            code: Code::InvalidArgument,
            message,
            field,
        };
        let Some(event) = event else {
            self.metrics.reject(&self.id, "invalid");
            return Err(invalid("event".into(), "event: required".into()));
        };
        if let Err(e) = validate_event(&event, &self.limits, SystemTime::now()) {
            self.metrics.reject(&self.id, "invalid");
            return Err(invalid(e.field.clone(), e.to_string()));
        }
        let (prepared, digest) = PreparedEvent::new(event).map_err(|e| {
            self.metrics.reject(&self.id, "unavailable");
            Rejection {
                code: Code::Unavailable,
                message: e.to_string(),
                field: String::new(),
            }
        })?;
        let units = prepared.event_len().div_ceil(self.budget_unit).max(1) as u32;
        let busy = |what: &str| Rejection {
            code: Code::ResourceExhausted,
            message: format!(
                "log {} is at its {what} limit; retry with the same event_id after a short back-off",
                self.id
            ),
            field: String::new(),
        };
        let Ok(budget) = self.budget.clone().try_acquire_many_owned(units) else {
            self.metrics.reject(&self.id, "queue_full");
            return Err(busy("queued bytes"));
        };
        let (reply, rx) = oneshot::channel();
        let job = AppendJob {
            content: Content::Event(Box::new(prepared)),
            digest,
            writer,
            reply,
            budget: Some(budget),
        };
        match self.tx.try_send(Msg::Append(Box::new(job))) {
            Ok(()) => Ok(rx),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.reject(&self.id, "queue_full");
                Err(busy("queue length"))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.metrics.reject(&self.id, "unavailable");
                Err(Rejection {
                    code: Code::Unavailable,
                    message: "server is shutting down".into(),
                    field: String::new(),
                })
            }
        }
    }

    /// Appends a redaction entry for `target` and drops its stored payload
    /// (legal erasure). The entry names who (`writer`) and why (`reason`);
    /// the payload's commitment stays in the tree, so it still verifies.
    /// Redacting the same entry again returns the original ack.
    pub async fn redact(
        &self,
        target: u64,
        reason: &str,
        writer: String,
    ) -> Result<AppendAck, Rejection> {
        let fail = |code: Code, field: &str, message: String| Rejection {
            code,
            message,
            field: field.into(),
        };
        let reason = reason.trim();
        if reason.is_empty() || reason.len() > 1024 || reason.chars().any(char::is_control) {
            return Err(fail(
                Code::InvalidArgument,
                "reason",
                "reason: required, at most 1024 characters, no control characters (name the legal basis or ticket)".into(),
            ));
        }
        let size = self
            .fresh_checkpoint()
            .await?
            .map_or(0, |c| c.checkpoint.size);
        if target >= size {
            return Err(fail(
                Code::OutOfRange,
                "target_index",
                format!("target_index: {target} is not in the log (size {size})"),
            ));
        }
        let key = crate::sequencer::redaction_key(target);
        // Whether it was redacted already, and what the target holds: store
        // reads, off the async threads.
        let store = self.store.clone();
        let lookup = key.clone();
        let found = tokio::task::spawn_blocking(move || {
            if store.dedup(&lookup)?.is_some() {
                return Ok(None);
            }
            store.entry(target).map(Some)
        })
        .await
        .map_err(|e| fail(Code::Unavailable, "", e.to_string()))?
        .map_err(|e: crate::store::StoreError| fail(Code::Unavailable, "", e.to_string()))?;
        if let Some(bytes) = found {
            let bytes = bytes.ok_or_else(|| {
                fail(
                    Code::DataLoss,
                    "target_index",
                    format!("entry {target} is missing"),
                )
            })?;
            let entry = ledger_verify::entry::decode_entry(&bytes)
                .map_err(|e| fail(Code::DataLoss, "target_index", e.to_string()))?;
            if entry.event.is_none() || entry.payload_commitment.is_empty() {
                return Err(fail(
                    Code::FailedPrecondition,
                    "target_index",
                    format!("target_index: entry {target} has no payload to redact"),
                ));
            }
        }
        let (reply, rx) = oneshot::channel();
        let redaction = ledger_proto::v1::Redaction {
            target_index: target,
            reason: reason.to_string(),
        };
        let job = AppendJob {
            digest: ledger_verify::hash::sha256(&[&prost::Message::encode_to_vec(&redaction)]),
            content: Content::Redaction {
                event_id: key,
                redaction,
            },
            writer,
            reply,
            budget: None,
        };
        self.tx
            .send(Msg::Append(Box::new(job)))
            .await
            .map_err(|_| fail(Code::Unavailable, "", "server is shutting down".into()))?;
        Log::await_ack(rx).await.map_err(|r| match r.code {
            Code::AlreadyExists => fail(
                Code::AlreadyExists,
                "target_index",
                format!(
                    "target_index: entry {target} was already redacted, with another reason; that redaction stands"
                ),
            ),
            _ => r,
        })
    }

    /// Turns the sequencer's answer into an ack or a status.
    pub async fn await_ack(
        rx: oneshot::Receiver<Result<AppendAck, SequencerError>>,
    ) -> Result<AppendAck, Rejection> {
        Log::ack_result(rx.await)
    }

    /// The sequencer's answer (or its absence) as an ack or a status.
    pub fn ack_result(
        answer: Result<Result<AppendAck, SequencerError>, oneshot::error::RecvError>,
    ) -> Result<AppendAck, Rejection> {
        match answer {
            Ok(Ok(ack)) => Ok(ack),
            Ok(Err(e)) => {
                let (code, field) = match &e {
                    SequencerError::Conflict { .. } => (Code::AlreadyExists, "event.event_id"),
                    SequencerError::EntryTooLarge { .. } => (Code::InvalidArgument, "event"),
                    SequencerError::Corrupt(_) => (Code::DataLoss, ""),
                    SequencerError::Storage(_)
                    | SequencerError::Halted(_)
                    | SequencerError::Randomness(_)
                    | SequencerError::Signing(_) => (Code::Unavailable, ""),
                };
                Err(Rejection {
                    code,
                    message: e.to_string(),
                    field: field.into(),
                })
            }
            Err(_) => Err(Rejection {
                code: Code::Unavailable,
                message:
                    "server shut down before the event was written; retry with the same event_id"
                        .into(),
                field: String::new(),
            }),
        }
    }

    /// The receipt of entry `index`: its stored bytes and salt, the newest
    /// signed checkpoint (which covers it once it is acked) and the
    /// inclusion proof in it. Store reads run off the async threads.
    pub async fn receipt(&self, index: u64) -> Result<ledger_proto::v1::Receipt, Rejection> {
        let fail = |code: Code, message: String| Rejection {
            code,
            message,
            field: String::new(),
        };
        let cp = self
            .fresh_checkpoint()
            .await?
            .filter(|c| c.checkpoint.size > index)
            .ok_or_else(|| {
                fail(
                    Code::Unavailable,
                    format!("no signed checkpoint covers entry {index} yet; ask again"),
                )
            })?;
        let store = self.store.clone();
        let tiles = self.tiles.clone();
        let size = cp.checkpoint.size;
        let slot = self
            .receipt_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| fail(Code::Unavailable, "server is shutting down".into()))?;
        let read = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let entry = store.entry(index).map_err(|e| e.to_string())?;
            let salt = store
                .payload(index)
                .map_err(|e| e.to_string())?
                .map(|(salt, _)| salt);
            let proof =
                ledger_verify::tree::inclusion_proof(&tiles.source(&store, size), index, size)
                    .map_err(|e| e.to_string())?;
            Ok::<_, String>((entry, salt, proof))
        })
        .await
        .map_err(|e| fail(Code::Unavailable, e.to_string()))?;
        let (entry, salt, proof) = read.map_err(|e| fail(Code::DataLoss, e))?;
        let entry =
            entry.ok_or_else(|| fail(Code::DataLoss, format!("entry {index} is missing")))?;
        Ok(ledger_proto::v1::Receipt {
            entry,
            inclusion: Some(ledger_proto::v1::InclusionProof {
                leaf_index: index,
                tree_size: size,
                hashes: proof.iter().map(|h| h.to_vec()).collect(),
            }),
            checkpoint: Some(cp.to_proto()),
            payload_salt: salt.unwrap_or_default(),
        })
    }

    /// Validates, queues and waits for durability.
    pub async fn append(
        &self,
        event: Option<AuditEvent>,
        writer: String,
    ) -> Result<AppendAck, Rejection> {
        let rx = self.submit(event, writer)?;
        let ack = Log::await_ack(rx).await?;
        self.settle(ack).await
    }

    /// Commits everything queued so far, then stops the sequencer.
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Msg::Shutdown).await;
        let threads = self
            .threads
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        // The sequencer first: the indexer ends once it has indexed
        // everything the sequencer committed.
        for t in threads {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
            // Once the sequencer has stopped, the indexer may be resting.
            self.index_wanted.notify_one();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The log's core in process, on a temp-dir store: idempotency by
    //! digest, receipts, and the start-up check refusing a store that no
    //! longer matches its signed checkpoint.

    use super::*;
    use ledger_proto::v1::{EventKind, RiskTier};

    pub(crate) fn settings(dir: &Path) -> LogSettings {
        LogSettings {
            id: "default".into(),
            origin: "test.example/log".into(),
            dir: dir.join("log"),
            key_file: dir.join("log.key"),
            queue_events: 1024,
            queue_bytes: 64 << 20,
            max_batch: 1024,
            // Every group signs, unless a test thins checkpoints itself.
            checkpoint_interval: Duration::ZERO,
            limits: Limits::default(),
            mirrored: false,
            ack_after_mirror: false,
            index_pace: crate::indexer::PACE,
            feed_bytes: crate::mirror::feed::FEED_BYTES,
        }
    }

    fn thinned(dir: &Path) -> LogSettings {
        LogSettings {
            checkpoint_interval: Duration::from_secs(3600),
            ..settings(dir)
        }
    }

    /// Appends the events `<prefix>-<i>` for each i in `range`.
    async fn append_all(log: &Log, prefix: &str, range: std::ops::Range<u64>) {
        for i in range {
            log.append(Some(event(&format!("{prefix}-{i}"), i)), "t".into())
                .await
                .unwrap();
        }
    }

    /// A log on `settings` that held `n` events and was stopped.
    async fn filled(settings: LogSettings, prefix: &str, n: u64) {
        let log = Log::open(settings, Metrics::new()).unwrap();
        append_all(&log, prefix, 0..n).await;
        log.shutdown().await;
    }

    /// Stored entry `index` re-encoded with another writer: still a
    /// well-formed entry, no longer the one that was hashed.
    fn rewritten(store: &Store, index: u64) -> Vec<u8> {
        let bytes = store.entry(index).unwrap().unwrap();
        let mut e = ledger_verify::entry::decode_entry(&bytes).unwrap();
        e.writer = "someone else".into();
        prost::Message::encode_to_vec(&e)
    }

    /// The entries below `snapshot` that a query by `filter` finds.
    fn found(store: &Store, filter: ledger_proto::v1::EventFilter, snapshot: u64) -> Vec<u64> {
        let f = crate::query::Filter::from_proto(Some(&filter)).unwrap();
        crate::query::list(store, &f, snapshot, None, false, 100)
            .unwrap()
            .hits
            .iter()
            .map(|h| h.index)
            .collect()
    }

    fn by_agent() -> ledger_proto::v1::EventFilter {
        ledger_proto::v1::EventFilter {
            agent_id: "agent-7".into(),
            ..Default::default()
        }
    }

    fn stored_checkpoints(store: &Store) -> Vec<u64> {
        store
            .scan(crate::store::cf::CHECKPOINTS, &[], &[0xff; 9], None, false)
            .map(|kv| crate::store::read_index_key(&kv.unwrap().0).unwrap())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checkpoints_are_thinned_and_readers_still_see_their_writes() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(thinned(dir.path()), Metrics::new()).unwrap();
        // The first group after start-up signs at once.
        let first = log.append(Some(event("t-0", 0)), "t".into()).await.unwrap();
        assert_eq!((first.checkpoint_size, first.checkpoint_due), (1, None));
        // Within the interval, acks are durable but unsigned, and say when
        // a signature is due.
        let mut acks = Vec::new();
        for i in 1..5 {
            acks.push(
                log.append(Some(event(&format!("t-{i}"), i)), "t".into())
                    .await
                    .unwrap(),
            );
        }
        for a in &acks {
            assert_eq!(a.checkpoint_size, 0, "{a:?}");
            let due = a.checkpoint_due.as_ref().expect("a due time");
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap();
            assert!(due.seconds as u64 > now.as_secs() + 3000, "{due:?}");
        }
        assert_eq!(log.latest_checkpoint().unwrap().checkpoint.size, 1);
        assert_eq!(stored_checkpoints(&log.store), vec![1]);
        // A retry of a signed entry names its checkpoint.
        let again = log.append(Some(event("t-0", 0)), "t".into()).await.unwrap();
        assert!(again.duplicate && again.checkpoint_size == 1, "{again:?}");
        // A reader asking for the latest gets one covering every ack.
        let fresh = log.fresh_checkpoint().await.unwrap().unwrap();
        assert_eq!(fresh.checkpoint.size, 5);
        assert_eq!(stored_checkpoints(&log.store), vec![1, 5]);
        // Asking again signs nothing new.
        log.fresh_checkpoint().await.unwrap();
        assert_eq!(stored_checkpoints(&log.store), vec![1, 5]);
        // A receipt forces a signature too.
        let late = log.append(Some(event("t-5", 5)), "t".into()).await.unwrap();
        assert_eq!(late.checkpoint_size, 0);
        let r = log.receipt(late.index).await.unwrap();
        assert_eq!(r.checkpoint.unwrap().tree_size, 6);
        // Shutdown signs what is left.
        log.append(Some(event("t-6", 6)), "t".into()).await.unwrap();
        log.shutdown().await;
        assert_eq!(stored_checkpoints(&log.store), vec![1, 5, 6, 7]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_interval_signs_without_a_reader() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(
            LogSettings {
                checkpoint_interval: Duration::from_millis(50),
                ..settings(dir.path())
            },
            Metrics::new(),
        )
        .unwrap();
        let mut feed = log.watch_checkpoints();
        log.append(Some(event("i-0", 0)), "t".into()).await.unwrap();
        let ack = log.append(Some(event("i-1", 1)), "t".into()).await.unwrap();
        if ack.checkpoint_size == 0 {
            // Signed by the timer, with nobody asking.
            tokio::time::timeout(
                Duration::from_secs(10),
                feed.wait_for(|c| c.as_ref().is_some_and(|c| c.checkpoint.size == 2)),
            )
            .await
            .expect("signed within the interval")
            .unwrap();
        }
        log.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unsigned_tail_is_checked_and_signed_at_start() {
        use crate::store::{be, cf};
        type Tamper = fn(&StoreWriter);
        // (case, what happens to the store after the crash, whether it opens)
        let cases: [(&str, Option<Tamper>, bool); 4] = [
            ("a crash before the signature", None, true),
            (
                // Partial tile rows are stored with checkpoints, not with
                // each group: the row still ends where checkpoint 1 left it.
                "a crash before the signature, the tiles as the last signature left them",
                Some(|store| {
                    let row = store.tile(0, 0).unwrap();
                    let mut batch = store.new_batch();
                    store.put_tile(&mut batch, 0, 0, &row[..1]);
                    store.commit(batch).unwrap();
                }),
                true,
            ),
            (
                "an unsigned entry rewritten",
                Some(|store| {
                    let bytes = rewritten(store, 3);
                    let mut batch = store.new_batch();
                    store.put(&mut batch, cf::ENTRIES, &be(3), &bytes);
                    store.commit(batch).unwrap();
                }),
                false,
            ),
            (
                "an unsigned entry and its leaf rewritten",
                Some(|store| {
                    let bytes = rewritten(store, 2);
                    let mut row = store.tile(0, 0).unwrap();
                    row[2] = ledger_verify::leaf_hash(&bytes);
                    let mut batch = store.new_batch();
                    store.put(&mut batch, cf::ENTRIES, &be(2), &bytes);
                    store.put_tile(&mut batch, 0, 0, &row);
                    store.commit(batch).unwrap();
                }),
                false,
            ),
        ];
        for (case, tamper, opens) in cases {
            let dir = tempfile::tempdir().unwrap();
            filled(thinned(dir.path()), "u", 5).await;
            let root = {
                // As a crash would leave it: entries 1..5 acked, unsigned.
                let store = StoreWriter::open(&dir.path().join("log/db")).unwrap();
                let (_, note) = store.latest_checkpoint().unwrap().unwrap();
                let mut batch = store.new_batch();
                store.delete(&mut batch, cf::CHECKPOINTS, &be(5));
                store.commit(batch).unwrap();
                assert_eq!(stored_checkpoints(&store), vec![1], "{case}");
                if let Some(t) = tamper {
                    t(&store);
                }
                note.lines().nth(2).unwrap().to_string()
            };
            let opened = Log::open(thinned(dir.path()), Metrics::new());
            if opens {
                let log = opened.unwrap_or_else(|e| panic!("{case}: {e:#}"));
                let cp = log.latest_checkpoint().unwrap();
                assert_eq!(cp.checkpoint.size, 5, "{case}");
                assert_eq!(cp.note.lines().nth(2).unwrap(), root, "{case}: same tree");
                assert_eq!(stored_checkpoints(&log.store), vec![1, 5]);
                assert_eq!(log.store.tile(0, 0).unwrap().len(), 5, "{case}");
                // And the log goes on from there.
                let next = log.append(Some(event("u-5", 5)), "t".into()).await.unwrap();
                assert_eq!(next.index, 5, "{case}");
                log.shutdown().await;
            } else {
                let err = opened
                    .err()
                    .unwrap_or_else(|| panic!("{case}: the log opened"));
                assert!(
                    format!("{err:#}").contains("no longer matches"),
                    "{case}: {err:#}"
                );
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn indexes_ahead_of_the_record_are_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        filled(settings(dir.path()), "a", 10).await;
        {
            // As if the record were restored from an older copy beside
            // indexes of a longer history.
            let w = StoreWriter::open(&dir.path().join("log/db")).unwrap();
            let mut b = w.new_batch();
            w.set_indexed_size(&mut b, 50);
            w.commit_index(b).unwrap();
            w.flush().unwrap();
        }
        let log = Log::open(settings(dir.path()), Metrics::new()).unwrap();
        log.append(Some(event("a-10", 10)), "t".into())
            .await
            .unwrap();
        log.indexed_through(11).await.unwrap();
        assert_eq!(log.store.indexed_size().unwrap(), 11);
        assert_eq!(
            found(&log.store, by_agent(), 11),
            (0..11).collect::<Vec<_>>()
        );
        log.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_query_wakes_the_resting_indexer() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(
            LogSettings {
                index_pace: Duration::from_secs(3600),
                ..settings(dir.path())
            },
            Metrics::new(),
        )
        .unwrap();
        for n in 1..=3 {
            append_all(&log, "w", n - 1..n).await;
            // Resting: committed, not indexed.
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(log.store.indexed_size().unwrap(), n - 1, "round {n}");
            tokio::time::timeout(Duration::from_secs(10), log.indexed_through(n))
                .await
                .expect("the query woke the indexer")
                .unwrap();
            assert_eq!(found(&log.store, by_agent(), n), (0..n).collect::<Vec<_>>());
        }
        log.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_indexer_catches_up_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        filled(settings(dir.path()), "x", 30).await;
        // As if the server died before the indexer wrote anything.
        StoreWriter::open(&dir.path().join("log/db"))
            .unwrap()
            .forget_indexes()
            .unwrap();
        {
            let store = Store::open(&dir.path().join("log/db")).unwrap();
            assert_eq!(store.indexed_size().unwrap(), 0);
            assert!(found(&store, by_agent(), 30).is_empty());
        }
        let log = Log::open(settings(dir.path()), Metrics::new()).unwrap();
        log.indexed_through(30).await.unwrap();
        assert_eq!(log.store.indexed_size().unwrap(), 30);
        for filter in [
            by_agent(),
            ledger_proto::v1::EventFilter {
                tool_name: "sql.execute".into(),
                ..Default::default()
            },
            ledger_proto::v1::EventFilter {
                correlation_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                ..Default::default()
            },
        ] {
            let got = found(&log.store, filter.clone(), 30);
            assert_eq!(got, (0..30).collect::<Vec<_>>(), "{filter:?}");
        }
        // And it follows new entries.
        log.append(Some(event("x-30", 30)), "t".into())
            .await
            .unwrap();
        log.indexed_through(31).await.unwrap();
        log.shutdown().await;
    }

    /// Every key of the five index columns.
    fn index_keys(store: &Store) -> Vec<(&'static str, Vec<u8>)> {
        crate::store::cf::INDEXES
            .iter()
            .flat_map(|name| {
                store
                    .scan(name, &[], &[0xff; 64], None, false)
                    .map(|kv| (*name, kv.unwrap().0.to_vec()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_hand_off_and_a_rebuild_from_the_entries_write_the_same_index_keys() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = Log::open(settings(dir.path()), Metrics::new()).unwrap();
            for i in 0..40u64 {
                // Agents, principals and tools interleaved and sometimes
                // absent; times out of order.
                let e = AuditEvent {
                    correlation_id: format!("{:032x}", 0xabc0 + i % 3),
                    agent_id: format!("agent-{}", i % 5),
                    principal: if i % 4 == 0 {
                        String::new()
                    } else {
                        format!("p{}", i % 3)
                    },
                    tool_name: if i % 6 == 0 {
                        String::new()
                    } else {
                        format!("t{}", i % 4)
                    },
                    kind: if i % 6 == 0 {
                        EventKind::Decision
                    } else {
                        EventKind::ToolCall
                    } as i32,
                    occurred_at: Some(prost_types::Timestamp {
                        seconds: 1_700_000_000 + (i * 7 % 11) as i64,
                        nanos: i as i32,
                    }),
                    ..event(&format!("k-{i}"), i)
                };
                log.append(Some(e), "t".into()).await.unwrap();
            }
            log.indexed_through(40).await.unwrap();
            log.shutdown().await;
        }
        let handed_off = index_keys(&Store::open(&dir.path().join("log/db")).unwrap());
        // Entry 0: correlation ‖ index, agent ‖ 0 ‖ index (no principal,
        // no tool), occurred_at in nanoseconds ‖ index.
        let zero = 0u64.to_be_bytes();
        let mut expected = vec![
            (
                crate::store::cf::BY_CORRELATION,
                [&hex::decode(format!("{:032x}", 0xabc0)).unwrap()[..], &zero].concat(),
            ),
            (
                crate::store::cf::BY_AGENT,
                [&b"agent-0\0"[..], &zero].concat(),
            ),
            (
                crate::store::cf::BY_TIME,
                [&(1_700_000_000u64 * 1_000_000_000).to_be_bytes()[..], &zero].concat(),
            ),
        ];
        expected.sort();
        let mut of_zero: Vec<_> = handed_off
            .iter()
            .filter(|(_, k)| k.ends_with(&zero))
            .cloned()
            .collect();
        of_zero.sort();
        assert_eq!(of_zero, expected);
        // 40 correlations, agents and times, 30 principals, 33 tools.
        assert_eq!(handed_off.len(), 40 * 3 + 30 + 33);

        StoreWriter::open(&dir.path().join("log/db"))
            .unwrap()
            .forget_indexes()
            .unwrap();
        let log = Log::open(settings(dir.path()), Metrics::new()).unwrap();
        log.indexed_through(40).await.unwrap();
        let rebuilt = index_keys(&log.store);
        log.shutdown().await;
        assert_eq!(rebuilt, handed_off);
    }

    pub(crate) fn event(id: &str, n: u64) -> AuditEvent {
        AuditEvent {
            event_id: id.into(),
            correlation_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: format!("{:016x}", n + 1),
            agent_id: "agent-7".into(),
            kind: EventKind::ToolCall as i32,
            tool_name: "sql.execute".into(),
            risk_tier: RiskTier::High as i32,
            occurred_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000 + n as i64,
                nanos: 0,
            }),
            payload: format!("{{\"n\":{n}}}").into_bytes(),
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reused_id_is_a_retry_only_with_the_same_event() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(settings(dir.path()), Metrics::new()).unwrap();
        let w = || "test".to_string();
        // Submitted back to back, so they usually share a commit group;
        // across groups the answers are the same.
        let a = log.submit(Some(event("same", 1)), w()).unwrap();
        let b = log.submit(Some(event("same", 1)), w()).unwrap();
        let mut other = event("same", 1);
        other.tool_name = "rm -rf".into();
        let c = log.submit(Some(other.clone()), w()).unwrap();
        let (a, b, c) = (
            Log::await_ack(a).await.unwrap(),
            Log::await_ack(b).await.unwrap(),
            Log::await_ack(c).await.unwrap_err(),
        );
        assert!(!a.duplicate && b.duplicate && a.index == b.index);
        assert_eq!(
            (&b.leaf_hash, &b.integrated_at),
            (&a.leaf_hash, &a.integrated_at)
        );
        assert_eq!(c.code, Code::AlreadyExists);
        assert_eq!(c.field, "event.event_id");
        // Later, from the store: the same answers.
        assert!(
            log.append(Some(event("same", 1)), w())
                .await
                .unwrap()
                .duplicate
        );
        let late = log.append(Some(other), w()).await.unwrap_err();
        assert_eq!(late.code, Code::AlreadyExists);
        assert!(late.message.contains(&format!("entry {}", a.index)));
        assert_eq!(log.latest_checkpoint().unwrap().checkpoint.size, 1);

        // A receipt of it verifies against the key.
        let r = log.receipt(a.index).await.unwrap();
        let v = ledger_verify::receipt::verify_proto(&r, &log.verifier).unwrap();
        assert_eq!(v.entry.index, a.index);
        ledger_verify::receipt::check_event(&v.entry, &event("same", 1), &r.payload_salt).unwrap();
        log.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_entry_over_the_tile_bundle_limit_is_refused_and_takes_no_index() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(settings(dir.path()), Metrics::new()).unwrap();
        log.append(Some(event("before", 0)), "t".into())
            .await
            .unwrap();
        // 20 attributes of 4,000 bytes: within every attribute limit, but
        // an entry of over 80 KB.
        let mut big = event("big", 1);
        for i in 0..20 {
            big.attributes.insert(format!("k{i}"), "x".repeat(4000));
        }
        let err = log.append(Some(big.clone()), "t".into()).await.unwrap_err();
        assert_eq!(
            (err.code, err.field.as_str()),
            (Code::InvalidArgument, "event")
        );
        assert!(
            err.message.contains("65535") && err.message.contains("event.payload"),
            "{}",
            err.message
        );
        // The same content as a payload is fine (a payload has no such limit).
        let mut as_payload = event("big-payload", 1);
        as_payload.payload = "x".repeat(80_000).into_bytes();
        let ack = log.append(Some(as_payload), "t".into()).await.unwrap();
        assert_eq!(ack.index, 1, "the refused event took no index");
        // Refused in a group with others, it does not disturb them.
        let a = log.submit(Some(event("g-1", 2)), "t".into()).unwrap();
        let b = log.submit(Some(big), "t".into()).unwrap();
        let c = log.submit(Some(event("g-2", 3)), "t".into()).unwrap();
        assert_eq!(Log::await_ack(a).await.unwrap().index, 2);
        assert_eq!(
            Log::await_ack(b).await.unwrap_err().code,
            Code::InvalidArgument
        );
        assert_eq!(Log::await_ack(c).await.unwrap().index, 3);
        log.shutdown().await;
        drop(log);
        Log::open(settings(dir.path()), Metrics::new()).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_that_no_longer_matches_its_checkpoint_is_refused() {
        use crate::store::{be, cf};
        type Tamper = fn(&StoreWriter);
        let cases: [(&str, Tamper); 3] = [
            ("the last entry rewritten", |store| {
                let bytes = rewritten(store, 9);
                let mut batch = store.new_batch();
                store.put(&mut batch, cf::ENTRIES, &be(9), &bytes);
                store.commit(batch).unwrap();
            }),
            ("an entry stored past the end", |store| {
                let bytes = store.entry(9).unwrap().unwrap();
                let mut batch = store.new_batch();
                store.put(&mut batch, cf::ENTRIES, &be(10), &bytes);
                store.commit(batch).unwrap();
            }),
            ("a tile rewritten", |store| {
                let mut row = store.tile(0, 0).unwrap();
                row[3].0[0] ^= 1;
                let mut batch = store.new_batch();
                store.put_tile(&mut batch, 0, 0, &row);
                store.commit(batch).unwrap();
            }),
        ];
        for (case, tamper) in cases {
            let dir = tempfile::tempdir().unwrap();
            filled(settings(dir.path()), "e", 10).await;
            tamper(&StoreWriter::open(&dir.path().join("log/db")).unwrap());
            let err = Log::open(settings(dir.path()), Metrics::new())
                .err()
                .unwrap_or_else(|| panic!("{case}: the log opened"));
            assert!(
                format!("{err:#}").contains("no longer matches"),
                "{case}: {err:#}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_acks_nothing_and_rolls_the_tree_edge_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(settings(dir.path()), Metrics::new()).unwrap();
        append_all(&log, "ok", 0..3).await;
        log.store
            .fail_commits
            .store(1, std::sync::atomic::Ordering::SeqCst);
        let failed = log
            .append(Some(event("lost", 3)), "t".into())
            .await
            .unwrap_err();
        assert_eq!(failed.code, Code::Unavailable, "{failed:?}");
        assert_eq!(log.latest_checkpoint().unwrap().checkpoint.size, 3);
        // The next append takes the index the failed one would have had,
        // and the signed root is the root of what is stored.
        let ack = log
            .append(Some(event("lost", 3)), "t".into())
            .await
            .unwrap();
        assert_eq!((ack.index, ack.duplicate), (3, false));
        let cp = log.latest_checkpoint().unwrap();
        let mut tree = ledger_verify::MemoryTree::new();
        let mut prev = ledger_verify::Hash::ZERO;
        for i in 0..4 {
            let bytes = log.store.entry(i).unwrap().unwrap();
            let e = ledger_verify::entry::decode_entry(&bytes).unwrap();
            assert_eq!(e.prev_leaf_hash, prev.to_vec(), "chain at {i}");
            prev = ledger_verify::leaf_hash(&bytes);
            tree.push(prev);
        }
        assert!(log.store.entry(4).unwrap().is_none());
        assert_eq!((cp.checkpoint.size, cp.checkpoint.root), (4, tree.root()));
        log.shutdown().await;
        drop(log);
        // And the store still passes the start-up check.
        Log::open(settings(dir.path()), Metrics::new()).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_sync_halts_the_log_until_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(settings(dir.path()), Metrics::new()).unwrap();
        append_all(&log, "ok", 0..3).await;
        log.store
            .fail_syncs
            .store(1, std::sync::atomic::Ordering::SeqCst);
        // Written, but its sync failed: not acknowledged.
        let failed = log
            .append(Some(event("unsynced", 3)), "t".into())
            .await
            .unwrap_err();
        assert_eq!(failed.code, Code::Unavailable, "{failed:?}");
        assert!(failed.message.contains("halted"), "{}", failed.message);
        // Nothing after it is acknowledged either, though syncs work again,
        // and no checkpoint covers what was not acknowledged.
        let after = log
            .append(Some(event("after", 4)), "t".into())
            .await
            .unwrap_err();
        assert_eq!(after.code, Code::Unavailable, "{after:?}");
        assert!(after.message.contains("halted"), "{}", after.message);
        assert_eq!(log.latest_checkpoint().unwrap().checkpoint.size, 3);
        assert_eq!(*log.watch_committed().borrow(), 3);
        let failures = log
            .metrics
            .commit_failures
            .get_or_create(&"default".into())
            .get();
        assert_eq!(failures, 1, "the failed sync is counted once");
        log.shutdown().await;
        drop(log);
        // A restart checks the store and goes on: the unacknowledged entry
        // RocksDB had applied is part of the log, and its retry is answered
        // as a duplicate of it.
        let log = Log::open(settings(dir.path()), Metrics::new()).unwrap();
        let ack = log
            .append(Some(event("unsynced", 3)), "t".into())
            .await
            .unwrap();
        assert_eq!((ack.index, ack.duplicate), (3, true));
        let ack = log
            .append(Some(event("after", 4)), "t".into())
            .await
            .unwrap();
        assert_eq!((ack.index, ack.duplicate), (4, false));
        log.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pages_are_stable_while_the_log_grows() {
        use crate::query::{Filter, list};
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(settings(dir.path()), Metrics::new()).unwrap();
        append_all(&log, "p", 0..25).await;
        let by_agent = Filter::from_proto(Some(&by_agent())).unwrap();
        log.indexed_through(25).await.unwrap();
        let mut seen = Vec::new();
        let mut cursor = None;
        let mut n = 100;
        loop {
            let page = list(&log.store, &by_agent, 25, cursor.as_ref(), false, 7).unwrap();
            assert!(page.hits.len() <= 7);
            seen.extend(page.hits.iter().map(|h| h.index));
            // Appends between pages are not in this listing.
            log.append(Some(event(&format!("later-{n}"), n)), "t".into())
                .await
                .unwrap();
            n += 1;
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, (0..25).collect::<Vec<u64>>());
        log.shutdown().await;
    }
}
