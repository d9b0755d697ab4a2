//! Which bucket a request counts against: a scope such as "user+endpoint" resolved to one key
//! string. Identities the caller cannot prove fall back to the client IP, so a forged token buys nothing.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use super::api_key::{ApiKeyIdentity, ApiKeyVerifier, AppVerdict};
use super::client_ip::{ClientIp, ClientIpRule, IpFamily};
use super::jwt::{bearer_token, JwtVerifier};
use super::route::PathStyle;
use crate::error::{Error, Result};

/// Free-text parts (a user id, a route) longer than this go into the key as a hash: a request
/// must not be able to make a key of arbitrary size.
pub const MAX_RAW_PART: usize = 200;

/// One dimension of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyPart {
    /// `ip:<client>`.
    Ip,
    /// `user:<sub>` of a verified JWT, else the client IP key.
    User,
    /// `apikey:<id>` of a verified API key (see [`ApiKeyVerifier`]), else the client IP key.
    ApiKey,
    /// `global`: one bucket for everyone.
    Global,
    /// `ep:<METHOD> <route>`: the route template, else the path as the framework routes it;
    /// HEAD counts as GET.
    Endpoint,
    /// `ip:<network>/<len>`: every client of one network shares the bucket ("ipv4/24",
    /// "ipv6/48"), an aggregate limit on top of per-client ones. A part of the other family than
    /// the client's is left out; a rule with no part of the client's family does not apply to it
    /// (nor to an unknown client).
    Network(IpFamily, u8),
}

impl KeyPart {
    pub fn as_str(&self) -> &'static str {
        match self {
            KeyPart::Ip => "ip",
            KeyPart::User => "user",
            KeyPart::ApiKey => "api_key",
            KeyPart::Global => "global",
            KeyPart::Endpoint => "endpoint",
            KeyPart::Network(IpFamily::V4, _) => "ipv4",
            KeyPart::Network(IpFamily::V6, _) => "ipv6",
        }
    }

    /// "ipv4/24", "ipv6/48": Ok(None) when `name` is not a network part at all.
    fn network(name: &str) -> std::result::Result<Option<Self>, String> {
        let lower = name.to_ascii_lowercase();
        let Some((fam, len)) = lower.split_once('/') else { return Ok(None) };
        let family = match fam.trim() {
            "ipv4" => IpFamily::V4,
            "ipv6" => IpFamily::V6,
            _ => return Ok(None),
        };
        let max = family.max_prefix();
        let len = len.trim();
        match len.parse::<u8>() {
            Ok(n) if (1..=max).contains(&n) && !len.starts_with('+') => Ok(Some(KeyPart::Network(family, n))),
            _ => Err(format!(
                "bad prefix length in {name:?}; expected {fam}/1 to {fam}/{max}, e.g. \"ipv4/24\" or \"ipv6/48\""
            )),
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "ip" => KeyPart::Ip,
            "user" => KeyPart::User,
            "api_key" | "apikey" | "api-key" => KeyPart::ApiKey,
            "global" => KeyPart::Global,
            "endpoint" => KeyPart::Endpoint,
            _ => return None,
        })
    }
}

/// The parts of a key, in the order they appear in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyScope(Vec<KeyPart>);

impl KeyScope {
    /// `"ip"`, `"user"`, `"api_key"` (or `"apikey"`), `"global"`, `"endpoint"`, a network
    /// (`"ipv4/24"`, `"ipv6/48"`, one per family), or several joined with `+`:
    /// `"user+endpoint+ip"`. Case and spaces around parts are ignored.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |reason: String| Error::config("key scope", s, reason);
        let mut parts = Vec::new();
        for raw in s.split('+') {
            let name = raw.trim();
            if name.is_empty() {
                return Err(bad("has an empty part; expected e.g. \"ip\", \"user\" or \"user+endpoint\"".into()));
            }
            let part = match KeyPart::network(name).map_err(&bad)? {
                Some(p) => p,
                None => KeyPart::from_name(name).ok_or_else(|| {
                    bad(format!(
                        "unknown part {name:?}; expected ip, user, api_key, global, endpoint, ipv4/<len> or ipv6/<len>"
                    ))
                })?,
            };
            let same_family = |p: &KeyPart| match (p, &part) {
                (KeyPart::Network(a, _), KeyPart::Network(b, _)) => a == b,
                _ => false,
            };
            if parts.contains(&part) || parts.iter().any(same_family) {
                return Err(bad(format!("names {name:?} twice")));
            }
            parts.push(part);
        }
        Ok(KeyScope(parts))
    }

    pub fn parts(&self) -> &[KeyPart] {
        &self.0
    }

    /// Some part is an `endpoint`: its key needs the request's route.
    pub fn has_endpoint(&self) -> bool {
        self.0.contains(&KeyPart::Endpoint)
    }
}

impl fmt::Display for KeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPart::Network(_, len) => write!(f, "{}/{len}", self.as_str()),
            p => f.write_str(p.as_str()),
        }
    }
}

impl fmt::Display for KeyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl FromStr for KeyScope {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        KeyScope::parse(s)
    }
}

/// What an adapter extracts from a request. Every field is client-controlled except `peer`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestInfo<'a> {
    /// The socket peer address.
    pub peer: &'a str,
    /// Every X-Forwarded-For value, joined with ",".
    pub forwarded_for: Option<&'a str>,
    /// The Authorization header.
    pub authorization: Option<&'a str>,
    /// The API key header (whichever header the app configured).
    pub api_key: Option<&'a str>,
    /// What the app's `verify` callback said about `api_key` (None: no callback ran).
    pub api_key_verdict: Option<AppVerdict<'a>>,
    pub method: &'a str,
    /// The route template ("/items/{id}") when the framework knows it, else the path. A template
    /// keeps one bucket per route instead of one per URL; either is normalised with the
    /// resolver's [`PathStyle`] so each spelling the framework routes alike is one key.
    pub route: &'a str,
}

/// Turns a request and a scope into a key.
#[derive(Debug, Clone, Default)]
pub struct KeyResolver {
    ip_rule: ClientIpRule,
    jwt: Option<JwtVerifier>,
    path_style: PathStyle,
    api_keys: ApiKeyVerifier,
}

/// A resolved key and what the adapter should know about how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Parts joined with "|": `"user:42|ep:GET /items/{id}|ip:1.2.3.4"`.
    pub key: String,
    /// X-Forwarded-For came from a peer that is not a trusted proxy (adapters warn once).
    pub forwarded_for_ignored: bool,
    /// The `user` part came from a verified JWT (not from the IP fallback).
    pub user_verified: bool,
    /// An API key was sent and did not verify: the request was keyed by IP (a failed lookup).
    pub api_key_rejected: bool,
    /// The client address, when the peer was parseable.
    pub ip: Option<IpAddr>,
    /// False when the scope has network parts ("ipv4/24") and none is of the client's family
    /// (or the client is unknown): the rule does not apply to this request.
    pub applies: bool,
}

impl KeyResolver {
    pub fn new(ip_rule: ClientIpRule, jwt: Option<JwtVerifier>) -> Self {
        KeyResolver { ip_rule, jwt, path_style: PathStyle::default(), api_keys: ApiKeyVerifier::default() }
    }

    /// How the framework routes paths, for `endpoint` keys (default: [`PathStyle::EXPRESS`],
    /// which merges the most spellings).
    pub fn with_path_style(mut self, style: PathStyle) -> Self {
        self.path_style = style;
        self
    }

    pub fn path_style(&self) -> PathStyle {
        self.path_style
    }

    /// How API keys are verified; without one, every key is anonymous.
    pub fn with_api_keys(mut self, api_keys: ApiKeyVerifier) -> Self {
        self.api_keys = api_keys;
        self
    }

    pub fn api_keys(&self) -> &ApiKeyVerifier {
        &self.api_keys
    }

    pub fn ip_rule(&self) -> &ClientIpRule {
        &self.ip_rule
    }

    pub fn jwt(&self) -> Option<&JwtVerifier> {
        self.jwt.as_ref()
    }

    /// The client IP of a request, as the `ip` part sees it.
    pub fn client_ip(&self, req: &RequestInfo) -> ClientIp {
        self.ip_rule.client_ip(req.peer, req.forwarded_for)
    }

    /// The verified JWT subject of a request, if any.
    pub fn user(&self, req: &RequestInfo) -> Option<String> {
        self.jwt.as_ref()?.verify_subject(bearer_token(req.authorization)?)
    }

    pub fn resolve(&self, scope: &KeyScope, req: &RequestInfo) -> Resolved {
        // Always worked out, even when the scope has no `ip`: adapters log the client and warn
        // about an ignored X-Forwarded-For whatever the scope.
        let client = self.client_ip(req);
        let mut user_verified = false;
        // Network parts of the client's family, and whether the scope has any: "ipv4/24+ipv6/48"
        // is the client's network whichever family it is of; "ipv4/24" alone skips IPv6 clients.
        let (mut networks, mut fitting) = (0, 0);
        let mut api_key_rejected = false;
        let mut pieces: Vec<String> = Vec::with_capacity(scope.0.len());
        for part in &scope.0 {
            let piece = match part {
                KeyPart::Ip => client.key.clone(),
                KeyPart::User => match self.user(req) {
                    Some(sub) => {
                        user_verified = true;
                        format!("user:{}", free_text(&sub))
                    }
                    None => client.key.clone(),
                },
                // A raw key never appears in Redis keys, MONITOR output or metrics: a verified key is
                // its signed id, the app's identity or a keyed hash; an unverified one is the IP.
                KeyPart::ApiKey => match self.api_keys.identify(req.api_key, req.api_key_verdict) {
                    ApiKeyIdentity::Verified(piece) => piece,
                    ApiKeyIdentity::Rejected => {
                        api_key_rejected = true;
                        client.key.clone()
                    }
                    ApiKeyIdentity::Absent => client.key.clone(),
                },
                KeyPart::Global => "global".into(),
                KeyPart::Endpoint => {
                    // Frameworks answer HEAD with the GET handler, so it spends GET's budget.
                    let mut method = req.method.trim().to_ascii_uppercase();
                    if method == "HEAD" {
                        method = "GET".into();
                    }
                    format!("ep:{}", free_text(&format!("{method} {}", self.path_style.normalise(req.route.trim()))))
                }
                KeyPart::Network(family, len) => {
                    networks += 1;
                    match client.network_key(*family, *len) {
                        Some(k) => {
                            fitting += 1;
                            k
                        }
                        None => continue,
                    }
                }
            };
            // "user+ip" for an anonymous caller would otherwise read "ip:1.2.3.4|ip:1.2.3.4".
            if !pieces.contains(&piece) {
                pieces.push(piece);
            }
        }
        Resolved {
            key: pieces.join("|"),
            forwarded_for_ignored: client.forwarded_for_ignored,
            user_verified,
            api_key_rejected,
            ip: client.ip,
            applies: networks == 0 || fitting > 0,
        }
    }
}

/// A value from outside (a JWT subject, a route) as one key part. `|` separates parts and a
/// leading `#` marks a hash, so `%`, `|` and `#` are percent-escaped: a subject such as
/// "42|ep:GET /admin" can then never impersonate another scope's key. Long values are hashed.
pub(super) fn free_text(value: &str) -> String {
    if value.len() > MAX_RAW_PART {
        return format!("#{}", hex32(value));
    }
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '%' => out.push_str("%25"),
            '|' => out.push_str("%7C"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

/// The first 128 bits of SHA-256, in hex: collision-free in practice, and short. Only for bounding
/// the length of values that are not secrets (a long subject or route); API keys take a keyed hash.
fn hex32(value: &str) -> String {
    Sha256::digest(value.as_bytes())[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"key-resolver-test-secret-32-bytes!";

    fn token(sub: &str) -> String {
        encode(&Header::default(), &json!({"sub": sub}), &EncodingKey::from_secret(SECRET).unwrap()).unwrap()
    }

    fn key_secret() -> crate::secret::KeySecret {
        crate::secret::KeySecret::new("test", &[3u8; 32]).unwrap()
    }

    fn resolver() -> KeyResolver {
        KeyResolver::new(ClientIpRule::new(&["10.0.0.0/8"], 64).unwrap(), Some(JwtVerifier::hs256(SECRET).unwrap()))
            .with_api_keys(ApiKeyVerifier::new().key_secret(key_secret()).allow(&["sk_live_abc"]).unwrap())
    }

    #[test]
    fn scopes_parse() {
        let cases: &[(&str, &[KeyPart])] = &[
            ("ip", &[KeyPart::Ip]),
            ("user", &[KeyPart::User]),
            ("api_key", &[KeyPart::ApiKey]),
            ("apikey", &[KeyPart::ApiKey]),
            ("global", &[KeyPart::Global]),
            ("endpoint", &[KeyPart::Endpoint]),
            ("user+endpoint+ip", &[KeyPart::User, KeyPart::Endpoint, KeyPart::Ip]),
            (" User + Endpoint ", &[KeyPart::User, KeyPart::Endpoint]),
            ("ipv4/24", &[KeyPart::Network(IpFamily::V4, 24)]),
            ("IPv6/48+ip", &[KeyPart::Network(IpFamily::V6, 48), KeyPart::Ip]),
            ("ipv4/24+ipv6/48", &[KeyPart::Network(IpFamily::V4, 24), KeyPart::Network(IpFamily::V6, 48)]),
            ("endpoint+ipv6/32", &[KeyPart::Endpoint, KeyPart::Network(IpFamily::V6, 32)]),
            ("ipv4/32+ipv6/128", &[KeyPart::Network(IpFamily::V4, 32), KeyPart::Network(IpFamily::V6, 128)]),
        ];
        for (s, parts) in cases {
            let scope = KeyScope::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(scope.parts(), *parts, "{s}");
            assert_eq!(KeyScope::parse(&scope.to_string()).unwrap(), scope, "{s} round trip");
        }
    }

    #[test]
    fn bad_scopes_name_the_input() {
        for s in [
            "",
            "ip+",
            "+ip",
            "ip++user",
            "ipaddress",
            "user+user",
            "ip,user",
            "ip user",
            "ipv4/33",
            "ipv4/0",
            "ipv6/129",
            "ipv6/x",
            "ipv6/",
            "ipv4/+24",
            "ipv4/24+ipv4/16",
            "ipv5/24",
        ] {
            let err = KeyScope::parse(s).expect_err(s);
            assert!(err.to_string().contains(&format!("{s:?}")), "{s}: {err}");
            assert_eq!(err.kind(), crate::ErrorKind::Config);
        }
    }

    #[test]
    fn resolve_table() {
        let good = format!("Bearer {}", token("42"));
        let forged = format!(
            "Bearer {}",
            encode(&Header::default(), &json!({"sub": "42"}), &EncodingKey::from_secret(b"guess").unwrap()).unwrap()
        );
        let hook = format!("Bearer {}", token("7|ep:GET /admin"));
        let apikey_hash = key_secret().hex32("apikey", b"sk_live_abc");
        // (case, scope, authorization, api key, peer, XFF, method, route, key, user_verified, xff ignored)
        type Case<'a> = (
            &'a str,
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
            Option<&'a str>,
            &'a str,
            &'a str,
            String,
            bool,
            bool,
        );
        let cases: Vec<Case> = vec![
            ("ip", "ip", None, None, "1.2.3.4", None, "GET", "/", "ip:1.2.3.4".into(), false, false),
            (
                "verified user",
                "user",
                Some(good.as_str()),
                None,
                "1.2.3.4",
                None,
                "GET",
                "/",
                "user:42".into(),
                true,
                false,
            ),
            (
                "forged token falls back to ip",
                "user",
                Some(forged.as_str()),
                None,
                "1.2.3.4",
                None,
                "GET",
                "/",
                "ip:1.2.3.4".into(),
                false,
                false,
            ),
            (
                "no token falls back to ip",
                "user",
                None,
                None,
                "1.2.3.4",
                None,
                "GET",
                "/",
                "ip:1.2.3.4".into(),
                false,
                false,
            ),
            (
                "contract example",
                "user+endpoint+ip",
                Some(good.as_str()),
                None,
                "10.0.0.1",
                Some("1.2.3.4"),
                "get",
                "/items/{id}",
                "user:42|ep:GET /items/{id}|ip:1.2.3.4".into(),
                true,
                false,
            ),
            (
                "anonymous user+ip collapses",
                "user+ip",
                None,
                None,
                "1.2.3.4",
                None,
                "GET",
                "/",
                "ip:1.2.3.4".into(),
                false,
                false,
            ),
            (
                "allow-listed api key is hashed with the key secret",
                "api_key",
                None,
                Some(" sk_live_abc "),
                "1.2.3.4",
                None,
                "GET",
                "/",
                format!("apikey:#{apikey_hash}"),
                false,
                false,
            ),
            (
                "unknown api key falls back to ip",
                "api_key+ip",
                None,
                Some("sk_live_made_up"),
                "1.2.3.4",
                None,
                "GET",
                "/",
                "ip:1.2.3.4".into(),
                false,
                false,
            ),
            (
                "missing api key falls back to ip",
                "api_key",
                None,
                Some("  "),
                "1.2.3.4",
                None,
                "GET",
                "/",
                "ip:1.2.3.4".into(),
                false,
                false,
            ),
            ("global", "global", None, None, "1.2.3.4", Some("5.6.7.8"), "GET", "/", "global".into(), false, true),
            (
                "global+endpoint",
                "global+endpoint",
                None,
                None,
                "1.2.3.4",
                None,
                "POST",
                "/login",
                "global|ep:POST /login".into(),
                false,
                false,
            ),
            (
                "separator in sub is escaped",
                "user+endpoint",
                Some(hook.as_str()),
                None,
                "1.2.3.4",
                None,
                "GET",
                "/x",
                "user:7%7Cep:GET /admin|ep:GET /x".into(),
                true,
                false,
            ),
            (
                "separator in route is escaped",
                "endpoint",
                None,
                None,
                "1.2.3.4",
                None,
                "GET",
                "/a|b%23c%25",
                "ep:GET /a%7Cb%23c%25".into(),
                false,
                false,
            ),
            ("unknown peer", "ip", None, None, "", None, "GET", "/", "ip:unknown".into(), false, false),
        ];
        let r = resolver();
        for (case, scope, auth, api_key, peer, xff, method, route, key, verified, ignored) in cases {
            let req = RequestInfo {
                peer,
                forwarded_for: xff,
                authorization: auth,
                api_key,
                method,
                route,
                ..Default::default()
            };
            let got = r.resolve(&KeyScope::parse(scope).unwrap(), &req);
            assert_eq!(got.key, key, "{case}");
            assert_eq!((got.user_verified, got.forwarded_for_ignored), (verified, ignored), "{case}");
        }
    }

    #[test]
    fn api_key_hash_is_32_hex_and_never_the_secret() {
        let req = RequestInfo {
            peer: "1.2.3.4",
            api_key: Some("sk_live_abc"),
            method: "GET",
            route: "/",
            ..Default::default()
        };
        let got = resolver().resolve(&KeyScope::parse("apikey").unwrap(), &req);
        let hash = got.key.strip_prefix("apikey:#").unwrap();
        assert_eq!(hash.len(), 32);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert!(!got.key.contains("sk_live"));
        assert!(!got.api_key_rejected);
        // Not the bare SHA-256 of the key: without the secret, a bucket name cannot be checked
        // against guessed keys.
        assert_ne!(hash, hex32("sk_live_abc"));
        // SHA-256("abc") starts ba7816bf8f01cfea414140de5dae2223.
        assert_eq!(hex32("abc"), "ba7816bf8f01cfea414140de5dae2223");
        let made_up = RequestInfo { api_key: Some("sk_live_made_up"), ..req };
        let got = resolver().resolve(&KeyScope::parse("api_key+ip").unwrap(), &made_up);
        assert_eq!((got.key.as_str(), got.api_key_rejected), ("ip:1.2.3.4", true));
    }

    #[test]
    fn without_a_verifier_every_user_is_anonymous() {
        let r = KeyResolver::new(ClientIpRule::default(), None);
        let auth = format!("Bearer {}", token("42"));
        let req = RequestInfo {
            peer: "1.2.3.4",
            authorization: Some(&auth),
            method: "GET",
            route: "/",
            ..Default::default()
        };
        let got = r.resolve(&KeyScope::parse("user").unwrap(), &req);
        assert_eq!((got.key.as_str(), got.user_verified), ("ip:1.2.3.4", false));
    }

    #[test]
    fn bad_network_parts_name_the_part() {
        let err = KeyScope::parse("ip+ipv4/33").unwrap_err().to_string();
        assert!(err.contains("\"ipv4/33\"") && err.contains("ipv4/32"), "{err}");
        let err = KeyScope::parse("ipv6/0").unwrap_err().to_string();
        assert!(err.contains("ipv6/128"), "{err}");
    }

    #[test]
    fn endpoint_keys_merge_what_the_framework_routes_alike() {
        let key = |r: &KeyResolver, method: &str, route: &str| {
            let req = RequestInfo { peer: "1.2.3.4", method, route, ..Default::default() };
            r.resolve(&KeyScope::parse("endpoint").unwrap(), &req).key
        };
        let express = KeyResolver::new(ClientIpRule::default(), None).with_path_style(PathStyle::EXPRESS);
        for spelling in ["/login", "/LOGIN", "/login/", "//login", "/Login//", "/log%69n", "/x/../login", "/login?a=1"]
        {
            assert_eq!(key(&express, "POST", spelling), "ep:POST /login", "{spelling}");
        }
        assert_eq!(key(&express, "HEAD", "/items/{id}"), key(&express, "GET", "/items/{id}"));
        assert_eq!(key(&express, "head", "/x"), "ep:GET /x");
        assert_ne!(key(&express, "POST", "/x"), key(&express, "GET", "/x"));
        let starlette = KeyResolver::new(ClientIpRule::default(), None).with_path_style(PathStyle::STARLETTE);
        assert_eq!(key(&starlette, "GET", "/Items/"), "ep:GET /Items");
        assert_ne!(key(&starlette, "GET", "/Items"), key(&starlette, "GET", "/items"));
    }

    #[test]
    fn network_parts() {
        let r = resolver();
        let scope = KeyScope::parse("ipv4/24+ipv6/48").unwrap();
        let got = |peer: &str| {
            let req = RequestInfo { peer, method: "GET", route: "/", ..Default::default() };
            let g = r.resolve(&scope, &req);
            (g.key, g.applies)
        };
        assert_eq!(got("198.51.100.7"), ("ip:198.51.100.0/24".into(), true));
        assert_eq!(got("2001:db8:7:8::1"), ("ip:2001:db8:7::/48".into(), true));
        let v4_only = KeyScope::parse("ipv4/24+endpoint").unwrap();
        let req = RequestInfo { peer: "2001:db8::1", method: "GET", route: "/", ..Default::default() };
        assert!(!r.resolve(&v4_only, &req).applies, "an IPv4 aggregate does not apply to an IPv6 client");
        let req = RequestInfo { peer: "unix:", method: "GET", route: "/", ..Default::default() };
        assert!(!r.resolve(&v4_only, &req).applies, "nor to an unknown client");
        // The per-client part and the aggregate together; the /64 key and a /64 network collapse.
        let req = RequestInfo { peer: "2001:db8:7:8::1", method: "GET", route: "/", ..Default::default() };
        assert_eq!(r.resolve(&KeyScope::parse("ip+ipv6/64").unwrap(), &req).key, "ip:2001:db8:7:8::/64");
    }

    #[test]
    fn long_routes_are_hashed() {
        let route = format!("/{}", "a".repeat(10_000));
        let req = RequestInfo { peer: "1.2.3.4", method: "GET", route: &route, ..Default::default() };
        let got = resolver().resolve(&KeyScope::parse("endpoint+ip").unwrap(), &req);
        assert!(got.key.starts_with("ep:#") && got.key.ends_with("|ip:1.2.3.4"), "{}", got.key);
        assert!(got.key.len() < 64, "{}", got.key);
    }
}
