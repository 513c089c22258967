//! The invariants the fuzz targets check, shared with the main crate's `tests/fuzz_corpus.rs`
//! (which includes `checks.rs` by path), so a corpus file fails `cargo test` exactly when it
//! fails the fuzz target.

pub mod checks;
