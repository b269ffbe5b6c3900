//! # te-testkit: what te's tests share (unpublished)
//!
//! Test code that more than one test crate or fuzz target needs lives here
//! once, as library code: no `#[path]` includes, no copies.
//!
//! | module | holds |
//! |---|---|
//! | [`fuzz`] | the fuzz harnesses: input format, model and driver per target |
#![warn(missing_docs)]

pub mod fuzz;
