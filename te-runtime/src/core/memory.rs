//! Registration of local memory and engine-owned buffers.

use super::*;

impl EngineCore {
    /// Registers `len` bytes at `addr` in the engine's default location.
    ///
    /// # Safety
    /// The memory must stay valid (mapped, not freed) until
    /// [`unregister`](Self::unregister) has returned `Removed` or the
    /// region has been reported gone; peers with permission write into it.
    pub unsafe fn register(&mut self, addr: u64, len: u64, perm: Perm) -> Result<()> {
        self.check_running()?;
        self.check_location()?;
        self.reg.register(Region::new(addr, len, self.cfg.location, perm))
    }

    /// Registers several regions, all or nothing.
    ///
    /// # Safety
    /// As [`register`](Self::register), for every region.
    pub unsafe fn register_batch(&mut self, regions: &[(u64, u64, Perm)]) -> Result<()> {
        self.check_running()?;
        self.check_location()?;
        let loc = self.cfg.location;
        let regions: Vec<Region> = regions
            .iter()
            .map(|&(a, l, p)| Region::new(a, l, loc, p))
            .collect();
        self.reg.register_batch(&regions)
    }

    pub(super) fn check_location(&self) -> Result<()> {
        if self.cfg.location.is_host() {
            Ok(())
        } else {
            Err(status!(
                NotSupported,
                "location {} needs a device driver this engine was built without",
                self.cfg.location
            ))
        }
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
        self.reg.unregister(self.cfg.location, addr)
    }

    /// Whether a region with base `addr` is still registered (or draining).
    pub fn region_exists(&self, addr: u64) -> bool {
        self.reg.pins(self.cfg.location, addr).is_some()
    }

    /// Allocates `len` bytes of page-aligned, zeroed, registered host memory.
    pub fn alloc_memory(&mut self, len: u64, perm: Perm) -> Result<u64> {
        self.check_running()?;
        let len_usize = usize::try_from(len).map_err(|_| status!(Invalid, "length {len} too large"))?;
        let buf = HostBuffer::new(len_usize)?;
        let addr = buf.addr();
        self.reg.register(Region::new(addr, len, Location::Cpu, perm))?;
        self.owned.insert(addr, buf);
        Ok(addr)
    }

    /// Starts freeing memory from [`alloc_memory`](Self::alloc_memory):
    /// unregisters it and unmaps it once no transfer uses it.
    pub fn free_memory(&mut self, addr: u64) -> Result<Unregister> {
        if !self.owned.contains_key(&addr) {
            return Err(status!(NotFound, "no engine-allocated memory at {addr:#x}"));
        }
        let r = self.reg.unregister(Location::Cpu, addr)?;
        self.freeing.push(addr);
        self.reap_owned();
        Ok(r)
    }

    /// Unmaps the buffers being freed whose region is gone.
    pub(super) fn reap_owned(&mut self) {
        let (reg, owned) = (&self.reg, &mut self.owned);
        self.freeing.retain(|addr| {
            let gone = reg.pins(Location::Cpu, *addr).is_none();
            if gone {
                owned.remove(addr);
            }
            !gone
        });
    }

    /// The local regions, sorted by location and address.
    pub fn regions(&self) -> Vec<Region> {
        self.reg.regions().collect()
    }
}
