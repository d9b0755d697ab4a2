//! How the cache names an identity: a keyed 128-bit hash of its name (moka's key, its own
//! hash), and the doorkeeper that lets an identity in only on its second sighting.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use siphasher::sip128::SipHasher13;

/// An identity in the cache: a 128-bit SipHash-1-3 of its name under a key drawn per cache, not
/// the name. moka then compares 16 inline bytes where it followed a pointer to ~50 (its key lookups
/// were a third of a cached hot/tail run's client CPU, perf), and an entry no longer holds a copy
/// of the name. Two identities share an entry only if their ids collide: about n²/2¹²⁹ for n
/// identities, and no client can aim for it without the key (long identities' tags are 128 bits
/// of SHA-256 too, keys.rs).
pub(super) type Id = u128;

/// Computes [`Id`]s with this cache's key.
#[derive(Clone)]
pub(super) struct IdHasher(SipHasher13);

impl IdHasher {
    pub(super) fn new() -> Self {
        // RandomState is seeded from the OS; its hashes of constants are secret, random keys.
        let seed = std::collections::hash_map::RandomState::new();
        IdHasher(SipHasher13::new_with_keys(seed.hash_one(0u8), seed.hash_one(1u8)))
    }

    pub(super) fn id(&self, name: &str) -> Id {
        self.0.hash(name.as_bytes()).as_u128()
    }
}

/// moka's hasher for [`Id`]s, which are keyed hashes already: their low 64 bits.
#[derive(Clone, Default)]
pub(super) struct Prehashed;

impl BuildHasher for Prehashed {
    type Hasher = PrehashedHasher;
    fn build_hasher(&self) -> PrehashedHasher {
        PrehashedHasher(0)
    }
}

pub(super) struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn write_u128(&mut self, id: u128) {
        self.0 = id as u64;
    }
    fn write(&mut self, bytes: &[u8]) {
        // only Ids are hashed here; anything else still gets a usable (FNV-1a) hash
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A bitset of identities seen lately (TinyLFU's doorkeeper), cleared every period.
pub(super) struct Doorkeeper {
    pub(super) bits: Vec<AtomicU64>,
    pub(super) epoch: Instant,
    pub(super) cleared_at_ms: AtomicU64,
    pub(super) period_ms: u64,
}

impl Doorkeeper {
    const WORDS: usize = 1 << 14; // 2^20 bits, 128 KiB

    pub(super) fn new(period_ms: u64) -> Self {
        Doorkeeper {
            bits: (0..Self::WORDS).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
            cleared_at_ms: AtomicU64::new(0),
            period_ms,
        }
    }

    /// Marks `id` seen; true when it was not seen since the last clear.
    pub(super) fn first_sighting(&self, id: Id) -> bool {
        self.first_sighting_at(id, self.epoch.elapsed().as_millis() as u64)
    }

    /// [`Self::first_sighting`] at `now_ms` after the doorkeeper was made.
    pub(super) fn first_sighting_at(&self, id: Id, now_ms: u64) -> bool {
        let last = self.cleared_at_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= self.period_ms
            && self.cleared_at_ms.compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            for w in &self.bits {
                w.store(0, Ordering::Relaxed);
            }
        }
        let x = (id >> 64) as u64; // moka buckets by the low half
        let (word, bit) = ((x as usize >> 6) % Self::WORDS, 1u64 << (x & 63));
        self.bits[word].fetch_or(bit, Ordering::Relaxed) & bit == 0
    }
}
