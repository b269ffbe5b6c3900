//! Raw access to registered host memory, and engine-owned buffers.
//!
//! This is the only module that turns addresses into slices. Every span it
//! is given comes from te-proto, which hands out only spans inside regions
//! of the registry (for a peer's access) or inside a task's local span
//! (pinned in the registry when the task was submitted).

use std::ptr::NonNull;

use te_proto::{ErrorCode, Result, Span, Status};

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

/// Page-aligned host memory owned by the engine (anonymous mapping).
pub(crate) struct HostBuffer {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; moving the owner
// between threads moves nothing but the pointer.
unsafe impl Send for HostBuffer {}

impl HostBuffer {
    /// Maps `len` bytes of zeroed memory, asking for transparent huge pages
    /// when the buffer is large, and faults it in now: registered memory is
    /// there to be transferred, and a first touch in the middle of a
    /// transfer costs more than all of it up front (as RDMA registration
    /// pins memory at registration).
    pub fn new(len: usize) -> Result<HostBuffer> {
        if len == 0 {
            return Err(Status::new(ErrorCode::Invalid, "buffer length is zero"));
        }
        // SAFETY: an anonymous private mapping at an address the kernel
        // chooses aliases nothing.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE,
            )
        }
        .map_err(|e| te_proto::status!(RuntimeError, "cannot map {len} bytes: {e}"))?;
        if len >= 2 << 20 {
            // SAFETY: advice on our own fresh mapping; failure is harmless.
            let _ = unsafe { rustix::mm::madvise(ptr, len, rustix::mm::Advice::LinuxHugepage) };
        }
        // SAFETY: advice on our own fresh mapping; where the kernel lacks
        // MADV_POPULATE_WRITE the pages fault in on first use instead.
        let _ = unsafe { rustix::mm::madvise(ptr, len, rustix::mm::Advice::LinuxPopulateWrite) };
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| Status::new(ErrorCode::RuntimeError, "mmap returned null"))?;
        Ok(HostBuffer { ptr, len })
    }

    /// The first byte's address.
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as usize as u64
    }
}

impl Drop for HostBuffer {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `new` with this length and is
        // unmapped once; the engine unregistered it (no pins) before dropping.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
