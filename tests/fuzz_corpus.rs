//! The fuzz corpus as regression tests, on stable Rust.
//!
//! Every file of `tests/corpus/<target>/` goes through the same invariant checks as the fuzz
//! target of that name (`support::fuzz_checks`, which the `fuzz/` crate includes by path):
//! the head readers, the rewriter and the backend-answer check. How the corpus is grown is in
//! the repository's `fuzz/README.md` (the fuzz crate is its own package, not published).
//!
//! A target whose corpus directory is missing or holds fewer than five files fails: the
//! corpus is part of the package, and a test that finds nothing to check must not pass.
//!
//! The inputs of the bugs fuzzing found (`absolute-form-*`, `prefix-without-slash-*`) are in
//! the corpus, where they guard the fixes.

mod support;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use support::fuzz_checks as checks;

/// The fuzz targets, each with a corpus directory and a test below.
const TARGETS: &[&str] = &[
    "read_request_head",
    "read_response_head",
    "rewrite",
    "check",
];

/// The files of `tests/corpus/<target>/`, sorted; panics if the directory cannot be read.
fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "the regression corpus of {target} is missing: cannot read {}: {e}",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on `data`; the panic message if an invariant broke.
fn run(check: fn(&[u8]), data: &[u8]) -> Result<(), String> {
    panic::catch_unwind(AssertUnwindSafe(|| check(data))).map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".to_owned())
    })
}

fn strict() {
    assert!(
        std::env::var_os("WSRELAY_FUZZ_KNOWN_BUGS").is_none(),
        "WSRELAY_FUZZ_KNOWN_BUGS is for fuzzing runs only; unset it to run the tests"
    );
}

/// Every corpus file of `target` passes `check`.
fn corpus(target: &str, check: fn(&[u8])) {
    strict();
    assert!(
        TARGETS.contains(&target),
        "{target} is missing from TARGETS"
    );
    let files = inputs(target);
    assert!(
        files.len() >= 5,
        "tests/corpus/{target} holds {} files; the regression corpus is missing",
        files.len()
    );
    let failures: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let data = std::fs::read(path).expect("read a corpus file");
            run(check, &data)
                .err()
                .map(|why| format!("{}: {why}", path.display()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} corpus inputs break an invariant:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn read_request_head_corpus() {
    corpus("read_request_head", checks::read_request_head_target);
}

#[test]
fn read_response_head_corpus() {
    corpus("read_response_head", checks::read_response_head_target);
}

#[test]
fn rewrite_corpus() {
    corpus("rewrite", checks::rewrite_target);
}

#[test]
fn check_corpus() {
    corpus("check", checks::check_target);
}

/// Every directory of `tests/corpus/` belongs to a target checked here, and every target has
/// one: a corpus added for a new fuzz target is not silently left unchecked.
#[test]
fn every_corpus_directory_is_a_checked_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("corpus");
    let mut dirs: Vec<String> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", root.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut targets: Vec<&str> = TARGETS.to_vec();
    targets.sort_unstable();
    assert_eq!(dirs, targets, "the directories of {}", root.display());
}
