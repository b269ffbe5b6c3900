//! The event loop of an [`Engine`](super::Engine): the state its threads
//! share, the loop thread's rounds, and busy-poll mode, where a waiting
//! caller runs the rounds itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use mio::{Events, Poll, Token, Waker};
use tracing::warn;

use crate::core::{EngineCore, SegmentId};
use crate::sync::Monitor;

/// The waker's token.
pub(super) const WAKER: Token = Token(0);
/// The first token of the core's sources.
pub(super) const BASE: Token = Token(1);

/// What the engine handle and its loop thread share.
pub(super) struct Shared {
    pub(super) core: Monitor<EngineCore>,
    /// The mio poll. The loop thread holds it while it polls; in busy-poll
    /// mode a caller waiting for an answer takes it and polls itself.
    pub(super) poller: std::sync::Mutex<Poller>,
    /// Callers driving the poll in busy-poll mode; the loop thread parks
    /// while there are any, so that it does not compete for a core.
    pub(super) drivers: AtomicUsize,
    pub(super) waker: Waker,
    pub(super) stop: AtomicBool,
    /// When the sleeping event loop wakes up by itself (nanoseconds on the
    /// core's clock; `u64::MAX`: never). Written under the core's lock before
    /// the loop sleeps; a call that adds an earlier deadline wakes it.
    pub(super) sleep_until: AtomicU64,
    /// One segment-info query at a time: the answers of concurrent
    /// queries would mix.
    pub(super) info_lock: std::sync::Mutex<()>,
    /// Segments opened by name through the synchronous helpers.
    pub(super) by_name: std::sync::Mutex<HashMap<String, SegmentId>>,
}

/// Busy-poll mode: runs the event loop on this thread until `check`
/// says yes, so that an answer is handled by the thread waiting for it
/// without a hand-over from the loop thread, which parks meanwhile
/// instead of competing for a core. When another waiter holds the poll,
/// this one watches the core for the answer that waiter's rounds bring.
pub(super) fn drive_until<R>(
    shared: &Shared,
    loop_thread: &std::thread::Thread,
    timeout: Duration,
    mut check: impl FnMut(&mut EngineCore) -> Option<R>,
) -> Option<R> {
    let deadline = std::time::Instant::now() + timeout;
    let _driving = Driving::new(shared, loop_thread);
    let mut held = None;
    loop {
        if let Some(r) = check(&mut shared.core.lock()) {
            return Some(r);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        if held.is_none() {
            held = shared.try_poller();
        }
        match held.as_mut() {
            // An empty round gives the core away for a moment: the peer
            // may be spinning on the same one.
            Some(p) => {
                if !matches!(poll_round(shared, p, Some(Duration::ZERO)), Ok(true)) {
                    std::thread::yield_now();
                }
            }
            None => std::thread::yield_now(),
        }
    }
}

impl Shared {
    /// The poll, unless another thread holds it. A panic elsewhere while
    /// polling does not end the polling: a poisoned lock is taken anyway.
    fn try_poller(&self) -> Option<std::sync::MutexGuard<'_, Poller>> {
        match self.poller.try_lock() {
            Ok(p) => Some(p),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

/// An engine deadline as nanoseconds on the engine's clock (`u64::MAX`: none).
pub(super) fn deadline_nanos(deadline: Option<te_proto::Instant>) -> u64 {
    deadline.map_or(u64::MAX, |t| t.as_nanos().min(u64::MAX - 1))
}

/// A caller driving the poll (busy-poll mode), counted in `drivers` for
/// as long as it lives, even if its wait panics. The last one to leave
/// unparks the loop thread when work is left for it (tasks in flight, or
/// peers being served); otherwise the loop thread stays parked until its
/// next look at `drivers` (at most 1 ms), so that a caller waiting for one
/// batch after another does not wake it between every two (a wake-up and
/// lock contention per round trip, docs/PERFORMANCE.md).
struct Driving<'a> {
    shared: &'a Shared,
    loop_thread: &'a std::thread::Thread,
}

impl<'a> Driving<'a> {
    fn new(shared: &'a Shared, loop_thread: &'a std::thread::Thread) -> Driving<'a> {
        shared.drivers.fetch_add(1, Ordering::AcqRel);
        Driving { shared, loop_thread }
    }
}

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        if self.shared.drivers.fetch_sub(1, Ordering::AcqRel) == 1 {
            let core = self.shared.core.lock();
            if core.tasks_in_flight() > 0 || core.serving_peers() {
                self.loop_thread.unpark();
            }
        }
    }
}

/// The mio poll and its event buffer.
pub(super) struct Poller {
    pub(super) poll: Poll,
    pub(super) events: Events,
}

/// The shortest wait the poll can sleep for (epoll counts milliseconds).
const SLEEP_GRAIN: Duration = Duration::from_millis(1);

/// One round of the event loop: waits up to `wait` for IO, hands the
/// events to the core, acts on passed deadlines and wakes the waiting
/// callers. `Ok(false)` when it found nothing to do.
fn poll_round(shared: &Shared, p: &mut Poller, wait: Option<Duration>) -> std::io::Result<bool> {
    let timeout = {
        let core = shared.core.lock();
        let next = core.next_deadline();
        shared.sleep_until.store(deadline_nanos(next), Ordering::Release);
        next.map(|t| t - core.now())
    };
    let wait = match (wait, timeout) {
        (Some(w), Some(t)) => Some(w.min(t)),
        (w, t) => w.or(t),
    };
    // The poll sleeps in whole milliseconds: a deadline closer than that
    // (device copies in flight are looked at every 20 us) is waited for by
    // polling without sleeping, yielding the core between rounds.
    let due = timeout.is_some_and(|t| t <= wait.unwrap_or(t));
    let wait = wait.map(|w| if w < SLEEP_GRAIN { Duration::ZERO } else { w });
    p.poll.poll(&mut p.events, wait)?;
    if p.events.is_empty() && !due {
        return Ok(false);
    }
    {
        let mut core = shared.core.lock();
        for ev in p.events.iter() {
            if ev.token() != WAKER && core.owns(ev.token()) {
                core.handle_event(ev);
            }
        }
        core.handle_timeout();
    }
    shared.core.notify();
    Ok(true)
}

/// The event loop: wait for IO or the next deadline, hand events to the
/// core, wake the waiting callers. With `busy`, it never sleeps: it polls
/// without a timeout, yielding the core between empty rounds, and parks
/// while callers busy-wait (they poll themselves and unpark it when done).
pub(super) fn run(shared: &Shared, busy: bool) {
    while !shared.stop.load(Ordering::Acquire) {
        if busy && shared.drivers.load(Ordering::Acquire) > 0 {
            // Bounded, so that a missed unpark costs a millisecond, not a hang.
            std::thread::park_timeout(Duration::from_millis(1));
            continue;
        }
        // A busy loop never blocks on the poll a driver holds: it looks at
        // `drivers` and `stop` again instead.
        let mut p = match shared.try_poller() {
            Some(p) => p,
            None if busy => {
                std::thread::park_timeout(Duration::from_millis(1));
                continue;
            }
            None => shared.poller.lock().unwrap_or_else(|e| e.into_inner()),
        };
        match poll_round(shared, &mut p, if busy { Some(Duration::ZERO) } else { None }) {
            Ok(true) => {}
            Ok(false) => {
                drop(p);
                std::thread::yield_now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                warn!("poll failed, event loop stops: {e}");
                break;
            }
        }
    }
}
