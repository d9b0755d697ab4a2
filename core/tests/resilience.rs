//! When Redis is slow, gone or failing over, decisions keep coming under the chosen policy and
//! return to Redis by themselves. Faults are real: killed redis-servers, a TCP proxy injecting
//! latency, blackholes and resets, and a six-process Redis Cluster losing a master.

mod common;

use std::time::{Duration, Instant};

use common::{limits, unique_prefix};
use floodwall::{Algorithm, BreakerOptions, BreakerState, ErrorKind, FallbackMode, Limiter, Source};
use floodwall_testkit::{Fault, FaultProxy, RedisCluster, RedisServer};

fn breaker_fast() -> BreakerOptions {
    BreakerOptions::default()
        .failure_threshold(3)
        .slow_call_ms(10)
        .slow_call_ratio(0.5)
        .slow_call_window(10)
        .slow_call_min_calls(4)
        .open_ms(60_000) // recovery must come from the health check, not from waiting
        .half_open_probes(2)
        .health_check_ms(50)
}

fn limiter(url: &str, fallback: FallbackMode, specs: &[&str]) -> Limiter {
    limiter_with(url, fallback, specs, Duration::from_millis(50), breaker_fast())
}

fn limiter_with(url: &str, fallback: FallbackMode, specs: &[&str], deadline: Duration, b: BreakerOptions) -> Limiter {
    Limiter::builder(limits(specs))
        .redis_url(url)
        .prefix(unique_prefix("res"))
        .timeout(deadline)
        .breaker(b)
        .fallback(fallback)
        .build()
        .unwrap()
}

/// Polls `f` (a real check, not a sleep-and-hope) until it returns true or `within` passes.
async fn eventually<F, Fut>(within: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if f().await {
            return t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not met within {within:?}");
}

#[tokio::test]
async fn redis_killed_fail_open_allows_everything() {
    let mut server = RedisServer::start();
    let l = limiter(&server.url(), FallbackMode::Open, &["2/minute"]);
    assert_eq!(l.check("k").await.unwrap().source, Source::Redis);
    server.kill();
    for _ in 0..20 {
        let d = l.check("k").await.unwrap();
        assert!(d.allowed && d.source == Source::Fallback, "{d:?}");
    }
    assert_eq!(l.breaker_state(), Some(BreakerState::Open));
}

#[tokio::test]
async fn redis_killed_fail_closed_denies_with_retry_after() {
    let mut server = RedisServer::start();
    let l = limiter(&server.url(), FallbackMode::Closed { retry_after_ms: 1500 }, &["100/minute"]);
    assert!(l.check("k").await.unwrap().allowed);
    server.kill();
    for _ in 0..20 {
        let d = l.check("k").await.unwrap();
        assert!(!d.allowed && d.source == Source::Fallback, "{d:?}");
        assert_eq!(d.retry_after, Some(Duration::from_millis(1500)));
    }
}

#[tokio::test]
async fn redis_killed_local_fallback_enforces_the_share() {
    let mut server = RedisServer::start();
    let l = limiter(&server.url(), FallbackMode::Local { expected_instances: 2 }, &["10/minute"]);
    server.kill();
    let admitted = {
        let mut n = 0;
        for _ in 0..20 {
            let d = l.check("k").await.unwrap();
            assert_eq!(d.source, Source::Fallback);
            n += d.allowed as u32;
        }
        n
    };
    assert_eq!(admitted, 5, "10/minute over 2 expected instances");
}

#[tokio::test]
async fn error_mode_returns_store_errors_when_asked() {
    let mut server = RedisServer::start();
    let l = limiter(&server.url(), FallbackMode::Error, &["10/minute"]);
    server.kill();
    let e = l.check("k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Store);
}

#[tokio::test]
async fn decisions_return_to_redis_after_restart() {
    let mut server = RedisServer::start();
    let l = limiter(&server.url(), FallbackMode::Open, &["100/minute"]);
    l.check("k").await.unwrap();
    server.kill();
    for _ in 0..5 {
        l.check("k").await.unwrap();
    }
    assert_eq!(l.breaker_state(), Some(BreakerState::Open));
    server.restart();
    // The health check (every 50 ms) sees Redis, probes succeed, the breaker closes.
    let took =
        eventually(Duration::from_secs(10), || async { l.check("k").await.unwrap().source == Source::Redis }).await;
    eprintln!("back on Redis {took:?} after restart");
    eventually(Duration::from_secs(5), || async {
        l.check("k").await.unwrap();
        l.breaker_state() == Some(BreakerState::Closed)
    })
    .await;
}

#[tokio::test]
async fn slow_redis_opens_the_breaker_and_recovery_closes_it() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    // Slowness, not timeouts, must open the breaker here: a deadline far past any call's time on
    // a loaded machine, so that every slow call succeeds (the proxy makes each one ≥ 30 ms, past
    // the 10 ms slow-call mark, whatever the machine does). The health PING, which the slow proxy
    // answers, waits 1 s: the open breaker's answers below must not race a half-open probe.
    let b = breaker_fast().health_check_ms(1_000);
    let l = limiter_with(&proxy.url(), FallbackMode::Open, &["1000/minute"], Duration::from_secs(5), b);
    l.connect().await.unwrap();
    assert_eq!(l.check("k").await.unwrap().source, Source::Redis);

    // 15 ms per hop: calls still succeed within the deadline, but each one is slow.
    proxy.set(Fault::Latency(Duration::from_millis(15)));
    let mut sources = Vec::new();
    for _ in 0..10 {
        sources.push(l.check("k").await.unwrap().source);
    }
    // The window holds the fast first call and then slow ones: with min 4 calls and ratio 0.5 it
    // opens on the third slow call (3 of 4 slow).
    let redis_calls = sources.iter().take_while(|s| **s == Source::Redis).count();
    assert_eq!(redis_calls, 3, "{sources:?}");
    assert!(sources[3..].iter().all(|s| *s == Source::Fallback), "{sources:?}");
    // While open, the fallback answers at once: the breaker turns the call away before it
    // reaches Redis (counted), rather than a call going out and waiting.
    let before = l.metrics().snapshot();
    let d = l.check("k").await.unwrap();
    let after = l.metrics().snapshot();
    assert_eq!(d.source, Source::Fallback);
    assert_eq!(after.redis_rejected_open, before.redis_rejected_open + 1, "turned away by the open breaker");
    assert_eq!(after.redis_calls, before.redis_calls, "no call went to Redis");

    proxy.set(Fault::None);
    eventually(Duration::from_secs(10), || async { l.check("k").await.unwrap().source == Source::Redis }).await;
    eventually(Duration::from_secs(5), || async {
        l.check("k").await.unwrap();
        l.breaker_state() == Some(BreakerState::Closed)
    })
    .await;
    let m = l.metrics().snapshot();
    assert!(m.breaker_transitions.iter().any(|(s, n)| *s == "open" && *n >= 1), "{m:?}");
    assert!(m.decisions_from(Source::Fallback) >= 6);
}

#[tokio::test]
async fn blackholed_redis_times_out_at_the_deadline_then_opens() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let l = limiter(&proxy.url(), FallbackMode::Open, &["1000/minute"]);
    // connected and the script loaded first: the 50 ms deadline of the first check must not
    // cover a connect and a script load on a loaded machine
    l.connect().await.unwrap();
    assert_eq!(l.check("k").await.unwrap().source, Source::Redis);
    proxy.set(Fault::Blackhole);
    for i in 0..3 {
        let t0 = Instant::now();
        let d = l.check("k").await.unwrap();
        let took = t0.elapsed();
        assert_eq!(d.source, Source::Fallback);
        // ends at the 50 ms deadline: not before it (tokio's timer never fires early; 45 allows its
        // millisecond ticks), and not at some later socket timeout (ten deadlines leave a loaded
        // machine room to schedule the timer's wake-up)
        assert!(took >= Duration::from_millis(45) && took < Duration::from_millis(500), "call {i} took {took:?}");
    }
    assert_eq!(l.breaker_state(), Some(BreakerState::Open));
    // the open breaker turns the next call away (counted) instead of waiting for the deadline
    let before = l.metrics().snapshot();
    l.check("k").await.unwrap();
    let after = l.metrics().snapshot();
    assert_eq!(
        after.redis_rejected_open,
        before.redis_rejected_open + 1,
        "open breaker must not wait for the deadline"
    );
    assert_eq!((after.redis_calls, after.redis_timeouts), (before.redis_calls, before.redis_timeouts));
    assert!(l.metrics().snapshot().redis_timeouts >= 3);
}

#[tokio::test]
async fn reset_connections_fall_back_and_recover() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let l = limiter(&proxy.url(), FallbackMode::Open, &["1000/minute"]);
    // connected and the script loaded first: the 50 ms deadline of the first check must not
    // cover a connect and a script load on a loaded machine
    l.connect().await.unwrap();
    assert_eq!(l.check("k").await.unwrap().source, Source::Redis);
    proxy.set(Fault::Reset);
    for _ in 0..5 {
        assert_eq!(l.check("k").await.unwrap().source, Source::Fallback);
    }
    proxy.set(Fault::None);
    eventually(Duration::from_secs(10), || async { l.check("k").await.unwrap().source == Source::Redis }).await;
}

#[tokio::test]
async fn acl_user_and_password_in_the_url() {
    let server = RedisServer::start();
    assert_eq!(server.command(&["ACL", "SETUSER", "app", "on", ">s3cret", "~*", "+@all"]).unwrap(), "+OK");
    let port = server.port();
    let good = Limiter::builder(limits(&["3/minute"]))
        .redis_url(format!("redis://app:s3cret@127.0.0.1:{port}"))
        .fallback(FallbackMode::Error)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    assert_eq!(good.check("k").await.unwrap().remaining, 2);
    let bad = Limiter::builder(limits(&["3/minute"]))
        .redis_url(format!("redis://app:wrong@127.0.0.1:{port}"))
        .fallback(FallbackMode::Error)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let e = bad.check("k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Store);
    assert!(e.to_string().contains("app:***@") && !e.to_string().contains("wrong"), "{e}");
}

/// On a Cluster the state hashes are sharded 64 ways: every algorithm counts exactly and resets,
/// whatever shard an identity lands in, and the cache layer's lease scripts (three hashes and a
/// lease set, one slot) grant, spend and never exceed the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_and_the_cache_layer_count_exactly_on_a_cluster() {
    let cluster = RedisCluster::start();
    for alg in common::ALGORITHMS {
        let l = common::exact(
            Limiter::builder(limits(&["20/minute", "100/hour"]))
                .algorithm(alg)
                .cluster(cluster.seeds())
                .prefix(unique_prefix("shards")),
        )
        .build()
        .unwrap();
        let mut admitted = 0;
        for _ in 0..25 {
            admitted += l.check("one").await.unwrap().allowed as u32;
        }
        assert_eq!(admitted, 20, "{alg}");
        // identities over many shards (and so over all three masters)
        for i in 0..40 {
            let d = l.check(&format!("user:{i}")).await.unwrap();
            assert!(d.allowed && d.remaining == 19 && d.source == Source::Redis, "{alg} user:{i}: {d:?}");
        }
        l.reset("one").await.unwrap();
        assert_eq!(l.check("one").await.unwrap().remaining, 19, "{alg}: reset");
    }
    for alg in [Algorithm::SlidingWindow, Algorithm::TokenBucket] {
        let l = common::exact(
            Limiter::builder(limits(&["1000/hour"]))
                .algorithm(alg)
                .cluster(cluster.seeds())
                .prefix(unique_prefix("leases"))
                .cache(floodwall::CacheOptions::default()),
        )
        .build()
        .unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move {
                    let mut admitted = 0u32;
                    for _ in 0..75 {
                        admitted += l.check("hot").await.unwrap().allowed as u32;
                    }
                    admitted
                })
            })
            .collect();
        let mut admitted = 0;
        for t in tasks {
            admitted += t.await.unwrap();
        }
        let stats = l.cache_stats().unwrap();
        assert!(stats.leases_granted > 0, "{alg}: {stats:?}");
        // 1,200 asked of 1,000 an hour: what is admitted never passes the limit (plus the one
        // permit an hour-long window may free during the test), and falls short of it by at most
        // the permits still leased (the drift budget, 1% of 1,000)
        assert!((990..=1001).contains(&admitted), "{alg}: {admitted} admitted, {stats:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_killed_under_traffic_falls_back_then_resumes_on_the_replica() {
    let mut cluster = RedisCluster::start();
    let prefix = unique_prefix("cluster");
    let seeds = cluster.seeds();
    let build = |fallback| {
        Limiter::builder(limits(&["5/second", "1000/minute"]))
            .algorithm(Algorithm::SlidingWindow)
            .cluster(seeds.clone())
            .prefix(prefix.clone())
            .timeout(Duration::from_millis(200))
            .breaker(breaker_fast().open_ms(500).health_check_ms(100))
            .fallback(fallback)
            .build()
            .unwrap()
    };
    let l = build(FallbackMode::Local { expected_instances: 1 });
    // multi-window scripts run on the cluster; identities spread over the three masters
    for i in 0..30 {
        let d = l.check(&format!("user:{i}")).await.unwrap();
        assert!(d.allowed && d.source == Source::Redis, "{d:?}");
    }
    let exact = common::exact(Limiter::builder(limits(&["3/minute"])).cluster(cluster.seeds()).prefix(prefix.clone()))
        .build()
        .unwrap();
    for _ in 0..3 {
        assert!(exact.check("victim").await.unwrap().allowed);
    }
    assert!(!exact.check("victim").await.unwrap().allowed, "limit enforced on the cluster");

    let slot = l.key_layout().slot("victim", floodwall::Algorithm::SlidingWindow).unwrap();
    let master = cluster.master_for_slot(slot);
    // the counts must be on the replica before its master dies (replication is asynchronous)
    cluster.wait_for_replication(master, Duration::from_secs(5));
    cluster.nodes[master].kill();
    let killed_at = Instant::now();

    // Steady traffic on the victim's slot: every call gets a decision, never an error or panic.
    let mut first_fallback = None;
    let mut back_on_redis = None;
    while killed_at.elapsed() < Duration::from_secs(30) {
        let d = l.check("victim").await.expect("fallback policy answers");
        match d.source {
            Source::Fallback if first_fallback.is_none() => first_fallback = Some(killed_at.elapsed()),
            Source::Redis if first_fallback.is_some() => {
                back_on_redis = Some(killed_at.elapsed());
                break;
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back = back_on_redis.expect("decisions return to Redis after the replica is promoted");
    eprintln!("cluster failover: first fallback after {first_fallback:?}, back on Redis after {back:?}");
    assert!(first_fallback.is_some(), "the dead master must be noticed");

    // Counting resumes on the promoted replica (the replica had the counts: 3/3 used).
    cluster.wait_until_ok(Duration::from_secs(20));
    let d = exact.check("victim").await.unwrap();
    assert!(!d.allowed, "counts survived on the promoted replica: {d:?}");
    let d = exact.check("fresh-after-failover").await.unwrap();
    assert!(d.allowed && d.remaining == 2, "{d:?}");
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    // A private CA and a server certificate for 127.0.0.1 signed by it, made here with openssl.
    let dir = std::env::temp_dir().join(format!("floodwall-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let (ca, ca_key, cert, key, csr, ext) =
        (p("ca.pem"), p("ca.key"), p("cert.pem"), p("key.pem"), p("req.csr"), p("ext.cnf"));
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n").unwrap();
    let steps: [Vec<&str>; 3] = [
        vec![
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=floodwall test CA",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
        ],
        vec!["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", &key, "-out", &csr],
        vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    ];
    for args in steps {
        let out = std::process::Command::new("openssl").args(&args).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let tls_port = floodwall_testkit::free_port().to_string();
    let server = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ]);
    let mut options = floodwall::RedisOptions::new(format!("rediss://127.0.0.1:{tls_port}"));
    options.tls_ca_pem = Some(std::fs::read(&ca).unwrap());
    let l = common::exact(Limiter::builder(limits(&["2/minute"])).redis(options)).build().unwrap();
    assert_eq!(l.check("k").await.unwrap().remaining, 1);
    // Without the CA the server's certificate is not trusted: a store error, never a plaintext retry.
    let untrusted =
        common::exact(Limiter::builder(limits(&["2/minute"])).redis_url(format!("rediss://127.0.0.1:{tls_port}")))
            .build()
            .unwrap();
    assert_eq!(untrusted.check("k").await.unwrap_err().kind(), ErrorKind::Store);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}
