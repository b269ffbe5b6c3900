//! The process-wide state behind one mutex: devices and their allocations, host allocations,
//! stream and event handles, IPC exports and imports; and the per-thread device binding.

use std::alloc::Layout;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use crate::codes::*;
use crate::stream::{Event, Loc, Notify, Stream};

/// Top byte of every fake device address (non-canonical on x86-64 and aarch64).
pub const DEV_BASE: u64 = 0x7E00_0000_0000_0000;
/// Set in addresses of imported IPC ranges.
pub const IMPORT_BIT: u64 = 1 << 55;
/// Offset bits below the device (or import slot) number.
pub const OFF_BITS: u32 = 40;
const OFF_MASK: u64 = (1 << OFF_BITS) - 1;
/// Allocation alignment, as aclrtMalloc gives.
pub const ALIGN: u64 = 512;
/// Largest device count.
pub const MAX_DEVICES: u32 = 16;
const MAX_SLOT: u64 = (1 << (55 - OFF_BITS)) - 1;
/// Prefix of every file the fake creates in its shared-memory directory.
pub const FILE_PREFIX: &str = "te-fake-acl-";

/// True for an address in the fake device range (local or imported).
pub fn is_device_addr(a: u64) -> bool {
    a >> 56 == DEV_BASE >> 56
}

struct Alloc {
    /// Size the caller asked for.
    size: u64,
    /// Size taken from the heap (rounded up to `ALIGN`).
    span: u64,
}

/// One fake device: a sparse backing file and a first-fit allocator over it.
pub struct Device {
    file: Arc<File>,
    path: PathBuf,
    total: u64,
    used: u64,
    allocs: BTreeMap<u64, Alloc>,
    default_stream: Option<Arc<Stream>>,
    /// `aclrtSetDevice` calls minus `aclrtResetDevice` calls (process-wide, as in ACL).
    refs: u64,
    /// Bumped when the reference count drops to 0 and the default context is released:
    /// thread bindings of an older generation are void.
    gen: u64,
}

/// An export made by this process.
struct Export {
    record: PathBuf,
    dev: u32,
    off: u64,
    size: u64,
    validate: bool,
    pids: Vec<i32>,
    dev_path: PathBuf,
}

/// A mapping of another process's (or our own) exported range.
struct Import {
    key: String,
    file: Arc<File>,
    off: u64,
    size: u64,
    record: PathBuf,
    /// `<record>.imp-<our pid>`: tells the exporter that we still map the range.
    marker: PathBuf,
    refs: u32,
}

/// Everything the fake runtime knows.
#[derive(Default)]
pub struct State {
    /// Between `aclInit` and `aclFinalize`.
    pub init: bool,
    /// `aclFinalize` succeeded at least once.
    pub finalized: bool,
    /// Bumped by each `aclInit`; thread bindings of an older epoch are void.
    epoch: u64,
    devices: Vec<Device>,
    dir: PathBuf,
    host: HashMap<usize, Layout>,
    /// Explicit streams and the device they were created on.
    streams: HashMap<usize, (u32, Arc<Stream>)>,
    events: HashMap<usize, Arc<Event>>,
    notifies: HashMap<usize, Arc<Notify>>,
    next_handle: usize,
    exports: HashMap<String, Export>,
    imports: HashMap<u64, Import>,
    next_slot: u64,
    export_seq: u64,
    misuse: u64,
}

static STATE: LazyLock<Mutex<State>> = LazyLock::new(|| Mutex::new(State::default()));

/// Locks the global state.
pub fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Locks the global state if nobody holds it (for the exit handler).
pub fn try_state() -> Option<MutexGuard<'static, State>> {
    match STATE.try_lock() {
        Ok(g) => Some(g),
        Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

thread_local! {
    /// (epoch, device, device generation) bound to this thread by `aclrtSetDevice`; device -1 =
    /// none.
    static BOUND: Cell<(u64, i32, u64)> = const { Cell::new((0, -1, 0)) };
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn pid() -> i32 {
    std::process::id() as i32
}

fn pid_alive(p: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission; no signal is sent.
    let r = unsafe { libc::kill(p, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The directory holding device files and export records: `TE_FAKE_ACL_SHM_DIR`, else
/// `/dev/shm`, else the temporary directory.
pub fn shm_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TE_FAKE_ACL_SHM_DIR") {
        return PathBuf::from(d);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Removes files left by processes that no longer exist.
fn sweep_stale(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(FILE_PREFIX)) else {
            continue;
        };
        let Some(p) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if p != pid() && !pid_alive(p) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Zeroes (and releases) a byte range of a device file.
fn zero_range(file: &File, off: u64, len: u64) {
    // SAFETY: fallocate on a file descriptor we own; PUNCH_HOLE|KEEP_SIZE only deallocates the
    // range (reads then return zeros) and touches no memory of ours.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off as libc::off_t,
            len as libc::off_t,
        )
    };
    if r != 0 {
        let zeros = vec![0u8; len.min(1 << 20) as usize];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            let _ = file.write_all_at(&zeros[..n], off + done);
            done += n as u64;
        }
    }
}

fn write_record(path: &Path, e: &Export) -> Result<(), i32> {
    let pids: Vec<String> = e.pids.iter().map(|p| p.to_string()).collect();
    let body = format!(
        "{}\nvalidate={}\npids={}\n",
        e.dev_path.display(),
        u8::from(e.validate),
        pids.join(" ")
    );
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body).map_err(|_| ACL_ERROR_RT_IPC_ERROR)?;
    std::fs::rename(&tmp, path).map_err(|_| ACL_ERROR_RT_IPC_ERROR)
}

/// Fields of a key `tefakeacl-<pid>-<dev>-<offset hex>-<size hex>-<seq>`.
struct KeyParts {
    pid: i32,
    dev: u32,
    off: u64,
    size: u64,
    seq: u64,
}

fn parse_key(key: &str) -> Option<KeyParts> {
    let mut it = key.strip_prefix("tefakeacl-")?.split('-');
    let k = KeyParts {
        pid: it.next()?.parse().ok()?,
        dev: it.next()?.parse().ok()?,
        off: u64::from_str_radix(it.next()?, 16).ok()?,
        size: u64::from_str_radix(it.next()?, 16).ok()?,
        seq: it.next()?.parse().ok()?,
    };
    if it.next().is_some() {
        return None;
    }
    Some(k)
}

fn record_name(k: &KeyParts) -> String {
    format!(
        "{FILE_PREFIX}{}-key-{}-{:x}-{:x}-{}",
        k.pid, k.dev, k.off, k.size, k.seq
    )
}

impl State {
    /// `aclInit`: creates the devices from the environment.
    pub fn start(&mut self) -> Result<(), i32> {
        let n = env_u64("TE_FAKE_ACL_DEVICES", 2).min(u64::from(MAX_DEVICES)) as u32;
        let total = env_u64("TE_FAKE_ACL_HBM_MB", 4096).clamp(1, 1 << 20) << 20;
        let dir = shm_dir();
        sweep_stale(&dir);
        let mut devices = Vec::new();
        for d in 0..n {
            let path = dir.join(format!("{FILE_PREFIX}{}-dev{d}", pid()));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .and_then(|f| f.set_len(total).map(|_| f));
            match file {
                Ok(f) => devices.push(Device {
                    file: Arc::new(f),
                    path,
                    total,
                    used: 0,
                    allocs: BTreeMap::new(),
                    default_stream: None,
                    refs: 0,
                    gen: 0,
                }),
                Err(e) => {
                    eprintln!("te-fake-acl: cannot create {}: {e}", path.display());
                    for d in &devices {
                        let _ = std::fs::remove_file(&d.path);
                    }
                    return Err(ACL_ERROR_RT_INTERNAL_ERROR);
                }
            }
        }
        self.devices = devices;
        self.dir = dir;
        self.epoch += 1;
        self.init = true;
        if self.next_handle == 0 {
            self.next_handle = 0x1000;
        }
        Ok(())
    }

    /// `aclFinalize`: drops devices, streams, events, exports and imports (host allocations stay:
    /// the caller may still touch them). Returns the streams to drain and stop outside the lock.
    pub fn stop(&mut self) -> Vec<Arc<Stream>> {
        self.remove_files();
        let mut streams: Vec<Arc<Stream>> = self.streams.drain().map(|(_, (_, s))| s).collect();
        for d in self.devices.drain(..) {
            streams.extend(d.default_stream);
        }
        self.events.clear();
        self.notifies.clear();
        self.exports.clear();
        self.imports.clear();
        self.init = false;
        self.finalized = true;
        streams
    }

    /// Removes the device files and export records of this process.
    pub fn remove_files(&self) {
        for d in &self.devices {
            let _ = std::fs::remove_file(&d.path);
        }
        for e in self.exports.values() {
            let _ = std::fs::remove_file(&e.record);
        }
        for i in self.imports.values() {
            let _ = std::fs::remove_file(&i.marker);
        }
    }

    /// Counts a use of IPC that real ACL documents as undefined, and says so on stderr.
    fn misuse(&mut self, what: std::fmt::Arguments<'_>) {
        self.misuse += 1;
        eprintln!("te-fake-acl: IPC misuse (undefined on real ACL): {what}");
    }

    /// IPC misuses seen so far (see `te_fake_acl_ipc_misuse`).
    pub fn misuses(&self) -> u64 {
        self.misuse
    }

    /// Number of devices.
    pub fn device_count(&self) -> u32 {
        self.devices.len() as u32
    }

    /// Checks a device id.
    pub fn check_dev(&self, id: i32) -> Result<u32, i32> {
        if id >= 0 && (id as usize) < self.devices.len() {
            Ok(id as u32)
        } else {
            Err(ACL_ERROR_RT_INVALID_DEVICEID)
        }
    }

    /// `aclrtSetDevice`: binds device `id` to the calling thread and counts a reference.
    pub fn bind(&mut self, id: u32) {
        let d = &mut self.devices[id as usize];
        d.refs += 1;
        BOUND.with(|b| b.set((self.epoch, id as i32, d.gen)));
    }

    /// `aclrtResetDevice`: drops a reference; at 0 the device's default context goes: every
    /// thread binding to it ends (`ACL_ERROR_RT_CONTEXT_NULL` afterwards) and its default stream
    /// and the streams created on it are unregistered. Returns those streams, to drain and stop
    /// outside the lock. A device without references gives `ACL_ERROR_RT_PARAM_INVALID`.
    pub fn reset(&mut self, id: u32) -> Result<Vec<Arc<Stream>>, i32> {
        let d = &mut self.devices[id as usize];
        if d.refs == 0 {
            return Err(ACL_ERROR_RT_PARAM_INVALID);
        }
        d.refs -= 1;
        if d.refs > 0 {
            return Ok(Vec::new());
        }
        d.gen += 1;
        let mut gone: Vec<Arc<Stream>> = d.default_stream.take().into_iter().collect();
        let hs: Vec<usize> = self
            .streams
            .iter()
            .filter(|(_, (dev, _))| *dev == id)
            .map(|(h, _)| *h)
            .collect();
        for h in hs {
            gone.extend(self.streams.remove(&h).map(|(_, s)| s));
        }
        Ok(gone)
    }

    /// The device bound to the calling thread, or `ACL_ERROR_RT_CONTEXT_NULL`.
    pub fn cur_dev(&self) -> Result<u32, i32> {
        let (epoch, dev, gen) = BOUND.with(|b| b.get());
        if epoch != self.epoch || dev < 0 {
            return Err(ACL_ERROR_RT_CONTEXT_NULL);
        }
        match self.devices.get(dev as usize) {
            Some(d) if d.gen == gen => Ok(dev as u32),
            _ => Err(ACL_ERROR_RT_CONTEXT_NULL),
        }
    }

    /// (free, total) bytes of a device.
    pub fn mem_info(&self, dev: u32) -> (u64, u64) {
        let d = &self.devices[dev as usize];
        (d.total - d.used, d.total)
    }

    /// First-fit allocation of `size` bytes on `dev`; the range reads as zeros.
    pub fn malloc(&mut self, dev: u32, size: u64) -> Result<u64, i32> {
        let d = &mut self.devices[dev as usize];
        let span = size
            .checked_next_multiple_of(ALIGN)
            .ok_or(ACL_ERROR_RT_MEMORY_ALLOCATION)?;
        let mut at = 0u64;
        for (&base, a) in &d.allocs {
            if base - at >= span {
                break;
            }
            at = base + a.span;
        }
        if d.total.saturating_sub(at) < span {
            return Err(ACL_ERROR_RT_MEMORY_ALLOCATION);
        }
        d.allocs.insert(at, Alloc { size, span });
        d.used += span;
        Ok(DEV_BASE | (u64::from(dev) << OFF_BITS) | at)
    }

    fn local(addr: u64) -> Option<(u32, u64)> {
        if !is_device_addr(addr) || addr & IMPORT_BIT != 0 {
            return None;
        }
        let dev = (addr >> OFF_BITS) & 0xFFFF;
        (dev < u64::from(MAX_DEVICES)).then_some((dev as u32, addr & OFF_MASK))
    }

    /// Frees the allocation starting exactly at `addr`; the bytes are zeroed.
    pub fn free(&mut self, addr: u64) -> Result<(), i32> {
        let (dev, off) = Self::local(addr).ok_or(ACL_ERROR_RT_PARAM_INVALID)?;
        let d = self
            .devices
            .get_mut(dev as usize)
            .ok_or(ACL_ERROR_RT_PARAM_INVALID)?;
        let a = d.allocs.remove(&off).ok_or(ACL_ERROR_RT_PARAM_INVALID)?;
        d.used -= a.span;
        zero_range(&d.file, off, a.span);
        let exported = self
            .exports
            .values()
            .filter(|e| e.dev == dev && e.off < off + a.span && off < e.off + e.size)
            .count();
        if exported > 0 {
            self.misuse(format_args!(
                "aclrtFree({addr:#x}) while {exported} export(s) of it are not closed"
            ));
        }
        Ok(())
    }

    /// Base and size of the allocation (or imported range) holding `addr`.
    pub fn range(&self, addr: u64) -> Result<(u64, u64), i32> {
        if is_device_addr(addr) && addr & IMPORT_BIT != 0 {
            let slot = (addr >> OFF_BITS) & MAX_SLOT;
            let imp = self.imports.get(&slot).ok_or(ACL_ERROR_RT_PARAM_INVALID)?;
            if addr & OFF_MASK >= imp.size {
                return Err(ACL_ERROR_RT_PARAM_INVALID);
            }
            return Ok((addr & !OFF_MASK, imp.size));
        }
        let (dev, off) = Self::local(addr).ok_or(ACL_ERROR_RT_PARAM_INVALID)?;
        let d = self.devices.get(dev as usize).ok_or(ACL_ERROR_RT_PARAM_INVALID)?;
        let (&base, a) = d
            .allocs
            .range(..=off)
            .next_back()
            .ok_or(ACL_ERROR_RT_PARAM_INVALID)?;
        if off - base >= a.size {
            return Err(ACL_ERROR_RT_PARAM_INVALID);
        }
        Ok((addr - (off - base), a.size))
    }

    /// Resolves the device range `addr..addr+len` (`len > 0`), which must lie wholly inside one
    /// live allocation or imported range.
    pub fn resolve(&self, addr: u64, len: u64) -> Result<Loc, i32> {
        let (base, size) = self.range(addr)?;
        if len > size - (addr - base) {
            return Err(ACL_ERROR_RT_PARAM_INVALID);
        }
        if addr & IMPORT_BIT != 0 {
            let imp = &self.imports[&((addr >> OFF_BITS) & MAX_SLOT)];
            return Ok(Loc::Dev {
                file: Arc::clone(&imp.file),
                off: imp.off + (addr & OFF_MASK),
                revoke: Some(imp.record.clone()),
            });
        }
        let dev = ((addr >> OFF_BITS) & 0xFFFF) as usize;
        Ok(Loc::Dev {
            file: Arc::clone(&self.devices[dev].file),
            off: addr & OFF_MASK,
            revoke: None,
        })
    }

    /// Live device allocations over all devices.
    pub fn live_allocations(&self) -> u64 {
        self.devices.iter().map(|d| d.allocs.len() as u64).sum()
    }

    /// Remembers a host allocation.
    pub fn add_host(&mut self, p: usize, l: Layout) {
        self.host.insert(p, l);
    }

    /// Forgets a host allocation, returning its layout.
    pub fn take_host(&mut self, p: usize) -> Option<Layout> {
        self.host.remove(&p)
    }

    /// Live host allocations.
    pub fn live_host(&self) -> u64 {
        self.host.len() as u64
    }

    /// Live exports plus imports of this process.
    pub fn live_ipc(&self) -> u64 {
        (self.exports.len() + self.imports.len()) as u64
    }

    fn handle(&mut self) -> usize {
        let h = self.next_handle;
        self.next_handle += 0x10;
        h
    }

    /// Registers a stream created on `dev`, returning its handle.
    pub fn add_stream(&mut self, dev: u32, s: Arc<Stream>) -> usize {
        let h = self.handle();
        self.streams.insert(h, (dev, s));
        h
    }

    /// Unregisters a stream.
    pub fn take_stream(&mut self, h: usize) -> Option<Arc<Stream>> {
        self.streams.remove(&h).map(|(_, s)| s)
    }

    /// The stream behind a handle; null is the default stream of the calling thread's device.
    pub fn stream(&mut self, h: usize) -> Result<Arc<Stream>, i32> {
        if h != 0 {
            return self
                .streams
                .get(&h)
                .map(|(_, s)| Arc::clone(s))
                .ok_or(ACL_ERROR_RT_PARAM_INVALID);
        }
        let dev = self.cur_dev()?;
        let d = &mut self.devices[dev as usize];
        if let Some(s) = &d.default_stream {
            return Ok(Arc::clone(s));
        }
        let s = Stream::start()?;
        d.default_stream = Some(Arc::clone(&s));
        Ok(s)
    }

    /// Registers an event, returning its handle.
    pub fn add_event(&mut self, e: Arc<Event>) -> usize {
        let h = self.handle();
        self.events.insert(h, e);
        h
    }

    /// Unregisters an event.
    pub fn take_event(&mut self, h: usize) -> Option<Arc<Event>> {
        self.events.remove(&h)
    }

    /// The event behind a handle.
    pub fn event(&self, h: usize) -> Result<Arc<Event>, i32> {
        self.events.get(&h).cloned().ok_or(ACL_ERROR_RT_PARAM_INVALID)
    }

    /// Registers a notify, returning its handle.
    pub fn add_notify(&mut self, n: Arc<Notify>) -> usize {
        let h = self.handle();
        self.notifies.insert(h, n);
        h
    }

    /// Unregisters a notify.
    pub fn take_notify(&mut self, h: usize) -> Option<Arc<Notify>> {
        self.notifies.remove(&h)
    }

    /// The notify behind a handle.
    pub fn notify(&self, h: usize) -> Result<Arc<Notify>, i32> {
        self.notifies.get(&h).cloned().ok_or(ACL_ERROR_RT_PARAM_INVALID)
    }

    /// `aclrtIpcMemGetExportKey`: exports `addr..addr+size` of a local allocation.
    pub fn export(&mut self, addr: u64, size: u64, validate: bool) -> Result<String, i32> {
        let (base, asize) = self.range(addr)?;
        if addr & IMPORT_BIT != 0 || size > asize - (addr - base) {
            return Err(ACL_ERROR_RT_PARAM_INVALID);
        }
        let dev = ((addr >> OFF_BITS) & 0xFFFF) as u32;
        self.export_seq += 1;
        let k = KeyParts {
            pid: pid(),
            dev,
            off: addr & OFF_MASK,
            size,
            seq: self.export_seq,
        };
        let key = format!("tefakeacl-{}-{}-{:x}-{:x}-{}", k.pid, k.dev, k.off, k.size, k.seq);
        let record = self.dir.join(record_name(&k));
        let e = Export {
            record: record.clone(),
            dev,
            off: k.off,
            size,
            validate,
            pids: Vec::new(),
            dev_path: self.devices[dev as usize].path.clone(),
        };
        write_record(&record, &e)?;
        self.exports.insert(key.clone(), e);
        Ok(key)
    }

    /// `aclrtIpcMemSetImportPid`: whitelists importer pids for one of our exports.
    pub fn allow_pids(&mut self, key: &str, pids: &[i32]) -> Result<(), i32> {
        let e = self.exports.get_mut(key).ok_or(ACL_ERROR_RT_IPC_ERROR)?;
        e.pids.extend_from_slice(pids);
        write_record(&e.record, e)
    }

    /// Live processes whose import marker for this record exists.
    fn importers(&self, record: &Path) -> Vec<i32> {
        let Some(name) = record.file_name().and_then(|n| n.to_str()) else {
            return Vec::new();
        };
        let prefix = format!("{name}.imp-");
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix(&prefix)?.parse::<i32>().ok())
            .filter(|&p| pid_alive(p))
            .collect()
    }

    /// `aclrtIpcMemImportByKey`: maps an exported range; returns its address here.
    pub fn import(&mut self, key: &str) -> Result<u64, i32> {
        if let Some((&slot, imp)) = self.imports.iter_mut().find(|(_, i)| i.key == key) {
            if !imp.record.exists() {
                return Err(ACL_ERROR_RT_IPC_ERROR);
            }
            imp.refs += 1;
            return Ok(DEV_BASE | IMPORT_BIT | (slot << OFF_BITS));
        }
        let k = parse_key(key).ok_or(ACL_ERROR_RT_IPC_ERROR)?;
        let record = self.dir.join(record_name(&k));
        let body = std::fs::read_to_string(&record).map_err(|_| ACL_ERROR_RT_IPC_ERROR)?;
        let mut lines = body.lines();
        let dev_path = PathBuf::from(lines.next().ok_or(ACL_ERROR_RT_IPC_ERROR)?);
        let validate = lines.next() != Some("validate=0");
        let pids: Vec<i32> = lines
            .next()
            .and_then(|l| l.strip_prefix("pids="))
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if (validate && !pids.contains(&pid())) || !pid_alive(k.pid) {
            return Err(ACL_ERROR_RT_IPC_ERROR);
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev_path)
            .map_err(|_| ACL_ERROR_RT_IPC_ERROR)?;
        let len = file.metadata().map_err(|_| ACL_ERROR_RT_IPC_ERROR)?.len();
        if k.off.checked_add(k.size).is_none_or(|end| end > len) {
            return Err(ACL_ERROR_RT_IPC_ERROR);
        }
        let mut slot = None;
        for _ in 0..MAX_SLOT {
            self.next_slot = self.next_slot % MAX_SLOT + 1;
            if !self.imports.contains_key(&self.next_slot) {
                slot = Some(self.next_slot);
                break;
            }
        }
        let slot = slot.ok_or(ACL_ERROR_RT_IPC_ERROR)?;
        let mut marker = record.clone().into_os_string();
        marker.push(format!(".imp-{}", pid()));
        let marker = PathBuf::from(marker);
        std::fs::write(&marker, b"").map_err(|_| ACL_ERROR_RT_IPC_ERROR)?;
        self.imports.insert(
            slot,
            Import {
                key: key.to_owned(),
                file: Arc::new(file),
                off: k.off,
                size: k.size,
                record,
                marker,
                refs: 1,
            },
        );
        Ok(DEV_BASE | IMPORT_BIT | (slot << OFF_BITS))
    }

    /// `aclrtIpcMemClose`: unmaps an import (last reference), else revokes an export.
    pub fn close_key(&mut self, key: &str) -> Result<(), i32> {
        if let Some((&slot, imp)) = self.imports.iter_mut().find(|(_, i)| i.key == key) {
            imp.refs -= 1;
            if imp.refs == 0 {
                let _ = std::fs::remove_file(&imp.marker);
                self.imports.remove(&slot);
            }
            return Ok(());
        }
        let e = self.exports.remove(key).ok_or(ACL_ERROR_RT_IPC_ERROR)?;
        let _ = std::fs::remove_file(&e.record);
        let importers = self.importers(&e.record);
        if !importers.is_empty() {
            self.misuse(format_args!(
                "aclrtIpcMemClose({key}) in the exporter while pid(s) {importers:?} still import it"
            ));
        }
        Ok(())
    }
}
