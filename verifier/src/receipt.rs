//! Append receipts: the writer's offline proof that the ledger accepted an
//! event (the stored entry, its inclusion proof and a signed checkpoint).
//! As a file a receipt is a C2SP tlog-proof whose `extra` line carries the
//! entry bytes, so `ledger-verify inclusion --entry` reads it too.

use crate::checkpoint::{Checkpoint, CheckpointError, open_checkpoint};
use crate::entry::{SALT_LEN, decode_entry, payload_commitment};
use crate::hash::{Hash, leaf_hash};
use crate::note::NoteVerifier;
use crate::proof::{ProofError, verify_inclusion};
use crate::proto::{AuditEvent, LedgerEntry, Receipt};
use crate::tlog_proof::TlogProof;

/// Why a receipt proves nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    #[error("malformed receipt: {0}")]
    Malformed(&'static str),
    #[error("the entry does not decode: {0}")]
    Entry(String),
    #[error("the entry says it is index {entry}, the proof is for index {proof}")]
    IndexMismatch { entry: u64, proof: u64 },
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("inclusion: {0}")]
    Inclusion(#[from] ProofError),
    #[error("the entry records another event than the one sent: {0}")]
    OtherEvent(&'static str),
}

/// What a verified receipt proves: this entry is at its index in the tree
/// the checkpoint signs.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedReceipt {
    pub entry: LedgerEntry,
    pub leaf_hash: Hash,
    pub checkpoint: Checkpoint,
}

/// Checks entry bytes, an inclusion proof at `index` and a signed note.
pub fn verify(
    entry: &[u8],
    index: u64,
    proof: &[Hash],
    note: &str,
    key: &NoteVerifier,
) -> Result<VerifiedReceipt, ReceiptError> {
    let decoded = decode_entry(entry).map_err(|e| ReceiptError::Entry(e.to_string()))?;
    if decoded.index != index {
        return Err(ReceiptError::IndexMismatch {
            entry: decoded.index,
            proof: index,
        });
    }
    let checkpoint = open_checkpoint(note, key)?;
    let leaf = leaf_hash(entry);
    verify_inclusion(index, checkpoint.size, &leaf, proof, &checkpoint.root)?;
    Ok(VerifiedReceipt {
        entry: decoded,
        leaf_hash: leaf,
        checkpoint,
    })
}

/// Checks a receipt as the server sends it in an ack.
pub fn verify_proto(r: &Receipt, key: &NoteVerifier) -> Result<VerifiedReceipt, ReceiptError> {
    let (index, proof, note) = parts(r)?;
    verify(&r.entry, index, &proof, note, key)
}

fn parts(r: &Receipt) -> Result<(u64, Vec<Hash>, &str), ReceiptError> {
    let inc = r
        .inclusion
        .as_ref()
        .ok_or(ReceiptError::Malformed("no inclusion proof"))?;
    let cp = r
        .checkpoint
        .as_ref()
        .ok_or(ReceiptError::Malformed("no checkpoint"))?;
    let proof = inc
        .hashes
        .iter()
        .map(|h| Hash::from_slice(h))
        .collect::<Option<Vec<_>>>()
        .ok_or(ReceiptError::Malformed("a proof hash is not 32 bytes"))?;
    Ok((inc.leaf_index, proof, &cp.note))
}

/// The receipt as a tlog-proof file (`extra` = the entry bytes).
pub fn to_tlog_proof(r: &Receipt) -> Result<TlogProof, ReceiptError> {
    let (index, proof, note) = parts(r)?;
    Ok(TlogProof {
        extra: Some(r.entry.clone()),
        index,
        proof,
        checkpoint_note: note.to_string(),
    })
}

/// Checks that a verified entry records `sent` (the event as the writer
/// sent it, payload included): the event with its payload taken out, and
/// the payload against the commitment with the receipt's salt.
pub fn check_event(
    entry: &LedgerEntry,
    sent: &AuditEvent,
    salt: &[u8],
) -> Result<(), ReceiptError> {
    let mut stored_form = sent.clone();
    let payload = std::mem::take(&mut stored_form.payload);
    if entry.event.as_ref() != Some(&stored_form) {
        return Err(ReceiptError::OtherEvent("the event fields differ"));
    }
    if payload.is_empty() {
        return if entry.payload_commitment.is_empty() {
            Ok(())
        } else {
            Err(ReceiptError::OtherEvent("the entry commits to a payload"))
        };
    }
    let salt: [u8; SALT_LEN] = salt
        .try_into()
        .map_err(|_| ReceiptError::OtherEvent("no 32-byte payload salt"))?;
    if payload_commitment(&salt, &payload).as_bytes() != entry.payload_commitment.as_slice() {
        return Err(ReceiptError::OtherEvent(
            "the payload does not match the commitment",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::NoteSigner;
    use crate::proto::{InclusionProof, SignedCheckpoint};
    use crate::tree::{MemoryTree, inclusion_proof};
    use prost::Message;

    #[test]
    fn a_receipt_proves_its_entry_and_nothing_else() {
        let signer = NoteSigner::from_seed("example.com/log", &[3; 32]).unwrap();
        let key = signer.verifier();
        let salt = [7u8; SALT_LEN];
        let sent = AuditEvent {
            event_id: "e-4".into(),
            agent_id: "a".into(),
            payload: b"{\"q\":1}".to_vec(),
            ..Default::default()
        };
        let mut t = MemoryTree::new();
        let mut entries = Vec::new();
        for i in 0..9u64 {
            let mut event = sent.clone();
            event.payload.clear();
            let e = LedgerEntry {
                index: i,
                event: Some(event),
                payload_commitment: payload_commitment(&salt, &sent.payload).to_vec(),
                ..Default::default()
            }
            .encode_to_vec();
            t.push(leaf_hash(&e));
            entries.push(e);
        }
        let note = Checkpoint::new("example.com/log", 9, t.root())
            .sign(&signer)
            .unwrap();
        let r = Receipt {
            entry: entries[4].clone(),
            inclusion: Some(InclusionProof {
                leaf_index: 4,
                tree_size: 9,
                hashes: inclusion_proof(&t, 4, 9)
                    .unwrap()
                    .iter()
                    .map(|h| h.to_vec())
                    .collect(),
            }),
            checkpoint: Some(SignedCheckpoint {
                note,
                ..Default::default()
            }),
            payload_salt: salt.to_vec(),
        };
        let v = verify_proto(&r, &key).unwrap();
        assert_eq!(v.checkpoint.size, 9);
        check_event(&v.entry, &sent, &r.payload_salt).unwrap();
        let mut other = sent.clone();
        other.payload = b"{\"q\":2}".to_vec();
        assert!(check_event(&v.entry, &other, &r.payload_salt).is_err());

        // Round trip through the file form.
        let file = to_tlog_proof(&r).unwrap();
        let parsed = TlogProof::parse(&file.to_text()).unwrap();
        let entry = parsed.extra.clone().unwrap();
        verify(
            &entry,
            parsed.index,
            &parsed.proof,
            &parsed.checkpoint_note,
            &key,
        )
        .unwrap();

        // Another entry, another index, another key: refused.
        let mut bad = r.clone();
        bad.entry = entries[5].clone();
        assert!(matches!(
            verify_proto(&bad, &key),
            Err(ReceiptError::IndexMismatch { .. })
        ));
        let mut bad = r.clone();
        bad.inclusion.as_mut().unwrap().leaf_index = 5;
        assert!(verify_proto(&bad, &key).is_err());
        let other_key = NoteSigner::from_seed("example.com/log", &[4; 32]).unwrap();
        assert!(verify_proto(&r, &other_key.verifier()).is_err());
    }
}
