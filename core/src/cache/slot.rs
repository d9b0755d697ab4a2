//! An identity's entry (its slot): the cached denial, the lease, the callers coalesced behind the
//! call in flight; what an entry weighs, and how a stored outcome looks when served later.

use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::oneshot;

use super::identity::Id;
use super::lease::Lease;
use crate::algorithm::Outcome;
use crate::decision::Source;
use crate::error::Result;

/// What moka keeps per entry besides our key and value (its entry record, key hash, deque node,
/// map bucket), measured: `an_entry_weighs_what_it_takes_on_the_heap` (core/tests/cache_memory.rs)
/// fails when the weight falls short of an entry's heap bytes.
pub(super) const MOKA_ENTRY_BYTES: usize = 256;

/// Per-entry weight, the heap bytes an entry takes: the slot, a denial's outcome for `windows`
/// limits, and moka's own record with its key. A lease is not weighed: only hot identities hold
/// one, and its memory goes when it is spent or expires.
pub(super) fn weight(windows: usize) -> u32 {
    let slot = std::mem::size_of::<Slot>() + 2 * std::mem::size_of::<usize>(); // in its Arc
    let denial = windows * std::mem::size_of::<crate::algorithm::WindowEval>();
    (std::mem::size_of::<Id>() + slot + denial + MOKA_ENTRY_BYTES).min(u32::MAX as usize) as u32
}

pub(super) type Reply = Result<(Outcome, Source)>;

pub(super) struct Waiter {
    pub(super) cost: u64,
    /// None: the caller driving the call inline, answered by return value.
    pub(super) tx: Option<oneshot::Sender<Reply>>,
}

/// "Requests costing at least `min_cost` are denied until `until`."
pub(super) struct Denial {
    pub(super) min_cost: u64,
    pub(super) outcome: Outcome,
    pub(super) at: Instant,
    pub(super) until: Instant,
}

#[derive(Default)]
pub(super) struct SlotState {
    pub(super) denial: Option<Denial>,
    /// Boxed: most entries never hold one.
    pub(super) lease: Option<Box<Lease>>,
    pub(super) in_flight: bool,
    pub(super) queue: Vec<Waiter>,
    /// Lease size to ask for next (adapted to how fast leases are spent).
    pub(super) next_want: u64,
    pub(super) last_remote: Option<Instant>,
    /// Redis calls to make without asking for a lease, after a lease expired having served fewer
    /// than LEASE_MIN_USES callers: such an identity is not hot enough, and each such lease costs
    /// a return call (the Node bench's 10,000 identities lost throughput to that).
    pub(super) lease_cooldown: u8,
}

/// An identity's entry. Its keys are not kept here: every check brings them, and the lease
/// that must outlive a check carries its own.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) state: Mutex<SlotState>,
}

impl SlotState {
    /// Nothing in flight and nobody waiting. The queue's buffer goes too: kept, an entry would
    /// hold its busiest moment's buffer for life, unweighed, and the heap would grow as more
    /// identities saw company (`coalesced_callers_leave_nothing_behind` pins it).
    pub(super) fn settle(&mut self) {
        self.in_flight = false;
        self.queue = Vec::new();
    }
}

impl Slot {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A stored outcome seen `now`: times shortened by the age, `now_us` moved on. A lease shows what
/// Redis had left before the grant less what the lease has spent since.
pub(super) fn aged(o: &Outcome, at: Instant, now: Instant, allowed: bool, lease_used: Option<u64>) -> Outcome {
    let age = now.saturating_duration_since(at).as_micros() as u64;
    let mut o = o.clone();
    o.now_us += age;
    o.allowed = allowed;
    if allowed {
        o.limited_by = None;
    }
    for w in &mut o.windows {
        w.reset_after_us = w.reset_after_us.saturating_sub(age);
        if allowed {
            w.retry_after_us = 0;
            w.remaining = w.remaining.saturating_sub(lease_used.unwrap_or(0));
        } else if w.retry_after_us > 0 {
            w.retry_after_us = w.retry_after_us.saturating_sub(age).max(1);
        }
    }
    o
}
