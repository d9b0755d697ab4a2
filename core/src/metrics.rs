//! Every number the limiter keeps about itself, in one place: decisions by source and result
//! (allowed, denied, or denied by a shadow rule that let the request through), Redis calls, errors and latency, breaker state and transitions, clock offset. Lock-free
//! counters; the telemetry layer reads `snapshot()` and renders Prometheus text from it.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::Duration;

use crate::decision::Source;

/// Upper bounds (µs) of the Redis latency histogram buckets; the last bucket is +Inf.
pub const LATENCY_BUCKETS_US: [u64; 12] =
    [100, 250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 500_000, 1_000_000];

const SOURCES: [Source; 5] = [Source::Redis, Source::Memory, Source::Cache, Source::Lease, Source::Fallback];

/// Circuit breaker states, as stored in the gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BreakerState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl BreakerState {
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
    fn from_u8(v: u8) -> Self {
        match v {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    /// [source][allowed as usize]
    decisions: [[AtomicU64; 2]; 5],
    /// [source]: denials of shadow checks, which the caller did not enforce.
    shadow_denied: [AtomicU64; 5],
    redis_calls: AtomicU64,
    redis_errors: AtomicU64,
    redis_timeouts: AtomicU64,
    redis_rejected_open: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_us: AtomicU64,
    breaker_state: AtomicU8,
    /// transitions into [closed, open, half_open]
    breaker_transitions: [AtomicU64; 3],
    clock_offset_us: AtomicI64,
}

/// A consistent-enough copy of the counters (each read is atomic; the set is not).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// (source, allowed, count); a shadow check's denial is counted in `shadow_denied` instead.
    pub decisions: Vec<(Source, bool, u64)>,
    /// (source, count) of shadow checks that would have denied (`result="shadow_denied"`).
    pub shadow_denied: Vec<(Source, u64)>,
    pub redis_calls: u64,
    pub redis_errors: u64,
    pub redis_timeouts: u64,
    /// Calls not sent because the breaker was open.
    pub redis_rejected_open: u64,
    /// Cumulative counts per bucket of `LATENCY_BUCKETS_US`, then +Inf.
    pub latency_cumulative: Vec<u64>,
    pub latency_sum_us: u64,
    pub breaker_state: Option<&'static str>,
    /// (state entered, count)
    pub breaker_transitions: Vec<(&'static str, u64)>,
    pub clock_offset_us: i64,
}

impl MetricsSnapshot {
    /// Every decision from `source`, shadow denials included.
    pub fn decisions_from(&self, source: Source) -> u64 {
        self.decisions.iter().filter(|(s, _, _)| *s == source).map(|(_, _, n)| n).sum::<u64>()
            + self.shadow_denied.iter().filter(|(s, _)| *s == source).map(|(_, n)| n).sum::<u64>()
    }

    /// Shadow checks that would have denied, from every source.
    pub fn shadow_denied_total(&self) -> u64 {
        self.shadow_denied.iter().map(|(_, n)| n).sum()
    }
}

fn source_index(s: Source) -> usize {
    SOURCES.iter().position(|x| *x == s).unwrap_or(0)
}

impl Metrics {
    pub(crate) fn decision(&self, source: Source, allowed: bool) {
        self.decisions[source_index(source)][allowed as usize].fetch_add(1, Relaxed);
    }

    /// A shadow check: an admission counts as any other; a denial as `shadow_denied`, not as a
    /// denial, since nobody was turned away.
    pub(crate) fn shadow_decision(&self, source: Source, allowed: bool) {
        if allowed {
            self.decision(source, true);
        } else {
            self.shadow_denied[source_index(source)].fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn redis_call(&self, elapsed: Duration, ok: bool, timed_out: bool) {
        self.redis_calls.fetch_add(1, Relaxed);
        if !ok {
            self.redis_errors.fetch_add(1, Relaxed);
        }
        if timed_out {
            self.redis_timeouts.fetch_add(1, Relaxed);
        }
        let us = elapsed.as_micros() as u64;
        let i = LATENCY_BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency_buckets[i].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(us, Relaxed);
    }

    pub(crate) fn rejected_open(&self) {
        self.redis_rejected_open.fetch_add(1, Relaxed);
    }

    pub(crate) fn breaker(&self, state: BreakerState) {
        self.breaker_state.store(state as u8, Relaxed);
        self.breaker_transitions[state as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn clock_offset(&self, us: i64) {
        self.clock_offset_us.store(us, Relaxed);
    }

    pub fn breaker_state(&self) -> BreakerState {
        BreakerState::from_u8(self.breaker_state.load(Relaxed))
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut decisions = Vec::new();
        for (i, s) in SOURCES.iter().enumerate() {
            for allowed in [false, true] {
                decisions.push((*s, allowed, self.decisions[i][allowed as usize].load(Relaxed)));
            }
        }
        let mut acc = 0;
        let latency_cumulative = self
            .latency_buckets
            .iter()
            .map(|b| {
                acc += b.load(Relaxed);
                acc
            })
            .collect();
        MetricsSnapshot {
            decisions,
            shadow_denied: SOURCES.iter().enumerate().map(|(i, s)| (*s, self.shadow_denied[i].load(Relaxed))).collect(),
            redis_calls: self.redis_calls.load(Relaxed),
            redis_errors: self.redis_errors.load(Relaxed),
            redis_timeouts: self.redis_timeouts.load(Relaxed),
            redis_rejected_open: self.redis_rejected_open.load(Relaxed),
            latency_cumulative,
            latency_sum_us: self.latency_sum_us.load(Relaxed),
            breaker_state: Some(self.breaker_state().as_str()),
            breaker_transitions: [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen]
                .iter()
                .map(|s| (s.as_str(), self.breaker_transitions[*s as usize].load(Relaxed)))
                .collect(),
            clock_offset_us: self.clock_offset_us.load(Relaxed),
        }
    }
}
