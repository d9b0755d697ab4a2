//! Batches concurrent decisions of one Redis store into one call of lua/decide.lua, so Redis pays a script call's fixed cost (EVALSHA, TIME, Lua setup) per batch.
//! A caller with no company calls alone; callers arriving while calls are in flight wait and go together.

use tokio::sync::oneshot;

use crate::algorithm::Algorithm;
use crate::error::{Error, Result};

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

/// Decide `ask`: alone when a call slot is free and nobody waits, otherwise with whoever waits.
pub(crate) async fn submit(store: &RedisStore, ask: Ask) -> Result<Decided> {
    let pid = std::process::id();
    let (ask, rx) = {
        let mut q = store.queue();
        if q.pid != pid {
            *q = Queue { pid, ..Default::default() };
        }
        if q.calls < MAX_CALLS && q.waiting.is_empty() {
            q.calls += 1;
            (Some(ask), None)
        } else {
            let (tx, rx) = oneshot::channel();
            q.waiting.push(Waiting { ask, tx });
            if q.calls < MAX_CALLS {
                q.calls += 1;
                drop(q);
                start_drain(store);
            }
            (None, Some(rx))
        }
    };
    match (ask, rx) {
        (Some(ask), _) => {
            let _slot = CallSlot(store.clone());
            let mut one = store.decide(&[&ask]).await?;
            one.pop().ok_or_else(|| store.bad_reply("no answer"))
        }
        (None, Some(rx)) => rx.await.unwrap_or_else(|_| Err(store.bad_reply("batched call abandoned"))),
        (None, None) => unreachable!("a request either calls or waits"),
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
    loop {
        let batch: Vec<Waiting> = {
            let mut q = store.queue();
            let Some(first) = q.waiting.first() else { return };
            let (alg, limits) = (first.ask.algorithm, first.ask.limits.clone());
            let mut batch = Vec::with_capacity(q.waiting.len().min(MAX_BATCH));
            let mut i = 0;
            while i < q.waiting.len() && batch.len() < MAX_BATCH {
                if q.waiting[i].ask.algorithm == alg && q.waiting[i].ask.limits == limits {
                    batch.push(q.waiting.remove(i));
                } else {
                    i += 1;
                }
            }
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

impl RedisStore {
    pub(crate) fn bad_reply(&self, message: &str) -> Error {
        Error::Store { url: self.url().to_string(), message: message.to_string() }
    }
}
