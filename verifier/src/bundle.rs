//! Export bundles: a self-contained file of a range of a log (entries,
//! payloads with their salts, stored checkpoints, the prefix of the tree
//! before the range) that an auditor checks offline.
//!
//! File: the line `agent-ledger-bundle v1\n`, then [`BundleItem`] messages
//! each prefixed by its length as a protobuf varint: a header, entries in
//! index order interleaved with checkpoints, and an end marker (a file
//! without it was cut short). See `docs/export-format.md`.

use crate::proto::{
    BundleEnd, BundleHeader, BundleItem, EntryRecord, RedactionProof, SignedCheckpoint, bundle_item,
};
use prost::Message;
use std::io::{self, BufRead, Write};

/// The first line of every bundle file.
pub const MAGIC: &[u8] = b"agent-ledger-bundle v1\n";
/// Largest item a reader accepts (an entry with a large payload fits).
pub const MAX_ITEM: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not an Agent Ledger bundle (bad magic line)")]
    Magic,
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("item {item} is malformed: {reason}")]
    Malformed { item: u64, reason: String },
    #[error("the file ends after {items} items without an end marker: it was cut short")]
    Truncated { items: u64 },
}

/// Writes a bundle item by item, counting what the end marker states.
pub struct BundleWriter<W: Write> {
    out: W,
    entries: u64,
    checkpoints: u64,
    redaction_proofs: u64,
}

impl<W: Write> BundleWriter<W> {
    pub fn new(mut out: W, header: BundleHeader) -> io::Result<BundleWriter<W>> {
        out.write_all(MAGIC)?;
        let mut w = BundleWriter {
            out,
            entries: 0,
            checkpoints: 0,
            redaction_proofs: 0,
        };
        w.item(bundle_item::Item::Header(header))?;
        Ok(w)
    }

    fn item(&mut self, item: bundle_item::Item) -> io::Result<()> {
        let msg = BundleItem { item: Some(item) };
        self.out.write_all(&msg.encode_length_delimited_to_vec())
    }

    pub fn entry(&mut self, e: EntryRecord) -> io::Result<()> {
        self.entries += 1;
        self.item(bundle_item::Item::Entry(e))
    }

    pub fn checkpoint(&mut self, c: SignedCheckpoint) -> io::Result<()> {
        self.checkpoints += 1;
        self.item(bundle_item::Item::Checkpoint(c))
    }

    /// Evidence of a redaction outside the range; after every entry and
    /// checkpoint.
    pub fn redaction_proof(&mut self, p: RedactionProof) -> io::Result<()> {
        self.redaction_proofs += 1;
        self.item(bundle_item::Item::RedactionProof(p))
    }

    /// Writes the end marker and hands back the output.
    pub fn finish(mut self) -> io::Result<W> {
        let end = BundleEnd {
            entries: self.entries,
            checkpoints: self.checkpoints,
            redaction_proofs: self.redaction_proofs,
        };
        self.item(bundle_item::Item::End(end))?;
        self.out.flush()?;
        Ok(self.out)
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }
}

/// Reads a bundle item by item.
pub struct BundleReader<R: BufRead> {
    input: R,
    items: u64,
    ended: bool,
    buf: Vec<u8>,
}

impl<R: BufRead> BundleReader<R> {
    pub fn new(mut input: R) -> Result<BundleReader<R>, BundleError> {
        let mut magic = vec![0u8; MAGIC.len()];
        input.read_exact(&mut magic).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => BundleError::Magic,
            _ => BundleError::Io(e),
        })?;
        if magic != MAGIC {
            return Err(BundleError::Magic);
        }
        Ok(BundleReader {
            input,
            items: 0,
            ended: false,
            buf: Vec::new(),
        })
    }

    /// Items read so far.
    pub fn items(&self) -> u64 {
        self.items
    }

    fn read_varint(&mut self) -> Result<Option<u64>, BundleError> {
        let mut v = 0u64;
        for i in 0..10 {
            let mut b = [0u8; 1];
            match self.input.read(&mut b)? {
                0 if i == 0 => return Ok(None),
                0 => return Err(BundleError::Truncated { items: self.items }),
                _ => {}
            }
            v |= u64::from(b[0] & 0x7f) << (7 * i);
            if b[0] & 0x80 == 0 {
                return Ok(Some(v));
            }
        }
        Err(BundleError::Malformed {
            item: self.items,
            reason: "length varint too long".into(),
        })
    }

    /// The next item; `Ok(None)` after the end marker, if nothing follows
    /// it (anything after it is malformed: a complete bundle ends there).
    pub fn next_item(&mut self) -> Result<Option<bundle_item::Item>, BundleError> {
        if self.ended {
            return if self.input.fill_buf()?.is_empty() {
                Ok(None)
            } else {
                Err(BundleError::Malformed {
                    item: self.items,
                    reason: "data follows the end marker".into(),
                })
            };
        }
        let Some(len) = self.read_varint()? else {
            return Err(BundleError::Truncated { items: self.items });
        };
        if len as usize > MAX_ITEM {
            return Err(BundleError::Malformed {
                item: self.items,
                reason: format!("length {len} exceeds {MAX_ITEM}"),
            });
        }
        self.buf.resize(len as usize, 0);
        self.input
            .read_exact(&mut self.buf)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => BundleError::Truncated { items: self.items },
                _ => BundleError::Io(e),
            })?;
        let item = BundleItem::decode(self.buf.as_slice())
            .map_err(|e| BundleError::Malformed {
                item: self.items,
                reason: e.to_string(),
            })?
            .item
            .ok_or_else(|| BundleError::Malformed {
                item: self.items,
                reason: "empty item".into(),
            })?;
        self.items += 1;
        if matches!(item, bundle_item::Item::End(_)) {
            self.ended = true;
        }
        Ok(Some(item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let header = BundleHeader {
            origin: "o".into(),
            start: 0,
            end: 2,
            ..Default::default()
        };
        let mut w = BundleWriter::new(Vec::new(), header.clone()).unwrap();
        for i in 0..2 {
            w.entry(EntryRecord {
                index: i,
                entry: vec![i as u8; 300],
                ..Default::default()
            })
            .unwrap();
        }
        w.checkpoint(SignedCheckpoint {
            tree_size: 2,
            ..Default::default()
        })
        .unwrap();
        let bytes = w.finish().unwrap();

        let mut r = BundleReader::new(bytes.as_slice()).unwrap();
        assert_eq!(
            r.next_item().unwrap(),
            Some(bundle_item::Item::Header(header))
        );
        let mut kinds = Vec::new();
        while let Some(item) = r.next_item().unwrap() {
            kinds.push(match item {
                bundle_item::Item::Entry(e) => format!("e{}", e.index),
                bundle_item::Item::Checkpoint(c) => format!("c{}", c.tree_size),
                bundle_item::Item::End(e) => format!("end{}/{}", e.entries, e.checkpoints),
                bundle_item::Item::Header(_) => "h".into(),
                bundle_item::Item::RedactionProof(p) => format!("r{}", p.index),
            });
        }
        assert_eq!(kinds, ["e0", "e1", "c2", "end2/1"]);
        assert_eq!(r.items(), 5);

        // Every cut short of the whole file is reported as truncation.
        for cut in MAGIC.len()..bytes.len() {
            let mut r = BundleReader::new(&bytes[..cut]).unwrap();
            let err = loop {
                match r.next_item() {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("cut at {cut} read as complete"),
                    Err(e) => break e,
                }
            };
            assert!(
                matches!(err, BundleError::Truncated { .. }),
                "cut {cut}: {err}"
            );
        }
        assert!(matches!(
            BundleReader::new(&b"nope"[..]),
            Err(BundleError::Magic)
        ));

        // Anything after the end marker is refused.
        let mut extra = bytes.clone();
        extra.push(0);
        let mut r = BundleReader::new(extra.as_slice()).unwrap();
        let err = loop {
            match r.next_item() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("trailing byte accepted"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, BundleError::Malformed { .. }), "{err}");
    }
}
