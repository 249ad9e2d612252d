//! Proof generation and verification checked against a naive reference: the
//! recursive definitions of RFC 9162 §2.1 computed straight from the leaves.
//! Exhaustive for every tree size up to 300, random beyond.

use ledger_verify::hash::{EMPTY_ROOT, Hash, leaf_hash, node_hash};
use ledger_verify::proof::{ProofError, verify_consistency, verify_inclusion};
use ledger_verify::tree::{CompactRange, MemoryTree, consistency_proof, inclusion_proof, root_at};
use proptest::prelude::*;

fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect()
}

fn k_of(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// MTH(D[n]).
fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => EMPTY_ROOT,
        1 => d[0],
        n => {
            let k = k_of(n);
            node_hash(&mth(&d[..k]), &mth(&d[k..]))
        }
    }
}

/// PATH(m, D[n]).
fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    if n <= 1 {
        return vec![];
    }
    let k = k_of(n);
    if m < k {
        let mut p = path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

/// SUBPROOF(m, D[n], b).
fn subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![mth(d)] };
    }
    let k = k_of(n);
    if m <= k {
        let mut p = subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

fn tree_of(d: &[Hash]) -> MemoryTree {
    let mut t = MemoryTree::new();
    for h in d {
        t.push(*h);
    }
    t
}

#[test]
fn exhaustive_up_to_300_leaves() {
    const MAX: u64 = 300;
    let all = leaves(MAX);
    let full = tree_of(&all);
    let mut range = CompactRange::new();
    let roots: Vec<Hash> = (0..=MAX as usize).map(|n| mth(&all[..n])).collect();
    for n in 1..=MAX {
        let d = &all[..n as usize];
        range.push(d[n as usize - 1]);
        let root = roots[n as usize];
        assert_eq!(range.root(), root, "compact range root at {n}");
        assert_eq!(root_at(&full, n).unwrap(), root, "stored root at {n}");
        // Proof generation reads only nodes inside the prefix, so the full
        // tree serves every prefix.
        for m in 0..n {
            let proof = inclusion_proof(&full, m, n).unwrap();
            assert_eq!(proof, path(m as usize, d), "inclusion {m} in {n}");
            verify_inclusion(m, n, &d[m as usize], &proof, &root).unwrap();
        }
        for old in 1..n {
            let proof = consistency_proof(&full, old, n).unwrap();
            assert_eq!(
                proof,
                subproof(old as usize, d, true),
                "consistency {old} -> {n}"
            );
            verify_consistency(old, n, &proof, &roots[old as usize], &root).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_large_trees(n in 301u64..5000, m_seed in any::<u64>(), old_seed in any::<u64>()) {
        let d = leaves(n);
        let t = tree_of(&d);
        let root = mth(&d);
        prop_assert_eq!(t.root(), root);

        let m = m_seed % n;
        let proof = inclusion_proof(&t, m, n).unwrap();
        prop_assert_eq!(&proof, &path(m as usize, &d));
        prop_assert!(verify_inclusion(m, n, &d[m as usize], &proof, &root).is_ok());

        let old = 1 + old_seed % (n - 1);
        let old_root = mth(&d[..old as usize]);
        let cproof = consistency_proof(&t, old, n).unwrap();
        prop_assert_eq!(&cproof, &subproof(old as usize, &d, true));
        prop_assert!(verify_consistency(old, n, &cproof, &old_root, &root).is_ok());
    }

    /// Any single-bit change to a proof, a leaf, a root or an index is caught.
    #[test]
    fn tampered_proofs_fail(n in 2u64..2000, m_seed in any::<u64>(), flip in any::<(usize, u8)>()) {
        let d = leaves(n);
        let t = tree_of(&d);
        let root = t.root();
        let m = m_seed % n;
        let proof = inclusion_proof(&t, m, n).unwrap();
        let leaf = d[m as usize];
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let i = flip.0 % bad.len();
            bad[i].0[flip.1 as usize % 32] ^= 1 << (flip.1 % 8);
            prop_assert!(verify_inclusion(m, n, &leaf, &bad, &root).is_err());
        }
        let mut bad_leaf = leaf;
        bad_leaf.0[flip.1 as usize % 32] ^= 1;
        prop_assert!(verify_inclusion(m, n, &bad_leaf, &proof, &root).is_err());
        let other = (m + 1 + flip.0 as u64 % (n - 1)) % n;
        prop_assert!(verify_inclusion(other, n, &leaf, &proof, &root).is_err());

        let old = 1 + m_seed % (n - 1);
        let old_root = root_at(&t, old).unwrap();
        let cproof = consistency_proof(&t, old, n).unwrap();
        let mut bad = cproof.clone();
        let i = flip.0 % bad.len();
        bad[i].0[0] ^= 0x10;
        prop_assert!(verify_consistency(old, n, &bad, &old_root, &root).is_err());
        // A forked old tree (different last leaf) is not consistent. When
        // `old` is a power of two its root is the proof's first node, so the
        // mismatch shows up on the new root instead.
        let mut forked = d[..old as usize].to_vec();
        forked[old as usize - 1] = leaf_hash(b"forged");
        let forked_root = mth(&forked);
        let forked_result = verify_consistency(old, n, &cproof, &forked_root, &root);
        let is_mismatch = matches!(
            forked_result,
            Err(ProofError::OldRootMismatch { .. } | ProofError::RootMismatch { .. })
        );
        prop_assert!(is_mismatch, "forked old root gave {:?}", forked_result);
    }
}
