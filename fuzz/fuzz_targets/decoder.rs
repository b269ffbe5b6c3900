//! The frame decoder fed arbitrary bytes in input-chosen pieces; see
//! `fuzz/harness/decoder.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness/mod.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::decoder::run(data));
