//! The endpoint with several links, driven by a script of API calls, peer
//! bytes and time against a model; see `te_testkit::fuzz::endpoint`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| te_testkit::fuzz::endpoint::run(data));
