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

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use floodwall::{Algorithm, BreakerOptions, FallbackMode, Limiter};
use floodwall_testkit::RedisServer;

/// The limit sets of floodwall-bench (the sliding log's one limit is smaller: its bound).
const CASES: [(Algorithm, &str, &[&str]); 5] = [
    (Algorithm::SlidingWindow, "1 limit", &["1000000/minute"]),
    (Algorithm::SlidingWindow, "3 limits", &["100000/second", "1000000/minute", "10000000/hour"]),
    (Algorithm::TokenBucket, "1 limit", &["1000000/minute"]),
    (Algorithm::TokenBucket, "3 limits", &["100000/second", "1000000/minute", "10000000/hour"]),
    (Algorithm::SlidingLog, "1 limit", &["10000/second"]),
];

/// A private redis-server under callgrind, its dumps written to `dumps`.
struct Counted {
    server: RedisServer,
    pid: String,
    dumps: PathBuf,
    /// `--keep DIR`: each case's dump is moved there (for callgrind_annotate) instead of deleted
    keep: Option<PathBuf>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dumps);
    }
}

fn start(keep: Option<PathBuf>) -> Counted {
    let dumps = std::env::temp_dir().join(format!("floodwall-redis-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dumps).expect("temp dir");
    let out = format!("--callgrind-out-file={}/callgrind.%p", dumps.display());
    let server = RedisServer::start_wrapped(&["valgrind", "--tool=callgrind", &out]);
    let pid = server.pid().expect("running").to_string();
    Counted { server, pid, dumps, keep }
}

/// One command's reply, as the harness reads it.
fn command(s: &Counted, args: &[&str]) -> String {
    s.server.command(args).expect("redis-server under callgrind answers")
}

/// Counting starts now (callgrind_control zeroes the counters).
fn start_counting(s: &Counted) {
    let st =
        Command::new("callgrind_control").arg("-z").arg(&s.pid).stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(st.is_ok_and(|s| s.success()), "callgrind_control -z");
}

/// Instructions since start_counting (callgrind_control dumps; the newest file's totals), counted
/// for the case named `case`.
fn instructions(s: &Counted, case: &str) -> u64 {
    let st =
        Command::new("callgrind_control").args(["-d", &s.pid]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(st.is_ok_and(|s| s.success()), "callgrind_control -d");
    let newest = |dir: &Path| -> Option<PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("callgrind."))
            .collect();
        files.sort_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
        files.last().map(|e| e.path())
    };
    let file = newest(&s.dumps).expect("a callgrind dump");
    let text = std::fs::read_to_string(&file).expect("read the dump");
    let total = text.lines().find_map(|l| l.strip_prefix("totals: ").or_else(|| l.strip_prefix("summary: ")));
    match &s.keep {
        // kept for callgrind_annotate, named after the case counted
        Some(dir) => {
            let _ = std::fs::rename(
                &file,
                dir.join(format!("callgrind.{}", case.replace(|c: char| !c.is_ascii_alphanumeric(), "_"))),
            );
        }
        None => {
            let _ = std::fs::remove_file(&file);
        }
    }
    total.and_then(|t| t.trim().parse().ok()).expect("totals in the dump")
}

fn evalsha_calls(s: &Counted) -> u64 {
    let stats = command(s, &["INFO", "commandstats"]);
    let line = stats.lines().find(|l| l.starts_with("cmdstat_evalsha:")).unwrap_or("");
    line.split(['=', ',']).nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// `decisions` checks, `concurrency` in flight, over `identities` identities.
async fn drive(limiter: &Limiter, decisions: u64, concurrency: u64, identities: u64, offset: u64) {
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let l = limiter.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while i < decisions {
                let d = l.check(&format!("id:{}", (i + offset) % identities)).await.expect("decision");
                assert!(d.allowed, "limits far above the load");
                i += concurrency;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
}

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
                .breaker(BreakerOptions {
                    slow_call_ms: 600_000,
                    failure_threshold: u32::MAX,
                    ..BreakerOptions::default()
                })
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
