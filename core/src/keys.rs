//! The one place that lays out Redis keys. Sliding window and token bucket keep each identity's
//! state as a field of a hash shared by a shard of identities and rotated by epoch; the sliding log keeps a key per identity.
//!
//! - sliding window, token bucket: hashes `{prefix}:{s<shard>}:<sw|tb>:<windows ms>:e<0|1|2>`,
//!   field = the identity's tag. One HMGET and one HSET then serve a whole batch of identities
//!   (a key per identity costs a write command per admission), and the three epoch hashes of a
//!   shard share a slot. Which of them is current follows Redis time: lua/prelude.lua `shard_open`.
//! - sliding log: `{prefix}:{<identity tag>}:log` (a sorted set) and `...:log:seq`.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

use crate::algorithm::Algorithm;
use crate::error::{Error, Result};
use crate::limit::Limit;

/// Identities longer than this many bytes are stored as a hash, never raw: a client-chosen key
/// (a header, a token claim) must not be able to make Redis keys of arbitrary size.
pub const MAX_RAW_IDENTITY: usize = 128;
/// Longest identity accepted at all (it is hashed, but hashing megabytes per request is a DoS).
pub const MAX_IDENTITY: usize = 4096;

/// Shards of a limiter's hashes, on a standalone server as on a Cluster. Redis evicts (or, under
/// `noeviction`, refuses) whole keys, never a field: with one hash per epoch, one eviction at
/// maxmemory reset every identity's counts. With 64, an eviction loses the counts of 1/64 of them.
/// On a Cluster they also spread a limiter's identities and load over the nodes, and keep each
/// hash small enough to migrate. The cost: a batch's requests share one read and one write per
/// shard they touch instead of one in all (docs/BENCHMARKS.md, Algorithms).
pub const SHARDS: u16 = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    prefix: String,
    shards: u16,
}

impl Default for KeyLayout {
    fn default() -> Self {
        KeyLayout { prefix: "floodwall".into(), shards: SHARDS }
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
        Ok(KeyLayout { prefix: prefix.to_string(), shards: SHARDS })
    }

    /// The layout with `shards` hashes per limiter and epoch (at least 1; default [`SHARDS`]).
    pub fn with_shards(mut self, shards: u16) -> Self {
        self.shards = shards.max(1);
        self
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
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for b in &digest[..16] {
                tag.push(HEX[usize::from(b >> 4)] as char);
                tag.push(HEX[usize::from(b & 15)] as char);
            }
            Ok(Cow::Owned(tag))
        }
    }

    /// The Cluster slot that holds the identity's state under `algorithm`.
    pub fn slot(&self, identity: &str, algorithm: Algorithm) -> Result<u16> {
        Ok(cluster_slot(&self.keys(identity, algorithm, &[])?[0]))
    }

    /// What a store call needs for one identity, in the order the scripts expect it.
    /// - Sliding window and token bucket: `[name, hash e0, hash e1, hash e2]`. The name
    ///   (`<hash base>:=<tag>`) is the identity's own, unique per limiter shape: the embedded
    ///   store and the cache key their entries by it, and its lease set is `<name>:lease`, in the
    ///   shard's slot. In Redis the state is the field [`state_field`] of the shard's hashes.
    ///   Every limit of the identity is in that one field, so a check costs one read and one write
    ///   whatever the number of limits; the windows in the hash name keep limiters of other
    ///   windows apart.
    /// - Sliding log: `[log, seq]`.
    pub fn keys(&self, identity: &str, algorithm: Algorithm, limits: &[Limit]) -> Result<Vec<String>> {
        // Built with few allocations: this runs for every decision.
        let tag = Self::identity_tag(identity)?;
        Ok(match algorithm {
            Algorithm::SlidingWindow | Algorithm::TokenBucket => {
                // pushed piece by piece into strings of their final size: `format!` and a string
                // that regrows allocate and copy per piece, and cached decisions pay for it too
                // (their client CPU per decision: docs/BENCHMARKS.md, Cache layer)
                let shard = if self.shards == 1 { 0 } else { cluster_slot(&tag) % self.shards };
                let mut digits = itoa::Buffer::new();
                let mut name = String::with_capacity(self.prefix.len() + 16 + 21 * limits.len() + 2 + tag.len());
                name.push_str(&self.prefix);
                name.push_str(":{s");
                name.push_str(digits.format(shard));
                name.push_str(if algorithm == Algorithm::SlidingWindow { "}:sw:" } else { "}:tb:" });
                for (i, l) in limits.iter().enumerate() {
                    if i > 0 {
                        name.push(',');
                    }
                    name.push_str(digits.format(u64::try_from(l.window().as_millis()).unwrap_or(u64::MAX)));
                }
                let base = name.len();
                let epoch = |e: &str| {
                    let mut hash = String::with_capacity(base + e.len());
                    hash.push_str(&name[..base]);
                    hash.push_str(e);
                    hash
                };
                let (e0, e1, e2) = (epoch(":e0"), epoch(":e1"), epoch(":e2"));
                name.push_str(":=");
                name.push_str(&tag);
                vec![name, e0, e1, e2]
            }
            Algorithm::SlidingLog => {
                let key = format!("{}:{{{tag}}}:log", self.prefix);
                let seq = format!("{key}:seq");
                vec![key, seq]
            }
        })
    }
}

/// The hash field holding the state of the identity whose [`KeyLayout::keys`] are `keys`
/// (sliding window, token bucket): its tag, the end of the name after the hashes' base and ":=".
pub fn state_field(keys: &[String]) -> &str {
    // keys[1] is "<base>:e0", keys[0] is "<base>:=<tag>"
    keys[0].get(keys[1].len() - 1..).unwrap_or_default()
}

/// The hashes holding the state (sliding window, token bucket): one per epoch, mod 3.
pub fn state_hashes(keys: &[String]) -> &[String] {
    &keys[1..4]
}

/// The sorted set of the identity's outstanding leases (the cache layer's scripts), in the slot
/// of its `keys`.
#[cfg(feature = "cache")]
pub(crate) fn lease_key(keys: &[String]) -> String {
    format!("{}:lease", keys[0])
}

/// How long one epoch of a limiter's hashes lasts (µs): at least as long as a state stays
/// relevant after its last write, since a hash is read through the next epoch and then dropped.
/// A sliding window's counts matter until the window after the one written ends (2 × window);
/// a token bucket's TAT, at most now + interval × burst after an admission, once it has passed.
pub fn epoch_us(algorithm: Algorithm, limits: &[Limit]) -> u64 {
    let relevant = |l: &Limit| match algorithm {
        Algorithm::TokenBucket => crate::algorithm::emission_interval_us(l).saturating_mul(l.burst()),
        _ => 2 * l.window_us(),
    };
    limits.iter().map(relevant).max().unwrap_or(1).max(1)
}

/// The Redis Cluster slot of a key (CRC16/XMODEM of its hash tag, mod 16384).
pub fn cluster_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            bytes[open + 1..]
                .iter()
                .position(|&b| b == b'}')
                .filter(|&len| len > 0)
                .map(|len| &bytes[open + 1..open + 1 + len])
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
        let limits = crate::parse_limits(&["5/second", "100/minute", "1000/hour"]).unwrap();
        for layout in [KeyLayout::default(), KeyLayout::default().with_shards(1)] {
            for alg in [Algorithm::SlidingWindow, Algorithm::TokenBucket, Algorithm::SlidingLog] {
                for id in ["user:42", "10.0.0.1", "2001:db8::/64", "{weird}", &"x".repeat(500)] {
                    let keys = layout.keys(id, alg, &limits).unwrap();
                    let slot = cluster_slot(&keys[0]);
                    assert!(keys.iter().all(|k| cluster_slot(k) == slot), "{alg} {id}: {keys:?}");
                    assert_eq!(cluster_slot(&format!("{}:lease", keys[0])), slot);
                }
            }
        }
    }

    #[test]
    fn one_field_of_three_epoch_hashes_holds_every_window_of_an_identity() {
        let layout = KeyLayout::default().with_shards(1);
        let limits = crate::parse_limits(&["5/second", "100/minute"]).unwrap();
        let keys = layout.keys("user:42", Algorithm::SlidingWindow, &limits).unwrap();
        let base = "floodwall:{s0}:sw:1000,60000";
        assert_eq!(
            keys,
            [format!("{base}:=user:42"), format!("{base}:e0"), format!("{base}:e1"), format!("{base}:e2")]
        );
        assert_eq!(state_field(&keys), "user:42");
        assert_eq!(state_hashes(&keys), &keys[1..]);
        let keys = layout.keys("#", Algorithm::TokenBucket, &limits[..1]).unwrap();
        assert_eq!(keys[1], "floodwall:{s0}:tb:1000:e0");
        assert_eq!(state_field(&keys), KeyLayout::identity_tag("#").unwrap());
        // an identity named like an epoch hash cannot be confused with one
        let keys = layout.keys("e0", Algorithm::SlidingWindow, &limits).unwrap();
        assert!(!state_hashes(&keys).contains(&keys[0]) && state_field(&keys) == "e0");
    }

    #[test]
    fn epochs_outlast_the_state_they_hold() {
        let limits = crate::parse_limits(&["100/minute", "1000/hour"]).unwrap();
        assert_eq!(epoch_us(Algorithm::SlidingWindow, &limits), 2 * 3_600_000_000);
        let tb = crate::parse_limits(&["10/second"]).unwrap();
        assert_eq!(epoch_us(Algorithm::TokenBucket, &tb), 1_000_000);
    }

    #[test]
    fn identities_spread_across_the_shards() {
        let layout = KeyLayout::default();
        let slots: std::collections::HashSet<u16> =
            (0..1000).map(|i| layout.slot(&format!("user:{i}"), Algorithm::SlidingWindow).unwrap()).collect();
        assert_eq!(slots.len(), SHARDS as usize);
        let logs: std::collections::HashSet<u16> =
            (0..1000).map(|i| layout.slot(&format!("user:{i}"), Algorithm::SlidingLog).unwrap()).collect();
        assert!(logs.len() > 900, "only {} distinct slots", logs.len());
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
        // the stored form is part of the data layout: SHA-256's first 16 bytes in lowercase hex
        assert_eq!(KeyLayout::identity_tag("has space").unwrap(), "#47b5c36fc0b017ba576f10f988d0cbcb");
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
