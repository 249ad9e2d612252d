//! Client library for Agent Ledger.
//!
//! Appends events to a `ledgerd` over gRPC and checks what the server says
//! against its public key: every checkpoint it returns is signature-checked
//! and every proof verified with the same code the auditor's verifier runs.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ledger_client::Error> {
//! use ledger_client::{Client, Event, EventKind, RiskTier};
//! let key = "ledger.local/default+1a2b3c4d+AbCd…".parse().unwrap();
//! let client = Client::connect("http://127.0.0.1:7400").await?.verifying_with(key);
//! let ack = client
//!     .append(Event::new(EventKind::ToolCall, "billing-agent").tool("sql.execute").risk(RiskTier::High).build())
//!     .await?;
//! // Prove the event is in the signed log.
//! let proof = client.inclusion(ledger_client::Leaf::Index(ack.index), 0).await?;
//! println!("entry {} is in the log of {} entries", ack.index, proof.checkpoint.size);
//! # Ok(()) }
//! ```

pub mod appender;
pub mod event;
pub mod read;
pub mod render;

pub use appender::{Appender, AppenderOptions, PendingAck};
pub use event::{Event, EventJson, new_event_id, new_span_id, new_trace_id};
pub use ledger_proto::v1::EventFilter;
pub use ledger_proto::v1::{AppendAck, AuditEvent, EventKind, Outcome, RiskTier};
pub use ledger_verify::{Checkpoint, Hash, NoteVerifier};
pub use read::{ExportError, Page, ReadOptions, Record, RecordStream, Tail, Timeline};

use ledger_proto::v1::{
    AppendRequest, GetCheckpointRequest, GetConsistencyProofRequest, GetInclusionProofRequest,
    SignedCheckpoint, get_inclusion_proof_request, ingest_client::IngestClient,
    proofs_client::ProofsClient,
};
use ledger_verify::checkpoint::open_checkpoint;
use tonic::transport::{Channel, Endpoint};

/// What can go wrong talking to a ledger.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the ledger at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the ledger refused: {}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// The server's answer does not check out against its key: treat the
    /// server as untrustworthy.
    #[error("verification failed: {0}")]
    Verification(String),
    #[error("no verifier key configured: pass the log's public key to check its answers")]
    NoKey,
}

/// Which leaf to prove.
#[derive(Debug, Clone)]
pub enum Leaf {
    Index(u64),
    EventId(String),
}

/// A checkpoint whose signature was checked, with its note text.
#[derive(Debug, Clone)]
pub struct VerifiedCheckpoint {
    pub checkpoint: Checkpoint,
    pub note: String,
}

/// An inclusion proof that verified against a signed checkpoint.
#[derive(Debug, Clone)]
pub struct VerifiedInclusion {
    pub index: u64,
    pub leaf_hash: Hash,
    pub hashes: Vec<Hash>,
    pub checkpoint: Checkpoint,
    pub note: String,
}

/// A consistency proof that verified between two signed checkpoints.
#[derive(Debug, Clone)]
pub struct VerifiedConsistency {
    pub old: Checkpoint,
    pub new: Checkpoint,
    pub hashes: Vec<Hash>,
    pub new_note: String,
}

/// A connection to one log of a ledger.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    log: String,
    key: Option<NoteVerifier>,
}

impl Client {
    /// Connects to `addr` (`http://host:port`, or `host:port`).
    pub async fn connect(addr: &str) -> Result<Client, Error> {
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let connect_err = |source| Error::Connect {
            addr: addr.to_string(),
            source,
        };
        let channel = Endpoint::from_shared(uri)
            .map_err(connect_err)?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(connect_err)?;
        Ok(Client::from_channel(channel))
    }

    pub fn from_channel(channel: Channel) -> Client {
        Client {
            channel,
            log: String::new(),
            key: None,
        }
    }

    /// Talks to the named log instead of the caller's default one.
    pub fn log(mut self, name: impl Into<String>) -> Client {
        self.log = name.into();
        self
    }

    /// Checks every checkpoint and proof against this key.
    pub fn verifying_with(mut self, key: NoteVerifier) -> Client {
        self.key = Some(key);
        self
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }
    pub fn ingest(&self) -> IngestClient<Channel> {
        IngestClient::new(self.channel.clone())
    }
    pub fn proofs(&self) -> ProofsClient<Channel> {
        ProofsClient::new(self.channel.clone())
    }

    /// Appends one event and waits until it is durable. Retrying with the
    /// same `event_id` after an error is safe: the server deduplicates.
    pub async fn append(&self, event: AuditEvent) -> Result<AppendAck, Error> {
        let ack = self
            .ingest()
            .append(AppendRequest {
                log: self.log.clone(),
                event: Some(event),
            })
            .await?
            .into_inner();
        Ok(ack)
    }

    fn open(&self, cp: Option<SignedCheckpoint>) -> Result<VerifiedCheckpoint, Error> {
        let key = self.key.as_ref().ok_or(Error::NoKey)?;
        let cp = cp.ok_or_else(|| Error::Verification("the server sent no checkpoint".into()))?;
        let checkpoint = open_checkpoint(&cp.note, key)
            .map_err(|e| Error::Verification(format!("checkpoint: {e}")))?;
        Ok(VerifiedCheckpoint {
            checkpoint,
            note: cp.note,
        })
    }

    /// The latest signed checkpoint (`tree_size` 0) or a stored one, verified.
    pub async fn checkpoint(&self, tree_size: u64) -> Result<VerifiedCheckpoint, Error> {
        let cp = self
            .proofs()
            .get_checkpoint(GetCheckpointRequest {
                log: self.log.clone(),
                tree_size,
            })
            .await?
            .into_inner();
        self.open(Some(cp))
    }

    /// Proves a leaf is in the log, against the latest checkpoint
    /// (`tree_size` 0) or a stored one; the proof is verified here.
    pub async fn inclusion(&self, leaf: Leaf, tree_size: u64) -> Result<VerifiedInclusion, Error> {
        let leaf = match leaf {
            Leaf::Index(i) => get_inclusion_proof_request::Leaf::Index(i),
            Leaf::EventId(id) => get_inclusion_proof_request::Leaf::EventId(id),
        };
        let resp = self
            .proofs()
            .get_inclusion_proof(GetInclusionProofRequest {
                log: self.log.clone(),
                leaf: Some(leaf),
                tree_size,
            })
            .await?
            .into_inner();
        let cp = self.open(resp.checkpoint)?;
        let proof = resp
            .proof
            .ok_or_else(|| Error::Verification("the server sent no proof".into()))?;
        let leaf_hash = hash(&resp.leaf_hash, "leaf hash")?;
        let hashes = hashes(&proof.hashes)?;
        if proof.tree_size != cp.checkpoint.size {
            return Err(Error::Verification(format!(
                "proof is for size {}, checkpoint for {}",
                proof.tree_size, cp.checkpoint.size
            )));
        }
        ledger_verify::verify_inclusion(
            proof.leaf_index,
            proof.tree_size,
            &leaf_hash,
            &hashes,
            &cp.checkpoint.root,
        )
        .map_err(|e| Error::Verification(format!("inclusion of {}: {e}", proof.leaf_index)))?;
        Ok(VerifiedInclusion {
            index: proof.leaf_index,
            leaf_hash,
            hashes,
            checkpoint: cp.checkpoint,
            note: cp.note,
        })
    }

    /// Proves the log grew from `old` (a checkpoint the caller trusts) to the
    /// latest checkpoint, or to `new_size`, without rewriting anything.
    pub async fn consistency(
        &self,
        old: &Checkpoint,
        new_size: u64,
    ) -> Result<VerifiedConsistency, Error> {
        let resp = self
            .proofs()
            .get_consistency_proof(GetConsistencyProofRequest {
                log: self.log.clone(),
                old_size: old.size,
                new_size,
            })
            .await?
            .into_inner();
        let new = self.open(resp.new_checkpoint)?;
        let proof = resp
            .proof
            .ok_or_else(|| Error::Verification("the server sent no proof".into()))?;
        let hashes = hashes(&proof.hashes)?;
        ledger_verify::verify_consistency(
            old.size,
            new.checkpoint.size,
            &hashes,
            &old.root,
            &new.checkpoint.root,
        )
        .map_err(|e| {
            Error::Verification(format!(
                "log of size {} is not an extension of the checkpoint of size {}: {e}",
                new.checkpoint.size, old.size
            ))
        })?;
        Ok(VerifiedConsistency {
            old: old.clone(),
            new: new.checkpoint,
            hashes,
            new_note: new.note,
        })
    }
}

fn hash(bytes: &[u8], what: &str) -> Result<Hash, Error> {
    Hash::from_slice(bytes)
        .ok_or_else(|| Error::Verification(format!("{what} is {} bytes, not 32", bytes.len())))
}

fn hashes(list: &[Vec<u8>]) -> Result<Vec<Hash>, Error> {
    list.iter().map(|h| hash(h, "proof hash")).collect()
}
