//! The structures and numbers of rdma-core's `libibverbs/verbs.h` that the fake hands out or
//! reads. Those te-driver-rdma reads too are its own (`te_driver_rdma::abi`, offsets asserted
//! there): one layout for both sides, checked once against the header. Here are only what the
//! driver never touches (`struct ibv_device`, the numbers only the fake's NIC uses), with their
//! offsets asserted below.

use std::ffi::{c_char, c_int, c_uint, c_void};

pub use te_driver_rdma::abi::*;

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

/// `IBV_MTU_1024`.
pub const IBV_MTU_1024: c_int = 3;
/// `IBV_MTU_4096`.
pub const IBV_MTU_4096: c_int = 5;
/// `IBV_NODE_CA` (`enum ibv_node_type`).
pub const IBV_NODE_CA: c_int = 1;
/// `IBV_TRANSPORT_IB` (`enum ibv_transport_type`).
pub const IBV_TRANSPORT_IB: c_int = 0;
/// `IBV_ACCESS_REMOTE_ATOMIC`.
pub const IBV_ACCESS_REMOTE_ATOMIC: c_int = 1 << 3;
/// `IBV_QPS_RESET`.
pub const IBV_QPS_RESET: c_int = 0;
/// `IBV_QPS_ERR`.
pub const IBV_QPS_ERR: c_int = 6;
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

    /// `struct ibv_device` on LP64, as docs/RDMA.md lists it.
    #[test]
    fn the_device_layout_matches_verbs_h() {
        assert_eq!(offset_of!(IbvDevice, node_type), 16);
        assert_eq!(offset_of!(IbvDevice, name), 24);
        assert_eq!(offset_of!(IbvDevice, dev_name), 88);
        assert_eq!(offset_of!(IbvDevice, dev_path), 152);
        assert_eq!(offset_of!(IbvDevice, ibdev_path), 408);
        assert_eq!(size_of::<IbvDevice>(), 664);
    }
}
