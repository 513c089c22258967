//! The fuzz corpus as regression tests, on stable Rust.
//!
//! Every file of `fuzz/corpus/<target>/` goes through the same invariant checks as the fuzz
//! target of that name (`fuzz/src/checks.rs`, included here by path): the head readers, the
//! rewriter and the backend-answer check. See `fuzz/README.md` for how the corpus is grown.
//!
//! The inputs of the bugs fuzzing found (`absolute-form-*`, `prefix-without-slash-*`) are in
//! the corpus, where they guard the fixes.

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The files of `fuzz/<kind>/<target>/`, sorted.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
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
    let files = inputs("corpus", target);
    assert!(
        files.len() >= 5,
        "fuzz/corpus/{target} holds {} files; the regression corpus is missing",
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
