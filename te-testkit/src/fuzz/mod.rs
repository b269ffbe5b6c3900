//! The fuzz harnesses, each a `run(data: &[u8])` that the cargo-fuzz
//! target of the same name calls and that `cargo test` replays over the
//! committed corpus.
