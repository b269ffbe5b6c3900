//! The fuzz harnesses, shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`)
//! and by the corpus replay test of te-proto (`te-proto/tests/fuzz_corpus.rs`),
//! which includes this directory with `#[path]`. Each harness is a plain
//! function from bytes to nothing that panics only when it finds a bug: a
//! panic inside te-proto, or a broken invariant checked with `assert!`.
//!
//! - [`decoder::run`]: the incremental frame decoder fed arbitrary bytes in
//!   input-chosen pieces, with a re-encoding round trip of every frame.
//! - [`link::run`]: a link driven by an input-chosen script of peer bytes,
//!   well-formed peer frames, time, transmits, events and API calls, checked
//!   against a model of what it may touch and send.
//! - [`seeds`]: the seed corpora, written by the ignored test
//!   `write_seed_corpus` of `te-proto/tests/fuzz_corpus.rs`.
//!
//! It uses std (both users have it) and no crate beyond te-proto's own
//! dependencies, so the replay test runs on stable without libFuzzer.
#![allow(dead_code)]

pub mod decoder;
pub mod link;
pub mod seeds;

/// Reads the fuzz input front to back; past the end every read yields zeros,
/// so every input, however short, is a complete script.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    /// True when every byte was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte, 0 past the end.
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// Up to `n` next bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }
}

/// A small xorshift generator, for piece sizes derived from a seed.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value, zero included).
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// The next value.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}
