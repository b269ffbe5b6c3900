//! Device discovery: the device list, opening one device, its attributes, port and GID, and
//! the reason RDMA is unavailable when it is ([`Unavailable`]).

use std::ffi::{c_void, CStr};
use std::fmt;
use std::path::Path;

use te_proto::{ErrorCode, Status};

use crate::abi::*;
use crate::error::{last_errno, rc_errno, VerbsError};
use crate::library::{self, LoadError, Verbs};

/// Why the RDMA path is off: a sentence for the log and `te info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// `libibverbs.so.1` (or the configured path) could not be loaded or lacks a symbol.
    Library(LoadError),
    /// The library loaded but lists no device (`errno` when `ibv_get_device_list` returned
    /// NULL, as it does without kernel RDMA support).
    NoDevices {
        /// Where the library was loaded from.
        library: String,
        /// The errno of a NULL device list.
        errno: Option<i32>,
    },
    /// The configured device is not in the list.
    NoSuchDevice {
        /// The name asked for.
        name: String,
        /// The names listed.
        listed: Vec<String>,
    },
    /// The device's port is not active.
    PortDown {
        /// Device name.
        device: String,
        /// Port number.
        port: u8,
        /// `enum ibv_port_state`.
        state: i32,
    },
    /// A verbs call needed to start failed.
    Call(VerbsError),
}

impl Unavailable {
    /// The te code: `NotSupported` (RDMA is not there), or `RuntimeError` when a call on a
    /// present device failed.
    pub fn code(&self) -> ErrorCode {
        match self {
            Unavailable::Call(e) if e.code() != ErrorCode::NotSupported => ErrorCode::RuntimeError,
            _ => ErrorCode::NotSupported,
        }
    }

    /// The te [`Status`] for this reason.
    pub fn to_status(&self) -> Status {
        Status::with_args(self.code(), format_args!("RDMA off: {self}"))
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::Library(e) => write!(f, "{e}"),
            Unavailable::NoDevices { library, errno: None } => {
                write!(
                    f,
                    "{library} found no RDMA device (ibv_get_device_list listed none)"
                )
            }
            Unavailable::NoDevices {
                library,
                errno: Some(e),
            } => write!(
                f,
                "{library} found no RDMA device (ibv_get_device_list: {} ({e}): {})",
                crate::error::errno_name(*e),
                std::io::Error::from_raw_os_error(*e)
            ),
            Unavailable::NoSuchDevice { name, listed } => {
                write!(f, "no RDMA device {name} (listed: {})", listed.join(", "))
            }
            Unavailable::PortDown { device, port, state } => {
                write!(f, "{device} port {port} is not active (state {state})")
            }
            Unavailable::Call(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Unavailable {}

/// What the driver knows of the opened device and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device name (`mlx5_0`, `rxe0`, `fake_verbs0`).
    pub name: String,
    /// Port number.
    pub port: u8,
    /// GID index used.
    pub gid_index: u8,
    /// The port GID at that index.
    pub gid: [u8; 16],
    /// The port LID (0 on RoCE).
    pub lid: u16,
    /// Active MTU (`enum ibv_mtu`).
    pub mtu: u8,
    /// `IBV_LINK_LAYER_*`.
    pub link_layer: u8,
    /// `max_qp_wr`.
    pub max_qp_wr: u32,
    /// `max_cqe`.
    pub max_cqe: u32,
    /// `max_qp_rd_atom` (outstanding RDMA READs per QP).
    pub max_qp_rd_atom: u8,
    /// `max_msg_sz` of the port.
    pub max_msg_sz: u32,
}

/// The names of the devices `ibv_get_device_list` lists, from the library at `library` (or
/// the default one, see [`library`]).
pub fn list(library: Option<&Path>) -> Result<Vec<String>, Unavailable> {
    let verbs = library::load(library).map_err(Unavailable::Library)?;
    with_list(verbs, |devs| {
        Ok(devs.iter().map(|(name, _)| name.clone()).collect())
    })
}

/// Calls `f` with the listed devices (name, `struct ibv_device *`), freeing the list after.
fn with_list<T>(
    verbs: &Verbs,
    f: impl FnOnce(&[(String, *mut c_void)]) -> Result<T, Unavailable>,
) -> Result<T, Unavailable> {
    let mut n = 0;
    // SAFETY: n is a writable int.
    let list = unsafe { (verbs.ibv_get_device_list)(&mut n) };
    let library = verbs.path.display().to_string();
    if list.is_null() {
        return Err(Unavailable::NoDevices {
            library,
            errno: Some(last_errno()),
        });
    }
    let mut devs = Vec::new();
    for i in 0..n.max(0) as usize {
        // SAFETY: the list holds n device pointers (and a NULL after them).
        let d = unsafe { *list.add(i) };
        if d.is_null() {
            break;
        }
        // SAFETY: a listed device; the name is a NUL-terminated string inside it.
        let name = unsafe { (verbs.ibv_get_device_name)(d) };
        let name = if name.is_null() {
            format!("device{i}")
        } else {
            // SAFETY: as above.
            unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned()
        };
        devs.push((name, d));
    }
    let out = if devs.is_empty() {
        Err(Unavailable::NoDevices { library, errno: None })
    } else {
        f(&devs)
    };
    // SAFETY: the list came from ibv_get_device_list and is freed once; contexts opened from
    // it stay valid (verbs.h: open the devices before freeing the list).
    unsafe { (verbs.ibv_free_device_list)(list) };
    out
}

/// Opens `name` (or the first device), checks `port` and reads GID `gid_index`.
pub fn open(
    verbs: &Verbs,
    name: Option<&str>,
    port: u8,
    gid_index: u8,
) -> Result<(*mut IbvContext, DeviceInfo), Unavailable> {
    let (ctx, dev_name) = with_list(verbs, |devs| {
        let (dev_name, d) =
            match name {
                None => devs[0].clone(),
                Some(want) => devs.iter().find(|(n, _)| n == want).cloned().ok_or_else(|| {
                    Unavailable::NoSuchDevice {
                        name: want.to_string(),
                        listed: devs.iter().map(|(n, _)| n.clone()).collect(),
                    }
                })?,
            };
        // SAFETY: a device of the list, which is still allocated.
        let ctx = unsafe { (verbs.ibv_open_device)(d) };
        if ctx.is_null() {
            return Err(Unavailable::Call(VerbsError::errno(
                "ibv_open_device",
                dev_name,
                last_errno(),
            )));
        }
        Ok((ctx, dev_name))
    })?;
    match describe(verbs, ctx, &dev_name, port, gid_index) {
        Ok(info) => Ok((ctx, info)),
        Err(e) => {
            // SAFETY: the context opened above, closed once; nothing was created on it.
            unsafe { (verbs.ibv_close_device)(ctx) };
            Err(e)
        }
    }
}

fn describe(
    verbs: &Verbs,
    ctx: *mut IbvContext,
    name: &str,
    port: u8,
    gid_index: u8,
) -> Result<DeviceInfo, Unavailable> {
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut dattr: IbvDeviceAttr = unsafe { std::mem::zeroed() };
    // SAFETY: a live context and a writable struct of the header's size.
    let rc = unsafe { (verbs.ibv_query_device)(ctx, &mut dattr) };
    if rc != 0 {
        return Err(Unavailable::Call(VerbsError::errno(
            "ibv_query_device",
            name,
            rc_errno(rc),
        )));
    }
    // SAFETY: as above.
    let mut pattr: IbvPortAttr = unsafe { std::mem::zeroed() };
    // SAFETY: the exported ibv_query_port writes the 48-byte compat struct, which IbvPortAttr
    // is.
    let rc = unsafe { (verbs.ibv_query_port)(ctx, port, &mut pattr) };
    if rc != 0 {
        return Err(Unavailable::Call(VerbsError::errno(
            "ibv_query_port",
            format!("{name} port {port}"),
            rc_errno(rc),
        )));
    }
    if pattr.state != IBV_PORT_ACTIVE {
        return Err(Unavailable::PortDown {
            device: name.to_string(),
            port,
            state: pattr.state,
        });
    }
    let mut gid = IbvGid::default();
    // SAFETY: a live context and a writable GID.
    let rc = unsafe { (verbs.ibv_query_gid)(ctx, port, i32::from(gid_index), &mut gid) };
    if rc != 0 {
        return Err(Unavailable::Call(VerbsError::errno(
            "ibv_query_gid",
            format!("{name} port {port} index {gid_index}"),
            rc_errno(rc),
        )));
    }
    Ok(DeviceInfo {
        name: name.to_string(),
        port,
        gid_index,
        gid: gid.raw,
        lid: pattr.lid,
        mtu: pattr.active_mtu.clamp(1, 5) as u8,
        link_layer: pattr.link_layer,
        max_qp_wr: dattr.max_qp_wr.max(0) as u32,
        max_cqe: dattr.max_cqe.max(0) as u32,
        max_qp_rd_atom: dattr.max_qp_rd_atom.clamp(0, 255) as u8,
        max_msg_sz: pattr.max_msg_sz,
    })
}
