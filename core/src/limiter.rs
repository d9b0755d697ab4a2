//! The limiter users hold: limits + algorithm + store. It validates input, lays out keys, asks the
//! store, turns the outcome into a `Decision` and watches the offset between local and Redis time.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::algorithm::{Algorithm, Outcome};
use crate::clock::{Clock, SystemClock};
use crate::decision::{Decision, Source};
use crate::error::{Error, Result};
use crate::keys::KeyLayout;
use crate::limit::Limit;
use crate::store::{MemoryStore, RedisOptions, RedisStore, Request};

/// Warn when local time and Redis time differ by more than this (windows never depend on it;
/// a large offset still means something is wrong with a host's clock).
pub const DEFAULT_SKEW_THRESHOLD: Duration = Duration::from_secs(1);

/// A limiter as data: what a config file or a binding's keyword arguments map onto.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimiterConfig {
    pub limits: Vec<Limit>,
    #[serde(default)]
    pub algorithm: Algorithm,
    /// None: the embedded in-memory store.
    #[serde(default)]
    pub redis_url: Option<String>,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_prefix() -> String {
    "floodwall".into()
}
fn default_timeout_ms() -> u64 {
    1000
}

#[derive(Debug, Clone)]
enum Backend {
    Memory(MemoryStore),
    Redis(RedisStore),
}

/// A cheap handle (an `Arc`): clone it into tasks freely.
#[derive(Debug, Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limits: Vec<Limit>,
    algorithm: Algorithm,
    layout: KeyLayout,
    backend: Backend,
    clock: Arc<dyn Clock>,
    max_cost: u64,
    skew_threshold_us: i64,
    offset_us: AtomicI64,
    offset_known: AtomicBool,
    skew_warned: AtomicBool,
}

pub struct LimiterBuilder {
    limits: Vec<Limit>,
    algorithm: Algorithm,
    redis: Option<RedisOptions>,
    redis_store: Option<RedisStore>,
    prefix: String,
    clock: Option<Arc<dyn Clock>>,
    skew_threshold: Duration,
    redis_time_from_clock: bool,
}

impl LimiterBuilder {
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis = Some(RedisOptions::new(url));
        self
    }
    pub fn redis(mut self, options: RedisOptions) -> Self {
        self.redis = Some(options);
        self
    }
    /// Use an existing store (shares its connection with other limiters).
    pub fn redis_store(mut self, store: RedisStore) -> Self {
        self.redis_store = Some(store);
        self
    }
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
    /// The local clock: decides on the embedded store; with Redis it only measures skew.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }
    pub fn skew_threshold(mut self, threshold: Duration) -> Self {
        self.skew_threshold = threshold;
        self
    }
    /// Tests only: the Redis scripts take `now` from `clock` instead of Redis `TIME`, so the
    /// conformance timelines run identically on Redis and in memory. Never use in production.
    #[doc(hidden)]
    pub fn redis_time_from_clock(mut self) -> Self {
        self.redis_time_from_clock = true;
        self
    }

    pub fn build(self) -> Result<Limiter> {
        if self.limits.is_empty() {
            return Err(Error::config("limits", "[]", "give at least one limit, e.g. \"10/second\""));
        }
        for (i, a) in self.limits.iter().enumerate() {
            if let Some(b) = self.limits[..i].iter().find(|b| b.window() == a.window()) {
                return Err(Error::config(
                    "limits",
                    format!("{b}, {a}"),
                    "two limits share one window; keep the stricter one",
                ));
            }
        }
        self.algorithm.validate(&self.limits)?;
        let layout = KeyLayout::new(&self.prefix)?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let backend = match (self.redis_store, self.redis) {
            (Some(store), _) => Backend::Redis(store),
            (None, Some(options)) if self.redis_time_from_clock => {
                Backend::Redis(RedisStore::with_test_clock(options, clock.clone())?)
            }
            (None, Some(options)) => Backend::Redis(RedisStore::new(options)?),
            (None, None) => Backend::Memory(MemoryStore::new(clock.clone())),
        };
        let max_cost = self
            .limits
            .iter()
            .map(|l| if self.algorithm == Algorithm::TokenBucket { l.max().min(l.burst()) } else { l.max() })
            .min()
            .unwrap_or(1);
        Ok(Limiter {
            inner: Arc::new(Inner {
                limits: self.limits,
                algorithm: self.algorithm,
                layout,
                backend,
                clock,
                max_cost,
                skew_threshold_us: self.skew_threshold.as_micros() as i64,
                offset_us: AtomicI64::new(0),
                offset_known: AtomicBool::new(false),
                skew_warned: AtomicBool::new(false),
            }),
        })
    }
}

impl Limiter {
    pub fn builder(limits: impl IntoIterator<Item = Limit>) -> LimiterBuilder {
        LimiterBuilder {
            limits: limits.into_iter().collect(),
            algorithm: Algorithm::default(),
            redis: None,
            redis_store: None,
            prefix: default_prefix(),
            clock: None,
            skew_threshold: DEFAULT_SKEW_THRESHOLD,
            redis_time_from_clock: false,
        }
    }

    /// A limiter on the embedded store with the default algorithm.
    pub fn in_memory(limits: impl IntoIterator<Item = Limit>) -> Result<Self> {
        Self::builder(limits).build()
    }

    pub fn from_config(config: &LimiterConfig) -> Result<Self> {
        let mut b = Self::builder(config.limits.iter().copied()).algorithm(config.algorithm).prefix(config.prefix.clone());
        if let Some(url) = &config.redis_url {
            let timeout = Duration::from_millis(config.timeout_ms.max(1));
            b = b.redis(RedisOptions { url: url.clone(), connect_timeout: timeout, response_timeout: Some(timeout) });
        }
        b.build()
    }

    pub fn limits(&self) -> &[Limit] {
        &self.inner.limits
    }
    pub fn algorithm(&self) -> Algorithm {
        self.inner.algorithm
    }
    pub fn key_layout(&self) -> &KeyLayout {
        &self.inner.layout
    }
    /// The largest cost one check may ask for (the smallest limit, or burst for token buckets).
    pub fn max_cost(&self) -> u64 {
        self.inner.max_cost
    }
    /// Which store decides: `Source::Redis` or `Source::Memory`.
    pub fn store_kind(&self) -> Source {
        match self.inner.backend {
            Backend::Memory(_) => Source::Memory,
            Backend::Redis(_) => Source::Redis,
        }
    }

    pub async fn check(&self, key: &str) -> Result<Decision> {
        self.run(key, 1, true).await
    }

    /// Consume `cost` units from every limit, or nothing if any limit would be exceeded.
    pub async fn check_n(&self, key: &str, cost: u64) -> Result<Decision> {
        if cost == 0 {
            return Err(Error::config("cost", cost, "must be at least 1 (use peek to look without consuming)"));
        }
        if cost > self.inner.max_cost {
            return Err(Error::config(
                "cost",
                cost,
                format!("exceeds the smallest limit ({}); such a request could never pass", self.inner.max_cost),
            ));
        }
        self.run(key, cost, true).await
    }

    /// Would one more request pass? Consumes nothing.
    pub async fn peek(&self, key: &str) -> Result<Decision> {
        self.run(key, 1, false).await
    }

    /// Forget every count of the identity.
    pub async fn reset(&self, key: &str) -> Result<()> {
        let keys = self.inner.layout.keys(key, self.inner.algorithm, &self.inner.limits)?;
        match &self.inner.backend {
            Backend::Memory(m) => {
                m.reset(&keys);
                Ok(())
            }
            Backend::Redis(r) => r.reset(&keys).await,
        }
    }

    /// The embedded store, when this limiter decides in process.
    pub fn memory_store(&self) -> Option<&MemoryStore> {
        match &self.inner.backend {
            Backend::Memory(m) => Some(m),
            Backend::Redis(_) => None,
        }
    }

    /// Make sure Redis answers (no-op on the embedded store).
    pub async fn connect(&self) -> Result<()> {
        match &self.inner.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Redis(r) => r.ping().await,
        }
    }

    /// Redis time minus local time, in microseconds, as last measured (None before any Redis call).
    pub fn clock_offset_us(&self) -> Option<i64> {
        self.inner.offset_known.load(Ordering::Relaxed).then(|| self.inner.offset_us.load(Ordering::Relaxed))
    }

    /// Whether the last measured offset exceeds the skew threshold.
    pub fn clock_skew_exceeded(&self) -> bool {
        self.clock_offset_us().is_some_and(|o| o.abs() > self.inner.skew_threshold_us)
    }

    async fn run(&self, key: &str, cost: u64, consume: bool) -> Result<Decision> {
        let inner = &*self.inner;
        let keys = inner.layout.keys(key, inner.algorithm, &inner.limits)?;
        let req = Request { keys: &keys, limits: &inner.limits, algorithm: inner.algorithm, cost, consume };
        match &inner.backend {
            Backend::Memory(m) => Ok(Decision::from_outcome(&m.evaluate(&req), &inner.limits, Source::Memory)),
            Backend::Redis(r) => {
                let t0 = inner.clock.now_us();
                let out = r.evaluate(&req).await?;
                let t1 = inner.clock.now_us();
                self.observe_offset(&out, t0, t1);
                Ok(Decision::from_outcome(&out, &inner.limits, Source::Redis))
            }
        }
    }

    /// Redis time sits between our send and receive: compare it with the midpoint.
    fn observe_offset(&self, out: &Outcome, t0: u64, t1: u64) {
        let inner = &*self.inner;
        let mid = (t0 / 2 + t1 / 2) as i64;
        let offset = out.now_us as i64 - mid;
        inner.offset_us.store(offset, Ordering::Relaxed);
        inner.offset_known.store(true, Ordering::Relaxed);
        let over = offset.abs() > inner.skew_threshold_us;
        if over && !inner.skew_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                offset_ms = offset / 1000,
                threshold_ms = inner.skew_threshold_us / 1000,
                "local clock differs from Redis time; floodwall decides on Redis time, but check this host's clock"
            );
        } else if !over {
            inner.skew_warned.store(false, Ordering::Relaxed);
        }
    }
}
