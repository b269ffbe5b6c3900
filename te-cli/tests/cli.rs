//! The `te` binary: flag errors name the flag and the value; a short
//! verified benchmark against an embedded target runs end to end.

use std::process::Command;

fn te(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_te"))
        .args(args)
        .output()
        .expect("te runs")
}

#[test]
fn bad_flags_name_the_flag_and_the_value() {
    for (args, flag, value) in [
        (&["bench", "--block-size", "12X"][..], "--block-size", "12X"),
        (&["bench", "--threads", "0"][..], "--threads", "0"),
        (&["bench", "--duration", "0"][..], "--duration", "0"),
        (&["serve", "--location", "gpu:0"][..], "--location", "gpu:0"),
        (&["tcp-pingpong", "--block-size", "0"][..], "--block-size", "0"),
        (&["tcp-pingpong", "--block-size", "1G"][..], "--block-size", "1G"),
        (&["memcpy", "--buffer", "1Q"][..], "--buffer", "1Q"),
    ] {
        let out = te(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(flag) && err.contains(value), "{args:?}: {err}");
    }
}

#[test]
fn verified_bench_against_an_embedded_target_moves_every_byte() {
    let rows = json_rows(&[
        "bench",
        "--op",
        "read,write,mix",
        "--block-size",
        "4K,1M",
        "--batch",
        "16",
        "--buffer",
        "8M",
        "--duration",
        "0.3",
        "--verify",
    ]);
    assert_eq!(rows.len(), 6);
    for r in &rows {
        assert!(r["gb_per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
}

/// Runs `te ARGS --json` and returns its result rows, each checked to have moved bytes.
fn json_rows(args: &[&str]) -> Vec<serde_json::Value> {
    let out = te(&[args, &["--json"]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let rows = v["results"].as_array().expect("results").clone();
    for r in &rows {
        assert!(r["bytes"].as_u64().unwrap() > 0, "{args:?}: {r}");
        assert!(
            r["batch_latency_us"]["p50"].as_f64().unwrap() > 0.0,
            "{args:?}: {r}"
        );
    }
    rows
}

#[test]
fn busy_poll_bench_moves_every_byte() {
    let rows = json_rows(&[
        "bench",
        "--busy-poll",
        "--op",
        "read,write",
        "--block-size",
        "4K",
        "--batch",
        "1",
        "--buffer",
        "1M",
        "--duration",
        "0.2",
        "--verify",
    ]);
    assert_eq!(rows.len(), 2);
}

#[test]
fn tcp_pingpong_measures_round_trips_in_both_modes() {
    for mode in [&[][..], &["--busy-poll"][..]] {
        let rows = json_rows(&[&["tcp-pingpong", "--block-size", "4K", "--duration", "0.2"], mode].concat());
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["block_bytes"], 4096);
    }
}

#[test]
fn memcpy_reports_each_block_size_and_refuses_blocks_beyond_the_buffer() {
    let rows = json_rows(&[
        "memcpy",
        "--buffer",
        "1M",
        "--block-size",
        "4K,64K",
        "--duration",
        "0.1",
    ]);
    assert_eq!(rows.len(), 2);
    let out = te(&["memcpy", "--buffer", "1M", "--block-size", "2M"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--block-size 2097152"), "{err}");
}

#[test]
fn info_lists_the_targets_regions() {
    let engine = te_runtime::Engine::start(te_runtime::EngineConfig::default()).unwrap();
    let addr = engine
        .alloc_memory(1 << 20, te_runtime::Perm::REMOTE_READ)
        .unwrap();
    let out = te(&["info", &engine.segment_name()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("{addr:#x}")) && stdout.contains("1048576") && stdout.contains("1 regions"),
        "{stdout}"
    );
}

#[test]
fn a_reader_that_goes_away_ends_the_tool_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_te"))
        .args([
            "memcpy",
            "--block-size",
            "4K",
            "--buffer",
            "1M",
            "--duration",
            "0.05",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run te");
    // Close the reading end before the tool writes its first line.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("te ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
