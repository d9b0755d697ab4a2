//! The deployment's secret for keyed hashes: it turns an identity (an API key, a client IP) into a
//! bucket name or a span attribute that nobody who reads Redis or the traces can reverse.

use std::fmt;
use std::sync::OnceLock;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

/// The environment variable every instance of a deployment reads its shared secret from.
pub const SECRET_ENV: &str = "FLOODWALL_KEY_SECRET";
/// Shorter secrets can be brute-forced offline from one known (identity, hash) pair.
pub const MIN_SECRET_LEN: usize = 32;

/// A secret for HMAC-SHA256. Its bytes never reach a log line or an error message.
#[derive(Clone)]
pub struct KeySecret {
    /// HMAC-SHA256 with the key already absorbed: each hash clones it instead of re-keying.
    mac: Hmac<Sha256>,
    /// Made up by this process (no secret was configured): its hashes mean nothing elsewhere.
    ephemeral: bool,
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySecret").field("ephemeral", &self.ephemeral).finish_non_exhaustive()
    }
}

impl KeySecret {
    /// A configured secret: at least [`MIN_SECRET_LEN`] bytes (`what` names the setting in errors).
    pub fn new(what: &'static str, secret: &[u8]) -> Result<Self> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(Error::config(
                what,
                format!("<{} bytes>", secret.len()),
                format!("must be at least {MIN_SECRET_LEN} bytes (e.g. `openssl rand -hex 32`)"),
            ));
        }
        Ok(Self::keyed(secret, false))
    }

    /// [`SECRET_ENV`] if it is set (an error if it is too short), else `None`.
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var_os(SECRET_ENV) {
            None => Ok(None),
            Some(v) => Self::new(SECRET_ENV, v.as_encoded_bytes()).map(Some),
        }
    }

    /// 32 random bytes from the OS: a secret for this process only.
    pub fn random() -> Self {
        let mut key = vec![0u8; 32];
        // The OS source failing is not something a rate limiter can repair; a fixed key would
        // silently make every hash reversible, so refuse loudly instead.
        getrandom::fill(&mut key).expect("the OS random source failed");
        Self::keyed(&key, true)
    }

    fn keyed(key: &[u8], ephemeral: bool) -> Self {
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
        KeySecret { mac, ephemeral }
    }

    /// Made up by this process because none was configured.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// The first 128 bits of HMAC-SHA256(secret, `label` 0x00 `value`), in lower-case hex. The
    /// label keeps one secret's uses apart: an API key's bucket name is not its span hash.
    pub fn hex32(&self, label: &str, value: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(value);
        let digest = mac.finalize().into_bytes();
        hex(&digest[..16])
    }
}

/// The process's secret: [`SECRET_ENV`] when set and valid, else one made at random for this process
/// (hashes then differ between instances; a warning says so once).
pub fn process() -> &'static KeySecret {
    static SECRET: OnceLock<KeySecret> = OnceLock::new();
    SECRET.get_or_init(|| match KeySecret::from_env() {
        Ok(Some(s)) => s,
        Ok(None) => KeySecret::random(),
        Err(e) => {
            tracing::warn!("floodwall: {e}; using a random per-process secret instead");
            KeySecret::random()
        }
    })
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secrets_are_refused_without_echoing_them() {
        let err = KeySecret::new("key secret", b"hunter2").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("key secret") && msg.contains("<7 bytes>") && msg.contains("32"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        assert_eq!(err.kind(), crate::ErrorKind::Config);
    }

    #[test]
    fn hashes_are_keyed_labelled_and_stable() {
        let a = KeySecret::new("s", &[1u8; 32]).unwrap();
        let b = KeySecret::new("s", &[2u8; 32]).unwrap();
        let h = a.hex32("apikey", b"1.2.3.4");
        assert_eq!(h.len(), 32);
        assert_eq!(h, a.hex32("apikey", b"1.2.3.4"));
        assert_ne!(h, b.hex32("apikey", b"1.2.3.4"), "another secret");
        assert_ne!(h, a.hex32("span", b"1.2.3.4"), "another label");
        // RFC 4231 test case 2 (key "Jefe" is too short for KeySecret::new, so built by hand).
        let jefe = KeySecret::keyed(b"Jefe", false);
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(hex(&mac.finalize().into_bytes()[..4]), "5bdcc146");
        assert_eq!(jefe.hex32("", b"x").len(), 32);
        assert!(KeySecret::random().is_ephemeral() && !a.is_ephemeral());
        assert_ne!(KeySecret::random().hex32("l", b"v"), KeySecret::random().hex32("l", b"v"));
    }
}
