//! The engine's RDMA device (docs/RDMA.md): opened at start when the
//! configuration asks for it, else the reason RDMA is off, logged once and
//! shown by `te info`.
//!
//! What the NIC holds for the engine lives here: host regions registered
//! with it (and announced with their rkeys to peers over the links they
//! opened), the queue pair of each link, and the transfers posted for
//! the links' RDMA tasks. The core calls in at the points where a link
//! connects, exchanges queue pairs, feeds tasks, closes, and where memory
//! is registered and unregistered; completions come through the
//! completion channel's fd, registered in the core's mio poll.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

use te_driver_rdma::{
    Deregister, Event, MemoryRegion, Op, QpId, RdmaConfig, RdmaDriver, Transfer, TransferId,
};
use te_proto::batch::Op as TaskOp;
use te_proto::batch::TaskId;
use te_proto::link::{Link, RdmaKey};
use te_proto::rdma::{common_fabric, RdmaOff};
use te_proto::{status, Instant, Region, Status};
use tracing::{debug, error, info, warn};

/// The least time a withdrawn region stays registered with the NIC
/// waiting for a peer to answer that its transfers on it ended
/// (`RdmaKeyClosed`); the wait is the engine's transfer timeout when that
/// is longer (a peer's transfers end by then). Then it is deregistered
/// regardless: a transfer of that peer still running fails with a remote
/// access error, touching nothing.
pub(crate) const RDMA_KEY_WAIT_MIN: Duration = Duration::from_secs(10);

/// The RDMA section of [`EngineConfig`](crate::EngineConfig).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdmaSettings {
    /// Try to open a device at start (default true; a failure only turns
    /// RDMA off, logged once).
    pub enabled: bool,
    /// The verbs library; `None`: `$TE_VERBS_LIBRARY`, else `libibverbs.so.1`.
    pub library: Option<PathBuf>,
    /// The device by name (`mlx5_0`); `None`: the first listed.
    pub device: Option<String>,
    /// Port number, 1-based (default 1).
    pub port: u8,
    /// GID table index (default 0).
    pub gid_index: u8,
}

impl Default for RdmaSettings {
    fn default() -> RdmaSettings {
        RdmaSettings {
            enabled: true,
            library: None,
            device: None,
            port: 1,
            gid_index: 0,
        }
    }
}

/// The device, or why there is none.
pub(crate) struct Rdma {
    /// `RDMA: <device> port <n> gid index <i>` or `RDMA off: <reason>`.
    status: String,
    nic: Option<Nic>,
}

/// One host region registered with the NIC.
#[derive(Clone, Copy, Debug)]
struct Registered {
    mr: MemoryRegion,
    /// Its id in `RdmaKey` announcements (never reused).
    key: u64,
}

/// A region unregistered from the engine whose memory region lives on
/// until no peer can reach it.
struct Retiring {
    reg: Registered,
    since: Instant,
    /// `ibv_dereg_mr` is deferred behind local transfers still on it.
    deferred: bool,
    /// `ibv_dereg_mr` failed: the NIC may still serve the region, so it
    /// stays "retiring" for good (unregister never reports it free).
    stuck: bool,
}

/// The open device and what it holds.
struct Nic {
    driver: RdmaDriver,
    /// Host regions registered, by base address.
    regions: HashMap<u64, Registered>,
    retiring: Vec<Retiring>,
    /// Each link's queue pair, by connection index.
    qps: HashMap<usize, QpId>,
    /// Posted transfers: the connection and the task.
    transfers: HashMap<TransferId, (usize, TaskId)>,
    next_key: u64,
    events: Vec<Event>,
    /// How long a withdrawal waits for the peers' answers.
    key_wait: Duration,
}

/// What the NIC finished: the task of connection `conn` ended with `result`.
pub(crate) struct Finished {
    pub conn: usize,
    pub task: TaskId,
    pub result: te_proto::Result<()>,
}

impl Rdma {
    /// Opens the device `settings` names, logging the outcome once; a
    /// withdrawn region waits for peers at most `key_wait` (at least
    /// [`RDMA_KEY_WAIT_MIN`]).
    pub fn open(settings: &RdmaSettings, key_wait: Duration) -> Rdma {
        if !settings.enabled {
            return Rdma::off("disabled in the configuration".into());
        }
        let cfg = RdmaConfig {
            library: settings.library.clone(),
            device: settings.device.clone(),
            port: settings.port,
            gid_index: settings.gid_index,
            ..Default::default()
        };
        match RdmaDriver::open(cfg) {
            Ok(driver) => {
                let i = driver.info();
                let status = format!("RDMA: {} port {} gid index {}", i.name, i.port, i.gid_index);
                info!("{status}");
                Rdma {
                    status,
                    nic: Some(Nic {
                        driver,
                        regions: HashMap::new(),
                        retiring: Vec::new(),
                        qps: HashMap::new(),
                        transfers: HashMap::new(),
                        next_key: 1,
                        events: Vec::new(),
                        key_wait: key_wait.max(RDMA_KEY_WAIT_MIN),
                    }),
                }
            }
            Err(why) => Rdma::off(why.to_string()),
        }
    }

    fn off(why: String) -> Rdma {
        let status = format!("RDMA off: {why}");
        info!("{status}");
        Rdma { status, nic: None }
    }

    /// `RDMA: <device> port <n> gid index <i>` or `RDMA off: <reason>`.
    pub fn status(&self) -> &str {
        &self.status
    }

    /// Whether a device is open.
    pub fn is_on(&self) -> bool {
        self.nic.is_some()
    }

    /// The completion channel's fd, to register in the event loop.
    pub fn event_fd(&self) -> Option<RawFd> {
        self.nic.as_ref().map(|n| n.driver.event_fd())
    }

    /// Turns RDMA off after the start (the loop could not watch its fd).
    pub fn turn_off(&mut self, why: &str) {
        warn!("RDMA off: {why}");
        self.status = format!("RDMA off: {why}");
        self.nic = None;
    }

    // ---- memory ----

    /// Registers host `region` with the NIC (any permission: a local-only
    /// region is the local side of transfers; the NIC refuses peers what
    /// `perm` does not grant). Returns the rkey to list for a region with a
    /// remote permission, and the announcement for peers.
    pub fn register(&mut self, region: &Region) -> Option<RdmaKey> {
        let nic = self.nic.as_mut()?;
        let (addr, len, perm) = (region.span.addr, region.span.len, region.perm);
        // SAFETY: the registrant keeps the memory valid until unregister
        // has returned (EngineCore::register's contract), and unregister
        // waits until the memory region is deregistered (`retiring`).
        let mr = match unsafe { nic.driver.register(addr, len, perm) } {
            Ok(mr) => mr,
            Err(e) => {
                warn!("region {addr:#x}+{len:#x} not registered with the NIC, its transfers use TCP: {e}");
                return None;
            }
        };
        let key = nic.next_key;
        nic.next_key += 1;
        nic.regions.insert(addr, Registered { mr, key });
        (!perm.is_empty()).then_some(RdmaKey {
            id: key,
            base: addr,
            len,
            rkey: mr.rkey,
            perm,
        })
    }

    /// The announcements of every registered region with a remote
    /// permission, for a link whose queue pairs were just exchanged.
    pub fn announcements(&self) -> Vec<RdmaKey> {
        let Some(nic) = self.nic.as_ref() else {
            return Vec::new();
        };
        nic.regions
            .values()
            .filter(|r| !r.mr.perm.is_empty())
            .map(|r| RdmaKey {
                id: r.key,
                base: r.mr.addr,
                len: r.mr.len,
                rkey: r.mr.rkey,
                perm: r.mr.perm,
            })
            .collect()
    }

    /// The lkey of the region with base `base`, when registered.
    pub fn lkey(&self, base: u64) -> Option<u32> {
        Some(self.nic.as_ref()?.regions.get(&base)?.mr.lkey)
    }

    /// Region `base` is being unregistered: it is announced no more, and
    /// its memory region is deregistered once no peer can reach it
    /// ([`reap`](Self::reap)). Returns its announcement id, to withdraw
    /// from every link.
    pub fn retire(&mut self, base: u64, now: Instant) -> Option<u64> {
        let nic = self.nic.as_mut()?;
        let reg = nic.regions.remove(&base)?;
        nic.retiring.push(Retiring {
            reg,
            since: now,
            deferred: false,
            stuck: false,
        });
        Some(reg.key)
    }

    /// Whether the memory region of unregistered region `base` is still
    /// registered (a peer may still reach it, or a local transfer runs).
    pub fn retiring(&self, base: u64) -> bool {
        self.nic
            .as_ref()
            .is_some_and(|n| n.retiring.iter().any(|r| r.reg.mr.addr == base))
    }

    /// Whether anything waits to be deregistered.
    pub fn any_retiring(&self) -> bool {
        self.nic.as_ref().is_some_and(|n| !n.retiring.is_empty())
    }

    /// When the oldest withdrawal is given up on.
    pub fn next_deadline(&self) -> Option<Instant> {
        let nic = self.nic.as_ref()?;
        nic.retiring
            .iter()
            .filter(|r| !r.deferred && !r.stuck)
            .map(|r| r.since + nic.key_wait)
            .min()
    }

    /// Deregisters the retiring regions that no peer answers for any more
    /// (`closing(key)` false), or whose wait ran out: their ids are
    /// returned, so that links stop waiting for an answer.
    pub fn reap(&mut self, now: Instant, closing: impl Fn(u64) -> bool) -> Vec<u64> {
        let mut given_up = Vec::new();
        let Some(nic) = self.nic.as_mut() else {
            return given_up;
        };
        let mut i = 0;
        while i < nic.retiring.len() {
            let r = &mut nic.retiring[i];
            if r.deferred || r.stuck {
                i += 1;
                continue;
            }
            let key = r.reg.key;
            if closing(key) {
                if now < r.since + nic.key_wait {
                    i += 1;
                    continue;
                }
                warn!(
                    "a peer did not answer the withdrawal of RDMA region {:#x}+{:#x} within {:?}: \
                     deregistering it regardless",
                    r.reg.mr.addr, r.reg.mr.len, nic.key_wait
                );
                given_up.push(key);
            }
            match nic.driver.deregister(r.reg.mr.lkey) {
                Ok(Deregister::Deferred { .. }) => {
                    r.deferred = true;
                    i += 1;
                }
                Ok(Deregister::Done) => {
                    nic.retiring.swap_remove(i);
                }
                Err(e) => {
                    error!("{e}: the NIC may still serve the region, so it is never reported unregistered");
                    r.stuck = true;
                    i += 1;
                }
            }
        }
        given_up
    }

    // ---- links ----

    /// The connector's side: a queue pair for connection `c`'s link and
    /// the offer of it; nothing when the peer has no RDMA or no queue pair
    /// can be made (logged).
    pub fn offer(&mut self, c: usize, link: &mut Link) {
        let Some(nic) = self.nic.as_mut() else { return };
        let qp = match nic.driver.create_qp() {
            Ok(qp) => qp,
            Err(e) => {
                info!("no RDMA to this peer, its transfers use TCP: {e}");
                return;
            }
        };
        let offered = nic
            .driver
            .conn_info(qp)
            .map_err(|e| e.to_status())
            .and_then(|info| link.offer_rdma(&[info]));
        match offered {
            Ok(()) => {
                nic.qps.insert(c, qp);
            }
            Err(e) => {
                debug!("no RDMA offer: {e}");
                let _ = nic.driver.destroy_qp(qp);
            }
        }
    }

    /// The peer's `RdmaConn` came on connection `c`: the acceptor answers
    /// with a queue pair connected to the peer's (or refuses), the
    /// connector connects its own to the answer. Returns whether the link
    /// can carry RDMA now (both queue pairs connected).
    pub fn on_exchange(&mut self, c: usize, link: &mut Link) -> bool {
        let Some(nic) = self.nic.as_mut() else {
            if link.rdma().offer_pending() {
                let _ = link.answer_rdma(Err(RdmaOff::NoDevice));
            }
            return false;
        };
        if link.rdma().offer_pending() {
            return nic.answer(c, link);
        }
        let Some(&qp) = nic.qps.get(&c) else {
            return false;
        };
        let remote = match link.rdma().peer() {
            Some(Ok(peer)) => link.rdma().local().and_then(|mine| {
                let mine = mine.first()?;
                peer.iter().find(|p| common_fabric(mine, p)).copied()
            }),
            Some(Err(why)) => {
                info!("the peer refused RDMA, its transfers use TCP: {}", why.as_str());
                None
            }
            None => return false,
        };
        let connected = match remote {
            Some(remote) => nic.driver.connect(qp, &remote).map_err(|e| {
                warn!("no RDMA to this peer, its transfers use TCP: {e}");
            }),
            None => Err(()),
        };
        if connected.is_ok() {
            link.rdma_mut().set_available(true);
            return link.rdma().available();
        }
        // The queue pair serves nothing: it goes now, not with the link.
        nic.qps.remove(&c);
        if let Err(e) = nic.driver.destroy_qp(qp) {
            warn!("{e}");
        }
        false
    }

    /// Connection `c`'s link closed: its queue pair is destroyed, so the
    /// NIC touches none of its tasks' memory any more, and every posted
    /// task ends (with the link's reason, which the link keeps).
    pub fn drop_link(&mut self, c: usize, link: &mut Link) {
        let why = status!(Disconnected, "queue pair destroyed with its connection");
        self.end_link(c, link, &why);
    }

    /// Destroys connection `c`'s queue pair and ends its posted tasks with
    /// `why` (unless the destroy failed: then they stay unreported).
    fn end_link(&mut self, c: usize, link: &mut Link, why: &Status) {
        let Some(nic) = self.nic.as_mut() else { return };
        if let Some(qp) = nic.qps.remove(&c) {
            if let Err(e) = nic.driver.destroy_qp(qp) {
                // The NIC may still move their bytes: the tasks stay
                // unreported (their memory pinned), never ended early.
                error!("{e}: the link's RDMA transfers in flight are never reported done");
                nic.transfers.retain(|_, (conn, _)| *conn != c);
                return;
            }
        }
        let mine: Vec<TransferId> = nic
            .transfers
            .iter()
            .filter(|(_, (conn, _))| *conn == c)
            .map(|(id, _)| *id)
            .collect();
        for id in mine {
            if let Some((_, task)) = nic.transfers.remove(&id) {
                link.rdma_mut().done(task, Err(why.clone()));
            }
        }
    }

    /// Posts the RDMA tasks connection `c`'s link has for the NIC; a task
    /// the driver refuses ends with the refusal.
    pub fn post(&mut self, c: usize, link: &mut Link) {
        let Some(nic) = self.nic.as_mut() else { return };
        let qp = nic.qps.get(&c).copied();
        while let Some(w) = link.rdma_mut().next_post() {
            let t = Transfer {
                op: match w.op {
                    TaskOp::Read => Op::Read,
                    TaskOp::Write => Op::Write,
                },
                lkey: w.lkey,
                local_addr: w.local.addr,
                remote_addr: w.remote_addr,
                rkey: w.rkey,
                len: w.local.len,
            };
            let posted = match qp {
                Some(qp) => nic.driver.submit(qp, t).map_err(|e| e.to_status()),
                None => Err(status!(Disconnected, "the link has no queue pair")),
            };
            match posted {
                Ok(id) => {
                    nic.transfers.insert(id, (c, w.task));
                }
                Err(e) => {
                    link.rdma_mut().done(w.task, Err(e));
                }
            }
        }
    }

    /// Takes the NIC's completions (and arms it for the next), as tasks
    /// ended; deferred deregistrations that ran are forgotten. `Err`: the
    /// completion queue failed, so no completion can be trusted to come
    /// any more (the caller ends every link's RDMA, [`fail`](Self::fail)).
    pub fn poll(&mut self) -> std::result::Result<Vec<Finished>, Status> {
        let Some(nic) = self.nic.as_mut() else {
            return Ok(Vec::new());
        };
        let mut events = std::mem::take(&mut nic.events);
        let polled = nic.driver.poll_and_arm(&mut events);
        let mut done = Vec::new();
        for e in events.drain(..) {
            match e {
                Event::Transfer { id, result, .. } => {
                    if let Some((conn, task)) = nic.transfers.remove(&id) {
                        done.push(Finished {
                            conn,
                            task,
                            result: result.map_err(|e| e.to_status()),
                        });
                    }
                }
                Event::Deregistered { lkey, result } => {
                    match result {
                        Ok(()) => nic.retiring.retain(|r| r.reg.mr.lkey != lkey),
                        Err(e) => {
                            error!("{e}: the NIC may still serve the region, so it is never reported unregistered");
                            for r in nic.retiring.iter_mut().filter(|r| r.reg.mr.lkey == lkey) {
                                r.stuck = true;
                            }
                        }
                    }
                }
            }
        }
        nic.events = events;
        match polled {
            Ok(_) => Ok(done),
            Err(e) => Err(status!(=e.code(), "RDMA completion queue failed: {e}")),
        }
    }

    /// The completion queue failed: every link's queue pair goes (so the
    /// NIC touches no task's memory any more) and its posted tasks end with
    /// `why`, then the device closes; transfers use TCP from now on.
    pub fn fail(&mut self, why: &Status, links: &mut [(usize, &mut Link)]) {
        for (c, link) in links.iter_mut() {
            self.end_link(*c, link, why);
            link.rdma_mut().set_lost(why.clone());
        }
        self.turn_off(why.message());
    }

    /// Whether the link's queue pair failed (a transfer error moved it to
    /// the error state): its tasks go over TCP from now on.
    pub fn qp_failed(&self, c: usize) -> bool {
        let Some(nic) = self.nic.as_ref() else {
            return false;
        };
        nic.qps.get(&c).is_some_and(|&qp| {
            matches!(
                nic.driver.qp_state(qp),
                Ok(te_driver_rdma::QpState::Failed(_)) | Err(_)
            )
        })
    }

    /// Closes the device: every queue pair and memory region goes.
    pub fn close(&mut self) {
        self.nic = None;
    }
}

impl Nic {
    /// The acceptor's answer to the peer's offer on connection `c`.
    fn answer(&mut self, c: usize, link: &mut Link) -> bool {
        let Some(Ok(peer)) = link.rdma().peer() else {
            return false;
        };
        let qp = match self.driver.create_qp() {
            Ok(qp) => qp,
            Err(e) => {
                info!("refusing a peer's RDMA offer, its transfers use TCP: {e}");
                let _ = link.answer_rdma(Err(RdmaOff::SetupFailed));
                return false;
            }
        };
        let mine = match self.driver.conn_info(qp) {
            Ok(i) => i,
            Err(e) => {
                warn!("{e}");
                let _ = self.driver.destroy_qp(qp);
                let _ = link.answer_rdma(Err(RdmaOff::SetupFailed));
                return false;
            }
        };
        let Some(remote) = peer.iter().find(|p| common_fabric(&mine, p)).copied() else {
            let _ = self.driver.destroy_qp(qp);
            let _ = link.answer_rdma(Err(RdmaOff::NoCommonFabric));
            return false;
        };
        if let Err(e) = self.driver.connect(qp, &remote) {
            warn!("refusing a peer's RDMA offer: {e}");
            let _ = self.driver.destroy_qp(qp);
            let _ = link.answer_rdma(Err(RdmaOff::SetupFailed));
            return false;
        }
        if link.answer_rdma(Ok(&[mine])).is_err() {
            let _ = self.driver.destroy_qp(qp);
            return false;
        }
        self.qps.insert(c, qp);
        true
    }
}
