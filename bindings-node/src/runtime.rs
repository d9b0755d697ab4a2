//! The addon's one async runtime: napi's tokio runtime, built here so its size is chosen rather
//! than "one worker per core". Redis calls are I/O-bound, and on small machines extra workers
//! only compete with Node's own thread and with Redis.

use napi_derive::module_init;

/// Worker threads, unless FLOODWALL_NODE_THREADS says otherwise.
const DEFAULT_WORKERS: usize = 1;

#[module_init]
fn init() {
    let workers = std::env::var("FLOODWALL_NODE_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or(DEFAULT_WORKERS);
    // If building fails, napi falls back to its default runtime on first use.
    if let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("floodwall-node")
        .enable_all()
        .build()
    {
        napi::bindgen_prelude::create_custom_tokio_runtime(rt);
    }
}
