//! Every Lua script the core runs, each prefixed with lua/prelude.lua (Redis time, the packed
//! per-identity state, the per-window answers) and run by EVALSHA (redis-rs reloads on NOSCRIPT).

use std::sync::LazyLock;

use redis::Script;

use crate::algorithm::Algorithm;

macro_rules! script {
    ($name:ident, $file:literal) => {
        pub(crate) static $name: LazyLock<Script> =
            LazyLock::new(|| Script::new(concat!(include_str!("../../lua/prelude.lua"), include_str!(concat!("../../lua/", $file)))));
    };
}

script!(SLIDING_WINDOW, "sliding_window.lua");
script!(TOKEN_BUCKET, "token_bucket.lua");
script!(SLIDING_LOG, "sliding_log.lua");
script!(SW_BATCH, "sliding_window_batch.lua");
script!(TB_BATCH, "token_bucket_batch.lua");
script!(LEASE_RETURN, "lease_return.lua");

/// The script that implements an algorithm (public so tools can print its SHA).
pub fn script_for(algorithm: Algorithm) -> &'static Script {
    match algorithm {
        Algorithm::SlidingWindow => &SLIDING_WINDOW,
        Algorithm::TokenBucket => &TOKEN_BUCKET,
        Algorithm::SlidingLog => &SLIDING_LOG,
    }
}
