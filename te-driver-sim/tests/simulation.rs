//! Deterministic simulation: te-proto links on the te-driver-sim fabric
//! under random partial IO, delays, cuts, frozen and restarted peers, with
//! a random workload and invariants checked after every step.
//!
//! - `cargo test -p te-driver-sim --test simulation`: seeds 0..10_000.
//! - `TE_SIM_SEEDS=N`: run N seeds; `TE_SIM_START=S`: start at seed S.
//! - `TE_SIM_SEED=S`: run exactly seed S with a trace of what happens.

mod support;

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
            "seed {seed}: {:?}\nreplay: TE_SIM_SEED={seed} cargo test -p te-driver-sim --test simulation",
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
    let (mut steps, mut tasks) = (0u64, 0usize);
    for seed in start..start + count {
        let out = run_seed(seed, None, false);
        if let Some(v) = out.violations.first() {
            panic!(
                "seed {seed} broke an invariant at {} ns: {}\nreplay: TE_SIM_SEED={seed} cargo test -p te-driver-sim --test simulation",
                v.at.as_nanos(),
                v.what
            );
        }
        steps += out.steps;
        tasks += out.tasks;
        if count >= 100_000 && (seed + 1 - start).is_multiple_of(100_000) {
            eprintln!("{} of {count} seeds done, no violation", seed + 1 - start);
        }
    }
    eprintln!("{count} seeds from {start}: {steps} steps, {tasks} tasks, no violation");
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

/// The checker is honest: a fabric that flips one payload bit or delivers
/// a notification twice is caught, and the report names the seed.
#[test]
fn deliberate_bugs_are_caught() {
    for (sabotage, expect) in [
        (Sabotage::FlipPayloadBit, "expected"),
        (Sabotage::DuplicateNotification, "notification"),
    ] {
        let caught = (0..200u64)
            .map(|seed| run_seed(seed, Some(sabotage), false))
            .find(|o| !o.violations.is_empty())
            .unwrap_or_else(|| panic!("{sabotage:?} went unnoticed in 200 seeds"));
        let what = &caught.violations[0].what;
        assert!(what.contains(expect), "{sabotage:?} seed {}: {what}", caught.seed);
    }
}
