//! RocksDB storage of one log: entries, payloads, hash tiles, query indexes,
//! checkpoints and the dedup table, one column family per concern. Everything
//! a commit group changes goes into one `WriteBatch` written with `sync`, so a
//! group is durable and atomic before anyone is told about it.

use ledger_verify::hash::Hash;
use ledger_verify::tiles::{self, TILE_WIDTH};
use ledger_verify::tree::{HashSource, NodeId};
use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions,
};
use std::path::Path;
use std::sync::Arc;

/// Column families.
pub mod cf {
    /// index (u64 BE) → stored LedgerEntry bytes.
    pub const ENTRIES: &str = "entries";
    /// index → salt (32 bytes) ‖ payload.
    pub const PAYLOADS: &str = "payloads";
    /// tile level (u8) ‖ tile index (u64 BE) → hashes (32 bytes each).
    pub const TILES: &str = "tiles";
    /// correlation id (16 bytes) ‖ index.
    pub const BY_CORRELATION: &str = "idx_correlation";
    /// agent id ‖ 0x00 ‖ index.
    pub const BY_AGENT: &str = "idx_agent";
    /// principal ‖ 0x00 ‖ index.
    pub const BY_PRINCIPAL: &str = "idx_principal";
    /// tool name ‖ 0x00 ‖ index.
    pub const BY_TOOL: &str = "idx_tool";
    /// occurred_at (u64 BE, nanoseconds since the epoch) ‖ index.
    pub const BY_TIME: &str = "idx_time";
    /// event id → index.
    pub const DEDUP: &str = "dedup";
    /// tree size (u64 BE) → signed checkpoint note.
    pub const CHECKPOINTS: &str = "checkpoints";
    /// Small named values: see `meta`.
    pub const META: &str = "meta";

    /// The record database's column families.
    pub const RECORD: [&str; 6] = [ENTRIES, PAYLOADS, TILES, DEDUP, CHECKPOINTS, META];
    /// The index database's (with its own META for the indexer's progress).
    pub const INDEXES: [&str; 5] = [BY_CORRELATION, BY_AGENT, BY_PRINCIPAL, BY_TOOL, BY_TIME];
}

/// Keys in the `meta` column family.
mod meta {
    /// Number of entries committed (u64 BE).
    pub const TREE_SIZE: &[u8] = b"tree_size";
    /// Tree size of the latest checkpoint written to the anchor store.
    pub const ANCHORED_SIZE: &[u8] = b"anchored_size";
    /// Tree size of the latest checkpoint published to the mirror.
    pub const MIRRORED_SIZE: &[u8] = b"mirrored_size";
    /// Entries the indexer has indexed (u64 BE), in the index database's
    /// meta column. Absent: none (a new store, or one from before the index
    /// database existed, which is indexed again from its entries).
    pub const INDEXED_SIZE: &[u8] = b"indexed_size";
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("store is inconsistent: {0}")]
    Corrupt(String),
    /// A failure injected by a test (see `Store::fail_commits`).
    #[cfg(test)]
    #[error("injected commit failure")]
    Injected,
}

pub type Result<T> = std::result::Result<T, StoreError>;
/// A key and its value, as read from a column family.
pub type KeyValue = (Box<[u8]>, Box<[u8]>);

/// Read options for an iterator over the keys in `[lower, upper)`.
fn bounded(lower: &[u8], upper: &[u8]) -> rocksdb::ReadOptions {
    let mut ro = rocksdb::ReadOptions::default();
    ro.set_iterate_lower_bound(lower.to_vec());
    ro.set_iterate_upper_bound(upper.to_vec());
    ro
}

/// Big-endian u64, so keys sort numerically.
pub fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// What the dedup column keeps per event id: the entry's index and the
/// digest of the event as received (SHA-256 of its canonical protobuf
/// encoding, payload included), so a retry can be told from a different
/// event under a reused id. Records written before digests were kept hold
/// the index alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupRecord {
    pub index: u64,
    pub digest: Option<Hash>,
}

impl DedupRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = be(self.index).to_vec();
        if let Some(d) = &self.digest {
            v.extend_from_slice(d.as_bytes());
        }
        v
    }

    pub fn decode(v: &[u8]) -> Result<DedupRecord> {
        let corrupt = || StoreError::Corrupt(format!("dedup record of {} bytes", v.len()));
        let index = read_be(v.get(..8).ok_or_else(corrupt)?).ok_or_else(corrupt)?;
        let digest = match v.len() {
            8 => None,
            40 => Hash::from_slice(&v[8..]),
            _ => return Err(corrupt()),
        };
        Ok(DedupRecord { index, digest })
    }
}

fn read_be(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// The index in a key of the entries or payloads column family.
pub fn read_index_key(key: &[u8]) -> Result<u64> {
    read_be(key).ok_or_else(|| StoreError::Corrupt(format!("entry key of {} bytes", key.len())))
}

fn tile_key(level: u8, index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = level;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// What the five query indexes key an event by, taken out of the event by
/// the gRPC worker that decoded it: the sequencer and the indexer then hold
/// (and free) these few fields instead of the whole event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexValues {
    /// The correlation (trace) id, when it is the 32 hex digits of one.
    pub correlation: Option<[u8; 16]>,
    pub agent: String,
    pub principal: String,
    pub tool: String,
    /// `occurred_at` in nanoseconds since the epoch.
    pub occurred_nanos: u64,
}

impl IndexValues {
    /// Takes the indexed fields out of `event`, leaving them empty there.
    pub fn take(event: &mut ledger_proto::v1::AuditEvent) -> IndexValues {
        let mut correlation = [0u8; 16];
        IndexValues {
            correlation: hex::decode_to_slice(&event.correlation_id, &mut correlation)
                .ok()
                .map(|()| correlation),
            agent: std::mem::take(&mut event.agent_id),
            principal: std::mem::take(&mut event.principal),
            tool: std::mem::take(&mut event.tool_name),
            occurred_nanos: crate::validate::occurred_nanos(event),
        }
    }
}

/// Keys built one after the other into one buffer, sorted in place.
#[derive(Default)]
struct KeyRun {
    bytes: Vec<u8>,
    /// Each key's range in `bytes`.
    spans: Vec<std::ops::Range<usize>>,
}

impl KeyRun {
    /// Adds the key made of `parts`, in order.
    fn push(&mut self, parts: &[&[u8]]) {
        let start = self.bytes.len();
        for p in parts {
            self.bytes.extend_from_slice(p);
        }
        self.spans.push(start..self.bytes.len());
    }

    fn sort(&mut self) {
        let bytes = &self.bytes;
        self.spans
            .sort_unstable_by(|a, b| bytes[a.clone()].cmp(&bytes[b.clone()]));
    }

    fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.spans.iter().map(|s| &self.bytes[s.clone()])
    }
}

/// What a query can walk: one of the five indexes with a value, or the
/// entries themselves. [`IndexScan::bounds`] gives the column family and key
/// range; every key in it ends with the entry's index (see
/// [`index_of_key`]).
#[derive(Debug, Clone, Copy)]
pub enum IndexScan<'a> {
    Correlation(&'a [u8; 16]),
    Agent(&'a str),
    Principal(&'a str),
    Tool(&'a str),
    /// occurred_at in `[from, to)`, nanoseconds since the epoch.
    Time {
        from: u64,
        to: u64,
    },
    /// Every entry, below tree size `below`.
    Entries {
        below: u64,
    },
}

impl IndexScan<'_> {
    /// Column family, inclusive lower and exclusive upper key bound.
    pub fn bounds(&self) -> (&'static str, Vec<u8>, Vec<u8>) {
        let value = |name, v: &str| {
            let mut lower = v.as_bytes().to_vec();
            lower.push(0);
            let mut upper = v.as_bytes().to_vec();
            upper.push(1);
            (name, lower, upper)
        };
        match *self {
            IndexScan::Correlation(c) => {
                let mut upper = c.to_vec();
                upper.extend_from_slice(&[0xff; 9]);
                (cf::BY_CORRELATION, c.to_vec(), upper)
            }
            IndexScan::Agent(a) => value(cf::BY_AGENT, a),
            IndexScan::Principal(p) => value(cf::BY_PRINCIPAL, p),
            IndexScan::Tool(t) => value(cf::BY_TOOL, t),
            IndexScan::Time { from, to } => (cf::BY_TIME, be(from).to_vec(), be(to).to_vec()),
            IndexScan::Entries { below } => (cf::ENTRIES, Vec::new(), be(below).to_vec()),
        }
    }
}

/// The entry index a key of an index (or of the entries) points at: its
/// last 8 bytes.
pub fn index_of_key(key: &[u8]) -> Option<u64> {
    let n = key.len();
    read_be(key.get(n.checked_sub(8)?..)?)
}

/// One entry as [`StoreWriter::stage_entry`] takes it.
pub struct StagedEntry<'a> {
    pub index: u64,
    /// The encoded `LedgerEntry`, stored and hashed as is.
    pub bytes: &'a [u8],
    /// The event id it answers to (`#redact/<target>` for a redaction).
    pub dedup_id: &'a str,
    /// Digest of what was asked for, kept for telling retries apart (None:
    /// not known, as for an entry restored without its redacted payload).
    pub digest: Option<Hash>,
    /// Salt and payload, when the event had one.
    pub payload: Option<(&'a [u8], &'a [u8])>,
}

/// Opens (creating if needed) the index database: the five index columns
/// and a meta column, flushed atomically (its writes have no WAL).
fn open_index(path: &Path, env: &rocksdb::Env) -> Result<DB> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_atomic_flush(true);
    opts.set_max_background_jobs(2);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    opts.set_env(env);
    let descriptors = cf::INDEXES.iter().chain([&cf::META]).map(|name| {
        let mut o = Options::default();
        o.set_write_buffer_size(16 << 20);
        o.set_compression_type(rocksdb::DBCompressionType::Lz4);
        ColumnFamilyDescriptor::new(*name, o)
    });
    Ok(DB::open_cf_descriptors(&opts, path, descriptors)?)
}

/// One log's RocksDB databases: the record (entries, payloads, tiles,
/// dedup, checkpoints, meta) in `<dir>/db`, and the five query indexes with
/// the indexer's progress in `<dir>/index`. The index database is written
/// without a WAL (and flushed atomically): it can always be rebuilt from
/// the entries, and its writes never queue behind, or in front of, the
/// sequencer's synced commits.
pub struct Store {
    db: DB,
    index: DB,
    /// Test hook: this many commits fail before writing anything, as a
    /// full disk or an I/O error would.
    #[cfg(test)]
    pub(crate) fail_commits: std::sync::atomic::AtomicU32,
    /// Test hook: this many syncs of the write-ahead log fail (after the
    /// writes before them were applied), as an fsync error would.
    #[cfg(test)]
    pub(crate) fail_syncs: std::sync::atomic::AtomicU32,
}

/// A test's fault hook: fails (and counts down) while `left` is positive.
#[cfg(test)]
fn injected(left: &std::sync::atomic::AtomicU32) -> Result<()> {
    use std::sync::atomic::Ordering::SeqCst;
    match left.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)) {
        Ok(_) => Err(StoreError::Injected),
        Err(_) => Ok(()),
    }
}

/// The writes of one commit group, applied atomically by [`Store::commit`].
pub struct CommitBatch {
    batch: WriteBatch,
}

impl Store {
    /// Opens (creating if needed) the record database at `path` and the
    /// index database beside it (`../index`).
    pub fn open(path: &Path) -> Result<Store> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        // Two flush threads (and one for compactions), not the one RocksDB
        // derives from two jobs: at full ingest the niced flush falls
        // behind and RocksDB stops every write while it catches up; with
        // two, a small column's flush no longer waits behind a large one.
        // The setting is deprecated in favour of `max_background_jobs`, but
        // RocksDB still honours it, and no job count gives two flushes
        // without six compactions.
        #[allow(deprecated)]
        opts.set_max_background_flushes(2);
        opts.set_bytes_per_sync(1 << 20);
        // Appends arrive in key order in most column families; larger memtables
        // mean fewer, bigger flushes under load.
        opts.set_write_buffer_size(64 << 20);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Flushes and compactions run niced: on a small machine a 64 MiB
        // memtable flush otherwise takes a core away from the sequencer and
        // the gRPC threads for a few hundred milliseconds, and acks wait.
        // At full ingest the flushes fall behind and RocksDB stops writes
        // now and then while they catch up; flushing at normal priority and
        // more memtables were measured and did not help (docs/design.md).
        let mut env = rocksdb::Env::new()?;
        env.lower_thread_pool_cpu_priority();
        env.lower_high_priority_thread_pool_cpu_priority();
        env.lower_thread_pool_io_priority();
        opts.set_env(&env);

        // Stores from before the index database keep their old index
        // columns here; they are opened (RocksDB requires it) and unused.
        let existing = DB::list_cf(&opts, path).unwrap_or_default();
        let names: Vec<String> = cf::RECORD
            .iter()
            .map(|n| n.to_string())
            .chain(
                existing
                    .into_iter()
                    .filter(|n| n != "default" && !cf::RECORD.contains(&n.as_str())),
            )
            .collect();
        let descriptors = names.iter().map(|name| {
            let name = &name.as_str();
            let mut o = Options::default();
            o.set_write_buffer_size(if *name == cf::ENTRIES || *name == cf::PAYLOADS {
                64 << 20
            } else {
                16 << 20
            });
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            if *name == cf::DEDUP {
                // Point look-ups for every append: a bloom filter makes the
                // common miss cheap.
                let mut b = BlockBasedOptions::default();
                b.set_bloom_filter(10.0, false);
                o.set_block_based_table_factory(&b);
                // And in the memtable, where most look-ups of a busy log
                // land: a miss skips the skip-list search.
                o.set_memtable_prefix_bloom_ratio(0.1);
                o.set_memtable_whole_key_filtering(true);
            }
            ColumnFamilyDescriptor::new(*name, o)
        });
        let db = DB::open_cf_descriptors(&opts, path, descriptors)?;
        let index = open_index(&path.with_file_name("index"), &env)?;
        Ok(Store {
            db,
            index,
            #[cfg(test)]
            fail_commits: Default::default(),
            #[cfg(test)]
            fail_syncs: Default::default(),
        })
    }

    /// The database a column family lives in.
    fn db_of(&self, name: &str) -> &DB {
        if cf::INDEXES.contains(&name) {
            &self.index
        } else {
            &self.db
        }
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        // Every name in cf::RECORD is created at open, the indexes in the
        // index database.
        self.db_of(name)
            .cf_handle(name)
            .expect("column family created at open")
    }

    /// The index database's meta column (the indexer's progress).
    fn index_meta(&self) -> &rocksdb::ColumnFamily {
        self.index
            .cf_handle(cf::META)
            .expect("column family created at open")
    }

    /// Committed entries.
    pub fn tree_size(&self) -> Result<u64> {
        match self.db.get_cf(self.cf(cf::META), meta::TREE_SIZE)? {
            None => Ok(0),
            Some(v) => {
                read_be(&v).ok_or_else(|| StoreError::Corrupt("tree_size is not 8 bytes".into()))
            }
        }
    }

    /// Entries indexed so far (see `meta::INDEXED_SIZE`).
    pub fn indexed_size(&self) -> Result<u64> {
        match self.index.get_cf(self.index_meta(), meta::INDEXED_SIZE)? {
            None => Ok(0),
            Some(v) => read_be(&v).ok_or_else(|| StoreError::Corrupt("indexed_size".into())),
        }
    }

    /// Tree size of the latest anchored checkpoint (0: none yet).
    pub fn anchored_size(&self) -> Result<u64> {
        self.meta_size(meta::ANCHORED_SIZE, "anchored_size")
    }

    /// Tree size of the latest checkpoint published to the mirror (0: none).
    pub fn mirrored_size(&self) -> Result<u64> {
        self.meta_size(meta::MIRRORED_SIZE, "mirrored_size")
    }

    fn meta_size(&self, key: &[u8], name: &str) -> Result<u64> {
        match self.db.get_cf(self.cf(cf::META), key)? {
            None => Ok(0),
            Some(v) => read_be(&v).ok_or_else(|| StoreError::Corrupt(name.into())),
        }
    }

    pub fn entry(&self, index: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(cf::ENTRIES), be(index))?)
    }

    /// When entry `index` was integrated, if it is stored (and decodes).
    pub fn integrated_at(&self, index: u64) -> Result<Option<std::time::SystemTime>> {
        Ok(self
            .entry(index)?
            .and_then(|b| ledger_verify::entry::decode_entry(&b).ok())
            .and_then(|e| std::time::SystemTime::try_from(e.integrated_at?).ok()))
    }

    /// Salt and payload of an entry, if stored.
    pub fn payload(&self, index: u64) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .db
            .get_cf(self.cf(cf::PAYLOADS), be(index))?
            .and_then(|mut v| {
                if v.len() < 32 {
                    return None;
                }
                let payload = v.split_off(32);
                Some((v, payload))
            }))
    }

    /// Index of an already appended event id.
    pub fn dedup(&self, event_id: &str) -> Result<Option<u64>> {
        match self.db.get_cf(self.cf(cf::DEDUP), event_id.as_bytes())? {
            None => Ok(None),
            Some(v) => DedupRecord::decode(&v).map(|r| Some(r.index)),
        }
    }

    /// Looks up many event ids at once.
    pub fn dedup_many(&self, event_ids: &[&str]) -> Result<Vec<Option<DedupRecord>>> {
        let cf = self.cf(cf::DEDUP);
        self.db
            .multi_get_cf(event_ids.iter().map(|id| (cf, id.as_bytes())))
            .into_iter()
            .map(|r| r?.map(|v| DedupRecord::decode(&v)).transpose())
            .collect()
    }

    /// The row of tile (level, index) as stored: its hashes so far.
    pub fn tile(&self, level: u8, index: u64) -> Result<Vec<Hash>> {
        let v = self
            .db
            .get_cf(self.cf(cf::TILES), tile_key(level, index))?
            .unwrap_or_default();
        if v.len() % 32 != 0 || v.len() as u64 > TILE_WIDTH * 32 {
            return Err(StoreError::Corrupt(format!(
                "tile {level}/{index} has {} bytes",
                v.len()
            )));
        }
        // chunks_exact(32) yields 32-byte slices.
        Ok(v.chunks_exact(32)
            .map(|c| Hash::from_slice(c).expect("32 bytes"))
            .collect())
    }

    /// The latest stored checkpoint: (tree size, signed note).
    pub fn latest_checkpoint(&self) -> Result<Option<(u64, String)>> {
        let mut it = self
            .db
            .iterator_cf(self.cf(cf::CHECKPOINTS), IteratorMode::End);
        match it.next() {
            None => Ok(None),
            Some(kv) => {
                let (k, v) = kv?;
                let size =
                    read_be(&k).ok_or_else(|| StoreError::Corrupt("checkpoint key".into()))?;
                let note = String::from_utf8(v.to_vec())
                    .map_err(|_| StoreError::Corrupt(format!("checkpoint {size} is not UTF-8")))?;
                Ok(Some((size, note)))
            }
        }
    }

    /// The stored checkpoint of exactly `size` entries.
    pub fn checkpoint(&self, size: u64) -> Result<Option<String>> {
        Ok(self
            .db
            .get_cf(self.cf(cf::CHECKPOINTS), be(size))?
            .and_then(|v| String::from_utf8(v).ok()))
    }

    /// Keys and values of `cf_name` in `[lower, upper)`, ascending or
    /// descending, starting just past `after` when given.
    pub fn scan<'a>(
        &'a self,
        cf_name: &str,
        lower: &[u8],
        upper: &[u8],
        after: Option<&[u8]>,
        descending: bool,
    ) -> impl Iterator<Item = Result<KeyValue>> + 'a {
        let ro = bounded(lower, upper);
        let mode = match (after, descending) {
            (None, false) => IteratorMode::Start,
            (None, true) => IteratorMode::End,
            (Some(k), false) => IteratorMode::From(k, Direction::Forward),
            (Some(k), true) => IteratorMode::From(k, Direction::Reverse),
        };
        let skip: Option<Box<[u8]>> = after.map(Into::into);
        self.db_of(cf_name)
            .iterator_cf_opt(self.cf(cf_name), ro, mode)
            .map(|kv| kv.map_err(StoreError::from))
            // `From` lands on `after` itself when it exists: skip it.
            .skip_while(move |kv| matches!((kv, &skip), (Ok((k, _)), Some(s)) if k == s))
    }

    /// Calls `f` with each key and value of `cf_name` in `[lower, upper)`,
    /// ascending, borrowed from RocksDB's iterator (no copy).
    fn visit(
        &self,
        cf_name: &str,
        lower: &[u8],
        upper: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut it = self
            .db_of(cf_name)
            .raw_iterator_cf_opt(self.cf(cf_name), bounded(lower, upper));
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            f(k, v)?;
            it.next();
        }
        Ok(it.status()?)
    }

    /// Calls `f` with each entry of `[start, end)` in order, with its index,
    /// borrowed from the store; a hole is corruption.
    pub fn visit_entries(
        &self,
        start: u64,
        end: u64,
        mut f: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut want = start;
        self.visit(cf::ENTRIES, &be(start), &be(end), |k, v| {
            let index = read_index_key(k)?;
            if index != want {
                return Err(StoreError::Corrupt(format!(
                    "entry {want} is missing from the store"
                )));
            }
            want += 1;
            f(index, v)
        })?;
        if want < end {
            return Err(StoreError::Corrupt(format!(
                "entry {want} is missing from the store"
            )));
        }
        Ok(())
    }

    /// Entries `[start, end)` in order, with their indexes; a hole is
    /// corruption.
    pub fn entries_range(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::with_capacity(end.saturating_sub(start) as usize);
        self.visit_entries(start, end, |i, e| {
            out.push((i, e.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` with the index, salt and payload of each entry in
    /// `[start, end)` that has a payload stored, in order, borrowed from
    /// the store (one range scan, for the mirror's payload bundles).
    pub fn visit_payloads(
        &self,
        start: u64,
        end: u64,
        mut f: impl FnMut(u64, &[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.visit(cf::PAYLOADS, &be(start), &be(end), |k, v| {
            let index = read_index_key(k)?;
            if v.len() < 32 {
                return Err(StoreError::Corrupt(format!(
                    "payload {index} is shorter than its salt"
                )));
            }
            let (salt, payload) = v.split_at(32);
            f(index, salt, payload)
        })
    }

    /// Stored checkpoints with sizes in `[from, to]`, ascending.
    pub fn checkpoints_between(&self, from: u64, to: u64) -> Result<Vec<(u64, String)>> {
        self.scan(
            cf::CHECKPOINTS,
            &be(from),
            &be(to.saturating_add(1)),
            None,
            false,
        )
        .map(|kv| {
            let (k, v) = kv?;
            let size = read_index_key(&k)?;
            let note = String::from_utf8(v.to_vec())
                .map_err(|_| StoreError::Corrupt(format!("checkpoint {size} is not UTF-8")))?;
            Ok((size, note))
        })
        .collect()
    }

    /// Size of the first stored checkpoint at or after `size`.
    pub fn first_checkpoint_from(&self, size: u64) -> Result<Option<u64>> {
        match self
            .scan(cf::CHECKPOINTS, &be(size), &[0xff; 9], None, false)
            .next()
        {
            None => Ok(None),
            Some(kv) => read_index_key(&kv?.0).map(Some),
        }
    }

    /// Stored entries of many indexes at once (None where absent).
    pub fn entries(&self, indexes: &[u64]) -> Result<Vec<Option<Vec<u8>>>> {
        let cf = self.cf(cf::ENTRIES);
        let keys: Vec<[u8; 8]> = indexes.iter().map(|i| be(*i)).collect();
        self.db
            .batched_multi_get_cf(cf, &keys, true)
            .into_iter()
            .map(|r| Ok(r?.map(|v| v.to_vec())))
            .collect()
    }

    /// Indexes (ascending) under a secondary-index prefix, from `start`.
    pub fn scan_index(
        &self,
        cf_name: &str,
        prefix: &[u8],
        start: u64,
        limit: usize,
    ) -> Result<Vec<u64>> {
        let mut from = prefix.to_vec();
        from.extend_from_slice(&be(start));
        let it = self.db_of(cf_name).iterator_cf(
            self.cf(cf_name),
            IteratorMode::From(&from, Direction::Forward),
        );
        let mut out = Vec::new();
        for kv in it {
            let (k, _) = kv?;
            if !k.starts_with(prefix) || k.len() != prefix.len() + 8 {
                break;
            }
            out.push(read_be(&k[prefix.len()..]).unwrap_or_default());
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

/// The write side of a log's store. The sequencer holds one (entries,
/// payloads, tiles, dedup records, checkpoints), the indexer one (the query
/// indexes and its progress) and the log one for its anchor record; request
/// handlers only ever get the [`Store`], which has no write methods. Reads
/// go through `Deref` to the store.
pub struct StoreWriter {
    store: Arc<Store>,
}

impl std::ops::Deref for StoreWriter {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.store
    }
}

impl StoreWriter {
    /// A writer of `store` (see the type's note on who holds one).
    pub(crate) fn new(store: &Arc<Store>) -> StoreWriter {
        StoreWriter {
            store: store.clone(),
        }
    }

    /// Opens a store for writing (tools and tests; a running server gets
    /// its writers from the log).
    pub fn open(path: &Path) -> Result<StoreWriter> {
        Ok(StoreWriter {
            store: Arc::new(Store::open(path)?),
        })
    }

    /// The read side, to hand out.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn new_batch(&self) -> CommitBatch {
        CommitBatch {
            batch: WriteBatch::default(),
        }
    }

    /// A batch with room for about `bytes` of writes.
    pub fn new_batch_sized(&self, bytes: usize) -> CommitBatch {
        CommitBatch {
            batch: WriteBatch::with_capacity_bytes(bytes),
        }
    }

    /// Writes a group without syncing it: durable once a later
    /// [`StoreWriter::sync_wal`] (or synced write) returns. RocksDB's
    /// write-ahead log is sequential, so a sync covers every write before it.
    pub fn write(&self, batch: CommitBatch) -> Result<()> {
        #[cfg(test)]
        injected(&self.fail_commits)?;
        self.store.db.write(batch.batch)?;
        Ok(())
    }

    /// Makes every write so far durable: the write-ahead log is flushed and
    /// fsync'd.
    pub fn sync_wal(&self) -> Result<()> {
        #[cfg(test)]
        injected(&self.fail_syncs)?;
        self.store.db.flush_wal(true)?;
        Ok(())
    }

    /// Writes a batch durably: the WAL is fsync'd before this returns (the
    /// writes outside the sequencer's pipeline: start-up's, a restore's).
    pub fn commit(&self, batch: CommitBatch) -> Result<()> {
        #[cfg(test)]
        injected(&self.fail_commits)?;
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.store.db.write_opt(batch.batch, &wo)?;
        Ok(())
    }

    pub fn put(&self, batch: &mut CommitBatch, cf_name: &str, key: &[u8], value: &[u8]) {
        batch.batch.put_cf(self.cf(cf_name), key, value);
    }

    pub fn delete(&self, batch: &mut CommitBatch, cf_name: &str, key: &[u8]) {
        batch.batch.delete_cf(self.cf(cf_name), key);
    }

    /// Writes the indexer's batch to the index database, without a WAL:
    /// the indexes and the indexer's progress are written together and
    /// flushed atomically, so after a crash the progress is never ahead of
    /// the indexes, and the indexer redoes what was lost from the entries.
    pub fn commit_index(&self, batch: CommitBatch) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        self.store.index.write_opt(batch.batch, &wo)?;
        Ok(())
    }

    /// Stages one appended entry into a commit group: its stored bytes, its
    /// dedup record and its salted payload. With [`StoreWriter::stage_indexes`],
    /// the one place that knows the key layout of all of them.
    pub fn stage_entry(&self, batch: &mut CommitBatch, e: StagedEntry<'_>) {
        let key = be(e.index);
        self.put(batch, cf::ENTRIES, &key, e.bytes);
        let record = DedupRecord {
            index: e.index,
            digest: e.digest,
        };
        self.put(batch, cf::DEDUP, e.dedup_id.as_bytes(), &record.encode());
        if let Some((salt, payload)) = e.payload {
            let mut v = Vec::with_capacity(salt.len() + payload.len());
            v.extend_from_slice(salt);
            v.extend_from_slice(payload);
            self.put(batch, cf::PAYLOADS, &key, &v);
        }
    }

    /// Stages the index keys of `events` (entry index, indexed values):
    /// built here, the one place that knows their layout, into one buffer
    /// per column, sorted, then put column by column in key order, so each
    /// memtable insert lands next to the one before (a batch of one agent's
    /// events is a run of neighbouring keys) instead of searching its skip
    /// list from the top.
    pub fn stage_indexes<'a>(
        &self,
        batch: &mut CommitBatch,
        events: impl Iterator<Item = (u64, &'a IndexValues)>,
    ) {
        // One run of keys per column of cf::INDEXES, in its order.
        let mut columns: [KeyRun; 5] = Default::default();
        let [correlation, agent, principal, tool, time] = &mut columns;
        for (index, v) in events {
            let key = be(index);
            if let Some(c) = &v.correlation {
                // The 16 bytes of the trace id ‖ index.
                correlation.push(&[c, &key]);
            }
            // agent_id is required, the others optional.
            let by_value = [
                (&mut *agent, &v.agent),
                (&mut *principal, &v.principal),
                (&mut *tool, &v.tool),
            ];
            for (run, value) in by_value {
                if !value.is_empty() {
                    // value ‖ 0x00 ‖ index (validated values never hold NUL).
                    run.push(&[value.as_bytes(), &[0], &key]);
                }
            }
            // occurred_at in nanoseconds, big-endian ‖ index.
            time.push(&[&be(v.occurred_nanos), &key]);
        }
        for (name, run) in cf::INDEXES.iter().zip(&mut columns) {
            run.sort();
            for key in run.keys() {
                self.put(batch, name, key, &[]);
            }
        }
    }

    /// Stages the erasure of a redacted entry's payload.
    pub fn stage_erasure(&self, batch: &mut CommitBatch, target: u64) {
        self.delete(batch, cf::PAYLOADS, &be(target));
    }

    /// Stages a signed checkpoint of `size` entries.
    pub fn stage_checkpoint(&self, batch: &mut CommitBatch, size: u64, note: &str) {
        self.put(batch, cf::CHECKPOINTS, &be(size), note.as_bytes());
    }

    pub fn set_tree_size(&self, batch: &mut CommitBatch, size: u64) {
        self.put(batch, cf::META, meta::TREE_SIZE, &be(size));
    }

    pub fn put_tile(&self, batch: &mut CommitBatch, level: u8, index: u64, hashes: &[Hash]) {
        let bytes: Vec<u8> = hashes.iter().flat_map(|h| h.0).collect();
        self.put(batch, cf::TILES, &tile_key(level, index), &bytes);
    }

    pub fn set_indexed_size(&self, batch: &mut CommitBatch, size: u64) {
        batch
            .batch
            .put_cf(self.index_meta(), meta::INDEXED_SIZE, be(size));
    }

    /// Forgets every index key and the indexer's progress (the indexes are
    /// then rebuilt from the entries). Also the test hook for a crash before
    /// the indexer wrote anything.
    pub fn forget_indexes(&self) -> Result<()> {
        let mut b = WriteBatch::default();
        for name in cf::INDEXES {
            b.delete_range_cf(self.cf(name), [0u8].as_slice(), [0xffu8; 64].as_slice());
        }
        b.put_cf(self.index_meta(), meta::INDEXED_SIZE, be(0));
        self.store.index.write(b)?;
        Ok(())
    }

    /// Records an anchor. Not synced: losing it only means the same
    /// checkpoint is anchored again, which the store answers as already there.
    pub fn set_anchored_size(&self, size: u64) -> Result<()> {
        Ok(self
            .db
            .put_cf(self.cf(cf::META), meta::ANCHORED_SIZE, be(size))?)
    }

    /// Records what the mirror holds. Not synced: losing it only means
    /// publishing those objects again, which the mirror answers as already
    /// there.
    pub fn set_mirrored_size(&self, size: u64) -> Result<()> {
        Ok(self
            .db
            .put_cf(self.cf(cf::META), meta::MIRRORED_SIZE, be(size))?)
    }

    /// Forces memtables to disk (used on clean shutdown; durability does not
    /// depend on it, the synced WAL already holds everything).
    pub fn flush(&self) -> Result<()> {
        for name in cf::RECORD {
            self.store.db.flush_cf(self.cf(name))?;
        }
        self.flush_index()
    }

    /// Forces the index database's memtables to disk: it has no WAL for the
    /// indexer's writes, so this keeps them (otherwise the next start indexes
    /// them again).
    pub fn flush_index(&self) -> Result<()> {
        let mut handles: Vec<&rocksdb::ColumnFamily> =
            cf::INDEXES.iter().map(|n| self.cf(n)).collect();
        handles.push(self.index_meta());
        self.store
            .index
            .flush_cfs_opt(&handles, &rocksdb::FlushOptions::default())?;
        Ok(())
    }
}

/// A [`HashSource`] that keeps the tiles it has read, for answering many
/// proofs against one tree size (stored tiles only ever grow, so a tile read
/// once holds every node below the size the caller proves against). Each
/// tile's eight interior levels are hashed once, so a node inside a tile is
/// a lookup, not a fold of up to 255 hashes per proof.
pub struct CachedTiles<'a> {
    store: &'a Store,
    cache: std::cell::RefCell<std::collections::HashMap<(u8, u64), TileLevels>>,
}

/// A tile's row and the levels hashed from it.
type TileLevels = Vec<Vec<Hash>>;

impl<'a> CachedTiles<'a> {
    pub fn new(store: &'a Store) -> CachedTiles<'a> {
        CachedTiles {
            store,
            cache: Default::default(),
        }
    }
}

/// A tile row and the levels above it, as far as complete pairs go.
fn tile_levels(row: Vec<Hash>) -> TileLevels {
    let mut levels = vec![row];
    while let Some(last) = levels.last()
        && last.len() >= 2
    {
        let up: Vec<Hash> = last
            .chunks_exact(2)
            .map(|p| ledger_verify::node_hash(&p[0], &p[1]))
            .collect();
        levels.push(up);
    }
    levels
}

impl HashSource for CachedTiles<'_> {
    type Error = StoreError;

    fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>> {
        let mut cache = self.cache.borrow_mut();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let span = tiles::span_of(*id);
            if let std::collections::hash_map::Entry::Vacant(e) =
                cache.entry((span.level, span.index))
            {
                e.insert(tile_levels(self.store.tile(span.level, span.index)?));
            }
            let levels = &cache[&(span.level, span.index)];
            // A node of `count` leaves (a power of two, aligned) sits at
            // level log2(count) of its tile.
            let k = span.count.trailing_zeros() as usize;
            let node = levels
                .get(k)
                .and_then(|l| l.get(span.offset >> k))
                .ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "tile {}/{} lacks node {id:?}",
                        span.level, span.index
                    ))
                })?;
            out.push(*node);
        }
        Ok(out)
    }
}

/// Hashed tile interiors shared across requests (receipts ask for proofs
/// of neighbouring entries against the same few tiles, one ack at a time).
/// A full tile never changes, so it is hashed once; a tile at the right
/// edge is keyed by its stored length, which only grows.
#[derive(Default)]
pub struct TileInteriors {
    map: std::sync::Mutex<std::collections::HashMap<(u8, u64, usize), Arc<TileLevels>>>,
}

/// Tiles kept by [`TileInteriors`]: each is about 16 KiB hashed, so at most
/// 16 MiB; the cache is emptied when it fills (the working set of receipts
/// is the few tiles at the right edge).
const MAX_SHARED_TILES: usize = 1024;

impl TileInteriors {
    /// A hash source over `store` for proofs against tree size `size`.
    pub fn source<'a>(&'a self, store: &'a Store, size: u64) -> SharedTiles<'a> {
        SharedTiles {
            store,
            shared: self,
            size,
        }
    }
}

/// See [`TileInteriors::source`].
pub struct SharedTiles<'a> {
    store: &'a Store,
    shared: &'a TileInteriors,
    size: u64,
}

impl SharedTiles<'_> {
    fn levels(&self, level: u8, index: u64) -> Result<Arc<TileLevels>> {
        // Leaves under one tile of this level: 256^(level+1).
        let span = TILE_WIDTH.checked_pow(u32::from(level) + 1);
        let full = span
            .and_then(|s| s.checked_mul(index + 1))
            .is_some_and(|end| end <= self.size);
        let lock = || {
            self.shared
                .map
                .lock()
                .map_err(|_| StoreError::Corrupt("tile cache lock poisoned".into()))
        };
        let mut row = None;
        let len = if full {
            TILE_WIDTH as usize
        } else {
            let r = self.store.tile(level, index)?;
            let n = r.len();
            row = Some(r);
            n
        };
        let key = (level, index, len);
        if let Some(hit) = lock()?.get(&key) {
            return Ok(hit.clone());
        }
        let row = match row {
            Some(r) => r,
            None => self.store.tile(level, index)?,
        };
        let levels = Arc::new(tile_levels(row));
        let mut map = lock()?;
        if map.len() >= MAX_SHARED_TILES {
            map.clear();
        }
        map.insert(key, levels.clone());
        Ok(levels)
    }
}

impl HashSource for SharedTiles<'_> {
    type Error = StoreError;

    fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>> {
        ids.iter()
            .map(|id| {
                let span = tiles::span_of(*id);
                let levels = self.levels(span.level, span.index)?;
                let k = span.count.trailing_zeros() as usize;
                levels
                    .get(k)
                    .and_then(|l| l.get(span.offset >> k))
                    .copied()
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "tile {}/{} lacks node {id:?}",
                            span.level, span.index
                        ))
                    })
            })
            .collect()
    }
}

impl HashSource for Store {
    type Error = StoreError;

    fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>> {
        CachedTiles::new(self).nodes(ids)
    }
}
