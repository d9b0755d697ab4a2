//! Shared by the core's integration tests: limiter construction against a harness redis-server.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use floodwall::{Algorithm, BreakerOptions, FallbackMode, Limit, Limiter, LimiterBuilder};

pub const ALGORITHMS: [Algorithm; 3] = [Algorithm::SlidingWindow, Algorithm::SlidingLog, Algorithm::TokenBucket];

pub fn limits(specs: &[&str]) -> Vec<Limit> {
    floodwall::parse_limits(specs).expect("valid limits")
}

/// A prefix no other test (or run) shares, so tests never see each other's keys.
pub fn unique_prefix(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("t-{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Exactness tests: a deadline no healthy loopback Redis misses, no breaker opening because a
/// loaded test machine made calls slow, and errors instead of a fallback: every decision shown
/// came from Redis.
pub fn exact(b: LimiterBuilder) -> LimiterBuilder {
    b.timeout(Duration::from_secs(5))
        .fallback(FallbackMode::Error)
        .breaker(BreakerOptions::default().slow_call_ms(60_000).failure_threshold(u32::MAX))
}

pub fn redis_limiter(url: &str, algorithm: Algorithm, specs: &[&str], prefix: &str) -> Limiter {
    exact(Limiter::builder(limits(specs)).algorithm(algorithm).redis_url(url).prefix(prefix)).build().expect("limiter")
}
