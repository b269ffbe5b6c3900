//! Deterministic simulation of te-proto's `Endpoint` and `Link`s on the
//! te-testkit fabric: a random workload per seed, a reference model and invariants
//! checked after every step.
//!
//! | module | holds |
//! |---|---|
//! | `world` | the world's state and the step loop |
//! | `run` | one seed: setup, operations, drain, final checks |
//! | `workload` | the random operations |
//! | `runtime` | each node's runtime around its real `te_proto::Endpoint`, as te-runtime's core |
//! | `model` | expected memory, regions and holds of each node |
//! | `checks` | the invariants checked on every report and step |

mod checks;
mod model;
mod run;
mod runtime;
mod workload;
mod world;

use std::collections::BTreeMap;
pub use te_testkit::fabric::Sabotage;

use te_testkit::fabric::Violation;

pub use self::world::World;

/// What one seed did.
pub struct Outcome {
    pub seed: u64,
    pub steps: u64,
    pub tasks: usize,
    /// The fabric's digest at the end: clock and all memory.
    pub digest: u64,
    /// How tasks ended (by code) and notifications ended (by state).
    pub endings: BTreeMap<String, u64>,
    pub violations: Vec<Violation>,
}

/// Runs seed `seed` to the end (or its first violation).
pub fn run_seed(seed: u64, sabotage: Option<Sabotage>, trace: bool) -> Outcome {
    let mut w = World::new(seed, sabotage, trace);
    w.run();
    let mut endings = BTreeMap::new();
    for t in w.tasks.values() {
        let k = t
            .done
            .map_or_else(|| "task running".to_string(), |c| format!("task {c:?}"));
        *endings.entry(k).or_insert(0) += 1;
    }
    for n in &w.notes {
        *endings.entry(format!("notification {:?}", n.state)).or_insert(0) += 1;
    }
    for (what, n) in ["failed", "arrived", "matched the model"].iter().zip(w.infos) {
        *endings.entry(format!("segment info {what}")).or_insert(0) += n;
    }
    Outcome {
        endings,
        seed,
        steps: w.steps,
        tasks: w.tasks.len(),
        digest: w.fab.digest(),
        violations: w.fab.violations().to_vec(),
    }
}
