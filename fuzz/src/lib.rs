//! The invariants the fuzz targets check. They live in the main package, in
//! `tests/support/fuzz_checks.rs` (included here by path), where `tests/fuzz_corpus.rs` runs
//! every file of `tests/corpus/<target>/` through them as part of `cargo test`: a corpus
//! file fails the tests exactly when it fails the fuzz target, and the published package
//! carries both the checks and the corpus.

#[path = "../../tests/support/fuzz_checks.rs"]
pub mod checks;
