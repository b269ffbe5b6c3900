//! Peer processes (`te-peer`) for the process and fault tests, and pattern
//! checks that name the first wrong byte.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::pattern;

/// How long a peer may take to print `READY`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `te-peer` process. Dropping it kills (SIGKILL) and reaps the
/// process, so no test leaves one behind, even when it panics.
pub struct PeerProcess {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stderr: Option<JoinHandle<String>>,
    /// The lines it prints after `READY`.
    lines: Mutex<mpsc::Receiver<std::io::Result<String>>>,
    /// The peer's segment name (`127.0.0.1:<port>`).
    pub segment: String,
    /// Address of its region in the peer process.
    pub addr: u64,
    /// Length of its region.
    pub len: u64,
    /// Seed of the pattern its region was filled with.
    pub seed: u64,
}

impl PeerProcess {
    /// Starts `exe` (the `te-peer` binary, from `env!("CARGO_BIN_EXE_te-peer")`)
    /// listening on `listen` with a region of `len` bytes filled with
    /// `pattern(seed, i)`, plus `extra` options (`--secret`, `--perm`), and
    /// waits for its `READY` line. Panics with the peer's stderr when it
    /// does not start.
    pub fn spawn(exe: &str, listen: &str, len: u64, seed: u64, extra: &[&str]) -> PeerProcess {
        PeerProcess::try_spawn(exe, listen, len, seed, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`spawn`](Self::spawn), returning why it failed instead of panicking.
    pub fn try_spawn(
        exe: &str,
        listen: &str,
        len: u64,
        seed: u64,
        extra: &[&str],
    ) -> Result<PeerProcess, String> {
        let mut cmd = Command::new(exe);
        cmd.arg(listen)
            .arg(len.to_string())
            .arg(seed.to_string())
            .args(extra);
        PeerProcess::start(cmd, exe, seed)
    }

    /// As [`spawn`](Self::spawn), with environment variables `env` set for
    /// the peer (e.g. the fake ACL's `TE_FAKE_ACL_FAIL`).
    pub fn spawn_with_env(
        exe: &str,
        listen: &str,
        len: u64,
        seed: u64,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> PeerProcess {
        let mut cmd = Command::new(exe);
        cmd.arg(listen)
            .arg(len.to_string())
            .arg(seed.to_string())
            .args(extra)
            .envs(env.iter().copied());
        PeerProcess::start(cmd, exe, seed).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`spawn`](Self::spawn), inside network namespace `netns` (through
    /// `ip netns exec`, which executes the peer in its place).
    pub fn spawn_in_netns(
        netns: &str,
        exe: &str,
        listen: &str,
        len: u64,
        seed: u64,
        extra: &[&str],
    ) -> PeerProcess {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns, exe, listen])
            .arg(len.to_string())
            .arg(seed.to_string())
            .args(extra);
        PeerProcess::start(cmd, exe, seed).unwrap_or_else(|e| panic!("{e}"))
    }

    fn start(mut cmd: Command, exe: &str, seed: u64) -> Result<PeerProcess, String> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {exe}: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut err_pipe = child.stderr.take().expect("piped stderr");
        // With TE_PEER_STDERR=1 the peer's stderr (its log) is echoed as it
        // comes, to follow a failing test.
        let echo = std::env::var_os("TE_PEER_STDERR").is_some_and(|v| v == "1");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            if echo {
                for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                    eprintln!("[te-peer] {line}");
                    s.push_str(&line);
                    s.push('\n');
                }
            } else {
                let _ = err_pipe.read_to_string(&mut s);
            }
            s
        });
        // Read stdout on a thread so that a peer that hangs cannot hang the
        // test; every line goes to `lines`.
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let end = line.is_err();
                if tx.send(line).is_err() || end {
                    break;
                }
            }
        });
        let mut peer = PeerProcess {
            child: Some(child),
            stdin,
            stderr: Some(stderr),
            lines: Mutex::new(lines),
            segment: String::new(),
            addr: 0,
            len: 0,
            seed,
        };
        let first = peer
            .lines
            .get_mut()
            .expect("not poisoned")
            .recv_timeout(READY_TIMEOUT);
        let line = match first {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(peer.fail(&format!("reading its stdout: {e}"))),
            Err(_) => return Err(peer.fail(&format!("no READY line within {READY_TIMEOUT:?}"))),
        };
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["READY", segment, addr, len] => {
                peer.segment = segment.to_string();
                peer.addr = addr
                    .parse()
                    .map_err(|e| format!("bad READY line {line:?}: {e}"))?;
                peer.len = len.parse().map_err(|e| format!("bad READY line {line:?}: {e}"))?;
                Ok(peer)
            }
            _ => Err(peer.fail(&format!("expected `READY <segment> <addr> <len>`, got {line:?}"))),
        }
    }

    /// Kills the process and describes the failure with its stderr.
    fn fail(&mut self, why: &str) -> String {
        self.kill();
        let err = self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
        format!("te-peer did not start: {why}; its stderr: {err:?}")
    }

    /// The next line the peer printed after `READY`, waiting up to
    /// `timeout`; `None` when there is none by then or stdout closed.
    pub fn line(&self, timeout: Duration) -> Option<String> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.recv_timeout(timeout).ok().and_then(Result::ok)
    }

    /// The port the peer listens on.
    pub fn port(&self) -> u16 {
        self.segment
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("segment name ends with :<port>")
    }

    /// The process id (0 once reaped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        self.stdin.take();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...) with `kill(1)`;
    /// `SIGSTOP` makes the peer silent without closing its connections.
    /// For `STOP` this returns only once every thread of the peer has
    /// stopped: `kill` returns when the signal is queued, and a thread that
    /// was runnable then may still answer a request before it stops.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("peer is running").id();
        let status = Command::new("kill")
            .args(["-s", sig, &pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill -s {sig}: {e}"));
        assert!(status.success(), "kill -s {sig} {pid}: {status}");
        if sig == "STOP" {
            wait_stopped(pid);
        }
    }

    /// Closes the peer's stdin (it finalizes its engine and exits) and
    /// waits for it to exit.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.stdin.take();
        self.child.take().map(|mut c| c.wait().expect("wait for te-peer"))
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until every thread of process `pid` is in the stopped state
/// (`T` in `/proc/PID/task/TID/stat`); panics after 30 s.
fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states = thread_states(pid);
        if !states.is_empty() && states.iter().all(|s| matches!(s, 'T' | 't')) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} did not stop within 30 s: thread states {states:?}"
        );
        std::thread::sleep(Duration::from_millis(1)); // polling a state
    }
}

/// The state letter of each thread of `pid` (threads that exit while
/// they are read are left out).
fn thread_states(pid: u32) -> Vec<char> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        // "tid (comm) S ...": comm may hold spaces and parentheses.
        .filter_map(|stat| stat.rsplit_once(") ")?.1.chars().next())
        .collect()
}

/// Checks that the `len` bytes at `addr` are `pattern(seed, start + i)`;
/// the error names the first wrong byte and how many are wrong.
///
/// # Safety
/// `addr..addr + len` must be readable memory that nothing writes meanwhile.
pub unsafe fn check_pattern(addr: u64, len: u64, seed: u64, start: u64) -> Result<(), String> {
    // SAFETY: forwarded contract.
    let got = unsafe { crate::bytes(addr, len) };
    let mut first = None;
    let mut wrong = 0u64;
    for (i, &b) in got.iter().enumerate() {
        let want = pattern(seed, start + i as u64);
        if b != want {
            wrong += 1;
            first.get_or_insert((i, b, want));
        }
    }
    match first {
        None => Ok(()),
        Some((i, b, want)) => Err(format!(
            "{wrong} of {len} bytes wrong; first at offset {i}: {b:#04x}, expected {want:#04x} \
             (pattern seed {seed}, index {})",
            start + i as u64
        )),
    }
}

/// Fills `len` bytes at `addr` with `pattern(seed, start + i)`.
///
/// # Safety
/// `addr..addr + len` must be writable memory owned by the caller.
pub unsafe fn fill_from(addr: u64, len: u64, seed: u64, start: u64) {
    // SAFETY: the caller owns the memory.
    let s = unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len as usize) };
    for (i, b) in s.iter_mut().enumerate() {
        *b = pattern(seed, start + i as u64);
    }
}
