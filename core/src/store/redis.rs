//! Redis: each check is ONE script call (EVALSHA, reloaded by redis-rs on NOSCRIPT) that reads
//! Redis `TIME`, checks every window of the identity and consumes from all only if all allow.
//! The connection is multiplexed, made on first use and re-made by redis-rs after a failure.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use crate::algorithm::{emission_interval_us, Algorithm, Outcome};
use crate::clock::Clock;
use crate::error::{Error, Result};

use super::Request;

static SLIDING_WINDOW: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../../../lua/sliding_window.lua")));
static TOKEN_BUCKET: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../../../lua/token_bucket.lua")));
static SLIDING_LOG: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../../../lua/sliding_log.lua")));

/// The script that implements an algorithm (public so tools can print its SHA).
pub fn script_for(algorithm: Algorithm) -> &'static Script {
    match algorithm {
        Algorithm::SlidingWindow => &SLIDING_WINDOW,
        Algorithm::TokenBucket => &TOKEN_BUCKET,
        Algorithm::SlidingLog => &SLIDING_LOG,
    }
}

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]` or `rediss://` for TLS.
    pub url: String,
    /// Give up on making a connection after this long.
    pub connect_timeout: Duration,
    /// Give up on one call after this long (None: wait for the server).
    pub response_timeout: Option<Duration>,
}

impl RedisOptions {
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions { url: url.into(), connect_timeout: Duration::from_secs(1), response_timeout: Some(Duration::from_secs(1)) }
    }
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

#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    shown_url: String,
    client: redis::Client,
    options: RedisOptions,
    /// The connection and the pid that made it: a forked child (gunicorn, uvicorn workers) must
    /// not reuse its parent's socket or runtime, so a new pid makes a new connection.
    conn: std::sync::Mutex<Option<(u32, ConnectionManager)>>,
    connecting: tokio::sync::Mutex<()>,
    /// Conformance tests only: replaces Redis `TIME` so scripted timelines are deterministic.
    test_clock: Option<Arc<dyn Clock>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("url", &self.inner.shown_url).finish()
    }
}

impl RedisStore {
    /// Validates the URL now; connects on first use (so a limiter can be built while Redis is down).
    pub fn new(options: RedisOptions) -> Result<Self> {
        let shown_url = redact_url(&options.url);
        if !(options.url.starts_with("redis://") || options.url.starts_with("rediss://") || options.url.starts_with("unix://")) {
            return Err(Error::InvalidRedisUrl { url: shown_url, reason: "must start with redis://, rediss:// or unix://".into() });
        }
        let client = redis::Client::open(options.url.as_str())
            .map_err(|e| Error::InvalidRedisUrl { url: shown_url.clone(), reason: e.to_string() })?;
        Ok(RedisStore { inner: Arc::new(Inner { shown_url, client, options, conn: Default::default(), connecting: Default::default(), test_clock: None }) })
    }

    /// For conformance tests: the scripts take `now` from this clock instead of Redis `TIME`.
    /// Production code has no reason to call this; it defeats the point of Redis time.
    #[doc(hidden)]
    pub fn with_test_clock(options: RedisOptions, clock: Arc<dyn Clock>) -> Result<Self> {
        let store = Self::new(options)?;
        let inner = Arc::try_unwrap(store.inner).map_err(|_| Error::config("store", "redis", "already shared"))?;
        Ok(RedisStore { inner: Arc::new(Inner { test_clock: Some(clock), ..inner }) })
    }

    pub fn url(&self) -> &str {
        &self.inner.shown_url
    }

    fn store_error(&self, e: redis::RedisError) -> Error {
        if e.is_timeout() {
            let timeout_ms = self.inner.options.response_timeout.unwrap_or_default().as_millis() as u64;
            return Error::Timeout { url: self.inner.shown_url.clone(), timeout_ms };
        }
        Error::Store { url: self.inner.shown_url.clone(), message: e.to_string() }
    }

    fn current(&self) -> Option<ConnectionManager> {
        let pid = std::process::id();
        let guard = self.inner.conn.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().filter(|(p, _)| *p == pid).map(|(_, c)| c.clone())
    }

    async fn connection(&self) -> Result<ConnectionManager> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        // One connect at a time: a burst of first calls must not open a burst of sockets.
        let _one = self.inner.connecting.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.inner.options.connect_timeout))
            .set_response_timeout(self.inner.options.response_timeout)
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(self.inner.client.clone(), config).await.map_err(|e| self.store_error(e))?;
        *self.inner.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some((std::process::id(), conn.clone()));
        Ok(conn)
    }

    pub(crate) async fn evaluate(&self, req: &Request<'_>) -> Result<Outcome> {
        let mut conn = self.connection().await?;
        let script = script_for(req.algorithm);
        let mut inv = script.prepare_invoke();
        for k in req.keys {
            inv.key(k);
        }
        let now = self.inner.test_clock.as_ref().map(|c| c.now_us().to_string()).unwrap_or_default();
        inv.arg(now).arg(req.cost).arg(if req.consume { "c" } else { "p" });
        match req.algorithm {
            Algorithm::SlidingWindow => {
                for l in req.limits {
                    inv.arg(l.window().as_micros() as u64);
                }
                for l in req.limits {
                    inv.arg(l.max());
                }
            }
            Algorithm::TokenBucket => {
                for l in req.limits {
                    inv.arg(emission_interval_us(l));
                }
                for l in req.limits {
                    inv.arg(l.burst());
                }
            }
            Algorithm::SlidingLog => {
                inv.arg(req.limits.len());
                for l in req.limits {
                    inv.arg(l.window().as_micros() as u64);
                }
                for l in req.limits {
                    inv.arg(l.max());
                }
            }
        }
        // A connection that died since the last call (Redis restarted, failed over) fails the
        // first command; redis-rs then reconnects, and one retry lands on the new connection.
        // At worst a lost reply makes the retry consume twice: more denial, never more admission.
        let reply: Vec<i64> = match inv.invoke_async(&mut conn).await {
            Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                tracing::debug!(error = %e, "Redis connection dropped; retrying once");
                inv.invoke_async(&mut conn).await.map_err(|e| self.store_error(e))?
            }
            other => other.map_err(|e| self.store_error(e))?,
        };
        Outcome::from_reply(&reply, req.limits.len()).ok_or_else(|| Error::Store {
            url: self.inner.shown_url.clone(),
            message: format!("unexpected script reply {reply:?}"),
        })
    }

    pub(crate) async fn reset(&self, keys: &[String]) -> Result<()> {
        let mut conn = self.connection().await?;
        redis::cmd("DEL").arg(keys).query_async::<()>(&mut conn).await.map_err(|e| self.store_error(e))
    }

    /// Round trip to Redis; used by health checks and `Limiter::connect`.
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.connection().await?;
        redis::cmd("PING").query_async::<()>(&mut conn).await.map_err(|e| self.store_error(e))
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
