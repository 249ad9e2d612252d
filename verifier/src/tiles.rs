//! C2SP tlog-tiles (`c2sp.org/tlog-tiles`) layout: the tree's hashes are kept
//! in tiles of 256 hashes; a tile at level L holds tree level 8·L. Nodes in
//! between are recomputed from a tile's row. The server stores tiles this way
//! so the same layout can be mirrored to object storage and served statically.

use crate::hash::{Hash, node_hash};
use crate::tree::NodeId;

/// Hashes in a full tile.
pub const TILE_WIDTH: u64 = 256;
/// Tree levels spanned by one tile level.
pub const TILE_HEIGHT: u8 = 8;

/// A tile: level, index along the level, and width (1..=256 hashes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    pub level: u8,
    pub index: u64,
    pub width: u16,
}

/// Where a node's hash comes from: `count` consecutive hashes starting at
/// `offset` in the row of tile (`level`, `index`), folded into a subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileSpan {
    pub level: u8,
    pub index: u64,
    pub offset: usize,
    pub count: usize,
}

/// The tile span of a complete-subtree node.
pub fn span_of(node: NodeId) -> TileSpan {
    let level = node.level / TILE_HEIGHT;
    let sub = node.level % TILE_HEIGHT;
    let start = node.index << sub;
    TileSpan {
        level,
        index: start / TILE_WIDTH,
        offset: (start % TILE_WIDTH) as usize,
        count: 1usize << sub,
    }
}

/// Tile coordinates of the row entry that holds node (tile level, position
/// along tree level 8·L), for nodes whose level is a multiple of 8.
pub fn row_position(node: NodeId) -> Option<(u8, u64, usize)> {
    node.level.is_multiple_of(TILE_HEIGHT).then_some((
        node.level / TILE_HEIGHT,
        node.index / TILE_WIDTH,
        (node.index % TILE_WIDTH) as usize,
    ))
}

/// Root of a complete subtree from its bottom row (a power-of-two count).
pub fn fold_row(row: &[Hash]) -> Hash {
    debug_assert!(row.len().is_power_of_two());
    let mut level: Vec<Hash> = row.to_vec();
    while level.len() > 1 {
        level = level
            .chunks_exact(2)
            .map(|p| node_hash(&p[0], &p[1]))
            .collect();
    }
    level[0]
}

/// The tiles of a tree of `size` leaves, level by level: full tiles then the
/// partial one, if any.
pub fn tiles_of(size: u64) -> Vec<TileId> {
    let mut out = Vec::new();
    let mut level = 0u8;
    loop {
        let hashes = if level == 0 {
            size
        } else {
            size >> (u32::from(level) * u32::from(TILE_HEIGHT))
        };
        if hashes == 0 {
            break;
        }
        for index in 0..hashes / TILE_WIDTH {
            out.push(TileId {
                level,
                index,
                width: TILE_WIDTH as u16,
            });
        }
        let rest = hashes % TILE_WIDTH;
        if rest != 0 {
            out.push(TileId {
                level,
                index: hashes / TILE_WIDTH,
                width: rest as u16,
            });
        }
        level += 1;
    }
    out
}

/// The `<N>` path element: groups of three digits, all but the last with an
/// `x` prefix (`1234067` → `x001/x234/067`).
pub fn index_path(mut n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    n /= 1000;
    while n > 0 {
        groups.push(format!("x{:03}", n % 1000));
        n /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

fn width_suffix(width: u16) -> String {
    if u64::from(width) == TILE_WIDTH {
        String::new()
    } else {
        format!(".p/{width}")
    }
}

/// Path of a hash tile: `tile/<L>/<N>[.p/<W>]`.
pub fn tile_path(tile: TileId) -> String {
    format!(
        "tile/{}/{}{}",
        tile.level,
        index_path(tile.index),
        width_suffix(tile.width)
    )
}

/// Path of an entry bundle: `tile/entries/<N>[.p/<W>]`.
pub fn entries_path(index: u64, width: u16) -> String {
    format!("tile/entries/{}{}", index_path(index), width_suffix(width))
}

/// An object of the tlog-tiles layout, from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TilesObject {
    Checkpoint,
    /// A hash tile.
    Tile(TileId),
    /// An entry bundle: tile index and width.
    Entries(u64, u16),
}

/// Parses a path of the layout (`checkpoint`, `tile/<L>/<N>[.p/<W>]`,
/// `tile/entries/<N>[.p/<W>]`); only the canonical spelling is accepted
/// (levels 0 to 7, widths 1 to 255 for partial tiles).
pub fn parse_path(path: &str) -> Option<TilesObject> {
    if path == "checkpoint" {
        return Some(TilesObject::Checkpoint);
    }
    let rest = path.strip_prefix("tile/")?;
    let (kind, rest) = rest.split_once('/')?;
    let (n, width) = match rest.split_once(".p/") {
        Some((n, w)) => {
            let w: u16 = w.parse().ok()?;
            (n, w)
        }
        None => (rest, TILE_WIDTH as u16),
    };
    if width == 0 || u64::from(width) > TILE_WIDTH {
        return None;
    }
    let mut index: u64 = 0;
    for part in n.split('/') {
        let digits = part.strip_prefix('x').unwrap_or(part);
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        index = index
            .checked_mul(1000)?
            .checked_add(digits.parse::<u64>().ok()?)?;
    }
    let object = if kind == "entries" {
        TilesObject::Entries(index, width)
    } else {
        let level: u8 = kind.parse().ok()?;
        if level >= 8 {
            return None;
        }
        TilesObject::Tile(TileId {
            level,
            index,
            width,
        })
    };
    // Only the canonical spelling (no extra zeros, `x` where it belongs).
    let canonical = match object {
        TilesObject::Tile(t) => tile_path(t),
        TilesObject::Entries(n, w) => entries_path(n, w),
        TilesObject::Checkpoint => unreachable!(),
    };
    (canonical == path).then_some(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;
    use crate::tree::{HashSource, MemoryTree};

    #[test]
    fn paths_follow_the_spec_examples() {
        // Examples from c2sp.org/tlog-tiles.
        assert_eq!(
            tile_path(TileId {
                level: 0,
                index: 1234067,
                width: 256
            }),
            "tile/0/x001/x234/067"
        );
        assert_eq!(
            tile_path(TileId {
                level: 0,
                index: 1234067,
                width: 8
            }),
            "tile/0/x001/x234/067.p/8"
        );
        assert_eq!(
            tile_path(TileId {
                level: 1,
                index: 0,
                width: 256
            }),
            "tile/1/000"
        );
        assert_eq!(entries_path(1234067, 256), "tile/entries/x001/x234/067");
        assert_eq!(entries_path(5, 17), "tile/entries/005.p/17");
    }

    #[test]
    fn paths_parse_back() {
        for t in [
            TileId {
                level: 0,
                index: 1234067,
                width: 256,
            },
            TileId {
                level: 2,
                index: 5,
                width: 17,
            },
            TileId {
                level: 0,
                index: 0,
                width: 1,
            },
        ] {
            assert_eq!(parse_path(&tile_path(t)), Some(TilesObject::Tile(t)));
        }
        assert_eq!(
            parse_path("tile/entries/x001/x234/067.p/8"),
            Some(TilesObject::Entries(1234067, 8))
        );
        assert_eq!(parse_path("checkpoint"), Some(TilesObject::Checkpoint));
        for bad in [
            "tile/0/x000/001",
            "tile/0/1",
            "tile/0/001.p/256",
            "tile/0/001.p/0",
            "tile/8/000",
            "tile/0/001/x002",
            "tile/entries/001.p/",
            "tile/0/001.p/08",
            "tile/../000",
            "checkpoint.5",
        ] {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn tiles_of_a_tree() {
        assert!(tiles_of(0).is_empty());
        assert_eq!(
            tiles_of(3),
            vec![TileId {
                level: 0,
                index: 0,
                width: 3
            }]
        );
        // 65,836 leaves: 257 full level-0 tiles and one of 44; 257 level-8
        // nodes (one full level-1 tile and one of 1); one level-16 node.
        let t = tiles_of(256 * 256 + 300);
        assert_eq!(t.len(), 261);
        assert_eq!(
            t[256],
            TileId {
                level: 0,
                index: 256,
                width: 256
            }
        );
        assert_eq!(
            t[257],
            TileId {
                level: 0,
                index: 257,
                width: 44
            }
        );
        assert_eq!(
            t[258],
            TileId {
                level: 1,
                index: 0,
                width: 256
            }
        );
        assert_eq!(
            t[259],
            TileId {
                level: 1,
                index: 1,
                width: 1
            }
        );
        assert_eq!(
            t[260],
            TileId {
                level: 2,
                index: 0,
                width: 1
            }
        );
    }

    #[test]
    fn nodes_fold_from_tile_rows() {
        let mut tree = MemoryTree::new();
        for i in 0..2048u32 {
            tree.push(leaf_hash(&i.to_be_bytes()));
        }
        // The rows tiles store: tree level 0 and tree level 8.
        let rows: Vec<Vec<Hash>> = [0u8, 8]
            .iter()
            .map(|&l| {
                tree.nodes(
                    &(0..2048u64 >> l)
                        .map(|i| NodeId::new(l, i))
                        .collect::<Vec<_>>(),
                )
                .unwrap()
            })
            .collect();
        for node in [
            NodeId::new(0, 5),
            NodeId::new(3, 40),
            NodeId::new(7, 15),
            NodeId::new(8, 3),
            NodeId::new(10, 1),
        ] {
            let span = span_of(node);
            assert_eq!(span.level, node.level / 8);
            let want = tree.nodes(&[node]).unwrap()[0];
            let start = (span.index * TILE_WIDTH) as usize + span.offset;
            let row = &rows[span.level as usize];
            assert_eq!(fold_row(&row[start..start + span.count]), want, "{node:?}");
        }
        assert_eq!(row_position(NodeId::new(8, 300)), Some((1, 1, 44)));
        assert_eq!(row_position(NodeId::new(9, 3)), None);
    }
}
