//! Parity of the batch scripts with their twins, on a harness redis-server with a scripted clock:
//! random batches of costs, random lease requests, time moving on; every per-caller outcome and
//! every lease size must agree. Also when a lease is asked for at all.

use std::sync::Arc;

use floodwall_testkit::RedisServer;

use super::twin;
use crate::algorithm::{Algorithm, Outcome, StateReply, SwState};
use crate::clock::FakeClock;
use crate::limit::Limit;
use crate::store::{RedisOptions, RedisStore};

const T0: u64 = 1_728_000_000_000_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One batch script call: the answers (via the twin, from the state the script read and the
/// decisions it made), permits granted, lease marks, and the raw state the script read.
#[allow(clippy::too_many_arguments)]
async fn run_batch(
    store: &RedisStore,
    alg: Algorithm,
    id: &str,
    limits: &[Limit],
    costs: &[u64],
    want: u64,
    budget: u64,
    member: &str,
) -> (Vec<Outcome>, u64, Vec<u64>, Vec<i64>) {
    let lease = crate::scripts::LeaseAsk { want, lifetime_us: 300_000, budget, member, release: "" };
    let inv = crate::scripts::batch_invocation(alg, limits, &keys(alg, id, limits), costs, &lease, &store.now_arg());
    let reply: Vec<i64> = store.invoke(&inv).await.expect("script");
    let m = costs.len();
    let read = StateReply { now_us: reply[1] as u64, state: &reply[2 + m..] };
    let allowed: Vec<bool> = reply[2..2 + m].iter().map(|&a| a == 1).collect();
    let (outs, marks) = twin::apply_batch(alg, &read, limits, costs, &allowed, reply[0] as u64);
    (outs, reply[0] as u64, marks, reply[2 + m..].to_vec())
}

/// The identity's keys as limiters of `limits` lay them out.
fn keys(alg: Algorithm, id: &str, limits: &[Limit]) -> Vec<String> {
    crate::keys::KeyLayout::new("cache-test").unwrap().keys(id, alg, limits).unwrap()
}

/// The state the twin holds, laid out as the scripts store it (empty for a new identity).
fn stored(sw: &[Option<SwState>], tb: &[Option<u64>], alg: Algorithm) -> Vec<i64> {
    match alg {
        Algorithm::TokenBucket => tb.iter().flatten().map(|&t| t as i64).collect(),
        _ => sw.iter().flatten().flat_map(|s| [s.idx as i64, s.prev as i64, s.curr as i64]).collect(),
    }
}

#[tokio::test]
async fn batch_scripts_match_their_twins() {
    let server = RedisServer::start();
    let clock = Arc::new(FakeClock::new(T0));
    let store = RedisStore::with_test_clock(RedisOptions::new(server.url()), clock.clone()).unwrap();
    for (alg, specs) in [
        (Algorithm::SlidingWindow, vec!["50/second", "400/minute"]),
        (Algorithm::SlidingWindow, vec!["1000/second"]),
        (Algorithm::TokenBucket, vec!["50/second", "400/minute"]),
        (Algorithm::TokenBucket, vec!["1000/second"]),
    ] {
        let limits = crate::parse_limits(&specs).unwrap();
        let key = format!("parity:{alg}{}", specs.len());
        let mut sw: Vec<Option<SwState>> = vec![None; limits.len()];
        let mut tb: Vec<Option<u64>> = vec![None; limits.len()];
        // leases outstanding in the twin: (expiry, size)
        let mut leases: Vec<(u64, u64)> = Vec::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut now = T0;
        for step in 0..400 {
            now += rng.next(40_000);
            clock.set_us(now);
            let m = 1 + rng.next(6) as usize;
            let costs: Vec<u64> = (0..m).map(|_| 1 + rng.next(4)).collect();
            let want = if rng.next(3) == 0 { 0 } else { 1 + rng.next(40) };
            let budget = [0, 4, 10, 25][rng.next(4) as usize];
            leases.retain(|(exp, _)| *exp > now);
            let outstanding: u64 = leases.iter().map(|(_, k)| k).sum();
            let before = stored(&sw, &tb, alg);
            let (want_outs, want_granted) = match alg {
                Algorithm::TokenBucket => {
                    twin::token_bucket_batch(&mut tb, &limits, now, &costs, want, budget, outstanding)
                }
                _ => twin::sliding_window_batch(&mut sw, &limits, now, &costs, want, budget, outstanding),
            };
            if want_granted > 0 {
                leases.push((now + 300_000, want_granted));
            }
            let (outs, granted, _, read) =
                run_batch(&store, alg, &key, &limits, &costs, want, budget, &format!("m{step}")).await;
            // what the script stored last time is what the twin holds (a key past its TTL reads empty)
            if !read.is_empty() {
                assert_eq!(read, before, "{alg} {specs:?} step {step}: stored state");
            }
            assert_eq!(outs, want_outs, "{alg} {specs:?} step {step} costs {costs:?}");
            assert_eq!(granted, want_granted, "{alg} {specs:?} step {step}: lease");
        }
    }
}

#[tokio::test]
async fn a_batch_of_ones_is_the_single_script_called_in_order() {
    // the batch of m unit costs answers as m single calls would: remaining counts down
    let server = RedisServer::start();
    let clock = Arc::new(FakeClock::new(T0));
    let store = RedisStore::with_test_clock(RedisOptions::new(server.url()), clock.clone()).unwrap();
    let limits = crate::parse_limits(&["5/second"]).unwrap();
    for alg in [Algorithm::SlidingWindow, Algorithm::TokenBucket] {
        let key = format!("ones:{alg}");
        let (outs, granted, _, _) = run_batch(&store, alg, &key, &limits, &[1, 1, 1, 1, 1, 1, 1], 0, 0, "x").await;
        let allowed: Vec<bool> = outs.iter().map(|o| o.allowed).collect();
        let remaining: Vec<u64> = outs.iter().map(|o| o.windows[0].remaining).collect();
        assert_eq!(allowed, [true, true, true, true, true, false, false], "{alg}");
        assert_eq!(remaining, [4, 3, 2, 1, 0, 0, 0], "{alg}");
        assert!(outs[5].windows[0].retry_after_us > 0, "{alg}");
        assert_eq!(granted, 0);
    }
}

#[tokio::test]
async fn returned_permits_count_again() {
    let server = RedisServer::start();
    let clock = Arc::new(FakeClock::new(T0 + 10_000));
    let store = RedisStore::with_test_clock(RedisOptions::new(server.url()), clock.clone()).unwrap();
    let limits = crate::parse_limits(&["1000/minute"]).unwrap();
    for alg in [Algorithm::SlidingWindow, Algorithm::TokenBucket] {
        let key = format!("ret:{alg}");
        let (_, granted, marks, _) = run_batch(&store, alg, &key, &limits, &[1], 8, 10, "L").await;
        assert_eq!(granted, 8, "{alg}");
        let (outs, _, _, _) = run_batch(&store, alg, &key, &[limits[0]], &[1], 0, 10, "-").await;
        assert_eq!(outs[0].windows[0].remaining, 1000 - 10, "{alg}: the lease counts as consumed");
        // give back 5 of the 8
        let keys = keys(alg, &key, &limits);
        let unused = crate::scripts::LeaseReturn { keys: &keys, unused: 5, member: "L:8", marks: &marks };
        let inv = crate::scripts::return_invocation(alg, &limits, &unused, &store.now_arg());
        let back: Vec<i64> = store.invoke(&inv).await.unwrap();
        assert_eq!(back, vec![5], "{alg}");
        let (outs, _, _, _) = run_batch(&store, alg, &key, &limits, &[1], 0, 10, "-").await;
        assert_eq!(outs[0].windows[0].remaining, 1000 - 6, "{alg}: five permits back");
    }
}

#[test]
fn options_default_from_an_empty_object_and_are_validated() {
    let o: super::CacheOptions = serde_json::from_str("{}").unwrap();
    assert_eq!(o, super::CacheOptions::default());
    let o: super::CacheOptions = serde_json::from_str(r#"{"lease_ms": 400, "drift_ratio": 0.005}"#).unwrap();
    assert_eq!((o.lease_ms, o.drift_ratio, o.leases), (400, 0.005, true));
    assert!(serde_json::from_str::<super::CacheOptions>(r#"{"lease": 1}"#).is_err(), "unknown fields are refused");
    for bad in [
        r#"{"lease_ms": 50}"#,
        r#"{"batch_window_us": 501}"#,
        r#"{"drift_ratio": 0.5}"#,
        r#"{"max_bytes": 10}"#,
        r#"{"doorkeeper_ms": 10}"#,
    ] {
        let o: super::CacheOptions = serde_json::from_str(bad).unwrap();
        let e = super::LocalCache::new(o, 1).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Config, "{bad}: {e}");
    }
}

#[test]
fn the_doorkeeper_remembers_a_sighting_for_one_period() {
    let d = super::identity::Doorkeeper::new(1_000);
    let (a, b) = (7u128 << 64, 8u128 << 64); // the doorkeeper hashes the high half
    assert!(d.first_sighting_at(a, 0));
    assert!(!d.first_sighting_at(a, 999), "seen within the period");
    assert!(d.first_sighting_at(b, 999));
    assert!(d.first_sighting_at(a, 1_000), "forgotten once the period passed");
    assert!(!d.first_sighting_at(a, 1_500));
    assert!(d.first_sighting_at(b, 1_999), "the clear at 1000 forgot every identity");
}

#[test]
fn a_lease_is_asked_for_only_when_it_should_serve_several_calls() {
    use std::time::Duration;
    let lease = Duration::from_millis(250);
    let ms = Duration::from_millis;
    assert!(!super::lease::is_hot(None, None, lease, 1), "an identity never seen");
    assert!(super::lease::is_hot(None, None, lease, 2), "callers queued up for it");
    assert!(super::lease::is_hot(Some(ms(10)), None, lease, 1), "about 25 calls per lease at this rate");
    assert!(super::lease::is_hot(Some(ms(62)), None, lease, 1), "4 calls per lease: enough");
    assert!(
        !super::lease::is_hot(Some(ms(63)), None, lease, 1),
        "fewer than 4 calls per lease: plain calls cost Redis less"
    );
    assert!(
        !super::lease::is_hot(Some(ms(100)), Some(3), lease, 1),
        "2.5 calls per lease, and the last lease served 3"
    );
    assert!(super::lease::is_hot(Some(ms(240)), Some(900), lease, 1), "a lease that served 900 calls in 240 ms");
}
