//! `ledgerd restore`: rebuilds a data directory from the object-storage
//! mirror after the ledger's disk is lost.
//!
//! For each configured log it reads the newest mirrored checkpoint, checks
//! it against the log's key, and audits the whole mirror as
//! `ledger-verify mirror` does (every entry re-hashed and chained, every
//! hash tile against the recomputed tree, every payload against its
//! commitment, the root against the checkpoint and the anchors) while
//! writing entries, payloads, tiles, dedup records and checkpoints into a
//! fresh store. Anything inconsistent and nothing is kept: the restore
//! refuses, naming what and where. The query indexes are rebuilt by the
//! server when it starts, and it continues the same log, with the same key,
//! at the next index.

use crate::config::{AnchorBackend, Config};
use crate::mirror::object_key;
use crate::objects::{DirStore, ObjectStore, S3Settings, S3Store};
use crate::store::{StagedEntry, StoreWriter};
use anyhow::{Context, Result, bail};
use ledger_verify::anchors::{Anchor, check_anchors};
use ledger_verify::mirror::{Fetch, TileRows, Visit, audit_mirror};
use ledger_verify::note::NoteVerifier;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Entries written per commit while restoring.
const BATCH: usize = 8192;

/// What a restore did, per log.
#[derive(Debug, serde::Serialize)]
pub struct Restored {
    pub log: String,
    pub origin: String,
    pub entries: u64,
    pub payloads: u64,
    pub tiles_checked: u64,
    pub anchors_matched: u64,
    pub seconds: f64,
}

/// A log's mirror as the audit reads it: its objects under `<origin>/`,
/// payload bundles possibly in a store of their own.
struct Source<S: ObjectStore> {
    store: Arc<S>,
    payloads: Arc<S>,
    origin: String,
    runtime: tokio::runtime::Handle,
}

impl<S: ObjectStore> Fetch for Source<S> {
    fn fetch(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        let store = if path.starts_with("payload/") {
            &self.payloads
        } else {
            &self.store
        };
        self.runtime
            .block_on(store.get(&object_key(&self.origin, path)))
            .map_err(std::io::Error::other)
    }

    fn describe(&self) -> String {
        format!("{}/{}", self.store.describe(), self.origin)
    }
}

/// The anchors of `origin` in the configured anchor store (none when
/// anchoring is off).
async fn anchors_of(config: &Config, origin: &str) -> Result<Vec<Anchor>> {
    async fn read<S: ObjectStore>(store: S, origin: &str) -> Result<Vec<Anchor>> {
        let mut out = Vec::new();
        for (key, written_at) in store.list(origin, "checkpoint.").await? {
            if let Some(note) = store.get(&key).await? {
                out.push(Anchor {
                    key,
                    note,
                    written_at,
                });
            }
        }
        Ok(out)
    }
    match config.anchor.backend {
        AnchorBackend::None => Ok(Vec::new()),
        AnchorBackend::Dir => read(DirStore::new(&config.anchor_dir())?, origin).await,
        AnchorBackend::S3 => {
            // Read only: the lock requirement and retention do not apply.
            let store = S3Store::connect(&config.anchor.s3.settings(), "anchor.s3", false).await?;
            read(store, origin).await
        }
    }
}

/// Restores every configured log from the mirror at `from` (a directory
/// or `s3://bucket/prefix`) into `config.data_dir`.
pub async fn restore(config: &Config, from: &str) -> Result<Vec<Restored>> {
    for l in &config.logs {
        let db = config.log_dir(&l.id).join("db");
        if db.exists() {
            bail!(
                "{}: log {} already has a store here; restore into an empty data directory",
                db.display(),
                l.id
            );
        }
    }
    if let Some(rest) = from.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let s3 = &config.mirror.s3;
        let endpoint = Some(s3.endpoint.clone())
            .filter(|e| !e.is_empty())
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        // The bucket and prefix come from --from; the rest from [mirror.s3].
        let settings = |bucket: &str, prefix: &str| S3Settings {
            prefix: prefix.trim_matches('/').to_string(),
            force_path_style: s3.force_path_style || endpoint.is_some(),
            endpoint: endpoint.clone(),
            ..s3.settings(bucket)
        };
        let store = Arc::new(S3Store::connect(&settings(bucket, prefix), "--from", false).await?);
        let payloads = if s3.payload_bucket.is_empty() {
            store.clone()
        } else {
            Arc::new(
                S3Store::connect(
                    &settings(&s3.payload_bucket, prefix),
                    "mirror.s3.payload",
                    false,
                )
                .await?,
            )
        };
        restore_from(config, store, payloads).await
    } else {
        let dir = Path::new(from);
        anyhow::ensure!(dir.is_dir(), "--from {from}: not a directory");
        let store = Arc::new(DirStore::new(dir)?);
        restore_from(config, store.clone(), store).await
    }
}

async fn restore_from<S: ObjectStore>(
    config: &Config,
    store: Arc<S>,
    payloads: Arc<S>,
) -> Result<Vec<Restored>> {
    let mut out = Vec::new();
    for l in &config.logs {
        let key_file = config.key_file(l);
        anyhow::ensure!(
            key_file.exists(),
            "log {}: its signing key {} is not there. The mirror holds no private key: put the log's key file back (from its own backup) before restoring, or the restored log could not continue",
            l.id,
            key_file.display()
        );
        let signer = crate::log::load_or_create_key(&key_file, &l.origin)?;
        let key = signer.verifier();
        let anchors = anchors_of(config, &l.origin)
            .await
            .with_context(|| format!("log {}: reading its anchors", l.id))?;
        let source = Source {
            store: store.clone(),
            payloads: payloads.clone(),
            origin: l.origin.clone(),
            runtime: tokio::runtime::Handle::current(),
        };
        let log_dir = config.log_dir(&l.id);
        let (id, origin) = (l.id.clone(), l.origin.clone());
        let concurrency = config.mirror.concurrency.max(8);
        let restored = tokio::task::spawn_blocking(move || {
            restore_log(&id, &origin, &log_dir, &source, &key, &anchors, concurrency)
        })
        .await??;
        tracing::info!(log = %restored.log, entries = restored.entries, seconds = restored.seconds, "restored from the mirror");
        out.push(restored);
    }
    Ok(out)
}

/// Writes what the audit reads into a fresh store, committing every
/// [`BATCH`] entries.
struct Writer {
    store: StoreWriter,
    batch: crate::store::CommitBatch,
    staged: usize,
    rows: TileRows,
    payloads: u64,
    failed: Option<String>,
}

impl Writer {
    fn entry(&mut self, v: Visit<'_>) {
        if self.failed.is_some() {
            return;
        }
        if let Err(e) = self.stage(v) {
            self.failed = Some(e);
        }
    }

    fn stage(&mut self, v: Visit<'_>) -> Result<(), String> {
        let entry = ledger_verify::entry::decode_entry(v.entry)
            .map_err(|e| format!("entry {}: {e}", v.index))?;
        let payload = v.payload.map(|(s, p)| (s.as_slice(), p.as_slice()));
        // The dedup record: the id it answers to and the digest of what was
        // asked for (the event with its payload, or the redaction).
        let (dedup_id, digest) = if let Some(r) = &entry.redaction {
            (
                crate::sequencer::redaction_key(r.target_index),
                Some(ledger_verify::hash::sha256(&[
                    &prost::Message::encode_to_vec(r),
                ])),
            )
        } else {
            let mut event = entry.event.clone().unwrap_or_default();
            let known = entry.payload_commitment.is_empty() || payload.is_some();
            if let Some((_, p)) = payload {
                event.payload = p.to_vec();
            }
            (
                event.event_id.clone(),
                known.then(|| crate::sequencer::event_digest(&event)),
            )
        };
        if payload.is_some() {
            self.payloads += 1;
        }
        self.store.stage_entry(
            &mut self.batch,
            StagedEntry {
                index: v.index,
                bytes: v.entry,
                dedup_id: &dedup_id,
                digest,
                payload,
            },
        );
        let (store, batch) = (&self.store, &mut self.batch);
        self.rows.push(v.leaf, |id, row| {
            store.put_tile(batch, id.level, id.index, row);
        });
        self.staged += 1;
        if self.staged >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        let batch = std::mem::replace(&mut self.batch, self.store.new_batch());
        self.staged = 0;
        self.store.commit(batch).map_err(|e| e.to_string())
    }
}

fn restore_log<F: Fetch>(
    id: &str,
    origin: &str,
    log_dir: &Path,
    source: &F,
    key: &NoteVerifier,
    anchors: &[Anchor],
    concurrency: usize,
) -> Result<Restored> {
    let started = Instant::now();
    let checked = check_anchors(anchors, key);
    if !checked.findings.is_empty() {
        bail!(
            "log {id}: its anchors do not check out, nothing restored:{}",
            findings_text(&checked.findings)
        );
    }
    let parent = log_dir
        .parent()
        .context("the log directory has no parent")?
        .to_path_buf();
    std::fs::create_dir_all(&parent)?;
    let temp = parent.join(format!(".restoring-{id}"));
    if temp.exists() {
        std::fs::remove_dir_all(&temp)
            .with_context(|| format!("removing a restore left over at {}", temp.display()))?;
    }
    let store = StoreWriter::open(&temp.join("db"))
        .with_context(|| format!("creating a store in {}", temp.display()))?;
    let mut w = Writer {
        batch: store.new_batch(),
        store,
        staged: 0,
        rows: TileRows::new(),
        payloads: 0,
        failed: None,
    };
    let report = audit_mirror(
        source,
        key,
        &checked.checkpoints,
        concurrency,
        |_, _| {},
        |v| w.entry(v),
    );
    let outcome = (|| -> Result<Restored> {
        let report = report.with_context(|| format!("log {id}: reading the mirror"))?;
        let a = &report.audit;
        if !a.clean() {
            bail!(
                "log {id}: the mirror at {} does not check out, nothing restored ({} finding(s)):{}",
                source.describe(),
                a.findings.len(),
                findings_text(&a.findings)
            );
        }
        if let Some(e) = w.failed.take() {
            bail!("log {id}: writing the restored store: {e}");
        }
        let note = report
            .checkpoint_note
            .clone()
            .context("the audit verified no checkpoint")?;
        let size = a.tree_size;
        let mut batch = std::mem::replace(&mut w.batch, w.store.new_batch());
        for (tile, row) in w.rows.partial() {
            w.store.put_tile(&mut batch, tile.level, tile.index, row);
        }
        // The anchored checkpoints within the tree are signed checkpoints
        // of this log too (the audit matched their roots).
        for anchor in anchors {
            let note = String::from_utf8_lossy(&anchor.note);
            if let Ok(cp) = ledger_verify::open_checkpoint(&note, key)
                && cp.size <= size
            {
                w.store.stage_checkpoint(&mut batch, cp.size, &note);
            }
        }
        w.store.stage_checkpoint(&mut batch, size, &note);
        w.store.set_tree_size(&mut batch, size);
        w.store.commit(batch)?;
        w.store.set_anchored_size(a.anchored_size)?;
        w.store.set_mirrored_size(size)?;
        w.store.flush()?;
        Ok(Restored {
            log: id.to_string(),
            origin: origin.to_string(),
            entries: a.entries,
            payloads: w.payloads,
            tiles_checked: report.tiles_checked,
            anchors_matched: a.anchors_matched,
            seconds: started.elapsed().as_secs_f64(),
        })
    })();
    drop(w);
    match outcome {
        Ok(r) => {
            std::fs::create_dir_all(log_dir)?;
            let index = log_dir.join("index");
            if index.exists() {
                std::fs::remove_dir_all(&index)?;
            }
            std::fs::rename(temp.join("db"), log_dir.join("db"))
                .with_context(|| format!("moving the restored store into {}", log_dir.display()))?;
            let _ = std::fs::remove_dir_all(&temp);
            Ok(r)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&temp);
            Err(e)
        }
    }
}

fn findings_text(findings: &[ledger_verify::audit::Finding]) -> String {
    findings
        .iter()
        .take(20)
        .map(|f| format!("\n  {:?} at {}: {}", f.kind, f.index, f.detail))
        .collect()
}
