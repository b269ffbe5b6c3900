//! The peer's buffers this engine maps: a same-host peer announces its
//! engine-owned memory (sealed memfds, `LocalMap` frames), and the owner of
//! the registered memory maps each announced buffer once, at its first
//! copy, and from then on copies with plain `memcpy` through the mapping
//! instead of `process_vm_readv`/`process_vm_writev` (which pin the peer's
//! pages on every call).
//!
//! The descriptor is taken from the proven process with `pidfd_getfd`
//! (which needs the same permission as `process_vm_*`). A buffer is mapped
//! only if it is a memfd sealed against shrinking and at least as long as
//! announced, so no access through the mapping can fault; anything else is
//! refused once (logged) and its copies take `process_vm_*`.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
#[cfg(test)]
use std::os::fd::{FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use te_proto::link::{Link, LocalMap};
use tracing::{debug, warn};

use super::copy::Pid;

/// One announced buffer of the peer, as this engine holds it.
enum Mapped {
    /// Mapped at `ptr`; `map` is the announcement it was mapped for.
    At { map: LocalMap, ptr: NonNull<u8> },
    /// Could not be mapped (the reason was logged): use `process_vm_*`.
    Refused(LocalMap),
}

impl Mapped {
    fn announced(&self) -> &LocalMap {
        match self {
            Mapped::At { map, .. } | Mapped::Refused(map) => map,
        }
    }
}

/// Most mappings of peers' buffers one engine holds (each costs one of
/// the process's `vm.max_map_count`, 65530 by default); beyond, copies take
/// `process_vm_*`.
pub(crate) const MAX_MAPPINGS: usize = 4096;
/// Most bytes of peers' buffers one connection maps (a peer chooses the
/// lengths, and address space is finite); beyond, copies take `process_vm_*`.
pub(crate) const MAX_MAPPED_BYTES: u64 = 16 << 40;

/// The peer's buffers mapped for one connection, by announcement id.
#[derive(Default)]
pub(crate) struct PeerMaps {
    maps: HashMap<u64, Mapped>,
    /// Bytes mapped for this connection.
    bytes: u64,
    /// The engine's count of mappings, shared by its connections; set at
    /// the first mapping.
    engine_count: Option<Arc<AtomicUsize>>,
}

impl std::fmt::Debug for PeerMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerMaps({} buffers)", self.maps.len())
    }
}

// SAFETY: the mappings are plain shared memory owned by this value.
unsafe impl Send for PeerMaps {}

impl PeerMaps {
    /// Our address of the peer's `[addr, addr + len)`, which lies inside
    /// its announced buffer `map`; the buffer is mapped at first use,
    /// within [`MAX_MAPPED_BYTES`] for the connection and [`MAX_MAPPINGS`]
    /// for the engine (`count`). `None` when it cannot be mapped.
    pub fn address(
        &mut self,
        pid: &Pid,
        count: &Arc<AtomicUsize>,
        map: LocalMap,
        addr: u64,
        len: u64,
    ) -> Option<*mut u8> {
        let off = addr.checked_sub(map.base)?;
        if off.checked_add(len)? > map.len {
            return None;
        }
        let stale = self.maps.get(&map.id).is_some_and(|m| *m.announced() != map);
        if stale {
            self.unmap(map.id);
        }
        if !self.maps.contains_key(&map.id) {
            let mapped = self.map(pid, count, map);
            self.maps.insert(map.id, mapped);
        }
        match self.maps.get(&map.id)? {
            // `off + len <= map.len`, which is the mapping's length.
            Mapped::At { ptr, .. } => Some(ptr.as_ptr().wrapping_add(off as usize)),
            Mapped::Refused(_) => None,
        }
    }

    /// Maps buffer `map` if the limits allow it; what cannot be mapped is
    /// logged once and refused from then on.
    fn map(&mut self, pid: &Pid, count: &Arc<AtomicUsize>, map: LocalMap) -> Mapped {
        if !self.reserve(count, map.len) {
            debug!(
                id = map.id,
                len = map.len,
                "mapping limits reached, copying with process_vm"
            );
            return Mapped::Refused(map);
        }
        match map_buffer(pid, &map) {
            Ok(ptr) => {
                debug!(
                    id = map.id,
                    len = map.len,
                    "mapped a buffer of process {}",
                    pid.pid()
                );
                Mapped::At { map, ptr }
            }
            Err(e) => {
                self.release(map.len);
                warn!(
                    "cannot map buffer {} ({} bytes, fd {}) of process {}, copying with process_vm: {e}",
                    map.id,
                    map.len,
                    map.fd,
                    pid.pid()
                );
                Mapped::Refused(map)
            }
        }
    }

    /// Unmaps the buffers the peer no longer announces (or announces
    /// differently), so that a withdrawn buffer's memory is released.
    pub fn retain_announced(&mut self, link: &Link) {
        let mut freed = 0;
        let mut freed_bytes = 0;
        self.maps.retain(|_, m| {
            let keep = link.same_host().peer_local_maps().any(|a| a == *m.announced());
            if !keep && m.unmap() {
                freed += 1;
                freed_bytes += m.announced().len;
            }
            keep
        });
        self.bytes = self.bytes.saturating_sub(freed_bytes);
        if let Some(c) = self.engine_count.as_ref().filter(|_| freed > 0) {
            c.fetch_sub(freed, Ordering::AcqRel);
        }
    }

    fn unmap(&mut self, id: u64) {
        if let Some(mut m) = self.maps.remove(&id) {
            if m.unmap() {
                self.release(m.announced().len);
            }
        }
    }

    /// Counts a mapping of `len` bytes against the limits, if they allow it.
    fn reserve(&mut self, count: &Arc<AtomicUsize>, len: u64) -> bool {
        if self.bytes.saturating_add(len) > MAX_MAPPED_BYTES {
            return false;
        }
        if count.fetch_add(1, Ordering::AcqRel) >= MAX_MAPPINGS {
            count.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        self.bytes += len;
        self.engine_count.get_or_insert_with(|| count.clone());
        true
    }

    /// Gives back what [`reserve`](Self::reserve) counted for `len` bytes.
    fn release(&mut self, len: u64) {
        self.bytes = self.bytes.saturating_sub(len);
        if let Some(c) = &self.engine_count {
            c.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Mapped {
    /// Unmaps the buffer (once; it is `Refused` afterwards). True when it
    /// was mapped.
    fn unmap(&mut self) -> bool {
        let Mapped::At { map, ptr } = *self else {
            return false;
        };
        // SAFETY: mapped by `map_buffer` with this length; no copy runs
        // (copies happen on this thread) and no reference into it lives.
        let _ = unsafe { rustix::mm::munmap(ptr.as_ptr().cast(), map.len as usize) };
        *self = Mapped::Refused(map);
        true
    }
}

impl Drop for PeerMaps {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.maps.keys().copied().collect();
        for id in ids {
            self.unmap(id);
        }
    }
}

/// Takes the peer's descriptor `map.fd`, checks it is a memfd sealed
/// against shrinking and at least `map.len` long, and maps it shared.
fn map_buffer(pid: &Pid, map: &LocalMap) -> io::Result<NonNull<u8>> {
    let len = usize::try_from(map.len).map_err(|_| io::Error::other("length too large"))?;
    let fd = pid.get_fd(map.fd)?;
    // SAFETY: F_GET_SEALS on a descriptor we own; fails on non-memfd files.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if seals < 0 {
        return Err(io::Error::other(format!(
            "not a memfd: {}",
            io::Error::last_os_error()
        )));
    }
    if seals & libc::F_SEAL_SHRINK == 0 {
        return Err(io::Error::other("the memfd is not sealed against shrinking"));
    }
    // A hugetlbfs memfd can lose its pages to a hole punched by the peer and
    // then fault (SIGBUS) when the huge page pool is empty; te never makes one.
    // SAFETY: a zeroed statfs buffer filled by fstatfs on our own descriptor.
    let fs_type = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::fstatfs(fd.as_raw_fd(), &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        st.f_type
    };
    if fs_type == libc::HUGETLBFS_MAGIC {
        return Err(io::Error::other("a hugetlbfs memfd"));
    }
    let file = std::fs::File::from(fd);
    let size = file.metadata()?.len();
    if size < map.len {
        return Err(io::Error::other(format!(
            "the memfd holds {size} bytes, fewer than announced"
        )));
    }
    let prot = rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE;
    // SAFETY: a new shared mapping of a file that cannot shrink below `len`
    // at an address the kernel chooses: it aliases nothing of ours, and no
    // access within `len` can fault.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            rustix::mm::MapFlags::SHARED,
            &file,
            0,
        )
    }?;
    NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::HostBuffer;

    /// A memfd of `len` bytes without seals.
    fn unsealed(len: u64) -> OwnedFd {
        // SAFETY: a NUL-terminated name; returns a new fd or -1.
        let fd = unsafe { libc::memfd_create(c"unsealed".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a plain call on our own descriptor.
        assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) }, 0);
        fd
    }

    #[test]
    fn a_sealed_buffer_is_mapped_once_and_shows_its_bytes() {
        let me = Pid::this_process();
        let count = Arc::new(AtomicUsize::new(0));
        let buf = HostBuffer::new(1 << 20, true).unwrap();
        let map = buf.mapping().expect("engine memory is a memfd");
        // SAFETY: our own fresh buffer, no other reference.
        unsafe { std::ptr::write_bytes((map.base + 4096) as *mut u8, 0xab, 16) };
        let mut maps = PeerMaps::default();
        let at = maps
            .address(&me, &count, map, map.base + 4096, 16)
            .expect("mapped");
        assert_ne!(at as u64, map.base + 4096, "a second mapping of the same pages");
        // SAFETY: 16 bytes inside the mapping just made.
        assert_eq!(unsafe { std::slice::from_raw_parts(at, 16) }, &[0xab; 16]);
        let again = maps.address(&me, &count, map, map.base, 1).expect("still mapped");
        assert_eq!(again as u64 + 4096, at as u64, "mapped once, not again");
        // Outside the announced buffer: no address.
        assert!(maps
            .address(&me, &count, map, map.base + map.len - 8, 16)
            .is_none());
        assert!(maps.address(&me, &count, map, map.base - 1, 2).is_none());
    }

    #[test]
    fn mappings_count_against_the_engine_limit_and_are_given_back() {
        let me = Pid::this_process();
        let buf = HostBuffer::new(4096, true).unwrap();
        let map = buf.mapping().unwrap();
        let full = Arc::new(AtomicUsize::new(MAX_MAPPINGS));
        assert!(PeerMaps::default()
            .address(&me, &full, map, map.base, 8)
            .is_none());
        assert_eq!(full.load(Ordering::Relaxed), MAX_MAPPINGS);
        let count = Arc::new(AtomicUsize::new(0));
        let mut maps = PeerMaps::default();
        assert!(maps.address(&me, &count, map, map.base, 8).is_some());
        assert_eq!(count.load(Ordering::Relaxed), 1);
        drop(maps);
        assert_eq!(count.load(Ordering::Relaxed), 0, "unmapped and given back");
    }

    #[test]
    fn an_unsealed_short_or_foreign_descriptor_is_refused() {
        let me = Pid::this_process();
        let count = Arc::new(AtomicUsize::new(0));
        let mut maps = PeerMaps::default();
        let fd = unsealed(8192);
        let map = LocalMap {
            id: 1,
            base: 0x10_0000,
            len: 8192,
            fd: fd.as_raw_fd() as u32,
        };
        assert!(maps.address(&me, &count, map, map.base, 8).is_none(), "unsealed");
        let buf = HostBuffer::new(4096, true).unwrap();
        let short = LocalMap {
            id: 2,
            len: 8192,
            ..buf.mapping().unwrap()
        };
        assert!(
            maps.address(&me, &count, short, short.base, 8).is_none(),
            "shorter than announced"
        );
        let not_memfd = LocalMap {
            id: 3,
            fd: 0,
            ..buf.mapping().unwrap()
        };
        assert!(
            maps.address(&me, &count, not_memfd, not_memfd.base, 8).is_none(),
            "stdin is no memfd"
        );
        let closed = LocalMap {
            id: 4,
            fd: 1 << 20,
            ..buf.mapping().unwrap()
        };
        assert!(
            maps.address(&me, &count, closed, closed.base, 8).is_none(),
            "no such descriptor"
        );
    }
}
