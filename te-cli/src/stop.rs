//! SIGINT and SIGTERM: before anything is measured (while memory is being
//! allocated and populated, or a target started) the tool exits at once
//! with the conventional code, stopping its child target first; while it
//! measures, the first signal asks the run to stop after abandoning the
//! configuration in flight, so that what was measured is still printed;
//! a second signal exits at once.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crate::error::{fail, Result};
use signal_hook::consts::{SIGINT, SIGTERM};

/// The first stop signal received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Whether a signal asks for a stop (true) or ends the process at once (false).
static DEFERRED: AtomicBool = AtomicBool::new(false);
/// A child process to stop when the process exits at once (0: none).
static CHILD: AtomicI32 = AtomicI32::new(0);

/// The signal that stopped the run: SIGINT or SIGTERM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupted(pub i32);

impl Interrupted {
    /// The signal's name.
    pub fn name(self) -> &'static str {
        match self.0 {
            SIGINT => "SIGINT",
            SIGTERM => "SIGTERM",
            _ => "a signal",
        }
    }

    /// The conventional exit code: 128 plus the signal number (130, 143).
    pub fn exit_code(self) -> i32 {
        128 + self.0
    }
}

/// Blocks (`block`) or unblocks SIGINT and SIGTERM in the calling thread.
fn mask(block: bool) -> Result<()> {
    // SAFETY: `set` is a local sigset_t initialised by sigemptyset before
    // use; pthread_sigmask only changes the calling thread's mask.
    let rc = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, SIGINT);
        libc::sigaddset(&mut set, SIGTERM);
        let how = if block { libc::SIG_BLOCK } else { libc::SIG_UNBLOCK };
        libc::pthread_sigmask(how, &set, std::ptr::null_mut())
    };
    match rc {
        0 => Ok(()),
        e => Err(fail(format!(
            "cannot mask SIGINT and SIGTERM: {}",
            std::io::Error::from_raw_os_error(e)
        ))),
    }
}

/// Installs the handling; until [`defer`] is called a signal ends the process at once.
///
/// The signals are blocked in the calling thread, and so in every thread
/// it starts later, and taken by a thread of their own: a signal to a
/// thread inside a long system call (populating memory is one
/// `MADV_POPULATE_WRITE`) would wait for the call to return, while an exit
/// from the signal thread ends that call at once.
pub fn install() -> Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| fail(format!("cannot handle SIGINT and SIGTERM: {e}")))?;
    mask(true)?;
    std::thread::Builder::new()
        .name("te-signals".into())
        .spawn(move || {
            if let Err(e) = mask(false) {
                eprintln!("te: {e}");
            }
            for sig in signals.forever() {
                let first = SIGNAL
                    .compare_exchange(0, sig, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if !first || !DEFERRED.load(Ordering::Acquire) {
                    exit_now(Interrupted(sig));
                }
            }
        })
        .map_err(|e| fail(format!("cannot start the signal thread: {e}")))?;
    Ok(())
}

/// From now on a signal asks for a stop ([`requested`]) instead of ending the process.
pub fn defer() {
    DEFERRED.store(true, Ordering::Release);
}

/// The signal that asked for a stop, if one did.
pub fn requested() -> Option<Interrupted> {
    match SIGNAL.load(Ordering::Acquire) {
        0 => None,
        s => Some(Interrupted(s)),
    }
}

/// Records the child to stop when the process ends at once (0 forgets it).
pub fn set_child(pid: u32) {
    CHILD.store(i32::try_from(pid).unwrap_or(0), Ordering::Release);
}

/// Stops the recorded child and ends the process with the signal's code.
fn exit_now(i: Interrupted) -> ! {
    if let Some(pid) = rustix::process::Pid::from_raw(CHILD.load(Ordering::Acquire)) {
        // The child has a process group of its own, so a terminal's signal
        // did not reach it; a failure means it is gone already.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    eprintln!("te: stopped by {}", i.name());
    std::process::exit(i.exit_code());
}
