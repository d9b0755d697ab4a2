//! Leases: permits reserved in Redis for a hot identity and spent locally until they run out or
//! expire; when an identity is hot enough to lease for, and how the unused rest goes back.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::slot::{aged, SlotState};
use super::Shared;
use crate::algorithm::Outcome;
use crate::decision::Source;
use crate::remote::Remote;
use crate::scripts::{return_invocation, LeaseReturn};

pub(super) struct Lease {
    /// The identity's keys, to give the unused rest back to.
    pub(super) keys: Vec<String>,
    pub(super) left: u64,
    pub(super) granted: u64,
    /// The outcome of the grant (remaining already net of the lease).
    pub(super) outcome: Outcome,
    pub(super) at: Instant,
    pub(super) expires: Instant,
    pub(super) member: String,
    /// sw: window number per limit at the grant; tb: TAT per limit right after it.
    pub(super) marks: Vec<u64>,
}

/// A lease taken out of a slot, to give back.
pub(super) struct Unused {
    pub(super) keys: Vec<String>,
    pub(super) unused: u64,
    pub(super) member: String,
    pub(super) marks: Vec<u64>,
}

pub(super) fn spawn_return(sh: &Arc<Shared>, remote: &Remote, u: Unused) {
    let (remote, algorithm, limits, returned) =
        (remote.clone(), sh.algorithm(), sh.limits().to_vec(), sh.permits_returned.clone());
    tokio::spawn(async move {
        let back = LeaseReturn { keys: &u.keys, unused: u.unused, member: &u.member, marks: &u.marks };
        let inv = return_invocation(algorithm, &limits, &back, &remote.store().now_arg());
        match remote.call(remote.store().invoke::<Vec<i64>>(&inv)).await {
            Ok(v) => {
                returned.fetch_add(v.first().copied().unwrap_or(0).max(0) as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "lease not returned; its permits age out of the window"),
        }
    });
}

/// Redis calls without a lease request after a lease expired having served fewer than
/// LEASE_MIN_USES callers.
pub(super) const LEASE_COOLDOWN_CALLS: u8 = 8;

/// Calls a lease must be expected to serve to be asked for: it costs a heavier script call than a
/// plain decision, and its unused rest a return call, so one that saves fewer calls costs Redis
/// more than it saves: an identity checked only a few times per lease lifetime is that case (the
/// Node bench's uniform identities, BENCHMARKS "Node").
pub(super) const LEASE_MIN_USES: u32 = 4;

/// Whether an identity is hot enough to lease for: callers queued up for it; or the lease it just
/// had (`lease_used`: the calls that one served) served LEASE_MIN_USES calls; or its last Redis call
/// (`since_last`) was recent enough that a lease of `lease` lifetime should serve that many at that
/// rate. (Time since the last call alone would misjudge an identity that spent its lease slowly.)
pub(super) fn is_hot(since_last: Option<Duration>, lease_used: Option<u64>, lease: Duration, batch_len: usize) -> bool {
    batch_len > 1
        || lease_used.is_some_and(|n| n >= u64::from(LEASE_MIN_USES))
        || since_last.is_some_and(|d| d * LEASE_MIN_USES < lease)
}

/// Lease bookkeeping before a Redis call for `batch_len` callers the lease cannot serve: take the
/// lease out (its rest is given back), adapt the next lease size, decide whether to ask for one.
pub(super) fn plan(sh: &Shared, st: &mut SlotState, now: Instant, batch_len: usize) -> Plan {
    let (mut release, mut lease_used) = (None, None);
    let spent = st.lease.take().and_then(|l| {
        let used = l.granted - l.left;
        lease_used = Some(used);
        // spent before expiry: ask for twice as much; expired part-used: ask for what was used
        st.next_want = if l.left == 0 || now < l.expires { l.granted.saturating_mul(2) } else { used.max(2) };
        // expired having served fewer calls than a lease must to pay for itself and its return:
        // the identity comes about once per lease/LEASE_MIN_USES, where the rate rule misjudges
        // it every other call (the Node bench's 10,000 identities took 91,791 leases of 3.3)
        if used < u64::from(LEASE_MIN_USES) && now >= l.expires {
            st.lease_cooldown = LEASE_COOLDOWN_CALLS;
        }
        release = Some(l.member.clone());
        (l.left > 0).then_some(Unused { keys: l.keys, unused: l.left, member: l.member, marks: l.marks })
    });
    let hot = is_hot(
        st.last_remote.map(|t| now.duration_since(t)),
        lease_used,
        Duration::from_millis(sh.opts.lease_ms),
        batch_len,
    );
    st.last_remote = Some(now);
    let budget = sh.budget();
    let cooling = st.lease_cooldown > 0 && batch_len == 1;
    st.lease_cooldown = st.lease_cooldown.saturating_sub(1);
    let want = if sh.opts.leases && hot && !cooling && budget > 0 {
        st.next_want.clamp(2, sh.opts.max_lease.max(2))
    } else {
        0
    };
    Plan { want, spent, release }
}

/// What to ask of the next call besides the callers' costs.
pub(super) struct Plan {
    pub(super) want: u64,
    /// A lease with permits left, to give back.
    pub(super) spent: Option<Unused>,
    /// The previous lease's record, to drop from the outstanding set.
    pub(super) release: Option<String>,
}

/// Answer queued callers from the lease, in arrival order, until one needs more than it holds.
pub(super) fn serve_from_lease(st: &mut SlotState, now: Instant) {
    let Some(l) = st.lease.as_mut() else { return };
    if now >= l.expires {
        return;
    }
    let mut served = 0;
    for w in &st.queue {
        if w.cost > l.left {
            break;
        }
        l.left -= w.cost;
        served += 1;
    }
    for tx in st.queue.drain(..served).filter_map(|w| w.tx) {
        // answers in order; `left` shown is what remains after all of them (a close approximation)
        let _ = tx.send(Ok((aged(&l.outcome, l.at, now, true, Some(l.granted - l.left)), Source::Lease)));
    }
}
