//! Resolving asyncio futures from the runtime in batches. A Redis call finishes on a tokio thread;
//! instead of taking the interpreter there for each result (a GIL hand-off per decision), the
//! thread queues the result and, if no wake-up is pending, writes one byte to a socket the event
//! loop watches. The loop then resolves every queued future at once, on its own thread.

use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::stream::{FuturesUnordered, StreamExt};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyList;

/// Builds the result (or the exception) with the interpreter attached, on the loop's thread.
pub type Completion = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// A call to start on the runtime; it completes its future through the bridge when done.
pub type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One per event loop (and process): the futures it awaits and the socket that wakes it.
#[pyclass(module = "floodwall._floodwall", frozen)]
pub struct LoopBridge {
    pid: u32,
    event_loop: Py<PyAny>,
    wake_read: UnixStream,
    completions: Arc<Completions>,
    /// Calls made during this turn of the loop, started together by `flush` (touched only with
    /// the interpreter attached, on the loop's thread).
    jobs: Mutex<Vec<Job>>,
}

/// The part of a bridge that runtime threads hold. It is not a Python object on purpose: a
/// `Py` dropped without the interpreter goes to pyo3's deferred-decref pool under a lock, and a
/// fork() landing while a runtime thread held that lock left the child hung on its first call.
pub struct Completions {
    wake_write: UnixStream,
    queue: Mutex<Vec<(Py<PyAny>, Completion)>>,
    /// A wake-up byte is in flight; later completions ride on it.
    armed: AtomicBool,
}

impl LoopBridge {
    /// Start `job` at the end of this turn of the loop, with the other calls made in it: one
    /// hand-off to the runtime per turn instead of one per call.
    pub fn submit(slf: &Bound<'_, Self>, job: Job) -> PyResult<()> {
        let py = slf.py();
        let first = {
            let mut jobs = slf.get().jobs.lock().unwrap_or_else(|p| p.into_inner());
            jobs.push(job);
            jobs.len() == 1
        };
        if first {
            let flush = slf.getattr(pyo3::intern!(py, "flush"))?;
            slf.get().event_loop.bind(py).call_method1(pyo3::intern!(py, "call_soon"), (flush,))?;
        }
        Ok(())
    }

    /// Where a call on the runtime hands its result back.
    pub fn completions(&self) -> Arc<Completions> {
        self.completions.clone()
    }
}

impl Completions {
    /// Queue `done` for `future` (any thread, no interpreter needed). Both are dropped later,
    /// on the loop's thread with the interpreter attached.
    pub fn complete(&self, future: Py<PyAny>, done: Completion) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).push((future, done));
        if !self.armed.swap(true, Ordering::AcqRel) {
            // One byte per batch: the socket can never fill up, and a failed write only means
            // the loop is gone (closed), when nobody awaits these futures any more.
            let _ = (&self.wake_write).write(&[1]);
        }
    }
}

#[pymethods]
impl LoopBridge {
    /// Start the calls made during this turn of the loop, as one task on the runtime.
    fn flush(&self) {
        let jobs = std::mem::take(&mut *self.jobs.lock().unwrap_or_else(|p| p.into_inner()));
        if jobs.is_empty() {
            return;
        }
        // One task polls the whole turn's calls, so each queues its command on the Redis
        // connection before the connection's writer runs, and the turn goes out in one write.
        // Spawned as tasks of their own, each call woke the writer into tokio's LIFO slot and went
        // out in a write (and Redis read) of its own. Unconstrained: tokio's per-task budget would
        // otherwise cut a turn of more than a few dozen calls into several writes; a turn is
        // bounded by what the event loop submitted.
        // `together`: the turn's decisions share script calls from the first one. A call alone
        // goes straight out (held, it would wait for a drain task to be scheduled).
        let alone = jobs.len() == 1;
        let all = async move {
            let mut calls: FuturesUnordered<Job> = jobs.into_iter().collect();
            while calls.next().await.is_some() {}
        };
        if alone {
            crate::runtime::get().spawn(all);
        } else {
            crate::runtime::get().spawn(tokio::task::unconstrained(floodwall::together(all)));
        }
    }

    /// The loop's reader callback: resolve every queued future.
    fn drain(&self, py: Python<'_>) -> PyResult<()> {
        let mut buf = [0u8; 64];
        while matches!((&self.wake_read).read(&mut buf), Ok(n) if n == buf.len()) {}
        // Disarm before taking the queue: a completion queued after the take writes a new byte.
        let completions = &self.completions;
        completions.armed.store(false, Ordering::Release);
        let batch = std::mem::take(&mut *completions.queue.lock().unwrap_or_else(|p| p.into_inner()));
        for (future, done) in batch {
            let future = future.bind(py);
            // Cancelled (or otherwise finished) while the call was in flight: nobody is waiting.
            if future.call_method0(pyo3::intern!(py, "done"))?.is_truthy()? {
                continue;
            }
            let outcome = match done(py) {
                Ok(value) => future.call_method1(pyo3::intern!(py, "set_result"), (value,)),
                Err(err) => future.call_method1(pyo3::intern!(py, "set_exception"), (err.into_value(py),)),
            };
            if let Err(e) = outcome {
                // One future that cannot be resolved must not strand the rest of the batch.
                e.write_unraisable(py, Some(future));
            }
        }
        Ok(())
    }
}

static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
/// Bridges of live loops; few (one per thread running a loop), so a list scan is cheap.
static BRIDGES: PyOnceLock<Py<PyList>> = PyOnceLock::new();

/// The running loop's bridge (made on first use) and a new future on that loop.
pub fn future_for_running_loop(py: Python<'_>) -> PyResult<(Bound<'_, LoopBridge>, Bound<'_, PyAny>)> {
    let get_loop = GET_RUNNING_LOOP.import(py, "asyncio", "get_running_loop")?;
    let event_loop = get_loop.call0()?;
    let bridge = bridge_for(py, &event_loop)?;
    let future = event_loop.call_method0(pyo3::intern!(py, "create_future"))?;
    Ok((bridge.into_bound(py), future))
}

fn bridge_for(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<Py<LoopBridge>> {
    let bridges = BRIDGES.get_or_init(py, || PyList::empty(py).unbind()).bind(py);
    let pid = floodwall::per_process::pid();
    for b in bridges.iter() {
        let b = b.cast_into::<LoopBridge>()?;
        let inner = b.get();
        // After fork() a child gets a bridge of its own: the parent's socket is shared with it.
        if inner.pid == pid && inner.event_loop.bind(py).is(event_loop) {
            return Ok(b.unbind());
        }
    }
    // A new loop: forget the bridges of loops that are closed, or that belong to another process
    // (dropping one closes its socket).
    let mut keep = Vec::new();
    for b in bridges.iter() {
        let b = b.cast_into::<LoopBridge>()?;
        let inner = b.get();
        let closed = inner.event_loop.bind(py).call_method0(pyo3::intern!(py, "is_closed"))?.is_truthy()?;
        if inner.pid == pid && !closed {
            keep.push(b);
        }
    }
    bridges.del_slice(0, bridges.len())?;
    for b in keep {
        bridges.append(b)?;
    }
    let (wake_read, wake_write) = UnixStream::pair()?;
    wake_read.set_nonblocking(true)?;
    wake_write.set_nonblocking(true)?;
    let fd = wake_read.as_raw_fd();
    let bridge = Bound::new(
        py,
        LoopBridge {
            pid,
            event_loop: event_loop.clone().unbind(),
            wake_read,
            completions: Arc::new(Completions {
                wake_write,
                queue: Mutex::new(Vec::new()),
                armed: AtomicBool::new(false),
            }),
            jobs: Mutex::new(Vec::new()),
        },
    )?;
    event_loop.call_method1(pyo3::intern!(py, "add_reader"), (fd, bridge.getattr(pyo3::intern!(py, "drain"))?))?;
    bridges.append(&bridge)?;
    Ok(bridge.unbind())
}
