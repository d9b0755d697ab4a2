//! Redis: each check is ONE script call (EVALSHA, reloaded by redis-rs on NOSCRIPT) that reads
//! Redis `TIME`, checks every window of the identity and consumes from all only if all allow.
//! The connection is multiplexed, made on first use and re-made by redis-rs after a failure.
//! Concurrent decisions share script calls through the store's queue (batch.rs, a part of this store).

pub(crate) mod batch;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::Value;

use crate::algorithm::{Algorithm, Outcome, StateReply};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::keys::{state_field, state_hashes};
use crate::per_process::PerProcess;
use crate::scripts::{decide_invocation, decode_decided, limit_args, DECIDE};

use self::batch::{Ask, Decided};
use super::Request;

pub use crate::scripts::script_for;

/// How to reach Redis.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]`, `rediss://` for TLS. With `cluster_nodes` set,
    /// this is ignored.
    pub url: String,
    /// Seed nodes of a Redis Cluster (`redis://host:port`, credentials in the URLs). Empty: standalone.
    pub cluster_nodes: Vec<String>,
    /// Give up on making a connection after this long.
    pub connect_timeout: Duration,
    /// PEM of the CA that signed the server's certificate, for `rediss://` with a private CA
    /// (None: the system's trust store).
    pub tls_ca_pem: Option<Vec<u8>>,
    /// Give up on one call after this long (None: wait for the server). The limiter's deadline
    /// (core/src/remote.rs) is usually shorter; this bounds calls made outside it.
    pub response_timeout: Option<Duration>,
    /// Hold a call that would go alone this long for company: requests of other identities that
    /// arrive meanwhile share its script call (core/src/store/redis/batch.rs). Zero: none. The cache
    /// layer's `batch_window_us` sets it.
    pub batch_window: Duration,
}

impl RedisOptions {
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            cluster_nodes: Vec::new(),
            tls_ca_pem: None,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Some(Duration::from_secs(1)),
            batch_window: Duration::ZERO,
        }
    }

    pub fn cluster<S: Into<String>>(seeds: impl IntoIterator<Item = S>) -> Self {
        let cluster_nodes: Vec<String> = seeds.into_iter().map(Into::into).collect();
        RedisOptions { url: cluster_nodes.first().cloned().unwrap_or_default(), cluster_nodes, ..Self::new("") }
    }
}

setters!(RedisOptions {
    url: String,
    cluster_nodes: Vec<String>,
    connect_timeout: Duration,
    tls_ca_pem: Option<Vec<u8>>,
    response_timeout: Option<Duration>,
    batch_window: Duration,
});

/// rustls needs one process-wide crypto provider; ours is ring (pure Rust + asm, no cmake).
/// If the host application installed another first, that one is used.
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Shows a Redis URL without its password.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let shown = if userinfo.contains(':') { format!("{user}:***") } else { user.to_string() };
            format!("{}{}{}", &url[..s + 3], shown, &url[at..])
        }
        _ => url.to_string(),
    }
}

fn check_scheme(url: &str) -> Result<()> {
    if url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://") {
        Ok(())
    } else {
        Err(Error::InvalidRedisUrl {
            url: redact_url(url),
            reason: "must start with redis://, rediss:// or unix://".into(),
        })
    }
}

// One per store, behind its Arc: the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Client {
    Single(redis::Client),
    Cluster(ClusterClient),
}

/// A multiplexed connection to a server or a cluster; cheap to clone.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    shown_url: String,
    client: Client,
    options: RedisOptions,
    /// Conformance tests only: replaces Redis `TIME` so scripted timelines are deterministic.
    test_clock: Option<Arc<dyn Clock>>,
    /// A forked child (gunicorn, uvicorn workers) must neither reuse its parent's socket nor
    /// wait on a lock a parent thread held at fork(): it gets all of this afresh.
    process: PerProcess<Process>,
}

/// What one process of a store holds.
#[derive(Default)]
struct Process {
    conn: std::sync::Mutex<Option<Conn>>,
    connecting: tokio::sync::Mutex<()>,
    /// Decisions waiting to share a script call (batch.rs).
    queue: std::sync::Mutex<batch::Queue>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("url", &self.inner.shown_url).finish()
    }
}

impl RedisStore {
    /// Validates the URL(s) now; connects on first use (so a limiter can be built while Redis is down).
    pub fn new(options: RedisOptions) -> Result<Self> {
        Self::build(options, None)
    }

    /// For conformance tests: the scripts take `now` from this clock instead of Redis `TIME`.
    /// Production code has no reason to call this; it defeats the point of Redis time.
    #[doc(hidden)]
    pub fn with_test_clock(options: RedisOptions, clock: Arc<dyn Clock>) -> Result<Self> {
        Self::build(options, Some(clock))
    }

    fn build(options: RedisOptions, test_clock: Option<Arc<dyn Clock>>) -> Result<Self> {
        install_crypto_provider();
        let certs = || redis::TlsCertificates { client_tls: None, root_cert: options.tls_ca_pem.clone() };
        let (shown_url, client) = if options.cluster_nodes.is_empty() {
            let shown = redact_url(&options.url);
            check_scheme(&options.url)?;
            let c = if options.tls_ca_pem.is_some() {
                redis::Client::build_with_tls(options.url.as_str(), certs())
            } else {
                redis::Client::open(options.url.as_str())
            }
            .map_err(|e| Error::InvalidRedisUrl { url: shown.clone(), reason: e.to_string() })?;
            (shown, Client::Single(c))
        } else {
            for u in &options.cluster_nodes {
                check_scheme(u)?;
                redis::Client::open(u.as_str())
                    .map_err(|e| Error::InvalidRedisUrl { url: redact_url(u), reason: e.to_string() })?;
            }
            let shown = format!(
                "cluster[{}]",
                options.cluster_nodes.iter().map(|u| redact_url(u)).collect::<Vec<_>>().join(",")
            );
            let mut b = ClusterClient::builder(options.cluster_nodes.clone())
                .connection_timeout(options.connect_timeout)
                .retries(2)
                .min_retry_wait(10)
                .max_retry_wait(200);
            if let Some(t) = options.response_timeout {
                b = b.response_timeout(t);
            }
            if options.tls_ca_pem.is_some() {
                b = b.certs(certs());
            }
            let c = b.build().map_err(|e| Error::InvalidRedisUrl { url: shown.clone(), reason: e.to_string() })?;
            (shown, Client::Cluster(c))
        };
        Ok(RedisStore { inner: Arc::new(Inner { shown_url, client, options, test_clock, process: PerProcess::new() }) })
    }

    /// Whether both handles are the same store.
    pub(crate) fn same_as(&self, other: &RedisStore) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub fn url(&self) -> &str {
        &self.inner.shown_url
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.client, Client::Cluster(_))
    }

    pub(crate) fn store_error(&self, e: redis::RedisError) -> Error {
        if e.is_timeout() {
            let timeout_ms = self.inner.options.response_timeout.unwrap_or_default().as_millis() as u64;
            return Error::Timeout { url: self.inner.shown_url.clone(), timeout_ms };
        }
        Error::Store { url: self.inner.shown_url.clone(), message: e.to_string() }
    }

    fn process(&self) -> &Process {
        self.inner.process.get_or(Process::default)
    }

    fn current(&self) -> Option<Conn> {
        self.process().conn.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn connection(&self) -> Result<Conn> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        // One connect at a time: a burst of first calls must not open a burst of sockets.
        let _one = self.process().connecting.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let conn = match &self.inner.client {
            Client::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.inner.options.connect_timeout))
                    .set_response_timeout(self.inner.options.response_timeout)
                    .set_number_of_retries(1);
                Conn::Single(
                    ConnectionManager::new_with_config(client.clone(), config)
                        .await
                        .map_err(|e| self.store_error(e))?,
                )
            }
            Client::Cluster(client) => {
                Conn::Cluster(client.get_async_connection().await.map_err(|e| self.store_error(e))?)
            }
        };
        *self.process().conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
        Ok(conn)
    }

    /// `now` for a script: empty (the script reads Redis `TIME`) unless a test clock is set.
    pub(crate) fn now_arg(&self) -> String {
        self.inner.test_clock.as_ref().map(|c| c.now_us().to_string()).unwrap_or_default()
    }

    pub(crate) async fn evaluate(&self, req: &Request<'_>) -> Result<Outcome> {
        let ask = Ask::of(req, limit_args(req.algorithm, req.limits).into());
        // a Cluster call must keep to one slot: there each request is its own call
        let d = if self.is_cluster() { self.decide_one(&ask).await? } else { batch::submit(self, ask).await? };
        self.outcome(req, &d)
    }

    /// What the script's answer `d` to `req` means. A request Redis allowed but could not record
    /// (maxmemory) is `Error::Full`, carrying the state read so the local fallback can start from
    /// it; a denial stands, recorded or not (a denial writes nothing).
    pub(crate) fn outcome(&self, req: &Request<'_>, d: &Decided) -> Result<Outcome> {
        if req.consume && d.allowed && !d.recorded {
            let state = if req.algorithm == Algorithm::SlidingLog {
                // the log's answers, not its entries: what each window counts is its limit less
                // what remains (the script decided without consuming)
                let n = req.limits.len();
                match Outcome::from_reply(&d.state, n) {
                    Some(o) => o.windows.iter().zip(req.limits).map(|(w, l)| (l.max() - w.remaining) as i64).collect(),
                    None => Vec::new(),
                }
            } else {
                d.state.clone()
            };
            return Err(Error::Full { url: self.inner.shown_url.clone(), state });
        }
        if req.algorithm == Algorithm::SlidingLog {
            // the log's script answers in full (its state is the log itself)
            return Outcome::from_reply(&d.state, req.limits.len())
                .ok_or_else(|| self.bad_reply(&format!("unexpected log answer {:?}", d.state)));
        }
        let read = StateReply { now_us: d.now_us, state: &d.state };
        Ok(read.outcome(req.algorithm, req.limits, req.cost, req.consume, d.allowed))
    }

    pub(crate) fn bad_reply(&self, message: &str) -> Error {
        Error::Store { url: self.inner.shown_url.clone(), message: message.to_string() }
    }

    /// One request alone in its script call.
    pub(crate) async fn decide_one(&self, ask: &Ask) -> Result<Decided> {
        self.decide(&[ask]).await?.pop().ok_or_else(|| self.bad_reply("no answer"))
    }

    pub(crate) fn batch_window(&self) -> Duration {
        self.inner.options.batch_window
    }

    pub(crate) fn queue(&self) -> std::sync::MutexGuard<'_, batch::Queue> {
        self.process().queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One call of lua/decide.lua for `asks` (one algorithm and limits): what it decided for each.
    pub(crate) async fn decide(&self, asks: &[&Ask]) -> Result<Vec<Decided>> {
        let Some(first) = asks.first() else { return Ok(Vec::new()) };
        let requests = asks.iter().map(|a| (&a.keys[..], a.cost, a.consume));
        let inv = decide_invocation(first.algorithm, &first.limits, first.epoch_us, requests, &self.now_arg());
        let reply: Vec<Value> = self.invoke(&inv).await?;
        let bad =
            || self.bad_reply(&format!("unexpected script reply ({} values) for {} requests", reply.len(), asks.len()));
        // a third value: Redis was at maxmemory (noeviction) and recorded nothing of this call
        let (now, packed, recorded) = match &reply[..] {
            [Value::Int(now), Value::BulkString(packed)] => (now, packed, true),
            [Value::Int(now), Value::BulkString(packed), Value::Int(1)] => (now, packed, false),
            _ => return Err(bad()),
        };
        let now_us = (*now).max(0) as u64;
        let mut rest = &packed[..];
        let decided = (0..asks.len())
            .map(|_| {
                let (allowed, state, tail) = decode_decided(rest).ok_or_else(bad)?;
                rest = tail;
                Ok(Decided { allowed, now_us, state, recorded })
            })
            .collect::<Result<Vec<_>>>()?;
        if !rest.is_empty() {
            return Err(bad());
        }
        Ok(decided)
    }

    /// Run a prepared script (EVALSHA; redis-rs loads it on NOSCRIPT and repeats the call).
    pub(crate) async fn invoke<T: redis::FromRedisValue>(&self, inv: &redis::ScriptInvocation<'_>) -> Result<T> {
        let mut conn = self.connection().await?;
        // A connection that died since the last call (Redis restarted, failed over) fails the
        // first command; redis-rs then reconnects, and one retry lands on the new connection.
        // At worst a lost reply makes the retry consume twice: more denial, never more admission.
        match inv.invoke_async(&mut conn).await {
            Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                tracing::debug!(error = %e, "Redis connection dropped; retrying once");
                inv.invoke_async(&mut conn).await.map_err(|e| self.store_error(e))
            }
            other => other.map_err(|e| self.store_error(e)),
        }
    }

    /// Forget the state of the identity whose keys (keys::KeyLayout::keys) are `keys`.
    pub(crate) async fn reset(&self, algorithm: Algorithm, keys: &[String]) -> Result<()> {
        let mut conn = self.connection().await?;
        let result = if algorithm == Algorithm::SlidingLog {
            redis::cmd("DEL").arg(keys).query_async::<()>(&mut conn).await
        } else {
            // the field, in each epoch's hash (one slot: one pipeline reaches them all)
            let mut pipe = redis::pipe();
            for h in state_hashes(keys) {
                pipe.cmd("HDEL").arg(h).arg(state_field(keys)).ignore();
            }
            pipe.query_async::<()>(&mut conn).await
        };
        result.map_err(|e| self.store_error(e))
    }

    /// Loads the decision script into a standalone server now, so the first decision does not
    /// pay for NOSCRIPT and a load inside its deadline. (On a Cluster each node loads it on first use.)
    pub(crate) async fn load_scripts(&self) -> Result<()> {
        if let Conn::Single(mut c) = self.connection().await? {
            DECIDE.prepare_invoke().load_async(&mut c).await.map_err(|e| self.store_error(e))?;
        }
        Ok(())
    }

    /// Round trip to Redis; used by health checks and `Limiter::connect`. On a cluster one node
    /// answers (a plain PING goes to every node and would fail while any node is down; whether
    /// a given slot is served again is for the half-open probes to find out).
    pub async fn ping(&self) -> Result<()> {
        match self.connection().await? {
            Conn::Single(mut c) => redis::cmd("PING").query_async::<()>(&mut c).await.map_err(|e| self.store_error(e)),
            Conn::Cluster(mut c) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
                c.route_command(redis::cmd("PING"), route).await.map(|_| ()).map_err(|e| self.store_error(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_never_shown() {
        assert_eq!(redact_url("redis://:hunter2@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact_url("rediss://app:hunter2@h:6379"), "rediss://app:***@h:6379");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn bad_urls_are_named() {
        for url in ["http://x", "localhost:6379", "redis://:99999999"] {
            match RedisStore::new(RedisOptions::new(url)) {
                Err(e) => assert!(e.to_string().contains(url), "{e}"),
                Ok(_) => panic!("{url} accepted"),
            }
        }
    }
}
