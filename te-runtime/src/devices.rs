//! Device memory through its drivers: which driver serves a location, and
//! the copies between device memory and host bytes that the data path and
//! the API need. Everything here goes through te-proto's
//! [`DeviceDriver`] interface; only the construction knows which drivers
//! this engine was built with (`sim` and `ascend` with the cargo features
//! of those names). The Ascend driver loads `libascendcl.so` at the first
//! use of an `npu:N` location (at start for an engine in one), so an engine
//! that never touches NPU memory never loads it.

use te_proto::driver::{CopyId, CopyOp, DeviceAddr, DeviceDriver, DeviceIndex, IpcKey, StagingId};
use te_proto::{status, Instant, Location, Result, Span};

use crate::config::EngineConfig;
use crate::staging::Copy;

/// The device drivers of one engine.
pub(crate) struct Devices {
    #[cfg(feature = "sim")]
    sim: te_driver_sim::SimDriver,
    #[cfg(feature = "ascend")]
    ascend: Ascend,
}

/// The Ascend driver, loaded at first use.
#[cfg(feature = "ascend")]
enum Ascend {
    /// Not needed yet: how to load it.
    Unloaded(te_driver_ascend::AscendConfig),
    Loaded(Box<te_driver_ascend::AscendDriver>),
}

impl Devices {
    /// The drivers this engine was built with, set up as `cfg` says.
    pub fn new(cfg: &EngineConfig) -> Result<Devices> {
        #[cfg(not(feature = "sim"))]
        let _ = cfg;
        let mut devices = Devices {
            #[cfg(feature = "sim")]
            sim: te_driver_sim::SimDriver::new(cfg.sim)?,
            #[cfg(feature = "ascend")]
            ascend: Ascend::Unloaded(cfg.ascend.clone()),
        };
        // An engine in a location without a driver would fail only at its
        // first allocation: refuse it now.
        if !cfg.location.is_host() {
            devices.driver(cfg.location)?;
        }
        Ok(devices)
    }

    /// The driver of device location `loc`, and the device's index in it.
    /// `NotSupported` for a kind of device without a driver here.
    pub fn driver(&mut self, loc: Location) -> Result<(&mut dyn DeviceDriver, DeviceIndex)> {
        match loc {
            #[cfg(feature = "sim")]
            Location::Sim(n) => Ok((&mut self.sim, n)),
            Location::Cpu => Err(status!(Invalid, "cpu memory has no device driver")),
            #[cfg(feature = "ascend")]
            Location::Npu(n) => match self.ascend() {
                Ok(d) => Ok((d, n)),
                Err(e) => Err(status!(=e.code(), "{loc}: {}", e.message())),
            },
            #[cfg(not(feature = "ascend"))]
            Location::Npu(_) => Err(status!(
                NotSupported,
                "location {loc} needs the Ascend NPU driver (te-driver-ascend), which this build does not have"
            )),
            #[allow(unreachable_patterns)]
            other => Err(status!(
                NotSupported,
                "location {other} needs a device driver this engine was built without"
            )),
        }
    }

    /// The Ascend driver, loaded now if it was not: `NotSupported` naming
    /// the library tried or the symbol missing (the whole reason is logged).
    #[cfg(feature = "ascend")]
    fn ascend(&mut self) -> Result<&mut te_driver_ascend::AscendDriver> {
        if let Ascend::Unloaded(cfg) = &self.ascend {
            let driver = te_driver_ascend::AscendDriver::new(cfg.clone()).map_err(|e| {
                tracing::warn!("npu memory unavailable: {e}");
                e.status()
            })?;
            tracing::info!("npu: ACL loaded from {}", driver.library_path().display());
            self.ascend = Ascend::Loaded(Box::new(driver));
        }
        match &mut self.ascend {
            Ascend::Loaded(d) => Ok(d),
            Ascend::Unloaded(_) => Err(status!(RuntimeError, "npu driver not loaded")),
        }
    }

    /// The simulated devices, for fault injection and statistics.
    #[cfg(feature = "sim")]
    pub fn sim(&mut self) -> &mut te_driver_sim::SimDriver {
        &mut self.sim
    }

    /// Whether this engine can import a same-host peer's device buffers
    /// (`Caps::DEVICE_IPC`): in a device location, its driver has
    /// inter-process memory; in host memory, the Ascend driver is built in
    /// and its library can be found (it is loaded at the first import).
    pub fn imports(&mut self, cfg: &EngineConfig) -> bool {
        match cfg.location {
            Location::Cpu => {
                #[cfg(feature = "ascend")]
                return te_driver_ascend::library::findable(cfg.ascend.library.as_deref());
                #[cfg(not(feature = "ascend"))]
                return false;
            }
            loc => self.driver(loc).is_ok_and(|(d, _)| d.ipc_supported()),
        }
    }

    /// Whether `loc`'s driver has inter-process memory (loading it if
    /// needed); false for host memory.
    pub fn ipc(&mut self, loc: Location) -> bool {
        !loc.is_host() && self.driver(loc).is_ok_and(|(d, _)| d.ipc_supported())
    }

    /// Exports the device span `span` to process `importer`.
    pub fn export(&mut self, span: Span, importer: u32) -> Result<IpcKey> {
        let (d, dev) = self.driver(span.location)?;
        d.export_range(dev, DeviceAddr(span.addr), span.len, importer)
    }

    /// Revokes an export of [`export`](Self::export) in `loc`.
    pub fn close_export(&mut self, loc: Location, key: &IpcKey) -> Result<()> {
        let (d, _) = self.driver(loc)?;
        d.close_export(key)
    }

    /// Imports `len` bytes a peer exported from its `peer` device under
    /// `key`, for copies on `on` (a device of the same driver); the address
    /// is in `on`.
    pub fn import(&mut self, on: Location, peer: Location, key: &IpcKey, len: u64) -> Result<u64> {
        let peer_dev = match (on, peer) {
            (Location::Npu(_), Location::Npu(p)) | (Location::Sim(_), Location::Sim(p)) => p,
            _ => {
                return Err(status!(
                    NotSupported,
                    "{peer} memory cannot be imported for copies on {on}"
                ))
            }
        };
        let (d, dev) = self.driver(on)?;
        d.import_range(dev, peer_dev, key, len).map(|a| a.0)
    }

    /// Unmaps an import of [`import`](Self::import).
    pub fn close_import(&mut self, on: Location, addr: u64) -> Result<()> {
        let (d, dev) = self.driver(on)?;
        d.close_import(dev, DeviceAddr(addr))
    }

    /// Starts an asynchronous copy from device span `src` to `dst`, both on
    /// one device (the length is `src`'s).
    pub fn submit_device(&mut self, now: Instant, src: Span, dst: Span) -> Result<Copy> {
        if src.location != dst.location {
            return Err(status!(
                NotSupported,
                "asynchronous copy from {} to {}: one device only",
                src.location,
                dst.location
            ));
        }
        let (d, dev) = self.driver(src.location)?;
        let id = d.submit_copy(
            now,
            CopyOp::Device {
                src_dev: dev,
                src: DeviceAddr(src.addr),
                dst_dev: dev,
                dst: DeviceAddr(dst.addr),
                len: src.len,
            },
        )?;
        Ok(Copy {
            loc: src.location,
            id,
        })
    }

    /// Copies device span `src` to `dst` (one driver), now.
    pub fn copy_device(&mut self, src: Span, dst: Span) -> Result<()> {
        let (d, src_dev) = self.driver(src.location)?;
        let dst_dev = match (src.location, dst.location) {
            (Location::Npu(_), Location::Npu(n)) | (Location::Sim(_), Location::Sim(n)) => n,
            (a, b) => return Err(status!(NotSupported, "device copy from {a} to {b}")),
        };
        d.copy_device(
            src_dev,
            DeviceAddr(src.addr),
            dst_dev,
            DeviceAddr(dst.addr),
            src.len,
        )
    }

    /// Allocates `len` bytes of device memory in `loc`.
    pub fn alloc(&mut self, loc: Location, len: u64) -> Result<u64> {
        let (d, dev) = self.driver(loc)?;
        d.alloc(dev, len).map(|a| a.0)
    }

    /// Frees device memory from [`alloc`](Self::alloc).
    pub fn free(&mut self, loc: Location, addr: u64) -> Result<()> {
        let (d, dev) = self.driver(loc)?;
        d.free(dev, DeviceAddr(addr))
    }

    /// Checks that `[addr, addr + len)` is device memory of one allocation in `loc`.
    pub fn check(&mut self, loc: Location, addr: u64, len: u64) -> Result<()> {
        let (d, dev) = self.driver(loc)?;
        d.check_range(dev, DeviceAddr(addr), len)
    }

    /// Copies the device span `span` (its first `dst.len()` bytes) into `dst`.
    pub fn read(&mut self, span: Span, dst: &mut [u8]) -> Result<()> {
        let (d, dev) = self.driver(span.location)?;
        d.copy_to_host(dev, DeviceAddr(span.addr), dst)
    }

    /// Copies `src` to the device span `span`.
    pub fn write(&mut self, span: Span, src: &[u8]) -> Result<()> {
        let (d, dev) = self.driver(span.location)?;
        d.copy_from_host(dev, src, DeviceAddr(span.addr))
    }

    /// A pinned staging buffer of `len` bytes from `loc`'s driver.
    pub fn alloc_staging(&mut self, loc: Location, len: usize) -> Result<StagingId> {
        let (d, _) = self.driver(loc)?;
        d.alloc_staging(len as u64)
    }

    /// Gives a staging buffer back to `loc`'s driver.
    pub fn free_staging(&mut self, loc: Location, id: StagingId) -> Result<()> {
        let (d, _) = self.driver(loc)?;
        d.free_staging(id)
    }

    /// The bytes of a staging buffer of `loc`'s driver.
    pub fn staging(&mut self, loc: Location, id: StagingId) -> Result<&[u8]> {
        let (d, _) = self.driver(loc)?;
        d.staging(id)
    }

    /// The bytes of a staging buffer of `loc`'s driver, for writing.
    pub fn staging_mut(&mut self, loc: Location, id: StagingId) -> Result<&mut [u8]> {
        let (d, _) = self.driver(loc)?;
        d.staging_mut(id)
    }

    /// Starts the asynchronous copy `op(device, addr)` on `loc`'s device,
    /// `addr` being the device address in `loc` it touches.
    pub fn submit(
        &mut self,
        now: Instant,
        loc: Location,
        addr: u64,
        op: impl FnOnce(DeviceIndex, DeviceAddr) -> CopyOp,
    ) -> Result<Copy> {
        let (d, dev) = self.driver(loc)?;
        let id = d.submit_copy(now, op(dev, DeviceAddr(addr)))?;
        Ok(Copy { loc, id })
    }

    /// The outcome of copy `id` of `loc`'s driver once it has ended.
    pub fn poll(&mut self, now: Instant, loc: Location, id: CopyId) -> Option<Result<()>> {
        match self.driver(loc) {
            Ok((d, _)) => d.poll_copy(id, now),
            Err(e) => Some(Err(e)),
        }
    }
}
