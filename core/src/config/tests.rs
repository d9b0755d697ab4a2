//! The file shape of issue 20, its errors (each naming its place), interpolation, overrides,
//! redaction and the committed schema.

use std::collections::HashMap;

use super::*;
use crate::decision::Source;

const SECRET: &str = "0123456789abcdef0123456789abcdef-jwt";

/// The example of issue 20, as committed in examples/floodwall.yaml.
const EXAMPLE: &str = include_str!("../../../examples/floodwall.yaml");

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |k: &str| map.get(k).cloned()
}

fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config> {
    Config::from_str_with_env(text, Format::Yaml, env(vars))
}

fn load_err(text: &str, vars: &[(&str, &str)]) -> String {
    match load(text, vars) {
        Ok(c) => panic!("accepted: {text}\n{c:?}"),
        Err(e) => {
            assert_eq!(e.kind(), crate::ErrorKind::Config);
            e.to_string()
        }
    }
}

/// A valid file with one extra piece of text, for error tables.
fn with_rule(rule: &str) -> String {
    format!("rules:\n  - name: a\n    limits: 1/second\n  - {rule}\n")
}

#[test]
fn the_issues_example_loads() {
    let c = load(EXAMPLE, &[("JWT_SECRET", SECRET)]).unwrap();
    assert!(c.watch);
    let redis = c.redis.as_ref().unwrap();
    assert_eq!(redis.url.as_deref(), Some("redis://127.0.0.1:6379"));
    assert_eq!(redis.timeout_ms, 50);
    assert_eq!(c.fallback, FallbackMode::Local { expected_instances: 1 });
    assert_eq!(c.http.trusted_proxies, ["10.0.0.0/8"]);
    assert_eq!(c.http.jwt.as_ref().unwrap().secret.as_deref(), Some(SECRET));
    assert_eq!(c.http.headers, "draft-10");
    assert_eq!(c.defaults.algorithm, Algorithm::SlidingWindow);
    assert_eq!(c.defaults.key, "ip");
    let names: Vec<&str> = c.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["login", "api", "search-trial"]);
    let login = &c.rules[0];
    assert_eq!(login.methods, ["POST"]);
    assert_eq!(login.limits, [Limit::per_minute(5).unwrap(), Limit::per_day(100).unwrap()]);
    assert_eq!(c.rule_key(login), "ip");
    assert_eq!(c.rule_key(&c.rules[1]), "user");
    assert_eq!(c.rules[1].limits, [Limit::per_minute(100).unwrap()]);
    assert!(c.rules[2].shadow && !c.rules[0].shadow);
    assert_eq!(c.rules[2].limits, [Limit::per_second(2).unwrap()]);
}

#[test]
fn the_example_round_trips_as_yaml_and_as_json() {
    let c = load(EXAMPLE, &[("JWT_SECRET", SECRET), ("REDIS_URL", "redis://db:6379/2")]).unwrap();
    assert_eq!(c.redis.as_ref().unwrap().url.as_deref(), Some("redis://db:6379/2"));
    let yaml = serde_norway::to_string(&c).unwrap();
    assert_eq!(load(&yaml, &[]).unwrap(), c, "{yaml}");
    let json = serde_json::to_string_pretty(&c).unwrap();
    assert_eq!(Config::from_str_with_env(&json, Format::Json, env(&[])).unwrap(), c, "{json}");
}

#[test]
fn the_same_file_as_json() {
    let json = r#"{
        "watch": true,
        "redis": {"url": "${REDIS_URL:-redis://127.0.0.1:6379}", "timeout_ms": 50},
        "fallback": "local",
        "http": {"trusted_proxies": ["10.0.0.0/8"], "jwt": {"secret": "${JWT_SECRET}"}, "headers": "draft-10"},
        "defaults": {"algorithm": "sliding_window", "key": "ip"},
        "rules": [
            {"name": "login", "path": "/login", "methods": ["POST"], "limits": ["5/minute", "100/day"]},
            {"name": "api", "path": "/api/*", "key": "user", "limits": "100/minute"},
            {"name": "search-trial", "path": "/search", "limits": "2/second", "shadow": true}
        ]
    }"#;
    let vars = [("JWT_SECRET", SECRET)];
    let from_json = Config::from_str_with_env(json, Format::Json, env(&vars)).unwrap();
    assert_eq!(from_json, load(EXAMPLE, &vars).unwrap());
}

#[test]
fn camel_case_spellings_are_accepted() {
    let text = r#"{"redis": {"clusterNodes": ["redis://a:7000"], "timeoutMs": 20, "tlsCaFile": "ca.pem"},
        "http": {"trustedProxies": ["10.0.0.1"], "ipv6Prefix": 48, "forwardedHeader": "forwarded",
                 "trustUnixSocket": true, "apiKeys": {"allow": ["k-1"], "keySecret": "0123456789abcdef0123456789abcdef"}},
        "rules": [{"name": "r", "limits": "1/s"}]}"#;
    let c = Config::from_str_with_env(text, Format::Json, env(&[])).unwrap();
    let r = c.redis.unwrap();
    assert_eq!((r.cluster_nodes.len(), r.timeout_ms, r.tls_ca_file.as_deref()), (1, 20, Some("ca.pem")));
    assert_eq!((c.http.ipv6_prefix, c.http.forwarded_header.as_str()), (48, "forwarded"));
    assert!(c.http.trust_unix_socket);
    assert_eq!(c.http.api_keys.unwrap().allow, ["k-1"]);
}

/// The shared option types take both spellings too, in a file and from a binding (LimiterConfig).
#[test]
fn camel_case_spellings_of_the_shared_option_types() {
    let text = r#"{"breaker": {"failureThreshold": 3, "slowCallMs": 40},
        "cache": {"batchWindowUs": 100, "denialCache": false},
        "telemetry": {"samplingRatio": 0.5, "serviceName": "api"},
        "fallback": {"mode": "local", "expectedInstances": 4}}"#;
    let c = Config::from_str_with_env(text, Format::Json, env(&[])).unwrap();
    assert_eq!((c.breaker.failure_threshold, c.breaker.slow_call_ms), (3, 40));
    let cache = c.cache.unwrap();
    assert_eq!((cache.batch_window_us, cache.denial_cache), (100, false));
    let t = c.telemetry.unwrap();
    assert_eq!((t.sampling_ratio, t.service_name.as_str()), (0.5, "api"));
    assert_eq!(c.fallback, FallbackMode::Local { expected_instances: 4 });
    let lc: LimiterConfig = serde_json::from_str(
        r#"{"limits": ["1/s"], "redisUrl": "redis://h", "timeoutMs": 9, "maxIdentities": 10, "tlsCaFile": "ca.pem"}"#,
    )
    .unwrap();
    assert_eq!((lc.redis_url.as_deref(), lc.timeout_ms, lc.max_identities), (Some("redis://h"), 9, 10));
    // an alias is not a way around deny_unknown_fields
    assert!(serde_json::from_str::<LimiterConfig>(r#"{"limits": ["1/s"], "redisURL": "x"}"#).is_err());
}

#[test]
fn an_empty_file_is_every_default() {
    let c = load("", &[]).unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.http.headers, "draft-10");
    assert!(c.redis.is_none() && c.rules.is_empty());
}

#[test]
fn unknown_fields_name_their_place() {
    let cases: &[(&str, &str)] = &[
        ("limts: 5/s\n", r#""limts": unknown field `limts`, expected one of `watch`, `redis`"#),
        ("redis: {url: redis://x, timout_ms: 5}\n", r#""redis.timout_ms": unknown field `timout_ms`"#),
        ("http: {jwt: {secret: x, issuer: i, audiance: a}}\n", r#""http.jwt.audiance": unknown field `audiance`"#),
        ("breaker: {failure_treshold: 3}\n", r#""breaker.failure_treshold": unknown field"#),
        ("cache: {denial: true}\n", r#""cache.denial": unknown field"#),
        ("fallback: {mode: local, expected: 2}\n", r#""fallback.expected": unknown field"#),
        ("defaults: {keys: ip}\n", r#""defaults.keys": unknown field"#),
        (
            "rules:\n  - {name: a, limits: 1/s}\n  - {name: b, limits: 1/s}\n  - {name: c, limts: 1/s}\n",
            r#""rules[2].limts": unknown field `limts`, expected one of `name`, `path`"#,
        ),
    ];
    for (text, want) in cases {
        let got = load_err(text, &[]);
        assert!(got.starts_with("invalid setting "), "{text}: {got}");
        assert!(got.contains(want), "{text}\n got: {got}\nwant: {want}");
    }
}

#[test]
fn bad_values_name_their_place_and_rule() {
    let long = "0123456789abcdef0123456789abcdef";
    let cases: Vec<(String, &str)> = vec![
        (with_rule("{name: b, limits: 5/mintue}"), r#""rules[1].limits": invalid limit "5/mintue""#),
        (with_rule("{name: b, limits: [5/minute, 1/dya]}"), r#""rules[1].limits[1]": invalid limit "1/dya""#),
        (with_rule("{name: b, limits: 5/minute, key: usr}"), r#""rules[1].key": rule "b": invalid key scope "usr""#),
        (with_rule("{name: b, limits: 5/minute, path: 'api'}"), r#""rules[1].path": rule "b""#),
        (with_rule("{name: a, limits: 5/minute}"), r#""rules[1].name": invalid rule name "a": two rules share it"#),
        (with_rule("{name: b, limits: [5/minute, 6/minute]}"), r#""rules[1].limits": rule "b""#),
        (with_rule("{name: b, limits: 20000/day, algorithm: sliding_log}"), r#""rules[1].limits": rule "b""#),
        (with_rule("{name: b, limits: 1/s, cost: 0}"), r#""rules[1].cost""#),
        (with_rule("{name: b, limits: [], methods: [GET]}"), r#""rules[1].limits": rule "b""#),
        (with_rule("{name: b, limits: 1/s, algorithm: leaky}"), r#""rules[1].algorithm": unknown variant `leaky`"#),
        ("defaults: {key: ip+usr}\n".into(), r#""defaults.key""#),
        ("http: {jwt: {secret: short}}\n".into(), r#""http.jwt": invalid JWT secret "<5 bytes>""#),
        ("http: {jwt: {}}\n".into(), r#""http.jwt": invalid jwt"#),
        (format!("http: {{jwt: {{secret: {long}, algorithm: RS256}}}}\n"), r#""http.jwt": invalid jwt algorithm"#),
        ("http: {trusted_proxies: [10.0.0.0/33]}\n".into(), r#""http.trusted_proxies""#),
        ("http: {headers: draft-11}\n".into(), r#""http.headers": invalid header style "draft-11""#),
        ("http: {forwarded_header: x-real-ip}\n".into(), r#""http.forwarded_header""#),
        ("http: {api_keys: {key_secret: short}}\n".into(), r#""http.api_keys": invalid api_keys key_secret"#),
        ("redis: {url: 'redis://a', cluster_nodes: ['redis://b']}\n".into(), r#""redis": invalid redis"#),
        ("redis: {timeout_ms: 0}\n".into(), r#""redis.timeout_ms""#),
        ("redis: {timeout_ms: -1}\n".into(), r#""redis.timeout_ms": invalid value"#),
        ("fallback: sometimes\n".into(), r#""fallback": invalid fallback "sometimes""#),
        ("breaker: {slow_call_ratio: 2.0}\n".into(), r#""breaker""#),
        ("rules: {name: a}\n".into(), r#""rules": invalid type: map, expected a sequence"#),
        ("- a\n- b\n".into(), r#""(top level)""#),
    ];
    for (text, want) in &cases {
        let got = load_err(text, &[]);
        assert!(got.contains(want), "{text}\n got: {got}\nwant: {want}");
    }
    // no error repeats a secret it refused, whatever its shape
    for (text, secret) in [
        ("http: {jwt: {secret: short-secret-xyz}}\n", "short-secret-xyz"),
        ("http: {jwt: {secret: 98765432109876543210987654321098765}}\n", "98765432109876543210987654321098765"),
        ("http: {jwt: {secret: [hidden-in-a-list]}}\n", "hidden-in-a-list"),
        ("http: {api_keys: {allow: [sk-1, 12345678]}}\n", "12345678"),
        ("http: {api_keys: {signing_secret: {a: signing-xyz}}}\n", "signing-xyz"),
    ] {
        let got = load_err(text, &[]);
        assert!(!got.contains(secret) && got.contains("http."), "{got}");
    }
}

#[test]
fn interpolation() {
    let yaml = |v: &str| format!("redis: {{url: \"{v}\"}}\n");
    let url = |text: String, vars: &[(&str, &str)]| load(&text, vars).unwrap().redis.unwrap().url.unwrap();
    let set = [("HOST", "db"), ("EMPTY", "")];
    let cases: &[(&str, &str)] = &[
        ("redis://${HOST}:6379", "redis://db:6379"),
        ("redis://${HOST:-other}:6379", "redis://db:6379"),
        ("redis://${MISSING:-other}:6379", "redis://other:6379"),
        ("redis://${EMPTY:-other}:6379", "redis://other:6379"),
        ("redis://${MISSING:-}x", "redis://x"),
        ("redis://a$$b", "redis://a$b"),
        ("redis://a$$${HOST}", "redis://a$db"),
        ("redis://a$b", "redis://a$b"),
        ("redis://${HOST}${HOST}", "redis://dbdb"),
    ];
    for (value, want) in cases {
        assert_eq!(url(yaml(value), &set), *want, "{value}");
    }
    // missing, without a default: names the variable and the place
    let got = load_err(&yaml("redis://${NOPE}"), &[]);
    assert!(got.contains(r#""redis.url""#) && got.contains("NOPE is not set"), "{got}");
    let got = load_err("rules:\n  - {name: a, limits: \"${RATE}\"}\n", &[]);
    assert!(got.contains(r#""rules[0].limits""#) && got.contains("RATE"), "{got}");
    for bad in ["${HOST", "${}", "${1X}", "${A B}"] {
        let got = load_err(&yaml(bad), &set);
        assert!(got.contains(r#""redis.url""#), "{bad}: {got}");
    }
    // keys are not interpolated
    assert!(load_err("${K}: 1\n", &[("K", "watch")]).contains("unknown field `${K}`"));
}

#[test]
fn a_value_cannot_inject_structure() {
    // A variable holding YAML or JSON stays one string where it lands.
    let injected = "x\nrules:\n  - {name: evil, limits: 1000000/s}";
    let c = load("redis: {url: \"${V}\"}\n", &[("V", injected)]).unwrap();
    assert_eq!(c.redis.unwrap().url.as_deref(), Some(injected));
    assert!(c.rules.is_empty());
    let c = Config::from_str_with_env(
        r#"{"http": {"jwt": {"secret": "${S}"}}}"#,
        Format::Json,
        env(&[("S", "\", \"issuer\": \"i\"} , \"x\": {\"y\": \"0123456789abcdef0123456789abcdef")]),
    )
    .unwrap();
    assert!(c.http.jwt.unwrap().issuer.is_none());
    // and a number-shaped value is still a string: it cannot become a number field
    let got = load_err("redis: {timeout_ms: \"${T}\"}\n", &[("T", "5")]);
    assert!(got.contains(r#""redis.timeout_ms": invalid type: string "5""#), "{got}");
}

#[test]
fn environment_overrides() {
    let base = "redis: {url: redis://file:6379, prefix: fromfile}\nfallback: open\n";
    let c = load(base, &[]).unwrap();
    assert_eq!(c.redis.as_ref().unwrap().url.as_deref(), Some("redis://file:6379"));
    let vars = [
        ("FLOODWALL_REDIS_URL", "redis://env:6380"),
        ("FLOODWALL_REDIS_PREFIX", "fromenv"),
        ("FLOODWALL_REDIS_TIMEOUT_MS", "75"),
        ("FLOODWALL_FALLBACK", "closed"),
    ];
    let c = load(base, &vars).unwrap();
    let r = c.redis.as_ref().unwrap();
    assert_eq!((r.url.as_deref(), r.prefix.as_str(), r.timeout_ms), (Some("redis://env:6380"), "fromenv", 75));
    assert_eq!(c.fallback, FallbackMode::Closed { retry_after_ms: 1_000 });
    // an override alone makes the section
    let c = load("", &[("FLOODWALL_REDIS_URL", "redis://env:6380")]).unwrap();
    assert_eq!(c.redis.unwrap().url.as_deref(), Some("redis://env:6380"));
    // a bad override names the variable
    for (var, value) in [("FLOODWALL_FALLBACK", "maybe"), ("FLOODWALL_REDIS_TIMEOUT_MS", "soon")] {
        let got = load_err("", &[(var, value)]);
        assert!(got.contains(var), "{got}");
    }
    // against cluster seeds in the file: refused, not silently preferred
    let got = load_err("redis: {cluster_nodes: ['redis://a:7000']}\n", &[("FLOODWALL_REDIS_URL", "redis://b")]);
    assert!(got.contains("give one"), "{got}");
}

#[test]
fn redaction_hides_every_secret() {
    let key_secret = "k".repeat(40);
    let signing = "s".repeat(40);
    let text = format!(
        "redis: {{url: 'rediss://app:hunter2-redis@db:6380/0'}}\n\
         http:\n  jwt: {{secret: '{SECRET}', issuer: me}}\n  api_keys: {{allow: [sk-live-123], signing_secret: '{signing}', key_secret: '{key_secret}'}}\n\
         telemetry: {{otlp_endpoint: 'http://u:otlp-pass@tempo:4318/v1/traces'}}\n\
         rules:\n  - {{name: a, limits: 1/s}}\n"
    );
    let c = load(&text, &[]).unwrap();
    let shown = c.redacted();
    for secret in [SECRET, "hunter2-redis", "sk-live-123", signing.as_str(), key_secret.as_str(), "otlp-pass"] {
        assert!(!shown.contains(secret), "{secret} shown in\n{shown}");
        assert!(!format!("{c:?}").contains(secret), "{secret} in Debug");
    }
    assert!(shown.contains("rediss://app:<redacted>@db:6380/0"), "{shown}");
    assert!(shown.contains("issuer: me"), "{shown}");
    // what is left is the effective configuration, and still loads
    let back = load(&shown, &[]);
    assert!(back.is_err(), "the redacted JWT secret is too short to load: it is a placeholder");
    let cluster = load("redis: {cluster_nodes: ['redis://:pw1@a:7000', 'redis://tok@b:7001']}\n", &[]).unwrap();
    let shown = cluster.redacted();
    assert!(!shown.contains("pw1") && !shown.contains("tok@"), "{shown}");
    assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    assert_eq!(redact_url("redis://h/0?x=a@b"), "redis://h/0?x=a@b");
}

#[test]
fn a_rule_builds_its_limiter_on_the_embedded_store() {
    let text = "breaker: {failure_threshold: 3}\n\
                defaults: {algorithm: token_bucket}\n\
                rules:\n  - {name: login, limits: [2/minute, 10/day]}\n  - {name: b, limits: 1/s, algorithm: sliding_log}\n";
    let c = load(text, &[]).unwrap();
    let lc = c.limiter_config(&c.rules[0]);
    assert_eq!(lc.limits, c.rules[0].limits);
    assert_eq!(lc.algorithm, Algorithm::TokenBucket);
    assert_eq!(lc.breaker.failure_threshold, 3);
    assert_eq!(lc.name.as_deref(), Some("login"));
    assert_eq!(c.limiter_config(&c.rules[1]).algorithm, Algorithm::SlidingLog);
    let limiter = c.build_limiter(&c.rules[0]).unwrap();
    assert_eq!(limiter.store_kind(), Source::Memory);
    assert_eq!(limiter.algorithm(), Algorithm::TokenBucket);
    assert_eq!(limiter.limits(), &c.rules[0].limits[..]);
    // with a store section, the limiter settings carry it
    let c = load(
        &format!("redis: {{url: 'redis://h:1', prefix: p, timeout_ms: 9}}\n{}", with_rule("{name: b, limits: 1/s}")),
        &[],
    )
    .unwrap();
    let lc = c.limiter_config(&c.rules[1]);
    assert_eq!((lc.redis_url.as_deref(), lc.prefix.as_str(), lc.timeout_ms), (Some("redis://h:1"), "p", 9));
}

#[tokio::test]
async fn the_built_limiter_decides() {
    let c = load("rules:\n  - {name: a, limits: 2/minute}\n", &[]).unwrap();
    let limiter = c.build_limiter(&c.rules[0]).unwrap();
    let mut allowed = Vec::new();
    for _ in 0..3 {
        allowed.push(limiter.check("k").await.unwrap().allowed);
    }
    assert_eq!(allowed, [true, true, false]);
}

#[test]
fn from_path_and_from_env() {
    let dir = std::env::temp_dir().join(format!("floodwall-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("f.json");
    std::fs::write(&json, r#"{"rules": [{"name": "a", "limits": "1/s"}]}"#).unwrap();
    assert_eq!(Config::from_path(&json).unwrap().rules.len(), 1);
    let got = Config::from_path(dir.join("missing.yaml")).unwrap_err().to_string();
    assert!(got.contains("missing.yaml"), "{got}");
    // JSON rules for a .json file: a YAML-only form is refused there
    std::fs::write(&json, "rules: []").unwrap();
    assert!(Config::from_path(&json).unwrap_err().to_string().contains("JSON"));
    std::fs::remove_dir_all(&dir).ok();
    // FLOODWALL_CONFIG is read by no other test in this binary
    std::env::remove_var(CONFIG_ENV);
    assert!(Config::from_env().unwrap_err().to_string().contains(CONFIG_ENV));
}

/// The committed schema is what the types generate. Regenerate with
/// `FLOODWALL_WRITE_SCHEMA=1 cargo test -p floodwall --lib config::tests::schema_is_current`.
#[test]
fn schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(SCHEMA_PATH);
    let want = Config::json_schema();
    if std::env::var_os("FLOODWALL_WRITE_SCHEMA").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let got = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "{SCHEMA_PATH} is stale: regenerate it with \
         `FLOODWALL_WRITE_SCHEMA=1 cargo test -p floodwall --lib config::tests::schema_is_current`"
    );
}

#[test]
fn the_schema_describes_the_file() {
    let schema: Value = serde_json::from_str(&Config::json_schema()).unwrap();
    assert_eq!(schema["additionalProperties"], Value::Bool(false));
    let props = schema["properties"].as_object().unwrap();
    for key in ["watch", "redis", "fallback", "breaker", "cache", "telemetry", "http", "defaults", "rules"] {
        assert!(props.contains_key(key), "{key} missing from the schema");
    }
    let text = Config::json_schema();
    for word in ["trusted_proxies", "timeout_ms", "shadow", "limits", "sliding_window", "failure_threshold"] {
        assert!(text.contains(word), "{word} missing from the schema");
    }
}

/// The issue writes `jwt: { secret: ${JWT_SECRET} }` unquoted; in a YAML flow mapping `{` and `}`
/// are syntax, so the value must be quoted (examples/floodwall.yaml does). Pinned so that the
/// docs keep saying so.
#[test]
fn an_unquoted_variable_in_a_flow_mapping_is_a_yaml_error() {
    let got = load_err("http:\n  jwt: { secret: ${JWT_SECRET} }\n", &[("JWT_SECRET", SECRET)]);
    assert!(got.contains("YAML"), "{got}");
    // in block style it needs no quotes
    let c = load("http:\n  jwt:\n    secret: ${JWT_SECRET}\n", &[("JWT_SECRET", SECRET)]).unwrap();
    assert_eq!(c.http.jwt.unwrap().secret.as_deref(), Some(SECRET));
}

/// Prints the messages a user sees (`--ignored --nocapture`), for reviewing their wording.
#[test]
#[ignore]
fn print_messages() {
    for text in [
        "rules:\n  - {name: a, limits: 1/s}\n  - {name: b, limits: 1/s}\n  - {name: c, limts: 1/s}\n",
        "rules:\n  - {name: a, limits: 1/s}\n  - {name: login, limits: 5/mintue}\n",
        "rules:\n  - {name: a, limits: 1/s, key: usr}\n",
        "http: {jwt: {secret: short}}\n",
        "redis: {url: \"${NOPE}\"}\n",
        "fallback: sometimes\n",
    ] {
        println!("{}", load_err(text, &[]));
    }
    println!("{}", load(EXAMPLE, &[("JWT_SECRET", SECRET)]).unwrap().redacted());
}
