//! Memory regions: access flags from te's [`Perm`], and what the driver keeps per region.

use te_proto::Perm;

use crate::abi::*;
use crate::conn::RemoteKey;

/// The `IBV_ACCESS_*` flags of a region with `perm`: always local write (the NIC writes what
/// an RDMA READ brings in), plus remote read and remote write as `perm` grants them, so the
/// NIC itself refuses what te's permission refuses.
pub fn access_flags(perm: Perm) -> i32 {
    let mut a = IBV_ACCESS_LOCAL_WRITE;
    if perm.contains(Perm::REMOTE_READ) {
        a |= IBV_ACCESS_REMOTE_READ;
    }
    if perm.contains(Perm::REMOTE_WRITE) {
        a |= IBV_ACCESS_REMOTE_WRITE;
    }
    a
}

/// A registered region, as the caller sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// The local key (names the region in local SGEs and in [`deregister`](crate::RdmaDriver::deregister)).
    pub lkey: u32,
    /// The remote key peers use.
    pub rkey: u32,
    /// The permission it was registered with.
    pub perm: Perm,
}

impl MemoryRegion {
    /// What a peer needs to access this region (share it only when `perm` is not local only).
    pub fn remote_key(&self) -> RemoteKey {
        RemoteKey {
            addr: self.addr,
            len: self.len,
            rkey: self.rkey,
        }
    }

    /// Whether `[addr, addr + len)` lies inside the region.
    pub fn covers(&self, addr: u64, len: u64) -> bool {
        addr >= self.addr && addr.checked_add(len).is_some_and(|e| e <= self.addr + self.len)
    }
}

/// Outcome of [`RdmaDriver::deregister`](crate::RdmaDriver::deregister).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deregister {
    /// `ibv_dereg_mr` returned: the NIC refuses the keys from now on.
    Done,
    /// Transfers on the region are in flight; it takes no new ones, and `ibv_dereg_mr` runs
    /// when the last ends (reported as [`Event::Deregistered`](crate::Event::Deregistered)).
    Deferred {
        /// Transfers still using it.
        transfers: u32,
    },
}

/// The driver's record of one region.
pub(crate) struct MrSlot {
    pub raw: *mut IbvMr,
    pub region: MemoryRegion,
    /// Transfers using it as their local side.
    pub users: u32,
    /// Deregistration asked; done when `users` drops to 0.
    pub closing: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_flags_follow_the_permission() {
        assert_eq!(access_flags(Perm::LOCAL_ONLY), IBV_ACCESS_LOCAL_WRITE);
        assert_eq!(
            access_flags(Perm::REMOTE_READ),
            IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ
        );
        assert_eq!(
            access_flags(Perm::REMOTE_READ_WRITE),
            IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE
        );
        let r = MemoryRegion {
            addr: 100,
            len: 10,
            lkey: 1,
            rkey: 1,
            perm: Perm::REMOTE_READ,
        };
        assert!(r.covers(100, 10) && r.covers(105, 0) && !r.covers(99, 2) && !r.covers(105, 6));
        assert!(!r.covers(u64::MAX, 2));
    }
}
