//! The Query service: timelines, filtered listings (paged and streamed),
//! ranges of entries, and a live tail. Reads go to the store, never through
//! the sequencer; every result is bounded by a signed checkpoint.

use super::Logs;
use super::proofs::{blocking, checkpoint_at, internal, store_status};
use crate::log::Log;
use crate::query::{self, Cursor, Filter, Hit, QueryError};
use crate::store::{CachedTiles, Store};
use ledger_proto::v1::query_server::Query;
use ledger_proto::v1::{
    EntryRecord, GetEntriesRequest, InclusionProof, ListEventsRequest, ListEventsResponse,
    SignedCheckpoint, TailRequest, TimelineRequest, TimelineResponse,
};
use ledger_verify::entry::decode_entry;
use ledger_verify::leaf_hash;
use ledger_verify::tree;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub struct QueryService {
    pub logs: Arc<Logs>,
}

type RecordStream = Pin<Box<dyn Stream<Item = Result<EntryRecord, Status>> + Send>>;

impl From<QueryError> for Status {
    fn from(e: QueryError) -> Status {
        match e {
            QueryError::Invalid(..) => Status::invalid_argument(e.to_string()),
            QueryError::TooLarge => Status::failed_precondition(e.to_string()),
            QueryError::Store(_) => Status::internal(e.to_string()),
            QueryError::Corrupt(_) => Status::data_loss(e.to_string()),
        }
    }
}

/// What to attach to each record.
#[derive(Clone, Copy)]
pub struct RecordOptions {
    pub payloads: bool,
    /// Inclusion proofs against this tree size.
    pub proofs_at: Option<u64>,
}

/// Builds wire records for entries, with payloads and proofs as asked.
pub fn records(
    store: &Store,
    entries: impl IntoIterator<Item = (u64, Vec<u8>)>,
    opts: RecordOptions,
) -> Result<Vec<EntryRecord>, Status> {
    let tiles = CachedTiles::new(store);
    let mut out = Vec::new();
    for (index, bytes) in entries {
        let mut r = EntryRecord {
            index,
            leaf_hash: leaf_hash(&bytes).to_vec(),
            ..Default::default()
        };
        if opts.payloads {
            match store.payload(index).map_err(internal)? {
                Some((salt, payload)) => {
                    r.payload = payload;
                    r.payload_salt = salt;
                }
                None => {
                    // An entry that committed to a payload but has none stored
                    // was redacted.
                    let e = decode_entry(&bytes)
                        .map_err(|_| Status::data_loss(format!("entry {index} does not decode")))?;
                    r.payload_redacted = !e.payload_commitment.is_empty();
                }
            }
        }
        if let Some(size) = opts.proofs_at {
            let hashes = tree::inclusion_proof(&tiles, index, size).map_err(internal)?;
            r.inclusion = Some(InclusionProof {
                leaf_index: index,
                tree_size: size,
                hashes: hashes.iter().map(|h| h.to_vec()).collect(),
            });
        }
        r.entry = bytes;
        out.push(r);
    }
    Ok(out)
}

fn hits_to_pairs(hits: Vec<Hit>) -> impl Iterator<Item = (u64, Vec<u8>)> {
    hits.into_iter().map(|h| (h.index, h.bytes))
}

/// The checkpoint results are bounded by and proved against: the latest, or
/// the stored one of `size`.
/// The indexes are waited for until they cover it.
async fn view(log: &Arc<Log>, size: u64) -> Result<SignedCheckpoint, Status> {
    let cp = match checkpoint_at(log, size).await {
        Err(s) if s.code() == tonic::Code::NotFound && size == 0 => SignedCheckpoint::default(),
        other => other?,
    };
    log.indexed_through(cp.tree_size).await?;
    Ok(cp)
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn get_timeline(
        &self,
        req: Request<TimelineRequest>,
    ) -> Result<Response<TimelineResponse>, Status> {
        let (_, req, log) = self.logs.open(req, crate::auth::Action::Read, |r| &r.log)?;
        let trace = query::parse_trace_id("correlation_id", &req.correlation_id)?;
        let cp = view(&log, req.proof_tree_size).await?;
        let store = log.store.clone();
        let snapshot = cp.tree_size;
        let opts = RecordOptions {
            payloads: req.include_payloads,
            proofs_at: req.with_proofs.then_some(snapshot),
        };
        let (entries, spans, roots) = blocking(move || {
            let hits = query::timeline(&store, trace, snapshot)?;
            let (spans, roots) = query::span_tree(&hits);
            let entries = records(&store, hits_to_pairs(hits), opts)?;
            Ok((entries, spans, roots))
        })
        .await?;
        Ok(Response::new(TimelineResponse {
            entries,
            spans,
            root_span_ids: roots,
            checkpoint: Some(cp),
        }))
    }

    async fn list_events(
        &self,
        req: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        let (_, req, log) = self.logs.open(req, crate::auth::Action::Read, |r| &r.log)?;
        let filter = Filter::from_proto(req.filter.as_ref())?;
        let (cursor, size) = listing_start(&req)?;
        let cp = view(&log, size).await?;
        let limit = match req.page_size {
            0 => query::DEFAULT_PAGE,
            n => n as usize,
        };
        let opts = RecordOptions {
            payloads: req.include_payloads,
            proofs_at: req.with_proofs.then_some(cp.tree_size),
        };
        let store = log.store.clone();
        let snapshot = cp.tree_size;
        let (entries, next) = blocking(move || {
            let page = query::list(
                &store,
                &filter,
                snapshot,
                cursor.as_ref(),
                req.descending,
                limit,
            )?;
            let entries = records(&store, hits_to_pairs(page.hits), opts)?;
            Ok((entries, page.next))
        })
        .await?;
        Ok(Response::new(ListEventsResponse {
            entries,
            next_page_token: next.map(|c| c.to_token()).unwrap_or_default(),
            checkpoint: Some(cp),
        }))
    }

    type StreamEventsStream = RecordStream;

    async fn stream_events(
        &self,
        req: Request<ListEventsRequest>,
    ) -> Result<Response<RecordStream>, Status> {
        let (_, req, log) = self.logs.open(req, crate::auth::Action::Read, |r| &r.log)?;
        let filter = Filter::from_proto(req.filter.as_ref())?;
        let (mut cursor, size) = listing_start(&req)?;
        let cp = view(&log, size).await?;
        let snapshot = cp.tree_size;
        let opts = RecordOptions {
            payloads: req.include_payloads,
            proofs_at: req.with_proofs.then_some(snapshot),
        };
        let (tx, rx) = mpsc::channel(4);
        let store = log.store.clone();
        tokio::task::spawn_blocking(move || {
            loop {
                let page = match query::list(
                    &store,
                    &filter,
                    snapshot,
                    cursor.as_ref(),
                    req.descending,
                    query::MAX_PAGE,
                ) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e.into()));
                        return;
                    }
                };
                if !send_blocking(&tx, records(&store, hits_to_pairs(page.hits), opts)) {
                    return;
                }
                match page.next {
                    Some(c) => cursor = Some(c),
                    None => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type TailStream = RecordStream;

    async fn tail(&self, req: Request<TailRequest>) -> Result<Response<RecordStream>, Status> {
        let (_, req, log) = self.logs.open(req, crate::auth::Action::Read, |r| &r.log)?;
        let filter = Filter::from_proto(req.filter.as_ref())?;
        let (tx, rx) = mpsc::channel(64);
        let mut next = req.from_index;
        let payloads = req.include_payloads;
        let mut checkpoints = log.watch_checkpoints();
        tokio::spawn(async move {
            loop {
                let size = checkpoints
                    .borrow_and_update()
                    .as_ref()
                    .map_or(0, |c| c.checkpoint.size);
                while next < size {
                    let end = size.min(next + 1024);
                    let store = log.store.clone();
                    let filter = filter.clone();
                    let start = next;
                    let batch = blocking(move || {
                        let rows = range(&store, start, end)?;
                        let matching = rows.into_iter().filter(|(_, bytes)| {
                            decode_entry(bytes).is_ok_and(|e| filter.matches(&e))
                        });
                        records(
                            &store,
                            matching,
                            RecordOptions {
                                payloads,
                                proofs_at: None,
                            },
                        )
                    })
                    .await;
                    match batch {
                        Ok(rs) => {
                            for r in rs {
                                if tx.send(Ok(r)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Err(s) => {
                            let _ = tx.send(Err(s)).await;
                            return;
                        }
                    }
                    next = end;
                }
                tokio::select! {
                    changed = checkpoints.changed() => {
                        if changed.is_err() {
                            let _ = tx.send(Err(Status::unavailable("server is shutting down"))).await;
                            return;
                        }
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type GetEntriesStream = RecordStream;

    async fn get_entries(
        &self,
        req: Request<GetEntriesRequest>,
    ) -> Result<Response<RecordStream>, Status> {
        let (_, req, log) = self.logs.open(req, crate::auth::Action::Read, |r| &r.log)?;
        if req.end != 0 && req.start > req.end {
            return Err(Status::invalid_argument(format!(
                "start: {} is after end {} (end 0 means the latest checkpoint's size)",
                req.start, req.end
            )));
        }
        let cp = view(&log, 0).await?;
        let end = if req.end == 0 {
            cp.tree_size
        } else {
            req.end.min(cp.tree_size)
        };
        if req.start > end {
            return Err(Status::out_of_range(format!(
                "start: {} is past the end of the log ({})",
                req.start, cp.tree_size
            )));
        }
        let (tx, rx) = mpsc::channel(4);
        let store = log.store.clone();
        let payloads = req.include_payloads;
        tokio::task::spawn_blocking(move || {
            let mut at = req.start;
            while at < end {
                let stop = end.min(at + 1024);
                let batch = range(&store, at, stop).and_then(|rows| {
                    records(
                        &store,
                        rows,
                        RecordOptions {
                            payloads,
                            proofs_at: None,
                        },
                    )
                });
                if !send_blocking(&tx, batch) {
                    return;
                }
                at = stop;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Where a listing starts: the cursor of its page token, if any, and the
/// tree size it views (a continued listing keeps its snapshot and proves
/// against it).
fn listing_start(req: &ListEventsRequest) -> Result<(Option<Cursor>, u64), Status> {
    let cursor = if req.page_token.is_empty() {
        None
    } else {
        Some(Cursor::from_token(&req.page_token)?)
    };
    let size = cursor.as_ref().map_or(req.proof_tree_size, |c| c.snapshot);
    Ok((cursor, size))
}

/// Sends a batch of records (or its error) from a blocking task; false when
/// the stream is over: an error was sent or the client went away.
fn send_blocking(
    tx: &mpsc::Sender<Result<EntryRecord, Status>>,
    batch: Result<Vec<EntryRecord>, Status>,
) -> bool {
    match batch {
        Ok(rs) => rs.into_iter().all(|r| tx.blocking_send(Ok(r)).is_ok()),
        Err(s) => {
            let _ = tx.blocking_send(Err(s));
            false
        }
    }
}

/// Entries [start, end) in order; a hole is data loss.
pub fn range(store: &Store, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, Status> {
    store.entries_range(start, end).map_err(store_status)
}
