//! Redis at maxmemory, against real redis-servers the harness starts: an eviction loses the counts
//! of one shard's identities, never everyone's (64 shards per limiter, core/src/keys.rs SHARDS),
//! and under `noeviction` the identities Redis counted keep their counts: a denial stands, and
//! the local fallback starts from the state Redis read (lua/prelude.lua shard_write, fallback.rs).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{exact, limits, unique_prefix, ALGORITHMS};
use floodwall::{
    Algorithm, BatchItem, BreakerOptions, BreakerState, CacheOptions, FallbackMode, KeyLayout, Limiter, Source,
};
use floodwall_testkit::RedisServer;

fn info_field(server: &RedisServer, section: &str, field: &str) -> u64 {
    let info = server.command(&["INFO", section]).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO {section} has no {field}"))
}

/// 128 identities named `{name}:<n>`, as many in each of the limiter's shards.
fn spread_over_shards(prefix: &str, alg: Algorithm, specs: &[&str], name: &str) -> Vec<String> {
    let per_shard = 128 / usize::from(floodwall::keys::SHARDS);
    let layout = KeyLayout::new(prefix).unwrap();
    let mut by_shard: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    let mut n = 0u64;
    while out.len() < 128 {
        let id = format!("{name}:{n}");
        n += 1;
        let hash = layout.keys(&id, alg, &limits(specs)).unwrap()[1].clone();
        let held = by_shard.entry(hash).or_default();
        if *held < per_shard {
            *held += 1;
            out.push(id);
        }
    }
    out
}

async fn check_all(l: &Limiter, ids: &[String]) -> Vec<floodwall::Decision> {
    let items: Vec<BatchItem> = ids.iter().map(|id| BatchItem::new(id, 1, None)).collect();
    l.decide_many(&items).await.into_iter().map(|d| d.unwrap()).collect()
}

/// Under `volatile-ttl` (what the compose file used to set) a flood of new identities makes Redis
/// evict at maxmemory. One hash per limiter reset every denied client; now an eviction takes one
/// shard's hash, so of 128 denied victims (2 per shard) at most 2 per evicted key get through.
#[tokio::test]
async fn an_eviction_at_maxmemory_frees_one_shard_of_identities_not_everyone() {
    let server = RedisServer::start_with(&["--maxmemory-policy", "volatile-ttl"]);
    for alg in [Algorithm::SlidingWindow, Algorithm::TokenBucket] {
        server.command(&["CONFIG", "SET", "maxmemory", "0"]).unwrap();
        server.command(&["FLUSHALL"]).unwrap();
        server.command(&["CONFIG", "RESETSTAT"]).unwrap();
        let prefix = unique_prefix("evict");
        let specs = ["5/hour"];
        let l = exact(Limiter::builder(limits(&specs)).algorithm(alg).redis_url(server.url()).prefix(&prefix))
            .build()
            .unwrap();
        let victims = spread_over_shards(&prefix, alg, &specs, "victim");
        for _ in 0..5 {
            assert!(check_all(&l, &victims).await.iter().all(|d| d.allowed), "{alg}");
        }
        assert!(check_all(&l, &victims).await.iter().all(|d| !d.allowed), "{alg}: every victim is denied");
        // a little room, then new identities until Redis evicts
        let used = info_field(&server, "memory", "used_memory");
        server.command(&["CONFIG", "SET", "maxmemory", &(used + 512 * 1024).to_string()]).unwrap();
        let mut n = 0u64;
        while info_field(&server, "stats", "evicted_keys") == 0 {
            let flood: Vec<String> = (n..n + 64).map(|i| format!("flood:{i}")).collect();
            n += 64;
            check_all(&l, &flood).await;
            assert!(n < 1_000_000, "{alg}: no eviction after {n} identities");
        }
        let evicted = info_field(&server, "stats", "evicted_keys");
        let through = check_all(&l, &victims).await.iter().filter(|d| d.allowed).count() as u64;
        println!("{alg}: {evicted} keys evicted after {n} new identities; {through} of 128 victims got through");
        assert!(evicted < 8, "{alg}: {evicted} keys evicted at once");
        // the documented share: one shard's identities (1/64) per evicted hash
        assert!(through <= 2 * evicted, "{alg}: {through} of 128 denied victims regained their limit");
    }
}

/// Under `noeviction` Redis refuses writes at maxmemory but still reads. A denied identity stays
/// denied (Redis's answer), one Redis counted at 3 of 5 gets 2 more from the local fallback (not
/// a fresh 5), new identities are decided locally, the breaker stays closed, and Redis does not
/// grow past maxmemory.
#[tokio::test]
async fn under_noeviction_at_maxmemory_counted_identities_keep_their_counts() {
    let server = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    for alg in ALGORITHMS {
        server.command(&["CONFIG", "SET", "maxmemory", "0"]).unwrap();
        let prefix = unique_prefix("oom");
        let l = Limiter::builder(limits(&["5/hour"]))
            .algorithm(alg)
            .redis_url(server.url())
            .prefix(&prefix)
            .timeout(Duration::from_secs(5))
            .fallback(FallbackMode::Local { expected_instances: 1 })
            .breaker(BreakerOptions::default().slow_call_ms(60_000))
            .build()
            .unwrap();
        for _ in 0..5 {
            assert!(l.check("denied").await.unwrap().allowed);
        }
        assert!(!l.check("denied").await.unwrap().allowed);
        for _ in 0..3 {
            assert!(l.check("at-three").await.unwrap().allowed);
        }
        // full: every write is refused from here on
        let used = info_field(&server, "memory", "used_memory");
        // well under what is used: connections coming and going move used_memory by kilobytes
        server.command(&["CONFIG", "SET", "maxmemory", &(used / 2).to_string()]).unwrap();
        assert!(server.command(&["SET", "probe", "x"]).unwrap().starts_with("-OOM"), "Redis is not full");
        let flood: Vec<String> = (0..3_000).map(|i| format!("flood:{i}")).collect();
        for chunk in flood.chunks(100) {
            for d in check_all(&l, chunk).await {
                assert!(d.allowed && d.source == Source::Fallback, "{alg}: a new identity: {d:?}");
            }
        }
        let grown = info_field(&server, "memory", "used_memory").saturating_sub(used);
        assert!(grown < 256 * 1024, "{alg}: Redis grew {grown} bytes past maxmemory");
        for _ in 0..10 {
            let d = l.check("denied").await.unwrap();
            assert!(!d.allowed && d.source == Source::Redis, "{alg}: the denied identity regained its limit: {d:?}");
        }
        let mut more = 0;
        for _ in 0..10 {
            more += l.check("at-three").await.unwrap().allowed as usize;
        }
        assert_eq!(more, 2, "{alg}: an identity at 3 of 5 got {more} more");
        assert_eq!(l.breaker_state(), Some(BreakerState::Closed), "{alg}");
        server.command(&["CONFIG", "SET", "maxmemory", "0"]).unwrap();
    }
}

/// The cache layer at maxmemory: a hot identity's lease and batch scripts cannot record either, and
/// their callers must not get a fresh limit from the fallback. An identity Redis counted at 600 of
/// 1000 (its leases included) gets 400 more in all, whether from a lease already granted or from the
/// fallback starting at Redis's count.
#[tokio::test]
async fn with_the_cache_layer_counted_identities_keep_their_counts_at_maxmemory() {
    let server = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    for alg in [Algorithm::SlidingWindow, Algorithm::TokenBucket] {
        server.command(&["CONFIG", "SET", "maxmemory", "0"]).unwrap();
        let l = Limiter::builder(limits(&["1000/hour"]))
            .algorithm(alg)
            .redis_url(server.url())
            .prefix(unique_prefix("oom-cache"))
            .timeout(Duration::from_secs(5))
            .fallback(FallbackMode::Local { expected_instances: 1 })
            .breaker(BreakerOptions::default().slow_call_ms(60_000))
            .cache(CacheOptions::default().doorkeeper_ms(3_600_000).drift_ratio(0.05))
            .build()
            .unwrap();
        for _ in 0..600 {
            assert!(l.check("hot").await.unwrap().allowed, "{alg}");
        }
        assert!(l.cache_stats().unwrap().leases_granted > 0, "{alg}: the identity never took a lease");
        let used = info_field(&server, "memory", "used_memory");
        server.command(&["CONFIG", "SET", "maxmemory", &(used / 2).to_string()]).unwrap();
        assert!(server.command(&["SET", "probe", "x"]).unwrap().starts_with("-OOM"), "Redis is not full");
        // concurrent callers: they coalesce into the batch script, with a lease request
        let mut more = 0;
        for _ in 0..12 {
            let round = futures::future::join_all((0..50).map(|_| l.check("hot"))).await;
            more += round.into_iter().filter(|d| d.as_ref().unwrap().allowed).count();
        }
        assert_eq!(more, 400, "{alg}: an identity at 600 of 1000 got {more} more");
        assert_eq!(l.breaker_state(), Some(BreakerState::Closed), "{alg}");
        server.command(&["CONFIG", "SET", "maxmemory", "0"]).unwrap();
    }
}

/// What one identity costs Redis (used_memory per identity, 20,000 identities of `user:<8 digits>`):
/// the sizing figure of docs/ARCHITECTURE.md, "Deploying Redis".
#[tokio::test]
async fn redis_bytes_per_identity() {
    let server = RedisServer::start();
    for (alg, specs) in [
        (Algorithm::SlidingWindow, &["100/hour"][..]),
        (Algorithm::SlidingWindow, &["5/second", "100/minute", "1000/hour"][..]),
        (Algorithm::TokenBucket, &["100/hour"][..]),
        (Algorithm::SlidingLog, &["100/hour"][..]),
    ] {
        server.command(&["FLUSHALL"]).unwrap();
        let l = exact(Limiter::builder(limits(specs)).algorithm(alg).redis_url(server.url()).prefix("floodwall"))
            .build()
            .unwrap();
        check_all(&l, &["warm".to_string()]).await;
        let before = info_field(&server, "memory", "used_memory");
        let ids: Vec<String> = (0..20_000).map(|i| format!("user:{i:08}")).collect();
        for chunk in ids.chunks(64) {
            check_all(&l, chunk).await;
        }
        let per = (info_field(&server, "memory", "used_memory") - before) as f64 / ids.len() as f64;
        println!("{alg} {}: {per:.0} bytes of Redis memory per identity", specs.join(","));
        assert!(per < 400.0, "{alg} {specs:?}: {per:.0} bytes per identity");
    }
}
