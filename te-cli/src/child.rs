//! A `te` child process (an embedded benchmark target), stopped and
//! reaped when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use te_runtime::Status;

use crate::bench::err;

/// A child running this executable with some arguments, which announced
/// where it listens on the first line of its standard output.
pub struct ChildTe {
    child: Child,
    /// The first word after the announced prefix (an address or segment name).
    pub address: String,
}

impl ChildTe {
    /// Starts `te ARGS...` and waits for its first output line, which
    /// must begin with `prefix`.
    pub fn start(args: &[String], prefix: &str) -> Result<ChildTe, Status> {
        let exe = std::env::current_exe().map_err(|e| err(format!("cannot find the te executable: {e}")))?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("cannot start the target process: {e}")))?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| err("target has no stdout".into()))?;
        let mut line = String::new();
        let read = BufReader::new(out).read_line(&mut line);
        let address = line
            .strip_prefix(prefix)
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_string);
        let mut started = ChildTe {
            child,
            address: String::new(),
        };
        match (read, address) {
            (Ok(_), Some(a)) => {
                started.address = a;
                Ok(started)
            }
            (Err(e), _) => Err(err(format!("target did not start: {e}"))),
            (Ok(_), None) => Err(err(format!("target did not start: it printed {line:?}"))),
        }
    }
}

impl Drop for ChildTe {
    fn drop(&mut self) {
        // The target serves until its standard input closes.
        drop(self.child.stdin.take());
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
