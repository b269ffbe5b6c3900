//! The `te` binary: flag errors name the flag and the value; a short
//! verified benchmark against an embedded target runs end to end.
#![cfg(feature = "cli")]

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
    ] {
        let out = te(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(flag) && err.contains(value), "{args:?}: {err}");
    }
}

#[test]
fn verified_bench_against_an_embedded_target_moves_every_byte() {
    let out = te(&[
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
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let rows = v["results"].as_array().expect("results");
    assert_eq!(rows.len(), 6);
    for r in rows {
        assert!(r["bytes"].as_u64().unwrap() > 0, "{r}");
        assert!(r["gb_per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
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
