//! Reading a log: timelines, filtered listings, a tail that survives
//! reconnects, entry ranges and export bundles. Proofs that come with the
//! results are verified here, against a signed checkpoint, before they are
//! handed out.

use crate::{Client, Error, VerifiedCheckpoint};
use ledger_proto::v1::{
    AuditEvent, EntryRecord, EventFilter, ExportRequest, LedgerEntry, ListEventsRequest,
    SignedCheckpoint, SpanNode, TailRequest, TimelineRequest, export_client::ExportClient,
    query_client::QueryClient,
};
use ledger_verify::entry::decode_entry;
use ledger_verify::{Hash, leaf_hash};
use std::time::Duration;
use tonic::Streaming;

/// One stored entry, decoded, with the leaf hash computed here from its bytes.
#[derive(Debug, Clone)]
pub struct Record {
    pub index: u64,
    pub entry: LedgerEntry,
    pub leaf_hash: Hash,
    /// The payload (with its salt) when asked for and not redacted.
    pub payload: Option<Vec<u8>>,
    pub payload_redacted: bool,
    /// Whether an inclusion proof came with it and verified.
    pub proved: bool,
}

impl Record {
    pub fn event(&self) -> Option<&AuditEvent> {
        self.entry.event.as_ref()
    }
}

/// What to fetch with each result.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    pub payloads: bool,
    /// Ask for and verify inclusion proofs (needs the log key).
    pub proofs: bool,
    /// Prove against this stored checkpoint size (0: the latest).
    pub proof_size: u64,
}

/// A trace's events and span tree.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub records: Vec<Record>,
    pub spans: Vec<SpanNode>,
    pub roots: Vec<String>,
    /// The checkpoint the answer is bounded by (verified when a key is set).
    pub checkpoint: Option<VerifiedCheckpoint>,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    pub records: Vec<Record>,
    /// Pass back to continue; None at the end.
    pub next_page_token: Option<String>,
    pub checkpoint: Option<VerifiedCheckpoint>,
}

impl Client {
    pub fn query(&self) -> QueryClient<crate::Transport> {
        QueryClient::new(self.transport()).max_decoding_message_size(256 << 20)
    }

    /// Opens the checkpoint a read was bounded by: verified when this client
    /// has a key, or taken as given when it has none.
    fn bound(&self, cp: Option<SignedCheckpoint>) -> Result<Option<VerifiedCheckpoint>, Error> {
        match cp {
            Some(c) if c.tree_size > 0 && self.key.is_some() => self.open(Some(c)).map(Some),
            _ => Ok(None),
        }
    }

    /// Turns a wire record into a [`Record`], checking its proof against
    /// `cp` when one came with it.
    fn record(
        &self,
        r: EntryRecord,
        cp: Option<&VerifiedCheckpoint>,
        want_proof: bool,
    ) -> Result<Record, Error> {
        let entry = decode_entry(&r.entry)
            .map_err(|e| Error::Verification(format!("entry {}: {e}", r.index)))?;
        if entry.index != r.index {
            return Err(Error::Verification(format!(
                "record {} holds entry {}",
                r.index, entry.index
            )));
        }
        let leaf = leaf_hash(&r.entry);
        let mut proved = false;
        if want_proof {
            let cp = cp.ok_or(Error::NoKey)?;
            let proof = r.inclusion.ok_or_else(|| {
                Error::Verification(format!("entry {}: no inclusion proof", r.index))
            })?;
            let hashes = crate::hashes(&proof.hashes)?;
            ledger_verify::verify_inclusion(
                r.index,
                cp.checkpoint.size,
                &leaf,
                &hashes,
                &cp.checkpoint.root,
            )
            .map_err(|e| Error::Verification(format!("inclusion of entry {}: {e}", r.index)))?;
            proved = true;
        }
        let payload = (!r.payload_redacted && !r.payload_salt.is_empty()).then_some(r.payload);
        Ok(Record {
            index: r.index,
            entry,
            leaf_hash: leaf,
            payload,
            payload_redacted: r.payload_redacted,
            proved,
        })
    }

    /// Opens the checkpoint an answer was bounded by and turns its records
    /// into [`Record`]s, verifying their proofs against it when asked for.
    fn records_against(
        &self,
        entries: Vec<EntryRecord>,
        cp: Option<SignedCheckpoint>,
        proofs: bool,
    ) -> Result<(Vec<Record>, Option<VerifiedCheckpoint>), Error> {
        let checkpoint = self.bound(cp)?;
        let records = entries
            .into_iter()
            .map(|r| self.record(r, checkpoint.as_ref(), proofs))
            .collect::<Result<_, _>>()?;
        Ok((records, checkpoint))
    }

    /// Every event of one trace, in log order, with its span tree.
    pub async fn timeline(
        &self,
        correlation_id: &str,
        opts: ReadOptions,
    ) -> Result<Timeline, Error> {
        if opts.proofs && self.key.is_none() {
            return Err(Error::NoKey);
        }
        let resp = self
            .query()
            .get_timeline(TimelineRequest {
                log: self.log.clone(),
                correlation_id: correlation_id.to_string(),
                include_payloads: opts.payloads,
                with_proofs: opts.proofs,
                proof_tree_size: opts.proof_size,
            })
            .await?
            .into_inner();
        let (records, checkpoint) =
            self.records_against(resp.entries, resp.checkpoint, opts.proofs)?;
        Ok(Timeline {
            records,
            spans: resp.spans,
            roots: resp.root_span_ids,
            checkpoint,
        })
    }

    /// One page of events matching `filter`; pass `page_token` from the
    /// previous page to continue (the listing keeps its snapshot).
    pub async fn list_events(
        &self,
        filter: EventFilter,
        page_size: u32,
        page_token: Option<String>,
        descending: bool,
        opts: ReadOptions,
    ) -> Result<Page, Error> {
        if opts.proofs && self.key.is_none() {
            return Err(Error::NoKey);
        }
        let resp = self
            .query()
            .list_events(ListEventsRequest {
                log: self.log.clone(),
                filter: Some(filter),
                page_size,
                page_token: page_token.unwrap_or_default(),
                include_payloads: opts.payloads,
                with_proofs: opts.proofs,
                proof_tree_size: opts.proof_size,
                descending,
            })
            .await?
            .into_inner();
        let (records, checkpoint) =
            self.records_against(resp.entries, resp.checkpoint, opts.proofs)?;
        Ok(Page {
            records,
            next_page_token: (!resp.next_page_token.is_empty()).then_some(resp.next_page_token),
            checkpoint,
        })
    }

    /// All events matching `filter`, streamed by the server (no page limit).
    pub async fn stream_events(
        &self,
        filter: EventFilter,
        descending: bool,
        payloads: bool,
    ) -> Result<RecordStream, Error> {
        let stream = self
            .query()
            .stream_events(ListEventsRequest {
                log: self.log.clone(),
                filter: Some(filter),
                include_payloads: payloads,
                descending,
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(RecordStream {
            client: self.clone(),
            stream,
        })
    }

    /// Follows the log from `from_index`, reconnecting on failure without
    /// skipping or repeating an entry.
    pub fn tail(&self, from_index: u64, filter: EventFilter, payloads: bool) -> Tail {
        Tail {
            client: self.clone(),
            filter,
            payloads,
            next: from_index,
            stream: None,
            retry: Duration::from_millis(100),
        }
    }

    /// Stored entries [start, end), as the server sends them (raw records:
    /// the entry bytes are the leaf input).
    pub async fn entries(&self, start: u64, end: u64) -> Result<Vec<EntryRecord>, Error> {
        let mut s = self
            .query()
            .get_entries(ledger_proto::v1::GetEntriesRequest {
                log: self.log.clone(),
                start,
                end,
                include_payloads: false,
            })
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(r) = s.message().await? {
            out.push(r);
        }
        Ok(out)
    }

    /// Streams an export bundle of [start, end) (end 0: up to the latest
    /// checkpoint) into `out`, calling `progress(done, total)` per chunk.
    /// Returns the bytes written.
    pub async fn export(
        &self,
        start: u64,
        end: u64,
        payloads: bool,
        out: &mut (impl std::io::Write + ?Sized),
        mut progress: impl FnMut(u64, u64),
    ) -> Result<u64, ExportError> {
        let mut stream = ExportClient::new(self.transport())
            .export(ExportRequest {
                log: self.log.clone(),
                start,
                end,
                include_payloads: payloads,
            })
            .await
            .map_err(Error::from)?
            .into_inner();
        let mut written = 0u64;
        while let Some(chunk) = stream.message().await.map_err(Error::from)? {
            out.write_all(&chunk.data)?;
            written += chunk.data.len() as u64;
            progress(chunk.entries_done, chunk.entries_total);
        }
        out.flush()?;
        Ok(written)
    }
}

/// Why an export did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Ledger(#[from] Error),
    #[error("writing the bundle: {0}")]
    Io(#[from] std::io::Error),
}

/// Records streamed by the server.
pub struct RecordStream {
    client: Client,
    stream: Streaming<EntryRecord>,
}

impl RecordStream {
    pub async fn next(&mut self) -> Result<Option<Record>, Error> {
        match self.stream.message().await? {
            Some(r) => self.client.record(r, None, false).map(Some),
            None => Ok(None),
        }
    }
}

/// A live tail. `next` waits for the next matching entry.
pub struct Tail {
    client: Client,
    filter: EventFilter,
    payloads: bool,
    next: u64,
    stream: Option<Streaming<EntryRecord>>,
    retry: Duration,
}

impl Tail {
    /// Index the tail resumes from.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The next entry; reconnects (with back-off, up to 5 s) when the
    /// connection or server fails, resuming at the first unseen index.
    pub async fn next(&mut self) -> Result<Record, Error> {
        loop {
            if self.stream.is_none() {
                let req = TailRequest {
                    log: self.client.log.clone(),
                    from_index: self.next,
                    filter: Some(self.filter.clone()),
                    include_payloads: self.payloads,
                };
                match self.client.query().tail(req).await {
                    Ok(s) => {
                        self.stream = Some(s.into_inner());
                        self.retry = Duration::from_millis(100);
                    }
                    Err(s) if retryable(&s) => {
                        tokio::time::sleep(self.retry).await;
                        self.retry = (self.retry * 2).min(Duration::from_secs(5));
                        continue;
                    }
                    Err(s) => return Err(s.into()),
                }
            }
            let stream = self.stream.as_mut().expect("connected above");
            match stream.message().await {
                Ok(Some(r)) => {
                    if r.index < self.next {
                        continue; // Already delivered before a reconnect.
                    }
                    let rec = self.client.record(r, None, false)?;
                    self.next = rec.index + 1;
                    return Ok(rec);
                }
                Ok(None) => self.stream = None,
                Err(s) if retryable(&s) => {
                    self.stream = None;
                    tokio::time::sleep(self.retry).await;
                    self.retry = (self.retry * 2).min(Duration::from_secs(5));
                }
                Err(s) => return Err(s.into()),
            }
        }
    }
}

fn retryable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded
            | tonic::Code::ResourceExhausted
    )
}
