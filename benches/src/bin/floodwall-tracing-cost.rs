//! What tracing costs: decision latency and process CPU with floodwall's spans off, on (100%
//! sampled) with OTLP/HTTP export to a collector stand-in in its own process, and on without an
//! exporter (the instrumentation alone), and with export when the caller samples 1 request in 10;
//! on the Redis path, the cached path and the memory path.
//! Settings rotate within each round so drift in a shared machine's load hits all alike.
//!
//!   cargo run --release -p floodwall-bench --bin floodwall-tracing-cost -- [--calls 10000] [--rounds 10] [--path redis]
//!
//! `--calls` is per round on the Redis path; the cached and memory paths make 10x as many. The
//! checks run in a task on a one-worker runtime, as a server's handler would;
//! `--caller-on-main-thread` makes them from `block_on` on the main thread instead, so every Redis
//! reply crosses threads (how this bench ran before).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use floodwall::{telemetry, CacheOptions, CheckOptions, FallbackMode, Limiter};
use floodwall_testkit::RedisServer;
use hdrhistogram::Histogram;

/// A stand-in OTLP/HTTP collector: reads each request and answers 200, so export really happens.
/// Runs in a child process (`--sink`), as a collector would, so its CPU is not the limiter's.
/// Counts the spans it receives (each carries the name `floodwall.check` once); `GET` returns
/// the count.
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
                    let n = spans.load(Ordering::Relaxed).to_string();
                    let _ = write!(r.get_mut(), "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{n}", n.len());
                    return;
                }
                let name = b"floodwall.check";
                spans.fetch_add(body.windows(name.len()).filter(|w| w == name).count() as u64, Ordering::Relaxed);
                let _ = r.get_mut().write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\ncontent-type: application/x-protobuf\r\n\r\n");
            }
        });
    }
}

fn spans_received(sink: u16) -> u64 {
    let mut c = TcpStream::connect(("127.0.0.1", sink)).expect("sink");
    c.write_all(b"GET /count HTTP/1.1\r\nhost: sink\r\nconnection: close\r\n\r\n").expect("ask sink");
    let mut reply = String::new();
    c.read_to_string(&mut reply).expect("sink reply");
    reply.rsplit("\r\n").next().and_then(|n| n.parse().ok()).expect("span count")
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

/// CPU time of this process, all threads (also those that exited), in µs; /proc ticks are 10 ms.
fn process_cpu_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after_comm = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = after_comm.split(' ').collect();
    // fields 14 and 15 (utime, stime) of proc(5), counted from the state field (3)
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks * 10_000
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split(' ').take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
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
                let opts = telemetry::TraceOptions { otlp_endpoint: Some(format!("http://127.0.0.1:{sink}/v1/traces")), sampling_ratio: 1.0, ..Default::default() };
                telemetry::configure_tracing(&opts).expect("tracing");
            }
            Setting::NoExport => {
                telemetry::configure_tracing(&telemetry::TraceOptions { sampling_ratio: 1.0, ..Default::default() }).expect("tracing");
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
    for i in 0..calls {
        let key = &names[(i % keys) as usize];
        let tp = if s == Setting::Export10 && i % 10 != 0 { unsampled } else { sampled };
        let t0 = Instant::now();
        let d = l.check_with(key, CheckOptions { cost: 1, traceparent: Some(tp) }).await.expect("check");
        h.record(t0.elapsed().as_nanos() as u64).ok();
        *t.sources.entry(d.source.as_str()).or_default() += 1;
    }
    t.round_means.push(h.mean() / 1000.0);
    t.calls += calls;
    match &mut t.hist {
        Some(acc) => acc.add(h).expect("same bounds"),
        None => t.hist = Some(h),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn pct(on: f64, off: f64) -> f64 {
    100.0 * (on / off - 1.0)
}

/// Tracing settings are switched on a blocking thread: the OTLP exporter's HTTP client runs its
/// own runtime, which must not be created or dropped on a runtime worker.
async fn switch(s: Setting, sink: u16) {
    tokio::task::spawn_blocking(move || s.apply(sink)).await.expect("switch tracing");
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
    let paths: [(&str, &Limiter, u64, u64); 3] = [("redis", &redis, calls, 1000), ("cached", &cached, calls * 10, 10), ("memory", &memory, calls * 10, 1000)];
    println!("{:<7} {:<11} {:>9} {:>9} {:>9} {:>9}  sources", "path", "tracing", "mean µs", "p50 µs", "p99 µs", "cpu µs");
    for (name, l, n, keys) in paths.into_iter().filter(|p| only.as_deref().is_none_or(|o| o == p.0)) {
        let mut tallies: Vec<Tally> = SETTINGS.iter().map(|_| Tally::default()).collect();
        for s in SETTINGS {
            switch(s, sink).await;
            round(l, n / 10, keys, s, &mut Tally::default()).await; // warm up
        }
        switch(Setting::Off, sink).await; // the warm-up's spans reach the collector before it is asked
        let received0 = spans_received(sink);
        for r in 0..rounds {
            for j in 0..SETTINGS.len() {
                let i = (j + r) % SETTINGS.len();
                let cpu0 = process_cpu_us();
                switch(SETTINGS[i], sink).await;
                round(l, n, keys, SETTINGS[i], &mut tallies[i]).await;
                switch(Setting::Off, sink).await; // flushes the round's spans: their CPU counts here
                tallies[i].cpu_us += process_cpu_us() - cpu0;
            }
        }
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
            let ratios: Vec<f64> = t.round_means.iter().zip(&off.round_means).map(|(a, b)| pct(*a, *b)).collect();
            println!(
                "{:<7} {:<11} {:>8.1}% {:>8.1}% {:>8.1}% {:>+9.2}  (median of per-round mean changes {:+.1}%)",
                name,
                format!("+{}", s.label()),
                pct(t.hist().mean(), off.hist().mean()),
                pct(t.hist().value_at_quantile(0.5) as f64, off.hist().value_at_quantile(0.5) as f64),
                pct(t.hist().value_at_quantile(0.99) as f64, off.hist().value_at_quantile(0.99) as f64),
                (t.cpu_us as f64 / t.calls as f64) - (off.cpu_us as f64 / off.calls as f64),
                median(ratios)
            );
        }
        let exported = tallies[1].calls + tallies[3].calls / 10;
        println!("{name}: spans received by the collector: {} of {exported} sampled with export", spans_received(sink) - received0);
        println!("load average after {name}: {}", load_average());
    }
}

fn main() {
    let mut calls = 10_000u64;
    let mut rounds = 10;
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
