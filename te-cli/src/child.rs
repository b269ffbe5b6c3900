//! A `te` child process (an embedded benchmark target), stopped and
//! reaped when dropped.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::error::{fail, Result};
use crate::stop;

/// How long a child may take to stop after its standard input closed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A child running this executable with some arguments, which announced
/// where it listens on the first line of its standard output.
pub struct ChildTe {
    child: Option<Child>,
    /// The first word after the announced prefix (an address or segment name).
    pub address: String,
}

impl ChildTe {
    /// Starts `te ARGS...` and waits for its first output line, which
    /// must begin with `prefix`. The child has a process group of its own,
    /// so a terminal's Ctrl-C reaches only this process, which then stops
    /// the child itself (no half-finished transfer in the child's log).
    pub fn start(args: &[String], prefix: &str) -> Result<ChildTe> {
        let exe = std::env::current_exe().map_err(|e| fail(format!("cannot find the te executable: {e}")))?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| fail(format!("cannot start the target process: {e}")))?;
        stop::set_child(child.id());
        let out = child.stdout.take().ok_or_else(|| fail("target has no stdout"))?;
        let mut started = ChildTe {
            child: Some(child),
            address: String::new(),
        };
        let mut line = String::new();
        let read = BufReader::new(out).read_line(&mut line);
        let address = line
            .strip_prefix(prefix)
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_string);
        match (read, address) {
            (Ok(_), Some(a)) => {
                started.address = a;
                Ok(started)
            }
            (Err(e), _) => Err(fail(format!("target did not start: {e}"))),
            (Ok(0), None) => Err(fail("target did not start (its error is above)")),
            (Ok(_), None) => Err(fail(format!("target did not start: it printed {line:?}"))),
        }
    }
}

impl ChildTe {
    /// The child's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for ChildTe {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The target serves until its standard input closes; it gets a
        // few seconds for that before it is killed.
        drop(child.stdin.take());
        let (tx, rx) = std::sync::mpsc::channel();
        let pid = child.id();
        let waiter = std::thread::spawn(move || {
            let _ = child.wait();
            let _ = tx.send(());
        });
        if rx.recv_timeout(STOP_GRACE).is_err() {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        let _ = waiter.join();
        stop::set_child(0);
    }
}
