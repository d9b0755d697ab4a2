//! Who the caller is, when they can prove it: the `sub` of a JWT whose signature verifies with the
//! one algorithm and key configured. Anything else is anonymous, never an error: tokens are client input.
//! Results are remembered per token (a bounded cache), so a repeated token costs one verification.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, Validation};
use moka::sync::Cache;
use moka::Expiry;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::secret::MIN_SECRET_LEN;

/// Real tokens are well under 8 KiB (servers cap whole header blocks near there); a longer one is
/// refused before any base64 or JSON work is spent on it.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Clock-skew allowance is clamped to one day: more would make expiry meaningless, and it keeps
/// the library's `now - leeway` arithmetic far from underflow.
pub const MAX_LEEWAY_SECS: u64 = 86_400;
/// Verification results remembered by default (a few hundred bytes each).
pub const DEFAULT_JWT_CACHE_ENTRIES: u64 = 10_000;
/// A verified subject is remembered until the token's `exp`, and never longer than this (a token
/// without `exp` is re-verified this often).
const MAX_VERIFIED_TTL: Duration = Duration::from_secs(300);
/// A refused token is remembered this long: long enough that replaying one junk token costs one
/// verification, short enough that a token refused for its `nbf` soon counts once valid.
const REFUSED_TTL: Duration = Duration::from_secs(30);

/// Verifies tokens with one algorithm and one key. Clones share the result cache.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    algorithm: Algorithm,
    validation: Validation,
    cache: Arc<Remembered>,
}

/// Results of earlier verifications, keyed by SHA-256 of the token: a cryptographic hash, so no
/// token can be crafted to land on another's cached subject.
struct Remembered {
    capacity: u64,
    /// Built on first use, so settings changed before then (issuer, leeway, ...) apply to every entry.
    results: OnceLock<Cache<[u8; 32], Verdict>>,
    /// Signatures actually checked (cache misses): what an attacker can make the server spend.
    verifications: AtomicU64,
}

#[derive(Clone)]
struct Verdict {
    subject: Option<Arc<str>>,
    ttl: Duration,
}

struct UntilExpiry;

impl Expiry<[u8; 32], Verdict> for UntilExpiry {
    fn expire_after_create(&self, _: &[u8; 32], v: &Verdict, _: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
}

impl Remembered {
    fn new(capacity: u64) -> Arc<Self> {
        Arc::new(Remembered { capacity, results: OnceLock::new(), verifications: AtomicU64::new(0) })
    }

    fn results(&self) -> &Cache<[u8; 32], Verdict> {
        self.results.get_or_init(|| Cache::builder().max_capacity(self.capacity).expire_after(UntilExpiry).build())
    }
}

impl fmt::Debug for JwtVerifier {
    // By hand, so that an HS256 secret never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .field("leeway_secs", &self.validation.leeway)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// HMAC-SHA256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Result<Self> {
        provider()?;
        if secret.len() < MIN_SECRET_LEN {
            // RFC 7518 3.2: a key as long as the hash. A short one is guessed offline from one
            // token, and whoever guesses it mints any identity.
            return Err(Error::config(
                "JWT secret",
                format!("<{} bytes>", secret.len()),
                format!("must be at least {MIN_SECRET_LEN} bytes for HS256 (e.g. `openssl rand -hex 32`)"),
            ));
        }
        // The secret itself is never echoed into an error message.
        let key =
            DecodingKey::from_secret(secret).map_err(|e| Error::config("JWT secret", "<redacted>", e.to_string()))?;
        Ok(Self::with_key(key, Algorithm::HS256))
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256; `public_key_pem` is a "PUBLIC KEY" or "RSA PUBLIC KEY" PEM.
    pub fn rs256_pem(public_key_pem: &str) -> Result<Self> {
        let provider = provider()?;
        let bad = |reason: String| Error::config("JWT public key", pem_summary(public_key_pem), reason);
        refuse_private(public_key_pem).map_err(|r| bad(r.into()))?;
        let key = DecodingKey::from_rsa_pem(public_key_pem.as_bytes())
            .map_err(|e| bad(format!("not an RSA public key in PEM form ({e})")))?;
        // The RSA backend parses the DER on every verify, so a key it cannot use would silently
        // make every caller anonymous. Parse it once now instead, and keep (n, e).
        let key = match key.kind() {
            DecodingKeyKind::SecretOrDer(der) => {
                let (n, e) = (provider.key_utils.rsa_pub_components_from_public_key)(der)
                    .map_err(|e| bad(format!("not a usable RSA public key ({e})")))?;
                DecodingKey::from_rsa_raw_components(&n, &e)
            }
            DecodingKeyKind::RsaModulusExponent { .. } => key,
        };
        Ok(Self::with_key(key, Algorithm::RS256))
    }

    /// ECDSA on P-256 with SHA-256; `public_key_pem` is a "PUBLIC KEY" PEM.
    pub fn es256_pem(public_key_pem: &str) -> Result<Self> {
        let provider = provider()?;
        let bad = |reason: String| Error::config("JWT public key", pem_summary(public_key_pem), reason);
        refuse_private(public_key_pem).map_err(|r| bad(r.into()))?;
        let key = DecodingKey::from_ec_pem(public_key_pem.as_bytes())
            .map_err(|e| bad(format!("not an EC public key in PEM form ({e})")))?;
        // Building a verifier decodes the curve point: a P-384 key or a corrupt point fails here,
        // at configuration, rather than on every request.
        (provider.verifier_factory)(&Algorithm::ES256, &key)
            .map_err(|e| bad(format!("not a P-256 public key ({e})")))?;
        Ok(Self::with_key(key, Algorithm::ES256))
    }

    fn with_key(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        // `exp` is checked when present but not demanded; `sub` is demanded by verify_subject.
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // Without a configured audience, a token's `aud` is not ours to judge.
        validation.validate_aud = false;
        JwtVerifier { key, algorithm, validation, cache: Remembered::new(DEFAULT_JWT_CACHE_ENTRIES) }
    }

    // Each setting below starts an empty cache: no result verified under other settings survives.
    fn fresh_cache(mut self) -> Self {
        self.cache = Remembered::new(self.cache.capacity);
        self
    }

    /// Require `iss` to equal `iss`; a token without `iss` is then refused.
    pub fn with_issuer(mut self, iss: &str) -> Self {
        self.validation.set_issuer(&[iss]);
        // The library skips the comparison when the claim is absent; requiring it closes that gap.
        self.validation.required_spec_claims.insert("iss".into());
        self.fresh_cache()
    }

    /// Require `aud` to contain `aud`; a token without `aud` is then refused.
    pub fn with_audience(mut self, aud: &str) -> Self {
        self.validation.set_audience(&[aud]);
        self.validation.validate_aud = true;
        self.validation.required_spec_claims.insert("aud".into());
        self.fresh_cache()
    }

    /// Tolerated clock skew for `exp`, `nbf` and `iat` (default 0, at most [`MAX_LEEWAY_SECS`]).
    pub fn with_leeway_secs(mut self, s: u64) -> Self {
        self.validation.leeway = s.min(MAX_LEEWAY_SECS);
        self.fresh_cache()
    }

    /// Refuse tokens without `exp` (by default `exp` is checked when present): a token that never
    /// expires is an identity forever to whoever copies it.
    pub fn with_required_exp(mut self, required: bool) -> Self {
        if required {
            self.validation.required_spec_claims.insert("exp".into());
        } else {
            self.validation.required_spec_claims.remove("exp");
        }
        self.fresh_cache()
    }

    /// Remember at most this many verification results (default [`DEFAULT_JWT_CACHE_ENTRIES`]);
    /// 0 turns the cache off.
    pub fn with_cache_entries(mut self, n: u64) -> Self {
        self.cache = Remembered::new(n);
        self
    }

    /// Signatures checked so far (repeated tokens answered from the cache are not counted).
    pub fn verifications(&self) -> u64 {
        self.cache.verifications.load(Ordering::Relaxed)
    }

    /// What [`verify_subject`](Self::verify_subject) would answer without verifying anything:
    /// `Some(result)` when the token needs no signature check (remembered, or refused on sight),
    /// None when it would cost a verification.
    pub fn cached_subject(&self, token: &str) -> Option<Option<String>> {
        let token = token.trim();
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Some(None);
        }
        if self.cache.capacity == 0 {
            return None;
        }
        self.cache.results().get(&token_hash(token)).map(|v| v.subject.map(|s| s.to_string()))
    }

    pub fn algorithm(&self) -> &'static str {
        match self.algorithm {
            Algorithm::HS256 => "HS256",
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
            _ => "other",
        }
    }

    /// The `sub` claim (a non-empty string) of a token whose signature verifies with the configured
    /// algorithm and key, that has not expired (when it has `exp`, or always when `exp` is required),
    /// is not before its `nbf`, was not issued in the future (`iat`), and matches the configured
    /// issuer and audience. Anything else, `None`. A repeated token is answered from the cache.
    pub fn verify_subject(&self, token: &str) -> Option<String> {
        let token = token.trim();
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return None;
        }
        if self.cache.capacity == 0 {
            return self.verify_once(token).subject.map(|s| s.to_string());
        }
        let hash = token_hash(token);
        let results = self.cache.results();
        if let Some(v) = results.get(&hash) {
            return v.subject.map(|s| s.to_string());
        }
        let v = self.verify_once(token);
        let subject = v.subject.as_ref().map(|s| s.to_string());
        if !v.ttl.is_zero() {
            results.insert(hash, v);
        }
        subject
    }

    fn verify_once(&self, token: &str) -> Verdict {
        self.cache.verifications.fetch_add(1, Ordering::Relaxed);
        // The token is attacker-chosen bytes fed to a third-party parser; whatever it does, a
        // request must not take the server down with it.
        catch_unwind(AssertUnwindSafe(|| self.verify(token)))
            .ok()
            .flatten()
            .unwrap_or(Verdict { subject: None, ttl: REFUSED_TTL })
    }

    fn verify(&self, token: &str) -> Option<Verdict> {
        #[derive(Deserialize)]
        struct Claims {
            sub: Option<String>,
            // Read again here (the library validated `exp`) to bound the cache entry's life.
            exp: Option<f64>,
            iat: Option<f64>,
        }
        // `decode` refuses any header `alg` but ours (so "none" and HS256-with-the-RSA-key fail)
        // before it looks at the signature.
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).ok()?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let leeway = self.validation.leeway as f64;
        // The library does not look at `iat`. A token issued in the future is either forged with a
        // stolen key or from a clock far off; neither is an identity.
        if data.claims.iat.is_some_and(|iat| iat > now + leeway) {
            return None;
        }
        let subject = data.claims.sub.filter(|s| !s.is_empty())?;
        // Never remembered past `exp` (+ leeway): the cached answer must be the one a fresh
        // verification would give.
        let ttl = match data.claims.exp {
            Some(exp) => Duration::try_from_secs_f64((exp + leeway - now).max(0.0)).unwrap_or(Duration::ZERO),
            None => MAX_VERIFIED_TTL,
        };
        Some(Verdict { subject: Some(subject.into()), ttl: ttl.min(MAX_VERIFIED_TTL) })
    }
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// `"Bearer abc"` -> `Some("abc")`: the scheme case-insensitive, surrounding space trimmed. A
/// missing, empty or multi-part credential is `None`.
pub fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim();
    let (scheme, rest) = value.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty() && !token.contains(char::is_whitespace)).then_some(token)
}

fn provider() -> Result<&'static CryptoProvider> {
    // With both or neither backend feature enabled, jsonwebtoken would panic on the first token.
    CryptoProvider::try_get_default().ok_or_else(|| {
        Error::config(
            "JWT crypto provider",
            "none",
            "jsonwebtoken was built with both or neither of rust_crypto and aws_lc_rs; enable exactly one",
        )
    })
}

fn refuse_private(pem: &str) -> std::result::Result<(), &'static str> {
    if pem.contains("PRIVATE KEY") {
        // Verifying needs only the public half, and the private one should not sit in app config.
        return Err("is a private key; pass the public key (openssl pkey -in key.pem -pubout)");
    }
    Ok(())
}

/// Enough of a PEM to recognise it in an error message, on one line.
fn pem_summary(pem: &str) -> String {
    let first = pem.trim().lines().next().unwrap_or("");
    let mut s: String = first.chars().take(40).collect();
    if s.len() < pem.trim().len() {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
    use serde_json::{json, Value};

    use super::*;
    use crate::web::test_keys::*;

    const SECRET: &[u8] = b"correct horse battery staple, 32+";

    fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
        encode(&Header::new(alg), claims, key).unwrap()
    }
    fn hs(claims: &Value) -> String {
        sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET).unwrap(), claims)
    }
    fn b64url(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | ((*b as u32) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
    fn now() -> u64 {
        get_current_timestamp()
    }

    #[test]
    fn hs256_table() {
        let v = JwtVerifier::hs256(SECRET).unwrap();
        let good = hs(&json!({"sub": "42", "exp": now() + 600}));
        let (head, rest) = good.split_once('.').unwrap();
        let sig = rest.split_once('.').unwrap().1;
        let forged_payload = format!("{head}.{}.{sig}", b64url(br#"{"sub":"admin","exp":9999999999}"#));
        let none_header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
        let alg_none = format!("{none_header}.{}.", b64url(br#"{"sub":"42"}"#));
        let alg_none_with_sig = format!("{none_header}.{}.{sig}", b64url(br#"{"sub":"42"}"#));
        let wrong_secret = sign(Algorithm::HS256, &EncodingKey::from_secret(b"guess").unwrap(), &json!({"sub": "42"}));
        let hs384 = sign(Algorithm::HS384, &EncodingKey::from_secret(SECRET).unwrap(), &json!({"sub": "42"}));

        let cases: Vec<(&str, String, Option<&str>)> = vec![
            ("valid", good.clone(), Some("42")),
            ("valid without exp", hs(&json!({"sub": "7"})), Some("7")),
            ("surrounding space", format!("  {good} "), Some("42")),
            ("wrong secret", wrong_secret, None),
            ("alg none, empty signature", alg_none, None),
            ("alg none, copied signature", alg_none_with_sig, None),
            ("tampered payload", forged_payload, None),
            ("expired", hs(&json!({"sub": "42", "exp": now() - 30})), None),
            ("not yet valid", hs(&json!({"sub": "42", "nbf": now() + 600})), None),
            ("exp not a number", hs(&json!({"sub": "42", "exp": "soon"})), None),
            ("issued now", hs(&json!({"sub": "42", "iat": now()})), Some("42")),
            ("issued in the past", hs(&json!({"sub": "42", "iat": now() - 3600})), Some("42")),
            ("issued in the future", hs(&json!({"sub": "42", "iat": now() + 600})), None),
            ("iat not a number", hs(&json!({"sub": "42", "iat": "now"})), None),
            ("different HMAC alg than configured", hs384, None),
            ("no sub", hs(&json!({"exp": now() + 600})), None),
            ("empty sub", hs(&json!({"sub": ""})), None),
            ("numeric sub is not a string", hs(&json!({"sub": 42})), None),
            ("aud present, none configured", hs(&json!({"sub": "42", "aud": "other"})), Some("42")),
            ("garbage", "not.a.jwt".into(), None),
            ("two parts", "abc.def".into(), None),
            ("empty", String::new(), None),
            ("oversized", "a".repeat(MAX_TOKEN_LEN + 1), None),
        ];
        for (case, token, want) in cases {
            assert_eq!(v.verify_subject(&token).as_deref(), want, "{case}");
        }
    }

    #[test]
    fn short_hs256_secrets_are_refused_without_echoing_them() {
        for secret in [&b""[..], b"s", b"dev-secret-change-me", &[b'x'; 31]] {
            let err = JwtVerifier::hs256(secret).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("JWT secret") && msg.contains(&format!("<{} bytes>", secret.len())), "{msg}");
            assert!(msg.contains("at least 32 bytes"), "{msg}");
            assert!(secret.len() < 4 || !msg.contains(std::str::from_utf8(secret).unwrap()), "{msg}");
            assert_eq!(err.kind(), crate::ErrorKind::Config);
        }
        assert!(JwtVerifier::hs256(&[b'x'; 32]).is_ok());
    }

    #[test]
    fn future_iat_tolerates_the_leeway_only() {
        let token = hs(&json!({"sub": "42", "iat": now() + 60}));
        let v = JwtVerifier::hs256(SECRET).unwrap();
        assert_eq!(v.verify_subject(&token), None);
        assert_eq!(v.clone().with_leeway_secs(120).verify_subject(&token).as_deref(), Some("42"));
        assert_eq!(v.with_leeway_secs(5).verify_subject(&token), None);
    }

    #[test]
    fn exp_can_be_required() {
        let v = JwtVerifier::hs256(SECRET).unwrap().with_required_exp(true);
        assert_eq!(v.verify_subject(&hs(&json!({"sub": "7"}))), None, "no exp");
        assert_eq!(v.verify_subject(&hs(&json!({"sub": "7", "exp": now() + 60}))).as_deref(), Some("7"));
        assert_eq!(v.verify_subject(&hs(&json!({"sub": "7", "exp": now() - 60}))), None, "expired");
        let optional = v.with_required_exp(false);
        assert_eq!(optional.verify_subject(&hs(&json!({"sub": "7"}))).as_deref(), Some("7"));
    }

    #[test]
    fn a_repeated_token_is_verified_once() {
        let ec = JwtVerifier::es256_pem(EC_PUBLIC).unwrap();
        let good = sign(
            Algorithm::ES256,
            &EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
            &json!({"sub": "bob", "exp": now() + 600}),
        );
        let junk = format!("{}.{}.{}", b64url(br#"{"alg":"ES256"}"#), b64url(br#"{"sub":"x"}"#), "A".repeat(86));
        for _ in 0..5 {
            assert_eq!(ec.verify_subject(&good).as_deref(), Some("bob"));
            assert_eq!(ec.verify_subject(&format!(" {good}")).as_deref(), Some("bob"), "same token, trimmed");
            assert_eq!(ec.verify_subject(&junk), None);
        }
        assert_eq!(ec.verifications(), 2, "one verification per distinct token, refusals remembered too");
        assert_eq!(ec.cached_subject(&good), Some(Some("bob".into())));
        assert_eq!(ec.cached_subject(&junk), Some(None));
        assert_eq!(ec.cached_subject("never.seen.before"), None);
        assert_eq!(ec.cached_subject(""), Some(None), "refused on sight");
        // Clones share the cache; changed settings start a new one.
        let clone = ec.clone();
        assert_eq!(clone.verify_subject(&good).as_deref(), Some("bob"));
        assert_eq!(ec.verifications(), 2);
        let stricter = ec.clone().with_audience("api");
        assert_eq!(stricter.verify_subject(&good), None, "a result under other settings is not reused");
        assert_eq!(stricter.verifications(), 1);
        // Without a cache every call verifies.
        let uncached = JwtVerifier::hs256(SECRET).unwrap().with_cache_entries(0);
        let t = hs(&json!({"sub": "1"}));
        for _ in 0..3 {
            assert_eq!(uncached.verify_subject(&t).as_deref(), Some("1"));
        }
        assert_eq!(uncached.verifications(), 3);
    }

    #[test]
    fn a_remembered_subject_never_outlives_exp() {
        let v = JwtVerifier::hs256(SECRET).unwrap();
        // Expires within the second: verified, but not remembered (its entry would outlive it).
        let now_exp = hs(&json!({"sub": "42", "exp": now()}));
        let _ = v.verify_subject(&now_exp);
        assert_eq!(v.cached_subject(&now_exp), None);
        let soon = hs(&json!({"sub": "42", "exp": now() + 2}));
        assert_eq!(v.verify_subject(&soon).as_deref(), Some("42"));
        assert_eq!(v.cached_subject(&soon), Some(Some("42".into())));
        // The entry's life is what is left of the token's: at most 2 s here.
        let left = v.cache.results().policy().time_to_live();
        assert_eq!(left, None, "per-entry expiry, not a global TTL");
        let ttl = v.verify(&soon).unwrap().ttl;
        assert!(ttl <= Duration::from_secs(2), "{ttl:?}");
        let far = hs(&json!({"sub": "42", "exp": now() + 86_400}));
        assert_eq!(v.verify(&far).unwrap().ttl, MAX_VERIFIED_TTL);
    }

    #[test]
    fn leeway_admits_recent_expiry_only() {
        let token = hs(&json!({"sub": "42", "exp": now() - 30}));
        let v = JwtVerifier::hs256(SECRET).unwrap();
        assert_eq!(v.clone().with_leeway_secs(120).verify_subject(&token).as_deref(), Some("42"));
        assert_eq!(v.clone().with_leeway_secs(5).verify_subject(&token), None);
        // Clamped, not trusted blindly.
        let ancient = hs(&json!({"sub": "42", "exp": 1000}));
        assert_eq!(v.with_leeway_secs(u64::MAX).verify_subject(&ancient), None);
    }

    #[test]
    fn issuer_and_audience_when_configured() {
        let v = JwtVerifier::hs256(SECRET).unwrap().with_issuer("https://auth.example").with_audience("api");
        let cases: &[(&str, Value, Option<&str>)] = &[
            ("both match", json!({"sub": "1", "iss": "https://auth.example", "aud": "api"}), Some("1")),
            (
                "aud list contains ours",
                json!({"sub": "1", "iss": "https://auth.example", "aud": ["x", "api"]}),
                Some("1"),
            ),
            ("wrong issuer", json!({"sub": "1", "iss": "https://evil.example", "aud": "api"}), None),
            ("missing issuer", json!({"sub": "1", "aud": "api"}), None),
            ("wrong audience", json!({"sub": "1", "iss": "https://auth.example", "aud": "web"}), None),
            ("missing audience", json!({"sub": "1", "iss": "https://auth.example"}), None),
        ];
        for (case, claims, want) in cases {
            assert_eq!(v.verify_subject(&hs(claims)).as_deref(), *want, "{case}");
        }
    }

    #[test]
    fn rs256_with_real_keys() {
        let v = JwtVerifier::rs256_pem(RSA_PUBLIC).unwrap();
        let ours = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let theirs = EncodingKey::from_rsa_pem(OTHER_RSA_PRIVATE.as_bytes()).unwrap();
        let claims = json!({"sub": "alice", "exp": now() + 600});
        assert_eq!(v.verify_subject(&sign(Algorithm::RS256, &ours, &claims)).as_deref(), Some("alice"));
        let pkcs1 = JwtVerifier::rs256_pem(RSA_PUBLIC_PKCS1).unwrap();
        assert_eq!(
            pkcs1.verify_subject(&sign(Algorithm::RS256, &ours, &claims)).as_deref(),
            Some("alice"),
            "PKCS#1 PEM"
        );
        assert_eq!(v.verify_subject(&sign(Algorithm::RS256, &theirs, &claims)), None, "other key");
        assert_eq!(v.verify_subject(&sign(Algorithm::RS384, &ours, &claims)), None, "RS384 is not RS256");
        assert_eq!(v.verify_subject(&sign(Algorithm::PS256, &ours, &claims)), None, "PS256 is not RS256");
        let expired = json!({"sub": "alice", "exp": now() - 30});
        assert_eq!(v.verify_subject(&sign(Algorithm::RS256, &ours, &expired)), None, "expired");
    }

    #[test]
    fn alg_confusion_hs256_signed_with_the_public_key_is_refused() {
        // The classic attack: take the server's public key (it is public) and use it as an HMAC
        // secret, hoping the verifier lets the token's header pick the algorithm.
        let claims = json!({"sub": "admin", "exp": now() + 600});
        let v = JwtVerifier::rs256_pem(RSA_PUBLIC).unwrap();
        for secret in [RSA_PUBLIC.as_bytes(), RSA_PUBLIC.trim().as_bytes()] {
            let forged = sign(Algorithm::HS256, &EncodingKey::from_secret(secret).unwrap(), &claims);
            assert_eq!(v.verify_subject(&forged), None);
        }
        let v = JwtVerifier::es256_pem(EC_PUBLIC).unwrap();
        let forged = sign(Algorithm::HS256, &EncodingKey::from_secret(EC_PUBLIC.as_bytes()).unwrap(), &claims);
        assert_eq!(v.verify_subject(&forged), None);
    }

    #[test]
    fn es256_with_real_keys() {
        let v = JwtVerifier::es256_pem(EC_PUBLIC).unwrap();
        let ours = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
        let claims = json!({"sub": "bob", "exp": now() + 600});
        let token = sign(Algorithm::ES256, &ours, &claims);
        assert_eq!(v.verify_subject(&token).as_deref(), Some("bob"));
        let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        assert_eq!(v.verify_subject(&sign(Algorithm::RS256, &rsa, &claims)), None, "RS256 token");
        // Flip one signature character: a valid-looking but wrong signature.
        let mut bad = token.into_bytes();
        let last = bad.len() - 2;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(v.verify_subject(std::str::from_utf8(&bad).unwrap()), None, "bad signature");
    }

    #[test]
    fn bad_keys_are_config_errors_naming_the_key() {
        type Make = fn(&str) -> Result<JwtVerifier>;
        let cases: &[(&str, Make, &str)] = &[
            ("garbage for RS256", JwtVerifier::rs256_pem, "not a key"),
            ("EC key for RS256", JwtVerifier::rs256_pem, EC_PUBLIC),
            ("RSA private key for RS256", JwtVerifier::rs256_pem, RSA_PRIVATE),
            ("garbage for ES256", JwtVerifier::es256_pem, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"),
            ("RSA key for ES256", JwtVerifier::es256_pem, RSA_PUBLIC),
            ("P-384 key for ES256", JwtVerifier::es256_pem, EC_P384_PUBLIC),
            ("EC private key for ES256", JwtVerifier::es256_pem, EC_PRIVATE),
        ];
        for (case, make, pem) in cases {
            let err = make(pem).expect_err(case);
            assert!(err.to_string().contains("JWT public key"), "{case}: {err}");
            assert!(!err.to_string().contains("MII"), "{case}: key material in the message: {err}");
            assert_eq!(err.kind(), crate::ErrorKind::Config, "{case}");
        }
        let err = JwtVerifier::hs256(b"").unwrap_err();
        assert!(err.to_string().contains("JWT secret"), "{err}");
        let debug = format!("{:?}", JwtVerifier::hs256(SECRET).unwrap());
        assert!(!debug.contains("horse"), "secret in Debug: {debug}");
    }

    #[test]
    fn bearer_tokens() {
        let cases: &[(Option<&str>, Option<&str>)] = &[
            (Some("Bearer abc"), Some("abc")),
            (Some("bearer abc"), Some("abc")),
            (Some("BEARER   abc  "), Some("abc")),
            (Some("  Bearer\tabc"), Some("abc")),
            (Some("Basic dXNlcjpwdw=="), None),
            (Some("Bearer"), None),
            (Some("Bearer "), None),
            (Some("Bearer a b"), None),
            (Some("Bearer a, Bearer b"), None),
            (Some("Bearerabc"), None),
            (Some(""), None),
            (None, None),
        ];
        for (input, want) in cases {
            assert_eq!(bearer_token(*input), *want, "{input:?}");
        }
    }
}
