//! Local cache layer between the limiter and Redis: a denial cache, per-identity coalescing
//! (one script call in flight per identity, later arrivals batched into the next), and leases of
//! permits for hot identities. State lives in a bounded moka cache. How each mechanism bounds its
//! error is in docs/ARCHITECTURE.md, "Local cache layer".

#[cfg(test)]
mod tests;
#[cfg_attr(not(test), allow(dead_code))]
mod twin;

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use siphasher::sip128::SipHasher13;
use tokio::sync::oneshot;

use crate::algorithm::{emission_interval_us, Algorithm, Outcome, StateReply};
use crate::decision::Source;
use crate::error::{Error, Result};
use crate::keys::{epoch_us, state_field, state_hashes};
use crate::limit::Limit;
use crate::per_process::PerProcess;
use crate::remote::Remote;
use crate::scripts::{limit_args, LEASE_RETURN, SW_BATCH, TB_BATCH};
use crate::store::Request;

/// Cache settings. Every field has a default; `{}` turns the layer on with them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheOptions {
    /// Answer a denied identity locally until the retry time Redis gave.
    pub denial_cache: bool,
    /// One script call in flight per identity; concurrent checks join the next one.
    pub coalesce: bool,
    /// Most requests in one coalesced call.
    pub max_batch: usize,
    /// Wait this long (0–500 µs) before sending a call, to gather more arrivals: of the same
    /// identity (one coalesced call) and of others (one script call, core/src/store/redis/batch.rs).
    pub batch_window_us: u64,
    /// Reserve permits for hot identities (sliding window and token bucket; needs `coalesce`).
    pub leases: bool,
    /// Lifetime of a lease (100–500 ms).
    pub lease_ms: u64,
    /// Most permits outstanding in leases of one identity, over all instances, as a share of its
    /// smallest limit (default 1%). Below 2 permits, no leases.
    pub drift_ratio: f64,
    /// Largest single lease.
    pub max_lease: u64,
    /// Size cap of the cache in bytes: an entry weighs its heap bytes (a lease, held by hot
    /// identities only, excepted).
    pub max_bytes: u64,
    /// Entries unused this long are dropped (their lease, if any, is returned).
    pub idle_ms: u64,
    /// An identity gets an entry on its second check within this period (or at once when
    /// denied): the doorkeeper that remembers first sightings forgets them all each period, so a
    /// long tail of identities seen once does not churn the cache. 100 ms – 1 hour.
    pub doorkeeper_ms: u64,
    /// Cached denials and leases end up to this share early, at random, so entries made together
    /// do not all go back to Redis together.
    pub jitter_ratio: f64,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            denial_cache: true,
            coalesce: true,
            max_batch: 256,
            batch_window_us: 0,
            leases: true,
            lease_ms: 250,
            drift_ratio: 0.01,
            max_lease: 1000,
            max_bytes: 64 << 20,
            idle_ms: 10_000,
            doorkeeper_ms: 1_000,
            jitter_ratio: 0.1,
        }
    }
}

impl CacheOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        if !(100..=500).contains(&self.lease_ms) {
            return Err(Error::config("cache.lease_ms", self.lease_ms, "must be 100–500"));
        }
        if !(100..=3_600_000).contains(&self.doorkeeper_ms) {
            return Err(Error::config("cache.doorkeeper_ms", self.doorkeeper_ms, "must be 100–3600000"));
        }
        if self.batch_window_us > 500 {
            return Err(Error::config("cache.batch_window_us", self.batch_window_us, "must be 0–500"));
        }
        if !(0.0..=0.1).contains(&self.drift_ratio) {
            return Err(Error::config("cache.drift_ratio", self.drift_ratio, "must be in [0, 0.1]"));
        }
        if !(0.0..0.5).contains(&self.jitter_ratio) {
            return Err(Error::config("cache.jitter_ratio", self.jitter_ratio, "must be in [0, 0.5)"));
        }
        if self.max_batch == 0 || self.max_bytes < 4096 {
            return Err(Error::config(
                "cache",
                format!("max_batch={}, max_bytes={}", self.max_batch, self.max_bytes),
                "max_batch ≥ 1, max_bytes ≥ 4096",
            ));
        }
        Ok(())
    }
}

/// What the cache holds right now (for tests, benches and dashboards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: u64,
    /// Sum of entry weights, what the cap bounds.
    pub weighted_bytes: u64,
    pub max_bytes: u64,
    /// Leases granted and permits given back so far.
    pub leases_granted: u64,
    pub permits_leased: u64,
    pub permits_returned: u64,
}

/// What moka keeps per entry besides our key and value (its entry record, key hash, deque node,
/// map bucket), measured: `an_entry_weighs_what_it_takes_on_the_heap` (core/tests/cache_memory.rs)
/// fails when the weight falls short of an entry's heap bytes.
const MOKA_ENTRY_BYTES: usize = 256;

/// Per-entry weight, the heap bytes an entry takes: the slot, a denial's outcome for `windows`
/// limits, and moka's own record with its key. A lease is not weighed: only hot identities hold
/// one, and its memory goes when it is spent or expires.
fn weight(windows: usize) -> u32 {
    let slot = std::mem::size_of::<Slot>() + 2 * std::mem::size_of::<usize>(); // in its Arc
    let denial = windows * std::mem::size_of::<crate::algorithm::WindowEval>();
    (std::mem::size_of::<Id>() + slot + denial + MOKA_ENTRY_BYTES).min(u32::MAX as usize) as u32
}

/// An identity in the cache: a 128-bit SipHash-1-3 of its name under a key drawn per cache, not
/// the name. moka then compares 16 inline bytes where it followed a pointer to ~50 (its key lookups
/// were a third of a cached hot/tail run's client CPU, perf), and an entry no longer holds a copy
/// of the name. Two identities share an entry only if their ids collide: about n²/2¹²⁹ for n
/// identities, and no client can aim for it without the key (long identities' tags are 128 bits
/// of SHA-256 too, keys.rs).
type Id = u128;

/// Computes [`Id`]s with this cache's key.
#[derive(Clone)]
struct IdHasher(SipHasher13);

impl IdHasher {
    fn new() -> Self {
        // RandomState is seeded from the OS; its hashes of constants are secret, random keys.
        let seed = std::collections::hash_map::RandomState::new();
        IdHasher(SipHasher13::new_with_keys(seed.hash_one(0u8), seed.hash_one(1u8)))
    }

    fn id(&self, name: &str) -> Id {
        self.0.hash(name.as_bytes()).as_u128()
    }
}

/// moka's hasher for [`Id`]s, which are keyed hashes already: their low 64 bits.
#[derive(Clone, Default)]
struct Prehashed;

impl BuildHasher for Prehashed {
    type Hasher = PrehashedHasher;
    fn build_hasher(&self) -> PrehashedHasher {
        PrehashedHasher(0)
    }
}

struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn write_u128(&mut self, id: u128) {
        self.0 = id as u64;
    }
    fn write(&mut self, bytes: &[u8]) {
        // only Ids are hashed here; anything else still gets a usable (FNV-1a) hash
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type Reply = Result<(Outcome, Source)>;

struct Waiter {
    cost: u64,
    /// None: the caller driving the call inline, answered by return value.
    tx: Option<oneshot::Sender<Reply>>,
}

/// "Requests costing at least `min_cost` are denied until `until`."
struct Denial {
    min_cost: u64,
    outcome: Outcome,
    at: Instant,
    until: Instant,
}

struct Lease {
    /// The identity's keys, to give the unused rest back to.
    keys: Vec<String>,
    left: u64,
    granted: u64,
    /// The outcome of the grant (remaining already net of the lease).
    outcome: Outcome,
    at: Instant,
    expires: Instant,
    member: String,
    /// sw: window number per limit at the grant; tb: TAT per limit right after it.
    marks: Vec<u64>,
}

#[derive(Default)]
struct SlotState {
    denial: Option<Denial>,
    /// Boxed: most entries never hold one.
    lease: Option<Box<Lease>>,
    in_flight: bool,
    queue: Vec<Waiter>,
    /// Lease size to ask for next (adapted to how fast leases are spent).
    next_want: u64,
    last_remote: Option<Instant>,
    /// Redis calls to make without asking for a lease, after a lease expired having served fewer
    /// than LEASE_MIN_USES callers: such an identity is not hot enough, and each such lease costs
    /// a return call (the Node bench's 10,000 identities lost throughput to that).
    lease_cooldown: u8,
}

/// An identity's entry. Its keys are not kept here: every check brings them, and the lease
/// that must outlive a check carries its own.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
}

impl SlotState {
    /// Nothing in flight and nobody waiting. The queue's buffer goes too: kept, an entry would
    /// hold its busiest moment's buffer for life, unweighed, and a soak's heap grew 0.3 MB a
    /// minute as more identities saw company (`coalesced_callers_leave_nothing_behind`).
    fn settle(&mut self) {
        self.in_flight = false;
        self.queue = Vec::new();
    }
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A lease taken out of a slot, to give back.
struct Unused {
    keys: Vec<String>,
    unused: u64,
    member: String,
    marks: Vec<u64>,
}

/// A bitset of identities seen lately (TinyLFU's doorkeeper), cleared every period.
struct Doorkeeper {
    bits: Vec<AtomicU64>,
    epoch: Instant,
    cleared_at_ms: AtomicU64,
    period_ms: u64,
}

impl Doorkeeper {
    const WORDS: usize = 1 << 14; // 2^20 bits, 128 KiB

    fn new(period_ms: u64) -> Self {
        Doorkeeper {
            bits: (0..Self::WORDS).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
            cleared_at_ms: AtomicU64::new(0),
            period_ms,
        }
    }

    /// Marks `id` seen; true when it was not seen since the last clear.
    fn first_sighting(&self, id: Id) -> bool {
        self.first_sighting_at(id, self.epoch.elapsed().as_millis() as u64)
    }

    /// [`Self::first_sighting`] at `now_ms` after the doorkeeper was made.
    fn first_sighting_at(&self, id: Id, now_ms: u64) -> bool {
        let last = self.cleared_at_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= self.period_ms
            && self.cleared_at_ms.compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            for w in &self.bits {
                w.store(0, Ordering::Relaxed);
            }
        }
        let x = (id >> 64) as u64; // moka buckets by the low half
        let (word, bit) = ((x as usize >> 6) % Self::WORDS, 1u64 << (x & 63));
        self.bits[word].fetch_or(bit, Ordering::Relaxed) & bit == 0
    }
}

struct Shared {
    opts: CacheOptions,
    doorkeeper: Doorkeeper,
    /// The limiter's limits and algorithm, learnt from the first request (they never change).
    shape: OnceLock<(Vec<Limit>, Algorithm)>,
    /// Leases of evicted entries, returned on the next check.
    evicted: Mutex<Vec<Unused>>,
    /// Set after each push to `evicted`: checks read this, not the lock every other thread takes.
    has_evicted: AtomicBool,
    rng: AtomicU64,
    instance: u64,
    lease_seq: AtomicU64,
    leases_granted: AtomicU64,
    permits_leased: AtomicU64,
    permits_returned: Arc<AtomicU64>,
}

/// The cache layer of one limiter. Its state is per process: a forked child must neither spend
/// its parent's leases (both would admit from them) nor wait on its parent's in-flight calls.
pub(crate) struct LocalCache {
    opts: CacheOptions,
    /// The limiter's number of limits (what a cached outcome holds one window of each of).
    windows: usize,
    process: PerProcess<Instance>,
}

impl std::fmt::Debug for LocalCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCache").field("opts", &self.opts).finish()
    }
}

impl LocalCache {
    pub(crate) fn new(opts: CacheOptions, windows: usize) -> Result<Self> {
        opts.validate()?;
        Ok(LocalCache { opts, windows, process: PerProcess::new() })
    }

    fn here(&self) -> &Instance {
        self.process.get_or(|| Instance::new(self.opts.clone(), self.windows))
    }

    pub(crate) fn stats(&self) -> CacheStats {
        self.here().stats()
    }

    /// Drop what the cache knows of an identity (before a reset).
    pub(crate) fn forget(&self, first_key: &str) {
        self.here().forget(first_key)
    }

    /// Decide `req`, locally when the cache can, otherwise through `remote`.
    pub(crate) async fn check(&self, remote: &Remote, req: &Request<'_>) -> Result<(Outcome, Source)> {
        self.here().check(remote, req).await
    }
}

/// One process's cache: its entries, leases and counters.
struct Instance {
    entries: moka::sync::Cache<Id, Arc<Slot>, Prehashed>,
    ids: IdHasher,
    shared: Arc<Shared>,
}

impl Instance {
    fn new(opts: CacheOptions, windows: usize) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let instance = seed ^ (crate::per_process::pid() as u64).rotate_left(32) ^ (&opts as *const _ as u64);
        let shared = Arc::new(Shared {
            opts: opts.clone(),
            doorkeeper: Doorkeeper::new(opts.doorkeeper_ms),
            shape: OnceLock::new(),
            evicted: Mutex::new(Vec::new()),
            has_evicted: AtomicBool::new(false),
            rng: AtomicU64::new(seed | 1),
            instance,
            lease_seq: AtomicU64::new(0),
            leases_granted: AtomicU64::new(0),
            permits_leased: AtomicU64::new(0),
            permits_returned: Arc::new(AtomicU64::new(0)),
        });
        let weak = Arc::downgrade(&shared);
        let entries = moka::sync::Cache::builder()
            .max_capacity(opts.max_bytes)
            .weigher(move |_: &Id, _: &Arc<Slot>| weight(windows))
            .time_to_idle(Duration::from_millis(opts.idle_ms.max(1)))
            .eviction_listener(move |_k, slot: Arc<Slot>, _cause| {
                let Some(shared) = weak.upgrade() else { return };
                let unused = slot.lock().lease.take().filter(|l| l.left > 0).map(|l| Unused {
                    keys: l.keys,
                    unused: l.left,
                    member: l.member,
                    marks: l.marks,
                });
                if let Some(u) = unused {
                    shared.evicted.lock().unwrap_or_else(|p| p.into_inner()).push(u);
                    shared.has_evicted.store(true, Ordering::Release);
                }
            })
            .build_with_hasher(Prehashed);
        Instance { entries, ids: IdHasher::new(), shared }
    }

    fn stats(&self) -> CacheStats {
        self.entries.run_pending_tasks();
        CacheStats {
            entries: self.entries.entry_count(),
            weighted_bytes: self.entries.weighted_size(),
            max_bytes: self.shared.opts.max_bytes,
            leases_granted: self.shared.leases_granted.load(Ordering::Relaxed),
            permits_leased: self.shared.permits_leased.load(Ordering::Relaxed),
            permits_returned: self.shared.permits_returned.load(Ordering::Relaxed),
        }
    }

    /// Drop what the cache knows of an identity (before a reset). Its lease goes to the eviction
    /// listener like any other; once the reset deleted the counts, the return finds nothing to give back to.
    fn forget(&self, first_key: &str) {
        self.entries.invalidate(&self.ids.id(first_key));
    }

    async fn check(&self, remote: &Remote, req: &Request<'_>) -> Result<(Outcome, Source)> {
        let sh = &self.shared;
        sh.shape.get_or_init(|| (req.limits.to_vec(), req.algorithm));
        self.return_evicted(remote);
        let id = self.ids.id(&req.keys[0]);
        let slot = match self.entries.get(&id) {
            Some(s) => s,
            None if !(sh.opts.denial_cache || sh.opts.coalesce && batchable(req.algorithm)) => {
                return remote.evaluate(req).await.map(|o| (o, Source::Redis));
            }
            // First sighting in this doorkeeper period: no entry (a long tail of identities seen
            // once would only churn the cache); an entry is made on a denial or a second sighting.
            None if sh.doorkeeper.first_sighting(id) => {
                let t0 = Instant::now();
                let out = remote.evaluate(req).await?;
                if !out.allowed && sh.opts.denial_cache {
                    let slot = self.entries.get_with(id, Arc::default);
                    sh.remember_denial(&mut slot.lock(), &out, req.cost, t0);
                }
                return Ok((out, Source::Redis));
            }
            None => self.entries.get_with(id, Arc::default),
        };
        let now = Instant::now();
        let step = {
            let mut st = slot.lock();
            if let Some(d) = &st.denial {
                if now >= d.until {
                    st.denial = None;
                } else if req.cost >= d.min_cost {
                    return Ok((aged(&d.outcome, d.at, now, false, None), Source::Cache));
                }
            }
            if req.consume {
                if let Some(l) = st.lease.as_mut() {
                    if now < l.expires && l.left >= req.cost {
                        l.left -= req.cost;
                        return Ok((aged(&l.outcome, l.at, now, true, Some(l.granted - l.left)), Source::Lease));
                    }
                }
            }
            if !req.consume || !sh.opts.coalesce || !batchable(req.algorithm) {
                Step::Direct
            } else if st.in_flight {
                let (tx, rx) = oneshot::channel();
                st.queue.push(Waiter { cost: req.cost, tx: Some(tx) });
                Step::Wait(rx)
            } else {
                st.in_flight = true;
                Step::Drive(plan(sh, &mut st, now, 1))
            }
        };
        match step {
            Step::Direct => {
                let t0 = Instant::now();
                let out = remote.evaluate(req).await?;
                if !out.allowed && sh.opts.denial_cache {
                    self.shared.remember_denial(&mut slot.lock(), &out, req.cost, t0);
                }
                Ok((out, Source::Redis))
            }
            Step::Wait(rx) => match rx.await {
                Ok(r) => r,
                Err(_) => Err(Error::Store {
                    url: remote.store().url().to_string(),
                    message: "coalesced call abandoned".into(),
                }),
            },
            Step::Drive(p) => {
                let _handoff = Handoff { sh, remote, slot: &slot, keys: req.keys };
                let own = exchange(sh, remote, req.keys, &slot, vec![Waiter { cost: req.cost, tx: None }], p).await;
                own.unwrap_or_else(|| {
                    Err(Error::Store {
                        url: remote.store().url().to_string(),
                        message: "no answer for the driving caller".into(),
                    })
                })
            }
        }
    }

    fn return_evicted(&self, remote: &Remote) {
        // cleared before the drain: a push after it sets the flag again for the next check
        if !self.shared.has_evicted.load(Ordering::Acquire) || !self.shared.has_evicted.swap(false, Ordering::AcqRel) {
            return;
        }
        let unused = std::mem::take(&mut *self.shared.evicted.lock().unwrap_or_else(|p| p.into_inner()));
        for u in unused {
            spawn_return(&self.shared, remote, u);
        }
    }
}

enum Step {
    Direct,
    Wait(oneshot::Receiver<Reply>),
    Drive(Plan),
}

fn batchable(a: Algorithm) -> bool {
    matches!(a, Algorithm::SlidingWindow | Algorithm::TokenBucket)
}

/// A stored outcome seen `now`: times shortened by the age, `now_us` moved on. A lease shows what
/// Redis had left before the grant less what the lease has spent since.
fn aged(o: &Outcome, at: Instant, now: Instant, allowed: bool, lease_used: Option<u64>) -> Outcome {
    let age = now.saturating_duration_since(at).as_micros() as u64;
    let mut o = o.clone();
    o.now_us += age;
    o.allowed = allowed;
    if allowed {
        o.limited_by = None;
    }
    for w in &mut o.windows {
        w.reset_after_us = w.reset_after_us.saturating_sub(age);
        if allowed {
            w.retry_after_us = 0;
            w.remaining = w.remaining.saturating_sub(lease_used.unwrap_or(0));
        } else if w.retry_after_us > 0 {
            w.retry_after_us = w.retry_after_us.saturating_sub(age).max(1);
        }
    }
    o
}

impl Shared {
    fn limits(&self) -> &[Limit] {
        self.shape.get().map(|s| s.0.as_slice()).unwrap_or(&[])
    }
    fn algorithm(&self) -> Algorithm {
        self.shape.get().map(|s| s.1).unwrap_or_default()
    }

    fn jitter(&self, d: Duration) -> Duration {
        // xorshift: cheap, good enough to spread expiries
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        let frac = (x % 10_000) as f64 / 10_000.0 * self.opts.jitter_ratio;
        d.mul_f64(1.0 - frac)
    }

    /// Remember "cost ≥ c is denied until t0 + retry". `t0` is when the call was sent, before Redis
    /// read its clock, so the local end is never later than the script's retry time.
    fn remember_denial(&self, st: &mut SlotState, out: &Outcome, cost: u64, t0: Instant) {
        let retry = out.limited_by.map(|i| out.windows[i].retry_after_us).unwrap_or(0);
        if retry == 0 {
            return;
        }
        let until = t0 + self.jitter(Duration::from_micros(retry));
        let replace = match &st.denial {
            None => true,
            Some(d) => cost < d.min_cost || (cost == d.min_cost && until > d.until),
        };
        if replace {
            st.denial = Some(Denial { min_cost: cost, outcome: out.clone(), at: t0, until });
        }
    }

    /// Permits a lease of this identity may hold over all instances: drift_ratio of the smallest
    /// limit (burst for token buckets).
    fn budget(&self) -> u64 {
        let smallest = self
            .limits()
            .iter()
            .map(|l| if self.algorithm() == Algorithm::TokenBucket { l.burst().min(l.max()) } else { l.max() })
            .min()
            .unwrap_or(0);
        let b = (smallest as f64 * self.opts.drift_ratio).floor() as u64;
        if b < 2 {
            0
        } else {
            b
        }
    }
}

fn spawn_return(sh: &Arc<Shared>, remote: &Remote, u: Unused) {
    let (remote, algorithm, limits, returned) =
        (remote.clone(), sh.algorithm(), sh.limits().to_vec(), sh.permits_returned.clone());
    tokio::spawn(async move {
        let inv = return_invocation(algorithm, &limits, &u, &remote.store().now_arg());
        match remote.call(remote.store().invoke::<Vec<i64>>(&inv)).await {
            Ok(v) => {
                returned.fetch_add(v.first().copied().unwrap_or(0).max(0) as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "lease not returned; its permits age out of the window"),
        }
    });
}

/// lua/lease_return.lua giving back the permits `u` leaves unused; `now` as RedisStore::now_arg.
fn return_invocation(
    algorithm: Algorithm,
    limits: &[Limit],
    u: &Unused,
    now: &str,
) -> redis::ScriptInvocation<'static> {
    let mut inv = LEASE_RETURN.prepare_invoke();
    for k in state_hashes(&u.keys) {
        inv.key(k);
    }
    inv.key(lease_key(&u.keys[0]));
    let mode = if algorithm == Algorithm::TokenBucket { "tb" } else { "sw" };
    inv.arg(mode).arg(u.unused).arg(&u.member).arg(now).arg(state_field(&u.keys)).arg(epoch_us(algorithm, limits));
    if algorithm == Algorithm::TokenBucket {
        for l in limits {
            inv.arg(emission_interval_us(l));
        }
    }
    for m in &u.marks {
        inv.arg(*m);
    }
    inv
}

fn lease_key(first_key: &str) -> String {
    format!("{first_key}:lease")
}

/// Redis calls without a lease request after a lease expired having served fewer than
/// LEASE_MIN_USES callers.
const LEASE_COOLDOWN_CALLS: u8 = 8;

/// Calls a lease must be expected to serve to be asked for: it costs a heavier script call than a
/// plain decision, and its unused rest a return call, so one that saves fewer calls costs Redis
/// more than it saves (the Node bench's 10,000 identities at ~10 calls/s each, with 250 ms leases,
/// took ~3 per lease and ran at half the exact path's rate).
const LEASE_MIN_USES: u32 = 4;

/// Whether an identity is hot enough to lease for: callers queued up for it; or the lease it just
/// had (`lease_used`: the calls that one served) served LEASE_MIN_USES calls; or its last Redis call
/// (`since_last`) was recent enough that a lease of `lease` lifetime should serve that many at that
/// rate. (Time since the last call alone would misjudge an identity that spent its lease slowly.)
fn is_hot(since_last: Option<Duration>, lease_used: Option<u64>, lease: Duration, batch_len: usize) -> bool {
    batch_len > 1
        || lease_used.is_some_and(|n| n >= u64::from(LEASE_MIN_USES))
        || since_last.is_some_and(|d| d * LEASE_MIN_USES < lease)
}

/// Lease bookkeeping before a Redis call for `batch_len` callers the lease cannot serve: take the
/// lease out (its rest is given back), adapt the next lease size, decide whether to ask for one.
fn plan(sh: &Shared, st: &mut SlotState, now: Instant, batch_len: usize) -> Plan {
    let (mut release, mut lease_used) = (None, None);
    let spent = st.lease.take().and_then(|l| {
        let used = l.granted - l.left;
        lease_used = Some(used);
        // spent before expiry: ask for twice as much; expired part-used: ask for what was used
        st.next_want = if l.left == 0 || now < l.expires { l.granted.saturating_mul(2) } else { used.max(2) };
        // expired having served fewer calls than a lease must to pay for itself and its return:
        // the identity comes about once per lease/LEASE_MIN_USES, where the rate rule misjudges
        // it every other call (the Node bench's 10,000 identities took 91,791 leases of 3.3)
        if used < u64::from(LEASE_MIN_USES) && now >= l.expires {
            st.lease_cooldown = LEASE_COOLDOWN_CALLS;
        }
        release = Some(l.member.clone());
        (l.left > 0).then_some(Unused { keys: l.keys, unused: l.left, member: l.member, marks: l.marks })
    });
    let hot = is_hot(
        st.last_remote.map(|t| now.duration_since(t)),
        lease_used,
        Duration::from_millis(sh.opts.lease_ms),
        batch_len,
    );
    st.last_remote = Some(now);
    let budget = sh.budget();
    let cooling = st.lease_cooldown > 0 && batch_len == 1;
    st.lease_cooldown = st.lease_cooldown.saturating_sub(1);
    let want = if sh.opts.leases && hot && !cooling && budget > 0 {
        st.next_want.clamp(2, sh.opts.max_lease.max(2))
    } else {
        0
    };
    Plan { want, spent, release }
}

/// What to ask of the next call besides the callers' costs.
struct Plan {
    want: u64,
    /// A lease with permits left, to give back.
    spent: Option<Unused>,
    /// The previous lease's record, to drop from the outstanding set.
    release: Option<String>,
}

/// One script call for `batch`: answers every waiter with a channel, records denials and the
/// lease, and returns the answer of the waiter without one (the caller that drives inline).
async fn exchange(
    sh: &Arc<Shared>,
    remote: &Remote,
    keys: &[String],
    slot: &Slot,
    batch: Vec<Waiter>,
    plan: Plan,
) -> Option<Reply> {
    let Plan { want, spent, release } = plan;
    if let Some(u) = spent {
        spawn_return(sh, remote, u);
    }
    let plain = batch.len() == 1 && want == 0 && release.is_none();
    // the name a granted lease is recorded under in Redis; a plain call grants none
    let member = if plain {
        String::new()
    } else {
        format!("{:x}-{}", sh.instance, sh.lease_seq.fetch_add(1, Ordering::Relaxed))
    };
    let t0 = Instant::now();
    let result = if plain {
        // one caller, no lease: the plain script answers the same, with less Lua
        let req = Request { keys, limits: sh.limits(), algorithm: sh.algorithm(), cost: batch[0].cost, consume: true };
        remote.evaluate(&req).await.map(|o| (vec![o], 0, Vec::new()))
    } else {
        call_batch(sh, remote, keys, &batch, want, &member, release.as_deref().unwrap_or("")).await
    };
    let mut own = None;
    let mut st = slot.lock();
    match result {
        Err(e) => {
            for w in batch {
                match w.tx {
                    Some(tx) => drop(tx.send(Err(e.clone()))),
                    None => own = Some(Err(e.clone())),
                }
            }
        }
        Ok((outs, granted, marks)) => {
            let last = outs.last().cloned();
            for (w, o) in batch.into_iter().zip(outs) {
                if !o.allowed && sh.opts.denial_cache {
                    sh.remember_denial(&mut st, &o, w.cost, t0);
                }
                match w.tx {
                    Some(tx) => drop(tx.send(Ok((o, Source::Redis)))),
                    None => own = Some(Ok((o, Source::Redis))),
                }
            }
            if let (true, Some(outcome)) = (granted > 0, last) {
                sh.leases_granted.fetch_add(1, Ordering::Relaxed);
                sh.permits_leased.fetch_add(granted, Ordering::Relaxed);
                // the local lease ends no later than its record in Redis (sent before Redis read TIME)
                let expires = t0 + sh.jitter(Duration::from_millis(sh.opts.lease_ms));
                st.lease = Some(Box::new(Lease {
                    keys: keys.to_vec(),
                    left: granted,
                    granted,
                    outcome,
                    at: t0,
                    expires,
                    member: format!("{member}:{granted}"),
                    marks,
                }));
            }
        }
    }
    own
}

/// After an inline call: callers that queued meanwhile get a driver; otherwise nothing is in flight.
/// Also runs when the inline caller is dropped mid-call, so queued callers are never stranded.
struct Handoff<'a> {
    sh: &'a Arc<Shared>,
    remote: &'a Remote,
    slot: &'a Arc<Slot>,
    keys: &'a [String],
}

impl Drop for Handoff<'_> {
    fn drop(&mut self) {
        let mut st = self.slot.lock();
        if st.queue.is_empty() {
            st.settle();
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn(drive(self.sh.clone(), self.remote.clone(), self.slot.clone(), self.keys.to_vec()))),
            Err(_) => {
                for w in st.queue.drain(..) {
                    if let Some(tx) = w.tx {
                        let _ = tx.send(Err(Error::Store {
                            url: self.remote.store().url().to_string(),
                            message: "no runtime to finish a coalesced call".into(),
                        }));
                    }
                }
                st.settle();
            }
        }
    }
}

/// One identity's driver, for callers that queued behind a call in flight: send their costs as
/// one script call (with a lease request when the identity is hot), answer each in arrival
/// order, repeat. At most one call per identity is in flight, so at most one refresh.
async fn drive(sh: Arc<Shared>, remote: Remote, slot: Arc<Slot>, keys: Vec<String>) {
    if sh.opts.batch_window_us > 0 {
        crate::store::redis::batch::wait_until(Instant::now() + Duration::from_micros(sh.opts.batch_window_us)).await;
    }
    loop {
        let (batch, p) = {
            let mut st = slot.lock();
            let now = Instant::now();
            // callers a fresh denial or the current lease can answer, before anything goes to Redis
            serve_from_denial(&mut st, now);
            serve_from_lease(&mut st, now);
            if st.queue.is_empty() {
                st.settle();
                return;
            }
            let take = st.queue.len().min(sh.opts.max_batch);
            let batch: Vec<Waiter> = st.queue.drain(..take).collect();
            let p = plan(&sh, &mut st, now, batch.len());
            (batch, p)
        };
        exchange(&sh, &remote, &keys, &slot, batch, p).await;
    }
}

/// Answer queued callers the cached denial covers (a denial of cost c covers every cost ≥ c).
fn serve_from_denial(st: &mut SlotState, now: Instant) {
    let Some(d) = &st.denial else { return };
    if now >= d.until {
        st.denial = None;
        return;
    }
    let (min_cost, outcome, at) = (d.min_cost, d.outcome.clone(), d.at);
    let (deny, keep): (Vec<Waiter>, Vec<Waiter>) =
        std::mem::take(&mut st.queue).into_iter().partition(|w| w.cost >= min_cost);
    st.queue = keep;
    for w in deny.into_iter().filter_map(|w| w.tx) {
        let _ = w.send(Ok((aged(&outcome, at, now, false, None), Source::Cache)));
    }
}

/// Answer queued callers from the lease, in arrival order, until one needs more than it holds.
fn serve_from_lease(st: &mut SlotState, now: Instant) {
    let Some(l) = st.lease.as_mut() else { return };
    if now >= l.expires {
        return;
    }
    let mut served = 0;
    for w in &st.queue {
        if w.cost > l.left {
            break;
        }
        l.left -= w.cost;
        served += 1;
    }
    for tx in st.queue.drain(..served).filter_map(|w| w.tx) {
        // answers in order; `left` shown is what remains after all of them (a close approximation)
        let _ = tx.send(Ok((aged(&l.outcome, l.at, now, true, Some(l.granted - l.left)), Source::Lease)));
    }
}

/// The lease a batch script call asks for.
struct LeaseAsk<'a> {
    /// permits wanted (0: none)
    want: u64,
    lifetime_us: u64,
    /// most permits outstanding in leases of the identity, over all instances
    budget: u64,
    /// the lease's member in the identity's lease set
    member: &'a str,
    /// member of this instance's previous lease, spent or given back ("" none)
    release: &'a str,
}

/// lua/sliding_window_batch.lua or token_bucket_batch.lua deciding `costs` for the identity whose
/// keys are `keys`, in order, and leasing per `lease`; `now` as RedisStore::now_arg.
fn batch_invocation(
    algorithm: Algorithm,
    limits: &[Limit],
    keys: &[String],
    costs: &[u64],
    lease: &LeaseAsk<'_>,
    now: &str,
) -> redis::ScriptInvocation<'static> {
    let script = if algorithm == Algorithm::TokenBucket { &*TB_BATCH } else { &*SW_BATCH };
    let mut inv = script.prepare_invoke();
    for k in state_hashes(keys) {
        inv.key(k);
    }
    inv.key(lease_key(&keys[0]));
    inv.arg(now).arg(costs.len());
    for c in costs {
        inv.arg(*c);
    }
    inv.arg(lease.want).arg(lease.lifetime_us).arg(lease.budget).arg(lease.member).arg(lease.release);
    inv.arg(limit_args(algorithm, limits));
    inv.arg(state_field(keys)).arg(epoch_us(algorithm, limits));
    inv
}

/// Run the batch script: per-caller outcomes, permits leased, and the marks to return them by.
async fn call_batch(
    sh: &Shared,
    remote: &Remote,
    keys: &[String],
    batch: &[Waiter],
    want: u64,
    member: &str,
    release: &str,
) -> Result<(Vec<Outcome>, u64, Vec<u64>)> {
    let costs: Vec<u64> = batch.iter().map(|w| w.cost).collect();
    let lease = LeaseAsk { want, lifetime_us: sh.opts.lease_ms * 1000, budget: sh.budget(), member, release };
    let inv = batch_invocation(sh.algorithm(), sh.limits(), keys, &costs, &lease, &remote.store().now_arg());
    let reply: Vec<i64> = remote.call(remote.store().invoke(&inv)).await?;
    let bad = || Error::Store {
        url: remote.store().url().to_string(),
        message: format!("unexpected batch reply of {} values", reply.len()),
    };
    let m = batch.len();
    if reply.len() < 2 + m {
        return Err(bad());
    }
    let (granted, read) =
        (reply[0].max(0) as u64, StateReply { now_us: reply[1].max(0) as u64, state: &reply[2 + m..] });
    let allowed: Vec<bool> = reply[2..2 + m].iter().map(|&a| a == 1).collect();
    let (outs, marks) = twin::apply_batch(sh.algorithm(), &read, sh.limits(), &costs, &allowed, granted);
    Ok((outs, granted, marks))
}
