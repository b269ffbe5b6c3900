//! The fake NIC of one device in this process: its memory-region table, its queue pairs, and
//! the responder thread that serves other queue pairs' RDMA requests.
//!
//! The NIC listens on the abstract Unix socket [`nic_name`] of its port GID; a requesting
//! queue pair connects there, says which QP it addresses ([`Hello`]), and sends requests one
//! after the other. The responder checks, like a NIC: the addressed QP exists, is in RTR or RTS
//! and is connected to exactly that requester (else the request is dropped: the connection is
//! closed and the requester's retries run out), the rkey names a live region of the QP's
//! protection domain, the range lies inside it, and both the region and the QP allow the
//! access (`IBV_ACCESS_REMOTE_READ` / `IBV_ACCESS_REMOTE_WRITE`); a failed check answers
//! `IBV_WC_REM_ACCESS_ERR`. Memory is copied while the region table is locked, so once
//! `ibv_dereg_mr` has returned, no remote access touches the region again.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::abi::*;
use crate::qp::QpShared;
use crate::wire::{nic_name, Hello, Request, OP_READ, OP_WRITE};

/// Microseconds the responder waits before serving each request (`TE_FAKE_VERBS_STALL_US`,
/// or the control call): a slow remote NIC.
pub static STALL_US: AtomicU32 = AtomicU32::new(0);

/// Requests served by the responders of this process.
pub static SERVED: AtomicU64 = AtomicU64::new(0);

/// A registered memory region as the NIC sees it.
#[derive(Clone, Copy)]
pub struct MrEntry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// `IBV_ACCESS_*` flags.
    pub access: i32,
    /// Handle of the protection domain.
    pub pd: u32,
}

impl MrEntry {
    /// Whether `[addr, addr + len)` lies inside the region.
    pub fn covers(&self, addr: u64, len: u64) -> bool {
        addr >= self.addr
            && addr
                .checked_add(len)
                .is_some_and(|end| end <= self.addr + self.len)
    }
}

/// The NIC of one device.
pub struct Nic {
    /// The port's GID (index 0, the only one).
    pub gid: [u8; 16],
    mrs: Mutex<HashMap<u32, MrEntry>>,
    qps: Mutex<HashMap<u32, Arc<QpShared>>>,
    next_key: AtomicU32,
    next_qpn: AtomicU32,
}

impl Nic {
    /// Starts the NIC of device `index`: binds its socket and spawns the responder.
    pub fn start(index: usize) -> std::io::Result<Arc<Nic>> {
        if let Some(us) = std::env::var("TE_FAKE_VERBS_STALL_US")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            STALL_US.store(us, Ordering::Relaxed);
        }
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let pid = std::process::id().to_be_bytes();
        let mut gid = [0u8; 16];
        gid[0] = 0xfe;
        gid[1] = 0x80;
        gid[8..12].copy_from_slice(&pid);
        gid[12..14].copy_from_slice(&(nonce as u16).to_be_bytes());
        gid[15] = index as u8;
        let addr = SocketAddr::from_abstract_name(nic_name(&gid))?;
        let listener = UnixListener::bind_addr(&addr)?;
        let nic = Arc::new(Nic {
            gid,
            mrs: Mutex::new(HashMap::new()),
            qps: Mutex::new(HashMap::new()),
            next_key: AtomicU32::new(0x1000 + ((nonce & 0xff) << 4)),
            next_qpn: AtomicU32::new(0x100 + (nonce & 0xff)),
        });
        let n = Arc::clone(&nic);
        std::thread::Builder::new()
            .name(format!("fake-nic{index}"))
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    let n = Arc::clone(&n);
                    let _ = std::thread::Builder::new()
                        .name("fake-nic-resp".into())
                        .spawn(move || n.serve(conn));
                }
            })?;
        Ok(nic)
    }

    /// The region table.
    pub fn mrs(&self) -> MutexGuard<'_, HashMap<u32, MrEntry>> {
        self.mrs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn qps(&self) -> MutexGuard<'_, HashMap<u32, Arc<QpShared>>> {
        self.qps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a region; returns its key (lkey and rkey alike; keys are never reused).
    pub fn register(&self, e: MrEntry) -> u32 {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        self.mrs().insert(key, e);
        key
    }

    /// Removes a region; `false` when the key was not live.
    pub fn deregister(&self, key: u32) -> bool {
        self.mrs().remove(&key).is_some()
    }

    /// A fresh 24-bit QP number.
    pub fn next_qpn(&self) -> u32 {
        self.next_qpn.fetch_add(1, Ordering::Relaxed) & 0xff_ffff
    }

    /// Makes a QP reachable by its number.
    pub fn add_qp(&self, qp: Arc<QpShared>) {
        self.qps().insert(qp.qpn, qp);
    }

    /// Makes a QP unreachable.
    pub fn remove_qp(&self, qpn: u32) {
        self.qps().remove(&qpn);
    }

    /// Serves one requester connection until it closes or is refused.
    fn serve(&self, conn: UnixStream) {
        let Ok(write_half) = conn.try_clone() else { return };
        let mut r = BufReader::new(conn);
        let mut w = BufWriter::new(write_half);
        let Ok(hello) = Hello::read(&mut r) else { return };
        let mut buf = Vec::new();
        loop {
            let Ok(req) = Request::read(&mut r) else { return };
            if req.op == OP_WRITE {
                buf.resize(req.len as usize, 0);
                if r.read_exact(&mut buf).is_err() {
                    return;
                }
            }
            let stall = STALL_US.load(Ordering::Relaxed);
            if stall > 0 {
                std::thread::sleep(std::time::Duration::from_micros(u64::from(stall)));
            }
            // The addressed QP must be connected to this requester, else the packet is
            // dropped (the requester sees its retries run out).
            let qp = self.qps().get(&hello.dest_qpn).cloned();
            let Some(qp) = qp.filter(|q| q.accepts_from(hello.src_qpn, &hello.src_gid)) else {
                return;
            };
            let status = self.access(&qp, &req, &mut buf);
            SERVED.fetch_add(1, Ordering::Relaxed);
            let ok = w.write_all(&[status as u8]).is_ok()
                && (status != IBV_WC_SUCCESS || req.op != OP_READ || w.write_all(&buf).is_ok())
                && w.flush().is_ok();
            if !ok {
                return;
            }
        }
    }

    /// Checks and performs one request on this process's memory: the `IBV_WC_*` status.
    /// A read fills `buf`; a write copies `buf` into the region.
    fn access(&self, qp: &QpShared, req: &Request, buf: &mut Vec<u8>) -> i32 {
        let (need, op_ok) = match req.op {
            OP_READ => (IBV_ACCESS_REMOTE_READ, true),
            OP_WRITE => (IBV_ACCESS_REMOTE_WRITE, true),
            _ => (0, false),
        };
        let len = u64::from(req.len);
        let mrs = self.mrs();
        let allowed = op_ok
            && qp.access_flags() & need != 0
            && mrs
                .get(&req.rkey)
                .is_some_and(|m| m.pd == qp.pd_handle && m.access & need != 0 && m.covers(req.addr, len));
        if !allowed {
            return IBV_WC_REM_ACCESS_ERR;
        }
        let p = req.addr as usize as *mut u8;
        if req.op == OP_READ {
            buf.resize(req.len as usize, 0);
            // SAFETY: the range lies inside a live registered region of this process (checked
            // above under the table lock, which is held until the copy ends, so it cannot be
            // deregistered meanwhile); the owner promised it stays valid while registered.
            unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len()) };
        } else {
            // SAFETY: as above; the region allows remote writes.
            unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), p, buf.len()) };
        }
        drop(mrs);
        IBV_WC_SUCCESS
    }
}
