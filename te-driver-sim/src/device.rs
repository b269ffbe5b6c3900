//! [`SimDriver`]: simulated device memory behind the
//! [`DeviceDriver`] interface, with deterministic fault injection.
//!
//! Each device keeps its allocations in host vectors, but hands out
//! addresses in a range no host mapping can have: device `d` allocates at
//! `0xD000_0000_0000_0000 | d << 44 | offset` (non-canonical on x86-64 and
//! AArch64), so code that treats a device address as a host pointer
//! faults at once instead of reading the wrong bytes. Offsets only grow
//! (with a page of gap between allocations), so a freed or neighbouring
//! address never aliases a live allocation.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use te_proto::driver::{Capacity, CopyId, CopyOp, DeviceAddr, DeviceDriver, DeviceIndex, StagingId};
use te_proto::{status, ErrorCode, Instant, Result, Status};

/// High bits shared by every sim device address.
const SIM_TAG: u64 = 0xD000_0000_0000_0000;
/// Mask of the tag bits.
const TAG_MASK: u64 = 0xF000_0000_0000_0000;
/// Bits of the in-device offset.
const OFFSET_BITS: u32 = 44;
/// Largest number of devices (8 bits of index above the offset).
pub const MAX_DEVICES: DeviceIndex = 256;
/// Allocation granularity and the gap between allocations.
const PAGE: u64 = 4096;

/// How a [`SimDriver`] is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// Number of devices, `sim:0` to `sim:{devices - 1}` (default 8, at most
    /// [`MAX_DEVICES`]).
    pub devices: DeviceIndex,
    /// Bytes each device holds (default 4 GiB; only allocated bytes use host
    /// memory).
    pub capacity: u64,
    /// Bytes of staging buffers the driver hands out in all (default 256 MiB).
    pub staging_capacity: u64,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            devices: 8,
            capacity: 4 << 30,
            staging_capacity: 256 << 20,
        }
    }
}

/// Faults injected into one device; all deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Fail the device's operation number `n` (counted from 1 since the
    /// driver started; see [`DeviceStats::ops`]) with this code. Every
    /// allocation, free, copy and submitted asynchronous copy that passes
    /// argument checks is one operation of each device it touches. The
    /// failed operation has no effect.
    pub fail_op: Option<(u64, ErrorCode)>,
    /// Asynchronous copies touching the device complete this long after
    /// their submission, measured against the `now` passed to
    /// [`DeviceDriver::poll_copy`]. Synchronous copies are not delayed.
    pub latency: Duration,
    /// Refuse allocations that would take the device's use beyond this many
    /// bytes (below its capacity).
    pub alloc_limit: Option<u64>,
}

/// What a device has done, for tests that check how it was used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Operations counted so far (the numbering of [`Faults::fail_op`]).
    pub ops: u64,
    /// Copies from the device into host memory that succeeded.
    pub copies_to_host: u64,
    /// Copies from host memory into the device that succeeded.
    pub copies_from_host: u64,
    /// Bytes moved by those copies, to and from the host together.
    pub host_bytes: u64,
    /// The largest single copy to or from host memory, in bytes.
    pub largest_host_copy: u64,
    /// Device-to-device copies touching this device that succeeded.
    pub device_copies: u64,
    /// Live allocations.
    pub allocations: u64,
}

#[derive(Default)]
struct Device {
    /// Allocations by offset.
    allocs: BTreeMap<u64, Vec<u8>>,
    next: u64,
    used: u64,
    faults: Faults,
    stats: DeviceStats,
    gone: bool,
}

/// Host bytes of a copy: its destination or its source.
enum Host<'a> {
    /// Device to host.
    To(&'a mut [u8]),
    /// Host to device.
    From(&'a [u8]),
}

struct Pending {
    op: CopyOp,
    ready: Instant,
    injected: Option<Status>,
}

/// Simulated devices. See the [module docs](self).
pub struct SimDriver {
    cfg: SimConfig,
    devices: Vec<Device>,
    staging: HashMap<u32, Vec<u8>>,
    staging_used: u64,
    next_staging: u32,
    staging_allocs: u64,
    copies: HashMap<u64, Pending>,
    next_copy: u64,
}

impl SimDriver {
    /// A driver with `cfg.devices` empty devices. `Invalid` for zero
    /// devices, more than [`MAX_DEVICES`], or zero capacity.
    pub fn new(cfg: SimConfig) -> Result<SimDriver> {
        if cfg.devices == 0 || cfg.devices > MAX_DEVICES {
            return Err(status!(
                Invalid,
                "{} sim devices: expected 1..={MAX_DEVICES}",
                cfg.devices
            ));
        }
        if cfg.capacity == 0 || cfg.capacity >= 1 << OFFSET_BITS {
            return Err(status!(
                Invalid,
                "sim device capacity {} out of range 1..{}",
                cfg.capacity,
                1u64 << OFFSET_BITS
            ));
        }
        Ok(SimDriver {
            cfg,
            devices: (0..cfg.devices).map(|_| Device::default()).collect(),
            staging: HashMap::new(),
            staging_used: 0,
            next_staging: 0,
            staging_allocs: 0,
            copies: HashMap::new(),
            next_copy: 0,
        })
    }

    /// Replaces the faults injected into `dev`.
    pub fn set_faults(&mut self, dev: DeviceIndex, faults: Faults) -> Result<()> {
        self.device_mut(dev)?.faults = faults;
        Ok(())
    }

    /// Makes `dev` disappear: its memory is lost and every later operation
    /// on it, copies in flight included, fails `Disconnected`.
    pub fn disappear(&mut self, dev: DeviceIndex) -> Result<()> {
        let d = self.device_mut(dev)?;
        d.gone = true;
        d.allocs.clear();
        d.used = 0;
        Ok(())
    }

    /// What `dev` has done so far.
    pub fn stats(&self, dev: DeviceIndex) -> Result<DeviceStats> {
        let d = self.device(dev)?;
        Ok(DeviceStats {
            allocations: d.allocs.len() as u64,
            ..d.stats
        })
    }

    /// Staging buffers allocated since the driver started (freed ones
    /// included).
    pub fn staging_allocations(&self) -> u64 {
        self.staging_allocs
    }

    fn device(&self, dev: DeviceIndex) -> Result<&Device> {
        self.devices
            .get(usize::from(dev))
            .ok_or_else(|| status!(Invalid, "no device sim:{dev}: {} sim devices", self.cfg.devices))
    }

    fn device_mut(&mut self, dev: DeviceIndex) -> Result<&mut Device> {
        let n = self.cfg.devices;
        self.devices
            .get_mut(usize::from(dev))
            .ok_or_else(|| status!(Invalid, "no device sim:{dev}: {n} sim devices"))
    }

    /// The device, if it is there at all.
    fn present(&self, dev: DeviceIndex) -> Result<&Device> {
        let d = self.device(dev)?;
        if d.gone {
            return Err(status!(Disconnected, "device sim:{dev} has disappeared"));
        }
        Ok(d)
    }

    /// Counts one operation on `dev` and fails it if a fault says so.
    fn count_op(&mut self, dev: DeviceIndex) -> Result<()> {
        let d = self.device_mut(dev)?;
        d.stats.ops += 1;
        match d.faults.fail_op {
            Some((n, code)) if n == d.stats.ops => Err(status!(
                =code,
                "sim:{dev}: injected failure of operation {n}"
            )),
            _ => Ok(()),
        }
    }

    /// Counts one operation on each device of `devs` (once per device);
    /// the first injected failure wins.
    fn count_ops(&mut self, a: DeviceIndex, b: DeviceIndex) -> Result<()> {
        let first = self.count_op(a);
        let second = if a == b { Ok(()) } else { self.count_op(b) };
        first.and(second)
    }

    /// The allocation holding `[addr, addr + len)` on `dev`: its offset and
    /// the range's start within it.
    fn locate(&self, dev: DeviceIndex, addr: DeviceAddr, len: u64) -> Result<(u64, usize)> {
        let d = self.present(dev)?;
        let a = addr.0;
        if a & TAG_MASK != SIM_TAG {
            return Err(status!(Invalid, "{addr} is not a sim device address"));
        }
        let owner = (a & !TAG_MASK) >> OFFSET_BITS;
        if owner != u64::from(dev) {
            return Err(status!(Invalid, "{addr} belongs to sim:{owner}, not sim:{dev}"));
        }
        let off = a & ((1 << OFFSET_BITS) - 1);
        let end = off
            .checked_add(len)
            .ok_or_else(|| status!(Invalid, "sim:{dev}: {len} bytes at {addr} wrap around"))?;
        let Some((&base, mem)) = d.allocs.range(..=off).next_back() else {
            return Err(status!(Invalid, "sim:{dev}: {addr} is not allocated"));
        };
        let alloc_end = base + mem.len() as u64;
        if off >= alloc_end {
            return Err(status!(Invalid, "sim:{dev}: {addr} is not allocated"));
        }
        if end > alloc_end {
            return Err(status!(
                Invalid,
                "sim:{dev}: {len} bytes at {addr} run past the allocation's end ({} bytes left)",
                alloc_end - off
            ));
        }
        Ok((base, (off - base) as usize))
    }

    fn bytes(&self, dev: DeviceIndex, addr: DeviceAddr, len: u64) -> Result<&[u8]> {
        let (base, start) = self.locate(dev, addr, len)?;
        Ok(&self.devices[usize::from(dev)].allocs[&base][start..start + len as usize])
    }

    fn bytes_mut(&mut self, dev: DeviceIndex, addr: DeviceAddr, len: u64) -> Result<&mut [u8]> {
        let (base, start) = self.locate(dev, addr, len)?;
        let mem = self.devices[usize::from(dev)]
            .allocs
            .get_mut(&base)
            .ok_or_else(|| status!(Invalid, "sim:{dev}: {addr} is not allocated"))?;
        Ok(&mut mem[start..start + len as usize])
    }

    fn staging_range(&self, id: StagingId, offset: u64, len: u64) -> Result<()> {
        let buf = self.staging_buf(id)?;
        match offset.checked_add(len) {
            Some(end) if end <= buf.len() as u64 => Ok(()),
            _ => Err(status!(
                Invalid,
                "{len} bytes at offset {offset} run past staging buffer {} of {} bytes",
                id.0,
                buf.len()
            )),
        }
    }

    fn staging_buf(&self, id: StagingId) -> Result<&Vec<u8>> {
        self.staging
            .get(&id.0)
            .ok_or_else(|| status!(Invalid, "no staging buffer {}", id.0))
    }

    /// `NotReady` while a copy in flight uses staging buffer `id`.
    fn staging_idle(&self, id: StagingId) -> Result<()> {
        let busy = self
            .copies
            .iter()
            .find(|(_, p)| p.op.staging().is_some_and(|(s, _, _)| s == id));
        match busy {
            Some((copy, _)) => Err(status!(
                NotReady,
                "staging buffer {} is in use by copy {copy}",
                id.0
            )),
            None => Ok(()),
        }
    }

    /// Checks an asynchronous copy's arguments; returns the devices it
    /// touches (the same one twice for a copy to or from the host).
    fn check_op(&self, op: &CopyOp) -> Result<(DeviceIndex, DeviceIndex)> {
        for (dev, addr, len) in op.device_ranges() {
            self.locate(dev, addr, len)?;
        }
        if let Some((staging, offset, len)) = op.staging() {
            self.staging_range(staging, offset, len)?;
            self.staging_idle(staging)?;
        }
        let mut devs = op.device_ranges().map(|(d, _, _)| d);
        let first = devs.next().unwrap_or_default();
        Ok((first, devs.next().unwrap_or(first)))
    }

    /// Performs an asynchronous copy at its completion.
    fn run_op(&mut self, op: CopyOp) -> Result<()> {
        match op {
            CopyOp::ToHost {
                dev,
                src,
                staging,
                offset,
                len,
            } => self.with_staging(staging, offset, len, |s, buf| {
                s.host_copy(dev, src, Host::To(buf))
            }),
            CopyOp::FromHost {
                staging,
                offset,
                dev,
                dst,
                len,
            } => self.with_staging(staging, offset, len, |s, buf| {
                s.host_copy(dev, dst, Host::From(buf))
            }),
            CopyOp::Device {
                src_dev,
                src,
                dst_dev,
                dst,
                len,
            } => self.move_device(src_dev, src, dst_dev, dst, len),
        }
    }

    /// Runs `f` on `len` bytes at `offset` of staging buffer `id`, taken out
    /// of the table meanwhile so that `f` may use the driver.
    fn with_staging(
        &mut self,
        id: StagingId,
        offset: u64,
        len: u64,
        f: impl FnOnce(&mut Self, &mut [u8]) -> Result<()>,
    ) -> Result<()> {
        let mut buf = self.staging.remove(&id.0).unwrap_or_default();
        let r = staged(&mut buf, id, offset, len).and_then(|part| f(self, part));
        self.staging.insert(id.0, buf);
        r
    }

    /// Copies between `addr` on `dev` and host bytes, in the direction
    /// `host` says; the operation has been counted.
    fn host_copy(&mut self, dev: DeviceIndex, addr: DeviceAddr, host: Host<'_>) -> Result<()> {
        let (len, to_host) = match host {
            Host::To(dst) => {
                dst.copy_from_slice(self.bytes(dev, addr, dst.len() as u64)?);
                (dst.len() as u64, true)
            }
            Host::From(src) => {
                self.bytes_mut(dev, addr, src.len() as u64)?.copy_from_slice(src);
                (src.len() as u64, false)
            }
        };
        let s = &mut self.devices[usize::from(dev)].stats;
        if to_host {
            s.copies_to_host += 1;
        } else {
            s.copies_from_host += 1;
        }
        s.host_bytes += len;
        s.largest_host_copy = s.largest_host_copy.max(len);
        Ok(())
    }

    /// The device-to-device copy itself, arguments already counted.
    fn move_device(
        &mut self,
        src_dev: DeviceIndex,
        src: DeviceAddr,
        dst_dev: DeviceIndex,
        dst: DeviceAddr,
        len: u64,
    ) -> Result<()> {
        let (src_base, src_start) = self.locate(src_dev, src, len)?;
        let (dst_base, dst_start) = self.locate(dst_dev, dst, len)?;
        let n = len as usize;
        // Take the destination allocation out, so that the source can be
        // borrowed beside it; the same allocation copies within itself.
        let dst_allocs = &mut self.devices[usize::from(dst_dev)].allocs;
        let mut target = dst_allocs.remove(&dst_base).unwrap_or_default();
        if src_dev == dst_dev && src_base == dst_base {
            target.copy_within(src_start..src_start + n, dst_start);
        } else {
            let from = &self.devices[usize::from(src_dev)].allocs[&src_base];
            target[dst_start..dst_start + n].copy_from_slice(&from[src_start..src_start + n]);
        }
        self.devices[usize::from(dst_dev)].allocs.insert(dst_base, target);
        self.devices[usize::from(src_dev)].stats.device_copies += 1;
        if src_dev != dst_dev {
            self.devices[usize::from(dst_dev)].stats.device_copies += 1;
        }
        Ok(())
    }

    fn latency(&self, a: DeviceIndex, b: DeviceIndex) -> Duration {
        let of = |d: DeviceIndex| self.devices[usize::from(d)].faults.latency;
        of(a).max(of(b))
    }
}

/// `len` bytes at `offset` of staging buffer `id`'s bytes `buf`.
fn staged(buf: &mut [u8], id: StagingId, offset: u64, len: u64) -> Result<&mut [u8]> {
    let start = usize::try_from(offset).ok();
    let end = offset.checked_add(len).and_then(|e| usize::try_from(e).ok());
    match (start, end) {
        (Some(s), Some(e)) if e <= buf.len() => Ok(&mut buf[s..e]),
        _ => Err(status!(
            Invalid,
            "{len} bytes at offset {offset} run past staging buffer {} of {} bytes",
            id.0,
            buf.len()
        )),
    }
}

impl DeviceDriver for SimDriver {
    fn kind(&self) -> &'static str {
        "sim"
    }

    fn device_count(&self) -> DeviceIndex {
        self.cfg.devices
    }

    fn capacity(&self, dev: DeviceIndex) -> Result<Capacity> {
        let d = self.present(dev)?;
        Ok(Capacity {
            total: self.cfg.capacity,
            used: d.used,
        })
    }

    fn alloc(&mut self, dev: DeviceIndex, len: u64) -> Result<DeviceAddr> {
        let d = self.present(dev)?;
        if len == 0 {
            return Err(status!(Invalid, "sim:{dev}: allocation of 0 bytes"));
        }
        let limit = d
            .faults
            .alloc_limit
            .map_or(self.cfg.capacity, |l| l.min(self.cfg.capacity));
        if len > limit.saturating_sub(d.used) {
            return Err(status!(
                RuntimeError,
                "sim:{dev}: cannot allocate {len} bytes: {} of {limit} bytes in use",
                d.used
            ));
        }
        let span = len.div_ceil(PAGE) * PAGE + PAGE;
        let off = d.next;
        let next = off
            .checked_add(span)
            .filter(|n| *n < 1 << OFFSET_BITS)
            .ok_or_else(|| status!(RuntimeError, "sim:{dev}: address space exhausted"))?;
        self.count_op(dev)?;
        let d = self.device_mut(dev)?;
        d.next = next;
        d.used += len;
        d.allocs.insert(off, vec![0; len as usize]);
        Ok(DeviceAddr(SIM_TAG | u64::from(dev) << OFFSET_BITS | off))
    }

    fn free(&mut self, dev: DeviceIndex, addr: DeviceAddr) -> Result<()> {
        let (base, start) = self.locate(dev, addr, 1)?;
        if start != 0 {
            return Err(status!(
                Invalid,
                "sim:{dev}: {addr} is inside an allocation, not its start"
            ));
        }
        self.count_op(dev)?;
        let d = self.device_mut(dev)?;
        if let Some(mem) = d.allocs.remove(&base) {
            d.used -= mem.len() as u64;
        }
        Ok(())
    }

    fn check_range(&self, dev: DeviceIndex, addr: DeviceAddr, len: u64) -> Result<()> {
        if len == 0 {
            return Err(status!(Invalid, "sim:{dev}: empty range at {addr}"));
        }
        self.locate(dev, addr, len).map(|_| ())
    }

    fn copy_to_host(&mut self, dev: DeviceIndex, src: DeviceAddr, dst: &mut [u8]) -> Result<()> {
        self.locate(dev, src, dst.len() as u64)?;
        self.count_op(dev)?;
        self.host_copy(dev, src, Host::To(dst))
    }

    fn copy_from_host(&mut self, dev: DeviceIndex, src: &[u8], dst: DeviceAddr) -> Result<()> {
        self.locate(dev, dst, src.len() as u64)?;
        self.count_op(dev)?;
        self.host_copy(dev, dst, Host::From(src))
    }

    fn copy_device(
        &mut self,
        src_dev: DeviceIndex,
        src: DeviceAddr,
        dst_dev: DeviceIndex,
        dst: DeviceAddr,
        len: u64,
    ) -> Result<()> {
        self.locate(src_dev, src, len)?;
        self.locate(dst_dev, dst, len)?;
        self.count_ops(src_dev, dst_dev)?;
        self.move_device(src_dev, src, dst_dev, dst, len)
    }

    fn alloc_staging(&mut self, len: u64) -> Result<StagingId> {
        if len == 0 {
            return Err(status!(Invalid, "staging buffer of 0 bytes"));
        }
        let cap = self.cfg.staging_capacity;
        if len > cap - self.staging_used {
            return Err(status!(
                RuntimeError,
                "cannot allocate a staging buffer of {len} bytes: {} of {cap} bytes in use",
                self.staging_used
            ));
        }
        let mut id = self.next_staging;
        while self.staging.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_staging = id.wrapping_add(1);
        self.staging.insert(id, vec![0; len as usize]);
        self.staging_used += len;
        self.staging_allocs += 1;
        Ok(StagingId(id))
    }

    fn free_staging(&mut self, id: StagingId) -> Result<()> {
        self.staging_buf(id)?;
        self.staging_idle(id)?;
        if let Some(buf) = self.staging.remove(&id.0) {
            self.staging_used -= buf.len() as u64;
        }
        Ok(())
    }

    fn staging(&self, id: StagingId) -> Result<&[u8]> {
        self.staging_idle(id)?;
        self.staging_buf(id).map(|b| b.as_slice())
    }

    fn staging_mut(&mut self, id: StagingId) -> Result<&mut [u8]> {
        self.staging_idle(id)?;
        self.staging
            .get_mut(&id.0)
            .map(|b| b.as_mut_slice())
            .ok_or_else(|| status!(Invalid, "no staging buffer {}", id.0))
    }

    fn submit_copy(&mut self, now: Instant, op: CopyOp) -> Result<CopyId> {
        let (a, b) = self.check_op(&op)?;
        let injected = self.count_ops(a, b).err();
        let id = self.next_copy;
        self.next_copy += 1;
        let ready = now + self.latency(a, b);
        self.copies.insert(id, Pending { op, ready, injected });
        Ok(CopyId(id))
    }

    fn poll_copy(&mut self, id: CopyId, now: Instant) -> Option<Result<()>> {
        let Some(p) = self.copies.get(&id.0) else {
            return Some(Err(status!(Invalid, "no copy {} in flight", id.0)));
        };
        if now < p.ready {
            return None;
        }
        let p = self.copies.remove(&id.0)?;
        if let Some(e) = p.injected {
            return Some(Err(e));
        }
        Some(self.run_op(p.op))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim() -> SimDriver {
        SimDriver::new(SimConfig {
            devices: 8,
            capacity: 1 << 20,
            staging_capacity: 1 << 16,
        })
        .unwrap()
    }

    fn code<T: std::fmt::Debug>(r: Result<T>) -> ErrorCode {
        r.unwrap_err().code()
    }

    const MS: Duration = Duration::from_millis(1);

    /// Makes the `k`th next operation on `dev` fail with `code`; returns
    /// its number.
    fn fail_in(s: &mut SimDriver, dev: DeviceIndex, k: u64, code: ErrorCode) -> u64 {
        let n = s.stats(dev).unwrap().ops + k;
        let faults = Faults {
            fail_op: Some((n, code)),
            ..Faults::default()
        };
        s.set_faults(dev, faults).unwrap();
        n
    }

    /// Delays asynchronous copies on `dev` by `latency`.
    fn delay(s: &mut SimDriver, dev: DeviceIndex, latency: Duration) {
        let faults = Faults {
            latency,
            ..Faults::default()
        };
        s.set_faults(dev, faults).unwrap();
    }

    /// `len` bytes at `src` on `dev` into staging buffer `st` at offset 0.
    fn to_staging(dev: DeviceIndex, src: DeviceAddr, st: StagingId, len: u64) -> CopyOp {
        CopyOp::ToHost {
            dev,
            src,
            staging: st,
            offset: 0,
            len,
        }
    }

    #[test]
    fn config_is_checked() {
        for cfg in [
            SimConfig {
                devices: 0,
                ..SimConfig::default()
            },
            SimConfig {
                devices: MAX_DEVICES + 1,
                ..SimConfig::default()
            },
            SimConfig {
                capacity: 0,
                ..SimConfig::default()
            },
        ] {
            assert_eq!(code(SimDriver::new(cfg).map(|_| ())), ErrorCode::Invalid);
        }
        assert_eq!(SimDriver::new(SimConfig::default()).unwrap().device_count(), 8);
        let max = SimDriver::new(SimConfig {
            devices: MAX_DEVICES,
            ..SimConfig::default()
        })
        .unwrap();
        assert_eq!(max.kind(), "sim");
        assert_eq!(max.device_count(), MAX_DEVICES);
    }

    #[test]
    fn round_trip_on_every_device() {
        let mut s = sim();
        for dev in 0..8 {
            let a = s.alloc(dev, 100).unwrap();
            let data: Vec<u8> = (0..100).map(|i| i as u8 ^ dev as u8).collect();
            s.copy_from_host(dev, &data, a).unwrap();
            let mut back = vec![0; 100];
            s.copy_to_host(dev, a, &mut back).unwrap();
            assert_eq!(back, data);
            // Partial copies inside the allocation.
            let mut mid = [0u8; 10];
            s.copy_to_host(dev, a.checked_add(45).unwrap(), &mut mid).unwrap();
            assert_eq!(&mid[..], &data[45..55]);
        }
    }

    #[test]
    fn allocations_are_zeroed_and_not_host_pointers() {
        let mut s = sim();
        let a = s.alloc(2, 5000).unwrap();
        let b = s.alloc(2, 1).unwrap();
        assert_eq!(a.0 & TAG_MASK, SIM_TAG, "{a}");
        assert_ne!(a, b);
        // Never adjacent: an overrun of `a` does not reach `b`.
        assert!(b.0 >= a.0 + 5000 + PAGE);
        let mut back = vec![1u8; 5000];
        s.copy_to_host(2, a, &mut back).unwrap();
        assert!(back.iter().all(|&x| x == 0));
        // Another device hands out another range.
        let c = s.alloc(3, 1).unwrap();
        assert_ne!(c.0 >> OFFSET_BITS, a.0 >> OFFSET_BITS);
    }

    #[test]
    fn bad_arguments_are_invalid_with_a_message() {
        let mut s = sim();
        let a = s.alloc(1, 4096).unwrap();
        let mut buf = [0u8; 16];
        let e = s.copy_to_host(8, a, &mut buf).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Invalid);
        assert!(e.message().contains("sim:8"), "{e}");
        // An address of another device.
        let e = s.copy_to_host(2, a, &mut buf).unwrap_err();
        assert!(e.message().contains("belongs to sim:1"), "{e}");
        // Host pointers are not device addresses.
        let host = DeviceAddr(buf.as_ptr() as u64);
        assert_eq!(code(s.copy_to_host(1, host, &mut buf)), ErrorCode::Invalid);
        // Past the end, before the start, wrapping, unallocated.
        let e = s
            .copy_to_host(1, a.checked_add(4090).unwrap(), &mut buf)
            .unwrap_err();
        assert!(e.message().contains("past the allocation"), "{e}");
        assert_eq!(
            code(s.copy_to_host(1, DeviceAddr(a.0 - 1), &mut buf)),
            ErrorCode::Invalid
        );
        assert_eq!(code(s.check_range(1, a, u64::MAX)), ErrorCode::Invalid);
        assert_eq!(code(s.check_range(1, a, 0)), ErrorCode::Invalid);
        assert_eq!(
            code(s.copy_from_host(1, &buf, DeviceAddr(a.0 + 8192))),
            ErrorCode::Invalid
        );
        assert_eq!(code(s.copy_device(1, a, 1, a, u64::MAX)), ErrorCode::Invalid);
        // Free takes the exact start; after it the memory is gone.
        assert_eq!(code(s.free(1, a.checked_add(1).unwrap())), ErrorCode::Invalid);
        s.free(1, a).unwrap();
        assert_eq!(code(s.free(1, a)), ErrorCode::Invalid);
        assert_eq!(code(s.copy_to_host(1, a, &mut buf)), ErrorCode::Invalid);
        assert_eq!(code(s.alloc(1, 0)), ErrorCode::Invalid);
        // Rejected arguments are not operations.
        assert_eq!(s.stats(1).unwrap().ops, 2);
        let b = s.alloc(1, 10).unwrap();
        s.check_range(1, b, 10).unwrap();
    }

    #[test]
    fn capacity_is_accounted_and_enforced() {
        let mut s = sim();
        let a = s.alloc(0, 1000).unwrap();
        assert_eq!(
            s.capacity(0).unwrap(),
            Capacity {
                total: 1 << 20,
                used: 1000
            }
        );
        let e = s.alloc(0, 1 << 20).unwrap_err();
        assert_eq!(e.code(), ErrorCode::RuntimeError);
        assert!(
            e.message().contains("1048576 bytes") && e.message().contains("1000 of"),
            "{e}"
        );
        s.free(0, a).unwrap();
        assert_eq!(s.capacity(0).unwrap().used, 0);
        s.alloc(0, 1 << 20).unwrap();
        assert_eq!(s.stats(0).unwrap().allocations, 1);
    }

    #[test]
    fn alloc_limit_refuses_beyond_it() {
        let mut s = sim();
        s.set_faults(
            4,
            Faults {
                alloc_limit: Some(3000),
                ..Faults::default()
            },
        )
        .unwrap();
        s.alloc(4, 2000).unwrap();
        let e = s.alloc(4, 1001).unwrap_err();
        assert_eq!(e.code(), ErrorCode::RuntimeError);
        assert!(
            e.message().contains("1001 bytes") && e.message().contains("of 3000"),
            "{e}"
        );
        s.alloc(4, 1000).unwrap();
        // Other devices are not limited.
        s.alloc(5, 100_000).unwrap();
    }

    #[test]
    fn device_copies_within_and_between_devices() {
        let mut s = sim();
        let a = s.alloc(0, 64).unwrap();
        let b = s.alloc(0, 64).unwrap();
        let c = s.alloc(6, 64).unwrap();
        let data: Vec<u8> = (0..64).collect();
        s.copy_from_host(0, &data, a).unwrap();
        s.copy_device(0, a, 0, b, 64).unwrap();
        s.copy_device(0, b, 6, c, 64).unwrap();
        let mut back = [0u8; 64];
        s.copy_to_host(6, c, &mut back).unwrap();
        assert_eq!(&back[..], &data[..]);
        // Overlapping ranges of one allocation copy like memmove.
        s.copy_device(0, a, 0, a.checked_add(8).unwrap(), 56).unwrap();
        s.copy_to_host(0, a, &mut back).unwrap();
        assert_eq!(&back[8..], &data[..56]);
        assert_eq!(s.stats(6).unwrap().device_copies, 1);
        assert_eq!(s.stats(0).unwrap().device_copies, 3);
    }

    #[test]
    fn the_nth_operation_fails_with_the_chosen_code_once() {
        let mut s = sim();
        let a = s.alloc(3, 16).unwrap();
        s.copy_from_host(3, &[7; 16], a).unwrap();
        let n = fail_in(&mut s, 3, 2, ErrorCode::NotSupported);
        let mut buf = [0u8; 16];
        s.copy_to_host(3, a, &mut buf).unwrap();
        let e = s.copy_from_host(3, &[9; 16], a).unwrap_err();
        assert_eq!(e.code(), ErrorCode::NotSupported);
        assert!(e.message().contains(&format!("operation {n}")), "{e}");
        // The failed copy had no effect, and the next one works.
        s.copy_to_host(3, a, &mut buf).unwrap();
        assert_eq!(buf, [7; 16]);
        s.copy_from_host(3, &[9; 16], a).unwrap();
        // A failed allocation and free likewise.
        fail_in(&mut s, 3, 1, ErrorCode::RuntimeError);
        assert_eq!(code(s.free(3, a)), ErrorCode::RuntimeError);
        assert_eq!(s.stats(3).unwrap().allocations, 1);
        fail_in(&mut s, 3, 1, ErrorCode::RuntimeError);
        assert_eq!(code(s.alloc(3, 16)), ErrorCode::RuntimeError);
        assert_eq!(s.capacity(3).unwrap().used, 16);
    }

    #[test]
    fn device_copies_count_on_both_devices() {
        let mut s = sim();
        let a = s.alloc(0, 8).unwrap();
        let b = s.alloc(1, 8).unwrap();
        fail_in(&mut s, 1, 1, ErrorCode::RuntimeError);
        let before = s.stats(0).unwrap().ops;
        assert_eq!(code(s.copy_device(0, a, 1, b, 8)), ErrorCode::RuntimeError);
        assert_eq!(s.stats(0).unwrap().ops, before + 1);
    }

    #[test]
    fn a_vanished_device_fails_everything_disconnected() {
        let mut s = sim();
        let a = s.alloc(7, 16).unwrap();
        let other = s.alloc(6, 16).unwrap();
        s.disappear(7).unwrap();
        let mut buf = [0u8; 16];
        let e = s.copy_to_host(7, a, &mut buf).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Disconnected);
        assert!(e.message().contains("sim:7"), "{e}");
        assert_eq!(code(s.alloc(7, 1)), ErrorCode::Disconnected);
        assert_eq!(code(s.capacity(7)), ErrorCode::Disconnected);
        assert_eq!(code(s.copy_device(6, other, 7, a, 16)), ErrorCode::Disconnected);
        // The other devices carry on.
        s.copy_to_host(6, other, &mut buf).unwrap();
    }

    #[test]
    fn async_copies_complete_after_the_latency() {
        let mut s = sim();
        let a = s.alloc(2, 32).unwrap();
        delay(&mut s, 2, 5 * MS);
        let st = s.alloc_staging(64).unwrap();
        s.staging_mut(st).unwrap()[..32].copy_from_slice(&[5; 32]);
        let t0 = Instant::from_nanos(1_000);
        let up = s
            .submit_copy(
                t0,
                CopyOp::FromHost {
                    staging: st,
                    offset: 0,
                    dev: 2,
                    dst: a,
                    len: 32,
                },
            )
            .unwrap();
        // In flight: the staging buffer is the copy's, the device unchanged.
        assert_eq!(code(s.staging_mut(st).map(|_| ())), ErrorCode::NotReady);
        assert_eq!(code(s.staging(st).map(|_| ())), ErrorCode::NotReady);
        assert_eq!(code(s.free_staging(st)), ErrorCode::NotReady);
        assert_eq!(s.poll_copy(up, t0 + 4 * MS), None);
        let mut buf = [0u8; 32];
        s.copy_to_host(2, a, &mut buf).unwrap();
        assert_eq!(buf, [0; 32]);
        assert_eq!(s.poll_copy(up, t0 + 5 * MS), Some(Ok(())));
        assert_eq!(code(s.poll_copy(up, t0 + 5 * MS).unwrap()), ErrorCode::Invalid);
        s.copy_to_host(2, a, &mut buf).unwrap();
        assert_eq!(buf, [5; 32]);
        // And back down, into the second half of the staging buffer.
        let down = s
            .submit_copy(
                t0,
                CopyOp::ToHost {
                    dev: 2,
                    src: a,
                    staging: st,
                    offset: 32,
                    len: 32,
                },
            )
            .unwrap();
        assert_eq!(s.poll_copy(down, t0 + 5 * MS), Some(Ok(())));
        assert_eq!(&s.staging(st).unwrap()[32..], &[5; 32]);
        // Device to device, delayed by the slower device.
        let b = s.alloc(3, 32).unwrap();
        let across = s
            .submit_copy(
                t0,
                CopyOp::Device {
                    src_dev: 3,
                    src: b,
                    dst_dev: 2,
                    dst: a,
                    len: 32,
                },
            )
            .unwrap();
        assert_eq!(s.poll_copy(across, t0 + MS), None);
        assert_eq!(s.poll_copy(across, t0 + 5 * MS), Some(Ok(())));
        s.copy_to_host(2, a, &mut buf).unwrap();
        assert_eq!(buf, [0; 32]);
        s.free_staging(st).unwrap();
        assert_eq!(code(s.staging(st).map(|_| ())), ErrorCode::Invalid);
        assert_eq!(s.staging_allocations(), 1);
    }

    #[test]
    fn async_arguments_are_checked_at_submit_and_faults_reported_at_completion() {
        let mut s = sim();
        let a = s.alloc(1, 32).unwrap();
        let st = s.alloc_staging(16).unwrap();
        let now = Instant::ZERO;
        let too_long = CopyOp::ToHost {
            dev: 1,
            src: a,
            staging: st,
            offset: 8,
            len: 16,
        };
        assert_eq!(code(s.submit_copy(now, too_long)), ErrorCode::Invalid);
        let no_buf = CopyOp::FromHost {
            staging: StagingId(99),
            offset: 0,
            dev: 1,
            dst: a,
            len: 1,
        };
        assert_eq!(code(s.submit_copy(now, no_buf)), ErrorCode::Invalid);
        assert_eq!(code(s.poll_copy(CopyId(1234), now).unwrap()), ErrorCode::Invalid);
        fail_in(&mut s, 1, 1, ErrorCode::Timeout);
        let id = s.submit_copy(now, to_staging(1, a, st, 16)).unwrap();
        assert_eq!(code(s.poll_copy(id, now).unwrap()), ErrorCode::Timeout);
        // A device that disappears under a copy in flight fails it.
        delay(&mut s, 1, MS);
        let id = s.submit_copy(now, to_staging(1, a, st, 16)).unwrap();
        s.disappear(1).unwrap();
        assert_eq!(code(s.poll_copy(id, now + MS).unwrap()), ErrorCode::Disconnected);
        assert_eq!(s.stats(1).unwrap().copies_to_host, 0);
    }

    #[test]
    fn staging_is_bounded() {
        let mut s = sim();
        assert_eq!(code(s.alloc_staging(0)), ErrorCode::Invalid);
        let a = s.alloc_staging(1 << 15).unwrap();
        let _b = s.alloc_staging(1 << 15).unwrap();
        let e = s.alloc_staging(1).unwrap_err();
        assert_eq!(e.code(), ErrorCode::RuntimeError);
        assert!(e.message().contains("65536 of 65536"), "{e}");
        s.free_staging(a).unwrap();
        s.alloc_staging(1 << 15).unwrap();
        assert_eq!(s.staging_allocations(), 3);
    }

    #[test]
    fn stats_count_host_copies_and_their_largest() {
        let mut s = sim();
        let a = s.alloc(0, 1000).unwrap();
        s.copy_from_host(0, &[1; 1000], a).unwrap();
        let mut buf = [0u8; 10];
        s.copy_to_host(0, a, &mut buf).unwrap();
        let st = s.stats(0).unwrap();
        assert_eq!((st.copies_to_host, st.copies_from_host), (1, 1));
        assert_eq!(st.host_bytes, 1010);
        assert_eq!(st.largest_host_copy, 1000);
    }
}
