//! `floodwall.telemetry` for Python: tracing on/off and its test helpers, JSON logs, and the
//! core's metric families (as Prometheus text, or as plain data that `floodwall.telemetry`
//! turns into a prometheus_client Collector). Everything here is process-wide, as in the core.

use floodwall::telemetry as core;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::errors::{guard, to_py};
use crate::limiter::config_error;

/// Turn on (or reconfigure) a `floodwall.check` span per decision; OTLP/HTTP export when
/// `otlp_endpoint` is given (e.g. "http://localhost:4318/v1/traces").
#[pyfunction]
#[pyo3(signature = (otlp_endpoint = None, sampling_ratio = 1.0, record_raw_keys = false, service_name = "floodwall"))]
pub fn configure_tracing(
    otlp_endpoint: Option<String>,
    sampling_ratio: f64,
    record_raw_keys: bool,
    service_name: &str,
) -> PyResult<()> {
    guard(|| {
        if !(0.0..=1.0).contains(&sampling_ratio) {
            return Err(config_error("sampling_ratio", sampling_ratio, "must be between 0 and 1"));
        }
        let opts = core::TraceOptions::default()
            .otlp_endpoint(otlp_endpoint)
            .sampling_ratio(sampling_ratio)
            .record_raw_keys(record_raw_keys)
            .service_name(service_name.to_owned());
        core::configure_tracing(&opts).map_err(to_py)
    })
}

/// Turn tracing off; spans already ended are flushed.
#[pyfunction]
pub fn disable_tracing(py: Python<'_>) -> PyResult<()> {
    // Shutting down an OTLP exporter may wait on the network: not with the interpreter held.
    guard(|| {
        py.detach(core::disable_tracing);
        Ok(())
    })
}

/// floodwall's warnings and errors as JSON lines on stderr (with trace ids); `filter` is an
/// env-filter directive. Does nothing if a `tracing` subscriber is already installed.
#[pyfunction]
#[pyo3(signature = (filter = "floodwall=warn"))]
pub fn install_json_logs(filter: &str) -> PyResult<()> {
    guard(|| core::install_json_logs(filter).map_err(to_py))
}

/// Every live limiter's metrics in the Prometheus text format (0.0.4).
#[pyfunction]
pub fn prometheus_text() -> PyResult<String> {
    guard(|| Ok(core::prometheus_text()))
}

/// The core's metric families as data: [(name, help, kind, [(suffix, [(label, value)], value)])].
#[pyfunction]
pub fn _metric_families(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let families = guard(|| Ok(core::families()))?;
    let out = PyList::empty(py);
    for f in families {
        out.append((f.name, f.help, f.kind, f.samples))?;
    }
    Ok(out)
}
