//! Batches concurrent decisions of one Redis store into one call of lua/decide.lua, so Redis pays a script call's fixed cost (EVALSHA, TIME, Lua setup) per batch.
//! A caller with no company calls alone; callers arriving while calls are in flight wait and go together.

use tokio::sync::oneshot;

use crate::algorithm::Algorithm;
use crate::error::Result;

use super::redis::RedisStore;

/// Most requests in one script call: bounds how long one script holds Redis (each request is a
/// GET and at most a SET) and the size of its reply.
const MAX_BATCH: usize = 64;
/// Script calls of one store in flight at once: one runs in Redis while the next one fills.
const MAX_CALLS: usize = 2;

/// One decision to make. Requests share a call only with the same algorithm and limits.
#[derive(Debug)]
pub(crate) struct Ask {
    /// The request's keys (one; the sliding log's two)
    pub keys: Vec<String>,
    pub algorithm: Algorithm,
    /// scripts::limit_args of the limiter's limits
    pub limits: Vec<u8>,
    pub cost: u64,
    pub consume: bool,
}

/// What the script decided for one request, and the state it read then.
#[derive(Debug)]
pub(crate) struct Decided {
    pub allowed: bool,
    pub now_us: u64,
    pub state: Vec<i64>,
}

struct Waiting {
    ask: Ask,
    tx: oneshot::Sender<Result<Decided>>,
}

/// The store's waiting requests and calls in flight, with the pid they belong to: a forked child
/// (gunicorn and uvicorn workers) inherits the queue but not the tasks that drain it.
#[derive(Default)]
pub(crate) struct Queue {
    pid: u32,
    waiting: Vec<Waiting>,
    calls: usize,
}

/// What an arriving request does: call Redis itself, or wait for a drain to answer it.
enum Turn {
    Call(Ask),
    Wait(oneshot::Receiver<Result<Decided>>),
}

/// Decide `ask`: alone when a call slot is free and nobody waits, otherwise with whoever waits.
pub(crate) async fn submit(store: &RedisStore, ask: Ask) -> Result<Decided> {
    let pid = std::process::id();
    let turn = {
        let mut q = store.queue();
        if q.pid != pid {
            *q = Queue { pid, ..Default::default() };
        }
        if q.calls < MAX_CALLS && q.waiting.is_empty() {
            q.calls += 1;
            Turn::Call(ask)
        } else {
            let (tx, rx) = oneshot::channel();
            q.waiting.push(Waiting { ask, tx });
            if q.calls < MAX_CALLS {
                q.calls += 1;
                drop(q);
                start_drain(store);
            }
            Turn::Wait(rx)
        }
    };
    match turn {
        Turn::Call(ask) => {
            let _slot = CallSlot(store.clone());
            store.decide_one(&ask).await
        }
        Turn::Wait(rx) => rx.await.unwrap_or_else(|_| Err(store.bad_reply("batched call abandoned"))),
    }
}

/// Runs a drain on the current runtime; without one, fails the waiting (nothing could answer them).
fn start_drain(store: &RedisStore) {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => drop(h.spawn(drain(store.clone()))),
        Err(_) => {
            let mut q = store.queue();
            for w in q.waiting.drain(..) {
                let _ = w.tx.send(Err(store.bad_reply("no runtime to run a batched call")));
            }
            q.calls -= 1;
        }
    }
}

/// Holds one of the store's call slots. Released on drop (also when a caller is cancelled
/// mid-call): if requests wait, the slot passes to a drain that answers them, so none is stranded.
struct CallSlot(RedisStore);

impl Drop for CallSlot {
    fn drop(&mut self) {
        let mut q = self.0.queue();
        if q.pid != std::process::id() {
            return;
        }
        if q.waiting.is_empty() {
            q.calls -= 1;
        } else {
            drop(q);
            start_drain(&self.0);
        }
    }
}

/// Sends the waiting requests in batches of one shape until none waits.
async fn drain(store: RedisStore) {
    let _slot = CallSlot(store.clone());
    let mut first = true;
    loop {
        // Callers just answered run before the next batch is taken, so the requests they make at
        // once ride in it rather than in a call of their own behind it (a few µs of latency for
        // fewer, fuller script calls; each call costs Redis ~5 decisions' worth of fixed work).
        if !std::mem::take(&mut first) {
            tokio::task::yield_now().await;
        }
        let batch: Vec<Waiting> = {
            let mut q = store.queue();
            let Some(first) = q.waiting.first() else { return };
            let (alg, limits) = (first.ask.algorithm, first.ask.limits.clone());
            // requests of the same shape, in arrival order; the others keep their places
            let (mut batch, rest): (Vec<Waiting>, Vec<Waiting>) =
                std::mem::take(&mut q.waiting).into_iter().partition(|w| w.ask.algorithm == alg && w.ask.limits == limits);
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
