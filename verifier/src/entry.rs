//! Log entries: the stored `LedgerEntry` bytes are the leaf input. This module
//! encodes an entry once (server side), decodes stored bytes (verifier side),
//! and checks the hash chain and payload commitments.

use crate::hash::{Hash, leaf_hash, sha256};
use ledger_proto::v1::LedgerEntry;
use prost::Message;

/// Length of the random salt of a payload commitment.
pub const SALT_LEN: usize = 32;

/// Encodes an entry. The result is what gets stored and hashed; it is never
/// re-encoded afterwards.
pub fn encode_entry(entry: &LedgerEntry) -> Vec<u8> {
    entry.encode_to_vec()
}

/// Encodes `entry` (which has no `event` and no `redaction`) with `event`,
/// the canonical (prost) encoding of an `AuditEvent`, as its event: byte for
/// byte what [`encode_entry`] gives for the entry holding that event. Lets a
/// server encode the event once, off its sequencing thread.
pub fn encode_entry_with_event(entry: &LedgerEntry, event: &[u8]) -> Vec<u8> {
    use prost::encoding::{WireType, bytes, encode_key, encode_varint, message, string, uint64};
    debug_assert!(entry.event.is_none() && entry.redaction.is_none());
    let mut buf = Vec::with_capacity(entry_len_with_event(entry, event.len()));
    // Field by field in tag order, defaults left out: what prost generates.
    if entry.index != 0 {
        uint64::encode(1, &entry.index, &mut buf);
    }
    if !entry.prev_leaf_hash.is_empty() {
        bytes::encode(2, &entry.prev_leaf_hash, &mut buf);
    }
    if let Some(at) = &entry.integrated_at {
        message::encode(3, at, &mut buf);
    }
    if !entry.writer.is_empty() {
        string::encode(4, &entry.writer, &mut buf);
    }
    encode_key(5, WireType::LengthDelimited, &mut buf);
    encode_varint(event.len() as u64, &mut buf);
    buf.extend_from_slice(event);
    if !entry.payload_commitment.is_empty() {
        bytes::encode(6, &entry.payload_commitment, &mut buf);
    }
    if entry.payload_size != 0 {
        uint64::encode(7, &entry.payload_size, &mut buf);
    }
    debug_assert_eq!(buf.len(), entry_len_with_event(entry, event.len()));
    buf
}

/// The length of [`encode_entry_with_event`]'s result for an event of
/// `event_len` encoded bytes.
pub fn entry_len_with_event(entry: &LedgerEntry, event_len: usize) -> usize {
    entry.encoded_len()
        + prost::encoding::key_len(5)
        + prost::encoding::encoded_len_varint(event_len as u64)
        + event_len
}

/// Why stored entry bytes are not a valid entry at their position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("entry bytes do not decode as a LedgerEntry: {0}")]
    Decode(String),
    #[error("entry stored at position {position} says it is index {claimed}")]
    IndexMismatch { position: u64, claimed: u64 },
    #[error("entry {index} has a prev_leaf_hash of {len} bytes, not 32")]
    BadPrevHashLength { index: u64, len: usize },
    #[error("entry {index} links to {found} but entry {prev} hashes to {expected}")]
    ChainBroken {
        index: u64,
        prev: u64,
        expected: Hash,
        found: Hash,
    },
    #[error("entry 0 links to {found}, not the zero hash")]
    ChainStartNotZero { found: Hash },
}

/// Decodes stored entry bytes.
pub fn decode_entry(bytes: &[u8]) -> Result<LedgerEntry, EntryError> {
    LedgerEntry::decode(bytes).map_err(|e| EntryError::Decode(e.to_string()))
}

/// The fields of a stored entry an audit needs, decoded without the event
/// (prost skips the other fields by their length, so this costs little more
/// than reading three varints). The leaf hash still covers every byte.
#[derive(Clone, PartialEq, Message)]
pub struct EntryHead {
    #[prost(uint64, tag = "1")]
    pub index: u64,
    #[prost(bytes = "vec", tag = "2")]
    pub prev_leaf_hash: Vec<u8>,
    #[prost(bytes = "vec", tag = "6")]
    pub payload_commitment: Vec<u8>,
    #[prost(message, optional, tag = "8")]
    pub redaction: Option<RedactionHead>,
}

/// The target of a redaction entry.
#[derive(Clone, PartialEq, Message)]
pub struct RedactionHead {
    #[prost(uint64, tag = "1")]
    pub target_index: u64,
}

/// Decodes the head of stored entry bytes.
pub fn decode_head(bytes: &[u8]) -> Result<EntryHead, EntryError> {
    EntryHead::decode(bytes).map_err(|e| EntryError::Decode(e.to_string()))
}

/// Only the redaction of a stored entry: decoding it skips every other
/// field by its length and allocates nothing.
#[derive(Clone, PartialEq, Message)]
struct RedactionOnly {
    #[prost(message, optional, tag = "8")]
    redaction: Option<RedactionHead>,
}

/// The index a stored entry redacts, if it is a redaction.
pub fn redaction_target(bytes: &[u8]) -> Result<Option<u64>, EntryError> {
    RedactionOnly::decode(bytes)
        .map(|r| r.redaction.map(|r| r.target_index))
        .map_err(|e| EntryError::Decode(e.to_string()))
}

/// `prev_leaf_hash` of an entry as a hash.
pub fn prev_hash(entry: &LedgerEntry) -> Result<Hash, EntryError> {
    Hash::from_slice(&entry.prev_leaf_hash).ok_or(EntryError::BadPrevHashLength {
        index: entry.index,
        len: entry.prev_leaf_hash.len(),
    })
}

/// Commitment to a payload: SHA-256(salt ‖ payload).
pub fn payload_commitment(salt: &[u8; SALT_LEN], payload: &[u8]) -> Hash {
    sha256(&[salt, payload])
}

/// Walks entries in log order and checks each against its position and its
/// predecessor: the index it claims and the hash chain.
#[derive(Debug, Clone)]
pub struct ChainChecker {
    next_index: u64,
    prev_leaf: Hash,
}

impl ChainChecker {
    /// A checker starting at entry 0.
    pub fn new() -> ChainChecker {
        ChainChecker {
            next_index: 0,
            prev_leaf: Hash::ZERO,
        }
    }

    /// A checker starting at `index`, whose predecessor has `prev_leaf` hash.
    pub fn resume(index: u64, prev_leaf: Hash) -> ChainChecker {
        ChainChecker {
            next_index: index,
            prev_leaf,
        }
    }

    /// Index the next entry must have.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Checks the next entry's stored bytes; returns its decoded form and
    /// leaf hash. On error the checker still advances (using the leaf hash of
    /// the bytes given) so one bad entry is reported once, not at every
    /// entry after it.
    pub fn check(&mut self, bytes: &[u8]) -> (Hash, Result<LedgerEntry, EntryError>) {
        let position = self.next_index;
        let leaf = leaf_hash(bytes);
        let expected_prev = self.prev_leaf;
        self.next_index += 1;
        self.prev_leaf = leaf;
        let result = decode_entry(bytes).and_then(|entry| {
            if entry.index != position {
                return Err(EntryError::IndexMismatch {
                    position,
                    claimed: entry.index,
                });
            }
            let found = prev_hash(&entry)?;
            if found != expected_prev {
                return Err(if position == 0 {
                    EntryError::ChainStartNotZero { found }
                } else {
                    EntryError::ChainBroken {
                        index: position,
                        prev: position - 1,
                        expected: expected_prev,
                        found,
                    }
                });
            }
            Ok(entry)
        });
        (leaf, result)
    }
}

impl Default for ChainChecker {
    fn default() -> Self {
        ChainChecker::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_proto::v1::AuditEvent;

    #[test]
    fn an_entry_encoded_around_its_encoded_event_is_the_canonical_encoding() {
        let events = [
            AuditEvent::default(),
            AuditEvent {
                event_id: "e".into(),
                kind: 3,
                attributes: [("k".to_string(), "v".to_string())].into(),
                payload_content_type: "application/json".into(),
                ..Default::default()
            },
            AuditEvent {
                event_id: "x".repeat(300),
                ..Default::default()
            },
        ];
        let heads = [
            LedgerEntry::default(),
            LedgerEntry {
                index: 1 << 40,
                prev_leaf_hash: vec![7; 32],
                integrated_at: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 5,
                }),
                writer: "key:abc@acme".into(),
                payload_commitment: vec![9; 32],
                payload_size: 70_000,
                ..Default::default()
            },
            LedgerEntry {
                integrated_at: Some(prost_types::Timestamp::default()),
                payload_size: 1,
                ..Default::default()
            },
        ];
        for head in &heads {
            for event in &events {
                let whole = LedgerEntry {
                    event: Some(event.clone()),
                    ..head.clone()
                };
                let encoded = event.encode_to_vec();
                let parts = encode_entry_with_event(head, &encoded);
                assert_eq!(parts, encode_entry(&whole), "{head:?} with {event:?}");
                assert_eq!(entry_len_with_event(head, encoded.len()), parts.len());
                assert_eq!(whole.encoded_len(), parts.len());
            }
        }
    }

    #[test]
    fn the_redaction_target_is_read_from_a_stored_entry() {
        let redaction = encode_entry(&LedgerEntry {
            index: 9,
            prev_leaf_hash: vec![1; 32],
            redaction: Some(ledger_proto::v1::Redaction {
                target_index: 4,
                reason: "erasure request".into(),
            }),
            ..Default::default()
        });
        assert_eq!(redaction_target(&redaction).unwrap(), Some(4));
        assert_eq!(redaction_target(&entry(3, Hash::ZERO)).unwrap(), None);
        assert!(redaction_target(&[0x42, 0x05, 1]).is_err(), "cut short");
    }

    fn entry(index: u64, prev: Hash) -> Vec<u8> {
        encode_entry(&LedgerEntry {
            index,
            prev_leaf_hash: prev.to_vec(),
            writer: "w".into(),
            event: Some(AuditEvent {
                event_id: format!("e{index}"),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn a_well_linked_chain_checks() {
        let mut c = ChainChecker::new();
        let mut prev = Hash::ZERO;
        for i in 0..5 {
            let b = entry(i, prev);
            let (leaf, r) = c.check(&b);
            assert!(r.is_ok(), "{r:?}");
            assert_eq!(leaf, leaf_hash(&b));
            prev = leaf;
        }
    }

    #[test]
    fn a_broken_link_names_both_entries() {
        let mut c = ChainChecker::new();
        let e0 = entry(0, Hash::ZERO);
        c.check(&e0).1.unwrap();
        let (_, r) = c.check(&entry(1, Hash([7; 32])));
        assert_eq!(
            r.unwrap_err(),
            EntryError::ChainBroken {
                index: 1,
                prev: 0,
                expected: leaf_hash(&e0),
                found: Hash([7; 32])
            }
        );
    }

    #[test]
    fn a_wrong_index_and_a_bad_start_are_reported() {
        let mut c = ChainChecker::new();
        assert!(matches!(
            c.check(&entry(0, Hash([1; 32]))).1,
            Err(EntryError::ChainStartNotZero { .. })
        ));
        assert_eq!(
            c.check(&entry(5, Hash::ZERO)).1.unwrap_err(),
            EntryError::IndexMismatch {
                position: 1,
                claimed: 5
            }
        );
        assert!(matches!(
            c.check(&[0xff, 0xff]).1,
            Err(EntryError::Decode(_))
        ));
    }

    #[test]
    fn commitments_bind_salt_and_payload() {
        let salt = [3u8; SALT_LEN];
        assert_ne!(
            payload_commitment(&salt, b"a"),
            payload_commitment(&salt, b"b")
        );
        assert_ne!(
            payload_commitment(&salt, b"a"),
            payload_commitment(&[4u8; SALT_LEN], b"a")
        );
    }
}
