//! The offline audit of an export bundle: re-hash every entry, follow the
//! hash chain, recompute the tree root at every signed checkpoint, check each
//! signature and each payload against its commitment, and name what was
//! tampered with and where.

use crate::bundle::{BundleError, BundleReader};
use crate::checkpoint::open_checkpoint;
use crate::entry::{EntryError, EntryHead, SALT_LEN, decode_head, payload_commitment};
use crate::hash::{Hash, leaf_hash};
use crate::note::NoteVerifier;
use crate::proto::{EntryRecord, bundle_item::Item};
use crate::tree::CompactRange;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::BufRead;

/// What kind of tampering (or damage) a finding reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TamperKind {
    /// Entry bytes differ from what was chained and signed.
    ModifiedEntry,
    /// A payload does not match its entry's commitment.
    ModifiedPayload,
    /// Entries are missing from the middle of the log.
    DeletedEntry,
    /// An entry is present that the signed log does not contain.
    InsertedEntry,
    /// Entries are out of order.
    Reordered,
    /// The log ends before a size a signed checkpoint vouches for.
    Truncated,
    /// A checkpoint is signed by the key but not consistent with the data
    /// or with another checkpoint: two histories were signed.
    Forked,
    /// The log went back to an earlier state than one already anchored.
    RolledBack,
    /// A checkpoint's signature does not verify under the log key.
    BadSignature,
    /// The file is not a complete, well-formed bundle.
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
    pub checkpoints_checked: u64,
    /// Size and root of the tree the bundle's entries build.
    pub tree_size: u64,
    pub root: String,
    /// Latest checkpoint that verified against the data.
    pub verified_size: u64,
    /// Anchored checkpoints the data matched.
    pub anchors_matched: u64,
    pub findings: Vec<Finding>,
}

impl AuditReport {
    pub fn clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// The first finding (lowest index), which is where to look first.
    pub fn first(&self) -> Option<&Finding> {
        self.findings.iter().min_by_key(|f| f.index)
    }
}

/// Findings beyond this many are counted, not kept.
const MAX_FINDINGS: usize = 1000;

/// Where a checkpoint the data is checked against came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Bundle,
    /// Write-once anchor storage: what the log vouched for to the outside.
    Anchor,
}

struct Auditor<'k> {
    key: &'k NoteVerifier,
    report: AuditReport,
    range: CompactRange,
    /// Leaf hashes of the last two entries (position - 1, position - 2).
    recent: [Option<Hash>; 2],
    /// Checkpoints waiting for the tree to reach their size.
    pending: BTreeMap<u64, (Hash, Source)>,
    /// Root per checkpoint size seen, to catch two signed histories.
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
    withheld: Vec<u64>,
    /// Targets of the redaction entries seen.
    redacted: std::collections::HashSet<u64>,
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
        match head {
            Err(e) => self.structural(
                TamperKind::ModifiedEntry,
                position,
                format!("entry at position {position}: {e}"),
            ),
            Ok(entry) => {
                let claimed = entry.index;
                // The index this entry should claim, once earlier deletions
                // and insertions are allowed for (so each is reported once).
                let expect = position.wrapping_add_signed(self.shift);
                let prev = Hash::from_slice(&entry.prev_leaf_hash);
                if claimed != expect {
                    if claimed == expect + 1 && next_claim == Some(expect) {
                        self.structural(
                            TamperKind::Reordered,
                            expect,
                            format!("entries {expect} and {} are swapped", expect + 1),
                        );
                        self.swapped = Some(expect + 1);
                    } else if self.swapped == Some(expect) && claimed + 1 == expect {
                        // The second half of the swap reported just before.
                    } else if claimed < expect && prev.is_some() && prev == self.recent[1] {
                        // It links to the entry two back: the one just
                        // before it was slipped in.
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
                        self.shift += (claimed - expect) as i64;
                    } else {
                        self.structural(
                            TamperKind::InsertedEntry,
                            position,
                            format!(
                                "the entry at position {position} claims index {claimed}, which came before it"
                            ),
                        );
                        self.shift -= (expect - claimed) as i64;
                    }
                } else {
                    match prev {
                        None => self.structural(
                            TamperKind::ModifiedEntry,
                            position,
                            format!("entry {position} has a malformed prev_leaf_hash"),
                        ),
                        Some(prev) => {
                            if let Some(expected) = self.recent[0]
                                && prev != expected
                                && self.broken_at.is_none()
                            {
                                if Some(prev) == self.recent[1] {
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
                        }
                    }
                }
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

    fn payload(&mut self, rec: &EntryRecord, commitment: &[u8], position: u64) {
        if rec.payload_redacted {
            self.report.payloads_redacted += 1;
            self.withheld.push(position);
            return;
        }
        if rec.payload.is_empty() && rec.payload_salt.is_empty() {
            return; // Not exported, or the event had none.
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

    /// Checks every pending checkpoint the tree has reached.
    fn settle(&mut self) {
        let size = self.range.size();
        while let Some((&cp_size, _)) = self.pending.first_key_value() {
            if cp_size > size {
                break;
            }
            let (root, source) = self.pending.remove(&cp_size).expect("first key exists");
            self.report.checkpoints_checked += 1;
            if cp_size < size {
                // Only reachable for checkpoints placed after the entries
                // they cover, which the writer never does.
                self.find(
                    TamperKind::Malformed,
                    cp_size,
                    format!("checkpoint {cp_size} comes after entry {size}"),
                );
                continue;
            }
            if root == self.range.root() {
                self.last_good = self.last_good.max(cp_size);
                self.report.verified_size = self.report.verified_size.max(cp_size);
                if source == Source::Anchor {
                    self.report.anchors_matched += 1;
                }
            } else if source == Source::Anchor {
                self.find(
                    TamperKind::Forked,
                    cp_size,
                    format!(
                        "the checkpoint anchored at size {cp_size} has another root than these entries: the log was rewritten or forked after it was anchored"
                    ),
                );
            } else if self.broken_at.is_none() {
                // The chain held but the signed root differs: entries between
                // the last good checkpoint and this one were rewritten with a
                // consistent chain, or the checkpoint belongs to another history.
                let from = self.last_good;
                self.structural(
                    TamperKind::ModifiedEntry,
                    from,
                    format!(
                        "entries {from}..{cp_size} do not hash to the root signed at size {cp_size}"
                    ),
                );
            }
        }
    }

    fn checkpoint(&mut self, note: &str) {
        let cp = match open_checkpoint(note, self.key) {
            Ok(cp) => cp,
            Err(e) => {
                let size = crate::Checkpoint::parse(note.split("\n\n").next().unwrap_or(""))
                    .map(|c| c.size)
                    .unwrap_or(0);
                self.find(
                    TamperKind::BadSignature,
                    size,
                    format!("checkpoint does not verify under the log key: {e}"),
                );
                return;
            }
        };
        if let Some(prev) = self.signed_roots.insert(cp.size, cp.root)
            && prev != cp.root
        {
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
        if cp.size < self.report.start {
            return; // Before the bundle: not checkable from it.
        }
        self.expect(cp.size, cp.root, Source::Bundle);
    }

    /// Queues a signed root to check the data against when it reaches `size`.
    fn expect(&mut self, size: u64, root: Hash, source: Source) {
        if let Some(&(other, _)) = self.pending.get(&size)
            && other != root
        {
            self.find(
                TamperKind::Forked,
                size,
                format!("two checkpoints signed for size {size} with different roots"),
            );
        }
        // An anchor takes precedence: a mismatch against it is reported as such.
        if source == Source::Anchor || !self.pending.contains_key(&size) {
            self.pending.insert(size, (root, source));
        }
        self.settle();
    }
}

/// Items handed from the reading thread to the checking one at a time.
const READ_BATCH: usize = 512;

/// What the reading thread hands over.
enum Read {
    Entry(EntryRecord, Result<EntryHead, EntryError>),
    Other(Item),
    CutShort(u64),
    Failed(BundleError),
    Done,
}

/// Audits a bundle against the log key the auditor trusts. `progress` is
/// called with the number of entries done, now and then.
pub fn audit_bundle<R: BufRead + Send>(
    input: R,
    key: &NoteVerifier,
    progress: impl FnMut(u64, u64),
) -> Result<AuditReport, BundleError> {
    audit_bundle_against(input, key, &[], progress)
}

/// [`audit_bundle`], also checking the entries against anchored checkpoints
/// (already opened with the log key): each anchored size the bundle reaches
/// must have the anchored root, and no anchor may lie beyond its end.
pub fn audit_bundle_against<R: BufRead + Send>(
    input: R,
    key: &NoteVerifier,
    anchors: &[crate::Checkpoint],
    mut progress: impl FnMut(u64, u64),
) -> Result<AuditReport, BundleError> {
    let mut reader = BundleReader::new(input)?;
    let header = match reader.next_item()? {
        Some(Item::Header(h)) => h,
        _ => {
            return Err(BundleError::Malformed {
                item: 0,
                reason: "the first item is not a header".into(),
            });
        }
    };
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
        withheld: Vec::new(),
        redacted: Default::default(),
    };
    if header.origin != key.name() {
        a.find(
            TamperKind::Malformed,
            0,
            format!(
                "bundle is of log {:?}, the key is for {:?}",
                header.origin,
                key.name()
            ),
        );
    }
    let prefix: Option<Vec<Hash>> = header
        .prefix_hashes
        .iter()
        .map(|h| Hash::from_slice(h))
        .collect();
    match prefix.and_then(|p| CompactRange::from_peaks(header.start, p)) {
        Some(r) => a.range = r,
        None => {
            a.find(
                TamperKind::Malformed,
                header.start,
                "the header's prefix hashes do not describe a tree of `start` entries",
            );
            return Ok(a.report);
        }
    }
    a.recent[0] = if header.start == 0 {
        Some(Hash::ZERO)
    } else {
        Hash::from_slice(&header.prev_leaf_hash)
    };
    for cp in anchors {
        if cp.size >= header.start {
            a.expect(cp.size, cp.root, Source::Anchor);
        }
    }
    let total = header.end.saturating_sub(header.start);
    // Reading and decoding run on their own thread; hashing and the checks
    // on this one. Items arrive in file order, in batches.
    std::thread::scope(|scope| -> Result<(), BundleError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Read>>(8);
        scope.spawn(move || {
            let mut batch = Vec::with_capacity(READ_BATCH);
            loop {
                let (msg, last) = match reader.next_item() {
                    Ok(Some(Item::Entry(e))) => {
                        let head = decode_head(&e.entry);
                        (Read::Entry(e, head), false)
                    }
                    Ok(Some(item)) => {
                        let end = matches!(item, Item::End(_));
                        (Read::Other(item), end)
                    }
                    Ok(None) => (Read::Done, true),
                    Err(BundleError::Truncated { items }) => (Read::CutShort(items), true),
                    Err(e) => (Read::Failed(e), true),
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
        for msg in rx.into_iter().flatten() {
            // One entry of look-ahead: a swap shows in the pair.
            let next_claim = match &msg {
                Read::Entry(_, Ok(h)) => Some(h.index),
                _ => None,
            };
            if let Some((rec, rec_head)) = held.take() {
                a.entry(&rec, rec_head, next_claim);
                if a.report.entries.is_multiple_of(65536) {
                    progress(a.report.entries, total);
                }
            }
            match msg {
                Read::Entry(e, head) => held = Some((e, head)),
                Read::Other(Item::Checkpoint(c)) => a.checkpoint(&c.note),
                Read::Other(Item::End(end)) => {
                    if end.entries != a.report.entries {
                        a.find(
                            TamperKind::Malformed,
                            a.range.size(),
                            format!(
                                "end marker counts {} entries, the bundle holds {}",
                                end.entries, a.report.entries
                            ),
                        );
                    }
                }
                Read::Other(_) => a.find(TamperKind::Malformed, a.range.size(), "a second header"),
                Read::CutShort(items) => a.find(
                    TamperKind::Malformed,
                    a.range.size(),
                    format!("the bundle was cut short after {items} items"),
                ),
                Read::Failed(e) => return Err(e),
                Read::Done => {}
            }
        }
        Ok(())
    })?;
    progress(a.report.entries, total);
    // A payload may only be missing because a redaction entry erased it.
    for i in std::mem::take(&mut a.withheld) {
        if !a.redacted.contains(&i) {
            a.find(
                TamperKind::ModifiedPayload,
                i,
                format!("the payload of entry {i} is withheld, but no redaction entry names it"),
            );
        }
    }
    let size = a.range.size();
    let beyond: Vec<(u64, Source)> = a.pending.iter().map(|(s, (_, src))| (*s, *src)).collect();
    if let Some(&(anchored, _)) = beyond.iter().rev().find(|(_, src)| *src == Source::Anchor) {
        a.find(
            TamperKind::RolledBack,
            size,
            format!(
                "the log ends at {size} entries but size {anchored} was anchored: it was rolled back or truncated after anchoring"
            ),
        );
    }
    if let Some(&(cp_size, _)) = beyond.iter().rev().find(|(_, src)| *src == Source::Bundle) {
        a.find(
            TamperKind::Truncated,
            size,
            format!(
                "the log ends at {size} entries but a checkpoint signed {cp_size}: entries {size}..{cp_size} are gone"
            ),
        );
    }
    if header.end > size && a.pending.is_empty() {
        a.find(
            TamperKind::Truncated,
            size,
            format!(
                "the header announces entries up to {}, the bundle ends at {size}",
                header.end
            ),
        );
    }
    a.report.tree_size = size;
    a.report.root = a.range.root().to_hex();
    Ok(a.report)
}
