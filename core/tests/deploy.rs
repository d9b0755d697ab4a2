//! What users start (docker-compose.yml and deploy/) cannot run here (no Docker engine), so this
//! checks what can be checked: the files parse, every file they mount or copy exists, and the
//! Grafana dashboard's queries name metrics floodwall really exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_norway::Value as Yaml;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml(path: &Path) -> Yaml {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

#[test]
fn compose_parses_and_everything_it_mounts_exists() {
    let compose = yaml(&root().join("docker-compose.yml"));
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().filter_map(|k| k.as_str()).collect();
    for want in [
        "redis",
        "fastapi-demo",
        "express-demo",
        "prometheus",
        "grafana",
        "tempo",
        "otel-collector",
        "redis-cluster-init",
    ] {
        assert!(names.contains(want), "service {want} missing: {names:?}");
    }
    for (name, svc) in services {
        if let Some(build) = svc.get("build") {
            let ctx = root().join(build["context"].as_str().unwrap_or("."));
            let dockerfile = ctx.join(build["dockerfile"].as_str().unwrap_or("Dockerfile"));
            assert!(dockerfile.is_file(), "{name:?}: {} missing", dockerfile.display());
            // every COPY source outside the build stage's own output must exist in the context
            for line in std::fs::read_to_string(&dockerfile).unwrap().lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                if words.first() == Some(&"COPY") && !line.contains("--from=") && words.len() >= 3 {
                    for src in &words[1..words.len() - 1] {
                        assert!(ctx.join(src).exists(), "{}: COPY {src} missing", dockerfile.display());
                    }
                }
            }
        }
        for vol in svc.get("volumes").and_then(Yaml::as_sequence).into_iter().flatten() {
            let host = vol.as_str().unwrap().split(':').next().unwrap();
            if host.starts_with("./") {
                let path = root().join(host);
                assert!(path.exists(), "{name:?} mounts {host}, which is missing");
                if path.is_file() && (host.ends_with(".yml") || host.ends_with(".yaml")) {
                    yaml(&path);
                }
            }
        }
    }
    for f in [
        "deploy/grafana/provisioning/datasources/datasources.yml",
        "deploy/grafana/provisioning/dashboards/dashboards.yml",
    ] {
        yaml(&root().join(f));
    }
}

#[test]
fn dashboard_queries_name_exported_metrics() {
    let text = std::fs::read_to_string(root().join("deploy/grafana/dashboards/floodwall.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON is valid");
    let exported: BTreeSet<&str> = floodwall::telemetry::families().iter().map(|f| f.name).collect();
    let mut titles = Vec::new();
    let mut used = BTreeSet::new();
    for panel in dash["panels"].as_array().expect("panels") {
        titles.push(panel["title"].as_str().unwrap().to_string());
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("floodwall_") {
                    let base = ["_bucket", "_sum", "_count"].iter().fold(word, |w, s| w.strip_suffix(s).unwrap_or(w));
                    assert!(
                        exported.contains(base),
                        "panel {:?} queries {word}, which floodwall does not export ({exported:?})",
                        panel["title"]
                    );
                    used.insert(base.to_string());
                }
            }
        }
    }
    for want in [
        "Decisions/s by result",
        "Denial ratio",
        "Cache + lease hit ratio",
        "Redis p99 latency",
        "Circuit breaker state",
        "Fallback",
    ] {
        assert!(titles.iter().any(|t| t.starts_with(want)), "no panel {want:?}: {titles:?}");
    }
    assert!(used.len() >= 5, "{used:?}");
}
