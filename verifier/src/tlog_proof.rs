//! C2SP tlog-proof (`c2sp.org/tlog-proof@v1`): an offline inclusion proof an
//! auditor can keep — entry index, inclusion proof and the signed checkpoint.

use crate::checkpoint::{Checkpoint, CheckpointError, open_checkpoint};
use crate::hash::Hash;
use crate::note::NoteVerifier;
use crate::proof::{ProofError, verify_inclusion};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

const HEADER: &str = "c2sp.org/tlog-proof@v1";

/// A parsed tlog-proof file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogProof {
    /// Unauthenticated extra data, if any.
    pub extra: Option<Vec<u8>>,
    pub index: u64,
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint_note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlogProofError {
    #[error("malformed tlog-proof: {0}")]
    Malformed(&'static str),
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("inclusion: {0}")]
    Inclusion(#[from] ProofError),
}

impl TlogProof {
    /// Renders the file text.
    pub fn to_text(&self) -> String {
        let mut s = format!("{HEADER}\n");
        if let Some(extra) = &self.extra {
            s.push_str(&format!("extra {}\n", B64.encode(extra)));
        }
        s.push_str(&format!("index {}\n", self.index));
        for h in &self.proof {
            s.push_str(&B64.encode(h.0));
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.checkpoint_note);
        s
    }

    /// Parses the file text (the checkpoint is not verified here).
    pub fn parse(text: &str) -> Result<TlogProof, TlogProofError> {
        let bad = TlogProofError::Malformed;
        let (head, checkpoint_note) = text
            .split_once("\n\n")
            .ok_or(bad("no blank line before the checkpoint"))?;
        let mut lines = head.split('\n');
        if lines.next() != Some(HEADER) {
            return Err(bad("first line must be c2sp.org/tlog-proof@v1"));
        }
        let mut line = lines.next().ok_or(bad("missing index line"))?;
        let mut extra = None;
        if let Some(e) = line.strip_prefix("extra ") {
            extra = Some(B64.decode(e).map_err(|_| bad("extra is not base64"))?);
            line = lines.next().ok_or(bad("missing index line"))?;
        }
        let idx = line
            .strip_prefix("index ")
            .ok_or(bad("missing index line"))?;
        if idx.is_empty()
            || !idx.bytes().all(|b| b.is_ascii_digit())
            || (idx.len() > 1 && idx.starts_with('0'))
        {
            return Err(bad("index must be decimal without leading zeros"));
        }
        let index = idx.parse().map_err(|_| bad("index out of range"))?;
        let proof = lines
            .map(|l| {
                B64.decode(l)
                    .ok()
                    .and_then(|b| Hash::from_slice(&b))
                    .ok_or(bad("proof line is not a base64 hash"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TlogProof {
            extra,
            index,
            proof,
            checkpoint_note: checkpoint_note.to_string(),
        })
    }

    /// Checks the checkpoint's signature by the log key and that `leaf` is
    /// included at `index` in the checkpointed tree. Returns the checkpoint.
    pub fn verify(
        &self,
        log_key: &NoteVerifier,
        leaf: &Hash,
    ) -> Result<Checkpoint, TlogProofError> {
        let cp = open_checkpoint(&self.checkpoint_note, log_key)?;
        verify_inclusion(self.index, cp.size, leaf, &self.proof, &cp.root)?;
        Ok(cp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;
    use crate::note::NoteSigner;
    use crate::tree::{MemoryTree, inclusion_proof};

    #[test]
    fn round_trip_and_verify() {
        let signer = NoteSigner::from_seed("example.com/log", &[5; 32]).unwrap();
        let mut t = MemoryTree::new();
        for i in 0..10u8 {
            t.push(leaf_hash(&[i]));
        }
        let note = Checkpoint::new("example.com/log", 10, t.root())
            .sign(&signer)
            .unwrap();
        let p = TlogProof {
            extra: Some(b"ctx".to_vec()),
            index: 3,
            proof: inclusion_proof(&t, 3, 10).unwrap(),
            checkpoint_note: note,
        };
        let parsed = TlogProof::parse(&p.to_text()).unwrap();
        assert_eq!(parsed, p);
        assert!(parsed.verify(&signer.verifier(), &leaf_hash(&[3])).is_ok());
        assert!(matches!(
            parsed.verify(&signer.verifier(), &leaf_hash(&[4])),
            Err(TlogProofError::Inclusion(ProofError::RootMismatch { .. }))
        ));
        assert!(TlogProof::parse("nope\n\nx").is_err());
        assert!(TlogProof::parse(&p.to_text().replace("index 3", "index 03")).is_err());
    }
}
