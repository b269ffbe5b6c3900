//! A fake CANN ACL runtime (`libascendcl.so` stand-in) for testing drivers without Ascend
//! hardware.
//!
//! The library exports the ACL runtime entry points that te-driver-ascend uses, with the C ABI
//! of `acl_rt.h` (`aclError` = `int32_t` returns, pointer-to-pointer out parameters, `size_t` =
//! `usize`) and the error numbers of `acl_base.h` / `rt_error_codes.h`. A driver that passes its
//! tests against this library makes the same calls, in the same order and on the same threads,
//! that real ACL requires. Nothing here links or needs CANN.
//!
//! Exported ACL symbols: `aclInit`, `aclFinalize`, `aclrtSetDevice`, `aclrtResetDevice`,
//! `aclrtGetDevice`, `aclrtGetDeviceCount`, `aclrtGetMemInfo`, `aclrtMalloc`, `aclrtFree`,
//! `aclrtMallocHost`, `aclrtFreeHost`, `aclrtMemcpy`, `aclrtMemcpyAsync`, `aclrtMemset`,
//! `aclrtMemsetAsync`, `aclrtCreateStream`, `aclrtDestroyStream`, `aclrtSynchronizeStream`,
//! `aclrtSynchronizeStreamWithTimeout`, `aclrtCreateEvent`, `aclrtDestroyEvent`,
//! `aclrtRecordEvent`, `aclrtQueryEventStatus`, `aclrtQueryEvent`, `aclrtSynchronizeEvent`,
//! `aclrtStreamWaitEvent`, `aclrtCreateNotify`, `aclrtDestroyNotify`, `aclrtRecordNotify`,
//! `aclrtWaitAndResetNotify`, `aclrtDeviceCanAccessPeer`, `aclrtDeviceEnablePeerAccess`,
//! `aclrtMemGetAddressRange`, `aclrtIpcMemGetExportKey`, `aclrtIpcMemSetImportPid`,
//! `aclrtIpcMemImportByKey`, `aclrtIpcMemClose`, `aclrtDeviceGetBareTgid`.
//!
//! # What is faked, and how
//!
//! * **Init.** Every call but `aclInit` fails with `ACL_ERROR_UNINITIALIZE` (100001) before
//!   `aclInit` and after `aclFinalize`; a second `aclInit` gives `ACL_ERROR_REPEAT_INITIALIZE`
//!   (100002, state stays initialized); `aclFinalize` when not initialized gives 100001, or
//!   `ACL_ERROR_REPEAT_FINALIZE` (100037) if a finalize happened before. `aclFinalize` drains and
//!   stops every stream and drops all device memory, events, exports and imports (host memory
//!   from `aclrtMallocHost` stays allocated); `aclInit` works again afterwards.
//! * **Devices.** `TE_FAKE_ACL_DEVICES` devices (default 2, at most 16) of `TE_FAKE_ACL_HBM_MB`
//!   MiB HBM each (default 4096), read at `aclInit`. `aclrtSetDevice` binds a device to the
//!   **calling thread only**; calls that need a context (`aclrtGetDevice`, `aclrtGetMemInfo`,
//!   `aclrtMalloc`, `aclrtFree`, `aclrtMemcpy`, `aclrtMemcpyAsync`, `aclrtMemset[Async]`,
//!   `aclrtCreateStream`, `aclrtCreateEvent`, `aclrtRecordEvent`, `aclrtStreamWaitEvent`, stream calls on the null
//!   (default) stream, `aclrtDeviceEnablePeerAccess`, `aclrtIpcMemGetExportKey`,
//!   `aclrtIpcMemImportByKey`) fail with `ACL_ERROR_RT_CONTEXT_NULL` (107002) on a thread that
//!   never called it. `aclrtResetDevice` follows ACL's reference count: every `aclrtSetDevice`
//!   (on any thread) adds one, every reset drops one, and at zero the device's default context
//!   goes: its default stream and the streams created on it are drained and destroyed (their
//!   handles then give 107000), every thread bound to it gets 107002, and device memory stays. A
//!   reset without a reference gives 107000 (ACL reports an error; the number is a guess).
//!   `aclrtMallocHost` needs no device; its memory is filled with `0xA5`
//!   (CANN leaves it uninitialized), device memory from `aclrtMalloc` reads as zeros.
//! * **Device memory is not host-addressable.** A device address is
//!   `0x7E00_0000_0000_0000 | (device << 40) | offset`, an imported IPC range is
//!   `0x7E80_0000_0000_0000 | (slot << 40) | offset` (slot 1..32767). Both are non-canonical on
//!   x86-64 and aarch64, so a host dereference faults. The bytes live in a sparse file per process
//!   and device, `<dir>/te-fake-acl-<pid>-dev<N>`, where `<dir>` is `TE_FAKE_ACL_SHM_DIR`, else
//!   `/dev/shm`, else the temporary directory; it is removed at `aclFinalize` and at exit (files
//!   of dead processes are swept at the next `aclInit`). Allocations are first-fit, 512-byte
//!   aligned, zero-filled (freed ranges are hole-punched), and reuse freed ranges.
//! * **Copies** check pointers and the kind: a pointer is "device" when it is in the fake range;
//!   a kind that disagrees with the pointers gives 107000; a device range must lie wholly inside
//!   one live allocation or imported range (107000 otherwise); `count > destMax` or a null
//!   pointer gives 100000; `count == 0` succeeds and does nothing. HOST_TO_HOST works with
//!   `aclrtMemcpy`; `aclrtMemcpyAsync` refuses it with `ACL_ERROR_RT_FEATURE_NOT_SUPPORT` (207000),
//!   as CANN documents. Every asynchronous copy is queued, also from pageable host memory (CANN
//!   makes those synchronous; treating them as asynchronous is the stricter choice).
//! * **Streams** run their tasks (copy, event record and wait, notify record and wait) on one worker thread each, so
//!   `aclrtMemcpyAsync` really completes later. The null stream is a per-device default stream
//!   of the calling thread's device. `aclrtSynchronizeStreamWithTimeout(s, ms)` takes `ms > 0` or
//!   `-1` (forever); other values give 100000; a timeout gives 507046. `aclrtDestroyStream`
//!   drains first.
//! * **Events.** `aclrtQueryEventStatus` reports `ACL_EVENT_RECORDED_STATUS_NOT_READY` (0) until
//!   the stream reaches the latest record, then `COMPLETE` (1); a never-recorded event is
//!   complete. The deprecated `aclrtQueryEvent` uses the opposite numbers
//!   (`ACL_EVENT_STATUS_COMPLETE` 0, `NOT_READY` 1). `aclrtStreamWaitEvent` makes the stream's
//!   worker wait; the host does not block.
//! * **Notifies.** `aclrtWaitAndResetNotify(n, s, secs)` queues a wait on `s` that holds it until
//!   `n` is set by an `aclrtRecordNotify(n, other)` that ran, before or after the wait was
//!   queued, then clears `n`; past `secs` (0 = forever) the wait fails on the stream with
//!   `ACL_ERROR_RT_WAIT_TIMEOUT` (107019). Both need a device bound on the calling thread.
//! * **IPC.** `aclrtIpcMemGetExportKey` writes a key `tefakeacl-<pid>-<dev>-<off hex>-<size
//!   hex>-<seq>` (at most 64 characters plus NUL; `len` must be at least 65) and an export record
//!   file `<dir>/te-fake-acl-<pid>-key-...`. With flags 0 the importer's pid must be whitelisted
//!   by `aclrtIpcMemSetImportPid`; flags 1 disables the pid check; other flags give 100000.
//!   `aclrtIpcMemImportByKey` (flags 0 or 1) in any process opens the exporter's device file and
//!   returns an imported address; unknown, closed or non-whitelisted keys, or a dead exporter,
//!   give 507022. `aclrtIpcMemClose` in the exporter revokes (removes the record): later imports
//!   fail and every copy through an existing mapping fails with 507022 (checked on each copy);
//!   in an importer it unmaps (imports of the same key are reference counted). CANN requires the
//!   importers to close before the exporter does and the memory to stay allocated until then;
//!   the fake lets both happen but counts them (`te_fake_acl_ipc_misuse`, with a line on stderr):
//!   an exporter's close while a live process still imports the key (each import leaves a marker
//!   file `<record>.imp-<pid>`), and `aclrtFree` of memory with an open export.
//! * **Peers.** `aclrtDeviceCanAccessPeer` says 1 for two different valid devices, 0 for the
//!   same. `aclrtDeviceEnablePeerAccess(peer, 0)` succeeds for a valid peer other than the
//!   calling thread's device (the same device gives 107000, flags other than 0 give 100000).
//! * Handles (streams, events, notifies) are opaque numbers, never dereferenced: a null handle
//!   where one is required gives 100000, an unknown one 107000. Destroying an event or a notify
//!   that a stream task queued (or running) still names succeeds, as the task keeps what it
//!   needs, but is counted (`te_fake_acl_handle_misuse`, with a line on stderr): on CANN the
//!   handle may be reused under that task.
//!
//! # How tests control it
//!
//! Environment, read at `aclInit`:
//! * `TE_FAKE_ACL_DEVICES`, `TE_FAKE_ACL_HBM_MB`, `TE_FAKE_ACL_SHM_DIR` (above).
//! * `TE_FAKE_ACL_FAIL="aclrtMemcpyAsync:3:507053,aclrtMalloc:1:207001"`: the Nth call (1-based,
//!   counted from that `aclInit`; rules an earlier `aclInit` armed from the variable and that did
//!   not fire are dropped) of the named function returns the code and does nothing. With
//!   a suffix `:async` (`aclrtMemcpyAsync:2:507053:async`, honoured by `aclrtMemcpyAsync` only)
//!   the call returns 0 and its task fails on the stream: the bytes are not copied, the stream
//!   keeps the error, `aclrtQueryEventStatus`/`aclrtQueryEvent`/`aclrtSynchronizeEvent` of any
//!   event recorded on that stream after the failed task return the code, and the next
//!   `aclrtSynchronizeStream[WithTimeout]` returns it and clears it. Later tasks still run.
//! * `TE_FAKE_ACL_STALL_MS=N`: every stream task (copy, memset, event record, event wait) first
//!   sleeps N ms, then does its work, so nothing it does is visible early (a slow device).
//!
//! Control symbols (C ABI, resolve them like the ACL ones):
//! * `int32_t te_fake_acl_fail(const char *call, uint32_t nth, int32_t code, int32_t async_)`:
//!   as one `TE_FAKE_ACL_FAIL` entry, `nth` counted from now; returns 0, or 100000 for a null
//!   name or `nth == 0`.
//! * `void te_fake_acl_reset_faults(void)`: disarms every fault, sets the stall to 0 and the
//!   bare tgid back to the pid.
//! * `void te_fake_acl_stall_stream(uint32_t ms)`: sets the per-task stall.
//! * `void te_fake_acl_set_bare_tgid(int32_t tgid)`: `aclrtDeviceGetBareTgid` reports `tgid`
//!   (0: the pid), as for a process in a container's pid namespace.
//! * `uint64_t te_fake_acl_calls(const char *call)`: calls of an ACL function since the library
//!   was loaded (never reset; take differences), failed calls included.
//! * `uint64_t te_fake_acl_live_allocations(void)`, `uint64_t
//!   te_fake_acl_live_host_allocations(void)`, `uint64_t te_fake_acl_live_ipc(void)` (exports plus
//!   imports of this process): leak checks. Check them before `aclFinalize`, which drops device
//!   allocations and IPC state.
//! * `uint64_t te_fake_acl_ipc_misuse(void)`: IPC orderings CANN calls undefined (above), since
//!   the library was loaded.
//! * `uint64_t te_fake_acl_handle_misuse(void)`: events and notifies destroyed while a stream
//!   task still named them (above), since the library was loaded.
//!
//! # Finding the built library
//!
//! The crate is `crate-type = ["cdylib", "rlib"]` (the rlib only so that cargo accepts it as a
//! dependency without the "provides no linkable target" warning; nothing links it). Where
//! `libte_fake_acl.so` lands (checked with cargo 1.95):
//! * `cargo build -p te-fake-acl`: `$CARGO_TARGET_DIR/<profile>/libte_fake_acl.so` and
//!   `$CARGO_TARGET_DIR/<profile>/deps/libte_fake_acl.so`.
//! * `cargo test -p te-fake-acl`: `$CARGO_TARGET_DIR/<profile>/deps/libte_fake_acl.so` only
//!   (with a cdylib-only crate type cargo test builds no `.so` at all).
//! * another package with `te-fake-acl = { path = ... }` as a dev-dependency, `cargo test`:
//!   `$CARGO_TARGET_DIR/<profile>/deps/libte_fake_acl.so`, i.e. the directory of the test binary
//!   (`std::env::current_exe()` is `<target>/<profile>/deps/<test>-<hash>`).
//!
//! So a test looks in `current_exe().parent()` (deps) first, then its parent (`<profile>`).
//! To stand in where a driver searches for the real library, a symlink is enough:
//! `<dir>/lib64/libascendcl.so -> .../libte_fake_acl.so` with `ASCEND_HOME_PATH=<dir>` (or the
//! directory on `LD_LIBRARY_PATH`); `tests/ascend_home.rs` loads it that way.
//! The library pins itself in memory at the first `aclInit` (`RTLD_NODELETE`), because stream
//! worker threads may outlive a `dlclose`.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod codes;
mod control;
mod fault;
mod locate;
mod state;
mod stream;

pub use control::Control;
pub use locate::library_path;

use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use codes::*;
use fault::Fired;
use state::{is_device_addr, state, State};
use stream::{EvStatus, Event, Loc, Notify, Stream, Task};

/// `aclrtStream`, `aclrtEvent`: opaque handles.
type Handle = *mut c_void;

fn ret(r: Result<(), i32>) -> AclError {
    match r {
        Ok(()) => ACL_SUCCESS,
        Err(e) => e,
    }
}

/// Counts the call, checks initialization and fires a synchronous fault. Returns the code an
/// `:async` fault asks the stream task to fail with (0 = none).
fn enter(call: &str) -> Result<i32, i32> {
    let fired = fault::enter(call);
    if !state().init {
        return Err(ACL_ERROR_UNINITIALIZE);
    }
    match fired {
        Some(Fired::Now(code)) => Err(code),
        Some(Fired::OnStream(code)) => Ok(code),
        None => Ok(0),
    }
}

/// Writes an out parameter, or fails with 100000 for a null pointer.
///
/// # Safety
/// `p` is null or valid for a write of `T`.
unsafe fn put<T>(p: *mut T, v: T) -> Result<(), i32> {
    if p.is_null() {
        return Err(ACL_ERROR_INVALID_PARAM);
    }
    // SAFETY: non-null, and the caller guarantees validity for writes (ACL out-parameter contract).
    unsafe { p.write(v) };
    Ok(())
}

/// `call` creating an object of the calling thread's device: `add` registers it (or refuses
/// the arguments), and its handle goes to `out`.
///
/// # Safety
/// `out` is null or valid for a write.
unsafe fn create(
    call: &str,
    out: *mut Handle,
    add: impl FnOnce(&mut State) -> Result<usize, i32>,
) -> AclError {
    ret((|| {
        enter(call)?;
        if out.is_null() {
            return Err(ACL_ERROR_INVALID_PARAM);
        }
        let mut st = state();
        st.cur_dev()?;
        let h = add(&mut st)?;
        // SAFETY: out parameter, caller contract.
        unsafe { put(out, h as *mut c_void) }
    })())
}

/// `call` queuing on `stream` the task `task` makes of the object behind `obj` (an event or a
/// notify of the calling thread's device; `None`: nothing to queue).
fn queue(
    call: &str,
    obj: Handle,
    stream: Handle,
    task: impl FnOnce(&mut State, usize) -> Result<Option<Task>, i32>,
) -> AclError {
    ret((|| {
        enter(call)?;
        if obj.is_null() {
            return Err(ACL_ERROR_INVALID_PARAM);
        }
        let mut st = state();
        st.cur_dev()?;
        let t = task(&mut st, obj as usize)?;
        let s = st.stream(stream as usize)?;
        drop(st);
        if let Some(t) = t {
            s.push(t);
        }
        Ok(())
    })())
}

/// Events and notifies destroyed while a stream task named them.
static HANDLE_MISUSE: AtomicU64 = AtomicU64::new(0);

/// `call` destroying the object behind `h`, which `take` unregisters: `None` for an unknown
/// handle, else whether a stream task still holds it (counted as misuse).
fn destroy(call: &str, h: Handle, take: impl FnOnce(&mut State, usize) -> Option<bool>) -> AclError {
    ret((|| {
        enter(call)?;
        if h.is_null() {
            return Err(ACL_ERROR_INVALID_PARAM);
        }
        let held = take(&mut state(), h as usize).ok_or(ACL_ERROR_RT_PARAM_INVALID)?;
        if held {
            HANDLE_MISUSE.fetch_add(1, Ordering::Relaxed);
            eprintln!("te-fake-acl: handle misuse (undefined on real ACL): {call}({h:p}) while a stream task still names it");
        }
        Ok(())
    })())
}

/// `uint64_t te_fake_acl_handle_misuse(void)`: events and notifies destroyed while a stream
/// task still named them, since the library was loaded.
#[no_mangle]
pub extern "C" fn te_fake_acl_handle_misuse() -> u64 {
    HANDLE_MISUSE.load(Ordering::Relaxed)
}

/// Reads a NUL-terminated C string.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string.
unsafe fn cstr<'a>(p: *const c_char) -> Result<&'a str, i32> {
    if p.is_null() {
        return Err(ACL_ERROR_INVALID_PARAM);
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| ACL_ERROR_INVALID_PARAM)
}

extern "C" fn at_exit() {
    if let Some(st) = state::try_state() {
        st.remove_files();
    }
}

/// Keeps this library loaded for the life of the process and removes its files at exit.
fn pin_self() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
        // SAFETY: dladdr only reads the address (one of our own functions) and fills `info`.
        let found = unsafe { libc::dladdr(aclInit as *const c_void, info.as_mut_ptr()) } != 0;
        if found {
            // SAFETY: dladdr succeeded, so `info` is initialized; dli_fname is a NUL-terminated
            // path owned by the loader, and RTLD_NOLOAD only takes a reference on the already
            // loaded object (with NODELETE it is never unloaded).
            unsafe {
                let info = info.assume_init();
                if !info.dli_fname.is_null() {
                    libc::dlopen(
                        info.dli_fname,
                        libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
                    );
                }
            }
        }
        // SAFETY: registers a plain extern "C" function that stays loaded (pinned above).
        unsafe { libc::atexit(at_exit) };
    });
}

// ---------------------------------------------------------------------------------------------
// Init

/// `aclError aclInit(const char *configPath)`. `configPath` may be null and is not read.
///
/// # Safety
/// Callable from any thread; no pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn aclInit(_config_path: *const c_char) -> AclError {
    let fired = fault::enter("aclInit");
    let mut st = state();
    if st.init {
        return ACL_ERROR_REPEAT_INITIALIZE;
    }
    if let Some(Fired::Now(c) | Fired::OnStream(c)) = fired {
        return c;
    }
    pin_self();
    if let Err(e) = st.start() {
        return e;
    }
    if let Some(ms) = std::env::var("TE_FAKE_ACL_STALL_MS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        fault::set_stall_ms(ms);
    }
    fault::arm_from_env(&std::env::var("TE_FAKE_ACL_FAIL").unwrap_or_default());
    ACL_SUCCESS
}

/// `aclError aclFinalize(void)`: drains and stops all streams, drops device memory, events and
/// IPC state.
///
/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn aclFinalize() -> AclError {
    let fired = fault::enter("aclFinalize");
    let streams = {
        let mut st = state();
        if !st.init {
            return if st.finalized {
                ACL_ERROR_REPEAT_FINALIZE
            } else {
                ACL_ERROR_UNINITIALIZE
            };
        }
        if let Some(Fired::Now(c) | Fired::OnStream(c)) = fired {
            return c;
        }
        st.stop()
    };
    for s in streams {
        s.shutdown();
    }
    ACL_SUCCESS
}

// ---------------------------------------------------------------------------------------------
// Devices

/// `aclError aclrtSetDevice(int32_t deviceId)`: binds the device to the calling thread.
///
/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn aclrtSetDevice(device_id: i32) -> AclError {
    ret((|| {
        enter("aclrtSetDevice")?;
        let mut st = state();
        let d = st.check_dev(device_id)?;
        st.bind(d);
        Ok(())
    })())
}

/// `aclError aclrtResetDevice(int32_t deviceId)`: drops one reference taken by
/// `aclrtSetDevice` (counted per process, over all threads); when none is left, the device's
/// default context is released: its default stream and the streams created on it are drained and
/// destroyed, and every thread bound to it has no context any more (107002). Without a
/// reference: 107000.
///
/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn aclrtResetDevice(device_id: i32) -> AclError {
    ret((|| {
        enter("aclrtResetDevice")?;
        let gone = {
            let mut st = state();
            let d = st.check_dev(device_id)?;
            st.reset(d)?
        };
        for s in gone {
            s.shutdown();
        }
        Ok(())
    })())
}

/// `aclError aclrtGetDevice(int32_t *deviceId)`.
///
/// # Safety
/// `device_id` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn aclrtGetDevice(device_id: *mut i32) -> AclError {
    ret((|| {
        enter("aclrtGetDevice")?;
        if device_id.is_null() {
            return Err(ACL_ERROR_INVALID_PARAM);
        }
        let d = state().cur_dev()?;
        // SAFETY: out parameter, caller contract.
        unsafe { put(device_id, d as i32) }
    })())
}

/// `aclError aclrtGetDeviceCount(uint32_t *count)`.
///
/// # Safety
/// `count` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn aclrtGetDeviceCount(count: *mut u32) -> AclError {
    ret((|| {
        enter("aclrtGetDeviceCount")?;
        let n = state().device_count();
        // SAFETY: out parameter, caller contract.
        unsafe { put(count, n) }
    })())
}

/// `aclError aclrtGetMemInfo(aclrtMemAttr attr, size_t *free, size_t *total)` of the calling
/// thread's device; every attribute (0..=9) reports the device's HBM.
///
/// # Safety
/// `free` and `total` are null or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn aclrtGetMemInfo(attr: i32, free: *mut usize, total: *mut usize) -> AclError {
    ret((|| {
        enter("aclrtGetMemInfo")?;
        if free.is_null() || total.is_null() || !(0..=9).contains(&attr) {
            return Err(ACL_ERROR_INVALID_PARAM);
        }
        let st = state();
        let (f, t) = st.mem_info(st.cur_dev()?);
        // SAFETY: out parameters, caller contract.
        unsafe {
            put(free, f as usize)?;
            put(total, t as usize)
        }
    })())
}

/// `aclError aclrtDeviceCanAccessPeer(int32_t *canAccessPeer, int32_t deviceId, int32_t
/// peerDeviceId)`.
///
/// # Safety
/// `can_access_peer` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn aclrtDeviceCanAccessPeer(
    can_access_peer: *mut i32,
    device_id: i32,
    peer: i32,
) -> AclError {
    ret((|| {
        enter("aclrtDeviceCanAccessPeer")?;
        if can_access_peer.is_null() {
            return Err(ACL_ERROR_INVALID_PARAM);
        }
        let st = state();
        let a = st.check_dev(device_id)?;
        let b = st.check_dev(peer)?;
        // SAFETY: out parameter, caller contract.
        unsafe { put(can_access_peer, i32::from(a != b)) }
    })())
}

/// `aclError aclrtDeviceEnablePeerAccess(int32_t peerDeviceId, uint32_t flags)`.
///
/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn aclrtDeviceEnablePeerAccess(peer: i32, flags: u32) -> AclError {
    ret((|| {
        enter("aclrtDeviceEnablePeerAccess")?;
        if flags != 0 {
            return Err(ACL_ERROR_INVALID_PARAM);
        }
        let st = state();
        let p = st.check_dev(peer)?;
        if st.cur_dev()? == p {
            return Err(ACL_ERROR_RT_PARAM_INVALID);
        }
        Ok(())
    })())
}

/// What `aclrtDeviceGetBareTgid` reports instead of this process's pid (a pid namespace whose
/// host view differs); 0: the pid itself.
static BARE_TGID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// `aclError aclrtDeviceGetBareTgid(int32_t *pid)`: this process's pid (as the host sees it:
/// see `te_fake_acl_set_bare_tgid`).
///
/// # Safety
/// `pid` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn aclrtDeviceGetBareTgid(pid: *mut i32) -> AclError {
    ret((|| {
        enter("aclrtDeviceGetBareTgid")?;
        let v = match BARE_TGID.load(std::sync::atomic::Ordering::Relaxed) {
            0 => std::process::id() as i32,
            v => v,
        };
        // SAFETY: out parameter, caller contract.
        unsafe { put(pid, v) }
    })())
}

/// `void te_fake_acl_set_bare_tgid(int32_t tgid)`: from now on `aclrtDeviceGetBareTgid` reports
/// `tgid`, as in a container whose pid namespace is not the host's (0: the pid again; reset by
/// `te_fake_acl_reset_faults`).
#[no_mangle]
pub extern "C" fn te_fake_acl_set_bare_tgid(tgid: i32) {
    BARE_TGID.store(tgid, std::sync::atomic::Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------------
// Memory

/// `aclError aclrtMalloc(void **devPtr, size_t size, aclrtMemMallocPolicy policy)` on the
/// calling thread's device; policy 0..=5.
///
/// # Safety
/// `dev_ptr` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn aclrtMalloc(dev_ptr: *mut *mut c_void, size: usize, policy: i32) -> AclError {
    ret((|| {
        enter("aclrtMalloc")?;
        if dev_ptr.is_null() || size == 0 || !(0..=5).contains(&policy) {
            return Err(ACL_ERROR_INVALID_PARAM);
        }
        let mut st = state();
        let dev = st.cur_dev()?;
        let addr = st.malloc(dev, size as u64)?;
        // SAFETY: out parameter, caller contract.
        unsafe { put(dev_ptr, addr as usize as *mut c_void) }
    })())
}

/// `aclError aclrtFree(void *devPtr)`: `devPtr` must be the start of a live allocation.
///
/// # Safety
/// No pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn aclrtFree(dev_ptr: *mut c_void) -> AclError {
    ret((|| {
        enter("aclrtFree")?;
        if dev_ptr.is_null() {
            return Err(ACL_ERROR_INVALID_PARAM);
        }
        let mut st = state();
        st.cur_dev()?;
        st.free(dev_ptr as usize as u64)
    })())
}

/// `aclError aclrtMallocHost(void **hostPtr, size_t size)`: page-aligned host memory, filled
/// with `0xA5` (ACL leaves it uninitialized; the fill catches code that assumes zeros).
///
/// # Safety
/// `host_ptr` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn aclrtMallocHost(host_ptr: *mut *mut c_void, size: usize) -> AclError {
    ret((|| {
        enter("aclrtMallocHost")?;
        if host_ptr.is_null() || size == 0 {
            return Err(ACL_ERROR_INVALID_PARAM);
        }
        let layout = std::alloc::Layout::from_size_align(size, 4096).map_err(|_| ACL_ERROR_INVALID_PARAM)?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc(layout) };
        if p.is_null() {
            return Err(ACL_ERROR_RT_MEMORY_ALLOCATION);
        }
        // SAFETY: `p` was just allocated with `size` bytes.
        unsafe { p.write_bytes(0xA5, size) };
        state().add_host(p as usize, layout);
        // SAFETY: out parameter, caller contract.
        unsafe { put(host_ptr, p.cast()) }
    })())
}

/// `aclError aclrtFreeHost(void *hostPtr)`: `hostPtr` must come from `aclrtMallocHost`.
///
/// # Safety
/// The memory must no longer be in use (also by queued asynchronous copies).
#[no_mangle]
pub unsafe extern "C" fn aclrtFreeHost(host_ptr: *mut c_void) -> AclError {
    ret((|| {
        enter("aclrtFreeHost")?;
        if host_ptr.is_null() {
            return Err(ACL_ERROR_INVALID_PARAM);
        }
        let layout = state()
            .take_host(host_ptr as usize)
            .ok_or(ACL_ERROR_RT_PARAM_INVALID)?;
        // SAFETY: the pointer was returned by alloc with this layout and is freed once
        // (it was just removed from the table).
        unsafe { std::alloc::dealloc(host_ptr.cast(), layout) };
        Ok(())
    })())
}

/// `aclError aclrtMemGetAddressRange(void *ptr, void **pbase, size_t *psize)`: base and size of
/// the allocation (or imported range) holding `ptr`.
///
/// # Safety
/// `pbase` and `psize` are null or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn aclrtMemGetAddressRange(
    ptr: *mut c_void,
    pbase: *mut *mut c_void,
    psize: *mut usize,
) -> AclError {
    ret((|| {
        enter("aclrtMemGetAddressRange")?;
        if ptr.is_null() || pbase.is_null() || psize.is_null() {
            return Err(ACL_ERROR_INVALID_PARAM);
        }
        let (base, size) = state().range(ptr as usize as u64)?;
        // SAFETY: out parameters, caller contract.
        unsafe {
            put(pbase, base as usize as *mut c_void)?;
            put(psize, size as usize)
        }
    })())
}

// ---------------------------------------------------------------------------------------------
// Copies

/// Validates a copy and resolves both ends; `None` for `count == 0`.
fn plan_copy(
    st: &state::State,
    dst: *mut c_void,
    dest_max: usize,
    src: *const c_void,
    count: usize,
    kind: i32,
) -> Result<Option<(Loc, Loc)>, i32> {
    if dst.is_null() || src.is_null() || count > dest_max {
        return Err(ACL_ERROR_INVALID_PARAM);
    }
    let (dst_dev, src_dev) = match kind {
        ACL_MEMCPY_HOST_TO_HOST => (false, false),
        ACL_MEMCPY_HOST_TO_DEVICE => (true, false),
        ACL_MEMCPY_DEVICE_TO_HOST => (false, true),
        ACL_MEMCPY_DEVICE_TO_DEVICE => (true, true),
        _ => return Err(ACL_ERROR_INVALID_PARAM),
    };
    st.cur_dev()?;
    let (d, s) = (dst as usize as u64, src as usize as u64);
    if is_device_addr(d) != dst_dev || is_device_addr(s) != src_dev {
        return Err(ACL_ERROR_RT_PARAM_INVALID);
    }
    if count == 0 {
        return Ok(None);
    }
    let end = |a: u64| -> Result<Loc, i32> {
        if is_device_addr(a) {
            st.resolve(a, count as u64)
        } else {
            Ok(Loc::Host(a as usize as *mut u8))
        }
    };
    Ok(Some((end(d)?, end(s)?)))
}

/// `aclError aclrtMemcpy(void *dst, size_t destMax, const void *src, size_t count,
/// aclrtMemcpyKind kind)`: synchronous copy.
///
/// # Safety
/// Host pointers are valid for `count` bytes (reads of `src`, writes of `dst`).
#[no_mangle]
pub unsafe extern "C" fn aclrtMemcpy(
    dst: *mut c_void,
    dest_max: usize,
    src: *const c_void,
    count: usize,
    kind: i32,
) -> AclError {
    ret((|| {
        enter("aclrtMemcpy")?;
        let plan = plan_copy(&state(), dst, dest_max, src, count, kind)?;
        match plan {
            Some((d, s)) => stream::copy(&d, &s, count),
            None => Ok(()),
        }
    })())
}

/// `aclError aclrtMemcpyAsync(void *dst, size_t destMax, const void *src, size_t count,
/// aclrtMemcpyKind kind, aclrtStream stream)`: queues the copy on `stream` (null = the default
/// stream of the calling thread's device).
///
/// # Safety
/// Host pointers stay valid for `count` bytes until the copy completed (stream synchronised or a
/// later event complete).
#[no_mangle]
pub unsafe extern "C" fn aclrtMemcpyAsync(
    dst: *mut c_void,
    dest_max: usize,
    src: *const c_void,
    count: usize,
    kind: i32,
    stream: Handle,
) -> AclError {
    ret((|| {
        let fail = enter("aclrtMemcpyAsync")?;
        if kind == ACL_MEMCPY_HOST_TO_HOST {
            // CANN documents that asynchronous copies within the host are not supported.
            return Err(ACL_ERROR_RT_FEATURE_NOT_SUPPORT);
        }
        let mut st = state();
        let plan = plan_copy(&st, dst, dest_max, src, count, kind)?;
        let s = st.stream(stream as usize)?;
        drop(st);
        match plan {
            Some((dst, src)) => s.push(Task::Copy {
                dst,
                src,
                count,
                fail,
            }),
            None if fail != 0 => s.push(Task::Copy {
                dst: Loc::Host(dst.cast()),
                src: Loc::Host(dst.cast()),
                count: 0,
                fail,
            }),
            None => {}
        }
        Ok(())
    })())
}

/// Validates a memset and resolves its target; `None` for `count == 0`.
fn plan_fill(
    st: &state::State,
    dev_ptr: *mut c_void,
    max_count: usize,
    count: usize,
) -> Result<Option<Loc>, i32> {
    if dev_ptr.is_null() || count > max_count {
        return Err(ACL_ERROR_INVALID_PARAM);
    }
    st.cur_dev()?;
    if count == 0 {
        return Ok(None);
    }
    let a = dev_ptr as usize as u64;
    if is_device_addr(a) {
        st.resolve(a, count as u64).map(Some)
    } else {
        Ok(Some(Loc::Host(dev_ptr.cast())))
    }
}

/// `aclError aclrtMemset(void *devPtr, size_t maxCount, int32_t value, size_t count)`: sets
/// `count` bytes to `(uint8_t)value`; host or device memory, told apart by the address.
///
/// # Safety
/// A host `devPtr` is valid for writes of `count` bytes.
#[no_mangle]
pub unsafe extern "C" fn aclrtMemset(
    dev_ptr: *mut c_void,
    max_count: usize,
    value: i32,
    count: usize,
) -> AclError {
    ret((|| {
        enter("aclrtMemset")?;
        let plan = plan_fill(&state(), dev_ptr, max_count, count)?;
        match plan {
            Some(dst) => stream::fill(&dst, value as u8, count),
            None => Ok(()),
        }
    })())
}

/// `aclError aclrtMemsetAsync(void *devPtr, size_t maxCount, int32_t value, size_t count,
/// aclrtStream stream)`: `aclrtMemset` queued on `stream` (null = default stream).
///
/// # Safety
/// A host `devPtr` stays valid for `count` bytes until the task ran.
#[no_mangle]
pub unsafe extern "C" fn aclrtMemsetAsync(
    dev_ptr: *mut c_void,
    max_count: usize,
    value: i32,
    count: usize,
    stream: Handle,
) -> AclError {
    ret((|| {
        enter("aclrtMemsetAsync")?;
        let mut st = state();
        let plan = plan_fill(&st, dev_ptr, max_count, count)?;
        let s = st.stream(stream as usize)?;
        drop(st);
        if let Some(dst) = plan {
            s.push(Task::Fill {
                dst,
                value: value as u8,
                count,
            });
        }
        Ok(())
    })())
}

// ---------------------------------------------------------------------------------------------
// Streams

/// `aclError aclrtCreateStream(aclrtStream *stream)` on the calling thread's device.
///
/// # Safety
/// `stream` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn aclrtCreateStream(stream: *mut Handle) -> AclError {
    ret((|| {
        enter("aclrtCreateStream")?;
        if stream.is_null() {
            return Err(ACL_ERROR_INVALID_PARAM);
        }
        let mut st = state();
        let dev = st.cur_dev()?;
        let h = st.add_stream(dev, Stream::start()?);
        // SAFETY: out parameter, caller contract.
        unsafe { put(stream, h as *mut c_void) }
    })())
}

/// `aclError aclrtDestroyStream(aclrtStream stream)`: drains the stream, then stops it.
///
/// # Safety
/// The handle is not dereferenced.
#[no_mangle]
pub unsafe extern "C" fn aclrtDestroyStream(stream: Handle) -> AclError {
    ret((|| {
        enter("aclrtDestroyStream")?;
        if stream.is_null() {
            return Err(ACL_ERROR_INVALID_PARAM);
        }
        let s = state()
            .take_stream(stream as usize)
            .ok_or(ACL_ERROR_RT_PARAM_INVALID)?;
        s.shutdown();
        Ok(())
    })())
}

fn sync_stream(call: &str, stream: Handle, timeout: Result<Option<Duration>, i32>) -> Result<(), i32> {
    enter(call)?;
    let timeout = timeout?;
    let s: Arc<Stream> = state().stream(stream as usize)?;
    s.sync(timeout)
}

/// `aclError aclrtSynchronizeStream(aclrtStream stream)`: waits until the stream drained;
/// returns (and clears) the error of a failed task.
///
/// # Safety
/// The handle is not dereferenced.
#[no_mangle]
pub unsafe extern "C" fn aclrtSynchronizeStream(stream: Handle) -> AclError {
    ret(sync_stream("aclrtSynchronizeStream", stream, Ok(None)))
}

/// `aclError aclrtSynchronizeStreamWithTimeout(aclrtStream stream, int32_t timeout)`: `timeout`
/// in ms, `-1` = forever; 507046 when not drained in time.
///
/// # Safety
/// The handle is not dereferenced.
#[no_mangle]
pub unsafe extern "C" fn aclrtSynchronizeStreamWithTimeout(stream: Handle, timeout: i32) -> AclError {
    let t = match timeout {
        -1 => Ok(None),
        t if t > 0 => Ok(Some(Duration::from_millis(t as u64))),
        _ => Err(ACL_ERROR_INVALID_PARAM),
    };
    ret(sync_stream("aclrtSynchronizeStreamWithTimeout", stream, t))
}

// ---------------------------------------------------------------------------------------------
// Events

/// `aclError aclrtCreateEvent(aclrtEvent *event)`.
///
/// # Safety
/// `event` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn aclrtCreateEvent(event: *mut Handle) -> AclError {
    // SAFETY: forwarded out-parameter contract.
    unsafe {
        create("aclrtCreateEvent", event, |st| {
            Ok(st.add_event(Arc::new(Event::default())))
        })
    }
}

/// `aclError aclrtDestroyEvent(aclrtEvent event)`.
///
/// # Safety
/// The handle is not dereferenced.
#[no_mangle]
pub unsafe extern "C" fn aclrtDestroyEvent(event: Handle) -> AclError {
    destroy("aclrtDestroyEvent", event, |st, h| {
        st.take_event(h).map(|e| Arc::strong_count(&e) > 1)
    })
}

/// `aclError aclrtRecordEvent(aclrtEvent event, aclrtStream stream)`: queues a marker that
/// completes the event when the stream reaches it.
///
/// # Safety
/// Handles are not dereferenced.
#[no_mangle]
pub unsafe extern "C" fn aclrtRecordEvent(event: Handle, stream: Handle) -> AclError {
    queue("aclrtRecordEvent", event, stream, |st, h| {
        let ev = st.event(h)?;
        let gen = ev.record();
        Ok(Some(Task::Record { ev, gen }))
    })
}

fn query(call: &str, event: Handle, status: *mut i32) -> Result<EvStatus, i32> {
    enter(call)?;
    if event.is_null() || status.is_null() {
        return Err(ACL_ERROR_INVALID_PARAM);
    }
    let ev = state().event(event as usize)?;
    ev.query()
}

/// `aclError aclrtQueryEventStatus(aclrtEvent event, aclrtEventRecordedStatus *status)`:
/// NOT_READY 0 / COMPLETE 1; the error code of the stream if a task before the record failed.
///
/// # Safety
/// `status` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn aclrtQueryEventStatus(event: Handle, status: *mut i32) -> AclError {
    ret((|| {
        let v = match query("aclrtQueryEventStatus", event, status)? {
            EvStatus::Complete => ACL_EVENT_RECORDED_STATUS_COMPLETE,
            EvStatus::NotReady => ACL_EVENT_RECORDED_STATUS_NOT_READY,
        };
        // SAFETY: out parameter, caller contract.
        unsafe { put(status, v) }
    })())
}

/// `aclError aclrtQueryEvent(aclrtEvent event, aclrtEventStatus *status)` (deprecated, opposite
/// numbers): COMPLETE 0 / NOT_READY 1.
///
/// # Safety
/// `status` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn aclrtQueryEvent(event: Handle, status: *mut i32) -> AclError {
    ret((|| {
        let v = match query("aclrtQueryEvent", event, status)? {
            EvStatus::Complete => ACL_EVENT_STATUS_COMPLETE,
            EvStatus::NotReady => ACL_EVENT_STATUS_NOT_READY,
        };
        // SAFETY: out parameter, caller contract.
        unsafe { put(status, v) }
    })())
}

/// `aclError aclrtSynchronizeEvent(aclrtEvent event)`: blocks until the latest record completed.
///
/// # Safety
/// The handle is not dereferenced.
#[no_mangle]
pub unsafe extern "C" fn aclrtSynchronizeEvent(event: Handle) -> AclError {
    ret((|| {
        enter("aclrtSynchronizeEvent")?;
        if event.is_null() {
            return Err(ACL_ERROR_INVALID_PARAM);
        }
        let ev = state().event(event as usize)?;
        ev.synchronize()
    })())
}

/// `aclError aclrtStreamWaitEvent(aclrtStream stream, aclrtEvent event)`: later tasks of
/// `stream` wait for the event's latest record (a never-recorded event does not hold it).
///
/// # Safety
/// Handles are not dereferenced.
#[no_mangle]
pub unsafe extern "C" fn aclrtStreamWaitEvent(stream: Handle, event: Handle) -> AclError {
    queue("aclrtStreamWaitEvent", event, stream, |st, h| {
        let ev = st.event(h)?;
        let gen = ev.current();
        Ok((gen > 0).then_some(Task::Wait { ev, gen }))
    })
}

// ---------------------------------------------------------------------------------------------
// Notifies

/// `ACL_NOTIFY_DEVICE_USE_ONLY`, the one flag bit `aclrtCreateNotify` knows.
const ACL_NOTIFY_DEVICE_USE_ONLY: u64 = 1;

/// `aclError aclrtCreateNotify(aclrtNotify *notify, uint64_t flag)` on the calling thread's
/// device; `flag` is `ACL_NOTIFY_DEFAULT` (0) or `ACL_NOTIFY_DEVICE_USE_ONLY` (1).
///
/// # Safety
/// `notify` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn aclrtCreateNotify(notify: *mut Handle, flag: u64) -> AclError {
    // SAFETY: forwarded out-parameter contract.
    unsafe {
        create("aclrtCreateNotify", notify, |st| {
            match flag & !ACL_NOTIFY_DEVICE_USE_ONLY {
                0 => Ok(st.add_notify(Arc::new(Notify::default()))),
                _ => Err(ACL_ERROR_INVALID_PARAM),
            }
        })
    }
}

/// `aclError aclrtDestroyNotify(aclrtNotify notify)`. A stream already waiting for it keeps
/// waiting (until its timeout).
///
/// # Safety
/// The handle is not dereferenced.
#[no_mangle]
pub unsafe extern "C" fn aclrtDestroyNotify(notify: Handle) -> AclError {
    destroy("aclrtDestroyNotify", notify, |st, h| {
        st.take_notify(h).map(|n| Arc::strong_count(&n) > 1)
    })
}

/// `aclError aclrtRecordNotify(aclrtNotify notify, aclrtStream stream)`: queues the setting of
/// the notify.
///
/// # Safety
/// Handles are not dereferenced.
#[no_mangle]
pub unsafe extern "C" fn aclrtRecordNotify(notify: Handle, stream: Handle) -> AclError {
    queue("aclrtRecordNotify", notify, stream, |st, h| {
        Ok(Some(Task::RecordNotify(st.notify(h)?)))
    })
}

/// `aclError aclrtWaitAndResetNotify(aclrtNotify notify, aclrtStream stream, uint32_t
/// timeout)`: the stream waits until the notify is set (also by a record queued later), then
/// clears it; `timeout` in seconds, 0 = forever. A wait that runs out fails on the stream with
/// `ACL_ERROR_RT_WAIT_TIMEOUT` (107019), kept as the stream's error like a failed copy.
///
/// # Safety
/// Handles are not dereferenced.
#[no_mangle]
pub unsafe extern "C" fn aclrtWaitAndResetNotify(notify: Handle, stream: Handle, timeout: u32) -> AclError {
    let timeout = (timeout > 0).then(|| Duration::from_secs(u64::from(timeout)));
    queue("aclrtWaitAndResetNotify", notify, stream, |st, h| {
        Ok(Some(Task::WaitNotify {
            notify: st.notify(h)?,
            timeout,
        }))
    })
}

// ---------------------------------------------------------------------------------------------
// IPC

/// Longest key, without its NUL.
const KEY_MAX: usize = 64;

/// `aclError aclrtIpcMemGetExportKey(void *devPtr, size_t size, char *key, size_t len, uint64_t
/// flags)`: exports `devPtr..devPtr+size` (inside one allocation); `len >= 65`; flags 0 (pid
/// whitelist) or 1 (no pid check).
///
/// # Safety
/// `key` is null or valid for writes of `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn aclrtIpcMemGetExportKey(
    dev_ptr: *mut c_void,
    size: usize,
    key: *mut c_char,
    len: usize,
    flags: u64,
) -> AclError {
    ret((|| {
        enter("aclrtIpcMemGetExportKey")?;
        if dev_ptr.is_null() || size == 0 || key.is_null() || len < KEY_MAX + 1 || flags > 1 {
            return Err(ACL_ERROR_INVALID_PARAM);
        }
        let mut st = state();
        st.cur_dev()?;
        let k = st.export(dev_ptr as usize as u64, size as u64, flags == 0)?;
        debug_assert!(k.len() <= KEY_MAX);
        // SAFETY: `key` is valid for `len >= 65` bytes and the key plus NUL is at most 65 bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(k.as_ptr(), key.cast::<u8>(), k.len());
            key.add(k.len()).write(0);
        }
        Ok(())
    })())
}

/// `aclError aclrtIpcMemSetImportPid(const char *key, int32_t *pid, size_t num)`: whitelists
/// `num` importer pids for one of this process's exports.
///
/// # Safety
/// `key` is null or NUL-terminated; `pid` is null or valid for reads of `num` values.
#[no_mangle]
pub unsafe extern "C" fn aclrtIpcMemSetImportPid(key: *const c_char, pid: *mut i32, num: usize) -> AclError {
    ret((|| {
        enter("aclrtIpcMemSetImportPid")?;
        if pid.is_null() || num == 0 {
            return Err(ACL_ERROR_INVALID_PARAM);
        }
        // SAFETY: caller contract (NUL-terminated key).
        let k = unsafe { cstr(key) }?;
        // SAFETY: `pid` is non-null and valid for `num` reads (caller contract).
        let pids = unsafe { std::slice::from_raw_parts(pid, num) };
        state().allow_pids(k, pids)
    })())
}

/// `aclError aclrtIpcMemImportByKey(void **devPtr, const char *key, uint64_t flags)`: maps an
/// exported range (flags 0 or 1); the address works as a device pointer in copies.
///
/// # Safety
/// `dev_ptr` is null or valid for a write; `key` is null or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn aclrtIpcMemImportByKey(
    dev_ptr: *mut *mut c_void,
    key: *const c_char,
    flags: u64,
) -> AclError {
    ret((|| {
        enter("aclrtIpcMemImportByKey")?;
        if dev_ptr.is_null() || flags > 1 {
            return Err(ACL_ERROR_INVALID_PARAM);
        }
        // SAFETY: caller contract (NUL-terminated key).
        let k = unsafe { cstr(key) }?;
        let mut st = state();
        st.cur_dev()?;
        let addr = st.import(k)?;
        // SAFETY: out parameter, caller contract.
        unsafe { put(dev_ptr, addr as usize as *mut c_void) }
    })())
}

/// `aclError aclrtIpcMemClose(const char *key)`: in the exporter revokes the export, in an
/// importer unmaps it.
///
/// # Safety
/// `key` is null or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn aclrtIpcMemClose(key: *const c_char) -> AclError {
    ret((|| {
        enter("aclrtIpcMemClose")?;
        // SAFETY: caller contract (NUL-terminated key).
        let k = unsafe { cstr(key) }?;
        state().close_key(k)
    })())
}

// ---------------------------------------------------------------------------------------------
// Control symbols (not ACL)

/// `int32_t te_fake_acl_fail(const char *call, uint32_t nth, int32_t code, int32_t async_)`: the
/// `nth` call from now (1 = the next) of `call` fails with `code`; `async_ != 0` makes an
/// `aclrtMemcpyAsync` return 0 and fail on its stream instead. Returns 0, or 100000 for a null
/// name or `nth == 0`.
///
/// # Safety
/// `call` is null or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn te_fake_acl_fail(call: *const c_char, nth: u32, code: i32, async_: i32) -> i32 {
    // SAFETY: caller contract (NUL-terminated name).
    match unsafe { cstr(call) } {
        Ok(name) if nth > 0 && !name.is_empty() => {
            fault::arm(name, u64::from(nth), code, async_ != 0);
            ACL_SUCCESS
        }
        _ => ACL_ERROR_INVALID_PARAM,
    }
}

/// `void te_fake_acl_reset_faults(void)`: disarms every fault, clears the stall and the bare
/// tgid.
#[no_mangle]
pub extern "C" fn te_fake_acl_reset_faults() {
    fault::reset();
    te_fake_acl_set_bare_tgid(0);
}

/// `void te_fake_acl_stall_stream(uint32_t ms)`: every stream task from now on takes at least
/// `ms` milliseconds.
#[no_mangle]
pub extern "C" fn te_fake_acl_stall_stream(ms: u32) {
    fault::set_stall_ms(ms);
}

/// `uint64_t te_fake_acl_calls(const char *call)`: how many times `call` was called since the
/// library was loaded (0 for a null name).
///
/// # Safety
/// `call` is null or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn te_fake_acl_calls(call: *const c_char) -> u64 {
    // SAFETY: caller contract (NUL-terminated name).
    unsafe { cstr(call) }.map(fault::calls).unwrap_or(0)
}

/// `uint64_t te_fake_acl_live_allocations(void)`: live `aclrtMalloc` allocations.
#[no_mangle]
pub extern "C" fn te_fake_acl_live_allocations() -> u64 {
    state().live_allocations()
}

/// `uint64_t te_fake_acl_live_host_allocations(void)`: live `aclrtMallocHost` allocations.
#[no_mangle]
pub extern "C" fn te_fake_acl_live_host_allocations() -> u64 {
    state().live_host()
}

/// `uint64_t te_fake_acl_ipc_misuse(void)`: IPC uses that CANN documents as leading to
/// exceptions, counted in this process: the exporter's `aclrtIpcMemClose` while another live
/// process still imports the key (importers must close first), and `aclrtFree` of memory whose
/// export was not closed. Each is also reported on stderr; the calls themselves still succeed.
#[no_mangle]
pub extern "C" fn te_fake_acl_ipc_misuse() -> u64 {
    state().misuses()
}

/// `uint64_t te_fake_acl_live_ipc(void)`: live exports plus imports of this process.
#[no_mangle]
pub extern "C" fn te_fake_acl_live_ipc() -> u64 {
    state().live_ipc()
}
