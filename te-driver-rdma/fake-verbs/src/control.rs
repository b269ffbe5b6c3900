//! The fake's control symbols (C ABI) and [`Control`], which resolves them from the built
//! library the way a test in another crate reaches them: through `dlopen` of the same file
//! the driver loads, so both see one state.

use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use crate::locate::library_path;
use crate::{cq, device, fault, nic, verbs};

/// `int te_fake_verbs_fail(const char *name, uint32_t nth, int value)`: arms a fault on the
/// `nth` next call of `name` (returns `value` as errno) or, for `name = "wc"`, on the `nth`
/// next executed work request (completes with status `value`). 0, or `EINVAL`.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn te_fake_verbs_fail(name: *const c_char, nth: u32, value: c_int) -> c_int {
    if name.is_null() || nth == 0 {
        return libc::EINVAL;
    }
    // SAFETY: the caller's NUL-terminated string.
    let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
    fault::arm(&name, u64::from(nth), value);
    0
}

/// `void te_fake_verbs_reset(void)`: disarms every fault, ends the stall.
#[no_mangle]
pub extern "C" fn te_fake_verbs_reset() {
    fault::reset();
    nic::STALL_US.store(0, Ordering::Relaxed);
}

/// `uint64_t te_fake_verbs_calls(const char *name)`: calls of `name` (or executed work
/// requests for `"wc"`) since the library was loaded.
///
/// # Safety
/// `name` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn te_fake_verbs_calls(name: *const c_char) -> u64 {
    // SAFETY: the caller's NUL-terminated string.
    fault::calls(&unsafe { CStr::from_ptr(name) }.to_string_lossy())
}

/// `void te_fake_verbs_set_devices(int n)`: offer `n` devices from now (negative: back to
/// `TE_FAKE_VERBS_DEVICES`).
#[no_mangle]
pub extern "C" fn te_fake_verbs_set_devices(n: c_int) {
    device::OVERRIDE.store(n.max(-1), Ordering::Relaxed);
}

/// `void te_fake_verbs_stall_us(uint32_t us)`: the responder waits `us` before each request.
#[no_mangle]
pub extern "C" fn te_fake_verbs_stall_us(us: u32) {
    nic::STALL_US.store(us, Ordering::Relaxed);
}

/// `uint64_t te_fake_verbs_cq_overruns(void)`: CQ overruns since the library was loaded.
#[no_mangle]
pub extern "C" fn te_fake_verbs_cq_overruns() -> u64 {
    cq::OVERRUNS.load(Ordering::Relaxed)
}

/// `uint64_t te_fake_verbs_live_objects(void)`: device lists, contexts, PDs, MRs, channels,
/// CQs and QPs not yet freed.
#[no_mangle]
pub extern "C" fn te_fake_verbs_live_objects() -> u64 {
    verbs::LIVE.load(Ordering::Relaxed)
}

/// `uint64_t te_fake_verbs_served(void)`: remote requests this process's NICs served.
#[no_mangle]
pub extern "C" fn te_fake_verbs_served() -> u64 {
    nic::SERVED.load(Ordering::Relaxed)
}

/// The control symbols of the loaded fake.
pub struct Control {
    fail: unsafe extern "C" fn(*const c_char, u32, c_int) -> c_int,
    reset: unsafe extern "C" fn(),
    calls: unsafe extern "C" fn(*const c_char) -> u64,
    set_devices: unsafe extern "C" fn(c_int),
    stall_us: unsafe extern "C" fn(u32),
    cq_overruns: unsafe extern "C" fn() -> u64,
    live_objects: unsafe extern "C" fn() -> u64,
    served: unsafe extern "C" fn() -> u64,
    _lib: libloading::Library,
}

static CONTROL: OnceLock<Option<Control>> = OnceLock::new();

impl Control {
    /// The control of the fake at [`library_path`], loaded once; `None` when the library is
    /// not built.
    pub fn get() -> Option<&'static Control> {
        CONTROL.get_or_init(|| Control::load().ok()).as_ref()
    }

    fn load() -> Result<Control, libloading::Error> {
        let path = library_path().ok_or(libloading::Error::DlOpenUnknown)?;
        // SAFETY: the fake's initialisers only set up its own state; each symbol is resolved
        // with the signature defined above, and the library stays loaded for ever.
        unsafe {
            let lib = libloading::Library::new(path)?;
            Ok(Control {
                fail: *lib.get(b"te_fake_verbs_fail\0")?,
                reset: *lib.get(b"te_fake_verbs_reset\0")?,
                calls: *lib.get(b"te_fake_verbs_calls\0")?,
                set_devices: *lib.get(b"te_fake_verbs_set_devices\0")?,
                stall_us: *lib.get(b"te_fake_verbs_stall_us\0")?,
                cq_overruns: *lib.get(b"te_fake_verbs_cq_overruns\0")?,
                live_objects: *lib.get(b"te_fake_verbs_live_objects\0")?,
                served: *lib.get(b"te_fake_verbs_served\0")?,
                _lib: lib,
            })
        }
    }

    /// Makes the `nth` next call of `name` fail with errno `value`; with `name = "wc"`, the
    /// `nth` next executed work request completes with status `value` instead.
    pub fn fail(&self, name: &str, nth: u32, value: i32) {
        let c = CString::new(name).expect("no NUL in a function name");
        // SAFETY: a NUL-terminated name; the fake copies it.
        let rc = unsafe { (self.fail)(c.as_ptr(), nth, value) };
        assert_eq!(rc, 0, "te_fake_verbs_fail({name}, {nth}, {value})");
    }

    /// Disarms every fault and ends the stall.
    pub fn reset(&self) {
        // SAFETY: no arguments.
        unsafe { (self.reset)() }
    }

    /// How often `name` was called in this process (failed calls included); `"wc"`: work
    /// requests executed.
    pub fn calls(&self, name: &str) -> u64 {
        let c = CString::new(name).expect("no NUL in a function name");
        // SAFETY: a NUL-terminated name, only read.
        unsafe { (self.calls)(c.as_ptr()) }
    }

    /// Offers `n` devices from now on (`-1`: as `TE_FAKE_VERBS_DEVICES` says).
    pub fn set_devices(&self, n: i32) {
        // SAFETY: a plain value.
        unsafe { (self.set_devices)(n) }
    }

    /// Makes this process's responder wait `us` microseconds before each request.
    pub fn stall_us(&self, us: u32) {
        // SAFETY: a plain value.
        unsafe { (self.stall_us)(us) }
    }

    /// CQ overruns so far.
    pub fn cq_overruns(&self) -> u64 {
        // SAFETY: no arguments.
        unsafe { (self.cq_overruns)() }
    }

    /// Verbs objects not yet freed.
    pub fn live_objects(&self) -> u64 {
        // SAFETY: no arguments.
        unsafe { (self.live_objects)() }
    }

    /// Remote requests served by this process's NICs.
    pub fn served(&self) -> u64 {
        // SAFETY: no arguments.
        unsafe { (self.served)() }
    }
}
