//! What a bearer token costs a request the limiter has already denied: process CPU per decision
//! of the rule engine (`RuleSet::decide`, as both adapters call it) for a client over its IP
//! limit, with no token, with one junk ES256 token replayed, and with a fresh junk ES256 token on
//! every request (which no cache can help with). The goal: a denied request with a junk token
//! costs within 2x of one without. The last rows are a `user`-only rule, where nothing can be
//! decided before verifying: a replayed token is verified once (the cache), a fresh one each time
//! (the price of the signature check itself).
//! Settings rotate within each round so drift in a shared machine's load hits all alike.
//!
//!   cargo run --release -p floodwall-bench --bin floodwall-jwt-cost -- [--calls 2000] [--rounds 7]

use floodwall::web::{ClientIpRule, HeaderStyle, HttpRequest, JwtVerifier, KeyResolver, KeyScope, Rule, RuleSet};
use floodwall::{parse_limits, Limiter};

/// A P-256 public key (the core's test key): any key will do, no junk token verifies against it.
const EC_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAERkbQMv7Lm7LtV2MGzh9rpoeXbB6d
yOqehlX0LumRWIp4puPnV18wjBp1TXCCHG5Qgecqs+BImYZk+eAgwLrWBw==
-----END PUBLIC KEY-----
";

const PEER: &str = "198.51.100.7";

fn main() {
    let mut calls = 2000usize;
    let mut rounds = 7usize;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--calls" => calls = val().parse().expect("--calls N"),
            "--rounds" => rounds = val().parse().expect("--rounds N"),
            other => panic!("unknown flag {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let jwt = JwtVerifier::es256_pem(EC_PUBLIC).expect("EC key");
    let rule = |name: &str, limits: &str, scope: &str| Rule {
        name: name.into(),
        route: None,
        limiter: Limiter::in_memory(parse_limits(&[limits]).expect("limits")).expect("limiter"),
        scope: Some(KeyScope::parse(scope).expect("scope")),
        cost: 1,
        shadow: false,
    };
    let resolver = || KeyResolver::new(ClientIpRule::default(), Some(jwt.clone()));
    // The site's usual pair: a per-IP limit beside a per-user one. The client is over its IP limit.
    let site = RuleSet::new(
        resolver(),
        vec![rule("per-ip", "1/hour", "ip"), rule("per-user", "1000/hour", "user")],
        HeaderStyle::Draft10,
    )
    .expect("rules");
    let user_only =
        RuleSet::new(resolver(), vec![rule("per-user", "1/hour", "user")], HeaderStyle::Draft10).expect("rules");

    let replayed = format!("Bearer {}", junk_token(0));
    let mut fresh_n = 1u64;
    let mut fresh = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| {
                fresh_n += 1;
                format!("Bearer {}", junk_token(fresh_n))
            })
            .collect()
    };
    // Spend the IP's limit first: every measured request below is denied.
    rt.block_on(decide(&site, None));
    rt.block_on(decide(&user_only, None));

    let names = [
        "ip + user rules: no token",
        "ip + user rules: junk ES256, replayed",
        "ip + user rules: junk ES256, fresh",
        "user rule only: junk ES256, replayed",
        "user rule only: junk ES256, fresh",
    ];
    let mut per_call: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut checks = vec![0u64; names.len()];
    for _ in 0..rounds {
        for (i, row) in per_call.iter_mut().enumerate() {
            // Tokens are made outside the measured window.
            let tokens: Vec<String> = match i {
                0 => Vec::new(),
                1 | 3 => vec![replayed.clone(); calls],
                _ => fresh(calls),
            };
            let set = if i >= 3 { &user_only } else { &site };
            let verified_before = jwt.verifications();
            let start_cpu = process_cpu_us();
            let denied = rt.block_on(async {
                let mut denied = 0usize;
                for c in 0..calls {
                    let auth = tokens.get(c).map(String::as_str);
                    denied += usize::from(!decide(set, auth).await);
                }
                denied
            });
            let cpu = (process_cpu_us() - start_cpu) as f64;
            assert_eq!(denied, calls, "{}: every request is over its limit", names[i]);
            checks[i] += jwt.verifications() - verified_before;
            row.push(cpu / calls as f64);
        }
    }
    println!("CPU per denied request (process CPU, median of {rounds} rounds of {calls} calls each)");
    println!("{:<40} {:>10} {:>8} {:>18}", "", "µs", "× none", "signature checks");
    let none = median(&mut per_call[0].clone());
    for ((name, row), n) in names.iter().zip(per_call.iter_mut()).zip(&checks) {
        let m = median(row);
        println!("{:<40} {:>10.2} {:>7.2}× {:>18}", name, m, m / none, n);
    }
}

async fn decide(set: &RuleSet, authorization: Option<&str>) -> bool {
    let req = HttpRequest {
        method: "GET",
        path: "/api/items",
        route: None,
        peer: PEER,
        forwarded_for: None,
        authorization,
        api_key: None,
        api_key_verdict: None,
        traceparent: None,
    };
    set.decide(&req, |_| None).await.expect("decide").allowed()
}

/// A well-formed ES256 token whose signature is 64 bytes of noise: parsed, decoded and checked on
/// the curve before it fails, the most an attacker can make a verifier spend per token.
fn junk_token(n: u64) -> String {
    let header = b64url(br#"{"alg":"ES256","typ":"JWT"}"#);
    let payload = b64url(format!(r#"{{"sub":"user-{n}","exp":4102444800}}"#).as_bytes());
    let mut sig = [0u8; 64];
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in &mut sig {
        // xorshift: noise without a dependency; any bytes are as bad a signature
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    format!("{header}.{payload}.{}", b64url(&sig))
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn process_cpu_us() -> u64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the rusage it is pointed at; zeroed is a valid rusage either way.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        ru.assume_init()
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}
