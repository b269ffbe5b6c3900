//! The fake's control symbols, resolved from the built library the way a
//! test in another crate reaches them (through `dlopen`, as the driver
//! reaches the ACL symbols of the same library, so both see one state).

use std::ffi::{c_char, CString};
use std::sync::OnceLock;

use crate::locate::library_path;

/// The control symbols of the loaded fake (see the crate docs).
pub struct Control {
    fail: unsafe extern "C" fn(*const c_char, u32, i32, i32) -> i32,
    reset: unsafe extern "C" fn(),
    stall: unsafe extern "C" fn(u32),
    calls: unsafe extern "C" fn(*const c_char) -> u64,
    live_allocations: unsafe extern "C" fn() -> u64,
    live_host_allocations: unsafe extern "C" fn() -> u64,
    live_ipc: unsafe extern "C" fn() -> u64,
    ipc_misuse: unsafe extern "C" fn() -> u64,
    handle_misuse: unsafe extern "C" fn() -> u64,
    set_bare_tgid: unsafe extern "C" fn(i32),
    _lib: libloading::Library,
}

static CONTROL: OnceLock<Option<Control>> = OnceLock::new();

impl Control {
    /// The control of the fake at [`library_path`], loaded once; `None`
    /// when the library is not built.
    pub fn get() -> Option<&'static Control> {
        CONTROL.get_or_init(|| Control::load().ok()).as_ref()
    }

    fn load() -> Result<Control, libloading::Error> {
        let path = library_path().ok_or(libloading::Error::DlOpenUnknown)?;
        // SAFETY: the fake's initialisers only set up its own state; each
        // symbol is resolved with the signature the crate defines for it,
        // and the library stays loaded as long as `Control` (for ever).
        unsafe {
            let lib = libloading::Library::new(path)?;
            Ok(Control {
                fail: *lib.get(b"te_fake_acl_fail\0")?,
                reset: *lib.get(b"te_fake_acl_reset_faults\0")?,
                stall: *lib.get(b"te_fake_acl_stall_stream\0")?,
                calls: *lib.get(b"te_fake_acl_calls\0")?,
                live_allocations: *lib.get(b"te_fake_acl_live_allocations\0")?,
                live_host_allocations: *lib.get(b"te_fake_acl_live_host_allocations\0")?,
                live_ipc: *lib.get(b"te_fake_acl_live_ipc\0")?,
                ipc_misuse: *lib.get(b"te_fake_acl_ipc_misuse\0")?,
                handle_misuse: *lib.get(b"te_fake_acl_handle_misuse\0")?,
                set_bare_tgid: *lib.get(b"te_fake_acl_set_bare_tgid\0")?,
                _lib: lib,
            })
        }
    }

    /// Makes the `nth` next call of `call` fail with `code` (on its stream,
    /// after returning 0, when `on_stream`: `aclrtMemcpyAsync` only).
    pub fn fail(&self, call: &str, nth: u32, code: i32, on_stream: bool) {
        let c = CString::new(call).expect("no NUL in a function name");
        // SAFETY: a NUL-terminated name; the fake copies it.
        let rc = unsafe { (self.fail)(c.as_ptr(), nth, code, i32::from(on_stream)) };
        assert_eq!(rc, 0, "te_fake_acl_fail({call}, {nth}, {code})");
    }

    /// Disarms every fault, ends any stall and gives `aclrtDeviceGetBareTgid` the pid again.
    pub fn reset(&self) {
        // SAFETY: no arguments.
        unsafe { (self.reset)() }
    }

    /// Makes every stream task take at least `ms` milliseconds.
    pub fn stall(&self, ms: u32) {
        // SAFETY: a plain value.
        unsafe { (self.stall)(ms) }
    }

    /// How often `call` was called in this process (failed calls included).
    pub fn calls(&self, call: &str) -> u64 {
        let c = CString::new(call).expect("no NUL in a function name");
        // SAFETY: a NUL-terminated name, only read.
        unsafe { (self.calls)(c.as_ptr()) }
    }

    /// Live device allocations and live `aclrtMallocHost` buffers.
    pub fn live(&self) -> (u64, u64) {
        // SAFETY: no arguments.
        unsafe { ((self.live_allocations)(), (self.live_host_allocations)()) }
    }

    /// Live IPC exports plus imports of this process.
    pub fn live_ipc(&self) -> u64 {
        // SAFETY: no arguments.
        unsafe { (self.live_ipc)() }
    }

    /// IPC orderings CANN calls undefined, since the library was loaded
    /// (an exporter's close while a process still imports; a free of
    /// memory with an open export).
    pub fn ipc_misuse(&self) -> u64 {
        // SAFETY: no arguments.
        unsafe { (self.ipc_misuse)() }
    }

    /// Events and notifies destroyed while a stream task still named them,
    /// since the library was loaded.
    pub fn handle_misuse(&self) -> u64 {
        // SAFETY: no arguments.
        unsafe { (self.handle_misuse)() }
    }

    /// Makes `aclrtDeviceGetBareTgid` report `tgid` (a container's process
    /// as the host sees it); 0 for the pid itself.
    pub fn set_bare_tgid(&self, tgid: i32) {
        // SAFETY: a plain value.
        unsafe { (self.set_bare_tgid)(tgid) }
    }
}
