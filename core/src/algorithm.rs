//! The three algorithms as pure functions of (state, now): the in-memory twins of lua/*.lua.
//! Each line here has a counterpart in its script; conformance scenarios hold the two together.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::limit::Limit;

/// The sliding log keeps one entry per admitted unit: refuse limits above this, so one identity
/// can never hold more than this many members (the `limits` package stalled Redis with a
/// 70,000/day moving window). Use `sliding_window` or `token_bucket` for larger limits.
pub const MAX_LOG_ENTRIES: u64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "config", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Two counters per window, previous one weighted by its overlap. O(1) memory. The default.
    #[default]
    SlidingWindow,
    /// Exact log of arrivals in a sorted set. O(limit) memory per identity.
    SlidingLog,
    /// GCRA: one theoretical arrival time per limit; rate = max/window, bucket = burst.
    TokenBucket,
}

impl Algorithm {
    pub fn as_str(&self) -> &'static str {
        match self {
            Algorithm::SlidingWindow => "sliding_window",
            Algorithm::SlidingLog => "sliding_log",
            Algorithm::TokenBucket => "token_bucket",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "sliding_window" => Ok(Algorithm::SlidingWindow),
            "sliding_log" => Ok(Algorithm::SlidingLog),
            "token_bucket" | "gcra" => Ok(Algorithm::TokenBucket),
            _ => Err(Error::config("algorithm", s, "expected \"sliding_window\", \"sliding_log\" or \"token_bucket\"")),
        }
    }

    /// Refuse limit sets this algorithm cannot honour.
    pub(crate) fn validate(&self, limits: &[Limit]) -> Result<()> {
        if *self == Algorithm::SlidingLog {
            if let Some(l) = limits.iter().find(|l| l.max() > MAX_LOG_ENTRIES) {
                return Err(Error::InvalidLimit {
                    input: l.to_string(),
                    reason: format!(
                        "sliding_log keeps one Redis entry per request and allows at most {MAX_LOG_ENTRIES} per window; use sliding_window or token_bucket"
                    ),
                });
            }
        }
        Ok(())
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one window says about one request, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowEval {
    pub remaining: u64,
    pub reset_after_us: u64,
    pub retry_after_us: u64,
}

/// The answer of one store call for every window of an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub allowed: bool,
    /// Index of the limit that denied with the longest wait.
    pub limited_by: Option<usize>,
    /// The store's time of the decision (Redis `TIME` for Redis).
    pub now_us: u64,
    pub windows: Vec<WindowEval>,
}

impl Outcome {
    /// Decode the script reply `{allowed, limited_by, now, (remaining, reset, retry)*}`.
    pub(crate) fn from_reply(v: &[i64], n: usize) -> Option<Outcome> {
        if v.len() != 3 + 3 * n {
            return None;
        }
        let windows = (0..n)
            .map(|i| WindowEval {
                remaining: v[3 + 3 * i].max(0) as u64,
                reset_after_us: v[4 + 3 * i].max(0) as u64,
                retry_after_us: v[5 + 3 * i].max(0) as u64,
            })
            .collect();
        Some(Outcome {
            allowed: v[0] == 1,
            limited_by: if v[1] > 0 { Some(v[1] as usize - 1) } else { None },
            now_us: v[2].max(0) as u64,
            windows,
        })
    }
}

/// What a sliding-window or token-bucket script read: Redis's `now` and the state as stored
/// (decide.lua packs it per request into its reply string; the batch scripts return `{granted,
/// now, one flag per cost, state...}`). The script decides and records; the answers callers see
/// are computed here, by the twin, from the state the script read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StateReply<'a> {
    pub now_us: u64,
    /// The stored numbers: `{i, p, c}` per window or one TAT per limit; empty for a new identity.
    pub state: &'a [i64],
}

impl StateReply<'_> {
    /// The windows as the twin takes them (all `None` for a new identity or a state of another shape).
    pub(crate) fn windows(&self, n: usize) -> Vec<Option<SwState>> {
        if self.state.len() != 3 * n {
            return vec![None; n];
        }
        let u = |v: i64| v.max(0) as u64;
        self.state.chunks(3).map(|c| Some(SwState { idx: u(c[0]), prev: u(c[1]), curr: u(c[2]) })).collect()
    }

    /// The theoretical arrival times as the twin takes them.
    pub(crate) fn tats(&self, n: usize) -> Vec<Option<u64>> {
        if self.state.len() != n {
            return vec![None; n];
        }
        self.state.iter().map(|&t| Some(t.max(0) as u64)).collect()
    }

    /// The outcome of one request of `cost`, as the single-call script decided it (`allowed`).
    pub(crate) fn outcome(
        &self,
        algorithm: Algorithm,
        limits: &[Limit],
        cost: u64,
        consume: bool,
        allowed: bool,
    ) -> Outcome {
        let n = limits.len();
        let out = match algorithm {
            Algorithm::TokenBucket => token_bucket(&mut self.tats(n), limits, self.now_us, cost, consume),
            _ => sliding_window(&mut self.windows(n), limits, self.now_us, cost, consume),
        };
        agree(out, allowed)
    }
}

/// The script's decision is what Redis recorded, so it stands; the twin disagreeing would be a
/// bug in one of them (the conformance and differential tests exist to make that impossible).
pub(crate) fn agree(mut out: Outcome, allowed: bool) -> Outcome {
    if out.allowed != allowed {
        tracing::error!(
            script = allowed,
            twin = out.allowed,
            now_us = out.now_us,
            "the Lua script and its Rust twin disagree; keeping the script's decision"
        );
        out.allowed = allowed;
        if allowed {
            out.limited_by = None;
        }
    }
    out
}

/// Emission interval of a token-bucket limit in whole microseconds, rounded up so the bucket
/// never refills faster than the limit says.
pub(crate) fn emission_interval_us(limit: &Limit) -> u64 {
    limit.window_us().div_ceil(limit.max()).max(1)
}

/// Picks the denying window with the longest wait, first on ties: the one to report.
fn worst(evals: &[(bool, WindowEval)]) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    for (i, (ok, e)) in evals.iter().enumerate() {
        if !ok && best.is_none_or(|(_, r)| e.retry_after_us > r) {
            best = Some((i, e.retry_after_us));
        }
    }
    best.map(|(i, _)| i)
}

// ---------------------------------------------------------------------------------------------
// sliding window

/// One window's counters: `idx` is the fixed-window number (now / window).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SwState {
    pub idx: u64,
    pub prev: u64,
    pub curr: u64,
}

impl SwState {
    /// Moves the state to the window that holds `now` (lua: the roll inlined in decide.lua's
    /// `sw_decide`, and `sw_roll` in lease_prelude.lua).
    fn roll(state: Option<SwState>, now: u64, w: u64) -> (SwState, u64) {
        let mut cur = now / w;
        let s = match state {
            None => SwState { idx: cur, prev: 0, curr: 0 },
            Some(s) if cur == s.idx + 1 => SwState { idx: cur, prev: s.curr, curr: 0 },
            Some(s) if cur > s.idx + 1 => SwState { idx: cur, prev: 0, curr: 0 },
            Some(s) if cur < s.idx => {
                cur = s.idx;
                s
            }
            Some(s) => s,
        };
        let el = now.saturating_sub(cur * w);
        (SwState { idx: cur, ..s }, el)
    }

    /// When the key may expire: the end of the next window, after which `curr` no longer counts.
    pub fn expires_at_us(&self, w: u64) -> u64 {
        (self.idx + 2) * w
    }
}

/// Evaluate (and when `consume`, update) every window of one identity.
pub(crate) fn sliding_window(
    states: &mut [Option<SwState>],
    limits: &[Limit],
    now: u64,
    cost: u64,
    consume: bool,
) -> Outcome {
    let mut rolled = Vec::with_capacity(limits.len());
    let mut all_ok = true;
    for (st, l) in states.iter().zip(limits) {
        let w = l.window_us();
        let (s, el) = SwState::roll(*st, now, w);
        let (wf, limit) = (w as f64, l.max() as f64);
        let est = s.prev as f64 * ((wf - el as f64) / wf) + s.curr as f64;
        let ok = est + cost as f64 <= limit;
        all_ok &= ok;
        rolled.push((s, el, est, ok));
    }
    let consumed = if consume && all_ok { cost } else { 0 };
    let mut evals = Vec::with_capacity(limits.len());
    for ((st, l), (s, el, est, ok)) in states.iter_mut().zip(limits).zip(rolled) {
        let (w, limit) = (l.window_us(), l.max());
        let c = s.curr + consumed;
        if consumed > 0 {
            *st = Some(SwState { curr: c, ..s });
        }
        let remaining = (limit as f64 - est - consumed as f64).floor().max(0.0) as u64;
        let reset = if c > 0 {
            (w - el) + w
        } else if s.prev > 0 {
            w - el
        } else {
            0
        };
        let mut retry = 0;
        if !ok {
            let (wf, elf) = (w as f64, el as f64);
            let need = limit as f64 - s.curr as f64 - cost as f64;
            let r = if need >= 0.0 {
                (wf - (need / s.prev as f64) * wf) - elf
            } else {
                (wf - elf) + (wf - ((limit as f64 - cost as f64) / s.curr as f64) * wf)
            };
            retry = (r.ceil() as i64).max(1) as u64;
        }
        evals.push((ok, WindowEval { remaining, reset_after_us: reset, retry_after_us: retry }));
    }
    Outcome {
        allowed: all_ok,
        limited_by: worst(&evals),
        now_us: now,
        windows: evals.into_iter().map(|(_, e)| e).collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// token bucket (GCRA)

/// Evaluate (and when `consume`, update) the theoretical arrival time of every limit.
pub(crate) fn token_bucket(tats: &mut [Option<u64>], limits: &[Limit], now: u64, cost: u64, consume: bool) -> Outcome {
    let mut pre = Vec::with_capacity(limits.len());
    let mut all_ok = true;
    for (stored, l) in tats.iter().zip(limits) {
        let t = emission_interval_us(l);
        let tat = stored.filter(|&s| s >= now).unwrap_or(now);
        let new_tat = tat + t * cost;
        let ok = now + t * l.burst() >= new_tat;
        all_ok &= ok;
        pre.push((tat, new_tat, ok));
    }
    let take = consume && all_ok;
    let mut evals = Vec::with_capacity(limits.len());
    for ((stored, l), (tat, new_tat, ok)) in tats.iter_mut().zip(limits).zip(pre) {
        let (t, burst) = (emission_interval_us(l), l.burst());
        let after = if take { new_tat } else { tat };
        if take {
            *stored = Some(new_tat);
        }
        let remaining = ((now + t * burst).saturating_sub(after) / t).min(burst);
        let retry = if ok { 0 } else { new_tat - t * burst - now };
        evals.push((ok, WindowEval { remaining, reset_after_us: after - now, retry_after_us: retry }));
    }
    Outcome {
        allowed: all_ok,
        limited_by: worst(&evals),
        now_us: now,
        windows: evals.into_iter().map(|(_, e)| e).collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// sliding log

/// Evaluate (and when `consume`, append to) the arrival log of one identity. `log` is sorted.
pub(crate) fn sliding_log(log: &mut VecDeque<u64>, limits: &[Limit], now: u64, cost: u64, consume: bool) -> Outcome {
    let longest = limits.iter().map(|l| l.window_us()).max().unwrap_or(0);
    if consume {
        let horizon = now.saturating_sub(longest);
        while log.front().is_some_and(|&t| t <= horizon) {
            log.pop_front();
        }
    }
    // first index inside window i: entries with t > now - w
    let starts: Vec<usize> =
        limits.iter().map(|l| log.partition_point(|&t| t <= now.saturating_sub(l.window_us()))).collect();
    let counts: Vec<u64> = starts.iter().map(|&s| (log.len() - s) as u64).collect();
    let oks: Vec<bool> = counts.iter().zip(limits).map(|(&c, l)| c + cost <= l.max()).collect();
    let all_ok = oks.iter().all(|&o| o);
    let consumed = if consume && all_ok { cost } else { 0 };
    let mut evals = Vec::with_capacity(limits.len());
    for (i, l) in limits.iter().enumerate() {
        let w = l.window_us();
        let retry = if oks[i] {
            0
        } else {
            let k = counts[i] + cost - l.max();
            let t = log[starts[i] + k as usize - 1];
            (t + w).saturating_sub(now).max(1)
        };
        evals.push((oks[i], (i, retry)));
    }
    if consumed > 0 {
        // A sorted set orders by score; keep the twin sorted even if the clock stepped back.
        let at = log.partition_point(|&t| t <= now);
        for _ in 0..consumed {
            log.insert(at, now);
        }
    }
    let newest = log.back().copied();
    let evals: Vec<(bool, WindowEval)> = evals
        .into_iter()
        .map(|(ok, (i, retry))| {
            let l = &limits[i];
            let c = counts[i] + consumed;
            let reset = match newest {
                Some(t) if c > 0 => (t + l.window_us()).saturating_sub(now),
                _ => 0,
            };
            (ok, WindowEval { remaining: l.max().saturating_sub(c), reset_after_us: reset, retry_after_us: retry })
        })
        .collect();
    Outcome {
        allowed: all_ok,
        limited_by: worst(&evals),
        now_us: now,
        windows: evals.into_iter().map(|(_, e)| e).collect(),
    }
}
