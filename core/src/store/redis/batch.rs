//! Batches concurrent decisions of one Redis store into one call of lua/decide.lua, so Redis pays a script call's fixed cost (EVALSHA, TIME, Lua setup) per batch.
//! A caller with no company calls alone (or, with a batch window, waits that long for company); callers arriving
//! while a call is in flight wait for it and go together, and a second call goes beside it only once enough wait to fill one.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::algorithm::Algorithm;
use crate::error::Result;

use super::RedisStore;

/// Most requests in one script call: bounds how long one script holds Redis (each request adds
/// its fields to the call's HMGET and HSET, or its own commands for a sliding log) and the size of
/// its reply.
pub(crate) const MAX_BATCH: usize = 64;
/// Script calls of one store in flight at once: one runs in Redis while the next one fills.
const MAX_CALLS: usize = 2;
/// Requests waiting that justify a second call while one is in flight. Fewer wait for the call
/// in flight to end and go together after it: a script call's fixed part (EVALSHA, TIME, a read
/// and a write per shard) then serves more requests, for at most one call's time of waiting.
const SECOND_CALL_AT: usize = 8;

/// One decision to make. Requests share a call only with the same algorithm and limits.
#[derive(Debug)]
pub(crate) struct Ask {
    /// The request's keys (one; the sliding log's two)
    pub keys: Vec<String>,
    pub algorithm: Algorithm,
    /// scripts::limit_args of the limiter's limits (shared by the requests of one batch)
    pub limits: Arc<[u8]>,
    /// keys::epoch_us of those limits
    pub epoch_us: u64,
    pub cost: u64,
    pub consume: bool,
}

impl Ask {
    /// `req` as a request of a script call; `limits` is scripts::limit_args of its limits.
    pub(crate) fn of(req: &crate::store::Request<'_>, limits: Arc<[u8]>) -> Self {
        let epoch_us = crate::keys::epoch_us(req.algorithm, req.limits);
        Ask {
            keys: req.keys.to_vec(),
            algorithm: req.algorithm,
            limits,
            epoch_us,
            cost: req.cost,
            consume: req.consume,
        }
    }

    pub(crate) fn request<'a>(&'a self, limits: &'a [crate::limit::Limit]) -> crate::store::Request<'a> {
        crate::store::Request {
            keys: &self.keys,
            limits,
            algorithm: self.algorithm,
            cost: self.cost,
            consume: self.consume,
        }
    }
}

/// What the script decided for one request, and the state it read then.
#[derive(Debug)]
pub(crate) struct Decided {
    pub allowed: bool,
    pub now_us: u64,
    pub state: Vec<i64>,
    /// false: Redis was at maxmemory (noeviction) and wrote nothing of the call
    pub recorded: bool,
}

struct Waiting {
    ask: Ask,
    tx: oneshot::Sender<Result<Decided>>,
}

/// The store's waiting requests and calls in flight, in one process (a forked child gets a queue
/// of its own: it inherits none of the tasks that drain its parent's).
#[derive(Default)]
pub(crate) struct Queue {
    waiting: Vec<Waiting>,
    calls: usize,
    /// A drain waits out the batch window: arrivals join it rather than start another
    opening: bool,
}

impl Queue {
    /// Whether the waiting requests may start a call now.
    fn may_call(&self) -> bool {
        !self.opening && (self.calls == 0 || (self.calls < MAX_CALLS && self.waiting.len() >= SECOND_CALL_AT))
    }
}

/// Turns of the runtime a drain waits, after a call, while the callers it answered keep coming
/// back with their next requests (on a multi-thread runtime they come over several turns, each
/// deciding from its cache first): waiting lets those requests share the next call instead of
/// each starting one, and waiting longer delays the callers that came alone. Two turns was chosen
/// on the cache bench's hot/tail rows (`floodwall-bench cache`, BENCHMARKS "Cache layer"): fewer
/// Redis commands per decision than one turn, the same p99, where four turns cost p99.
const GATHER_TURNS: usize = 2;

/// What an arriving request does: call Redis itself, or wait for a drain to answer it.
enum Turn {
    Call(Ask),
    Wait(oneshot::Receiver<Result<Decided>>),
}

thread_local! {
    /// Set while [`together`] polls its future: the stores whose arrivals it held back.
    static HELD: RefCell<Option<Vec<RedisStore>>> = const { RefCell::new(None) };
}

/// Run `f`, whose decisions arrive together (a binding's batch: one JS tick's checks, one
/// asyncio turn's calls), so that they share script calls from the start. Without it, the first
/// two arrivals find a free call slot and call alone, and only the rest wait to go together.
/// Arrivals during each poll of `f` wait; when the poll ends, every store they went to starts
/// sending them, in calls as full as their shapes allow.
pub async fn together<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| {
        let _hold = Hold(HELD.with(|h| h.borrow_mut().replace(Vec::new())));
        f.as_mut().poll(cx)
    })
    .await
}

/// Holds arrivals for one poll of a [`together`] future; on drop (also on a panic) puts back the
/// enclosing hold, if any, and starts calls for what it held.
struct Hold(Option<Vec<RedisStore>>);

impl Drop for Hold {
    fn drop(&mut self) {
        let held = HELD.with(|h| std::mem::replace(&mut *h.borrow_mut(), self.0.take()));
        for store in held.unwrap_or_default() {
            let mut q = store.queue();
            if !q.waiting.is_empty() && q.may_call() {
                q.calls += 1;
                drop(q);
                start_drain(&store, false);
            }
            // else: a call in flight starts a drain when it ends (CallSlot)
        }
    }
}

/// Whether a [`together`] poll is running on this thread; if so, it will start `store`'s calls.
fn hold_for(store: &RedisStore) -> bool {
    HELD.with(|h| match &mut *h.borrow_mut() {
        Some(stores) => {
            if !stores.iter().any(|s| s.same_as(store)) {
                stores.push(store.clone());
            }
            true
        }
        None => false,
    })
}

/// Decide `ask`: alone when a call slot is free and nobody waits, otherwise with whoever waits.
pub(crate) async fn submit(store: &RedisStore, ask: Ask) -> Result<Decided> {
    let held = hold_for(store);
    let window = !store.batch_window().is_zero();
    let turn = {
        let mut q = store.queue();
        if !held && !window && q.calls == 0 && q.waiting.is_empty() {
            q.calls += 1;
            Turn::Call(ask)
        } else {
            let (tx, rx) = oneshot::channel();
            q.waiting.push(Waiting { ask, tx });
            if !held && q.may_call() {
                q.calls += 1;
                q.opening = window;
                drop(q);
                start_drain(store, window);
            }
            Turn::Wait(rx)
        }
    };
    match turn {
        Turn::Call(ask) => {
            let _slot = CallSlot::new(store);
            store.decide_one(&ask).await
        }
        Turn::Wait(rx) => rx.await.unwrap_or_else(|_| Err(store.bad_reply("batched call abandoned"))),
    }
}

/// Runs a drain on the current runtime, first waiting out the batch window when `window`;
/// without a runtime, fails the waiting (nothing could answer them).
fn start_drain(store: &RedisStore, window: bool) {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => drop(h.spawn(drain(store.clone(), window))),
        Err(_) => {
            let mut q = store.queue();
            for w in q.waiting.drain(..) {
                let _ = w.tx.send(Err(store.bad_reply("no runtime to run a batched call")));
            }
            q.calls -= 1;
            q.opening = false;
        }
    }
}

/// Waits until `deadline`, yielding to the runtime between looks so the arrivals it waits for
/// can come. Not a timer: tokio's fire on millisecond ticks, and a batch window is at most 500 µs.
pub(crate) async fn wait_until(deadline: std::time::Instant) {
    while std::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
}

/// Holds one of the store's call slots. Released on drop (also when a caller is cancelled
/// mid-call): if requests wait, the slot passes to a drain that answers them, so none is stranded.
/// A slot taken in a parent and dropped in a forked child is not the child's to release.
struct CallSlot {
    store: RedisStore,
    pid: u32,
}

impl CallSlot {
    fn new(store: &RedisStore) -> Self {
        CallSlot { store: store.clone(), pid: crate::per_process::pid() }
    }
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        if self.pid != crate::per_process::pid() {
            return;
        }
        let mut q = self.store.queue();
        if q.waiting.is_empty() {
            q.calls -= 1;
        } else {
            drop(q);
            start_drain(&self.store, false);
        }
    }
}

/// Sends the waiting requests in batches of one shape until none waits; first, when `window`,
/// holds them for the store's batch window so that later arrivals share the call.
async fn drain(store: RedisStore, window: bool) {
    let _slot = CallSlot::new(&store);
    if window {
        wait_until(std::time::Instant::now() + store.batch_window()).await;
        store.queue().opening = false;
    }
    let mut first = true;
    loop {
        // Callers just answered run before the next batch is taken, so the requests they make at
        // once ride in it rather than in a call of their own behind it (a few µs of latency for
        // fewer, fuller script calls; each call costs Redis ~5 decisions' worth of fixed work).
        if !std::mem::take(&mut first) {
            // and for up to GATHER_TURNS more turns while they keep coming
            let mut seen = store.queue().waiting.len();
            for _ in 0..GATHER_TURNS {
                tokio::task::yield_now().await;
                let now = store.queue().waiting.len();
                if now == seen || now >= MAX_BATCH {
                    break;
                }
                seen = now;
            }
        }
        let batch: Vec<Waiting> = {
            let mut q = store.queue();
            let Some(first) = q.waiting.first() else { return };
            let (alg, limits) = (first.ask.algorithm, first.ask.limits.clone());
            // requests of the same shape, in arrival order; the others keep their places
            let (mut batch, rest): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut q.waiting)
                .into_iter()
                .partition(|w| w.ask.algorithm == alg && w.ask.limits == limits);
            let over = batch.split_off(batch.len().min(MAX_BATCH));
            q.waiting = over.into_iter().chain(rest).collect();
            batch
        };
        let asks: Vec<&Ask> = batch.iter().map(|w| &w.ask).collect();
        match store.decide(&asks).await {
            Ok(decided) => {
                for (w, d) in batch.into_iter().zip(decided) {
                    let _ = w.tx.send(Ok(d));
                }
            }
            Err(e) => {
                for w in batch {
                    let _ = w.tx.send(Err(e.clone()));
                }
            }
        }
    }
}
