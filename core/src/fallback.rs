//! What the limiter answers when Redis cannot: allow (`open`), deny (`closed`), enforce a share
//! of each limit in process (`local`), or return the error (`error`, for callers who asked).
//! Every fallback decision says `source: fallback`; none of them raises unless asked to.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::algorithm::{Algorithm, Outcome, WindowEval};
use crate::clock::Clock;
use crate::decision::{Decision, Source};
use crate::error::{Error, Result};
use crate::limit::Limit;
use crate::store::{MemoryStore, Request};

/// The policy, as data (config files and binding options map onto it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", try_from = "FallbackRepr")]
pub enum FallbackMode {
    /// Allow every request while Redis is unavailable.
    Open,
    /// Deny every request, telling clients to retry after `retry_after_ms`.
    Closed {
        #[serde(default = "default_retry_ms")]
        retry_after_ms: u64,
    },
    /// Enforce each limit divided by `expected_instances` in this process (the embedded store).
    Local {
        #[serde(default = "default_instances")]
        expected_instances: u32,
    },
    /// Return the store error to the caller.
    Error,
}

/// The wire form: serde's internally tagged unit variants ignore extra fields, and a typo such as
/// `{"mode": "open", "retry_after_ms": 5}` must be an error, not a silent default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FallbackRepr {
    mode: String,
    #[serde(default, alias = "retryAfterMs")]
    retry_after_ms: Option<u64>,
    #[serde(default, alias = "expectedInstances")]
    expected_instances: Option<u32>,
}

impl TryFrom<FallbackRepr> for FallbackMode {
    type Error = Error;
    fn try_from(r: FallbackRepr) -> Result<Self> {
        let stray = |field: &str| {
            Err(Error::config(
                "fallback",
                format!("{field} with mode {:?}", r.mode),
                "that field belongs to another mode",
            ))
        };
        match (FallbackMode::parse(&r.mode)?, r.retry_after_ms, r.expected_instances) {
            (FallbackMode::Closed { .. }, retry, None) => {
                Ok(FallbackMode::Closed { retry_after_ms: retry.unwrap_or_else(default_retry_ms) })
            }
            (FallbackMode::Local { .. }, None, n) => {
                Ok(FallbackMode::Local { expected_instances: n.unwrap_or_else(default_instances) })
            }
            (m @ (FallbackMode::Open | FallbackMode::Error), None, None) => Ok(m),
            (_, Some(_), _) => stray("retry_after_ms"),
            (_, _, Some(_)) => stray("expected_instances"),
        }
    }
}

fn default_retry_ms() -> u64 {
    1_000
}
fn default_instances() -> u32 {
    1
}

impl Default for FallbackMode {
    fn default() -> Self {
        FallbackMode::Local { expected_instances: 1 }
    }
}

impl FallbackMode {
    /// "open" | "closed" | "local" | "error", with defaults for their parameters.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "open" | "fail-open" | "fail_open" => Ok(FallbackMode::Open),
            "closed" | "fail-closed" | "fail_closed" => Ok(FallbackMode::Closed { retry_after_ms: default_retry_ms() }),
            "local" => Ok(FallbackMode::Local { expected_instances: default_instances() }),
            "error" | "raise" => Ok(FallbackMode::Error),
            _ => Err(Error::config("fallback", s, "expected \"open\", \"closed\", \"local\" or \"error\"")),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            FallbackMode::Open => "open",
            FallbackMode::Closed { .. } => "closed",
            FallbackMode::Local { .. } => "local",
            FallbackMode::Error => "error",
        }
    }
}

/// The fallback, ready to answer for one limiter.
#[derive(Debug)]
pub(crate) struct Fallback {
    mode: FallbackMode,
    /// Limits scaled to this instance's share (local mode).
    local_limits: Vec<Limit>,
    local: Option<MemoryStore>,
}

impl Fallback {
    pub(crate) fn new(
        mode: FallbackMode,
        limits: &[Limit],
        algorithm: Algorithm,
        clock: Arc<dyn Clock>,
        max_identities: usize,
    ) -> Result<Self> {
        let (local_limits, local) = match &mode {
            FallbackMode::Local { expected_instances } => {
                if *expected_instances == 0 {
                    return Err(Error::config("expected_instances", 0, "must be at least 1"));
                }
                let n = *expected_instances as u64;
                let scaled: Result<Vec<Limit>> = limits
                    .iter()
                    .map(|l| {
                        let share = Limit::new((l.max() / n).max(1), l.window())?;
                        if algorithm == Algorithm::TokenBucket {
                            share.with_burst((l.burst() / n).max(1))
                        } else {
                            Ok(share)
                        }
                    })
                    .collect();
                (scaled?, Some(MemoryStore::with_max_identities(clock, max_identities)?))
            }
            FallbackMode::Closed { retry_after_ms: 0 } => {
                return Err(Error::config(
                    "retry_after_ms",
                    0,
                    "a closed fallback must ask clients to wait at least 1 ms",
                ));
            }
            _ => (limits.to_vec(), None),
        };
        Ok(Fallback { mode, local_limits, local })
    }

    pub(crate) fn mode(&self) -> &FallbackMode {
        &self.mode
    }

    /// Answer without Redis. `err` is what Redis said (returned only in `error` mode).
    pub(crate) fn decide(&self, err: Error, req: &Request<'_>, now_us: u64) -> Result<Decision> {
        let fixed = |allowed: bool, retry_us: u64| {
            let windows = req
                .limits
                .iter()
                .map(|l| WindowEval {
                    remaining: if allowed { l.max() } else { 0 },
                    reset_after_us: if allowed { 0 } else { retry_us },
                    retry_after_us: if allowed { 0 } else { retry_us },
                })
                .collect();
            let o = Outcome { allowed, limited_by: if allowed { None } else { Some(0) }, now_us, windows };
            Decision::from_outcome(&o, req.limits, Source::Fallback)
        };
        match &self.mode {
            FallbackMode::Error => Err(err),
            FallbackMode::Open => Ok(fixed(true, 0)),
            FallbackMode::Closed { retry_after_ms } => {
                Ok(fixed(false, Duration::from_millis(*retry_after_ms).as_micros() as u64))
            }
            FallbackMode::Local { .. } => {
                let store = self.local.as_ref().expect("local mode has a store");
                let local = Request { limits: &self.local_limits, ..*req };
                // Redis at maxmemory read the identity's counts: start from them, so an identity
                // at 8 of 10 there gets at most 2 more here, not a fresh limit
                let seed = match &err {
                    Error::Full { state, .. } if !state.is_empty() => Some(&state[..]),
                    _ => None,
                };
                let o = store.evaluate_seeded(&local, seed);
                Ok(Decision::from_outcome(&o, &self.local_limits, Source::Fallback))
            }
        }
    }

    pub(crate) fn local_store(&self) -> Option<&MemoryStore> {
        self.local.as_ref()
    }

    pub(crate) fn reset(&self, keys: &[String]) {
        if let Some(m) = &self.local {
            m.reset(keys);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_forms_and_strays() {
        let ok: &[(&str, FallbackMode)] = &[
            (r#"{"mode":"open"}"#, FallbackMode::Open),
            (r#"{"mode":"error"}"#, FallbackMode::Error),
            (r#"{"mode":"closed"}"#, FallbackMode::Closed { retry_after_ms: 1000 }),
            (r#"{"mode":"closed","retry_after_ms":250}"#, FallbackMode::Closed { retry_after_ms: 250 }),
            (r#"{"mode":"local","expected_instances":4}"#, FallbackMode::Local { expected_instances: 4 }),
        ];
        for (text, want) in ok {
            assert_eq!(&serde_json::from_str::<FallbackMode>(text).unwrap(), want, "{text}");
        }
        for text in [
            r#"{"mode":"open","retry_after_ms":5}"#,
            r#"{"mode":"local","retry_after_ms":5}"#,
            r#"{"mode":"closed","expected_instances":2}"#,
            r#"{"mode":"open","typo":1}"#,
            r#"{"mode":"sideways"}"#,
        ] {
            assert!(serde_json::from_str::<FallbackMode>(text).is_err(), "{text} accepted");
        }
        let round = serde_json::to_string(&FallbackMode::Local { expected_instances: 3 }).unwrap();
        assert_eq!(
            serde_json::from_str::<FallbackMode>(&round).unwrap(),
            FallbackMode::Local { expected_instances: 3 }
        );
    }
}
