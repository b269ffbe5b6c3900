//! Reliable-connected queue pairs: the state machine of `ibv_modify_qp`, the send queue, and
//! the requester thread (the fake NIC's send engine) that executes work requests in order.
//!
//! * `ibv_modify_qp` allows RESET→INIT→RTR→RTS (plus INIT→INIT, RTS→RTS, any→ERR, any→RESET)
//!   with exactly the attribute masks the kernel requires for RC (missing required or
//!   unexpected attributes: `EINVAL`); RTR needs a GRH (`is_global`, RoCE), port 1 and a path
//!   MTU no larger than the port's active MTU.
//! * `ibv_post_send` accepts only RDMA_WRITE and RDMA_READ, at most `max_send_sge` SGEs, no
//!   INLINE; in RESET, INIT or RTR it returns `EINVAL`; with `max_send_wr` slots taken it
//!   returns `ENOMEM` (a slot is freed when the completion of that WR, or of a later signaled
//!   WR, is polled, as on hardware). In ERR posts are accepted and flushed.
//! * The requester executes each WR against the peer NIC named by the QP's `dgid` and
//!   `dest_qp_num`. A refused local SGE gives `IBV_WC_LOC_PROT_ERR`, the responder's refusal
//!   `IBV_WC_REM_ACCESS_ERR`, a peer that cannot be reached or drops the connection
//!   `IBV_WC_RETRY_EXC_ERR` (at once: the fake has no retry timer). Any error moves the QP to
//!   ERR; every WR after it completes with `IBV_WC_WR_FLUSH_ERR`, signaled or not.

use std::io::{BufReader, BufWriter, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::abi::*;
use crate::cq::CqState;
use crate::fault;
use crate::nic::Nic;
use crate::wire::{nic_name, Hello, Request, OP_READ, OP_WRITE};

/// One posted work request, copied out of the caller's `ibv_send_wr`.
pub struct Work {
    /// `wr_id`.
    pub wr_id: u64,
    /// `IBV_WR_RDMA_READ` or `IBV_WR_RDMA_WRITE`.
    pub opcode: i32,
    /// Whether a successful completion is reported.
    pub signaled: bool,
    /// The local scatter/gather list.
    pub sges: Vec<IbvSge>,
    /// Remote address.
    pub remote_addr: u64,
    /// Remote key.
    pub rkey: u32,
    /// The QP's reset generation at post time (work of an older generation is dropped).
    pub generation: u64,
}

struct Inner {
    state: i32,
    access: i32,
    port: u8,
    path_mtu: i32,
    dest_qpn: u32,
    dgid: [u8; 16],
    rq_psn: u32,
    sq_psn: u32,
    /// Send-queue slots in use.
    outstanding: u32,
    /// Successful unsignaled WRs whose slots the next signaled completion frees.
    unsignaled: u32,
    generation: u64,
    tx: Option<Sender<Work>>,
}

/// The state behind one `struct ibv_qp`.
pub struct QpShared {
    /// QP number.
    pub qpn: u32,
    /// Handle of its protection domain.
    pub pd_handle: u32,
    /// Its NIC.
    pub nic: Arc<Nic>,
    /// Its send CQ (every completion goes there: the fake has no receive side).
    pub cq: Arc<CqState>,
    /// The capabilities granted.
    pub cap: IbvQpCap,
    /// `sq_sig_all`.
    pub sig_all: bool,
    inner: Mutex<Inner>,
}

/// The RC state machine: `(from, to, required, optional)` attribute masks.
const TRANSITIONS: &[(i32, i32, i32, i32)] = &[
    (
        IBV_QPS_RESET,
        IBV_QPS_INIT,
        IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS,
        0,
    ),
    (
        IBV_QPS_INIT,
        IBV_QPS_INIT,
        IBV_QP_STATE,
        IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS,
    ),
    (
        IBV_QPS_INIT,
        IBV_QPS_RTR,
        IBV_QP_STATE
            | IBV_QP_AV
            | IBV_QP_PATH_MTU
            | IBV_QP_DEST_QPN
            | IBV_QP_RQ_PSN
            | IBV_QP_MAX_DEST_RD_ATOMIC
            | IBV_QP_MIN_RNR_TIMER,
        IBV_QP_ACCESS_FLAGS | IBV_QP_PKEY_INDEX,
    ),
    (
        IBV_QPS_RTR,
        IBV_QPS_RTS,
        IBV_QP_STATE
            | IBV_QP_SQ_PSN
            | IBV_QP_TIMEOUT
            | IBV_QP_RETRY_CNT
            | IBV_QP_RNR_RETRY
            | IBV_QP_MAX_QP_RD_ATOMIC,
        IBV_QP_ACCESS_FLAGS | IBV_QP_MIN_RNR_TIMER,
    ),
    (
        IBV_QPS_RTS,
        IBV_QPS_RTS,
        IBV_QP_STATE,
        IBV_QP_ACCESS_FLAGS | IBV_QP_MIN_RNR_TIMER,
    ),
];

impl QpShared {
    /// A QP in RESET.
    pub fn new(nic: Arc<Nic>, pd_handle: u32, cq: Arc<CqState>, cap: IbvQpCap, sig_all: bool) -> QpShared {
        QpShared {
            qpn: nic.next_qpn(),
            pd_handle,
            nic,
            cq,
            cap,
            sig_all,
            inner: Mutex::new(Inner {
                state: IBV_QPS_RESET,
                access: 0,
                port: 0,
                path_mtu: 0,
                dest_qpn: 0,
                dgid: [0; 16],
                rq_psn: 0,
                sq_psn: 0,
                outstanding: 0,
                unsignaled: 0,
                generation: 0,
                tx: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The QP's current state.
    pub fn state(&self) -> i32 {
        self.lock().state
    }

    /// The QP's remote access flags.
    pub fn access_flags(&self) -> i32 {
        self.lock().access
    }

    /// Whether the responder side of this QP takes requests from `src_qpn` at `src_gid`.
    pub fn accepts_from(&self, src_qpn: u32, src_gid: &[u8; 16]) -> bool {
        let g = self.lock();
        matches!(g.state, IBV_QPS_RTR | IBV_QPS_RTS) && g.dest_qpn == src_qpn && g.dgid == *src_gid
    }

    /// Frees send-queue slots (a completion covering them was polled).
    pub fn release_slots(&self, n: u32) {
        let mut g = self.lock();
        g.outstanding = g.outstanding.saturating_sub(n);
    }

    /// Fills `attr` as `ibv_query_qp` does.
    pub fn query(&self, attr: &mut IbvQpAttr) {
        let g = self.lock();
        attr.qp_state = g.state;
        attr.cur_qp_state = g.state;
        attr.path_mtu = g.path_mtu;
        attr.qp_access_flags = g.access as u32;
        attr.dest_qp_num = g.dest_qpn;
        attr.rq_psn = g.rq_psn;
        attr.sq_psn = g.sq_psn;
        attr.port_num = g.port;
        attr.cap = self.cap;
        attr.ah_attr.is_global = 1;
        attr.ah_attr.port_num = g.port;
        attr.ah_attr.grh.dgid.raw = g.dgid;
    }

    /// `ibv_modify_qp`: 0 or the errno.
    pub fn modify(self: &Arc<Self>, attr: &IbvQpAttr, mask: i32, active_mtu: i32) -> i32 {
        if mask & IBV_QP_STATE == 0 {
            return libc::EINVAL;
        }
        let mut g = self.lock();
        let to = attr.qp_state;
        if to == IBV_QPS_RESET || to == IBV_QPS_ERR {
            if mask != IBV_QP_STATE {
                return libc::EINVAL;
            }
            g.state = to;
            if to == IBV_QPS_RESET {
                g.generation += 1;
                g.outstanding = 0;
                g.unsignaled = 0;
                g.tx = None;
            }
            return 0;
        }
        let Some(&(_, _, required, optional)) = TRANSITIONS.iter().find(|t| t.0 == g.state && t.1 == to)
        else {
            return libc::EINVAL;
        };
        if mask & required != required || mask & !(required | optional) != 0 {
            return libc::EINVAL;
        }
        if mask & IBV_QP_PORT != 0 && attr.port_num != 1 {
            return libc::EINVAL;
        }
        if mask & IBV_QP_PKEY_INDEX != 0 && attr.pkey_index != 0 {
            return libc::EINVAL;
        }
        if to == IBV_QPS_RTR && g.state == IBV_QPS_INIT {
            let ah = &attr.ah_attr;
            if ah.is_global != 1
                || ah.port_num != 1
                || !(1..=active_mtu).contains(&attr.path_mtu)
                || attr.dest_qp_num > 0xff_ffff
            {
                return libc::EINVAL;
            }
            g.dest_qpn = attr.dest_qp_num;
            g.dgid = ah.grh.dgid.raw;
            g.path_mtu = attr.path_mtu;
            g.rq_psn = attr.rq_psn & 0xff_ffff;
        }
        if mask & IBV_QP_SQ_PSN != 0 {
            g.sq_psn = attr.sq_psn & 0xff_ffff;
        }
        if mask & IBV_QP_PORT != 0 {
            g.port = attr.port_num;
        }
        if mask & IBV_QP_ACCESS_FLAGS != 0 {
            g.access = attr.qp_access_flags as i32;
        }
        if to == IBV_QPS_RTS && g.tx.is_none() {
            let (tx, rx) = std::sync::mpsc::channel();
            let me = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name(format!("fake-qp{:x}", self.qpn))
                .spawn(move || me.requester(rx));
            if spawned.is_err() {
                return libc::ENOMEM;
            }
            g.tx = Some(tx);
        }
        g.state = to;
        0
    }

    /// Queues one work request (`ibv_post_send` did the checks of the WR itself): 0 or the
    /// errno.
    pub fn post(&self, mut work: Work) -> i32 {
        let mut g = self.lock();
        match g.state {
            IBV_QPS_RTS | IBV_QPS_ERR => {}
            _ => return libc::EINVAL,
        }
        if g.outstanding >= self.cap.max_send_wr {
            return libc::ENOMEM;
        }
        let Some(tx) = g.tx.clone() else {
            return libc::EINVAL;
        };
        g.outstanding += 1;
        work.generation = g.generation;
        work.signaled |= self.sig_all;
        if tx.send(work).is_err() {
            g.outstanding -= 1;
            return libc::EIO;
        }
        0
    }

    /// Stops the requester: the QP is being destroyed.
    pub fn shut(&self) {
        let mut g = self.lock();
        g.state = IBV_QPS_RESET;
        g.generation += 1;
        g.tx = None;
    }

    /// Moves the QP to ERR after a failed WR.
    fn fail(&self) {
        self.lock().state = IBV_QPS_ERR;
    }

    /// The requester: executes queued work in order until the QP is destroyed or reset.
    fn requester(self: Arc<Self>, rx: Receiver<Work>) {
        let mut link: Option<Link> = None;
        let me: Weak<QpShared> = Arc::downgrade(&self);
        for work in rx {
            let (state, generation, dgid, dest_qpn) = {
                let g = self.lock();
                (g.state, g.generation, g.dgid, g.dest_qpn)
            };
            if work.generation != generation {
                continue;
            }
            let status = if state != IBV_QPS_RTS {
                IBV_WC_WR_FLUSH_ERR
            } else if let Some(injected) = fault::enter(fault::WC) {
                injected
            } else {
                self.execute(&work, &mut link, dgid, dest_qpn)
            };
            if status != IBV_WC_SUCCESS {
                link = None;
                self.fail();
            }
            self.complete(&work, status, &me);
        }
    }

    /// Reports the completion of `work` on the CQ (successful unsignaled work only takes its
    /// slot until the next signaled completion).
    fn complete(&self, work: &Work, status: i32, me: &Weak<QpShared>) {
        let slots = {
            let mut g = self.lock();
            if work.generation != g.generation {
                return;
            }
            if status == IBV_WC_SUCCESS && !work.signaled {
                g.unsignaled += 1;
                return;
            }
            std::mem::take(&mut g.unsignaled) + 1
        };
        let wc = IbvWc {
            wr_id: work.wr_id,
            status,
            opcode: if work.opcode == IBV_WR_RDMA_READ {
                IBV_WC_RDMA_READ
            } else {
                IBV_WC_RDMA_WRITE
            },
            byte_len: if status == IBV_WC_SUCCESS {
                work.sges.iter().map(|s| s.length).sum()
            } else {
                0
            },
            qp_num: self.qpn,
            ..IbvWc::default()
        };
        if !self.cq.push(wc, me.clone(), slots) {
            self.fail();
        }
    }

    /// Executes one WR: the `IBV_WC_*` status.
    fn execute(&self, work: &Work, link: &mut Option<Link>, dgid: [u8; 16], dest_qpn: u32) -> i32 {
        let len: u64 = work.sges.iter().map(|s| u64::from(s.length)).sum();
        let Ok(len32) = u32::try_from(len) else {
            return IBV_WC_LOC_PROT_ERR;
        };
        let need = if work.opcode == IBV_WR_RDMA_READ {
            IBV_ACCESS_LOCAL_WRITE
        } else {
            0
        };
        // The local side: every SGE inside a live region of this QP's PD.
        let local_ok = {
            let mrs = self.nic.mrs();
            work.sges.iter().all(|s| {
                mrs.get(&s.lkey).is_some_and(|m| {
                    m.pd == self.pd_handle && m.access & need == need && m.covers(s.addr, u64::from(s.length))
                })
            })
        };
        if !local_ok {
            return IBV_WC_LOC_PROT_ERR;
        }
        if link.is_none() {
            match Link::connect(&dgid, dest_qpn, self.qpn, &self.nic.gid) {
                Ok(l) => *link = Some(l),
                Err(_) => return IBV_WC_RETRY_EXC_ERR,
            }
        }
        let Some(l) = link.as_mut() else {
            return IBV_WC_RETRY_EXC_ERR;
        };
        let req = Request {
            op: if work.opcode == IBV_WR_RDMA_READ {
                OP_READ
            } else {
                OP_WRITE
            },
            len: len32,
            addr: work.remote_addr,
            rkey: work.rkey,
        };
        let mut buf = vec![0u8; len as usize];
        if req.op == OP_WRITE {
            let mrs = self.nic.mrs();
            // Recheck under the lock: the region may have gone since.
            if !work.sges.iter().all(|s| {
                mrs.get(&s.lkey)
                    .is_some_and(|m| m.covers(s.addr, u64::from(s.length)))
            }) {
                return IBV_WC_LOC_PROT_ERR;
            }
            let mut at = 0;
            for s in &work.sges {
                // SAFETY: the SGE lies inside a live region of this process (checked under the
                // table lock, held for the copy).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        s.addr as usize as *const u8,
                        buf[at..].as_mut_ptr(),
                        s.length as usize,
                    )
                };
                at += s.length as usize;
            }
        }
        let status = match l.round_trip(&req, &mut buf) {
            Ok(s) => s,
            Err(_) => return IBV_WC_RETRY_EXC_ERR,
        };
        if status != IBV_WC_SUCCESS || req.op == OP_WRITE {
            return status;
        }
        let mrs = self.nic.mrs();
        if !work.sges.iter().all(|s| {
            mrs.get(&s.lkey).is_some_and(|m| {
                m.access & IBV_ACCESS_LOCAL_WRITE != 0 && m.covers(s.addr, u64::from(s.length))
            })
        }) {
            return IBV_WC_LOC_PROT_ERR;
        }
        let mut at = 0;
        for s in &work.sges {
            // SAFETY: the SGE lies inside a live, locally writable region of this process
            // (checked under the table lock, held for the copy).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    buf[at..].as_ptr(),
                    s.addr as usize as *mut u8,
                    s.length as usize,
                )
            };
            at += s.length as usize;
        }
        IBV_WC_SUCCESS
    }
}

/// A requester's connection to the responder NIC of its peer.
struct Link {
    r: BufReader<UnixStream>,
    w: BufWriter<UnixStream>,
}

impl Link {
    fn connect(dgid: &[u8; 16], dest_qpn: u32, src_qpn: u32, src_gid: &[u8; 16]) -> std::io::Result<Link> {
        let addr = SocketAddr::from_abstract_name(nic_name(dgid))?;
        let s = UnixStream::connect_addr(&addr)?;
        let mut w = BufWriter::new(s.try_clone()?);
        Hello {
            dest_qpn,
            src_qpn,
            src_gid: *src_gid,
        }
        .write(&mut w)?;
        Ok(Link {
            r: BufReader::new(s),
            w,
        })
    }

    /// Sends one request (with `buf` as a write's payload), returns the responder's status
    /// (a read's bytes land in `buf`).
    fn round_trip(&mut self, req: &Request, buf: &mut [u8]) -> std::io::Result<i32> {
        req.write(&mut self.w)?;
        if req.op == OP_WRITE {
            self.w.write_all(buf)?;
        }
        self.w.flush()?;
        let mut st = [0u8; 1];
        self.r.read_exact(&mut st)?;
        let status = i32::from(st[0]);
        if status == IBV_WC_SUCCESS && req.op == OP_READ {
            self.r.read_exact(buf)?;
        }
        Ok(status)
    }
}
