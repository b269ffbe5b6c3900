//! Init and finalize codes, in a process of its own (nothing else loads the library here, so the
//! first calls really come before any aclInit).

mod common;

use common::*;
use std::ptr::null_mut;

#[test]
fn init_finalize_codes() {
    let a = acl();
    let mut p: H = null_mut();
    let mut n = 0u32;
    // SAFETY: every pointer passed is valid for its use; handles are opaque.
    unsafe {
        assert_eq!((a.finalize)(), UNINITIALIZE, "finalize before any init");
        assert_eq!((a.malloc)(&mut p, 512, 0), UNINITIALIZE);
        assert_eq!((a.set_device)(0), UNINITIALIZE);
        assert_eq!((a.get_device_count)(&mut n), UNINITIALIZE);
        assert_eq!((a.malloc_host)(&mut p, 64), UNINITIALIZE);

        a.init_ok();
        assert_eq!((a.init)(std::ptr::null()), REPEAT_INITIALIZE);
        // Still initialized after the repeated init.
        assert_eq!((a.get_device_count)(&mut n), OK);
        assert_eq!(n, 2, "default device count");
        let dev0 = std::path::Path::new("/dev/shm").join(format!("te-fake-acl-{}-dev0", std::process::id()));
        assert!(
            dev0.exists(),
            "device file {} exists while initialized",
            dev0.display()
        );
        a.set_device_ok(1);
        let mut d = -1;
        assert_eq!((a.get_device)(&mut d), OK);
        assert_eq!(d, 1);
        a.finalize_ok();
        assert!(!dev0.exists(), "device file removed at finalize");

        assert_eq!((a.finalize)(), REPEAT_FINALIZE);
        assert_eq!((a.malloc)(&mut p, 512, 0), UNINITIALIZE);
        assert_eq!((a.get_device)(&mut d), UNINITIALIZE);

        a.init_ok();
        // A binding from before the finalize does not survive it.
        assert_eq!((a.get_device)(&mut d), RT_CONTEXT_NULL);
        a.set_device_ok(0);
        let _p = a.dmalloc(4096);
        assert_eq!(a.live().0, 1);
        a.finalize_ok();
        assert_eq!(a.live().0, 0, "finalize drops device memory");
    }
    assert_eq!(a.calls("aclInit"), 3);
    assert_eq!(a.calls("aclFinalize"), 4);
}
