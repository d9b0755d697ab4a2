//! The circuit breaker in front of Redis: its settings and its states. Callers get an error fast
//! instead of waiting on a sick Redis (remote.rs asks it before each call and reports each verdict).
//!
//! States:  Closed ──(N consecutive failures | slow-call share ≥ ratio)──► Open
//!          Open ──(open_for elapsed | health PING answers)──► HalfOpen
//!          HalfOpen ──(probes all succeed)──► Closed;  HalfOpen ──(a probe fails)──► Open

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metrics::{BreakerState, Metrics};
use crate::per_process::PerProcess;

/// Deadline and breaker settings. Defaults suit a Redis on the same network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "config", derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BreakerOptions {
    /// Open after this many consecutive failures (errors or timeouts).
    #[serde(alias = "failureThreshold")]
    pub failure_threshold: u32,
    /// A call slower than this is slow.
    #[serde(alias = "slowCallMs")]
    pub slow_call_ms: u64,
    /// Open when at least this share of the last `slow_call_window` calls was slow...
    #[serde(alias = "slowCallRatio")]
    pub slow_call_ratio: f64,
    #[serde(alias = "slowCallWindow")]
    pub slow_call_window: usize,
    /// ...and the window holds at least this many calls.
    #[serde(alias = "slowCallMinCalls")]
    pub slow_call_min_calls: usize,
    /// Stay open this long before letting probes through.
    #[serde(alias = "openMs")]
    pub open_ms: u64,
    /// Probes allowed in half-open; all must succeed to close.
    #[serde(alias = "halfOpenProbes")]
    pub half_open_probes: u32,
    /// While open, PING Redis this often; an answer moves the breaker to half-open early.
    #[serde(alias = "healthCheckMs")]
    pub health_check_ms: u64,
    /// Calls in flight to Redis at once from this limiter; more wait their turn before their
    /// deadline starts. A burst in this process is not a sick Redis: without this bound, 1,000
    /// concurrent checks queue in the pipeline, pass the deadline and land on the fallback.
    #[serde(alias = "maxInFlight")]
    pub max_in_flight: usize,
}

impl Default for BreakerOptions {
    fn default() -> Self {
        BreakerOptions {
            failure_threshold: 5,
            slow_call_ms: 25,
            slow_call_ratio: 0.5,
            slow_call_window: 100,
            slow_call_min_calls: 20,
            open_ms: 1_000,
            half_open_probes: 3,
            health_check_ms: 250,
            max_in_flight: 32,
        }
    }
}

setters!(BreakerOptions {
    failure_threshold: u32,
    slow_call_ms: u64,
    slow_call_ratio: f64,
    slow_call_window: usize,
    slow_call_min_calls: usize,
    open_ms: u64,
    half_open_probes: u32,
    health_check_ms: u64,
    max_in_flight: usize,
});

impl BreakerOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        if !(self.slow_call_ratio > 0.0 && self.slow_call_ratio <= 1.0) {
            return Err(Error::config("slow_call_ratio", self.slow_call_ratio, "must be in (0, 1]"));
        }
        if self.failure_threshold == 0
            || self.half_open_probes == 0
            || self.slow_call_window == 0
            || self.max_in_flight == 0
        {
            return Err(Error::config(
                "breaker",
                format!(
                    "failure_threshold={}, half_open_probes={}, slow_call_window={}, max_in_flight={}",
                    self.failure_threshold, self.half_open_probes, self.slow_call_window, self.max_in_flight
                ),
                "must each be at least 1",
            ));
        }
        Ok(())
    }
}

#[derive(Debug)]
enum State {
    Closed,
    Open { since: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
}

#[derive(Debug)]
struct BreakerInner {
    state: State,
    consecutive_failures: u32,
    /// Recent calls, true = slow.
    recent: VecDeque<bool>,
    slow: usize,
    health_running: bool,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    opts: BreakerOptions,
    /// Per process: a forked child starts closed, with no lock or health check of its parent's.
    inner: PerProcess<Mutex<BreakerInner>>,
    metrics: Arc<Metrics>,
}

/// Leave to make one call. Dropped without a verdict (the caller gave up): the probe slot frees.
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    done: bool,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.done {
            let mut g = self.breaker.lock();
            if let State::HalfOpen { in_flight, .. } = &mut g.state {
                *in_flight = in_flight.saturating_sub(1);
            }
        }
    }
}

impl Breaker {
    pub(crate) fn new(opts: BreakerOptions, metrics: Arc<Metrics>) -> Self {
        Breaker { opts, inner: PerProcess::new(), metrics }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerInner> {
        let fresh = || {
            Mutex::new(BreakerInner {
                state: State::Closed,
                consecutive_failures: 0,
                recent: VecDeque::new(),
                slow: 0,
                health_running: false,
            })
        };
        self.inner.get_or(fresh).lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls in flight at once (BreakerOptions::max_in_flight).
    pub(crate) fn max_in_flight(&self) -> usize {
        self.opts.max_in_flight
    }

    /// Claims the health check: true if none runs yet (the caller starts it).
    pub(crate) fn claim_health_check(&self) -> bool {
        !std::mem::replace(&mut self.lock().health_running, true)
    }

    /// The health check stops (the breaker left Open).
    pub(crate) fn health_check_ended(&self) {
        self.lock().health_running = false;
    }

    pub(crate) fn state(&self) -> BreakerState {
        match self.lock().state {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn enter(&self, g: &mut BreakerInner, state: State) {
        let s = match state {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        };
        g.state = state;
        g.consecutive_failures = 0;
        g.recent.clear();
        g.slow = 0;
        self.metrics.breaker(s);
        match s {
            BreakerState::Open => tracing::warn!(
                breaker = "open",
                "Redis failing or slow: floodwall decides by its fallback policy until Redis answers again"
            ),
            BreakerState::HalfOpen => tracing::info!(breaker = "half_open", "probing Redis"),
            BreakerState::Closed => {
                tracing::info!(breaker = "closed", "Redis answers again: decisions return to Redis")
            }
        }
    }

    pub(crate) fn try_acquire(&self) -> Option<Permit<'_>> {
        let mut g = self.lock();
        if let State::Open { since } = g.state {
            if since.elapsed() >= Duration::from_millis(self.opts.open_ms) {
                self.enter(&mut g, State::HalfOpen { in_flight: 0, successes: 0 });
            }
        }
        match &mut g.state {
            State::Closed => Some(Permit { breaker: self, probe: false, done: false }),
            State::Open { .. } => None,
            State::HalfOpen { in_flight, successes } => {
                if *in_flight + *successes < self.opts.half_open_probes {
                    *in_flight += 1;
                    Some(Permit { breaker: self, probe: true, done: false })
                } else {
                    None
                }
            }
        }
    }

    /// Returns true when this verdict opened the breaker (the caller starts the health check).
    pub(crate) fn record(&self, permit: &mut Permit<'_>, ok: bool, slow: bool) -> bool {
        permit.done = true;
        let mut g = self.lock();
        match &mut g.state {
            State::HalfOpen { in_flight, successes } if permit.probe => {
                *in_flight = in_flight.saturating_sub(1);
                if !ok {
                    self.enter(&mut g, State::Open { since: Instant::now() });
                    return true;
                }
                *successes += 1;
                if *successes >= self.opts.half_open_probes {
                    self.enter(&mut g, State::Closed);
                }
                false
            }
            State::Closed => {
                if ok {
                    g.consecutive_failures = 0;
                } else {
                    g.consecutive_failures += 1;
                }
                g.recent.push_back(slow);
                g.slow += slow as usize;
                if g.recent.len() > self.opts.slow_call_window {
                    let old = g.recent.pop_front().unwrap_or(false);
                    g.slow -= old as usize;
                }
                let too_slow = g.recent.len() >= self.opts.slow_call_min_calls
                    && g.slow as f64 >= self.opts.slow_call_ratio * g.recent.len() as f64;
                if g.consecutive_failures >= self.opts.failure_threshold || too_slow {
                    self.enter(&mut g, State::Open { since: Instant::now() });
                    return true;
                }
                false
            }
            _ => false,
        }
    }

    /// Health check said Redis answers: let probes through without waiting out `open_ms`.
    pub(crate) fn healthy(&self) {
        let mut g = self.lock();
        if matches!(g.state, State::Open { .. }) {
            self.enter(&mut g, State::HalfOpen { in_flight: 0, successes: 0 });
        }
    }
}
