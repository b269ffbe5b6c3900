//! Replays the committed fuzz corpora (`fuzz/corpus/{decoder,link}/`)
//! through the fuzz harnesses, so that a normal `cargo test` on stable runs
//! every seed and every input the fuzzers kept, without libFuzzer. The
//! harnesses live in `fuzz/harness/` and are shared with the cargo-fuzz
//! targets.

#[path = "../../fuzz/harness/mod.rs"]
mod harness;

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

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

/// Runs every corpus file of `target` through `run`; fails naming each
/// file that panics, and when the corpus is empty.
fn replay(target: &str, run: fn(&[u8])) {
    let files = corpus(target);
    assert!(
        !files.is_empty(),
        "the {target} corpus is empty: nothing was replayed"
    );
    let mut failed = Vec::new();
    for file in &files {
        let data = fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if panic::catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} {target} inputs fail: {failed:#?}",
        failed.len(),
        files.len()
    );
}

#[test]
fn decoder_corpus() {
    replay("decoder", harness::decoder::run);
}

#[test]
fn link_corpus() {
    replay("link", harness::link::run);
}

fn seed_sets() -> [(&'static str, Vec<harness::seeds::Seed>); 2] {
    [
        ("decoder", harness::seeds::decoder_seeds()),
        ("link", harness::seeds::link_seeds()),
    ]
}

/// The committed seeds are the ones `fuzz/harness/seeds.rs` generates, and
/// they are small.
#[test]
fn seed_corpus_is_current() {
    for (target, seeds) in seed_sets() {
        let dir = corpus_dir(target);
        for (name, bytes) in &seeds {
            assert!(
                bytes.len() < 64 * 1024,
                "seed {target}/{name} is {} bytes",
                bytes.len()
            );
            let committed = fs::read(dir.join(name)).ok();
            assert!(
                committed.as_deref() == Some(bytes.as_slice()),
                "seed {target}/{name} is missing or stale; regenerate with \
                 `cargo test -p te-proto --test fuzz_corpus -- --ignored write_seed_corpus`"
            );
        }
    }
}

/// Writes the seed corpora (run by hand after changing the seeds or the
/// wire format); stale `seed-*` files are removed, fuzzer finds are kept.
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_seed_corpus() {
    for (target, seeds) in seed_sets() {
        let dir = corpus_dir(target);
        fs::create_dir_all(&dir).expect("create corpus dir");
        for old in corpus(target) {
            let is_seed = old
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"));
            if is_seed {
                fs::remove_file(&old).expect("remove stale seed");
            }
        }
        for (name, bytes) in &seeds {
            fs::write(dir.join(name), bytes).expect("write seed");
        }
    }
}

/// Prints what the link harness does with the file named by
/// `TE_FUZZ_TRACE` (a reproducer, say).
#[test]
#[ignore = "debugging aid: TE_FUZZ_TRACE=path cargo test -p te-proto --test fuzz_corpus -- --ignored --nocapture trace_link_input"]
fn trace_link_input() {
    let path = std::env::var("TE_FUZZ_TRACE").expect("TE_FUZZ_TRACE names an input file");
    let data = fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    harness::link::run_traced(&data, true);
}
