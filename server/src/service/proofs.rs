//! The Proofs service: signed checkpoints, inclusion and consistency proofs,
//! computed from the stored hash tiles.

use super::Logs;
use crate::log::Log;
use crate::sequencer;
use ledger_proto::v1::get_inclusion_proof_request::Leaf;
use ledger_proto::v1::proofs_server::Proofs;
use ledger_proto::v1::{
    ConsistencyProof, GetCheckpointRequest, GetConsistencyProofRequest,
    GetConsistencyProofResponse, GetInclusionProofRequest, GetInclusionProofResponse,
    GetLogStatusRequest, InclusionProof, LogStatus, SignedCheckpoint,
};
use ledger_verify::tree::{self, HashSource, NodeId};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ProofsService {
    pub logs: Arc<Logs>,
}

/// A checkpoint note as stored under `size`, opened with the log key: a
/// note that does not verify, or is of another size, is data loss.
pub(crate) fn open_stored(
    size: u64,
    note: String,
    key: &ledger_verify::NoteVerifier,
) -> Result<SignedCheckpoint, Status> {
    let checkpoint = ledger_verify::open_checkpoint(&note, key)
        .map_err(|e| Status::data_loss(format!("stored checkpoint {size} does not verify: {e}")))?;
    if checkpoint.size != size {
        return Err(Status::data_loss(format!(
            "checkpoint stored under size {size} says {}",
            checkpoint.size
        )));
    }
    Ok(sequencer::SignedCheckpoint { checkpoint, note }.to_proto())
}

#[tonic::async_trait]
impl Proofs for ProofsService {
    async fn get_checkpoint(
        &self,
        req: Request<GetCheckpointRequest>,
    ) -> Result<Response<SignedCheckpoint>, Status> {
        let (_, req, log) = self.logs.open(req, crate::auth::Action::Read, |r| &r.log)?;
        checkpoint_at(&log, req.tree_size).await.map(Response::new)
    }

    async fn get_log_status(
        &self,
        req: Request<GetLogStatusRequest>,
    ) -> Result<Response<LogStatus>, Status> {
        let (_, _, log) = self.logs.open(req, crate::auth::Action::Read, |r| &r.log)?;
        let l = log.clone();
        let status = blocking(move || l.status()).await?;
        Ok(Response::new(status))
    }

    async fn get_inclusion_proof(
        &self,
        req: Request<GetInclusionProofRequest>,
    ) -> Result<Response<GetInclusionProofResponse>, Status> {
        let (_, req, log) = self.logs.open(req, crate::auth::Action::Read, |r| &r.log)?;
        let cp = checkpoint_at(&log, req.tree_size).await?;
        let leaf = req
            .leaf
            .ok_or_else(|| Status::invalid_argument("leaf: give an index or an event_id"))?;
        let store = log.store.clone();
        let size = cp.tree_size;
        let (index, hashes, leaf_hash) = blocking(move || {
            let index = match leaf {
                Leaf::Index(i) => i,
                Leaf::EventId(id) => store
                    .dedup(&id)
                    .map_err(internal)?
                    .ok_or_else(|| {
                        Status::not_found(format!(
                            "event_id: no event {} in this log",
                            super::answers::quote(&id)
                        ))
                    })?,
            };
            if index >= size {
                return Err(Status::out_of_range(format!(
                    "index: {index} is not in the tree of size {size} (not yet covered by that checkpoint)"
                )));
            }
            let proof = tree::inclusion_proof(&*store, index, size).map_err(internal)?;
            let leaf = store.nodes(&[NodeId::new(0, index)]).map_err(internal)?[0];
            Ok((index, proof, leaf))
        })
        .await?;
        Ok(Response::new(GetInclusionProofResponse {
            proof: Some(InclusionProof {
                leaf_index: index,
                tree_size: size,
                hashes: hashes.iter().map(|h| h.to_vec()).collect(),
            }),
            leaf_hash: leaf_hash.to_vec(),
            checkpoint: Some(cp),
        }))
    }

    async fn get_consistency_proof(
        &self,
        req: Request<GetConsistencyProofRequest>,
    ) -> Result<Response<GetConsistencyProofResponse>, Status> {
        let (_, req, log) = self.logs.open(req, crate::auth::Action::Read, |r| &r.log)?;
        let cp = checkpoint_at(&log, req.new_size).await?;
        let (old, new) = (req.old_size, cp.tree_size);
        if old > new {
            return Err(Status::invalid_argument(format!(
                "old_size: {old} is larger than new_size {new}"
            )));
        }
        let store = log.store.clone();
        let hashes =
            blocking(move || tree::consistency_proof(&*store, old, new).map_err(internal)).await?;
        Ok(Response::new(GetConsistencyProofResponse {
            proof: Some(ConsistencyProof {
                old_size: old,
                new_size: new,
                hashes: hashes.iter().map(|h| h.to_vec()).collect(),
            }),
            new_checkpoint: Some(cp),
        }))
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// A store failure as a status: what the store finds corrupt is data loss.
pub(crate) fn store_status(e: crate::store::StoreError) -> Status {
    match e {
        crate::store::StoreError::Corrupt(m) => Status::data_loss(m),
        other => internal(other),
    }
}

/// Runs store reads off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f).await.map_err(internal)?
}

/// The checkpoint of `size` entries (0: the latest, which covers every entry
/// acked before the call), verified.
pub async fn checkpoint_at(log: &Arc<Log>, size: u64) -> Result<SignedCheckpoint, Status> {
    if size == 0 {
        let cp = log.fresh_checkpoint().await.map_err(|r| r.to_status())?;
        let cp = cp.ok_or_else(|| {
            Status::not_found("the log is empty: no checkpoint has been signed yet")
        })?;
        return Ok(cp.to_proto());
    }
    let store = log.store.clone();
    let note = blocking(move || store.checkpoint(size).map_err(internal))
        .await?
        .ok_or_else(|| {
            Status::not_found(format!("tree_size: no checkpoint stored for size {size}"))
        })?;
    open_stored(size, note, &log.verifier)
}
