//! What tracing costs: decision latency and process CPU with floodwall's spans off, on (100%
//! sampled) with OTLP/HTTP export to a collector stand-in in its own process, and on without an
//! exporter (the instrumentation alone), and with export when the caller samples 1 request in 10;
//! on the Redis path, the cached path and the memory path.
//! Settings rotate within each round so drift in a shared machine's load hits all alike, and each
//! setting is compared with `off` round by round (the median of those paired changes is the
//! number to read; pooled figures move with a few long stalls of other processes' making).
//! CPU comes from getrusage: the process's (all threads, the exporter's included; each round's
//! spans are flushed inside its window) and the caller thread's alone.
//!
//!   cargo run --release -p floodwall-bench --bin floodwall-tracing-cost -- [--calls 5000] [--rounds 20] [--path redis]
//!
//! `--calls` is per round on the Redis path; the cached and memory paths make 10x as many. The
//! checks run in a task on a one-worker runtime, as a server's handler would;
//! `--caller-on-main-thread` makes them from `block_on` on the main thread instead, so every Redis
//! reply crosses threads (how this bench ran before).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use floodwall::{telemetry, CacheOptions, CheckOptions, FallbackMode, Limiter};
use floodwall_testkit::RedisServer;
use hdrhistogram::Histogram;

/// A stand-in OTLP/HTTP collector: reads each request and answers 200, so export really happens.
/// Runs in a child process (`--sink`), as a collector would, so its CPU is not the limiter's.
/// Counts the spans it receives (each carries the name `floodwall.check` once); `GET` returns
/// the count and the sink's own CPU time. It shares the machine's two cores with the limiter and
/// Redis, so it does as little as it can: the count looks for the name only where an `f` is.
fn run_sink() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    println!("{}", l.local_addr().expect("addr").port());
    std::io::stdout().flush().ok();
    let spans = std::sync::Arc::new(AtomicU64::new(0));
    for stream in l.incoming().flatten() {
        let spans = spans.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stream);
            loop {
                let mut len = 0usize;
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let get = line.starts_with("GET");
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                if r.read_exact(&mut body).is_err() {
                    return;
                }
                if get {
                    let n = format!("{} {}", spans.load(Ordering::Relaxed), process_cpu_us());
                    let _ = write!(r.get_mut(), "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{n}", n.len());
                    return;
                }
                spans.fetch_add(count_spans(&body), Ordering::Relaxed);
                let _ = r
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\ncontent-type: application/x-protobuf\r\n\r\n");
            }
        });
    }
}

/// Occurrences of the span name. The sink's CPU is taken from the cores the limiter uses: compare
/// only where an `f` is, not a window at every byte of the body.
fn count_spans(body: &[u8]) -> u64 {
    let name = b"floodwall.check";
    let mut n = 0;
    let mut rest = body;
    while let Some(i) = rest.iter().position(|&b| b == b'f') {
        rest = &rest[i..];
        if rest.starts_with(name) {
            n += 1;
            rest = &rest[name.len()..];
        } else {
            rest = &rest[1..];
        }
    }
    n
}

/// (spans the sink received, its CPU time in µs)
fn sink_counts(sink: u16) -> (u64, u64) {
    let mut c = TcpStream::connect(("127.0.0.1", sink)).expect("sink");
    c.write_all(b"GET /count HTTP/1.1\r\nhost: sink\r\nconnection: close\r\n\r\n").expect("ask sink");
    let mut reply = String::new();
    c.read_to_string(&mut reply).expect("sink reply");
    let body = reply.rsplit("\r\n").next().unwrap_or_default();
    let mut f = body.split(' ').map(|n| n.parse().expect("sink counts"));
    (f.next().expect("span count"), f.next().expect("sink cpu"))
}

fn spawn_sink() -> (Child, u16) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .arg("--sink")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sink");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("sink stdout")).read_line(&mut line).expect("sink port");
    (child, line.trim().parse().expect("sink port"))
}

/// CPU time of this process, all threads (also those that exited: each setting's exporter
/// threads), user and system, in µs (getrusage; /proc/self/stat counts in 10 ms ticks).
fn process_cpu_us() -> u64 {
    cpu_us(libc::RUSAGE_SELF)
}

/// CPU time of the calling thread, µs: the caller's share (its Redis I/O, the span's start and
/// end, handing the span to the batch processor), without the exporter's threads.
fn thread_cpu_us() -> u64 {
    cpu_us(libc::RUSAGE_THREAD)
}

fn cpu_us(who: libc::c_int) -> u64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the rusage it is pointed at; zeroed is a valid rusage either way.
    let ru = unsafe {
        libc::getrusage(who, ru.as_mut_ptr());
        ru.assume_init()
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[derive(Clone, Copy, PartialEq)]
enum Setting {
    Off,
    Export,
    NoExport,
    /// As Export, but the caller sampled 1 request in 10 (the others pass an unsampled parent).
    Export10,
}

impl Setting {
    fn label(self) -> &'static str {
        match self {
            Setting::Off => "off",
            Setting::Export => "on+otlp",
            Setting::NoExport => "on,no-exp",
            Setting::Export10 => "on+otlp10%",
        }
    }
    fn apply(self, sink: u16) {
        match self {
            Setting::Off => telemetry::disable_tracing(),
            Setting::Export | Setting::Export10 => {
                let opts = telemetry::TraceOptions::default()
                    .otlp_endpoint(Some(format!("http://127.0.0.1:{sink}/v1/traces")))
                    .sampling_ratio(1.0);
                telemetry::configure_tracing(&opts).expect("tracing");
            }
            Setting::NoExport => {
                telemetry::configure_tracing(&telemetry::TraceOptions::default().sampling_ratio(1.0)).expect("tracing");
            }
        }
    }
}

const SETTINGS: [Setting; 4] = [Setting::Off, Setting::Export, Setting::NoExport, Setting::Export10];

#[derive(Default)]
struct Tally {
    hist: Option<Histogram<u64>>,
    cpu_us: u64,
    calls: u64,
    /// Mean latency of each round, µs.
    round_means: Vec<f64>,
    /// Median latency of each round, µs.
    round_p50s: Vec<f64>,
    /// Process CPU per decision in each round, µs.
    round_cpu: Vec<f64>,
    /// The caller thread's CPU per decision in each round, µs.
    round_caller_cpu: Vec<f64>,
    sources: BTreeMap<&'static str, u64>,
}

impl Tally {
    fn hist(&self) -> &Histogram<u64> {
        self.hist.as_ref().expect("measured")
    }
}

async fn round(l: &Limiter, calls: u64, keys: u64, s: Setting, t: &mut Tally) {
    // a sampled parent: every decision is traced when tracing is on (ParentBased sampler)
    let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    let names: Vec<String> = (0..keys).map(|i| format!("id:{i}")).collect();
    let caller0 = thread_cpu_us();
    for i in 0..calls {
        let key = &names[(i % keys) as usize];
        let tp = if s == Setting::Export10 && i % 10 != 0 { unsampled } else { sampled };
        let t0 = Instant::now();
        let d = l.check_with(key, CheckOptions::new(1, Some(tp))).await.expect("check");
        h.record(t0.elapsed().as_nanos() as u64).ok();
        *t.sources.entry(d.source.as_str()).or_default() += 1;
    }
    t.round_means.push(h.mean() / 1000.0);
    t.round_p50s.push(h.value_at_quantile(0.5) as f64 / 1000.0);
    t.round_caller_cpu.push((thread_cpu_us() - caller0) as f64 / calls as f64);
    t.calls += calls;
    match &mut t.hist {
        Some(acc) => acc.add(h).expect("same bounds"),
        None => t.hist = Some(h),
    }
}

/// Median and quartiles.
fn quartiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.25), at(0.75))
}

fn pct(on: f64, off: f64) -> f64 {
    100.0 * (on / off - 1.0)
}

/// Tracing settings are switched on a blocking thread: the OTLP exporter's HTTP client runs its
/// own runtime, which must not be created or dropped on a runtime worker.
async fn switch(s: Setting, sink: u16) {
    tokio::task::spawn_blocking(move || s.apply(sink)).await.expect("switch tracing");
}

/// Waits until the spans ended so far are exported.
async fn flush() {
    let ok = tokio::task::spawn_blocking(telemetry::flush_tracing).await.expect("flush tracing");
    assert!(ok, "flushing spans failed");
}

async fn measure(url: String, sink: u16, calls: u64, rounds: usize, only: Option<String>) {
    let limits = floodwall::parse_limits(&["1000000/minute"]).unwrap();
    let redis = Limiter::builder(limits.clone())
        .redis_url(url.clone())
        .timeout(Duration::from_secs(5))
        .fallback(FallbackMode::Error)
        .build()
        .unwrap();
    let cached = Limiter::builder(limits.clone())
        .prefix("cached")
        .redis_url(url.clone())
        .timeout(Duration::from_secs(5))
        .fallback(FallbackMode::Error)
        .cache(CacheOptions::default())
        .build()
        .unwrap();
    let memory = Limiter::builder(limits).build().unwrap();
    // Redis path: 1,000 identities, each decision one script call. Cached: 10 hot identities,
    // answered mostly from leases. Memory: the embedded store.
    let paths: [(&str, &Limiter, u64, u64); 3] =
        [("redis", &redis, calls, 1000), ("cached", &cached, calls * 10, 10), ("memory", &memory, calls * 10, 1000)];
    println!(
        "{:<7} {:<11} {:>9} {:>9} {:>9} {:>9}  sources",
        "path", "tracing", "mean µs", "p50 µs", "p99 µs", "cpu µs"
    );
    for (name, l, n, keys) in paths.into_iter().filter(|p| only.as_deref().is_none_or(|o| o == p.0)) {
        let mut tallies: Vec<Tally> = SETTINGS.iter().map(|_| Tally::default()).collect();
        for s in SETTINGS {
            switch(s, sink).await;
            round(l, n / 10, keys, s, &mut Tally::default()).await; // warm up
        }
        switch(Setting::Off, sink).await; // the warm-up's spans reach the collector before it is asked
        let (received0, sink_cpu0) = sink_counts(sink);
        for r in 0..rounds {
            for j in 0..SETTINGS.len() {
                let i = (j + r) % SETTINGS.len();
                // the exporter's start and stop are outside the window; the export of every
                // span the round made is inside it
                switch(SETTINGS[i], sink).await;
                let cpu0 = process_cpu_us();
                round(l, n, keys, SETTINGS[i], &mut tallies[i]).await;
                flush().await;
                let cpu = process_cpu_us() - cpu0;
                tallies[i].cpu_us += cpu;
                tallies[i].round_cpu.push(cpu as f64 / n as f64);
            }
        }
        switch(Setting::Off, sink).await;
        for (s, t) in SETTINGS.iter().zip(&tallies) {
            let h = t.hist();
            let sources: Vec<String> = t.sources.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            println!(
                "{:<7} {:<11} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {}",
                name,
                s.label(),
                h.mean() / 1000.0,
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
                t.cpu_us as f64 / t.calls as f64,
                sources.join(" ")
            );
        }
        let off = &tallies[0];
        for (s, t) in SETTINGS.iter().zip(&tallies).skip(1) {
            println!(
                "{:<7} {:<11} {:>8.1}% {:>8.1}% {:>8.1}% {:>+9.2}  (pooled)",
                name,
                format!("+{}", s.label()),
                pct(t.hist().mean(), off.hist().mean()),
                pct(t.hist().value_at_quantile(0.5) as f64, off.hist().value_at_quantile(0.5) as f64),
                pct(t.hist().value_at_quantile(0.99) as f64, off.hist().value_at_quantile(0.99) as f64),
                (t.cpu_us as f64 / t.calls as f64) - (off.cpu_us as f64 / off.calls as f64),
            );
        }
        // each round's setting against the same round's `off`
        println!("{name}: paired with off, {rounds} rounds, median [quartiles]:");
        for (s, t) in SETTINGS.iter().zip(&tallies).skip(1) {
            let paired = |on: &[f64], off: &[f64], f: fn(f64, f64) -> f64| {
                quartiles(on.iter().zip(off).map(|(a, b)| f(*a, *b)).collect())
            };
            let (p50, p50_lo, p50_hi) = paired(&t.round_p50s, &off.round_p50s, pct);
            let (mean, mean_lo, mean_hi) = paired(&t.round_means, &off.round_means, pct);
            let (cpu, cpu_lo, cpu_hi) = paired(&t.round_cpu, &off.round_cpu, |a, b| a - b);
            let (caller, _, _) = paired(&t.round_caller_cpu, &off.round_caller_cpu, |a, b| a - b);
            println!(
                "{:<7} {:<11} p50 {:+.1}% [{:+.1}, {:+.1}]  mean {:+.1}% [{:+.1}, {:+.1}]  cpu/decision {:+.2} µs [{:+.2}, {:+.2}] (off {:.2} µs), caller thread {:+.2} µs",
                name,
                s.label(),
                p50,
                p50_lo,
                p50_hi,
                mean,
                mean_lo,
                mean_hi,
                cpu,
                cpu_lo,
                cpu_hi,
                quartiles(off.round_cpu.clone()).0,
                caller
            );
        }
        let exported = tallies[1].calls + tallies[3].calls / 10;
        let (received, sink_cpu) = sink_counts(sink);
        let received = received - received0;
        println!(
            "{name}: spans received by the collector: {received} of {exported} sampled with export; its CPU: {:.2} µs per span received",
            (sink_cpu - sink_cpu0) as f64 / received.max(1) as f64
        );
        println!("load average after {name}: {}", load_average());
    }
}

fn main() {
    let mut calls = 5_000u64;
    let mut rounds = 20;
    let mut only: Option<String> = None;
    let mut on_main_thread = false;
    let mut it = std::env::args().skip(1);
    while let Some(f) = it.next() {
        match f.as_str() {
            "--sink" => return run_sink(),
            "--calls" => calls = it.next().and_then(|v| v.parse().ok()).expect("--calls N"),
            "--rounds" => rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--caller-on-main-thread" => on_main_thread = true,
            "--path" => only = Some(it.next().expect("--path redis|cached|memory")),
            other => panic!("unknown flag {other}"),
        }
    }
    let server = RedisServer::start();
    let (mut sink_process, sink) = spawn_sink();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    println!(
        "floodwall-tracing-cost: {rounds} rounds of {calls} sequential checks (Redis path; 10x on cached and memory), \
         settings rotated within each round; caller: {}; OTLP/HTTP collector stand-in: child process on 127.0.0.1:{sink}",
        if on_main_thread { "block_on on the main thread" } else { "a task on the runtime's one worker" }
    );
    println!("load average at start: {}", load_average());
    let work = measure(server.url(), sink, calls, rounds, only);
    if on_main_thread {
        rt.block_on(work);
    } else {
        rt.block_on(async { tokio::spawn(work).await.expect("bench task") });
    }
    let _ = sink_process.kill();
    let _ = sink_process.wait();
}
