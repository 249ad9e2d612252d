//! Anchored checkpoints: what a log vouched for to write-once storage. This
//! module checks a set of anchors on its own (signatures, keys, one history,
//! never going back); the bundle audit and the live check compare them with
//! the log's data.

use crate::audit::{Finding, TamperKind};
use crate::checkpoint::{Checkpoint, open_checkpoint};
use crate::hash::Hash;
use crate::note::NoteVerifier;
use std::collections::BTreeMap;
use std::time::SystemTime;

/// One anchor object as read from the store.
#[derive(Debug, Clone)]
pub struct Anchor {
    /// Its key or path (ends in `checkpoint.<size>`).
    pub key: String,
    /// The object's bytes: a signed checkpoint note, if it was not altered.
    pub note: Vec<u8>,
    /// When the store says it was written, if it says.
    pub written_at: Option<SystemTime>,
}

/// Tree size named by an anchor key.
pub fn size_of_key(key: &str) -> Option<u64> {
    key.rsplit_once("checkpoint.")?.1.parse().ok()
}

/// The anchors that verified, in size order, and what was wrong.
#[derive(Debug, Clone, Default)]
pub struct AnchorCheck {
    pub checkpoints: Vec<Checkpoint>,
    pub findings: Vec<Finding>,
}

/// Checks anchors against the log key: each is signed by it and stored under
/// its own size; one root per size (else two histories were signed: a
/// fork); and an anchor written later never has a smaller size than one
/// written earlier (else the log was rolled back and re-anchored).
///
/// What it trusts: the key, and the store's write times for the order of
/// anchors (which a compliance-mode Object Lock keeps from being rewritten).
/// Anchors prove what the log signed and when it was written out; they say
/// nothing of entries, which the bundle audit and the live check compare.
pub fn check_anchors(anchors: &[Anchor], key: &NoteVerifier) -> AnchorCheck {
    let mut out = AnchorCheck::default();
    let mut by_size: BTreeMap<u64, (Hash, &Anchor)> = BTreeMap::new();
    let mut dated: Vec<(SystemTime, u64, &str)> = Vec::new();
    for a in anchors {
        let opened = std::str::from_utf8(&a.note)
            .map_err(|_| "not UTF-8 text".to_string())
            .and_then(|note| open_checkpoint(note, key).map_err(|e| e.to_string()));
        let cp = match opened {
            Ok(cp) => cp,
            Err(e) => {
                out.findings.push(Finding {
                    kind: TamperKind::BadSignature,
                    index: size_of_key(&a.key).unwrap_or(0),
                    detail: format!("anchor {}: {e}", a.key),
                });
                continue;
            }
        };
        if size_of_key(&a.key) != Some(cp.size) {
            out.findings.push(Finding {
                kind: TamperKind::Malformed,
                index: cp.size,
                detail: format!("anchor {} holds the checkpoint of size {}", a.key, cp.size),
            });
        }
        if let Some((root, other)) = by_size.get(&cp.size) {
            if *root != cp.root {
                out.findings.push(Finding {
                    kind: TamperKind::Forked,
                    index: cp.size,
                    detail: format!(
                        "anchors {} and {} sign different roots for size {}",
                        other.key, a.key, cp.size
                    ),
                });
            }
            continue;
        }
        by_size.insert(cp.size, (cp.root, a));
        if let Some(t) = a.written_at {
            dated.push((t, cp.size, &a.key));
        }
        out.checkpoints.push(cp);
    }
    dated.sort();
    let mut high: Option<(u64, &str)> = None;
    for (_, size, key) in dated {
        match high {
            Some((h, hk)) if size < h => out.findings.push(Finding {
                kind: TamperKind::RolledBack,
                index: size,
                detail: format!(
                    "anchor {key} (size {size}) was written after {hk} (size {h}): the log went back"
                ),
            }),
            _ => high = Some((size, key)),
        }
    }
    out.checkpoints.sort_by_key(|c| c.size);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::NoteSigner;
    use std::time::Duration;

    fn anchor(signer: &NoteSigner, size: u64, root: u8, at: u64) -> Anchor {
        let cp = Checkpoint::new(signer.name(), size, Hash([root; 32]));
        Anchor {
            key: format!("{}/checkpoint.{size:020}", signer.name()),
            note: cp.sign(signer).unwrap().into_bytes(),
            written_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(at)),
        }
    }

    #[test]
    fn clean_anchors_pass_and_each_fault_is_named() {
        let s = NoteSigner::generate("ledger.example.com/acme").unwrap();
        let key = s.verifier();
        let good = vec![
            anchor(&s, 5, 1, 10),
            anchor(&s, 9, 2, 20),
            anchor(&s, 30, 3, 30),
        ];
        let c = check_anchors(&good, &key);
        assert!(c.findings.is_empty(), "{:?}", c.findings);
        assert_eq!(
            c.checkpoints.iter().map(|c| c.size).collect::<Vec<_>>(),
            [5, 9, 30]
        );

        // Rolled back: size 12 anchored after size 30.
        let mut rolled = good.clone();
        rolled.push(anchor(&s, 12, 4, 40));
        let f = check_anchors(&rolled, &key).findings;
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].kind, f[0].index), (TamperKind::RolledBack, 12));

        // Forked: another root for size 9 under another key.
        let mut forked = good.clone();
        let mut other = anchor(&s, 9, 7, 25);
        other.key = format!("mirror/{}", other.key);
        forked.push(other);
        let f = check_anchors(&forked, &key).findings;
        assert_eq!((f[0].kind, f[0].index), (TamperKind::Forked, 9));

        // Signed by another key; stored under the wrong size.
        let mallory = NoteSigner::generate("ledger.example.com/acme").unwrap();
        let mut bad = good.clone();
        bad.push(anchor(&mallory, 40, 5, 50));
        let mut misplaced = anchor(&s, 50, 6, 60);
        misplaced.key = misplaced.key.replace("00050", "00051");
        bad.push(misplaced);
        let kinds: Vec<TamperKind> = check_anchors(&bad, &key)
            .findings
            .iter()
            .map(|f| f.kind)
            .collect();
        assert_eq!(kinds, [TamperKind::BadSignature, TamperKind::Malformed]);

        // Bytes that are not text are a finding, not an error.
        let mut garbled = good.clone();
        garbled[1].note[3] = 0xff;
        let f = check_anchors(&garbled, &key).findings;
        assert_eq!((f[0].kind, f[0].index), (TamperKind::BadSignature, 9));
    }
}
