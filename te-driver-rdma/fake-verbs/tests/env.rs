//! `TE_FAKE_VERBS_DEVICES` and `TE_FAKE_VERBS_FAIL`, read from the environment when the fake's
//! state is first touched (its own test binary, so nothing touched it before).

use std::ptr::null_mut;

use te_fake_verbs::verbs::*;

#[test]
fn the_environment_offers_devices_and_arms_faults() {
    // Set before the first call into the fake in this process (the only test here).
    std::env::set_var("TE_FAKE_VERBS_DEVICES", "2");
    std::env::set_var(
        "TE_FAKE_VERBS_FAIL",
        "ibv_alloc_pd:2:12, nonsense, ibv_open_device:1:19",
    );
    // SAFETY: the fake's own functions, called as a C caller would.
    unsafe {
        let mut n = 0;
        let list = ibv_get_device_list(&mut n);
        assert_eq!(n, 2);
        assert!(
            !(*list.add(1)).is_null() && (*list.add(2)).is_null(),
            "NULL-terminated"
        );
        assert!(ibv_open_device(*list).is_null(), "the first open fails as armed");
        assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::ENODEV));
        let ctx = ibv_open_device(*list.add(1));
        ibv_free_device_list(list);
        assert!(!ctx.is_null(), "the second open succeeds");
        let first = ibv_alloc_pd(ctx);
        assert!(!first.is_null());
        assert!(
            ibv_alloc_pd(ctx).is_null(),
            "the second ibv_alloc_pd fails as armed"
        );
        assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::ENOMEM));
        let third = ibv_alloc_pd(ctx);
        assert!(!third.is_null());
        assert_eq!(ibv_close_device(ctx), libc::EBUSY, "PDs are still allocated");
        assert_eq!(ibv_dealloc_pd(first), 0);
        assert_eq!(ibv_dealloc_pd(third), 0);
        assert_eq!(ibv_close_device(ctx), 0);
        assert!(ibv_get_device_name(null_mut()).is_null());
    }
}
