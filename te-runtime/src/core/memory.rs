//! Registration of local memory and engine-owned buffers, host or device.

use super::*;
use crate::mem::{host_bytes, host_bytes_mut, HostBuffer};
use crate::same_host::device::Exports;

/// Memory the engine allocated: a host mapping it owns, or device memory
/// its driver holds for it.
pub(super) enum Owned {
    /// An anonymous host mapping, unmapped when dropped.
    Host(HostBuffer),
    /// Device memory in this location, freed through its driver.
    Device(Location),
}

impl Owned {
    fn location(&self) -> Location {
        match self {
            Owned::Host(_) => Location::Cpu,
            Owned::Device(loc) => *loc,
        }
    }
}

impl EngineCore {
    /// Registers `len` bytes at `addr` in the engine's location. Device
    /// memory must lie inside one allocation of the location's driver.
    ///
    /// # Safety
    /// The memory must stay valid (mapped, not freed) until
    /// [`unregister`](Self::unregister) has returned `Removed` or the
    /// region has been reported gone; peers with permission write into it.
    pub unsafe fn register(&mut self, addr: u64, len: u64, perm: Perm) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.register_batch(&[(addr, len, perm)]) }
    }

    /// Registers several regions, all or nothing.
    ///
    /// # Safety
    /// As [`register`](Self::register), for every region.
    pub unsafe fn register_batch(&mut self, regions: &[(u64, u64, Perm)]) -> Result<()> {
        self.check_running()?;
        self.check_location()?;
        let loc = self.cfg.location;
        if !loc.is_host() {
            for &(addr, len, _) in regions {
                self.devices.check(loc, addr, len)?;
            }
        }
        let regions: Vec<Region> = regions
            .iter()
            .map(|&(a, l, p)| Region::new(a, l, loc, p))
            .collect();
        self.ep.register_batch(&regions)?;
        self.rdma_register(&regions);
        Ok(())
    }

    /// Host memory always works; a device location needs a driver for it
    /// (`NotSupported` otherwise) and an existing device (`Invalid`).
    pub(super) fn check_location(&mut self) -> Result<()> {
        let loc = self.cfg.location;
        if loc.is_host() {
            return Ok(());
        }
        let (driver, dev) = self.devices.driver(loc)?;
        driver.capacity(dev).map(|_| ())
    }

    /// Starts unregistering the region at base `addr`. `Draining` means
    /// transfers still use it: it is refused to new transfers and removed
    /// when they end ([`region_exists`](Self::region_exists) turns false).
    pub fn unregister(&mut self, addr: u64) -> Result<Unregister> {
        if self.owned.contains_key(&addr) {
            return Err(status!(
                Invalid,
                "memory at {addr:#x} was allocated by the engine: free it with free_memory"
            ));
        }
        self.check_running()?;
        let r = self.ep.unregister(self.cfg.location, addr)?;
        self.release_sends(&r, self.cfg.location, addr);
        self.revoke_keys(self.cfg.location, addr);
        self.rdma_retire(addr);
        Ok(r)
    }

    /// Whether unregistering the region at base `addr` still has to wait:
    /// transfers use it, a peer has not closed its import of it yet, or
    /// its memory region is still registered with the NIC (a peer's RDMA
    /// transfer may still run on it).
    pub fn unregister_pending(&self, addr: u64) -> bool {
        self.region_exists(addr) || self.keys_closing(self.cfg.location, addr) || self.rdma.retiring(addr)
    }

    /// Withdraws every device key from every peer (the engine finalizes):
    /// the exports close as the peers close their imports, before the
    /// links go.
    pub fn withdraw_keys(&mut self) {
        self.withdraw_on_links(|keys, link, devices, now| keys.revoke_all(link, devices, now));
        self.after_work();
    }

    /// Whether a withdrawn device key still waits for its peer.
    pub fn keys_closing_any(&self) -> bool {
        self.conns.iter().flatten().any(|c| c.shm.exports.any_closing())
    }

    /// Whether a peer's key to region `base` in `location` is withdrawn
    /// and its export not closed yet.
    fn keys_closing(&self, location: Location, base: u64) -> bool {
        !location.is_host()
            && self
                .conns
                .iter()
                .flatten()
                .any(|c| c.shm.exports.closing(location, base))
    }

    /// Device region `base` in `location` is being unregistered: every
    /// peer's key to it is withdrawn, and closed once the peer closed its
    /// import (or after `KEY_CLOSE_WAIT`), so that no peer can import it or
    /// copy through an import once unregister has returned.
    fn revoke_keys(&mut self, location: Location, base: u64) {
        if location.is_host() {
            return;
        }
        self.withdraw_on_links(|keys, link, devices, now| keys.revoke(location, base, link, devices, now));
    }

    /// Runs `withdraw` on every connection's exported keys; the
    /// connections where it withdrew one are served now, so that their
    /// withdrawals go at once, not at the next wake-up.
    fn withdraw_on_links(
        &mut self,
        mut withdraw: impl FnMut(&mut Exports, &mut Link, &mut Devices, Instant) -> bool,
    ) {
        let now = self.now();
        let mut withdrawn = Vec::new();
        for (c, conn) in self.conns.iter_mut().enumerate() {
            if let Some(conn) = conn {
                if withdraw(&mut conn.shm.exports, &mut conn.link, &mut self.devices, now) {
                    withdrawn.push(c);
                }
            }
        }
        for c in withdrawn {
            self.service_conn(c);
        }
    }

    /// When a region starts draining, peers' reads of it that have not
    /// started are refused and payloads being sent are copied out (one
    /// frame each at most), so that a peer slow to read cannot hold the
    /// region: the unregister then waits only for payloads landing in it,
    /// same-host copies under way and local tasks.
    fn release_sends(&mut self, r: &Unregister, location: Location, base: u64) {
        let Unregister::Draining { .. } = r else { return };
        // A draining region stays in the registry until its last pin goes.
        let Some(region) = self.ep.registry().region(location, base) else {
            return;
        };
        for conn in self.conns.iter_mut().flatten() {
            conn.link.revoke_draining(self.ep.registry_mut());
            conn.detach_payload(region.span, self.ep.registry_mut());
        }
    }

    /// Whether a region with base `addr` is still registered (or draining).
    pub fn region_exists(&self, addr: u64) -> bool {
        self.ep.registry().pins(self.cfg.location, addr).is_some()
    }

    /// Allocates `len` bytes of zeroed, registered memory in the engine's
    /// location: page-aligned host memory for `cpu`, device memory from the
    /// location's driver otherwise.
    pub fn alloc_memory(&mut self, len: u64, perm: Perm) -> Result<u64> {
        self.check_running()?;
        let loc = self.cfg.location;
        let (addr, owned) = if loc.is_host() {
            let len_usize = usize::try_from(len).map_err(|_| status!(Invalid, "length {len} too large"))?;
            // Shared memory only where a same-host peer may map it: it has
            // no huge pages where the system's shmem setting refuses them.
            let buf = HostBuffer::new(len_usize, self.same_host.enabled())?;
            (buf.addr(), Owned::Host(buf))
        } else {
            self.check_location()?;
            (self.devices.alloc(loc, len)?, Owned::Device(loc))
        };
        let region = Region::new(addr, len, loc, perm);
        if let Err(e) = self.ep.register_batch(&[region]) {
            self.release(addr, owned);
            return Err(e);
        }
        self.owned.insert(addr, owned);
        self.rdma_register(&[region]);
        Ok(addr)
    }

    /// Gives engine-owned memory back: unmaps host memory, frees device
    /// memory. Peers that map a host buffer are told to forget it first:
    /// the withdrawal goes out before any later request, so a buffer mapped
    /// at the same address later is never taken for this one.
    fn release(&mut self, addr: u64, owned: Owned) {
        match owned {
            Owned::Host(buf) => {
                if let Some(m) = buf.mapping() {
                    for conn in self.conns.iter_mut().flatten() {
                        conn.link.same_host_mut().withdraw_local_map(m.id);
                    }
                }
                drop(buf)
            }
            Owned::Device(loc) => {
                if let Err(e) = self.devices.free(loc, addr) {
                    warn!("cannot free {loc} memory at {addr:#x}: {e}");
                }
            }
        }
    }

    /// Starts freeing memory from [`alloc_memory`](Self::alloc_memory):
    /// unregisters it and releases it once no transfer uses it.
    pub fn free_memory(&mut self, addr: u64) -> Result<Unregister> {
        self.check_running()?;
        let Some(loc) = self.owned.get(&addr).map(Owned::location) else {
            return Err(status!(NotFound, "no engine-allocated memory at {addr:#x}"));
        };
        let r = self.ep.unregister(loc, addr)?;
        self.release_sends(&r, loc, addr);
        self.revoke_keys(loc, addr);
        self.rdma_retire(addr);
        self.freeing.push(addr);
        self.reap_owned();
        Ok(r)
    }

    /// Releases the buffers being freed whose region is gone.
    pub(super) fn reap_owned(&mut self) {
        let mut freeing = std::mem::take(&mut self.freeing);
        freeing.retain(|&addr| {
            let Some(loc) = self.owned.get(&addr).map(Owned::location) else {
                return false;
            };
            // Device memory stays allocated until every peer's import of
            // it is closed (CANN's order), not only until nothing pins it.
            let gone = self.ep.registry().pins(loc, addr).is_none()
                && !self.keys_closing(loc, addr)
                && !self.rdma.retiring(addr);
            // Only a buffer nothing pins any more leaves `owned` (and is unmapped).
            if let Some(owned) = gone.then(|| self.owned.remove(&addr)).flatten() {
                self.release(addr, owned);
            }
            !gone
        });
        self.freeing = freeing;
    }

    /// Copies `dst.len()` bytes of local registered memory at `addr` into
    /// `dst`, through the driver for device memory. `NotFound` unless the
    /// range lies in one region of the engine's location.
    pub fn read_memory(&mut self, addr: u64, dst: &mut [u8]) -> Result<()> {
        let span = self.local_span(addr, dst.len())?;
        if span.location.is_host() {
            // SAFETY: the span lies in a registered region (valid until
            // unregistered, by the registrant's promise); the engine writes
            // registered memory only while holding `&mut self`, as here.
            dst.copy_from_slice(unsafe { host_bytes(span) });
            Ok(())
        } else {
            self.devices.read(span, dst)
        }
    }

    /// Copies `src` into local registered memory at `addr`, through the
    /// driver for device memory. `NotFound` unless the range lies in one
    /// region of the engine's location.
    pub fn write_memory(&mut self, addr: u64, src: &[u8]) -> Result<()> {
        let span = self.local_span(addr, src.len())?;
        if span.location.is_host() {
            // SAFETY: as in `read_memory`; `&mut self` also excludes the
            // engine's own payload reads and writes meanwhile.
            unsafe { host_bytes_mut(span) }.copy_from_slice(src);
            Ok(())
        } else {
            self.devices.write(span, src)
        }
    }

    /// The span `[addr, addr + len)` of the engine's location, checked to
    /// lie in one registered region.
    fn local_span(&self, addr: u64, len: usize) -> Result<Span> {
        let span = Span {
            addr,
            len: len as u64,
            location: self.cfg.location,
        };
        self.ep.registry().lookup_local(span)?;
        Ok(span)
    }

    /// Bytes of host memory the connections hold to stage payloads they
    /// send (device payloads, and the rest of a host frame cut loose by an
    /// unregister or a cancel): at most one frame payload per connection,
    /// reused for every payload.
    pub fn staging_bytes(&self) -> usize {
        self.conns.iter().flatten().map(Conn::bounce_len).sum()
    }

    /// The simulated devices of this engine, for fault injection and
    /// statistics.
    #[cfg(feature = "sim")]
    pub fn sim_driver(&mut self) -> &mut te_driver_sim::SimDriver {
        self.devices.sim()
    }

    /// The local regions, sorted by location and address.
    pub fn regions(&self) -> Vec<Region> {
        self.ep.registry().regions().collect()
    }
}
