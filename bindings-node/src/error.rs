//! The one place where a failure becomes a JavaScript `Error`: every error the addon raises has a
//! `code` (`ERR_FLOODWALL_CONFIG`, `ERR_FLOODWALL_STORE`, `ERR_FLOODWALL_INTERNAL`) and a message
//! that names the bad value. Panics are caught here too, so none unwinds into Node.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};

use futures::FutureExt;
use napi::bindgen_prelude::{JsError, Unknown};
use napi::sys;

pub const CONFIG: &str = "ERR_FLOODWALL_CONFIG";
pub const STORE: &str = "ERR_FLOODWALL_STORE";
pub const INTERNAL: &str = "ERR_FLOODWALL_INTERNAL";

/// Why a call failed, before it is turned into a JS error on the JS thread.
#[derive(Debug)]
pub enum Failure {
    /// The core refused input or its store failed; `kind()` picks the code.
    Core(floodwall::Error),
    /// The binding refused an argument before the core saw it (wrong JS type, unknown option).
    Arg(String),
    /// A bug: a panic caught at the boundary.
    Panic(String),
    /// napi itself failed (converting a value, creating an object).
    Napi(napi::Error),
}

impl From<floodwall::Error> for Failure {
    fn from(e: floodwall::Error) -> Self {
        Failure::Core(e)
    }
}

impl From<napi::Error> for Failure {
    fn from(e: napi::Error) -> Self {
        Failure::Napi(e)
    }
}

impl Failure {
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Core(e) => match e.kind() {
                floodwall::ErrorKind::Config => CONFIG,
                floodwall::ErrorKind::Store => STORE,
            },
            Failure::Arg(_) => CONFIG,
            Failure::Panic(_) | Failure::Napi(_) => INTERNAL,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Failure::Core(e) => e.to_string(),
            Failure::Arg(m) => m.clone(),
            Failure::Panic(m) => format!("floodwall: internal error (a bug, please report it): {m}"),
            Failure::Napi(e) => format!("floodwall: {}", e.reason),
        }
    }

    /// A JS `Error` with `code` set, wrapped so napi throws or rejects with exactly this object.
    pub fn into_js(self, env: sys::napi_env) -> napi::Error {
        let plain: napi::Error<&'static str> = napi::Error::new(self.code(), self.message());
        // napi_create_error(code, message) sets `error.code`; From<Unknown> keeps a reference
        // to this very object, which napi reuses when it throws or rejects.
        let raw = unsafe { JsError::from(plain).into_value(env) };
        if raw.is_null() {
            return napi::Error::from_reason(self.message());
        }
        napi::Error::from(unsafe { Unknown::from_raw_unchecked(env, raw) })
    }
}

pub type Outcome<T> = Result<T, Failure>;

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// Run synchronous binding code; a panic becomes `Failure::Panic`.
pub fn guard<T>(f: impl FnOnce() -> Outcome<T>) -> Outcome<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(Failure::Panic(panic_message(p))))
}

/// The same for a future polled on the runtime.
pub async fn guard_async<T>(fut: impl Future<Output = Outcome<T>>) -> Outcome<T> {
    AssertUnwindSafe(fut).catch_unwind().await.unwrap_or_else(|p| Err(Failure::Panic(panic_message(p))))
}

/// A synchronous result as napi wants it: errors become coded JS errors.
pub fn throw<T>(env: &napi::Env, r: Outcome<T>) -> napi::Result<T> {
    r.map_err(|f| f.into_js(env.raw()))
}
