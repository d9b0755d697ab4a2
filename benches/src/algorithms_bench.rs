//! `floodwall-bench algorithms`: what one decision costs with each algorithm, 1 limit ("1000/hour")
//! and 3 ("5/second; 100/minute; 1000/hour"), one caller and 64 in flight. Per row: wall time per decision on the embedded store and on a private
//! redis-server; that server's script calls and commands per decision (INFO commandstats deltas,
//! the commands scripts call included) and CPU per decision (INFO cpu); and redis-server's
//! user-space instructions per decision, counted by callgrind on a second private server.
//!
//! Every decision is allowed and finds its identity's state made: a first pass checks each
//! identity once, then 4 more passes are measured, and 5 checks per identity fit every limit
//! here whatever the time (the smallest is "5/second", and a token bucket's burst is its max).
//! A row runs that several times (rounds), each on a new limiter with new keys: wall time is the
//! best round's, as other work on a shared machine only ever adds to it; the counts are totals.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use floodwall::{Algorithm, BreakerOptions, FallbackMode, Limiter};
use floodwall_testkit::RedisServer;

use crate::cache_bench::commandstats;
use crate::callgrind;

/// The 3 limits are the 1 and two shorter ones. The longest window sets how long a state's hash
/// epoch lasts (core/src/keys.rs epoch_us): an hour or two here, so no run sees an epoch end. With
/// a 1 s window alone the hashes roll every 1-2 s, and an identity checked less often than that is
/// read from two hashes: a row would then count more such reads the slower it ran (callgrind).
const LIMIT_SETS: [(&str, &[&str]); 2] =
    [("1 limit", &["1000/hour"]), ("3 limits", &["5/second", "100/minute", "1000/hour"])];
const ALGORITHMS: [Algorithm; 3] = [Algorithm::SlidingWindow, Algorithm::SlidingLog, Algorithm::TokenBucket];
/// Measured checks per identity, after the one that makes its state.
const PASSES: u64 = 4;

struct Args {
    /// Identities per round.
    identities: u64,
    memory_rounds: u64,
    redis_rounds: u64,
    /// Identities under callgrind (one round: its counts repeat), where redis-server runs ~50x slower.
    callgrind_identities: u64,
    in_flight: Vec<u64>,
    callgrind: bool,
}

fn parse(raw: &[String]) -> Args {
    let mut a = Args {
        identities: 5_000,
        memory_rounds: 10,
        redis_rounds: 3,
        callgrind_identities: 1_000,
        in_flight: vec![1, 64],
        callgrind: true,
    };
    let mut it = raw.iter();
    while let Some(flag) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_else(|| panic!("{flag} needs a value"));
        let mut num = |what: &str| val().parse::<u64>().unwrap_or_else(|_| panic!("{what} N"));
        match flag.as_str() {
            "--identities" => a.identities = num("--identities"),
            "--memory-rounds" => a.memory_rounds = num("--memory-rounds").max(1),
            "--redis-rounds" => a.redis_rounds = num("--redis-rounds").max(1),
            "--callgrind-identities" => a.callgrind_identities = num("--callgrind-identities"),
            "--in-flight" => {
                a.in_flight = val().split(',').map(|v| v.trim().parse().expect("--in-flight N[,N...]")).collect()
            }
            "--no-callgrind" => a.callgrind = false,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// The exact path: every decision from Redis, none from a deadline, the breaker or the fallback
/// (under callgrind a call takes ~50x as long).
fn redis_limiter(url: String, alg: Algorithm, specs: &[&str], prefix: String) -> Limiter {
    Limiter::builder(floodwall::parse_limits(specs).expect("limits"))
        .algorithm(alg)
        .redis_url(url)
        .prefix(prefix)
        .timeout(Duration::from_secs(120))
        .fallback(FallbackMode::Error)
        .breaker(BreakerOptions::default().slow_call_ms(600_000).failure_threshold(u32::MAX))
        .build()
        .expect("limiter")
}

/// Makes every identity's state, runs `before`, then returns the wall time of the measured passes.
async fn measure(l: &Limiter, identities: u64, in_flight: u64, before: impl FnOnce()) -> Duration {
    callgrind::drive(l, identities, in_flight, identities, 0).await;
    before();
    let t0 = Instant::now();
    callgrind::drive(l, PASSES * identities, in_flight, identities, 0).await;
    t0.elapsed()
}

/// One row's numbers from the plain redis-server.
struct RedisCost {
    best: Duration,
    /// (command, calls per decision), most first
    per_command: Vec<(String, f64)>,
    cpu_us: Option<f64>,
}

impl RedisCost {
    fn per_decision(&self, command: &str) -> f64 {
        self.per_command.iter().find(|(k, _)| k == command).map_or(0.0, |(_, v)| *v)
    }
    fn commands(&self) -> f64 {
        self.per_command.iter().map(|(_, v)| v).sum()
    }
}

fn redis_cost(
    rt: &tokio::runtime::Runtime,
    server: &RedisServer,
    row: &str,
    make: impl Fn(String) -> Limiter,
    a: &Args,
    c: u64,
) -> RedisCost {
    let port = server.port();
    let (mut calls, mut cpu, mut best) = (HashMap::<String, u64>::new(), Some(0.0), Duration::MAX);
    for round in 0..a.redis_rounds {
        let l = make(format!("{row}-{round}"));
        rt.block_on(l.connect()).expect("redis reachable");
        let mut before = (HashMap::new(), None);
        let took = rt.block_on(measure(&l, a.identities, c, || before = (commandstats(port), crate::redis_cpu(port))));
        let (after, cpu1) = (commandstats(port), crate::redis_cpu(port));
        for (k, v) in after {
            let d = v.saturating_sub(before.0.get(&k).copied().unwrap_or(0));
            *calls.entry(k).or_default() += d;
        }
        cpu = cpu.zip(before.1.zip(cpu1)).map(|(sum, (c0, c1))| sum + c1 - c0);
        best = best.min(took);
    }
    let decisions = (a.redis_rounds * PASSES * a.identities) as f64;
    let mut per_command: Vec<(String, f64)> =
        calls.into_iter().filter(|(_, v)| *v > 0).map(|(k, v)| (k, v as f64 / decisions)).collect();
    per_command.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
    RedisCost { best, per_command, cpu_us: cpu.map(|s| 1e6 * s / decisions) }
}

/// Calls per decision to 3 decimals; the rare ones (a hash's expiry set once per epoch) as such.
fn fraction(v: f64) -> String {
    if v < 0.0005 {
        "<0.001".into()
    } else {
        format!("{v:.3}")
    }
}

pub fn run(raw: &[String]) {
    let args = parse(raw);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let plain = RedisServer::start();
    let counted = args.callgrind.then(|| callgrind::start(None));
    let decisions = PASSES * args.identities;
    let counted_decisions = PASSES * args.callgrind_identities;
    println!(
        "floodwall-bench algorithms: {decisions} decisions per round ({PASSES} on each of {} identities), best of {} \
         rounds on memory and of {} on redis; {counted_decisions} under callgrind ({} identities); every decision \
         allowed on existing state; {} cores, load average {}",
        args.identities,
        args.memory_rounds,
        args.redis_rounds,
        args.callgrind_identities,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" "),
    );
    println!("ns/dec: wall time / decisions, that many callers in flight, client and redis-server on the same cores");
    println!(
        "calls, cmds: EVALSHA and all Redis commands (those scripts call included) per decision, INFO commandstats"
    );
    println!("CPU: redis-server user+sys per decision, INFO cpu; instr: redis-server user-space instructions per decision, callgrind");
    let mut n = 0;
    for alg in ALGORITHMS {
        println!("\n{alg}");
        println!(
            "{:<10} {:>9} {:>13} {:>12} {:>7} {:>7} {:>10} {:>10}   commands per decision",
            "limits", "in flight", "memory ns/dec", "redis ns/dec", "calls", "cmds", "CPU µs/dec", "instr/dec"
        );
        for (label, specs) in LIMIT_SETS {
            for &c in &args.in_flight {
                n += 1;
                let memory_best = (0..args.memory_rounds)
                    .map(|_| {
                        let limits = floodwall::parse_limits(specs).expect("limits");
                        let l = Limiter::builder(limits).algorithm(alg).build().expect("limiter");
                        rt.block_on(measure(&l, args.identities, c, || ()))
                    })
                    .min()
                    .expect("a round");
                let redis = redis_cost(
                    &rt,
                    &plain,
                    &format!("alg{n}"),
                    |p| redis_limiter(plain.url(), alg, specs, p),
                    &args,
                    c,
                );
                let instr = counted.as_ref().map(|s| {
                    let l = redis_limiter(s.server.url(), alg, specs, format!("alg{n}"));
                    rt.block_on(async {
                        l.connect().await.expect("redis under callgrind reachable");
                        measure(&l, args.callgrind_identities, c, || callgrind::start_counting(s)).await
                    });
                    callgrind::instructions(s, &format!("{alg} {label} {c}")) / counted_decisions
                });
                let ns = |d: Duration| d.as_nanos() as f64 / decisions as f64;
                println!(
                    "{:<10} {:>9} {:>13.0} {:>12.0} {:>7.3} {:>7.3} {:>10} {:>10}   {}",
                    label,
                    c,
                    ns(memory_best),
                    ns(redis.best),
                    redis.per_decision("evalsha"),
                    redis.commands(),
                    redis.cpu_us.map_or("-".into(), |c| format!("{c:.2}")),
                    instr.map_or("-".into(), |i| i.to_string()),
                    redis
                        .per_command
                        .iter()
                        .map(|(k, v)| format!("{k} {}", fraction(*v)))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
    }
}
