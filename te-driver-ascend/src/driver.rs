//! [`AscendDriver`]: `npu:N` memory behind te-proto's [`DeviceDriver`]
//! interface, through the ACL functions of [`library`].
//!
//! Device addresses are ACL's own (`aclrtMalloc`'s pointers as numbers):
//! the host never dereferences them, only ACL's copy calls do. Staging
//! buffers are pinned host memory from `aclrtMallocHost`. Asynchronous
//! copies run on one driver-owned stream per device, each followed by an
//! event whose status `poll_copy` asks for.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{c_int, c_void};
use std::path::PathBuf;

use te_proto::driver::{
    Capacity, CopyId, CopyOp, DeviceAddr, DeviceDriver, DeviceIndex, FenceId, IpcKey, StagingId,
    StreamHandle, IPC_KEY_MAX,
};
use te_proto::{status, Instant, Result};

use crate::acl_error::{check, status_of, ACL_ERROR_FEATURE_UNSUPPORTED, ACL_SUCCESS};
use crate::fence::{self, Fence, Fences, Retiring};
use crate::library::{self, Api, LoadError};
use crate::process::Session;

/// `aclrtMemMallocPolicy` `ACL_MEM_MALLOC_HUGE_FIRST`.
const MALLOC_HUGE_FIRST: c_int = 0;
/// `aclrtMemAttr` `ACL_HBM_MEM`.
const HBM_MEM: c_int = 1;
/// `aclrtMemcpyKind` values.
const HOST_TO_DEVICE: c_int = 1;
const DEVICE_TO_HOST: c_int = 2;
const DEVICE_TO_DEVICE: c_int = 3;
/// `aclrtEventRecordedStatus` values (not the deprecated `aclrtEventStatus`,
/// whose numbers are the other way round).
const EVENT_RECORDED_NOT_READY: c_int = 0;
const EVENT_RECORDED_COMPLETE: c_int = 1;
/// Bytes zeroed or staged through the host per call where ACL has no call
/// of its own for it.
const HOST_CHUNK: usize = 1 << 20;

/// How an [`AscendDriver`] finds ACL and how long it waits for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AscendConfig {
    /// `libascendcl.so` to load; `None` looks in the usual places (see
    /// [`library`]).
    pub library: Option<PathBuf>,
    /// How long draining a stream may take (`aclrtSynchronizeStreamWithTimeout`,
    /// milliseconds) when a copy failed or the driver closes. Default 10 s.
    pub sync_timeout_ms: i32,
}

impl Default for AscendConfig {
    fn default() -> AscendConfig {
        AscendConfig {
            library: None,
            sync_timeout_ms: 10_000,
        }
    }
}

/// An ACL object handle (`aclrtStream`, `aclrtEvent`) or a pinned host
/// pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Handle(pub(crate) *mut c_void);

/// A pinned host buffer from `aclrtMallocHost`.
struct Staging {
    ptr: *mut u8,
    len: usize,
}

/// An asynchronous copy in flight.
struct InFlight {
    op: CopyOp,
    /// The device whose stream runs it.
    dev: DeviceIndex,
    /// Its completion event, or `None` for a copy done at submission.
    event: Option<Handle>,
}

/// `npu:N` devices through ACL. See the [module docs](self).
pub struct AscendDriver {
    cfg: AscendConfig,
    session: Session,
    devices: DeviceIndex,
    /// Allocations of this driver: base address to (device, length).
    allocs: BTreeMap<u64, (DeviceIndex, u64)>,
    streams: HashMap<DeviceIndex, Handle>,
    /// Events ready for reuse, per device.
    idle_events: HashMap<DeviceIndex, Vec<Handle>>,
    staging: HashMap<u32, Staging>,
    next_staging: u32,
    copies: HashMap<u64, InFlight>,
    next_copy: u64,
    /// Device pairs (from, to) with peer access enabled.
    peers: HashSet<(DeviceIndex, DeviceIndex)>,
    /// Ranges exported to another process, by key: the device they are on.
    exports: HashMap<IpcKey, DeviceIndex>,
    /// Ranges imported from another process: base address to (device it
    /// is used from, length, key).
    imports: BTreeMap<u64, (DeviceIndex, u64, IpcKey)>,
    /// Fences on the application's streams ([`fence`]).
    fences: Fences,
}

// SAFETY: the raw pointers are ACL handles and pinned host buffers owned by
// this driver. ACL handles may be used from any thread bound to their
// device, and every call binds the calling thread first (`Session::bind`);
// the host buffers are reached only through `&self`/`&mut self`.
unsafe impl Send for AscendDriver {}

impl AscendDriver {
    /// Loads ACL, initialises it (once per process) and counts the
    /// devices. A missing library or symbol is a [`LoadError`]; an ACL
    /// failure is a `Status` inside it. Use [`AscendDriver::start`] for a
    /// te status either way.
    pub fn new(cfg: AscendConfig) -> std::result::Result<AscendDriver, Started> {
        let api = library::load(cfg.library.as_deref()).map_err(Started::Load)?;
        let session = Session::open(api).map_err(Started::Acl)?;
        let mut count = 0u32;
        // SAFETY: aclrtGetDeviceCount writes one uint32 through its pointer.
        check("aclrtGetDeviceCount", None, unsafe {
            (api.aclrtGetDeviceCount)(&mut count)
        })
        .map_err(Started::Acl)?;
        Ok(AscendDriver {
            cfg,
            session,
            devices: DeviceIndex::try_from(count).unwrap_or(DeviceIndex::MAX),
            allocs: BTreeMap::new(),
            streams: HashMap::new(),
            idle_events: HashMap::new(),
            staging: HashMap::new(),
            next_staging: 0,
            copies: HashMap::new(),
            next_copy: 0,
            peers: HashSet::new(),
            exports: HashMap::new(),
            imports: BTreeMap::new(),
            fences: Fences::default(),
        })
    }

    /// [`AscendDriver::new`] with every failure as a te status: a missing
    /// library or symbol is `NotSupported`.
    pub fn start(cfg: AscendConfig) -> Result<AscendDriver> {
        AscendDriver::new(cfg).map_err(|e| e.status())
    }

    /// Where ACL was loaded from.
    pub fn library_path(&self) -> &std::path::Path {
        &self.api().path
    }

    fn api(&self) -> &'static Api {
        self.session.api()
    }

    /// `Invalid` for a device index beyond the count, else binds the
    /// calling thread to it.
    fn bind(&self, dev: DeviceIndex) -> Result<()> {
        if dev >= self.devices {
            return Err(status!(
                Invalid,
                "no device npu:{dev}: ACL reports {} devices",
                self.devices
            ));
        }
        self.session.bind(dev)
    }

    /// Checks that `[addr, addr + len)` is device memory on `dev`: inside
    /// one allocation of this driver, or of the application as ACL
    /// reports it.
    fn locate(&self, dev: DeviceIndex, addr: DeviceAddr, len: u64) -> Result<()> {
        let end = addr
            .0
            .checked_add(len)
            .ok_or_else(|| status!(Invalid, "npu:{dev}: {len} bytes at {addr} wrap around"))?;
        let imported = self
            .imports
            .range(..=addr.0)
            .next_back()
            .map(|(&base, &(dev, size, _))| (base, (dev, size)));
        let own = self
            .allocs
            .range(..=addr.0)
            .next_back()
            .map(|(&base, &owner)| (base, owner))
            .into_iter()
            .chain(imported)
            .find(|&(base, (_, size))| addr.0 < base + size);
        let (base, size) = match own {
            Some((_, (owner, _))) if owner != dev => {
                return Err(status!(Invalid, "{addr} belongs to npu:{owner}, not npu:{dev}"))
            }
            Some((base, (_, size))) => (base, size),
            None => self.foreign_range(dev, addr)?,
        };
        // One check for both: ACL's answer is not trusted to contain `addr`.
        if addr.0 < base || end > base.saturating_add(size) {
            return Err(status!(
                Invalid,
                "npu:{dev}: {len} bytes at {addr} run past the allocation's end ({} bytes left)",
                base.saturating_add(size).saturating_sub(addr.0)
            ));
        }
        Ok(())
    }

    /// The allocation ACL reports for `addr` (memory the application
    /// allocated), through the optional `aclrtMemGetAddressRange`.
    fn foreign_range(&self, dev: DeviceIndex, addr: DeviceAddr) -> Result<(u64, u64)> {
        let Some(range_of) = self.api().aclrtMemGetAddressRange else {
            return Err(status!(
                Invalid,
                "npu:{dev}: {addr} is not allocated by te, and this ACL cannot tell"
            ));
        };
        self.bind(dev)?;
        let mut base = std::ptr::null_mut();
        let mut size = 0usize;
        // SAFETY: the call only looks the address up (it is never
        // dereferenced by the host) and writes a pointer and a size.
        let rc = unsafe { range_of(ptr(addr), &mut base, &mut size) };
        if rc != ACL_SUCCESS {
            return Err(status!(Invalid, "npu:{dev}: {addr} is not device memory"));
        }
        Ok((base as u64, size as u64))
    }

    /// The driver's stream on `dev`, created at first use; the thread is
    /// bound to `dev`.
    fn stream(&mut self, dev: DeviceIndex) -> Result<Handle> {
        if let Some(&s) = self.streams.get(&dev) {
            return Ok(s);
        }
        let mut s = std::ptr::null_mut();
        // SAFETY: aclrtCreateStream writes one handle through its pointer.
        check("aclrtCreateStream", Some(dev), unsafe {
            (self.api().aclrtCreateStream)(&mut s)
        })?;
        self.streams.insert(dev, Handle(s));
        Ok(Handle(s))
    }

    /// An event of `dev` for one copy: a reused one or a new one.
    fn event(&mut self, dev: DeviceIndex) -> Result<Handle> {
        if let Some(e) = self.idle_events.get_mut(&dev).and_then(Vec::pop) {
            return Ok(e);
        }
        let mut e = std::ptr::null_mut();
        // SAFETY: aclrtCreateEvent writes one handle through its pointer.
        check("aclrtCreateEvent", Some(dev), unsafe {
            (self.api().aclrtCreateEvent)(&mut e)
        })?;
        Ok(Handle(e))
    }

    fn destroy_event(&self, e: Handle) {
        // SAFETY: the event is this driver's and no copy waits on it.
        let _ = unsafe { (self.api().aclrtDestroyEvent)(e.0) };
    }

    /// Drains `dev`'s stream, so that a failed copy's error is cleared.
    fn drain(&self, dev: DeviceIndex) -> Result<()> {
        let Some(&s) = self.streams.get(&dev) else {
            return Ok(());
        };
        self.bind(dev)?;
        // SAFETY: the stream is this driver's.
        check("aclrtSynchronizeStreamWithTimeout", Some(dev), unsafe {
            (self.api().aclrtSynchronizeStreamWithTimeout)(s.0, self.cfg.sync_timeout_ms)
        })
    }

    /// One synchronous `aclrtMemcpy` of `len` bytes, the thread bound.
    fn memcpy(
        &self,
        dev: DeviceIndex,
        dst: *mut c_void,
        src: *const c_void,
        len: usize,
        kind: c_int,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        // SAFETY: the caller checked both ranges: host ranges are slices
        // it holds, device ranges lie inside one allocation (`locate`).
        check("aclrtMemcpy", Some(dev), unsafe {
            (self.api().aclrtMemcpy)(dst, len, src, len, kind)
        })
    }

    /// Zeroes a fresh allocation: `aclrtMemset` where ACL has it (newer
    /// CANN), else copies of a zeroed host buffer.
    fn zero(&self, dev: DeviceIndex, base: u64, len: u64) -> Result<()> {
        if let Some(memset) = self.api().aclrtMemset {
            let p = base as usize as *mut c_void;
            // SAFETY: `[base, base + len)` is the allocation just made.
            return check("aclrtMemset", Some(dev), unsafe {
                memset(p, len as usize, 0, len as usize)
            });
        }
        let zeros = vec![0u8; HOST_CHUNK.min(len as usize)];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(HOST_CHUNK as u64) as usize;
            let dst = (base + done) as usize as *mut c_void;
            self.memcpy(dev, dst, zeros.as_ptr().cast(), n, HOST_TO_DEVICE)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Device-to-device across two devices: directly where peer access is
    /// possible, else staged through host memory.
    fn copy_between(
        &mut self,
        src_dev: DeviceIndex,
        src: DeviceAddr,
        dst_dev: DeviceIndex,
        dst: DeviceAddr,
        len: u64,
    ) -> Result<()> {
        if self.peer(src_dev, dst_dev)? {
            self.bind(src_dev)?;
            return self.memcpy(src_dev, ptr(dst), ptr(src), len as usize, DEVICE_TO_DEVICE);
        }
        let mut buf = vec![0u8; HOST_CHUNK.min(len as usize)];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(HOST_CHUNK as u64) as usize;
            self.copy_to_host(src_dev, DeviceAddr(src.0 + done), &mut buf[..n])?;
            self.copy_from_host(dst_dev, &buf[..n], DeviceAddr(dst.0 + done))?;
            done += n as u64;
        }
        Ok(())
    }

    /// Whether `from` may copy into `to` directly, enabling peer access at
    /// the first use of the pair.
    fn peer(&mut self, from: DeviceIndex, to: DeviceIndex) -> Result<bool> {
        if self.peers.contains(&(from, to)) {
            return Ok(true);
        }
        self.bind(from)?;
        let mut can = 0i32;
        // SAFETY: writes one int32 through its pointer.
        check("aclrtDeviceCanAccessPeer", Some(from), unsafe {
            (self.api().aclrtDeviceCanAccessPeer)(&mut can, i32::from(from), i32::from(to))
        })?;
        if can != 1 {
            return Ok(false);
        }
        // SAFETY: flags must be 0.
        check("aclrtDeviceEnablePeerAccess", Some(from), unsafe {
            (self.api().aclrtDeviceEnablePeerAccess)(i32::from(to), 0)
        })?;
        self.peers.insert((from, to));
        Ok(true)
    }

    fn staging_buf(&self, id: StagingId) -> Result<&Staging> {
        self.staging
            .get(&id.0)
            .ok_or_else(|| status!(Invalid, "no staging buffer {}", id.0))
    }

    /// The host address of `len` bytes at `offset` of staging buffer `id`.
    fn staging_at(&self, id: StagingId, offset: u64, len: u64) -> Result<*mut u8> {
        let buf = self.staging_buf(id)?;
        match offset.checked_add(len) {
            Some(end) if end <= buf.len as u64 => Ok(buf.ptr.wrapping_add(offset as usize)),
            _ => Err(status!(
                Invalid,
                "{len} bytes at offset {offset} run past staging buffer {} of {} bytes",
                id.0,
                buf.len
            )),
        }
    }

    /// `NotReady` while a copy in flight uses staging buffer `id`.
    fn staging_idle(&self, id: StagingId) -> Result<()> {
        let busy = self
            .copies
            .iter()
            .find(|(_, c)| c.op.staging().is_some_and(|(s, _, _)| s == id));
        match busy {
            Some((copy, _)) => Err(status!(
                NotReady,
                "staging buffer {} is in use by copy {copy}",
                id.0
            )),
            None => Ok(()),
        }
    }

    /// Queues `op` (checked) on its device's stream with an event after it.
    fn enqueue(&mut self, op: CopyOp) -> Result<InFlight> {
        let (dev, dst, src, len, kind) = match op {
            CopyOp::ToHost {
                dev,
                src,
                staging,
                offset,
                len,
            } => {
                let host = self.staging_at(staging, offset, len)?;
                (dev, host.cast(), ptr(src).cast_const(), len, DEVICE_TO_HOST)
            }
            CopyOp::FromHost {
                staging,
                offset,
                dev,
                dst,
                len,
            } => {
                let host = self.staging_at(staging, offset, len)?;
                (dev, ptr(dst), host.cast_const().cast(), len, HOST_TO_DEVICE)
            }
            CopyOp::Device {
                src_dev,
                src,
                dst_dev,
                dst,
                len,
            } => {
                if src_dev != dst_dev || overlap(src, dst, len) {
                    // Across devices or overlapping: done now, reported at
                    // the first poll.
                    self.copy_device(src_dev, src, dst_dev, dst, len)?;
                    return Ok(InFlight {
                        op,
                        dev: src_dev,
                        event: None,
                    });
                }
                (src_dev, ptr(dst), ptr(src).cast_const(), len, DEVICE_TO_DEVICE)
            }
        };
        self.bind(dev)?;
        let stream = self.stream(dev)?;
        let event = self.event(dev)?;
        let len = len as usize;
        // SAFETY: both ranges were checked (`check_op`): the staging range
        // lies in a pinned buffer this driver owns, which stays allocated
        // and untouched while the copy is in flight (`staging_idle`), and
        // the device range lies inside one allocation.
        let queued = check("aclrtMemcpyAsync", Some(dev), unsafe {
            (self.api().aclrtMemcpyAsync)(dst, len, src, len, kind, stream.0)
        })
        // SAFETY: the event and the stream are this driver's.
        .and_then(|()| {
            check("aclrtRecordEvent", Some(dev), unsafe {
                (self.api().aclrtRecordEvent)(event.0, stream.0)
            })
        });
        if let Err(e) = queued {
            self.destroy_event(event);
            return Err(e);
        }
        Ok(InFlight {
            op,
            dev,
            event: Some(event),
        })
    }

    /// An optional IPC function of ACL, or `NotSupported` naming it and
    /// the library that lacks it.
    fn ipc<F>(&self, f: Option<F>, name: &str) -> Result<F> {
        self.optional(f, name, "no inter-process device memory")
    }

    /// An optional function of ACL, or `NotSupported` naming it, the
    /// library that lacks it and what is missing without it.
    /// Records `notify` on the driver's stream of `dev`: the caller's
    /// stream waiting for it goes on.
    fn record_notify(&mut self, dev: DeviceIndex, notify: Handle) -> Result<()> {
        let record = self.optional(
            self.api().aclrtRecordNotify,
            "aclrtRecordNotify",
            "no stream-ordered transfers",
        )?;
        self.bind(dev)?;
        let ours = self.stream(dev)?;
        // SAFETY: the notify and the stream are this driver's.
        check("aclrtRecordNotify", Some(dev), unsafe {
            record(notify.0, ours.0)
        })
    }

    fn optional<F>(&self, f: Option<F>, name: &str, without: &str) -> Result<F> {
        f.ok_or_else(|| {
            status!(
                NotSupported,
                "{} lacks {name}: {without}",
                self.library_path().display()
            )
        })
    }

    /// Destroys what retiring fences held once their caller's stream has
    /// run past it; the events whose stream ran cleanly go back for reuse.
    fn retire_fences(&mut self) {
        let mut i = 0;
        while i < self.fences.retiring.len() {
            let (dev, until) = (self.fences.retiring[i].dev, self.fences.retiring[i].until);
            let passed = self.bind(dev).ok().and_then(|()| {
                let mut state: c_int = EVENT_RECORDED_NOT_READY;
                // SAFETY: the event is this driver's; writes one enum value.
                let rc = unsafe { (self.api().aclrtQueryEventStatus)(until.0, &mut state) };
                (rc != ACL_SUCCESS || state == EVENT_RECORDED_COMPLETE).then_some(rc == ACL_SUCCESS)
            });
            let Some(clean) = passed else {
                i += 1;
                continue;
            };
            let r = self.fences.retiring.swap_remove(i);
            self.destroy_fence(r, clean);
        }
    }

    /// Destroys a fence's handles, which no stream names any more; with
    /// `clean` (its stream ran without error) its events are reused.
    fn destroy_fence(&mut self, r: Retiring, clean: bool) {
        if let (Some(n), Some(destroy)) = (r.notify, self.api().aclrtDestroyNotify) {
            // SAFETY: the notify is this driver's and its wait has run.
            let _ = unsafe { destroy(n.0) };
        }
        for e in r.events.into_iter().chain([r.until]) {
            if clean {
                self.idle_events.entry(r.dev).or_default().push(e);
            } else {
                self.destroy_event(e);
            }
        }
    }

    /// Closes `key` (ACL revokes an export, unmaps an import), the thread
    /// bound to `dev`.
    /// Refuses to export from a process whose pid ACL sees differently
    /// (`aclrtDeviceGetBareTgid`, the host's view, differs from this
    /// process's own: a container's pid namespace). The importer's pid te
    /// whitelists is its pid as seen from here (`SO_PEERCRED`), and ACL
    /// wants the host's; in a namespace the two name different processes.
    fn check_pid_namespace(&self, dev: DeviceIndex) -> Result<()> {
        let Some(bare_tgid) = self.api().aclrtDeviceGetBareTgid else {
            // Older CANN: whitelists take the plain pid.
            return Ok(());
        };
        let mut tgid = 0i32;
        // SAFETY: writes one int32.
        check("aclrtDeviceGetBareTgid", Some(dev), unsafe {
            bare_tgid(&mut tgid)
        })?;
        let own = std::process::id();
        if u32::try_from(tgid).ok() != Some(own) {
            return Err(status!(
                NotSupported,
                "npu:{dev}: no IPC export from a pid namespace (ACL sees this process as {tgid}, it is {own} here)"
            ));
        }
        Ok(())
    }

    fn close_key(&self, dev: DeviceIndex, key: &IpcKey) -> Result<()> {
        let close = self.ipc(self.api().aclrtIpcMemClose, "aclrtIpcMemClose")?;
        self.bind(dev)?;
        let c = c_key(key);
        // SAFETY: a NUL-terminated key of this driver's exports or imports.
        check("aclrtIpcMemClose", Some(dev), unsafe { close(c.as_ptr()) })
    }

    /// Checks an asynchronous copy's arguments.
    fn check_op(&self, op: &CopyOp) -> Result<()> {
        for (dev, addr, len) in op.device_ranges() {
            self.locate(dev, addr, len)?;
        }
        if let Some((staging, offset, len)) = op.staging() {
            self.staging_at(staging, offset, len)?;
            self.staging_idle(staging)?;
        }
        Ok(())
    }
}

/// Why [`AscendDriver::new`] failed.
#[derive(Debug)]
pub enum Started {
    /// The library or a required symbol is missing.
    Load(LoadError),
    /// ACL itself failed (`aclInit`, `aclrtGetDeviceCount`).
    Acl(te_proto::Status),
}

impl Started {
    /// As a te status: `NotSupported` for a missing library or symbol.
    pub fn status(&self) -> te_proto::Status {
        match self {
            Started::Load(e) => status!(NotSupported, "{}", e.summary()),
            Started::Acl(s) => s.clone(),
        }
    }
}

impl std::fmt::Display for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Started::Load(e) => write!(f, "{e}"),
            Started::Acl(s) => write!(f, "{s}"),
        }
    }
}

/// `key` with its NUL, as ACL takes it.
fn c_key(key: &IpcKey) -> [std::ffi::c_char; IPC_KEY_MAX + 1] {
    let mut c = [0; IPC_KEY_MAX + 1];
    for (d, &b) in c.iter_mut().zip(key.as_bytes()) {
        *d = b as std::ffi::c_char;
    }
    c
}

/// A device address as the pointer ACL takes (never dereferenced here).
fn ptr(addr: DeviceAddr) -> *mut c_void {
    addr.0 as usize as *mut c_void
}

fn overlap(a: DeviceAddr, b: DeviceAddr, len: u64) -> bool {
    a.0 < b.0.saturating_add(len) && b.0 < a.0.saturating_add(len)
}

impl DeviceDriver for AscendDriver {
    fn kind(&self) -> &'static str {
        "npu"
    }

    fn device_count(&self) -> DeviceIndex {
        self.devices
    }

    fn capacity(&self, dev: DeviceIndex) -> Result<Capacity> {
        self.bind(dev)?;
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: writes two size_t through its pointers.
        check("aclrtGetMemInfo", Some(dev), unsafe {
            (self.api().aclrtGetMemInfo)(HBM_MEM, &mut free, &mut total)
        })?;
        Ok(Capacity {
            total: total as u64,
            used: total.saturating_sub(free) as u64,
        })
    }

    fn alloc(&mut self, dev: DeviceIndex, len: u64) -> Result<DeviceAddr> {
        if len == 0 {
            return Err(status!(Invalid, "npu:{dev}: allocation of 0 bytes"));
        }
        let size =
            usize::try_from(len).map_err(|_| status!(Invalid, "npu:{dev}: allocation of {len} bytes"))?;
        self.bind(dev)?;
        let mut p = std::ptr::null_mut();
        // SAFETY: aclrtMalloc writes one pointer through its first argument.
        let rc = unsafe { (self.api().aclrtMalloc)(&mut p, size, MALLOC_HUGE_FIRST) };
        if rc != ACL_SUCCESS {
            let s = status_of("aclrtMalloc", Some(dev), rc);
            return Err(status!(=s.code(), "{} for {len} bytes", s.message()));
        }
        let base = p as u64;
        if let Err(e) = self.zero(dev, base, len) {
            // SAFETY: `p` is the allocation just made.
            let _ = unsafe { (self.api().aclrtFree)(p) };
            return Err(e);
        }
        self.allocs.insert(base, (dev, len));
        Ok(DeviceAddr(base))
    }

    fn free(&mut self, dev: DeviceIndex, addr: DeviceAddr) -> Result<()> {
        match self.allocs.get(&addr.0) {
            Some(&(owner, _)) if owner == dev => {}
            Some(&(owner, _)) => {
                return Err(status!(Invalid, "{addr} belongs to npu:{owner}, not npu:{dev}"))
            }
            None => {
                return Err(status!(
                    Invalid,
                    "npu:{dev}: {addr} is not the start of an allocation of te's"
                ))
            }
        }
        self.bind(dev)?;
        // SAFETY: `addr` is an allocation of this driver's on `dev`.
        check("aclrtFree", Some(dev), unsafe {
            (self.api().aclrtFree)(ptr(addr))
        })?;
        self.allocs.remove(&addr.0);
        Ok(())
    }

    fn check_range(&self, dev: DeviceIndex, addr: DeviceAddr, len: u64) -> Result<()> {
        if len == 0 {
            return Err(status!(Invalid, "npu:{dev}: empty range at {addr}"));
        }
        if dev >= self.devices {
            return Err(status!(
                Invalid,
                "no device npu:{dev}: ACL reports {} devices",
                self.devices
            ));
        }
        self.locate(dev, addr, len)
    }

    fn copy_to_host(&mut self, dev: DeviceIndex, src: DeviceAddr, dst: &mut [u8]) -> Result<()> {
        self.locate(dev, src, dst.len() as u64)?;
        self.bind(dev)?;
        self.memcpy(dev, dst.as_mut_ptr().cast(), ptr(src), dst.len(), DEVICE_TO_HOST)
    }

    fn copy_from_host(&mut self, dev: DeviceIndex, src: &[u8], dst: DeviceAddr) -> Result<()> {
        self.locate(dev, dst, src.len() as u64)?;
        self.bind(dev)?;
        self.memcpy(dev, ptr(dst), src.as_ptr().cast(), src.len(), HOST_TO_DEVICE)
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
        if src_dev != dst_dev || overlap(src, dst, len) {
            if src_dev == dst_dev {
                // Overlapping: through a temporary buffer, as promised.
                let mut tmp = vec![0u8; len as usize];
                self.copy_to_host(src_dev, src, &mut tmp)?;
                return self.copy_from_host(dst_dev, &tmp, dst);
            }
            return self.copy_between(src_dev, src, dst_dev, dst, len);
        }
        self.bind(src_dev)?;
        self.memcpy(src_dev, ptr(dst), ptr(src), len as usize, DEVICE_TO_DEVICE)
    }

    fn alloc_staging(&mut self, len: u64) -> Result<StagingId> {
        let size = usize::try_from(len)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| status!(Invalid, "staging buffer of {len} bytes"))?;
        let mut p = std::ptr::null_mut();
        // SAFETY: aclrtMallocHost writes one pointer through its first
        // argument.
        check("aclrtMallocHost", None, unsafe {
            (self.api().aclrtMallocHost)(&mut p, size)
        })?;
        let p = p.cast::<u8>();
        // SAFETY: `p` is a fresh host allocation of `size` bytes.
        unsafe { std::ptr::write_bytes(p, 0, size) };
        let id = self.next_staging;
        self.next_staging = self.next_staging.wrapping_add(1);
        self.staging.insert(id, Staging { ptr: p, len: size });
        Ok(StagingId(id))
    }

    fn free_staging(&mut self, id: StagingId) -> Result<()> {
        self.staging_buf(id)?;
        self.staging_idle(id)?;
        if let Some(buf) = self.staging.remove(&id.0) {
            // SAFETY: the buffer is this driver's and no copy uses it.
            check("aclrtFreeHost", None, unsafe {
                (self.api().aclrtFreeHost)(buf.ptr.cast())
            })?;
        }
        Ok(())
    }

    fn staging(&self, id: StagingId) -> Result<&[u8]> {
        self.staging_idle(id)?;
        let buf = self.staging_buf(id)?;
        // SAFETY: `buf` is a live pinned allocation of `len` bytes owned by
        // this driver; no copy in flight writes it (`staging_idle`), and the
        // slice borrows `self`, so it cannot be freed meanwhile.
        Ok(unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) })
    }

    fn staging_mut(&mut self, id: StagingId) -> Result<&mut [u8]> {
        self.staging_idle(id)?;
        let buf = self.staging_buf(id)?;
        // SAFETY: as in `staging`, and the borrow of `self` is exclusive.
        Ok(unsafe { std::slice::from_raw_parts_mut(buf.ptr, buf.len) })
    }

    fn submit_copy(&mut self, _now: Instant, op: CopyOp) -> Result<CopyId> {
        self.check_op(&op)?;
        let copy = self.enqueue(op)?;
        let id = self.next_copy;
        self.next_copy += 1;
        self.copies.insert(id, copy);
        Ok(CopyId(id))
    }

    fn poll_copy(&mut self, id: CopyId, _now: Instant) -> Option<Result<()>> {
        let Some(copy) = self.copies.get(&id.0) else {
            return Some(Err(status!(Invalid, "no copy {} in flight", id.0)));
        };
        let (dev, event) = (copy.dev, copy.event);
        let Some(event) = event else {
            self.copies.remove(&id.0);
            return Some(Ok(()));
        };
        if let Err(e) = self.bind(dev) {
            return Some(Err(e));
        }
        let mut state: c_int = EVENT_RECORDED_NOT_READY;
        // SAFETY: the event is this driver's; writes one enum value.
        let rc = unsafe { (self.api().aclrtQueryEventStatus)(event.0, &mut state) };
        if rc == ACL_SUCCESS && state != EVENT_RECORDED_COMPLETE {
            return None;
        }
        self.copies.remove(&id.0);
        if rc == ACL_SUCCESS {
            self.idle_events.entry(dev).or_default().push(event);
            return Some(Ok(()));
        }
        // The copy failed on the stream: drain it to clear the error, and
        // retire the event.
        let _ = self.drain(dev);
        self.destroy_event(event);
        Some(Err(status_of("aclrtMemcpyAsync", Some(dev), rc)))
    }

    fn fence_stream(
        &mut self,
        dev: DeviceIndex,
        stream: StreamHandle,
        timeout: std::time::Duration,
    ) -> Result<FenceId> {
        const WITHOUT: &str = "no stream-ordered transfers";
        let api = self.api();
        let create = self.optional(api.aclrtCreateNotify, "aclrtCreateNotify", WITHOUT)?;
        let wait = self.optional(api.aclrtWaitAndResetNotify, "aclrtWaitAndResetNotify", WITHOUT)?;
        let destroy = self.optional(api.aclrtDestroyNotify, "aclrtDestroyNotify", WITHOUT)?;
        self.optional(api.aclrtRecordNotify, "aclrtRecordNotify", WITHOUT)?;
        if stream.0 == 0 {
            return Err(status!(
                Invalid,
                "npu:{dev}: stream-ordered submit needs the application's stream, not the default (null) one"
            ));
        }
        self.retire_fences();
        self.bind(dev)?;
        let caller = stream.0 as usize as *mut c_void;
        let record_on_caller = |driver: &Self, e: Handle, what: &str| {
            // SAFETY: the event is this driver's; the stream is the
            // caller's handle, which ACL checks (an unknown one is an error).
            check(what, Some(dev), unsafe {
                (driver.api().aclrtRecordEvent)(e.0, caller)
            })
        };
        let start = self.event(dev)?;
        if let Err(e) = record_on_caller(self, start, "aclrtRecordEvent (the caller's stream)") {
            self.destroy_event(start);
            return Err(e);
        }
        // From here the caller's stream names `start`: it goes only once
        // the stream has reached it.
        let retire = |driver: &mut Self, until: Handle, events: Vec<Handle>, notify: Option<Handle>| {
            driver.fences.retiring.push(Retiring {
                dev,
                until,
                events,
                notify,
            });
        };
        let mut notify = std::ptr::null_mut();
        // SAFETY: writes one handle through its pointer.
        let created = check("aclrtCreateNotify", Some(dev), unsafe {
            create(&mut notify, fence::NOTIFY_DEFAULT)
        });
        if let Err(e) = created {
            retire(self, start, Vec::new(), None);
            return Err(e);
        }
        // SAFETY: the notify is this driver's, the stream the caller's.
        let waiting = check(
            "aclrtWaitAndResetNotify (the caller's stream)",
            Some(dev),
            unsafe { wait(notify, caller, fence::wait_secs(timeout)) },
        );
        if let Err(e) = waiting {
            // SAFETY: the notify is this driver's and no stream waits for it.
            let _ = unsafe { destroy(notify) };
            retire(self, start, Vec::new(), None);
            return Err(e);
        }
        let notify = Handle(notify);
        let passed = self.event(dev).and_then(|p| {
            match record_on_caller(self, p, "aclrtRecordEvent (the caller's stream)") {
                Ok(()) => Ok(p),
                Err(e) => {
                    self.destroy_event(p);
                    Err(e)
                }
            }
        });
        let passed = match passed {
            Ok(p) => p,
            Err(e) => {
                // The wait is queued and nothing would tell when the stream
                // passed it: release it now, and leave the notify alive.
                let _ = self.record_notify(dev, notify);
                retire(self, start, Vec::new(), None);
                return Err(status!(=e.code(), "{} (the fence's notify is left alive)", e.message()));
            }
        };
        Ok(self.fences.insert(Fence {
            dev,
            start,
            notify,
            passed,
            started: false,
        }))
    }

    fn poll_fence(&mut self, id: FenceId) -> Option<Result<()>> {
        let Some(f) = self.fences.live.get(&id.0) else {
            return Some(Err(status!(NotFound, "npu: no fence {} set", id.0)));
        };
        if f.started {
            return Some(Ok(()));
        }
        let (dev, start) = (f.dev, f.start);
        if let Err(e) = self.bind(dev) {
            return Some(Err(e));
        }
        let mut state: c_int = EVENT_RECORDED_NOT_READY;
        // SAFETY: the event is this driver's; writes one enum value.
        let rc = unsafe { (self.api().aclrtQueryEventStatus)(start.0, &mut state) };
        if rc == ACL_SUCCESS && state != EVENT_RECORDED_COMPLETE {
            return None;
        }
        if rc != ACL_SUCCESS {
            // The caller's stream failed before the fence: its error is
            // the caller's to clear, as is every error of its stream.
            return Some(Err(status_of(
                "aclrtQueryEventStatus (work queued on the caller's stream before the transfer)",
                Some(dev),
                rc,
            )));
        }
        if let Some(f) = self.fences.live.get_mut(&id.0) {
            f.started = true;
        }
        Some(Ok(()))
    }

    fn release_fence(&mut self, id: FenceId) -> Result<()> {
        let Some(f) = self.fences.live.remove(&id.0) else {
            return Err(status!(NotFound, "npu: no fence {} set", id.0));
        };
        let result = self.record_notify(f.dev, f.notify);
        // Whether or not the record was queued (without it the caller's
        // wait ends at its timeout), everything goes once the stream passed.
        self.fences.retiring.push(Retiring {
            dev: f.dev,
            until: f.passed,
            events: vec![f.start],
            notify: Some(f.notify),
        });
        self.retire_fences();
        result
    }

    fn ipc_supported(&self) -> bool {
        let api = self.api();
        api.aclrtIpcMemGetExportKey.is_some()
            && api.aclrtIpcMemSetImportPid.is_some()
            && api.aclrtIpcMemImportByKey.is_some()
            && api.aclrtIpcMemClose.is_some()
            // An import's size must be checked against the mapping.
            && api.aclrtMemGetAddressRange.is_some()
    }

    fn export_range(
        &mut self,
        dev: DeviceIndex,
        addr: DeviceAddr,
        len: u64,
        importer: u32,
    ) -> Result<IpcKey> {
        let get_key = self.ipc(self.api().aclrtIpcMemGetExportKey, "aclrtIpcMemGetExportKey")?;
        let set_pid = self.ipc(self.api().aclrtIpcMemSetImportPid, "aclrtIpcMemSetImportPid")?;
        self.ipc(self.api().aclrtIpcMemClose, "aclrtIpcMemClose")?;
        self.check_range(dev, addr, len)?;
        let mut pid = i32::try_from(importer)
            .map_err(|_| status!(Invalid, "npu:{dev}: importer process id {importer} out of range"))?;
        self.bind(dev)?;
        self.check_pid_namespace(dev)?;
        let mut buf = [0 as std::ffi::c_char; IPC_KEY_MAX + 1];
        // SAFETY: the range lies in one allocation (`check_range`); ACL
        // writes at most `buf.len()` bytes of key with its NUL. Flags 0:
        // only whitelisted processes may import.
        check("aclrtIpcMemGetExportKey", Some(dev), unsafe {
            get_key(ptr(addr), len as usize, buf.as_mut_ptr(), buf.len(), 0)
        })?;
        let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
        let bytes: Vec<u8> = buf[..end].iter().map(|&c| c as u8).collect();
        let key =
            IpcKey::new(&bytes).map_err(|e| status!(RuntimeError, "npu:{dev}: ACL gave {}", e.message()))?;
        self.exports.insert(key, dev);
        let c = c_key(&key);
        // SAFETY: a NUL-terminated key just exported, one pid.
        let allowed = check("aclrtIpcMemSetImportPid", Some(dev), unsafe {
            set_pid(c.as_ptr(), &mut pid, 1)
        });
        if let Err(e) = allowed {
            let _ = self.close_export(&key);
            return Err(e);
        }
        Ok(key)
    }

    fn close_export(&mut self, key: &IpcKey) -> Result<()> {
        let Some(&dev) = self.exports.get(key) else {
            return Err(status!(Invalid, "npu: no export of te's under key {key:?}"));
        };
        self.exports.remove(key);
        self.close_key(dev, key)
    }

    fn import_range(
        &mut self,
        dev: DeviceIndex,
        peer_dev: DeviceIndex,
        key: &IpcKey,
        len: u64,
    ) -> Result<DeviceAddr> {
        let import = self.ipc(self.api().aclrtIpcMemImportByKey, "aclrtIpcMemImportByKey")?;
        self.ipc(self.api().aclrtIpcMemClose, "aclrtIpcMemClose")?;
        if len == 0 {
            return Err(status!(Invalid, "npu:{dev}: import of 0 bytes under key {key:?}"));
        }
        if dev != peer_dev && !self.peer(dev, peer_dev)? {
            return Err(status!(
                NotSupported,
                "npu:{dev} cannot access npu:{peer_dev}, where key {key:?} was exported"
            ));
        }
        self.bind(dev)?;
        let c = c_key(key);
        let mut p = std::ptr::null_mut();
        // SAFETY: a NUL-terminated key; ACL writes one pointer. Flags 0:
        // the exporter's whitelist applies.
        check("aclrtIpcMemImportByKey", Some(dev), unsafe {
            import(&mut p, c.as_ptr(), 0)
        })?;
        let base = p as u64;
        // The peer announced the length: the mapping must be at least that
        // large, as ACL reports it, or no copy may use it (a copy past the
        // mapping would reach this process's own device memory).
        let (mut b, mut size) = (std::ptr::null_mut(), 0usize);
        let rc = match self.api().aclrtMemGetAddressRange {
            // SAFETY: looks the imported address up; writes a pointer and a size.
            Some(range_of) => unsafe { range_of(p, &mut b, &mut size) },
            None => ACL_ERROR_FEATURE_UNSUPPORTED,
        };
        if rc != ACL_SUCCESS || b as u64 != base || (size as u64) < len {
            let _ = self.close_key(dev, key);
            return Err(if rc != ACL_SUCCESS {
                status_of(
                    "aclrtMemGetAddressRange (the size of an imported buffer cannot be checked)",
                    Some(dev),
                    rc,
                )
            } else {
                status!(
                    Invalid,
                    "npu:{dev}: an imported key maps {size} bytes at {:#x}, not the {len} announced at {base:#x}",
                    b as u64
                )
            });
        }
        self.imports.insert(base, (dev, len, *key));
        Ok(DeviceAddr(base))
    }

    fn close_import(&mut self, dev: DeviceIndex, addr: DeviceAddr) -> Result<()> {
        match self.imports.get(&addr.0) {
            Some(&(d, _, key)) if d == dev => {
                self.imports.remove(&addr.0);
                self.close_key(dev, &key)
            }
            _ => Err(status!(Invalid, "npu:{dev}: no import at {addr}")),
        }
    }
}

impl Drop for AscendDriver {
    fn drop(&mut self) {
        // No caller's stream is left waiting for a transfer that will not end.
        let live: Vec<u64> = self.fences.live.keys().copied().collect();
        for id in live {
            let _ = self.release_fence(FenceId(id));
        }
        let devs: Vec<DeviceIndex> = self.streams.keys().copied().collect();
        for dev in &devs {
            let _ = self.drain(*dev);
        }
        // The callers' streams, released, pass their fences soon; what one
        // has not passed within FENCE_DROP_WAIT stays alive (a handle
        // destroyed under a stream that still names it is worse than a leak).
        let until = std::time::Instant::now() + fence::FENCE_DROP_WAIT;
        self.retire_fences();
        while !self.fences.retiring.is_empty() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(1));
            self.retire_fences();
        }
        let events: Vec<(DeviceIndex, Handle)> = self
            .copies
            .drain()
            .filter_map(|(_, c)| c.event.map(|e| (c.dev, e)))
            .chain(
                self.idle_events
                    .drain()
                    .flat_map(|(d, es)| es.into_iter().map(move |e| (d, e))),
            )
            .collect();
        for (dev, e) in events {
            if self.bind(dev).is_ok() {
                self.destroy_event(e);
            }
        }
        // Imports before exports: CANN wants importers to close first.
        for (_, (dev, _, key)) in std::mem::take(&mut self.imports) {
            let _ = self.close_key(dev, &key);
        }
        for (key, dev) in std::mem::take(&mut self.exports) {
            let _ = self.close_key(dev, &key);
        }
        for (dev, s) in std::mem::take(&mut self.streams) {
            if self.bind(dev).is_ok() {
                // SAFETY: the stream is this driver's and drained.
                let _ = unsafe { (self.api().aclrtDestroyStream)(s.0) };
            }
        }
        for (base, (dev, _)) in std::mem::take(&mut self.allocs) {
            if self.bind(dev).is_ok() {
                // SAFETY: an allocation of this driver's; nothing uses it now.
                let _ = unsafe { (self.api().aclrtFree)(base as usize as *mut c_void) };
            }
        }
        let api = self.api();
        for (_, buf) in self.staging.drain() {
            // SAFETY: a staging buffer of this driver's; its copies drained.
            let _ = unsafe { (api.aclrtFreeHost)(buf.ptr.cast()) };
        }
        // `session` drops after this, finalising ACL if te was its last user.
    }
}
