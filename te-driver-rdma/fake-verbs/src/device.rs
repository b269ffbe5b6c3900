//! The fake devices: how many there are, their `struct ibv_device`s, and their NICs.
//!
//! There are `TE_FAKE_VERBS_DEVICES` devices (0 to [`MAX_DEVICES`], default 0: an empty list,
//! like the real library on a machine without RDMA hardware), unless the control call
//! `te_fake_verbs_set_devices` said otherwise. They are named `fake_verbs0`, `fake_verbs1`, ...
//! Each `struct ibv_device` lives as long as the library; a device's NIC starts at its first
//! `ibv_open_device` and serves for the rest of the process.

use std::ffi::c_char;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use crate::abi::*;
use crate::nic::Nic;

/// Most devices the fake offers.
pub const MAX_DEVICES: usize = 4;

/// Device count set by the control call (-1: none set, use the environment).
pub static OVERRIDE: AtomicI32 = AtomicI32::new(-1);

/// The devices' `struct ibv_device`s, allocated once.
struct Devices([*mut IbvDevice; MAX_DEVICES]);

// SAFETY: the pointers are to leaked, never freed device structs that nothing writes after
// creation.
unsafe impl Send for Devices {}
// SAFETY: as above.
unsafe impl Sync for Devices {}

static DEVICES: LazyLock<Devices> = LazyLock::new(|| {
    let mut out = [std::ptr::null_mut(); MAX_DEVICES];
    for (i, slot) in out.iter_mut().enumerate() {
        let mut d = Box::new(IbvDevice {
            ops: IbvDeviceOps {
                dummy1: std::ptr::null_mut(),
                dummy2: std::ptr::null_mut(),
            },
            node_type: IBV_NODE_CA,
            transport_type: IBV_TRANSPORT_IB,
            name: [0; 64],
            dev_name: [0; 64],
            dev_path: [0; 256],
            ibdev_path: [0; 256],
        });
        fill(&mut d.name, &format!("fake_verbs{i}"));
        fill(&mut d.dev_name, &format!("uverbs{i}"));
        fill(&mut d.dev_path, &format!("/sys/class/infiniband_verbs/uverbs{i}"));
        fill(&mut d.ibdev_path, &format!("/sys/class/infiniband/fake_verbs{i}"));
        *slot = Box::into_raw(d);
    }
    Devices(out)
});

static NICS: Mutex<[Option<Arc<Nic>>; MAX_DEVICES]> = Mutex::new([None, None, None, None]);

fn fill(dst: &mut [c_char], s: &str) {
    for (d, b) in dst.iter_mut().zip(s.bytes()) {
        *d = b as c_char;
    }
}

/// How many devices are offered now.
pub fn count() -> usize {
    let o = OVERRIDE.load(Ordering::Relaxed);
    let n = if o >= 0 {
        o as usize
    } else {
        std::env::var("TE_FAKE_VERBS_DEVICES")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0)
    };
    n.min(MAX_DEVICES)
}

/// The `struct ibv_device` of device `i`.
pub fn device(i: usize) -> *mut IbvDevice {
    DEVICES.0[i]
}

/// The index of a device pointer the fake handed out.
pub fn index_of(d: *const IbvDevice) -> Option<usize> {
    DEVICES.0.iter().position(|&p| std::ptr::eq(p, d))
}

/// The NIC of device `i`, started on first use.
pub fn nic(i: usize) -> std::io::Result<Arc<Nic>> {
    let mut nics = NICS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = &nics[i] {
        return Ok(Arc::clone(n));
    }
    let n = Nic::start(i)?;
    nics[i] = Some(Arc::clone(&n));
    Ok(n)
}

/// The attributes `ibv_query_device` reports.
pub fn attributes(i: usize, out: &mut IbvDeviceAttr) {
    fill(&mut out.fw_ver, "te-fake-verbs 0.1");
    out.node_guid = u64::from_be_bytes([0x02, 0x7e, 0, 0, 0, 0, 0, i as u8]).to_be();
    out.sys_image_guid = out.node_guid;
    out.max_mr_size = 1 << 40;
    out.page_size_cap = 0xffff_f000;
    out.vendor = [0x7e7e, 1, 1];
    out.max_qp = MAX_QP;
    out.max_qp_wr = MAX_QP_WR;
    out.device_cap_flags = 0;
    out.max_sge = MAX_SGE;
    out.max_sge_rd = MAX_SGE;
    out.max_cq = MAX_QP;
    out.max_cqe = MAX_CQE;
    out.max_mr = 1 << 20;
    out.max_pd = 1 << 10;
    out.max_qp_rd_atom = 16;
    out.rest = [0; 19];
    out.max_pkeys = 1;
    out.local_ca_ack_delay = 16;
    out.phys_port_cnt = 1;
}

/// `max_qp` (and `max_cq`).
pub const MAX_QP: i32 = 1024;
/// `max_qp_wr`.
pub const MAX_QP_WR: i32 = 4096;
/// `max_sge`.
pub const MAX_SGE: i32 = 4;
/// `max_cqe`.
pub const MAX_CQE: i32 = 65_535;
/// The port's active MTU (`IBV_MTU_1024`, as RoCE on a 1500-byte Ethernet MTU).
pub const ACTIVE_MTU: i32 = IBV_MTU_1024;

/// The attributes `ibv_query_port` reports for port 1.
pub fn port(out: &mut IbvPortAttr) {
    out.state = IBV_PORT_ACTIVE;
    out.max_mtu = IBV_MTU_4096;
    out.active_mtu = ACTIVE_MTU;
    out.gid_tbl_len = 1;
    out.port_cap_flags = 1 << 26; // IBV_PORT_IP_BASED_GIDS
    out.max_msg_sz = 1 << 30;
    out.counters = [0; 2];
    out.pkey_tbl_len = 1;
    out.lid = 0;
    out.sm_lid = 0;
    out.misc = [0, 1, 0, 0, 0, 2, 32, 5]; // lmc .. phys_state (LinkUp)
    out.link_layer = IBV_LINK_LAYER_ETHERNET;
    out.flags = 0;
}
