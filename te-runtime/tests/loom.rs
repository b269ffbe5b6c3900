//! loom models of the structure shared between threads: the engine core
//! behind a `Monitor` (mutex + condition variable), which user threads wait
//! on and the event-loop thread updates and signals after every round.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p te-runtime --test loom --release`.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use te_runtime::sync::Monitor;

/// Stand-in for the core: tasks completed by the event loop, and whether
/// the engine is finalized.
#[derive(Default)]
struct State {
    completed: u32,
    finalized: bool,
}

/// A caller waiting for its batch never misses the loop's completion,
/// whatever the interleaving of the update, the notify and the wait.
#[test]
fn waiter_never_misses_a_completion() {
    loom::model(|| {
        let m = Arc::new(Monitor::new(State::default()));
        let lp = Arc::clone(&m);
        let event_loop = thread::spawn(move || {
            for _ in 0..2 {
                lp.lock().completed += 1;
                lp.notify();
            }
        });
        let seen = m.wait_for(None, |s| (s.completed == 2).then_some(s.completed));
        assert_eq!(seen, Some(2));
        event_loop.join().unwrap();
    });
}

/// Two callers wait for different conditions on the same monitor while the
/// loop makes progress and then finalizes; both wake up.
#[test]
fn every_waiter_wakes_on_its_own_condition() {
    loom::model(|| {
        let m = Arc::new(Monitor::new(State::default()));
        let a = Arc::clone(&m);
        let waiter = thread::spawn(move || a.wait_for(None, |s| (s.completed >= 1).then_some(())));
        let lp = Arc::clone(&m);
        let event_loop = thread::spawn(move || {
            lp.lock().completed += 1;
            lp.notify();
            lp.lock().finalized = true;
            lp.notify();
        });
        assert_eq!(m.wait_for(None, |s| s.finalized.then_some(())), Some(()));
        assert_eq!(waiter.join().unwrap(), Some(()));
        event_loop.join().unwrap();
    });
}
