//! floodwall._floodwall: the native module under the `floodwall` Python package. It wraps the
//! core crate (limiter, limit parser, HTTP rules) and owns the process's one tokio runtime.

mod bridge;
mod errors;
mod http;
mod limiter;
mod runtime;
mod telemetry;

use pyo3::prelude::*;

#[pymodule]
fn _floodwall(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("FloodwallError", py.get_type::<errors::FloodwallError>())?;
    m.add("ConfigError", py.get_type::<errors::ConfigError>())?;
    m.add("StoreError", py.get_type::<errors::StoreError>())?;
    m.add_class::<limiter::PyLimiter>()?;
    m.add_class::<limiter::PyDecision>()?;
    m.add_class::<limiter::PyWindow>()?;
    m.add_class::<limiter::PyManualClock>()?;
    m.add_class::<http::PyHttpRule>()?;
    m.add_class::<http::PyHttpLimiter>()?;
    m.add_class::<http::PyHttpDecision>()?;
    m.add_class::<http::PyRuleDecision>()?;
    m.add_function(wrap_pyfunction!(http::py_rate_limit_headers, m)?)?;
    m.add_function(wrap_pyfunction!(http::py_limited_body, m)?)?;
    m.add_function(wrap_pyfunction!(limiter::_use_loop_bridge, m)?)?;
    m.add_function(wrap_pyfunction!(limiter::_sync_on_caller_thread, m)?)?;
    m.add_function(wrap_pyfunction!(limiter::_panic, m)?)?;
    for f in [
        wrap_pyfunction!(telemetry::configure_tracing, m)?,
        wrap_pyfunction!(telemetry::disable_tracing, m)?,
        wrap_pyfunction!(telemetry::install_json_logs, m)?,
        wrap_pyfunction!(telemetry::prometheus_text, m)?,
        wrap_pyfunction!(telemetry::_metric_families, m)?,
        wrap_pyfunction!(telemetry::_enable_test_tracing, m)?,
        wrap_pyfunction!(telemetry::_finished_spans, m)?,
        wrap_pyfunction!(telemetry::_clear_finished_spans, m)?,
    ] {
        m.add_function(f)?;
    }
    Ok(())
}
