//! Deterministic simulation of te-proto links on the te-driver-sim
//! fabric: a random workload per seed, a reference model and invariants
//! checked after every step.

mod model;
mod workload;
mod world;

pub use te_driver_sim::fabric::Sabotage;
use te_driver_sim::fabric::Violation;

pub use self::world::World;

/// What one seed did.
pub struct Outcome {
    pub seed: u64,
    pub steps: u64,
    pub tasks: usize,
    /// The fabric's digest at the end: clock and all memory.
    pub digest: u64,
    pub violations: Vec<Violation>,
}

/// Runs seed `seed` to the end (or its first violation).
pub fn run_seed(seed: u64, sabotage: Option<Sabotage>, trace: bool) -> Outcome {
    let mut w = World::new(seed, sabotage, trace);
    w.run();
    Outcome {
        seed,
        steps: w.steps,
        tasks: w.tasks.len(),
        digest: w.fab.digest(),
        violations: w.fab.violations().to_vec(),
    }
}
