//! `Limiter`, `Decision`, `Window` and `ManualClock`: the core's limiter seen from Python. Async
//! methods return awaitables driven by the process's runtime; sync ones detach from the
//! interpreter while they wait. The embedded store answers in place, without the runtime.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use floodwall::{
    Algorithm, CacheOptions, CheckOptions, Decision, FakeClock, FallbackMode, Limiter, RedisOptions, Source,
    WindowState,
};
use futures::FutureExt;
use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyList, PyString};
use pyo3::IntoPyObjectExt;

use crate::bridge;
use crate::errors::{from_panic, guard, to_py};
use crate::runtime::{self, ForkSafeRuntime};

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// One limit's view of a request.
#[pyclass(name = "Window", module = "floodwall._floodwall", frozen)]
pub struct PyWindow {
    inner: WindowState,
}

#[pymethods]
impl PyWindow {
    /// The limit as a string, e.g. "5/second".
    #[getter]
    fn limit(&self) -> String {
        self.inner.limit.to_string()
    }
    /// Requests the window admits.
    #[getter]
    fn max(&self) -> u64 {
        self.inner.limit.max()
    }
    /// The window length in seconds.
    #[getter]
    fn window(&self) -> f64 {
        seconds(self.inner.limit.window())
    }
    /// The policy name of the RateLimit headers, e.g. "per-second".
    #[getter]
    fn policy(&self) -> String {
        self.inner.limit.policy_name()
    }
    #[getter]
    fn remaining(&self) -> u64 {
        self.inner.remaining
    }
    #[getter]
    fn reset_after(&self) -> f64 {
        seconds(self.inner.reset_after)
    }
    #[getter]
    fn retry_after(&self) -> Option<f64> {
        self.inner.retry_after.map(seconds)
    }
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("limit", self.limit())?;
        d.set_item("remaining", self.remaining())?;
        d.set_item("reset_after", self.reset_after())?;
        d.set_item("retry_after", self.retry_after())?;
        Ok(d)
    }
    fn __repr__(&self) -> String {
        format!(
            "Window(limit={:?}, remaining={}, reset_after={:?}, retry_after={})",
            self.limit(),
            self.remaining(),
            self.reset_after(),
            opt_repr(self.retry_after()),
        )
    }
}

fn opt_repr(v: Option<f64>) -> String {
    v.map(|s| format!("{s:?}")).unwrap_or_else(|| "None".into())
}

/// The answer to one check: a value, never an exception.
#[pyclass(name = "Decision", module = "floodwall._floodwall", frozen)]
pub struct PyDecision {
    pub(crate) inner: Decision,
}

impl From<Decision> for PyDecision {
    fn from(inner: Decision) -> Self {
        PyDecision { inner }
    }
}

#[pymethods]
impl PyDecision {
    #[getter]
    fn allowed(&self) -> bool {
        self.inner.allowed
    }
    /// The max of the binding limit (the one that denied, or the one with least remaining).
    #[getter]
    fn limit(&self) -> u64 {
        self.inner.limit
    }
    #[getter]
    fn remaining(&self) -> u64 {
        self.inner.remaining
    }
    /// Seconds until the binding window holds none of this identity's requests.
    #[getter]
    fn reset_after(&self) -> f64 {
        seconds(self.inner.reset_after)
    }
    /// Seconds to wait before the same request could pass; None when allowed.
    #[getter]
    fn retry_after(&self) -> Option<f64> {
        self.inner.retry_after.map(seconds)
    }
    /// The limit that denied, e.g. "5/second"; None when allowed.
    #[getter]
    fn limited_by(&self) -> Option<String> {
        self.inner.limited_by.map(|l| l.to_string())
    }
    /// Where the answer came from: "redis", "memory", "cache", "lease" or "fallback".
    #[getter]
    fn source(&self) -> &'static str {
        self.inner.source.as_str()
    }
    /// Every limit, in configuration order.
    #[getter]
    fn windows(&self) -> Vec<PyWindow> {
        self.inner.windows.iter().map(|w| PyWindow { inner: w.clone() }).collect()
    }
    /// The store's clock at the decision, in seconds since the epoch (Redis time on Redis).
    #[getter]
    fn at(&self) -> f64 {
        self.inner.at_us as f64 / 1e6
    }
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("allowed", self.allowed())?;
        d.set_item("limit", self.limit())?;
        d.set_item("remaining", self.remaining())?;
        d.set_item("reset_after", self.reset_after())?;
        d.set_item("retry_after", self.retry_after())?;
        d.set_item("limited_by", self.limited_by())?;
        d.set_item("source", self.source())?;
        let windows = PyList::empty(py);
        for w in self.windows() {
            windows.append(w.to_dict(py)?)?;
        }
        d.set_item("windows", windows)?;
        Ok(d)
    }
    fn __bool__(&self) -> bool {
        self.inner.allowed
    }
    fn __repr__(&self) -> String {
        format!(
            "Decision(allowed={}, limit={}, remaining={}, reset_after={:?}, retry_after={}, limited_by={}, source={:?})",
            if self.inner.allowed { "True" } else { "False" },
            self.inner.limit,
            self.inner.remaining,
            self.reset_after(),
            opt_repr(self.retry_after()),
            self.limited_by().map(|l| format!("{l:?}")).unwrap_or_else(|| "None".into()),
            self.source(),
        )
    }
}

fn ms_to_us(ms: f64) -> PyResult<u64> {
    if !ms.is_finite() || ms < 0.0 {
        return Err(to_py(floodwall::Error::InvalidConfig {
            what: "clock time",
            value: ms.to_string(),
            reason: "milliseconds must be a finite number, at least 0".into(),
        }));
    }
    Ok((ms * 1000.0).round() as u64)
}

/// A clock that moves only when told to: the embedded store decides on it (tests, simulations).
/// Given with a redis_url, Redis scripts take their time from it too (test-only).
#[pyclass(name = "ManualClock", module = "floodwall._floodwall", frozen)]
pub struct PyManualClock {
    clock: FakeClock,
}

#[pymethods]
impl PyManualClock {
    /// start_ms: milliseconds since the epoch; default now.
    #[new]
    #[pyo3(signature = (start_ms = None))]
    fn new(start_ms: Option<f64>) -> PyResult<Self> {
        let us = match start_ms {
            Some(ms) => ms_to_us(ms)?,
            None => floodwall::Clock::now_us(&floodwall::SystemClock),
        };
        Ok(PyManualClock { clock: FakeClock::new(us) })
    }
    /// Move the clock forward by `ms` milliseconds.
    fn advance(&self, ms: f64) -> PyResult<()> {
        self.clock.advance(Duration::from_micros(ms_to_us(ms)?));
        Ok(())
    }
    /// Set the clock to `ms` milliseconds since the epoch.
    fn set(&self, ms: f64) -> PyResult<()> {
        self.clock.set_us(ms_to_us(ms)?);
        Ok(())
    }
    /// The clock's time in milliseconds since the epoch.
    #[getter]
    fn now_ms(&self) -> f64 {
        floodwall::Clock::now_us(&self.clock) as f64 / 1000.0
    }
    fn __repr__(&self) -> String {
        format!("ManualClock(start_ms={:?})", self.now_ms())
    }
}

/// An awaitable whose result is already known: the embedded store decides in place, so an
/// `await` on it returns at once without a trip through the runtime or the event loop.
#[pyclass(module = "floodwall._floodwall")]
struct Ready {
    result: Option<PyResult<Py<PyAny>>>,
}

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    fn __next__(&mut self) -> PyResult<Option<Py<PyAny>>> {
        match self.result.take() {
            Some(Ok(value)) => Err(PyStopIteration::new_err((value,))),
            Some(Err(e)) => Err(e),
            None => Ok(None),
        }
    }
}

/// `()` converts to an empty tuple; an awaitable that returns nothing should give None.
fn none(_: ()) -> Option<bool> {
    None
}

fn limits_arg(limits: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if let Ok(s) = limits.cast::<PyString>() {
        return Ok(vec![s.to_str()?.to_owned()]);
    }
    limits.extract::<Vec<String>>().map_err(|_| {
        to_py(floodwall::Error::InvalidConfig {
            what: "limits",
            value: limits.repr().map(|r| r.to_string()).unwrap_or_default(),
            reason: "expected a limit string like \"10/second\" or a list of them".into(),
        })
    })
}

pub(crate) fn config_error(what: &'static str, value: impl ToString, reason: impl Into<String>) -> PyErr {
    to_py(floodwall::Error::InvalidConfig { what, value: value.to_string(), reason: reason.into() })
}

static JSON_DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// A dict of options as the core's own serde type: the field names, defaults and the refusal of
/// unknown fields are the core's, so they never drift from it.
fn options_arg<T: serde::de::DeserializeOwned>(what: &'static str, v: &Bound<'_, PyAny>) -> PyResult<T> {
    let py = v.py();
    if !v.is_instance_of::<PyDict>() {
        return Err(config_error(what, v.repr()?, "expected a dict of options"));
    }
    let text: String = JSON_DUMPS.import(py, "json", "dumps")?.call1((v,))?.extract()?;
    serde_json::from_str(&text).map_err(|e| config_error(what, &text, e.to_string()))
}

/// `"open" | "closed" | "local" | "error"`, or a dict with `mode` and its parameters
/// (`retry_after_ms` for closed, `expected_instances` for local).
fn fallback_arg(v: &Bound<'_, PyAny>) -> PyResult<FallbackMode> {
    if let Ok(s) = v.cast::<PyString>() {
        return FallbackMode::parse(s.to_str()?).map_err(to_py);
    }
    let mode: FallbackMode = options_arg("fallback", v)?;
    // serde ignores extra fields next to a unit variant's tag ({"mode": "open", "retry_after_ms": 5});
    // anything the chosen mode does not carry is a mistake worth hearing about.
    let known = serde_json::to_value(&mode).map_err(|e| config_error("fallback", mode.as_str(), e.to_string()))?;
    for k in v.cast::<PyDict>()?.keys() {
        let k: String = k.extract()?;
        if known.get(&k).is_none() {
            return Err(config_error("fallback", &k, format!("not an option of the {:?} fallback", mode.as_str())));
        }
    }
    Ok(mode)
}

/// `True` (the defaults), or a dict of the core's CacheOptions; None/False: no cache.
fn cache_arg(v: &Bound<'_, PyAny>) -> PyResult<Option<CacheOptions>> {
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(b.is_true().then(CacheOptions::default));
    }
    options_arg("cache", v).map(Some)
}

fn cost_arg(cost: i64) -> PyResult<u64> {
    if cost < 1 {
        return Err(to_py(floodwall::Error::InvalidConfig {
            what: "cost",
            value: cost.to_string(),
            reason: "must be at least 1 (use peek to look without consuming)".into(),
        }));
    }
    Ok(cost as u64)
}

/// Rate limits for many identities, on Redis (`redis_url`) or the embedded in-process store.
#[pyclass(name = "Limiter", module = "floodwall._floodwall", frozen)]
pub struct PyLimiter {
    pub(crate) inner: Limiter,
    shown_url: Option<String>,
    prefix: String,
    fallback: &'static str,
    name: String,
    /// Names this limiter in each thread's set of own connections (runtime::block_here).
    token: Arc<()>,
    place: Place,
}

/// Where a call's future is first polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// The embedded store: done on the first poll, without the runtime.
    InProcess,
    /// A local cache layer in front of Redis: it answers most hot identities without a round
    /// trip, so the first poll is made here (inside the runtime's context); only a call that must
    /// wait for Redis goes on to the runtime and the event loop.
    Cached,
    /// Every call a Redis round trip: straight to the runtime.
    Runtime,
}

/// A Python awaitable for `fut`. A call done on its first poll (`InProcess`, often `Cached`)
/// returns an awaitable that is already done: no runtime, no asyncio future. The rest run on the
/// runtime and resolve an asyncio future on the caller's loop. Only pass `InProcess` for futures
/// that cannot need the runtime.
pub(crate) fn awaitable<'py, T, F>(py: Python<'py>, place: Place, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = floodwall::Result<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let mut fut = Box::pin(fut);
    if place != Place::Runtime {
        let polled = guard(|| {
            // A noop waker is enough: a future still pending is polled again on the runtime at
            // once, which registers the runtime's waker with whatever it waits on.
            let _context = (place == Place::Cached).then(|| runtime::get().enter());
            Ok(fut.as_mut().poll(&mut Context::from_waker(Waker::noop())))
        })?;
        if let Poll::Ready(r) = polled {
            let result = r.map_err(to_py).and_then(|v| v.into_py_any(py));
            return Ok(Bound::new(py, Ready { result: Some(result) })?.into_any());
        }
    }
    let guarded = async move {
        match AssertUnwindSafe(fut).catch_unwind().await {
            Ok(r) => r.map_err(to_py),
            Err(panic) => Err(from_panic(panic)),
        }
    };
    if USE_LOOP_BRIDGE.load(Ordering::Relaxed) {
        let (bridge, future) = bridge::future_for_running_loop(py)?;
        let pending = future.clone().unbind();
        // Only Rust values go to the runtime thread; see bridge::Completions.
        let target = bridge.get().completions();
        bridge::LoopBridge::submit(
            &bridge,
            Box::pin(async move {
                let result = guarded.await;
                let done: bridge::Completion = Box::new(move |py| result.and_then(|v| v.into_py_any(py)));
                target.complete(pending, done);
            }),
        )?;
        return Ok(future);
    }
    pyo3_async_runtimes::generic::future_into_py::<ForkSafeRuntime, _, _>(py, guarded)
}

/// Which way async results reach the event loop: batched through the loop bridge (default), or
/// one by one through pyo3-async-runtimes (kept to compare the two; see benches/python). Switched by test_hooks.rs, in test builds only.
pub(crate) static USE_LOOP_BRIDGE: AtomicBool = AtomicBool::new(true);

/// Whether sync calls on Redis run on their caller's thread (default) or hand off to the shared
/// runtime (kept to compare the two; see benches/python). Switched by test_hooks.rs, in test builds only.
pub(crate) static SYNC_HERE: AtomicBool = AtomicBool::new(true);

/// Wait for `fut` without holding the interpreter (in place when `in_process`).
pub(crate) fn blocking<T: Send>(
    py: Python<'_>,
    in_process: bool,
    fut: impl Future<Output = floodwall::Result<T>> + Send,
) -> PyResult<T> {
    guard(|| {
        let mut fut = pin!(fut);
        if in_process {
            if let Poll::Ready(r) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                return r.map_err(to_py);
            }
        }
        py.detach(|| runtime::get().block_on(fut)).map_err(to_py)
    })
}

impl PyLimiter {
    fn in_process(&self) -> bool {
        self.place == Place::InProcess
    }
    fn awaitable<'py, T, F>(&self, py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
    where
        F: Future<Output = floodwall::Result<T>> + Send + 'static,
        T: for<'a> IntoPyObject<'a> + Send + 'static,
    {
        awaitable(py, self.place, fut)
    }
    fn blocking<T: Send>(&self, py: Python<'_>, fut: impl Future<Output = floodwall::Result<T>> + Send) -> PyResult<T> {
        blocking(py, self.in_process(), fut)
    }
    /// A sync call on Redis over this thread's own connection (runtime::block_here), else like
    /// `blocking`.
    fn blocking_here<T: Send, Fut>(
        &self,
        py: Python<'_>,
        on_own: impl FnOnce(floodwall::OwnConnection) -> Fut + Send,
        otherwise: impl Future<Output = floodwall::Result<T>> + Send,
    ) -> PyResult<T>
    where
        Fut: Future<Output = floodwall::Result<T>>,
    {
        if self.in_process() || !SYNC_HERE.load(Ordering::Relaxed) {
            return self.blocking(py, otherwise);
        }
        let here = guard(|| Ok(py.detach(|| runtime::block_here(&self.inner, &self.token, on_own))))?;
        match here {
            Some(r) => r.map_err(to_py),
            None => self.blocking(py, otherwise),
        }
    }
}

#[pymethods]
impl PyLimiter {
    #[new]
    #[pyo3(signature = (
        limits, algorithm = "sliding_window", redis_url = None, prefix = "floodwall",
        timeout_ms = None, fallback = None, breaker = None, cache = None, cluster_nodes = None,
        tls_ca_file = None, clock = None, name = None, max_identities = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        limits: &Bound<'_, PyAny>,
        algorithm: &str,
        redis_url: Option<String>,
        prefix: &str,
        timeout_ms: Option<u64>,
        fallback: Option<&Bound<'_, PyAny>>,
        breaker: Option<&Bound<'_, PyAny>>,
        cache: Option<&Bound<'_, PyAny>>,
        cluster_nodes: Option<Vec<String>>,
        tls_ca_file: Option<String>,
        clock: Option<&Bound<'_, PyManualClock>>,
        name: Option<String>,
        max_identities: Option<i64>,
    ) -> PyResult<Self> {
        guard(|| {
            let limits = floodwall::parse_limits(&limits_arg(limits)?).map_err(to_py)?;
            let algorithm = Algorithm::parse(algorithm).map_err(to_py)?;
            let fallback = match fallback {
                Some(f) => fallback_arg(f)?,
                None => FallbackMode::default(),
            };
            let mut b = Limiter::builder(limits)
                .algorithm(algorithm)
                .prefix(prefix)
                .timeout(timeout_ms.map_or(floodwall::limiter::DEFAULT_TIMEOUT, Duration::from_millis))
                .fallback(fallback.clone());
            if let Some(d) = breaker {
                b = b.breaker(options_arg("breaker", d)?);
            }
            if let Some(c) = cache.map(cache_arg).transpose()?.flatten() {
                b = b.cache(c);
            }
            if let Some(n) = &name {
                b = b.name(n.clone());
            }
            if let Some(n) = max_identities {
                // a negative count is named like the core names 0, not left to an OverflowError
                let n = usize::try_from(n).map_err(|_| {
                    to_py(floodwall::Error::InvalidConfig {
                        what: "max_identities",
                        value: n.to_string(),
                        reason: "must be at least 1".into(),
                    })
                })?;
                b = b.max_identities(n);
            }
            if let Some(c) = clock {
                b = b.clock(Arc::new(c.get().clock.clone()));
            }
            let cluster_nodes = cluster_nodes.unwrap_or_default();
            let mut options = match (&redis_url, cluster_nodes.is_empty()) {
                (_, false) => Some(RedisOptions::cluster(cluster_nodes.iter().cloned())),
                (Some(url), true) => Some(RedisOptions::new(url.clone())),
                (None, true) => None,
            };
            let shown_url = if cluster_nodes.is_empty() {
                redis_url.as_deref().map(floodwall::store::redis::redact_url)
            } else {
                Some(cluster_nodes.iter().map(|n| floodwall::store::redis::redact_url(n)).collect::<Vec<_>>().join(","))
            };
            if let (Some(o), Some(path)) = (options.as_mut(), &tls_ca_file) {
                let pem = std::fs::read(path).map_err(|e| {
                    to_py(floodwall::Error::InvalidConfig {
                        what: "tls_ca_file",
                        value: path.clone(),
                        reason: e.to_string(),
                    })
                })?;
                o.tls_ca_pem = Some(pem);
            }
            if let Some(o) = options {
                b = b.redis(o);
                if clock.is_some() {
                    // Test-only: scripts take `now` from the manual clock instead of Redis TIME.
                    b = b.redis_time_from_clock();
                }
            }
            let inner = b.build().map_err(to_py)?;
            let name = name.unwrap_or_else(|| prefix.to_owned());
            let place = match (inner.store_kind(), inner.cache_stats()) {
                (Source::Memory, _) => Place::InProcess,
                (_, Some(_)) => Place::Cached,
                (_, None) => Place::Runtime,
            };
            let token = Arc::new(());
            Ok(PyLimiter {
                inner,
                shown_url,
                prefix: prefix.to_owned(),
                fallback: fallback.as_str(),
                name,
                token,
                place,
            })
        })
    }

    /// Consume `cost` from every limit of `key`, or nothing if any limit would be exceeded.
    /// `traceparent`: the caller's W3C trace context; floodwall's span becomes its child.
    #[pyo3(signature = (key, cost = 1, *, traceparent = None))]
    fn check<'py>(
        &self,
        py: Python<'py>,
        key: String,
        cost: i64,
        traceparent: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cost = cost_arg(cost)?;
        let limiter = self.inner.clone();
        self.awaitable(py, async move {
            let opts = CheckOptions::new(cost, traceparent.as_deref());
            limiter.check_with(&key, opts).await.map(PyDecision::from)
        })
    }

    #[pyo3(signature = (key, cost = 1, *, traceparent = None))]
    fn check_sync(&self, py: Python<'_>, key: &str, cost: i64, traceparent: Option<&str>) -> PyResult<PyDecision> {
        let cost = cost_arg(cost)?;
        let opts = CheckOptions::new(cost, traceparent);
        let limiter = &self.inner;
        self.blocking_here(py, |c| async move { limiter.check_on(&c, key, opts).await }, limiter.check_with(key, opts))
            .map(PyDecision::from)
    }

    /// Would one more request pass? Consumes nothing.
    #[pyo3(signature = (key, *, traceparent = None))]
    fn peek<'py>(&self, py: Python<'py>, key: String, traceparent: Option<String>) -> PyResult<Bound<'py, PyAny>> {
        let limiter = self.inner.clone();
        self.awaitable(py, async move { limiter.peek_with(&key, traceparent.as_deref()).await.map(PyDecision::from) })
    }

    #[pyo3(signature = (key, *, traceparent = None))]
    fn peek_sync(&self, py: Python<'_>, key: &str, traceparent: Option<&str>) -> PyResult<PyDecision> {
        let limiter = &self.inner;
        self.blocking_here(
            py,
            |c| async move { limiter.peek_on(&c, key, traceparent).await },
            limiter.peek_with(key, traceparent),
        )
        .map(PyDecision::from)
    }

    /// Forget every count of `key`.
    fn reset<'py>(&self, py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
        let limiter = self.inner.clone();
        self.awaitable(py, async move { limiter.reset(&key).await.map(none) })
    }

    fn reset_sync(&self, py: Python<'_>, key: &str) -> PyResult<()> {
        self.blocking(py, self.inner.reset(key))
    }

    /// Make sure the store answers (raises StoreError if Redis is unreachable).
    fn connect<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let limiter = self.inner.clone();
        self.awaitable(py, async move { limiter.connect().await.map(none) })
    }

    /// Connects this thread's own connection too (sync calls on Redis use it).
    fn connect_sync(&self, py: Python<'_>) -> PyResult<()> {
        self.blocking(py, self.inner.connect())?;
        self.blocking_here(py, |c| async move { c.connect().await }, async { Ok(()) })
    }

    /// The limits, normalised, e.g. ["5/second", "100/minute"].
    #[getter]
    fn limits(&self) -> Vec<String> {
        self.inner.limits().iter().map(|l| l.to_string()).collect()
    }
    #[getter]
    fn algorithm(&self) -> &'static str {
        self.inner.algorithm().as_str()
    }
    /// "redis" or "memory".
    #[getter]
    fn store(&self) -> &'static str {
        self.inner.store_kind().as_str()
    }
    #[getter]
    fn prefix(&self) -> &str {
        &self.prefix
    }
    /// The `limiter` label of this limiter's metrics (default: the prefix).
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }
    /// The largest cost one check may ask for.
    #[getter]
    fn max_cost(&self) -> u64 {
        self.inner.max_cost()
    }
    /// The fallback mode: what answers while Redis cannot ("open", "closed", "local" or "error").
    #[getter]
    fn fallback(&self) -> &'static str {
        self.fallback
    }
    /// The circuit breaker in front of Redis: "closed", "open" or "half_open"; None in memory.
    #[getter]
    fn breaker_state(&self) -> Option<&'static str> {
        self.inner.breaker_state().map(|s| s.as_str())
    }
    /// Redis time minus local time in seconds, as last measured (None before any Redis call).
    #[getter]
    fn clock_offset(&self) -> Option<f64> {
        self.inner.clock_offset_us().map(|us| us as f64 / 1e6)
    }
    /// The local cache layer's size and leases; None without a cache.
    fn cache_stats<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(c) = self.inner.cache_stats() else { return Ok(None) };
        let d = PyDict::new(py);
        d.set_item("entries", c.entries)?;
        d.set_item("weighted_bytes", c.weighted_bytes)?;
        d.set_item("max_bytes", c.max_bytes)?;
        d.set_item("leases_granted", c.leases_granted)?;
        d.set_item("permits_leased", c.permits_leased)?;
        d.set_item("permits_returned", c.permits_returned)?;
        Ok(Some(d))
    }
    /// Counters since the limiter was made: decisions per source, Redis calls, errors, timeouts.
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = self.inner.metrics().snapshot();
        let d = PyDict::new(py);
        let decisions = PyDict::new(py);
        for (source, allowed, n) in &m.decisions {
            let key = format!("{}_{}", source.as_str(), if *allowed { "allowed" } else { "denied" });
            decisions.set_item(key, n)?;
        }
        for (source, n) in &m.shadow_denied {
            decisions.set_item(format!("{}_shadow_denied", source.as_str()), n)?;
        }
        d.set_item("decisions", decisions)?;
        d.set_item("redis_calls", m.redis_calls)?;
        d.set_item("redis_errors", m.redis_errors)?;
        d.set_item("redis_timeouts", m.redis_timeouts)?;
        d.set_item("redis_rejected_open", m.redis_rejected_open)?;
        d.set_item("breaker_state", m.breaker_state)?;
        Ok(d)
    }
    fn __repr__(&self) -> String {
        let store = match &self.shown_url {
            Some(url) => format!("redis_url={url:?}"),
            None => "store='memory'".into(),
        };
        format!("Limiter({:?}, algorithm={:?}, {store})", self.limits(), self.algorithm())
    }
}
