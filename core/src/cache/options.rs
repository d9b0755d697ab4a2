//! The cache layer's settings (one serde schema every binding and the config file read), their
//! bounds, and the numbers the cache reports about itself.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Cache settings. Every field has a default; `{}` turns the layer on with them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "config", derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CacheOptions {
    /// Answer a denied identity locally until the retry time Redis gave.
    #[serde(alias = "denialCache")]
    pub denial_cache: bool,
    /// One script call in flight per identity; concurrent checks join the next one.
    pub coalesce: bool,
    /// Most requests in one coalesced call.
    #[serde(alias = "maxBatch")]
    pub max_batch: usize,
    /// Wait this long (0–500 µs) before sending a call, to gather more arrivals: of the same
    /// identity (one coalesced call) and of others (one script call, core/src/store/redis/batch.rs).
    #[serde(alias = "batchWindowUs")]
    pub batch_window_us: u64,
    /// Reserve permits for hot identities (sliding window and token bucket; needs `coalesce`).
    pub leases: bool,
    /// Lifetime of a lease (100–500 ms).
    #[serde(alias = "leaseMs")]
    pub lease_ms: u64,
    /// Most permits outstanding in leases of one identity, over all instances, as a share of its
    /// smallest limit (default 1%). Below 2 permits, no leases.
    #[serde(alias = "driftRatio")]
    pub drift_ratio: f64,
    /// Largest single lease.
    #[serde(alias = "maxLease")]
    pub max_lease: u64,
    /// Size cap of the cache in bytes: an entry weighs its heap bytes (a lease, held by hot
    /// identities only, excepted).
    #[serde(alias = "maxBytes")]
    pub max_bytes: u64,
    /// Entries unused this long are dropped (their lease, if any, is returned).
    #[serde(alias = "idleMs")]
    pub idle_ms: u64,
    /// An identity gets an entry on its second check within this period (or at once when
    /// denied): the doorkeeper that remembers first sightings forgets them all each period, so a
    /// long tail of identities seen once does not churn the cache. 100 ms – 1 hour.
    #[serde(alias = "doorkeeperMs")]
    pub doorkeeper_ms: u64,
    /// Cached denials and leases end up to this share early, at random, so entries made together
    /// do not all go back to Redis together.
    #[serde(alias = "jitterRatio")]
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

setters!(CacheOptions {
    denial_cache: bool,
    coalesce: bool,
    max_batch: usize,
    batch_window_us: u64,
    leases: bool,
    lease_ms: u64,
    drift_ratio: f64,
    max_lease: u64,
    max_bytes: u64,
    idle_ms: u64,
    doorkeeper_ms: u64,
    jitter_ratio: f64,
});

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
#[non_exhaustive]
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
