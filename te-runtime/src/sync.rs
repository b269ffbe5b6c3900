//! The one structure shared between threads: a [`Monitor`], the engine
//! core behind a mutex, which the event-loop thread updates and then
//! signals after every round. Waiters either sleep on a condition variable
//! (the default) or spin on a round counter (busy-poll mode, for the
//! lowest latency at the price of a core). Under `--cfg loom` it is built
//! from loom's primitives so that `tests/loom.rs` can check every
//! interleaving of both wait/notify protocols.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

use std::time::Duration;

/// Spins between two yields of the processor while busy-waiting: a
/// round of the event loop takes about a microsecond, so a spinning
/// waiter looks often enough without starving a thread that shares its
/// core.
#[cfg(not(loom))]
const SPINS_PER_YIELD: u32 = 64;

/// State shared by user threads and the event-loop thread.
pub struct Monitor<T> {
    state: Mutex<T>,
    changed: Condvar,
    /// Threads asleep in (or about to sleep in) `changed`; `notify` skips
    /// the wake-up system call when there are none.
    sleepers: AtomicUsize,
    /// Bumped by every [`notify`](Self::notify); spinning waiters watch it.
    round: AtomicU64,
    spin: bool,
}

impl<T> Monitor<T> {
    /// Wraps `state`; waiters sleep until notified.
    pub fn new(state: T) -> Monitor<T> {
        Monitor::with_mode(state, false)
    }

    /// Wraps `state`; with `spin`, waiters busy-wait for the next
    /// [`notify`](Self::notify) instead of sleeping.
    pub fn with_mode(state: T, spin: bool) -> Monitor<T> {
        Monitor {
            state: Mutex::new(state),
            changed: Condvar::new(),
            sleepers: AtomicUsize::new(0),
            round: AtomicU64::new(0),
            spin,
        }
    }

    /// Locks the state. A panic on another thread while it held the lock
    /// does not make the state unusable: the engine's invariants are
    /// re-established by every call.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells every thread waiting in [`wait_for`](Self::wait_for) to look
    /// again; call after changing the state, without holding the lock.
    pub fn notify(&self) {
        self.round.fetch_add(1, Ordering::Release);
        // A sleeper registers under the lock before it sleeps, and the
        // state change this notify announces was made under the lock: a
        // sleeper that missed the change is counted here.
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            self.changed.notify_all();
        }
    }

    /// Runs `check` under the lock until it returns `Some`, waiting for
    /// the next [`notify`](Self::notify) in between; gives up with `None`
    /// after `timeout` (if any).
    pub fn wait_for<R>(
        &self,
        timeout: Option<Duration>,
        mut check: impl FnMut(&mut T) -> Option<R>,
    ) -> Option<R> {
        #[cfg(not(loom))]
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        #[cfg(loom)]
        let _ = timeout;
        if self.spin {
            loop {
                let seen = self.round.load(Ordering::Acquire);
                if let Some(r) = check(&mut self.lock()) {
                    return Some(r);
                }
                #[cfg(not(loom))]
                let mut spins = 0u32;
                while self.round.load(Ordering::Acquire) == seen {
                    #[cfg(not(loom))]
                    {
                        spins += 1;
                        if spins.is_multiple_of(SPINS_PER_YIELD) {
                            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                                return None;
                            }
                            std::thread::yield_now();
                        } else {
                            std::hint::spin_loop();
                        }
                    }
                    #[cfg(loom)]
                    loom::thread::yield_now();
                }
            }
        }
        let mut guard = self.lock();
        loop {
            if let Some(r) = check(&mut guard) {
                return Some(r);
            }
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            #[cfg(not(loom))]
            let woken = match deadline {
                Some(d) => d.checked_duration_since(std::time::Instant::now()).map(|left| {
                    self.changed
                        .wait_timeout(guard, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }),
                None => Some(self.changed.wait(guard).unwrap_or_else(|p| p.into_inner())),
            };
            #[cfg(loom)]
            let woken = Some(self.changed.wait(guard).unwrap_or_else(|p| p.into_inner()));
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            guard = woken?;
        }
    }
}
