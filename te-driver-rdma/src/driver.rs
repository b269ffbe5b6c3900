//! [`RdmaDriver`]: one opened device with its protection domain, one completion queue on a
//! completion channel, the registered regions, the queue pairs and the transfers in flight.
//!
//! The driver is single-threaded and never blocks unless asked to ([`RdmaDriver::wait`]): the
//! runtime registers [`RdmaDriver::event_fd`] in its mio loop and, when it is readable (and once
//! at start), calls [`RdmaDriver::poll_and_arm`]. Bounds, so the CQ cannot overflow: every work request is signaled;
//! a QP has at most `max_outstanding` of them posted; at most `max_qps` QPs exist; the CQ has
//! `max_qps * max_outstanding` entries. Transfers beyond the send-queue room wait in the
//! driver, in order, up to `max_queued` transfers.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use te_proto::{ErrorCode, Perm};

use crate::abi::*;
use crate::conn::ConnInfo;
use crate::device::{self, DeviceInfo, Unavailable};
use crate::error::{last_errno, rc_errno, Cause, VerbsError, IBV_WC_SUCCESS};
use crate::library::{self, Verbs};
use crate::memory::{access_flags, Deregister, MemoryRegion, MrSlot};
use crate::ops;
use crate::qp::{self, QpId, QpSlot, QpState};
use crate::transfer::{InFlight, Op, Transfer, TransferId, CHUNK_BITS};

/// How to open the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdmaConfig {
    /// The library to load; `None`: `$TE_VERBS_LIBRARY`, else `libibverbs.so.1`.
    pub library: Option<PathBuf>,
    /// The device by name; `None`: the first listed.
    pub device: Option<String>,
    /// Port number (1-based).
    pub port: u8,
    /// GID table index.
    pub gid_index: u8,
    /// Largest work request in bytes (a transfer is cut into as many as it needs).
    pub max_wr_bytes: u32,
    /// Work requests posted per queue pair at most.
    pub max_outstanding: u32,
    /// Queue pairs at most (the CQ is sized for all of them).
    pub max_qps: u32,
    /// Transfers waiting for send-queue room at most, over all queue pairs.
    pub max_queued: usize,
}

impl Default for RdmaConfig {
    fn default() -> RdmaConfig {
        RdmaConfig {
            library: None,
            device: None,
            port: 1,
            gid_index: 0,
            max_wr_bytes: 1 << 20,
            max_outstanding: 128,
            max_qps: 32,
            max_queued: 65_536,
        }
    }
}

/// Something that ended, as [`RdmaDriver::poll`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A transfer ended: every work request completed, or it failed (the first error).
    Transfer {
        /// Which.
        id: TransferId,
        /// Ok, or the first error of its work requests.
        result: Result<(), VerbsError>,
        /// Bytes whose work requests completed successfully.
        bytes: u64,
    },
    /// A deferred deregistration ran (the last transfer on the region ended).
    Deregistered {
        /// The region's lkey.
        lkey: u32,
        /// What `ibv_dereg_mr` said.
        result: Result<(), VerbsError>,
    },
}

/// One opened RDMA device (see the [module docs](self)).
pub struct RdmaDriver {
    verbs: &'static Verbs,
    ctx: *mut IbvContext,
    pd: *mut IbvPd,
    channel: *mut IbvCompChannel,
    cq: *mut IbvCq,
    info: DeviceInfo,
    config: RdmaConfig,
    mrs: HashMap<u32, MrSlot>,
    qps: Vec<Option<QpSlot>>,
    transfers: HashMap<u64, InFlight>,
    queued: usize,
    next_transfer: u64,
    /// Deregistrations that ran in `poll`, not yet reported.
    deregistered: Vec<Event>,
    wc: Vec<IbvWc>,
}

// SAFETY: the verbs objects are owned by this driver alone and libibverbs allows using them
// from any thread; nothing here is tied to the creating thread.
unsafe impl Send for RdmaDriver {}

impl RdmaDriver {
    /// Loads the library, opens the device and creates the protection domain, the completion
    /// channel (non-blocking) and the CQ; [`Unavailable`] says why RDMA is off.
    pub fn open(config: RdmaConfig) -> Result<RdmaDriver, Unavailable> {
        let verbs = library::load(config.library.as_deref()).map_err(Unavailable::Library)?;
        let (ctx, info) = device::open(verbs, config.device.as_deref(), config.port, config.gid_index)?;
        let mut config = config;
        config.max_wr_bytes = config.max_wr_bytes.clamp(1, info.max_msg_sz.max(1));
        config.max_outstanding = config.max_outstanding.clamp(1, info.max_qp_wr.max(1));
        let cqe = (u64::from(config.max_qps.max(1)) * u64::from(config.max_outstanding))
            .min(u64::from(info.max_cqe.max(1)));
        config.max_qps = (cqe / u64::from(config.max_outstanding)).max(1) as u32;
        let mut d = RdmaDriver {
            verbs,
            ctx,
            pd: std::ptr::null_mut(),
            channel: std::ptr::null_mut(),
            cq: std::ptr::null_mut(),
            info,
            config,
            mrs: HashMap::new(),
            qps: Vec::new(),
            transfers: HashMap::new(),
            queued: 0,
            next_transfer: 1,
            deregistered: Vec::new(),
            wc: vec![IbvWc::default(); 64],
        };
        let dev = d.info.name.clone();
        // SAFETY: a live context (Drop releases what was created if a later step fails).
        d.pd = unsafe { (verbs.ibv_alloc_pd)(ctx) };
        if d.pd.is_null() {
            return Err(Unavailable::Call(VerbsError::errno(
                "ibv_alloc_pd",
                dev,
                last_errno(),
            )));
        }
        // SAFETY: as above.
        d.channel = unsafe { (verbs.ibv_create_comp_channel)(ctx) };
        if d.channel.is_null() {
            return Err(Unavailable::Call(VerbsError::errno(
                "ibv_create_comp_channel",
                dev,
                last_errno(),
            )));
        }
        // SAFETY: the channel's fd is a descriptor the channel owns; only its flags change.
        unsafe {
            let fd = (*d.channel).fd;
            let fl = libc::fcntl(fd, libc::F_GETFL);
            if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
                return Err(Unavailable::Call(VerbsError::errno(
                    "fcntl",
                    "completion channel O_NONBLOCK",
                    last_errno(),
                )));
            }
        }
        // SAFETY: a live context and channel.
        d.cq = unsafe { (verbs.ibv_create_cq)(ctx, cqe as i32, std::ptr::null_mut(), d.channel, 0) };
        if d.cq.is_null() {
            return Err(Unavailable::Call(VerbsError::errno(
                "ibv_create_cq",
                format!("{cqe} entries on {dev}"),
                last_errno(),
            )));
        }
        Ok(d)
    }

    /// The opened device and port.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The limits in force (the configuration, clamped to the device's).
    pub fn config(&self) -> &RdmaConfig {
        &self.config
    }

    /// The completion channel's fd (non-blocking): readable once a completion arrives after
    /// the CQ was armed. Register it in the event loop and call [`RdmaDriver::poll_and_arm`]
    /// when it is readable.
    pub fn event_fd(&self) -> RawFd {
        // SAFETY: the channel lives as long as the driver.
        unsafe { (*self.channel).fd }
    }

    /// Registers `len` bytes at `addr` with access flags from `perm`.
    ///
    /// # Safety
    /// The memory must stay valid (mapped, not freed) until the region is deregistered and
    /// [`RdmaDriver::deregister`] said [`Deregister::Done`] or its deferred
    /// [`Event::Deregistered`] came; peers with the rkey may read or write it meanwhile, as
    /// `perm` allows.
    pub unsafe fn register(&mut self, addr: u64, len: u64, perm: Perm) -> Result<MemoryRegion, VerbsError> {
        let what = || format!("{addr:#x}+{len} on {}", self.info.name);
        if addr == 0 || len == 0 || addr.checked_add(len).is_none() {
            return Err(VerbsError::refused("ibv_reg_mr", what(), ErrorCode::Invalid));
        }
        // SAFETY: a live PD; the caller guarantees the memory (its contract above).
        let mr = unsafe {
            (self.verbs.ibv_reg_mr)(self.pd, addr as usize as *mut _, len as usize, access_flags(perm))
        };
        if mr.is_null() {
            return Err(VerbsError::errno("ibv_reg_mr", what(), last_errno()));
        }
        // SAFETY: the MR just returned.
        let (lkey, rkey) = unsafe { ((*mr).lkey, (*mr).rkey) };
        let region = MemoryRegion {
            addr,
            len,
            lkey,
            rkey,
            perm,
        };
        self.mrs.insert(
            lkey,
            MrSlot {
                raw: mr,
                region,
                users: 0,
                closing: false,
            },
        );
        Ok(region)
    }

    /// Deregisters the region of `lkey`: now when no transfer uses it, else when the last
    /// one ends. It takes no new transfers from this call on.
    pub fn deregister(&mut self, lkey: u32) -> Result<Deregister, VerbsError> {
        let Some(slot) = self.mrs.get_mut(&lkey).filter(|s| !s.closing) else {
            return Err(VerbsError::refused(
                "ibv_dereg_mr",
                format!("lkey {lkey:#x}"),
                ErrorCode::NotFound,
            ));
        };
        if slot.users > 0 {
            slot.closing = true;
            return Ok(Deregister::Deferred {
                transfers: slot.users,
            });
        }
        self.dereg_now(lkey).map(|()| Deregister::Done)
    }

    fn dereg_now(&mut self, lkey: u32) -> Result<(), VerbsError> {
        let Some(slot) = self.mrs.remove(&lkey) else {
            return Ok(());
        };
        // SAFETY: a live MR of this driver, deregistered once (removed from the table).
        let rc = unsafe { (self.verbs.ibv_dereg_mr)(slot.raw) };
        if rc != 0 {
            return Err(VerbsError::errno(
                "ibv_dereg_mr",
                format!("{:#x}+{}", slot.region.addr, slot.region.len),
                rc_errno(rc),
            ));
        }
        Ok(())
    }

    /// Creates an RC queue pair (RESET) with `max_outstanding` send work requests.
    pub fn create_qp(&mut self) -> Result<QpId, VerbsError> {
        let live = self.qps.iter().filter(|q| q.is_some()).count();
        if live >= self.config.max_qps as usize {
            return Err(VerbsError::refused(
                "ibv_create_qp",
                format!(
                    "all {} queue pairs the CQ is sized for are in use",
                    self.config.max_qps
                ),
                ErrorCode::NotReady,
            ));
        }
        let raw = qp::create(
            self.verbs,
            self.pd,
            self.cq,
            self.config.max_outstanding,
            &self.info.name,
        )?;
        // SAFETY: the QP just created.
        let qpn = unsafe { (*raw).qp_num };
        let slot = QpSlot {
            raw,
            qpn,
            psn: qp::fresh_psn(qpn),
            state: QpState::Idle,
            outstanding: 0,
            waiting: Default::default(),
        };
        let i = match self.qps.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.qps.push(None);
                self.qps.len() - 1
            }
        };
        self.qps[i] = Some(slot);
        Ok(QpId(i as u32))
    }

    fn slot(&self, id: QpId) -> Result<&QpSlot, VerbsError> {
        self.qps
            .get(id.0 as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| VerbsError::refused("ibv_qp", format!("queue pair {}", id.0), ErrorCode::NotFound))
    }

    fn slot_mut(&mut self, id: QpId) -> Result<&mut QpSlot, VerbsError> {
        self.qps
            .get_mut(id.0 as usize)
            .and_then(Option::as_mut)
            .ok_or_else(|| VerbsError::refused("ibv_qp", format!("queue pair {}", id.0), ErrorCode::NotFound))
    }

    /// What the peer needs to connect to queue pair `id`.
    pub fn conn_info(&self, id: QpId) -> Result<ConnInfo, VerbsError> {
        let s = self.slot(id)?;
        Ok(ConnInfo {
            qpn: s.qpn,
            psn: s.psn,
            gid: self.info.gid,
            lid: self.info.lid,
            mtu: self.info.mtu,
        })
    }

    /// Connects queue pair `id` to the peer's `remote` (RESET→INIT→RTR→RTS).
    pub fn connect(&mut self, id: QpId, remote: &ConnInfo) -> Result<(), VerbsError> {
        let s = self.slot(id)?;
        if s.state != QpState::Idle {
            return Err(VerbsError::refused(
                "ibv_modify_qp",
                format!("queue pair {} is not idle", id.0),
                ErrorCode::Invalid,
            ));
        }
        qp::connect(self.verbs, s.raw, s.psn, &self.info, remote)?;
        self.slot_mut(id)?.state = QpState::Connected;
        Ok(())
    }

    /// The driver's view of queue pair `id`.
    pub fn qp_state(&self, id: QpId) -> Result<QpState, VerbsError> {
        Ok(self.slot(id)?.state.clone())
    }

    /// The state the library reports for queue pair `id` (`enum ibv_qp_state`, through
    /// `ibv_query_qp`).
    pub fn query_qp_state(&self, id: QpId) -> Result<i32, VerbsError> {
        qp::query_state(self.verbs, self.slot(id)?.raw)
    }

    /// Destroys queue pair `id`; its unfinished transfers end failed (`Canceled`), reported
    /// by the next [`RdmaDriver::poll`].
    pub fn destroy_qp(&mut self, id: QpId) -> Result<(), VerbsError> {
        let s = self.slot(id)?;
        // SAFETY: a live QP of this driver, destroyed once (the slot is emptied below).
        let rc = unsafe { (self.verbs.ibv_destroy_qp)(s.raw) };
        if rc != 0 {
            return Err(VerbsError::errno(
                "ibv_destroy_qp",
                format!("qpn {:#x}", s.qpn),
                rc_errno(rc),
            ));
        }
        self.qps[id.0 as usize] = None;
        let cancel = VerbsError::refused(
            "ibv_destroy_qp",
            format!("queue pair {} destroyed", id.0),
            ErrorCode::Canceled,
        );
        for t in self.transfers.values_mut().filter(|t| t.qp == id) {
            if t.unposted() > 0 {
                self.queued -= 1;
            }
            t.posted = 0;
            t.fail(cancel.clone());
        }
        Ok(())
    }

    /// Submits a transfer on queue pair `id`: checks it, cuts it into work requests and posts
    /// what the send queue has room for (the rest is posted as completions free room). An
    /// error here means nothing of it was posted: the QP is not connected or failed, the local
    /// range is not inside the region of `lkey` (or that is being deregistered), the queue of
    /// waiting transfers is full, or `ibv_post_send` refused its first work request.
    pub fn submit(&mut self, id: QpId, t: Transfer) -> Result<TransferId, VerbsError> {
        let what = || format!("{:?} of {} bytes on queue pair {}", t.op, t.len, id.0);
        let s = self.slot(id)?;
        if let QpState::Failed(e) = &s.state {
            return Err(VerbsError::refused(
                "ibv_post_send",
                format!("{}: queue pair failed earlier: {e}", what()),
                ErrorCode::Disconnected,
            ));
        }
        let chunk = u64::from(self.config.max_wr_bytes);
        if t.len == 0
            || t.remote_addr.checked_add(t.len).is_none()
            || t.len.div_ceil(chunk) >= 1 << CHUNK_BITS
        {
            return Err(VerbsError::refused("ibv_post_send", what(), ErrorCode::Invalid));
        }
        match self.mrs.get(&t.lkey) {
            Some(m) if !m.closing && m.region.covers(t.local_addr, t.len) => {}
            _ => {
                return Err(VerbsError::refused(
                    "ibv_post_send",
                    format!(
                        "{}: local {:#x}+{} is not inside the region of lkey {:#x}",
                        what(),
                        t.local_addr,
                        t.len,
                        t.lkey
                    ),
                    ErrorCode::NotFound,
                ))
            }
        }
        if self.queued >= self.config.max_queued {
            return Err(VerbsError::refused(
                "ibv_post_send",
                format!("{}: {} transfers already wait", what(), self.queued),
                ErrorCode::NotReady,
            ));
        }
        let tid = self.next_transfer;
        self.next_transfer += 1;
        self.transfers.insert(tid, InFlight::new(id, t, chunk));
        self.queued += 1;
        self.slot_mut(id)?.waiting.push_back(tid);
        self.pump(id);
        let f = &self.transfers[&tid];
        if let (Some(e), 0) = (&f.error, f.next) {
            let e = e.clone();
            self.transfers.remove(&tid);
            return Err(e);
        }
        if let Some(m) = self.mrs.get_mut(&t.lkey) {
            m.users += 1;
        }
        Ok(TransferId(tid))
    }

    /// Posts waiting work of queue pair `id` while its send queue has room.
    fn pump(&mut self, id: QpId) {
        let max = self.config.max_outstanding;
        let Ok(s) = self.slot(id) else { return };
        // An idle QP is posted to all the same: the library refuses (EINVAL outside RTS).
        if matches!(s.state, QpState::Failed(_)) {
            return;
        }
        let raw = s.raw;
        let mut outstanding = s.outstanding;
        let mut waiting = std::mem::take(&mut self.slot_mut(id).expect("checked").waiting);
        while outstanding < max {
            let Some(&tid) = waiting.front() else { break };
            let Some(f) = self.transfers.get_mut(&tid) else {
                waiting.pop_front();
                continue;
            };
            let room = u64::from(max - outstanding);
            let n = f.unposted().min(room) as usize;
            if n == 0 {
                // Nothing of it left to post (room > 0, so unposted() == 0):
                // never an empty chain, whose pointer would dangle.
                waiting.pop_front();
                self.queued -= 1;
                continue;
            }
            // Build the chain: all SGEs first, then the WRs pointing at them through raw
            // pointers taken once the vectors are complete (neither moves afterwards).
            let mut sges: Vec<IbvSge> = (0..n as u64)
                .map(|k| {
                    let (off, len) = f.chunk_span(f.next + k);
                    IbvSge {
                        addr: f.t.local_addr + off,
                        length: len,
                        lkey: f.t.lkey,
                    }
                })
                .collect();
            let sge_base = sges.as_mut_ptr();
            let mut wrs: Vec<IbvSendWr> = (0..n as u64)
                .map(|k| {
                    let i = f.next + k;
                    // SAFETY: all-zero is a valid send WR (null pointers, zero numbers).
                    let mut wr: IbvSendWr = unsafe { std::mem::zeroed() };
                    wr.wr_id = (tid << CHUNK_BITS) | i;
                    // SAFETY: k < n = sges.len().
                    wr.sg_list = unsafe { sge_base.add(k as usize) };
                    wr.num_sge = 1;
                    wr.opcode = match f.t.op {
                        Op::Read => IBV_WR_RDMA_READ,
                        Op::Write => IBV_WR_RDMA_WRITE,
                    };
                    wr.send_flags = IBV_SEND_SIGNALED;
                    wr.remote_addr = f.t.remote_addr + f.chunk_span(i).0;
                    wr.rkey = f.t.rkey;
                    wr
                })
                .collect();
            let wr_base = wrs.as_mut_ptr();
            for k in 1..n {
                // SAFETY: k - 1 and k are below n = wrs.len().
                unsafe { (*wr_base.add(k - 1)).next = wr_base.add(k) };
            }
            let mut bad: *mut IbvSendWr = std::ptr::null_mut();
            // SAFETY: a live QP; the WR chain and its SGEs live until the call returns (the
            // provider copies what it needs into its send queue).
            let rc = unsafe { ops::post_send(raw, wr_base, &mut bad) };
            let accepted = if rc == 0 {
                n
            } else {
                (0..n)
                    .position(|k| std::ptr::eq(wr_base.wrapping_add(k), bad))
                    .unwrap_or(0)
            };
            drop((wrs, sges));
            f.next += accepted as u64;
            f.posted += accepted as u32;
            outstanding += accepted as u32;
            if rc != 0 {
                let (off, _) = f.chunk_span(f.next);
                f.fail(VerbsError::errno(
                    "ibv_post_send",
                    format!("{:?} work request at offset {off} of {} bytes", f.t.op, f.t.len),
                    rc,
                ));
            }
            if f.unposted() == 0 {
                waiting.pop_front();
                self.queued -= 1;
            }
            if rc != 0 {
                break;
            }
        }
        let s = self.slot_mut(id).expect("checked");
        s.outstanding = outstanding;
        s.waiting = waiting;
    }

    /// Requests a completion event: the next completion makes [`RdmaDriver::event_fd`]
    /// readable. A completion that came just before is only found by polling again, and a
    /// poll that takes the event disarms the CQ: [`RdmaDriver::poll_and_arm`] does it right.
    pub fn arm(&mut self) -> Result<(), VerbsError> {
        // SAFETY: the driver's live CQ.
        let rc = unsafe { ops::req_notify_cq(self.cq, 0) };
        if rc != 0 {
            return Err(VerbsError::errno("ibv_req_notify_cq", self.info.name.clone(), rc));
        }
        Ok(())
    }

    /// Reads the channel's pending events (`ibv_get_cq_event`) and acknowledges them
    /// (`ibv_ack_cq_events`): how many there were.
    fn take_events(&mut self) -> Result<u32, VerbsError> {
        let mut n = 0;
        loop {
            let mut cq: *mut IbvCq = std::ptr::null_mut();
            let mut cq_ctx: *mut std::ffi::c_void = std::ptr::null_mut();
            // SAFETY: the driver's live channel (non-blocking); writable out pointers.
            let rc = unsafe { (self.verbs.ibv_get_cq_event)(self.channel, &mut cq, &mut cq_ctx) };
            if rc != 0 {
                let e = last_errno();
                if n > 0 {
                    // SAFETY: the driver's live CQ, the only one on this channel.
                    unsafe { (self.verbs.ibv_ack_cq_events)(self.cq, n) };
                }
                if e == libc::EAGAIN {
                    return Ok(n);
                }
                return Err(VerbsError::errno("ibv_get_cq_event", self.info.name.clone(), e));
            }
            n += 1;
        }
    }

    /// Takes the channel's events, polls every completion, posts the work that now has room
    /// and appends what ended to `out`: how many events were appended. Does not arm the CQ:
    /// before sleeping on [`RdmaDriver::event_fd`], call [`RdmaDriver::poll_and_arm`].
    pub fn poll(&mut self, out: &mut Vec<Event>) -> Result<usize, VerbsError> {
        let before = out.len();
        self.poll_inner(out)?;
        Ok(out.len() - before)
    }

    /// Polls, then arms the CQ and polls again until a poll after arming found nothing (no
    /// channel event, no completion), so that the next completion is certain to make
    /// [`RdmaDriver::event_fd`] readable: what the event loop calls when the fd is readable
    /// (and once at start). Returns the events appended.
    pub fn poll_and_arm(&mut self, out: &mut Vec<Event>) -> Result<usize, VerbsError> {
        let before = out.len();
        self.poll_inner(out)?;
        loop {
            self.arm()?;
            if self.poll_inner(out)? == 0 {
                return Ok(out.len() - before);
            }
        }
    }

    /// One round of [`RdmaDriver::poll`]: the channel events and completions it consumed.
    fn poll_inner(&mut self, out: &mut Vec<Event>) -> Result<u32, VerbsError> {
        let mut activity = self.take_events()?;
        out.append(&mut self.deregistered);
        loop {
            // SAFETY: the driver's live CQ; `wc` has room for its length.
            let n = unsafe { ops::poll_cq(self.cq, self.wc.len() as i32, self.wc.as_mut_ptr()) };
            if n < 0 {
                return Err(VerbsError::errno("ibv_poll_cq", self.info.name.clone(), -n));
            }
            activity += n as u32;
            for i in 0..n as usize {
                let wc = self.wc[i];
                self.complete(&wc);
            }
            if (n as usize) < self.wc.len() {
                break;
            }
        }
        for i in 0..self.qps.len() {
            self.pump(QpId(i as u32));
        }
        self.reap(out);
        Ok(activity)
    }

    fn complete(&mut self, wc: &IbvWc) {
        let tid = wc.wr_id >> CHUNK_BITS;
        let chunk = wc.wr_id & ((1 << CHUNK_BITS) - 1);
        // A completion of a destroyed QP (its transfers already ended) is dropped.
        let Some(q) = self.qps.iter_mut().flatten().find(|q| q.qpn == wc.qp_num) else {
            return;
        };
        q.outstanding = q.outstanding.saturating_sub(1);
        let Some(f) = self.transfers.get_mut(&tid) else {
            return;
        };
        f.posted = f.posted.saturating_sub(1);
        if wc.status as u32 == IBV_WC_SUCCESS {
            f.bytes += u64::from(f.chunk_span(chunk).1);
            return;
        }
        let (off, _) = f.chunk_span(chunk);
        let e = VerbsError {
            call: "ibv_poll_cq",
            what: format!(
                "{:?} work request at offset {off} of {} bytes, remote {:#x} rkey {:#x}",
                f.t.op, f.t.len, f.t.remote_addr, f.t.rkey
            ),
            cause: Cause::Completion {
                status: wc.status as u32,
                vendor_err: wc.vendor_err,
            },
        };
        if f.unposted() > 0 {
            self.queued -= 1;
        }
        f.fail(e.clone());
        // The QP is in ERR now: its other posted work flushes; what waits is not posted.
        if q.state == QpState::Connected {
            q.state = QpState::Failed(e.clone());
        }
        let waiting = std::mem::take(&mut q.waiting);
        for w in waiting {
            if let Some(o) = self.transfers.get_mut(&w) {
                if o.unposted() > 0 {
                    self.queued -= 1;
                }
                o.fail(e.clone());
            }
        }
    }

    /// Reports finished transfers and runs deregistrations they were holding up.
    fn reap(&mut self, out: &mut Vec<Event>) {
        let mut done: Vec<u64> = self
            .transfers
            .iter()
            .filter(|(_, f)| f.finished())
            .map(|(&k, _)| k)
            .collect();
        done.sort_unstable();
        for tid in done {
            let f = self.transfers.remove(&tid).expect("listed");
            out.push(Event::Transfer {
                id: TransferId(tid),
                result: f.error.map_or(Ok(()), Err),
                bytes: f.bytes,
            });
            let lkey = f.t.lkey;
            let release = match self.mrs.get_mut(&lkey) {
                Some(m) => {
                    m.users -= 1;
                    m.closing && m.users == 0
                }
                None => false,
            };
            if release {
                let result = self.dereg_now(lkey);
                out.push(Event::Deregistered { lkey, result });
            }
        }
    }

    /// Waits until something ends or `timeout` passes, without spinning:
    /// [`RdmaDriver::poll_and_arm`], then `poll(2)` on the channel fd. Returns the events
    /// appended.
    pub fn wait(&mut self, timeout: Duration, out: &mut Vec<Event>) -> Result<usize, VerbsError> {
        let end = Instant::now() + timeout;
        loop {
            let n = self.poll_and_arm(out)?;
            if n > 0 {
                return Ok(n);
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(0);
            }
            let mut pfd = libc::pollfd {
                fd: self.event_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 && last_errno() != libc::EINTR {
                return Err(VerbsError::errno("poll", "completion channel", last_errno()));
            }
        }
    }

    /// Transfers submitted and not yet reported.
    pub fn in_flight(&self) -> usize {
        self.transfers.len()
    }
}

impl Drop for RdmaDriver {
    fn drop(&mut self) {
        let v = self.verbs;
        // SAFETY: every object below was created by this driver and is destroyed once, in
        // the order verbs requires (QPs, MRs, CQ, channel, PD, context); null ones were never
        // created. Events were acknowledged as they were read.
        unsafe {
            for q in self.qps.drain(..).flatten() {
                (v.ibv_destroy_qp)(q.raw);
            }
            for (_, m) in self.mrs.drain() {
                (v.ibv_dereg_mr)(m.raw);
            }
            if !self.cq.is_null() {
                (v.ibv_destroy_cq)(self.cq);
            }
            if !self.channel.is_null() {
                (v.ibv_destroy_comp_channel)(self.channel);
            }
            if !self.pd.is_null() {
                (v.ibv_dealloc_pd)(self.pd);
            }
            (v.ibv_close_device)(self.ctx);
        }
    }
}
