//! Local cache layer between the limiter and Redis: a denial cache, per-identity coalescing and leases
//! for hot identities, in a bounded moka cache; docs/ARCHITECTURE.md, "Local cache layer", bounds each one's error.

mod options;
#[cfg(all(test, feature = "cache"))]
mod tests;

pub use options::{CacheOptions, CacheStats};

#[cfg(not(feature = "cache"))]
mod absent;
#[cfg(not(feature = "cache"))]
pub(crate) use absent::LocalCache;

// The layer itself: with the `cache` feature only (moka, siphasher).
cfg_cache! {
    mod coalesce;
    mod identity;
    mod lease;
    mod slot;
    #[cfg_attr(not(test), allow(dead_code))]
    mod twin;

    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::{Duration, Instant};

    use tokio::sync::oneshot;

    use crate::algorithm::{Algorithm, Outcome};
    use crate::decision::Source;
    use crate::error::{Error, Result};
    use crate::limit::Limit;
    use crate::per_process::PerProcess;
    use crate::remote::Remote;
    use crate::store::Request;

    use coalesce::{exchange, Handoff};
    use identity::{Doorkeeper, Id, IdHasher, Prehashed};
    use lease::{plan, spawn_return, Plan, Unused};
    use slot::{aged, weight, Denial, Reply, Slot, SlotState, Waiter};

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
}
