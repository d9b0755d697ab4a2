//! floodwall: distributed rate limiting. Sliding window, sliding log and token bucket (GCRA),
//! several limits checked in one atomic Redis script on Redis time, or in process on the
//! embedded store. Bindings for Python and Node wrap this crate and nothing else.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use floodwall::{Limiter, Limit};
//! let limiter = Limiter::in_memory([Limit::per_second(5)?, Limit::per_minute(100)?])?;
//! let d = limiter.check("user:42").await?;
//! assert!(d.allowed && d.remaining == 4);
//! # Ok::<(), floodwall::Error>(()) }).unwrap();
//! ```
//!
//! Cargo features, all on by default but `test-util`: `cache` (the local cache layer, moka),
//! `web` (the HTTP rules in `floodwall::web`, jsonwebtoken), `otlp` (span export over OTLP/HTTP, reqwest).
//! With none of them the crate is the limiter, its stores, fallback and telemetry without export.
//! `test-util` adds test hooks (`OffsetClock`, in-memory test tracing); never for production.

/// Chainable setters for a `#[non_exhaustive]` options struct, one per field, so that other crates
/// can build one from its defaults: `CacheOptions::default().leases(false).lease_ms(400)`.
macro_rules! setters {
    ($ty:ident { $($field:ident: $t:ty),* $(,)? }) => {
        impl $ty {
            $(
                #[doc = concat!("Sets [`", stringify!($ty), "::", stringify!($field), "`].")]
                #[must_use]
                pub fn $field(mut self, value: $t) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

/// Items of the cache layer, compiled with the `cache` feature only (tokio's `cfg_*!` idiom).
macro_rules! cfg_cache {
    ($($item:item)*) => { $( #[cfg(feature = "cache")] $item )* };
}

pub mod algorithm;
pub(crate) mod breaker;
pub mod cache;
pub mod clock;
#[cfg(feature = "config")]
pub mod config;
pub mod decision;
pub mod error;
pub mod fallback;
pub mod keys;
pub mod limit;
pub mod limiter;
pub mod metrics;
pub mod per_process;
pub(crate) mod remote;
pub(crate) mod scripts;
pub mod secret;
pub mod store;
pub mod telemetry;
#[cfg(feature = "web")]
pub mod web;

pub use algorithm::{Algorithm, MAX_LOG_ENTRIES};
pub use breaker::BreakerOptions;
pub use cache::{CacheOptions, CacheStats};
#[cfg(feature = "test-util")]
pub use clock::OffsetClock;
pub use clock::{Clock, FakeClock, SystemClock};
#[cfg(feature = "config")]
pub use config::{Config, Format};
pub use decision::{Decision, Source, WindowState};
pub use error::{Error, ErrorKind, Result};
pub use fallback::FallbackMode;
pub use keys::KeyLayout;
pub use limit::{parse_limits, Limit};
#[doc(hidden)]
pub use limiter::OwnConnection;
pub use limiter::{BatchItem, CheckOptions, Limiter, LimiterBuilder, LimiterConfig};
pub use metrics::{BreakerState, Metrics, MetricsSnapshot};
pub use store::memory::DEFAULT_MAX_IDENTITIES;
pub use store::redis::batch::together;
pub use store::{MemoryStore, RedisOptions, RedisStore};
