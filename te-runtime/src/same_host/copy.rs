//! Copies between this process's registered memory and a verified peer
//! process, with `process_vm_readv`/`process_vm_writev`: one copy by the
//! kernel, no mapping, no socket.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use te_proto::link::SameHostCopy;
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

    /// This process, for tests that copy to themselves.
    #[cfg(test)]
    pub fn this_process() -> Pid {
        let pid = std::process::id() as i32;
        Pid::new(pid, pidfd(pid).expect("pidfd of this process"))
    }

    /// Duplicates the process's descriptor `fd` into this process
    /// (`pidfd_getfd`: the same permission as `process_vm_*`).
    pub fn get_fd(&self, fd: u32) -> io::Result<OwnedFd> {
        let fd = libc::c_int::try_from(fd)
            .map_err(|_| io::Error::other(format!("descriptor {fd} out of range")))?;
        // SAFETY: pidfd_getfd takes a pidfd, a descriptor number and flags
        // and returns a new descriptor or -1.
        let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.pidfd.as_raw_fd(), fd, 0) };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(got as i32) })
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

/// The process at the other end of a Unix socket, as the kernel recorded
/// it when that process connected.
#[derive(Debug)]
pub(crate) struct Peer {
    pub pid: i32,
    pub uid: u32,
    /// Refers to that very process, even if it has exited since and its pid
    /// was reused (`SO_PEERPIDFD`; on kernels before 6.5, a pidfd opened
    /// now, which narrows but does not close that window).
    pub pidfd: OwnedFd,
}

/// The process at the other end of Unix socket `fd`.
pub(crate) fn peer(fd: BorrowedFd<'_>) -> io::Result<Peer> {
    // SAFETY: `ucred` is plain C data.
    let cred: libc::ucred = unsafe { sockopt(fd, libc::SO_PEERCRED) }?;
    if cred.pid <= 0 {
        return Err(io::Error::other("no peer pid"));
    }
    // SAFETY: an int.
    let pidfd = match unsafe { sockopt::<libc::c_int>(fd, libc::SO_PEERPIDFD) } {
        // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
        Ok(raw) if raw >= 0 => unsafe { OwnedFd::from_raw_fd(raw) },
        _ => pidfd(cred.pid)?,
    };
    Ok(Peer {
        pid: cred.pid,
        uid: cred.uid,
        pidfd,
    })
}

/// Socket option `opt` of level `SOL_SOCKET`.
///
/// # Safety
/// `T` must be plain C data for which every bit pattern is a valid value.
unsafe fn sockopt<T: Copy>(fd: BorrowedFd<'_>, opt: libc::c_int) -> io::Result<T> {
    let mut v = std::mem::MaybeUninit::<T>::zeroed();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            v.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zero-initialised, partly overwritten by the kernel; every
    // bit pattern of `T` is valid (the caller's contract).
    Ok(unsafe { v.assume_init() })
}

/// A pidfd for `pid`.
fn pidfd(pid: i32) -> io::Result<OwnedFd> {
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
    peek(std::process::id() as i32, src.as_ptr() as u64, &mut dst)
        .map_err(|e| format!("process_vm_readv not allowed: {e}"))?;
    if dst != src {
        return Err("process_vm_readv copied wrong bytes".into());
    }
    Ok(())
}

/// Reads `out.len()` bytes at `addr` of process `pid`.
pub(crate) fn peek(pid: i32, addr: u64, out: &mut [u8]) -> io::Result<()> {
    vm_copy(pid, out.as_mut_ptr() as u64, addr, out.len() as u64, false)
}

/// Most copies done in one system call (a full window of requests).
pub(crate) const BATCH: usize = te_proto::link::MAX_OUTSTANDING;

/// Does several copies of one direction in one system call; any failure
/// (the caller then does each alone, to answer each with its own error).
pub(crate) fn run_all(pid: &Pid, copies: &[SameHostCopy]) -> Result<()> {
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let (mut ours, mut theirs) = ([empty; BATCH], [empty; BATCH]);
    let (mut n, mut total, mut to_peer) = (0, 0u64, None);
    for c in copies.iter().take(BATCH) {
        if c.span.location != Location::Cpu || to_peer.is_some_and(|d| d != c.to_peer) {
            return Err(status!(NotSupported, "copies of mixed kinds"));
        }
        to_peer = Some(c.to_peer);
        ours[n] = iovec(c.span.addr, c.span.len);
        theirs[n] = iovec(c.peer_addr, c.span.len);
        total += c.span.len;
        n += 1;
    }
    if pid.exited() {
        return Err(status!(Disconnected, "peer process {} exited", pid.pid()));
    }
    // SAFETY: every local range is registered memory of this process,
    // pinned by the link until its copy is reported; the kernel checks the
    // peer's ranges against its mappings. No Rust reference to them lives.
    let done = unsafe {
        if to_peer == Some(true) {
            libc::process_vm_writev(pid.pid(), ours.as_ptr(), n as _, theirs.as_ptr(), n as _, 0)
        } else {
            libc::process_vm_readv(pid.pid(), ours.as_ptr(), n as _, theirs.as_ptr(), n as _, 0)
        }
    };
    if done < 0 || done as u64 != total {
        return Err(status!(
            RuntimeError,
            "batched copy moved {done} of {total} bytes"
        ));
    }
    Ok(())
}

fn iovec(addr: u64, len: u64) -> libc::iovec {
    libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: len as usize,
    }
}

/// Does the peer's copy `c` between our span and process `pid`.
pub(crate) fn run(pid: &Pid, c: &SameHostCopy) -> Result<()> {
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
        let local = iovec(ours + done, len - done);
        let remote = iovec(theirs + done, len - done);
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

#[cfg(test)]
mod tests {
    use te_proto::{ErrorCode, Span};

    use super::*;

    fn copy(span: &[u8], peer: u64, to_peer: bool) -> SameHostCopy {
        SameHostCopy {
            span: Span::cpu(span.as_ptr() as u64, span.len() as u64),
            peer_addr: peer,
            to_peer,
            peer_device: false,
        }
    }

    #[test]
    fn batched_copies_move_every_span_in_one_call() {
        let src: Vec<u8> = (0..8192u32).map(|i| i as u8).collect();
        let mut dst = vec![0u8; 8192];
        let (a, b) = (dst.as_mut_ptr() as u64, dst.as_mut_ptr() as u64 + 4096);
        // Two reads from "the peer" (this process): src halves into dst halves, swapped.
        let copies = [copy(&src[..4096], b, true), copy(&src[4096..], a, true)];
        run_all(&Pid::this_process(), &copies).expect("batched copy");
        assert_eq!(&dst[4096..], &src[..4096]);
        assert_eq!(&dst[..4096], &src[4096..]);
    }

    #[test]
    fn a_bad_peer_range_fails_the_batch_and_names_itself_alone() {
        let src = vec![7u8; 64];
        let mut dst = vec![0u8; 64];
        let good = copy(&src, dst.as_mut_ptr() as u64, true);
        // Page zero is never mapped.
        let bad = copy(&src, 0x10, true);
        assert!(run_all(&Pid::this_process(), &[good, bad]).is_err());
        run(&Pid::this_process(), &good).expect("the good copy alone");
        assert_eq!(dst, src);
        let e = run(&Pid::this_process(), &bad).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Invalid);
        assert!(e.message().contains("0x10"), "{e}");
        let mixed = [
            good,
            SameHostCopy {
                to_peer: false,
                ..good
            },
        ];
        assert_eq!(
            run_all(&Pid::this_process(), &mixed).unwrap_err().code(),
            ErrorCode::NotSupported
        );
    }
}
