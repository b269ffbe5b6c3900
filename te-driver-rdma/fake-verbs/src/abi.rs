//! The structures and numbers of rdma-core's `libibverbs/verbs.h` that the fake hands out or
//! reads, laid out field for field as the header declares them (x86-64 / aarch64 LP64).
//! The offsets are asserted in the tests at the end of this file.

use std::ffi::{c_char, c_int, c_uint, c_void};

/// `union ibv_gid`: 16 raw bytes (aligned 8: the union's other member is two `__be64`).
#[repr(C, align(8))]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct IbvGid {
    /// The GID in network byte order.
    pub raw: [u8; 16],
}

/// `struct _ibv_device_ops`: obsolete, never used.
#[repr(C)]
pub struct IbvDeviceOps {
    /// `_dummy1`.
    pub dummy1: *mut c_void,
    /// `_dummy2`.
    pub dummy2: *mut c_void,
}

/// `struct ibv_device`.
#[repr(C)]
pub struct IbvDevice {
    /// `_ops`.
    pub ops: IbvDeviceOps,
    /// `enum ibv_node_type node_type`.
    pub node_type: c_int,
    /// `enum ibv_transport_type transport_type`.
    pub transport_type: c_int,
    /// `char name[IBV_SYSFS_NAME_MAX]`.
    pub name: [c_char; 64],
    /// `char dev_name[IBV_SYSFS_NAME_MAX]`.
    pub dev_name: [c_char; 64],
    /// `char dev_path[IBV_SYSFS_PATH_MAX]`.
    pub dev_path: [c_char; 256],
    /// `char ibdev_path[IBV_SYSFS_PATH_MAX]`.
    pub ibdev_path: [c_char; 256],
}

/// An ops-table slot the fake leaves empty (the `_compat_*` entries and the verbs it lacks).
pub type Slot = *mut c_void;

/// `ibv_context_ops.poll_cq`.
pub type PollCqFn = unsafe extern "C" fn(*mut IbvCq, c_int, *mut IbvWc) -> c_int;
/// `ibv_context_ops.req_notify_cq`.
pub type ReqNotifyCqFn = unsafe extern "C" fn(*mut IbvCq, c_int) -> c_int;
/// `ibv_context_ops.post_send`.
pub type PostSendFn = unsafe extern "C" fn(*mut IbvQp, *mut IbvSendWr, *mut *mut IbvSendWr) -> c_int;
/// `ibv_context_ops.post_recv` (and `post_srq_recv`: same shape, other first argument).
pub type PostRecvFn = unsafe extern "C" fn(*mut c_void, *mut c_void, *mut *mut c_void) -> c_int;

/// `struct ibv_context_ops`: 32 pointers; the header's inline `ibv_poll_cq`,
/// `ibv_req_notify_cq` and `ibv_post_send` call through slots 11, 12 and 25.
#[repr(C)]
pub struct IbvContextOps {
    /// Slots 0..=10: `_compat_query_device` .. `_compat_create_cq`.
    pub before_poll_cq: [Slot; 11],
    /// Slot 11.
    pub poll_cq: Option<PollCqFn>,
    /// Slot 12.
    pub req_notify_cq: Option<ReqNotifyCqFn>,
    /// Slots 13..=19: `_compat_cq_event` .. `_compat_destroy_srq`.
    pub before_post_srq_recv: [Slot; 7],
    /// Slot 20.
    pub post_srq_recv: Option<PostRecvFn>,
    /// Slots 21..=24: `_compat_create_qp` .. `_compat_destroy_qp`.
    pub before_post_send: [Slot; 4],
    /// Slot 25.
    pub post_send: Option<PostSendFn>,
    /// Slot 26.
    pub post_recv: Option<PostRecvFn>,
    /// Slots 27..=31: `_compat_create_ah` .. `_compat_async_event`.
    pub after_post_recv: [Slot; 5],
}

/// `struct ibv_context`.
#[repr(C)]
pub struct IbvContext {
    /// `struct ibv_device *device`.
    pub device: *mut IbvDevice,
    /// `struct ibv_context_ops ops`.
    pub ops: IbvContextOps,
    /// `int cmd_fd`.
    pub cmd_fd: c_int,
    /// `int async_fd`.
    pub async_fd: c_int,
    /// `int num_comp_vectors`.
    pub num_comp_vectors: c_int,
    /// `pthread_mutex_t mutex`.
    pub mutex: libc::pthread_mutex_t,
    /// `void *abi_compat` (null: not a `verbs_context`, so the header's inline wrappers use
    /// the exported functions).
    pub abi_compat: *mut c_void,
}

/// `struct ibv_device_attr` (the fields the fake fills are named; the rest are kept in
/// `rest` at their offsets).
#[repr(C)]
pub struct IbvDeviceAttr {
    /// `char fw_ver[64]`.
    pub fw_ver: [c_char; 64],
    /// `__be64 node_guid`.
    pub node_guid: u64,
    /// `__be64 sys_image_guid`.
    pub sys_image_guid: u64,
    /// `uint64_t max_mr_size`.
    pub max_mr_size: u64,
    /// `uint64_t page_size_cap`.
    pub page_size_cap: u64,
    /// `vendor_id`, `vendor_part_id`, `hw_ver`.
    pub vendor: [u32; 3],
    /// `int max_qp`.
    pub max_qp: c_int,
    /// `int max_qp_wr`.
    pub max_qp_wr: c_int,
    /// `unsigned int device_cap_flags`.
    pub device_cap_flags: c_uint,
    /// `int max_sge`.
    pub max_sge: c_int,
    /// `int max_sge_rd`.
    pub max_sge_rd: c_int,
    /// `int max_cq`.
    pub max_cq: c_int,
    /// `int max_cqe`.
    pub max_cqe: c_int,
    /// `int max_mr`.
    pub max_mr: c_int,
    /// `int max_pd`.
    pub max_pd: c_int,
    /// `int max_qp_rd_atom`.
    pub max_qp_rd_atom: c_int,
    /// `max_ee_rd_atom` .. `max_srq_sge`: 19 ints.
    pub rest: [c_int; 19],
    /// `uint16_t max_pkeys`.
    pub max_pkeys: u16,
    /// `uint8_t local_ca_ack_delay`.
    pub local_ca_ack_delay: u8,
    /// `uint8_t phys_port_cnt`.
    pub phys_port_cnt: u8,
}

/// `struct _compat_ibv_port_attr` (verbs.c): what the exported `ibv_query_port` fills, the
/// first 48 bytes of `struct ibv_port_attr`.
#[repr(C)]
pub struct IbvPortAttr {
    /// `enum ibv_port_state state`.
    pub state: c_int,
    /// `enum ibv_mtu max_mtu`.
    pub max_mtu: c_int,
    /// `enum ibv_mtu active_mtu`.
    pub active_mtu: c_int,
    /// `int gid_tbl_len`.
    pub gid_tbl_len: c_int,
    /// `uint32_t port_cap_flags`.
    pub port_cap_flags: u32,
    /// `uint32_t max_msg_sz`.
    pub max_msg_sz: u32,
    /// `bad_pkey_cntr`, `qkey_viol_cntr`.
    pub counters: [u32; 2],
    /// `uint16_t pkey_tbl_len`.
    pub pkey_tbl_len: u16,
    /// `uint16_t lid`.
    pub lid: u16,
    /// `uint16_t sm_lid`.
    pub sm_lid: u16,
    /// `lmc`, `max_vl_num`, `sm_sl`, `subnet_timeout`, `init_type_reply`, `active_width`,
    /// `active_speed`, `phys_state`.
    pub misc: [u8; 8],
    /// `uint8_t link_layer`.
    pub link_layer: u8,
    /// `uint8_t flags`.
    pub flags: u8,
}

/// `struct ibv_pd`.
#[repr(C)]
pub struct IbvPd {
    /// `struct ibv_context *context`.
    pub context: *mut IbvContext,
    /// `uint32_t handle`.
    pub handle: u32,
}

/// `struct ibv_mr`.
#[repr(C)]
pub struct IbvMr {
    /// `struct ibv_context *context`.
    pub context: *mut IbvContext,
    /// `struct ibv_pd *pd`.
    pub pd: *mut IbvPd,
    /// `void *addr`.
    pub addr: *mut c_void,
    /// `size_t length`.
    pub length: usize,
    /// `uint32_t handle`.
    pub handle: u32,
    /// `uint32_t lkey`.
    pub lkey: u32,
    /// `uint32_t rkey`.
    pub rkey: u32,
}

/// `struct ibv_comp_channel`.
#[repr(C)]
pub struct IbvCompChannel {
    /// `struct ibv_context *context`.
    pub context: *mut IbvContext,
    /// `int fd`.
    pub fd: c_int,
    /// `int refcnt`.
    pub refcnt: c_int,
}

/// `struct ibv_cq`.
#[repr(C)]
pub struct IbvCq {
    /// `struct ibv_context *context`.
    pub context: *mut IbvContext,
    /// `struct ibv_comp_channel *channel`.
    pub channel: *mut IbvCompChannel,
    /// `void *cq_context`.
    pub cq_context: *mut c_void,
    /// `uint32_t handle`.
    pub handle: u32,
    /// `int cqe`.
    pub cqe: c_int,
    /// `pthread_mutex_t mutex`.
    pub mutex: libc::pthread_mutex_t,
    /// `pthread_cond_t cond`.
    pub cond: libc::pthread_cond_t,
    /// `uint32_t comp_events_completed`.
    pub comp_events_completed: u32,
    /// `uint32_t async_events_completed`.
    pub async_events_completed: u32,
}

/// `struct ibv_qp_cap`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct IbvQpCap {
    /// `uint32_t max_send_wr`.
    pub max_send_wr: u32,
    /// `uint32_t max_recv_wr`.
    pub max_recv_wr: u32,
    /// `uint32_t max_send_sge`.
    pub max_send_sge: u32,
    /// `uint32_t max_recv_sge`.
    pub max_recv_sge: u32,
    /// `uint32_t max_inline_data`.
    pub max_inline_data: u32,
}

/// `struct ibv_qp_init_attr`.
#[repr(C)]
pub struct IbvQpInitAttr {
    /// `void *qp_context`.
    pub qp_context: *mut c_void,
    /// `struct ibv_cq *send_cq`.
    pub send_cq: *mut IbvCq,
    /// `struct ibv_cq *recv_cq`.
    pub recv_cq: *mut IbvCq,
    /// `struct ibv_srq *srq`.
    pub srq: *mut c_void,
    /// `struct ibv_qp_cap cap`.
    pub cap: IbvQpCap,
    /// `enum ibv_qp_type qp_type`.
    pub qp_type: c_int,
    /// `int sq_sig_all`.
    pub sq_sig_all: c_int,
}

/// `struct ibv_qp`.
#[repr(C)]
pub struct IbvQp {
    /// `struct ibv_context *context`.
    pub context: *mut IbvContext,
    /// `void *qp_context`.
    pub qp_context: *mut c_void,
    /// `struct ibv_pd *pd`.
    pub pd: *mut IbvPd,
    /// `struct ibv_cq *send_cq`.
    pub send_cq: *mut IbvCq,
    /// `struct ibv_cq *recv_cq`.
    pub recv_cq: *mut IbvCq,
    /// `struct ibv_srq *srq`.
    pub srq: *mut c_void,
    /// `uint32_t handle`.
    pub handle: u32,
    /// `uint32_t qp_num`.
    pub qp_num: u32,
    /// `enum ibv_qp_state state`.
    pub state: c_int,
    /// `enum ibv_qp_type qp_type`.
    pub qp_type: c_int,
    /// `pthread_mutex_t mutex`.
    pub mutex: libc::pthread_mutex_t,
    /// `pthread_cond_t cond`.
    pub cond: libc::pthread_cond_t,
    /// `uint32_t events_completed`.
    pub events_completed: u32,
}

/// `struct ibv_global_route`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct IbvGlobalRoute {
    /// `union ibv_gid dgid`.
    pub dgid: IbvGid,
    /// `uint32_t flow_label`.
    pub flow_label: u32,
    /// `uint8_t sgid_index`.
    pub sgid_index: u8,
    /// `uint8_t hop_limit`.
    pub hop_limit: u8,
    /// `uint8_t traffic_class`.
    pub traffic_class: u8,
}

/// `struct ibv_ah_attr`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct IbvAhAttr {
    /// `struct ibv_global_route grh`.
    pub grh: IbvGlobalRoute,
    /// `uint16_t dlid`.
    pub dlid: u16,
    /// `uint8_t sl`.
    pub sl: u8,
    /// `uint8_t src_path_bits`.
    pub src_path_bits: u8,
    /// `uint8_t static_rate`.
    pub static_rate: u8,
    /// `uint8_t is_global`.
    pub is_global: u8,
    /// `uint8_t port_num`.
    pub port_num: u8,
}

/// `struct ibv_qp_attr`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct IbvQpAttr {
    /// `enum ibv_qp_state qp_state`.
    pub qp_state: c_int,
    /// `enum ibv_qp_state cur_qp_state`.
    pub cur_qp_state: c_int,
    /// `enum ibv_mtu path_mtu`.
    pub path_mtu: c_int,
    /// `enum ibv_mig_state path_mig_state`.
    pub path_mig_state: c_int,
    /// `uint32_t qkey`.
    pub qkey: u32,
    /// `uint32_t rq_psn`.
    pub rq_psn: u32,
    /// `uint32_t sq_psn`.
    pub sq_psn: u32,
    /// `uint32_t dest_qp_num`.
    pub dest_qp_num: u32,
    /// `unsigned int qp_access_flags`.
    pub qp_access_flags: c_uint,
    /// `struct ibv_qp_cap cap`.
    pub cap: IbvQpCap,
    /// `struct ibv_ah_attr ah_attr`.
    pub ah_attr: IbvAhAttr,
    /// `struct ibv_ah_attr alt_ah_attr`.
    pub alt_ah_attr: IbvAhAttr,
    /// `uint16_t pkey_index`.
    pub pkey_index: u16,
    /// `uint16_t alt_pkey_index`.
    pub alt_pkey_index: u16,
    /// `uint8_t en_sqd_async_notify`.
    pub en_sqd_async_notify: u8,
    /// `uint8_t sq_draining`.
    pub sq_draining: u8,
    /// `uint8_t max_rd_atomic`.
    pub max_rd_atomic: u8,
    /// `uint8_t max_dest_rd_atomic`.
    pub max_dest_rd_atomic: u8,
    /// `uint8_t min_rnr_timer`.
    pub min_rnr_timer: u8,
    /// `uint8_t port_num`.
    pub port_num: u8,
    /// `uint8_t timeout`.
    pub timeout: u8,
    /// `uint8_t retry_cnt`.
    pub retry_cnt: u8,
    /// `uint8_t rnr_retry`.
    pub rnr_retry: u8,
    /// `uint8_t alt_port_num`.
    pub alt_port_num: u8,
    /// `uint8_t alt_timeout`.
    pub alt_timeout: u8,
    /// `uint32_t rate_limit`.
    pub rate_limit: u32,
}

/// `struct ibv_sge`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IbvSge {
    /// `uint64_t addr`.
    pub addr: u64,
    /// `uint32_t length`.
    pub length: u32,
    /// `uint32_t lkey`.
    pub lkey: u32,
}

/// `struct ibv_send_wr` with the `wr` union seen as its `rdma` member (the other members
/// are kept as padding so the size and the later unions' offsets are the header's).
#[repr(C)]
pub struct IbvSendWr {
    /// `uint64_t wr_id`.
    pub wr_id: u64,
    /// `struct ibv_send_wr *next`.
    pub next: *mut IbvSendWr,
    /// `struct ibv_sge *sg_list`.
    pub sg_list: *mut IbvSge,
    /// `int num_sge`.
    pub num_sge: c_int,
    /// `enum ibv_wr_opcode opcode`.
    pub opcode: c_int,
    /// `unsigned int send_flags`.
    pub send_flags: c_uint,
    /// `imm_data` / `invalidate_rkey`.
    pub imm_data: u32,
    /// `wr.rdma.remote_addr`.
    pub remote_addr: u64,
    /// `wr.rdma.rkey`.
    pub rkey: u32,
    /// The rest of the 32-byte `wr` union (`wr.atomic` is the largest member).
    pub wr_rest: [u32; 5],
    /// `qp_type.xrc.remote_srqn` (and padding to the next union's alignment).
    pub qp_type: [u32; 2],
    /// The 48-byte `bind_mw` / `tso` union.
    pub bind_mw: [u64; 6],
}

/// `struct ibv_wc`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct IbvWc {
    /// `uint64_t wr_id`.
    pub wr_id: u64,
    /// `enum ibv_wc_status status`.
    pub status: c_int,
    /// `enum ibv_wc_opcode opcode`.
    pub opcode: c_int,
    /// `uint32_t vendor_err`.
    pub vendor_err: u32,
    /// `uint32_t byte_len`.
    pub byte_len: u32,
    /// `imm_data` / `invalidated_rkey`.
    pub imm_data: u32,
    /// `uint32_t qp_num`.
    pub qp_num: u32,
    /// `uint32_t src_qp`.
    pub src_qp: u32,
    /// `unsigned int wc_flags`.
    pub wc_flags: c_uint,
    /// `uint16_t pkey_index`.
    pub pkey_index: u16,
    /// `uint16_t slid`.
    pub slid: u16,
    /// `uint8_t sl`.
    pub sl: u8,
    /// `uint8_t dlid_path_bits`.
    pub dlid_path_bits: u8,
}

// enum ibv_node_type / ibv_transport_type
/// `IBV_NODE_CA`.
pub const IBV_NODE_CA: c_int = 1;
/// `IBV_TRANSPORT_IB`.
pub const IBV_TRANSPORT_IB: c_int = 0;

// enum ibv_port_state, ibv_mtu, link layer
/// `IBV_PORT_ACTIVE`.
pub const IBV_PORT_ACTIVE: c_int = 4;
/// `IBV_MTU_1024`.
pub const IBV_MTU_1024: c_int = 3;
/// `IBV_MTU_4096`.
pub const IBV_MTU_4096: c_int = 5;
/// `IBV_LINK_LAYER_ETHERNET` (RoCE: GIDs address ports, LIDs are 0).
pub const IBV_LINK_LAYER_ETHERNET: u8 = 2;

// enum ibv_access_flags
/// `IBV_ACCESS_LOCAL_WRITE`.
pub const IBV_ACCESS_LOCAL_WRITE: c_int = 1;
/// `IBV_ACCESS_REMOTE_WRITE`.
pub const IBV_ACCESS_REMOTE_WRITE: c_int = 1 << 1;
/// `IBV_ACCESS_REMOTE_READ`.
pub const IBV_ACCESS_REMOTE_READ: c_int = 1 << 2;
/// `IBV_ACCESS_REMOTE_ATOMIC`.
pub const IBV_ACCESS_REMOTE_ATOMIC: c_int = 1 << 3;

// enum ibv_qp_type
/// `IBV_QPT_RC`.
pub const IBV_QPT_RC: c_int = 2;

// enum ibv_qp_state
/// `IBV_QPS_RESET`.
pub const IBV_QPS_RESET: c_int = 0;
/// `IBV_QPS_INIT`.
pub const IBV_QPS_INIT: c_int = 1;
/// `IBV_QPS_RTR`.
pub const IBV_QPS_RTR: c_int = 2;
/// `IBV_QPS_RTS`.
pub const IBV_QPS_RTS: c_int = 3;
/// `IBV_QPS_ERR`.
pub const IBV_QPS_ERR: c_int = 6;

// enum ibv_qp_attr_mask
/// `IBV_QP_STATE`.
pub const IBV_QP_STATE: c_int = 1 << 0;
/// `IBV_QP_ACCESS_FLAGS`.
pub const IBV_QP_ACCESS_FLAGS: c_int = 1 << 3;
/// `IBV_QP_PKEY_INDEX`.
pub const IBV_QP_PKEY_INDEX: c_int = 1 << 4;
/// `IBV_QP_PORT`.
pub const IBV_QP_PORT: c_int = 1 << 5;
/// `IBV_QP_AV`.
pub const IBV_QP_AV: c_int = 1 << 7;
/// `IBV_QP_PATH_MTU`.
pub const IBV_QP_PATH_MTU: c_int = 1 << 8;
/// `IBV_QP_TIMEOUT`.
pub const IBV_QP_TIMEOUT: c_int = 1 << 9;
/// `IBV_QP_RETRY_CNT`.
pub const IBV_QP_RETRY_CNT: c_int = 1 << 10;
/// `IBV_QP_RNR_RETRY`.
pub const IBV_QP_RNR_RETRY: c_int = 1 << 11;
/// `IBV_QP_RQ_PSN`.
pub const IBV_QP_RQ_PSN: c_int = 1 << 12;
/// `IBV_QP_MAX_QP_RD_ATOMIC`.
pub const IBV_QP_MAX_QP_RD_ATOMIC: c_int = 1 << 13;
/// `IBV_QP_MIN_RNR_TIMER`.
pub const IBV_QP_MIN_RNR_TIMER: c_int = 1 << 15;
/// `IBV_QP_SQ_PSN`.
pub const IBV_QP_SQ_PSN: c_int = 1 << 16;
/// `IBV_QP_MAX_DEST_RD_ATOMIC`.
pub const IBV_QP_MAX_DEST_RD_ATOMIC: c_int = 1 << 17;
/// `IBV_QP_DEST_QPN`.
pub const IBV_QP_DEST_QPN: c_int = 1 << 20;

// enum ibv_wr_opcode
/// `IBV_WR_RDMA_WRITE`.
pub const IBV_WR_RDMA_WRITE: c_int = 0;
/// `IBV_WR_RDMA_READ`.
pub const IBV_WR_RDMA_READ: c_int = 4;

// enum ibv_send_flags
/// `IBV_SEND_SIGNALED`.
pub const IBV_SEND_SIGNALED: c_uint = 1 << 1;
/// `IBV_SEND_INLINE`.
pub const IBV_SEND_INLINE: c_uint = 1 << 3;

// enum ibv_wc_opcode
/// `IBV_WC_RDMA_WRITE`.
pub const IBV_WC_RDMA_WRITE: c_int = 1;
/// `IBV_WC_RDMA_READ`.
pub const IBV_WC_RDMA_READ: c_int = 2;

// enum ibv_wc_status
/// `IBV_WC_SUCCESS`.
pub const IBV_WC_SUCCESS: c_int = 0;
/// `IBV_WC_LOC_PROT_ERR`.
pub const IBV_WC_LOC_PROT_ERR: c_int = 4;
/// `IBV_WC_WR_FLUSH_ERR`.
pub const IBV_WC_WR_FLUSH_ERR: c_int = 5;
/// `IBV_WC_REM_ACCESS_ERR`.
pub const IBV_WC_REM_ACCESS_ERR: c_int = 10;
/// `IBV_WC_RETRY_EXC_ERR`.
pub const IBV_WC_RETRY_EXC_ERR: c_int = 12;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// The offsets of verbs.h on LP64 (glibc: 40-byte mutex, 48-byte cond), computed by hand
    /// from the header and listed in docs/RDMA.md.
    #[test]
    fn layouts_match_verbs_h() {
        assert_eq!(size_of::<IbvGid>(), 16);
        assert_eq!(offset_of!(IbvDevice, node_type), 16);
        assert_eq!(offset_of!(IbvDevice, name), 24);
        assert_eq!(offset_of!(IbvDevice, ibdev_path), 408);
        assert_eq!(size_of::<IbvDevice>(), 664);
        assert_eq!(size_of::<IbvContextOps>(), 32 * 8);
        assert_eq!(
            offset_of!(IbvContext, ops) + offset_of!(IbvContextOps, poll_cq),
            96
        );
        assert_eq!(
            offset_of!(IbvContext, ops) + offset_of!(IbvContextOps, req_notify_cq),
            104
        );
        assert_eq!(
            offset_of!(IbvContext, ops) + offset_of!(IbvContextOps, post_send),
            208
        );
        assert_eq!(offset_of!(IbvContext, cmd_fd), 264);
        assert_eq!(offset_of!(IbvContext, mutex), 280);
        assert_eq!(offset_of!(IbvContext, abi_compat), 320);
        assert_eq!(size_of::<IbvContext>(), 328);
        assert_eq!(offset_of!(IbvDeviceAttr, max_qp), 108);
        assert_eq!(offset_of!(IbvDeviceAttr, max_cqe), 132);
        assert_eq!(offset_of!(IbvDeviceAttr, max_pkeys), 224);
        assert_eq!(offset_of!(IbvDeviceAttr, phys_port_cnt), 227);
        assert_eq!(size_of::<IbvDeviceAttr>(), 232);
        assert_eq!(offset_of!(IbvPortAttr, lid), 34);
        assert_eq!(offset_of!(IbvPortAttr, link_layer), 46);
        assert_eq!(size_of::<IbvPortAttr>(), 48);
        assert_eq!(size_of::<IbvPd>(), 16);
        assert_eq!(offset_of!(IbvMr, lkey), 36);
        assert_eq!(offset_of!(IbvMr, rkey), 40);
        assert_eq!(size_of::<IbvMr>(), 48);
        assert_eq!(offset_of!(IbvCompChannel, fd), 8);
        assert_eq!(offset_of!(IbvCq, cqe), 28);
        assert_eq!(offset_of!(IbvCq, comp_events_completed), 120);
        assert_eq!(size_of::<IbvCq>(), 128);
        assert_eq!(offset_of!(IbvQpInitAttr, cap), 32);
        assert_eq!(offset_of!(IbvQpInitAttr, qp_type), 52);
        assert_eq!(size_of::<IbvQpInitAttr>(), 64);
        assert_eq!(offset_of!(IbvQp, qp_num), 52);
        assert_eq!(offset_of!(IbvQp, state), 56);
        assert_eq!(offset_of!(IbvQp, events_completed), 152);
        assert_eq!(size_of::<IbvQp>(), 160);
        assert_eq!(size_of::<IbvAhAttr>(), 32);
        assert_eq!(offset_of!(IbvQpAttr, dest_qp_num), 28);
        assert_eq!(offset_of!(IbvQpAttr, ah_attr), 56);
        assert_eq!(offset_of!(IbvQpAttr, pkey_index), 120);
        assert_eq!(offset_of!(IbvQpAttr, rate_limit), 136);
        assert_eq!(size_of::<IbvQpAttr>(), 144);
        assert_eq!(size_of::<IbvSge>(), 16);
        assert_eq!(offset_of!(IbvSendWr, opcode), 28);
        assert_eq!(offset_of!(IbvSendWr, remote_addr), 40);
        assert_eq!(offset_of!(IbvSendWr, rkey), 48);
        assert_eq!(offset_of!(IbvSendWr, qp_type), 72);
        assert_eq!(offset_of!(IbvSendWr, bind_mw), 80);
        assert_eq!(size_of::<IbvSendWr>(), 128);
        assert_eq!(offset_of!(IbvWc, status), 8);
        assert_eq!(offset_of!(IbvWc, byte_len), 20);
        assert_eq!(offset_of!(IbvWc, qp_num), 28);
        assert_eq!(offset_of!(IbvWc, sl), 44);
        assert_eq!(size_of::<IbvWc>(), 48);
        assert_eq!(offset_of!(IbvContextOps, post_recv), 208);
        assert_eq!(offset_of!(IbvContext, async_fd), 268);
        assert_eq!(offset_of!(IbvContext, num_comp_vectors), 272);
        assert_eq!(offset_of!(IbvDeviceAttr, max_qp_wr), 112);
        assert_eq!(offset_of!(IbvDeviceAttr, max_qp_rd_atom), 144);
        assert_eq!(offset_of!(IbvPortAttr, state), 0);
        assert_eq!(offset_of!(IbvPortAttr, active_mtu), 8);
        assert_eq!(offset_of!(IbvPortAttr, max_msg_sz), 20);
        assert_eq!(offset_of!(IbvMr, addr), 16);
        assert_eq!(offset_of!(IbvMr, length), 24);
        assert_eq!(offset_of!(IbvMr, handle), 32);
        assert_eq!(offset_of!(IbvCompChannel, refcnt), 12);
        assert_eq!(offset_of!(IbvCq, channel), 8);
        assert_eq!(offset_of!(IbvCq, cq_context), 16);
        assert_eq!(offset_of!(IbvQpInitAttr, send_cq), 8);
        assert_eq!(offset_of!(IbvQpInitAttr, recv_cq), 16);
        assert_eq!(offset_of!(IbvQpInitAttr, sq_sig_all), 56);
        assert_eq!(offset_of!(IbvQp, qp_type), 60);
        assert_eq!(offset_of!(IbvAhAttr, grh), 0);
        assert_eq!(offset_of!(IbvGlobalRoute, sgid_index), 20);
        assert_eq!(offset_of!(IbvAhAttr, dlid), 24);
        assert_eq!(offset_of!(IbvAhAttr, is_global), 29);
        assert_eq!(offset_of!(IbvAhAttr, port_num), 30);
        assert_eq!(offset_of!(IbvQpAttr, qp_access_flags), 32);
        assert_eq!(offset_of!(IbvQpAttr, cap), 36);
        assert_eq!(offset_of!(IbvQpAttr, port_num), 129);
        assert_eq!((offset_of!(IbvSge, length), offset_of!(IbvSge, lkey)), (8, 12));
        assert_eq!(offset_of!(IbvSendWr, next), 8);
        assert_eq!(offset_of!(IbvSendWr, sg_list), 16);
        assert_eq!(offset_of!(IbvSendWr, num_sge), 24);
        assert_eq!(offset_of!(IbvSendWr, send_flags), 32);
        assert_eq!(offset_of!(IbvWc, opcode), 12);
        assert_eq!(offset_of!(IbvWc, vendor_err), 16);
        assert_eq!(offset_of!(IbvWc, wc_flags), 36);
        assert_eq!(offset_of!(IbvDevice, dev_name), 88);
        assert_eq!(offset_of!(IbvDevice, dev_path), 152);
    }
}
