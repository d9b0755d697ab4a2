//! Who the caller is, when they can prove it: the `sub` of a JWT whose signature verifies with the
//! one algorithm and key configured. Anything else is anonymous, never an error: tokens are client input.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, Validation};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Real tokens are well under 8 KiB (servers cap whole header blocks near there); a longer one is
/// refused before any base64 or JSON work is spent on it.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Clock-skew allowance is clamped to one day: more would make expiry meaningless, and it keeps
/// the library's `now - leeway` arithmetic far from underflow.
pub const MAX_LEEWAY_SECS: u64 = 86_400;

/// Verifies tokens with one algorithm and one key. `Clone` is cheap enough to share per adapter.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    algorithm: Algorithm,
    validation: Validation,
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
        if secret.is_empty() {
            return Err(Error::config("JWT secret", "", "must not be empty"));
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
        JwtVerifier { key, algorithm, validation }
    }

    /// Require `iss` to equal `iss`; a token without `iss` is then refused.
    pub fn with_issuer(mut self, iss: &str) -> Self {
        self.validation.set_issuer(&[iss]);
        // The library skips the comparison when the claim is absent; requiring it closes that gap.
        self.validation.required_spec_claims.insert("iss".into());
        self
    }

    /// Require `aud` to contain `aud`; a token without `aud` is then refused.
    pub fn with_audience(mut self, aud: &str) -> Self {
        self.validation.set_audience(&[aud]);
        self.validation.validate_aud = true;
        self.validation.required_spec_claims.insert("aud".into());
        self
    }

    /// Tolerated clock skew for `exp` and `nbf` (default 0, at most [`MAX_LEEWAY_SECS`]).
    pub fn with_leeway_secs(mut self, s: u64) -> Self {
        self.validation.leeway = s.min(MAX_LEEWAY_SECS);
        self
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
    /// algorithm and key, that has not expired (when it has `exp`), is not before its `nbf`, and
    /// matches the configured issuer and audience. Anything else, `None`.
    pub fn verify_subject(&self, token: &str) -> Option<String> {
        let token = token.trim();
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return None;
        }
        // The token is attacker-chosen bytes fed to a third-party parser; whatever it does, a
        // request must not take the server down with it.
        catch_unwind(AssertUnwindSafe(|| self.verify(token))).ok().flatten()
    }

    fn verify(&self, token: &str) -> Option<String> {
        #[derive(Deserialize)]
        struct Claims {
            sub: Option<String>,
        }
        // `decode` refuses any header `alg` but ours (so "none" and HS256-with-the-RSA-key fail)
        // before it looks at the signature.
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).ok()?;
        data.claims.sub.filter(|s| !s.is_empty())
    }
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

    const SECRET: &[u8] = b"correct horse battery staple";

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
