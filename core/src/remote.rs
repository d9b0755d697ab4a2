//! The guarded path to Redis: a deadline on every call, at most `max_in_flight` calls at once, and
//! the circuit breaker (breaker.rs) asked before each, with a background PING while it is open.
//! The limiter turns the errors into fallback decisions (core/src/fallback.rs).

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::algorithm::Outcome;
use crate::breaker::{Breaker, BreakerOptions};
use crate::error::{Error, Result};
use crate::metrics::{BreakerState, Metrics};
use crate::per_process::PerProcess;
use crate::store::{RedisStore, Request};

/// RedisStore behind the deadline and the breaker.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    inner: Arc<RemoteInner>,
}

#[derive(Debug)]
struct RemoteInner {
    store: RedisStore,
    breaker: Breaker,
    timeout: Duration,
    slow: Duration,
    health_every: Duration,
    metrics: Arc<Metrics>,
    /// Per process: permits held by a parent's calls at fork() would never come back in the child.
    in_flight: PerProcess<tokio::sync::Semaphore>,
}

impl Remote {
    pub(crate) fn new(store: RedisStore, timeout: Duration, opts: BreakerOptions, metrics: Arc<Metrics>) -> Self {
        let slow = Duration::from_millis(opts.slow_call_ms);
        let health_every = Duration::from_millis(opts.health_check_ms.max(1));
        Remote {
            inner: Arc::new(RemoteInner {
                store,
                breaker: Breaker::new(opts, metrics.clone()),
                timeout,
                slow,
                health_every,
                metrics,
                in_flight: PerProcess::new(),
            }),
        }
    }

    pub(crate) fn store(&self) -> &RedisStore {
        &self.inner.store
    }

    pub(crate) fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    /// One guarded Redis call: refused at once while the breaker is open, bounded by the deadline.
    pub(crate) async fn call<T, F>(&self, fut: F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        self.guarded(fut, None).await
    }

    /// `call` from a runtime other than the limiter's (a blocking caller's own): background work
    /// goes to `home`, since the caller's runtime runs only while the caller waits on it.
    pub(crate) async fn call_from<T, F>(&self, fut: F, home: &tokio::runtime::Handle) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        self.guarded(fut, Some(home)).await
    }

    async fn guarded<T, F>(&self, fut: F, home: Option<&tokio::runtime::Handle>) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let inner = &*self.inner;
        // Wait for a slot first (the semaphore is never closed, so acquire cannot fail), then
        // ask the breaker: a call that waited while the breaker opened goes to the fallback.
        let _slot =
            inner.in_flight.get_or(|| tokio::sync::Semaphore::new(inner.breaker.max_in_flight())).acquire().await.ok();
        let Some(mut permit) = inner.breaker.try_acquire() else {
            inner.metrics.rejected_open();
            return Err(Error::Unavailable { url: inner.store.url().to_string() });
        };
        let t0 = Instant::now();
        let result = match tokio::time::timeout(inner.timeout, fut).await {
            Ok(r) => r,
            Err(_) => {
                Err(Error::Timeout { url: inner.store.url().to_string(), timeout_ms: inner.timeout.as_millis() as u64 })
            }
        };
        let elapsed = t0.elapsed();
        // Full: Redis answered (it read and decided) but is at maxmemory; the breaker must stay
        // closed so that every decision still reads the counts Redis holds.
        let ok = matches!(result, Ok(_) | Err(Error::Full { .. }));
        inner.metrics.redis_call(elapsed, ok, matches!(result, Err(Error::Timeout { .. })));
        if inner.breaker.record(&mut permit, ok, elapsed > inner.slow) {
            self.start_health_check(home);
        }
        result
    }

    pub(crate) async fn evaluate(&self, req: &Request<'_>) -> Result<Outcome> {
        self.call(self.inner.store.evaluate(req)).await
    }

    /// While open: PING on an interval; the first answer moves the breaker to half-open.
    fn start_health_check(&self, home: Option<&tokio::runtime::Handle>) {
        if !self.inner.breaker.claim_health_check() {
            return;
        }
        let weak: Weak<RemoteInner> = Arc::downgrade(&self.inner);
        let Some(handle) = home.cloned().or_else(|| tokio::runtime::Handle::try_current().ok()) else { return };
        handle.spawn(async move {
            loop {
                let every = match weak.upgrade() {
                    Some(i) => i.health_every,
                    None => return,
                };
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { return };
                if !matches!(inner.breaker.state(), BreakerState::Open) {
                    inner.breaker.health_check_ended();
                    return;
                }
                let timeout = inner.timeout.max(Duration::from_millis(100));
                if let Ok(Ok(())) = tokio::time::timeout(timeout, inner.store.ping()).await {
                    inner.breaker.healthy();
                }
            }
        });
    }
}
