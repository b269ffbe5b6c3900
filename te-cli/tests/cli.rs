//! The `te` binary: flag errors name the flag and the value; a short
//! verified benchmark against an embedded target runs end to end; what the
//! output carries; runs that cannot measure fail.

use std::process::Command;

fn te(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_te"))
        .args(args)
        .output()
        .expect("te runs")
}

#[test]
fn bad_flags_name_the_flag_and_the_value() {
    // Negative numbers reach the range checks (not "unexpected argument"); size errors list the units.
    for (line, flag, value) in [
        ("bench --block-size 12X", "--block-size", "12X"),
        ("bench --threads 0", "--threads", "0"),
        ("bench --duration 0", "--duration", "0"),
        ("serve --location gpu:0", "--location", "gpu:0"),
        ("tcp-pingpong --block-size 0", "--block-size", "0"),
        ("tcp-pingpong --block-size 1G", "--block-size", "1G"),
        ("memcpy --buffer 1Q", "--buffer", "1Q"),
        ("bench --threads -1", "--threads", "-1 is not in 1..=256"),
        ("bench --batch 1,-4", "--batch", "-4 is not in 1..=65536"),
        ("bench --duration -1", "--duration", "\"-1\""),
        ("bench --warmup -0.5", "--warmup", "\"-0.5\""),
        ("bench --buffer -4K", "--buffer", "must be positive"),
        ("bench --block-size 4K,-1M", "--block-size", "must be positive"),
        ("serve --size -1G", "--size", "must be positive"),
        ("bench --block-size 4X", "--block-size", "B, K, M, G, T"),
        ("bench --block-size 0.1K", "--block-size", "whole number of bytes"),
        ("bench --op copy", "--op", "copy"),
        ("bench --path IB", "--path", "IB"),
        ("bench --json --csv", "--csv", "--json"),
        ("bench --sweep --block-size 4K", "--sweep", "--block-size"),
        (
            "bench --block-size 16K..4K",
            "--block-size",
            "the start is larger than the end",
        ),
        ("bench --block-size 4K..1Q", "--block-size", "B, K, M, G, T"),
        ("bench --batch 1..x", "--batch", "\"x\""),
        ("bench --batch 0..8", "--batch", "0 is not in 1..=65536"),
    ] {
        let args: Vec<&str> = line.split(' ').collect();
        let out = te(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{line}: {err}");
        assert!(err.contains(flag) && err.contains(value), "{line}: {err}");
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

#[test]
fn npu_buffers_on_acl_are_benchmarked_and_verified_end_to_end() {
    let fake = te_fake_acl::library_path().expect("the fake libascendcl.so is built");
    for (here, there) in [("npu:0", "npu:1"), ("npu:1", "cpu"), ("cpu", "npu:0")] {
        let out = Command::new(env!("CARGO_BIN_EXE_te"))
            .args(["bench", "--location", here, "--target-location", there])
            .args(["--block-size", "4K,1M", "--batch", "16", "--buffer", "8M"])
            .args(["--duration", "0.3", "--verify", "--json"])
            .env("TE_ACL_LIBRARY", &fake)
            .output()
            .expect("te runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{here} -> {there}: {stdout}{err}");
        let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
        assert_eq!(v["settings"]["location"], here);
        assert_eq!(v["settings"]["target_location"], there);
        let rows = v["results"].as_array().expect("results");
        assert_eq!(rows.len(), 4, "{here} -> {there}: {stdout}");
        for r in rows {
            assert!(r["bytes"].as_u64().unwrap() > 0, "{here} -> {there}: {r}");
        }
    }
    // Without the library, an npu buffer is refused at once, naming what is missing.
    let out = Command::new(env!("CARGO_BIN_EXE_te"))
        .args(["bench", "--location", "npu:0", "--duration", "0.3"])
        .env_remove("TE_ACL_LIBRARY")
        .env_remove("ASCEND_HOME_PATH")
        .output()
        .expect("te runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("NotSupported") && err.contains("libascendcl.so"),
        "{err}"
    );
}

#[test]
fn npu_buffers_on_acl_take_the_same_host_path_verified_in_every_combination() {
    let fake = te_fake_acl::library_path().expect("the fake libascendcl.so is built");
    for (here, there) in [
        ("npu:0", "npu:0"),
        ("npu:0", "npu:1"),
        ("npu:0", "cpu"),
        ("cpu", "npu:0"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_te"))
            .args([
                "bench",
                "--location",
                here,
                "--target-location",
                there,
                "--path",
                "shm",
            ])
            .args(["--block-size", "4K,1M", "--batch", "16", "--buffer", "4M"])
            .args(["--duration", "0.2", "--verify", "--json"])
            .env("TE_ACL_LIBRARY", &fake)
            .env("TE_LOG", "te_runtime::same_host=debug")
            .output()
            .expect("te runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{here} -> {there}: {stdout}{err}");
        let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
        // Forced onto the same-host path: a task that could not take it
        // would have failed the run, not gone over TCP.
        assert_eq!(v["path"], "shm", "{here} -> {there}");
        assert_eq!(v["settings"]["verify"], true);
        let rows = v["results"].as_array().expect("results");
        assert_eq!(rows.len(), 4, "{here} -> {there}: {stdout}");
        for r in rows {
            assert!(r["bytes"].as_u64().unwrap() > 0, "{here} -> {there}: {r}");
        }
        // The initiator's npu buffer reached the owner by ACL IPC (both
        // processes log to this stderr: the target is te serve's child).
        if here != "cpu" {
            assert!(err.contains("exported npu:0 region"), "{here} -> {there}: {err}");
            assert!(
                err.contains("imported the peer's npu:0 buffer"),
                "{here} -> {there}: {err}"
            );
        }
    }
}

/// Runs `te ARGS --json`, checks that it succeeded, and returns the document.
fn json_doc(args: &[&str]) -> serde_json::Value {
    let out = te(&[args, &["--json"]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).expect("json")
}

/// Runs `te ARGS --json` and returns its result rows, each checked to have moved bytes.
fn json_rows(args: &[&str]) -> Vec<serde_json::Value> {
    let v = json_doc(args);
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
    assert!(
        err.contains("skipped copy 2M: larger than the 1M buffer") && err.contains("nothing measured"),
        "{err}"
    );
}

#[test]
fn info_and_bench_find_a_target_by_name_in_a_directory() {
    use te_tests::stores::{Kind, StoreServer};
    let Some(store) = StoreServer::start(Kind::Redis) else {
        return;
    };
    let url = store.url();
    let engine = te_runtime::Engine::start(te_runtime::EngineConfig {
        segment_name: Some("kv-target".into()),
        directory: Some(url.clone()),
        ..te_runtime::EngineConfig::default()
    })
    .unwrap();
    let addr = engine
        .alloc_memory(1 << 20, te_runtime::Perm::REMOTE_READ_WRITE)
        .unwrap();
    let out = te(&["info", "kv-target", "--directory", &url]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("{addr:#x}")),
        "{stdout}"
    );
    // Without the directory the name means nothing.
    let out = te(&["info", "kv-target"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kv-target"));
    let out = te(&[
        "bench",
        "--target",
        "kv-target",
        "--directory",
        &url,
        "--verify",
        "--duration",
        "0.2",
        "--buffer",
        "1M",
        "--block-size",
        "4K",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("directory lookup of kv-target in redis://"),
        "{stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).matches("\nread ").count()
            + String::from_utf8_lossy(&out.stdout).matches("\nwrite ").count(),
        2
    );
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
    let out = te(&["info", "--json", &engine.segment_name()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("te info --json is JSON");
    assert_eq!(v["segment"], engine.segment_name().as_str());
    assert_eq!(v["regions"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["regions"][0]["base"], addr);
    assert_eq!(v["regions"][0]["length"], 1 << 20);
    assert_eq!(v["regions"][0]["perm"], "r");
}

#[test]
fn info_says_whether_this_side_has_rdma_and_why_not() {
    let engine = te_runtime::Engine::start(te_runtime::EngineConfig::default()).unwrap();
    let seg = engine.segment_name();
    let fake = te_fake_verbs::library_path().expect("the fake libibverbs.so.1 is built");
    let fake = fake.to_str().expect("a UTF-8 path");
    // `te info` with the verbs library `lib` offering `devices` devices.
    let info = |lib: &str, devices: &str, json: bool| {
        let mut args = vec!["info", seg.as_str()];
        if json {
            args.insert(1, "--json");
        }
        let out = Command::new(env!("CARGO_BIN_EXE_te"))
            .args(&args)
            .env("TE_VERBS_LIBRARY", lib)
            .env("TE_FAKE_VERBS_DEVICES", devices)
            .output()
            .expect("te runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let last = |s: &str| s.lines().last().unwrap_or_default().to_string();
    let missing = "/nonexistent/libibverbs.so.1";
    let line = last(&info(missing, "1", false));
    assert!(line.starts_with("RDMA off: ") && line.contains(missing), "{line}");
    let line = last(&info(fake, "0", false));
    assert!(
        line.starts_with("RDMA off: ") && line.contains("no RDMA device"),
        "{line}"
    );
    let line = last(&info(fake, "1", false));
    assert!(line.starts_with("RDMA: ") && line.contains("port 1"), "{line}");
    let v: serde_json::Value = serde_json::from_str(&info(missing, "1", true)).expect("JSON");
    assert!(
        v["rdma"].as_str().is_some_and(|s| s.starts_with("RDMA off: ")),
        "{v}"
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

#[test]
fn oversized_allocations_fail_before_allocating_naming_both_sizes() {
    for (args, what) in [
        (&["serve", "--size", "64T"][..], "--size 64T needs 64T"),
        (
            &["bench", "--buffer", "64T"][..],
            "--buffer 64T (this process's buffer, the embedded target's) needs 128T",
        ),
        (
            &["memcpy", "--buffer", "64T"][..],
            "--buffer 64T (two buffers) needs 128T",
        ),
    ] {
        let out = te(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(what) && err.contains("is available (MemAvailable"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("allocating"), "{args:?}: {err}");
    }
}

#[test]
fn a_run_that_measures_nothing_fails_and_lists_the_skipped_configurations_once() {
    let out = te(&["bench", "--buffer", "8M", "--block-size", "1G,2G", "--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON even when empty");
    assert_eq!(v["results"].as_array().unwrap().len(), 0);
    assert!(v["target"].is_null(), "no target started: {v}");
    let skipped = v["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 4, "{v}");
    assert_eq!(skipped[0]["block_bytes"], 1u64 << 30);
    assert_eq!(err.matches("skipped ").count(), 1, "{err}");
    assert!(
        err.contains("skipped read 1G, read 2G, write 1G, write 2G: larger than the 8M buffer"),
        "{err}"
    );
    assert!(err.contains("nothing measured"), "{err}");
    // Found before anything starts: no target, no allocation; and without
    // --json not even the column heads.
    assert!(!err.contains("allocating"), "{err}");
    let out = te(&["bench", "--buffer", "8M", "--block-size", "1G"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        !err.contains("allocating") && err.contains("nothing measured"),
        "{err}"
    );
}

#[test]
fn start_max_ranges_double_as_nixlbench_sweeps() {
    let v = json_doc(&[
        "bench",
        "--op",
        "READ",
        "--block-size",
        "4K..16K,1M",
        "--batch",
        "1..4",
        "--buffer",
        "4M",
        "--duration",
        "0.05",
    ]);
    assert_eq!(
        v["settings"]["block_bytes"],
        serde_json::json!([4096, 8192, 16384, 1 << 20])
    );
    assert_eq!(v["settings"]["batch"], serde_json::json!([1, 2, 4]));
    assert_eq!(v["results"].as_array().unwrap().len(), 12, "{v}");
}

#[test]
fn sizes_with_fractions_ops_in_any_case_and_sweeps_of_batch_and_threads() {
    let rows = json_rows(&[
        "bench",
        "--op",
        "READ,Write",
        "--block-size",
        "1.5K",
        "--batch",
        "1,8",
        "--threads",
        "1,2",
        "--buffer",
        "0.5M",
        "--duration",
        "0.1",
        "--warmup",
        "0.05",
    ]);
    let got: Vec<(String, u64, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["op"].as_str().unwrap().to_string(),
                r["block_bytes"].as_u64().unwrap(),
                r["batch"].as_u64().unwrap(),
                r["threads"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64, u64, u64)> = ["read", "write"]
        .iter()
        .flat_map(|op| [(1, 1), (1, 8), (2, 1), (2, 8)].map(|(t, b)| (op.to_string(), 1536, b, t)))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn json_carries_the_build_the_time_the_settings_and_averages_beside_percentiles() {
    let out = te(&[
        "bench",
        "--op",
        "read",
        "--block-size",
        "4K",
        "--buffer",
        "1M",
        "--duration",
        "0.1",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["te_version"], env!("CARGO_PKG_VERSION"));
    assert!(!v["te_commit"].as_str().unwrap().is_empty(), "{v}");
    let ts = v["timestamp"].as_str().unwrap();
    assert!(
        ts.len() == 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
        "{ts}"
    );
    assert_eq!(v["settings"]["block_bytes"][0], 4096);
    assert_eq!(v["settings"]["buffer_bytes"], 1 << 20);
    assert_eq!(v["settings"]["duration_s"], 0.1);
    assert_eq!(v["skipped"].as_array().unwrap().len(), 0);
    assert!(v["interrupted"].is_null());
    let lat = &v["results"][0]["batch_latency_us"];
    let (avg, p50, p999) = (
        lat["avg"].as_f64().unwrap(),
        lat["p50"].as_f64().unwrap(),
        lat["p999"].as_f64().unwrap(),
    );
    assert!(avg > 0.0 && p50 > 0.0 && p999 >= p50, "{lat}");
    assert!(lat["samples"].as_u64().unwrap() > 1, "{lat}");
    // Per operation only the mean: a batch percentile divided by the batch
    // size would be an average dressed as a percentile.
    let op = &v["results"][0]["op_latency_us"];
    let batch = v["results"][0]["batch"].as_f64().unwrap();
    assert_eq!(op.as_object().unwrap().len(), 2, "{op}");
    assert!((op["avg"].as_f64().unwrap() - avg / batch).abs() < 1e-9, "{op}");
    assert_eq!(op["amortized_over_batch"], true);
}

#[test]
fn memcpy_percentiles_are_measured_not_the_average() {
    let rows = json_rows(&[
        "memcpy",
        "--buffer",
        "8M",
        "--block-size",
        "4K,1M",
        "--duration",
        "0.2",
    ]);
    // 4K copies are timed in groups of 16 (64K), 1M copies one by one.
    assert_eq!(
        (rows[0]["batch"].as_u64(), rows[1]["batch"].as_u64()),
        (Some(16), Some(1))
    );
    for r in &rows {
        let lat = &r["batch_latency_us"];
        assert!(lat["samples"].as_u64().unwrap() > 10, "{r}");
        assert!(
            lat["p999"].as_f64().unwrap() >= lat["p50"].as_f64().unwrap(),
            "{r}"
        );
    }
}

#[test]
fn csv_gives_block_sizes_in_bytes_and_the_table_echoes_the_configuration() {
    let out = te(&[
        "bench",
        "--op",
        "write",
        "--block-size",
        "4K,64K",
        "--buffer",
        "1M",
        "--duration",
        "0.1",
        "--csv",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("op,block_bytes,batch,threads"), "{stdout}");
    assert!(
        lines[1].starts_with("write,4096,128,1,cold,") && lines[2].starts_with("write,65536,16,1,"),
        "{stdout}"
    );
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        stderr.contains("op write, block 4K,64K, batch 128, threads 1"),
        "{stderr}"
    );

    let out = te(&[
        "bench",
        "--op",
        "read",
        "--block-size",
        "4K",
        "--buffer",
        "1M",
        "--duration",
        "0.1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let first = stdout.lines().next().unwrap();
    assert!(
        first.starts_with("te bench ") && first.contains("path shm"),
        "{stdout}"
    );
    assert!(
        stdout.contains("batch avg us  batch p50 us  batch p99 us  batch p99.9 us  op avg us"),
        "{stdout}"
    );
    assert!(stdout.contains("latency: per batch"), "{stdout}");
}

#[test]
fn help_shows_defaults_in_the_syntax_the_flags_accept() {
    let out = te(&["bench", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for want in [
        "[default: read,write]",
        "[default: 4K,64K,1M,16M]",
        "[default: 512M]",
        "--warmup",
        "--csv",
    ] {
        assert!(help.contains(want), "{want}: {help}");
    }
}

#[test]
fn verify_against_an_external_target_says_what_reads_are_compared_with() {
    for (fill, says) in [(None, "snapshot"), (Some("1"), "fill pattern")] {
        let mut args = vec!["serve", "--size", "2M"];
        if let Some(f) = fill {
            args.extend(["--fill", f]);
        }
        let mut serve = Command::new(env!("CARGO_BIN_EXE_te"))
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("te serve");
        let mut first = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(serve.stdout.take().unwrap()),
            &mut first,
        )
        .unwrap();
        let segment = first.split_whitespace().nth(1).expect("segment").to_string();
        let out = te(&[
            "bench",
            "--target",
            &segment,
            "--verify",
            "--op",
            "read,write,read",
            "--block-size",
            "4K",
            "--buffer",
            "2M",
            "--duration",
            "0.1",
        ]);
        let _ = serve.kill();
        let _ = serve.wait();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{fill:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(says), "{fill:?}: {stdout}");
    }
}

#[test]
fn logs_have_no_colour_off_a_terminal_and_a_bad_te_log_is_a_warning() {
    let out = Command::new(env!("CARGO_BIN_EXE_te"))
        .args([
            "memcpy",
            "--buffer",
            "1M",
            "--block-size",
            "4K",
            "--duration",
            "0.05",
        ])
        .env("TE_LOG", "te_runtime=bogus")
        .output()
        .expect("te runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: ignoring TE_LOG directive \"te_runtime=bogus\""),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_te"))
        .args([
            "bench",
            "--op",
            "read",
            "--block-size",
            "4K",
            "--buffer",
            "1M",
            "--duration",
            "0.05",
        ])
        .env("TE_LOG", "debug")
        .output()
        .expect("te runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("DEBUG"), "{err}");
    assert!(!err.contains('\u{1b}'), "ANSI escapes off a terminal: {err}");
}

#[test]
fn a_terminal_gets_progress_bars_and_a_dumb_terminal_plain_lines() {
    // `script` (util-linux) runs the tool on a pseudo-terminal and copies
    // what it draws to stdout.
    let te = env!("CARGO_BIN_EXE_te");
    let run = format!("'{te}' bench --op read --block-size 4K,64K --buffer 1M --duration 0.3 >/dev/null");
    for (term, bars) in [("xterm", true), ("dumb", false)] {
        let out = Command::new("script")
            .args(["-qec", &run, "/dev/null"])
            .env("TERM", term)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("script (util-linux) runs");
        let drawn = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "TERM={term}: {drawn}");
        if bars {
            assert!(drawn.contains("configuration 2/2"), "TERM={term}: {drawn}");
            assert!(
                drawn.contains("elapsed, about"),
                "an estimate of the time left: {drawn}"
            );
            assert!(
                drawn.contains("[=") && drawn.contains('\u{1b}'),
                "a drawn bar: {drawn}"
            );
            assert!(
                !drawn.contains("[1/2]"),
                "no plain lines beside the bars: {drawn}"
            );
        } else {
            assert!(
                drawn.contains("[1/2] read 4K") && drawn.contains("[2/2] read 64K"),
                "{drawn}"
            );
            assert!(!drawn.contains('\u{1b}'), "TERM={term}: {drawn}");
        }
    }
}

/// An engine of this process serving `len` bytes with `perm`, as a target.
fn target_engine(len: u64, perm: te_runtime::Perm) -> te_runtime::Engine {
    let engine = te_runtime::Engine::start(te_runtime::EngineConfig::default()).unwrap();
    engine.alloc_memory(len, perm).unwrap();
    engine
}

#[test]
fn bench_spreads_its_batches_over_several_targets_and_names_a_bad_one() {
    let (a, b) = (
        target_engine(1 << 20, te_runtime::Perm::REMOTE_READ_WRITE),
        target_engine(1 << 20, te_runtime::Perm::REMOTE_READ_WRITE),
    );
    let both = format!("{},{}", a.segment_name(), b.segment_name());
    let doc = json_doc(&[
        "bench",
        "--target",
        &both,
        "--op",
        "read,write",
        "--block-size",
        "4K",
        "--batch",
        "8",
        "--buffer",
        "256K",
        "--duration",
        "0.2",
    ]);
    assert_eq!(doc["target"].as_str(), Some(both.as_str()), "{doc}");
    assert_eq!(
        doc["settings"]["target_regions"],
        serde_json::json!([1, 1]),
        "{doc}"
    );
    assert_eq!(doc["results"].as_array().map(Vec::len), Some(2), "{doc}");
    // Every target is opened and checked: one without a read-write region fails the run, named.
    let read_only = target_engine(1 << 20, te_runtime::Perm::REMOTE_READ);
    let list = format!("{},{}", a.segment_name(), read_only.segment_name());
    let out = te(&[
        "bench",
        "--target",
        &list,
        "--duration",
        "0.2",
        "--block-size",
        "4K",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "segment {} has no read-write region",
            read_only.segment_name()
        )),
        "{err}"
    );
    // --verify follows one target's buffer.
    let out = te(&["bench", "--target", &both, "--verify", "--duration", "0.2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--verify takes one --target, not 2"),
        "{err}"
    );
}

/// A short `te bench` of 4 KiB TCP reads against an embedded target, with
/// `extra` flags: its JSON document.
fn short_tcp_read(extra: &[&str]) -> serde_json::Value {
    let base = [
        "bench",
        "--path",
        "tcp",
        "--op",
        "read",
        "--block-size",
        "4K",
        "--batch",
        "4",
        "--buffer",
        "1M",
        "--duration",
        "0.2",
    ];
    json_doc(&[&base[..], extra].concat())
}

#[test]
fn idle_peers_hold_connections_and_their_cost_at_the_target_is_reported() {
    let doc = short_tcp_read(&["--idle-peers", "5"]);
    let idle = &doc["settings"]["memory"]["idle_peers"];
    assert_eq!(idle["connections"].as_u64(), Some(5), "{doc}");
    assert!(idle["target_bytes_per_connection"].is_u64(), "{doc}");
    assert!(
        idle["target_after"]["rss_bytes"].as_u64() >= idle["target_before"]["rss_bytes"].as_u64(),
        "{doc}"
    );
    for side in ["initiator", "target"] {
        let m = &doc["settings"]["memory"][side];
        assert!(
            m["peak_bytes"].as_u64() >= m["rss_bytes"].as_u64() && m["rss_bytes"].as_u64() > Some(0),
            "{doc}"
        );
    }
}

#[test]
fn the_embedded_target_registers_the_regions_asked_for() {
    let doc = short_tcp_read(&["--target-regions", "300"]);
    assert_eq!(
        doc["settings"]["target_regions"],
        serde_json::json!([300]),
        "{doc}"
    );
    let out = te(&["bench", "--target-regions", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--target-regions"));
}
