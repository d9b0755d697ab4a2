//! In-process twins of lua/sliding_window_batch.lua and lua/token_bucket_batch.lua: a batch is
//! the single-request algorithm applied to each cost in arrival order at one `now`, then an
//! optional lease sized by the same rule as the scripts. Parity tests hold the pairs together.

use crate::algorithm::{self, agree, emission_interval_us, Algorithm, Outcome, StateReply, SwState};
use crate::limit::Limit;

/// The lease rule shared by both scripts: nothing unless every request passed; at most `want`,
/// at most the budget left by outstanding leases, at most a quarter of the tightest remaining.
pub(crate) fn lease_size(want: u64, budget: u64, outstanding: u64, remaining: impl Iterator<Item = u64>) -> u64 {
    let mut k = want.min(budget.saturating_sub(outstanding));
    for r in remaining {
        k = k.min(r / 4);
    }
    k
}

/// Sliding window: per-cost outcomes and the permits leased.
pub(crate) fn sliding_window_batch(
    states: &mut [Option<SwState>],
    limits: &[Limit],
    now: u64,
    costs: &[u64],
    want: u64,
    budget: u64,
    outstanding: u64,
) -> (Vec<Outcome>, u64) {
    let outs: Vec<Outcome> = costs.iter().map(|&c| algorithm::sliding_window(states, limits, now, c, true)).collect();
    let all = outs.iter().all(|o| o.allowed);
    let mut granted = 0;
    if want > 0 && all {
        // a peek's remaining is floor(limit - estimate), what the script quarters
        let probe = algorithm::sliding_window(&mut states.to_vec(), limits, now, 1, false);
        let rem = probe.windows.iter().map(|w| w.remaining);
        granted = lease_size(want, budget, outstanding, rem);
        if granted > 0 {
            algorithm::sliding_window(states, limits, now, granted, true);
        }
    }
    (outs, granted)
}

/// Token bucket: per-cost outcomes and the permits leased.
pub(crate) fn token_bucket_batch(
    tats: &mut [Option<u64>],
    limits: &[Limit],
    now: u64,
    costs: &[u64],
    want: u64,
    budget: u64,
    outstanding: u64,
) -> (Vec<Outcome>, u64) {
    let outs: Vec<Outcome> = costs.iter().map(|&c| algorithm::token_bucket(tats, limits, now, c, true)).collect();
    let all = outs.iter().all(|o| o.allowed);
    let mut granted = 0;
    if want > 0 && all {
        let rem: Vec<u64> = limits
            .iter()
            .zip(tats.iter())
            .map(|(l, t)| {
                let (t_us, burst) = (emission_interval_us(l), l.burst());
                let tat = t.filter(|&s| s >= now).unwrap_or(now);
                (now + t_us * burst).saturating_sub(tat) / t_us
            })
            .collect();
        granted = lease_size(want, budget, outstanding, rem.into_iter());
        lease_tokens(tats, limits, now, granted);
    }
    (outs, granted)
}

/// Token bucket: take a lease of `granted` permits from every bucket (as token_bucket_batch.lua).
fn lease_tokens(tats: &mut [Option<u64>], limits: &[Limit], now: u64, granted: u64) {
    if granted == 0 {
        return;
    }
    for (t, l) in tats.iter_mut().zip(limits) {
        let base = t.filter(|&s| s >= now).unwrap_or(now);
        *t = Some(base + emission_interval_us(l) * granted);
    }
}

/// Answers of a batch script call: per-cost outcomes computed from the state the script read and
/// the decisions it made (`allowed`, one per cost), then the marks a lease of `granted` permits is
/// returned by (sliding window: the window number of each window; token bucket: each TAT after the
/// call, lua/lease_return.lua).
pub(crate) fn apply_batch(
    algorithm: Algorithm,
    read: &StateReply<'_>,
    limits: &[Limit],
    costs: &[u64],
    allowed: &[bool],
    granted: u64,
) -> (Vec<Outcome>, Vec<u64>) {
    let now = read.now_us;
    match algorithm {
        Algorithm::TokenBucket => {
            let mut tats = read.tats(limits.len());
            let outs = costs
                .iter()
                .zip(allowed)
                .map(|(&c, &a)| agree(algorithm::token_bucket(&mut tats, limits, now, c, true), a))
                .collect();
            lease_tokens(&mut tats, limits, now, granted);
            (outs, tats.iter().map(|t| t.filter(|&s| s >= now).unwrap_or(now)).collect())
        }
        _ => {
            let mut states = read.windows(limits.len());
            let outs = costs
                .iter()
                .zip(allowed)
                .map(|(&c, &a)| agree(algorithm::sliding_window(&mut states, limits, now, c, true), a))
                .collect();
            if granted > 0 {
                algorithm::sliding_window(&mut states, limits, now, granted, true);
            }
            // the window each lease permit was counted in (state rolled by the consumption above)
            (outs, states.iter().zip(limits).map(|(s, l)| s.map_or(now / l.window_us(), |s| s.idx)).collect())
        }
    }
}
