//! Loads the built `libte_fake_acl.so` with libloading and exposes its symbols as C function
//! pointers, the way a real consumer (te-driver-ascend) resolves `libascendcl.so`.

#![allow(dead_code)]

use std::ffi::{c_char, c_void, CString};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub type E = i32;
pub type H = *mut c_void;

pub const OK: E = 0;
pub const INVALID_PARAM: E = 100000;
pub const UNINITIALIZE: E = 100001;
pub const REPEAT_INITIALIZE: E = 100002;
pub const REPEAT_FINALIZE: E = 100037;
pub const RT_PARAM_INVALID: E = 107000;
pub const RT_INVALID_DEVICEID: E = 107001;
pub const RT_CONTEXT_NULL: E = 107002;
pub const RT_MEMORY_ALLOCATION: E = 207001;
pub const RT_IPC_ERROR: E = 507022;
pub const RT_STREAM_SYNC_TIMEOUT: E = 507046;
pub const RT_DEVICE_MEM_ERROR: E = 507053;

pub const H2H: i32 = 0;
pub const H2D: i32 = 1;
pub const D2H: i32 = 2;
pub const D2D: i32 = 3;

/// The ACL entry points and the fake's control symbols.
pub struct Acl {
    pub init: unsafe extern "C" fn(*const c_char) -> E,
    pub finalize: unsafe extern "C" fn() -> E,
    pub set_device: unsafe extern "C" fn(i32) -> E,
    pub reset_device: unsafe extern "C" fn(i32) -> E,
    pub get_device: unsafe extern "C" fn(*mut i32) -> E,
    pub get_device_count: unsafe extern "C" fn(*mut u32) -> E,
    pub get_mem_info: unsafe extern "C" fn(i32, *mut usize, *mut usize) -> E,
    pub malloc: unsafe extern "C" fn(*mut H, usize, i32) -> E,
    pub free: unsafe extern "C" fn(H) -> E,
    pub malloc_host: unsafe extern "C" fn(*mut H, usize) -> E,
    pub free_host: unsafe extern "C" fn(H) -> E,
    pub memcpy: unsafe extern "C" fn(H, usize, *const c_void, usize, i32) -> E,
    pub memcpy_async: unsafe extern "C" fn(H, usize, *const c_void, usize, i32, H) -> E,
    pub create_stream: unsafe extern "C" fn(*mut H) -> E,
    pub destroy_stream: unsafe extern "C" fn(H) -> E,
    pub sync_stream: unsafe extern "C" fn(H) -> E,
    pub sync_stream_timeout: unsafe extern "C" fn(H, i32) -> E,
    pub create_event: unsafe extern "C" fn(*mut H) -> E,
    pub destroy_event: unsafe extern "C" fn(H) -> E,
    pub record_event: unsafe extern "C" fn(H, H) -> E,
    pub query_event_status: unsafe extern "C" fn(H, *mut i32) -> E,
    pub query_event: unsafe extern "C" fn(H, *mut i32) -> E,
    pub sync_event: unsafe extern "C" fn(H) -> E,
    pub stream_wait_event: unsafe extern "C" fn(H, H) -> E,
    pub create_notify: unsafe extern "C" fn(*mut H, u64) -> E,
    pub destroy_notify: unsafe extern "C" fn(H) -> E,
    pub record_notify: unsafe extern "C" fn(H, H) -> E,
    pub wait_and_reset_notify: unsafe extern "C" fn(H, H, u32) -> E,
    pub can_access_peer: unsafe extern "C" fn(*mut i32, i32, i32) -> E,
    pub enable_peer_access: unsafe extern "C" fn(i32, u32) -> E,
    pub get_address_range: unsafe extern "C" fn(H, *mut H, *mut usize) -> E,
    pub ipc_export: unsafe extern "C" fn(H, usize, *mut c_char, usize, u64) -> E,
    pub ipc_set_pid: unsafe extern "C" fn(*const c_char, *mut i32, usize) -> E,
    pub ipc_import: unsafe extern "C" fn(*mut H, *const c_char, u64) -> E,
    pub ipc_close: unsafe extern "C" fn(*const c_char) -> E,
    pub bare_tgid: unsafe extern "C" fn(*mut i32) -> E,
    pub fail: unsafe extern "C" fn(*const c_char, u32, i32, i32) -> i32,
    pub reset_faults: unsafe extern "C" fn(),
    pub stall: unsafe extern "C" fn(u32),
    pub calls_raw: unsafe extern "C" fn(*const c_char) -> u64,
    pub live_allocations: unsafe extern "C" fn() -> u64,
    pub live_host_allocations: unsafe extern "C" fn() -> u64,
    pub live_ipc: unsafe extern "C" fn() -> u64,
    pub ipc_misuse: unsafe extern "C" fn() -> u64,
}

/// Where the fake library is (see [`te_fake_acl::library_path`]).
pub fn lib_path() -> PathBuf {
    te_fake_acl::library_path().expect("libte_fake_acl.so not built next to this test")
}

static LIB: OnceLock<(libloading::Library, Acl)> = OnceLock::new();

macro_rules! sym {
    ($lib:expr, $name:literal) => {
        // SAFETY: the symbol is declared with the C signature of acl_rt.h (or of the control
        // interface) that the field type spells out.
        *unsafe { $lib.get(concat!($name, "\0").as_bytes()) }.expect($name)
    };
}

/// The loaded library (loaded once per process).
pub fn acl() -> &'static Acl {
    &LIB.get_or_init(|| {
        // SAFETY: loading the fake runs no initialisers with preconditions.
        let lib = unsafe { libloading::Library::new(lib_path()) }.expect("load libte_fake_acl.so");
        let acl = Acl {
            init: sym!(lib, "aclInit"),
            finalize: sym!(lib, "aclFinalize"),
            set_device: sym!(lib, "aclrtSetDevice"),
            reset_device: sym!(lib, "aclrtResetDevice"),
            get_device: sym!(lib, "aclrtGetDevice"),
            get_device_count: sym!(lib, "aclrtGetDeviceCount"),
            get_mem_info: sym!(lib, "aclrtGetMemInfo"),
            malloc: sym!(lib, "aclrtMalloc"),
            free: sym!(lib, "aclrtFree"),
            malloc_host: sym!(lib, "aclrtMallocHost"),
            free_host: sym!(lib, "aclrtFreeHost"),
            memcpy: sym!(lib, "aclrtMemcpy"),
            memcpy_async: sym!(lib, "aclrtMemcpyAsync"),
            create_stream: sym!(lib, "aclrtCreateStream"),
            destroy_stream: sym!(lib, "aclrtDestroyStream"),
            sync_stream: sym!(lib, "aclrtSynchronizeStream"),
            sync_stream_timeout: sym!(lib, "aclrtSynchronizeStreamWithTimeout"),
            create_event: sym!(lib, "aclrtCreateEvent"),
            destroy_event: sym!(lib, "aclrtDestroyEvent"),
            record_event: sym!(lib, "aclrtRecordEvent"),
            query_event_status: sym!(lib, "aclrtQueryEventStatus"),
            query_event: sym!(lib, "aclrtQueryEvent"),
            sync_event: sym!(lib, "aclrtSynchronizeEvent"),
            stream_wait_event: sym!(lib, "aclrtStreamWaitEvent"),
            create_notify: sym!(lib, "aclrtCreateNotify"),
            destroy_notify: sym!(lib, "aclrtDestroyNotify"),
            record_notify: sym!(lib, "aclrtRecordNotify"),
            wait_and_reset_notify: sym!(lib, "aclrtWaitAndResetNotify"),
            can_access_peer: sym!(lib, "aclrtDeviceCanAccessPeer"),
            enable_peer_access: sym!(lib, "aclrtDeviceEnablePeerAccess"),
            get_address_range: sym!(lib, "aclrtMemGetAddressRange"),
            ipc_export: sym!(lib, "aclrtIpcMemGetExportKey"),
            ipc_set_pid: sym!(lib, "aclrtIpcMemSetImportPid"),
            ipc_import: sym!(lib, "aclrtIpcMemImportByKey"),
            ipc_close: sym!(lib, "aclrtIpcMemClose"),
            bare_tgid: sym!(lib, "aclrtDeviceGetBareTgid"),
            fail: sym!(lib, "te_fake_acl_fail"),
            reset_faults: sym!(lib, "te_fake_acl_reset_faults"),
            stall: sym!(lib, "te_fake_acl_stall_stream"),
            calls_raw: sym!(lib, "te_fake_acl_calls"),
            live_allocations: sym!(lib, "te_fake_acl_live_allocations"),
            live_host_allocations: sym!(lib, "te_fake_acl_live_host_allocations"),
            live_ipc: sym!(lib, "te_fake_acl_live_ipc"),
            ipc_misuse: sym!(lib, "te_fake_acl_ipc_misuse"),
        };
        (lib, acl)
    })
    .1
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Tests of one binary share the library's process-wide state: run them one at a time, each
/// starting from a finalized library with no faults.
pub fn serial() -> MutexGuard<'static, ()> {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let a = acl();
    // SAFETY: plain calls without pointers.
    unsafe {
        (a.finalize)();
        (a.reset_faults)();
    }
    g
}

impl Acl {
    pub fn calls(&self, name: &str) -> u64 {
        let c = CString::new(name).unwrap();
        // SAFETY: NUL-terminated name.
        unsafe { (self.calls_raw)(c.as_ptr()) }
    }

    pub fn arm(&self, name: &str, nth: u32, code: i32, on_stream: bool) {
        let c = CString::new(name).unwrap();
        // SAFETY: NUL-terminated name.
        assert_eq!(
            unsafe { (self.fail)(c.as_ptr(), nth, code, i32::from(on_stream)) },
            OK
        );
    }

    pub fn init_ok(&self) {
        // SAFETY: null config path is allowed.
        assert_eq!(unsafe { (self.init)(std::ptr::null()) }, OK);
    }

    pub fn finalize_ok(&self) {
        // SAFETY: no pointers.
        assert_eq!(unsafe { (self.finalize)() }, OK);
    }

    pub fn set_device_ok(&self, d: i32) {
        // SAFETY: no pointers.
        assert_eq!(unsafe { (self.set_device)(d) }, OK);
    }

    pub fn dmalloc(&self, size: usize) -> H {
        let mut p: H = std::ptr::null_mut();
        // SAFETY: valid out pointer.
        assert_eq!(unsafe { (self.malloc)(&mut p, size, 0) }, OK);
        p
    }

    pub fn dfree(&self, p: H) {
        // SAFETY: device address from aclrtMalloc.
        assert_eq!(unsafe { (self.free)(p) }, OK);
    }

    /// Synchronous H2D of `data` into `dev`.
    pub fn h2d(&self, dev: H, data: &[u8]) -> E {
        // SAFETY: `data` is valid for its length.
        unsafe { (self.memcpy)(dev, data.len(), data.as_ptr().cast(), data.len(), H2D) }
    }

    /// Synchronous D2H of `len` bytes from `dev`.
    pub fn d2h(&self, dev: H, len: usize) -> Result<Vec<u8>, E> {
        let mut v = vec![0u8; len];
        // SAFETY: `v` is valid for `len` bytes.
        match unsafe { (self.memcpy)(v.as_mut_ptr().cast(), len, dev, len, D2H) } {
            OK => Ok(v),
            e => Err(e),
        }
    }

    pub fn stream(&self) -> H {
        let mut s: H = std::ptr::null_mut();
        // SAFETY: valid out pointer.
        assert_eq!(unsafe { (self.create_stream)(&mut s) }, OK);
        s
    }

    pub fn event(&self) -> H {
        let mut e: H = std::ptr::null_mut();
        // SAFETY: valid out pointer.
        assert_eq!(unsafe { (self.create_event)(&mut e) }, OK);
        e
    }

    /// aclrtQueryEventStatus: Ok(status) or Err(code).
    pub fn status(&self, ev: H) -> Result<i32, E> {
        let mut s = -1;
        // SAFETY: valid out pointer.
        match unsafe { (self.query_event_status)(ev, &mut s) } {
            OK => Ok(s),
            e => Err(e),
        }
    }

    /// Deprecated aclrtQueryEvent: Ok(status) or Err(code).
    pub fn status_deprecated(&self, ev: H) -> Result<i32, E> {
        let mut s = -1;
        // SAFETY: valid out pointer.
        match unsafe { (self.query_event)(ev, &mut s) } {
            OK => Ok(s),
            e => Err(e),
        }
    }

    /// Polls aclrtQueryEventStatus until it stops saying NOT_READY (0); returns the last answer.
    pub fn poll_event(&self, ev: H) -> Result<i32, E> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.status(ev);
            if r != Ok(0) {
                return r;
            }
            assert!(Instant::now() < deadline, "event never completed");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn live(&self) -> (u64, u64, u64) {
        // SAFETY: no arguments.
        unsafe {
            (
                (self.live_allocations)(),
                (self.live_host_allocations)(),
                (self.live_ipc)(),
            )
        }
    }
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
