//! The algorithms side by side on the same traffic: what a burst gets from each, and what the
//! sliding window admits across a window edge. README "Choosing an algorithm" and
//! docs/ARCHITECTURE.md point here for each claim they make.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{limits, ALGORITHMS};
use floodwall::{Algorithm, BatchItem, Decision, FakeClock, Limiter, Source};
use floodwall_testkit::RedisServer;
use proptest::prelude::*;

/// The start of a fixed window of every limit here (a whole second), so window edges fall at
/// known offsets.
const T0: u64 = 1_728_000_000_000_000;
const SECOND: u64 = 1_000_000;
/// A refill rate of 10 per second and a bucket of 50. The window algorithms ignore the burst:
/// for them this is "10/second".
const BURST_LIMIT: &str = "10/second burst 50";

/// What one algorithm did with a burst, the steady traffic after it and a second burst.
struct BurstRun {
    /// The first burst: 100 checks at T0, in order.
    burst: Vec<bool>,
    /// The first denial of that burst.
    first_denial: Decision,
    /// One check every 10 ms for 5 s after the burst (10x the rate): (µs after T0, allowed).
    steady: Vec<(u64, bool)>,
    /// Admitted of a second burst of 100, 10 s after the steady traffic ended.
    second_burst: usize,
}

impl BurstRun {
    /// Every admission with its time, the bursts' included.
    fn admitted_at(&self) -> Vec<u64> {
        let burst = self.burst.iter().filter(|a| **a).map(|_| 0);
        burst.chain(self.steady.iter().filter(|(_, a)| *a).map(|(t, _)| *t)).collect()
    }
    fn steady_admitted(&self) -> usize {
        self.steady.iter().filter(|(_, a)| *a).count()
    }
}

async fn burst_then_steady(l: &Limiter, clock: &FakeClock) -> BurstRun {
    clock.set_us(T0);
    let mut burst = Vec::new();
    let mut first_denial = None;
    for _ in 0..100 {
        let d = l.check("k").await.unwrap();
        burst.push(d.allowed);
        if !d.allowed && first_denial.is_none() {
            first_denial = Some(d);
        }
    }
    let mut steady = Vec::new();
    for i in 1..=500 {
        let t = i * 10_000;
        clock.set_us(T0 + t);
        steady.push((t, l.check("k").await.unwrap().allowed));
    }
    clock.set_us(T0 + 15 * SECOND);
    let mut second_burst = 0;
    for _ in 0..100 {
        second_burst += l.check("k").await.unwrap().allowed as usize;
    }
    BurstRun { burst, first_denial: first_denial.expect("the burst is larger than every limit"), steady, second_burst }
}

/// `n` trues then falses, `len` in all.
fn first(n: usize, len: usize) -> Vec<bool> {
    (0..len).map(|i| i < n).collect()
}

/// The checks that must hold of each algorithm's run, on either store.
fn assert_burst_handling(alg: Algorithm, run: &BurstRun, store: &str) {
    let ctx = format!("{alg} on {store}");
    let admitted = run.admitted_at();
    // per fixed one-second window (T0 is a window start)
    let per_window = |s: u64| admitted.iter().filter(|&&t| t / SECOND == s).count();
    // the most admitted in any half-open interval of one second
    let busiest_second =
        (0..admitted.len()).map(|i| admitted[i..].iter().take_while(|&&t| t < admitted[i] + SECOND).count()).max();
    match alg {
        Algorithm::TokenBucket => {
            // The whole bucket at once, then nothing more from the burst.
            assert_eq!(run.burst, first(50, 100), "{ctx}");
            // The next token is one emission interval (1 s / 10) away.
            assert_eq!(run.first_denial.retry_after, Some(Duration::from_millis(100)), "{ctx}");
            // Then the steady rate: exactly one every 100 ms, at the 100 ms marks.
            assert_eq!(run.steady_admitted(), 50, "{ctx}");
            assert!(run.steady.iter().all(|&(t, a)| a == (t % 100_000 == 0)), "{ctx}: {:?}", run.steady);
            // 5 times the per-window rate in the burst's second (50 + 9 refills).
            assert_eq!(per_window(0), 59, "{ctx}");
            // An idle bucket refills to its capacity, not beyond it.
            assert_eq!(run.second_burst, 50, "{ctx}");
        }
        Algorithm::SlidingWindow | Algorithm::SlidingLog => {
            // The per-window limit, whatever the bucket size says.
            assert_eq!(run.burst, first(10, 100), "{ctx}");
            // Not before the window has moved on: a full window for the log, whose oldest entry
            // leaves then, and 1.1 s for the weighted count, when the last window's 10 weigh 9.
            let wait = if alg == Algorithm::SlidingLog { 1000 } else { 1100 };
            assert_eq!(run.first_denial.retry_after, Some(Duration::from_millis(wait)), "{ctx}");
            for s in 0..6 {
                assert!(per_window(s) <= 10, "{ctx}: {} admitted in second {s}", per_window(s));
            }
            // Nothing more in the burst's own window: the steady traffic waits for the next one.
            assert_eq!(per_window(0), 10, "{ctx}");
            // Steady traffic still gets through window after window, below the limit.
            assert!((1..5).all(|s| per_window(s) >= 5), "{ctx}: {:?}", (0..6).map(per_window).collect::<Vec<_>>());
            assert_eq!(run.second_burst, 10, "{ctx}");
            if alg == Algorithm::SlidingLog {
                // exact: no interval of one window holds more than the limit
                assert_eq!(busiest_second, Some(10), "{ctx}");
            }
        }
    }
}

fn fake_clock_limiter(alg: Algorithm, specs: &[&str], clock: &FakeClock) -> Limiter {
    Limiter::builder(limits(specs)).algorithm(alg).clock(Arc::new(clock.clone())).build().unwrap()
}

#[tokio::test]
async fn burst_token_bucket_admits_its_bucket_then_its_rate_windows_hold_the_limit_on_memory() {
    for alg in ALGORITHMS {
        let clock = FakeClock::new(T0);
        let l = fake_clock_limiter(alg, &[BURST_LIMIT], &clock);
        let run = burst_then_steady(&l, &clock).await;
        assert_eq!(l.check("k").await.unwrap().source, Source::Memory);
        assert_burst_handling(alg, &run, "memory");
    }
}

/// The same timeline through the Lua scripts, with the scripts' clock driven by hand (as the
/// conformance scenarios run): the same answers as the embedded store.
#[tokio::test]
async fn burst_token_bucket_admits_its_bucket_then_its_rate_windows_hold_the_limit_on_redis_fake_clock() {
    let server = RedisServer::start();
    for alg in ALGORITHMS {
        let clock = FakeClock::new(T0);
        let b = Limiter::builder(limits(&[BURST_LIMIT])).algorithm(alg).clock(Arc::new(clock.clone()));
        let b = common::exact(b.redis_url(server.url()).redis_time_from_clock().prefix(common::unique_prefix("burst")));
        let l = b.build().unwrap();
        let run = burst_then_steady(&l, &clock).await;
        assert_eq!(l.check("k").await.unwrap().source, Source::Redis);
        assert_burst_handling(alg, &run, "redis");
    }
}

/// On Redis time, as in production. The burst goes out as one script call (decide_many, fewer
/// requests than a call holds), so all of it is decided at one Redis `TIME`: the counts cannot
/// depend on how fast this machine sends it.
#[tokio::test]
async fn burst_in_one_script_call_on_redis_time() {
    let server = RedisServer::start();
    for alg in ALGORITHMS {
        let l = common::redis_limiter(&server.url(), alg, &[BURST_LIMIT], &common::unique_prefix("burst-time"));
        let items = [BatchItem::new("k", 1, None); 60];
        let decisions: Vec<Decision> = l.decide_many(&items).await.into_iter().map(|d| d.unwrap()).collect();
        let ctx = format!("{alg}: {:?}", decisions.last());
        assert!(decisions.iter().all(|d| d.source == Source::Redis), "{ctx}");
        // one call, one Redis TIME: the premise of the counts below
        assert!(decisions.iter().all(|d| d.at_us == decisions[0].at_us), "{ctx}");
        let allowed: Vec<bool> = decisions.iter().map(|d| d.allowed).collect();
        let retry: Vec<Duration> = decisions.iter().filter_map(|d| d.retry_after).collect();
        match alg {
            Algorithm::TokenBucket => {
                assert_eq!(allowed, first(50, 60), "{ctx}");
                // at one instant every denial waits exactly one emission interval
                assert!(retry.iter().all(|r| *r == Duration::from_millis(100)), "{ctx}: {retry:?}");
            }
            Algorithm::SlidingWindow => {
                assert_eq!(allowed, first(10, 60), "{ctx}");
                // until the next window lets a tenth of this one's count go: more than 100 ms
                let ok = |r: &Duration| *r > Duration::from_millis(100) && *r <= Duration::from_millis(1100);
                assert!(retry.iter().all(ok), "{ctx}: {retry:?}");
            }
            Algorithm::SlidingLog => {
                assert_eq!(allowed, first(10, 60), "{ctx}");
                // the oldest entry, made at this very instant, leaves the log a window later
                assert!(retry.iter().all(|r| *r == Duration::from_secs(1)), "{ctx}: {retry:?}");
            }
        }
        assert_eq!(retry.len(), allowed.iter().filter(|a| !**a).count(), "{ctx}");
    }
}

/// The limit in each fixed window, but not in every interval of one window's length: a full
/// window's worth just before an edge, then the weighted previous count lets about one more in
/// for each tenth of the new window that passes. 2 x limit - 1 in one second; the log keeps 10.
#[tokio::test]
async fn sliding_window_admits_up_to_twice_its_limit_in_one_window_across_an_edge() {
    let mut busiest = Vec::new();
    for alg in ALGORITHMS {
        let clock = FakeClock::new(T0);
        let l = fake_clock_limiter(alg, &["10/second"], &clock);
        let mut admitted = Vec::new();
        // 10 at 0.999 s, the end of the first window
        clock.set_us(T0 + 999_000);
        for _ in 0..10 {
            if l.check("k").await.unwrap().allowed {
                admitted.push(999_000);
            }
        }
        // then one every millisecond until the interval [0.999 s, 1.999 s) ends
        for t in (1_000_000..1_999_000).step_by(1_000) {
            clock.set_us(T0 + t);
            if l.check("k").await.unwrap().allowed {
                admitted.push(t);
            }
        }
        let in_second = |s: u64| admitted.iter().filter(|&&t| t / SECOND == s).count();
        assert!(in_second(0) <= 10 && in_second(1) <= 10, "{alg}: {admitted:?}");
        busiest.push((alg, admitted.len()));
    }
    assert_eq!(
        busiest,
        [(Algorithm::SlidingWindow, 19), (Algorithm::SlidingLog, 10), (Algorithm::TokenBucket, 19)],
        "admitted in one second"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Fewer than twice the limit in any interval one window long, whatever the timeline and the
    /// costs: the interval meets two fixed windows, the earlier one's count `p` at most the limit,
    /// and an admission at `e` into the later one leaves its count at most limit - p(1 - e/w),
    /// so the two hold at most limit + p e/w < 2 x limit: 9 for "5/second".
    #[test]
    fn sliding_window_admits_under_twice_its_limit_in_any_window_long_interval(
        steps in prop::collection::vec((0u64..120_000, 1u64..=3), 1..300),
    ) {
        let clock = FakeClock::new(T0);
        let l = fake_clock_limiter(Algorithm::SlidingWindow, &["5/second"], &clock);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut admitted = Vec::new();
        let mut t = 0;
        for (dt, cost) in steps {
            t += dt;
            clock.set_us(T0 + t);
            if rt.block_on(l.check_n("k", cost)).unwrap().allowed {
                admitted.push((t, cost));
            }
        }
        for (i, (start, _)) in admitted.iter().enumerate() {
            let n: u64 = admitted[i..].iter().take_while(|(s, _)| *s < start + SECOND).map(|(_, c)| c).sum();
            prop_assert!(n <= 9, "{} admitted in the second from {} µs", n, start);
        }
    }
}
