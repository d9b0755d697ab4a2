//! The core against real redis-servers the harness starts on free ports: exact admission under
//! concurrency, multi-window atomicity, Redis time, script reloads, TTLs and key layout.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{limits, redis_limiter, unique_prefix, ALGORITHMS};
use floodwall::keys::cluster_slot;
use floodwall::{Algorithm, ErrorKind, Limiter, OffsetClock, Source};
use floodwall_testkit::RedisServer;
use redis::AsyncCommands;

async fn raw_connection(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// `{s<shard>}`, the hash tag of the shard holding `identity`'s state (core/src/keys.rs).
fn shard_tag(prefix: &str, alg: Algorithm, specs: &[&str], identity: &str) -> String {
    let keys = floodwall::KeyLayout::new(prefix).unwrap().keys(identity, alg, &limits(specs)).unwrap();
    let open = keys[1].find('{').unwrap();
    let close = keys[1].find('}').unwrap();
    keys[1][open..=close].to_string()
}

async fn keys_with_prefix(server: &RedisServer, prefix: &str) -> Vec<String> {
    let mut conn = raw_connection(server).await;
    let mut keys: Vec<String> = conn.keys(format!("{prefix}:*")).await.unwrap();
    keys.sort();
    keys
}

#[tokio::test]
async fn basic_ten_requests_limit_five_admits_the_first_five() {
    let server = RedisServer::start();
    for alg in ALGORITHMS {
        let limiter = redis_limiter(&server.url(), alg, &["5/second"], &unique_prefix("basic"));
        let mut allowed = Vec::new();
        for _ in 0..10 {
            let d = limiter.check("user:1").await.unwrap();
            assert_eq!(d.source, Source::Redis);
            allowed.push(d.allowed);
        }
        assert_eq!(allowed, [true, true, true, true, true, false, false, false, false, false], "{alg}");
    }
}

#[tokio::test]
async fn multi_window_short_denies_without_consuming_then_long_denies() {
    let server = RedisServer::start();
    for alg in ALGORITHMS {
        let limiter = redis_limiter(&server.url(), alg, &["5/second", "12/minute"], &unique_prefix("multi"));
        for i in 0..5 {
            assert!(limiter.check("k").await.unwrap().allowed, "{alg}: request {i}");
        }
        let sixth = limiter.check("k").await.unwrap();
        assert!(!sixth.allowed, "{alg}");
        assert_eq!(sixth.limited_by.unwrap().to_string(), "5/second", "{alg}");
        // The denied request consumed nothing: the long window still holds exactly 5.
        let peek = limiter.peek("k").await.unwrap();
        assert_eq!(peek.windows[1].remaining, 7, "{alg}: {peek:?}");

        // Pace requests by the retry_after each denial gives until the long window is full.
        let mut admitted = 5;
        let mut last = sixth;
        for _ in 0..200 {
            if !last.allowed {
                if last.limited_by.unwrap().to_string() == "12/minute" {
                    break;
                }
                tokio::time::sleep(last.retry_after.unwrap()).await;
            }
            last = limiter.check("k").await.unwrap();
            admitted += last.allowed as u32;
        }
        assert!(!last.allowed, "{alg}");
        assert_eq!(last.limited_by.unwrap().to_string(), "12/minute", "{alg}: {last:?}");
        assert_eq!(admitted, 12, "{alg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_thousand_concurrent_checks_admit_exactly_the_limit() {
    let server = RedisServer::start();
    for alg in ALGORITHMS {
        let prefix = unique_prefix("race");
        // eight instances, each with its own connection, as eight app servers would have
        let limiters: Vec<Limiter> =
            (0..8).map(|_| redis_limiter(&server.url(), alg, &["100/minute"], &prefix)).collect();
        let tasks: Vec<_> = (0..1000)
            .map(|i| {
                let l = limiters[i % limiters.len()].clone();
                tokio::spawn(async move { l.check("hot").await.unwrap().allowed })
            })
            .collect();
        let admitted = futures::future::join_all(tasks).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
        assert_eq!(admitted, 100, "{alg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn naive_check_then_increment_over_admits() {
    // Why the check is one script: read, compare, then write in two round trips lets every
    // concurrent reader see the same count.
    let server = RedisServer::start();
    let clients: Vec<_> = futures::future::join_all((0..8).map(|_| raw_connection(&server))).await;
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let mut c = clients[i % clients.len()].clone();
            tokio::spawn(async move {
                let n: Option<u64> = c.get("naive:hot").await.unwrap();
                if n.unwrap_or(0) < 100 {
                    let _: u64 = c.incr("naive:hot", 1).await.unwrap();
                    true
                } else {
                    false
                }
            })
        })
        .collect();
    let admitted = futures::future::join_all(tasks).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert!(admitted > 110, "naive limiter admitted {admitted}; expected over-admission above 10%");
}

#[tokio::test]
async fn clock_skew_eight_hours_apart_instances_agree() {
    let server = RedisServer::start();
    let eight_hours = 8 * 3600 * 1_000_000i64;
    for alg in ALGORITHMS {
        let prefix = unique_prefix("skew");
        let build = |offset: i64| {
            common::exact(Limiter::builder(limits(&["10/minute"])))
                .algorithm(alg)
                .redis_url(server.url())
                .prefix(prefix.clone())
                .clock(Arc::new(OffsetClock::new(offset)))
                .build()
                .unwrap()
        };
        let (a, b) = (build(0), build(eight_hours));
        let mut remaining = Vec::new();
        for i in 0..14 {
            let l = if i % 2 == 0 { &a } else { &b };
            let d = l.check("shared").await.unwrap();
            remaining.push((d.allowed, d.remaining));
        }
        let expected: Vec<(bool, u64)> = (0..14).map(|i| if i < 10 { (true, 9 - i) } else { (false, 0) }).collect();
        assert_eq!(remaining, expected, "{alg}: both instances must see one sequence");
        let off_b = b.clock_offset_us().unwrap();
        assert!((off_b + eight_hours).abs() < 2_000_000, "{alg}: measured offset {off_b} µs");
        assert!(b.clock_skew_exceeded() && !a.clock_skew_exceeded(), "{alg}");
    }

    // A limiter that takes its window from the client's clock: the two instances count in
    // different windows and together admit twice the limit.
    let mut conn = raw_connection(&server).await;
    let mut admitted = 0;
    for i in 0..20 {
        let local_now = floodwall::SystemClock.now_us() as i64 + if i % 2 == 0 { 0 } else { eight_hours };
        let key = format!("naive-skew:{}", local_now / 60_000_000);
        let n: u64 = conn.incr(&key, 1).await.unwrap();
        if n <= 10 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 20, "client-clock windows disagree, so nothing was denied");
}

use floodwall::Clock as _;

#[tokio::test]
async fn scripts_reload_after_script_flush_and_restart() {
    let mut server = RedisServer::start();
    for alg in ALGORITHMS {
        let limiter = redis_limiter(&server.url(), alg, &["3/minute"], &unique_prefix("noscript"));
        assert!(limiter.check("k").await.unwrap().allowed);
        assert_eq!(server.command(&["SCRIPT", "FLUSH"]).unwrap(), "+OK");
        let d = limiter.check("k").await.unwrap();
        assert!(d.allowed && d.remaining == 1, "{alg}: {d:?}");
    }
    let limiter = redis_limiter(&server.url(), Algorithm::SlidingWindow, &["3/minute"], &unique_prefix("restart"));
    assert_eq!(limiter.check("k").await.unwrap().remaining, 2);
    server.restart();
    // A restart empties the data and the script cache; the next call reconnects and reloads.
    let d = limiter.check("k").await.unwrap();
    assert_eq!(d.remaining, 2, "{d:?}");
}

/// What the limiters under `prefix` hold for each identity: the fields of their hashes (sliding
/// window, token bucket), or the names of their keys (sliding log).
async fn stored_identities(server: &RedisServer, prefix: &str) -> Vec<String> {
    let mut conn = raw_connection(server).await;
    let mut ids = Vec::new();
    for k in keys_with_prefix(server, prefix).await {
        let kind: String = redis::cmd("TYPE").arg(&k).query_async(&mut conn).await.unwrap();
        if kind == "hash" {
            let fields: Vec<String> = conn.hkeys(&k).await.unwrap();
            ids.extend(fields.into_iter().filter(|f| f != "#"));
        } else {
            ids.push(k);
        }
    }
    ids.sort();
    ids
}

#[tokio::test]
async fn state_lives_in_one_expiring_hash_per_epoch_with_a_field_per_identity() {
    let server = RedisServer::start();
    let mut conn = raw_connection(&server).await;
    let specs = ["5/second", "20/minute", "100/hour"];
    let long = "long-identity-".repeat(20);
    for alg in ALGORITHMS {
        let prefix = unique_prefix("ttl");
        let limiter = redis_limiter(&server.url(), alg, &specs, &prefix);
        for id in ["user:1", "user:2", &long] {
            limiter.check_n(id, 2).await.unwrap();
        }
        let keys = keys_with_prefix(&server, &prefix).await;
        let ids = stored_identities(&server, &prefix).await;
        assert_eq!(ids.len(), 3, "{alg}: {keys:?} hold {ids:?}");
        assert!(ids.iter().all(|k| !k.contains("long-identity-long")), "long identities are hashed: {ids:?}");
        if alg == Algorithm::SlidingLog {
            // a key per identity, living as long as its longest window, in the identity's slot
            for k in &keys {
                let pttl: i64 = conn.pttl(k).await.unwrap();
                assert!(pttl > 0 && pttl <= 3_600_000, "{k} has PTTL {pttl}");
            }
            let mine: Vec<&String> = keys.iter().filter(|k| k.contains("{user:1}")).collect();
            assert!(!mine.is_empty() && mine.iter().all(|k| cluster_slot(k) == cluster_slot(mine[0])), "{mine:?}");
            continue;
        }
        // one hash per shard the identities are in (the current epoch's), named by its windows,
        // that expires three epochs after its own began at most (it is read through the next one)
        let shards: std::collections::HashSet<String> =
            ["user:1", "user:2", long.as_str()].iter().map(|id| shard_tag(&prefix, alg, &specs, id)).collect();
        assert_eq!(keys.len(), shards.len(), "{alg}: {keys:?}");
        for k in &keys {
            assert!(
                k.ends_with(":1000,60000,3600000:e0")
                    || k.ends_with(":1000,60000,3600000:e1")
                    || k.ends_with(":1000,60000,3600000:e2"),
                "{k}"
            );
            let epoch_ms = floodwall::keys::epoch_us(alg, &limits(&specs)) as i64 / 1000;
            let pttl: i64 = conn.pttl(k).await.unwrap();
            assert!(pttl > 2 * epoch_ms && pttl <= 3 * epoch_ms, "{alg}: {k} has PTTL {pttl}, epoch {epoch_ms} ms");
        }
    }
}

#[tokio::test]
async fn reset_and_peek() {
    let server = RedisServer::start();
    for alg in ALGORITHMS {
        let prefix = unique_prefix("reset");
        let limiter = redis_limiter(&server.url(), alg, &["2/minute"], &prefix);
        limiter.check_n("k", 2).await.unwrap();
        let p = limiter.peek("k").await.unwrap();
        assert!(!p.allowed && p.remaining == 0, "{alg}: {p:?}");
        assert!(!limiter.peek("k").await.unwrap().allowed, "peek consumes nothing and stays denied");
        limiter.check("other").await.unwrap();
        limiter.reset("k").await.unwrap();
        let left = stored_identities(&server, &prefix).await;
        assert!(
            left.len() == 1 && left[0].contains("other"),
            "{alg}: reset forgets the identity, and only it: {left:?}"
        );
        assert_eq!(limiter.check("k").await.unwrap().remaining, 1, "{alg}");
    }
}

#[tokio::test]
async fn unreachable_redis_is_a_store_error_naming_the_url() {
    let port = floodwall_testkit::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let limiter = redis_limiter(&url, Algorithm::SlidingWindow, &["5/second"], "p");
    let err = limiter.check("k").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store);
    assert!(err.to_string().contains(&url), "{err}");
}

#[tokio::test]
async fn bad_input_is_a_config_error_naming_the_value() {
    let server = RedisServer::start();
    let limiter = redis_limiter(&server.url(), Algorithm::TokenBucket, &["5/second"], "p");
    for (result, named) in [
        (limiter.check_n("k", 0).await.map(|_| ()), "0"),
        (limiter.check_n("k", 6).await.map(|_| ()), "6"),
        (limiter.check("").await.map(|_| ()), "\"\""),
    ] {
        let e = result.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains(named), "{e}");
    }
    let e = Limiter::builder(limits(&["20000/minute"])).algorithm(Algorithm::SlidingLog).build().unwrap_err();
    assert!(e.to_string().contains("20000/minute"), "{e}");
    let e = Limiter::builder(limits(&["5/second", "10/second"])).build().unwrap_err();
    assert!(e.to_string().contains("5/second, 10/second"), "{e}");
    let e = Limiter::builder(limits(&["5/second"])).redis_url("http://localhost").build().unwrap_err();
    assert!(e.to_string().contains("http://localhost"), "{e}");
    assert!(Limiter::builder([]).build().is_err());
}

#[tokio::test]
async fn random_timelines_agree_between_memory_and_redis() {
    // The twins must agree on every field, on timelines no one wrote by hand.
    use floodwall::FakeClock;
    let server = RedisServer::start();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for alg in ALGORITHMS {
        for specs in [&["4/second"][..], &["3/500ms", "7/2s", "10/5s"][..]] {
            let clock = FakeClock::new(1_728_000_000_000_000);
            let prefix = unique_prefix("diff");
            let mem = Limiter::builder(limits(specs)).algorithm(alg).clock(Arc::new(clock.clone())).build().unwrap();
            // exact: no deadline, breaker or fallback of a loaded machine's making
            let red = common::exact(
                Limiter::builder(limits(specs))
                    .algorithm(alg)
                    .clock(Arc::new(clock.clone()))
                    .redis_url(server.url())
                    .redis_time_from_clock()
                    .prefix(prefix),
            )
            .build()
            .unwrap();
            for step in 0..400 {
                clock.advance(Duration::from_micros(rnd(150_000)));
                let key = ["a", "b"][rnd(2) as usize];
                let (m, r) = match rnd(10) {
                    0 => (mem.peek(key).await.unwrap(), red.peek(key).await.unwrap()),
                    1 => (mem.check_n(key, 2).await.unwrap(), red.check_n(key, 2).await.unwrap()),
                    _ => (mem.check(key).await.unwrap(), red.check(key).await.unwrap()),
                };
                let strip = |mut d: floodwall::Decision| {
                    d.source = Source::Memory;
                    d
                };
                assert_eq!(strip(m), strip(r), "{alg} {specs:?} step {step}");
            }
        }
    }
}

#[tokio::test]
async fn a_limiter_owns_the_hashes_of_its_windows_and_replaces_keys_of_another_type() {
    let server = RedisServer::start();
    let mut conn = raw_connection(&server).await;
    for (alg, tag) in [(Algorithm::SlidingWindow, "sw"), (Algorithm::TokenBucket, "tb")] {
        let prefix = unique_prefix("shape");
        let both = redis_limiter(&server.url(), alg, &["2/second", "10/hour"], &prefix);
        let one = redis_limiter(&server.url(), alg, &["2/second"], &prefix);
        // keys of another type where `one`'s hashes go (an old layout, someone else's): they
        // start afresh, not an error
        let shard = shard_tag(&prefix, alg, &["2/second"], "k");
        let hashes: Vec<String> = (0..3).map(|e| format!("{prefix}:{shard}:{tag}:1000:e{e}")).collect();
        for h in &hashes {
            let _: () = conn.set(h, "not a hash").await.unwrap();
        }
        both.check_n("k", 2).await.unwrap();
        // other windows, other hashes: neither limiter's writes touch the other's state
        let d = one.check("k").await.unwrap();
        assert!(d.allowed && d.remaining == 1 && d.source == Source::Redis, "{alg}: {d:?}");
        assert!(!both.check("k").await.unwrap().allowed, "{alg}");
        let mut kinds = Vec::new();
        for h in &hashes {
            let kind: String = redis::cmd("TYPE").arg(h).query_async(&mut conn).await.unwrap();
            kinds.push(kind);
        }
        kinds.sort();
        // the current epoch's replaced, the one before next unlinked, the previous one left alone
        assert_eq!(kinds, ["hash", "none", "string"], "{alg}");
        let written: Vec<bool> = field_k_in(&mut conn, &hashes).await;
        assert_eq!(written.iter().filter(|w| **w).count(), 1, "{alg}: the state was written to the new hash");
    }
}

/// Whether each of `hashes` has the field "k".
async fn field_k_in(conn: &mut redis::aio::MultiplexedConnection, hashes: &[String]) -> Vec<bool> {
    let mut out = Vec::new();
    for h in hashes {
        let kind: String = redis::cmd("TYPE").arg(h).query_async(conn).await.unwrap();
        out.push(kind == "hash" && conn.hexists::<_, _, bool>(h, "k").await.unwrap());
    }
    out
}

/// A sliding window of 100/10s (epochs of 20 s) on a manual clock, Redis time from it too, and
/// its twin on the embedded store on the same clock.
fn ten_second_windows(server: &RedisServer, prefix: &str, start_us: u64) -> (Limiter, Limiter, floodwall::FakeClock) {
    let clock = floodwall::FakeClock::new(start_us);
    let on =
        |b: floodwall::LimiterBuilder| common::exact(b.clock(Arc::new(clock.clone())).prefix(prefix)).build().unwrap();
    let limiter = on(Limiter::builder(limits(&["100/10s"])).redis_url(server.url()).redis_time_from_clock());
    let twin = on(Limiter::builder(limits(&["100/10s"])));
    (limiter, twin, clock)
}

/// 1_700_000_000 s is a multiple of the 20 s epoch
const EPOCH_START: u64 = 1_700_000_000_000_000;

/// A state written late in one epoch is read from that epoch's hash in the next (its counts still
/// matter: the window after the one written), the hash two epochs back is unlinked by the first
/// write of an epoch, and every answer is the embedded store's.
#[tokio::test]
async fn states_carry_over_one_epoch_and_old_hashes_are_unlinked() {
    let server = RedisServer::start();
    let mut conn = raw_connection(&server).await;
    let prefix = unique_prefix("epoch");
    let (limiter, twin, clock) = ten_second_windows(&server, &prefix, EPOCH_START + 19_000_000);
    let both = |n: u64| {
        let (limiter, twin) = (limiter.clone(), twin.clone());
        async move {
            let items: Vec<floodwall::BatchItem> = (0..n).map(|_| item("u", 1)).collect();
            let r: Vec<(bool, u64)> = limiter
                .decide_many(&items)
                .await
                .into_iter()
                .map(|d| d.map(|d| (d.allowed, d.remaining)).unwrap())
                .collect();
            let t: Vec<(bool, u64)> = twin
                .decide_many(&items)
                .await
                .into_iter()
                .map(|d| d.map(|d| (d.allowed, d.remaining)).unwrap())
                .collect();
            assert_eq!(r, t, "Redis and the embedded store disagree");
            r
        }
    };
    let shard = shard_tag(&prefix, Algorithm::SlidingWindow, &["100/10s"], "u");
    let hash = |at_us: u64| format!("{prefix}:{shard}:sw:10000:e{}", (at_us / 20_000_000) % 3);
    // epoch e, 9 s into a window
    assert_eq!(both(30).await.last().unwrap().1, 70);
    let first = hash(clock.now_us());
    // epoch e+1, 1 s into the next window: three requests in one call, the first of which reads
    // the state from e's hash and rolls the window; the 30 weigh 90%: 27 + 1, 2, 3
    clock.advance(Duration::from_secs(2));
    assert_eq!(both(3).await, [(true, 72), (true, 71), (true, 70)]);
    let second = hash(clock.now_us());
    assert_ne!(first, second);
    assert_eq!(keys_with_prefix(&server, &prefix).await, {
        let mut v = vec![first.clone(), second.clone()];
        v.sort();
        v
    });
    // the new hash lives until its epoch and the next one are over (plus the slack the scripts
    // give keys under a test clock, 60 s): 59 s + 60 s from now, less the real ms since
    let pttl: i64 = conn.pttl(&second).await.unwrap();
    assert!((117_000..=119_000).contains(&pttl), "PTTL {pttl}");
    // epoch e+2: e+1's state is still read; e's hash goes with the first write
    clock.advance(Duration::from_secs(20));
    both(1).await;
    assert!(!conn.exists::<_, bool>(&first).await.unwrap(), "the hash of two epochs back is unlinked");
    assert_eq!(keys_with_prefix(&server, &prefix).await.len(), 2);
    // two epochs later nothing of it is left to read, and nothing of it matters
    clock.advance(Duration::from_secs(40));
    assert_eq!(both(1).await, [(true, 99)]);
}

/// A hash of the right name but of another epoch (Redis time gone back, an expiry not yet run)
/// holds nothing this epoch may read: it is read as empty and replaced whole on the first write.
#[tokio::test]
async fn a_hash_left_from_another_epoch_reads_as_empty() {
    let server = RedisServer::start();
    let mut conn = raw_connection(&server).await;
    let prefix = unique_prefix("old-epoch");
    let now = EPOCH_START + 5_000_000;
    let (limiter, _, _) = ten_second_windows(&server, &prefix, now);
    let e = now / 20_000_000;
    let shard = shard_tag(&prefix, Algorithm::SlidingWindow, &["100/10s"], "u");
    let current = format!("{prefix}:{shard}:sw:10000:e{}", e % 3);
    // "u" full in this very window, as an older epoch's hash marked 2(e-3)+1 would say
    let full: Vec<u8> = [(now / 10_000_000) as f64, 0.0, 100.0].iter().flat_map(|f| f.to_le_bytes()).collect();
    let _: () = conn
        .hset_multiple(
            &current,
            &[("#", (2 * (e - 3) + 1).to_string().into_bytes()), ("u", full), ("v", b"x".to_vec())],
        )
        .await
        .unwrap();
    let d = limiter.check("u").await.unwrap();
    assert!(d.allowed && d.remaining == 99, "{d:?}");
    let mut fields: Vec<String> = conn.hkeys(&current).await.unwrap();
    fields.sort();
    assert_eq!(fields, ["#", "u"], "the old hash was replaced, not added to");
}

/// The log names entries "now:position" and keeps no counter while time moves forward; when Redis
/// time goes back (a failover to a node with an earlier clock) a new name can equal one already in
/// the log, and a ZADD that updated it instead of adding would lose an entry and admit one too many.
#[tokio::test]
async fn sliding_log_names_entries_apart_when_redis_time_goes_back() {
    use floodwall::FakeClock;
    let server = RedisServer::start();
    let t0 = 1_700_000_000_000_000;
    let clock = FakeClock::new(t0);
    let limiter = common::exact(
        Limiter::builder(limits(&["2/10s"]))
            .algorithm(Algorithm::SlidingLog)
            .redis_url(server.url())
            .redis_time_from_clock()
            .clock(Arc::new(clock.clone()))
            .prefix(unique_prefix("clash")),
    )
    .build()
    .unwrap();
    assert!(limiter.check("u").await.unwrap().allowed); // t0: entry "t0:1"
    clock.set_us(t0 + 5_000_000);
    assert!(limiter.check("u").await.unwrap().allowed); // t0+5s: entry "t0+5s:2"
                                                        // t0+12s: a denied request still trims, dropping "t0:1"
    clock.set_us(t0 + 12_000_000);
    assert!(!limiter.check_n("u", 2).await.unwrap().allowed);
    // back to t0+5s: one entry in the window, so one more fits, and its name would be "t0+5s:2"
    clock.set_us(t0 + 5_000_000);
    let d = limiter.check("u").await.unwrap();
    assert!(d.allowed && d.remaining == 0, "{d:?}");
    // both entries count: the window is full
    let d = limiter.check("u").await.unwrap();
    assert!(!d.allowed, "an entry was lost to a name clash: {d:?}");
}

/// Zero redis-server's command counts (INFO commandstats).
async fn reset_stats(conn: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(conn).await.unwrap();
}

/// EVALSHA calls redis-server has run since its stats were reset.
async fn evalsha_calls(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await.unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_decisions_share_script_calls_and_stay_exact() {
    let server = RedisServer::start();
    let mut conn = raw_connection(&server).await;
    for alg in [Algorithm::SlidingWindow, Algorithm::TokenBucket] {
        let limiter = redis_limiter(&server.url(), alg, &["50/minute", "1000/hour"], &unique_prefix("batch"));
        limiter.connect().await.unwrap();
        reset_stats(&mut conn).await;
        // 4 identities x 100 requests, interleaved: batches mix identities and repeat them
        let ds = futures::future::join_all((0..400).map(|i| {
            let l = limiter.clone();
            async move { (i % 4, l.check(&format!("k{}", i % 4)).await.unwrap()) }
        }))
        .await;
        for k in 0..4 {
            let allowed = ds.iter().filter(|(id, d)| *id == k && d.allowed).count();
            assert_eq!(allowed, 50, "{alg}: identity k{k}");
        }
        // the remaining counts down per identity in the order Redis decided: each admitted
        // decision of an identity saw a distinct count
        for k in 0..4 {
            let mut seen: Vec<u64> =
                ds.iter().filter(|(id, d)| *id == k && d.allowed).map(|(_, d)| d.remaining).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..50).collect::<Vec<u64>>(), "{alg}: identity k{k}");
        }
        let calls = evalsha_calls(&mut conn).await;
        assert!(calls <= 100, "{alg}: 400 concurrent decisions took {calls} script calls");
    }
}

#[tokio::test]
async fn decisions_polled_together_go_out_in_one_script_call() {
    let server = RedisServer::start();
    let mut conn = raw_connection(&server).await;
    for alg in ALGORITHMS {
        let limiter = redis_limiter(&server.url(), alg, &["5/minute"], &unique_prefix("together"));
        limiter.connect().await.unwrap();
        let checks = || futures::future::join_all((0..20).map(|i| limiter.check(if i % 2 == 0 { "a" } else { "b" })));
        reset_stats(&mut conn).await;
        let ds = floodwall::together(checks()).await;
        assert_eq!(evalsha_calls(&mut conn).await, 1, "{alg}: 20 checks polled together");
        // each identity's first 5, in arrival order, are admitted
        let allowed: Vec<bool> = ds.iter().map(|d| d.as_ref().unwrap().allowed).collect();
        assert_eq!(allowed, (0..20).map(|i| i < 10).collect::<Vec<_>>(), "{alg}");
        // Without it the first arrivals find a call slot free and call alone.
        reset_stats(&mut conn).await;
        checks().await;
        assert!(evalsha_calls(&mut conn).await > 1, "{alg}: the baseline this test compares with moved");
    }
}

#[tokio::test]
async fn a_panic_inside_together_holds_nothing_back_afterwards() {
    let server = RedisServer::start();
    let limiter =
        redis_limiter(&server.url(), Algorithm::SlidingWindow, &["5/minute"], &unique_prefix("together-panic"));
    let held = limiter.clone();
    let panicked = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(floodwall::together(async move {
        // arrives (held back), then the batch panics before it is polled again
        let mut check = std::pin::pin!(held.check("a"));
        let _ = futures::poll!(check.as_mut());
        panic!("a batch panics");
    })))
    .await;
    assert!(panicked.is_err());
    // Calls made later on this thread are not held: they complete.
    let d =
        tokio::time::timeout(Duration::from_secs(10), limiter.check("b")).await.expect("a check after the panic hung");
    assert!(d.unwrap().allowed);
}

/// The cache layer's batch window holds a call that would go alone for company: checks of other
/// identities that arrive within it share its script call. Without a window the first goes alone
/// and the second in a call of its own.
#[tokio::test]
async fn a_batch_window_gathers_checks_of_other_identities_into_one_script_call() {
    let server = RedisServer::start();
    let mut conn = raw_connection(&server).await;
    for window_us in [0, 500] {
        let cache = floodwall::CacheOptions::default().batch_window_us(window_us);
        let limiter = common::exact(
            Limiter::builder(limits(&["10/minute"]))
                .redis_url(server.url())
                .prefix(unique_prefix("window"))
                .cache(cache),
        )
        .build()
        .unwrap();
        limiter.connect().await.unwrap();
        reset_stats(&mut conn).await;
        // two tasks on this one-thread runtime: the second arrives while the first waits, well
        // inside 500 µs, and neither identity was seen before (no cache entry: straight to Redis)
        let (a, b) = (limiter.clone(), limiter.clone());
        let first = tokio::spawn(async move { a.check("first").await.unwrap() });
        let second = tokio::spawn(async move { b.check("second").await.unwrap() });
        assert!(first.await.unwrap().allowed && second.await.unwrap().allowed);
        let calls = evalsha_calls(&mut conn).await;
        assert_eq!(calls, if window_us == 0 { 2 } else { 1 }, "window {window_us} µs");
    }
}

/// Checks arriving while a script call is in flight wait for it and then share one call, rather
/// than each starting a call with a request or two; only when enough wait to fill one does a
/// second call go while the first is in flight. Behind a proxy holding each chunk `HOLD` (both
/// ways, one chunk of a connection at a time): a call sent beside the first ends one hold after
/// it, a call sent once the first returned ends a round trip (two holds) after it. The bound
/// between them, 1.5 holds, leaves half a hold (100 ms) for a loaded machine's scheduling.
#[tokio::test]
async fn checks_wait_for_the_call_in_flight_unless_enough_wait_to_fill_a_second() {
    let server = RedisServer::start();
    let mut conn = raw_connection(&server).await;
    let proxy = floodwall_testkit::FaultProxy::start(server.port());
    let limiter = redis_limiter(&proxy.url(), Algorithm::SlidingWindow, &["100/minute"], &unique_prefix("second-call"));
    limiter.connect().await.unwrap();
    const HOLD: Duration = Duration::from_millis(200);
    proxy.set(floodwall_testkit::Fault::Latency(HOLD));
    for (others, calls) in [(5, 2), (12, 2)] {
        reset_stats(&mut conn).await;
        let l = limiter.clone();
        let first = tokio::spawn(async move {
            l.check("first").await.unwrap();
            std::time::Instant::now()
        });
        // this one-thread runtime runs the first check until it waits on Redis
        tokio::task::yield_now().await;
        let rest: Vec<_> = (0..others)
            .map(|i| {
                let l = limiter.clone();
                tokio::spawn(async move {
                    l.check(&format!("other-{i}")).await.unwrap();
                    std::time::Instant::now()
                })
            })
            .collect();
        let first_done = first.await.unwrap();
        let rest_done = futures::future::join_all(rest).await.into_iter().map(Result::unwrap).max().unwrap();
        assert_eq!(evalsha_calls(&mut conn).await, calls, "{others} others");
        let after_first = rest_done.saturating_duration_since(first_done);
        if others < 8 {
            assert!(after_first >= HOLD * 3 / 2, "{others} others waited for the call in flight: {after_first:?}");
        } else {
            assert!(after_first < HOLD * 3 / 2, "{others} others went beside the call in flight: {after_first:?}");
        }
    }
}

fn item(key: &str, cost: u64) -> floodwall::BatchItem<'_> {
    floodwall::BatchItem::new(key, cost, None)
}

#[tokio::test]
async fn decide_many_answers_each_request_as_one_by_one_would() {
    let server = RedisServer::start();
    for alg in ALGORITHMS {
        let batched = redis_limiter(&server.url(), alg, &["5/minute", "7/hour"], &unique_prefix("many"));
        let alone = redis_limiter(&server.url(), alg, &["5/minute", "7/hour"], &unique_prefix("many-alone"));
        // checks, peeks (cost 0), a cost of 2, a cost above the smallest limit and an empty key
        let items: Vec<_> = (0..14)
            .map(|i| match i {
                3 => item("a", 0),
                5 => item("b", 2),
                6 => item("a", 6),
                9 => item("", 1),
                _ => item(if i % 2 == 0 { "a" } else { "b" }, 1),
            })
            .collect();
        let got = batched.decide_many(&items).await;
        assert_eq!(got.len(), items.len());
        for (i, (it, d)) in items.iter().zip(&got).enumerate() {
            let want = if it.cost == 0 { alone.peek(it.key).await } else { alone.check_n(it.key, it.cost).await };
            match (d, want) {
                (Ok(d), Ok(w)) => {
                    assert_eq!(
                        (d.allowed, d.remaining, d.source),
                        (w.allowed, w.remaining, w.source),
                        "{alg}: item {i}"
                    );
                    assert_eq!(d.limited_by, w.limited_by, "{alg}: item {i}");
                }
                (Err(e), Err(w)) => {
                    assert_eq!(e.kind(), ErrorKind::Config, "{alg}: item {i}: {e}");
                    assert_eq!(e.to_string(), w.to_string(), "{alg}: item {i}");
                }
                (d, w) => panic!("{alg}: item {i}: batched {d:?}, alone {w:?}"),
            }
        }
    }
}

#[tokio::test]
async fn decide_many_beyond_one_script_call_admits_exactly_the_limit_in_order() {
    let server = RedisServer::start();
    let mut conn = raw_connection(&server).await;
    for alg in ALGORITHMS {
        let limiter = redis_limiter(&server.url(), alg, &["100/minute"], &unique_prefix("many-big"));
        limiter.connect().await.unwrap();
        let items = vec![item("k", 1); 300];
        reset_stats(&mut conn).await;
        let got = limiter.decide_many(&items).await;
        let allowed: Vec<bool> = got.iter().map(|d| d.as_ref().unwrap().allowed).collect();
        assert_eq!(allowed, (0..300).map(|i| i < 100).collect::<Vec<_>>(), "{alg}");
        let calls = evalsha_calls(&mut conn).await;
        assert!((2..=5).contains(&calls), "{alg}: 300 requests in {calls} script calls");
    }
}

#[tokio::test]
async fn decide_many_with_redis_down_answers_by_the_fallback() {
    let port = floodwall_testkit::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let open = Limiter::builder(limits(&["5/minute"]))
        .redis_url(&url)
        .fallback(floodwall::FallbackMode::Open)
        .build()
        .unwrap();
    let got = open.decide_many(&[item("a", 1), item("b", 1), item("", 1)]).await;
    for d in &got[..2] {
        let d = d.as_ref().expect("the fallback answers");
        assert!(d.allowed && d.source == Source::Fallback, "{d:?}");
    }
    assert_eq!(got[2].as_ref().unwrap_err().kind(), ErrorKind::Config);
    let strict = redis_limiter(&url, Algorithm::SlidingWindow, &["5/minute"], "t-down");
    for d in strict.decide_many(&[item("a", 1), item("b", 0)]).await {
        let e = d.unwrap_err();
        assert!(e.to_string().contains(&port.to_string()), "{e}");
    }
}
