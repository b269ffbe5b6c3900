//! The fuzz harnesses, each a `run(data: &[u8])` that the cargo-fuzz
//! target of the same name calls and that `cargo test` replays over the
//! committed corpus.
//!
//! - [`endpoint`]: the endpoint with several links, driven by a script of
//!   API calls, peer bytes and time, against a model.

pub mod endpoint;
