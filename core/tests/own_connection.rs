//! `Limiter::own_connection` with `check_on` / `peek_on`: blocking callers, each on a
//! current-thread runtime of its own thread, share the limiter's counts exactly and its breaker.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::{exact, limits, redis_limiter, unique_prefix, ALGORITHMS};
use floodwall::{CacheOptions, CheckOptions, Limiter, Source};
use floodwall_testkit::RedisServer;

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

#[test]
fn threads_on_their_own_connections_admit_exactly_the_limit() {
    let server = RedisServer::start();
    let home = tokio::runtime::Runtime::new().expect("home runtime");
    for alg in ALGORITHMS {
        let limiter = redis_limiter(&server.url(), alg, &["100/hour"], &unique_prefix("own"));
        let admitted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (limiter, admitted, home) = (limiter.clone(), admitted.clone(), home.handle().clone());
                std::thread::spawn(move || {
                    let rt = current_thread();
                    let conn = limiter.own_connection(home).expect("a Redis limiter gives one").expect("valid");
                    for _ in 0..125 {
                        let d = rt.block_on(limiter.check_on(&conn, "hot", CheckOptions::default())).expect("check");
                        assert_eq!(d.source, Source::Redis);
                        admitted.fetch_add(d.allowed as u64, Ordering::Relaxed);
                    }
                    let peek = rt.block_on(limiter.peek_on(&conn, "hot", None)).expect("peek");
                    assert!(!peek.allowed && peek.remaining == 0, "{alg}: {peek:?}");
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(admitted.load(Ordering::Relaxed), 100, "{alg}");
        // The limiter's own metrics saw every decision, whichever connection made it.
        assert_eq!(limiter.metrics().snapshot().redis_calls, 8 * 126, "{alg}");
    }
}

#[test]
fn only_an_exact_redis_limiter_gives_a_connection() {
    let server = RedisServer::start();
    let home = tokio::runtime::Runtime::new().expect("home runtime");
    let memory = Limiter::in_memory(limits(&["5/second"])).expect("limiter");
    assert!(memory.own_connection(home.handle().clone()).is_none());
    let cached =
        exact(Limiter::builder(limits(&["5/second"])).redis_url(server.url()).prefix(unique_prefix("own-cache")))
            .cache(CacheOptions::default())
            .build()
            .expect("limiter");
    assert!(cached.own_connection(home.handle().clone()).is_none(), "a cache coalesces on the shared connection");
}
