//! The Merkle tree of RFC 9162 §2.1: an incremental builder that keeps only
//! the right edge (a compact range), and proof generation from any store of
//! complete-subtree hashes.

use crate::hash::{EMPTY_ROOT, Hash, node_hash};

/// A node of the tree: the complete subtree of `2^level` leaves starting at
/// leaf `index << level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

impl NodeId {
    pub fn new(level: u8, index: u64) -> NodeId {
        NodeId { level, index }
    }
    /// First leaf covered.
    pub fn start(&self) -> u64 {
        self.index << self.level
    }
    /// Number of leaves covered.
    pub fn width(&self) -> u64 {
        1u64 << self.level
    }
}

/// The right edge of a tree: the roots of the maximal complete subtrees
/// ("peaks"), largest first. It is all that is needed to append leaves and
/// compute the root, in O(log n) memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    peaks: Vec<Hash>,
}

impl CompactRange {
    /// The empty tree.
    pub fn new() -> CompactRange {
        CompactRange::default()
    }

    /// Rebuilds the right edge of a tree of `size` leaves from its stored
    /// nodes (one per set bit of `size`).
    pub fn from_source<S: HashSource + ?Sized>(
        src: &S,
        size: u64,
    ) -> Result<CompactRange, S::Error> {
        let nodes = peak_nodes(size);
        let peaks = src.nodes(&nodes)?;
        Ok(CompactRange { size, peaks })
    }

    /// Builds a range from explicit peaks; `None` if the count does not match
    /// the number of set bits of `size`.
    pub fn from_peaks(size: u64, peaks: Vec<Hash>) -> Option<CompactRange> {
        (peaks.len() == size.count_ones() as usize).then_some(CompactRange { size, peaks })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn peaks(&self) -> &[Hash] {
        &self.peaks
    }

    /// Appends a leaf hash, calling `completed` for every node that the append
    /// completes: the leaf itself at level 0, then each parent it closes.
    pub fn push_with(&mut self, leaf: Hash, mut completed: impl FnMut(NodeId, &Hash)) {
        let index = self.size;
        completed(NodeId::new(0, index), &leaf);
        let mut hash = leaf;
        let mut level = 0u8;
        // Each trailing one bit of the old size is a peak of equal width that
        // merges with the new one.
        while (index >> level) & 1 == 1 {
            // A set bit of `size` always has its peak on the stack.
            let left = self.peaks.pop().expect("peak for each set bit");
            hash = node_hash(&left, &hash);
            level += 1;
            completed(NodeId::new(level, index >> level), &hash);
        }
        self.peaks.push(hash);
        self.size += 1;
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        self.push_with(leaf, |_, _| {});
    }

    /// The tree root (RFC 9162 MTH) of the leaves appended so far.
    pub fn root(&self) -> Hash {
        fold_right(&self.peaks).unwrap_or(EMPTY_ROOT)
    }
}

/// Hash of a list of complete subtrees laid side by side, largest first, as
/// the RFC 9162 recursion combines them: right to left.
fn fold_right(hashes: &[Hash]) -> Option<Hash> {
    let (last, rest) = hashes.split_last()?;
    Some(rest.iter().rev().fold(*last, |acc, h| node_hash(h, &acc)))
}

/// The peaks of a tree of `size` leaves, largest first.
pub fn peak_nodes(size: u64) -> Vec<NodeId> {
    let mut out = Vec::with_capacity(size.count_ones() as usize);
    let mut start = 0u64;
    for level in (0..64u8).rev() {
        if size & (1u64 << level) != 0 {
            out.push(NodeId::new(level, start >> level));
            start += 1u64 << level;
        }
    }
    out
}

/// Where proofs get complete-subtree hashes from: the server's tile store, an
/// in-memory list in tests, a mirror of tiles for a verifier.
pub trait HashSource {
    type Error;

    /// Hashes of the given complete subtrees, in the same order. All the
    /// nodes lie within the tree the caller is proving against.
    fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, Self::Error>;
}

/// Splits the leaf range [lo, hi) into the complete subtrees it is made of,
/// largest first. Ranges produced by the RFC 9162 recursion start on a
/// boundary at least as wide as themselves, so this is their exact shape.
fn range_nodes(lo: u64, hi: u64, out: &mut Vec<NodeId>) {
    let mut a = lo;
    while a < hi {
        let mut level = if a == 0 { 63 } else { a.trailing_zeros() as u8 };
        while level > 0 && (a.checked_add(1u64 << level).is_none_or(|end| end > hi)) {
            level -= 1;
        }
        out.push(NodeId::new(level, a >> level));
        a += 1u64 << level;
    }
}

/// Largest power of two strictly less than `n` (n >= 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Leaf ranges whose subtree hashes form the inclusion proof of leaf `m` in
/// [lo, hi), leaf upward (RFC 9162 §2.1.3.1 PATH).
fn inclusion_ranges(m: u64, lo: u64, hi: u64, out: &mut Vec<(u64, u64)>) {
    let n = hi - lo;
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    if m < lo + k {
        inclusion_ranges(m, lo, lo + k, out);
        out.push((lo + k, hi));
    } else {
        inclusion_ranges(m, lo + k, hi, out);
        out.push((lo, lo + k));
    }
}

/// Leaf ranges of the consistency proof between the first `m` leaves of
/// [lo, hi) and all of it (RFC 9162 §2.1.4.1 SUBPROOF).
fn consistency_ranges(m: u64, lo: u64, hi: u64, whole: bool, out: &mut Vec<(u64, u64)>) {
    let n = hi - lo;
    if m == n {
        if !whole {
            out.push((lo, hi));
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        consistency_ranges(m, lo, lo + k, whole, out);
        out.push((lo + k, hi));
    } else {
        consistency_ranges(m - k, lo + k, hi, false, out);
        out.push((lo, lo + k));
    }
}

/// Errors of proof generation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofRequestError<E> {
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("consistency proof asked from size {old} to the smaller size {new}")]
    SizesReversed { old: u64, new: u64 },
    #[error("hash store: {0}")]
    Source(E),
}

/// Fetches the hashes of the given ranges with one call to the source, and
/// folds each range into its subtree hash.
fn hash_ranges<S: HashSource + ?Sized>(
    src: &S,
    ranges: &[(u64, u64)],
) -> Result<Vec<Hash>, S::Error> {
    let mut nodes = Vec::new();
    let mut bounds = Vec::with_capacity(ranges.len());
    for &(lo, hi) in ranges {
        let before = nodes.len();
        range_nodes(lo, hi, &mut nodes);
        bounds.push(before..nodes.len());
    }
    let hashes = src.nodes(&nodes)?;
    Ok(bounds
        .into_iter()
        // Every range is non-empty, so each slice has at least one hash.
        .map(|b| fold_right(&hashes[b]).expect("non-empty range"))
        .collect())
}

/// Root of the first `size` leaves, from stored nodes.
pub fn root_at<S: HashSource + ?Sized>(src: &S, size: u64) -> Result<Hash, S::Error> {
    if size == 0 {
        return Ok(EMPTY_ROOT);
    }
    Ok(hash_ranges(src, &[(0, size)])?[0])
}

/// Inclusion proof of leaf `index` in the tree of `size` leaves.
pub fn inclusion_proof<S: HashSource + ?Sized>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofRequestError<S::Error>> {
    if index >= size {
        return Err(ProofRequestError::IndexOutOfRange { index, size });
    }
    let mut ranges = Vec::new();
    inclusion_ranges(index, 0, size, &mut ranges);
    hash_ranges(src, &ranges).map_err(ProofRequestError::Source)
}

/// Consistency proof from the tree of `old` leaves to the tree of `new`
/// leaves. Empty when `old` is 0 or equal to `new`.
pub fn consistency_proof<S: HashSource + ?Sized>(
    src: &S,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, ProofRequestError<S::Error>> {
    if old > new {
        return Err(ProofRequestError::SizesReversed { old, new });
    }
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    let mut ranges = Vec::new();
    consistency_ranges(old, 0, new, true, &mut ranges);
    hash_ranges(src, &ranges).map_err(ProofRequestError::Source)
}

/// A whole tree in memory: every complete-subtree hash, level by level. For
/// tests, small tools and verifiers that have all the leaves at hand.
#[derive(Clone, Debug, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
    range: CompactRange,
}

impl MemoryTree {
    pub fn new() -> MemoryTree {
        MemoryTree::default()
    }

    pub fn push(&mut self, leaf: Hash) {
        let levels = &mut self.levels;
        self.range.push_with(leaf, |id, h| {
            let level = id.level as usize;
            if levels.len() <= level {
                levels.push(Vec::new());
            }
            debug_assert_eq!(levels[level].len() as u64, id.index);
            levels[level].push(*h);
        });
    }

    pub fn size(&self) -> u64 {
        self.range.size()
    }

    pub fn root(&self) -> Hash {
        self.range.root()
    }

    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels.first()?.get(index as usize).copied()
    }

    pub fn compact_range(&self) -> &CompactRange {
        &self.range
    }
}

/// A node that the store does not hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("no stored hash for node level {} index {}", .0.level, .0.index)]
pub struct MissingNode(pub NodeId);

impl HashSource for MemoryTree {
    type Error = MissingNode;

    fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, MissingNode> {
        ids.iter()
            .map(|id| {
                self.levels
                    .get(id.level as usize)
                    .and_then(|l| l.get(id.index as usize))
                    .copied()
                    .ok_or(MissingNode(*id))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_follow_the_bits_of_the_size() {
        assert_eq!(peak_nodes(0), vec![]);
        assert_eq!(
            peak_nodes(13),
            vec![NodeId::new(3, 0), NodeId::new(2, 2), NodeId::new(0, 12)]
        );
    }

    #[test]
    fn range_nodes_of_right_edge() {
        let mut out = Vec::new();
        range_nodes(8, 13, &mut out);
        assert_eq!(out, vec![NodeId::new(2, 2), NodeId::new(0, 12)]);
        out.clear();
        range_nodes(0, u64::MAX, &mut out);
        assert_eq!(out.len(), 64);
    }

    #[test]
    fn split_point_is_largest_power_below() {
        assert_eq!(split_point(2), 1);
        assert_eq!(split_point(3), 2);
        assert_eq!(split_point(8), 4);
        assert_eq!(split_point(9), 8);
        assert_eq!(split_point(u64::MAX), 1 << 63);
    }

    #[test]
    fn proof_requests_out_of_range_are_errors() {
        let mut t = MemoryTree::new();
        t.push(crate::hash::leaf_hash(b"a"));
        assert_eq!(
            inclusion_proof(&t, 1, 1),
            Err(ProofRequestError::IndexOutOfRange { index: 1, size: 1 })
        );
        assert_eq!(
            consistency_proof(&t, 2, 1),
            Err(ProofRequestError::SizesReversed { old: 2, new: 1 })
        );
        assert!(matches!(
            inclusion_proof(&t, 0, 2),
            Err(ProofRequestError::Source(MissingNode(_)))
        ));
    }
}
