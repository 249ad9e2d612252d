//! The offline audit of an export bundle: re-hash every entry, follow the
//! hash chain, recompute the tree root at every signed checkpoint, check each
//! signature and each payload against its commitment, check every structural
//! promise of the format, and name what was tampered with and where.
//!
//! Every statement a bundle makes is a claim to check; the audit signs off
//! only on entries a verified signed checkpoint in the bundle covers. The
//! format and every finding are specified in `docs/export-format.md`.

use crate::bundle::{BundleError, BundleReader};
use crate::checkpoint::{Checkpoint, open_checkpoint};
use crate::entry::{EntryError, EntryHead, SALT_LEN, decode_head, payload_commitment};
use crate::hash::{Hash, leaf_hash};
use crate::note::NoteVerifier;
use crate::proof::{verify_consistency, verify_inclusion};
use crate::proto::{
    BundleEnd, BundleHeader, EntryRecord, RedactionProof, SignedCheckpoint, bundle_item::Item,
};
use crate::tree::CompactRange;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::BufRead;

/// What kind of tampering (or damage) a finding reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TamperKind {
    /// Entry bytes differ from what was chained and signed.
    ModifiedEntry,
    /// A payload does not match its entry's commitment.
    ModifiedPayload,
    /// A hash tile of a mirror does not hold the hashes of the tree its
    /// entries build (altered, or missing).
    ModifiedTile,
    /// A payload the entry committed to is missing, and nothing in the
    /// bundle shows it was erased by a redaction entry.
    WithheldPayload,
    /// Entries are missing from the middle of the log.
    DeletedEntry,
    /// An entry is present that the signed log does not contain.
    InsertedEntry,
    /// Entries are out of order.
    Reordered,
    /// The log ends before a size a signed checkpoint vouches for.
    Truncated,
    /// Entries that no verified signed checkpoint in the bundle covers.
    UnsignedEntries,
    /// A checkpoint is signed by the key but not consistent with the data
    /// or with another checkpoint: two histories were signed.
    Forked,
    /// The log went back to an earlier state than one already anchored.
    RolledBack,
    /// A checkpoint's signature does not verify under the log key.
    BadSignature,
    /// The file is not a complete, well-formed bundle, or one of its
    /// statements (counts, placement, convenience fields) is false.
    Malformed,
}

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: TamperKind,
    /// First entry index concerned (for checkpoint findings, the tree size).
    pub index: u64,
    pub detail: String,
}

/// The outcome of an audit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditReport {
    pub origin: String,
    pub start: u64,
    pub entries: u64,
    pub payloads_checked: u64,
    pub payloads_redacted: u64,
    /// Redaction entries in the bundle (each names who and why).
    pub redaction_entries: u64,
    /// Redactions outside the range proved by the bundle's evidence.
    pub redaction_proofs_checked: u64,
    pub checkpoints_checked: u64,
    /// Size and root of the tree the bundle's entries build.
    pub tree_size: u64,
    pub root: String,
    /// Largest size at which a signed checkpoint of the bundle matched the
    /// data: the entries before it are covered by a signature.
    pub verified_size: u64,
    /// Anchored checkpoints the data matched.
    pub anchors_matched: u64,
    /// Largest size at which an anchored checkpoint matched the data (0:
    /// none): the entries before it are also in write-once storage.
    pub anchored_size: u64,
    pub findings: Vec<Finding>,
}

impl AuditReport {
    /// True when nothing was found: every entry is covered by a verified
    /// signed checkpoint and every statement of the file holds.
    pub fn clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// The first finding, which is where to look first: the lowest index;
    /// at one index, a named kind of tampering before `malformed` (a false
    /// convenience field beside a modified entry is the lesser news), then
    /// the one found first.
    pub fn first(&self) -> Option<&Finding> {
        self.findings
            .iter()
            .enumerate()
            .min_by_key(|(i, f)| (f.index, f.kind == TamperKind::Malformed, *i))
            .map(|(_, f)| f)
    }
}

/// Findings beyond this many are counted, not kept.
const MAX_FINDINGS: usize = 1000;

/// Where a checkpoint the data is checked against came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A checkpoint item of the bundle, right after the entry that
    /// completes its size.
    InPlace,
    /// A checkpoint item of the bundle that arrived before the entries it
    /// covers (the format places each right after its last entry).
    EarlyInBundle,
    /// Write-once anchor storage: what the log vouched for to the outside.
    Anchor,
}

struct Auditor<'k> {
    key: &'k NoteVerifier,
    header: BundleHeader,
    report: AuditReport,
    range: CompactRange,
    /// Leaf hashes of the last two entries (position - 1, position - 2).
    recent: [Option<Hash>; 2],
    /// Signed roots waiting for the tree to reach their size.
    pending: BTreeMap<u64, (Hash, Source)>,
    /// Root per checkpoint size seen in the bundle, to catch two signed
    /// histories and duplicated checkpoints.
    signed_roots: BTreeMap<u64, Hash>,
    /// After a structural break, roots cannot match; say so once.
    broken_at: Option<u64>,
    /// Size of the last checkpoint that matched.
    last_good: u64,
    /// Claimed index minus position, after deletions and insertions.
    shift: i64,
    /// Position of the second half of a reported swap.
    swapped: Option<u64>,
    /// Entries whose payload the bundle marks as redacted.
    withheld: BTreeSet<u64>,
    /// Targets of the redaction entries seen, and of proved redactions.
    redacted: HashSet<u64>,
    /// Checkpoint items and redaction proofs read (for the end marker).
    checkpoint_items: u64,
    redaction_proofs: u64,
    /// Set once the first redaction proof is read: entries and checkpoints
    /// may no longer follow.
    in_evidence: bool,
    /// Largest size at which a checkpoint of the bundle matched (`None`:
    /// none did, which `verified_size` = 0 cannot tell from size 0).
    signed_to: Option<u64>,
    /// While the checkpoints after an entry are checked: the hash the next
    /// entry of the file is chained to, when it decodes.
    next_link: Option<Hash>,
}

/// Whether a checkpoint item's convenience fields say what its note says.
fn restates(c: &SignedCheckpoint, cp: &Checkpoint) -> bool {
    c.tree_size == cp.size && c.origin == cp.origin && c.root_hash == cp.root.as_bytes()
}

/// The first 32 bytes of a hash-sized field, for messages.
fn hex_prefix(bytes: &[u8]) -> String {
    hex::encode(&bytes[..bytes.len().min(32)])
}

impl Auditor<'_> {
    fn find(&mut self, kind: TamperKind, index: u64, detail: impl Into<String>) {
        if self.report.findings.len() < MAX_FINDINGS {
            self.report.findings.push(Finding {
                kind,
                index,
                detail: detail.into(),
            });
        }
    }

    fn structural(&mut self, kind: TamperKind, index: u64, detail: String) {
        self.find(kind, index, detail);
        if self.broken_at.is_none() {
            self.broken_at = Some(index);
        }
    }

    /// One entry at the next position; `next_claim` is the index the
    /// following entry claims (for telling a swap from a deletion).
    fn entry(
        &mut self,
        rec: &EntryRecord,
        head: Result<EntryHead, EntryError>,
        next_claim: Option<u64>,
    ) {
        let position = self.range.size();
        let leaf = leaf_hash(&rec.entry);
        self.report.entries += 1;
        if self.in_evidence {
            self.find(
                TamperKind::Malformed,
                position,
                format!("entry at position {position} follows a redaction proof"),
            );
        }
        if rec.inclusion.is_some() {
            self.find(
                TamperKind::Malformed,
                position,
                format!(
                    "the record at position {position} carries an inclusion proof; bundle records carry none"
                ),
            );
        }
        if rec.leaf_hash != leaf.as_bytes() {
            self.find(
                TamperKind::Malformed,
                position,
                format!(
                    "the record at position {position} states leaf hash {}, its entry hashes to {leaf}",
                    hex_prefix(&rec.leaf_hash)
                ),
            );
        }
        match head {
            Err(e) => self.structural(
                TamperKind::ModifiedEntry,
                position,
                format!("entry at position {position}: {e}"),
            ),
            Ok(entry) => {
                if rec.index != entry.index {
                    self.find(
                        TamperKind::Malformed,
                        position,
                        format!(
                            "the record at position {position} states index {}, its entry says {}",
                            rec.index, entry.index
                        ),
                    );
                }
                self.position(&entry, position, next_claim);
                if let Some(r) = &entry.redaction {
                    self.report.redaction_entries += 1;
                    self.redacted.insert(r.target_index);
                }
                self.payload(rec, &entry.payload_commitment, position);
            }
        }
        self.recent = [Some(leaf), self.recent[0]];
        self.range.push(leaf);
        self.settle();
    }

    /// The entry's claimed index and chain link against its position.
    fn position(&mut self, entry: &EntryHead, position: u64, next_claim: Option<u64>) {
        let claimed = entry.index;
        // The index this entry should claim, once earlier deletions and
        // insertions are allowed for (so each is reported once).
        let expect = position.wrapping_add_signed(self.shift);
        let prev = Hash::from_slice(&entry.prev_leaf_hash);
        if claimed != expect {
            if claimed == expect.wrapping_add(1) && next_claim == Some(expect) {
                self.structural(
                    TamperKind::Reordered,
                    expect,
                    format!("entries {expect} and {claimed} are swapped"),
                );
                self.swapped = Some(claimed);
            } else if self.swapped == Some(expect) && claimed.wrapping_add(1) == expect {
                // The second half of the swap reported just before.
            } else if claimed < expect && prev.is_some() && prev == self.recent[1] {
                // It links to the entry two back: the one just before it
                // was slipped in.
                self.structural(
                    TamperKind::InsertedEntry,
                    position - 1,
                    format!(
                        "the entry at position {} is not in the log: entry {claimed} follows it but links to the entry before it",
                        position - 1
                    ),
                );
                self.shift -= 1;
            } else if claimed > expect {
                self.structural(
                    TamperKind::DeletedEntry,
                    expect,
                    format!(
                        "entries {expect}..{claimed} are missing ({} entries)",
                        claimed - expect
                    ),
                );
                self.shift = self.shift.saturating_add((claimed - expect) as i64);
            } else {
                self.structural(
                    TamperKind::InsertedEntry,
                    position,
                    format!(
                        "the entry at position {position} claims index {claimed}, which came before it"
                    ),
                );
                self.shift = self.shift.saturating_sub((expect - claimed) as i64);
            }
            return;
        }
        let Some(prev) = prev else {
            self.structural(
                TamperKind::ModifiedEntry,
                position,
                format!("entry {position} has a malformed prev_leaf_hash"),
            );
            return;
        };
        let Some(expected) = self.recent[0] else {
            return;
        };
        if prev == expected || self.broken_at.is_some() {
            return;
        }
        if position == 0 {
            self.structural(
                TamperKind::ModifiedEntry,
                0,
                format!("entry 0 is chained to {prev}, not to the zero hash"),
            );
        } else if position == self.report.start {
            // The header's claim about the entry before the range.
            self.find(
                TamperKind::Malformed,
                position,
                format!(
                    "the header states prev_leaf_hash {expected}, but entry {position} is chained to {prev}"
                ),
            );
        } else if Some(prev) == self.recent[1] {
            self.structural(
                TamperKind::InsertedEntry,
                position - 1,
                format!(
                    "entry {position} links past entry {}: it was inserted",
                    position - 1
                ),
            );
        } else {
            self.structural(
                TamperKind::ModifiedEntry,
                position - 1,
                format!(
                    "entry {} hashes to {expected}, but entry {position} was chained to {prev}",
                    position - 1
                ),
            );
        }
    }

    /// The payload, salt and redaction flag of a record against the entry's
    /// commitment and the header's `includes_payloads`.
    fn payload(&mut self, rec: &EntryRecord, commitment: &[u8], position: u64) {
        let carries = !rec.payload.is_empty() || !rec.payload_salt.is_empty();
        if !self.header.includes_payloads {
            if carries || rec.payload_redacted {
                self.find(
                    TamperKind::Malformed,
                    position,
                    format!(
                        "entry {position} carries a payload or a redaction mark, but the header says payloads are left out"
                    ),
                );
            }
            return;
        }
        if commitment.is_empty() {
            if carries || rec.payload_redacted {
                self.find(
                    TamperKind::ModifiedPayload,
                    position,
                    format!(
                        "entry {position} committed to no payload, but the bundle gives one or marks it redacted"
                    ),
                );
            }
            return;
        }
        if rec.payload_redacted {
            if carries {
                self.find(
                    TamperKind::Malformed,
                    position,
                    format!("entry {position} is marked redacted but carries a payload"),
                );
            }
            self.report.payloads_redacted += 1;
            self.withheld.insert(position);
            return;
        }
        if !carries {
            self.find(
                TamperKind::WithheldPayload,
                position,
                format!(
                    "the payload of entry {position} is missing and not marked redacted, though the bundle includes payloads"
                ),
            );
            return;
        }
        let ok = <[u8; SALT_LEN]>::try_from(rec.payload_salt.as_slice())
            .map(|salt| payload_commitment(&salt, &rec.payload).as_bytes() == commitment)
            .unwrap_or(false);
        self.report.payloads_checked += 1;
        if !ok {
            self.find(
                TamperKind::ModifiedPayload,
                position,
                format!("payload of entry {position} does not match its commitment"),
            );
        }
    }

    /// Checks the root at the current size, and every pending checkpoint the
    /// tree has reached.
    fn settle(&mut self) {
        let size = self.range.size();
        while let Some((&cp_size, _)) = self.pending.first_key_value() {
            if cp_size > size {
                break;
            }
            let Some((root, source)) = self.pending.remove(&cp_size) else {
                break;
            };
            if cp_size < size {
                // Queued when the tree was smaller: it cannot have passed.
                continue;
            }
            if source == Source::EarlyInBundle && self.broken_at.is_none() {
                self.find(
                    TamperKind::Malformed,
                    cp_size,
                    format!(
                        "the checkpoint of size {cp_size} is placed before entry {}, which it covers",
                        cp_size - 1
                    ),
                );
            }
            self.check_root(cp_size, root, source);
        }
    }

    /// Compares a signed root with the tree of the entries so far.
    fn check_root(&mut self, size: u64, root: Hash, source: Source) {
        debug_assert_eq!(size, self.range.size());
        if source != Source::Anchor {
            self.report.checkpoints_checked += 1;
        }
        if root == self.range.root() {
            self.last_good = self.last_good.max(size);
            if source == Source::Anchor {
                self.report.anchors_matched += 1;
                self.report.anchored_size = self.report.anchored_size.max(size);
            } else {
                self.report.verified_size = self.report.verified_size.max(size);
                self.signed_to = self.signed_to.max(Some(size));
            }
        } else if source == Source::Anchor {
            self.find(
                TamperKind::Forked,
                size,
                format!(
                    "the checkpoint anchored at size {size} has another root than these entries: the log was rewritten or forked after it was anchored"
                ),
            );
        } else if self.broken_at.is_none() {
            // The chain held up to the last entry, whose successor is the
            // one entry not yet checked against it: if the next entry is
            // chained to another hash, that last entry was modified.
            if let (Source::InPlace, Some(link), Some(last)) =
                (source, self.next_link, self.recent[0])
                && link != last
                && size > self.last_good
            {
                let at = size - 1;
                self.structural(
                    TamperKind::ModifiedEntry,
                    at,
                    format!(
                        "entry {at} hashes to {last}, but entry {size} was chained to {link} (and the root signed at size {size} differs)"
                    ),
                );
                return;
            }
            // Else entries between the last good checkpoint and this one
            // were rewritten with a consistent chain, or the checkpoint
            // belongs to another history.
            let from = self.last_good;
            self.structural(
                TamperKind::ModifiedEntry,
                from,
                format!("entries {from}..{size} do not hash to the root signed at size {size}"),
            );
        }
    }

    /// Opens a checkpoint item: its signature under the key, and its
    /// convenience fields against the signed note.
    fn open(&mut self, c: &SignedCheckpoint) -> Option<Checkpoint> {
        let cp = match open_checkpoint(&c.note, self.key) {
            Ok(cp) => cp,
            Err(e) => {
                let size = Checkpoint::parse(c.note.split("\n\n").next().unwrap_or(""))
                    .map(|c| c.size)
                    .unwrap_or(c.tree_size);
                self.find(
                    TamperKind::BadSignature,
                    size,
                    format!("checkpoint does not verify under the log key: {e}"),
                );
                return None;
            }
        };
        if !restates(c, &cp) {
            self.find(
                TamperKind::Malformed,
                cp.size,
                format!(
                    "checkpoint item states size {}, origin {:?}, root {}, but its signed note says size {}, origin {:?}, root {}",
                    c.tree_size,
                    c.origin.chars().take(80).collect::<String>(),
                    hex_prefix(&c.root_hash),
                    cp.size,
                    cp.origin,
                    cp.root
                ),
            );
        }
        Some(cp)
    }

    fn checkpoint(&mut self, c: &SignedCheckpoint) {
        self.checkpoint_items += 1;
        let position = self.range.size();
        if self.in_evidence {
            self.find(
                TamperKind::Malformed,
                position,
                "a checkpoint follows a redaction proof",
            );
        }
        let Some(cp) = self.open(c) else { return };
        match self.signed_roots.insert(cp.size, cp.root) {
            Some(prev) if prev != cp.root => {
                self.find(
                    TamperKind::Forked,
                    cp.size,
                    format!(
                        "two checkpoints signed for size {} with different roots",
                        cp.size
                    ),
                );
                return;
            }
            Some(_) => {
                self.find(
                    TamperKind::Malformed,
                    cp.size,
                    format!("the checkpoint of size {} appears twice", cp.size),
                );
                return;
            }
            None => {}
        }
        if cp.size < self.report.start || cp.size > self.header.end {
            self.find(
                TamperKind::Malformed,
                cp.size,
                format!(
                    "checkpoint of size {} is outside the bundle's range [{}, {}]",
                    cp.size, self.report.start, self.header.end
                ),
            );
        }
        let later = (
            std::ops::Bound::Excluded(cp.size),
            std::ops::Bound::Unbounded,
        );
        if let Some((&latest, _)) = self.signed_roots.range(later).next() {
            self.find(
                TamperKind::Malformed,
                cp.size,
                format!(
                    "the checkpoint of size {} comes after the one of size {latest}",
                    cp.size
                ),
            );
        }
        if cp.size == position {
            // Anchors of this size were compared when the tree reached it.
            self.check_root(cp.size, cp.root, Source::InPlace);
            return;
        }
        if cp.size < position {
            if self.broken_at.is_none() && cp.size >= self.report.start {
                self.find(
                    TamperKind::Malformed,
                    cp.size,
                    format!(
                        "the checkpoint of size {} is placed after entry {position}, not right after entry {}",
                        cp.size,
                        cp.size.saturating_sub(1)
                    ),
                );
            }
            return;
        }
        // Ahead of the data: a misplaced checkpoint, or the entries it
        // covers are gone (told apart when the tree reaches it, or not).
        match self.pending.get(&cp.size) {
            Some(&(other, Source::Anchor)) if other != cp.root => self.find(
                TamperKind::Forked,
                cp.size,
                format!(
                    "the bundle's checkpoint of size {} has another root than the anchored one",
                    cp.size
                ),
            ),
            Some((_, Source::Anchor)) => {}
            _ => {
                self.pending
                    .insert(cp.size, (cp.root, Source::EarlyInBundle));
            }
        }
    }

    /// Queues a signed root to check the data against when it reaches `size`.
    fn expect_anchor(&mut self, size: u64, root: Hash) {
        self.pending.insert(size, (root, Source::Anchor));
        self.settle();
    }

    /// Evidence that a withheld payload was erased by a redaction entry
    /// after the bundle's range.
    fn redaction_proof(&mut self, p: &RedactionProof) {
        self.redaction_proofs += 1;
        self.in_evidence = true;
        let size = self.range.size();
        let target = match self.check_redaction_proof(p, size) {
            Ok(target) => target,
            Err((target, why)) => {
                self.find(
                    TamperKind::WithheldPayload,
                    target.unwrap_or(size),
                    format!("the redaction proof for entry {}: {why}", p.index),
                );
                return;
            }
        };
        if !self.withheld.contains(&target) {
            self.find(
                TamperKind::Malformed,
                target,
                format!(
                    "redaction proof {} names entry {target}, whose payload the bundle does not mark redacted",
                    p.index
                ),
            );
        } else if !self.redacted.insert(target) {
            self.find(
                TamperKind::Malformed,
                target,
                format!(
                    "redaction proof {} names entry {target}, whose redaction the bundle already shows",
                    p.index
                ),
            );
        } else {
            self.report.redaction_proofs_checked += 1;
        }
    }

    /// Checks one redaction proof against the tree of the bundle's entries
    /// (of `size`); returns the entry it redacts.
    fn check_redaction_proof(
        &self,
        p: &RedactionProof,
        size: u64,
    ) -> Result<u64, (Option<u64>, String)> {
        let head = decode_head(&p.entry).map_err(|e| (None, e.to_string()))?;
        let target = head.redaction.as_ref().map(|r| r.target_index);
        let fail = |why: String| (target, why);
        let target = target.ok_or_else(|| fail("its entry is not a redaction".into()))?;
        if head.index != p.index || p.index < size {
            return Err(fail(format!(
                "its entry says index {}; a redaction outside the bundle must be at index {} or later",
                head.index, size
            )));
        }
        if target >= size || target < self.report.start {
            return Err(fail(format!(
                "it redacts entry {target}, which is not in the bundle"
            )));
        }
        let c = p
            .checkpoint
            .as_ref()
            .ok_or_else(|| fail("no checkpoint".into()))?;
        let cp =
            open_checkpoint(&c.note, self.key).map_err(|e| fail(format!("checkpoint: {e}")))?;
        if !restates(c, &cp) {
            return Err(fail(
                "the checkpoint's stated size, origin or root differ from its note".into(),
            ));
        }
        let inc = p
            .inclusion
            .as_ref()
            .ok_or_else(|| fail("no inclusion proof".into()))?;
        if inc.leaf_index != p.index || inc.tree_size != cp.size {
            return Err(fail(format!(
                "the inclusion proof is for entry {} in size {}, not entry {} in size {}",
                inc.leaf_index, inc.tree_size, p.index, cp.size
            )));
        }
        let hashes = |v: &[Vec<u8>]| -> Option<Vec<Hash>> {
            v.iter().map(|h| Hash::from_slice(h)).collect()
        };
        let inc_hashes =
            hashes(&inc.hashes).ok_or_else(|| fail("an inclusion hash is not 32 bytes".into()))?;
        verify_inclusion(
            p.index,
            cp.size,
            &leaf_hash(&p.entry),
            &inc_hashes,
            &cp.root,
        )
        .map_err(|e| fail(format!("inclusion: {e}")))?;
        let con = p
            .consistency
            .as_ref()
            .ok_or_else(|| fail("no consistency proof".into()))?;
        if con.old_size != size || con.new_size != cp.size {
            return Err(fail(format!(
                "the consistency proof is from size {} to {}, not {size} to {}",
                con.old_size, con.new_size, cp.size
            )));
        }
        let con_hashes =
            hashes(&con.hashes).ok_or_else(|| fail("a consistency hash is not 32 bytes".into()))?;
        verify_consistency(size, cp.size, &con_hashes, &self.range.root(), &cp.root)
            .map_err(|e| fail(format!("consistency with the bundle's tree: {e}")))?;
        Ok(target)
    }

    fn end(&mut self, end: &BundleEnd) {
        let size = self.range.size();
        let stated = (end.entries, end.checkpoints, end.redaction_proofs);
        let counted = (
            self.report.entries,
            self.checkpoint_items,
            self.redaction_proofs,
        );
        if stated != counted {
            self.find(
                TamperKind::Malformed,
                size,
                format!(
                    "the end marker counts {} entries, {} checkpoints, {} redaction proofs; the bundle holds {}, {}, {}",
                    stated.0, stated.1, stated.2, counted.0, counted.1, counted.2
                ),
            );
        }
    }

    /// What can only be judged once every item was read.
    fn conclude(&mut self) {
        let size = self.range.size();
        // A payload may only be missing because a redaction entry erased it.
        for i in std::mem::take(&mut self.withheld) {
            if !self.redacted.contains(&i) {
                self.find(
                    TamperKind::WithheldPayload,
                    i,
                    format!(
                        "the payload of entry {i} is marked redacted, but neither a redaction entry in the bundle nor a redaction proof names it"
                    ),
                );
            }
        }
        let beyond: Vec<(u64, Source)> = self
            .pending
            .iter()
            .map(|(s, (_, src))| (*s, *src))
            .collect();
        if let Some(&(anchored, _)) = beyond.iter().rev().find(|(_, s)| *s == Source::Anchor) {
            self.find(
                TamperKind::RolledBack,
                size,
                format!(
                    "the log ends at {size} entries but size {anchored} was anchored: it was rolled back or truncated after anchoring"
                ),
            );
        }
        let signed_beyond = beyond
            .iter()
            .rev()
            .find(|(_, s)| *s == Source::EarlyInBundle)
            .map(|&(s, _)| s);
        if let Some(cp_size) = signed_beyond {
            self.find(
                TamperKind::Truncated,
                size,
                format!(
                    "the log ends at {size} entries but a checkpoint signed {cp_size}: entries {size}..{cp_size} are gone"
                ),
            );
        } else if self.header.end > size {
            self.find(
                TamperKind::Truncated,
                size,
                format!(
                    "the header announces entries up to {}, the bundle ends at {size}",
                    self.header.end
                ),
            );
        }
        // Sign off only on what a signature covers: the bundle must hold a
        // verified checkpoint of its final size.
        if self.broken_at.is_none() && signed_beyond.is_none() && self.signed_to != Some(size) {
            let covered = self.signed_to.unwrap_or(0).max(self.report.start);
            if size > covered {
                self.find(
                    TamperKind::UnsignedEntries,
                    covered,
                    format!(
                        "entries {covered}..{size} are covered by no verified signed checkpoint in the bundle"
                    ),
                );
            } else {
                self.find(
                    TamperKind::Malformed,
                    size,
                    format!(
                        "the bundle holds no verified signed checkpoint of its final size {size}"
                    ),
                );
            }
        }
        if self.header.end < size {
            self.find(
                TamperKind::Malformed,
                self.header.end,
                format!(
                    "the header announces entries up to {}, the bundle holds entries up to {size}",
                    self.header.end
                ),
            );
        }
    }
}

/// Items handed from the reading thread to the checking one at a time.
const READ_BATCH: usize = 512;

/// What the reading thread hands over.
/// Checkpoints held back after an entry while looking for the next entry
/// (a bundle has one between groups; past this many the entry is checked
/// without the look-ahead).
const MAX_DEFERRED: usize = 64;

enum Read {
    Entry(EntryRecord, Result<EntryHead, EntryError>),
    Other(Item),
    /// The file cannot be read on (cut short, or an item does not decode).
    Broken(String),
    Failed(std::io::Error),
    Done,
}

/// Audits a bundle against the log key the auditor trusts. `progress` is
/// called with the number of entries done, now and then.
///
/// A file that is not a well-formed bundle is a `malformed` finding; only an
/// I/O error reading it is an error.
pub fn audit_bundle<R: BufRead + Send>(
    input: R,
    key: &NoteVerifier,
    progress: impl FnMut(u64, u64),
) -> Result<AuditReport, std::io::Error> {
    audit_bundle_against(input, key, &[], progress)
}

/// A report of one `malformed` finding: the file is not a bundle.
fn unreadable(index: u64, detail: String) -> AuditReport {
    AuditReport {
        findings: vec![Finding {
            kind: TamperKind::Malformed,
            index,
            detail,
        }],
        ..Default::default()
    }
}

/// [`audit_bundle`], also checking the entries against anchored checkpoints
/// (already opened with the log key): each anchored size the bundle reaches
/// must have the anchored root, and no anchor may lie beyond its end.
pub fn audit_bundle_against<R: BufRead + Send>(
    input: R,
    key: &NoteVerifier,
    anchors: &[Checkpoint],
    progress: impl FnMut(u64, u64),
) -> Result<AuditReport, std::io::Error> {
    let mut reader = match BundleReader::new(input) {
        Ok(r) => r,
        Err(BundleError::Io(e)) => return Err(e),
        Err(e) => return Ok(unreadable(0, e.to_string())),
    };
    let header = match reader.next_item() {
        Ok(Some(Item::Header(h))) => h,
        Ok(_) => return Ok(unreadable(0, "the first item is not a header".into())),
        Err(BundleError::Io(e)) => return Err(e),
        Err(e) => return Ok(unreadable(0, e.to_string())),
    };
    audit_stream(header, move || reader.next_item(), key, anchors, progress)
}

/// The audit of a stream of bundle items after its header, wherever they
/// come from: a bundle file, or a mirror read object by object
/// ([`crate::mirror`]). `next_item` runs on a thread of its own (reading
/// and decoding overlap the hashing); `Ok(None)` ends the stream.
pub fn audit_stream(
    header: BundleHeader,
    mut next_item: impl FnMut() -> Result<Option<Item>, BundleError> + Send,
    key: &NoteVerifier,
    anchors: &[Checkpoint],
    mut progress: impl FnMut(u64, u64),
) -> Result<AuditReport, std::io::Error> {
    let mut a = Auditor {
        key,
        report: AuditReport {
            origin: header.origin.clone(),
            start: header.start,
            ..Default::default()
        },
        range: CompactRange::new(),
        recent: [None, None],
        pending: BTreeMap::new(),
        signed_roots: BTreeMap::new(),
        broken_at: None,
        last_good: header.start,
        shift: 0,
        swapped: None,
        withheld: BTreeSet::new(),
        redacted: HashSet::new(),
        checkpoint_items: 0,
        redaction_proofs: 0,
        in_evidence: false,
        signed_to: None,
        next_link: None,
        header,
    };
    if !check_header(&mut a) {
        return Ok(a.report);
    }
    for cp in anchors {
        if cp.size >= a.report.start {
            a.expect_anchor(cp.size, cp.root);
        }
    }
    let total = a.header.end.saturating_sub(a.header.start);
    let mut broken = false;
    // Reading and decoding run on their own thread; hashing and the checks
    // on this one. Items arrive in file order, in batches.
    std::thread::scope(|scope| -> Result<(), std::io::Error> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Read>>(8);
        scope.spawn(move || {
            let mut batch = Vec::with_capacity(READ_BATCH);
            loop {
                let (msg, last) = match next_item() {
                    Ok(Some(Item::Entry(e))) => {
                        let head = decode_head(&e.entry);
                        (Read::Entry(e, head), false)
                    }
                    Ok(Some(item)) => (Read::Other(item), false),
                    Ok(None) => (Read::Done, true),
                    Err(BundleError::Io(e)) => (Read::Failed(e), true),
                    Err(e) => (Read::Broken(e.to_string()), true),
                };
                batch.push(msg);
                if last || batch.len() == READ_BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(READ_BATCH));
                    if tx.send(full).is_err() || last {
                        return;
                    }
                }
            }
        });
        let mut held: Option<(EntryRecord, Result<EntryHead, EntryError>)> = None;
        // Checkpoints read after the held entry, checked once it is: the
        // look-ahead for a swap is the next entry, past the checkpoints a
        // bundle puts between two groups.
        let mut deferred: Vec<Read> = Vec::new();
        let mut ended = false;
        for msg in rx.into_iter().flatten() {
            let next_claim = match &msg {
                Read::Entry(_, Ok(h)) => Some(h.index),
                Read::Other(Item::Checkpoint(_))
                    if held.is_some() && deferred.len() < MAX_DEFERRED =>
                {
                    deferred.push(msg);
                    continue;
                }
                _ => None,
            };
            if let Some((rec, rec_head)) = held.take() {
                a.entry(&rec, rec_head, next_claim);
                if a.report.entries.is_multiple_of(65536) {
                    progress(a.report.entries, total);
                }
            }
            // The held-back checkpoints are checked knowing what the next
            // entry is chained to; nothing else is.
            let link = match &msg {
                Read::Entry(_, Ok(h)) => Hash::from_slice(&h.prev_leaf_hash),
                _ => None,
            };
            let deferred_now = deferred.len();
            for (i, m) in std::mem::take(&mut deferred)
                .into_iter()
                .chain([msg])
                .enumerate()
            {
                a.next_link = if i < deferred_now { link } else { None };
                match m {
                    Read::Entry(e, head) => held = Some((e, head)),
                    Read::Other(Item::Entry(e)) => {
                        // The reading thread decodes entries itself; not reached.
                        let head = decode_head(&e.entry);
                        held = Some((e, head));
                    }
                    Read::Other(Item::Checkpoint(c)) => a.checkpoint(&c),
                    Read::Other(Item::RedactionProof(p)) => a.redaction_proof(&p),
                    Read::Other(Item::End(end)) => {
                        a.end(&end);
                        ended = true;
                    }
                    Read::Other(Item::Header(_)) => {
                        a.find(TamperKind::Malformed, a.range.size(), "a second header")
                    }
                    Read::Broken(why) => {
                        broken = true;
                        let at = a.range.size();
                        a.find(
                            TamperKind::Malformed,
                            at,
                            format!("after entry position {at}: {why}"),
                        );
                    }
                    Read::Failed(e) => return Err(e),
                    Read::Done => {}
                }
            }
        }
        if !ended && !broken {
            broken = true;
            let at = a.range.size();
            a.find(TamperKind::Malformed, at, "no end marker");
        }
        Ok(())
    })?;
    progress(a.report.entries, total);
    if !broken {
        a.conclude();
    }
    a.report.tree_size = a.range.size();
    a.report.root = a.range.root().to_hex();
    Ok(a.report)
}

/// Checks the header's claims that can be checked on their own and sets up
/// the tree before the range; false if the audit cannot go on.
fn check_header(a: &mut Auditor<'_>) -> bool {
    let h = &a.header;
    let mut problems = Vec::new();
    if h.origin != a.key.name() {
        problems.push(format!(
            "bundle is of log {:?}, the key is for {:?}",
            h.origin.chars().take(200).collect::<String>(),
            a.key.name()
        ));
    }
    let key_text = a.key.to_string();
    if h.verifier_key != key_text {
        problems.push(format!(
            "the header states verifier key {:?}, the auditor's key is {key_text:?}",
            h.verifier_key.chars().take(200).collect::<String>()
        ));
    }
    if h.end < h.start {
        problems.push(format!(
            "the header's end {} is before its start {}",
            h.end, h.start
        ));
    }
    let prev_ok = if h.start == 0 {
        h.prev_leaf_hash == Hash::ZERO.as_bytes()
    } else {
        h.prev_leaf_hash.len() == 32
    };
    if !prev_ok {
        problems.push(format!(
            "the header's prev_leaf_hash ({} bytes) is not the 32-byte leaf hash of entry start-1 (zeros for start 0)",
            h.prev_leaf_hash.len()
        ));
    }
    let start = h.start;
    for p in problems {
        a.find(TamperKind::Malformed, start, p);
    }
    let prefix: Option<Vec<Hash>> = a
        .header
        .prefix_hashes
        .iter()
        .map(|h| Hash::from_slice(h))
        .collect();
    match prefix.and_then(|p| CompactRange::from_peaks(start, p)) {
        Some(r) => a.range = r,
        None => {
            a.find(
                TamperKind::Malformed,
                start,
                "the header's prefix hashes do not describe a tree of `start` entries",
            );
            return false;
        }
    }
    a.recent[0] = if start == 0 {
        Some(Hash::ZERO)
    } else {
        Hash::from_slice(&a.header.prev_leaf_hash)
    };
    true
}
