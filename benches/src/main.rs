//! floodwall-bench: decisions/s and latency per algorithm on the embedded store and on Redis,
//! printed beside the raw floor of the same redis-server (redis-benchmark running EVALSHA of a
//! trivial script). Starts its own redis-server unless --redis-url is given.
//!
//!   cargo run --release -p floodwall-bench -- [--seconds 5] [--concurrency 64] [--redis-url URL] [--redis-only]
//!   cargo run --release -p floodwall-bench -- cache [--seconds 5] [--concurrency 64] [--algorithm A] [--no-exact]
//!       [--workload NAME] [--instances 1|10] [--batch-window-us 0-500] [--rss-every SECONDS] [--rate N]
//!     (the local cache layer on the issue-5 workloads: see cache_bench.rs)
//!   cargo run --release -p floodwall-bench -- algorithms [--identities 5000] [--in-flight 1,64]
//!       [--callgrind-identities 1000] [--no-callgrind]
//!     (per algorithm, 1 and 3 limits: ns, Redis commands and instructions per decision: see algorithms_bench.rs)

#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod algorithms_bench;
mod cache_bench;
// floodwall-redis-cost's too; this binary uses part of it
#[allow(dead_code)]
mod callgrind;
#[allow(dead_code)]
mod workloads;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use floodwall::{Algorithm, Limiter};
use floodwall_testkit::RedisServer;
use hdrhistogram::Histogram;

struct Args {
    seconds: f64,
    concurrency: usize,
    redis_url: Option<String>,
    identities: u64,
    redis_only: bool,
}

fn parse_args() -> Args {
    let mut a = Args { seconds: 5.0, concurrency: 64, redis_url: None, identities: 10_000, redis_only: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => a.seconds = val().parse().expect("--seconds N"),
            "--concurrency" => a.concurrency = val().parse().expect("--concurrency N"),
            "--redis-url" => a.redis_url = Some(val()),
            "--identities" => a.identities = val().parse().expect("--identities N"),
            "--redis-only" => a.redis_only = true,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

struct Row {
    name: String,
    calls: u64,
    per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    /// redis-server's CPU time per call (user + sys from INFO cpu): what a row costs Redis,
    /// which the load of a shared machine moves far less than it moves the throughput
    redis_cpu_us: Option<f64>,
}

fn print_row(r: &Row, floor: Option<f64>) {
    let share = floor.map(|f| format!("{:>5.0}%", 100.0 * r.per_sec / f)).unwrap_or_else(|| "    -".into());
    let cpu = r.redis_cpu_us.map(|c| format!("{c:>8.1}")).unwrap_or_else(|| "       -".into());
    println!(
        "{:<44} {:>12.0} {:>9} {:>9} {:>9}   {:>6}  {}",
        r.name, r.per_sec, r.p50_us, r.p99_us, r.p999_us, share, cpu
    );
}

/// redis-server's CPU seconds so far (user + sys).
fn redis_cpu(port: u16) -> Option<f64> {
    let out = Command::new("redis-cli").args(["-p", &port.to_string(), "INFO", "cpu"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).and_then(|v| v.trim().parse::<f64>().ok());
    Some(get("used_cpu_user:")? + get("used_cpu_sys:")?)
}

/// Drive `concurrency` tasks calling check on random identities for `seconds`.
async fn drive(name: String, limiter: Limiter, args: &Args) -> Row {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..args.concurrency {
        let (l, stop, ids) = (limiter.clone(), stop.clone(), args.identities);
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            let mut x: u64 = 0x2545_f491_4f6c_dd1d ^ (t as u64 + 1);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let key = format!("id:{}", x % ids);
                let t0 = Instant::now();
                l.check(&key).await.expect("check");
                h.record(t0.elapsed().as_micros() as u64).ok();
                n += 1;
                if n.is_multiple_of(64) {
                    // the memory store never waits; let the timer that stops the run get a turn
                    tokio::task::yield_now().await;
                }
            }
            (n, h)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    for t in tasks {
        let (n, h) = t.await.expect("task");
        total += n;
        hist.add(h).expect("merge");
    }
    let elapsed = started.elapsed().as_secs_f64();
    Row {
        name,
        calls: total,
        per_sec: total as f64 / elapsed,
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        redis_cpu_us: None,
    }
}

/// redis-benchmark EVALSHA of `return 1` with as many clients as we run tasks.
fn redis_floor(port: u16, seconds: f64, concurrency: usize) -> Option<Row> {
    let cli = |a: &[&str]| Command::new("redis-cli").arg("-p").arg(port.to_string()).args(a).output().ok();
    let sha = String::from_utf8(cli(&["SCRIPT", "LOAD", "return 1"])?.stdout).ok()?.trim().to_string();
    let requests = (120_000.0 * seconds) as u64;
    let cpu0 = redis_cpu(port);
    let out = Command::new("redis-benchmark")
        .args(["-p", &port.to_string(), "-c", &concurrency.to_string(), "-n", &requests.to_string(), "--csv"])
        .args(["EVALSHA", &sha, "0"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let line = text.lines().find(|l| l.starts_with("\"EVALSHA"))?;
    let f: Vec<f64> = line.split(',').skip(1).map(|v| v.trim_matches('"').parse().unwrap_or(0.0)).collect();
    Some(Row {
        name: "redis-benchmark EVALSHA 'return 1' (floor)".into(),
        calls: requests,
        per_sec: f[0],
        p50_us: (f[3] * 1000.0) as u64,
        p99_us: (f[5] * 1000.0) as u64,
        p999_us: 0,
        redis_cpu_us: cpu0.zip(redis_cpu(port)).map(|(a, b)| (b - a) * 1e6 / requests as f64),
    })
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("cache") {
        return cache_bench::run(&argv[2..]);
    }
    if argv.get(1).map(String::as_str) == Some("algorithms") {
        return algorithms_bench::run(&argv[2..]);
    }
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let own_server;
    let (url, port) = match &args.redis_url {
        Some(u) => (u.clone(), u.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok()).unwrap_or(6379)),
        None => {
            own_server = RedisServer::start();
            (own_server.url(), own_server.port())
        }
    };
    println!(
        "floodwall-bench: {} s per row, {} concurrent callers, {} identities, {} cores, redis {}",
        args.seconds,
        args.concurrency,
        args.identities,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        url
    );
    println!(
        "{:<44} {:>12} {:>9} {:>9} {:>9}    floor  redis cpu µs/call",
        "case", "decisions/s", "p50 µs", "p99 µs", "p99.9 µs"
    );
    let limit_sets: [(&str, &[&str]); 2] =
        [("1 limit", &["1000000/minute"]), ("3 limits", &["100000/second", "1000000/minute", "10000000/hour"])];
    rt.block_on(async {
        for (label, specs) in limit_sets {
            for alg in [Algorithm::SlidingWindow, Algorithm::SlidingLog, Algorithm::TokenBucket] {
                if (alg == Algorithm::SlidingLog && label != "1 limit") || args.redis_only {
                    continue;
                }
                let specs: Vec<&str> = if alg == Algorithm::SlidingLog { vec!["10000/second"] } else { specs.to_vec() };
                let l = Limiter::builder(floodwall::parse_limits(&specs).unwrap()).algorithm(alg).build().unwrap();
                print_row(&drive(format!("memory  {alg} ({label})"), l, &args).await, None);
            }
        }
    });
    // The floor is measured right before each Redis row: on a shared machine the load moves, and
    // each row is compared with the floor of its own moment.
    rt.block_on(async {
        for (label, specs) in limit_sets {
            for alg in [Algorithm::SlidingWindow, Algorithm::SlidingLog, Algorithm::TokenBucket] {
                if alg == Algorithm::SlidingLog && label != "1 limit" {
                    continue;
                }
                let specs: Vec<&str> = if alg == Algorithm::SlidingLog { vec!["10000/second"] } else { specs.to_vec() };
                let l = Limiter::builder(floodwall::parse_limits(&specs).unwrap())
                    .algorithm(alg)
                    .redis_url(url.clone())
                    .prefix(format!("bench-{}", std::process::id()))
                    // the exact path: every decision from Redis, none from the fallback
                    .timeout(Duration::from_secs(5))
                    .fallback(floodwall::FallbackMode::Error)
                    .breaker(floodwall::BreakerOptions::default().slow_call_ms(60_000).failure_threshold(u32::MAX))
                    .build()
                    .unwrap();
                l.connect().await.expect("redis reachable");
                let floor = redis_floor(port, args.seconds, args.concurrency);
                match &floor {
                    Some(f) => print_row(f, None),
                    None => println!("(redis-benchmark not available: no floor)"),
                }
                let cpu0 = redis_cpu(port);
                let mut row = drive(format!("redis   {alg} ({label})"), l, &args).await;
                row.redis_cpu_us = cpu0.zip(redis_cpu(port)).map(|(a, b)| (b - a) * 1e6 / row.calls as f64);
                print_row(&row, floor.as_ref().map(|f| f.per_sec));
            }
        }
    });
}
