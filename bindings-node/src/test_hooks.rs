//! Test switches of the addon, compiled only with the `test-hooks` feature (test.sh builds with
//! it; a plain `napi build` never does): the core's in-memory test tracing.

use std::collections::HashMap;

use floodwall::telemetry as core;
use napi::Env;
use napi_derive::napi;

use crate::error::{guard, throw};

/// A finished `floodwall.check` span, as the test exporter holds it.
#[napi(object)]
pub struct SpanRecord {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub attributes: HashMap<String, String>,
    pub error: bool,
    /// The error status's description ("" when not an error).
    pub status: String,
    /// Each event as its name and attribute values, space-separated.
    pub events: Vec<String>,
}

/// Tests: trace every decision into memory (read with `_finishedSpans`).
#[napi(js_name = "_enableTestTracing")]
pub fn enable_test_tracing(env: Env, record_raw_keys: Option<bool>, sampling_ratio: Option<f64>) -> napi::Result<()> {
    let opts = core::TraceOptions::default()
        .record_raw_keys(record_raw_keys.unwrap_or(false))
        .sampling_ratio(sampling_ratio.unwrap_or(1.0));
    throw(&env, guard(|| Ok(core::enable_test_tracing_with(&opts)?)))
}

#[napi(js_name = "_finishedSpans")]
pub fn finished_spans(env: Env) -> napi::Result<Vec<SpanRecord>> {
    throw(
        &env,
        guard(|| {
            Ok(core::finished_spans()
                .into_iter()
                .map(|s| SpanRecord {
                    name: s.name,
                    trace_id: s.trace_id,
                    span_id: s.span_id,
                    parent_span_id: s.parent_span_id,
                    attributes: s.attributes,
                    error: s.error,
                    status: s.status,
                    events: s.events,
                })
                .collect())
        }),
    )
}

#[napi(js_name = "_clearFinishedSpans")]
pub fn clear_finished_spans(env: Env) -> napi::Result<()> {
    throw(
        &env,
        guard(|| {
            core::clear_finished_spans();
            Ok(())
        }),
    )
}
