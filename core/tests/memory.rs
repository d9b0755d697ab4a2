//! The embedded store on a fake clock: exact decisions, bounded memory, and the algorithms'
//! guarantees checked as properties over random timelines (governor's proptest style).

mod common;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use common::{limits, ALGORITHMS};
use floodwall::{parse_limits, Algorithm, FakeClock, Limiter, Source};
use proptest::prelude::*;

const T0: u64 = 1_728_000_000_000_000;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

fn limiter(alg: Algorithm, specs: &[&str], clock: &FakeClock) -> Limiter {
    Limiter::builder(limits(specs)).algorithm(alg).clock(Arc::new(clock.clone())).build().unwrap()
}

#[tokio::test]
async fn basic_on_memory() {
    for alg in ALGORITHMS {
        let clock = FakeClock::new(T0);
        let l = limiter(alg, &["5/second"], &clock);
        let mut allowed = vec![];
        for _ in 0..10 {
            let d = l.check("a").await.unwrap();
            assert_eq!(d.source, Source::Memory);
            allowed.push(d.allowed);
            clock.advance(Duration::from_millis(1));
        }
        assert_eq!(allowed.iter().filter(|a| **a).count(), 5, "{alg}");
        assert!(allowed[..5].iter().all(|a| *a), "{alg}");
    }
}

#[tokio::test]
async fn a_stream_of_new_identities_does_not_grow_the_map_without_bound() {
    for alg in ALGORITHMS {
        let clock = FakeClock::new(T0);
        let l = Limiter::builder(limits(&["10/second"])).algorithm(alg).clock(Arc::new(clock.clone())).build().unwrap();
        let mut peak = 0;
        for i in 0..200_000u64 {
            l.check(&format!("visitor:{i}")).await.unwrap();
            clock.advance(Duration::from_micros(100)); // 10,000 new identities per second
            if i % 10_000 == 0 {
                peak = peak.max(memory_len(&l));
            }
        }
        // Live state is at most ~2 windows of arrivals (20,000 identities); sweeps keep it near.
        assert!(peak < 60_000, "{alg}: {peak} entries after 200,000 identities");
    }
}

fn memory_len(l: &Limiter) -> usize {
    l.memory_store().map(|m| m.len()).unwrap_or(0)
}

/// Replays a timeline (µs offsets and costs) through a limiter and returns what was admitted.
fn admitted(alg: Algorithm, specs: &[&str], steps: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let clock = FakeClock::new(T0);
    let l = limiter(alg, specs, &clock);
    block_on(async {
        let mut out = vec![];
        let mut t = 0;
        for &(dt, cost) in steps {
            t += dt;
            clock.set_us(T0 + t);
            if l.check_n("k", cost).await.unwrap().allowed {
                out.push((t, cost));
            }
        }
        out
    })
}

fn timeline() -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec((0u64..120_000, 1u64..=3), 1..300)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Exact log: no interval of one window ever holds more than the limit.
    #[test]
    fn sliding_log_never_exceeds_in_any_window(steps in timeline()) {
        let got = admitted(Algorithm::SlidingLog, &["5/second"], &steps);
        let mut win: VecDeque<(u64, u64)> = VecDeque::new();
        let mut sum = 0;
        for (t, c) in got {
            while win.front().is_some_and(|&(s, _)| s + 1_000_000 <= t) {
                sum -= win.pop_front().unwrap().1;
            }
            win.push_back((t, c));
            sum += c;
            prop_assert!(sum <= 5, "{} in one window at {}", sum, t);
        }
    }

    /// Sliding window counter: each fixed window holds at most the limit (est >= current count),
    /// and any sliding interval of one window at most twice it.
    #[test]
    fn sliding_window_bounds(steps in timeline()) {
        let got = admitted(Algorithm::SlidingWindow, &["5/second"], &steps);
        let mut per_fixed = std::collections::HashMap::new();
        for (t, c) in &got {
            *per_fixed.entry((T0 + t) / 1_000_000).or_insert(0) += c;
        }
        prop_assert!(per_fixed.values().all(|&n| n <= 5), "{:?}", per_fixed);
        for (i, (t, _)) in got.iter().enumerate() {
            let n: u64 = got[i..].iter().take_while(|(s, _)| *s < t + 1_000_000).map(|(_, c)| c).sum();
            prop_assert!(n <= 10);
        }
    }

    /// GCRA: over any interval d, admitted <= burst + d / T.
    #[test]
    fn token_bucket_never_exceeds_rate_plus_burst(steps in timeline()) {
        let got = admitted(Algorithm::TokenBucket, &["5/second"], &steps);
        for i in 0..got.len() {
            let mut n = 0;
            for (t, c) in &got[i..] {
                n += c;
                let d = t - got[i].0;
                prop_assert!(n <= 5 + d / 200_000, "{} admitted in {} µs", n, d);
            }
        }
    }

    /// A denied request consumes nothing, and waiting retry_after is enough (exact algorithms).
    #[test]
    fn denial_consumes_nothing_and_retry_after_suffices(steps in timeline(), alg_i in 0usize..3) {
        let alg = ALGORITHMS[alg_i];
        let clock = FakeClock::new(T0);
        let l = limiter(alg, &["5/second", "12/5s"], &clock);
        block_on(async {
            let mut t = 0;
            for &(dt, cost) in &steps {
                t += dt;
                clock.set_us(T0 + t);
                let before = l.peek("k").await.unwrap();
                let d = l.check_n("k", cost).await.unwrap();
                if !d.allowed {
                    let after = l.peek("k").await.unwrap();
                    prop_assert_eq!(&before, &after);
                    let wait = d.retry_after.unwrap();
                    clock.set_us(T0 + t + wait.as_micros() as u64);
                    let again = l.peek("k").await.unwrap();
                    if cost == 1 {
                        prop_assert!(again.allowed, "{:?} then {:?}", d, again);
                    }
                    clock.set_us(T0 + t);
                }
            }
            Ok(())
        })?;
    }
}

#[test]
fn more_limits_than_one_limiter_checks_are_refused_naming_them() {
    let specs: Vec<String> = (1..=9).map(|i| format!("{}/{i}s", 10 * i)).collect();
    let err = Limiter::builder(parse_limits(&specs).unwrap()).build().unwrap_err();
    assert_eq!(err.kind(), floodwall::ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("90/9s") && err.to_string().contains("at most 8"), "{err}");
    assert!(Limiter::builder(parse_limits(&specs[..8]).unwrap()).build().is_ok());
}

#[test]
fn bad_cache_options_are_refused_on_the_embedded_store_too() {
    let opts = floodwall::CacheOptions::default().lease_ms(50);
    let err = Limiter::builder(parse_limits(&["5/second"]).unwrap()).cache(opts).build().unwrap_err();
    assert!(err.to_string().contains("cache.lease_ms") && err.to_string().contains("50"), "{err}");
}
