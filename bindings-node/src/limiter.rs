//! `Limiter` (over the core's `Limiter`, itself an `Arc` handle) and `ManualClock` (the core's
//! `FakeClock`) for Node. Options are read by hand so that every bad one is refused with
//! `ERR_FLOODWALL_CONFIG` and its value; each call returns a Promise settled on napi's runtime.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use floodwall::{Algorithm, BreakerOptions, CacheOptions, FakeClock, FallbackMode};
use napi::bindgen_prelude::{
    ClassInstance, Either, Float64ArraySlice, FromNapiValue, JavaScriptClassExt, JsObjectValue, Null, Object,
    PromiseRaw, ToNapiValue, Unknown,
};
use napi::{Env, JsValue};
use napi_derive::napi;

use crate::args;
use crate::error::{guard, guard_async, throw, Failure, Outcome};

/// Settle a Promise with the future's outcome; a failure rejects it with a coded `Error`.
pub fn settle<'env, T, F>(env: &'env Env, fut: F) -> napi::Result<PromiseRaw<'env, T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = Outcome<T>> + Send + 'static,
{
    env.spawn_future_with_callback(async move { Ok(guard_async(fut).await) }, |env, r| {
        r.map_err(|f| f.into_js(env.raw()))
    })
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// `null` rather than a missing property: `d.retryAfter === null` when nothing needs waiting.
pub type Nullable<T> = Either<T, Null>;

pub fn nullable<T>(v: Option<T>) -> Nullable<T> {
    v.map(Either::A).unwrap_or(Either::B(Null))
}

/// One limit's state: `limit` is its count, `window` its length in seconds, `name` as written.
#[napi(object)]
pub struct WindowState {
    pub name: String,
    pub limit: f64,
    pub window: f64,
    pub remaining: f64,
    pub reset_after: f64,
    pub retry_after: Nullable<f64>,
}

/// What `check` and `peek` resolve to. Times are seconds.
#[napi(object)]
pub struct Decision {
    pub allowed: bool,
    pub limit: f64,
    pub remaining: f64,
    pub reset_after: f64,
    pub retry_after: Nullable<f64>,
    pub limited_by: Nullable<String>,
    pub source: String,
    pub windows: Vec<WindowState>,
}

impl From<&floodwall::Decision> for Decision {
    fn from(d: &floodwall::Decision) -> Self {
        Decision {
            allowed: d.allowed,
            limit: d.limit as f64,
            remaining: d.remaining as f64,
            reset_after: secs(d.reset_after),
            retry_after: nullable(d.retry_after.map(secs)),
            limited_by: nullable(d.limited_by.map(|l| l.to_string())),
            source: d.source.as_str().to_string(),
            windows: d
                .windows
                .iter()
                .map(|w| WindowState {
                    name: w.limit.to_string(),
                    limit: w.limit.max() as f64,
                    window: secs(w.limit.window()),
                    remaining: w.remaining as f64,
                    reset_after: secs(w.reset_after),
                    retry_after: nullable(w.retry_after.map(secs)),
                })
                .collect(),
        }
    }
}

/// A clock that moves only when told to: tests drive the embedded store (and, with a redisUrl,
/// the test-only Redis time hook) with it.
#[napi(js_name = "ManualClock")]
pub struct JsManualClock {
    clock: FakeClock,
}

fn ms_to_us(ms: f64) -> u64 {
    (ms * 1000.0).round() as u64
}

#[napi]
impl JsManualClock {
    /// `startMs`: milliseconds since the epoch (default: now).
    #[napi(constructor)]
    pub fn new(env: Env, start_ms: Option<Unknown>) -> napi::Result<Self> {
        throw(
            &env,
            guard(|| {
                let start = match start_ms.filter(|v| !args::is_nullish(v)) {
                    Some(v) => ms_to_us(args::non_negative("ManualClock start (ms)", &v)?),
                    None => floodwall::Clock::now_us(&floodwall::SystemClock),
                };
                Ok(JsManualClock { clock: FakeClock::new(start) })
            }),
        )
    }

    #[napi]
    pub fn advance(&self, env: Env, ms: Unknown) -> napi::Result<()> {
        throw(
            &env,
            guard(|| {
                let ms = args::non_negative("ManualClock.advance (ms)", &ms)?;
                self.clock.advance(Duration::from_micros(ms_to_us(ms)));
                Ok(())
            }),
        )
    }

    #[napi]
    pub fn set(&self, env: Env, ms: Unknown) -> napi::Result<()> {
        throw(
            &env,
            guard(|| {
                self.clock.set_us(ms_to_us(args::non_negative("ManualClock.set (ms)", &ms)?));
                Ok(())
            }),
        )
    }

    /// Milliseconds since the epoch.
    #[napi]
    pub fn now(&self) -> f64 {
        floodwall::Clock::now_us(&self.clock) as f64 / 1000.0
    }
}

/// `name` comes first: http.rs builds limiters from the rest (there `name` names the rule).
pub const LIMITER_OPTIONS: &[&str] = &[
    "name",
    "limits",
    "algorithm",
    "redisUrl",
    "clusterNodes",
    "prefix",
    "timeoutMs",
    "fallback",
    "breaker",
    "cache",
    "clock",
    "maxIdentities",
];
const BREAKER_OPTIONS: &[&str] = &[
    "failureThreshold",
    "slowCallMs",
    "slowCallRatio",
    "slowCallWindow",
    "slowCallMinCalls",
    "openMs",
    "halfOpenProbes",
    "healthCheckMs",
    "maxInFlight",
];

/// The circuit breaker in front of Redis; absent fields keep the core's defaults.
fn breaker_arg(v: &Unknown) -> Outcome<BreakerOptions> {
    let mut b = BreakerOptions::default();
    let Some(obj) = args::options("breaker option", Some(v), BREAKER_OPTIONS)? else { return Ok(b) };
    let small = |name: &str, n: u64| {
        u32::try_from(n).map_err(|_| Failure::Arg(format!("invalid breaker.{name} {n}: too large")))
    };
    if let Some(v) = args::field(&obj, "failureThreshold")? {
        b.failure_threshold = small("failureThreshold", args::whole("breaker.failureThreshold", &v, 1)?)?;
    }
    if let Some(v) = args::field(&obj, "slowCallMs")? {
        b.slow_call_ms = args::whole("breaker.slowCallMs", &v, 1)?;
    }
    if let Some(v) = args::field(&obj, "slowCallRatio")? {
        b.slow_call_ratio = args::non_negative("breaker.slowCallRatio", &v)?;
    }
    if let Some(v) = args::field(&obj, "slowCallWindow")? {
        b.slow_call_window = args::whole("breaker.slowCallWindow", &v, 1)? as usize;
    }
    if let Some(v) = args::field(&obj, "slowCallMinCalls")? {
        b.slow_call_min_calls = args::whole("breaker.slowCallMinCalls", &v, 1)? as usize;
    }
    if let Some(v) = args::field(&obj, "openMs")? {
        b.open_ms = args::whole("breaker.openMs", &v, 1)?;
    }
    if let Some(v) = args::field(&obj, "halfOpenProbes")? {
        b.half_open_probes = small("halfOpenProbes", args::whole("breaker.halfOpenProbes", &v, 1)?)?;
    }
    if let Some(v) = args::field(&obj, "healthCheckMs")? {
        b.health_check_ms = args::whole("breaker.healthCheckMs", &v, 1)?;
    }
    if let Some(v) = args::field(&obj, "maxInFlight")? {
        let n = args::whole("breaker.maxInFlight", &v, 1)?;
        b.max_in_flight = usize::try_from(n)
            .ok()
            .filter(|n| *n <= tokio::sync::Semaphore::MAX_PERMITS)
            .ok_or_else(|| Failure::Arg(format!("invalid breaker.maxInFlight {n}: too large")))?;
    }
    Ok(b)
}
const FALLBACK_OPTIONS: &[&str] = &["mode", "retryAfterMs", "expectedInstances"];

/// `'open' | 'closed' | 'local' | 'error'`, or `{ mode, retryAfterMs?, expectedInstances? }`.
fn fallback_arg(v: &Unknown) -> Outcome<FallbackMode> {
    if args::type_of(v) == napi::ValueType::String {
        return Ok(FallbackMode::parse(&args::string("fallback", v)?)?);
    }
    let Some(obj) = args::options("fallback option", Some(v), FALLBACK_OPTIONS)? else {
        return Err(Failure::Arg(format!(
            "invalid fallback {}: expected a mode or {{ mode, ... }}",
            args::describe(v)
        )));
    };
    let Some(mode) = args::field(&obj, "mode")? else {
        return Err(Failure::Arg("fallback: missing `mode` ('open', 'closed', 'local' or 'error')".into()));
    };
    let mut mode = FallbackMode::parse(&args::string("fallback.mode", &mode)?)?;
    let retry = args::field(&obj, "retryAfterMs")?;
    let instances = args::field(&obj, "expectedInstances")?;
    match &mut mode {
        FallbackMode::Closed { retry_after_ms } => {
            if let Some(v) = retry {
                *retry_after_ms = args::whole("fallback.retryAfterMs", &v, 1)?;
            }
        }
        FallbackMode::Local { expected_instances } => {
            if let Some(v) = instances {
                let n = args::whole("fallback.expectedInstances", &v, 1)?;
                *expected_instances = u32::try_from(n)
                    .map_err(|_| Failure::Arg(format!("invalid fallback.expectedInstances {n}: too large")))?;
            }
        }
        _ => {}
    }
    if let FallbackMode::Open | FallbackMode::Error = mode {
        if retry.is_some() || instances.is_some() {
            return Err(Failure::Arg(format!(
                "fallback {:?} takes no retryAfterMs or expectedInstances",
                mode.as_str()
            )));
        }
    }
    Ok(mode)
}

/// The cache options as JS spells them, beside the core's field names: the core's range checks
/// run at build, and their messages are given back under the name the caller wrote.
const CACHE_FIELDS: &[(&str, &str)] = &[
    ("denialCache", "denial_cache"),
    ("coalesce", "coalesce"),
    ("maxBatch", "max_batch"),
    ("batchWindowUs", "batch_window_us"),
    ("leases", "leases"),
    ("leaseMs", "lease_ms"),
    ("driftRatio", "drift_ratio"),
    ("maxLease", "max_lease"),
    ("maxBytes", "max_bytes"),
    ("idleMs", "idle_ms"),
    ("doorkeeperMs", "doorkeeper_ms"),
    ("jitterRatio", "jitter_ratio"),
];

/// `true` (the core's defaults), or `{ leaseMs, driftRatio, ... }` over them; `false`: no cache.
fn cache_arg(v: &Unknown) -> Outcome<Option<CacheOptions>> {
    if args::type_of(v) == napi::ValueType::Boolean {
        return Ok(args::boolean("cache", v)?.then(CacheOptions::default));
    }
    let known: Vec<&str> = CACHE_FIELDS.iter().map(|(js, _)| *js).collect();
    let obj = match args::type_of(v) {
        napi::ValueType::Object if !args::is_array(v) => args::options("cache option", Some(v), &known)?,
        _ => None,
    };
    let Some(obj) = obj else {
        return Err(Failure::Arg(format!(
            "invalid cache {}: expected true or {{ leaseMs, driftRatio, ... }}",
            args::describe(v)
        )));
    };
    let mut c = CacheOptions::default();
    let flag = |name: &str| -> Outcome<Option<bool>> {
        args::field(&obj, name)?.map(|v| args::boolean(&format!("cache.{name}"), &v)).transpose()
    };
    let int = |name: &str, min: u64| -> Outcome<Option<u64>> {
        args::field(&obj, name)?.map(|v| args::whole(&format!("cache.{name}"), &v, min)).transpose()
    };
    let ratio = |name: &str| -> Outcome<Option<f64>> {
        args::field(&obj, name)?.map(|v| args::non_negative(&format!("cache.{name}"), &v)).transpose()
    };
    if let Some(b) = flag("denialCache")? {
        c.denial_cache = b;
    }
    if let Some(b) = flag("coalesce")? {
        c.coalesce = b;
    }
    if let Some(n) = int("maxBatch", 1)? {
        c.max_batch = n as usize;
    }
    if let Some(n) = int("batchWindowUs", 0)? {
        c.batch_window_us = n;
    }
    if let Some(b) = flag("leases")? {
        c.leases = b;
    }
    if let Some(n) = int("leaseMs", 0)? {
        c.lease_ms = n;
    }
    if let Some(r) = ratio("driftRatio")? {
        c.drift_ratio = r;
    }
    if let Some(n) = int("maxLease", 0)? {
        c.max_lease = n;
    }
    if let Some(n) = int("maxBytes", 0)? {
        c.max_bytes = n;
    }
    if let Some(n) = int("idleMs", 1)? {
        c.idle_ms = n;
    }
    if let Some(n) = int("doorkeeperMs", 1)? {
        c.doorkeeper_ms = n;
    }
    if let Some(r) = ratio("jitterRatio")? {
        c.jitter_ratio = r;
    }
    Ok(Some(c))
}

/// A core refusal of a cache option, under the option's JS name (`cache.lease_ms` → `cache.leaseMs`).
fn cache_error(e: floodwall::Error) -> Failure {
    match e {
        floodwall::Error::InvalidConfig { what, .. } if what.starts_with("cache") => {
            let mut msg = e.to_string();
            for (js, core) in CACHE_FIELDS {
                msg = msg.replace(core, js);
            }
            Failure::Arg(msg)
        }
        e => Failure::Core(e),
    }
}

fn manual_clock(env: &Env, v: &Unknown) -> Outcome<FakeClock> {
    if !JsManualClock::instance_of(env, v)? {
        return Err(Failure::Arg(format!("invalid clock {}: must be a ManualClock", args::describe(v))));
    }
    let c = unsafe { ClassInstance::<JsManualClock>::from_napi_value(env.raw(), v.raw()) }?;
    Ok(c.clock.clone())
}

/// The core limiter an options object describes.
pub fn build_limiter(env: &Env, options: Option<&Unknown>) -> Outcome<floodwall::Limiter> {
    let Some(obj) = args::options("Limiter option", options, LIMITER_OPTIONS)? else {
        return Err(Failure::Arg(
            "missing options: new Limiter({ limits: ['5/second', '100/minute'] }) needs at least `limits`".into(),
        ));
    };
    let Some(limits) = args::field(&obj, "limits")? else {
        return Err(Failure::Arg(
            "missing option limits: give at least one limit, e.g. ['5/second', '100/minute']".into(),
        ));
    };
    let limits = floodwall::parse_limits(&args::strings("limits", &limits)?)?;
    let mut b = floodwall::Limiter::builder(limits);
    if let Some(v) = args::field(&obj, "name")? {
        b = b.name(name_arg("name", &v)?);
    }
    if let Some(v) = args::field(&obj, "algorithm")? {
        b = b.algorithm(Algorithm::parse(&args::string("algorithm", &v)?)?);
    }
    if let Some(v) = args::field(&obj, "prefix")? {
        b = b.prefix(args::string("prefix", &v)?);
    }
    if let Some(v) = args::field(&obj, "timeoutMs")? {
        b = b.timeout(Duration::from_millis(args::whole("timeoutMs", &v, 1)?));
    }
    if let Some(v) = args::field(&obj, "fallback")? {
        b = b.fallback(fallback_arg(&v)?);
    }
    if let Some(v) = args::field(&obj, "breaker")? {
        b = b.breaker(breaker_arg(&v)?);
    }
    if let Some(c) = args::field(&obj, "cache")?.map(|v| cache_arg(&v)).transpose()?.flatten() {
        b = b.cache(c);
    }
    if let Some(v) = args::field(&obj, "maxIdentities")? {
        let n = args::whole("maxIdentities", &v, 1)?;
        b = b.max_identities(usize::try_from(n).unwrap_or(usize::MAX));
    }
    let clock = args::field(&obj, "clock")?.map(|v| manual_clock(env, &v)).transpose()?;
    if let Some(c) = &clock {
        b = b.clock(Arc::new(c.clone()));
    }
    let url = args::field(&obj, "redisUrl")?.map(|v| args::string("redisUrl", &v)).transpose()?;
    let nodes = args::field(&obj, "clusterNodes")?.map(|v| args::strings("clusterNodes", &v)).transpose()?;
    let is_redis = match (url, nodes) {
        (Some(_), Some(_)) => return Err(Failure::Arg("give either redisUrl or clusterNodes, not both".into())),
        (Some(url), None) => {
            b = b.redis_url(url);
            true
        }
        (None, Some(nodes)) if nodes.is_empty() => {
            return Err(Failure::Arg("invalid clusterNodes []: give at least one seed node".into()))
        }
        (None, Some(nodes)) => {
            b = b.cluster(nodes);
            true
        }
        (None, None) => false,
    };
    if is_redis && clock.is_some() {
        // Test-only: the scripts take `now` from the manual clock instead of Redis TIME.
        b = b.redis_time_from_clock();
    }
    b.build().map_err(cache_error)
}

/// The `limiter` label on metrics: a non-empty string.
pub fn name_arg(what: &str, v: &Unknown) -> Outcome<String> {
    let name = args::string(what, v)?;
    if name.trim().is_empty() {
        return Err(Failure::Arg(format!("invalid {what} {name:?}: must not be empty")));
    }
    Ok(name)
}

pub fn key_arg(key: &Unknown) -> Outcome<String> {
    args::string("key", key)
}

/// `{ cost, traceparent }`: the units one check consumes (default 1) and the caller's W3C trace
/// context, under which the core's `floodwall.check` span is started.
fn check_arg(options: Option<&Unknown>, known: &[&str]) -> Outcome<(u64, Option<String>)> {
    let Some(obj) = args::options("check option", options, known)? else { return Ok((1, None)) };
    let cost = match args::field(&obj, "cost")? {
        Some(v) => args::whole("cost", &v, 1)?,
        None => 1,
    };
    let traceparent = args::field(&obj, "traceparent")?.map(|v| args::string("traceparent", &v)).transpose()?;
    Ok((cost, traceparent))
}

/// `source` as index.js's SOURCES numbers it.
const SOURCES: [floodwall::Source; 5] = [
    floodwall::Source::Redis,
    floodwall::Source::Memory,
    floodwall::Source::Cache,
    floodwall::Source::Lease,
    floodwall::Source::Fallback,
];

/// Many decisions in one crossing, for index.js's batching of `check`/`peek` calls made in the same
/// tick: one Promise and one wake-up of the JS thread per batch instead of per call.
///
/// `data` holds, per item: status (1 allowed, 0 denied, -(1+j): failed with `errors[2j]` code and
/// `errors[2j+1]` message), limit, remaining, resetAfter, retryAfter (NaN: null), limitedBy (a
/// name, -1: null), source (index into SOURCES), W, then per window: name, limit, window,
/// remaining, resetAfter, retryAfter. Times are seconds. A name is an index: below the limiter's
/// number of limits, into its `limits` (which index.js reads once per limiter); from there on, into
/// the batch's `names`, for the limits that are not the limiter's own (the local fallback's
/// scaled-down share).
struct Encoder<'a> {
    limits: &'a [floodwall::Limit],
    data: Vec<f64>,
    names: Vec<String>,
    errors: Vec<String>,
}

impl<'a> Encoder<'a> {
    fn new(limits: &'a [floodwall::Limit], items: usize) -> Self {
        let per_item = 8 + 6 * limits.len();
        Encoder { limits, data: Vec::with_capacity(items * per_item), names: Vec::new(), errors: Vec::new() }
    }

    fn name(&mut self, l: &floodwall::Limit) -> f64 {
        if let Some(i) = self.limits.iter().position(|x| x == l) {
            return i as f64;
        }
        let s = l.to_string();
        let j = self.names.iter().position(|n| *n == s).unwrap_or_else(|| {
            self.names.push(s);
            self.names.len() - 1
        });
        (self.limits.len() + j) as f64
    }

    fn push(&mut self, r: Outcome<floodwall::Decision>) {
        let d = match r {
            Ok(d) => d,
            Err(f) => return self.fail(&f),
        };
        let opt = |v: Option<Duration>| v.map_or(f64::NAN, secs);
        let limited_by = match &d.limited_by {
            Some(l) => self.name(l),
            None => -1.0,
        };
        let source = SOURCES.iter().position(|s| *s == d.source).unwrap_or(0) as f64;
        self.data.extend_from_slice(&[
            if d.allowed { 1.0 } else { 0.0 },
            d.limit as f64,
            d.remaining as f64,
            secs(d.reset_after),
            opt(d.retry_after),
            limited_by,
            source,
            d.windows.len() as f64,
        ]);
        for w in &d.windows {
            let name = self.name(&w.limit);
            self.data.extend_from_slice(&[
                name,
                w.limit.max() as f64,
                secs(w.limit.window()),
                w.remaining as f64,
                secs(w.reset_after),
                opt(w.retry_after),
            ]);
        }
    }

    fn fail(&mut self, f: &Failure) {
        let j = self.errors.len() / 2;
        self.errors.push(f.code().to_string());
        self.errors.push(f.message());
        self.data.push(-1.0 - j as f64);
    }
}

/// A batch's answers as index.js reads them: `{ data: Float64Array, names: string[], errors:
/// string[] }`. The array is copied into a plain ArrayBuffer: a few KiB, cheaper than an external
/// buffer and its finalizer.
fn batch_object<'env>(
    env: &'env Env,
    data: &[f64],
    names: Vec<String>,
    errors: Vec<String>,
) -> napi::Result<Object<'env>> {
    let mut out = Object::new(env)?;
    out.set_named_property("data", Float64ArraySlice::copy_from(env, data)?)?;
    out.set_named_property("names", names)?;
    out.set_named_property("errors", errors)?;
    Ok(out)
}

#[napi(js_name = "Limiter")]
pub struct JsLimiter {
    pub(crate) inner: floodwall::Limiter,
}

#[napi]
impl JsLimiter {
    #[napi(constructor, ts_args_type = "options: LimiterOptions")]
    pub fn new(env: Env, options: Option<Unknown>) -> napi::Result<Self> {
        throw(&env, guard(|| Ok(JsLimiter { inner: build_limiter(&env, options.as_ref())? })))
    }

    /// Consume `cost` units (default 1) from every limit, or nothing if any would be exceeded.
    /// index.js exposes it as `check`, batching well-formed calls through `_decideMany`.
    #[napi(
        js_name = "_check",
        ts_args_type = "key: string, options?: { cost?: number, traceparent?: string }",
        ts_return_type = "Promise<Decision>"
    )]
    pub fn check<'env>(
        &self,
        env: &'env Env,
        key: Unknown,
        options: Option<Unknown>,
    ) -> napi::Result<PromiseRaw<'env, Decision>> {
        let prepared = guard(|| Ok((key_arg(&key)?, check_arg(options.as_ref(), &["cost", "traceparent"])?)));
        let limiter = self.inner.clone();
        settle(env, async move {
            let (key, (cost, traceparent)) = prepared?;
            let opts = floodwall::CheckOptions::new(cost, traceparent.as_deref());
            Ok(Decision::from(&limiter.check_with(&key, opts).await?))
        })
    }

    /// Would one more request pass? Consumes nothing. index.js exposes it as `peek`.
    #[napi(
        js_name = "_peek",
        ts_args_type = "key: string, options?: { traceparent?: string }",
        ts_return_type = "Promise<Decision>"
    )]
    pub fn peek<'env>(
        &self,
        env: &'env Env,
        key: Unknown,
        options: Option<Unknown>,
    ) -> napi::Result<PromiseRaw<'env, Decision>> {
        let prepared = guard(|| Ok((key_arg(&key)?, check_arg(options.as_ref(), &["traceparent"])?.1)));
        let limiter = self.inner.clone();
        settle(env, async move {
            let (key, traceparent) = prepared?;
            Ok(Decision::from(&limiter.peek_with(&key, traceparent.as_deref()).await?))
        })
    }

    /// Forget every count of the identity.
    #[napi(ts_args_type = "key: string", ts_return_type = "Promise<void>")]
    pub fn reset<'env>(&self, env: &'env Env, key: Unknown) -> napi::Result<PromiseRaw<'env, ()>> {
        let key = guard(|| key_arg(&key));
        let limiter = self.inner.clone();
        settle(env, async move { Ok(limiter.reset(&key?).await?) })
    }

    /// `keys[i]` with `costs[i]` (0: peek) under `traceparents[i]` ("" or absent: none). Used by
    /// index.js; see `Encoder` for what the Promise resolves to.
    #[napi(
        js_name = "_decideMany",
        ts_return_type = "Promise<{ data: Float64Array, names: string[], errors: string[] }>"
    )]
    pub fn decide_many<'env>(
        &self,
        env: &'env Env,
        keys: Vec<String>,
        costs: Float64ArraySlice,
        traceparents: Option<Vec<String>>,
    ) -> napi::Result<PromiseRaw<'env, Object<'env>>> {
        let costs: Vec<f64> = costs.to_vec();
        let mut traceparents = traceparents.unwrap_or_default();
        traceparents.resize(keys.len(), String::new());
        let limiter = self.inner.clone();
        let fut = async move {
            let items: Vec<floodwall::BatchItem<'_>> = keys
                .iter()
                .zip(&costs)
                .zip(&traceparents)
                .map(|((key, cost), tp)| {
                    floodwall::BatchItem::new(key, *cost as u64, Some(tp.as_str()).filter(|t| !t.is_empty()))
                })
                .collect();
            let all = limiter.decide_many(&items).await;
            let mut enc = Encoder::new(limiter.limits(), all.len());
            for r in all {
                enc.push(r.map_err(Failure::from));
            }
            Ok::<_, Failure>((enc.data, enc.names, enc.errors))
        };
        env.spawn_future_with_callback(async move { Ok(guard_async(fut).await) }, |env, r| {
            let (data, names, errors) = r.map_err(|f| f.into_js(env.raw()))?;
            batch_object(env, &data, names, errors)
        })
    }

    /// Make sure Redis answers (resolves at once on the embedded store).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn connect<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let limiter = self.inner.clone();
        settle(env, async move { Ok(limiter.connect().await?) })
    }

    /// The limits as the parser reads them back, e.g. `["5/second", "100/minute"]`.
    #[napi(getter)]
    pub fn limits(&self) -> Vec<String> {
        self.inner.limits().iter().map(|l| l.to_string()).collect()
    }

    #[napi(getter)]
    pub fn algorithm(&self) -> String {
        self.inner.algorithm().as_str().to_string()
    }

    /// `"redis"` or `"memory"`.
    #[napi(getter)]
    pub fn store(&self) -> String {
        self.inner.store_kind().as_str().to_string()
    }

    /// The largest cost one check may ask for.
    #[napi(getter)]
    pub fn max_cost(&self) -> f64 {
        self.inner.max_cost() as f64
    }

    /// What the local cache layer holds now; `null` without a cache (or on the embedded store).
    #[napi(ts_return_type = "CacheStats | null")]
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.inner.cache_stats().map(|c| CacheStats {
            entries: c.entries as f64,
            weighted_bytes: c.weighted_bytes as f64,
            max_bytes: c.max_bytes as f64,
            leases_granted: c.leases_granted as f64,
            permits_leased: c.permits_leased as f64,
            permits_returned: c.permits_returned as f64,
        })
    }
}

/// `Limiter.cacheStats()`: the cache's entries and their weight against its cap, and the leases
/// granted and permits leased and given back since the limiter was made.
#[napi(object)]
pub struct CacheStats {
    pub entries: f64,
    pub weighted_bytes: f64,
    pub max_bytes: f64,
    pub leases_granted: f64,
    pub permits_leased: f64,
    pub permits_returned: f64,
}
