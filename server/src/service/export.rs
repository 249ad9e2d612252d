//! The Export service: streams a bundle file (see `ledger_verify::bundle`)
//! of a range of a log, for offline audit.

use super::Logs;
use super::proofs::{checkpoint_at, internal};
use super::query::{RecordOptions, range, records};
use crate::store::{Store, be, cf};
use ledger_proto::v1::export_server::Export;
use ledger_proto::v1::{BundleHeader, ExportChunk, ExportRequest, SignedCheckpoint};
use ledger_verify::Hash;
use ledger_verify::bundle::BundleWriter;
use ledger_verify::tree::{CompactRange, HashSource, NodeId};
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
    let upper = be(to.saturating_add(1));
    store
        .scan(cf::CHECKPOINTS, &be(from), &upper, None, false)
        .map(|kv| {
            let (k, v) = kv.map_err(internal)?;
            let size = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| Status::data_loss("malformed checkpoint key"))?,
            );
            let note = String::from_utf8(v.to_vec())
                .map_err(|_| Status::data_loss(format!("checkpoint {size} is not UTF-8")))?;
            Ok((size, note))
        })
        .collect()
}

/// Size of the first stored checkpoint at or after `size`.
fn checkpoints_from(store: &Store, size: u64) -> Result<Option<u64>, Status> {
    match store
        .scan(cf::CHECKPOINTS, &be(size), &[0xff; 9], None, false)
        .next()
    {
        None => Ok(None),
        Some(kv) => {
            let (k, _) = kv.map_err(internal)?;
            Ok(Some(u64::from_be_bytes(k.as_ref().try_into().map_err(
                |_| Status::data_loss("malformed checkpoint key"),
            )?)))
        }
    }
}

fn proto_checkpoint(size: u64, note: String) -> SignedCheckpoint {
    SignedCheckpoint {
        note,
        tree_size: size,
        ..Default::default()
    }
}

/// Writes the bundle of [start, end) to `tx` in chunks.
fn write_bundle(
    store: &Store,
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
            w.checkpoint(proto_checkpoint(s, note)).map_err(io)?;
        }
        Ok(())
    };
    emit_checkpoints(&mut w, start)?;
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
            w.entry(r).map_err(io)?;
            emit_checkpoints(&mut w, size)?;
            if w.get_mut().len() >= CHUNK {
                send(w.get_mut(), size - start)?;
            }
        }
        at = stop;
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
        let header = BundleHeader {
            origin: log.origin.clone(),
            verifier_key: log.verifier.to_string(),
            start,
            end,
            prefix_hashes: prefix.peaks().iter().map(|h| h.to_vec()).collect(),
            prev_leaf_hash: prev_leaf.to_vec(),
            includes_payloads: req.include_payloads,
            created_at: Some(prost_types::Timestamp {
                seconds: now.as_secs() as i64,
                nanos: now.subsec_nanos() as i32,
            }),
        };
        let (tx, rx) = mpsc::channel(4);
        let payloads = req.include_payloads;
        tokio::task::spawn_blocking(move || {
            if let Err(s) = write_bundle(&store, header, payloads, &tx) {
                let _ = tx.blocking_send(Err(s));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
