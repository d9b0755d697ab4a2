//! Every Lua script the core runs, each prefixed with lua/prelude.lua (Redis time, the packed
//! per-identity state; the cache layer's also with lua/lease_prelude.lua), and each one's call:
//! its KEYS and ARGV, built here only. Run by EVALSHA (redis-rs reloads on NOSCRIPT).

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::{Script, ScriptInvocation};

use crate::algorithm::{emission_interval_us, Algorithm};
#[cfg(feature = "cache")]
use crate::keys::{epoch_us, lease_key};
use crate::keys::{state_field, state_hashes};
use crate::limit::Limit;

// The scripts live in the top-level lua/; core/lua is a symlink to it, so the paths stay inside
// the crate and `cargo package` copies the files in (scripts/check-package.sh builds the result).
macro_rules! script {
    ($name:ident, $($file:literal),+) => {
        pub(crate) static $name: LazyLock<Script> =
            LazyLock::new(|| Script::new(concat!(include_str!("../lua/prelude.lua"), $(include_str!(concat!("../lua/", $file))),+)));
    };
}

script!(DECIDE, "decide.lua");
// the cache layer's scripts also read one key and keep leases: lua/lease_prelude.lua
cfg_cache! {
    script!(SW_BATCH, "lease_prelude.lua", "sliding_window_batch.lua");
    script!(TB_BATCH, "lease_prelude.lua", "token_bucket_batch.lua");
    script!(LEASE_RETURN, "lease_prelude.lua", "lease_return.lua");
}

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

/// One request as lua/decide.lua takes it.
pub(crate) struct ScriptRequest<'a> {
    /// The identity's own name (keys::KeyLayout::keys, first): requests of one name share a state
    pub name: &'a str,
    /// Its hash field (sliding window, token bucket) or "" (sliding log)
    pub field: &'a str,
    /// Its shard, numbered from 1 in the order of the call's KEYS (0: sliding log)
    pub shard: u64,
    pub cost: u64,
    pub consume: bool,
}

/// ARGV[2] of lua/decide.lua: one MessagePack stream of the mode ("sw", "tb" or "log"), the limits
/// (`limits`, from limit_args), the epoch of the hashes (keys::epoch_us), the requests' numbers
/// (four each: cost, consume (1) or peek (0), the number (1-based) of the last earlier request of
/// the call with the same name, 0 if none, and the shard), so the script keeps per-request state
/// in arrays, not string-keyed tables; and the requests' fields.
pub(crate) fn decide_args<'a>(
    algorithm: Algorithm,
    limits: &[u8],
    epoch_us: u64,
    requests: &[ScriptRequest<'a>],
) -> Vec<u8> {
    let mode = match algorithm {
        Algorithm::SlidingWindow => "sw",
        Algorithm::TokenBucket => "tb",
        Algorithm::SlidingLog => "log",
    };
    let fields: usize = requests.iter().map(|r| r.field.len() + 2).sum();
    let mut buf = Vec::with_capacity(16 + limits.len() + 16 * requests.len() + fields);
    // writing into a Vec cannot fail
    let _ = rmp::encode::write_str(&mut buf, mode);
    buf.extend_from_slice(limits);
    let _ = rmp::encode::write_uint(&mut buf, epoch_us);
    let _ = rmp::encode::write_array_len(&mut buf, 4 * requests.len() as u32);
    // a request alone (every call on a Cluster, most at low load) has no earlier one: no map
    let alone = requests.len() == 1;
    let mut last: HashMap<&str, u64> = HashMap::with_capacity(if alone { 0 } else { requests.len() });
    for (k, r) in requests.iter().enumerate() {
        let prev = if alone { 0 } else { last.insert(r.name, k as u64 + 1).unwrap_or(0) };
        for v in [r.cost, r.consume as u64, prev, r.shard] {
            let _ = rmp::encode::write_uint(&mut buf, v);
        }
    }
    let _ = rmp::encode::write_array_len(&mut buf, requests.len() as u32);
    for r in requests {
        let _ = rmp::encode::write_str(&mut buf, r.field);
    }
    buf
}

/// lua/decide.lua deciding `requests` (each: its keys, cost, and consume or peek) of one
/// algorithm; `limits` from limit_args, `epoch_us` from keys::epoch_us, `now` as
/// RedisStore::now_arg. Sliding window and token bucket name each shard's hashes once, in order of
/// first use; the sliding log names every request's keys.
pub(crate) fn decide_invocation<'k>(
    algorithm: Algorithm,
    limits: &[u8],
    epoch_us: u64,
    requests: impl ExactSizeIterator<Item = (&'k [String], u64, bool)>,
    now: &str,
) -> ScriptInvocation<'static> {
    let mut inv = DECIDE.prepare_invoke();
    let hashed = algorithm != Algorithm::SlidingLog;
    let mut shards: Vec<&str> = Vec::new();
    let mut reqs = Vec::with_capacity(requests.len());
    for (keys, cost, consume) in requests {
        let (field, shard) = if hashed {
            let hashes = state_hashes(keys);
            let g = match shards.iter().position(|s| *s == hashes[0]) {
                Some(g) => g,
                None => {
                    shards.push(&hashes[0]);
                    for h in hashes {
                        inv.key(h);
                    }
                    shards.len() - 1
                }
            };
            (state_field(keys), g as u64 + 1)
        } else {
            for k in keys {
                inv.key(k);
            }
            ("", 0)
        };
        reqs.push(ScriptRequest { name: &keys[0], field, shard, cost, consume });
    }
    inv.arg(now).arg(decide_args(algorithm, limits, epoch_us, &reqs));
    inv
}

cfg_cache! {
    /// The lease a batch script call asks for.
    pub(crate) struct LeaseAsk<'a> {
        /// permits wanted (0: none)
        pub want: u64,
        pub lifetime_us: u64,
        /// most permits outstanding in leases of the identity, over all instances
        pub budget: u64,
        /// the lease's member in the identity's lease set
        pub member: &'a str,
        /// member of this instance's previous lease, spent or given back ("" none)
        pub release: &'a str,
    }

    /// lua/sliding_window_batch.lua or token_bucket_batch.lua deciding `costs` for the identity whose
    /// keys are `keys`, in order, and leasing per `lease`; `now` as RedisStore::now_arg.
    pub(crate) fn batch_invocation(
        algorithm: Algorithm,
        limits: &[Limit],
        keys: &[String],
        costs: &[u64],
        lease: &LeaseAsk<'_>,
        now: &str,
    ) -> ScriptInvocation<'static> {
        let script = if algorithm == Algorithm::TokenBucket { &*TB_BATCH } else { &*SW_BATCH };
        let mut inv = script.prepare_invoke();
        for k in state_hashes(keys) {
            inv.key(k);
        }
        inv.key(lease_key(keys));
        inv.arg(now).arg(costs.len());
        for c in costs {
            inv.arg(*c);
        }
        inv.arg(lease.want).arg(lease.lifetime_us).arg(lease.budget).arg(lease.member).arg(lease.release);
        inv.arg(limit_args(algorithm, limits));
        inv.arg(state_field(keys)).arg(epoch_us(algorithm, limits));
        inv
    }

    /// Permits of a lease to give back.
    pub(crate) struct LeaseReturn<'a> {
        /// The identity's keys (keys::KeyLayout::keys)
        pub keys: &'a [String],
        pub unused: u64,
        /// The lease's member in the identity's lease set
        pub member: &'a str,
        /// sw: window number per limit at the grant; tb: TAT per limit right after it
        pub marks: &'a [u64],
    }

    /// lua/lease_return.lua giving back what `u` leaves unused; `now` as RedisStore::now_arg.
    pub(crate) fn return_invocation(
        algorithm: Algorithm,
        limits: &[Limit],
        u: &LeaseReturn<'_>,
        now: &str,
    ) -> ScriptInvocation<'static> {
        let mut inv = LEASE_RETURN.prepare_invoke();
        for k in state_hashes(u.keys) {
            inv.key(k);
        }
        inv.key(lease_key(u.keys));
        let mode = if algorithm == Algorithm::TokenBucket { "tb" } else { "sw" };
        inv.arg(mode).arg(u.unused).arg(u.member).arg(now).arg(state_field(u.keys)).arg(epoch_us(algorithm, limits));
        if algorithm == Algorithm::TokenBucket {
            for l in limits {
                inv.arg(emission_interval_us(l));
            }
        }
        for m in u.marks {
            inv.arg(*m);
        }
        inv
    }
}

/// One request's answer at the start of lua/decide.lua's packed reply: a head byte `2c + allowed`,
/// then `c` little-endian doubles (the state read, or the log's answers; lua/prelude.lua
/// encode_state). Returns allowed, the numbers and the rest of the reply; None if the bytes are
/// not that (a torn or foreign reply).
pub(crate) fn decode_decided(bytes: &[u8]) -> Option<(bool, Vec<i64>, &[u8])> {
    let (&head, rest) = bytes.split_first()?;
    let (numbers, rest) = rest.split_at_checked(8 * usize::from(head >> 1))?;
    // every number stored is an integer below 2^53, so the conversion is exact
    let state = numbers.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()) as i64).collect();
    Some((head & 1 == 1, state, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_the_last_earlier_request_of_their_identity() {
        let limits = limit_args(Algorithm::SlidingWindow, &crate::limit::parse_limits(&["5/second"]).unwrap());
        let req = |name, shard, cost, consume| ScriptRequest { name, field: name, shard, cost, consume };
        let reqs = [req("a", 1, 1, true), req("b", 2, 2, false), req("a", 1, 3, true), req("a", 1, 1, true)];
        let buf = decide_args(Algorithm::SlidingWindow, &limits, 2_000_000, &reqs);
        let mut rd = &buf[..];
        let mut mode = [0u8; 2];
        assert_eq!(rmp::decode::read_str(&mut rd, &mut mode).unwrap(), "sw");
        assert_eq!(rmp::decode::read_array_len(&mut rd).unwrap(), 2);
        assert_eq!(
            [rmp::decode::read_int::<u64, _>(&mut rd).unwrap(), rmp::decode::read_int(&mut rd).unwrap()],
            [1_000_000, 5]
        );
        assert_eq!(rmp::decode::read_int::<u64, _>(&mut rd).unwrap(), 2_000_000);
        assert_eq!(rmp::decode::read_array_len(&mut rd).unwrap(), 16);
        let nums: Vec<u64> = (0..16).map(|_| rmp::decode::read_int(&mut rd).unwrap()).collect();
        assert_eq!(nums, [1, 1, 0, 1, 2, 0, 0, 2, 3, 1, 1, 1, 1, 1, 3, 1]);
        assert_eq!(rmp::decode::read_array_len(&mut rd).unwrap(), 4);
        let mut field = [0u8; 1];
        let fields: Vec<String> =
            (0..4).map(|_| rmp::decode::read_str(&mut rd, &mut field).unwrap().to_string()).collect();
        assert_eq!(fields, ["a", "b", "a", "a"]);
        assert!(rd.is_empty());
    }

    #[test]
    fn answers_decode_from_heads_and_doubles_and_refuse_a_torn_reply() {
        let mut bytes = vec![2 * 3 + 1];
        bytes.extend([7.0f64, 0.0, 1.7e15].iter().flat_map(|f| f.to_le_bytes()));
        bytes.push(0); // denied, a new identity: no numbers
        let (allowed, state, rest) = decode_decided(&bytes).unwrap();
        assert!(allowed);
        assert_eq!(state, vec![7, 0, 1_700_000_000_000_000]);
        assert_eq!(decode_decided(rest), Some((false, vec![], &b""[..])));
        assert_eq!(decode_decided(&bytes[..20]), None, "numbers cut short");
        assert_eq!(decode_decided(b""), None, "no head");
    }
}
