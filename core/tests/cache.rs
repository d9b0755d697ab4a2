//! The local cache layer against real redis-servers: the denial cache never admits, coalesced
//! callers get their own answers, leases across 10 instances stay within limit + drift budget
//! and are given back, and the cache stays within its memory cap under a stream of identities.

mod common;

use std::time::{Duration, Instant};

use common::{exact, limits, unique_prefix};
use floodwall::{Algorithm, BreakerOptions, CacheOptions, Decision, Limiter, Source};
use floodwall_testkit::RedisServer;
use futures::future::join_all;

fn cached(url: &str, alg: Algorithm, specs: &[&str], prefix: &str, opts: CacheOptions) -> Limiter {
    // a loaded 2-core test machine makes calls slow; the breaker must not turn them into errors
    let breaker = BreakerOptions::default().slow_call_ms(60_000).failure_threshold(u32::MAX);
    exact(Limiter::builder(limits(specs)).algorithm(alg).redis_url(url).prefix(prefix))
        .breaker(breaker)
        .cache(opts)
        .build()
        .expect("limiter")
}

fn no_leases() -> CacheOptions {
    CacheOptions::default().leases(false)
}

fn admitted(ds: &[Decision]) -> u64 {
    ds.iter().filter(|d| d.allowed).count() as u64
}

#[tokio::test]
async fn denial_cache_never_admits_and_answers_locally() {
    let server = RedisServer::start();
    for alg in [Algorithm::SlidingWindow, Algorithm::SlidingLog, Algorithm::TokenBucket] {
        let prefix = unique_prefix("deny");
        let l = cached(&server.url(), alg, &["5/minute"], &prefix, no_leases());
        let mut ds = Vec::new();
        for _ in 0..60 {
            ds.push(l.check("k").await.unwrap());
        }
        assert_eq!(admitted(&ds), 5, "{alg}");
        assert!(ds[5..].iter().all(|d| !d.allowed && d.retry_after.is_some()), "{alg}");
        let from_cache = ds.iter().filter(|d| d.source == Source::Cache).count();
        assert!(from_cache >= 54, "{alg}: only {from_cache} answered by the cache");
        // Redis agrees nothing more was admitted
        let truth =
            exact(Limiter::builder(limits(&["5/minute"])).algorithm(alg).redis_url(server.url()).prefix(prefix))
                .build()
                .unwrap();
        assert_eq!(truth.peek("k").await.unwrap().remaining, 0, "{alg}");
        // a reset forgets the cached denial
        l.reset("k").await.unwrap();
        let d = l.check("k").await.unwrap();
        assert!(d.allowed && d.source == Source::Redis, "{alg}: {d:?}");
    }
}

#[tokio::test]
async fn a_denied_cost_does_not_deny_smaller_costs() {
    let server = RedisServer::start();
    for alg in [Algorithm::SlidingWindow, Algorithm::SlidingLog, Algorithm::TokenBucket] {
        let l = cached(&server.url(), alg, &["10/minute"], &unique_prefix("cost"), no_leases());
        assert!(l.check_n("k", 8).await.unwrap().allowed, "{alg}");
        let d = l.check_n("k", 5).await.unwrap();
        assert!(!d.allowed && d.source == Source::Redis, "{alg}: {d:?}");
        let d = l.check_n("k", 5).await.unwrap();
        assert!(!d.allowed && d.source == Source::Cache, "{alg}: {d:?}");
        let d = l.check_n("k", 7).await.unwrap();
        assert!(!d.allowed && d.source == Source::Cache, "{alg}: a larger cost is covered: {d:?}");
        let d = l.check_n("k", 2).await.unwrap();
        assert!(d.allowed && d.source == Source::Redis, "{alg}: cost 2 still fits: {d:?}");
        let d = l.check("k").await.unwrap();
        assert!(!d.allowed && d.source == Source::Redis, "{alg}: {d:?}");
        let d = l.check("k").await.unwrap();
        assert!(!d.allowed && d.source == Source::Cache, "{alg}: {d:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coalesced_callers_get_their_own_answers() {
    let server = RedisServer::start();
    for alg in [Algorithm::SlidingWindow, Algorithm::TokenBucket] {
        let l = cached(&server.url(), alg, &["100/hour"], &unique_prefix("coalesce"), no_leases());
        let ds: Vec<Decision> = join_all((0..300).map(|_| {
            let l = l.clone();
            tokio::spawn(async move { l.check("hot").await.unwrap() })
        }))
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
        assert_eq!(admitted(&ds), 100, "{alg}");
        // each admitted caller saw its own place in line: remaining 99, 98, ... 0, each once
        let mut rem: Vec<u64> = ds.iter().filter(|d| d.allowed).map(|d| d.remaining).collect();
        rem.sort_unstable();
        assert_eq!(rem, (0..100).collect::<Vec<_>>(), "{alg}");
        assert!(ds.iter().filter(|d| !d.allowed).all(|d| d.retry_after.is_some_and(|r| r > Duration::ZERO)), "{alg}");
        let calls = l.metrics().snapshot().redis_calls;
        assert!(calls < 150, "{alg}: {calls} Redis calls for 300 concurrent checks");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coalesced_costs_admit_in_order() {
    let server = RedisServer::start();
    let l = cached(&server.url(), Algorithm::SlidingWindow, &["10/hour"], &unique_prefix("costs"), no_leases());
    let ds: Vec<Decision> = join_all((0..40u64).map(|i| {
        let l = l.clone();
        tokio::spawn(async move { (i, l.check_n("k", 1 + i % 3).await.unwrap()) })
    }))
    .await
    .into_iter()
    .map(|r| r.unwrap().1)
    .collect();
    let consumed: u64 = ds.iter().zip(0..).filter(|(d, _)| d.allowed).map(|(_, i): (&Decision, u64)| 1 + i % 3).sum();
    assert!(consumed <= 10, "consumed {consumed} of 10");
    assert!(consumed >= 8, "consumed only {consumed} of 10: a cost ≤ 2 would still fit");
}

/// 1000 concurrent callers over 10 instances, each with its own connection and cache, on one
/// hot identity: admitted never passes limit + drift budget (plus what refills during the run).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_over_ten_instances_stay_within_limit_plus_drift() {
    let server = RedisServer::start();
    for alg in [Algorithm::SlidingWindow, Algorithm::TokenBucket] {
        let prefix = unique_prefix("lease10");
        let limit = 10_000u64;
        let budget = limit / 100;
        let instances: Vec<Limiter> =
            (0..10).map(|_| cached(&server.url(), alg, &["10000/hour"], &prefix, CacheOptions::default())).collect();
        let started = Instant::now();
        let results = join_all((0..1000).map(|c| {
            let l = instances[c % 10].clone();
            tokio::spawn(async move {
                let mut ds = Vec::new();
                for _ in 0..15 {
                    ds.push(l.check("hot").await.unwrap());
                }
                ds
            })
        }))
        .await;
        let elapsed = started.elapsed().as_secs_f64();
        let ds: Vec<Decision> = results.into_iter().flat_map(|r| r.unwrap()).collect();
        let got = admitted(&ds);
        let from_lease = ds.iter().filter(|d| d.source == Source::Lease).count();
        let first = ds.iter().map(|d| d.at_us).min().unwrap();
        let last = ds.iter().map(|d| d.at_us).max().unwrap();
        // what the limit itself lets through beyond `limit` during the run: a token bucket
        // refills; a sliding window that crosses into the next hour counts the previous one less
        let refill = match alg {
            Algorithm::TokenBucket => (elapsed * limit as f64 / 3600.0).ceil() as u64 + 1,
            _ if first / 3_600_000_000 != last / 3_600_000_000 => (limit as f64 * elapsed / 3600.0).ceil() as u64 + 1,
            _ => 0,
        };
        assert!(got <= limit + budget + refill, "{alg}: admitted {got} > {limit} + {budget} + {refill}");
        assert!(got + budget >= limit, "{alg}: admitted only {got}");
        assert!(from_lease > 0, "{alg}: no lease decisions");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_lease_permits_are_returned() {
    let server = RedisServer::start();
    for alg in [Algorithm::SlidingWindow, Algorithm::TokenBucket] {
        let prefix = unique_prefix("return");
        let l = cached(&server.url(), alg, &["100000/hour"], &prefix, CacheOptions::default().lease_ms(200));
        let started = Instant::now();
        for _ in 0..50 {
            assert!(l.check("k").await.unwrap().allowed);
        }
        let s = l.cache_stats().unwrap();
        assert!(s.leases_granted > 0, "{alg}: {s:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        // the next check finds the lease expired and gives its rest back
        assert!(l.check("k").await.unwrap().allowed);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let s = l.cache_stats().unwrap();
        assert!(s.permits_returned > 0, "{alg}: {s:?}");
        let truth =
            exact(Limiter::builder(limits(&["100000/hour"])).algorithm(alg).redis_url(server.url()).prefix(prefix))
                .build()
                .unwrap();
        let held = truth.peek("k").await.unwrap();
        let counted = 100_000 - held.remaining;
        // Redis counts what was admitted plus any lease still out, nothing else
        let outstanding = s.permits_leased - s.permits_returned;
        // a token bucket refills 100000/hour meanwhile
        let refill = if alg == Algorithm::TokenBucket {
            (started.elapsed().as_secs_f64() * 100_000.0 / 3600.0).ceil() as u64 + 1
        } else {
            0
        };
        assert!(counted + refill >= 51, "{alg}: {counted} + refill {refill}");
        assert!(
            counted <= 51 + outstanding + 1,
            "{alg}: Redis holds {counted}, admitted 51, outstanding {outstanding}: {s:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_of_an_evicted_entry_is_returned() {
    let server = RedisServer::start();
    for alg in [Algorithm::SlidingWindow, Algorithm::TokenBucket] {
        let prefix = unique_prefix("evicted");
        // the entry idles out long before its lease would expire
        let l =
            cached(&server.url(), alg, &["100000/hour"], &prefix, CacheOptions::default().lease_ms(500).idle_ms(50));
        let started = Instant::now();
        for _ in 0..50 {
            assert!(l.check("k").await.unwrap().allowed);
        }
        assert!(l.cache_stats().unwrap().leases_granted > 0, "{alg}");
        // let the entry idle out (time passing is what is tested here); stats apply the eviction
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(l.cache_stats().unwrap().entries, 0, "{alg}: the entry was not evicted");
        // the next check, of any identity, gives the evicted lease back
        assert!(l.check("other").await.unwrap().allowed);
        let deadline = Instant::now() + Duration::from_secs(5);
        while l.cache_stats().unwrap().permits_returned == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let s = l.cache_stats().unwrap();
        assert!(s.permits_returned > 0, "{alg}: {s:?}");
        // nothing is left out: Redis counts what was admitted (a token bucket refills meanwhile)
        let truth =
            exact(Limiter::builder(limits(&["100000/hour"])).algorithm(alg).redis_url(server.url()).prefix(prefix))
                .build()
                .unwrap();
        let counted = 100_000 - truth.peek("k").await.unwrap().remaining;
        let refill = if alg == Algorithm::TokenBucket {
            (started.elapsed().as_secs_f64() * 100_000.0 / 3600.0).ceil() as u64 + 1
        } else {
            0
        };
        assert!(
            counted <= 50 && counted + refill >= 50,
            "{alg}: Redis holds {counted} for 50 admitted (refill {refill}): {s:?}"
        );
    }
}

#[tokio::test]
async fn a_lease_that_expires_little_used_pauses_leasing_for_that_identity() {
    // an identity seen a few times per lease lifetime is not hot: leasing it costs a heavier call
    // and a return call per lease and saves fewer calls than that, so after a lease expires
    // having served fewer than 4 callers, the next calls go without
    let server = RedisServer::start();
    for alg in [Algorithm::SlidingWindow, Algorithm::TokenBucket] {
        for used in [0, 2] {
            let l = cached(
                &server.url(),
                alg,
                &["100000/hour"],
                &unique_prefix("cool"),
                CacheOptions::default().lease_ms(100),
            );
            // back-to-back calls (past the doorkeeper, within a lease lifetime): hot, a lease is taken
            for _ in 0..5 {
                if l.cache_stats().unwrap().leases_granted > 0 {
                    break;
                }
                l.check("k").await.unwrap();
            }
            assert_eq!(l.cache_stats().unwrap().leases_granted, 1, "{alg}");
            for _ in 0..used {
                assert_eq!(l.check("k").await.unwrap().source, Source::Lease, "{alg}");
            }
            // let the lease expire (time passing is what is tested here)
            tokio::time::sleep(Duration::from_millis(150)).await;
            for i in 0..6 {
                let d = l.check("k").await.unwrap();
                assert_eq!(d.source, Source::Redis, "{alg}, {used} used: call {i} after the lease");
            }
            assert_eq!(l.cache_stats().unwrap().leases_granted, 1, "{alg}, {used} used: no lease while cooling down");
            for _ in 0..10 {
                l.check("k").await.unwrap();
            }
            assert!(
                l.cache_stats().unwrap().leases_granted > 1,
                "{alg}, {used} used: still hot after the pause, leasing resumes"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_cap_holds_under_new_identities() {
    let server = RedisServer::start();
    let cap = 256 * 1024;
    let l = cached(
        &server.url(),
        Algorithm::SlidingWindow,
        &["100/minute"],
        &unique_prefix("cap"),
        // first sightings remembered through the whole fill, however slow the machine
        CacheOptions::default().max_bytes(cap).doorkeeper_ms(3_600_000),
    );
    for chunk in 0..40 {
        join_all((0..500).map(|i| {
            let l = l.clone();
            // twice: a first sighting makes no entry (the doorkeeper), the second does
            tokio::spawn(async move {
                l.check(&format!("user:{chunk}:{i}")).await.unwrap();
                l.check(&format!("user:{chunk}:{i}")).await.unwrap()
            })
        }))
        .await;
    }
    let s = l.cache_stats().unwrap();
    assert!(s.weighted_bytes <= cap, "{s:?}");
    assert!(s.entries > 100 && s.entries < 20_000, "{s:?}");
}

#[path = "../../benches/src/workloads.rs"]
#[allow(dead_code)]
mod workloads;

/// The bench's workloads, small: 10 instances, 100 concurrent callers; per identity, admitted
/// stays within max(1, drift budget) of the exact algorithm replayed on the recorded Redis times.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workloads_at_small_scale_match_the_exact_oracle() {
    use std::collections::HashMap;
    use std::sync::Arc;

    use floodwall::FakeClock;
    use workloads::{key, Rng};

    let server = RedisServer::start();
    for w in workloads::ALL {
        let w = w.scaled(100);
        let prefix = unique_prefix("workload");
        let instances: Vec<Limiter> = (0..10)
            .map(|_| cached(&server.url(), Algorithm::SlidingWindow, w.limits, &prefix, CacheOptions::default()))
            .collect();
        let results = join_all((0..100u64).map(|c| {
            let l = instances[c as usize % 10].clone();
            tokio::spawn(async move {
                let mut rng = Rng::new(c + 1);
                let mut rec = Vec::new();
                for _ in 0..50 {
                    let id = w.next_identity(&mut rng);
                    let d = l.check(&key(id)).await.unwrap();
                    rec.push((id, d.at_us, d.allowed));
                }
                rec
            })
        }))
        .await;
        let mut rec: Vec<(u64, u64, bool)> = results.into_iter().flat_map(|r| r.unwrap()).collect();
        rec.sort_by_key(|r| r.1);
        let clock = Arc::new(FakeClock::new(rec[0].1));
        let oracle = Limiter::builder(limits(w.limits)).clock(clock.clone()).build().unwrap();
        let mut per: HashMap<u64, (i64, i64)> = HashMap::new();
        for &(id, at, allowed) in &rec {
            clock.set_us(at);
            let e = per.entry(id).or_default();
            e.0 += oracle.check(&key(id)).await.unwrap().allowed as i64;
            e.1 += allowed as i64;
        }
        let smallest = limits(w.limits).iter().map(|l| l.max()).min().unwrap();
        let tolerance = ((smallest as f64 * 0.01).floor() as i64).max(1);
        for (id, (o, s)) in per {
            assert!((s - o).abs() <= tolerance, "{}: identity {id} admitted {s}, oracle {o}", w.name);
        }
    }
}
