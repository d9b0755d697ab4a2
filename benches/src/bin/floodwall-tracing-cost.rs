//! What tracing costs: decision latency with floodwall's spans off, then on (100% sampled,
//! exported over OTLP/HTTP to a local sink), on the Redis path and on the local (memory) path.
//! Runs alternate off/on rounds so drift in the machine's load hits both alike.
//!
//!   cargo run --release -p floodwall-bench --bin floodwall-tracing-cost -- [--calls 20000] [--rounds 3]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use floodwall::{telemetry, CheckOptions, FallbackMode, Limiter};
use floodwall_testkit::RedisServer;
use hdrhistogram::Histogram;

/// A stand-in OTLP/HTTP receiver: reads each request and answers 200, so export really happens.
fn otlp_sink() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
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
                    let _ = r.get_mut().write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\ncontent-type: application/x-protobuf\r\n\r\n");
                }
            });
        }
    });
    port
}

async fn round(l: &Limiter, calls: u64, tp: &str) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..calls {
        let key = format!("id:{}", i % 1000);
        let t0 = Instant::now();
        l.check_with(&key, CheckOptions { cost: 1, traceparent: Some(tp) }).await.expect("check");
        h.record(t0.elapsed().as_nanos() as u64).ok();
    }
    h
}

fn main() {
    let mut calls = 20_000u64;
    let mut rounds = 3;
    let mut it = std::env::args().skip(1);
    while let Some(f) = it.next() {
        match f.as_str() {
            "--calls" => calls = it.next().and_then(|v| v.parse().ok()).expect("--calls N"),
            "--rounds" => rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            other => panic!("unknown flag {other}"),
        }
    }
    let server = RedisServer::start();
    let sink = otlp_sink();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    println!("floodwall-tracing-cost: {calls} sequential checks per round, {rounds} rounds, OTLP/HTTP sink on 127.0.0.1:{sink}");
    println!("{:<10} {:<8} {:>10} {:>10} {:>10}", "path", "tracing", "mean µs", "p50 µs", "p99 µs");
    rt.block_on(async {
        let redis = Limiter::builder(floodwall::parse_limits(&["1000000/minute"]).unwrap())
            .redis_url(server.url())
            .timeout(Duration::from_secs(5))
            .fallback(FallbackMode::Error)
            .build()
            .unwrap();
        let memory = Limiter::builder(floodwall::parse_limits(&["1000000/minute"]).unwrap()).build().unwrap();
        for (name, l) in [("redis", &redis), ("memory", &memory)] {
            round(l, calls / 10, tp).await; // warm up
            let (mut off, mut on) = (Histogram::<u64>::new(3).unwrap(), Histogram::<u64>::new(3).unwrap());
            for _ in 0..rounds {
                telemetry::disable_tracing();
                off.add(round(l, calls, tp).await).unwrap();
                let opts = telemetry::TraceOptions { otlp_endpoint: Some(format!("http://127.0.0.1:{sink}/v1/traces")), ..Default::default() };
                telemetry::configure_tracing(&opts).expect("tracing");
                on.add(round(l, calls, tp).await).unwrap();
            }
            telemetry::disable_tracing();
            for (label, h) in [("off", &off), ("on", &on)] {
                println!(
                    "{:<10} {:<8} {:>10.2} {:>10.2} {:>10.2}",
                    name,
                    label,
                    h.mean() / 1000.0,
                    h.value_at_quantile(0.5) as f64 / 1000.0,
                    h.value_at_quantile(0.99) as f64 / 1000.0
                );
            }
            println!("{:<10} {:<8} {:>9.1}% {:>9.1}% {:>9.1}%", name, "added", 100.0 * (on.mean() / off.mean() - 1.0),
                100.0 * (on.value_at_quantile(0.5) as f64 / off.value_at_quantile(0.5) as f64 - 1.0),
                100.0 * (on.value_at_quantile(0.99) as f64 / off.value_at_quantile(0.99) as f64 - 1.0));
        }
    });
}
