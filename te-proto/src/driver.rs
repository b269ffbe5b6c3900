//! The interface every device driver implements: simulated devices
//! (te-driver-sim), Ascend NPUs (te-driver-ascend) and RDMA-registered
//! memory (te-driver-rdma) all look the same to the runtime.
//!
//! It lives here, in the crate both the drivers and the runtime depend on,
//! so that neither depends on the other.
//!
//! # Device memory is not host memory
//!
//! A [`DeviceAddr`] names bytes in one device's memory. It is not a host
//! pointer: the host cannot dereference it, and the only way to reach the
//! bytes is through the driver's copy calls. A code path that forgets to
//! stage device memory through host memory fails (in te-driver-sim, device
//! addresses lie outside any address the host can map).
//!
//! # Synchronous and asynchronous copies
//!
//! The synchronous copies ([`DeviceDriver::copy_to_host`],
//! [`DeviceDriver::copy_from_host`], [`DeviceDriver::copy_device`]) return
//! when the bytes are in place. The asynchronous ones go through
//! driver-owned *staging* buffers (pinned host memory, as
//! `aclrtMallocHost` gives on Ascend): the caller fills or reads them with
//! [`DeviceDriver::staging_mut`] / [`DeviceDriver::staging`],
//! submits a [`CopyOp`] with [`DeviceDriver::submit_copy`] and polls its
//! completion with [`DeviceDriver::poll_copy`], passing the current time
//! (a driver never reads a clock, like the rest of te-proto). A staging
//! buffer that a copy in flight uses cannot be touched until the copy has
//! completed. Owning the staging buffers keeps this interface free of raw
//! host pointers, so it needs no `unsafe`.
//!
//! # Errors
//!
//! Every argument is validated and every failure is a [`Status`](crate::Status) whose
//! message names the device and the bad value; nothing panics.
//!
//! | condition | code |
//! |---|---|
//! | unknown device, address not allocated on that device, range outside one allocation, length overflow, unknown staging buffer or copy | [`ErrorCode::Invalid`](crate::ErrorCode::Invalid) |
//! | allocation beyond the device's capacity | [`ErrorCode::RuntimeError`](crate::ErrorCode::RuntimeError) |
//! | staging buffer used by a copy in flight | [`ErrorCode::NotReady`](crate::ErrorCode::NotReady) |
//! | device gone (unplugged, reset, simulated disappearance) | [`ErrorCode::Disconnected`](crate::ErrorCode::Disconnected) |
//! | failure reported by the device or its runtime | the driver's code, usually `RuntimeError` |

use core::fmt;

use crate::error::Result;
use crate::time::Instant;

/// The index of a device of one driver (`sim:N` is device `N` of the sim
/// driver).
pub type DeviceIndex = u16;

/// An address in one device's memory. Opaque: the host cannot dereference
/// it; only the driver's copy calls reach the bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceAddr(pub u64);

impl DeviceAddr {
    /// The address `n` bytes further on, or `None` on overflow.
    pub const fn checked_add(self, n: u64) -> Option<DeviceAddr> {
        match self.0.checked_add(n) {
            Some(a) => Some(DeviceAddr(a)),
            None => None,
        }
    }
}

impl fmt::Debug for DeviceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceAddr({:#x})", self.0)
    }
}

impl fmt::Display for DeviceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A driver-owned staging buffer (pinned host memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StagingId(pub u32);

/// An asynchronous copy in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CopyId(pub u64);

/// A device stream of the application (an `aclrtStream` on Ascend): the
/// handle its runtime library gave it, opaque to te.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamHandle(pub u64);

/// A fence set on an application's stream by
/// [`DeviceDriver::fence_stream`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FenceId(pub u64);

/// Longest IPC export key a driver hands out, in bytes (ACL's keys are at
/// most 64 characters plus a NUL).
pub const IPC_KEY_MAX: usize = 64;

/// An IPC export key of device memory (ACL's `aclrtIpcMemGetExportKey`):
/// 1 to [`IPC_KEY_MAX`] bytes without a NUL, so that a driver can pass it
/// on as a C string. Another process imports the range with it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpcKey {
    len: u8,
    bytes: [u8; IPC_KEY_MAX],
}

impl IpcKey {
    /// The key of `bytes`; `Invalid` naming the length for an empty or too
    /// long key, or the position of a NUL byte in it.
    pub fn new(bytes: &[u8]) -> Result<IpcKey> {
        if bytes.is_empty() || bytes.len() > IPC_KEY_MAX {
            return Err(crate::status!(
                Invalid,
                "IPC key of {} bytes (1 to {IPC_KEY_MAX})",
                bytes.len()
            ));
        }
        if let Some(at) = bytes.iter().position(|&b| b == 0) {
            return Err(crate::status!(Invalid, "IPC key has a NUL byte at {at}"));
        }
        let mut key = IpcKey {
            len: bytes.len() as u8,
            bytes: [0; IPC_KEY_MAX],
        };
        key.bytes[..bytes.len()].copy_from_slice(bytes);
        Ok(key)
    }

    /// The key's bytes (no NUL).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl fmt::Debug for IpcKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A key is a capability: its bytes stay out of logs and errors.
        write!(f, "IpcKey(<{} bytes>)", self.len)
    }
}

/// A device's memory as the driver accounts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Bytes the device can hold in all.
    pub total: u64,
    /// Bytes allocated now.
    pub used: u64,
}

/// An asynchronous copy, for [`DeviceDriver::submit_copy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyOp {
    /// Device memory into a staging buffer.
    ToHost {
        /// Source device.
        dev: DeviceIndex,
        /// Source address on `dev`.
        src: DeviceAddr,
        /// Destination staging buffer.
        staging: StagingId,
        /// Offset in the staging buffer.
        offset: u64,
        /// Bytes to copy.
        len: u64,
    },
    /// A staging buffer into device memory.
    FromHost {
        /// Source staging buffer.
        staging: StagingId,
        /// Offset in the staging buffer.
        offset: u64,
        /// Destination device.
        dev: DeviceIndex,
        /// Destination address on `dev`.
        dst: DeviceAddr,
        /// Bytes to copy.
        len: u64,
    },
    /// Device memory to device memory, on one device or between two.
    Device {
        /// Source device.
        src_dev: DeviceIndex,
        /// Source address on `src_dev`.
        src: DeviceAddr,
        /// Destination device.
        dst_dev: DeviceIndex,
        /// Destination address on `dst_dev`.
        dst: DeviceAddr,
        /// Bytes to copy.
        len: u64,
    },
}

impl CopyOp {
    /// The staging buffer the copy uses, with the offset and length in it;
    /// `None` for a device-to-device copy.
    pub fn staging(&self) -> Option<(StagingId, u64, u64)> {
        match *self {
            CopyOp::ToHost {
                staging, offset, len, ..
            }
            | CopyOp::FromHost {
                staging, offset, len, ..
            } => Some((staging, offset, len)),
            CopyOp::Device { .. } => None,
        }
    }

    /// The device ranges the copy touches, as `(device, address, length)`:
    /// one, or two for a device-to-device copy.
    pub fn device_ranges(&self) -> impl Iterator<Item = (DeviceIndex, DeviceAddr, u64)> {
        let (first, second) = match *self {
            CopyOp::ToHost { dev, src, len, .. } => ((dev, src, len), None),
            CopyOp::FromHost { dev, dst, len, .. } => ((dev, dst, len), None),
            CopyOp::Device {
                src_dev,
                src,
                dst_dev,
                dst,
                len,
            } => ((src_dev, src, len), Some((dst_dev, dst, len))),
        };
        core::iter::once(first).chain(second)
    }
}

/// A device driver: memory on devices the host cannot address, and the
/// copies that reach it. See the [module docs](self) for the rules every
/// implementation follows.
pub trait DeviceDriver {
    /// The driver's location kind as written in device names (`"sim"`,
    /// `"npu"`).
    fn kind(&self) -> &'static str;

    /// How many devices there are; indices run from 0 to `count - 1`.
    fn device_count(&self) -> DeviceIndex;

    /// How much memory device `dev` holds and how much is in use.
    fn capacity(&self, dev: DeviceIndex) -> Result<Capacity>;

    /// Allocates `len` zeroed bytes on `dev`. `len` 0 is `Invalid`; more
    /// than the device has free is `RuntimeError` naming both sizes.
    fn alloc(&mut self, dev: DeviceIndex, len: u64) -> Result<DeviceAddr>;

    /// Frees the allocation that starts at `addr` on `dev`.
    fn free(&mut self, dev: DeviceIndex, addr: DeviceAddr) -> Result<()>;

    /// Checks that `[addr, addr + len)` lies inside one allocation on `dev`,
    /// without touching it (what registration of device memory checks).
    fn check_range(&self, dev: DeviceIndex, addr: DeviceAddr, len: u64) -> Result<()>;

    /// Copies `dst.len()` bytes at `src` on `dev` into host memory.
    fn copy_to_host(&mut self, dev: DeviceIndex, src: DeviceAddr, dst: &mut [u8]) -> Result<()>;

    /// Copies host bytes `src` to `dst` on `dev`.
    fn copy_from_host(&mut self, dev: DeviceIndex, src: &[u8], dst: DeviceAddr) -> Result<()>;

    /// Copies `len` bytes from `src` on `src_dev` to `dst` on `dst_dev`
    /// (the same device or two); overlapping ranges copy as if through a
    /// temporary buffer.
    fn copy_device(
        &mut self,
        src_dev: DeviceIndex,
        src: DeviceAddr,
        dst_dev: DeviceIndex,
        dst: DeviceAddr,
        len: u64,
    ) -> Result<()>;

    /// Allocates a zeroed staging buffer of `len` bytes.
    fn alloc_staging(&mut self, len: u64) -> Result<StagingId>;

    /// Frees a staging buffer; `NotReady` while a copy uses it.
    fn free_staging(&mut self, id: StagingId) -> Result<()>;

    /// The bytes of a staging buffer; `NotReady` while a copy uses it.
    fn staging(&self, id: StagingId) -> Result<&[u8]>;

    /// The bytes of a staging buffer, for writing; `NotReady` while a copy
    /// uses it.
    fn staging_mut(&mut self, id: StagingId) -> Result<&mut [u8]>;

    /// Starts an asynchronous copy at time `now`. Arguments are checked
    /// here; a failure of the copy itself is reported by
    /// [`poll_copy`](Self::poll_copy).
    fn submit_copy(&mut self, now: Instant, op: CopyOp) -> Result<CopyId>;

    /// The outcome of copy `id` at time `now`: `None` while it runs,
    /// `Some(result)` once it has ended (the id is then spent; asking again
    /// is `Invalid`).
    fn poll_copy(&mut self, id: CopyId, now: Instant) -> Option<Result<()>>;

    /// Fences the application's `stream` of device `dev` around one
    /// transfer, without blocking the host: marks the work queued on it so
    /// far (its end is what [`poll_fence`](Self::poll_fence) reports), and
    /// queues on it a wait that holds everything queued after it until
    /// [`release_fence`](Self::release_fence), or until `timeout`, after
    /// which the stream carries an error. `NotSupported` (the default)
    /// where the driver has no streams or its library lacks the calls.
    fn fence_stream(
        &mut self,
        dev: DeviceIndex,
        stream: StreamHandle,
        timeout: core::time::Duration,
    ) -> Result<FenceId> {
        let _ = (stream, timeout);
        Err(crate::status!(
            NotSupported,
            "{}:{dev}: no stream-ordered transfers in this driver",
            self.kind()
        ))
    }

    /// Whether the work queued on the fenced stream before fence `id` has
    /// run: `None` while it runs, `Some(Ok(()))` once it has, `Some(Err)`
    /// when it failed or the fence is unknown.
    fn poll_fence(&mut self, id: FenceId) -> Option<Result<()>> {
        Some(Err(crate::status!(
            NotFound,
            "{}: no fence {}",
            self.kind(),
            id.0
        )))
    }

    /// Lets the stream of fence `id` go on past it (the transfer it held
    /// for has ended), and forgets the fence.
    fn release_fence(&mut self, id: FenceId) -> Result<()> {
        Err(crate::status!(NotFound, "{}: no fence {}", self.kind(), id.0))
    }

    /// Whether [`export_range`](Self::export_range) and
    /// [`import_range`](Self::import_range) can work at all (false, the
    /// default, where they answer `NotSupported`).
    fn ipc_supported(&self) -> bool {
        false
    }

    /// Exports `[addr, addr + len)` on `dev` (inside one allocation) to
    /// the process `importer` alone, for the same-host path: that process
    /// may import it with [`import_range`](Self::import_range) until
    /// [`close_export`](Self::close_export). `NotSupported` (the default)
    /// where the driver or its runtime has no inter-process memory.
    fn export_range(
        &mut self,
        dev: DeviceIndex,
        addr: DeviceAddr,
        len: u64,
        importer: u32,
    ) -> Result<IpcKey> {
        let _ = (addr, len, importer);
        Err(crate::status!(
            NotSupported,
            "{}:{dev}: no inter-process device memory in this driver",
            self.kind()
        ))
    }

    /// Revokes an export of [`export_range`](Self::export_range): imports
    /// fail from now on, and copies through existing ones fail.
    fn close_export(&mut self, key: &IpcKey) -> Result<()> {
        Err(crate::status!(
            NotSupported,
            "{}: cannot close export {key:?}: no inter-process device memory",
            self.kind()
        ))
    }

    /// Imports `len` bytes another process exported from its device
    /// `peer_dev` with `key`, for use from `dev` (peer access between the
    /// two is enabled where they differ). The range returned is device
    /// memory of `dev` for this driver's copies (and [`check_range`](Self::check_range))
    /// until [`close_import`](Self::close_import). `NotSupported` (the
    /// default) as for exports.
    fn import_range(
        &mut self,
        dev: DeviceIndex,
        peer_dev: DeviceIndex,
        key: &IpcKey,
        len: u64,
    ) -> Result<DeviceAddr> {
        let _ = (peer_dev, key, len);
        Err(crate::status!(
            NotSupported,
            "{}:{dev}: no inter-process device memory in this driver",
            self.kind()
        ))
    }

    /// Unmaps an import of [`import_range`](Self::import_range) at `addr`
    /// on `dev`.
    fn close_import(&mut self, dev: DeviceIndex, addr: DeviceAddr) -> Result<()> {
        Err(crate::status!(
            NotSupported,
            "{}:{dev}: no import at {addr}",
            self.kind()
        ))
    }
}
