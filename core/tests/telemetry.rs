//! Spans per decision under the caller's trace, Prometheus text of live limiters, JSON logs with
//! trace ids. Tracing state is process-wide, so this binary holds one test that walks through it.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::limits;
use floodwall::secret::{KeySecret, SECRET_ENV};
use floodwall::{telemetry, CheckOptions, FallbackMode, Limiter};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";
/// This binary's deployment secret: every instance that sets it hashes a key alike.
const SECRET: &str = "telemetry-test-secret-0123456789abcdef";

#[tokio::test]
async fn spans_metrics_and_logs() {
    // Before anything reads the process secret (one test in this binary, so nothing else has).
    std::env::set_var(SECRET_ENV, SECRET);
    // --- spans: a child of the caller's span, the key hashed
    telemetry::enable_test_tracing(false).unwrap();
    let l = Limiter::builder(limits(&["2/minute"])).name("telemetry-test").build().unwrap();
    let tp = format!("00-{TRACE}-{PARENT}-01");
    for _ in 0..3 {
        l.check_with("user:42", CheckOptions::new(1, Some(&tp))).await.unwrap();
    }
    l.check("untraced-parent").await.unwrap();
    let spans = telemetry::finished_spans();
    assert_eq!(spans.len(), 4, "{spans:?}");
    for s in &spans[..3] {
        assert_eq!(
            (s.name.as_str(), s.trace_id.as_str(), s.parent_span_id.as_str()),
            ("floodwall.check", TRACE, PARENT)
        );
        assert_eq!(s.attributes["floodwall.source"], "memory");
        assert_eq!(s.attributes["floodwall.key_hash"], telemetry::key_hash("user:42"));
        assert!(!s.attributes.contains_key("floodwall.key"), "raw keys stay out by default");
        assert_eq!(s.attributes["floodwall.algorithm"], "sliding_window");
        assert_eq!(s.attributes["floodwall.limits"], "2/minute");
        assert_eq!((s.attributes["floodwall.op"].as_str(), s.attributes["floodwall.cost"].as_str()), ("check", "1"));
    }
    // 16 hex digits as before, but keyed: not the first 8 bytes of bare SHA-256 ("ea3fd43b..."),
    // which anyone can compute for all 2^32 IPv4 keys; the same under the same secret elsewhere.
    let h = telemetry::key_hash("user:42");
    assert!(h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{h}");
    assert_ne!(h, "ea3fd43be1e57d62", "bare SHA-256");
    let ours = KeySecret::new("secret", SECRET.as_bytes()).unwrap();
    let other = KeySecret::new("secret", &[7u8; 32]).unwrap();
    assert_eq!(h, telemetry::key_hash_with(&ours, "user:42"), "another instance with the secret agrees");
    assert_ne!(h, telemetry::key_hash_with(&other, "user:42"), "another secret, another hash");
    assert_ne!(h, telemetry::key_hash("user:43"));
    assert_eq!(spans[2].attributes["floodwall.allowed"], "false");
    assert_eq!(spans[2].attributes["floodwall.limited_by"], "2/minute");
    assert_ne!(spans[3].trace_id, TRACE, "no parent: a new trace");

    // --- no key text on a span, in attributes, status or events: an over-long key (whose error
    // quotes its start) and a store that fails
    telemetry::clear_finished_spans();
    let long = format!("user:alice-{}", "x".repeat(5000));
    l.check(&long).await.unwrap_err();
    let port = floodwall_testkit::free_port();
    let failing = Limiter::builder(limits(&["2/minute"]))
        .redis_url(format!("redis://127.0.0.1:{port}"))
        .timeout(Duration::from_millis(200))
        .fallback(FallbackMode::Error)
        .build()
        .unwrap();
    failing.check("user:alice-7").await.unwrap_err();
    let spans = telemetry::finished_spans();
    assert_eq!(spans.len(), 2, "{spans:?}");
    for s in &spans {
        assert!(s.error && !s.status.is_empty(), "{s:?}");
        let text = format!("{:?} {} {:?}", s.attributes, s.status, s.events);
        assert!(!text.contains("alice"), "key text on a span: {text}");
    }
    assert!(spans[0].status.contains("bytes"), "still says what was wrong: {}", spans[0].status);

    telemetry::enable_test_tracing(true).unwrap();
    l.check("user:7").await.unwrap();
    assert_eq!(telemetry::finished_spans()[0].attributes["floodwall.key"], "user:7");
    l.check(&long).await.unwrap_err();
    assert!(telemetry::finished_spans()[1].status.contains("user:alice"), "record_raw_keys: the error as it is");

    // --- sampling: a parent passed in is followed whatever the ratio (adapters pass only a
    // trusted one); without one, the ratio decides
    telemetry::enable_test_tracing_with(&telemetry::TraceOptions::default().sampling_ratio(0.0)).unwrap();
    let sampled = Limiter::builder(limits(&["2/minute"])).name("telemetry-sampled").build().unwrap();
    sampled.check("user:8").await.unwrap();
    assert!(telemetry::finished_spans().is_empty(), "ratio 0: no root span is kept");
    sampled.check_with("user:8", CheckOptions::new(1, Some(&tp))).await.unwrap();
    assert_eq!(telemetry::finished_spans().len(), 1, "a sampled parent is followed");

    // --- a shadow check: counted and traced as what would have happened, never as a denial
    let shadow = Limiter::builder(limits(&["1/minute"])).name("telemetry-shadow").build().unwrap();
    telemetry::clear_finished_spans();
    for _ in 0..3 {
        shadow.check_with("user:9", CheckOptions::new(1, Some(&tp)).shadow(true)).await.unwrap();
    }
    let spans = telemetry::finished_spans();
    assert_eq!(spans.len(), 3, "{spans:?}");
    assert_eq!(spans[0].attributes["floodwall.result"], "allowed");
    for s in &spans {
        assert_eq!(s.attributes["floodwall.shadow"], "true", "{s:?}");
    }
    assert_eq!(spans[2].attributes["floodwall.result"], "shadow_denied");
    assert_eq!(spans[2].attributes["floodwall.allowed"], "false", "the limiter's own answer");
    telemetry::clear_finished_spans();
    sampled.check_with("user:8", CheckOptions::new(1, Some(&tp))).await.unwrap();
    let plain = &telemetry::finished_spans()[0];
    assert!(!plain.attributes.contains_key("floodwall.shadow") && !plain.attributes.contains_key("floodwall.result"));

    // --- metrics: Prometheus text names the limiter and counts by source and result
    let text = telemetry::prometheus_text();
    for (result, n) in [("allowed", 1), ("denied", 0), ("shadow_denied", 2)] {
        let line =
            format!(r#"floodwall_decisions_total{{limiter="telemetry-shadow",source="memory",result="{result}"}} {n}"#);
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
    assert!(
        text.contains(
            r#"floodwall_decisions_total{limiter="telemetry-test",source="memory",result="shadow_denied"} 0"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"floodwall_decisions_total{limiter="telemetry-test",source="memory",result="allowed"} 4"#),
        "{text}"
    );
    assert!(
        text.contains(r#"floodwall_decisions_total{limiter="telemetry-test",source="memory",result="denied"} 1"#),
        "{text}"
    );
    assert!(text.contains("# TYPE floodwall_redis_latency_seconds histogram"));

    // --- logs: a store failure is one JSON line carrying the decision's trace id
    let cap = Capture::default();
    telemetry::install_json_logs_to("floodwall=warn", cap.clone()).unwrap();
    let port = floodwall_testkit::free_port();
    let down = Limiter::builder(limits(&["2/minute"]))
        .redis_url(format!("redis://127.0.0.1:{port}"))
        .timeout(Duration::from_millis(200))
        .fallback(FallbackMode::Open)
        .name("down")
        .build()
        .unwrap();
    let d = down.check_with("k", CheckOptions::new(1, Some(&tp))).await.unwrap();
    assert_eq!(d.source, floodwall::Source::Fallback);
    let logs = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
    let line =
        logs.lines().find(|l| l.contains("Redis unavailable")).unwrap_or_else(|| panic!("no warning in {logs:?}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["level"], "WARN");
    assert_eq!(v["fields"]["trace_id"], TRACE);
    assert_eq!(v["fields"]["fallback"], "open");
    let text = telemetry::prometheus_text();
    assert!(
        text.contains(r#"floodwall_decisions_total{limiter="down",source="fallback",result="allowed"} 1"#),
        "{text}"
    );
    telemetry::disable_tracing();
}
