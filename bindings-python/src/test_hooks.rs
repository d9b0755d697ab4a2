//! Test and benchmark switches of the native module, compiled only with the `test-hooks` feature
//! (bindings-python/test.sh builds with it; a plain `pip install .` never does).

use std::sync::atomic::Ordering;

use floodwall::telemetry as core;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use pyo3::IntoPyObjectExt;

use crate::errors::{guard, to_py};
use crate::limiter::{awaitable, blocking, config_error, Place, SYNC_HERE, USE_LOOP_BRIDGE};

/// Adds the hooks as plain attributes: `add_function` would list them in the module's `__all__`,
/// and the shipped stub (which mypy.stubtest checks against this build) leaves them out.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    for f in [
        wrap_pyfunction!(_use_loop_bridge, m)?,
        wrap_pyfunction!(_sync_on_caller_thread, m)?,
        wrap_pyfunction!(_panic, m)?,
        wrap_pyfunction!(_enable_test_tracing, m)?,
        wrap_pyfunction!(_finished_spans, m)?,
        wrap_pyfunction!(_clear_finished_spans, m)?,
    ] {
        m.setattr(f.getattr("__name__")?.extract::<String>()?, f)?;
    }
    Ok(())
}

/// Choose how async results reach the event loop; for benchmarks and tests.
#[pyfunction]
pub fn _use_loop_bridge(enabled: bool) {
    USE_LOOP_BRIDGE.store(enabled, Ordering::Relaxed);
}

/// Choose where sync calls on Redis run; for benchmarks and tests.
#[pyfunction]
pub fn _sync_on_caller_thread(enabled: bool) {
    SYNC_HERE.store(enabled, Ordering::Relaxed);
}

/// Tests only: panic inside each kind of call, to show that a panic comes out as FloodwallError.
/// `where_`: "call" (in the method itself), "sync" (while a sync method waits on the runtime),
/// "async" (in a future on the runtime) or "in_place" (in a future polled in place).
#[pyfunction]
pub fn _panic<'py>(py: Python<'py>, where_: &str) -> PyResult<Bound<'py, PyAny>> {
    async fn boom() -> floodwall::Result<bool> {
        tokio::task::yield_now().await;
        panic!("a test panic on the runtime")
    }
    match where_ {
        "call" => guard(|| panic!("a test panic in a call")),
        "sync" => blocking(py, false, boom()).map(|b| b.into_bound_py_any(py))?,
        "async" => awaitable(py, Place::Runtime, boom()),
        "in_place" => {
            awaitable(py, Place::InProcess, async { panic!("a test panic polled in place") as floodwall::Result<bool> })
        }
        _ => Err(config_error("where", where_, "expected call, sync, async or in_place")),
    }
}

/// Tests: trace every decision into memory (read with `_finished_spans`).
#[pyfunction]
#[pyo3(signature = (record_raw_keys = false, sampling_ratio = 1.0))]
pub fn _enable_test_tracing(record_raw_keys: bool, sampling_ratio: f64) -> PyResult<()> {
    let opts = core::TraceOptions::default().record_raw_keys(record_raw_keys).sampling_ratio(sampling_ratio);
    guard(|| core::enable_test_tracing_with(&opts).map_err(to_py))
}

/// Tests: the spans the in-memory exporter holds, oldest first, as dicts (name, trace_id,
/// span_id, parent_span_id, attributes, error, status, events).
#[pyfunction]
pub fn _finished_spans(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let spans = guard(|| Ok(core::finished_spans()))?;
    let out = PyList::empty(py);
    for s in spans {
        let d = PyDict::new(py);
        d.set_item("name", s.name)?;
        d.set_item("trace_id", s.trace_id)?;
        d.set_item("span_id", s.span_id)?;
        d.set_item("parent_span_id", s.parent_span_id)?;
        d.set_item("attributes", s.attributes)?;
        d.set_item("error", s.error)?;
        d.set_item("status", s.status)?;
        d.set_item("events", s.events)?;
        out.append(d)?;
    }
    Ok(out)
}

/// Tests: forget the spans the in-memory exporter holds.
#[pyfunction]
pub fn _clear_finished_spans() -> PyResult<()> {
    guard(|| {
        core::clear_finished_spans();
        Ok(())
    })
}
