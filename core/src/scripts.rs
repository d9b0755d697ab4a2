//! Every Lua script the core runs, each prefixed with lua/prelude.lua (Redis time, the packed
//! per-identity state, the per-window answers) and run by EVALSHA (redis-rs reloads on NOSCRIPT).

use std::sync::LazyLock;

use redis::Script;

use crate::algorithm::{emission_interval_us, Algorithm};
use crate::limit::Limit;

macro_rules! script {
    ($name:ident, $file:literal) => {
        pub(crate) static $name: LazyLock<Script> =
            LazyLock::new(|| Script::new(concat!(include_str!("../../lua/prelude.lua"), include_str!(concat!("../../lua/", $file)))));
    };
}

script!(DECIDE, "decide.lua");
script!(SW_BATCH, "sliding_window_batch.lua");
script!(TB_BATCH, "token_bucket_batch.lua");
script!(LEASE_RETURN, "lease_return.lua");

/// The script that implements an algorithm (public so tools can print its SHA).
pub fn script_for(algorithm: Algorithm) -> &'static Script {
    match algorithm {
        Algorithm::SlidingWindow | Algorithm::TokenBucket | Algorithm::SlidingLog => &DECIDE,
    }
}

/// The numbers that describe the limits, as the scripts take them:
/// ONE argument holding a MessagePack array (unpacked in C by `cmsgpack.unpack`; parsing one
/// decimal argument per number costs Redis more than the rest of a one-window check).
/// Sliding window and log: every window in µs, then every limit. Token bucket: every emission
/// interval in µs, then every burst.
pub(crate) fn limit_args(algorithm: Algorithm, limits: &[Limit]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(2 + 18 * limits.len());
    let token_bucket = algorithm == Algorithm::TokenBucket;
    let first = |l: &Limit| if token_bucket { emission_interval_us(l) } else { l.window_us() };
    let second = |l: &Limit| if token_bucket { l.burst() } else { l.max() };
    // writing into a Vec cannot fail
    let _ = rmp::encode::write_array_len(&mut buf, 2 * limits.len() as u32);
    for v in limits.iter().map(first).chain(limits.iter().map(second)) {
        let _ = rmp::encode::write_uint(&mut buf, v);
    }
    buf
}

/// The requests of one lua/decide.lua call: cost and consume (1) or peek (0) of each, as one
/// MessagePack array.
pub(crate) fn request_args(requests: impl ExactSizeIterator<Item = (u64, bool)>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(2 + 10 * requests.len());
    let _ = rmp::encode::write_array_len(&mut buf, 2 * requests.len() as u32);
    for (cost, consume) in requests {
        let _ = rmp::encode::write_uint(&mut buf, cost);
        let _ = rmp::encode::write_uint(&mut buf, consume as u64);
    }
    buf
}
