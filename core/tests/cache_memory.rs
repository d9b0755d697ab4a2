//! What a cache entry really costs on the heap, against the weight the cache's cap counts it at:
//! its own binary so that a counting global allocator sees every allocation of the process.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};

use common::{exact, limits, unique_prefix};
use floodwall::{Algorithm, BreakerOptions, CacheOptions, Limiter};
use floodwall_testkit::RedisServer;

/// The system allocator, counting the bytes live in the process.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call goes to System with the caller's layout; only the count is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The count is the whole process's: one test measures at a time.
static MEASURING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Check each identity twice (a first sighting makes no entry), `denied` of them past their limit.
/// Identities go 100 at a time, so calls carry many (the warm-up fill grows every buffer first).
async fn fill(l: &Limiter, ids: std::ops::Range<u32>, denied: bool) {
    let ids: Vec<u32> = ids.collect();
    for chunk in ids.chunks(100) {
        futures::future::join_all(chunk.iter().map(|i| async move {
            let key = format!("tail-{i:06}");
            for _ in 0..if denied { 4 } else { 2 } {
                l.check(&key).await.unwrap();
            }
        }))
        .await;
    }
}

/// Live bytes, entries and weighted bytes once the cache has applied its pending work.
fn measure(l: &Limiter) -> (i64, i64, i64) {
    let s = l.cache_stats().unwrap();
    (LIVE.load(Ordering::Relaxed), s.entries as i64, s.weighted_bytes as i64)
}

/// Marginal heap bytes and weight per entry over entries made by `fill`: the cap is only a
/// bound on memory if an entry weighs at least what it takes (and not much more, or the cap
/// holds far fewer identities than it could).
#[tokio::test]
async fn an_entry_weighs_what_it_takes_on_the_heap() {
    let _alone = MEASURING.lock().await;
    let server = RedisServer::start();
    let breaker = BreakerOptions::default().slow_call_ms(60_000).failure_threshold(u32::MAX);
    for (specs, denied) in [
        (&["100/minute", "1000/hour"][..], false),
        (&["3/minute", "1000/hour"][..], true),
        (&["100/minute"][..], false),
    ] {
        let b = exact(
            Limiter::builder(limits(specs))
                .algorithm(Algorithm::SlidingWindow)
                .redis_url(server.url())
                .prefix(unique_prefix("entry-size")),
        );
        // entries must not idle out, nor first sightings be forgotten between an identity's two
        // checks, however slowly the machine fills the cache
        let opts = CacheOptions::default().leases(false).idle_ms(3_600_000).doorkeeper_ms(3_600_000);
        let l = b.breaker(breaker.clone()).cache(opts).build().unwrap();
        // warm up: connection, scripts, moka's tables at a size they keep through the second fill
        fill(&l, 0..3_000, denied).await;
        let (live0, n0, w0) = measure(&l);
        fill(&l, 3_000..9_000, denied).await;
        let (live1, n1, w1) = measure(&l);
        let entries = n1 - n0;
        assert!(entries >= 5_900, "entries made: {entries}");
        let (live, weight) = ((live1 - live0) / entries, (w1 - w0) / entries);
        println!("{specs:?} denied={denied}: {live} B live per entry, weighed at {weight} B");
        assert!(weight >= live, "{specs:?} denied={denied}: an entry takes {live} B but weighs {weight} B");
        assert!(weight <= live * 3 / 2, "{specs:?} denied={denied}: an entry takes {live} B but weighs {weight} B");
    }
}

/// `per_id` concurrent checks of each identity, 100 identities at a time: all but the first of an
/// identity's checks queue behind its call in flight.
async fn concurrently(l: &Limiter, ids: std::ops::Range<u32>, per_id: usize) {
    let ids: Vec<u32> = ids.collect();
    for chunk in ids.chunks(100) {
        futures::future::join_all(chunk.iter().flat_map(|i| {
            let key = format!("tail-{i:06}");
            (0..per_id).map(move |_| {
                let key = key.clone();
                async move { assert!(l.check(&key).await.unwrap().allowed) }
            })
        }))
        .await;
    }
}

/// Callers that queued behind an identity's call leave nothing in its entry: a queue's buffer
/// kept for life would be memory the cap does not count, growing as more identities see company.
#[tokio::test]
async fn coalesced_callers_leave_nothing_behind() {
    let _alone = MEASURING.lock().await;
    let server = RedisServer::start();
    let breaker = BreakerOptions::default().slow_call_ms(60_000).failure_threshold(u32::MAX);
    let b = exact(
        Limiter::builder(limits(&["100/minute", "1000/hour"]))
            .algorithm(Algorithm::SlidingWindow)
            .redis_url(server.url())
            .prefix(unique_prefix("queue-size")),
    );
    let opts = CacheOptions::default().leases(false).idle_ms(3_600_000).doorkeeper_ms(3_600_000);
    let l = b.breaker(breaker).cache(opts).build().unwrap();
    fill(&l, 0..6_000, false).await;
    // warm up whatever a round of queued callers grows once (the runtime's, the connection's)
    concurrently(&l, 0..1_000, 4).await;
    let (live0, n0, _) = measure(&l);
    concurrently(&l, 1_000..6_000, 4).await;
    let (live1, n1, _) = measure(&l);
    assert_eq!(n0, n1, "the round made or lost entries");
    let per_id = (live1 - live0) / 5_000;
    println!("{per_id} B more per identity after its callers queued");
    assert!(per_id < 16, "{per_id} B left behind per identity whose callers queued");
}
