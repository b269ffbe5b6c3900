//! SIGINT and SIGTERM during a run: the configurations finished are
//! printed (valid JSON with --json), the one in flight is named as
//! abandoned, the child target stops, and the exit code is 128 + signal.
//! Each test synchronises on the tool's progress lines on stderr.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rustix::process::{kill_process, Pid, Signal};

/// A running `te` whose stderr lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

fn spawn(args: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_te"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("te runs");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    Running {
        child,
        lines,
        seen: Vec::new(),
    }
}

impl Running {
    /// Waits for a stderr line containing `what` (the timeout only keeps a broken tool from hanging the test).
    fn wait_for(&mut self, what: &str) {
        self.wait_for_any(&[what]);
    }

    /// Waits for a stderr line containing one of `whats`; returns which.
    fn wait_for_any(&mut self, whats: &[&str]) -> usize {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(120)) {
                Ok(l) => {
                    let hit = whats.iter().position(|w| l.contains(w));
                    self.seen.push(l);
                    if let Some(i) = hit {
                        return i;
                    }
                }
                Err(e) => panic!("no line with {whats:?} ({e}); stderr so far: {:#?}", self.seen),
            }
        }
    }

    fn signal(&self, sig: Signal) {
        let pid = Pid::from_raw(self.child.id() as i32).expect("pid");
        kill_process(pid, sig).expect("kill");
    }

    /// Waits for the end; returns the exit code, stdout and all of stderr.
    fn finish(mut self) -> (Option<i32>, String, String) {
        let mut stdout = String::new();
        if let Some(out) = self.child.stdout.as_mut() {
            std::io::Read::read_to_string(out, &mut stdout).expect("read stdout");
        }
        let status = self.child.wait().expect("te ends");
        self.seen.extend(self.lines.iter());
        (status.code(), stdout, self.seen.join("\n"))
    }
}

/// Runs `te ARGS`, sends `sig` once a stderr line contains `line`, and
/// returns the exit code, stdout and stderr.
fn stopped(args: &[&str], line: &str, sig: Signal) -> (Option<i32>, String, String) {
    let mut te = spawn(args);
    te.wait_for(line);
    te.signal(sig);
    te.finish()
}

fn json(stdout: &str, stderr: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"))
}

#[test]
fn sigint_during_bench_prints_the_finished_rows_as_json_and_exits_130() {
    let (code, stdout, stderr) = stopped(
        &[
            "bench",
            "--json",
            "--op",
            "read",
            "--block-size",
            "4K,64K,1M",
            "--batch",
            "16",
            "--buffer",
            "8M",
            "--duration",
            "3",
        ],
        // The second configuration has started: the first is finished.
        "[2/3]",
        Signal::INT,
    );
    assert_eq!(code, Some(130), "{stderr}");
    let doc = json(&stdout, &stderr);
    let rows = doc["results"].as_array().expect("results");
    assert!(!rows.is_empty() && rows.len() < 3, "{doc}");
    assert_eq!(rows[0]["block_bytes"], 4096);
    assert!(rows[0]["bytes"].as_u64().unwrap() > 0, "{doc}");
    assert_eq!(doc["interrupted"], "SIGINT");
    assert!(doc["abandoned"].as_str().unwrap().starts_with("read "), "{doc}");
    // The child target was stopped on purpose: nothing in either log says otherwise.
    for bad in ["reset", "WARN", "ERROR", "panicked"] {
        assert!(!stderr.contains(bad), "{bad}: {stderr}");
    }
}

#[test]
fn sigterm_during_memcpy_and_sigint_during_tcp_pingpong_keep_what_was_measured() {
    let (code, stdout, stderr) = stopped(
        &[
            "memcpy",
            "--json",
            "--buffer",
            "4M",
            "--block-size",
            "4K,64K",
            "--duration",
            "3",
        ],
        "[2/2]",
        Signal::TERM,
    );
    assert_eq!(code, Some(143), "{stderr}");
    let doc = json(&stdout, &stderr);
    assert_eq!(doc["results"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(doc["interrupted"], "SIGTERM");

    let (code, stdout, stderr) = stopped(
        &["tcp-pingpong", "--block-size", "4K,64K", "--duration", "3"],
        "[2/2]",
        Signal::INT,
    );
    assert_eq!(code, Some(130), "{stderr}");
    let table: Vec<&str> = stdout.lines().filter(|l| l.starts_with("tcp ")).collect();
    assert_eq!(table.len(), 1, "{stdout}");
    assert!(
        stderr.contains("stopped by SIGINT: abandoned round trips of 64K"),
        "{stderr}"
    );
}

#[test]
fn a_signal_while_memory_is_populated_ends_the_tool_at_once() {
    let avail = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let l = m.lines().find(|l| l.starts_with("MemAvailable:"))?.to_string();
            l.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .unwrap_or(0)
        * 1024;
    if avail < 12 << 30 {
        eprintln!("skipped: {avail} bytes available, the test populates up to 4G");
        return;
    }
    let mut te = spawn(&["serve", "--size", "4G"]);
    // Population has run for a second and is not done: the signal comes in the middle of it.
    if te.wait_for_any(&["of 4G after 1.0 s", "allocating 4G: done"]) == 1 {
        eprintln!("skipped: 4G populated within a second here, nothing to interrupt");
        te.signal(Signal::TERM);
        return;
    }
    let before = te.seen.len();
    te.signal(Signal::INT);
    let (code, stdout, stderr) = te.finish();
    let after: Vec<&str> = stderr.lines().skip(before).collect();
    assert_eq!(code, Some(130), "{stderr}");
    assert!(!stdout.contains("segment"), "served after the signal: {stdout}");
    // At most the one progress line already on its way; never the end of the population.
    assert!(
        after.iter().filter(|l| l.contains("of 4G after")).count() <= 1,
        "{after:#?}"
    );
    assert!(
        !stderr.contains("done in"),
        "populated to the end despite the signal: {stderr}"
    );
    assert!(stderr.contains("stopped by SIGINT"), "{stderr}");
}

#[test]
fn serve_warns_when_it_listens_beyond_loopback_without_a_secret_and_stops_on_sigterm() {
    for (listen, warned) in [("0.0.0.0:0", true), ("127.0.0.1:0", false)] {
        let mut te = spawn(&["serve", "--listen", listen, "--size", "1M"]);
        let stdout = te.child.stdout.take().expect("stdout");
        let mut first = String::new();
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("segment line");
        assert!(first.starts_with("segment "), "{first}");
        te.signal(Signal::TERM);
        let (code, _, stderr) = te.finish();
        assert_eq!(code, Some(143), "{stderr}");
        assert_eq!(stderr.contains("without --secret"), warned, "{listen}: {stderr}");
    }
}

#[test]
fn a_peer_with_the_wrong_secret_is_refused_at_warn_once_and_named_by_both_sides() {
    let mut te = spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--size",
        "1M",
        "--secret",
        "right",
    ]);
    let stdout = te.child.stdout.take().expect("stdout");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("segment line");
    let addr = first
        .split_whitespace()
        .nth(1)
        .expect("segment address")
        .to_string();
    // Three clients from one address, two with the wrong secret and one
    // with none; a bare word in TE_LOG keeps the default warnings.
    for (i, secret) in [Some("wrong"), None, Some("wrong")].into_iter().enumerate() {
        let mut info = Command::new(env!("CARGO_BIN_EXE_te"));
        info.args(["info", &addr]).env("TE_LOG", "bogus");
        if let Some(s) = secret {
            info.args(["--secret", s]);
        }
        let out = info.output().expect("te info runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        let says = match secret {
            Some(_) => "this side's and the peer's differ",
            None => "this side has none, the peer one",
        };
        assert!(
            err.contains("shared secret mismatch: check --secret on both sides"),
            "{err}"
        );
        assert!(err.contains(says), "{secret:?}: {err}");
        if i == 0 {
            assert!(
                err.contains("TE_LOG directive \"bogus\" names neither a level nor a te module"),
                "{err}"
            );
            assert!(
                err.contains("WARN") && err.contains("refused"),
                "default warnings hidden: {err}"
            );
        }
    }
    te.signal(Signal::TERM);
    let (code, _, stderr) = te.finish();
    assert_eq!(code, Some(143), "{stderr}");
    let refusals: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("refused"))
        .collect();
    assert_eq!(refusals.len(), 1, "once per peer: {stderr}");
    assert!(
        refusals[0].contains("this side has one") || refusals[0].contains("differ"),
        "{stderr}"
    );
    assert!(refusals[0].contains("127.0.0.1:"), "the peer's address: {stderr}");
}
