//! Copies between this process's registered memory and a verified peer
//! process, with `process_vm_readv`/`process_vm_writev`: one copy by the
//! kernel, no mapping, no socket.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use te_proto::link::LocalCopy;
use te_proto::{status, Location, Result};

/// A verified peer process: its pid and a pidfd that tells whether that
/// very process still lives (so a reused pid is never written).
#[derive(Debug)]
pub(crate) struct Pid {
    pid: i32,
    pidfd: OwnedFd,
}

impl Pid {
    /// Wraps a pid and its pidfd.
    pub fn new(pid: i32, pidfd: OwnedFd) -> Pid {
        Pid { pid, pidfd }
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the process has exited (its pidfd turns readable).
    fn exited(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, timeout 0.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n != 0
    }
}

/// The pid of the process at the other end of a Unix socket, as the kernel
/// recorded it at connect time.
pub(crate) fn peer_pid(fd: BorrowedFd<'_>) -> io::Result<i32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if cred.pid <= 0 {
        return Err(io::Error::other("no peer pid"));
    }
    Ok(cred.pid)
}

/// A pidfd for `pid`.
pub(crate) fn pidfd(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Checks that this process may copy from a process by pid (a seccomp
/// filter or a kernel without the calls refuse): copies 8 bytes of its own.
pub(crate) fn probe() -> std::result::Result<(), String> {
    let src = [0x5au8; 8];
    let mut dst = [0u8; 8];
    vm_copy(
        std::process::id() as i32,
        dst.as_mut_ptr() as u64,
        src.as_ptr() as u64,
        8,
        false,
    )
    .map_err(|e| format!("process_vm_readv not allowed: {e}"))?;
    if dst != src {
        return Err("process_vm_readv copied wrong bytes".into());
    }
    Ok(())
}

/// Does the peer's copy `c` between our span and process `pid`.
pub(crate) fn run(pid: &Pid, c: &LocalCopy) -> Result<()> {
    if c.span.location != Location::Cpu {
        return Err(status!(
            NotSupported,
            "same-host copy of {} memory: host memory only",
            c.span.location
        ));
    }
    if pid.exited() {
        return Err(status!(Disconnected, "peer process {} exited", pid.pid()));
    }
    vm_copy(pid.pid(), c.span.addr, c.peer_addr, c.span.len, c.to_peer).map_err(|e| match e.raw_os_error() {
        Some(libc::EFAULT) => status!(
            Invalid,
            "peer range {:#x}+{:#x} is not mapped in process {}",
            c.peer_addr,
            c.span.len,
            pid.pid()
        ),
        Some(libc::ESRCH) => status!(Disconnected, "peer process {} is gone", pid.pid()),
        Some(libc::EPERM) => status!(NotAuthorized, "not allowed to access process {}: {e}", pid.pid()),
        _ => status!(RuntimeError, "copy with process {}: {e}", pid.pid()),
    })
}

/// Copies `len` bytes between `ours` (this process) and `theirs` (process
/// `pid`): to them when `to_peer`, else from them.
fn vm_copy(pid: i32, ours: u64, theirs: u64, len: u64, to_peer: bool) -> io::Result<()> {
    let mut done = 0u64;
    while done < len {
        let local = libc::iovec {
            iov_base: (ours + done) as usize as *mut libc::c_void,
            iov_len: (len - done) as usize,
        };
        let remote = libc::iovec {
            iov_base: (theirs + done) as usize as *mut libc::c_void,
            iov_len: (len - done) as usize,
        };
        // SAFETY: `local` is registered memory of this process, pinned for
        // this copy by the link (or the probe's own arrays); the kernel
        // checks `remote` against the peer's mappings and fails with EFAULT
        // outside them. No Rust reference to `local` is alive meanwhile.
        let n = unsafe {
            if to_peer {
                libc::process_vm_writev(pid, &local, 1, &remote, 1, 0)
            } else {
                libc::process_vm_readv(pid, &local, 1, &remote, 1, 0)
            }
        };
        match n {
            n if n > 0 => done += n as u64,
            0 => return Err(io::ErrorKind::WriteZero.into()),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}
