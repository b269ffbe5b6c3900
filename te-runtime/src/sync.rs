//! The one structure shared between threads: a [`Monitor`], the engine
//! core behind a mutex plus a condition variable that the event-loop thread
//! signals after every round. Under `--cfg loom` it is built from loom's
//! primitives so that `tests/loom.rs` can check every interleaving of the
//! wait/notify protocol. (In busy-poll mode waiters do not sleep here: they
//! run the event loop themselves, see `Engine`.)

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

use std::time::Duration;

/// State shared by user threads and the event-loop thread.
pub struct Monitor<T> {
    state: Mutex<T>,
    changed: Condvar,
    /// Threads asleep in (or about to sleep in) `changed`; `notify` skips
    /// the wake-up system call when there are none.
    sleepers: AtomicUsize,
}

impl<T> Monitor<T> {
    /// Wraps `state`.
    pub fn new(state: T) -> Monitor<T> {
        Monitor {
            state: Mutex::new(state),
            changed: Condvar::new(),
            sleepers: AtomicUsize::new(0),
        }
    }

    /// Locks the state. A panic on another thread while it held the lock
    /// does not make the state unusable: the engine's invariants are
    /// re-established by every call.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes every thread waiting in [`wait_for`](Self::wait_for); call after changing the state, without holding the lock.
    pub fn notify(&self) {
        // A sleeper registers under the lock before it sleeps, and the
        // state change this notify announces was made under the lock: a
        // sleeper that missed the change is counted here.
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            self.changed.notify_all();
        }
    }

    /// Runs `check` under the lock until it returns `Some`, sleeping until
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
