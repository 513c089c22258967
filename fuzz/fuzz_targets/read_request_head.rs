//! Fuzz target: see `wsrelay_fuzz::checks::read_request_head_target` for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wsrelay_fuzz::checks::read_request_head_target(data);
});
