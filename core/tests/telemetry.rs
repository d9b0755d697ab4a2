//! Spans per decision under the caller's trace, Prometheus text of live limiters, JSON logs with
//! trace ids. Tracing state is process-wide, so this binary holds one test that walks through it.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::limits;
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

#[tokio::test]
async fn spans_metrics_and_logs() {
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
    // the first 8 bytes of SHA-256, in hex: what dashboards and earlier spans already hold
    assert_eq!(telemetry::key_hash("user:42"), "ea3fd43be1e57d62");
    assert_eq!(spans[2].attributes["floodwall.allowed"], "false");
    assert_eq!(spans[2].attributes["floodwall.limited_by"], "2/minute");
    assert_ne!(spans[3].trace_id, TRACE, "no parent: a new trace");

    telemetry::enable_test_tracing(true).unwrap();
    l.check("user:7").await.unwrap();
    assert_eq!(telemetry::finished_spans()[0].attributes["floodwall.key"], "user:7");

    // --- metrics: Prometheus text names the limiter and counts by source and result
    let text = telemetry::prometheus_text();
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
