//! Raw access to registered host memory, and engine-owned buffers.
//!
//! This is the only module that turns addresses into slices. Every span it
//! is given comes from te-proto, which hands out only spans inside regions
//! of the registry (for a peer's access) or inside a task's local span
//! (pinned in the registry when the task was submitted).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use te_proto::link::LocalMap;
use te_proto::{ErrorCode, Result, Span, Status};
use tracing::debug;

/// The bytes of a host span, for reading.
///
/// # Safety
/// `span` must lie inside host memory that stays valid and is not written
/// through a Rust reference for the life of the slice. The engine upholds
/// this for spans of registered, pinned regions: the user promised at
/// registration that the memory stays valid until unregister, and
/// unregister waits for pins to drop.
pub(crate) unsafe fn host_bytes<'a>(span: Span) -> &'a [u8] {
    debug_assert!(span.location.is_host());
    // SAFETY: the caller guarantees the span is valid, readable host memory.
    unsafe { std::slice::from_raw_parts(span.addr as usize as *const u8, span.len as usize) }
}

/// The bytes of a host span, for writing.
///
/// # Safety
/// As [`host_bytes`], and no other reference to these bytes may be alive:
/// the engine writes a span only while it is the destination of exactly one
/// payload, which the link hands out once.
pub(crate) unsafe fn host_bytes_mut<'a>(span: Span) -> &'a mut [u8] {
    debug_assert!(span.location.is_host());
    // SAFETY: the caller guarantees the span is valid, writable, unaliased host memory.
    unsafe { std::slice::from_raw_parts_mut(span.addr as usize as *mut u8, span.len as usize) }
}

/// Page-aligned host memory owned by the engine: a sealed memfd mapped
/// shared, so that a same-host peer can map the same pages (see
/// `same_host::maps`), or an anonymous mapping: for engines without the
/// same-host path, which keep transparent huge pages where shared memory
/// gets none, and where memfds are refused.
pub(crate) struct HostBuffer {
    ptr: NonNull<u8>,
    len: usize,
    /// The memfd holding the pages; `None` for an anonymous mapping.
    fd: Option<OwnedFd>,
    /// Unique in this process for its lifetime: names the buffer to peers.
    id: u64,
}

// SAFETY: the mapping is plain memory owned by this value; moving the owner
// between threads moves nothing but the pointer and the descriptor.
unsafe impl Send for HostBuffer {}

/// The next [`HostBuffer::id`].
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl HostBuffer {
    /// Maps `len` bytes of zeroed memory, asking for transparent huge pages
    /// when the buffer is large, and faults it in now: registered memory is
    /// there to be transferred, and a first touch in the middle of a
    /// transfer costs more than all of it up front (as RDMA registration
    /// pins memory at registration).
    /// `shared`: a memfd a peer can map, else anonymous memory.
    pub fn new(len: usize, shared: bool) -> Result<HostBuffer> {
        if len == 0 {
            return Err(Status::new(ErrorCode::Invalid, "buffer length is zero"));
        }
        let fd = match shared.then(|| sealed_memfd(len)) {
            Some(Ok(fd)) => Some(fd),
            Some(Err(e)) => {
                debug!("memfd of {len} bytes refused, using anonymous memory: {e}");
                None
            }
            None => None,
        };
        let prot = rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE;
        // SAFETY: a fresh mapping at an address the kernel chooses aliases
        // nothing in this process; the memfd is ours, sized to `len` and
        // sealed against shrinking, so no access within `len` can fault.
        let ptr = unsafe {
            match &fd {
                Some(fd) => rustix::mm::mmap(
                    std::ptr::null_mut(),
                    len,
                    prot,
                    rustix::mm::MapFlags::SHARED,
                    fd,
                    0,
                ),
                None => {
                    rustix::mm::mmap_anonymous(std::ptr::null_mut(), len, prot, rustix::mm::MapFlags::PRIVATE)
                }
            }
        }
        .map_err(|e| te_proto::status!(RuntimeError, "cannot map {len} bytes: {e}"))?;
        if len >= 2 << 20 {
            // SAFETY: advice on our own fresh mapping; failure is harmless
            // (shared memory gets huge pages only where the system's shmem
            // setting allows them).
            let _ = unsafe { rustix::mm::madvise(ptr, len, rustix::mm::Advice::LinuxHugepage) };
        }
        // SAFETY: advice on our own fresh mapping; where the kernel lacks
        // MADV_POPULATE_WRITE the pages fault in on first use instead.
        let _ = unsafe { rustix::mm::madvise(ptr, len, rustix::mm::Advice::LinuxPopulateWrite) };
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| Status::new(ErrorCode::RuntimeError, "mmap returned null"))?;
        Ok(HostBuffer {
            ptr,
            len,
            fd,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The first byte's address.
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as usize as u64
    }

    /// The buffer as a peer may map it: `None` for anonymous memory.
    pub fn mapping(&self) -> Option<LocalMap> {
        let fd = self.fd.as_ref()?;
        Some(LocalMap {
            id: self.id,
            base: self.addr(),
            len: self.len as u64,
            fd: u32::try_from(fd.as_raw_fd()).ok()?,
        })
    }
}

/// A memfd of `len` bytes sealed against any change of size (so a peer
/// mapping it can trust its length) and against further seals.
fn sealed_memfd(len: usize) -> std::io::Result<OwnedFd> {
    let size = libc::off_t::try_from(len).map_err(|_| std::io::Error::other("length too large"))?;
    // SAFETY: a NUL-terminated name and flags; returns a new fd or -1.
    let fd =
        unsafe { libc::memfd_create(c"te-buffer".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain calls on our own descriptor.
    let sized = unsafe { libc::ftruncate(fd.as_raw_fd(), size) };
    if sized != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}
impl Drop for HostBuffer {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `new` with this length and is
        // unmapped once; the engine unregistered it (no pins) before dropping.
        // The memfd, if any, closes after: a peer's mapping of it keeps
        // its own reference to the pages.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
