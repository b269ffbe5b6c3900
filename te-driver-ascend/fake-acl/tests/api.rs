//! The ACL entry points through C function pointers: contexts, memory, copies, streams, events,
//! fault injection, leak counters. Tests share the library's process state, so each holds
//! `serial()` and starts from a finalized library.

mod common;

use common::*;
use std::ffi::c_void;
use std::ptr::{null, null_mut};

const DEV_BASE: usize = 0x7E00_0000_0000_0000;

#[test]
fn context_is_per_thread() {
    let _g = serial();
    let a = acl();
    a.init_ok();
    let set_before = a.calls("aclrtSetDevice");
    let mut p: H = null_mut();
    let mut s: H = null_mut();
    let mut d = -1;
    let (mut free, mut total) = (0usize, 0usize);
    let host = [0u8; 16];
    // SAFETY: every pointer passed is valid for its use; handles are opaque.
    unsafe {
        // This thread never called aclrtSetDevice.
        assert_eq!((a.get_device)(&mut d), RT_CONTEXT_NULL);
        assert_eq!((a.malloc)(&mut p, 512, 0), RT_CONTEXT_NULL);
        assert_eq!((a.get_mem_info)(1, &mut free, &mut total), RT_CONTEXT_NULL);
        assert_eq!((a.create_stream)(&mut s), RT_CONTEXT_NULL);
        assert_eq!((a.create_event)(&mut s), RT_CONTEXT_NULL);
        assert_eq!(
            (a.memcpy)(p, 16, host.as_ptr().cast(), 16, H2H),
            INVALID_PARAM,
            "null dst"
        );
        let mut dst = [0u8; 16];
        assert_eq!(
            (a.memcpy)(dst.as_mut_ptr().cast(), 16, host.as_ptr().cast(), 16, H2H),
            RT_CONTEXT_NULL
        );
        // Pinned host memory needs no device.
        assert_eq!((a.malloc_host)(&mut p, 100), OK);
        assert_eq!((a.free_host)(p), OK);
        assert_eq!((a.set_device)(2), RT_INVALID_DEVICEID);
        assert_eq!((a.set_device)(-1), RT_INVALID_DEVICEID);
    }
    let helper = std::thread::spawn(move || {
        let a = acl();
        a.set_device_ok(1);
        let mut d = -1;
        // SAFETY: valid out pointer.
        assert_eq!(unsafe { (a.get_device)(&mut d) }, OK);
        assert_eq!(d, 1);
        let p = a.dmalloc(4096);
        assert_eq!(
            (p as usize >> 40) & 0xFF,
            1,
            "allocation on the helper's device 1"
        );
        a.dfree(p);
    });
    helper.join().unwrap();
    // SAFETY: valid out pointer.
    assert_eq!(
        unsafe { (a.get_device)(&mut d) },
        RT_CONTEXT_NULL,
        "binding stays on the helper thread"
    );
    assert_eq!(a.calls("aclrtSetDevice") - set_before, 3);
    a.set_device_ok(0);
    // SAFETY: valid out pointer.
    assert_eq!(unsafe { (a.get_device)(&mut d) }, OK);
    assert_eq!(d, 0);
    // SAFETY: no pointers.
    assert_eq!(unsafe { (a.reset_device)(0) }, OK);
    // SAFETY: valid out pointer.
    assert_eq!(
        unsafe { (a.get_device)(&mut d) },
        RT_CONTEXT_NULL,
        "reset unbinds"
    );
    a.finalize_ok();
}

#[test]
fn malloc_free_meminfo_address_range() {
    let _g = serial();
    let a = acl();
    std::env::set_var("TE_FAKE_ACL_DEVICES", "3");
    std::env::set_var("TE_FAKE_ACL_HBM_MB", "1");
    a.init_ok();
    std::env::remove_var("TE_FAKE_ACL_DEVICES");
    std::env::remove_var("TE_FAKE_ACL_HBM_MB");
    let mut n = 0u32;
    let mut p: H = null_mut();
    let (mut free, mut total) = (0usize, 0usize);
    let mut base: H = null_mut();
    let mut size = 0usize;
    a.set_device_ok(2);
    // SAFETY: every pointer passed is valid for its use.
    unsafe {
        assert_eq!((a.get_device_count)(&mut n), OK);
        assert_eq!(n, 3);
        assert_eq!((a.get_mem_info)(1, &mut free, &mut total), OK);
        assert_eq!((free, total), (1 << 20, 1 << 20));
        assert_eq!(
            (a.get_mem_info)(0, &mut free, &mut total),
            OK,
            "ACL_DDR_MEM accepted"
        );
        assert_eq!((a.get_mem_info)(10, &mut free, &mut total), INVALID_PARAM);

        let x = a.dmalloc(1000);
        let xa = x as usize;
        assert_eq!(xa >> 56, 0x7E, "non-canonical device address");
        assert_eq!((xa >> 40) & 0xFF, 2, "device number in the address");
        assert_eq!(xa % 512, 0);
        assert_eq!((a.get_mem_info)(1, &mut free, &mut total), OK);
        assert_eq!(free, (1 << 20) - 1024, "1000 bytes take two 512-byte units");

        assert_eq!((a.malloc)(&mut p, 0, 0), INVALID_PARAM);
        assert_eq!((a.malloc)(null_mut(), 512, 0), INVALID_PARAM);
        assert_eq!((a.malloc)(&mut p, 512, 6), INVALID_PARAM, "policy out of range");
        assert_eq!((a.malloc)(&mut p, 2 << 20, 0), RT_MEMORY_ALLOCATION);

        assert_eq!(
            (a.get_address_range)(x.cast::<u8>().add(10).cast(), &mut base, &mut size),
            OK
        );
        assert_eq!((base, size), (x, 1000));
        assert_eq!(
            (a.get_address_range)(x.cast::<u8>().add(1000).cast(), &mut base, &mut size),
            RT_PARAM_INVALID
        );
        assert_eq!(
            (a.get_address_range)(0x1000 as H, &mut base, &mut size),
            RT_PARAM_INVALID
        );

        assert_eq!(
            (a.free)(x.cast::<u8>().add(1).cast()),
            RT_PARAM_INVALID,
            "not an allocation start"
        );
        assert_eq!((a.free)(0x1000 as H), RT_PARAM_INVALID, "host address");

        // First fit reuses a freed range.
        let y = a.dmalloc(512);
        let z = a.dmalloc(512);
        assert_eq!(a.live().0, 3);
        a.dfree(y);
        assert_eq!((a.free)(y), RT_PARAM_INVALID, "double free");
        let w = a.dmalloc(100);
        assert_eq!(w, y, "first fit reuses the freed range");
        for q in [x, z, w] {
            a.dfree(q);
        }
        assert_eq!((a.get_mem_info)(1, &mut free, &mut total), OK);
        assert_eq!(free, total);
    }
    a.set_device_ok(0);
    let q = a.dmalloc(512);
    assert_eq!(q as usize, DEV_BASE, "device 0 starts at offset 0");
    a.dfree(q);
    assert_eq!(a.live(), (0, 0, 0));
    a.finalize_ok();
}

#[test]
fn copies_round_trip_and_check_their_arguments() {
    let _g = serial();
    let a = acl();
    a.init_ok();
    a.set_device_ok(0);
    let x = a.dmalloc(4096);
    assert_eq!(
        a.d2h(x, 4096).unwrap(),
        vec![0u8; 4096],
        "fresh allocation reads as zeros"
    );
    let data = pattern(4096, 7);
    assert_eq!(a.h2d(x, &data), OK);
    assert_eq!(a.d2h(x, 4096).unwrap(), data, "H2D then D2H round trip");

    let mut host = vec![0u8; 64];
    // SAFETY: every pointer passed is valid for its use (device pointers are never dereferenced).
    unsafe {
        let hp: H = host.as_mut_ptr().cast();
        assert_eq!(
            (a.memcpy)(hp, 64, data.as_ptr().cast(), 64, H2D),
            RT_PARAM_INVALID,
            "H2D to host dst"
        );
        assert_eq!(
            (a.memcpy)(x, 64, x, 64, D2H),
            RT_PARAM_INVALID,
            "D2H to device dst"
        );
        assert_eq!(
            (a.memcpy)(hp, 64, hp, 64, D2D),
            RT_PARAM_INVALID,
            "D2D of host pointers"
        );
        assert_eq!(
            (a.memcpy)(x, 64, hp, 64, H2H),
            RT_PARAM_INVALID,
            "H2H with a device dst"
        );
        assert_eq!((a.memcpy)(x, 16, hp, 64, H2D), INVALID_PARAM, "count > destMax");
        assert_eq!((a.memcpy)(null_mut(), 64, hp, 64, H2D), INVALID_PARAM);
        assert_eq!((a.memcpy)(x, 64, null(), 64, H2D), INVALID_PARAM);
        assert_eq!((a.memcpy)(x, 64, hp, 64, 4), INVALID_PARAM, "kind out of range");
        let end = x.cast::<u8>().add(4096 - 32).cast::<c_void>();
        assert_eq!(
            (a.memcpy)(end, 64, hp, 64, H2D),
            RT_PARAM_INVALID,
            "past the allocation"
        );
        assert_eq!(
            (a.memcpy)(0x7E00_0000_1000_0000 as H, 64, hp, 64, H2D),
            RT_PARAM_INVALID,
            "no allocation"
        );
        assert_eq!((a.memcpy)(end, 64, hp, 0, H2D), OK, "count 0");
        // Host to host: synchronous only (CANN does not support it asynchronously).
        assert_eq!((a.memcpy)(hp, 64, data.as_ptr().cast(), 64, H2H), OK);
        assert_eq!(host[..], data[..64]);
        assert_eq!(
            (a.memcpy_async)(hp, 64, data.as_ptr().cast(), 64, H2H, null_mut()),
            207000
        );
        // Device to device, within a device and across devices.
        let y = a.dmalloc(4096);
        assert_eq!((a.memcpy)(y, 4096, x, 4096, D2D), OK);
        assert_eq!(a.d2h(y, 4096).unwrap(), data);
        let other = std::thread::spawn(|| {
            let a = acl();
            a.set_device_ok(1);
            a.dmalloc(4096) as usize
        })
        .join()
        .unwrap() as H;
        assert_eq!((other as usize >> 40) & 0xFF, 1);
        assert_eq!(
            (a.memcpy)(other, 4096, x.cast::<u8>().add(1024).cast(), 1024, D2D),
            OK
        );
        assert_eq!(a.d2h(other, 1024).unwrap(), data[1024..2048]);
        a.dfree(y);
        a.dfree(other);
    }
    // A freed and reallocated range is zero again.
    a.dfree(x);
    let x2 = a.dmalloc(4096);
    assert_eq!(x2, x);
    assert_eq!(a.d2h(x2, 4096).unwrap(), vec![0u8; 4096]);
    a.dfree(x2);
    assert_eq!(a.live(), (0, 0, 0));
    a.finalize_ok();
}

#[test]
fn async_copy_completes_when_its_event_does() {
    let _g = serial();
    let a = acl();
    a.init_ok();
    a.set_device_ok(0);
    let x = a.dmalloc(8192);
    let s = a.stream();
    let ev = a.event();
    let never = a.event();
    assert_eq!(a.status(never), Ok(1), "a never-recorded event is COMPLETE (1)");
    assert_eq!(
        a.status_deprecated(never),
        Ok(0),
        "deprecated ACL_EVENT_STATUS_COMPLETE is 0"
    );
    let data = pattern(8192, 3);
    let async_before = a.calls("aclrtMemcpyAsync");
    // Each task (the copy, then the record) waits 250 ms before it does anything.
    // SAFETY: no pointers.
    unsafe { (a.stall)(250) };
    // SAFETY: `data` outlives the copy (the stream is synchronised below); handles are live.
    unsafe {
        assert_eq!((a.memcpy_async)(x, 8192, data.as_ptr().cast(), 8192, H2D, s), OK);
        assert_eq!((a.record_event)(ev, s), OK);
    }
    assert_eq!(a.status(ev), Ok(0), "NOT_READY (0) while the stalled copy runs");
    assert_eq!(
        a.status_deprecated(ev),
        Ok(1),
        "deprecated ACL_EVENT_STATUS_NOT_READY is 1"
    );
    assert_eq!(a.poll_event(ev), Ok(1), "COMPLETE after the copy");
    assert_eq!(a.status_deprecated(ev), Ok(0));
    // SAFETY: no pointers.
    unsafe { (a.stall)(0) };
    assert_eq!(a.d2h(x, 8192).unwrap(), data);

    // D2H on the default (null) stream; SynchronizeEvent blocks until it ran.
    let mut back = vec![0u8; 8192];
    // SAFETY: `back` outlives the copy (synchronised below).
    unsafe {
        assert_eq!(
            (a.memcpy_async)(back.as_mut_ptr().cast(), 8192, x, 8192, D2H, null_mut()),
            OK
        );
        assert_eq!((a.record_event)(ev, null_mut()), OK);
        assert_eq!((a.sync_event)(ev), OK);
        assert_eq!((a.sync_stream)(null_mut()), OK);
    }
    assert_eq!(back, data);
    assert_eq!(a.calls("aclrtMemcpyAsync") - async_before, 2);
    // SAFETY: live handles.
    unsafe {
        assert_eq!((a.destroy_event)(ev), OK);
        assert_eq!((a.destroy_event)(ev), RT_PARAM_INVALID);
        assert_eq!((a.destroy_event)(never), OK);
        assert_eq!((a.destroy_stream)(s), OK);
        assert_eq!((a.destroy_stream)(s), RT_PARAM_INVALID);
        assert_eq!((a.destroy_stream)(null_mut()), INVALID_PARAM);
    }
    a.dfree(x);
    a.finalize_ok();
}

#[test]
fn async_copy_on_a_thread_without_device_fails() {
    let _g = serial();
    let a = acl();
    a.init_ok();
    a.set_device_ok(0);
    let x = a.dmalloc(512) as usize;
    let s = a.stream() as usize;
    let data = [1u8; 512];
    let code = std::thread::spawn(move || {
        let a = acl();
        // SAFETY: `data` lives in this closure; the call fails before queuing anything.
        unsafe { (a.memcpy_async)(x as H, 512, data.as_ptr().cast(), 512, H2D, s as H) }
    })
    .join()
    .unwrap();
    assert_eq!(
        code, RT_CONTEXT_NULL,
        "a helper thread must call aclrtSetDevice first"
    );
    // SAFETY: live handle.
    assert_eq!(unsafe { (a.destroy_stream)(s as H) }, OK);
    a.dfree(x as H);
    a.finalize_ok();
}

#[test]
fn injected_synchronous_failures() {
    let _g = serial();
    let a = acl();
    std::env::set_var(
        "TE_FAKE_ACL_FAIL",
        "aclrtMemcpy:2:507053, bogus ,aclrtMalloc:3:207018",
    );
    a.init_ok();
    std::env::remove_var("TE_FAKE_ACL_FAIL");
    a.set_device_ok(0);
    let x = a.dmalloc(512);
    let old = pattern(512, 1);
    assert_eq!(a.h2d(x, &old), OK, "first aclrtMemcpy");
    assert_eq!(
        a.h2d(x, &pattern(512, 2)),
        RT_DEVICE_MEM_ERROR,
        "second aclrtMemcpy fails (env)"
    );
    assert_eq!(a.d2h(x, 512).unwrap(), old, "the failed copy did nothing");
    let y = a.dmalloc(512);
    let mut p: H = null_mut();
    // SAFETY: valid out pointer.
    assert_eq!(
        unsafe { (a.malloc)(&mut p, 512, 0) },
        207018,
        "third aclrtMalloc fails (env)"
    );
    assert_eq!(a.live().0, 2, "nothing allocated by the failed call");
    // Control symbol: counted from now.
    a.arm("aclrtFree", 2, 507899, false);
    a.dfree(y);
    // SAFETY: device address.
    assert_eq!(unsafe { (a.free)(x) }, 507899);
    a.dfree(x);
    a.arm("aclrtMalloc", 1, 207001, false);
    // SAFETY: no pointers.
    unsafe { (a.reset_faults)() };
    let z = a.dmalloc(512);
    a.dfree(z);
    assert_eq!(a.live(), (0, 0, 0));
    a.finalize_ok();
}

#[test]
fn injected_stream_failure_is_sticky_until_sync() {
    let _g = serial();
    let a = acl();
    a.init_ok();
    a.set_device_ok(0);
    let x = a.dmalloc(4096);
    let old = pattern(4096, 9);
    assert_eq!(a.h2d(x, &old), OK);
    let s = a.stream();
    let (before, after, later) = (a.event(), a.event(), a.event());
    let new = pattern(4096, 10);
    a.arm("aclrtMemcpyAsync", 2, 507053, true);
    // SAFETY: `new` outlives the copies (the stream is synchronised below); live handles.
    unsafe {
        assert_eq!(
            (a.memcpy_async)(x, 4096, new.as_ptr().cast(), 16, H2D, s),
            OK,
            "first is fine"
        );
        assert_eq!((a.record_event)(before, s), OK);
        assert_eq!(
            (a.memcpy_async)(x, 4096, new.as_ptr().cast(), 4096, H2D, s),
            OK,
            "fails later"
        );
        assert_eq!((a.record_event)(after, s), OK);
    }
    assert_eq!(
        a.poll_event(before),
        Ok(1),
        "event before the failed task completes"
    );
    assert_eq!(
        a.poll_event(after),
        Err(RT_DEVICE_MEM_ERROR),
        "event after it reports the code"
    );
    assert_eq!(a.status_deprecated(after), Err(RT_DEVICE_MEM_ERROR));
    // SAFETY: live handles.
    unsafe {
        assert_eq!((a.sync_event)(after), RT_DEVICE_MEM_ERROR);
        assert_eq!(
            (a.sync_stream)(s),
            RT_DEVICE_MEM_ERROR,
            "sync returns the sticky error"
        );
        assert_eq!((a.sync_stream)(s), OK, "and clears it");
    }
    let mut expect = old.clone();
    expect[..16].copy_from_slice(&new[..16]);
    assert_eq!(a.d2h(x, 4096).unwrap(), expect, "the failed copy wrote nothing");
    // SAFETY: live handles.
    unsafe {
        assert_eq!((a.record_event)(later, s), OK);
        assert_eq!((a.sync_event)(later), OK);
    }
    assert_eq!(a.status(later), Ok(1));

    // Env form, with WithTimeout returning the error.
    // SAFETY: live handles.
    unsafe {
        for e in [before, after, later] {
            assert_eq!((a.destroy_event)(e), OK);
        }
        assert_eq!((a.destroy_stream)(s), OK);
    }
    a.dfree(x);
    a.finalize_ok();

    std::env::set_var("TE_FAKE_ACL_FAIL", "aclrtMemcpyAsync:1:507052:async");
    a.init_ok();
    std::env::remove_var("TE_FAKE_ACL_FAIL");
    a.set_device_ok(0);
    let x = a.dmalloc(512);
    let s = a.stream();
    let data = pattern(512, 4);
    // SAFETY: `data` outlives the copy; live handle.
    unsafe {
        assert_eq!((a.memcpy_async)(x, 512, data.as_ptr().cast(), 512, H2D, s), OK);
        assert_eq!((a.sync_stream_timeout)(s, -1), 507052);
        assert_eq!((a.sync_stream_timeout)(s, 1000), OK);
    }
    assert_eq!(a.d2h(x, 512).unwrap(), vec![0u8; 512]);
    // SAFETY: live handle.
    assert_eq!(unsafe { (a.destroy_stream)(s) }, OK);
    a.dfree(x);
    a.finalize_ok();
}

#[test]
fn stream_sync_times_out_on_a_stalled_stream() {
    let _g = serial();
    let a = acl();
    std::env::set_var("TE_FAKE_ACL_STALL_MS", "300");
    a.init_ok();
    std::env::remove_var("TE_FAKE_ACL_STALL_MS");
    a.set_device_ok(0);
    let x = a.dmalloc(512);
    let s = a.stream();
    let data = pattern(512, 5);
    // SAFETY: `data` outlives the copy (synchronised below); live handle.
    unsafe {
        assert_eq!((a.memcpy_async)(x, 512, data.as_ptr().cast(), 512, H2D, s), OK);
        assert_eq!((a.sync_stream_timeout)(s, 20), RT_STREAM_SYNC_TIMEOUT);
        assert_eq!((a.sync_stream_timeout)(s, 0), INVALID_PARAM);
        assert_eq!((a.sync_stream_timeout)(s, -2), INVALID_PARAM);
        assert_eq!((a.sync_stream_timeout)(s, -1), OK);
    }
    assert_eq!(a.d2h(x, 512).unwrap(), data);
    // Destroy drains what is queued.
    let y = a.dmalloc(512);
    // SAFETY: `data` outlives the copy (destroy drains); live handle.
    unsafe {
        assert_eq!((a.memcpy_async)(y, 512, data.as_ptr().cast(), 512, H2D, s), OK);
        assert_eq!((a.destroy_stream)(s), OK);
    }
    assert_eq!(a.d2h(y, 512).unwrap(), data, "destroy drained the queued copy");
    // SAFETY: no pointers.
    unsafe { (a.reset_faults)() };
    a.dfree(x);
    a.dfree(y);
    a.finalize_ok();
}

#[test]
fn stream_wait_event_orders_two_streams() {
    let _g = serial();
    let a = acl();
    a.init_ok();
    a.set_device_ok(0);
    let x = a.dmalloc(4096);
    let (s1, s2) = (a.stream(), a.stream());
    let ev = a.event();
    let (p1, p2, p3) = (pattern(4096, 1), pattern(4096, 2), pattern(4096, 3));
    let mut back = vec![0u8; 4096];
    // SAFETY: no pointers.
    unsafe { (a.stall)(100) };
    // SAFETY: buffers outlive the copies (both streams are synchronised below); live handles.
    unsafe {
        // s1: three stalled copies, the last one writes p3, then the event.
        for p in [&p1, &p2, &p3] {
            assert_eq!((a.memcpy_async)(x, 4096, p.as_ptr().cast(), 4096, H2D, s1), OK);
        }
        assert_eq!((a.record_event)(ev, s1), OK);
        // s2 waits for the event on the device, then reads back. Without the wait its copy
        // would run after one stall, long before s1's third copy.
        assert_eq!((a.stream_wait_event)(s2, ev), OK);
        assert_eq!(
            a.status(ev),
            Ok(0),
            "the host did not block in aclrtStreamWaitEvent"
        );
        assert_eq!(
            (a.memcpy_async)(back.as_mut_ptr().cast(), 4096, x, 4096, D2H, s2),
            OK
        );
        assert_eq!((a.sync_stream)(s2), OK);
    }
    assert_eq!(
        a.status(ev),
        Ok(1),
        "s2 finished, so the event it waited for completed"
    );
    assert_eq!(back, p3, "s2 read after s1's last copy");
    // SAFETY: no pointers; live handles.
    unsafe {
        (a.stall)(0);
        assert_eq!((a.sync_stream)(s1), OK);
        assert_eq!((a.destroy_stream)(s1), OK);
        assert_eq!((a.destroy_stream)(s2), OK);
        assert_eq!((a.destroy_event)(ev), OK);
    }
    a.dfree(x);
    a.finalize_ok();
}

#[test]
fn a_notify_wait_queued_before_its_record_holds_the_stream_until_the_record_runs() {
    let _g = serial();
    let a = acl();
    a.init_ok();
    let mut n: H = null_mut();
    // SAFETY: valid out pointer.
    assert_eq!(
        unsafe { (a.create_notify)(&mut n, 0) },
        RT_CONTEXT_NULL,
        "a notify needs a device on the thread"
    );
    a.set_device_ok(0);
    // SAFETY: valid out pointers.
    unsafe {
        assert_eq!((a.create_notify)(&mut n, 2), INVALID_PARAM, "unknown flag bit");
        assert_eq!((a.create_notify)(null_mut(), 0), INVALID_PARAM);
        assert_eq!((a.create_notify)(&mut n, 0), OK);
    }
    let x = a.dmalloc(4096);
    let (held, other) = (a.stream(), a.stream());
    let ev = a.event();
    let data = pattern(4096, 7);
    let mut back = vec![0u8; 4096];
    // SAFETY: buffers outlive the copies (both streams are synchronised below); live handles.
    unsafe {
        // `held` waits for the notify before it writes; nothing has recorded it yet.
        assert_eq!((a.wait_and_reset_notify)(n, held, 0), OK);
        assert_eq!(
            (a.memcpy_async)(x, 4096, data.as_ptr().cast(), 4096, H2D, held),
            OK
        );
        assert_eq!((a.record_event)(ev, held), OK);
        assert_eq!(
            (a.sync_stream_timeout)(held, 200),
            RT_STREAM_SYNC_TIMEOUT,
            "a wait with no record holds the stream"
        );
        assert_eq!(a.status(ev), Ok(0));
        assert_eq!((a.record_notify)(n, other), OK);
        assert_eq!((a.sync_stream)(held), OK);
        assert_eq!(a.status(ev), Ok(1), "the record released the stream");
        assert_eq!((a.memcpy)(back.as_mut_ptr().cast(), 4096, x, 4096, D2H), OK);
        assert_eq!(back, data);
        // The wait cleared the notify: a second wait is held again, and times out after 1 s
        // as a failure on the stream, kept until the next synchronisation.
        assert_eq!((a.wait_and_reset_notify)(n, held, 1), OK);
        assert_eq!((a.sync_stream)(held), 107019, "ACL_ERROR_RT_WAIT_TIMEOUT");
        assert_eq!((a.sync_stream)(held), OK, "the error was cleared");
        assert_eq!((a.destroy_notify)(n), OK);
        assert_eq!((a.destroy_notify)(n), RT_PARAM_INVALID, "already destroyed");
        assert_eq!((a.record_notify)(n, other), RT_PARAM_INVALID);
        assert_eq!((a.destroy_stream)(held), OK);
        assert_eq!((a.destroy_stream)(other), OK);
        assert_eq!((a.destroy_event)(ev), OK);
    }
    a.dfree(x);
    a.finalize_ok();
}

#[test]
fn peers_tgid_and_leak_counters() {
    let _g = serial();
    let a = acl();
    a.init_ok();
    let mut can = -1;
    let mut pid = 0;
    // SAFETY: every pointer passed is valid for its use.
    unsafe {
        assert_eq!((a.can_access_peer)(&mut can, 0, 1), OK);
        assert_eq!(can, 1);
        assert_eq!((a.can_access_peer)(&mut can, 1, 1), OK);
        assert_eq!(can, 0);
        assert_eq!((a.can_access_peer)(&mut can, 0, 5), RT_INVALID_DEVICEID);
        assert_eq!((a.enable_peer_access)(1, 0), RT_CONTEXT_NULL);
        a.set_device_ok(0);
        assert_eq!((a.enable_peer_access)(1, 0), OK);
        assert_eq!((a.enable_peer_access)(1, 1), INVALID_PARAM);
        assert_eq!(
            (a.enable_peer_access)(0, 0),
            RT_PARAM_INVALID,
            "peer is the current device"
        );
        assert_eq!((a.enable_peer_access)(7, 0), RT_INVALID_DEVICEID);
        assert_eq!((a.bare_tgid)(&mut pid), OK);
        assert_eq!(pid as u32, std::process::id());

        let base = a.live();
        let d: Vec<H> = (0..3).map(|_| a.dmalloc(1000)).collect();
        let mut h = [null_mut(); 2];
        for p in &mut h {
            assert_eq!((a.malloc_host)(p, 10000), OK);
            assert_eq!(*p as usize % 4096, 0);
            // Pinned host memory is host memory, and not zeroed (ACL leaves it uninitialized).
            let m = std::slice::from_raw_parts_mut(p.cast::<u8>(), 10000);
            assert!(m.iter().all(|&b| b == 0xA5));
            m.fill(0xAB);
        }
        assert_eq!(a.live(), (base.0 + 3, base.1 + 2, base.2));
        assert_eq!((a.free_host)(d[0]), RT_PARAM_INVALID, "not a host allocation");
        for p in d {
            a.dfree(p);
        }
        for p in h {
            assert_eq!((a.free_host)(p), OK);
        }
        assert_eq!(a.live(), base);
        assert_eq!(a.live(), (0, 0, 0));
    }
    a.finalize_ok();
}

#[test]
fn concurrent_threads_each_with_a_device() {
    let _g = serial();
    let a = acl();
    a.init_ok();
    let workers: Vec<_> = (0..4)
        .map(|t: usize| {
            std::thread::spawn(move || {
                let a = acl();
                a.set_device_ok((t % 2) as i32);
                let s = a.stream();
                let ev = a.event();
                for i in 0..40usize {
                    let len = 512 * (1 + (t * 7 + i) % 9) + i;
                    let data = pattern(len, (t * 40 + i) as u8);
                    let (x, y) = (a.dmalloc(len), a.dmalloc(len));
                    assert_eq!(a.h2d(x, &data), OK);
                    let mut back = vec![0u8; len];
                    // SAFETY: `back` outlives the copies (the event is waited for); device
                    // pointers are never dereferenced.
                    unsafe {
                        assert_eq!((a.memcpy_async)(y, len, x, len, D2D, s), OK);
                        assert_eq!(
                            (a.memcpy_async)(back.as_mut_ptr().cast(), len, y, len, D2H, s),
                            OK
                        );
                        assert_eq!((a.record_event)(ev, s), OK);
                    }
                    assert_eq!(a.poll_event(ev), Ok(1));
                    assert_eq!(back, data);
                    a.dfree(x);
                    a.dfree(y);
                }
                // SAFETY: live handles.
                unsafe {
                    assert_eq!((a.destroy_event)(ev), OK);
                    assert_eq!((a.destroy_stream)(s), OK);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(a.live(), (0, 0, 0));
    a.finalize_ok();
}

#[test]
fn memset_sync_and_async() {
    let _g = serial();
    let a = acl();
    let lib = libloading_memset();
    a.init_ok();
    a.set_device_ok(0);
    let x = a.dmalloc(4096);
    // SAFETY: device pointer inside the allocation; host buffer valid for its length.
    unsafe {
        assert_eq!((lib.0)(x, 4096, 0x5A, 4096), OK);
        assert_eq!((lib.0)(x, 16, 0x5A, 32), INVALID_PARAM, "count > maxCount");
        assert_eq!(
            (lib.0)(x.cast::<u8>().add(4000).cast(), 4096, 0, 200),
            RT_PARAM_INVALID,
            "past the end"
        );
        assert_eq!(
            (lib.1)(x.cast::<u8>().add(100).cast(), 100, 0x100 + 7, 100, null_mut()),
            OK
        );
        assert_eq!((a.sync_stream)(null_mut()), OK);
        let mut host = [1u8; 8];
        assert_eq!((lib.0)(host.as_mut_ptr().cast(), 8, 9, 8), OK);
        assert_eq!(host, [9u8; 8]);
    }
    let mut expect = vec![0x5Au8; 4096];
    expect[100..200].fill(7);
    assert_eq!(a.d2h(x, 4096).unwrap(), expect);
    a.dfree(x);
    a.finalize_ok();
}

type Memset = unsafe extern "C" fn(H, usize, i32, usize) -> E;
type MemsetAsync = unsafe extern "C" fn(H, usize, i32, usize, H) -> E;

fn libloading_memset() -> (Memset, MemsetAsync) {
    // SAFETY: the same library `acl()` loaded (dlopen returns the loaded object); signatures
    // of acl_rt.h.
    unsafe {
        let lib = libloading::Library::new(lib_path()).unwrap();
        let m: Memset = *lib.get(b"aclrtMemset\0").unwrap();
        let ma: MemsetAsync = *lib.get(b"aclrtMemsetAsync\0").unwrap();
        std::mem::forget(lib);
        (m, ma)
    }
}

#[test]
fn env_faults_that_did_not_fire_end_at_the_next_init() {
    let _g = serial();
    let a = acl();
    std::env::set_var("TE_FAKE_ACL_FAIL", "aclrtMalloc:2:207001");
    a.init_ok();
    std::env::remove_var("TE_FAKE_ACL_FAIL");
    a.finalize_ok();
    // A control-symbol fault armed while finalized survives the next aclInit.
    a.arm("aclrtFree", 3, 507899, false);
    a.init_ok();
    a.set_device_ok(0);
    let p: Vec<H> = (0..4).map(|_| a.dmalloc(512)).collect();
    a.dfree(p[0]);
    a.dfree(p[1]);
    // SAFETY: device address from aclrtMalloc.
    assert_eq!(unsafe { (a.free)(p[2]) }, 507899);
    for q in &p[2..] {
        a.dfree(*q);
    }
    a.finalize_ok();
}

#[test]
fn reset_device_counts_references_over_threads() {
    let _g = serial();
    let a = acl();
    a.init_ok();
    a.set_device_ok(0);
    let x = a.dmalloc(4096);
    let (to_helper, helper_rx) = std::sync::mpsc::channel::<()>();
    let (to_main, main_rx) = std::sync::mpsc::channel::<E>();
    let helper = std::thread::spawn(move || {
        let a = acl();
        a.set_device_ok(0); // second reference
        let mut p: H = null_mut();
        // SAFETY: valid out pointer.
        let r = unsafe { (a.malloc)(&mut p, 512, 0) };
        a.dfree(p);
        to_main.send(r).unwrap();
        helper_rx.recv().unwrap();
        // The main thread released the last reference meanwhile: no context here either.
        // SAFETY: valid out pointer.
        to_main.send(unsafe { (a.malloc)(&mut p, 512, 0) }).unwrap();
    });
    assert_eq!(main_rx.recv().unwrap(), OK);
    // SAFETY: no pointers.
    assert_eq!(unsafe { (a.reset_device)(0) }, OK, "two references, one left");
    let s = a.stream();
    let data = pattern(4096, 8);
    // SAFETY: `data` outlives the copy (the reset drains the stream); live handle.
    unsafe {
        (a.stall)(100);
        assert_eq!((a.memcpy_async)(x, 4096, data.as_ptr().cast(), 4096, H2D, s), OK);
        // The helper's reference: the last one. The queued copy still runs first.
        assert_eq!((a.reset_device)(0), OK);
        (a.stall)(0);
        assert_eq!(
            (a.destroy_stream)(s),
            RT_PARAM_INVALID,
            "streams of the device went with it"
        );
        assert_eq!((a.reset_device)(0), RT_PARAM_INVALID, "no reference left");
    }
    let mut d = 0;
    // SAFETY: valid out pointer.
    assert_eq!(unsafe { (a.get_device)(&mut d) }, RT_CONTEXT_NULL);
    to_helper.send(()).unwrap();
    assert_eq!(
        main_rx.recv().unwrap(),
        RT_CONTEXT_NULL,
        "the helper's binding ended too"
    );
    helper.join().unwrap();
    a.set_device_ok(0);
    assert_eq!(
        a.d2h(x, 4096).unwrap(),
        data,
        "device memory stays; the drained copy landed"
    );
    a.dfree(x);
    a.finalize_ok();
}
