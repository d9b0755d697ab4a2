//! Local time, injectable. With Redis the local clock only measures skew against Redis's `TIME`;
//! the embedded store decides with it, so tests drive it by hand with `FakeClock`.

#[cfg(feature = "test-util")]
use std::sync::atomic::AtomicI64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_us(&self) -> u64;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
    }
}

/// A clock that moves only when told to. Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct FakeClock(Arc<AtomicU64>);

impl FakeClock {
    pub fn new(start_us: u64) -> Self {
        FakeClock(Arc::new(AtomicU64::new(start_us)))
    }
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_micros() as u64, Ordering::SeqCst);
    }
    pub fn set_us(&self, us: u64) {
        self.0.store(us, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now_us(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The system clock shifted by a fixed offset: how tests model an app server whose clock is wrong
/// (feature `test-util`).
#[cfg(feature = "test-util")]
#[derive(Debug)]
pub struct OffsetClock {
    offset_us: AtomicI64,
}

#[cfg(feature = "test-util")]
impl OffsetClock {
    pub fn new(offset: i64) -> Self {
        OffsetClock { offset_us: AtomicI64::new(offset) }
    }
}

#[cfg(feature = "test-util")]
impl Clock for OffsetClock {
    fn now_us(&self) -> u64 {
        (SystemClock.now_us() as i64 + self.offset_us.load(Ordering::Relaxed)) as u64
    }
}
