//! The embedded store: the same algorithms as the Lua scripts, in process and exact. The default
//! when no Redis is configured, and the local fallback. State expires like the Redis keys do and
//! is swept as the map grows, so a stream of new identities cannot grow it without bound.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use crate::algorithm::{self, Algorithm, Outcome, SwState};
use crate::clock::{Clock, SystemClock};

use super::Request;

const SHARDS: usize = 64;

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
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<String, Entry>,
    ops_since_sweep: usize,
    /// Sweep when the ops since the last sweep reach the size then: amortised O(1) per op.
    sweep_after: usize,
}

impl Shard {
    fn maybe_sweep(&mut self, now: u64) {
        self.ops_since_sweep += 1;
        if self.ops_since_sweep >= self.sweep_after.max(64) {
            self.map.retain(|_, e| e.expires_at_us > now);
            self.ops_since_sweep = 0;
            self.sweep_after = self.map.len();
        }
    }

    fn live(&mut self, key: &str, now: u64) -> Option<&mut Entry> {
        match self.map.get(key) {
            Some(e) if e.expires_at_us <= now => {
                self.map.remove(key);
                None
            }
            _ => self.map.get_mut(key),
        }
    }
}

/// In-process state, sharded by Redis Cluster slot: all keys of one identity share a shard, so
/// one lock makes a multi-window check atomic, as one script call does on Redis.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    shards: Arc<Vec<Mutex<Shard>>>,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

impl MemoryStore {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        MemoryStore { shards: Arc::new((0..SHARDS).map(|_| Mutex::new(Shard::default())).collect()), clock }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Live and not-yet-swept entries; what the memory-bound test watches.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).map.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    pub(crate) fn evaluate(&self, req: &Request<'_>) -> Outcome {
        let now = self.clock.now_us();
        // A panic elsewhere cannot leave counters half-written (we write after computing), so
        // a poisoned lock is still safe to use.
        let mut shard = self.shard(&req.keys[0]).lock().unwrap_or_else(|p| p.into_inner());
        shard.maybe_sweep(now);
        match req.algorithm {
            Algorithm::SlidingWindow => {
                let key = &req.keys[0];
                let n = req.limits.len();
                let mut states: Vec<Option<SwState>> = match shard.live(key, now) {
                    Some(Entry { value: Value::Windows(v), .. }) if v.len() == n => {
                        v.iter().copied().map(Some).collect()
                    }
                    _ => vec![None; n],
                };
                let out = algorithm::sliding_window(&mut states, req.limits, now, req.cost, req.consume);
                if req.consume && out.allowed {
                    let states: Vec<SwState> =
                        states.into_iter().map(|s| s.expect("consumed windows hold state")).collect();
                    // as lua/prelude.lua's sw_write: the key lives until the last window's next one ends
                    let expires_at_us =
                        states.iter().zip(req.limits).map(|(s, l)| s.expires_at_us(l.window_us())).max().unwrap_or(now);
                    shard.map.insert(key.clone(), Entry { value: Value::Windows(states), expires_at_us });
                }
                out
            }
            Algorithm::TokenBucket => {
                let key = &req.keys[0];
                let n = req.limits.len();
                let mut tats: Vec<Option<u64>> = match shard.live(key, now) {
                    Some(Entry { value: Value::Tats(v), .. }) if v.len() == n => v.iter().copied().map(Some).collect(),
                    _ => vec![None; n],
                };
                let out = algorithm::token_bucket(&mut tats, req.limits, now, req.cost, req.consume);
                if req.consume && out.allowed {
                    let tats: Vec<u64> = tats.into_iter().map(|t| t.expect("consumed buckets hold a TAT")).collect();
                    let expires_at_us = tats.iter().copied().max().unwrap_or(now);
                    shard.map.insert(key.clone(), Entry { value: Value::Tats(tats), expires_at_us });
                }
                out
            }
            Algorithm::SlidingLog => {
                let longest = req.limits.iter().map(|l| l.window().as_micros() as u64).max().unwrap_or(0);
                let key = &req.keys[0];
                let mut log = match shard.map.remove(key) {
                    Some(Entry { value: Value::Log(l), expires_at_us }) if expires_at_us > now => l,
                    _ => VecDeque::new(),
                };
                let out = algorithm::sliding_log(&mut log, req.limits, now, req.cost, req.consume);
                if !log.is_empty() {
                    let newest = *log.back().expect("non-empty");
                    let expires_at_us = newest + longest;
                    shard.map.insert(key.clone(), Entry { value: Value::Log(log), expires_at_us });
                }
                out
            }
        }
    }

    pub(crate) fn reset(&self, keys: &[String]) {
        let mut shard = self.shard(&keys[0]).lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            shard.map.remove(k);
        }
    }
}
