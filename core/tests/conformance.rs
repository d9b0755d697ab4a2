//! Runs every scenario in tests/conformance/ against the embedded store and against a real
//! redis-server, on the same manual timeline: the Lua scripts and their Rust twins must agree.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use floodwall::{Algorithm, FakeClock, Limiter};
use floodwall_testkit::RedisServer;
use serde_json::Value;

const T0_MS: u64 = 1_728_000_000_000;

fn scenarios() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("tests/conformance exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable scenario");
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 5, "expected the scenario files, found {}", out.len());
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn run(file: &str, sc: &Value, redis: Option<&RedisServer>) {
    let algorithm = Algorithm::parse(sc["algorithm"].as_str().unwrap()).unwrap();
    let specs: Vec<&str> = sc["limits"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let clock = FakeClock::new(T0_MS * 1000);
    let mut b = Limiter::builder(common::limits(&specs)).algorithm(algorithm).clock(Arc::new(clock.clone()));
    if let Some(r) = redis {
        b = common::exact(b.redis_url(r.url()).redis_time_from_clock().prefix(common::unique_prefix("conf")));
    }
    let limiter = b.build().unwrap();
    let store = if redis.is_some() { "redis" } else { "memory" };
    for (i, step) in sc["steps"].as_array().unwrap().iter().enumerate() {
        clock.set_us((T0_MS + step["at_ms"].as_u64().unwrap()) * 1000);
        let key = step["key"].as_str().unwrap();
        let op = step.get("op").and_then(Value::as_str).unwrap_or("check");
        let cost = step.get("cost").and_then(Value::as_u64).unwrap_or(1);
        let repeat = step.get("repeat").and_then(Value::as_u64).unwrap_or(1);
        for r in 0..repeat {
            let ctx = format!("{file} [{store}] step {i} (repeat {r})");
            let d = match op {
                "check" => limiter.check_n(key, cost).await.unwrap(),
                "peek" => limiter.peek(key).await.unwrap(),
                "reset" => {
                    limiter.reset(key).await.unwrap();
                    continue;
                }
                other => panic!("{ctx}: unknown op {other}"),
            };
            let Some(exp) = step.get("expect") else { continue };
            if let Some(a) = exp.get("allowed") {
                assert_eq!(d.allowed, a.as_bool().unwrap(), "{ctx}: allowed; {d:?}");
            }
            if let Some(v) = exp.get("remaining") {
                assert_eq!(d.remaining, v.as_u64().unwrap(), "{ctx}: remaining; {d:?}");
            }
            if let Some(v) = exp.get("limit") {
                assert_eq!(d.limit, v.as_u64().unwrap(), "{ctx}: limit; {d:?}");
            }
            if let Some(v) = exp.get("limited_by") {
                assert_eq!(
                    d.limited_by.map(|l| l.to_string()),
                    v.as_str().map(String::from),
                    "{ctx}: limited_by; {d:?}"
                );
            }
            for (field, got) in [("retry_after_ms", d.retry_after), ("reset_after_ms", Some(d.reset_after))] {
                match exp.get(field) {
                    Some(Value::Null) => assert!(got.is_none(), "{ctx}: {field} should be none; {d:?}"),
                    Some(v) => {
                        let want = v.as_f64().unwrap();
                        let got = got.map(ms).unwrap_or(-1.0);
                        assert!((got - want).abs() <= 1.0, "{ctx}: {field} {got} != {want}; {d:?}");
                    }
                    None => {}
                }
            }
        }
    }
}

#[tokio::test]
async fn scenarios_pass_on_the_memory_store() {
    for (file, sc) in scenarios() {
        run(&file, &sc, None).await;
    }
}

#[tokio::test]
async fn scenarios_pass_on_redis() {
    let server = RedisServer::start();
    for (file, sc) in scenarios() {
        run(&file, &sc, Some(&server)).await;
    }
}
