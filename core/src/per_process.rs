//! State that belongs to one process. After fork() a child (gunicorn and uvicorn workers) must
//! not touch its parent's: the threads that held its locks and the tasks that drove its sockets
//! exist only in the parent, so an inherited lock can stay held forever.
//! A new pid gets a fresh value, swapped in without taking any lock; the parent's is leaked.

use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU8, Ordering};

/// This process's id, cached: `getpid` is a system call and every decision on Redis asks. A fork() handler clears the cache in the child before the child runs any code.
static PID: AtomicU32 = AtomicU32::new(0);
/// 0: handler not registered, 1: being registered, 2: registered (only then is PID cached).
static HANDLER: AtomicU8 = AtomicU8::new(0);

extern "C" fn forget_pid_in_child() {
    // async-signal-safe, as a fork() child handler must be
    PID.store(0, Ordering::Relaxed);
}

/// The id of the current process.
pub fn pid() -> u32 {
    let cached = PID.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    let pid = std::process::id();
    // (A fork() in the middle of another thread's registration leaves 1 for good: that child
    // simply asks the kernel every time.)
    if HANDLER.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire).is_ok() {
        // SAFETY: registers a plain function; nothing is freed or shared.
        let registered = unsafe { libc::pthread_atfork(None, None, Some(forget_pid_in_child)) } == 0;
        // Without the handler, never cache (a child would read its parent's id).
        HANDLER.store(if registered { 2 } else { 1 }, Ordering::Release);
    }
    if HANDLER.load(Ordering::Acquire) == 2 {
        PID.store(pid, Ordering::Relaxed);
    }
    pid
}

struct Owned<T> {
    pid: u32,
    value: T,
}

/// One `T` per process, made on first use in each.
pub struct PerProcess<T> {
    current: AtomicPtr<Owned<T>>,
}

impl<T> Default for PerProcess<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> PerProcess<T> {
    pub const fn new() -> Self {
        PerProcess { current: AtomicPtr::new(std::ptr::null_mut()) }
    }

    /// This process's value, made with `make` if it has none yet. Threads racing to make the
    /// first one each make one; the losers' are dropped unused.
    pub fn get_or(&self, make: impl Fn() -> T) -> &T {
        let pid = pid();
        loop {
            let seen = self.current.load(Ordering::Acquire);
            // SAFETY: a published pointer comes from Box::into_raw and is freed only by Drop
            // (which has `&mut self`, so no reference from here outlives it).
            if let Some(owned) = unsafe { seen.as_ref() } {
                if owned.pid == pid {
                    return &owned.value;
                }
            }
            let fresh = Box::into_raw(Box::new(Owned { pid, value: make() }));
            match self.current.compare_exchange(seen, fresh, Ordering::AcqRel, Ordering::Acquire) {
                // The value replaced, if any, was the parent's: leaked on purpose, since dropping
                // it could wake tasks or join threads that do not exist here.
                Ok(_) => return unsafe { &(*fresh).value },
                // SAFETY: `fresh` was never published.
                Err(_) => drop(unsafe { Box::from_raw(fresh) }),
            }
        }
    }
}

impl<T> std::fmt::Debug for PerProcess<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the value: showing it would make one, or read a parent's.
        f.write_str("PerProcess { .. }")
    }
}

impl<T> Drop for PerProcess<T> {
    fn drop(&mut self) {
        let ptr = *self.current.get_mut();
        // SAFETY: as in get_or; nothing else can reach the pointer any more.
        if unsafe { ptr.as_ref() }.is_some_and(|owned| owned.pid == pid()) {
            drop(unsafe { Box::from_raw(ptr) });
        }
    }
}

// SAFETY: a PerProcess hands out `&T` across threads and drops T on whichever thread drops it.
unsafe impl<T: Send + Sync> Sync for PerProcess<T> {}
unsafe impl<T: Send> Send for PerProcess<T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn one_value_per_process_and_it_is_dropped_with_its_owner() {
        let made = AtomicUsize::new(0);
        let dropped = Arc::new(());
        let p = PerProcess::new();
        let a = p.get_or(|| {
            made.fetch_add(1, Ordering::Relaxed);
            dropped.clone()
        }) as *const _;
        let b = p.get_or(|| unreachable!("made twice in one process")) as *const _;
        assert_eq!(a, b);
        assert_eq!(made.load(Ordering::Relaxed), 1);
        assert_eq!(Arc::strong_count(&dropped), 2);
        drop(p);
        assert_eq!(Arc::strong_count(&dropped), 1);
    }

    #[test]
    fn an_inherited_value_is_replaced_and_never_dropped() {
        let inherited = Arc::new(());
        // As a child sees it: the published value names another pid.
        let p = PerProcess::new();
        let parent = Box::into_raw(Box::new(Owned { pid: pid().wrapping_add(1), value: inherited.clone() }));
        p.current.store(parent, Ordering::Release);
        let fresh = Arc::new(());
        assert!(Arc::ptr_eq(p.get_or(|| fresh.clone()), &fresh));
        drop(p);
        assert_eq!(Arc::strong_count(&inherited), 2, "the parent's value must be leaked, not dropped");
        // SAFETY: the test owns the leaked box; free it so the test itself does not leak.
        drop(unsafe { Box::from_raw(parent) });
    }

    #[test]
    fn a_forked_child_sees_its_own_pid() {
        let parent = pid();
        assert_eq!(parent, std::process::id());
        let (mut r, mut w) = std::io::pipe().unwrap();
        // SAFETY: the child only reads an atomic, writes to a pipe and exits.
        match unsafe { libc::fork() } {
            0 => {
                use std::io::Write;
                let ok = pid() == std::process::id() && pid() != parent;
                let _ = w.write_all(&[ok as u8]);
                unsafe { libc::_exit(0) }
            }
            child => {
                assert!(child > 0, "fork failed");
                drop(w);
                let mut answer = Vec::new();
                std::io::Read::read_to_end(&mut r, &mut answer).unwrap();
                unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
                assert_eq!(answer, [1], "the child read its parent's pid");
            }
        }
    }
}
