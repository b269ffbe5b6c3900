//! A link fed arbitrary peer bytes, time steps and API calls; see
//! `fuzz/harness/link.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness/mod.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::link::run(data));
