//! Replays the committed corpus of the endpoint fuzz target
//! (`fuzz/corpus/endpoint/`) through [`te_testkit::fuzz::endpoint::run`],
//! so that `cargo test` on stable runs every seed and every input the
//! fuzzer kept, without libFuzzer.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use te_testkit::fuzz::endpoint;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Every file of the corpus of `target`, sorted by name.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir(target);
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn endpoint_corpus() {
    let files = corpus("endpoint");
    assert!(
        !files.is_empty(),
        "the endpoint corpus is empty: nothing was replayed"
    );
    let mut failed = Vec::new();
    for file in &files {
        let data = fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if panic::catch_unwind(AssertUnwindSafe(|| endpoint::run(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} endpoint inputs fail: {failed:#?}",
        failed.len(),
        files.len()
    );
}

/// The committed seeds are the ones `endpoint::seeds` writes.
#[test]
fn endpoint_seeds_are_current() {
    let dir = corpus_dir("endpoint");
    for (name, bytes) in endpoint::seeds() {
        let committed = fs::read(dir.join(&name)).ok();
        assert!(
            committed.as_deref() == Some(bytes.as_slice()),
            "seed endpoint/{name} is missing or stale; regenerate with \
             `cargo test -p te-testkit --test fuzz_corpus -- --ignored write_endpoint_seeds`"
        );
    }
}

/// Writes the seeds (run by hand after changing them or the script
/// format); stale `seed-*` files are removed, fuzzer finds are kept.
#[test]
#[ignore = "writes fuzz/corpus/endpoint; run by hand"]
fn write_endpoint_seeds() {
    let dir = corpus_dir("endpoint");
    fs::create_dir_all(&dir).expect("create corpus dir");
    for old in corpus("endpoint") {
        if old
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("seed-"))
        {
            fs::remove_file(&old).expect("remove stale seed");
        }
    }
    for (name, bytes) in endpoint::seeds() {
        fs::write(dir.join(name), bytes).expect("write seed");
    }
}

/// Prints what the endpoint harness does with the file named by
/// `TE_FUZZ_TRACE` (a reproducer, say).
#[test]
#[ignore = "debugging aid: TE_FUZZ_TRACE=path cargo test -p te-testkit --test fuzz_corpus -- --ignored --nocapture trace_endpoint_input"]
fn trace_endpoint_input() {
    let path = std::env::var("TE_FUZZ_TRACE").expect("TE_FUZZ_TRACE names an input file");
    let data = fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    endpoint::run_traced(&data, true);
}
