//! floodwall._floodwall: the native module under the `floodwall` Python package. It wraps the
//! core crate (limiter, limit parser, HTTP rules) and owns the process's one tokio runtime.

mod bridge;
mod errors;
mod http;
mod limiter;
mod runtime;
mod telemetry;
#[cfg(feature = "test-hooks")]
mod test_hooks;

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
    for f in [
        wrap_pyfunction!(telemetry::configure_tracing, m)?,
        wrap_pyfunction!(telemetry::disable_tracing, m)?,
        wrap_pyfunction!(telemetry::install_json_logs, m)?,
        wrap_pyfunction!(telemetry::prometheus_text, m)?,
        wrap_pyfunction!(telemetry::_metric_families, m)?,
    ] {
        m.add_function(f)?;
    }
    #[cfg(feature = "test-hooks")]
    test_hooks::register(m)?;
    Ok(())
}
