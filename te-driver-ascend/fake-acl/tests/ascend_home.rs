//! The fake can stand in as `$ASCEND_HOME_PATH/lib64/libascendcl.so`, the place a driver looks
//! for the real library: a symlink named like the real one is enough.

mod common;

#[test]
fn loads_as_libascendcl_under_an_ascend_home() {
    let home = std::env::temp_dir().join(format!("te-fake-acl-home-{}", std::process::id()));
    let lib64 = home.join("lib64");
    std::fs::create_dir_all(&lib64).unwrap();
    let so = lib64.join("libascendcl.so");
    let _ = std::fs::remove_file(&so);
    std::os::unix::fs::symlink(common::lib_path(), &so).unwrap();
    // SAFETY: loading the fake runs no initialisers with preconditions.
    let lib = unsafe { libloading::Library::new(&so) }.unwrap();
    // SAFETY: signatures of acl.h / acl_rt.h.
    unsafe {
        let init: libloading::Symbol<unsafe extern "C" fn(*const std::ffi::c_char) -> i32> =
            lib.get(b"aclInit\0").unwrap();
        let count: libloading::Symbol<unsafe extern "C" fn(*mut u32) -> i32> =
            lib.get(b"aclrtGetDeviceCount\0").unwrap();
        let fin: libloading::Symbol<unsafe extern "C" fn() -> i32> = lib.get(b"aclFinalize\0").unwrap();
        assert_eq!(init(std::ptr::null()), 0);
        let mut n = 0;
        assert_eq!(count(&mut n), 0);
        assert_eq!(n, 2);
        assert_eq!(fin(), 0);
    }
    drop(lib);
    std::fs::remove_dir_all(&home).unwrap();
}
