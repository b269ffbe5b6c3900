//! The fake's verbs called directly (in this process, without a driver): the queue-pair
//! state machine, `ibv_post_send`'s refusals with `bad_wr`, the CQ overrun, the completion
//! channel and `ibv_destroy_cq`'s wait for acknowledgements.

use std::ffi::c_void;
use std::ptr::null_mut;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use te_fake_verbs::abi::*;
use te_fake_verbs::verbs::*;
use te_fake_verbs::{cq, device};

static SERIAL: Mutex<()> = Mutex::new(());

/// One opened device with a PD, a registered buffer and CQs.
struct Rig {
    ctx: *mut IbvContext,
    pd: *mut IbvPd,
    mr: *mut IbvMr,
    buf: Vec<u8>,
    gid: IbvGid,
}

fn rig() -> (MutexGuard<'static, ()>, Rig) {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    device::OVERRIDE.store(1, Ordering::Relaxed);
    // SAFETY: the fake's own functions, called as a C caller would.
    unsafe {
        let mut n = 0;
        let list = ibv_get_device_list(&mut n);
        assert_eq!(n, 1);
        let ctx = ibv_open_device(*list);
        ibv_free_device_list(list);
        assert!(!ctx.is_null());
        let pd = ibv_alloc_pd(ctx);
        let mut buf = vec![0u8; 1 << 16];
        let flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE;
        let mr = ibv_reg_mr(pd, buf.as_mut_ptr().cast(), buf.len(), flags);
        assert!(!mr.is_null());
        let mut gid = IbvGid::default();
        assert_eq!(ibv_query_gid(ctx, 1, 0, &mut gid), 0);
        (
            g,
            Rig {
                ctx,
                pd,
                mr,
                buf,
                gid,
            },
        )
    }
}

impl Rig {
    fn cq(&self, cqe: i32, channel: *mut IbvCompChannel) -> *mut IbvCq {
        // SAFETY: a live context (and channel or NULL).
        let cq = unsafe { ibv_create_cq(self.ctx, cqe, null_mut(), channel, 0) };
        assert!(!cq.is_null());
        cq
    }

    fn qp(&self, cq: *mut IbvCq, max_send_wr: u32) -> *mut IbvQp {
        let mut a = IbvQpInitAttr {
            qp_context: null_mut(),
            send_cq: cq,
            recv_cq: cq,
            srq: null_mut(),
            cap: IbvQpCap {
                max_send_wr,
                max_recv_wr: 1,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: 0,
            },
            qp_type: IBV_QPT_RC,
            sq_sig_all: 0,
        };
        // SAFETY: a live PD and CQ.
        let qp = unsafe { ibv_create_qp(self.pd, &mut a) };
        assert!(!qp.is_null());
        qp
    }

    /// RESET→INIT→RTR→RTS towards `dest`.
    fn connect(&self, qp: *mut IbvQp, dest: *mut IbvQp) {
        // SAFETY: live QPs; attribute structs of the header's layout.
        unsafe {
            let mut a = IbvQpAttr {
                qp_state: IBV_QPS_INIT,
                port_num: 1,
                qp_access_flags: (IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE) as u32,
                ..IbvQpAttr::default()
            };
            let m = IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS;
            assert_eq!(ibv_modify_qp(qp, &mut a, m), 0);
            let mut a = IbvQpAttr {
                qp_state: IBV_QPS_RTR,
                path_mtu: IBV_MTU_1024,
                dest_qp_num: (*dest).qp_num,
                ah_attr: IbvAhAttr {
                    grh: IbvGlobalRoute {
                        dgid: self.gid,
                        ..IbvGlobalRoute::default()
                    },
                    is_global: 1,
                    port_num: 1,
                    ..IbvAhAttr::default()
                },
                ..IbvQpAttr::default()
            };
            let m = IBV_QP_STATE
                | IBV_QP_AV
                | IBV_QP_PATH_MTU
                | IBV_QP_DEST_QPN
                | IBV_QP_RQ_PSN
                | IBV_QP_MAX_DEST_RD_ATOMIC
                | IBV_QP_MIN_RNR_TIMER;
            assert_eq!(ibv_modify_qp(qp, &mut a, m), 0);
            let mut a = IbvQpAttr {
                qp_state: IBV_QPS_RTS,
                ..IbvQpAttr::default()
            };
            let m = IBV_QP_STATE
                | IBV_QP_SQ_PSN
                | IBV_QP_TIMEOUT
                | IBV_QP_RETRY_CNT
                | IBV_QP_RNR_RETRY
                | IBV_QP_MAX_QP_RD_ATOMIC;
            assert_eq!(ibv_modify_qp(qp, &mut a, m), 0);
            assert_eq!((*qp).state, IBV_QPS_RTS);
        }
    }

    /// `n` chained signaled RDMA writes of 64 bytes within the buffer.
    fn writes(&self, n: usize, sges: &mut Vec<IbvSge>) -> Vec<IbvSendWr> {
        // SAFETY: a live MR.
        let (lkey, rkey) = unsafe { ((*self.mr).lkey, (*self.mr).rkey) };
        let base = self.buf.as_ptr() as u64;
        sges.clear();
        for i in 0..n as u64 {
            sges.push(IbvSge {
                addr: base + i * 64,
                length: 64,
                lkey,
            });
        }
        let sge_base = sges.as_mut_ptr();
        let mut wrs: Vec<IbvSendWr> = (0..n)
            .map(|i| {
                // SAFETY: all-zero is a valid send WR.
                let mut w: IbvSendWr = unsafe { std::mem::zeroed() };
                w.wr_id = i as u64;
                // SAFETY: i < n = sges.len(), which is not touched again while the WRs live.
                w.sg_list = unsafe { sge_base.add(i) };
                w.num_sge = 1;
                w.opcode = IBV_WR_RDMA_WRITE;
                w.send_flags = IBV_SEND_SIGNALED;
                w.remote_addr = base + 32768 + i as u64 * 64;
                w.rkey = rkey;
                w
            })
            .collect();
        let wr_base = wrs.as_mut_ptr();
        for i in 1..n {
            // SAFETY: i - 1 and i are below n = wrs.len().
            unsafe { (*wr_base.add(i - 1)).next = wr_base.add(i) };
        }
        wrs
    }
}

/// Calls `ops.post_send` as verbs.h's inline `ibv_post_send` does.
///
/// # Safety
/// `qp` is live; `wr` a valid chain.
unsafe fn post(qp: *mut IbvQp, wr: *mut IbvSendWr, bad: &mut *mut IbvSendWr) -> i32 {
    // SAFETY: the caller's contract; the fake fills the slot.
    unsafe { ((*(*qp).context).ops.post_send.expect("post_send slot"))(qp, wr, bad) }
}

/// Polls `cq` as verbs.h's inline `ibv_poll_cq` does.
fn poll(cq: *mut IbvCq, out: &mut [IbvWc]) -> i32 {
    // SAFETY: a live CQ of a live context; `out` has room for its length.
    unsafe { ((*(*cq).context).ops.poll_cq.expect("poll_cq slot"))(cq, out.len() as i32, out.as_mut_ptr()) }
}

/// Polls until `n` completions arrived (or 30 s passed).
fn poll_n(cq: *mut IbvCq, n: usize) -> Vec<IbvWc> {
    let end = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    let mut wc = [IbvWc::default(); 16];
    while got.len() < n {
        assert!(Instant::now() < end, "only {} of {n} completions", got.len());
        let k = poll(cq, &mut wc);
        assert!(k >= 0, "poll_cq {k}");
        got.extend_from_slice(&wc[..k as usize]);
        std::thread::yield_now();
    }
    got
}

#[test]
fn modify_qp_requires_the_kernel_s_attribute_masks() {
    let (_g, r) = rig();
    let cq = r.cq(16, null_mut());
    let qp = r.qp(cq, 4);
    // SAFETY: a live QP; attribute structs of the header's layout.
    unsafe {
        let mut a = IbvQpAttr {
            qp_state: IBV_QPS_RTR,
            ..IbvQpAttr::default()
        };
        assert_eq!(
            ibv_modify_qp(qp, &mut a, IBV_QP_STATE),
            libc::EINVAL,
            "RESET to RTR"
        );
        a.qp_state = IBV_QPS_INIT;
        a.port_num = 1;
        let no_port = IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_ACCESS_FLAGS;
        assert_eq!(
            ibv_modify_qp(qp, &mut a, no_port),
            libc::EINVAL,
            "INIT without the port"
        );
        assert_eq!(ibv_modify_qp(qp, &mut a, no_port | IBV_QP_PORT), 0);
        assert_eq!((*qp).state, IBV_QPS_INIT);
        let mut rtr = IbvQpAttr {
            qp_state: IBV_QPS_RTR,
            path_mtu: IBV_MTU_1024,
            dest_qp_num: (*qp).qp_num,
            ..IbvQpAttr::default()
        };
        let m = IBV_QP_STATE
            | IBV_QP_AV
            | IBV_QP_PATH_MTU
            | IBV_QP_DEST_QPN
            | IBV_QP_RQ_PSN
            | IBV_QP_MAX_DEST_RD_ATOMIC
            | IBV_QP_MIN_RNR_TIMER;
        assert_eq!(ibv_modify_qp(qp, &mut rtr, m), libc::EINVAL, "RoCE needs a GRH");
        rtr.ah_attr.is_global = 1;
        rtr.ah_attr.port_num = 1;
        rtr.path_mtu = IBV_MTU_4096;
        assert_eq!(
            ibv_modify_qp(qp, &mut rtr, m),
            libc::EINVAL,
            "MTU above the port's"
        );
        rtr.path_mtu = IBV_MTU_1024;
        assert_eq!(ibv_modify_qp(qp, &mut rtr, m), 0);
        let mut q = IbvQpAttr::default();
        // SAFETY: all-zero is a valid init-attr struct.
        let mut ia: IbvQpInitAttr = std::mem::zeroed();
        assert_eq!(ibv_query_qp(qp, &mut q, IBV_QP_STATE, &mut ia), 0);
        assert_eq!(
            (q.qp_state, q.dest_qp_num, ia.cap.max_send_wr),
            (IBV_QPS_RTR, (*qp).qp_num, 4)
        );
        assert_eq!(ibv_destroy_qp(qp), 0);
        assert_eq!(ibv_destroy_cq(cq), 0);
    }
}

#[test]
fn post_send_refuses_outside_rts_and_past_max_send_wr_and_sets_bad_wr() {
    let (_g, r) = rig();
    let cq = r.cq(64, null_mut());
    let (a, b) = (r.qp(cq, 2), r.qp(cq, 2));
    let mut sges = Vec::new();
    let mut wrs = r.writes(3, &mut sges);
    let mut bad: *mut IbvSendWr = null_mut();
    // SAFETY: live QPs and a valid chain.
    unsafe {
        assert_eq!(post(a, wrs.as_mut_ptr(), &mut bad), libc::EINVAL, "RESET");
        assert!(std::ptr::eq(bad, &wrs[0]));
        r.connect(a, b);
        r.connect(b, a);
        // Two slots: the third WR of the chain is refused, the first two go.
        bad = null_mut();
        assert_eq!(post(a, wrs.as_mut_ptr(), &mut bad), libc::ENOMEM);
        assert!(std::ptr::eq(bad, &wrs[2]));
        let got = poll_n(cq, 2);
        assert!(got
            .iter()
            .all(|w| w.status == IBV_WC_SUCCESS && w.opcode == IBV_WC_RDMA_WRITE && w.byte_len == 64));
        // Polling freed the slots; an unsupported opcode is refused.
        wrs[0].next = null_mut();
        wrs[0].opcode = 2; // IBV_WR_SEND
        assert_eq!(post(a, wrs.as_mut_ptr(), &mut bad), libc::EINVAL);
        wrs[0].opcode = IBV_WR_RDMA_WRITE;
        assert_eq!(post(a, wrs.as_mut_ptr(), &mut bad), 0);
        assert_eq!(poll_n(cq, 1)[0].status, IBV_WC_SUCCESS);
        // In ERR, posts are accepted and flushed.
        let mut e = IbvQpAttr {
            qp_state: IBV_QPS_ERR,
            ..IbvQpAttr::default()
        };
        assert_eq!(ibv_modify_qp(a, &mut e, IBV_QP_STATE), 0);
        assert_eq!(post(a, wrs.as_mut_ptr(), &mut bad), 0);
        assert_eq!(poll_n(cq, 1)[0].status, IBV_WC_WR_FLUSH_ERR);
        assert_eq!(ibv_destroy_cq(cq), libc::EBUSY, "QPs still use it");
        assert_eq!(ibv_destroy_qp(a), 0);
        assert_eq!(ibv_destroy_qp(b), 0);
        assert_eq!(ibv_destroy_cq(cq), 0);
    }
}

#[test]
fn a_cq_overrun_loses_the_entry_breaks_the_cq_and_errors_the_qp() {
    let (_g, r) = rig();
    let small = r.cq(2, null_mut());
    let other = r.cq(16, null_mut());
    let (a, b) = (r.qp(small, 8), r.qp(other, 8));
    r.connect(a, b);
    r.connect(b, a);
    let before = cq::OVERRUNS.load(Ordering::Relaxed);
    let mut sges = Vec::new();
    let mut wrs = r.writes(3, &mut sges);
    let mut bad = null_mut();
    // SAFETY: a live QP and a valid chain.
    assert_eq!(unsafe { post(a, wrs.as_mut_ptr(), &mut bad) }, 0);
    let end = Instant::now() + Duration::from_secs(30);
    while cq::OVERRUNS.load(Ordering::Relaxed) == before {
        assert!(
            Instant::now() < end,
            "three completions never overran a CQ of two"
        );
        std::thread::yield_now();
    }
    let mut wc = [IbvWc::default(); 4];
    assert_eq!(poll(small, &mut wc), -libc::EOVERFLOW);
    let mut q = IbvQpAttr::default();
    // SAFETY: all-zero is a valid init-attr struct; a live QP.
    let rc = unsafe {
        let mut ia: IbvQpInitAttr = std::mem::zeroed();
        ibv_query_qp(a, &mut q, IBV_QP_STATE, &mut ia)
    };
    assert_eq!((rc, q.qp_state), (0, IBV_QPS_ERR));
}

#[test]
fn the_channel_names_the_cq_and_destroy_waits_for_the_ack() {
    let (_g, r) = rig();
    // SAFETY: a live context.
    let ch = unsafe { ibv_create_comp_channel(r.ctx) };
    assert!(!ch.is_null());
    let cq = r.cq(8, ch);
    let (a, b) = (r.qp(cq, 4), r.qp(cq, 4));
    r.connect(a, b);
    r.connect(b, a);
    // SAFETY: live objects and a valid chain; the channel fd blocks until the event.
    unsafe {
        assert_eq!(((*(*cq).context).ops.req_notify_cq.expect("slot"))(cq, 0), 0);
        let mut sges = Vec::new();
        let mut wrs = r.writes(1, &mut sges);
        let mut bad = null_mut();
        assert_eq!(post(a, wrs.as_mut_ptr(), &mut bad), 0);
        let mut got: *mut IbvCq = null_mut();
        let mut ctx: *mut c_void = null_mut();
        assert_eq!(ibv_get_cq_event(ch, &mut got, &mut ctx), 0);
        assert_eq!(got, cq);
        assert_eq!(poll_n(cq, 1)[0].status, IBV_WC_SUCCESS);
        assert_eq!(ibv_destroy_qp(a), 0);
        assert_eq!(ibv_destroy_qp(b), 0);
        assert_eq!(ibv_destroy_cq(cq), libc::EBUSY, "an event is not acknowledged");
        ibv_ack_cq_events(cq, 1);
        assert_eq!((*cq).comp_events_completed, 1);
        assert_eq!(ibv_destroy_comp_channel(ch), libc::EBUSY, "the CQ still uses it");
        assert_eq!(ibv_destroy_cq(cq), 0);
        assert_eq!(ibv_destroy_comp_channel(ch), 0);
        assert_eq!(ibv_dereg_mr(r.mr), 0);
        assert_eq!(ibv_dealloc_pd(r.pd), 0);
        assert_eq!(ibv_close_device(r.ctx), 0);
    }
}
