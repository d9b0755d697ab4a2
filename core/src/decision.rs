//! The answer to "may this request pass?": a value, never an error. It carries everything a
//! response header needs, per limit, and where the answer came from.

use std::time::Duration;

use serde::Serialize;

use crate::algorithm::Outcome;
use crate::limit::Limit;

/// Where a decision was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// One atomic script call on Redis.
    Redis,
    /// The embedded in-process store.
    Memory,
    /// A local denial cache, answering until the retry time Redis gave.
    Cache,
    /// Permits reserved from Redis in advance and spent locally.
    Lease,
    /// Redis was unavailable and the configured fallback policy answered.
    Fallback,
}

impl Source {
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Redis => "redis",
            Source::Memory => "memory",
            Source::Cache => "cache",
            Source::Lease => "lease",
            Source::Fallback => "fallback",
        }
    }
}

/// One limit's view of the request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct WindowState {
    pub limit: Limit,
    pub remaining: u64,
    /// Until the window holds no more of this identity's requests.
    pub reset_after: Duration,
    /// Until this limit would admit the request; `None` when it admits it now.
    pub retry_after: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Decision {
    pub allowed: bool,
    /// The `max` of the limit that binds: the one that denied, or the one with least remaining.
    pub limit: u64,
    pub remaining: u64,
    pub reset_after: Duration,
    /// How long to wait before the same request could pass; `None` when allowed.
    pub retry_after: Option<Duration>,
    /// The limit that denied (the one with the longest wait when several did).
    pub limited_by: Option<Limit>,
    pub source: Source,
    /// Every limit, in configuration order.
    pub windows: Vec<WindowState>,
    /// The store's clock at the decision, microseconds since the epoch (Redis `TIME`).
    pub at_us: u64,
}

impl Decision {
    pub(crate) fn from_outcome(o: &Outcome, limits: &[Limit], source: Source) -> Decision {
        let windows: Vec<WindowState> = limits
            .iter()
            .zip(&o.windows)
            .map(|(l, e)| WindowState {
                limit: *l,
                remaining: e.remaining,
                reset_after: Duration::from_micros(e.reset_after_us),
                retry_after: (e.retry_after_us > 0).then(|| Duration::from_micros(e.retry_after_us)),
            })
            .collect();
        // Binding window: the denier, else least remaining (first wins, i.e. configuration order).
        let binding =
            o.limited_by.unwrap_or_else(|| (0..windows.len()).min_by_key(|&i| (windows[i].remaining, i)).unwrap_or(0));
        let w = &windows[binding];
        Decision {
            allowed: o.allowed,
            limit: w.limit.max(),
            remaining: w.remaining,
            reset_after: w.reset_after,
            retry_after: if o.allowed { None } else { w.retry_after.or(Some(Duration::from_micros(1))) },
            limited_by: if o.allowed { None } else { Some(w.limit) },
            source,
            windows,
            at_us: o.now_us,
        }
    }
}
