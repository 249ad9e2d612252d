//! The Export service: streams a bundle file (see `ledger_verify::bundle`)
//! of a range of a log, for offline audit.

use super::Logs;
use super::proofs::{checkpoint_at, internal, open_stored, store_status};
use super::query::{RecordOptions, range, records};
use crate::sequencer::redaction_key;
use crate::store::Store;
use ledger_proto::v1::export_server::Export;
use ledger_proto::v1::{
    BundleHeader, ConsistencyProof, ExportChunk, ExportRequest, InclusionProof, RedactionProof,
    SignedCheckpoint,
};
use ledger_verify::bundle::BundleWriter;
use ledger_verify::tree::{self, CompactRange, HashSource, NodeId};
use ledger_verify::{Hash, NoteVerifier};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub struct ExportService {
    pub logs: Arc<Logs>,
}

/// Bytes per streamed chunk.
const CHUNK: usize = 1 << 20;
/// Entries read from the store at a time.
const STEP: u64 = 4096;

type ChunkStream = Pin<Box<dyn Stream<Item = Result<ExportChunk, Status>> + Send>>;

/// Stored checkpoints with sizes in [from, to], ascending.
fn checkpoints(store: &Store, from: u64, to: u64) -> Result<Vec<(u64, String)>, Status> {
    store.checkpoints_between(from, to).map_err(store_status)
}

/// Size of the first stored checkpoint at or after `size`.
fn checkpoints_from(store: &Store, size: u64) -> Result<Option<u64>, Status> {
    store.first_checkpoint_from(size).map_err(store_status)
}

/// Evidence for each payload in the bundle that a redaction entry at or
/// after `end` erased: that entry, the newest stored checkpoint (which
/// covers it: the redaction committed before its payload was found gone),
/// an inclusion proof in it and a consistency proof from `end` to it.
fn redaction_proofs(
    store: &Store,
    key: &NoteVerifier,
    end: u64,
    withheld: &[u64],
) -> Result<Vec<RedactionProof>, Status> {
    let mut latest: Option<SignedCheckpoint> = None;
    let mut out = Vec::new();
    for &target in withheld {
        let Some(index) = store.dedup(&redaction_key(target)).map_err(internal)? else {
            return Err(Status::data_loss(format!(
                "the payload of entry {target} is gone but no redaction entry names it"
            )));
        };
        if index < end {
            continue; // In the bundle itself.
        }
        let cp = match &latest {
            Some(cp) => cp.clone(),
            None => {
                let (size, note) = store
                    .latest_checkpoint()
                    .map_err(internal)?
                    .ok_or_else(|| Status::data_loss("no stored checkpoint"))?;
                let cp = open_stored(size, note, key)?;
                latest = Some(cp.clone());
                cp
            }
        };
        let size = cp.tree_size;
        if index >= size {
            return Err(Status::unavailable(
                "a redaction is being committed; retry the export",
            ));
        }
        let entry = store
            .entry(index)
            .map_err(internal)?
            .ok_or_else(|| Status::data_loss(format!("entry {index} is missing")))?;
        let hashes = |v: Vec<Hash>| v.iter().map(|h| h.to_vec()).collect();
        let inclusion = tree::inclusion_proof(store, index, size).map_err(internal)?;
        let consistency = tree::consistency_proof(store, end, size).map_err(internal)?;
        out.push(RedactionProof {
            index,
            entry,
            checkpoint: Some(cp),
            inclusion: Some(InclusionProof {
                leaf_index: index,
                tree_size: size,
                hashes: hashes(inclusion),
            }),
            consistency: Some(ConsistencyProof {
                old_size: end,
                new_size: size,
                hashes: hashes(consistency),
            }),
        });
    }
    Ok(out)
}

/// Writes the bundle of [start, end) to `tx` in chunks; stored checkpoints
/// are opened with the log `key` on the way out.
fn write_bundle(
    store: &Store,
    key: &NoteVerifier,
    header: BundleHeader,
    payloads: bool,
    tx: &mpsc::Sender<Result<ExportChunk, Status>>,
) -> Result<(), Status> {
    let (start, end) = (header.start, header.end);
    let total = end - start;
    let send = |buf: &mut Vec<u8>, done: u64| -> Result<(), Status> {
        let chunk = ExportChunk {
            data: std::mem::take(buf),
            entries_done: done,
            entries_total: total,
        };
        tx.blocking_send(Ok(chunk))
            .map_err(|_| Status::cancelled("the client went away"))
    };
    let io = |e: std::io::Error| Status::internal(e.to_string());
    let mut cps = checkpoints(store, start, end)?.into_iter().peekable();
    let mut w = BundleWriter::new(Vec::with_capacity(2 * CHUNK), header).map_err(io)?;
    let mut at = start;
    // A checkpoint of size s follows entry s-1 (or the header, for s = start).
    let mut emit_checkpoints = |w: &mut BundleWriter<Vec<u8>>, size: u64| -> Result<(), Status> {
        while let Some((s, _)) = cps.peek() {
            if *s > size {
                break;
            }
            let (s, note) = cps.next().expect("peeked");
            w.checkpoint(open_stored(s, note, key)?).map_err(io)?;
        }
        Ok(())
    };
    emit_checkpoints(&mut w, start)?;
    let mut withheld = Vec::new();
    while at < end {
        let stop = end.min(at + STEP);
        let rows = range(store, at, stop)?;
        let recs = records(
            store,
            rows,
            RecordOptions {
                payloads,
                proofs_at: None,
            },
        )?;
        for r in recs {
            let size = r.index + 1;
            if r.payload_redacted {
                withheld.push(r.index);
            }
            w.entry(r).map_err(io)?;
            emit_checkpoints(&mut w, size)?;
            if w.get_mut().len() >= CHUNK {
                send(w.get_mut(), size - start)?;
            }
        }
        at = stop;
    }
    for p in redaction_proofs(store, key, end, &withheld)? {
        w.redaction_proof(p).map_err(io)?;
    }
    let mut rest = w.finish().map_err(io)?;
    send(&mut rest, total)
}

#[tonic::async_trait]
impl Export for ExportService {
    type ExportStream = ChunkStream;

    async fn export(&self, req: Request<ExportRequest>) -> Result<Response<ChunkStream>, Status> {
        let (_, req, log) = self
            .logs
            .open(req, crate::auth::Action::Export, |r| &r.log)?;
        let latest = checkpoint_at(&log, 0).await?;
        if req.end > latest.tree_size {
            return Err(Status::out_of_range(format!(
                "end: {} is past the latest checkpoint ({})",
                req.end, latest.tree_size
            )));
        }
        // A bundle ends at a signed checkpoint, so that a signature covers
        // every entry in it: extend `end` to the first one at or after it.
        let end = if req.end == 0 {
            latest.tree_size
        } else {
            let store = log.store.clone();
            let want = req.end;
            super::proofs::blocking(move || Ok(checkpoints_from(&store, want)?.unwrap_or(want)))
                .await?
        };
        if req.start > end {
            return Err(Status::invalid_argument(format!(
                "start: {} is after end {end}",
                req.start
            )));
        }
        let store = log.store.clone();
        let start = req.start;
        let (origin, verifier_key) = (log.origin.clone(), log.verifier.to_string());
        let key = log.verifier.clone();
        let payloads = req.include_payloads;
        let (tx, rx) = mpsc::channel(4);
        // Store reads (the prefix, then the bundle) run off the async threads.
        tokio::task::spawn_blocking(move || {
            let header = || -> Result<BundleHeader, Status> {
                let prefix = CompactRange::from_source(&*store, start).map_err(internal)?;
                let prev_leaf = if start == 0 {
                    Hash::ZERO
                } else {
                    store
                        .nodes(&[NodeId::new(0, start - 1)])
                        .map_err(internal)?[0]
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                Ok(BundleHeader {
                    origin,
                    verifier_key,
                    start,
                    end,
                    prefix_hashes: prefix.peaks().iter().map(|h| h.to_vec()).collect(),
                    prev_leaf_hash: prev_leaf.to_vec(),
                    includes_payloads: payloads,
                    created_at: Some(prost_types::Timestamp {
                        seconds: now.as_secs() as i64,
                        nanos: now.subsec_nanos() as i32,
                    }),
                })
            };
            let result = header().and_then(|h| write_bundle(&store, &key, h, payloads, &tx));
            if let Err(s) = result {
                let _ = tx.blocking_send(Err(s));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
