//! `.ci/run`, which runs the te tool's smoke benchmark, builds where the
//! caller's CARGO_TARGET_DIR says: no step names a target directory of its own.

#[test]
fn every_step_of_ci_run_respects_the_callers_target_dir() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../.ci/run");
    let script = std::fs::read_to_string(path).expect(".ci/run");
    for (n, line) in script.lines().enumerate() {
        if line.trim_start().starts_with('#') || line.trim_start().starts_with("echo") {
            continue;
        }
        for word in line.split_whitespace() {
            let word = word.replace('"', "");
            assert!(
                !word.starts_with("CARGO_TARGET_DIR=")
                    || word.starts_with("CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-"),
                ".ci/run line {}: {line}",
                n + 1
            );
            assert!(!word.starts_with("target/"), ".ci/run line {}: {line}", n + 1);
        }
    }
    assert!(
        script.contains("${CARGO_TARGET_DIR:-target}/loom"),
        "the loom step"
    );
}
