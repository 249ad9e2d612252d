//! A bundle file taken apart into its items, to alter and write back: the
//! tamper tests and the tamper fuzzer build their altered files with it.

use ledger_verify::NoteVerifier;
use ledger_verify::audit::{AuditReport, audit_bundle};
use ledger_verify::bundle::{BundleReader, BundleWriter};
use ledger_verify::proto::{BundleEnd, BundleHeader, BundleItem, EntryRecord, bundle_item::Item};
use prost::Message;

/// A bundle as items: the header, the body in file order (entries,
/// checkpoints, redaction proofs), and the end marker as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Items {
    pub header: BundleHeader,
    pub body: Vec<Item>,
    pub end: Option<BundleEnd>,
}

impl Items {
    /// Parses a well-formed bundle (panics otherwise: for test inputs).
    pub fn parse(bytes: &[u8]) -> Items {
        Items::try_parse(bytes).expect("a well-formed bundle")
    }

    /// Parses a bundle, or says why it is not one.
    pub fn try_parse(bytes: &[u8]) -> Result<Items, String> {
        let mut r = BundleReader::new(bytes).map_err(|e| e.to_string())?;
        let Some(Item::Header(header)) = r.next_item().map_err(|e| e.to_string())? else {
            return Err("no header".into());
        };
        let mut body = Vec::new();
        let mut end = None;
        while let Some(item) = r.next_item().map_err(|e| e.to_string())? {
            match item {
                Item::End(e) => end = Some(e),
                other => body.push(other),
            }
        }
        Ok(Items { header, body, end })
    }

    /// The file, with an end marker that counts the items truly.
    pub fn bytes(&self) -> Vec<u8> {
        let mut w = BundleWriter::new(Vec::new(), self.header.clone()).unwrap();
        for item in &self.body {
            match item {
                Item::Entry(e) => w.entry(e.clone()).unwrap(),
                Item::Checkpoint(c) => w.checkpoint(c.clone()).unwrap(),
                Item::RedactionProof(p) => w.redaction_proof(p.clone()).unwrap(),
                Item::Header(_) | Item::End(_) => {
                    let mut out = std::mem::take(w.get_mut());
                    out.extend(raw_item(item.clone()));
                    *w.get_mut() = out;
                }
            }
        }
        w.finish().unwrap()
    }

    /// The file with the end marker given (or none), as is.
    pub fn bytes_with_end(&self, end: Option<BundleEnd>) -> Vec<u8> {
        let mut out = ledger_verify::bundle::MAGIC.to_vec();
        out.extend(raw_item(Item::Header(self.header.clone())));
        for item in &self.body {
            out.extend(raw_item(item.clone()));
        }
        if let Some(end) = end {
            out.extend(raw_item(Item::End(end)));
        }
        out
    }

    /// Position in `body` of entry `index`.
    pub fn at(&self, index: u64) -> usize {
        self.body
            .iter()
            .position(|i| matches!(i, Item::Entry(e) if e.index == index))
            .unwrap_or_else(|| panic!("no entry {index}"))
    }

    pub fn entry_mut(&mut self, index: u64) -> &mut EntryRecord {
        let p = self.at(index);
        match &mut self.body[p] {
            Item::Entry(e) => e,
            _ => unreachable!(),
        }
    }

    /// Positions in `body` of the checkpoints, with their sizes.
    pub fn checkpoints(&self) -> Vec<(usize, u64)> {
        self.body
            .iter()
            .enumerate()
            .filter_map(|(p, i)| match i {
                Item::Checkpoint(c) => Some((p, c.tree_size)),
                _ => None,
            })
            .collect()
    }

    pub fn audit(&self, key: &NoteVerifier) -> AuditReport {
        audit_bundle(self.bytes().as_slice(), key, |_, _| {}).unwrap()
    }
}

/// One item with its varint length prefix.
pub fn raw_item(item: Item) -> Vec<u8> {
    BundleItem { item: Some(item) }.encode_length_delimited_to_vec()
}

/// Asserts the first finding of a report is `kind` at `index`.
pub fn assert_first(
    r: &AuditReport,
    kind: ledger_verify::audit::TamperKind,
    index: u64,
    case: &str,
) {
    let f = r
        .first()
        .unwrap_or_else(|| panic!("{case}: not detected; report {r:#?}"));
    assert_eq!(
        (f.kind, f.index),
        (kind, index),
        "{case}: {:#?}",
        r.findings
    );
}
