//! The one place that lays out Redis keys: `{prefix}:{<identity tag>}:<algorithm>[:<windows ms>]`.
//! The identity sits inside a hash tag, so every key of one identity lands in one Cluster slot
//! (one script call can touch them all) while different identities spread across slots.

use std::borrow::Cow;
use std::fmt::Write;

use sha2::{Digest, Sha256};

use crate::algorithm::Algorithm;
use crate::error::{Error, Result};
use crate::limit::Limit;

/// Identities longer than this many bytes are stored as a hash, never raw: a client-chosen key
/// (a header, a token claim) must not be able to make Redis keys of arbitrary size.
pub const MAX_RAW_IDENTITY: usize = 128;
/// Longest identity accepted at all (it is hashed, but hashing megabytes per request is a DoS).
pub const MAX_IDENTITY: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    prefix: String,
}

impl Default for KeyLayout {
    fn default() -> Self {
        KeyLayout { prefix: "floodwall".into() }
    }
}

impl KeyLayout {
    pub fn new(prefix: &str) -> Result<Self> {
        let bad = |reason: &str| Err(Error::config("key prefix", prefix, reason));
        if prefix.is_empty() {
            return bad("must not be empty");
        }
        if prefix.len() > 64 {
            return bad("must be at most 64 bytes");
        }
        if !prefix.bytes().all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}') {
            return bad("must be printable ASCII without spaces or braces (braces would break the hash tag)");
        }
        Ok(KeyLayout { prefix: prefix.to_string() })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The identity as it appears inside the hash tag: itself when short and plain, otherwise
    /// `#` + 32 hex digits of its SHA-256 (a raw identity never starts with `#`, so the two forms
    /// cannot collide).
    pub fn identity_tag(identity: &str) -> Result<Cow<'_, str>> {
        if identity.is_empty() {
            return Err(Error::InvalidKey { key: identity.into(), reason: "must not be empty".into() });
        }
        if identity.len() > MAX_IDENTITY {
            let shown: String = identity.chars().take(32).collect();
            return Err(Error::InvalidKey {
                key: format!("{shown}..."),
                reason: format!("is {} bytes; at most {MAX_IDENTITY} are accepted", identity.len()),
            });
        }
        let plain = identity.len() <= MAX_RAW_IDENTITY
            && !identity.starts_with('#')
            && identity.bytes().all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
        if plain {
            Ok(Cow::Borrowed(identity))
        } else {
            let digest = Sha256::digest(identity.as_bytes());
            let mut tag = String::with_capacity(33);
            tag.push('#');
            for b in &digest[..16] {
                tag.push_str(&format!("{b:02x}"));
            }
            Ok(Cow::Owned(tag))
        }
    }

    /// `{prefix}:{tag}` — every key of the identity starts with this.
    pub fn base(&self, identity: &str) -> Result<String> {
        Ok(format!("{}:{{{}}}", self.prefix, Self::identity_tag(identity)?))
    }

    /// The keys one script call touches, in the order the script expects them. Sliding window
    /// and token bucket keep every limit of the identity in ONE key named by its windows
    /// (`...:sw:1000,60000`), so a check costs one read and one write in Redis whatever the
    /// number of limits, and limiters with other windows never share (or expire) its state.
    pub fn keys(&self, identity: &str, algorithm: Algorithm, limits: &[Limit]) -> Result<Vec<String>> {
        // Built in one string each: this runs for every decision.
        let tag = Self::identity_tag(identity)?;
        let mut key = String::with_capacity(self.prefix.len() + tag.len() + 12 + 8 * limits.len());
        let _ = write!(key, "{}:{{{tag}}}", self.prefix);
        Ok(match algorithm {
            Algorithm::SlidingWindow | Algorithm::TokenBucket => {
                key.push_str(if algorithm == Algorithm::SlidingWindow { ":sw:" } else { ":tb:" });
                for (i, l) in limits.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "," };
                    let _ = write!(key, "{sep}{}", l.window().as_millis());
                }
                vec![key]
            }
            Algorithm::SlidingLog => {
                key.push_str(":log");
                let seq = format!("{key}:seq");
                vec![key, seq]
            }
        })
    }
}

/// The Redis Cluster slot of a key (CRC16/XMODEM of its hash tag, mod 16384).
pub fn cluster_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            bytes[open + 1..].iter().position(|&b| b == b'}').filter(|&len| len > 0).map(|len| &bytes[open + 1..open + 1 + len])
        })
        .unwrap_or(bytes);
    let mut crc: u16 = 0;
    for &b in tagged {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_identity_share_a_slot() {
        let layout = KeyLayout::default();
        let limits = crate::parse_limits(&["5/second", "100/minute", "1000/hour"]).unwrap();
        for alg in [Algorithm::SlidingWindow, Algorithm::TokenBucket, Algorithm::SlidingLog] {
            for id in ["user:42", "10.0.0.1", "2001:db8::/64", "{weird}", &"x".repeat(500)] {
                let keys = layout.keys(id, alg, &limits).unwrap();
                let slot = cluster_slot(&keys[0]);
                assert!(keys.iter().all(|k| cluster_slot(k) == slot), "{alg} {id}: {keys:?}");
            }
        }
    }

    #[test]
    fn one_key_holds_every_window_of_an_identity() {
        let layout = KeyLayout::default();
        let limits = crate::parse_limits(&["5/second", "100/minute"]).unwrap();
        assert_eq!(layout.keys("user:42", Algorithm::SlidingWindow, &limits).unwrap(), ["floodwall:{user:42}:sw:1000,60000"]);
        assert_eq!(layout.keys("user:42", Algorithm::TokenBucket, &limits[..1]).unwrap(), ["floodwall:{user:42}:tb:1000"]);
    }

    #[test]
    fn identities_spread_across_slots() {
        let layout = KeyLayout::default();
        let slots: std::collections::HashSet<u16> =
            (0..1000).map(|i| cluster_slot(&layout.base(&format!("user:{i}")).unwrap())).collect();
        assert!(slots.len() > 900, "only {} distinct slots", slots.len());
    }

    #[test]
    fn known_slots_match_redis() {
        // values from `CLUSTER KEYSLOT`
        assert_eq!(cluster_slot("foo"), 12182);
        assert_eq!(cluster_slot("{user1000}.following"), cluster_slot("{user1000}.followers"));
        assert_eq!(cluster_slot("123456789"), 12739);
    }

    #[test]
    fn long_or_unsafe_identities_are_hashed() {
        let long = "a".repeat(MAX_RAW_IDENTITY + 1);
        for id in [long.as_str(), "has space", "brace}", "#lookslikeahash", "ünïcode"] {
            let tag = KeyLayout::identity_tag(id).unwrap();
            assert!(tag.starts_with('#') && tag.len() == 33, "{id} -> {tag}");
        }
        assert_eq!(KeyLayout::identity_tag("user:42").unwrap(), "user:42");
        assert!(KeyLayout::identity_tag("").is_err());
        assert!(KeyLayout::identity_tag(&"a".repeat(MAX_IDENTITY + 1)).is_err());
    }

    #[test]
    fn bad_prefixes_are_named() {
        for p in ["", "a{b", "with space", &"p".repeat(65)] {
            let e = KeyLayout::new(p).unwrap_err();
            assert!(e.to_string().contains(&format!("{p:?}")), "{e}");
        }
    }
}
