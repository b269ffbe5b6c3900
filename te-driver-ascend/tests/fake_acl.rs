//! te-driver-ascend against the fake libascendcl.so (te-fake-acl): the same
//! calls a real CANN runtime gets, with its signatures, error numbers and
//! per-thread device binding.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use te_driver_ascend::{AscendConfig, AscendDriver};
use te_fake_acl::Control;
use te_proto::driver::{CopyOp, DeviceAddr, DeviceDriver};
use te_proto::{ErrorCode, Instant};

/// The fake's state is process-wide: one test at a time, none with a
/// driver left over.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> (MutexGuard<'static, ()>, &'static Control) {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = Control::get().expect("the fake libascendcl.so is built next to this test");
    c.reset();
    (g, c)
}

fn driver() -> AscendDriver {
    AscendDriver::start(AscendConfig {
        library: te_fake_acl::library_path(),
        ..AscendConfig::default()
    })
    .expect("the driver starts on the fake")
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Polls copy `id` until it ends (the fake's streams run on threads).
fn finish(d: &mut AscendDriver, id: te_proto::driver::CopyId) -> te_proto::Result<()> {
    let start = std::time::Instant::now();
    loop {
        if let Some(r) = d.poll_copy(id, Instant::ZERO) {
            return r;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "copy never ended");
        std::thread::yield_now();
    }
}

#[test]
fn memory_is_allocated_zeroed_copied_byte_exact_and_freed() {
    let (_g, fake) = serial();
    let mut d = driver();
    assert_eq!(d.kind(), "npu");
    assert_eq!(d.device_count(), 2);
    let before = d.capacity(1).expect("capacity").used;
    let len = (3 << 20) + 5;
    let a = d.alloc(1, len).expect("alloc");
    assert!(d.capacity(1).expect("capacity").used >= before + len);
    // Not host memory: the fake's device addresses are non-canonical.
    assert!(a.0 >= 0x7E00_0000_0000_0000, "{a:?}");
    let mut back = vec![1u8; len as usize];
    d.copy_to_host(1, a, &mut back).expect("read");
    assert!(back.iter().all(|&b| b == 0), "allocations are zeroed");
    let data = pattern(len as usize, 7);
    d.copy_from_host(1, &data, a).expect("write");
    d.copy_to_host(1, a, &mut back).expect("read");
    assert!(back == data);
    // Device to device, on one device and across the two (peer access).
    let b = d.alloc(1, len).expect("alloc");
    let c = d.alloc(0, len).expect("alloc");
    d.copy_device(1, a, 1, b, len).expect("d2d");
    d.copy_device(1, b, 0, c, len).expect("d2d across devices");
    d.copy_to_host(0, c, &mut back).expect("read");
    assert!(back == data);
    assert!(fake.calls("aclrtDeviceEnablePeerAccess") >= 1);
    for (dev, x) in [(1, a), (1, b), (0, c)] {
        d.free(dev, x).expect("free");
    }
    let e = d.free(1, a).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Invalid, "{e}");
    drop(d);
    assert_eq!(fake.live(), (0, 0), "nothing leaked");
}

#[test]
fn registration_checks_the_range_against_allocations_ours_or_the_applications() {
    let (_g, _fake) = serial();
    let mut d = driver();
    let a = d.alloc(0, 8192).expect("alloc");
    d.check_range(0, a, 8192).expect("the whole allocation");
    d.check_range(0, DeviceAddr(a.0 + 100), 100).expect("inside");
    for (dev, addr, len, what) in [
        (0, a, 8193, "run past"),
        (1, a, 16, "belongs to npu:0"),
        (0, a, 0, "empty"),
        (0, DeviceAddr(0x1000), 16, "not"),
        (5, a, 16, "no device npu:5"),
    ] {
        let e = d.check_range(dev, addr, len).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Invalid, "{what}: {e}");
        assert!(e.message().contains(what), "{what}: {e}");
    }
    d.free(0, a).expect("free");
    let e = d.check_range(0, a, 16).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Invalid, "freed memory: {e}");
    // Memory the application allocated itself (here through another
    // driver, as torch_npu would through aclrtMalloc): ACL knows its range.
    let mut app = driver();
    let f = app.alloc(0, 4096).expect("the application's memory");
    d.check_range(0, DeviceAddr(f.0 + 96), 4000)
        .expect("inside what ACL reports");
    let e = d.check_range(0, f, 4097).unwrap_err();
    assert!(e.message().contains("run past"), "{e}");
    d.copy_from_host(0, b"into the application's memory", f)
        .expect("write");
    let mut back = [0u8; 29];
    app.copy_to_host(0, f, &mut back).expect("read");
    assert_eq!(&back, b"into the application's memory");
}

#[test]
fn a_thread_that_never_set_the_device_is_bound_before_it_calls_acl() {
    let (_g, fake) = serial();
    let mut d = driver();
    let a = d.alloc(0, 4096).expect("alloc");
    let bound = fake.calls("aclrtSetDevice");
    // A fresh thread has no ACL context: without aclrtSetDevice on it the
    // fake (like ACL) refuses every call with ACL_ERROR_RT_CONTEXT_NULL.
    let d = std::thread::spawn(move || {
        d.copy_from_host(0, b"from another thread", a).expect("write");
        let mut back = [0u8; 19];
        d.copy_to_host(0, a, &mut back).expect("read");
        assert_eq!(&back, b"from another thread");
        d
    })
    .join()
    .expect("thread");
    assert!(fake.calls("aclrtSetDevice") > bound, "the new thread was bound");
    drop(d);
}

#[test]
fn asynchronous_copies_end_when_their_event_says_and_hold_their_staging() {
    let (_g, fake) = serial();
    let mut d = driver();
    let len = 1 << 20;
    let a = d.alloc(0, len).expect("alloc");
    let s = d.alloc_staging(len).expect("staging");
    let data = pattern(len as usize, 3);
    d.staging_mut(s).expect("staging").copy_from_slice(&data);
    fake.stall(50);
    let id = d
        .submit_copy(
            Instant::ZERO,
            CopyOp::FromHost {
                staging: s,
                offset: 0,
                dev: 0,
                dst: a,
                len,
            },
        )
        .expect("submit");
    // The stream is stalled: the copy has not ended, and its staging
    // buffer is not to be touched meanwhile.
    assert!(d.poll_copy(id, Instant::ZERO).is_none());
    assert_eq!(d.staging(s).unwrap_err().code(), ErrorCode::NotReady);
    assert_eq!(d.free_staging(s).unwrap_err().code(), ErrorCode::NotReady);
    fake.stall(0);
    finish(&mut d, id).expect("copy");
    assert!(fake.calls("aclrtQueryEventStatus") >= 2);
    assert_eq!(fake.calls("aclrtQueryEvent"), 0, "never the deprecated query");
    d.staging_mut(s).expect("free again").fill(0);
    let back = d
        .submit_copy(
            Instant::ZERO,
            CopyOp::ToHost {
                dev: 0,
                src: a,
                staging: s,
                offset: 0,
                len,
            },
        )
        .expect("submit");
    finish(&mut d, back).expect("copy back");
    assert!(d.staging(s).expect("staging") == &data[..]);
    let e = d.poll_copy(back, Instant::ZERO).expect("spent").unwrap_err();
    assert_eq!(e.code(), ErrorCode::Invalid, "a spent id: {e}");
    drop(d);
    assert_eq!(fake.live(), (0, 0), "nothing leaked");
}

#[test]
fn acl_errors_become_te_codes_naming_the_call_the_device_and_the_acl_code() {
    let (_g, fake) = serial();
    let mut d = driver();
    let a = d.alloc(0, 4096).expect("alloc");
    let mut buf = [0u8; 16];
    for (call, code, te, name) in [
        (
            "aclrtMemcpy",
            507_053,
            ErrorCode::RuntimeError,
            "ACL_ERROR_RT_DEVICE_MEM_ERROR",
        ),
        (
            "aclrtMemcpy",
            100_000,
            ErrorCode::Invalid,
            "ACL_ERROR_INVALID_PARAM",
        ),
        (
            "aclrtMemcpy",
            207_004,
            ErrorCode::Disconnected,
            "ACL_ERROR_RT_NO_DEVICE",
        ),
    ] {
        fake.fail(call, 1, code, false);
        let e = d.copy_to_host(0, a, &mut buf).unwrap_err();
        assert_eq!(e.code(), te, "{e}");
        assert_eq!(
            e.message(),
            format!("aclrtMemcpy on npu:0: ACL error {code} ({name})")
        );
    }
    fake.fail("aclrtMalloc", 1, 207_001, false);
    let e = d.alloc(1, 1 << 20).unwrap_err();
    assert_eq!(e.code(), ErrorCode::RuntimeError);
    assert!(
        e.message()
            .starts_with("aclrtMalloc on npu:1: ACL error 207001 (ACL_ERROR_RT_MEMORY_ALLOCATION)"),
        "{e}"
    );
    // A copy that fails on the stream fails at its poll, and the stream
    // serves the next copy.
    let s = d.alloc_staging(4096).expect("staging");
    let to_host = CopyOp::ToHost {
        dev: 0,
        src: a,
        staging: s,
        offset: 0,
        len: 4096,
    };
    fake.fail("aclrtMemcpyAsync", 1, 507_013, true);
    let id = d.submit_copy(Instant::ZERO, to_host).expect("submitted");
    let e = finish(&mut d, id).unwrap_err();
    assert_eq!(e.code(), ErrorCode::RuntimeError);
    assert_eq!(
        e.message(),
        "aclrtMemcpyAsync on npu:0: ACL error 507013 (ACL_ERROR_RT_SYS_DMA)"
    );
    let id = d.submit_copy(Instant::ZERO, to_host).expect("submitted");
    finish(&mut d, id).expect("the next copy works");
    // A submission ACL refuses is refused at once.
    fake.fail("aclrtMemcpyAsync", 1, 507_899, false);
    let e = d.submit_copy(Instant::ZERO, to_host).unwrap_err();
    assert!(
        e.message().contains("507899 (ACL_ERROR_RT_DRV_INTERNAL_ERROR)"),
        "{e}"
    );
}

#[test]
fn acl_is_initialised_once_for_all_drivers_and_finalised_with_the_last() {
    let (_g, fake) = serial();
    let (init, fin) = (fake.calls("aclInit"), fake.calls("aclFinalize"));
    let one = driver();
    let two = driver();
    assert_eq!(fake.calls("aclInit") - init, 1);
    drop(one);
    assert_eq!(fake.calls("aclFinalize") - fin, 0, "another driver uses ACL");
    drop(two);
    assert_eq!(fake.calls("aclFinalize") - fin, 1);
    // And again from scratch.
    drop(driver());
    assert_eq!(fake.calls("aclInit") - init, 2);
}

#[test]
fn a_failed_initialisation_is_reported_with_its_code() {
    let (_g, fake) = serial();
    fake.fail("aclInit", 1, 507_033, false);
    let e = AscendDriver::start(AscendConfig {
        library: te_fake_acl::library_path(),
        ..AscendConfig::default()
    })
    .err()
    .expect("refused");
    assert_eq!(e.code(), ErrorCode::RuntimeError);
    assert_eq!(
        e.message(),
        "aclInit: ACL error 507033 (ACL_ERROR_RT_DEV_SETUP_ERROR)"
    );
}

#[test]
fn an_export_imported_across_devices_copies_byte_exact_until_its_key_is_closed() {
    let (_g, fake) = serial();
    let (ipc, misuse) = (fake.live_ipc(), fake.ipc_misuse());
    let mut d = driver();
    let len = 64 << 10;
    let theirs = d.alloc(1, len).expect("alloc");
    let ours = d.alloc(0, len).expect("alloc");
    let data = pattern(len as usize, 9);
    d.copy_from_host(1, &data, theirs).expect("fill");
    // This process stands in for the importer: only it is whitelisted.
    let key = d
        .export_range(1, theirs, len, std::process::id())
        .expect("export");
    assert!(key.as_bytes().starts_with(b"tefakeacl-"), "{key:?}");
    let at = d.import_range(0, 1, &key, len).expect("import");
    assert_ne!(at, theirs, "an import is a mapping of its own");
    d.check_range(0, at, len)
        .expect("the import is npu:0 memory for copies");
    let e = d.check_range(0, at, len + 1).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Invalid, "{e}");
    d.copy_device(0, at, 0, ours, len).expect("D2D from the import");
    let mut back = vec![0u8; len as usize];
    d.copy_to_host(0, ours, &mut back).expect("read back");
    assert!(back == data, "D2D through the import is not byte-exact");
    // Importer first, then the exporter: CANN's order, no misuse.
    d.close_import(0, at).expect("close import");
    assert_eq!(d.check_range(0, at, 1).unwrap_err().code(), ErrorCode::Invalid);
    d.close_export(&key).expect("close export");
    assert_eq!(fake.ipc_misuse(), misuse);
    assert_eq!(fake.live_ipc(), ipc);
    let e = d.import_range(0, 1, &key, len).unwrap_err();
    assert!(e.message().contains("507022"), "a revoked key imports: {e}");
    let e = d.close_export(&key).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Invalid);
    // A failing whitelist call leaves no export behind.
    fake.fail("aclrtIpcMemSetImportPid", 1, 507022, false);
    let e = d.export_range(1, theirs, len, std::process::id()).unwrap_err();
    assert!(e.message().contains("aclrtIpcMemSetImportPid"), "{e}");
    assert_eq!(fake.live_ipc(), ipc, "the half-made export was closed");
    d.free(0, ours).unwrap();
    d.free(1, theirs).unwrap();
}

#[test]
fn an_import_whose_size_is_short_or_cannot_be_checked_is_refused_and_closed() {
    let (_g, fake) = serial();
    let ipc = fake.live_ipc();
    let mut d = driver();
    let len = 64 << 10;
    let theirs = d.alloc(1, len).expect("alloc");
    let key = d
        .export_range(1, theirs, len, std::process::id())
        .expect("export");
    // The key is a capability: never in a log or an error.
    assert!(!format!("{key:?}").contains("tefakeacl"), "{key:?}");
    // A peer announcing more than it exported gets no import.
    let e = d.import_range(0, 1, &key, 16 * len).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Invalid, "{e}");
    assert!(
        e.message().contains(&format!("not the {} announced", 16 * len)),
        "{e}"
    );
    // Nor one whose size ACL cannot report.
    fake.fail("aclrtMemGetAddressRange", 1, 507899, false);
    let e = d.import_range(0, 1, &key, len).unwrap_err();
    assert!(
        e.message().contains("aclrtMemGetAddressRange") && e.message().contains("507899"),
        "{e}"
    );
    assert_eq!(
        fake.live_ipc(),
        ipc + 1,
        "the refused imports were closed; the export stays"
    );
    let at = d.import_range(0, 1, &key, len).expect("a checked import");
    d.close_import(0, at).expect("close import");
    d.close_export(&key).expect("close export");
    assert_eq!(fake.live_ipc(), ipc);
    d.free(1, theirs).unwrap();
}

#[test]
fn no_export_from_a_pid_namespace_whose_pids_acl_sees_otherwise() {
    let (_g, fake) = serial();
    let ipc = fake.live_ipc();
    let mut d = driver();
    let len = 4096;
    let theirs = d.alloc(0, len).expect("alloc");
    // As in a container: the host knows this process by another pid, so
    // a whitelisted pid seen from here would name another process there.
    fake.set_bare_tgid(std::process::id() as i32 + 100_000);
    let e = d.export_range(0, theirs, len, std::process::id()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotSupported, "{e}");
    assert!(e.message().contains("pid namespace"), "{e}");
    assert_eq!(fake.live_ipc(), ipc, "nothing exported");
    fake.set_bare_tgid(0);
    let key = d
        .export_range(0, theirs, len, std::process::id())
        .expect("export");
    d.close_export(&key).expect("close");
    d.free(0, theirs).unwrap();
}
