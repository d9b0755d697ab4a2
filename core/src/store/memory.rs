//! The embedded store: the same algorithms as the Lua scripts, in process and exact. The default
//! when no Redis is configured, and the local fallback. State expires like the Redis keys do and
//! is swept as the map grows, and the number of identities held is capped (`max_identities`).
//!
//! When full, a new identity evicts an entry by CLOCK (second chance, an approximation of least
//! recently used, as nginx's `limit_req` zones evict): expired entries go first, then entries
//! nobody asked about since the hand last passed. An identity that keeps sending (allowed or
//! denied) is touched by every check and stays counted while a flood of one-shot identities
//! cycles through the rest; only an identity idle for as long as the flood takes to fill its
//! shard can lose its state. Refusing new identities instead would deny every newcomer while the
//! store is full of a flood's entries. Eviction is amortised O(1) per request: each step of the
//! hand evicts an entry or clears a touch that an earlier request set.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use crate::algorithm::{self, Algorithm, Outcome, SwState};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};

use super::Request;

const SHARDS: usize = 64;

/// Default cap on identities held in process: 20-30 MB at the 200-300 bytes per identity measured
/// by core/tests/state_bounds.rs `bytes_per_identity_stay_small` (one to three limits, short keys).
/// Each of the 64 shards holds its share, so the store may evict a little before the cap.
pub const DEFAULT_MAX_IDENTITIES: usize = 100_000;

#[derive(Debug)]
enum Value {
    /// Every window of one identity, as the sliding-window key holds them in Redis.
    Windows(Vec<SwState>),
    /// Every bucket's theoretical arrival time, as the token-bucket key holds them.
    Tats(Vec<u64>),
    Log(VecDeque<u64>),
}

#[derive(Debug)]
struct Entry {
    value: Value,
    expires_at_us: u64,
    /// Asked about since the CLOCK hand last passed it: spared once.
    touched: bool,
    /// Which ring slot is this entry's (a key removed and made again has a new one).
    seq: u64,
}

#[derive(Debug)]
struct Shard {
    map: HashMap<Arc<str>, Entry>,
    /// Keys in insertion order, for the CLOCK hand; a slot whose seq no longer matches its key's
    /// entry is stale (the entry expired or was reset) and is skipped.
    ring: VecDeque<(Arc<str>, u64)>,
    next_seq: u64,
    /// Most entries this shard holds.
    cap: usize,
    ops_since_sweep: usize,
    /// Sweep when the ops since the last sweep reach the size then: amortised O(1) per op.
    sweep_after: usize,
}

impl Shard {
    fn new(cap: usize) -> Self {
        Shard { map: HashMap::new(), ring: VecDeque::new(), next_seq: 0, cap, ops_since_sweep: 0, sweep_after: 0 }
    }

    fn maybe_sweep(&mut self, now: u64) {
        self.ops_since_sweep += 1;
        if self.ops_since_sweep >= self.sweep_after.max(64) {
            self.map.retain(|_, e| e.expires_at_us > now);
            self.ops_since_sweep = 0;
            self.sweep_after = self.map.len();
            self.compact_ring();
        }
    }

    /// Drops stale ring slots once they outnumber the live ones (amortised O(1)).
    fn compact_ring(&mut self) {
        if self.ring.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.ring.retain(|(k, seq)| map.get(&**k).is_some_and(|e| e.seq == *seq));
        }
    }

    /// The entry of `key` if live, marked as asked about.
    fn live(&mut self, key: &str, now: u64) -> Option<&mut Entry> {
        match self.map.get(key) {
            Some(e) if e.expires_at_us <= now => {
                self.map.remove(key);
                None
            }
            Some(_) => {
                let e = self.map.get_mut(key)?;
                e.touched = true;
                Some(e)
            }
            None => None,
        }
    }

    /// Stores `value` for `key`: in place if it has an entry, else as a new entry, evicting one
    /// first when the shard is full.
    fn put(&mut self, key: &str, value: Value, expires_at_us: u64, now: u64) {
        if let Some(e) = self.map.get_mut(key) {
            e.value = value;
            e.expires_at_us = expires_at_us;
            e.touched = true;
            return;
        }
        while self.map.len() >= self.cap {
            if !self.evict_one(now) {
                break;
            }
        }
        let key: Arc<str> = Arc::from(key);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ring.push_back((key.clone(), seq));
        // a new entry is not touched: a one-shot identity is the first the hand takes
        self.map.insert(key, Entry { value, expires_at_us, touched: false, seq });
    }

    /// One turn of the CLOCK hand until it evicts an entry; false if the shard holds none.
    fn evict_one(&mut self, now: u64) -> bool {
        while let Some((key, seq)) = self.ring.pop_front() {
            let Some(e) = self.map.get_mut(&*key) else { continue };
            if e.seq != seq {
                continue;
            }
            if e.touched && e.expires_at_us > now {
                e.touched = false;
                self.ring.push_back((key, seq));
                continue;
            }
            self.map.remove(&*key);
            return true;
        }
        false
    }
}

/// In-process state in shards, each behind its own lock: all keys of one identity share a shard,
/// so one lock makes a multi-window check atomic, as one script call does on Redis. The shard of
/// a key hashes it with a per-store random key, so a client cannot aim a flood at one shard.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    shards: Arc<Vec<Mutex<Shard>>>,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
    max_identities: usize,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

impl MemoryStore {
    /// A store holding at most [`DEFAULT_MAX_IDENTITIES`] identities.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::build(clock, DEFAULT_MAX_IDENTITIES)
    }

    /// A store holding at most `max_identities` identities (at least 1; see the module's policy).
    pub fn with_max_identities(clock: Arc<dyn Clock>, max_identities: usize) -> Result<Self> {
        validate_max_identities(max_identities)?;
        Ok(Self::build(clock, max_identities))
    }

    fn build(clock: Arc<dyn Clock>, max_identities: usize) -> Self {
        // each shard's share, rounded up: the cap holds to within SHARDS entries
        let per_shard = max_identities.div_ceil(SHARDS).max(1);
        MemoryStore {
            shards: Arc::new((0..SHARDS).map(|_| Mutex::new(Shard::new(per_shard))).collect()),
            hasher: RandomState::new(),
            clock,
            max_identities,
        }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The cap this store was made with.
    pub fn max_identities(&self) -> usize {
        self.max_identities
    }

    /// Live and not-yet-swept entries; what the memory-bound test watches.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).map.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    pub(crate) fn evaluate(&self, req: &Request<'_>) -> Outcome {
        self.evaluate_seeded(req, None)
    }

    /// `evaluate`, first merging `seed` (an identity's state as Redis stores it: sliding window
    /// `{i, p, c}` per window, token bucket one TAT per limit; sliding log: the count of each
    /// window) into what this store holds, keeping
    /// the larger count of each window: the local fallback when Redis can read but not write
    /// (maxmemory), so an identity Redis counted at 8 of 10 gets at most 2 more here.
    pub(crate) fn evaluate_seeded(&self, req: &Request<'_>, seed: Option<&[i64]>) -> Outcome {
        let now = self.clock.now_us();
        let seed = seed.map(|state| algorithm::StateReply { now_us: now, state });
        // A panic elsewhere cannot leave counters half-written (we write after computing), so
        // a poisoned lock is still safe to use.
        let mut shard = self.shard(&req.keys[0]).lock().unwrap_or_else(|p| p.into_inner());
        shard.maybe_sweep(now);
        let key = &req.keys[0];
        match req.algorithm {
            Algorithm::SlidingWindow => {
                let n = req.limits.len();
                let mut states: Vec<Option<SwState>> = match shard.live(key, now) {
                    Some(Entry { value: Value::Windows(v), .. }) if v.len() == n => {
                        v.iter().copied().map(Some).collect()
                    }
                    _ => vec![None; n],
                };
                if let Some(seed) = &seed {
                    for (mine, theirs) in states.iter_mut().zip(seed.windows(n)) {
                        *mine = join_windows(*mine, theirs);
                    }
                }
                let out = algorithm::sliding_window(&mut states, req.limits, now, req.cost, req.consume);
                if req.consume && out.allowed {
                    let states: Vec<SwState> =
                        states.into_iter().map(|s| s.expect("consumed windows hold state")).collect();
                    // as lua/prelude.lua's sw_write: the key lives until the last window's next one ends
                    let expires_at_us =
                        states.iter().zip(req.limits).map(|(s, l)| s.expires_at_us(l.window_us())).max().unwrap_or(now);
                    shard.put(key, Value::Windows(states), expires_at_us, now);
                }
                out
            }
            Algorithm::TokenBucket => {
                let n = req.limits.len();
                let mut tats: Vec<Option<u64>> = match shard.live(key, now) {
                    Some(Entry { value: Value::Tats(v), .. }) if v.len() == n => v.iter().copied().map(Some).collect(),
                    _ => vec![None; n],
                };
                if let Some(seed) = &seed {
                    for (mine, theirs) in tats.iter_mut().zip(seed.tats(n)) {
                        *mine = (*mine).max(theirs);
                    }
                }
                let out = algorithm::token_bucket(&mut tats, req.limits, now, req.cost, req.consume);
                if req.consume && out.allowed {
                    let tats: Vec<u64> = tats.into_iter().map(|t| t.expect("consumed buckets hold a TAT")).collect();
                    let expires_at_us = tats.iter().copied().max().unwrap_or(now);
                    shard.put(key, Value::Tats(tats), expires_at_us, now);
                }
                out
            }
            Algorithm::SlidingLog => {
                let longest = req.limits.iter().map(|l| l.window().as_micros() as u64).max().unwrap_or(0);
                let mut log = match shard.live(key, now) {
                    Some(Entry { value: Value::Log(l), .. }) => std::mem::take(l),
                    _ => VecDeque::new(),
                };
                // a log's seed is what Redis counts in each window: as many entries as the
                // largest count, placed now (later than their real times, so they count in every
                // window for longer: more denial, never more admission)
                let counted = seed.and_then(|s| s.state.iter().max().copied()).unwrap_or(0).max(0) as usize;
                log.extend(std::iter::repeat_n(now, counted.saturating_sub(log.len())));
                let out = algorithm::sliding_log(&mut log, req.limits, now, req.cost, req.consume);
                if let Some(&newest) = log.back() {
                    shard.put(key, Value::Log(log), newest + longest, now);
                } else {
                    shard.map.remove(key.as_str());
                }
                out
            }
        }
    }

    pub(crate) fn reset(&self, keys: &[String]) {
        let mut shard = self.shard(&keys[0]).lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            shard.map.remove(k.as_str());
        }
    }
}

/// Refuses a cap of 0 (a store that can hold nobody counts nobody).
pub(crate) fn validate_max_identities(max_identities: usize) -> Result<()> {
    if max_identities == 0 {
        return Err(Error::config("max_identities", 0, "must be at least 1"));
    }
    Ok(())
}

/// The larger of two states of one window: the later window, or in the same window the larger
/// counts (a join: the merged state never admits more than either would).
fn join_windows(a: Option<SwState>, b: Option<SwState>) -> Option<SwState> {
    match (a, b) {
        (Some(a), Some(b)) if a.idx == b.idx => {
            Some(SwState { idx: a.idx, prev: a.prev.max(b.prev), curr: a.curr.max(b.curr) })
        }
        (Some(a), Some(b)) => Some(if a.idx > b.idx { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    #[test]
    fn a_seed_joins_as_the_later_window_or_the_larger_counts() {
        let s = |idx, prev, curr| Some(SwState { idx, prev, curr });
        assert_eq!(join_windows(s(5, 1, 8), s(5, 3, 2)), s(5, 3, 8));
        assert_eq!(join_windows(s(4, 9, 9), s(5, 0, 1)), s(5, 0, 1));
        assert_eq!(join_windows(None, s(5, 0, 1)), s(5, 0, 1));
        assert_eq!(join_windows(s(5, 0, 1), None), s(5, 0, 1));
    }

    #[test]
    fn the_hand_spares_a_touched_entry_once_and_evicts_the_untouched() {
        let mut shard = Shard::new(2);
        let v = || Value::Tats(vec![1]);
        shard.put("a", v(), u64::MAX, 0);
        shard.put("b", v(), u64::MAX, 0);
        assert!(shard.live("a", 0).is_some()); // a is checked again
        shard.put("c", v(), u64::MAX, 0); // full: b, never checked since, goes
        assert!(shard.map.contains_key("a") && shard.map.contains_key("c") && !shard.map.contains_key("b"));
        // an expired entry goes before any live one, touched or not
        shard.put("a", v(), 10, 0);
        shard.put("d", v(), u64::MAX, 20);
        assert!(!shard.map.contains_key("a") && shard.map.len() == 2);
    }

    #[test]
    fn a_cap_of_zero_is_refused() {
        assert!(MemoryStore::with_max_identities(Arc::new(FakeClock::new(0)), 0).is_err());
    }
}
