//! What a decision costs redis-server, counted in instructions by valgrind's callgrind: a number
//! that stays put whatever else the machine runs, where decisions/s on a shared VM do not.
//! Runs a private redis-server under callgrind, drives the real limiter against it (batches form
//! as in production: 64 callers in flight) and prints, per algorithm and limit set, redis-server's
//! user-space instructions per decision and per script call, beside those of the trivial
//! `EVALSHA "return 1"` that floodwall-bench calls the floor. (Kernel time, the socket reads and
//! writes, is not counted: per call it is the same for both.)
//!
//!   cargo run --release -p floodwall-bench --bin floodwall-redis-cost -- [--decisions 6400] [--concurrency 64] [--keep DIR]
//!
//! `--keep DIR` keeps each case's callgrind dump in DIR, for `callgrind_annotate DIR/callgrind.<case>`.
//!
//! Needs valgrind (callgrind_control) and redis-benchmark on PATH.

#[path = "../callgrind.rs"]
mod callgrind;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use callgrind::{command, drive, evalsha_calls, instructions, start, start_counting};
use floodwall::{Algorithm, BreakerOptions, FallbackMode, Limiter};

/// The limit sets of floodwall-bench (the sliding log's one limit is smaller: its bound).
const CASES: [(Algorithm, &str, &[&str]); 5] = [
    (Algorithm::SlidingWindow, "1 limit", &["1000000/minute"]),
    (Algorithm::SlidingWindow, "3 limits", &["100000/second", "1000000/minute", "10000000/hour"]),
    (Algorithm::TokenBucket, "1 limit", &["1000000/minute"]),
    (Algorithm::TokenBucket, "3 limits", &["100000/second", "1000000/minute", "10000000/hour"]),
    (Algorithm::SlidingLog, "1 limit", &["10000/second"]),
];

fn main() {
    let mut decisions = 6400u64;
    let mut concurrency = 64u64;
    let mut keep = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--keep" {
            let dir = PathBuf::from(args.next().expect("--keep needs a directory"));
            std::fs::create_dir_all(&dir).expect("--keep: cannot make the directory");
            keep = Some(dir);
            continue;
        }
        let value = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--decisions" => decisions = value,
            "--concurrency" => concurrency = value,
            other => panic!("unknown flag {other}"),
        }
    }
    let server = start(keep);
    let port = server.server.port();
    println!("floodwall-redis-cost: redis-server user-space instructions (callgrind), {decisions} decisions, {concurrency} in flight");
    println!("{:<40} {:>10} {:>10} {:>16} {:>14}", "case", "decisions", "calls", "instr/decision", "instr/call");

    // the floor: the trivial script floodwall-bench compares against
    let sha = command(&server, &["SCRIPT", "LOAD", "return 1"]).trim().to_string();
    let calls = 2000u64;
    start_counting(&server);
    let st = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-c",
            &concurrency.to_string(),
            "-n",
            &calls.to_string(),
            "-q",
            "EVALSHA",
            &sha,
            "0",
        ])
        .stdout(Stdio::null())
        .status();
    assert!(st.is_ok_and(|s| s.success()), "redis-benchmark");
    let floor = instructions(&server, "floor") / calls;
    println!("{:<40} {:>10} {:>10} {:>16} {:>14}", "EVALSHA 'return 1' (floor)", "-", calls, "-", floor);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        for (i, (alg, label, specs)) in CASES.iter().enumerate() {
            let limiter = Limiter::builder(floodwall::parse_limits(specs).expect("limits"))
                .algorithm(*alg)
                .redis_url(format!("redis://127.0.0.1:{port}"))
                .prefix(format!("cost{i}"))
                // under callgrind Redis runs ~50x slower: no deadline, no breaker, no fallback
                .timeout(Duration::from_secs(120))
                .fallback(FallbackMode::Error)
                .breaker(BreakerOptions::default().slow_call_ms(600_000).failure_threshold(u32::MAX))
                .build()
                .expect("limiter");
            // a first pass makes every identity's key, so the count is of the steady state
            let identities = decisions.min(1000);
            drive(&limiter, identities, concurrency, identities, 0).await;
            let calls_before = evalsha_calls(&server);
            start_counting(&server);
            drive(&limiter, decisions, concurrency, identities, 7).await;
            let case = format!("{alg} ({label})");
            let ir = instructions(&server, &case);
            let calls = evalsha_calls(&server) - calls_before;
            println!("{:<40} {:>10} {:>10} {:>16} {:>14}", case, decisions, calls, ir / decisions, ir / calls.max(1));
        }
    });
}
