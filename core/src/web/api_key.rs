//! API keys as identities: a key gets a bucket of its own only once verified (an allow-list, a key
//! signed with the deployment's signing secret, or the app's `verify` callback); any other key is
//! anonymous, keyed by the client IP, so inventing keys buys nothing.

use std::collections::HashSet;
use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::secret::{self, KeySecret, MIN_SECRET_LEN};

/// Longer API keys are refused unhashed: no legitimate key is near this, and a request must not
/// make the limiter hash arbitrary amounts of data.
pub const MAX_API_KEY_LEN: usize = 1024;
/// The id of a signed key: 1 to 64 of `A-Z a-z 0-9 _ -`, so it goes into a bucket name unescaped.
pub const MAX_SIGNED_ID_LEN: usize = 64;

/// What the app's `verify` callback said about a request's API key (the adapters call it before
/// the core decides; the core never calls into Python or JavaScript).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppVerdict<'a> {
    /// A valid key: its bucket is the keyed hash of the key (or its signed id).
    Accept,
    /// A valid key belonging to this identity (an account id): the bucket is `apikey:<identity>`,
    /// shared by every key of that account.
    AcceptAs(&'a str),
    /// Not a valid key (unknown, revoked): the request is anonymous. This wins over the allow-list
    /// and the signature, so an app can revoke a signed key.
    Reject,
}

/// An [`AppVerdict`] that owns its identity: what an adapter holds while the request's future runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedVerdict {
    Accept,
    AcceptAs(String),
    Reject,
}

impl OwnedVerdict {
    pub fn as_verdict(&self) -> AppVerdict<'_> {
        match self {
            OwnedVerdict::Accept => AppVerdict::Accept,
            OwnedVerdict::AcceptAs(id) => AppVerdict::AcceptAs(id),
            OwnedVerdict::Reject => AppVerdict::Reject,
        }
    }
}

impl From<bool> for OwnedVerdict {
    fn from(accepted: bool) -> Self {
        if accepted {
            OwnedVerdict::Accept
        } else {
            OwnedVerdict::Reject
        }
    }
}

/// How a request's API key part resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiKeyIdentity {
    /// No key was sent: anonymous, nothing to count as a failure.
    Absent,
    /// A key was sent and did not verify: anonymous, and a failed lookup.
    Rejected,
    /// The key part of the bucket: `apikey:<signed id>`, `apikey:<app identity>` or `apikey:#<keyed hash>`.
    Verified(String),
}

/// The ways this deployment verifies API keys. With none of them, a scope with `api_key` is refused
/// when the rules are built ([`crate::web::RuleSet::new`]): trusting any header value is the bypass.
#[derive(Clone, Default)]
pub struct ApiKeyVerifier {
    /// Keyed hashes (with `secret`) of the allow-listed keys: a lookup compares hashes an attacker
    /// cannot predict, so its timing says nothing about the keys.
    allowed: HashSet<String>,
    /// The secret signed keys are made with (`<id>.<hex HMAC-SHA256(secret, id)>`).
    signing: Option<Vec<u8>>,
    /// The app's adapter runs a `verify` callback and passes its [`AppVerdict`].
    app_verifies: bool,
    /// The bucket-hash secret; None: [`secret::process`] (FLOODWALL_KEY_SECRET, else random).
    secret: Option<KeySecret>,
}

impl fmt::Debug for ApiKeyVerifier {
    // By hand: neither the keys' hashes nor the secrets belong in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyVerifier")
            .field("allowed", &self.allowed.len())
            .field("signed", &self.signing.is_some())
            .field("app_verifies", &self.app_verifies)
            .finish_non_exhaustive()
    }
}

impl ApiKeyVerifier {
    /// Verifies nothing yet: add an allow-list, a signing secret and/or the app's callback.
    pub fn new() -> Self {
        Self::default()
    }

    /// The secret bucket hashes are keyed with (every instance sharing a Redis needs the same one).
    /// Give it before [`allow`](Self::allow): the allow-list is stored hashed with it.
    pub fn key_secret(mut self, secret: KeySecret) -> Self {
        debug_assert!(self.allowed.is_empty(), "key_secret after allow");
        self.secret = Some(secret);
        self
    }

    /// Accept exactly these keys. Empty or over-long keys are refused (naming their position only).
    pub fn allow<S: AsRef<str>>(mut self, keys: &[S]) -> Result<Self> {
        for (i, k) in keys.iter().enumerate() {
            let k = k.as_ref().trim();
            if k.is_empty() || k.len() > MAX_API_KEY_LEN {
                return Err(Error::config(
                    "API key allow-list entry",
                    format!("#{i}"),
                    format!("must be 1 to {MAX_API_KEY_LEN} bytes (surrounding space is ignored)"),
                ));
            }
            let h = self.hash(k);
            self.allowed.insert(h);
        }
        Ok(self)
    }

    /// Accept keys of the form `<id>.<hex HMAC-SHA256(signing_secret, id)>` (see [`sign_api_key`]);
    /// the bucket is then `apikey:<id>`. The secret must be at least 32 bytes.
    pub fn signed(mut self, signing_secret: &[u8]) -> Result<Self> {
        check_signing_secret(signing_secret)?;
        self.signing = Some(signing_secret.to_vec());
        Ok(self)
    }

    /// The adapter calls the app's `verify` callback and passes its verdict with each request.
    pub fn app_callback(mut self) -> Self {
        self.app_verifies = true;
        self
    }

    /// The adapter is to call the app's `verify` callback and pass its verdict.
    pub fn verified_by_app(&self) -> bool {
        self.app_verifies
    }

    /// Some way to verify a key is configured.
    pub fn can_verify(&self) -> bool {
        !self.allowed.is_empty() || self.signing.is_some() || self.app_verifies
    }

    /// Some verified key may be bucketed by its keyed hash (an allow-listed key, or one the app
    /// accepted without naming an identity): those buckets agree across instances only with a
    /// shared secret.
    pub fn hashes_keys(&self) -> bool {
        !self.allowed.is_empty() || self.app_verifies
    }

    /// The bucket-hash secret was made up by this process (none configured).
    pub fn secret_is_ephemeral(&self) -> bool {
        self.secret.as_ref().unwrap_or_else(|| secret::process()).is_ephemeral()
    }

    /// The key part for a request that sent `key` (trimmed; None or blank: [`ApiKeyIdentity::Absent`]),
    /// with the app callback's verdict when there is a callback.
    pub fn identify(&self, key: Option<&str>, app: Option<AppVerdict<'_>>) -> ApiKeyIdentity {
        let Some(key) = key.map(str::trim).filter(|k| !k.is_empty()) else {
            return ApiKeyIdentity::Absent;
        };
        if key.len() > MAX_API_KEY_LEN {
            return ApiKeyIdentity::Rejected;
        }
        // A verdict only counts when a callback was configured: an adapter cannot smuggle one in.
        let app = if self.app_verifies { app } else { None };
        match app {
            Some(AppVerdict::Reject) => return ApiKeyIdentity::Rejected,
            Some(AppVerdict::AcceptAs(id)) if !id.is_empty() => {
                return ApiKeyIdentity::Verified(format!("apikey:{}", super::request_key::free_text(id)))
            }
            Some(AppVerdict::AcceptAs(_)) => return ApiKeyIdentity::Rejected,
            _ => {}
        }
        if let Some(id) = self.signing.as_deref().and_then(|s| signed_id(s, key)) {
            return ApiKeyIdentity::Verified(format!("apikey:{id}"));
        }
        if !self.allowed.is_empty() || app == Some(AppVerdict::Accept) {
            let h = self.hash(key);
            if app == Some(AppVerdict::Accept) || self.allowed.contains(&h) {
                return ApiKeyIdentity::Verified(format!("apikey:#{h}"));
            }
        }
        ApiKeyIdentity::Rejected
    }

    fn hash(&self, key: &str) -> String {
        self.secret.as_ref().unwrap_or_else(|| secret::process()).hex32("apikey", key.as_bytes())
    }
}

/// A signed key for `id`: `<id>.<64 lower-case hex digits of HMAC-SHA256(signing_secret, id)>`.
/// Any language can make one: `id + "." + hmac.new(secret, id.encode(), "sha256").hexdigest()`.
pub fn sign_api_key(signing_secret: &[u8], id: &str) -> Result<String> {
    check_signing_secret(signing_secret)?;
    if !valid_id(id) {
        return Err(Error::config(
            "API key id",
            id.chars().take(80).collect::<String>(),
            format!("must be 1 to {MAX_SIGNED_ID_LEN} of A-Z a-z 0-9 _ -"),
        ));
    }
    let mac = mac(signing_secret, id);
    Ok(format!("{id}.{}", secret::hex(&mac.finalize().into_bytes())))
}

fn check_signing_secret(s: &[u8]) -> Result<()> {
    if s.len() < MIN_SECRET_LEN {
        // Anyone who guesses a short signing secret mints identities at will.
        return Err(Error::config(
            "API key signing secret",
            format!("<{} bytes>", s.len()),
            format!("must be at least {MIN_SECRET_LEN} bytes (e.g. `openssl rand -hex 32`)"),
        ));
    }
    Ok(())
}

fn valid_id(id: &str) -> bool {
    (1..=MAX_SIGNED_ID_LEN).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn mac(secret: &[u8], id: &str) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes a key of any length");
    m.update(id.as_bytes());
    m
}

/// The id of a correctly signed key, else None. The signature is compared in constant time.
fn signed_id<'k>(secret: &[u8], key: &'k str) -> Option<&'k str> {
    let (id, sig) = key.rsplit_once('.')?;
    if !valid_id(id) || sig.len() != 64 {
        return None;
    }
    let mut raw = [0u8; 32];
    for (i, pair) in sig.as_bytes().chunks(2).enumerate() {
        raw[i] = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    mac(secret, id).verify_slice(&raw).ok().map(|()| id)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNING: &[u8] = b"signing-secret-for-tests-0123456789abcdef";

    fn secret() -> KeySecret {
        KeySecret::new("test key secret", &[7u8; 32]).unwrap()
    }

    #[test]
    fn verification_table() {
        use AppVerdict::*;
        let signed = sign_api_key(SIGNING, "acct_42").unwrap();
        let forged_sig = format!("acct_42.{}", "0".repeat(64));
        let other_id = signed.replacen("acct_42", "acct_43", 1);
        let other_secret = sign_api_key(&[9u8; 32], "acct_42").unwrap();
        let hash = |k: &str| format!("apikey:#{}", secret().hex32("apikey", k.as_bytes()));
        let long = "k".repeat(MAX_API_KEY_LEN + 1);
        let upper = signed.to_uppercase().replacen("ACCT_42", "acct_42", 1);
        let non_hex = format!("acct_42.{}", "g".repeat(64));
        let bad_id = format!("a|b.{}", "0".repeat(64));
        let allow = ApiKeyVerifier::new().key_secret(secret()).allow(&["sk_live_1", " sk_live_2 "]).unwrap();
        let sig = ApiKeyVerifier::new().key_secret(secret()).signed(SIGNING).unwrap();
        let app = ApiKeyVerifier::new().key_secret(secret()).app_callback();
        let all = ApiKeyVerifier::new().key_secret(secret()).allow(&["sk_live_1"]).unwrap().signed(SIGNING).unwrap();
        let all_app = all.clone().app_callback();
        let none = ApiKeyVerifier::new().key_secret(secret());
        let v = |s: &str| ApiKeyIdentity::Verified(s.to_string());
        let (rejected, absent) = (ApiKeyIdentity::Rejected, ApiKeyIdentity::Absent);
        #[rustfmt::skip]
        // (case, verifier, key sent, the app's verdict, resolved)
        type Case<'a> = (&'a str, &'a ApiKeyVerifier, Option<&'a str>, Option<AppVerdict<'a>>, ApiKeyIdentity);
        let cases: Vec<Case> = vec![
            ("allow-listed", &allow, Some("sk_live_1"), None, v(&hash("sk_live_1"))),
            ("allow-listed, trimmed", &allow, Some(" sk_live_2"), None, v(&hash("sk_live_2"))),
            ("not listed", &allow, Some("sk_live_3"), None, rejected.clone()),
            ("prefix of a listed key", &allow, Some("sk_live_"), None, rejected.clone()),
            ("no key", &allow, None, None, absent.clone()),
            ("blank key", &allow, Some("  "), None, absent.clone()),
            ("over-long key", &allow, Some(&long), None, rejected.clone()),
            ("signed", &sig, Some(&signed), None, v("apikey:acct_42")),
            ("signed, upper-case hex", &sig, Some(&upper), None, v("apikey:acct_42")),
            ("zero signature", &sig, Some(&forged_sig), None, rejected.clone()),
            ("signature of another id", &sig, Some(&other_id), None, rejected.clone()),
            ("signed with another secret", &sig, Some(&other_secret), None, rejected.clone()),
            ("no signature", &sig, Some("acct_42"), None, rejected.clone()),
            ("truncated signature", &sig, Some(&signed[..signed.len() - 2]), None, rejected.clone()),
            ("non-hex signature", &sig, Some(&non_hex), None, rejected.clone()),
            ("bad id characters", &sig, Some(&bad_id), None, rejected.clone()),
            ("app accepts", &app, Some("anything"), Some(Accept), v(&hash("anything"))),
            ("app names the account", &app, Some("anything"), Some(AcceptAs("acct|7")), v("apikey:acct%7C7")),
            ("app names an empty account", &app, Some("anything"), Some(AcceptAs("")), rejected.clone()),
            ("app rejects", &app, Some("anything"), Some(Reject), rejected.clone()),
            ("app gave no verdict", &app, Some("anything"), None, rejected.clone()),
            ("any of several: allow-list", &all, Some("sk_live_1"), None, v(&hash("sk_live_1"))),
            ("any of several: signed", &all, Some(&signed), None, v("apikey:acct_42")),
            ("any of several: neither", &all, Some("sk_live_9"), None, rejected.clone()),
            ("app revokes a signed key", &all_app, Some(&signed), Some(Reject), rejected.clone()),
            ("app accepts a signed key: its id", &all_app, Some(&signed), Some(Accept), v("apikey:acct_42")),
            ("verdict without a callback is ignored", &allow, Some("sk_live_3"), Some(Accept), rejected.clone()),
            ("nothing configured", &none, Some("sk_live_1"), Some(Accept), rejected.clone()),
        ];
        for (case, verifier, key, verdict, want) in cases {
            assert_eq!(verifier.identify(key, verdict), want, "{case}");
        }
        assert!(allow.can_verify() && sig.can_verify() && app.can_verify() && !none.can_verify());
        assert!(allow.hashes_keys() && !sig.hashes_keys() && app.hashes_keys());
    }

    #[test]
    fn hashes_are_keyed_by_the_configured_secret() {
        let a = ApiKeyVerifier::new().key_secret(secret()).app_callback();
        let b = ApiKeyVerifier::new().key_secret(KeySecret::new("s", &[8u8; 32]).unwrap()).app_callback();
        let ka = a.identify(Some("sk"), Some(AppVerdict::Accept));
        assert_ne!(ka, b.identify(Some("sk"), Some(AppVerdict::Accept)));
        // Two instances with one secret agree: buckets in a shared Redis line up.
        let a2 = ApiKeyVerifier::new().key_secret(secret()).app_callback();
        assert_eq!(ka, a2.identify(Some("sk"), Some(AppVerdict::Accept)));
        assert!(!a.secret_is_ephemeral());
    }

    #[test]
    fn signing_format_and_errors() {
        let key = sign_api_key(SIGNING, "acct_42").unwrap();
        let (id, sig) = key.split_once('.').unwrap();
        assert_eq!(id, "acct_42");
        assert_eq!(sig.len(), 64);
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(SIGNING).unwrap();
        m.update(b"acct_42");
        assert_eq!(sig, secret::hex(&m.finalize().into_bytes()));

        let err = sign_api_key(b"short", "x").unwrap_err().to_string();
        assert!(err.contains("signing secret") && err.contains("<5 bytes>") && !err.contains("short"), "{err}");
        let err = ApiKeyVerifier::new().signed(b"hunter2").unwrap_err().to_string();
        assert!(err.contains("<7 bytes>") && !err.contains("hunter2"), "{err}");
        for id in ["", "a.b", "a b", &"x".repeat(65)] {
            assert!(sign_api_key(SIGNING, id).is_err(), "{id:?}");
        }
        let err = ApiKeyVerifier::new().allow(&["ok", " "]).unwrap_err().to_string();
        assert!(err.contains("#1"), "{err}");
        let debug = format!("{:?}", ApiKeyVerifier::new().allow(&["sk_live_1"]).unwrap().signed(SIGNING).unwrap());
        assert!(!debug.contains("sk_live") && !debug.contains("signing-secret"), "{debug}");
    }
}
