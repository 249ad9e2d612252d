//! The Agent Ledger log format as code, shared by the server (which writes
//! it) and the auditor's verifier (which checks it), so both agree by
//! construction. Pure: no I/O, no async runtime, no storage engine.
//!
//! * [`hash`]: RFC 6962 leaf and node hashes.
//! * [`tree`]: the incremental tree (compact range) and proof generation.
//! * [`proof`]: inclusion and consistency proof verification.
//! * [`entry`]: stored entries, the hash chain and payload commitments.
//! * [`note`]: C2SP signed notes with Ed25519, key strings and key ids.
//! * [`checkpoint`]: C2SP tlog-checkpoints.
//! * [`tiles`]: the C2SP tlog-tiles layout of stored hashes.
//! * [`mirror`]: a log in object storage (tlog-tiles), its encodings and its audit.
//! * [`tlog_proof`]: C2SP tlog-proof files, offline inclusion proofs for auditors.
//! * [`receipt`]: append receipts, the writer's offline proof of acceptance.

pub mod anchors;
pub mod audit;
pub mod bundle;
pub mod checkpoint;
pub mod entry;
pub mod hash;
pub mod mirror;
pub mod note;
pub mod proof;
pub mod receipt;
pub mod tiles;
pub mod tlog_proof;
pub mod tree;

pub use checkpoint::{Checkpoint, CheckpointError, open_checkpoint};
pub use hash::{EMPTY_ROOT, Hash, leaf_hash, node_hash};
pub use ledger_proto::v1 as proto;
pub use note::{NoteError, NoteSigner, NoteVerifier};
pub use proof::{ProofError, verify_consistency, verify_inclusion};
pub use tree::{CompactRange, HashSource, MemoryTree, NodeId};
