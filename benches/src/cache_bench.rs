//! `floodwall-bench cache`: the issue-5 workloads through the local cache layer, alone and as 10
//! instances on one redis-server. Per row: decisions/s, Redis commands per decision (INFO
//! commandstats deltas, commands inside scripts included), cache and lease shares, latency
//! percentiles, accuracy against the exact in-memory algorithm replayed on the recorded
//! (identity, Redis time) sequence, and RSS; the redis-benchmark EVALSHA floor first.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use floodwall::{Algorithm, BreakerOptions, CacheOptions, FakeClock, FallbackMode, Limiter, Source};
use floodwall_testkit::RedisServer;
use hdrhistogram::Histogram;

use crate::workloads::{self, key, Rng, Workload};

struct Args {
    seconds: f64,
    concurrency: usize,
    algorithm: Algorithm,
    exact_rows: bool,
    /// Only workloads whose name contains this.
    only: Option<String>,
    /// Print RSS this often during each row (a soak: `--seconds 600 --rss-every 60`).
    rss_every: Option<f64>,
    /// Only the "alone" rows, or only the "10 instances" rows.
    instances: Option<usize>,
    /// The cache layer's batch window (CacheOptions::batch_window_us).
    batch_window_us: u64,
    /// Pace every workload at this many decisions/s in all: latency at a given load, where
    /// unpaced rows show it at saturation (closed loop, as fast as the machine goes).
    rate: Option<f64>,
}

fn parse(args: &[String]) -> Args {
    let mut a = Args {
        seconds: 5.0,
        concurrency: 64,
        algorithm: Algorithm::SlidingWindow,
        exact_rows: true,
        only: None,
        rss_every: None,
        instances: None,
        batch_window_us: 0,
        rate: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => a.seconds = val().parse().expect("--seconds N"),
            "--concurrency" => a.concurrency = val().parse().expect("--concurrency N"),
            "--algorithm" => a.algorithm = Algorithm::parse(&val()).expect("algorithm"),
            "--no-exact" => a.exact_rows = false,
            "--workload" => a.only = Some(val()),
            "--rss-every" => a.rss_every = Some(val().parse().expect("--rss-every SECONDS")),
            "--instances" => a.instances = Some(val().parse().expect("--instances 1|10")),
            "--batch-window-us" => a.batch_window_us = val().parse().expect("--batch-window-us 0-500"),
            "--rate" => a.rate = Some(val().parse().expect("--rate DECISIONS_PER_SECOND")),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// Calls per command from INFO commandstats (commands run inside scripts included), INFO itself left out.
pub(crate) fn commandstats(port: u16) -> HashMap<String, u64> {
    let out =
        Command::new("redis-cli").args(["-p", &port.to_string(), "INFO", "commandstats"]).output().expect("redis-cli");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            Some((name.to_string(), rest.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok()?))
        })
        .collect()
}

/// (total, the commands that made most of it)
fn commandstats_delta(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> (u64, String) {
    let mut d: Vec<(String, u64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(*before.get(k).unwrap_or(&0))))
        .filter(|(_, v)| *v > 0)
        .collect();
    d.sort_by_key(|e| std::cmp::Reverse(e.1));
    let top = d.iter().take(6).map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
    (d.iter().map(|(_, v)| v).sum(), top)
}

/// The allocator's view of the heap, in MB: (bytes in live allocations, bytes it holds beyond
/// them). Beside RSS it tells a leak (live grows) from an allocator keeping what was freed.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
fn heap_mb() -> Option<(f64, f64)> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    let (allocated, resident) = (stats::allocated::read().ok()?, stats::resident::read().ok()?);
    Some((allocated as f64 / 1048576.0, resident.saturating_sub(allocated) as f64 / 1048576.0))
}

/// glibc's counters over all arenas: in use (including untouched mmapped blocks), and free
/// chunks it keeps.
#[cfg(all(not(feature = "jemalloc"), target_os = "linux", target_env = "gnu"))]
fn heap_mb() -> Option<(f64, f64)> {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    Some(((m.uordblks + m.hblkhd) as f64 / 1048576.0, m.fordblks as f64 / 1048576.0))
}

#[cfg(not(any(all(feature = "jemalloc", not(target_env = "msvc")), all(target_os = "linux", target_env = "gnu"))))]
fn heap_mb() -> Option<(f64, f64)> {
    None
}

/// CPU seconds (user + system) this process has used: the client's cost, beside redis-server's.
fn process_cpu_s() -> f64 {
    // SAFETY: getrusage only fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn limiter(url: &str, w: &Workload, alg: Algorithm, prefix: &str, cache: Option<CacheOptions>) -> Limiter {
    let mut b = Limiter::builder(floodwall::parse_limits(w.limits).unwrap())
        .algorithm(alg)
        .redis_url(url)
        .prefix(prefix)
        // every decision from Redis or the cache layer, none from the fallback
        .timeout(Duration::from_secs(5))
        .fallback(FallbackMode::Error)
        .breaker(BreakerOptions::default().slow_call_ms(60_000).failure_threshold(u32::MAX));
    if let Some(c) = cache {
        b = b.cache(c);
    }
    b.build().unwrap()
}

/// (identity, Redis time µs, allowed)
type Record = (u32, u64, bool);

struct Outcome {
    decisions: u64,
    per_sec: f64,
    /// This process's CPU seconds over the run (every instance, the callers, the connections).
    cpu_s: f64,
    hist: Histogram<u64>,
    records: Vec<Record>,
}

/// Latencies in µs, 1 µs to 10 s, every count in memory from the start: an auto-resizing
/// histogram grows each time a slower call than any before is recorded, and even a fixed one's
/// zeroed pages are only taken from the OS when first written, so in a soak the 64 callers'
/// histograms (rarer and rarer new latencies) would show as the limiter's RSS creeping up. The
/// clone writes every page of its copy.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000, 3).expect("histogram bounds").clone()
}

async fn drive(instances: &[Limiter], w: Workload, args: &Args) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let cpu0 = process_cpu_s();
    // a paced workload: each caller's share of the demand, as the time between its requests
    let gap = args.rate.or(w.paced_rate()).map(|rate| Duration::from_secs_f64(args.concurrency as f64 / rate));
    for t in 0..args.concurrency {
        let (l, stop) = (instances[t % instances.len()].clone(), stop.clone());
        // a soak keeps no records: RSS must show the limiter, not the bench's log
        let record = args.rss_every.is_none();
        tasks.push(tokio::spawn(async move {
            let mut h = latency_histogram();
            let mut rng = Rng::new(t as u64 + 1);
            let mut rec = Vec::with_capacity(if record { 1 << 16 } else { 0 });
            let mut n = 0u64;
            let mut due = tokio::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if let Some(gap) = gap {
                    // a caller behind its schedule catches up without sleeping; timers fire in
                    // whole milliseconds, so a caller sends its few requests of each in a burst
                    due += gap;
                    if due > tokio::time::Instant::now() {
                        tokio::time::sleep_until(due).await;
                    }
                }
                let id = w.next_identity(&mut rng);
                let t0 = Instant::now();
                let d = l.check(&key(id)).await.expect("check");
                h.record(t0.elapsed().as_micros() as u64).ok();
                if record {
                    rec.push((id as u32, d.at_us, d.allowed));
                }
                n += 1;
                if n.is_multiple_of(64) {
                    // local answers never wait; let the timer that stops the run get a turn
                    tokio::task::yield_now().await;
                }
            }
            (n, h, rec)
        }));
    }
    let started = Instant::now();
    match args.rss_every {
        Some(every) => {
            let mut t = 0.0;
            while t < args.seconds {
                let step = every.min(args.seconds - t);
                tokio::time::sleep(Duration::from_secs_f64(step)).await;
                t += step;
                let stats: Vec<String> = instances
                    .iter()
                    .filter_map(|l| l.cache_stats())
                    .map(|s| format!("{}", s.weighted_bytes / 1024))
                    .collect();
                let heap = heap_mb()
                    .map(|(used, free)| format!("  heap live {used:>6.1} MB, held beyond {free:>5.1} MB"))
                    .unwrap_or_default();
                println!(
                    "    t={t:>5.0}s  RSS {:>6.1} MB{heap}  cache KiB per instance [{}]",
                    rss_mb(),
                    stats.join(" ")
                );
            }
        }
        None => tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await,
    }
    stop.store(true, Ordering::Relaxed);
    let mut out = Outcome { decisions: 0, per_sec: 0.0, cpu_s: 0.0, hist: latency_histogram(), records: Vec::new() };
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await.unwrap());
    }
    out.per_sec = results.iter().map(|r| r.0).sum::<u64>() as f64 / started.elapsed().as_secs_f64();
    out.cpu_s = process_cpu_s() - cpu0;
    for (n, h, rec) in results {
        out.decisions += n;
        out.hist.add(h).unwrap();
        out.records.extend(rec);
    }
    out
}

/// Replay the arrivals in Redis-time order through the exact in-memory algorithm; compare
/// admitted per identity. Returns (oracle admitted, system admitted, identities off by more than
/// max(1, 1%) of the oracle, worst over-admission, worst under-admission).
async fn oracle(w: &Workload, alg: Algorithm, records: &mut [Record]) -> (u64, u64, u64, i64, i64) {
    records.sort_by_key(|r| r.1);
    let start = records.first().map(|r| r.1).unwrap_or(0);
    let clock = Arc::new(FakeClock::new(start));
    let exact = Limiter::builder(floodwall::parse_limits(w.limits).unwrap())
        .algorithm(alg)
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut per: HashMap<u32, (i64, i64)> = HashMap::new();
    for &(id, at, allowed) in records.iter() {
        clock.set_us(at);
        let o = exact.check(&key(id as u64)).await.unwrap().allowed;
        let e = per.entry(id).or_default();
        e.0 += o as i64;
        e.1 += allowed as i64;
    }
    let (mut ora, mut sys, mut off, mut over, mut under) = (0u64, 0u64, 0u64, 0i64, 0i64);
    for (o, s) in per.values() {
        ora += *o as u64;
        sys += *s as u64;
        let tol = ((*o as f64) * 0.01).ceil().max(1.0) as i64;
        if (s - o).abs() > tol {
            off += 1;
        }
        over = over.max(s - o);
        under = under.max(o - s);
    }
    (ora, sys, off, over, under)
}

pub fn run(raw: &[String]) {
    let args = parse(raw);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let server = RedisServer::start();
    let (url, port) = (server.url(), server.port());
    println!(
        "floodwall-bench cache: {} s per row, {} concurrent callers, {}, {} cores, private redis-server {}",
        args.seconds,
        args.concurrency,
        args.algorithm,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        url
    );
    // the floor is a 5 s measurement whatever the row length (a soak's rows are minutes)
    let floor = crate::redis_floor(port, args.seconds.min(5.0), args.concurrency);
    match &floor {
        Some(f) => println!("redis-benchmark EVALSHA 'return 1' floor: {:.0}/s (p50 {} µs)", f.per_sec, f.p50_us),
        None => println!("(redis-benchmark not available: no floor)"),
    }
    println!(
        "{:<34} {:>10} {:>8} {:>7} {:>6} {:>6} {:>6} {:>6} {:>7}  {:<40} {:>7}",
        "workload / mode",
        "dec/s",
        "cmd/s",
        "cmd/dec",
        "cache",
        "lease",
        "p50µs",
        "p99µs",
        "p99.9µs",
        "accuracy vs oracle (admitted, off, over/under)",
        "RSS MB"
    );
    for w in workloads::ALL {
        if args.only.as_ref().is_some_and(|o| !w.name.contains(o.as_str())) {
            continue;
        }
        if let Some(rate) = args.rate {
            println!("({}: demand paced at {rate:.0} decisions/s in all, by --rate)", w.name);
        } else if let Some(rate) = w.paced_rate() {
            println!(
                "({}: demand paced at {rate:.0} decisions/s in all, {:.0}% of what its limits allow)",
                w.name,
                100.0 * w.demand.unwrap_or(1.0)
            );
        }
        let mut modes: Vec<(&str, usize, Option<CacheOptions>)> = Vec::new();
        if args.exact_rows {
            modes.push(("exact, alone", 1, None));
        }
        let cache = CacheOptions::default().batch_window_us(args.batch_window_us);
        modes.push(("cache, alone", 1, Some(cache.clone())));
        modes.push(("cache, 10 instances", 10, Some(cache)));
        for (mode, n, cache) in modes {
            if args.instances.is_some_and(|k| k != n) {
                continue;
            }
            let prefix = format!(
                "bench-{}-{}-{}",
                std::process::id(),
                w.name.replace([' ', '/'], "_"),
                mode.replace([' ', ','], "")
            );
            let instances: Vec<Limiter> =
                (0..n).map(|_| limiter(&url, &w, args.algorithm, &prefix, cache.clone())).collect();
            rt.block_on(async {
                for l in &instances {
                    l.connect().await.expect("redis reachable");
                }
            });
            let (before, redis_cpu0) = (commandstats(port), crate::redis_cpu(port));
            let mut out = rt.block_on(drive(&instances, w, &args));
            let (commands, top_commands) = commandstats_delta(&before, &commandstats(port));
            let redis_cpu = redis_cpu0
                .zip(crate::redis_cpu(port))
                .map(|(a, b)| format!("{:.2} µs", 1e6 * (b - a) / out.decisions.max(1) as f64));
            let (mut cache_hits, mut lease_hits) = (0u64, 0u64);
            for l in &instances {
                let s = l.metrics().snapshot();
                cache_hits += s.decisions_from(Source::Cache);
                lease_hits += s.decisions_from(Source::Lease);
            }
            let rss = rss_mb();
            let (mut granted, mut leased, mut returned, mut cache_kib) = (0u64, 0u64, 0u64, 0u64);
            for s in instances.iter().filter_map(|l| l.cache_stats()) {
                granted += s.leases_granted;
                leased += s.permits_leased;
                returned += s.permits_returned;
                cache_kib += s.weighted_bytes / 1024;
            }
            let (ora, sys, off, over, under) = rt.block_on(oracle(&w, args.algorithm, &mut out.records));
            let d = out.decisions.max(1) as f64;
            println!(
                "{:<34} {:>10.0} {:>8.0} {:>7.3} {:>5.1}% {:>5.1}% {:>6} {:>6} {:>7}  {:<40} {:>7.0}",
                format!("{} / {}", w.name, mode),
                out.per_sec,
                commands as f64 / args.seconds,
                commands as f64 / d,
                100.0 * cache_hits as f64 / d,
                100.0 * lease_hits as f64 / d,
                out.hist.value_at_quantile(0.5),
                out.hist.value_at_quantile(0.99),
                out.hist.value_at_quantile(0.999),
                format!("{sys} vs {ora}, {off} ids off, +{over}/-{under}"),
                rss
            );
            println!(
                "{:<34} CPU per decision: client {:.2} µs, redis-server {}; Redis commands: {top_commands}",
                "",
                1e6 * out.cpu_s / d,
                redis_cpu.as_deref().unwrap_or("-")
            );
            if cache.is_some() {
                println!(
                    "{:<34} leases {granted} (avg {:.0} permits), {returned} permits returned, cache {cache_kib} KiB over {n} instance(s)",
                    "",
                    leased as f64 / granted.max(1) as f64
                );
            }
        }
    }
}
