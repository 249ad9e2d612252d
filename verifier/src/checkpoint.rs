//! C2SP tlog-checkpoint (`c2sp.org/tlog-checkpoint`): the text a log signs to
//! commit to its tree, and its signed form.

use crate::hash::Hash;
use crate::note::{self, NoteError, NoteSigner, NoteVerifier};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// What a checkpoint says: this log's tree of `size` entries has `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Unique name of the log, e.g. `ledger.example.com/acme`.
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Optional extension lines, in order, without their newlines.
    pub extensions: Vec<String>,
}

/// Why text is not a checkpoint, or a signed checkpoint does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    #[error("checkpoint origin is {found:?}, expected {expected:?}")]
    WrongOrigin { expected: String, found: String },
    #[error(transparent)]
    Note(#[from] NoteError),
}

impl Checkpoint {
    pub fn new(origin: &str, size: u64, root: Hash) -> Checkpoint {
        Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The checkpoint body: origin, decimal size, base64 root, extensions,
    /// each line ending in a newline.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root.0)
        );
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Parses checkpoint text (the body of a note, without signatures).
    pub fn parse(text: &str) -> Result<Checkpoint, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::Malformed("must end in a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or(CheckpointError::Malformed("empty origin"))?;
        let size_str = lines
            .next()
            .ok_or(CheckpointError::Malformed("missing tree size"))?;
        let size_ok = !size_str.is_empty()
            && size_str.bytes().all(|b| b.is_ascii_digit())
            && (size_str == "0" || !size_str.starts_with('0'));
        if !size_ok {
            return Err(CheckpointError::Malformed(
                "tree size must be a decimal number without leading zeros",
            ));
        }
        let size = size_str
            .parse::<u64>()
            .map_err(|_| CheckpointError::Malformed("tree size out of range"))?;
        let root_b64 = lines
            .next()
            .ok_or(CheckpointError::Malformed("missing root hash"))?;
        let root = B64
            .decode(root_b64)
            .ok()
            .and_then(|r| Hash::from_slice(&r))
            .ok_or(CheckpointError::Malformed(
                "root hash must be 32 bytes of base64",
            ))?;
        let extensions: Vec<String> = lines.map(str::to_string).collect();
        if extensions.iter().any(|e| e.is_empty()) {
            return Err(CheckpointError::Malformed("empty extension line"));
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            extensions,
        })
    }

    /// Signs the checkpoint, returning the signed note text.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, CheckpointError> {
        Ok(signer.sign(&self.to_text())?)
    }
}

/// Opens a signed checkpoint note: the log's key must have signed it, and its
/// origin must be the key's name (how our logs are named).
pub fn open_checkpoint(
    note_text: &str,
    log_key: &NoteVerifier,
) -> Result<Checkpoint, CheckpointError> {
    let opened = note::open(note_text, std::slice::from_ref(log_key))?;
    let cp = Checkpoint::parse(&opened.text)?;
    if cp.origin != log_key.name() {
        return Err(CheckpointError::WrongOrigin {
            expected: log_key.name().to_string(),
            found: cp.origin,
        });
    }
    Ok(cp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_with_extensions() {
        let mut cp = Checkpoint::new("example.com/log", 42, Hash([9; 32]));
        cp.extensions.push("ext one".into());
        assert_eq!(Checkpoint::parse(&cp.to_text()), Ok(cp));
    }

    #[test]
    fn malformed_texts_are_refused() {
        let root = B64.encode([0u8; 32]);
        for bad in [
            String::new(),
            format!("o\n1\n{root}"),
            format!("\n1\n{root}\n"),
            format!("o\n01\n{root}\n"),
            format!("o\n-1\n{root}\n"),
            format!("o\n1\n{}\n", B64.encode([0u8; 31])),
            format!("o\n1\n{root}\n\n"),
            "o\n1\n".to_string(),
        ] {
            assert!(Checkpoint::parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn signed_checkpoint_opens_only_with_the_log_key() {
        let signer = NoteSigner::from_seed("example.com/log", &[1; 32]).unwrap();
        let cp = Checkpoint::new("example.com/log", 7, Hash([2; 32]));
        let note = cp.sign(&signer).unwrap();
        assert_eq!(open_checkpoint(&note, &signer.verifier()), Ok(cp.clone()));

        let other = NoteSigner::from_seed("example.com/log", &[2; 32]).unwrap();
        assert_eq!(
            open_checkpoint(&note, &other.verifier()),
            Err(CheckpointError::Note(NoteError::NoVerifiableSignature))
        );
        let tampered = note.replacen("\n7\n", "\n8\n", 1);
        assert!(matches!(
            open_checkpoint(&tampered, &signer.verifier()),
            Err(CheckpointError::Note(NoteError::InvalidSignature { .. }))
        ));
        let misnamed = NoteSigner::from_seed("other.example/log", &[1; 32]).unwrap();
        let note = cp.sign(&misnamed).unwrap();
        assert!(matches!(
            open_checkpoint(&note, &misnamed.verifier()),
            Err(CheckpointError::WrongOrigin { .. })
        ));
    }
}
