//! The one tokio runtime of this process, and the `pyo3_async_runtimes::generic` glue that spawns
//! onto it. A runtime is per pid: after `fork()` its worker threads exist only in the parent, so a
//! child (gunicorn, uvicorn workers) that reused it would hang. A new pid builds a new runtime.
//! Also the per-thread driver that sync calls on Redis run on while their caller waits.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use pyo3_async_runtimes::generic::{ContextExt, JoinError, Runtime};
use pyo3_async_runtimes::TaskLocals;

use floodwall::per_process::{pid, PerProcess};

/// Never freed: a runtime inherited through fork() must not be dropped (dropping joins worker
/// threads that do not exist in the child), and one runtime per process lives as long as it.
static CURRENT: PerProcess<Shared> = PerProcess::new();

/// The shared runtime. Threads racing to make the first one each build one; a loser's is shut
/// down without waiting, so that is safe even from inside another runtime.
struct Shared(Option<tokio::runtime::Runtime>);

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

fn build() -> Shared {
    Shared(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads())
            .thread_name("floodwall")
            .enable_all()
            .build()
            .expect("floodwall: cannot start the tokio runtime"),
    ))
}

/// FLOODWALL_WORKER_THREADS, else 1: the work is I/O on one multiplexed Redis connection, and
/// idle workers looking for work cost CPU that the interpreter needs.
fn worker_threads() -> usize {
    std::env::var("FLOODWALL_WORKER_THREADS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(1)
}

/// The runtime of the current process, made on first use and again after a fork.
pub fn get() -> &'static tokio::runtime::Runtime {
    CURRENT.get_or(build).0.as_ref().expect("only a dropped runtime has none")
}

/// `pyo3_async_runtimes::generic::Runtime` over [`get`].
pub struct ForkSafeRuntime;

pub struct TokioJoinError(tokio::task::JoinError);

impl JoinError for TokioJoinError {
    fn is_panic(&self) -> bool {
        self.0.is_panic()
    }
    fn into_panic(self) -> Box<dyn std::any::Any + Send + 'static> {
        self.0.into_panic()
    }
}

pub struct JoinHandle(tokio::task::JoinHandle<()>);

impl Future for JoinHandle {
    type Output = Result<(), TokioJoinError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| r.map_err(TokioJoinError))
    }
}

tokio::task_local! {
    static TASK_LOCALS: TaskLocals;
}

impl Runtime for ForkSafeRuntime {
    type JoinError = TokioJoinError;
    type JoinHandle = JoinHandle;

    fn spawn<F>(fut: F) -> Self::JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        JoinHandle(get().spawn(fut))
    }

    fn spawn_blocking<F>(f: F) -> Self::JoinHandle
    where
        F: FnOnce() + Send + 'static,
    {
        JoinHandle(get().spawn_blocking(f))
    }
}

impl ContextExt for ForkSafeRuntime {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        Box::pin(TASK_LOCALS.scope(locals, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        TASK_LOCALS.try_with(|l| l.clone()).ok()
    }
}

/// A thread's own current-thread runtime and its connections, for sync calls on Redis. A sync
/// caller waits anyway; driving its own connection while it waits makes a round trip one write
/// and one read on its thread, as redis-py does, where the shared runtime costs a wake-up of a
/// worker and another of the caller per call (measured in docs/BENCHMARKS.md, Python). This is
/// not a second place where work runs: it runs only inside the caller's own `check_sync`.
struct Here {
    pid: u32,
    /// Per limiter (by the address of its token, which its `Weak` keeps from being reused).
    /// Declared before `rt`: connections drop before the runtime they live on.
    conns: Vec<(Weak<()>, floodwall::OwnConnection)>,
    rt: tokio::runtime::Runtime,
}

thread_local! {
    static HERE: RefCell<Option<Here>> = const { RefCell::new(None) };
}

/// Run `f` over this thread's connection for the limiter `token` stands for, on this thread's
/// runtime, blocking until it finishes. None when the limiter has no connection to give (the
/// embedded store, a cache layer): the caller then uses the shared runtime.
pub fn block_here<T, Fut>(
    limiter: &floodwall::Limiter,
    token: &Arc<()>,
    f: impl FnOnce(floodwall::OwnConnection) -> Fut,
) -> Option<floodwall::Result<T>>
where
    Fut: Future<Output = floodwall::Result<T>>,
{
    let pid = pid();
    // Taken out while in use: nothing in a check calls back into Python, but if something ever
    // did and re-entered, it would find no runtime here and fall back instead of aliasing it.
    let mut here = HERE.with(|h| h.borrow_mut().take());
    if here.as_ref().is_some_and(|h| h.pid != pid) {
        // Inherited through fork(): its driver's fds are shared with the parent; never drop it.
        std::mem::forget(here.take());
    }
    let mut here = match here {
        Some(h) => h,
        None => Here {
            pid,
            conns: Vec::new(),
            rt: tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?,
        },
    };
    let conn = match here.conns.iter().find(|(w, _)| w.as_ptr() == Arc::as_ptr(token)) {
        Some((_, c)) => Some(c.clone()),
        None => match limiter.own_connection(get().handle().clone()) {
            None => None,
            Some(Err(e)) => {
                HERE.with(|h| *h.borrow_mut() = Some(here));
                return Some(Err(e));
            }
            Some(Ok(c)) => {
                // Limiters dropped since: close their connections.
                here.conns.retain(|(w, _)| w.strong_count() > 0);
                here.conns.push((Arc::downgrade(token), c.clone()));
                Some(c)
            }
        },
    };
    let result = conn.map(|c| here.rt.block_on(f(c)));
    HERE.with(|h| *h.borrow_mut() = Some(here));
    result
}
