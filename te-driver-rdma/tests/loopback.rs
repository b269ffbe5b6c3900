//! te-driver-rdma on the fake libibverbs, in one process: two queue pairs of one driver
//! connected to each other, so every READ and WRITE goes through the fake NIC's socket and
//! its checks (the same path as across processes, see cross_process.rs).

mod common;

use std::time::Duration;

use common::{config, fake, open, pattern, wait_all};
use te_driver_rdma::error::{IBV_WC_REM_ACCESS_ERR, IBV_WC_WR_FLUSH_ERR};
use te_driver_rdma::{Cause, Deregister, Op, QpId, QpState, RdmaConfig, RdmaDriver, Transfer, Unavailable};
use te_proto::{ErrorCode, Perm};

/// Two connected queue pairs: (requester, responder).
fn pair(d: &mut RdmaDriver) -> (QpId, QpId) {
    let a = d.create_qp().expect("create qp");
    let b = d.create_qp().expect("create qp");
    let (ia, ib) = (d.conn_info(a).expect("info"), d.conn_info(b).expect("info"));
    d.connect(a, &ib).expect("connect a");
    d.connect(b, &ia).expect("connect b");
    (a, b)
}

fn addr(b: &[u8]) -> u64 {
    b.as_ptr() as u64
}

/// The address of a buffer the NIC writes into (taken from a mutable borrow).
fn addr_mut(b: &mut [u8]) -> u64 {
    b.as_mut_ptr() as u64
}

#[test]
fn writes_and_reads_move_exact_bytes_through_many_work_requests() {
    let (_g, fake) = fake();
    let len = (1 << 20) + 77;
    let src = pattern(len, 3);
    let mut dst = vec![0u8; len];
    let mut back = vec![0u8; len];
    let mut d = open(RdmaConfig {
        max_wr_bytes: 4096,
        max_outstanding: 16,
        ..config()
    });
    assert_eq!(d.info().name, "fake_verbs0");
    let (a, _b) = pair(&mut d);
    assert_eq!(d.query_qp_state(a).expect("query"), 3, "RTS");
    // SAFETY: the buffers outlive the driver (declared before it).
    let (s, t, r) = unsafe {
        (
            d.register(addr(&src), len as u64, Perm::LOCAL_ONLY)
                .expect("reg src"),
            d.register(addr_mut(&mut dst), len as u64, Perm::REMOTE_READ_WRITE)
                .expect("reg dst"),
            d.register(addr_mut(&mut back), len as u64, Perm::LOCAL_ONLY)
                .expect("reg back"),
        )
    };
    let served = fake.served();
    let w = d
        .submit(
            a,
            Transfer {
                op: Op::Write,
                lkey: s.lkey,
                local_addr: s.addr,
                remote_addr: t.addr,
                rkey: t.rkey,
                len: len as u64,
            },
        )
        .expect("submit write");
    let (done, _) = wait_all(&mut d, &[w]);
    assert_eq!(done[&w], (Ok(()), len as u64));
    assert!(dst == src, "the written bytes landed exactly");
    // 257 work requests of at most 4096 bytes, with at most 16 outstanding.
    assert_eq!(fake.served() - served, len.div_ceil(4096) as u64);
    let rd = d
        .submit(
            a,
            Transfer {
                op: Op::Read,
                lkey: r.lkey,
                local_addr: r.addr + 1,
                remote_addr: t.addr + 1,
                rkey: t.rkey,
                len: len as u64 - 1,
            },
        )
        .expect("submit read");
    let (done, _) = wait_all(&mut d, &[rd]);
    assert_eq!(done[&rd], (Ok(()), len as u64 - 1));
    assert!(
        back[1..] == src[1..] && back[0] == 0,
        "the read brought exactly the range asked"
    );
    assert_eq!(d.in_flight(), 0);
}

#[test]
fn thousands_of_work_requests_stay_within_the_completion_queue() {
    let (_g, fake) = fake();
    let block = 1024usize;
    let n = 3000usize;
    let src = pattern(block * 64, 5);
    let mut dst = vec![0u8; block * 64];
    // A CQ of 2 * 8 entries for 3000 transfers of 2 work requests each.
    let mut d = open(RdmaConfig {
        max_wr_bytes: 512,
        max_outstanding: 8,
        max_qps: 2,
        ..config()
    });
    let (a, _b) = pair(&mut d);
    // SAFETY: the buffers outlive the driver.
    let (s, t) = unsafe {
        (
            d.register(addr(&src), src.len() as u64, Perm::LOCAL_ONLY)
                .expect("reg"),
            d.register(addr_mut(&mut dst), dst.len() as u64, Perm::REMOTE_READ_WRITE)
                .expect("reg"),
        )
    };
    let overruns = fake.cq_overruns();
    let ids: Vec<_> = (0..n)
        .map(|i| {
            let off = ((i % 64) * block) as u64;
            d.submit(
                a,
                Transfer {
                    op: Op::Write,
                    lkey: s.lkey,
                    local_addr: s.addr + off,
                    remote_addr: t.addr + off,
                    rkey: t.rkey,
                    len: block as u64,
                },
            )
            .expect("submit")
        })
        .collect();
    let (done, _) = wait_all(&mut d, &ids);
    assert!(done.values().all(|(r, b)| r.is_ok() && *b == block as u64));
    assert!(dst == src);
    assert_eq!(fake.cq_overruns(), overruns, "the driver never overran the CQ");
    // A third queue pair would not fit the CQ: refused before the library is asked.
    let e = d.create_qp().unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotReady, "{e}");
}

#[test]
fn the_nic_refuses_a_write_into_a_read_only_region_and_flushes_the_rest() {
    let (_g, _fake) = fake();
    let src = pattern(8192, 1);
    let ro = pattern(8192, 2);
    let mut d = open(RdmaConfig {
        max_wr_bytes: 1024,
        ..config()
    });
    let (a, _b) = pair(&mut d);
    // SAFETY: the buffers outlive the driver.
    let (s, t) = unsafe {
        (
            d.register(addr(&src), 8192, Perm::LOCAL_ONLY).expect("reg"),
            d.register(addr(&ro), 8192, Perm::REMOTE_READ).expect("reg"),
        )
    };
    let w = Transfer {
        op: Op::Write,
        lkey: s.lkey,
        local_addr: s.addr,
        remote_addr: t.addr,
        rkey: t.rkey,
        len: 8192,
    };
    let first = d.submit(a, w).expect("submit");
    let second = d.submit(a, w).expect("submit");
    let (done, _) = wait_all(&mut d, &[first, second]);
    let e = done[&first].0.clone().unwrap_err();
    assert_eq!(e.wc_status(), Some(IBV_WC_REM_ACCESS_ERR), "{e}");
    assert_eq!(e.code(), ErrorCode::NotAuthorized);
    assert!(e.to_string().contains("IBV_WC_REM_ACCESS_ERR"), "{e}");
    assert_eq!(done[&first].1, 0, "no byte moved");
    assert!(done[&second].0.is_err(), "what followed failed too");
    assert!(ro == pattern(8192, 2), "the read-only region is untouched");
    assert!(matches!(d.qp_state(a).expect("state"), QpState::Failed(_)));
    assert_eq!(
        d.query_qp_state(a).expect("query"),
        6,
        "the library has the QP in ERR"
    );
    let again = d.submit(a, w).unwrap_err();
    assert_eq!(again.code(), ErrorCode::Disconnected, "{again}");
    // Reading it is allowed, on a fresh pair.
    let mut back = vec![0u8; 8192];
    // SAFETY: `back` outlives its registration (deregistered below).
    let bk = unsafe { d.register(addr_mut(&mut back), 8192, Perm::LOCAL_ONLY) }.expect("reg");
    let (c, _d2) = pair(&mut d);
    let r = d
        .submit(
            c,
            Transfer {
                op: Op::Read,
                lkey: bk.lkey,
                local_addr: bk.addr,
                ..w
            },
        )
        .expect("submit read");
    let (done, _) = wait_all(&mut d, &[r]);
    assert!(done[&r].0.is_ok());
    assert!(back == ro);
    assert_eq!(d.deregister(bk.lkey), Ok(Deregister::Done));
}

#[test]
fn a_deregistered_region_s_rkey_is_refused_and_deregistration_waits_for_transfers() {
    let (_g, fake) = fake();
    let mut local = vec![0u8; 1 << 16];
    let remote = pattern(1 << 16, 4);
    let mut d = open(RdmaConfig {
        max_wr_bytes: 4096,
        max_outstanding: 4,
        ..config()
    });
    let (a, _b) = pair(&mut d);
    // SAFETY: the buffers outlive the driver.
    let (l, r) = unsafe {
        (
            d.register(addr_mut(&mut local), 1 << 16, Perm::LOCAL_ONLY)
                .expect("reg"),
            d.register(addr(&remote), 1 << 16, Perm::REMOTE_READ)
                .expect("reg"),
        )
    };
    let read = Transfer {
        op: Op::Read,
        lkey: l.lkey,
        local_addr: l.addr,
        remote_addr: r.addr,
        rkey: r.rkey,
        len: 1 << 16,
    };
    // A slow responder keeps the read in flight while the local region is deregistered.
    fake.stall_us(2000);
    let id = d.submit(a, read).expect("submit");
    assert_eq!(d.deregister(l.lkey), Ok(Deregister::Deferred { transfers: 1 }));
    let e = d.submit(a, read).unwrap_err();
    assert_eq!(
        e.code(),
        ErrorCode::NotFound,
        "a closing region takes no new transfer: {e}"
    );
    let (done, deregs) = wait_all(&mut d, &[id]);
    fake.stall_us(0);
    assert!(done[&id].0.is_ok(), "{:?}", done[&id]);
    assert!(local == remote);
    assert_eq!(deregs, vec![l.lkey], "deregistered once the read ended");
    assert!(d.deregister(l.lkey).is_err(), "already gone");
    // The remote region goes now; its rkey is refused by the NIC from then on.
    // SAFETY: `local` outlives this registration.
    let l2 = unsafe { d.register(addr_mut(&mut local), 1 << 16, Perm::LOCAL_ONLY) }.expect("reg");
    assert_eq!(d.deregister(r.lkey), Ok(Deregister::Done));
    let id = d
        .submit(
            a,
            Transfer {
                lkey: l2.lkey,
                ..read
            },
        )
        .expect("submit");
    let (done, _) = wait_all(&mut d, &[id]);
    let e = done[&id].0.clone().unwrap_err();
    assert_eq!(e.wc_status(), Some(IBV_WC_REM_ACCESS_ERR), "{e}");
}

#[test]
fn posts_outside_rts_are_refused_by_the_library() {
    let (_g, _fake) = fake();
    let buf = vec![0u8; 4096];
    let mut d = open(config());
    let q = d.create_qp().expect("create");
    assert_eq!(d.qp_state(q).expect("state"), QpState::Idle);
    assert_eq!(d.query_qp_state(q).expect("query"), 0, "RESET");
    // SAFETY: `buf` outlives the driver.
    let m = unsafe { d.register(addr(&buf), 4096, Perm::REMOTE_READ_WRITE) }.expect("reg");
    let e = d
        .submit(
            q,
            Transfer {
                op: Op::Write,
                lkey: m.lkey,
                local_addr: m.addr,
                remote_addr: m.addr,
                rkey: m.rkey,
                len: 4096,
            },
        )
        .unwrap_err();
    assert_eq!(e.call, "ibv_post_send");
    assert_eq!(e.cause, Cause::Errno(libc::EINVAL), "{e}");
    assert_eq!(d.in_flight(), 0, "nothing was left behind");
    // A QP number over 24 bits is refused by the library at INIT to RTR.
    let mut peer = d.conn_info(q).expect("info");
    peer.qpn = 1 << 24;
    let e = d.connect(q, &peer).unwrap_err();
    assert!(
        e.to_string().contains("ibv_modify_qp") && e.to_string().contains("INIT to RTR"),
        "{e}"
    );
    assert_eq!(e.cause, Cause::Errno(libc::EINVAL));
}

#[test]
fn an_injected_call_fault_fails_exactly_that_call() {
    let (_g, fake) = fake();
    let buf = vec![0u8; 4096];
    let mut d = open(config());
    fake.fail("ibv_reg_mr", 1, libc::ENOMEM);
    // SAFETY: `buf` outlives the driver.
    let e = unsafe { d.register(addr(&buf), 4096, Perm::REMOTE_READ) }.unwrap_err();
    assert_eq!(
        (e.call, e.cause.clone()),
        ("ibv_reg_mr", Cause::Errno(libc::ENOMEM)),
        "{e}"
    );
    assert!(e.to_string().contains("ENOMEM"), "{e}");
    // SAFETY: as above.
    let m = unsafe { d.register(addr(&buf), 4096, Perm::REMOTE_READ) }.expect("the next call succeeds");
    assert_eq!(d.deregister(m.lkey), Ok(Deregister::Done));
    fake.fail("ibv_create_cq", 1, libc::EINVAL);
    match RdmaDriver::open(config()) {
        Err(Unavailable::Call(e)) => {
            assert_eq!((e.call, e.cause), ("ibv_create_cq", Cause::Errno(libc::EINVAL)))
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened despite the fault"),
    }
    drop(d);
    assert_eq!(
        fake.live_objects(),
        0,
        "the failed open and the driver released everything"
    );
}

#[test]
fn an_injected_completion_fault_fails_exactly_that_transfer() {
    let (_g, fake) = fake();
    let src = pattern(4096, 8);
    let mut dst = vec![0u8; 4096];
    let mut d = open(RdmaConfig {
        max_wr_bytes: 1024,
        ..config()
    });
    let (a, _b) = pair(&mut d);
    // SAFETY: the buffers outlive the driver.
    let (s, t) = unsafe {
        (
            d.register(addr(&src), 4096, Perm::LOCAL_ONLY).expect("reg"),
            d.register(addr_mut(&mut dst), 4096, Perm::REMOTE_READ_WRITE)
                .expect("reg"),
        )
    };
    let w = Transfer {
        op: Op::Write,
        lkey: s.lkey,
        local_addr: s.addr,
        remote_addr: t.addr,
        rkey: t.rkey,
        len: 2048,
    };
    let ok = d.submit(a, w).expect("submit");
    let (done, _) = wait_all(&mut d, &[ok]);
    assert!(done[&ok].0.is_ok());
    // The second work request of the next transfer (4 of them) completes with
    // IBV_WC_REM_OP_ERR (11); the two after it are flushed.
    fake.fail("wc", 2, 11);
    let bad = d
        .submit(
            a,
            Transfer {
                len: 4096,
                remote_addr: t.addr,
                ..w
            },
        )
        .expect("submit");
    let (done, _) = wait_all(&mut d, &[bad]);
    let e = done[&bad].0.clone().unwrap_err();
    assert_eq!(
        e.wc_status(),
        Some(11),
        "the first error is reported, not the flushes: {e}"
    );
    assert!(
        e.to_string().contains("IBV_WC_REM_OP_ERR") && e.to_string().contains("offset 1024"),
        "{e}"
    );
    assert_eq!(e.code(), ErrorCode::RuntimeError);
    assert_eq!(done[&bad].1, 1024, "only the first work request moved bytes");
    assert!(dst[..1024] == src[..1024] && dst[2048..].iter().all(|&b| b == 0));
    assert_ne!(e.wc_status(), Some(IBV_WC_WR_FLUSH_ERR));
}

#[test]
fn the_completion_channel_fd_becomes_readable_after_arming() {
    let (_g, _fake) = fake();
    let buf = pattern(4096, 9);
    let mut dst = vec![0u8; 4096];
    let mut d = open(config());
    let (a, _b) = pair(&mut d);
    // SAFETY: the buffers outlive the driver.
    let (s, t) = unsafe {
        (
            d.register(addr(&buf), 4096, Perm::LOCAL_ONLY).expect("reg"),
            d.register(addr_mut(&mut dst), 4096, Perm::REMOTE_WRITE)
                .expect("reg"),
        )
    };
    let fd = d.event_fd();
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    d.arm().expect("arm");
    // SAFETY: one valid pollfd; a zero timeout.
    assert_eq!(
        unsafe { libc::poll(&mut pfd, 1, 0) },
        0,
        "nothing to read before a completion"
    );
    let id = d
        .submit(
            a,
            Transfer {
                op: Op::Write,
                lkey: s.lkey,
                local_addr: s.addr,
                remote_addr: t.addr,
                rkey: t.rkey,
                len: 4096,
            },
        )
        .expect("submit");
    // SAFETY: as above, waiting up to 30 s.
    assert_eq!(
        unsafe { libc::poll(&mut pfd, 1, 30_000) },
        1,
        "the completion made the fd readable"
    );
    let mut events = Vec::new();
    d.poll(&mut events).expect("poll");
    assert!(
        matches!(&events[..], [te_driver_rdma::Event::Transfer { id: i, result: Ok(()), bytes: 4096 }] if *i == id)
    );
    // The event was consumed: the fd is quiet again.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::poll(&mut pfd, 1, 0) }, 0);
    assert!(dst == buf);
    assert_eq!(d.wait(Duration::from_millis(1), &mut events).expect("wait"), 0);
}

#[test]
fn without_devices_or_library_the_reason_is_clear() {
    let (_g, fake) = fake();
    fake.set_devices(0);
    let e = match RdmaDriver::open(config()) {
        Err(e) => e,
        Ok(_) => panic!("opened without devices"),
    };
    fake.set_devices(1);
    assert!(matches!(e, Unavailable::NoDevices { errno: None, .. }), "{e:?}");
    assert_eq!(e.code(), ErrorCode::NotSupported);
    let shown = e.to_string();
    assert!(
        shown.contains("libte_fake_verbs.so") && shown.contains("found no RDMA device"),
        "{shown}"
    );
    let e = match RdmaDriver::open(RdmaConfig {
        device: Some("mlx5_9".into()),
        ..config()
    }) {
        Err(e) => e,
        Ok(_) => panic!("opened a device that is not there"),
    };
    assert_eq!(e.to_string(), "no RDMA device mlx5_9 (listed: fake_verbs0)");
    let e = match RdmaDriver::open(RdmaConfig {
        library: Some("/nonexistent/libibverbs.so.1".into()),
        ..config()
    }) {
        Err(e) => e,
        Ok(_) => panic!("opened without a library"),
    };
    assert_eq!(e.code(), ErrorCode::NotSupported);
    assert!(
        e.to_status().message().contains("/nonexistent/libibverbs.so.1"),
        "{}",
        e.to_status()
    );
}
