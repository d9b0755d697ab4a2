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

/// The limiter's Redis in the compose file: reachable on the compose network only, a password
/// from the environment, no eviction; Grafana behind a login; published ports on loopback only.
#[test]
fn compose_keeps_redis_private_and_grafana_behind_a_login() {
    let compose = yaml(&root().join("docker-compose.yml"));
    let services = compose["services"].as_mapping().expect("services");
    let redis = &compose["services"]["redis"];
    assert!(redis.get("ports").is_none(), "the limiter's Redis publishes a port: {:?}", redis["ports"]);
    assert!(
        redis["environment"]["FLOODWALL_REDIS_PASSWORD"].as_str().unwrap().starts_with("${FLOODWALL_REDIS_PASSWORD:?"),
        "the password must come from the environment, required"
    );
    let entry: Vec<&str> = redis["entrypoint"].as_sequence().unwrap().iter().filter_map(Yaml::as_str).collect();
    assert!(entry.join(" ").contains("/etc/floodwall-redis/limiter.conf"), "{entry:?}");
    for (name, svc) in services {
        for port in svc.get("ports").and_then(Yaml::as_sequence).into_iter().flatten() {
            let port = port.as_str().unwrap();
            assert!(port.starts_with("127.0.0.1:"), "{name:?} publishes {port} on every interface");
        }
        if let Some(cmd) = svc.get("command").and_then(Yaml::as_sequence) {
            let words: Vec<&str> = cmd.iter().filter_map(Yaml::as_str).collect();
            if words.first() == Some(&"redis-server") {
                assert!(words.windows(2).any(|w| w == ["--bind", "127.0.0.1"]), "{name:?}: {words:?}");
                assert!(words.windows(2).any(|w| w == ["--maxmemory-policy", "noeviction"]), "{name:?}: {words:?}");
            }
        }
    }
    let grafana = &compose["services"]["grafana"]["environment"];
    assert_eq!(grafana["GF_AUTH_ANONYMOUS_ENABLED"].as_str(), Some("false"));
    assert!(grafana.get("GF_AUTH_ANONYMOUS_ORG_ROLE").is_none());
    assert!(grafana["GF_SECURITY_ADMIN_PASSWORD"].as_str().unwrap().starts_with("${GRAFANA_ADMIN_PASSWORD:?"));
    for app in ["fastapi-demo", "express-demo"] {
        let url = compose["services"][app]["environment"]["FLOODWALL_REDIS_URL"].as_str().unwrap();
        assert!(url.starts_with("redis://floodwall:${FLOODWALL_REDIS_PASSWORD"), "{app}: {url}");
    }
}

/// A redis-server this test starts from deploy/redis/limiter.conf (its port and file paths moved
/// to a free port and a temporary directory) and the ACL written from users.acl.in as the compose
/// entrypoint writes it. Killed on drop.
struct ConfiguredRedis {
    child: std::process::Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for ConfiguredRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_configured(password: &str) -> ConfiguredRedis {
    use sha2::{Digest, Sha256};
    let port = floodwall_testkit::free_port();
    let dir = std::env::temp_dir().join(format!("floodwall-deploy-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hash: String = Sha256::digest(password.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let acl = std::fs::read_to_string(root().join("deploy/redis/users.acl.in")).unwrap();
    std::fs::write(dir.join("users.acl"), acl.replace("@PASSWORD_SHA256@", &hash)).unwrap();
    let mut conf = String::new();
    for line in std::fs::read_to_string(root().join("deploy/redis/limiter.conf")).unwrap().lines() {
        let line = match line.split_whitespace().next() {
            Some("port") => format!("port {port}\nbind 127.0.0.1\ndir {}", dir.display()),
            Some("aclfile") => format!("aclfile {}", dir.join("users.acl").display()),
            _ => line.to_string(),
        };
        conf.push_str(&line);
        conf.push('\n');
    }
    std::fs::write(dir.join("limiter.conf"), conf).unwrap();
    let child = std::process::Command::new("redis-server")
        .arg(dir.join("limiter.conf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    ConfiguredRedis { child, port, dir }
}

/// redis-server accepts deploy/redis/limiter.conf and its ACL, the default user is off, and the
/// `floodwall` user may run everything floodwall runs (every algorithm, batches, the cache layer's
/// scripts, reset) and nothing outside its keys.
#[tokio::test]
async fn the_deployed_redis_config_and_acl_let_floodwall_do_its_work_and_nothing_else() {
    use floodwall::{Algorithm, BatchItem, CacheOptions, FallbackMode, Limiter};
    let password = "0123456789abcdef0123456789abcdef";
    let mut server = start_configured(password);
    let url = format!("redis://floodwall:{password}@127.0.0.1:{}", server.port);
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = None;
    for _ in 0..250 {
        if let Ok(c) = client.get_multiplexed_async_connection().await {
            conn = Some(c);
            break;
        }
        assert!(server.child.try_wait().unwrap().is_none(), "redis-server refused deploy/redis/limiter.conf");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut conn = conn.expect("redis-server with the deployed config never answered");
    let anonymous = redis::Client::open(format!("redis://127.0.0.1:{}", server.port)).unwrap();
    let mut anon = anonymous.get_multiplexed_async_connection().await.unwrap();
    let e = redis::cmd("PING").query_async::<String>(&mut anon).await.unwrap_err();
    assert!(e.to_string().contains("NOAUTH"), "the default user answers: {e}");
    for cmd in [&["CONFIG", "GET", "maxmemory-policy"][..], &["FLUSHALL"], &["SET", "other:key", "x"], &["KEYS", "*"]] {
        let r = redis::cmd(cmd[0]).arg(&cmd[1..]).query_async::<redis::Value>(&mut conn).await;
        assert!(r.is_err(), "the floodwall user may run {cmd:?}");
    }
    let limits = floodwall::parse_limits(&["3/minute", "10/hour"]).unwrap();
    for alg in [Algorithm::SlidingWindow, Algorithm::TokenBucket, Algorithm::SlidingLog] {
        for cache in [false, true] {
            let mut b = Limiter::builder(limits.clone())
                .algorithm(alg)
                .redis_url(url.clone())
                .timeout(std::time::Duration::from_secs(5))
                .fallback(FallbackMode::Error);
            if cache && alg != Algorithm::SlidingLog {
                b = b.cache(CacheOptions::default());
            }
            let l = b.build().unwrap();
            let key = format!("user:{alg}:{cache}");
            let mut allowed = 0;
            for _ in 0..5 {
                allowed += l.check(&key).await.unwrap().allowed as usize;
            }
            assert_eq!(allowed, 3, "{alg} cache={cache}: every check answered by Redis, none refused");
            l.peek(&key).await.unwrap();
            let items: Vec<BatchItem> = (0..4).map(|i| BatchItem::new(["a", "b", "c", "d"][i], 1, None)).collect();
            assert!(l.decide_many(&items).await.into_iter().all(|d| d.is_ok()), "{alg} cache={cache}");
            l.reset(&key).await.unwrap();
            assert!(l.check(&key).await.unwrap().allowed, "{alg} cache={cache}: reset");
        }
    }
    assert!(server.child.try_wait().unwrap().is_none(), "redis-server exited");
}
