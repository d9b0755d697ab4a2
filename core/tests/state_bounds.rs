//! State from unique identities stays bounded in process: the embedded store and the local
//! fallback hold at most `max_identities`, and a flood of new identities cannot evict the state
//! of an identity that keeps sending (core/src/store/memory.rs, CLOCK eviction).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{limits, ALGORITHMS};
use floodwall::{Algorithm, FakeClock, FallbackMode, Limiter};

const T0: u64 = 1_728_000_000_000_000;

/// Bytes held by this test binary's heap: allocations minus frees, counted exactly.
struct Counting;
static HELD: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        HELD.fetch_add(l.size() as i64, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        HELD.fetch_sub(l.size() as i64, Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        HELD.fetch_add(new as i64 - l.size() as i64, Ordering::Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn memory_limiter(alg: Algorithm, specs: &[&str], clock: &FakeClock, cap: usize) -> Limiter {
    Limiter::builder(limits(specs)).algorithm(alg).clock(Arc::new(clock.clone())).max_identities(cap).build().unwrap()
}

/// The cap holds to within one entry per shard (64): each shard holds its share, rounded up.
fn bound(cap: usize) -> usize {
    cap.div_ceil(64) * 64
}

#[tokio::test]
async fn the_cap_holds_under_a_flood_of_new_identities() {
    for alg in ALGORITHMS {
        let clock = FakeClock::new(T0);
        // an hour-long window: nothing expires, so only the cap can bound the store
        let l = memory_limiter(alg, &["10/hour"], &clock, 1_000);
        for i in 0..50_000u64 {
            assert!(l.check(&format!("flood:{i}")).await.unwrap().allowed, "{alg}: a new identity is allowed");
            clock.advance(Duration::from_micros(10));
        }
        let held = l.memory_store().unwrap().len();
        assert!(held <= bound(1_000), "{alg}: {held} identities held, cap 1,000");
        assert!(held >= 900, "{alg}: only {held} held: the cap is not used");
    }
}

#[tokio::test]
async fn a_denied_identity_that_keeps_sending_stays_denied_while_a_flood_passes() {
    for alg in ALGORITHMS {
        let clock = FakeClock::new(T0);
        let l = memory_limiter(alg, &["5/hour"], &clock, 1_000);
        for _ in 0..5 {
            assert!(l.check("victim").await.unwrap().allowed);
        }
        assert!(!l.check("victim").await.unwrap().allowed, "{alg}: the 6th request is denied");
        // 100,000 new identities, 100 times the cap; the abuser keeps sending meanwhile
        for i in 0..100_000u64 {
            l.check(&format!("flood:{i}")).await.unwrap();
            clock.advance(Duration::from_micros(10));
            if i % 100 == 99 {
                let d = l.check("victim").await.unwrap();
                assert!(!d.allowed, "{alg}: the abuser regained its limit after {} flood identities", i + 1);
            }
        }
        assert!(l.memory_store().unwrap().len() <= bound(1_000), "{alg}");
    }
}

#[tokio::test]
async fn the_local_fallback_is_capped_too() {
    // nothing listens on port 1: every decision comes from the local fallback
    let clock = FakeClock::new(T0);
    let l = Limiter::builder(limits(&["5/hour"]))
        .redis_url("redis://127.0.0.1:1")
        .clock(Arc::new(clock.clone()))
        .fallback(FallbackMode::Local { expected_instances: 1 })
        .max_identities(500)
        .build()
        .unwrap();
    for _ in 0..5 {
        l.check("victim").await.unwrap();
    }
    for i in 0..20_000u64 {
        l.check(&format!("flood:{i}")).await.unwrap();
        if i % 50 == 49 {
            assert!(!l.check("victim").await.unwrap().allowed, "the abuser regained its limit in the fallback");
        }
    }
    let held = l.fallback_store().unwrap().len();
    assert!(held <= bound(500), "{held} identities in the fallback, cap 500");
}

#[test]
fn a_cap_of_zero_is_refused_by_name() {
    let e = Limiter::builder(limits(&["5/hour"])).max_identities(0).build().unwrap_err();
    assert!(e.to_string().contains("max_identities"), "{e}");
}

/// What one identity costs in process: the heap held by the store, divided by the identities,
/// measured by counting this binary's allocations. Prints the figure the default cap is sized by
/// (`DEFAULT_MAX_IDENTITIES`: about 20 MB at 200 bytes).
#[tokio::test]
async fn bytes_per_identity_stay_small() {
    const N: usize = 50_000;
    for (alg, specs) in [
        (Algorithm::SlidingWindow, &["10/hour"][..]),
        (Algorithm::SlidingWindow, &["5/second", "100/minute", "1000/hour"][..]),
        (Algorithm::TokenBucket, &["10/hour"][..]),
        (Algorithm::SlidingLog, &["10/hour"][..]),
    ] {
        let clock = FakeClock::new(T0);
        // room to spare: each shard holds its share of the cap, and hashing fills them unevenly
        let l = memory_limiter(alg, specs, &clock, 2 * N);
        let keys: Vec<String> = (0..N).map(|i| format!("user:{i:08}")).collect();
        let before = HELD.load(Ordering::Relaxed);
        for k in &keys {
            l.check(k).await.unwrap();
        }
        let per = (HELD.load(Ordering::Relaxed) - before) as f64 / N as f64;
        println!("{alg} {}: {per:.0} bytes per identity ({N} identities)", specs.join(","));
        assert_eq!(l.memory_store().unwrap().len(), N);
        let ceiling = if alg == Algorithm::SlidingLog { 450.0 } else { 350.0 };
        assert!(per < ceiling, "{alg} {specs:?}: {per:.0} bytes per identity");
        assert!(per * floodwall::DEFAULT_MAX_IDENTITIES as f64 <= 50e6, "the default cap would hold more than 50 MB");
    }
}
