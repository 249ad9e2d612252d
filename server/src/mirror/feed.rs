//! The mirror's feed: the entries (and payloads) the sequencer committed
//! last, handed to the mirror in memory, so that it need not read them back
//! from RocksDB to build their bundles. The sequencer pushes each durable
//! group and erases the payloads redactions drop; the mirror takes the
//! entries of a tile when the feed holds all of them and releases what it
//! has published. Bounded by bytes: past the bound newly committed entries
//! are not held until the mirror releases some, and the mirror reads those
//! from the store, as it does after a restart.
//! The store stays the record; the feed only saves reading it back.

use bytes::Bytes;
use ledger_verify::entry::SALT_LEN;
use std::collections::VecDeque;
use std::sync::Mutex;

/// A committed entry's stored bytes, its payload with the salt, and, for a
/// redaction, the index of the entry whose payload it erases (so the
/// mirror need not decode entries to find redactions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub entry: Bytes,
    pub payload: Option<([u8; SALT_LEN], Bytes)>,
    pub redacts: Option<u64>,
}

impl Held {
    /// Bytes counted against the bound (with a share for the bookkeeping).
    fn weight(&self) -> usize {
        64 + self.entry.len() + self.payload.as_ref().map_or(0, |p| SALT_LEN + p.1.len())
    }
}

/// Entries of consecutive indexes, from `first`.
#[derive(Default)]
struct Run {
    first: u64,
    held: VecDeque<Held>,
}

impl Run {
    fn end(&self) -> u64 {
        self.first + self.held.len() as u64
    }

    fn contains(&self, index: u64) -> bool {
        self.first <= index && index < self.end()
    }
}

/// What the feed holds: runs of consecutive entries in index order, with a
/// gap between two runs where groups found the feed full.
#[derive(Default)]
struct Runs {
    runs: VecDeque<Run>,
    bytes: usize,
}

/// Recently committed entries, shared by a log's sequencer and its mirror.
pub struct Feed {
    held: Mutex<Runs>,
    /// Entries the mirror has released, for the sequencer to free (see
    /// [`Feed::free_released`]).
    released: Mutex<Vec<Vec<Held>>>,
    max_bytes: usize,
}

/// The feed's default bound: about half a second of entries at full
/// ingest, several rounds of a mirror that keeps up.
pub const FEED_BYTES: usize = 64 << 20;

impl Feed {
    pub fn new(max_bytes: usize) -> Feed {
        Feed {
            held: Mutex::new(Runs::default()),
            released: Mutex::new(Vec::new()),
            max_bytes,
        }
    }

    /// The sequencer: the entries of a durable group, the first at index
    /// `first`. A group that would take the feed past its bound is not
    /// held: the entries the feed holds are the oldest the mirror has not
    /// released, the ones it needs next, and it reads the group back from
    /// the store when it gets there. (Dropping the oldest instead would
    /// leave a mirror that fell a bound behind reading back everything
    /// until the load eased, each entry read back costing it more than the
    /// ones handed over, so that it fell further behind.)
    pub fn push(&self, first: u64, group: Vec<Held>) {
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        if group.is_empty() {
            return;
        }
        if held.runs.back().is_some_and(|r| first < r.end()) {
            // Indexes never go back while a log runs; start again if they do.
            *held = Runs::default();
        }
        let weight: usize = group.iter().map(Held::weight).sum();
        if held.bytes + weight > self.max_bytes {
            return;
        }
        held.bytes += weight;
        match held.runs.back_mut() {
            Some(run) if run.end() == first => run.held.extend(group),
            _ => held.runs.push_back(Run {
                first,
                held: group.into(),
            }),
        }
    }

    /// The sequencer, once a redaction of entry `index` is durable: its
    /// payload is gone from the record, so from the feed too.
    pub fn erase(&self, index: u64) {
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        let Runs { runs, bytes } = &mut *held;
        let Some(run) = runs.iter_mut().find(|r| r.contains(index)) else {
            return;
        };
        if let Some((_, p)) = run.held[(index - run.first) as usize].payload.take() {
            *bytes -= SALT_LEN + p.len();
        }
    }

    /// The mirror: `f` of entries `start..end`, if the feed holds every one
    /// of them. `f` runs under the feed's lock, which the sequencer takes to
    /// push each group: it should only copy the entries out (a tile's
    /// bundles take some tens of microseconds). Reading them in place saves
    /// a handle per entry and payload, and its allocation.
    pub fn with_range<T>(
        &self,
        start: u64,
        end: u64,
        f: impl FnOnce(std::collections::vec_deque::Iter<'_, Held>) -> T,
    ) -> Option<T> {
        let held = self.held.lock().ok()?;
        if start > end {
            return None;
        }
        let run = held
            .runs
            .iter()
            .find(|r| r.first <= start && end <= r.end())?;
        let from = (start - run.first) as usize;
        let to = (end - run.first) as usize;
        Some(f(run.held.range(from..to)))
    }

    /// Entries `start..end` if the feed holds every one of them (handles to
    /// the bytes, not copies).
    #[cfg(test)]
    pub fn range(&self, start: u64, end: u64) -> Option<Vec<Held>> {
        self.with_range(start, end, |held| held.cloned().collect())
    }

    /// The mirror: it no longer needs the entries before `index`. They are
    /// set aside for the sequencer to free (see [`Feed::free_released`]).
    pub fn release(&self, index: u64) {
        let mut gone = Vec::new();
        {
            let Ok(mut held) = self.held.lock() else {
                return;
            };
            let Runs { runs, bytes } = &mut *held;
            while let Some(run) = runs.front_mut() {
                while run.first < index
                    && let Some(h) = run.held.pop_front()
                {
                    *bytes -= h.weight();
                    run.first += 1;
                    gone.push(h);
                }
                if !run.held.is_empty() {
                    break;
                }
                runs.pop_front();
            }
        }
        if !gone.is_empty()
            && let Ok(mut released) = self.released.lock()
        {
            released.push(gone);
        }
    }

    /// The sequencer, before each group: frees the entries the mirror has
    /// released. The sequencer encoded the entries' buffers, and freed on
    /// the thread that allocated them they go back to that thread's free
    /// lists at once, still mapped and in cache, for the next group's
    /// entries (the payloads, decoded by the gRPC workers, are freed on the
    /// sequencer as they are with no mirror). Freed on the mirror's
    /// threads, the allocator took them back later and the sequencer's
    /// allocations kept taking fresh pages (page faults that, on a virtual
    /// machine that hands free memory back to its host, cost a fault in the
    /// host too). What waits here is at most about the feed's bound: the
    /// mirror releases only what the feed held.
    pub fn free_released(&self) {
        let released = self
            .released
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        drop(released);
    }

    /// Whether the feed is at least half full: a mirror that falls further
    /// behind will soon have to read entries back from the store.
    pub fn pressed(&self) -> bool {
        self.held
            .lock()
            .is_ok_and(|held| held.bytes.saturating_mul(2) >= self.max_bytes)
    }

    /// Entries held, and their weight in bytes.
    pub fn held(&self) -> (usize, usize) {
        self.held.lock().map_or((0, 0), |held| {
            (held.runs.iter().map(|r| r.held.len()).sum(), held.bytes)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(i: u64, payload: bool) -> Held {
        Held {
            entry: Bytes::from(format!("entry {i}")),
            payload: payload.then(|| ([i as u8; SALT_LEN], Bytes::from(format!("payload {i}")))),
            redacts: None,
        }
    }

    fn group(from: u64, to: u64) -> Vec<Held> {
        (from..to).map(|i| held(i, i % 2 == 0)).collect()
    }

    #[test]
    fn ranges_are_served_only_when_every_entry_is_held() {
        let f = Feed::new(FEED_BYTES);
        assert_eq!(f.range(0, 1), None, "nothing pushed yet");
        f.push(10, group(10, 15));
        f.push(15, group(15, 20));
        assert_eq!(f.range(10, 20), Some(group(10, 20)));
        assert_eq!(f.range(12, 14), Some(group(12, 14)));
        assert_eq!(f.range(9, 12), None, "entry 9 was never held");
        assert_eq!(f.range(15, 21), None, "entry 20 is not committed");
        f.release(16);
        assert_eq!(f.range(15, 17), None, "released");
        assert_eq!(f.range(16, 20), Some(group(16, 20)));
        assert_eq!(f.held().0, 4);
    }

    #[test]
    fn a_group_after_a_gap_is_held_as_a_run_of_its_own() {
        let f = Feed::new(FEED_BYTES);
        f.push(0, group(0, 5));
        f.push(8, group(8, 10));
        assert_eq!(f.range(0, 5), Some(group(0, 5)));
        assert_eq!(f.range(8, 10), Some(group(8, 10)));
        assert_eq!(f.range(4, 9), None, "entries 5 to 7 are not held");
        assert_eq!(f.held().0, 7);
        f.erase(9);
        assert_eq!(f.range(9, 10).unwrap()[0].payload, None);
        f.release(9);
        assert_eq!(f.range(8, 9), None, "released across the gap");
        assert_eq!(f.held().0, 1);
        f.push(3, group(3, 4));
        assert_eq!(f.range(9, 10), None, "indexes went back: started again");
        assert_eq!(f.range(3, 4), Some(group(3, 4)));
    }

    #[test]
    fn a_redaction_erases_the_held_payload() {
        let f = Feed::new(FEED_BYTES);
        f.push(0, group(0, 4));
        let before = f.held().1;
        f.erase(2);
        f.erase(3); // No payload: nothing to erase.
        f.erase(99); // Not held.
        let got = f.range(0, 4).unwrap();
        assert_eq!(got[2].payload, None);
        assert_eq!(got[2].entry, held(2, true).entry, "the entry stays");
        assert_eq!(got[0], held(0, true));
        assert_eq!(f.held().1, before - SALT_LEN - "payload 2".len());
    }

    #[test]
    fn released_entries_are_freed_by_the_sequencer_on_its_own_thread() {
        use std::sync::{Arc, Mutex};
        /// An entry's buffer that notes the thread it was freed on.
        struct Noted(Arc<Mutex<Vec<std::thread::ThreadId>>>, [u8; 1]);
        impl AsRef<[u8]> for Noted {
            fn as_ref(&self) -> &[u8] {
                &self.1
            }
        }
        impl Drop for Noted {
            fn drop(&mut self) {
                self.0.lock().unwrap().push(std::thread::current().id());
            }
        }
        let freed = Arc::new(Mutex::new(Vec::new()));
        let f = Arc::new(Feed::new(FEED_BYTES));
        f.push(
            0,
            (0..4u8)
                .map(|i| Held {
                    entry: Bytes::from_owner(Noted(freed.clone(), [i])),
                    payload: None,
                    redacts: None,
                })
                .collect(),
        );
        // The mirror releases from a thread of its own.
        let mirror = f.clone();
        std::thread::spawn(move || mirror.release(3))
            .join()
            .unwrap();
        assert!(freed.lock().unwrap().is_empty(), "released, not freed");
        assert_eq!(f.held().0, 1, "the rest is still held");
        f.free_released();
        let sequencer = std::thread::current().id();
        assert_eq!(*freed.lock().unwrap(), vec![sequencer; 3]);
        f.free_released();
        assert_eq!(freed.lock().unwrap().len(), 3, "each freed once");
        f.release(4);
        f.free_released();
        assert_eq!(*freed.lock().unwrap(), vec![sequencer; 4]);
    }

    #[test]
    fn past_its_bound_the_feed_keeps_the_oldest_entries() {
        let one = held(0, true).weight();
        let f = Feed::new(one * 4);
        f.push(0, group(0, 2));
        f.push(2, group(2, 4));
        f.push(4, group(4, 6));
        assert_eq!(f.range(0, 4), Some(group(0, 4)), "the oldest stay");
        assert_eq!(f.range(4, 5), None, "a group past the bound is not held");
        let (n, bytes) = f.held();
        assert_eq!(n, 4);
        assert!(bytes <= one * 4, "{bytes}");
        assert!(f.pressed(), "more than half full");
        // Released entries make room for the next group, after a gap.
        f.release(3);
        f.push(6, group(6, 8));
        assert_eq!(f.range(3, 4), Some(group(3, 4)));
        assert_eq!(f.range(6, 8), Some(group(6, 8)));
        assert_eq!(f.range(3, 8), None);
        f.release(100);
        assert_eq!(f.held(), (0, 0));
        assert!(!f.pressed());
    }
}
