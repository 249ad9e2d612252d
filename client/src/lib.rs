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
pub mod mcp;
pub mod read;
pub mod render;

pub use appender::{Appender, AppenderOptions, PendingAck};
pub use event::{Event, EventJson, new_event_id, new_span_id, new_trace_id};
pub use ledger_proto::v1::EventFilter;
pub use ledger_proto::v1::{AppendAck, AuditEvent, EventKind, Outcome, RiskTier};
pub use ledger_verify::receipt::VerifiedReceipt;
pub use ledger_verify::{Checkpoint, Hash, NoteVerifier};
pub use read::{ExportError, Page, ReadOptions, Record, RecordStream, Tail, Timeline};

use ledger_proto::v1::{
    AppendRequest, GetCheckpointRequest, GetConsistencyProofRequest, GetInclusionProofRequest,
    SignedCheckpoint, get_inclusion_proof_request, ingest_client::IngestClient,
    proofs_client::ProofsClient,
};
use ledger_verify::checkpoint::open_checkpoint;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Adds the caller's API key to every request.
#[derive(Clone, Default)]
pub struct Credentials(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// The transport every generated client of this crate runs on.
pub type Transport = InterceptedService<Channel, Credentials>;

/// How to reach a server over TLS.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// CA certificate (PEM) that signed the server's; system roots are not used.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key (PEM), for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Name to check the server certificate against (default: the host).
    pub domain: Option<String>,
}

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
    credentials: Credentials,
    log: String,
    key: Option<NoteVerifier>,
}

impl Client {
    /// Connects to `addr` (`http://host:port`, `https://…`, or `host:port`).
    pub async fn connect(addr: &str) -> Result<Client, Error> {
        Client::connect_tls(addr, None).await
    }

    /// Connects, over TLS when `tls` is given (the address may then be
    /// `https://` or bare).
    pub async fn connect_tls(addr: &str, tls: Option<TlsOptions>) -> Result<Client, Error> {
        Client::connect_with(addr, tls, false).await
    }

    /// Like [`Client::connect_tls`], but with `lazy` the connection is made
    /// on the first call (and remade after the server comes back), so a
    /// long-running caller (the MCP gateway) starts while the server is down.
    pub async fn connect_with(
        addr: &str,
        tls: Option<TlsOptions>,
        lazy: bool,
    ) -> Result<Client, Error> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("{scheme}://{addr}")
        };
        let connect_err = |source| Error::Connect {
            addr: addr.to_string(),
            source,
        };
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(connect_err)?
            .tcp_nodelay(true);
        if let Some(t) = tls {
            let mut c = ClientTlsConfig::new();
            if let Some(ca) = t.ca_pem {
                c = c.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = t.identity {
                c = c.identity(Identity::from_pem(cert, key));
            }
            if let Some(d) = t.domain {
                c = c.domain_name(d);
            }
            endpoint = endpoint.tls_config(c).map_err(connect_err)?;
        }
        let channel = if lazy {
            endpoint
                .connect_timeout(std::time::Duration::from_secs(5))
                .connect_lazy()
        } else {
            endpoint.connect().await.map_err(connect_err)?
        };
        Ok(Client::from_channel(channel))
    }

    /// Sends this API key (`alk_<id>.<secret>`) with every request.
    pub fn with_token(mut self, token: &str) -> Result<Client, Error> {
        let v = format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| Error::Verification("the API key is not valid header text".into()))?;
        self.credentials = Credentials(Some(v));
        Ok(self)
    }

    /// A generated client's transport: the channel with the credentials.
    pub fn transport(&self) -> Transport {
        InterceptedService::new(self.channel.clone(), self.credentials.clone())
    }

    pub fn from_channel(channel: Channel) -> Client {
        Client {
            channel,
            credentials: Credentials::default(),
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
    pub fn ingest(&self) -> IngestClient<Transport> {
        IngestClient::new(self.transport())
    }
    pub fn proofs(&self) -> ProofsClient<Transport> {
        ProofsClient::new(self.transport())
    }
    pub fn admin(&self) -> ledger_proto::v1::admin_client::AdminClient<Transport> {
        ledger_proto::v1::admin_client::AdminClient::new(self.transport())
    }

    pub fn governance(&self) -> ledger_proto::v1::governance_client::GovernanceClient<Transport> {
        ledger_proto::v1::governance_client::GovernanceClient::new(self.transport())
    }

    /// Grants or denies an approval request (approvers and admins): the
    /// server appends the decision entry, naming this caller.
    pub async fn decide(
        &self,
        request_event_id: &str,
        grant: bool,
        reason: &str,
    ) -> Result<ledger_proto::v1::Decision, Error> {
        Ok(self
            .governance()
            .decide(ledger_proto::v1::DecideRequest {
                log: self.log.clone(),
                request_event_id: request_event_id.to_string(),
                grant,
                reason: reason.to_string(),
            })
            .await?
            .into_inner())
    }

    /// Waits up to `wait_seconds` for the decision on an approval request.
    pub async fn await_decision(
        &self,
        request_event_id: &str,
        wait_seconds: u32,
    ) -> Result<ledger_proto::v1::Decision, Error> {
        Ok(self
            .governance()
            .await_decision(ledger_proto::v1::AwaitDecisionRequest {
                log: self.log.clone(),
                request_event_id: request_event_id.to_string(),
                wait_seconds,
            })
            .await?
            .into_inner())
    }

    /// Kills (`killed = true`) or revives an agent (approvers and admins).
    pub async fn set_agent_state(
        &self,
        agent_id: &str,
        killed: bool,
        reason: &str,
    ) -> Result<ledger_proto::v1::AgentState, Error> {
        Ok(self
            .governance()
            .set_agent_state(ledger_proto::v1::SetAgentStateRequest {
                log: self.log.clone(),
                agent_id: agent_id.to_string(),
                killed,
                reason: reason.to_string(),
            })
            .await?
            .into_inner())
    }

    /// An agent's kill-switch state.
    pub async fn agent_state(&self, agent_id: &str) -> Result<ledger_proto::v1::AgentState, Error> {
        Ok(self
            .governance()
            .get_agent_state(ledger_proto::v1::GetAgentStateRequest {
                log: self.log.clone(),
                agent_id: agent_id.to_string(),
            })
            .await?
            .into_inner())
    }

    /// Where the log stands: committed, signed, indexed, mirrored and
    /// anchored sizes, and the mirror's lag.
    pub async fn status(&self) -> Result<ledger_proto::v1::LogStatus, Error> {
        Ok(self
            .proofs()
            .get_log_status(ledger_proto::v1::GetLogStatusRequest {
                log: self.log.clone(),
            })
            .await?
            .into_inner())
    }

    /// Redacts the payload of entry `target` (admins only): appends a
    /// redaction entry naming who and why; the tree still verifies.
    pub async fn redact(&self, target: u64, reason: &str) -> Result<AppendAck, Error> {
        Ok(self
            .admin()
            .redact(ledger_proto::v1::RedactRequest {
                log: self.log.clone(),
                target_index: target,
                reason: reason.to_string(),
            })
            .await?
            .into_inner())
    }

    /// Appends one event and waits until it is durable. Retrying with the
    /// same `event_id` after an error is safe: the server deduplicates.
    pub async fn append(&self, event: AuditEvent) -> Result<AppendAck, Error> {
        let ack = self
            .ingest()
            .append(AppendRequest {
                log: self.log.clone(),
                event: Some(event),
                receipt: false,
            })
            .await?
            .into_inner();
        Ok(ack)
    }

    /// Appends many events in one `AppendBatch` call and waits until each
    /// is durable or refused. One result per event, in order: a batch is not
    /// atomic, and one refused event (its status names the field) does not
    /// stop the others. Retrying the whole batch is safe: events already
    /// acked come back as duplicates. At most 4,096 events per call.
    pub async fn append_batch(
        &self,
        events: Vec<AuditEvent>,
    ) -> Result<Vec<Result<AppendAck, tonic::Status>>, Error> {
        let results = self
            .ingest()
            .append_batch(ledger_proto::v1::AppendBatchRequest {
                log: self.log.clone(),
                events,
                receipt: false,
            })
            .await?
            .into_inner()
            .results;
        Ok(results.into_iter().map(appender::response_result).collect())
    }

    /// Appends one event and asks for a receipt: the writer's offline proof
    /// that the ledger accepted it. The receipt is checked against the log
    /// key (required) and against the event sent, payload included; keep
    /// it with [`ledger_verify::receipt::to_tlog_proof`] as a file.
    pub async fn append_with_receipt(
        &self,
        event: AuditEvent,
    ) -> Result<(AppendAck, ledger_proto::v1::Receipt, VerifiedReceipt), Error> {
        let key = self.key.as_ref().ok_or(Error::NoKey)?;
        let mut ack = self
            .ingest()
            .append(AppendRequest {
                log: self.log.clone(),
                event: Some(event.clone()),
                receipt: true,
            })
            .await?
            .into_inner();
        let receipt = ack
            .receipt
            .take()
            .ok_or_else(|| Error::Verification("the server sent no receipt".into()))?;
        let verified = ledger_verify::receipt::verify_proto(&receipt, key)
            .map_err(|e| Error::Verification(format!("receipt: {e}")))?;
        if verified.entry.index != ack.index
            || verified.leaf_hash.as_bytes() != ack.leaf_hash.as_slice()
        {
            return Err(Error::Verification(
                "the receipt is for another entry than the ack".into(),
            ));
        }
        ledger_verify::receipt::check_event(&verified.entry, &event, &receipt.payload_salt)
            .map_err(|e| Error::Verification(format!("receipt: {e}")))?;
        Ok((ack, receipt, verified))
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
