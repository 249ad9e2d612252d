//! The object-storage mirror: each log publishes its committed log, as
//! C2SP tlog-tiles (hash tiles, entry bundles, `checkpoint`) plus payload
//! bundles, under `<origin>/` in an [`ObjectStore`], so the record outlives
//! the ledger's disk and any number of auditors can read it without the
//! server. The layout and encodings are `ledger_verify::mirror`'s.
//!
//! A publisher task per log follows the signed checkpoints: for a new
//! checkpoint of size S it writes every object of the tree of size S that
//! the mirror does not hold yet (write-once), the payload bundles of the
//! touched tiles (overwritten), and last the `checkpoint` object, so a
//! reader never sees a checkpoint whose objects are missing. Publishing is
//! not in the ack path unless `mirror.ack_after_mirror` is set; failures
//! are retried with back-off and never stop ingest.
//!
//! The live HTTP read API ([`crate::tiles_http`]) builds its objects with
//! the same functions, so both serve the same bytes.

pub mod feed;

use crate::log::Log;
use crate::metrics::Metrics;
use crate::mirror::feed::{Feed, Held};
use crate::objects::{Body, DirWriter, ObjectError, ObjectStore};
use crate::sequencer::SignedCheckpoint;
use crate::store::{Store, StoreError};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use ledger_verify::mirror::{
    CHECKPOINT, PAYLOAD_GROUP, PAYLOAD_GROUP_TILES, encode_tile, group_complete,
    group_payload_path, payload_path, push_bundle_entry, push_payload_record,
};
use ledger_verify::tiles::{TILE_HEIGHT, TILE_WIDTH, TileId, entries_path, tile_path, tiles_of};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Hashes at tile level `level` of a tree of `size` leaves.
fn hashes_at(size: u64, level: u8) -> u64 {
    size.checked_shr(u32::from(level) * u32::from(TILE_HEIGHT))
        .unwrap_or(0)
}

/// Whether tile `id` is part of the tree of `size` leaves (a partial tile
/// of width W exists once the level has at least W hashes in that tile).
pub fn tile_exists(id: TileId, size: u64) -> bool {
    id.width >= 1
        && u64::from(id.width) <= TILE_WIDTH
        && id
            .index
            .checked_mul(TILE_WIDTH)
            .and_then(|s| s.checked_add(u64::from(id.width)))
            .is_some_and(|end| end <= hashes_at(size, id.level))
}

/// The hash tile `id` of the tree of `size` leaves, as the mirror and the
/// read API serve it; None if the tree has no such tile.
pub fn hash_tile(store: &Store, id: TileId, size: u64) -> Result<Option<Vec<u8>>, StoreError> {
    if !tile_exists(id, size) {
        return Ok(None);
    }
    let row = store.tile(id.level, id.index)?;
    let width = usize::from(id.width);
    if row.len() < width {
        return Err(StoreError::Corrupt(format!(
            "tile {}/{} holds {} hashes, the tree of {size} has {width}",
            id.level,
            id.index,
            row.len()
        )));
    }
    Ok(Some(encode_tile(&row[..width])))
}

/// Entry bundle `n` of width `width`; None if the tree of `size` has no
/// such bundle.
pub fn entry_bundle(
    store: &Store,
    n: u64,
    width: u16,
    size: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    entry_bundle_with(store, n, width, size, |_, _| {})
}

/// Entry bundle `n` of width `width` (None if the tree of `size` has no
/// such bundle), encoded straight from the store, each entry checked to
/// fit a bundle and shown to `each` on the way.
fn entry_bundle_with(
    store: &Store,
    n: u64,
    width: u16,
    size: u64,
    mut each: impl FnMut(u64, &[u8]),
) -> Result<Option<Vec<u8>>, StoreError> {
    let id = TileId {
        level: 0,
        index: n,
        width,
    };
    if !tile_exists(id, size) {
        return Ok(None);
    }
    let start = n * TILE_WIDTH;
    // A guess at the size (entries without their payloads are a few hundred
    // bytes), so the buffer rarely grows.
    let mut out = Vec::with_capacity(usize::from(width) * 512);
    // Every entry of the range, or an error naming the first missing one.
    store.visit_entries(start, start + u64::from(width), |i, e| {
        each(i, e);
        push_checked(&mut out, i, e)
    })?;
    Ok(Some(out))
}

/// Appends entry `i` to an entry bundle. A store from before the entry size
/// limit may hold a larger entry: refuse to bundle it rather than write a
/// bundle that cannot hold it.
fn push_checked(out: &mut Vec<u8>, i: u64, e: &[u8]) -> Result<(), StoreError> {
    if e.len() > crate::sequencer::MAX_ENTRY_BYTES {
        return Err(StoreError::Corrupt(format!(
            "entry {i} is {} bytes, over the 65,535 an entry bundle holds: it cannot be mirrored",
            e.len()
        )));
    }
    push_bundle_entry(out, e);
    Ok(())
}

/// The entry bundle of entries `held`, the first at `start`, each shown to
/// `each` on the way: the same bytes as [`entry_bundle`] builds from the
/// store.
fn entry_bundle_of<'a>(
    held: impl Iterator<Item = &'a Held> + Clone,
    start: u64,
    aligned: bool,
    mut each: impl FnMut(u64, &Held),
) -> Result<Body, StoreError> {
    let mut out = Body::new(held.clone().map(|h| 2 + h.entry.len()).sum(), aligned);
    for (i, h) in (start..).zip(held) {
        each(i, h);
        push_checked(out.buf(), i, &h.entry)?;
    }
    Ok(out)
}

/// The payload bundle of entries `held`, and whether it holds any payload:
/// the same bytes as [`payload_bundle`] builds from the store.
fn payload_bundle_of<'a>(
    held: impl Iterator<Item = &'a Held> + Clone,
    aligned: bool,
) -> (Body, bool) {
    let size = |h: &Held| 4 + h.payload.as_ref().map_or(0, |(s, p)| s.len() + p.len());
    let mut out = Body::new(held.clone().map(size).sum(), aligned);
    let mut any = false;
    for h in held {
        any |= h.payload.is_some();
        push_payload_record(out.buf(), h.payload.as_ref().map(|(s, p)| (&s[..], &p[..])));
    }
    (out, any)
}

/// The payload bundle of entries `start..end` (a tile's first entries, or
/// a whole group's), and whether it holds any payload.
pub fn payload_bundle(store: &Store, start: u64, end: u64) -> Result<(Vec<u8>, bool), StoreError> {
    // A guess (salts and half-kilobyte payloads), so the buffer rarely grows.
    let mut out = Vec::with_capacity((end - start) as usize * 576);
    let mut next = start;
    store.visit_payloads(start, end, |i, salt, payload| {
        // Entries without a stored payload hold an empty record.
        for _ in next..i {
            push_payload_record(&mut out, None);
        }
        push_payload_record(&mut out, Some((salt, payload)));
        next = i + 1;
        Ok(())
    })?;
    let any = next > start;
    for _ in next..end {
        push_payload_record(&mut out, None);
    }
    Ok((out, any))
}

/// The payload bundle of entries `start..end` (and whether it holds any
/// payload), from the feed when it holds every one of them (built
/// `aligned`, see [`Body::new`]), else read back from the store (counted in
/// `read_back`).
fn payloads_from(
    store: &Store,
    feed: Option<&Feed>,
    start: u64,
    end: u64,
    aligned: bool,
    read_back: &mut u64,
) -> Result<(Body, bool), StoreError> {
    match feed.and_then(|f| f.with_range(start, end, |h| payload_bundle_of(h, aligned))) {
        Some(built) => Ok(built),
        None => {
            *read_back += end - start;
            payload_bundle(store, start, end).map(|(b, any)| (Body::from(b), any))
        }
    }
}

/// The key of a log's object: `<origin>/<path>`.
pub fn object_key(origin: &str, path: &str) -> String {
    format!("{origin}/{path}")
}

/// Logged when an [`Object::IfPresent`] finds a bundle and empties it (the
/// directory and the S3 paths alike).
const EMPTYING: &str = "emptying a payload bundle: its tile holds no payload now (erased since the bundle was written, or the bundle was left by a history lost in a restore)";

/// One object to publish.
enum Object {
    /// Write-once.
    Once(String, Body),
    /// A payload bundle written for the first time (nothing to purge).
    Payloads(String, Body),
    /// A payload bundle rewritten: earlier versions are destroyed.
    Replace(String, Body),
    /// A tile's payload bundle with no payload in it: written (over every
    /// earlier version) only if the name is taken. For a tile no published
    /// checkpoint covered yet that means a history lost in a restore left
    /// one there, with payloads readers would take for this history's; for
    /// a tile an earlier round wrote, that its payloads were erased since.
    /// Where there is none, none is needed.
    IfPresent(String, Body),
}

impl Object {
    fn parts(&self) -> (&str, &[u8]) {
        match self {
            Object::Once(k, b)
            | Object::Payloads(k, b)
            | Object::Replace(k, b)
            | Object::IfPresent(k, b) => (k, b),
        }
    }

    fn into_body(self) -> Body {
        match self {
            Object::Once(_, b)
            | Object::Payloads(_, b)
            | Object::Replace(_, b)
            | Object::IfPresent(_, b) => b,
        }
    }
}

/// One unit of publishing from size `from` to `to`, built when its turn
/// comes (so a long catch-up holds a few tiles in memory, not all).
#[derive(Debug, Clone, Copy)]
enum Unit {
    /// Entry bundle and level-0 hash tile of tile `n`, and its own payload
    /// bundle while its payload group is not whole at `to`.
    Tile(u64),
    /// The payload bundle of group `g`, whole at `to` and not at `from`.
    Group(u64),
    /// The hash tiles above level 0.
    Upper,
    /// The payloads of tile `n` rewritten after a redaction erased one (its
    /// group's bundle when the group is whole at `to`).
    Erased(u64),
}

/// The units of publishing from `from` to `to`: tile by tile, each group
/// that became whole before its first new tile, then the tiles above.
fn units(from: u64, to: u64) -> Vec<Unit> {
    let mut out = Vec::new();
    for n in from / TILE_WIDTH..to.div_ceil(TILE_WIDTH) {
        let g = n / PAYLOAD_GROUP_TILES;
        let first_of_round = n == from / TILE_WIDTH;
        if (first_of_round || n % PAYLOAD_GROUP_TILES == 0)
            && group_complete(g, to)
            && !group_complete(g, from)
        {
            out.push(Unit::Group(g));
        }
        out.push(Unit::Tile(n));
    }
    out.push(Unit::Upper);
    out
}

/// The tile bundles of payload groups that became whole between `from`
/// and `to`, written by earlier rounds (before their group was whole):
/// the group bundles hold those payloads now.
fn superseded(from: u64, to: u64) -> impl Iterator<Item = u64> {
    let groups = from / PAYLOAD_GROUP..to / PAYLOAD_GROUP;
    let written = from.div_ceil(TILE_WIDTH);
    groups.flat_map(move |g| g * PAYLOAD_GROUP_TILES..written.min((g + 1) * PAYLOAD_GROUP_TILES))
}

/// Whether tile `id` of the tree of `to` leaves is new since `from`.
fn new_since(id: TileId, from: u64) -> bool {
    !(u64::from(id.width) == TILE_WIDTH && (id.index + 1) * TILE_WIDTH <= hashes_at(from, id.level))
}

/// Width of tile `n` in the tree of `to` leaves.
fn tile_width(n: u64, to: u64) -> u16 {
    (to - n * TILE_WIDTH).min(TILE_WIDTH) as u16
}

/// `f` of the entries of tile `n` at `width`, if the feed holds every one
/// (under the feed's lock, see [`Feed::with_range`]).
fn with_held_tile<T>(
    feed: Option<&Feed>,
    n: u64,
    width: u16,
    f: impl FnOnce(std::collections::vec_deque::Iter<'_, Held>) -> T,
) -> Option<T> {
    let start = n * TILE_WIDTH;
    feed.and_then(|feed| feed.with_range(start, start + u64::from(width), f))
}

/// What building a unit produced.
struct Built {
    objects: Vec<Object>,
    /// Tiles whose payloads redactions among the unit's entries erased.
    erased: Vec<u64>,
    /// Entries read back from the store (not held by the feed).
    read_back: u64,
}

/// Builds the objects of one unit, from the feed where it holds the
/// entries, else from the store; those from the feed `aligned` for the
/// thread that writes them (see [`Body::new`]).
fn build(
    store: &Store,
    feed: Option<&Feed>,
    origin: &str,
    unit: Unit,
    from: u64,
    to: u64,
    aligned: bool,
) -> Result<Built, StoreError> {
    let mut out = Vec::new();
    let mut erased = Vec::new();
    let mut read_back = 0;
    match unit {
        Unit::Tile(n) => {
            let width = tile_width(n, to);
            let tile = TileId {
                level: 0,
                index: n,
                width,
            };
            // A redaction erases a payload in an older bundle (the
            // redactions before `from` were seen by an earlier round).
            let mut erases = |i: u64, target: Option<u64>| {
                if i >= from
                    && let Some(target) = target
                    && target / TILE_WIDTH != n
                {
                    erased.push(target / TILE_WIDTH);
                }
            };
            // The tile's own payload bundle, unless its group is whole (the
            // group's unit writes that).
            let own = !group_complete(n / PAYLOAD_GROUP_TILES, to);
            // From the feed when it holds every entry of the tile (which
            // says which are redactions), else read back from the store
            // (each new entry decoded for its redaction).
            let held = with_held_tile(feed, n, width, |held| {
                let bundle = entry_bundle_of(held.clone(), n * TILE_WIDTH, aligned, |i, h| {
                    erases(i, h.redacts)
                })?;
                Ok::<_, StoreError>((Some(bundle), own.then(|| payload_bundle_of(held, aligned))))
            });
            let (bundle, payloads) = match held {
                Some(built) => built?,
                None => {
                    read_back = u64::from(width);
                    let each = |i: u64, e: &[u8]| {
                        if i >= from {
                            erases(i, ledger_verify::entry::redaction_target(e).ok().flatten());
                        }
                    };
                    let start = n * TILE_WIDTH;
                    (
                        entry_bundle_with(store, n, width, to, each)?.map(Body::from),
                        own.then(|| payload_bundle(store, start, start + u64::from(width)))
                            .transpose()?
                            .map(|(b, any)| (Body::from(b), any)),
                    )
                }
            };
            if let Some(bytes) = bundle {
                out.push(Object::Once(
                    object_key(origin, &entries_path(n, width)),
                    bytes,
                ));
            }
            if let Some(bytes) = hash_tile(store, tile, to)? {
                out.push(Object::Once(
                    object_key(origin, &tile_path(tile)),
                    Body::from(bytes),
                ));
            }
            let key = object_key(origin, &payload_path(n));
            match payloads {
                // No payload in the tile: a bundle is written only over one
                // that is there (an earlier round's, whose payloads were
                // erased since, or one a lost history left).
                Some((bytes, false)) => out.push(Object::IfPresent(key, bytes)),
                // Written before, at a smaller width: rewrite, and purge the
                // older versions (they may hold a payload erased since).
                Some((bytes, true)) if n * TILE_WIDTH < from => {
                    out.push(Object::Replace(key, bytes))
                }
                Some((bytes, true)) => out.push(Object::Payloads(key, bytes)),
                None => {}
            }
        }
        Unit::Group(g) => {
            let start = g * PAYLOAD_GROUP;
            let (bytes, _) = payloads_from(
                store,
                feed,
                start,
                start + PAYLOAD_GROUP,
                aligned,
                &mut read_back,
            )?;
            // Written even with no payload in it (16 KiB of empty records),
            // so that one a history no checkpoint covers left there is
            // always replaced.
            let key = object_key(origin, &group_payload_path(g));
            out.push(Object::Payloads(key, bytes));
        }
        Unit::Upper => {
            for id in tiles_of(to).into_iter().filter(|t| t.level > 0) {
                if new_since(id, from)
                    && let Some(bytes) = hash_tile(store, id, to)?
                {
                    out.push(Object::Once(
                        object_key(origin, &tile_path(id)),
                        Body::from(bytes),
                    ));
                }
            }
        }
        Unit::Erased(n) => {
            let g = n / PAYLOAD_GROUP_TILES;
            let (start, end, path) = if group_complete(g, to) {
                let start = g * PAYLOAD_GROUP;
                (start, start + PAYLOAD_GROUP, group_payload_path(g))
            } else {
                let start = n * TILE_WIDTH;
                (start, start + u64::from(tile_width(n, to)), payload_path(n))
            };
            let (bytes, _) = payloads_from(store, feed, start, end, aligned, &mut read_back)?;
            out.push(Object::Replace(object_key(origin, &path), bytes));
        }
    }
    Ok(Built {
        objects: out,
        erased,
        read_back,
    })
}

/// Units built and written at once for `concurrency` objects at once
/// (a unit is mostly a tile's two or three objects).
pub fn units_at_once(concurrency: usize) -> usize {
    concurrency.div_ceil(3).max(1)
}

/// Writes `o` to a directory mirror, on the calling thread, as
/// [`Mirror::put_units`] does through the [`ObjectStore`] calls, except
/// that write-once objects are created in place under their names
/// ([`DirWriter::put_once_in_place`]: none is covered by a published
/// checkpoint yet).
fn write_local(
    objects: &DirWriter,
    payloads: &DirWriter,
    log: &str,
    o: Object,
) -> Result<(), ObjectError> {
    let (key, body) = o.parts();
    let written = match &o {
        Object::Once(..) => match objects.put_once_in_place(key, body) {
            Ok(_) => Ok(()),
            // See put_units: an object beyond the mirrored checkpoint left
            // by a lost history is replaced, and so is one a crash left
            // incomplete (written in place).
            Err(ObjectError::Conflict { key }) => {
                tracing::warn!(log = %log, key, "replacing an object left beyond the mirrored checkpoint by a lost history or an interrupted write");
                objects.put_latest(&key, body)
            }
            Err(e) => Err(e),
        },
        Object::Payloads(..) => payloads.put_unlocked(key, body),
        Object::Replace(..) => payloads.replace(key, body),
        Object::IfPresent(..) => {
            if payloads.exists(key)? {
                tracing::warn!(log = %log, key, "{EMPTYING}");
                payloads.replace(key, body)
            } else {
                Ok(())
            }
        }
    };
    // Its buffer serves this thread's next objects.
    o.into_body().recycle();
    written
}

/// Resolves when the stop flag turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Publishes one log to the mirror.
pub struct Mirror<S: ObjectStore> {
    pub store: Arc<S>,
    /// Where payload bundles go (the same store, or a bucket without a
    /// compliance lock).
    pub payload_store: Arc<S>,
    pub log: Arc<Log>,
    pub metrics: Arc<Metrics>,
    /// `mirror.concurrency`: [`units_at_once`] of it are built and written
    /// at once.
    pub concurrency: usize,
    /// Where objects are built from the store (and, for a directory
    /// store, written): low-priority threads, so that under full ingest the
    /// mirror takes idle CPU first, not the acks'; and the pool's
    /// normal-priority threads once the mirror has fallen half its feed
    /// behind (see `put_units`).
    pub builder: Arc<crate::niced::Niced>,
}

impl<S: ObjectStore> Mirror<S> {
    /// Publishes everything from the mirrored size up to `cp`, then `cp`.
    async fn publish(&self, from: u64, cp: &Arc<SignedCheckpoint>) -> Result<(), ObjectError> {
        let to = cp.checkpoint.size;
        let erased = std::sync::Mutex::new(BTreeSet::new());
        // Entries the feed holds are released as their tiles are written,
        // all but the incomplete payload group's by the end (the next
        // rounds rewrite its partial tile, and write the group's bundle
        // once it is whole).
        let written_below = Some(to / PAYLOAD_GROUP * PAYLOAD_GROUP);
        self.put_units(units(from, to), from, to, &erased, written_below)
            .await?;
        let erased: Vec<Unit> = erased
            .into_inner()
            .map_err(|_| ObjectError::Store("lock poisoned".into()))?
            .into_iter()
            .map(Unit::Erased)
            .collect();
        // Tile bundles that whole groups' bundles supersede: those of the
        // groups that became whole, and (should an earlier round have
        // failed to delete it) that of a tile a redaction erased.
        let stale: BTreeSet<u64> = erased
            .iter()
            .filter_map(|u| match u {
                Unit::Erased(n) if group_complete(n / PAYLOAD_GROUP_TILES, to) => Some(*n),
                _ => None,
            })
            .chain(superseded(from, to))
            .collect();
        if !erased.is_empty() {
            self.put_units(erased, from, to, &Default::default(), None)
                .await?;
        }
        self.store.sync().await?;
        self.payload_store.sync().await?;
        self.store
            .put_latest(
                &object_key(&self.log.origin, CHECKPOINT),
                cp.note.clone().into_bytes(),
            )
            .await?;
        // Deleted once the checkpoint that no longer reads them is out.
        // Readers ignore them either way: a failure only leaves garbage.
        for n in stale {
            let key = object_key(&self.log.origin, &payload_path(n));
            if let Err(e) = self.payload_store.delete(&key).await {
                tracing::warn!(log = %self.log.id, key, error = %e, "deleting a superseded payload bundle failed");
            }
        }
        Ok(())
    }

    /// Builds and writes `units`, a few at a time. With `release_below`,
    /// tells the feed, as the units are written, that the mirror no longer
    /// needs the entries before the first tile not yet written (and never
    /// those from `release_below` on): a round that covers more than the
    /// feed holds frees it for the entries committed meanwhile, which the
    /// next round would otherwise read back from the store. Should the
    /// round fail, the next reads back what was released.
    async fn put_units(
        &self,
        units: Vec<Unit>,
        from: u64,
        to: u64,
        erased: &std::sync::Mutex<BTreeSet<u64>>,
        release_below: Option<u64>,
    ) -> Result<(), ObjectError> {
        // A directory's writes are made where the objects were built.
        let local = &self.store.local().zip(self.payload_store.local());
        // The first entry of each unit's tile, and which units are done.
        let firsts: Vec<Option<u64>> = units
            .iter()
            .map(|u| match u {
                Unit::Tile(n) => Some(n * TILE_WIDTH),
                Unit::Group(g) => Some(g * PAYLOAD_GROUP),
                _ => None,
            })
            .collect();
        let mut done = vec![false; units.len()];
        let mut next = 0;
        let release = release_below.zip(self.log.mirror_feed());
        let mut written = stream::iter(units.into_iter().enumerate())
            .map(|(at, unit)| async move {
                let (store, origin) = (self.log.store.clone(), self.log.origin.clone());
                let feed = self.log.mirror_feed().cloned();
                // Half a feed behind, the mirror stops giving way: past a
                // full one it would read entries back from the store, at
                // several times the cost, and fall further behind.
                let urgent = feed.as_ref().is_some_and(|f| f.pressed());
                if urgent {
                    self.metrics
                        .mirror_urgent_units
                        .get_or_create(&self.log.id.as_str().into())
                        .inc();
                }
                let (local, log) = (local.clone(), self.log.id.clone());
                let Built {
                    objects,
                    erased: more,
                    read_back,
                } = self
                    .builder
                    .run_at(urgent, move || {
                        let aligned = local.is_some();
                        let mut built =
                            build(&store, feed.as_deref(), &origin, unit, from, to, aligned)
                                .map_err(|e| ObjectError::Store(format!("reading the store: {e}")))?;
                        if let Some((objects, payloads)) = local {
                            for o in std::mem::take(&mut built.objects) {
                                write_local(&objects, &payloads, &log, o)?;
                            }
                        }
                        Ok::<_, ObjectError>(built)
                    })
                    .await
                    .ok_or_else(|| ObjectError::Store("building the objects failed".into()))??;
                if read_back > 0 {
                    self.metrics
                        .mirror_read_back
                        .get_or_create(&self.log.id.as_str().into())
                        .inc_by(read_back);
                }
                if !more.is_empty() {
                    erased
                        .lock()
                        .map_err(|_| ObjectError::Store("lock poisoned".into()))?
                        .extend(more);
                }
                for o in objects {
                    match o {
                        Object::Once(key, body) => {
                            // Shared, not copied, with the retry below.
                            let body = body.into_bytes();
                            match self.store.put_once(&key, body.clone()).await {
                                Ok(_) => {}
                                // Every object of a round lies beyond the
                                // mirrored checkpoint: one already there with
                                // other bytes was left by a history no
                                // checkpoint covers (a crash mid-round, then a
                                // restore from the checkpoint before it).
                                // Nothing vouches for it: replace it (a
                                // versioned bucket keeps it as an old version).
                                Err(ObjectError::Conflict { key }) => {
                                    tracing::warn!(log = %self.log.id, key, "replacing an object left beyond the mirrored checkpoint by a lost history");
                                    self.store.put_latest(&key, body.to_vec()).await?;
                                }
                                Err(e) => return Err(e),
                            }
                        }
                        Object::Payloads(key, body) => {
                            self.payload_store.put_unlocked(&key, body.into_vec()).await?
                        }
                        Object::Replace(key, body) => {
                            self.payload_store.replace(&key, body.into_vec()).await?
                        }
                        Object::IfPresent(key, body) => {
                            if self.payload_store.exists(&key).await? {
                                tracing::warn!(log = %self.log.id, key, "{EMPTYING}");
                                self.payload_store.replace(&key, body.into_vec()).await?
                            }
                        }
                    }
                }
                Ok::<usize, ObjectError>(at)
            })
            .buffer_unordered(units_at_once(self.concurrency));
        while let Some(at) = written.try_next().await? {
            done[at] = true;
            let before = next;
            while done.get(next) == Some(&true) {
                next += 1;
            }
            if let Some((below, feed)) = release
                && next > before
            {
                let first = firsts.get(next).copied().flatten().unwrap_or(below);
                feed.release(first.min(below));
            }
        }
        Ok(())
    }

    /// Integration time of entry `index`, if stored.
    async fn integrated_at(&self, index: u64) -> Option<SystemTime> {
        let store = self.log.store.clone();
        tokio::task::spawn_blocking(move || store.integrated_at(index))
            .await
            .ok()?
            .ok()?
    }

    async fn update_lag(&self) {
        let label = self.log.id.as_str().into();
        let mirrored = self.log.mirrored_size();
        let committed = *self.log.watch_committed().borrow();
        let behind = committed.saturating_sub(mirrored);
        self.metrics
            .mirror_lag_entries
            .get_or_create(&label)
            .set(behind as i64);
        let age = if behind == 0 {
            0.0
        } else {
            self.integrated_at(mirrored)
                .await
                .and_then(|t| t.elapsed().ok())
                .map_or(0.0, |d| d.as_secs_f64())
        };
        self.metrics
            .mirror_lag_seconds
            .get_or_create(&label)
            .set(age);
    }

    /// One round: publish the latest signed checkpoint if the mirror is
    /// behind it. Returns whether anything was published.
    async fn round(&self) -> Result<bool, ObjectError> {
        let Some(cp) = self.log.latest_checkpoint() else {
            return Ok(false);
        };
        let from = self.log.mirrored_size();
        if cp.checkpoint.size <= from {
            return Ok(false);
        }
        let oldest = self.integrated_at(from).await;
        self.publish(from, &cp).await?;
        self.log
            .record_mirrored(cp.clone())
            .await
            .map_err(|e| ObjectError::Store(format!("recording the mirrored size: {e}")))?;
        let label = self.log.id.as_str().into();
        self.metrics
            .mirrored_size
            .get_or_create(&label)
            .set(cp.checkpoint.size as i64);
        if let Some(d) = oldest.and_then(|t| t.elapsed().ok()) {
            self.metrics
                .mirror_delay_seconds
                .get_or_create(&label)
                .observe(d.as_secs_f64());
        }
        tracing::debug!(log = %self.log.id, from, to = cp.checkpoint.size, "mirrored");
        Ok(true)
    }

    /// Runs until `stop` turns true, then publishes once more (bounded by
    /// `final_timeout`) so a clean shutdown leaves the mirror complete.
    pub async fn run(self, mut stop: watch::Receiver<bool>, final_timeout: Duration) {
        let mut checkpoints = self.log.watch_checkpoints();
        let mut committed = self.log.watch_committed();
        let mut backoff = Duration::from_millis(200);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.metrics
            .mirrored_size
            .get_or_create(&self.log.id.as_str().into())
            .set(self.log.mirrored_size() as i64);
        self.metrics
            .mirror_read_back
            .get_or_create(&self.log.id.as_str().into())
            .inc_by(0);
        self.metrics
            .mirror_urgent_units
            .get_or_create(&self.log.id.as_str().into())
            .inc_by(0);
        loop {
            if *stop.borrow() {
                break;
            }
            match self.round().await {
                Ok(true) => {
                    backoff = Duration::from_millis(200);
                    self.update_lag().await;
                    continue;
                }
                Ok(false) => {}
                Err(e) => {
                    self.metrics
                        .mirror_failures
                        .get_or_create(&self.log.id.as_str().into())
                        .inc();
                    tracing::warn!(log = %self.log.id, store = %self.store.describe(), error = %e, retry_in = ?backoff, "mirroring failed");
                    self.update_lag().await;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stopped(&mut stop) => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            }
            // Acks waiting for the mirror should not wait for the signing
            // interval too: ask for a checkpoint of what is committed.
            if self.log.acks_after_mirror() && *committed.borrow() > self.log.mirrored_size() {
                let signed = self
                    .log
                    .latest_checkpoint()
                    .map_or(0, |c| c.checkpoint.size);
                if *committed.borrow() > signed {
                    let _ = self.log.fresh_checkpoint().await;
                    continue;
                }
            }
            let ticked = tokio::select! {
                r = checkpoints.changed() => if r.is_err() { break } else { false },
                r = committed.changed(), if self.log.acks_after_mirror() => if r.is_err() { break } else { false },
                _ = tick.tick() => true,
                _ = stopped(&mut stop) => break,
            };
            if ticked {
                self.update_lag().await;
            }
        }
        match tokio::time::timeout(final_timeout, self.round()).await {
            Ok(Ok(_)) => {
                tracing::info!(log = %self.log.id, size = self.log.mirrored_size(), "mirror up to date")
            }
            Ok(Err(e)) => tracing::error!(log = %self.log.id, error = %e, "final mirroring failed"),
            Err(_) => tracing::error!(log = %self.log.id, "final mirroring timed out"),
        }
        self.update_lag().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_exist_within_their_tree() {
        let t = |level, index, width| TileId {
            level,
            index,
            width,
        };
        assert!(tile_exists(t(0, 0, 256), 256));
        assert!(!tile_exists(t(0, 1, 1), 256));
        assert!(tile_exists(t(0, 1, 1), 257));
        assert!(tile_exists(t(0, 0, 10), 257), "a prefix of a full tile");
        assert!(tile_exists(t(1, 0, 1), 256));
        assert!(!tile_exists(t(1, 0, 2), 511));
        assert!(!tile_exists(t(0, u64::MAX, 256), u64::MAX));
        assert!(!tile_exists(t(0, 0, 0), 5));
    }

    #[test]
    fn whole_groups_get_a_unit_before_their_first_new_tile_and_supersede_tile_bundles() {
        let tiles = |u: &[Unit]| {
            u.iter()
                .map(|u| match u {
                    Unit::Tile(n) => format!("t{n}"),
                    Unit::Group(g) => format!("g{g}"),
                    Unit::Upper => "up".into(),
                    Unit::Erased(n) => format!("e{n}"),
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        // Within the first group: tiles only, the partial one's included.
        assert_eq!(tiles(&units(300, 700)), "t1 t2 up");
        assert_eq!(superseded(300, 700).count(), 0);
        // Group 0 becomes whole in a round that starts inside it: its
        // bundle, then its remaining tiles and the next group's first.
        assert_eq!(tiles(&units(3900, 4300)), "g0 t15 t16 up");
        // Tiles 0..=15 had bundles of their own (entries up to 3899 were
        // published); they are superseded.
        assert_eq!(
            superseded(3900, 4300).collect::<Vec<_>>(),
            (0..16).collect::<Vec<_>>()
        );
        // A round covering two whole groups from a group's start.
        let u = units(4096, 3 * 4096 + 10);
        assert_eq!(u.iter().filter(|u| matches!(u, Unit::Group(_))).count(), 2);
        assert_eq!(tiles(&u[..2]), "g1 t16");
        assert_eq!(tiles(&u[17..19]), "g2 t32");
        assert_eq!(superseded(4096, 3 * 4096 + 10).count(), 0);
        // Exactly at a group's end: whole at `to`.
        assert_eq!(tiles(&units(4000, 4096)), "g0 t15 up");
        assert_eq!(
            superseded(4000, 4096).collect::<Vec<_>>(),
            (0..16).collect::<Vec<_>>()
        );
        assert_eq!(tiles(&units(4096, 4100)), "t16 up");
    }

    /// A mirrored log whose feed holds at most `feed_bytes`, every group
    /// signed.
    fn mirrored_log(dir: &std::path::Path, feed_bytes: usize) -> Arc<Log> {
        let settings = crate::log::LogSettings {
            mirrored: true,
            feed_bytes,
            ..crate::log::tests::settings(dir)
        };
        Log::open(settings, Metrics::new()).unwrap()
    }

    fn event(n: u64) -> ledger_proto::v1::AuditEvent {
        crate::log::tests::event(&format!("e-{n}"), n)
    }

    /// A mirror of `log` into the directory `root`.
    fn dir_mirror(log: &Arc<Log>, root: &std::path::Path) -> Mirror<crate::objects::DirStore> {
        let store = Arc::new(crate::objects::DirStore::new(root).unwrap());
        Mirror {
            store: store.clone(),
            payload_store: store,
            log: log.clone(),
            metrics: Metrics::new(),
            concurrency: 3,
            builder: Arc::new(crate::niced::Niced::new("test-mirror", 1, 10).unwrap()),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mirror_half_a_feed_behind_stops_giving_way_and_reads_back_only_what_the_feed_refused()
     {
        let dir = tempfile::tempdir().unwrap();
        // Room for a whole payload group and more than one tile's entries
        // after it, not two.
        let one = {
            let probe = mirrored_log(&dir.path().join("probe"), crate::mirror::feed::FEED_BYTES);
            // The largest of the entries below (their ids grow).
            probe
                .append(Some(event(PAYLOAD_GROUP + 599)), "t".into())
                .await
                .unwrap();
            let (_, bytes) = probe.mirror_feed().unwrap().held();
            probe.shutdown().await;
            bytes
        };
        let g = PAYLOAD_GROUP;
        let log = mirrored_log(dir.path(), one * (g as usize + 400));
        for chunk in (0..g + 600).collect::<Vec<_>>().chunks(64) {
            let appends = chunk
                .iter()
                .map(|&n| log.append(Some(event(n)), "t".into()));
            for r in futures_util::future::join_all(appends).await {
                r.unwrap();
            }
        }
        let feed = log.mirror_feed().unwrap().clone();
        let (held, _) = feed.held();
        assert!(
            (g as usize + 256..g as usize + 512).contains(&held),
            "the oldest {held} entries are held"
        );
        assert!(
            feed.range(0, g + 256).is_some(),
            "group 0 and tile 16 are held"
        );
        assert!(feed.pressed());

        let mirror = dir_mirror(&log, &dir.path().join("mirror"));
        assert!(mirror.round().await.unwrap());
        let size = g + 600;
        assert_eq!(log.mirrored_size(), size);
        let label = &"default".into();
        // Group 0's bundle and tiles 0 to 16 came from the feed; tile 17
        // (partly held) and the partial tile 18 (refused) were read back.
        assert_eq!(
            mirror.metrics.mirror_read_back.get_or_create(label).get(),
            344
        );
        // The first units (group 0's bundle, then its tiles) started with
        // the feed more than half full; once enough of their entries were
        // let go the rest (tiles 17 and 18, the upper tiles at least) gave
        // way again.
        let urgent = mirror
            .metrics
            .mirror_urgent_units
            .get_or_create(label)
            .get();
        assert!((2..=17).contains(&urgent), "{urgent} units ran urgent");
        assert_eq!(
            feed.held().0,
            held - g as usize,
            "group 0 let go, the incomplete group 1 kept for its bundle"
        );
        // Whichever way built them, the bundles are the store's.
        let root = dir.path().join("mirror/test.example/log");
        for (n, width) in [(0, 256), (16, 256), (17, 256), (18, 88)] {
            let path = entries_path(n, width);
            assert_eq!(
                std::fs::read(root.join(&path)).unwrap(),
                entry_bundle(&log.store, n, width, size).unwrap().unwrap(),
                "{path}"
            );
        }
        let payloads = |path: &str| std::fs::read(root.join(path)).unwrap();
        assert_eq!(
            payloads(&group_payload_path(0)),
            payload_bundle(&log.store, 0, g).unwrap().0
        );
        assert_eq!(
            payloads(&payload_path(18)),
            payload_bundle(&log.store, 18 * 256, size).unwrap().0
        );
        assert!(
            !root.join(payload_path(0)).exists(),
            "no tile bundle in a whole group"
        );
        log.shutdown().await;
    }

    #[tokio::test]
    async fn a_directory_mirror_writes_on_the_building_thread_as_through_the_store() {
        use crate::objects::DirStore;
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path()).unwrap();
        let w = store.local().expect("a directory writes locally");
        let read = |key: &str| std::fs::read(dir.path().join(key)).unwrap();
        let write = |o: Object| write_local(&w, &w, "log", o).unwrap();
        let once = |body: &[u8]| Object::Once("o/tile/0/000".into(), body.to_vec().into());
        write(once(b"tile"));
        assert_eq!(read("o/tile/0/000"), b"tile");
        // The same bytes again (a retried round) are fine; other bytes
        // beyond the mirrored checkpoint come from a lost history and are
        // replaced, as through the store's calls.
        write(once(b"tile"));
        write(once(b"other"));
        assert_eq!(read("o/tile/0/000"), b"other");
        // Written in place, whole blocks by direct I/O and the rest through
        // the page cache: what a crash left of it is replaced too.
        let big: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::create_dir_all(dir.path().join("o/tile/entries")).unwrap();
        std::fs::write(dir.path().join("o/tile/entries/000"), &big[..4096]).unwrap();
        write(Object::Once(
            "o/tile/entries/000".into(),
            big.clone().into(),
        ));
        assert_eq!(read("o/tile/entries/000"), big);
        write(Object::Once(
            "o/tile/entries/001".into(),
            big.clone().into(),
        ));
        assert_eq!(read("o/tile/entries/001"), big);
        // Built at a page boundary, as a directory mirror builds from the
        // feed, it goes to the disk with no staging copy: the same bytes.
        let mut aligned = Body::new(big.len(), true);
        aligned.buf().extend_from_slice(&big);
        write(Object::Once("o/tile/entries/002".into(), aligned));
        assert_eq!(read("o/tile/entries/002"), big);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("o/tile/entries/001"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o444, "write-once objects are read-only");
        }
        write(Object::Payloads("p/0".into(), b"one".to_vec().into()));
        assert_eq!(read("p/0"), b"one");
        // A payload bundle expected new but found (a retried round) is
        // replaced.
        write(Object::Payloads("p/0".into(), b"uno".to_vec().into()));
        assert_eq!(read("p/0"), b"uno");
        write(Object::Replace("p/0".into(), b"two".to_vec().into()));
        assert_eq!(read("p/0"), b"two");
        // Durable by the store's next sync, which knows of the writes.
        store.sync().await.unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path().join("p"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["0"], "no temporary files left");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_payload_bundle_a_lost_history_left_is_emptied_when_this_historys_tile_has_none() {
        use ledger_verify::mirror::decode_payload_bundle;
        let dir = tempfile::tempdir().unwrap();
        let log = mirrored_log(dir.path(), crate::mirror::feed::FEED_BYTES);
        let mirror = dir_mirror(&log, &dir.path().join("mirror"));
        for n in 0..10 {
            log.append(Some(event(n)), "t".into()).await.unwrap();
        }
        assert!(mirror.round().await.unwrap());
        assert_eq!(log.mirrored_size(), 10);
        // A history lost in a restore had got further: it left payload
        // bundles for tiles 1 and 2, which no checkpoint covered.
        let root = dir.path().join("mirror/test.example/log");
        let stale = payload_bundle(&log.store, 0, 10).unwrap().0;
        for n in [1, 2] {
            let path = root.join(payload_path(n));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &stale).unwrap();
        }
        // This history's entries from 10 have no payload; tile 1 fills,
        // tile 2 does not start.
        // Appends entries `range` without payloads and mirrors them.
        let bare = async |range: std::ops::Range<u64>| {
            for n in range.clone() {
                let mut e = event(n);
                e.payload.clear();
                log.append(Some(e), "t".into()).await.unwrap();
            }
            assert!(mirror.round().await.unwrap());
            assert_eq!(log.mirrored_size(), range.end);
        };
        bare(10..300).await;
        let records = |n: u64| {
            decode_payload_bundle(&std::fs::read(root.join(payload_path(n))).unwrap()).unwrap()
        };
        // Tile 0 (covered before) is rewritten as always: payloads up to 10.
        let tile0 = records(0);
        assert_eq!(tile0.len(), 256);
        assert!(tile0[..10].iter().all(Option::is_some));
        assert!(tile0[10..].iter().all(Option::is_none));
        // Tile 1's leftover now holds this history's empty records.
        assert_eq!(records(1), vec![None; 44]);
        // Tile 2 is beyond this checkpoint: left for the round that
        // reaches it, which empties it too; a new tile without payloads and
        // with no leftover (3) gets no bundle.
        assert_eq!(std::fs::read(root.join(payload_path(2))).unwrap(), stale);
        bare(300..800).await;
        assert_eq!(records(2), vec![None; 256]);
        assert!(!root.join(payload_path(3)).exists());
        // Nor when a later round carries that tile on, still without one.
        bare(800..810).await;
        assert!(!root.join(payload_path(3)).exists());
        log.shutdown().await;
    }

    #[test]
    fn payload_bundles_hold_an_empty_record_for_each_entry_without_a_payload() {
        use crate::store::{StagedEntry, StoreWriter};
        use ledger_verify::mirror::decode_payload_bundle;
        let dir = tempfile::tempdir().unwrap();
        let store = StoreWriter::open(&dir.path().join("db")).unwrap();
        let mut batch = store.new_batch();
        let salt = [9u8; 32];
        // Payloads at 1 and 3 of five entries.
        for i in 0u64..5 {
            let payload = format!("payload {i}");
            store.stage_entry(
                &mut batch,
                StagedEntry {
                    index: i,
                    bytes: &[i as u8; 10],
                    dedup_id: &format!("e{i}"),
                    digest: None,
                    payload: (i % 2 == 1).then_some((&salt[..], payload.as_bytes())),
                },
            );
        }
        store.commit(batch).unwrap();
        let record = |i: u64| Some((salt.to_vec(), format!("payload {i}").into_bytes()));
        let (bytes, any) = payload_bundle(&store, 0, 5).unwrap();
        assert!(any);
        assert_eq!(
            decode_payload_bundle(&bytes).unwrap(),
            vec![None, record(1), None, record(3), None]
        );
        let (bytes, any) = payload_bundle(&store, 0, 1).unwrap();
        assert!(!any, "entry 0 has no payload");
        assert_eq!(decode_payload_bundle(&bytes).unwrap(), vec![None]);
        // The entry bundle holds each entry's bytes in order.
        let bundle = entry_bundle(&store, 0, 5, 5).unwrap().unwrap();
        let entries = ledger_verify::mirror::decode_entry_bundle(&bundle).unwrap();
        let want: Vec<[u8; 10]> = (0u8..5).map(|i| [i; 10]).collect();
        assert_eq!(entries, want.iter().map(|e| &e[..]).collect::<Vec<_>>());
        assert_eq!(
            entry_bundle(&store, 0, 5, 4).unwrap(),
            None,
            "beyond the tree"
        );

        // The sequencer's feed holds the same entries: the mirror builds the
        // same bytes from it.
        let held: Vec<Held> = (0u64..5)
            .map(|i| Held {
                entry: bytes::Bytes::from(vec![i as u8; 10]),
                payload: (i % 2 == 1).then(|| (salt, bytes::Bytes::from(format!("payload {i}")))),
                redacts: (i == 4).then_some(1),
            })
            .collect();
        // The same bytes built for S3 and, aligned, for a directory.
        for aligned in [false, true] {
            let mut seen = Vec::new();
            let built =
                entry_bundle_of(held.iter(), 0, aligned, |i, h| seen.push((i, h.redacts))).unwrap();
            assert_eq!(built.into_vec(), bundle);
            let want: Vec<_> = (0..5).map(|i| (i, (i == 4).then_some(1))).collect();
            assert_eq!(seen, want, "each entry shown with its index and redaction");
            let (payloads, any) = payload_bundle_of(held.iter(), aligned);
            assert_eq!(
                (payloads.to_vec(), any),
                payload_bundle(&store, 0, 5).unwrap()
            );
            let (payloads, any) = payload_bundle_of(held[..1].iter(), aligned);
            assert_eq!((payloads.into_vec(), any), (bytes.clone(), false));
        }
    }

    #[test]
    fn an_entry_too_large_for_a_bundle_is_not_mirrored() {
        use crate::store::{StagedEntry, StoreWriter};
        let dir = tempfile::tempdir().unwrap();
        let store = StoreWriter::open(&dir.path().join("db")).unwrap();
        let mut batch = store.new_batch();
        // As a store written before the entry size limit could hold.
        for (i, len) in [(0u64, 100usize), (1, 70_000)] {
            store.stage_entry(
                &mut batch,
                StagedEntry {
                    index: i,
                    bytes: &vec![7u8; len],
                    dedup_id: &format!("e{i}"),
                    digest: None,
                    payload: None,
                },
            );
        }
        store.commit(batch).unwrap();
        let one = entry_bundle(&store, 0, 1, 2).unwrap().unwrap();
        assert_eq!(one.len(), 102);
        let err = entry_bundle(&store, 0, 2, 2).unwrap_err().to_string();
        assert!(err.contains("entry 1 is 70000 bytes"), "{err}");
    }
}
