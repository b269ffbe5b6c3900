//! # te-testkit: what te's tests share (unpublished)
//!
//! Test code that more than one test crate or fuzz target needs lives here
//! once, as library code: no `#[path]` includes, no copies.
//!
//! | module | holds |
//! |---|---|
//! | [`fuzz`] | the fuzz harnesses: input format, model and driver per target |
//! | [`fabric`] | the simulated fabric: nodes with simulated memory, byte pipes, virtual time, faults |
//! | [`rng`] | one seeded RNG ([`rng::SimRng`]): one seed replays a run bit for bit |
#![warn(missing_docs)]

pub mod fabric;
pub mod fuzz;
pub mod rng;
