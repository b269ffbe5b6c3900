//! loom models of the structure shared between threads: the engine core
//! behind a `Monitor`, which user threads wait on (asleep on a condition
//! variable, or spinning on a round counter in busy-poll mode) and the
//! event-loop thread updates and signals after every round. Every model
//! runs in both modes.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p te-runtime --test loom --release`.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use te_runtime::sync::Monitor;

/// Runs `f` under loom. A spinning waiter makes every interleaving
/// unboundedly long, so those models bound preemptions (loom's own advice
/// for spin loops): bugs in such protocols show within two preemptions.
fn model(spin: bool, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if spin {
        b.preemption_bound = Some(2);
    }
    b.check(f);
}

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
    for spin in [false, true] {
        waiter_never_misses_a_completion_in(spin);
    }
}

fn waiter_never_misses_a_completion_in(spin: bool) {
    model(spin, move || {
        let m = Arc::new(Monitor::with_mode(State::default(), spin));
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
///
/// Sleeping waiters only: two spinning waiters make loom's search explode
/// (each spin is a branch), and the one-spinner model above covers the
/// spin protocol.
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
