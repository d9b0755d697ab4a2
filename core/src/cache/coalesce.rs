//! Coalescing: one script call in flight per identity; callers arriving meanwhile queue and go
//! together in the next (with a lease request when the identity is hot), driven by one task.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lease::{plan, serve_from_lease, spawn_return, Lease, Plan};
use super::slot::{aged, Reply, Slot, SlotState, Waiter};
use super::{twin, Shared};
use crate::algorithm::{Outcome, StateReply};
use crate::decision::Source;
use crate::error::{Error, Result};
use crate::remote::Remote;
use crate::scripts::{batch_invocation, LeaseAsk};
use crate::store::Request;

/// One script call for `batch`: answers every waiter with a channel, records denials and the
/// lease, and returns the answer of the waiter without one (the caller that drives inline).
pub(super) async fn exchange(
    sh: &Arc<Shared>,
    remote: &Remote,
    keys: &[String],
    slot: &Slot,
    batch: Vec<Waiter>,
    plan: Plan,
) -> Option<Reply> {
    let Plan { want, spent, release } = plan;
    if let Some(u) = spent {
        spawn_return(sh, remote, u);
    }
    let plain = batch.len() == 1 && want == 0 && release.is_none();
    // the name a granted lease is recorded under in Redis; a plain call grants none
    let member = if plain {
        String::new()
    } else {
        format!("{:x}-{}", sh.instance, sh.lease_seq.fetch_add(1, Ordering::Relaxed))
    };
    let t0 = Instant::now();
    let result = if plain {
        // one caller, no lease: the plain script answers the same, with less Lua
        let req = Request { keys, limits: sh.limits(), algorithm: sh.algorithm(), cost: batch[0].cost, consume: true };
        remote.evaluate(&req).await.map(|o| (vec![o], 0, Vec::new()))
    } else {
        call_batch(sh, remote, keys, &batch, want, &member, release.as_deref().unwrap_or("")).await
    };
    let mut own = None;
    let mut st = slot.lock();
    match result {
        Err(e) => {
            for w in batch {
                match w.tx {
                    Some(tx) => drop(tx.send(Err(e.clone()))),
                    None => own = Some(Err(e.clone())),
                }
            }
        }
        Ok((outs, granted, marks)) => {
            let last = outs.last().cloned();
            for (w, o) in batch.into_iter().zip(outs) {
                if !o.allowed && sh.opts.denial_cache {
                    sh.remember_denial(&mut st, &o, w.cost, t0);
                }
                match w.tx {
                    Some(tx) => drop(tx.send(Ok((o, Source::Redis)))),
                    None => own = Some(Ok((o, Source::Redis))),
                }
            }
            if let (true, Some(outcome)) = (granted > 0, last) {
                sh.leases_granted.fetch_add(1, Ordering::Relaxed);
                sh.permits_leased.fetch_add(granted, Ordering::Relaxed);
                // the local lease ends no later than its record in Redis (sent before Redis read TIME)
                let expires = t0 + sh.jitter(Duration::from_millis(sh.opts.lease_ms));
                st.lease = Some(Box::new(Lease {
                    keys: keys.to_vec(),
                    left: granted,
                    granted,
                    outcome,
                    at: t0,
                    expires,
                    member: format!("{member}:{granted}"),
                    marks,
                }));
            }
        }
    }
    own
}

/// After an inline call: callers that queued meanwhile get a driver; otherwise nothing is in flight.
/// Also runs when the inline caller is dropped mid-call, so queued callers are never stranded.
pub(super) struct Handoff<'a> {
    pub(super) sh: &'a Arc<Shared>,
    pub(super) remote: &'a Remote,
    pub(super) slot: &'a Arc<Slot>,
    pub(super) keys: &'a [String],
}

impl Drop for Handoff<'_> {
    fn drop(&mut self) {
        let mut st = self.slot.lock();
        if st.queue.is_empty() {
            st.settle();
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn(drive(self.sh.clone(), self.remote.clone(), self.slot.clone(), self.keys.to_vec()))),
            Err(_) => {
                for w in st.queue.drain(..) {
                    if let Some(tx) = w.tx {
                        let _ = tx.send(Err(Error::Store {
                            url: self.remote.store().url().to_string(),
                            message: "no runtime to finish a coalesced call".into(),
                        }));
                    }
                }
                st.settle();
            }
        }
    }
}

/// One identity's driver, for callers that queued behind a call in flight: send their costs as
/// one script call (with a lease request when the identity is hot), answer each in arrival
/// order, repeat. At most one call per identity is in flight, so at most one refresh.
pub(super) async fn drive(sh: Arc<Shared>, remote: Remote, slot: Arc<Slot>, keys: Vec<String>) {
    if sh.opts.batch_window_us > 0 {
        crate::store::redis::batch::wait_until(Instant::now() + Duration::from_micros(sh.opts.batch_window_us)).await;
    }
    loop {
        let (batch, p) = {
            let mut st = slot.lock();
            let now = Instant::now();
            // callers a fresh denial or the current lease can answer, before anything goes to Redis
            serve_from_denial(&mut st, now);
            serve_from_lease(&mut st, now);
            if st.queue.is_empty() {
                st.settle();
                return;
            }
            let take = st.queue.len().min(sh.opts.max_batch);
            let batch: Vec<Waiter> = st.queue.drain(..take).collect();
            let p = plan(&sh, &mut st, now, batch.len());
            (batch, p)
        };
        exchange(&sh, &remote, &keys, &slot, batch, p).await;
    }
}

/// Answer queued callers the cached denial covers (a denial of cost c covers every cost ≥ c).
pub(super) fn serve_from_denial(st: &mut SlotState, now: Instant) {
    let Some(d) = &st.denial else { return };
    if now >= d.until {
        st.denial = None;
        return;
    }
    let (min_cost, outcome, at) = (d.min_cost, d.outcome.clone(), d.at);
    let (deny, keep): (Vec<Waiter>, Vec<Waiter>) =
        std::mem::take(&mut st.queue).into_iter().partition(|w| w.cost >= min_cost);
    st.queue = keep;
    for w in deny.into_iter().filter_map(|w| w.tx) {
        let _ = w.send(Ok((aged(&outcome, at, now, false, None), Source::Cache)));
    }
}

/// Run the batch script: per-caller outcomes, permits leased, and the marks to return them by.
pub(super) async fn call_batch(
    sh: &Shared,
    remote: &Remote,
    keys: &[String],
    batch: &[Waiter],
    want: u64,
    member: &str,
    release: &str,
) -> Result<(Vec<Outcome>, u64, Vec<u64>)> {
    let costs: Vec<u64> = batch.iter().map(|w| w.cost).collect();
    let lease = LeaseAsk { want, lifetime_us: sh.opts.lease_ms * 1000, budget: sh.budget(), member, release };
    let inv = batch_invocation(sh.algorithm(), sh.limits(), keys, &costs, &lease, &remote.store().now_arg());
    let reply: Vec<i64> = remote.call(remote.store().invoke(&inv)).await?;
    let bad = || Error::Store {
        url: remote.store().url().to_string(),
        message: format!("unexpected batch reply of {} values", reply.len()),
    };
    let m = batch.len();
    if reply.len() < 2 + m {
        return Err(bad());
    }
    let (granted, read) =
        (reply[0].max(0) as u64, StateReply { now_us: reply[1].max(0) as u64, state: &reply[2 + m..] });
    let allowed: Vec<bool> = reply[2..2 + m].iter().map(|&a| a == 1).collect();
    let (outs, marks) = twin::apply_batch(sh.algorithm(), &read, sh.limits(), &costs, &allowed, granted);
    Ok((outs, granted, marks))
}
