//! Reliable-connected queue pairs: creation and the RESET→INIT→RTR→RTS sequence that
//! connects one to the peer's [`ConnInfo`].

use std::ffi::c_int;

use crate::abi::*;
use crate::conn::ConnInfo;
use crate::device::DeviceInfo;
use crate::error::{last_errno, VerbsError};
use crate::library::Verbs;

/// Names a queue pair of one [`RdmaDriver`](crate::RdmaDriver).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QpId(pub u32);

/// Where a queue pair is in its life, as the driver sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QpState {
    /// Created, not connected (RESET).
    Idle,
    /// Connected (RTS): transfers may be submitted.
    Connected,
    /// A work request failed: the QP is in ERR, the rest of its work is flushed, and it takes
    /// no more. Its peer must be reconnected on a new QP pair.
    Failed(VerbsError),
}

/// The driver's record of one queue pair.
pub(crate) struct QpSlot {
    pub raw: *mut IbvQp,
    pub qpn: u32,
    pub psn: u32,
    pub state: QpState,
    /// Work requests posted whose completion has not been polled.
    pub outstanding: u32,
    /// Transfers waiting for send-queue slots, in order.
    pub waiting: std::collections::VecDeque<u64>,
}

/// Creates an RC queue pair on `pd` with `depth` send work requests, both queues completing
/// on `cq`.
pub(crate) fn create(
    verbs: &Verbs,
    pd: *mut IbvPd,
    cq: *mut IbvCq,
    depth: u32,
    dev: &str,
) -> Result<*mut IbvQp, VerbsError> {
    let mut attr = IbvQpInitAttr {
        qp_context: std::ptr::null_mut(),
        send_cq: cq,
        recv_cq: cq,
        srq: std::ptr::null_mut(),
        cap: IbvQpCap {
            max_send_wr: depth,
            max_recv_wr: 1,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 0,
        },
        qp_type: IBV_QPT_RC,
        sq_sig_all: 0,
    };
    // SAFETY: a live PD and CQ of one context; attr is a valid init struct the call may
    // update (granted capacities).
    let qp = unsafe { (verbs.ibv_create_qp)(pd, &mut attr) };
    if qp.is_null() {
        return Err(VerbsError::errno(
            "ibv_create_qp",
            format!("RC, {depth} send WRs on {dev}"),
            last_errno(),
        ));
    }
    Ok(qp)
}

fn modify(
    verbs: &Verbs,
    qp: *mut IbvQp,
    attr: &mut IbvQpAttr,
    mask: c_int,
    step: &str,
) -> Result<(), VerbsError> {
    // SAFETY: a live QP and an attribute struct of the header's layout.
    let rc = unsafe { (verbs.ibv_modify_qp)(qp, attr, mask) };
    if rc != 0 {
        return Err(VerbsError::errno(
            "ibv_modify_qp",
            step.to_string(),
            crate::error::rc_errno(rc),
        ));
    }
    Ok(())
}

/// Moves `qp` (in RESET) to RTS, connected to `remote`: the attribute masks rdma-core's
/// `ibv_modify_qp(3)` lists for RC.
pub(crate) fn connect(
    verbs: &Verbs,
    qp: *mut IbvQp,
    local_psn: u32,
    dev: &DeviceInfo,
    remote: &ConnInfo,
) -> Result<(), VerbsError> {
    let rd_atomic = dev.max_qp_rd_atom.clamp(1, 16);
    let mut a = IbvQpAttr {
        qp_state: IBV_QPS_INIT,
        pkey_index: 0,
        port_num: dev.port,
        qp_access_flags: (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE) as u32,
        ..IbvQpAttr::default()
    };
    modify(
        verbs,
        qp,
        &mut a,
        IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS,
        "RESET to INIT",
    )?;
    // Address the peer by GID on RoCE (and whenever it has no LID), else by LID.
    let global = dev.link_layer == IBV_LINK_LAYER_ETHERNET || remote.lid == 0;
    let mut a = IbvQpAttr {
        qp_state: IBV_QPS_RTR,
        path_mtu: i32::from(dev.mtu.min(remote.mtu)),
        dest_qp_num: remote.qpn,
        rq_psn: remote.psn,
        max_dest_rd_atomic: rd_atomic,
        min_rnr_timer: 12,
        ah_attr: IbvAhAttr {
            grh: IbvGlobalRoute {
                dgid: IbvGid { raw: remote.gid },
                flow_label: 0,
                sgid_index: dev.gid_index,
                hop_limit: 64,
                traffic_class: 0,
            },
            dlid: remote.lid,
            sl: 0,
            src_path_bits: 0,
            static_rate: 0,
            is_global: u8::from(global),
            port_num: dev.port,
        },
        ..IbvQpAttr::default()
    };
    modify(
        verbs,
        qp,
        &mut a,
        IBV_QP_STATE
            | IBV_QP_AV
            | IBV_QP_PATH_MTU
            | IBV_QP_DEST_QPN
            | IBV_QP_RQ_PSN
            | IBV_QP_MAX_DEST_RD_ATOMIC
            | IBV_QP_MIN_RNR_TIMER,
        "INIT to RTR",
    )?;
    let mut a = IbvQpAttr {
        qp_state: IBV_QPS_RTS,
        sq_psn: local_psn,
        timeout: 14,
        retry_cnt: 7,
        rnr_retry: 7,
        max_rd_atomic: rd_atomic,
        ..IbvQpAttr::default()
    };
    modify(
        verbs,
        qp,
        &mut a,
        IBV_QP_STATE
            | IBV_QP_SQ_PSN
            | IBV_QP_TIMEOUT
            | IBV_QP_RETRY_CNT
            | IBV_QP_RNR_RETRY
            | IBV_QP_MAX_QP_RD_ATOMIC,
        "RTR to RTS",
    )
}

/// The state `ibv_query_qp` reports (`enum ibv_qp_state`).
pub(crate) fn query_state(verbs: &Verbs, qp: *mut IbvQp) -> Result<i32, VerbsError> {
    let mut a = IbvQpAttr::default();
    // SAFETY: all-zero is a valid init-attr struct (null pointers, zero numbers).
    let mut ia: IbvQpInitAttr = unsafe { std::mem::zeroed() };
    // SAFETY: a live QP and writable structs of the header's layout.
    let rc = unsafe { (verbs.ibv_query_qp)(qp, &mut a, IBV_QP_STATE, &mut ia) };
    if rc != 0 {
        return Err(VerbsError::errno(
            "ibv_query_qp",
            "state",
            crate::error::rc_errno(rc),
        ));
    }
    Ok(a.qp_state)
}

/// A 24-bit starting PSN, different per QP and run.
pub(crate) fn fresh_psn(qpn: u32) -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut x = t ^ qpn.rotate_left(13) ^ 0x9e37_79b9;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    x & 0xff_ffff
}
