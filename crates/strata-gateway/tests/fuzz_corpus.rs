//! The fuzz corpus as a plain test: every file kept in `fuzz/corpus/<target>/` (hand-written seeds
//! and what the fuzzer found worth keeping) goes through the same check its fuzz target runs, so a
//! regression on any input the fuzzer once explored fails `cargo test` without a fuzzing toolchain.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

#[path = "../../../fuzz/src/lib.rs"]
mod checks;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

#[test]
fn every_corpus_file_passes_its_targets_check() {
    let mut failures = Vec::new();
    let mut total = 0;
    for &(target, check) in checks::TARGETS {
        let dir = corpus_dir().join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut files: Vec<PathBuf> = entries.map(|e| e.expect("a directory entry").path()).collect();
        files.sort();
        assert!(!files.is_empty(), "{target}: no seed in {}", dir.display());
        for file in files {
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            total += 1;
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&data))) {
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                failures.push(format!("{target}: {}: {why}", file.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {total} corpus files failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_corpus_directory_has_a_check() {
    for entry in std::fs::read_dir(corpus_dir()).expect("fuzz/corpus exists") {
        let name = entry.expect("a directory entry").file_name();
        let name = name.to_string_lossy();
        assert!(checks::TARGETS.iter().any(|(target, _)| *target == name), "fuzz/corpus/{name} has no check");
    }
}
