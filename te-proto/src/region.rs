//! Registered memory regions, their permissions and memory spans.

use bitflags::bitflags;

use crate::location::Location;

bitflags! {
    /// What a peer may do with a region. The empty set means local only:
    /// the region may be the local side of a transfer but no peer may touch
    /// it. There is no `Default`: granting peers access is always said.
    /// (APIs that take no permission, like TENT's and the compatible Python
    /// modules', register [`Perm::REMOTE_READ_WRITE`].)
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Perm: u8 {
        /// Peers may read the region.
        const REMOTE_READ = 0b01;
        /// Peers may write the region.
        const REMOTE_WRITE = 0b10;
    }
}

impl Perm {
    /// Local only: usable as the local side of transfers, invisible to peers.
    pub const LOCAL_ONLY: Perm = Perm::empty();
    /// Peers may read and write.
    pub const REMOTE_READ_WRITE: Perm = Perm::REMOTE_READ.union(Perm::REMOTE_WRITE);
}

/// A span of memory: `len` bytes from `addr` in `location`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    /// First byte.
    pub addr: u64,
    /// Number of bytes.
    pub len: u64,
    /// Where the bytes live.
    pub location: Location,
}

impl Span {
    /// A span of host memory.
    pub const fn cpu(addr: u64, len: u64) -> Span {
        Span {
            addr,
            len,
            location: Location::Cpu,
        }
    }

    /// One past the last byte, or `None` when the span wraps the address space.
    pub const fn end(&self) -> Option<u64> {
        self.addr.checked_add(self.len)
    }

    /// The sub-span `[offset, offset + len)`; the caller guarantees it lies inside.
    pub(crate) const fn slice(&self, offset: u64, len: u64) -> Span {
        Span {
            addr: self.addr + offset,
            len,
            location: self.location,
        }
    }
}

/// A registered region: a span with permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Region {
    /// The memory.
    pub span: Span,
    /// What peers may do with it.
    pub perm: Perm,
}

/// A region listed with no rkey (registered with no RDMA device), as
/// [`encode_info_reply`](crate::wire::encode_info_reply) takes it.
impl From<Region> for (Region, Option<u32>) {
    fn from(r: Region) -> (Region, Option<u32>) {
        (r, None)
    }
}

impl Region {
    /// A region of `len` bytes at `addr` in `location` with `perm`.
    pub const fn new(addr: u64, len: u64, location: Location, perm: Perm) -> Region {
        Region {
            span: Span { addr, len, location },
            perm,
        }
    }
}
