//! Stores run one algorithm over every window of one identity atomically. The embedded store and
//! Redis give the same answers; the limiter picks one, and later layers (cache, fallback) wrap them.

pub mod memory;
pub mod redis;

pub use self::memory::MemoryStore;
pub use self::redis::{RedisOptions, RedisStore};

use crate::algorithm::Algorithm;
use crate::limit::Limit;

/// One store call: evaluate `limits` for the identity whose keys are `keys`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    pub keys: &'a [String],
    pub limits: &'a [Limit],
    pub algorithm: Algorithm,
    pub cost: u64,
    /// false: peek, nothing is written.
    pub consume: bool,
}
