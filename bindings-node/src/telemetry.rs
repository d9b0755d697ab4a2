//! `floodwall.telemetry` for Node: tracing on/off and its test helpers, JSON logs, and the core's
//! metric families (as Prometheus text, or as plain data that index.js hands to prom-client).
//! Everything here is process-wide, as it is in the core.

use floodwall::telemetry as core;
use napi::bindgen_prelude::{FromNapiValue, Unknown};
use napi::{Env, JsValue};
use napi_derive::napi;

use crate::args;
use crate::error::{guard, throw, Failure, Outcome};

const TRACE_OPTIONS: &[&str] = &["otlpEndpoint", "samplingRatio", "recordRawKeys", "serviceName"];

fn trace_options(v: Option<&Unknown>) -> Outcome<core::TraceOptions> {
    let mut o = core::TraceOptions::default();
    let Some(obj) = args::options("configureTracing option", v, TRACE_OPTIONS)? else { return Ok(o) };
    if let Some(v) = args::field(&obj, "otlpEndpoint")? {
        o.otlp_endpoint = Some(args::string("otlpEndpoint", &v)?);
    }
    if let Some(v) = args::field(&obj, "samplingRatio")? {
        let r = args::non_negative("samplingRatio", &v)?;
        if r > 1.0 {
            return Err(Failure::Arg(format!(
                "invalid samplingRatio {}: must be between 0 and 1",
                args::fmt_number(r)
            )));
        }
        o.sampling_ratio = r;
    }
    if let Some(v) = args::field(&obj, "recordRawKeys")? {
        if args::type_of(&v) != napi::ValueType::Boolean {
            return Err(Failure::Arg(format!("invalid recordRawKeys {}: must be a boolean", args::describe(&v))));
        }
        o.record_raw_keys = unsafe { bool::from_napi_value(v.value().env, v.raw()) }?;
    }
    if let Some(v) = args::field(&obj, "serviceName")? {
        o.service_name = args::string("serviceName", &v)?;
    }
    Ok(o)
}

/// Turn on (or reconfigure) a `floodwall.check` span per decision; OTLP export when
/// `otlpEndpoint` is given.
#[napi(ts_args_type = "options?: TraceOptions")]
pub fn configure_tracing(env: Env, options: Option<Unknown>) -> napi::Result<()> {
    throw(&env, guard(|| Ok(core::configure_tracing(&trace_options(options.as_ref())?)?)))
}

/// Turn tracing off; spans already ended are flushed.
#[napi]
pub fn disable_tracing(env: Env) -> napi::Result<()> {
    throw(
        &env,
        guard(|| {
            core::disable_tracing();
            Ok(())
        }),
    )
}

/// floodwall's warnings and errors as JSON lines on stderr (with trace ids); `filter` is an
/// env-filter directive, default "floodwall=warn".
#[napi]
pub fn install_json_logs(env: Env, filter: Option<String>) -> napi::Result<()> {
    throw(&env, guard(|| Ok(core::install_json_logs(filter.as_deref().unwrap_or("floodwall=warn"))?)))
}

/// Every live limiter's metrics in the Prometheus text format (0.0.4).
#[napi]
pub fn prometheus_text(env: Env) -> napi::Result<String> {
    throw(&env, guard(|| Ok(core::prometheus_text())))
}

#[napi(object)]
pub struct MetricSample {
    /// "" or, for histograms, "_bucket" / "_sum" / "_count".
    pub suffix: String,
    /// Label pairs in order: [name, value, name, value, ...].
    pub labels: Vec<String>,
    pub value: f64,
}

#[napi(object)]
pub struct MetricFamily {
    pub name: String,
    pub help: String,
    /// "counter" | "gauge" | "histogram"
    pub kind: String,
    pub samples: Vec<MetricSample>,
}

/// The core's metric families as data; index.js's `registerMetrics` serves them through prom-client.
#[napi(js_name = "_metricFamilies")]
pub fn metric_families(env: Env) -> napi::Result<Vec<MetricFamily>> {
    throw(
        &env,
        guard(|| {
            Ok(core::families()
                .into_iter()
                .map(|f| MetricFamily {
                    name: f.name.to_string(),
                    help: f.help.to_string(),
                    kind: f.kind.to_string(),
                    samples: f
                        .samples
                        .into_iter()
                        .map(|(suffix, labels, value)| MetricSample {
                            suffix,
                            labels: labels.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                            value,
                        })
                        .collect(),
                })
                .collect())
        }),
    )
}
