//! The Node binding of floodwall (napi-rs): `Limiter` and `ManualClock` over the core, and the
//! core's HTTP rules (client IP, keys, JWT, routes, headers) for the Express adapter in express.js,
//! and the core's tracing, logs and metrics (telemetry.rs). Errors become JS `Error`s with a `code`
//! in error.rs; no panic crosses into Node.

mod args;
mod error;
mod http;
mod limiter;
mod runtime;
// public so its #[napi] items count as used in test builds too (napi registers them only outside tests)
pub mod telemetry;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;

pub use http::JsHttpLimiter;
pub use limiter::{Decision, JsLimiter, JsManualClock, WindowState};
