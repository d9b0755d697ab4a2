//! Observability: one OpenTelemetry span per decision (`floodwall.check`, a child of the caller's
//! W3C trace context when the adapter passes one), Prometheus text for every live limiter's
//! metrics, and structured JSON logs that carry the trace id. Off by default; cheap when off.
//! Spans carry no key text (attributes, status) unless `record_raw_keys`: a keyed hash stands in.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use arc_swap::ArcSwapOption;

use crate::decision::{Decision, Source};
use crate::error::{Error, Result};
use crate::metrics::{Metrics, LATENCY_BUCKETS_US};
use crate::per_process::PerProcess;
use crate::secret::{self, KeySecret};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, TracerProviderBuilder};
use serde::{Deserialize, Serialize};

/// How floodwall traces. Applies process-wide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "config", derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TraceOptions {
    /// OTLP/HTTP endpoint, e.g. "http://localhost:4318/v1/traces". None: no export.
    #[serde(alias = "otlpEndpoint")]
    pub otlp_endpoint: Option<String>,
    /// Share of new traces sampled. A sampled parent passed in (`CheckOptions::traceparent`, an
    /// adapter's trusted trace context) is always followed: pass only parents the app trusts.
    #[serde(alias = "samplingRatio")]
    pub sampling_ratio: f64,
    /// Put the raw key (user ids, IPs) on spans and in their error status. Default: only
    /// `floodwall.key_hash` (see [`key_hash`]).
    #[serde(alias = "recordRawKeys")]
    pub record_raw_keys: bool,
    #[serde(alias = "serviceName")]
    pub service_name: String,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            otlp_endpoint: None,
            sampling_ratio: 1.0,
            record_raw_keys: false,
            service_name: "floodwall".into(),
        }
    }
}

setters!(TraceOptions {
    otlp_endpoint: Option<String>,
    sampling_ratio: f64,
    record_raw_keys: bool,
    service_name: String,
});

/// Where test tracing keeps its spans: in memory, with the `test-util` feature only (it needs
/// opentelemetry_sdk's `testing`). Without it the type has no values, and no config asks for one.
#[cfg(feature = "test-util")]
use opentelemetry_sdk::trace::InMemorySpanExporter as TestExporter;
#[cfg(not(feature = "test-util"))]
#[derive(Debug, Clone)]
enum TestExporter {}

fn new_test_exporter() -> Option<TestExporter> {
    #[cfg(feature = "test-util")]
    return Some(TestExporter::default());
    #[cfg(not(feature = "test-util"))]
    None
}

fn with_test_exporter(builder: TracerProviderBuilder, exporter: &TestExporter) -> TracerProviderBuilder {
    #[cfg(feature = "test-util")]
    return builder.with_simple_exporter(exporter.clone());
    #[cfg(not(feature = "test-util"))]
    {
        let _ = builder;
        match *exporter {}
    }
}

struct TraceState {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    record_raw_keys: bool,
    test_exporter: Option<TestExporter>,
}

/// How tracing was last configured (None: off). A forked child inherits it and builds its own
/// tracer from it.
struct Config {
    opts: TraceOptions,
    /// the test exporter (in memory) instead of OTLP's
    test: bool,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static CONFIG: ArcSwapOption<Config> = ArcSwapOption::const_empty();
/// This process's tracer, read on every traced decision. Per process: a child forked from a
/// tracing parent has none of the parent's exporter threads (fork copies only the caller's) and
/// the parent's locks may be held by threads that do not exist here, so the child builds its own
/// from CONFIG and the parent's is left alone, never shut down. Swapped without a lock: a child
/// forked while a parent thread held a read lock would hang on its next write.
static STATE: PerProcess<ArcSwapOption<TraceState>> = PerProcess::new();

/// Whether decisions are traced now (a batch then takes the per-decision path, one span each).
pub(crate) fn tracing_on() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn state() -> Option<Arc<TraceState>> {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    here().load_full()
}

/// This process's tracer slot; in a new process, made from CONFIG.
fn here() -> &'static ArcSwapOption<TraceState> {
    STATE.get_or(|| {
        let made =
            CONFIG.load_full().and_then(|c| build(&c.opts, if c.test { new_test_exporter() } else { None }).ok());
        ArcSwapOption::new(made.map(Arc::new))
    })
}

/// Put `state` in this process's slot (and the config others are built from), shutting down what it replaces.
fn replace(config: Option<Config>, state: Option<TraceState>) {
    let slot = here(); // made before CONFIG changes, so not built twice
    CONFIG.store(config.map(Arc::new));
    if let Some(old) = slot.swap(state.map(Arc::new)) {
        let _ = old.provider.shutdown();
    }
}

fn build(opts: &TraceOptions, test_exporter: Option<TestExporter>) -> Result<TraceState> {
    if !(0.0..=1.0).contains(&opts.sampling_ratio) {
        return Err(Error::config("sampling_ratio", opts.sampling_ratio, "must be between 0 and 1"));
    }
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(opts.sampling_ratio)));
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(opts.service_name.clone()).build();
    let mut builder = SdkTracerProvider::builder().with_sampler(sampler).with_resource(resource);
    #[cfg(not(feature = "otlp"))]
    if let Some(endpoint) = &opts.otlp_endpoint {
        return Err(Error::config("otlp_endpoint", endpoint, "floodwall was built without its `otlp` feature"));
    }
    #[cfg(feature = "otlp")]
    if let Some(endpoint) = &opts.otlp_endpoint {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| Error::config("otlp_endpoint", endpoint, e.to_string()))?;
        builder = builder.with_batch_exporter(exporter);
    }
    if let Some(t) = &test_exporter {
        builder = with_test_exporter(builder, t);
    }
    let provider = builder.build();
    let tracer = provider.tracer("floodwall");
    Ok(TraceState { tracer, provider, record_raw_keys: opts.record_raw_keys, test_exporter })
}

fn install(opts: &TraceOptions, test_exporter: Option<TestExporter>) -> Result<()> {
    let state = build(opts, test_exporter)?;
    let test = state.test_exporter.is_some();
    replace(Some(Config { opts: opts.clone(), test }), Some(state));
    ENABLED.store(true, Ordering::Relaxed);
    Ok(())
}

/// Turn tracing on (or reconfigure it).
pub fn configure_tracing(opts: &TraceOptions) -> Result<()> {
    install(opts, None)
}

/// Turn tracing off; spans already ended are flushed.
pub fn disable_tracing() {
    ENABLED.store(false, Ordering::Relaxed);
    replace(None, None);
}

/// Export the spans ended so far and wait for it, leaving tracing on (benchmarks count the export's
/// CPU without the exporter's start and stop). False if the export failed or timed out.
pub fn flush_tracing() -> bool {
    let Some(s) = here().load_full() else { return true };
    s.provider.force_flush().is_ok()
}

/// Tests: trace everything into memory (readable with `finished_spans`).
#[cfg(feature = "test-util")]
pub fn enable_test_tracing(record_raw_keys: bool) -> Result<()> {
    install(&TraceOptions { record_raw_keys, ..TraceOptions::default() }, new_test_exporter())
}

/// Tests: trace into memory with these options (a sampling ratio, raw keys); no OTLP export.
#[cfg(feature = "test-util")]
pub fn enable_test_tracing_with(opts: &TraceOptions) -> Result<()> {
    install(&TraceOptions { otlp_endpoint: None, ..opts.clone() }, new_test_exporter())
}

/// A finished span as plain data (for tests and the bindings' test helpers).
#[cfg(feature = "test-util")]
#[derive(Debug, Clone, Serialize)]
pub struct SpanRecord {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub attributes: std::collections::HashMap<String, String>,
    pub error: bool,
    /// The error status's description ("" when not an error).
    pub status: String,
    /// Each event as its name and attribute values, space-separated.
    pub events: Vec<String>,
}

/// Spans the test exporter holds, oldest first.
#[cfg(feature = "test-util")]
pub fn finished_spans() -> Vec<SpanRecord> {
    let Some(s) = here().load_full() else { return Vec::new() };
    let Some(exp) = &s.test_exporter else { return Vec::new() };
    exp.get_finished_spans()
        .unwrap_or_default()
        .into_iter()
        .map(|d| SpanRecord {
            name: d.name.to_string(),
            trace_id: d.span_context.trace_id().to_string(),
            span_id: d.span_context.span_id().to_string(),
            parent_span_id: d.parent_span_id.to_string(),
            attributes: d.attributes.iter().map(|kv| (kv.key.to_string(), kv.value.to_string())).collect(),
            error: matches!(d.status, Status::Error { .. }),
            status: match &d.status {
                Status::Error { description } => description.to_string(),
                _ => String::new(),
            },
            events: d
                .events
                .iter()
                .map(|e| {
                    let mut s = e.name.to_string();
                    for kv in &e.attributes {
                        let _ = write!(s, " {}", kv.value);
                    }
                    s
                })
                .collect(),
        })
        .collect()
}

/// Forget what the test exporter holds.
#[cfg(feature = "test-util")]
pub fn clear_finished_spans() {
    if let Some(s) = here().load_full() {
        if let Some(e) = &s.test_exporter {
            e.reset();
        }
    }
}

/// A decision's span while it runs. Ends when dropped.
pub(crate) struct CheckSpan {
    span: opentelemetry_sdk::trace::Span,
    trace_id: TraceId,
    record_raw_keys: bool,
}

/// At most: key, op, cost, algorithm, limits; allowed, remaining, source, limited_by, Redis
/// latency; shadow and result on a shadow rule's check.
const SPAN_ATTRIBUTES: usize = 12;

/// The caller's span from a W3C `traceparent` ("00-<32 hex trace id>-<16 hex span id>-<2 hex
/// flags>"), by the rules of the SDK's TraceContextPropagator (lowercase hex, ids not all zero,
/// version ff refused, a version-00 header has exactly four fields, only the sampled flag kept) but
/// without its allocations and string splitting: this runs on every traced decision.
fn remote_parent(tp: &str) -> Option<SpanContext> {
    fn hex<const N: usize>(s: &str) -> Option<[u8; N]> {
        let b = s.as_bytes();
        if b.len() != 2 * N {
            return None;
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; N];
        for (i, o) in out.iter_mut().enumerate() {
            *o = nibble(b[2 * i])? << 4 | nibble(b[2 * i + 1])?;
        }
        Some(out)
    }
    let mut parts = tp.trim().split('-');
    let [version] = hex::<1>(parts.next()?)?;
    let trace_id = TraceId::from_bytes(hex::<16>(parts.next()?)?);
    let span_id = SpanId::from_bytes(hex::<8>(parts.next()?)?);
    let [flags] = hex::<1>(parts.next()?)?;
    // later versions may append fields; version 00 may not
    if version == 0xff || (version == 0 && parts.next().is_some()) {
        return None;
    }
    let sc = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        opentelemetry::trace::TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

impl CheckSpan {
    /// Starts `floodwall.check` under the W3C `traceparent` if given; None when tracing is off.
    /// This runs on every decision: nothing is formatted or hashed until the sampler has kept
    /// the span, and the per-limiter strings are shared, not copied.
    pub(crate) fn start(
        traceparent: Option<&str>,
        key: &str,
        op: &'static str,
        cost: u64,
        algorithm: &'static str,
        limits: &Arc<str>,
    ) -> Option<CheckSpan> {
        let st = state()?;
        let parent = match traceparent {
            Some(tp) => remote_parent(tp).map_or_else(Context::new, |sc| Context::new().with_remote_span_context(sc)),
            None => Context::new(),
        };
        // Sized for every attribute the span will get: one allocation rather than three as it
        // grows (with export, the exporter's thread frees them, dearer in glibc than a local free).
        let mut attributes = Vec::with_capacity(SPAN_ATTRIBUTES);
        attributes.extend([
            KeyValue::new("floodwall.op", op),
            KeyValue::new("floodwall.cost", cost as i64),
            KeyValue::new("floodwall.algorithm", algorithm),
            KeyValue::new("floodwall.limits", limits.clone()),
        ]);
        let mut span = st
            .tracer
            .span_builder("floodwall.check")
            .with_kind(SpanKind::Internal)
            .with_attributes(attributes)
            .start_with_context(&st.tracer, &parent);
        if span.is_recording() {
            span.set_attribute(if st.record_raw_keys {
                KeyValue::new("floodwall.key", key.to_string())
            } else {
                KeyValue::new("floodwall.key_hash", key_hash(key))
            });
        }
        let trace_id = span.span_context().trace_id();
        Some(CheckSpan { span, trace_id, record_raw_keys: st.record_raw_keys })
    }

    /// For log lines written during the decision (formatted only if one is).
    pub(crate) fn trace_id(&self) -> LogTraceId {
        LogTraceId(Some(self.trace_id).filter(|t| *t != TraceId::INVALID))
    }

    /// `shadow`: a shadow rule's check, which the caller does not enforce: the span says so and
    /// what would have happened (`floodwall.result` "shadow_denied" or "allowed").
    pub(crate) fn decided(&mut self, d: &Decision, redis_latency_us: Option<u64>, shadow: bool) {
        if !self.span.is_recording() {
            return;
        }
        let result = if d.allowed { "allowed" } else { "shadow_denied" };
        self.span.set_attributes(
            [
                shadow.then(|| KeyValue::new("floodwall.shadow", true)),
                shadow.then(|| KeyValue::new("floodwall.result", result)),
                Some(KeyValue::new("floodwall.allowed", d.allowed)),
                Some(KeyValue::new("floodwall.remaining", d.remaining as i64)),
                Some(KeyValue::new("floodwall.source", d.source.as_str())),
                d.limited_by.map(|l| KeyValue::new("floodwall.limited_by", l.to_string())),
                redis_latency_us.map(|us| KeyValue::new("floodwall.redis_latency_ms", us as f64 / 1000.0)),
            ]
            .into_iter()
            .flatten(),
        );
    }

    /// `key` is the decision's key: the status names it only with `record_raw_keys`.
    pub(crate) fn failed(&mut self, e: &Error, key: &str) {
        if self.span.is_recording() {
            let text = if self.record_raw_keys { e.to_string() } else { without_key(e, key) };
            self.span.set_status(Status::error(text));
        }
    }
}

impl Drop for CheckSpan {
    fn drop(&mut self) {
        self.span.end();
    }
}

/// The `trace_id` field of a log line: the hex id inside a traced decision, else empty.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LogTraceId(Option<TraceId>);

impl std::fmt::Display for LogTraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(t) => write!(f, "{t}"),
            None => Ok(()),
        }
    }
}

/// An error's text for a span status, without the key: an invalid key's error quotes its start,
/// and a store's message is scrubbed of it in case the server echoed it.
fn without_key(e: &Error, key: &str) -> String {
    match e {
        Error::InvalidKey { reason, .. } => format!("invalid key: {reason}"),
        Error::Store { url, message } if !key.is_empty() => {
            format!("Redis at {url} failed: {}", message.replace(key, "<key>"))
        }
        e => e.to_string(),
    }
}

/// What spans record instead of the key (`floodwall.key_hash`): 16 lower-case hex digits, the
/// first 64 bits of HMAC-SHA256 under the process's secret ([`secret::process`]). Keyed, because
/// identities are user ids and IPs, and the 2^32 IPv4 addresses are quickly hashed and looked up.
/// Hashes of one key agree across processes and hosts only when they share `FLOODWALL_KEY_SECRET`;
/// without it each process makes up its own secret and its hashes correlate only within itself.
pub fn key_hash(key: &str) -> String {
    key_hash_with(secret::process(), key)
}

/// [`key_hash`] under a given secret.
pub fn key_hash_with(secret: &KeySecret, key: &str) -> String {
    let mut h = secret.hex32("floodwall.key_hash", key.as_bytes());
    h.truncate(16);
    h
}

// ---------------------------------------------------------------------------------------------
// logs

/// Route floodwall's warnings and errors to stderr as one JSON object per line (with `trace_id`
/// when the event happened inside a traced decision). Does nothing if the host already installed
/// a `tracing` subscriber. `filter` is an env-filter directive, e.g. "floodwall=warn".
pub fn install_json_logs(filter: &str) -> Result<()> {
    install_json_logs_to(filter, std::io::stderr)
}

/// As `install_json_logs`, writing wherever `writer` says (tests capture the lines).
pub fn install_json_logs_to<W>(filter: &str, writer: W) -> Result<()>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| Error::config("log filter", filter, e.to_string()))?;
    let subscriber =
        tracing_subscriber::fmt().json().with_env_filter(filter).with_current_span(false).with_writer(writer).finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// metrics

struct Registered {
    name: String,
    metrics: Weak<Metrics>,
}

fn registry() -> &'static Mutex<Vec<Registered>> {
    static R: OnceLock<Mutex<Vec<Registered>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Vec::new()))
}

/// Called by every limiter at build: its metrics appear in `prometheus_text` while it lives.
pub(crate) fn register(name: &str, metrics: &Arc<Metrics>) {
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    r.retain(|e| e.metrics.strong_count() > 0);
    r.push(Registered { name: name.to_string(), metrics: Arc::downgrade(metrics) });
}

/// One sample: (name suffix, label pairs, value). Histograms use the suffixes `_bucket` (with an
/// `le` label), `_sum` and `_count`; other families the empty suffix.
pub type Sample = (String, Vec<(String, String)>, f64);

/// One metric family, as the Python and Node registries want it.
#[derive(Debug, Clone, Serialize)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    /// "counter" | "gauge" | "histogram"
    pub kind: &'static str,
    pub samples: Vec<Sample>,
}

/// Every live limiter's metrics, labelled by limiter name (the same name summed).
pub fn families() -> Vec<Family> {
    let live: Vec<(String, Arc<Metrics>)> = {
        let r = registry().lock().unwrap_or_else(|p| p.into_inner());
        r.iter().filter_map(|e| e.metrics.upgrade().map(|m| (e.name.clone(), m))).collect()
    };
    let mut snaps: Vec<(String, crate::metrics::MetricsSnapshot)> = Vec::new();
    for (name, m) in live {
        let s = m.snapshot();
        match snaps.iter_mut().find(|(n, _)| *n == name) {
            Some((_, acc)) => merge(acc, &s),
            None => snaps.push((name, s)),
        }
    }
    let lab = |name: &str, extra: &[(&str, String)]| {
        let mut v = vec![("limiter".to_string(), name.to_string())];
        v.extend(extra.iter().map(|(k, val)| (k.to_string(), val.clone())));
        v
    };
    let mut decisions = Family {
        name: "floodwall_decisions_total",
        help:
            "Decisions by source and result (allowed, denied, or shadow_denied: a shadow rule's denial, not enforced).",
        kind: "counter",
        samples: vec![],
    };
    let mut calls = Family {
        name: "floodwall_redis_calls_total",
        help: "Redis calls made (each one script call or command).",
        kind: "counter",
        samples: vec![],
    };
    let mut errors = Family {
        name: "floodwall_redis_errors_total",
        help: "Redis calls that failed, by kind.",
        kind: "counter",
        samples: vec![],
    };
    let mut latency = Family {
        name: "floodwall_redis_latency_seconds",
        help: "Redis call latency.",
        kind: "histogram",
        samples: vec![],
    };
    let mut state = Family {
        name: "floodwall_breaker_state",
        help: "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
        kind: "gauge",
        samples: vec![],
    };
    let mut trans = Family {
        name: "floodwall_breaker_transitions_total",
        help: "Circuit breaker transitions, by state entered.",
        kind: "counter",
        samples: vec![],
    };
    let mut offset = Family {
        name: "floodwall_clock_offset_seconds",
        help: "Redis time minus local time, last measured.",
        kind: "gauge",
        samples: vec![],
    };
    for (name, s) in &snaps {
        for (src, allowed, n) in &s.decisions {
            let result = if *allowed { "allowed" } else { "denied" };
            decisions.samples.push((
                String::new(),
                lab(name, &[("source", src.as_str().into()), ("result", result.into())]),
                *n as f64,
            ));
        }
        for (src, n) in &s.shadow_denied {
            decisions.samples.push((
                String::new(),
                lab(name, &[("source", src.as_str().into()), ("result", "shadow_denied".into())]),
                *n as f64,
            ));
        }
        calls.samples.push((String::new(), lab(name, &[]), s.redis_calls as f64));
        errors.samples.push((
            String::new(),
            lab(name, &[("kind", "error".into())]),
            (s.redis_errors - s.redis_timeouts) as f64,
        ));
        errors.samples.push((String::new(), lab(name, &[("kind", "timeout".into())]), s.redis_timeouts as f64));
        errors.samples.push((
            String::new(),
            lab(name, &[("kind", "breaker_open".into())]),
            s.redis_rejected_open as f64,
        ));
        for (i, le) in LATENCY_BUCKETS_US.iter().enumerate() {
            let le = format!("{}", *le as f64 / 1e6);
            latency.samples.push(("_bucket".into(), lab(name, &[("le", le)]), s.latency_cumulative[i] as f64));
        }
        let count = *s.latency_cumulative.last().unwrap_or(&0) as f64;
        latency.samples.push(("_bucket".into(), lab(name, &[("le", "+Inf".into())]), count));
        latency.samples.push(("_sum".into(), lab(name, &[]), s.latency_sum_us as f64 / 1e6));
        latency.samples.push(("_count".into(), lab(name, &[]), count));
        let st = match s.breaker_state {
            Some("open") => 1.0,
            Some("half_open") => 2.0,
            _ => 0.0,
        };
        state.samples.push((String::new(), lab(name, &[]), st));
        for (to, n) in &s.breaker_transitions {
            trans.samples.push((String::new(), lab(name, &[("to", to.to_string())]), *n as f64));
        }
        offset.samples.push((String::new(), lab(name, &[]), s.clock_offset_us as f64 / 1e6));
    }
    vec![decisions, calls, errors, latency, state, trans, offset]
}

fn merge(acc: &mut crate::metrics::MetricsSnapshot, s: &crate::metrics::MetricsSnapshot) {
    for (a, b) in acc.decisions.iter_mut().zip(&s.decisions) {
        a.2 += b.2;
    }
    for (a, b) in acc.shadow_denied.iter_mut().zip(&s.shadow_denied) {
        a.1 += b.1;
    }
    acc.redis_calls += s.redis_calls;
    acc.redis_errors += s.redis_errors;
    acc.redis_timeouts += s.redis_timeouts;
    acc.redis_rejected_open += s.redis_rejected_open;
    for (a, b) in acc.latency_cumulative.iter_mut().zip(&s.latency_cumulative) {
        *a += b;
    }
    acc.latency_sum_us += s.latency_sum_us;
    for (a, b) in acc.breaker_transitions.iter_mut().zip(&s.breaker_transitions) {
        a.1 += b.1;
    }
    if s.breaker_state != Some("closed") {
        acc.breaker_state = s.breaker_state;
    }
    acc.clock_offset_us = s.clock_offset_us;
}

/// Prometheus text exposition (version 0.0.4) of `families()`.
pub fn prometheus_text() -> String {
    let mut out = String::new();
    for f in families() {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (suffix, labels, v) in &f.samples {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            let _ = writeln!(out, "{}{}{{{}}} {}", f.name, suffix, labels.join(","), v);
        }
    }
    out
}

/// Label value of a source, for callers building their own metrics.
pub fn source_label(s: Source) -> &'static str {
    s.as_str()
}

#[cfg(test)]
mod tests {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::remote_parent;

    /// The SDK's reading of the same header: the parser must agree with it where the W3C format
    /// is kept, and refuses what the format refuses even where the SDK is lenient (lengths).
    fn sdk(tp: &str) -> Option<String> {
        let carrier: std::collections::HashMap<String, String> = [("traceparent".to_string(), tp.to_string())].into();
        let cx = TraceContextPropagator::new().extract(&carrier);
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| format!("{}-{}-{}", sc.trace_id(), sc.span_id(), sc.is_sampled()))
    }

    #[test]
    fn traceparent_cases() {
        const T: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
        const S: &str = "00f067aa0ba902b7";
        let cases: &[(String, bool, bool)] = &[
            // (header, accepted, sampled)
            (format!("00-{T}-{S}-01"), true, true),
            (format!("00-{T}-{S}-00"), true, false),
            (format!("00-{T}-{S}-03"), true, true),
            (format!(" 00-{T}-{S}-01 "), true, true),
            (format!("01-{T}-{S}-01-extra"), true, true),
            (format!("00-{T}-{S}-01-extra"), false, false),
            (format!("ff-{T}-{S}-01"), false, false),
            (format!("00-{}-{S}-01", T.to_uppercase()), false, false),
            (format!("00-{}-{S}-01", "0".repeat(32)), false, false),
            (format!("00-{T}-{}-01", "0".repeat(16)), false, false),
            (format!("00-{T}-{S}"), false, false),
            (format!("0g-{T}-{S}-01"), false, false),
            (String::new(), false, false),
        ];
        for (tp, accepted, sampled) in cases {
            let got = remote_parent(tp).map(|sc| format!("{}-{}-{}", sc.trace_id(), sc.span_id(), sc.is_sampled()));
            let want = accepted.then(|| format!("{T}-{S}-{sampled}"));
            assert_eq!(got, want, "{tp:?}");
            assert_eq!(got, sdk(tp), "{tp:?}: the SDK reads it otherwise");
        }
        // stricter than the SDK: W3C ids have fixed lengths
        assert_eq!(remote_parent(&format!("00-{}-{S}-01", &T[1..])), None);
    }
}
