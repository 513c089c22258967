//! Fuzz target: see `wsrelay_fuzz::checks::rewrite_target` for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wsrelay_fuzz::checks::rewrite_target(data);
});
