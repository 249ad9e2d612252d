//! The object-storage mirror of a log: the log published in the C2SP
//! tlog-tiles layout, under one prefix per log (`<origin>/`):
//!
//! * `checkpoint`: the newest mirrored signed checkpoint (a C2SP
//!   tlog-checkpoint note); every object below describes the tree of
//!   exactly that size or a smaller one.
//! * `tile/<L>/<N>[.p/<W>]`: hash tiles, each the concatenated 32-byte
//!   hashes of one row of 256 (or `W`) nodes at tree level 8·L.
//! * `tile/entries/<N>[.p/<W>]`: entry bundles, entries 256·N .. 256·N+W-1,
//!   each a big-endian u16 length then the stored `LedgerEntry` bytes.
//! * `payload/group/<G>` and `payload/<N>`: payload bundles (ours, not in
//!   the spec): for each entry in order, a big-endian u32 length then that
//!   many bytes, the 32-byte salt then the payload; length 0 when nothing
//!   is stored (the entry has no payload, or it was redacted). A group of
//!   16 tiles (entries 4096·G .. 4096·G+4095) that the tree holds whole has
//!   one bundle, `payload/group/<G>`; the tiles of the last, incomplete
//!   group have one each, `payload/<N>` (entries of entry bundle N),
//!   rewritten as the tile fills. Either is rewritten when a payload in it
//!   is redacted. See [`payloads_of_tile`].
//!
//! This module has the encodings, a streaming builder of tile rows, and the
//! audit of a whole mirror ([`audit_mirror`]), which reads it object by
//! object through a [`Fetch`] and hands the entries to the bundle audit.

use crate::audit::{AuditReport, Finding, TamperKind, audit_stream};
use crate::bundle::BundleError;
use crate::checkpoint::{Checkpoint, open_checkpoint};
use crate::entry::decode_head;
use crate::hash::{Hash, leaf_hash};
use crate::note::NoteVerifier;
use crate::proto::{BundleEnd, BundleHeader, EntryRecord, SignedCheckpoint, bundle_item::Item};
use crate::tiles::{TILE_WIDTH, TileId, entries_path, fold_row, index_path, tile_path};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Path of the newest mirrored checkpoint.
pub const CHECKPOINT: &str = "checkpoint";

/// Path of the payload bundle of tile `n` alone: `payload/<N>`.
pub fn payload_path(n: u64) -> String {
    format!("payload/{}", index_path(n))
}

/// Tiles whose payloads share one bundle once the tree holds all of them.
pub const PAYLOAD_GROUP_TILES: u64 = 16;

/// Entries of a payload group: 4,096.
pub const PAYLOAD_GROUP: u64 = PAYLOAD_GROUP_TILES * TILE_WIDTH;

/// Path of the payload bundle of group `g` (tiles 16·G .. 16·G+15):
/// `payload/group/<G>`.
pub fn group_payload_path(g: u64) -> String {
    format!("payload/group/{}", index_path(g))
}

/// Where the mirror of a tree of `size` entries keeps the payloads of tile
/// `n`: the bundle of its group when the tree holds the whole group (the
/// tile's records then start at the returned offset in it), else the
/// tile's own bundle (offset 0).
pub fn payloads_of_tile(n: u64, size: u64) -> (String, usize) {
    let g = n / PAYLOAD_GROUP_TILES;
    if group_complete(g, size) {
        let offset = (n % PAYLOAD_GROUP_TILES * TILE_WIDTH) as usize;
        (group_payload_path(g), offset)
    } else {
        (payload_path(n), 0)
    }
}

/// Whether a tree of `size` entries holds payload group `g` whole.
pub fn group_complete(g: u64, size: u64) -> bool {
    g.checked_add(1)
        .and_then(|e| e.checked_mul(PAYLOAD_GROUP))
        .is_some_and(|end| end <= size)
}

/// An entry bundle: each entry as a big-endian u16 length and its bytes.
/// Entries over 65,535 bytes cannot be bundled (the log refuses them).
pub fn encode_entry_bundle<'a>(entries: impl IntoIterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let len: usize = entries.clone().into_iter().map(|e| e.len() + 2).sum();
    let mut out = Vec::with_capacity(len);
    for e in entries {
        push_bundle_entry(&mut out, e);
    }
    out
}

/// Appends one entry to an entry bundle being built in `out`.
pub fn push_bundle_entry(out: &mut Vec<u8>, entry: &[u8]) {
    let n = u16::try_from(entry.len()).expect("entries are at most 65,535 bytes");
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(entry);
}

/// The entries of an entry bundle.
pub fn decode_entry_bundle(mut bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let Some((len, rest)) = bytes.split_first_chunk::<2>() else {
            return Err(format!(
                "a length prefix is cut short after {} entries",
                out.len()
            ));
        };
        let n = u16::from_be_bytes(*len) as usize;
        if rest.len() < n {
            return Err(format!(
                "entry {} of the bundle is cut short ({} of {n} bytes)",
                out.len(),
                rest.len()
            ));
        }
        out.push(&rest[..n]);
        bytes = &rest[n..];
    }
    Ok(out)
}

/// A hash tile: its hashes back to back.
pub fn encode_tile(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.0).collect()
}

/// The hashes of a hash tile, if it is a whole number of them.
pub fn decode_tile(bytes: &[u8]) -> Option<Vec<Hash>> {
    if !bytes.len().is_multiple_of(32) {
        return None;
    }
    bytes.chunks_exact(32).map(Hash::from_slice).collect()
}

/// Salt and payload of one entry, as a payload bundle holds it.
pub type Payload = (Vec<u8>, Vec<u8>);

/// A payload bundle from each entry's salt and payload (None: not stored).
pub fn encode_payload_bundle<'a>(
    records: impl IntoIterator<Item = Option<(&'a [u8], &'a [u8])>> + Clone,
) -> Vec<u8> {
    let len: usize = records
        .clone()
        .into_iter()
        .map(|r| 4 + r.map_or(0, |(s, p)| s.len() + p.len()))
        .sum();
    let mut out = Vec::with_capacity(len);
    for r in records {
        push_payload_record(&mut out, r);
    }
    out
}

/// Appends one record (an entry's salt and payload, or None: not stored)
/// to a payload bundle being built in `out`.
pub fn push_payload_record(out: &mut Vec<u8>, record: Option<(&[u8], &[u8])>) {
    match record {
        None => out.extend_from_slice(&0u32.to_be_bytes()),
        Some((salt, payload)) => {
            let n = u32::try_from(salt.len() + payload.len()).expect("payloads fit in u32");
            out.extend_from_slice(&n.to_be_bytes());
            out.extend_from_slice(salt);
            out.extend_from_slice(payload);
        }
    }
}

/// The records of a payload bundle.
pub fn decode_payload_bundle(mut bytes: &[u8]) -> Result<Vec<Option<Payload>>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(format!(
                "a length prefix is cut short after {} records",
                out.len()
            ));
        };
        let n = u32::from_be_bytes(*len) as usize;
        if rest.len() < n {
            return Err(format!("record {} is cut short", out.len()));
        }
        let record = &rest[..n];
        bytes = &rest[n..];
        if n == 0 {
            out.push(None);
        } else if n < 32 {
            return Err(format!("record {} is shorter than its salt", out.len()));
        } else {
            out.push(Some((record[..32].to_vec(), record[32..].to_vec())));
        }
    }
    Ok(out)
}

/// Builds the tile rows of a tree from its leaf hashes in order: each full
/// row is handed out as it completes (and folded into the row above), and
/// [`TileRows::partial`] gives the right edge.
#[derive(Debug, Default, Clone)]
pub struct TileRows {
    rows: Vec<Vec<Hash>>,
    /// Full tiles done per level.
    done: Vec<u64>,
}

impl TileRows {
    pub fn new() -> TileRows {
        TileRows::default()
    }

    /// Adds the next leaf hash; `full` sees every row that completes.
    pub fn push(&mut self, leaf: Hash, mut full: impl FnMut(TileId, &[Hash])) {
        let mut level = 0usize;
        let mut hash = leaf;
        loop {
            if self.rows.len() <= level {
                self.rows.push(Vec::with_capacity(TILE_WIDTH as usize));
                self.done.push(0);
            }
            self.rows[level].push(hash);
            if self.rows[level].len() as u64 != TILE_WIDTH {
                return;
            }
            let id = TileId {
                level: level as u8,
                index: self.done[level],
                width: TILE_WIDTH as u16,
            };
            full(id, &self.rows[level]);
            hash = fold_row(&self.rows[level]);
            self.rows[level].clear();
            self.done[level] += 1;
            level += 1;
        }
    }

    /// The partial tiles at the current size, lowest level first.
    pub fn partial(&self) -> Vec<(TileId, &[Hash])> {
        self.rows
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(|(level, r)| {
                (
                    TileId {
                        level: level as u8,
                        index: self.done[level],
                        width: r.len() as u16,
                    },
                    r.as_slice(),
                )
            })
            .collect()
    }
}

/// Reads the objects of one log's mirror (paths relative to its prefix).
pub trait Fetch: Sync {
    /// The object's bytes; `None` when there is no such object.
    fn fetch(&self, path: &str) -> std::io::Result<Option<Vec<u8>>>;
    /// Where the mirror is, for messages.
    fn describe(&self) -> String;
}

/// One entry as the audit read it, for whoever rebuilds a log from it.
pub struct Visit<'a> {
    pub index: u64,
    pub entry: &'a [u8],
    pub leaf: Hash,
    /// Salt and payload, when the mirror holds them.
    pub payload: Option<&'a Payload>,
}

/// The outcome of a mirror audit: the bundle audit's report of the entries
/// (with the tile findings added) and what the mirror vouches for.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MirrorReport {
    #[serde(flatten)]
    pub audit: AuditReport,
    /// Hash tiles compared with the recomputed tree.
    pub tiles_checked: u64,
    /// The mirrored checkpoint note, when it verified.
    #[serde(skip)]
    pub checkpoint_note: Option<String>,
}

/// Entry bundles fetched at once (each with its level-0 tile and payloads).
const WINDOW: usize = 256;

/// What one fetch job brings back: entry bundle, level-0 tile and payload
/// bundle of one tile index (the tile's own, or its group's, fetched with
/// the group's first tile).
struct Fetched {
    entries: std::io::Result<Option<Vec<u8>>>,
    tile: std::io::Result<Option<Vec<u8>>>,
    payloads: std::io::Result<Option<Vec<u8>>>,
}

/// Audits a whole mirror against the log key: the newest mirrored
/// checkpoint is verified, every entry bundle up to its size is read
/// (`concurrency` fetches at once) and audited as a bundle would be (hash
/// chain, indexes, payload commitments, root against the checkpoint and
/// the `anchors`), and every hash tile of that size is compared with the
/// tree the entries build. `visit` sees each entry in order; `progress`
/// gets (entries done, total).
pub fn audit_mirror<F: Fetch>(
    src: &F,
    key: &NoteVerifier,
    anchors: &[Checkpoint],
    concurrency: usize,
    progress: impl FnMut(u64, u64),
    visit: impl FnMut(Visit<'_>) + Send,
) -> std::io::Result<MirrorReport> {
    let finding = |kind, index, detail: String| MirrorReport {
        audit: AuditReport {
            origin: key.name().to_string(),
            findings: vec![Finding {
                kind,
                index,
                detail,
            }],
            ..Default::default()
        },
        ..Default::default()
    };
    let Some(note) = src.fetch(CHECKPOINT)? else {
        return Ok(finding(
            TamperKind::Truncated,
            0,
            format!("{}: no `checkpoint` object", src.describe()),
        ));
    };
    let note = match String::from_utf8(note) {
        Ok(n) => n,
        Err(_) => {
            return Ok(finding(
                TamperKind::BadSignature,
                0,
                "the mirrored checkpoint is not UTF-8 text".into(),
            ));
        }
    };
    let cp = match open_checkpoint(&note, key) {
        Ok(cp) => cp,
        Err(e) => {
            return Ok(finding(
                TamperKind::BadSignature,
                0,
                format!("the mirrored checkpoint: {e}"),
            ));
        }
    };
    let header = BundleHeader {
        origin: cp.origin.clone(),
        verifier_key: key.to_string(),
        start: 0,
        end: cp.size,
        prefix_hashes: Vec::new(),
        prev_leaf_hash: Hash::ZERO.to_vec(),
        includes_payloads: true,
        created_at: None,
    };
    let mut reader = MirrorReader {
        src,
        concurrency: concurrency.max(1),
        size: cp.size,
        next_tile: 0,
        queue: VecDeque::new(),
        checkpoint: Some(SignedCheckpoint {
            note: note.clone(),
            origin: cp.origin.clone(),
            tree_size: cp.size,
            root_hash: cp.root.to_vec(),
        }),
        ended: false,
        entries: 0,
        rows: TileRows::new(),
        expected_tiles: BTreeMap::new(),
        findings: Vec::new(),
        tiles_checked: 0,
        visit,
    };
    let mut audit = audit_stream(header, || reader.next(), key, anchors, progress)?;
    reader.check_upper_tiles()?;
    // Tiles are judged against the tree of verified entries: when the
    // entries themselves are found altered, their findings are the news and
    // every tile above them would differ too.
    let (tiles, entries): (Vec<Finding>, Vec<Finding>) = reader
        .findings
        .into_iter()
        .partition(|f| f.kind == TamperKind::ModifiedTile);
    let entries_clean = audit.findings.is_empty() && entries.is_empty();
    audit.findings.extend(entries);
    if entries_clean {
        audit.findings.extend(tiles);
    }
    Ok(MirrorReport {
        audit,
        tiles_checked: reader.tiles_checked,
        checkpoint_note: Some(note),
    })
}

/// Turns a mirror into bundle items, fetching a window of tiles at a time.
struct MirrorReader<'s, F, V> {
    src: &'s F,
    concurrency: usize,
    size: u64,
    next_tile: u64,
    queue: VecDeque<Item>,
    checkpoint: Option<SignedCheckpoint>,
    ended: bool,
    entries: u64,
    rows: TileRows,
    /// Tiles above level 0 the entries built, checked at the end.
    expected_tiles: BTreeMap<TileId, Vec<Hash>>,
    findings: Vec<Finding>,
    tiles_checked: u64,
    visit: V,
}

fn io_error(e: std::io::Error) -> BundleError {
    BundleError::Io(e)
}

impl<F: Fetch, V: FnMut(Visit<'_>)> MirrorReader<'_, F, V> {
    fn tiles(&self) -> u64 {
        self.size.div_ceil(TILE_WIDTH)
    }

    fn width(&self, n: u64) -> u16 {
        (self.size - n * TILE_WIDTH).min(TILE_WIDTH) as u16
    }

    fn next(&mut self) -> Result<Option<Item>, BundleError> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Ok(Some(item));
            }
            if self.next_tile < self.tiles() {
                self.fill_window()?;
                continue;
            }
            if let Some(c) = self.checkpoint.take() {
                return Ok(Some(Item::Checkpoint(c)));
            }
            if !self.ended {
                self.ended = true;
                return Ok(Some(Item::End(BundleEnd {
                    entries: self.entries,
                    checkpoints: 1,
                    redaction_proofs: 0,
                })));
            }
            return Ok(None);
        }
    }

    /// Fetches the next window of tile indexes concurrently and queues
    /// their entries in order.
    fn fill_window(&mut self) -> Result<(), BundleError> {
        let first = self.next_tile;
        let last = (first + WINDOW as u64).min(self.tiles());
        self.next_tile = last;
        let n = (last - first) as usize;
        let slots: Vec<Mutex<Option<Fetched>>> = (0..n).map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let src = self.src;
        let size = self.size;
        std::thread::scope(|s| {
            for _ in 0..self.concurrency.min(n) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return;
                        }
                        let t = first + i as u64;
                        let width = (size - t * TILE_WIDTH).min(TILE_WIDTH) as u16;
                        let tile = TileId {
                            level: 0,
                            index: t,
                            width,
                        };
                        let (payloads, offset) = payloads_of_tile(t, size);
                        let f = Fetched {
                            entries: src.fetch(&entries_path(t, width)),
                            tile: src.fetch(&tile_path(tile)),
                            payloads: if offset == 0 {
                                src.fetch(&payloads)
                            } else {
                                Ok(None)
                            },
                        };
                        *slots[i].lock().expect("slot lock") = Some(f);
                    }
                });
            }
        });
        // The records of the payload bundle being read: a tile's own, or
        // its group's from the group's first tile on (windows start at a
        // group's first tile); each tile takes its 256 in turn.
        let mut records: VecDeque<Option<Payload>> = VecDeque::new();
        for (i, slot) in slots.into_iter().enumerate() {
            let t = first + i as u64;
            let f = slot
                .into_inner()
                .expect("slot lock")
                .expect("every job ran");
            let (path, offset) = payloads_of_tile(t, size);
            if offset == 0 {
                records = match f.payloads.map_err(io_error)?.as_deref() {
                    None => VecDeque::new(),
                    Some(b) => decode_payload_bundle(b)
                        .map(VecDeque::from)
                        .unwrap_or_else(|e| {
                            self.find(
                                TamperKind::ModifiedPayload,
                                t * TILE_WIDTH,
                                format!("{path}: {e}"),
                            );
                            VecDeque::new()
                        }),
                };
            }
            let n = records.len().min(TILE_WIDTH as usize);
            let payloads = records.drain(..n).collect();
            self.take(t, f.entries, f.tile, payloads)?;
        }
        Ok(())
    }

    fn find(&mut self, kind: TamperKind, index: u64, detail: String) {
        if self.findings.len() < 1000 {
            self.findings.push(Finding {
                kind,
                index,
                detail,
            });
        }
    }

    /// Queues the entries of tile `t` (with its payload records) and
    /// checks its level-0 hash tile.
    fn take(
        &mut self,
        t: u64,
        entries: std::io::Result<Option<Vec<u8>>>,
        level0: std::io::Result<Option<Vec<u8>>>,
        payloads: Vec<Option<Payload>>,
    ) -> Result<(), BundleError> {
        let width = self.width(t);
        let start = t * TILE_WIDTH;
        let path = entries_path(t, width);
        let bundle = entries.map_err(io_error)?;
        let entries: Vec<&[u8]> = match &bundle {
            None => {
                self.find(
                    TamperKind::DeletedEntry,
                    start,
                    format!(
                        "{path} is missing from the mirror (entries {start}..{})",
                        start + u64::from(width)
                    ),
                );
                Vec::new()
            }
            Some(b) => match decode_entry_bundle(b) {
                Ok(e) => e,
                Err(e) => {
                    self.find(TamperKind::ModifiedEntry, start, format!("{path}: {e}"));
                    Vec::new()
                }
            },
        };
        if bundle.is_some() && entries.len() != usize::from(width) && !entries.is_empty() {
            self.find(
                TamperKind::Malformed,
                start,
                format!("{path} holds {} entries, not {width}", entries.len()),
            );
        }
        let mut leaves = Vec::with_capacity(entries.len());
        for (j, e) in entries.iter().enumerate() {
            let position = start + j as u64;
            let leaf = leaf_hash(e);
            leaves.push(leaf);
            let payload = payloads.get(j).and_then(Option::as_ref);
            (self.visit)(Visit {
                index: position,
                entry: e,
                leaf,
                payload,
            });
            let head = decode_head(e);
            let committed = head
                .as_ref()
                .map(|h| !h.payload_commitment.is_empty())
                .unwrap_or(false);
            let (payload, payload_salt) = payload.cloned().map(|(s, p)| (p, s)).unzip();
            let payload_redacted = committed && payload.is_none();
            self.queue.push_back(Item::Entry(EntryRecord {
                index: head.as_ref().map(|h| h.index).unwrap_or(position),
                entry: e.to_vec(),
                leaf_hash: leaf.to_vec(),
                payload: payload.unwrap_or_default(),
                payload_salt: payload_salt.unwrap_or_default(),
                payload_redacted,
                inclusion: None,
            }));
            self.entries += 1;
        }
        // Level-0 tile against the entries' leaf hashes.
        let tile = TileId {
            level: 0,
            index: t,
            width,
        };
        let complete = leaves.len() == usize::from(width);
        let mirrored = level0.map_err(io_error)?;
        match &mirrored {
            None => self.find(
                TamperKind::ModifiedTile,
                start,
                format!("{} is missing from the mirror", tile_path(tile)),
            ),
            Some(bytes) if complete => self.compare_tile(tile, bytes, &leaves),
            Some(_) => {} // The entries are already reported.
        }
        // The rows above, from the leaves; when entries are missing, from
        // the mirrored tile, so the tiles above are still checked.
        let row = if complete {
            leaves
        } else {
            mirrored
                .as_deref()
                .and_then(decode_tile)
                .filter(|r| r.len() == usize::from(width))
                .unwrap_or_default()
        };
        for leaf in row {
            let expected = &mut self.expected_tiles;
            self.rows.push(leaf, |id, hashes| {
                if id.level > 0 {
                    expected.insert(id, hashes.to_vec());
                }
            });
        }
        Ok(())
    }

    fn compare_tile(&mut self, tile: TileId, bytes: &[u8], want: &[Hash]) {
        self.tiles_checked += 1;
        let path = tile_path(tile);
        let shift = 8 * u32::from(tile.level);
        let first_leaf = |j: u64| (tile.index * TILE_WIDTH + j) << shift;
        match decode_tile(bytes) {
            None => self.find(
                TamperKind::ModifiedTile,
                first_leaf(0),
                format!("{path}: {} bytes is not a row of hashes", bytes.len()),
            ),
            Some(got) if got.len() != want.len() => self.find(
                TamperKind::ModifiedTile,
                first_leaf(0),
                format!("{path} holds {} hashes, not {}", got.len(), want.len()),
            ),
            Some(got) => {
                if let Some(j) = got.iter().zip(want).position(|(a, b)| a != b) {
                    self.find(
                        TamperKind::ModifiedTile,
                        first_leaf(j as u64),
                        format!(
                            "{path}: hash {j} is {}, the entries give {}",
                            got[j], want[j]
                        ),
                    );
                }
            }
        }
    }

    /// Compares the mirrored tiles above level 0 (full ones as built, and
    /// the right edge of each level) with the tree the entries built.
    fn check_upper_tiles(&mut self) -> std::io::Result<()> {
        let mut want = std::mem::take(&mut self.expected_tiles);
        for (id, row) in self.rows.partial() {
            if id.level > 0 {
                want.insert(id, row.to_vec());
            }
        }
        for (id, row) in want {
            match self.src.fetch(&tile_path(id))? {
                None => self.find(
                    TamperKind::ModifiedTile,
                    (id.index * TILE_WIDTH) << (8 * u32::from(id.level)),
                    format!("{} is missing from the mirror", tile_path(id)),
                ),
                Some(bytes) => self.compare_tile(id, &bytes, &row),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiles::tiles_of;
    use crate::tree::{HashSource, MemoryTree, NodeId};

    #[test]
    fn bundles_round_trip() {
        let entries: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; i as usize * 100]).collect();
        let b = encode_entry_bundle(entries.iter().map(Vec::as_slice));
        let back = decode_entry_bundle(&b).unwrap();
        assert_eq!(back, entries.iter().map(Vec::as_slice).collect::<Vec<_>>());
        assert!(decode_entry_bundle(&b[..b.len() - 1]).is_err());
        let p = encode_payload_bundle([Some((&[1u8; 32][..], &b"abc"[..])), None]);
        let back = decode_payload_bundle(&p).unwrap();
        assert_eq!(back, vec![Some((vec![1u8; 32], b"abc".to_vec())), None]);
        assert!(decode_payload_bundle(&[0, 0, 0, 5, 1]).is_err());
        assert_eq!(
            payload_path(1234067),
            "payload/x001/x234/067",
            "same <N> as the spec's paths"
        );
        assert_eq!(group_payload_path(1234), "payload/group/x001/234");
    }

    #[test]
    fn a_tile_has_its_payloads_in_its_group_bundle_once_the_group_is_whole() {
        assert_eq!(payloads_of_tile(0, 4095), ("payload/000".into(), 0));
        assert_eq!(payloads_of_tile(15, 4095), ("payload/015".into(), 0));
        assert_eq!(payloads_of_tile(0, 4096), ("payload/group/000".into(), 0));
        assert_eq!(
            payloads_of_tile(15, 4096),
            ("payload/group/000".into(), 15 * 256)
        );
        assert_eq!(payloads_of_tile(16, 8191), ("payload/016".into(), 0));
        assert_eq!(
            payloads_of_tile(17, 8192),
            ("payload/group/001".into(), 256)
        );
        assert!(!group_complete(u64::MAX, u64::MAX));
    }

    #[test]
    fn tile_rows_match_the_tree() {
        let mut tree = MemoryTree::new();
        let mut rows = TileRows::new();
        let mut full = BTreeMap::new();
        let size = 256 * 256 + 300;
        for i in 0..size as u32 {
            let leaf = leaf_hash(&i.to_be_bytes());
            tree.push(leaf);
            rows.push(leaf, |id, r| {
                full.insert(id, r.to_vec());
            });
        }
        let mut all = full;
        for (id, r) in rows.partial() {
            all.insert(id, r.to_vec());
        }
        let want: Vec<TileId> = tiles_of(size);
        assert_eq!(all.keys().copied().collect::<Vec<_>>(), {
            let mut w = want.clone();
            w.sort();
            w
        });
        for id in want {
            let level = id.level * 8;
            let nodes: Vec<NodeId> = (0..u64::from(id.width))
                .map(|j| NodeId::new(level, id.index * 256 + j))
                .collect();
            assert_eq!(all[&id], tree.nodes(&nodes).unwrap(), "{id:?}");
        }
    }

    /// A mirror in memory, built from a chained log of `n` entries (every
    /// third with a payload), the way the server publishes one.
    struct Memory(std::collections::HashMap<String, Vec<u8>>);

    impl Fetch for Memory {
        fn fetch(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
            Ok(self.0.get(path).cloned())
        }
        fn describe(&self) -> String {
            "memory".into()
        }
    }

    fn mirror_of(n: u64) -> (Memory, NoteVerifier) {
        use crate::entry::{encode_entry, payload_commitment};
        use crate::proto::{AuditEvent, LedgerEntry};
        let signer = crate::note::NoteSigner::from_seed("example.com/m", &[7; 32]).unwrap();
        let mut objects = std::collections::HashMap::new();
        let mut tree = MemoryTree::new();
        let mut rows = TileRows::new();
        let mut tiles = BTreeMap::new();
        let mut prev = Hash::ZERO;
        let mut entries = Vec::new();
        let mut payloads = Vec::new();
        for i in 0..n {
            let salt = [i as u8; 32];
            let payload = format!("payload {i}").into_bytes();
            let with = i % 3 == 0;
            let entry = LedgerEntry {
                index: i,
                prev_leaf_hash: prev.to_vec(),
                event: Some(AuditEvent {
                    event_id: format!("e{i}"),
                    ..Default::default()
                }),
                payload_commitment: if with {
                    payload_commitment(&salt, &payload).to_vec()
                } else {
                    Vec::new()
                },
                ..Default::default()
            };
            let bytes = encode_entry(&entry);
            prev = leaf_hash(&bytes);
            tree.push(prev);
            rows.push(prev, |id, r| {
                tiles.insert(id, r.to_vec());
            });
            entries.push(bytes);
            payloads.push(with.then(|| (salt.to_vec(), payload)));
        }
        for (id, r) in rows.partial() {
            tiles.insert(id, r.to_vec());
        }
        for (id, r) in tiles {
            objects.insert(tile_path(id), encode_tile(&r));
        }
        for (t, chunk) in entries.chunks(256).enumerate() {
            let width = chunk.len() as u16;
            objects.insert(
                entries_path(t as u64, width),
                encode_entry_bundle(chunk.iter().map(Vec::as_slice)),
            );
            // Payloads: a bundle per group the tree holds whole, else per
            // tile.
            let (path, offset) = payloads_of_tile(t as u64, n);
            let records = if offset == 0 && path != payload_path(t as u64) {
                PAYLOAD_GROUP as usize
            } else if offset == 0 {
                chunk.len()
            } else {
                continue;
            };
            let p = &payloads[t * 256..t * 256 + records];
            objects.insert(
                path,
                encode_payload_bundle(
                    p.iter()
                        .map(|x| x.as_ref().map(|(s, p)| (s.as_slice(), p.as_slice()))),
                ),
            );
        }
        let note = Checkpoint::new("example.com/m", n, tree.root())
            .sign(&signer)
            .unwrap();
        objects.insert(CHECKPOINT.into(), note.into_bytes());
        (Memory(objects), signer.verifier())
    }

    fn audit(m: &Memory, key: &NoteVerifier) -> MirrorReport {
        audit_mirror(m, key, &[], 4, |_, _| {}, |_| {}).unwrap()
    }

    #[test]
    fn a_whole_mirror_audits_clean_and_each_object_is_checked() {
        let (mut m, key) = mirror_of(700);
        let mut seen = 0;
        let clean = audit_mirror(
            &m,
            &key,
            &[],
            3,
            |_, _| {},
            |v| {
                assert_eq!(v.index, seen);
                seen += 1;
            },
        )
        .unwrap();
        assert!(clean.audit.clean(), "{:?}", clean.audit.findings);
        assert_eq!(seen, 700);
        assert_eq!(clean.audit.verified_size, 700);
        assert_eq!(clean.audit.payloads_checked, 234);
        // Level 0: tiles 0, 1 and 2 (.p/188); level 1: .p/2.
        assert_eq!(clean.tiles_checked, 4);

        // A hash changed in a level-0 tile.
        let path = tile_path(TileId {
            level: 0,
            index: 1,
            width: 256,
        });
        let saved = m.0[&path].clone();
        m.0.get_mut(&path).unwrap()[5 * 32] ^= 1;
        let r = audit(&m, &key);
        let f = r.audit.first().unwrap();
        assert_eq!((f.kind, f.index), (TamperKind::ModifiedTile, 261), "{f:?}");
        m.0.insert(path, saved);

        // The upper tile, removed.
        let path = tile_path(TileId {
            level: 1,
            index: 0,
            width: 2,
        });
        let saved = m.0.remove(&path).unwrap();
        let r = audit(&m, &key);
        assert_eq!(r.audit.first().unwrap().kind, TamperKind::ModifiedTile);
        m.0.insert(path, saved);

        // A byte of an entry in a bundle.
        let path = entries_path(1, 256);
        let saved = m.0[&path].clone();
        let at = saved.len() - 3;
        m.0.get_mut(&path).unwrap()[at] ^= 1;
        let r = audit(&m, &key);
        let f = r.audit.first().unwrap();
        assert_eq!((f.kind, f.index), (TamperKind::ModifiedEntry, 511), "{f:?}");
        m.0.insert(path.clone(), saved);

        // A whole entry bundle deleted.
        let saved = m.0.remove(&path).unwrap();
        let r = audit(&m, &key);
        let f = r.audit.first().unwrap();
        assert_eq!((f.kind, f.index), (TamperKind::DeletedEntry, 256), "{f:?}");
        m.0.insert(path, saved);

        // A payload altered, then one dropped (length 0 with no redaction).
        let path = payload_path(0);
        let saved = m.0[&path].clone();
        let mut records = decode_payload_bundle(&saved).unwrap();
        records[3].as_mut().unwrap().1[0] ^= 1;
        let enc = |r: &Vec<Option<Payload>>| {
            encode_payload_bundle(
                r.iter()
                    .map(|x| x.as_ref().map(|(s, p)| (s.as_slice(), p.as_slice()))),
            )
        };
        m.0.insert(path.clone(), enc(&records));
        let f = audit(&m, &key).audit.first().cloned().unwrap();
        assert_eq!((f.kind, f.index), (TamperKind::ModifiedPayload, 3), "{f:?}");
        records[3] = None;
        m.0.insert(path.clone(), enc(&records));
        let f = audit(&m, &key).audit.first().cloned().unwrap();
        assert_eq!((f.kind, f.index), (TamperKind::WithheldPayload, 3), "{f:?}");
        m.0.insert(path, saved);

        // The checkpoint, re-signed by another key.
        let other = crate::note::NoteSigner::from_seed("example.com/m", &[8; 32]).unwrap();
        let note = Checkpoint::new("example.com/m", 700, Hash::ZERO)
            .sign(&other)
            .unwrap();
        m.0.insert(CHECKPOINT.into(), note.into_bytes());
        let f = audit(&m, &key).audit.first().cloned().unwrap();
        assert_eq!(f.kind, TamperKind::BadSignature);
    }

    #[test]
    fn whole_groups_audit_from_their_group_bundles() {
        let n = 2 * PAYLOAD_GROUP + 300;
        let (mut m, key) = mirror_of(n);
        assert!(m.0.contains_key("payload/group/001"));
        assert!(m.0.contains_key("payload/032"), "the last group's tiles");
        assert!(!m.0.contains_key("payload/017"), "a whole group's tile");
        let clean = audit(&m, &key);
        assert!(clean.audit.clean(), "{:?}", clean.audit.findings);
        assert_eq!(clean.audit.payloads_checked, n.div_ceil(3));

        let enc = |r: &Vec<Option<Payload>>| {
            encode_payload_bundle(
                r.iter()
                    .map(|x| x.as_ref().map(|(s, p)| (s.as_slice(), p.as_slice()))),
            )
        };
        // A payload altered in the second tile of group 1: entry 4096+256+1
        // (4353, a multiple of 3).
        let path = group_payload_path(1);
        let saved = m.0[&path].clone();
        let mut records = decode_payload_bundle(&saved).unwrap();
        records[256 + 1].as_mut().unwrap().1[0] ^= 1;
        m.0.insert(path.clone(), enc(&records));
        let f = audit(&m, &key).audit.first().cloned().unwrap();
        assert_eq!(
            (f.kind, f.index),
            (TamperKind::ModifiedPayload, 4353),
            "{f:?}"
        );
        // The group bundle gone: its first payload (4098) is withheld, and
        // a tile bundle left for one of its tiles does not stand in for it.
        m.0.remove(&path);
        m.0.insert(payload_path(16), m.0["payload/032"].clone());
        let f = audit(&m, &key).audit.first().cloned().unwrap();
        assert_eq!(
            (f.kind, f.index),
            (TamperKind::WithheldPayload, 4098),
            "{f:?}"
        );
        // Cut short: found, and named by the group's first entry.
        m.0.insert(path.clone(), saved[..saved.len() - 1].to_vec());
        let f = audit(&m, &key).audit.first().cloned().unwrap();
        assert_eq!(
            (f.kind, f.index),
            (TamperKind::ModifiedPayload, 4096),
            "{f:?}"
        );
        assert!(f.detail.contains("payload/group/001"), "{f:?}");
        m.0.insert(path, saved);
        assert!(audit(&m, &key).audit.clean());
    }
}
