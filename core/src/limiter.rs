//! The limiter users hold: limits + algorithm + store. It validates input, lays out keys, asks the
//! store (through the cache and the guarded Redis path), falls back by policy when Redis cannot
//! answer, turns outcomes into `Decision`s and watches the offset between local and Redis time.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::algorithm::{Algorithm, Outcome};
use crate::breaker::BreakerOptions;
use crate::cache::{CacheOptions, LocalCache};
use crate::clock::{Clock, SystemClock};
use crate::decision::{Decision, Source};
use crate::error::{Error, Result};
use crate::fallback::{Fallback, FallbackMode};
use crate::keys::KeyLayout;
use crate::limit::{Limit, MAX_LIMITS};
use crate::metrics::{BreakerState, Metrics};
use crate::remote::Remote;
use crate::scripts::limit_args;
use crate::store::memory::DEFAULT_MAX_IDENTITIES;
use crate::store::redis::batch::{Ask, MAX_BATCH};
use crate::store::{MemoryStore, RedisOptions, RedisStore, Request};
use crate::telemetry::{self, CheckSpan, LogTraceId};

/// Warn when local time and Redis time differ by more than this (windows never depend on it;
/// a large offset still means something is wrong with a host's clock).
pub const DEFAULT_SKEW_THRESHOLD: Duration = Duration::from_secs(1);
/// Deadline for one Redis call: above the breaker's slow-call threshold (25 ms), so a call can be
/// slow before it is a failure. Not lower: a burst of concurrent checks from one process queues on
/// a healthy Redis, every call past the deadline is decided by the fallback, and the fallback
/// cannot know Redis's counts, so it admits past the limit. Pinned by the test
/// `default_deadline_and_breaker_stay_exact_under_a_burst` (1,000 checks, limit 100).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// A limiter as data: what a config file or a binding's keyword arguments map onto.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LimiterConfig {
    pub limits: Vec<Limit>,
    #[serde(default)]
    pub algorithm: Algorithm,
    /// None (and no cluster nodes): the embedded in-memory store.
    #[serde(default, alias = "redisUrl")]
    pub redis_url: Option<String>,
    /// Seed nodes of a Redis Cluster; takes precedence over `redis_url`.
    #[serde(default, alias = "clusterNodes")]
    pub cluster_nodes: Vec<String>,
    /// PEM file of the CA that signed Redis's TLS certificate (`rediss://` with a private CA).
    #[serde(default, alias = "tlsCaFile")]
    pub tls_ca_file: Option<String>,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Deadline for one Redis call.
    #[serde(default = "default_timeout_ms", alias = "timeoutMs")]
    pub timeout_ms: u64,
    /// What to answer when Redis cannot.
    #[serde(default)]
    pub fallback: FallbackMode,
    #[serde(default)]
    pub breaker: BreakerOptions,
    /// Local cache layer in front of Redis; None: every decision goes to Redis.
    #[serde(default)]
    pub cache: Option<CacheOptions>,
    /// The `limiter` label on metrics (default: the prefix).
    #[serde(default)]
    pub name: Option<String>,
    /// Most identities held in process, by the embedded store or the local fallback (default
    /// [`DEFAULT_MAX_IDENTITIES`]); when full, the least recently asked-about go first
    /// (core/src/store/memory.rs).
    #[serde(default = "default_max_identities", alias = "maxIdentities")]
    pub max_identities: usize,
}

impl LimiterConfig {
    pub fn new(limits: Vec<Limit>) -> Self {
        LimiterConfig {
            limits,
            algorithm: Algorithm::default(),
            redis_url: None,
            cluster_nodes: Vec::new(),
            tls_ca_file: None,
            prefix: default_prefix(),
            timeout_ms: default_timeout_ms(),
            fallback: FallbackMode::default(),
            breaker: BreakerOptions::default(),
            cache: None,
            name: None,
            max_identities: DEFAULT_MAX_IDENTITIES,
        }
    }
}

fn default_max_identities() -> usize {
    DEFAULT_MAX_IDENTITIES
}

fn default_prefix() -> String {
    "floodwall".into()
}
fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT.as_millis() as u64
}

#[derive(Debug)]
enum Backend {
    Memory(MemoryStore),
    Redis { remote: Remote, cache: Option<LocalCache>, fallback: Fallback },
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
    metrics: Arc<Metrics>,
    max_cost: u64,
    skew_threshold_us: i64,
    offset_us: AtomicI64,
    offset_known: AtomicBool,
    skew_warned: AtomicBool,
    /// "5/second,100/minute", for spans (shared by each span, not copied).
    limits_label: Arc<str>,
    /// Redis failed on the last call: log the first failure loudly, the rest quietly.
    store_failing: AtomicBool,
    /// How to open another connection like the limiter's own, for `own_connection` (None: the
    /// embedded store, a cache layer, or a store handed in ready-made).
    own: Option<(RedisOptions, bool)>,
}

/// A Redis connection of one limiter's that a blocking caller drives on a current-thread runtime
/// of its own (`Limiter::check_on`): its round trip is then a write and a read on that thread, with
/// no hand-off to a runtime worker and back. Deadline, breaker, metrics and fallback stay the
/// limiter's; `home` is where background work (the breaker's health check) goes instead.
/// For the bindings' blocking paths, not a stable API: hidden from the docs.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct OwnConnection {
    store: RedisStore,
    home: tokio::runtime::Handle,
}

impl OwnConnection {
    /// Connect now (and PING), instead of on the first check.
    pub async fn connect(&self) -> Result<()> {
        self.store.ping().await
    }
}

/// Per-call options beyond the key.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct CheckOptions<'a> {
    pub cost: u64,
    /// W3C `traceparent` of the caller's span: floodwall's span becomes its child.
    pub traceparent: Option<&'a str>,
    /// A shadow rule's check: it counts as any other, but a denial is recorded as
    /// `shadow_denied` (metrics, span) because the caller will not enforce it.
    pub shadow: bool,
}

impl Default for CheckOptions<'_> {
    fn default() -> Self {
        CheckOptions { cost: 1, traceparent: None, shadow: false }
    }
}

impl<'a> CheckOptions<'a> {
    pub fn new(cost: u64, traceparent: Option<&'a str>) -> Self {
        CheckOptions { cost, traceparent, shadow: false }
    }

    /// Sets [`CheckOptions::shadow`].
    #[must_use]
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }
}

/// One request of [`Limiter::decide_many`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct BatchItem<'a> {
    pub key: &'a str,
    /// Units to consume; 0 means a peek.
    pub cost: u64,
    pub traceparent: Option<&'a str>,
}

impl<'a> BatchItem<'a> {
    pub fn new(key: &'a str, cost: u64, traceparent: Option<&'a str>) -> Self {
        BatchItem { key, cost, traceparent }
    }
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
    timeout: Duration,
    fallback: FallbackMode,
    breaker: BreakerOptions,
    cache: Option<CacheOptions>,
    name: Option<String>,
    max_identities: usize,
}

impl LimiterBuilder {
    /// Most identities held in process by the embedded store or the local fallback (default
    /// [`DEFAULT_MAX_IDENTITIES`], 20-30 MB). When full, a new identity evicts the least
    /// recently asked-about one; an identity that keeps sending stays counted.
    pub fn max_identities(mut self, max_identities: usize) -> Self {
        self.max_identities = max_identities;
        self
    }
    /// The `limiter` label on this limiter's metrics (default: the key prefix).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis = Some(RedisOptions::new(url));
        self
    }
    /// Redis Cluster seed nodes.
    pub fn cluster<S: Into<String>>(mut self, seeds: impl IntoIterator<Item = S>) -> Self {
        self.redis = Some(RedisOptions::cluster(seeds));
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
    /// Deadline for one Redis call (default [`DEFAULT_TIMEOUT`], 50 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// What to answer when Redis cannot (default: local, the whole limit per instance).
    pub fn fallback(mut self, mode: FallbackMode) -> Self {
        self.fallback = mode;
        self
    }
    pub fn breaker(mut self, options: BreakerOptions) -> Self {
        self.breaker = options;
        self
    }
    pub fn cache(mut self, options: CacheOptions) -> Self {
        self.cache = Some(options);
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
        if self.limits.len() > MAX_LIMITS {
            let shown = self.limits.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(", ");
            return Err(Error::config("limits", shown, format!("at most {MAX_LIMITS} limits per limiter")));
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
        if self.timeout.is_zero() {
            return Err(Error::config("timeout", "0 ms", "must be at least 1 ms"));
        }
        self.breaker.validate()?;
        crate::store::memory::validate_max_identities(self.max_identities)?;
        let layout = KeyLayout::new(&self.prefix)?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let metrics = Arc::new(Metrics::default());
        let mut own = None;
        let store = match (self.redis_store, self.redis) {
            (Some(store), _) => Some(store),
            (None, Some(mut options)) => {
                // calls are bounded by the limiter's deadline; the client's own bound is a backstop
                options.response_timeout = Some(options.response_timeout.unwrap_or(self.timeout).max(self.timeout));
                if let Some(c) = &self.cache {
                    options.batch_window = Duration::from_micros(c.batch_window_us);
                }
                // A cache coalesces calls of all threads on the limiter's connection and runtime.
                if self.cache.is_none() {
                    own = Some((options.clone(), self.redis_time_from_clock));
                }
                Some(if self.redis_time_from_clock {
                    RedisStore::with_test_clock(options, clock.clone())?
                } else {
                    RedisStore::new(options)?
                })
            }
            (None, None) => None,
        };
        if let (None, Some(c)) = (&store, &self.cache) {
            // the embedded store is local already and has no cache, but a wrong option is still
            // wrong: say so now rather than when a Redis URL is added
            c.validate()?;
        }
        let backend = match store {
            None => Backend::Memory(MemoryStore::with_max_identities(clock.clone(), self.max_identities)?),
            Some(store) => Backend::Redis {
                remote: Remote::new(store, self.timeout, self.breaker, metrics.clone()),
                cache: self.cache.map(|c| LocalCache::new(c, self.limits.len())).transpose()?,
                fallback: Fallback::new(
                    self.fallback,
                    &self.limits,
                    self.algorithm,
                    clock.clone(),
                    self.max_identities,
                )?,
            },
        };
        telemetry::register(self.name.as_deref().unwrap_or(&self.prefix), &metrics);
        let limits_label: Arc<str> = self.limits.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(",").into();
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
                metrics,
                max_cost,
                skew_threshold_us: self.skew_threshold.as_micros() as i64,
                offset_us: AtomicI64::new(0),
                offset_known: AtomicBool::new(false),
                skew_warned: AtomicBool::new(false),
                limits_label,
                store_failing: AtomicBool::new(false),
                own,
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
            timeout: DEFAULT_TIMEOUT,
            fallback: FallbackMode::default(),
            breaker: BreakerOptions::default(),
            cache: None,
            name: None,
            max_identities: DEFAULT_MAX_IDENTITIES,
        }
    }

    /// A limiter on the embedded store with the default algorithm.
    pub fn in_memory(limits: impl IntoIterator<Item = Limit>) -> Result<Self> {
        Self::builder(limits).build()
    }

    pub fn from_config(config: &LimiterConfig) -> Result<Self> {
        let mut b = Self::builder(config.limits.iter().copied())
            .algorithm(config.algorithm)
            .prefix(config.prefix.clone())
            .timeout(Duration::from_millis(config.timeout_ms))
            .fallback(config.fallback.clone())
            .breaker(config.breaker.clone())
            .max_identities(config.max_identities);
        let mut options = if !config.cluster_nodes.is_empty() {
            Some(RedisOptions::cluster(config.cluster_nodes.iter().cloned()))
        } else {
            config.redis_url.as_ref().map(RedisOptions::new)
        };
        if let (Some(o), Some(path)) = (options.as_mut(), &config.tls_ca_file) {
            let pem = std::fs::read(path).map_err(|e| Error::config("tls_ca_file", path, e.to_string()))?;
            o.tls_ca_pem = Some(pem);
        }
        if let Some(o) = options {
            b = b.redis(o);
        }
        if let Some(c) = &config.cache {
            b = b.cache(c.clone());
        }
        if let Some(n) = &config.name {
            b = b.name(n.clone());
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
    /// Which store decides when all is well: `Source::Redis` or `Source::Memory`.
    pub fn store_kind(&self) -> Source {
        match self.inner.backend {
            Backend::Memory(_) => Source::Memory,
            Backend::Redis { .. } => Source::Redis,
        }
    }
    /// This limiter's counters (decisions, Redis calls and latency, breaker).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }
    /// The circuit breaker's state; None on the embedded store.
    pub fn breaker_state(&self) -> Option<BreakerState> {
        match &self.inner.backend {
            Backend::Memory(_) => None,
            Backend::Redis { remote, .. } => Some(remote.breaker_state()),
        }
    }
    /// What the local cache layer holds; None without one.
    pub fn cache_stats(&self) -> Option<crate::cache::CacheStats> {
        match &self.inner.backend {
            Backend::Redis { cache: Some(c), .. } => Some(c.stats()),
            _ => None,
        }
    }
    /// The embedded store, when this limiter decides in process.
    pub fn memory_store(&self) -> Option<&MemoryStore> {
        match &self.inner.backend {
            Backend::Memory(m) => Some(m),
            Backend::Redis { .. } => None,
        }
    }

    /// The local fallback's store, when this limiter falls back to `local` (tests watch its size).
    #[doc(hidden)]
    pub fn fallback_store(&self) -> Option<&MemoryStore> {
        match &self.inner.backend {
            Backend::Redis { fallback, .. } => fallback.local_store(),
            Backend::Memory(_) => None,
        }
    }

    pub async fn check(&self, key: &str) -> Result<Decision> {
        self.run(key, 1, true, None, None, false).await
    }

    /// Consume `cost` units from every limit, or nothing if any limit would be exceeded.
    pub async fn check_n(&self, key: &str, cost: u64) -> Result<Decision> {
        self.check_with(key, CheckOptions::new(cost, None)).await
    }

    /// `check_n` with a trace parent (what the HTTP adapters call).
    pub async fn check_with(&self, key: &str, opts: CheckOptions<'_>) -> Result<Decision> {
        self.consume(key, opts, None).await
    }

    /// A new connection for `check_on` / `peek_on`; None where this limiter has none to give (the
    /// embedded store, a cache layer, a store handed in ready-made). It connects on first use, on
    /// the runtime polling it then, and lives on that runtime: one connection per blocking thread.
    #[doc(hidden)]
    pub fn own_connection(&self, home: tokio::runtime::Handle) -> Option<Result<OwnConnection>> {
        let (options, test_time) = self.inner.own.as_ref()?;
        let store = if *test_time {
            RedisStore::with_test_clock(options.clone(), self.inner.clock.clone())
        } else {
            RedisStore::new(options.clone())
        };
        Some(store.map(|store| OwnConnection { store, home }))
    }

    /// `check_with` over `conn` (from `own_connection`) instead of the limiter's shared connection.
    #[doc(hidden)]
    pub async fn check_on(&self, conn: &OwnConnection, key: &str, opts: CheckOptions<'_>) -> Result<Decision> {
        self.consume(key, opts, Some(conn)).await
    }

    /// `peek_with` over `conn` (from `own_connection`).
    #[doc(hidden)]
    pub async fn peek_on(&self, conn: &OwnConnection, key: &str, traceparent: Option<&str>) -> Result<Decision> {
        self.run(key, 1, false, traceparent, Some(conn), false).await
    }

    async fn consume(&self, key: &str, opts: CheckOptions<'_>, via: Option<&OwnConnection>) -> Result<Decision> {
        self.check_cost(opts.cost)?;
        self.run(key, opts.cost, true, opts.traceparent, via, opts.shadow).await
    }

    fn check_cost(&self, cost: u64) -> Result<()> {
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
        Ok(())
    }

    /// Several decisions at once: a binding's batch (one JS tick's checks). Each is its own atomic
    /// decision with its own answer, in order, as `check_with` / `peek_with` would give. On a
    /// standalone Redis without a cache layer or tracing they go out in shared script calls, each
    /// call with one deadline, breaker permit and in-flight slot; otherwise one by one, polled
    /// [`together`](crate::together).
    pub async fn decide_many(&self, items: &[BatchItem<'_>]) -> Vec<Result<Decision>> {
        let inner = &*self.inner;
        match &inner.backend {
            Backend::Redis { remote, cache: None, .. }
                if !remote.store().is_cluster()
                    && !telemetry::tracing_on()
                    && items.iter().all(|i| i.traceparent.is_none()) =>
            {
                self.decide_in_calls(remote, items).await
            }
            _ => {
                match items {
                    // alone: no company to wait for
                    [it] => vec![self.one_of_many(*it).await],
                    _ => crate::together(futures::future::join_all(items.iter().map(|it| self.one_of_many(*it)))).await,
                }
            }
        }
    }

    /// One decision of a batch, boxed: each decision's future is large, and join_all would move
    /// it at every step.
    fn one_of_many<'a>(&'a self, it: BatchItem<'a>) -> Pin<Box<dyn Future<Output = Result<Decision>> + Send + 'a>> {
        Box::pin(async move {
            if it.cost == 0 {
                self.peek_with(it.key, it.traceparent).await
            } else {
                self.check_with(it.key, CheckOptions::new(it.cost, it.traceparent)).await
            }
        })
    }

    /// `decide_many` on a standalone Redis: script calls of up to MAX_BATCH requests, sent at once.
    async fn decide_in_calls(&self, remote: &Remote, items: &[BatchItem<'_>]) -> Vec<Result<Decision>> {
        let inner = &*self.inner;
        let store = remote.store();
        let limit_arg: Arc<[u8]> = limit_args(inner.algorithm, &inner.limits).into();
        let epoch_us = crate::keys::epoch_us(inner.algorithm, &inner.limits);
        let mut answers: Vec<Option<Result<Decision>>> = (0..items.len()).map(|_| None).collect();
        let (mut asks, mut at) = (Vec::with_capacity(items.len()), Vec::with_capacity(items.len()));
        for (i, it) in items.iter().enumerate() {
            let consume = it.cost > 0;
            let keys = if consume { self.check_cost(it.cost) } else { Ok(()) }
                .and_then(|()| inner.layout.keys(it.key, inner.algorithm, &inner.limits));
            match keys {
                Ok(keys) => {
                    asks.push(Ask {
                        keys,
                        algorithm: inner.algorithm,
                        limits: limit_arg.clone(),
                        epoch_us,
                        cost: it.cost.max(1),
                        consume,
                    });
                    at.push(i);
                }
                Err(e) => answers[i] = Some(Err(e)),
            }
        }
        let calls = asks.chunks(MAX_BATCH).map(|chunk| async move {
            let refs: Vec<&Ask> = chunk.iter().collect();
            let t0 = inner.clock.now_us();
            let decided = remote.call(store.decide(&refs)).await;
            (decided, t0, inner.clock.now_us())
        });
        let results = futures::future::join_all(calls).await;
        for ((chunk, at), (decided, t0, t1)) in asks.chunks(MAX_BATCH).zip(at.chunks(MAX_BATCH)).zip(results) {
            for (k, ask) in chunk.iter().enumerate() {
                let req = ask.request(&inner.limits);
                let outcome = match &decided {
                    Ok(d) => store.outcome(&req, &d[k]),
                    Err(e) => Err(e.clone()),
                };
                let answer = match outcome {
                    Ok(out) => {
                        if k == 0 {
                            self.observe_offset(&out, t0, t1);
                        }
                        Ok(self.answered(&out, Source::Redis))
                    }
                    Err(e) => self.store_failed(e, &req, t1, LogTraceId::default()),
                };
                if let Ok(d) = &answer {
                    inner.metrics.decision(d.source, d.allowed);
                }
                answers[at[k]] = Some(answer);
            }
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(store.bad_reply("a batched request got no answer"))))
            .collect()
    }

    /// Would one more request pass? Consumes nothing.
    pub async fn peek(&self, key: &str) -> Result<Decision> {
        self.run(key, 1, false, None, None, false).await
    }

    /// `peek` with a trace parent.
    pub async fn peek_with(&self, key: &str, traceparent: Option<&str>) -> Result<Decision> {
        self.run(key, 1, false, traceparent, None, false).await
    }

    /// Forget every count of the identity (in Redis and in the local fallback).
    pub async fn reset(&self, key: &str) -> Result<()> {
        let keys = self.inner.layout.keys(key, self.inner.algorithm, &self.inner.limits)?;
        match &self.inner.backend {
            Backend::Memory(m) => {
                m.reset(&keys);
                Ok(())
            }
            Backend::Redis { remote, fallback, cache } => {
                fallback.reset(&keys);
                if let Some(c) = cache {
                    c.forget(&keys[0]);
                }
                remote.call(remote.store().reset(self.inner.algorithm, &keys)).await
            }
        }
    }

    /// Make sure Redis answers and holds the decision script (no-op on the embedded store), so the
    /// first decision is not the one that connects. Not subject to the breaker.
    pub async fn connect(&self) -> Result<()> {
        match &self.inner.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Redis { remote, .. } => {
                remote.store().ping().await?;
                remote.store().load_scripts().await
            }
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

    async fn run(
        &self,
        key: &str,
        cost: u64,
        consume: bool,
        traceparent: Option<&str>,
        via: Option<&OwnConnection>,
        shadow: bool,
    ) -> Result<Decision> {
        let inner = &*self.inner;
        let op = if consume { "check" } else { "peek" };
        let mut span = CheckSpan::start(traceparent, key, op, cost, inner.algorithm.as_str(), &inner.limits_label);
        let result =
            self.decide(key, cost, consume, span.as_ref().map(|s| s.trace_id()).unwrap_or_default(), via).await;
        match (&result, span.as_mut()) {
            (Ok((d, latency)), Some(s)) => s.decided(d, *latency, shadow),
            (Err(e), Some(s)) => s.failed(e, key),
            _ => {}
        }
        let (decision, _) = result?;
        if shadow {
            inner.metrics.shadow_decision(decision.source, decision.allowed);
        } else {
            inner.metrics.decision(decision.source, decision.allowed);
        }
        Ok(decision)
    }

    /// The decision and, when Redis answered, how long it took (µs).
    async fn decide(
        &self,
        key: &str,
        cost: u64,
        consume: bool,
        trace_id: LogTraceId,
        via: Option<&OwnConnection>,
    ) -> Result<(Decision, Option<u64>)> {
        let inner = &*self.inner;
        let keys = inner.layout.keys(key, inner.algorithm, &inner.limits)?;
        let req = Request { keys: &keys, limits: &inner.limits, algorithm: inner.algorithm, cost, consume };
        let Backend::Redis { remote, cache, .. } = &inner.backend else {
            let Backend::Memory(m) = &inner.backend else { unreachable!("two backends") };
            return Ok((Decision::from_outcome(&m.evaluate(&req), &inner.limits, Source::Memory), None));
        };
        let t0 = inner.clock.now_us();
        let result = match (cache, via) {
            (Some(c), _) => c.check(remote, &req).await,
            (None, Some(v)) => remote.call_from(v.store.evaluate(&req), &v.home).await.map(|o| (o, Source::Redis)),
            (None, None) => remote.evaluate(&req).await.map(|o| (o, Source::Redis)),
        };
        let t1 = inner.clock.now_us();
        match result {
            Ok((out, source)) => {
                let latency = (source == Source::Redis).then(|| {
                    self.observe_offset(&out, t0, t1);
                    t1.saturating_sub(t0)
                });
                Ok((self.answered(&out, source), latency))
            }
            Err(e) => Ok((self.store_failed(e, &req, t1, trace_id)?, None)),
        }
    }

    /// The decision for an answer of the store or the cache layer.
    fn answered(&self, out: &Outcome, source: Source) -> Decision {
        // only an admission says Redis records again: at maxmemory it still answers denials,
        // and those must not make every other request's fallback warn anew
        if out.allowed {
            self.inner.store_failing.store(false, Ordering::Relaxed);
        }
        Decision::from_outcome(out, &self.inner.limits, source)
    }

    /// Redis failed `req`: the fallback policy decides (and says so in the log, once per outage).
    fn store_failed(&self, e: Error, req: &Request<'_>, now_us: u64, trace_id: LogTraceId) -> Result<Decision> {
        let inner = &*self.inner;
        let Backend::Redis { fallback, .. } = &inner.backend else { return Err(e) };
        let mode = fallback.mode().as_str();
        if !inner.store_failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, fallback = mode, trace_id = %trace_id, "Redis unavailable; deciding by the fallback policy");
        } else {
            tracing::debug!(error = %e, fallback = mode, trace_id = %trace_id, "Redis unavailable");
        }
        fallback.decide(e, req, now_us)
    }

    /// Redis time sits between our send and receive: compare it with the midpoint.
    fn observe_offset(&self, out: &Outcome, t0: u64, t1: u64) {
        let inner = &*self.inner;
        let mid = (t0 / 2 + t1 / 2) as i64;
        let offset = out.now_us as i64 - mid;
        inner.offset_us.store(offset, Ordering::Relaxed);
        inner.offset_known.store(true, Ordering::Relaxed);
        inner.metrics.clock_offset(offset);
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
