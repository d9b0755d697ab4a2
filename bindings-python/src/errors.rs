//! The exception hierarchy and the one mapping from `floodwall::Error` onto it, plus the guard
//! that turns a Rust panic into an exception instead of letting it cross the FFI boundary.

use std::panic::{catch_unwind, AssertUnwindSafe};

use floodwall::ErrorKind;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::PyErr;

create_exception!(floodwall, FloodwallError, PyException, "Base class of every floodwall error.");
create_exception!(
    floodwall,
    ConfigError,
    FloodwallError,
    "Invalid input: a limit string, algorithm, key, cost or Redis URL. Retrying will not help."
);
create_exception!(
    floodwall,
    StoreError,
    FloodwallError,
    "The store (Redis) failed, timed out or was unreachable. Retrying later may help."
);

/// The one place a core error becomes a Python exception.
pub fn to_py(err: floodwall::Error) -> PyErr {
    let message = err.to_string();
    match err.kind() {
        ErrorKind::Config => ConfigError::new_err(message),
        ErrorKind::Store => StoreError::new_err(message),
    }
}

/// Text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

pub fn from_panic(payload: Box<dyn std::any::Any + Send>) -> PyErr {
    FloodwallError::new_err(format!("internal error (a bug in floodwall): {}", panic_message(&*payload)))
}

/// Run `f`; a panic inside becomes FloodwallError.
pub fn guard<T>(f: impl FnOnce() -> pyo3::PyResult<T>) -> pyo3::PyResult<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(from_panic(p)))
}
