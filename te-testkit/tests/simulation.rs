//! Deterministic simulation: te-proto links on the te-testkit fabric
//! under random partial IO, delays, cuts, frozen and restarted peers, with
//! a random workload and invariants checked after every step.
//!
//! - `cargo test -p te-testkit --test simulation`: seeds 0..10_000.
//! - `TE_SIM_SEEDS=N`: run N seeds; `TE_SIM_START=S`: start at seed S.
//! - `TE_SIM_SEED=S`: run exactly seed S with a trace of what happens.
//! - `TE_SIM_THREADS=T`: run seeds on T threads (default: one per core);
//!   every seed is deterministic whatever thread runs it.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use support::{run_seed, Sabotage};

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

#[test]
fn random_seeds_keep_every_invariant() {
    if let Some(seed) = env_u64("TE_SIM_SEED") {
        let out = run_seed(seed, None, true);
        assert!(
            out.violations.is_empty(),
            "seed {seed}: {:?}\nreplay: TE_SIM_SEED={seed} cargo test -p te-testkit --test simulation -- --nocapture",
            out.violations
        );
        eprintln!(
            "seed {seed}: {} steps, {} tasks, no violation",
            out.steps, out.tasks
        );
        return;
    }
    let start = env_u64("TE_SIM_START").unwrap_or(0);
    let count = env_u64("TE_SIM_SEEDS").unwrap_or(10_000);
    let threads = env_u64("TE_SIM_THREADS")
        .map(|t| t.max(1) as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let totals = run_seeds(start, count, threads);
    if let Some((seed, v)) = totals.first_failure {
        panic!(
            "seed {seed} broke an invariant at {} ns: {}\nreplay: TE_SIM_SEED={seed} cargo test -p te-testkit --test simulation -- --nocapture",
            v.at.as_nanos(),
            v.what
        );
    }
    eprintln!(
        "{count} seeds from {start} on {threads} threads: {} steps, {} tasks, no violation\n{:?}",
        totals.steps, totals.tasks, totals.endings
    );
    if count >= 1000 {
        // The workload reaches every way a task or a notification can end.
        for want in [
            "task Ok",
            "task NotAuthorized",
            "task Disconnected",
            "task Timeout",
            "task Canceled",
            "notification Delivered",
            "notification Lost",
            "notification Dropped",
            "segment info failed",
            "segment info matched the model",
        ] {
            let n = totals.endings.get(want).copied().unwrap_or(0);
            assert!(n > 0, "no {want:?} in {count} seeds");
        }
    }
}

/// What a range of seeds did.
struct Totals {
    steps: u64,
    tasks: u64,
    endings: BTreeMap<String, u64>,
    /// The smallest seed that broke an invariant, with its first violation.
    first_failure: Option<(u64, te_testkit::fabric::Violation)>,
}

/// Runs seeds `start..start + count` on `threads` threads, each taking the
/// next seed in order; after a failure no new seed starts, so every seed
/// below the reported one ran and passed.
fn run_seeds(start: u64, count: u64, threads: usize) -> Totals {
    let next = AtomicU64::new(start);
    let stop = AtomicBool::new(false);
    let totals = Mutex::new(Totals {
        steps: 0,
        tasks: 0,
        endings: BTreeMap::new(),
        first_failure: None,
    });
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= start + count || stop.load(Ordering::Relaxed) {
                    return;
                }
                let out = run_seed(seed, None, false);
                let mut t = totals.lock().unwrap_or_else(|e| e.into_inner());
                t.steps += out.steps;
                t.tasks += out.tasks as u64;
                for (k, n) in out.endings {
                    *t.endings.entry(k).or_insert(0) += n;
                }
                if let Some(v) = out.violations.into_iter().next() {
                    stop.store(true, Ordering::Relaxed);
                    if t.first_failure.as_ref().is_none_or(|(s, _)| seed < *s) {
                        t.first_failure = Some((seed, v));
                    }
                }
                let done = seed + 1 - start;
                if count >= 100_000 && done.is_multiple_of(100_000) {
                    eprintln!("seed {seed} of {start}..{}: no violation so far", start + count);
                }
            });
        }
    });
    totals.into_inner().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn a_seed_replays_bit_for_bit() {
    let mut digests = Vec::new();
    for seed in [3, 77] {
        let a = run_seed(seed, None, false);
        let b = run_seed(seed, None, false);
        assert_eq!(
            (a.steps, a.tasks, a.digest),
            (b.steps, b.tasks, b.digest),
            "seed {seed}"
        );
        assert!(a.steps > 0 && a.tasks > 0, "seed {seed} did something");
        digests.push(a.digest);
    }
    assert_ne!(digests[0], digests[1], "different seeds, different runs");
}

/// The checker is honest: a fabric that flips one payload bit, delivers a
/// notification twice or hides a reset from a link is caught.
#[test]
fn deliberate_bugs_are_caught() {
    for (sabotage, expect) in [
        (Sabotage::FlipPayloadBit, "expected"),
        (Sabotage::DuplicateNotification, "notification"),
        (Sabotage::ForgetDisconnect, "still running"),
    ] {
        let caught = (0..200u64)
            .map(|seed| run_seed(seed, Some(sabotage), false))
            .find(|o| !o.violations.is_empty())
            .unwrap_or_else(|| panic!("{sabotage:?} went unnoticed in 200 seeds"));
        let what = &caught.violations[0].what;
        eprintln!("{sabotage:?}: seed {}: {what}", caught.seed);
        assert!(what.contains(expect), "{sabotage:?} seed {}: {what}", caught.seed);
    }
}
