//! The RDMA half of a link (docs/PROTOCOL.md, "RDMA path"): the queue pairs
//! this side offered or answered with, what the peer said, and the
//! `RdmaConn` frame due; the regions each side announced with their rkeys
//! (`RdmaKey`); and this side's RDMA tasks, which the shell posts to its
//! NIC. The exchange runs once, after the handshake (so after
//! authentication when a secret is set): the connector offers, the
//! acceptor answers with its own queue pairs or refuses with a reason.
//! The shell creates and connects the queue pairs; the link only carries
//! their [`ConnInfo`]s and enforces the order.
//!
//! The owner of memory announces its regions with a remote permission to
//! the peer (`RdmaKey`), the peer's tasks on them go by RDMA READ and WRITE
//! that the owner never sees, and a withdrawn region is answered
//! (`RdmaKeyClosed`) once none of the peer's transfers on it runs: the
//! owner deregisters it then, so no transfer meets a dead rkey.

use core::ops::Deref;

use super::config::Caps;
use super::maps::{InMaps, OutMaps};
use super::state::{Phase, Reg, Role, State};
use super::tasks::{RdmaPost, Tasks, Via};
use super::Link;
use crate::batch::{Op, TaskId, TransferRequest};
use crate::error::{Result, Status};
use crate::rdma::{common_fabric, ConnInfo, Conns, RdmaOff, MAX_RDMA_QPS};
use crate::registry::Entry;
use crate::status;
use crate::time::Instant;
use crate::wire::{RdmaKey, RdmaMsg};

/// The RDMA half of a link, from [`Link::rdma`]: what each side said.
#[derive(Default)]
pub struct Rdma {
    /// This side's queue pairs, offered or answered with.
    local: Option<Conns>,
    /// This side's refusal of the peer's offer.
    refused: Option<RdmaOff>,
    /// The peer's queue pairs, or its refusal of our offer.
    peer: Option<core::result::Result<Conns, RdmaOff>>,
    /// The frame this side owes the peer.
    due: Option<RdmaMsg>,
    /// The peer's frame came and [`Event::Rdma`](super::Event::Rdma) is owed.
    announce: bool,
    /// The shell connected its queue pair to the peer's: tasks may go.
    available: bool,
    /// Why the path was lost after it was connected ([`RdmaMut::set_lost`]).
    lost: Option<Status>,
    /// This side's regions announced to the peer (or about to be).
    keys_out: OutMaps<RdmaKey>,
    /// The peer's announced regions.
    keys_in: InMaps<RdmaKey>,
}

impl core::fmt::Debug for Rdma {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Rdma")
            .field("local", &self.local)
            .field("peer", &self.peer)
            .field("refused", &self.refused)
            .field("available", &self.available)
            .finish_non_exhaustive()
    }
}

impl Rdma {
    /// This side's queue pairs, once offered or answered with.
    pub fn local(&self) -> Option<&[ConnInfo]> {
        self.local.as_ref().map(Conns::as_slice)
    }

    /// The peer's queue pairs (`Ok`), or why it has no RDMA with this side
    /// (`Err`, from its refusal); `None` until it said either.
    pub fn peer(&self) -> Option<core::result::Result<&[ConnInfo], RdmaOff>> {
        self.peer
            .as_ref()
            .map(|p| p.as_ref().map(Conns::as_slice).map_err(|r| *r))
    }

    /// Both sides gave their queue pairs: transfers may go over RDMA.
    pub fn ready(&self) -> bool {
        self.local.is_some() && matches!(self.peer, Some(Ok(_)))
    }

    /// Both sides gave queue pairs and one of this side's shares a fabric
    /// with one of the peer's ([`common_fabric`]): the path rule may pick
    /// RDMA.
    pub fn usable(&self) -> bool {
        match (self.local(), self.peer()) {
            (Some(mine), Some(Ok(theirs))) => mine.iter().any(|a| theirs.iter().any(|b| common_fabric(a, b))),
            _ => false,
        }
    }

    /// Why this link has no RDMA, once one side refused: this side's own
    /// refusal or the peer's.
    pub fn refusal(&self) -> Option<RdmaOff> {
        self.refused.or(match self.peer {
            Some(Err(r)) => Some(r),
            _ => None,
        })
    }

    /// Whether [`RdmaMut::submit`] is enabled: the shell connected its
    /// queue pair to the peer's ([`RdmaMut::set_available`]).
    pub fn available(&self) -> bool {
        self.available
    }

    /// Why the path was lost after it was connected (its queue pair or the
    /// completion queue failed, [`RdmaMut::set_lost`]), if it was.
    pub fn lost(&self) -> Option<&Status> {
        self.lost.as_ref()
    }

    /// The peer's announced region holding all of `[addr, addr + len)`,
    /// if any (none once the link is closed).
    pub fn peer_key(&self, addr: u64, len: u64) -> Option<RdmaKey> {
        self.keys_in.find(addr, len)
    }

    /// The peer's announced regions, in no particular order.
    pub fn peer_keys(&self) -> impl Iterator<Item = RdmaKey> + '_ {
        self.keys_in.iter()
    }

    /// Whether this side's region `id` is announced (or its announcement
    /// is queued) and not withdrawn.
    pub fn key_announced(&self, id: u64) -> bool {
        self.keys_out.announced(id)
    }

    /// Whether this side's region `id` was withdrawn and the peer has not
    /// answered that its transfers on it ended (`RdmaKeyClosed`): the
    /// region must stay registered with the NIC until then. False for any
    /// id once the link is closed.
    pub fn key_closing(&self, id: u64) -> bool {
        self.keys_out.closing(id)
    }

    /// The connector's side: this side offered queue pairs and the peer
    /// has not answered yet (the path choice for the link is not settled).
    pub fn answer_pending(&self) -> bool {
        self.local.is_some() && self.peer.is_none()
    }

    /// The acceptor's side: the peer's offer came and is not answered yet.
    pub fn offer_pending(&self) -> bool {
        matches!(self.peer, Some(Ok(_))) && self.local.is_none() && self.refused.is_none()
    }

    pub(super) fn has_frame_due(&self) -> bool {
        self.due.is_some() || self.keys_out.next_due().is_some() || self.keys_in.answer_due().is_some()
    }

    /// The `RdmaKey` due, if any; [`key_sent`](Self::key_sent) once encoded.
    pub(super) fn key_due(&self) -> Option<RdmaKey> {
        self.keys_out.next_due()
    }

    /// The `RdmaKey` from [`key_due`](Self::key_due) was sent.
    pub(super) fn key_sent(&mut self, k: RdmaKey) {
        self.keys_out.sent(k)
    }

    /// The `RdmaKeyClosed` due, if any; [`closed_sent`](Self::closed_sent)
    /// once encoded.
    pub(super) fn closed_due(&self) -> Option<u64> {
        self.keys_in.answer_due()
    }

    /// The `RdmaKeyClosed` for `id` was sent.
    pub(super) fn closed_sent(&mut self, id: u64) {
        self.keys_in.answered(id)
    }

    /// The peer's `RdmaKey`; the error, a protocol violation, names the bad
    /// value. A withdrawal fails this side's tasks on the region that were
    /// not posted yet, and is answered once no posted one runs.
    pub(super) fn on_key(&mut self, k: RdmaKey, tasks: &mut Tasks) -> Result<()> {
        self.keys_in.apply(k)?;
        if k.is_withdraw() {
            let why = status!(
                NotAuthorized,
                "peer withdrew RDMA region {:#x} (it is being unregistered) before the transfer started",
                k.id
            );
            tasks.fail_unposted(k.id, &why);
            self.answer_unused(tasks);
        }
        Ok(())
    }

    /// The peer's `RdmaKeyClosed`; the error, a protocol violation, names
    /// a region not being withdrawn.
    pub(super) fn on_key_closed(&mut self, id: u64) -> Result<()> {
        self.keys_out.closed(id)
    }

    /// Every withdrawn region of the peer that no task of this side uses
    /// any more gets its answer.
    fn answer_unused(&mut self, tasks: &Tasks) {
        let mut free: heapless::Vec<u64, { super::MAX_LOCAL_MAPS }> = heapless::Vec::new();
        for id in self.keys_in.withdrawn().filter(|&id| !tasks.uses_key(id)) {
            let _ = free.push(id);
        }
        for id in free {
            self.keys_in.let_go(id);
        }
    }

    /// The link closed: no task may go any more and every region is
    /// forgotten (posted tasks still wait for the shell's
    /// [`RdmaMut::done`]).
    pub(super) fn close(&mut self) {
        self.available = false;
        self.keys_out.clear();
        self.keys_in.clear();
    }

    pub(super) fn due(&self) -> Option<RdmaMsg> {
        self.due
    }

    pub(super) fn sent(&mut self) {
        self.due = None;
    }

    pub(super) fn take_announce(&mut self) -> bool {
        core::mem::take(&mut self.announce)
    }
}

fn conns(conns: &[ConnInfo]) -> Result<Conns> {
    Conns::new(conns).ok_or_else(|| {
        status!(
            Invalid,
            "RDMA offer of {} queue pairs: must be 1 to {MAX_RDMA_QPS}",
            conns.len()
        )
    })
}

/// The RDMA half of a link, borrowed for a change, with the link's task
/// table. From [`Link::rdma_mut`]; it dereferences to [`Rdma`] for the
/// queries.
pub struct RdmaMut<'a> {
    half: &'a mut Rdma,
    closed: Option<&'a Status>,
    tasks: &'a mut Tasks,
}

impl Deref for RdmaMut<'_> {
    type Target = Rdma;

    fn deref(&self) -> &Rdma {
        self.half
    }
}

impl RdmaMut<'_> {
    fn open(&self) -> Result<()> {
        match self.closed {
            Some(why) => Err(status!(Disconnected, "link closed: {}", why.message())),
            None => Ok(()),
        }
    }

    /// Enables (or disables) [`submit`](Self::submit): the shell calls it
    /// once its queue pair is connected to the peer's (both sides gave
    /// theirs, [`Rdma::ready`]). A path lost ([`set_lost`](Self::set_lost))
    /// stays off.
    pub fn set_available(&mut self, on: bool) {
        self.half.available = on && self.half.ready() && self.closed.is_none() && self.half.lost.is_none();
    }

    /// The path was lost (the queue pair or the completion queue failed,
    /// `why`): [`submit`](Self::submit) is disabled for good, and tasks the
    /// endpoint holds for this link that must go over RDMA end
    /// `Disconnected` with `why`, as tasks of a lost peer do.
    pub fn set_lost(&mut self, why: Status) {
        self.half.available = false;
        self.half.lost.get_or_insert(why);
    }

    /// As [`Link::submit`], but the task goes as one RDMA READ or WRITE of
    /// this side's NIC: `lkey` is the NIC's key of the local region holding
    /// `req.local`, and the remote range must lie in a region the peer
    /// announced, with the permission the operation needs. The shell takes
    /// it with [`next_post`](Self::next_post).
    ///
    /// Errors as `Link::submit`, and `NotSupported` until
    /// [`set_available`](Self::set_available), `NotFound` for a remote
    /// range in no announced region, `NotAuthorized` for a region whose
    /// permission does not allow the operation.
    pub fn submit(
        &mut self,
        task: TaskId,
        req: &TransferRequest,
        deadline: Option<Instant>,
        lkey: u32,
    ) -> Result<()> {
        self.open()?;
        if !self.half.available {
            return Err(status!(
                NotSupported,
                "RDMA path not connected on this link (queue pairs not exchanged or not connected)"
            ));
        }
        let (addr, len) = (req.remote_addr, req.local.len);
        if req.remote_location.is_some_and(|l| !l.is_host()) {
            return Err(status!(
                NotSupported,
                "RDMA path reaches the peer's host memory only, not {}",
                req.remote_location.map_or(crate::Location::Cpu, |l| l)
            ));
        }
        let Some(k) = self.half.keys_in.find(addr, len) else {
            return Err(status!(
                NotFound,
                "remote range {addr:#x}+{len:#x} lies in no region the peer announced for RDMA                  (not registered, local only, or beyond the {} announced per link)",
                super::MAX_LOCAL_MAPS
            ));
        };
        if !k.perm.contains(req.op.remote_perm()) {
            return Err(status!(
                NotAuthorized,
                "peer's region {:#x}+{:#x} does not allow remote {}",
                k.base,
                k.len,
                if req.op == Op::Read { "reads" } else { "writes" }
            ));
        }
        let via = Via::Rdma {
            key: k.id,
            rkey: k.rkey,
            lkey,
        };
        self.tasks.submit(task, req, deadline, via)
    }

    /// The next RDMA task for the shell to post to its NIC, oldest slot
    /// first; from now on its end waits for [`done`](Self::done) (a cancel
    /// or a timeout is reported only then, as the NIC may still be moving
    /// its bytes).
    pub fn next_post(&mut self) -> Option<RdmaPost> {
        self.tasks.next_rdma()
    }

    /// The NIC is done with posted task `task`: it ends with `result`
    /// (unless it ended already), and a region the peer withdrew that no
    /// task uses any more is answered. False for a task not posted on this
    /// link.
    pub fn done(&mut self, task: TaskId, result: Result<()>) -> bool {
        let found = self.tasks.rdma_done(task, result);
        if found {
            self.half.answer_unused(self.tasks);
        }
        found
    }

    /// Announces region `k` of this side's host memory, registered with
    /// the NIC under `k.rkey` with `k.perm`, to the peer, which may then
    /// read and write it as `k.perm` allows until it is withdrawn. Its
    /// `RdmaKey` frame is sent before any later frame of this side.
    ///
    /// Errors: `Disconnected` when closed; `NotSupported` before both
    /// sides gave queue pairs ([`Rdma::ready`]); `Invalid` for a
    /// withdrawal-shaped, null or wrapping range, no remote permission, an
    /// id in use or a range overlapping an announced region; `NotReady`
    /// when [`MAX_LOCAL_MAPS`](super::MAX_LOCAL_MAPS) regions are announced
    /// or waiting to be withdrawn.
    pub fn announce_key(&mut self, k: RdmaKey) -> Result<()> {
        self.open()?;
        if !self.half.ready() {
            return Err(status!(
                NotSupported,
                "RDMA region {:#x} announced before both sides gave queue pairs",
                k.id
            ));
        }
        if k.perm.is_empty() {
            return Err(status!(
                Invalid,
                "RDMA region {:#x} announced without a remote permission",
                k.id
            ));
        }
        self.half.keys_out.announce(k)
    }

    /// Withdraws announced region `id`; its slot is kept until the peer
    /// answers that its transfers on it ended ([`Rdma::key_closing`]).
    /// False for an id that is not announced.
    pub fn withdraw_key(&mut self, id: u64) -> bool {
        self.half.keys_out.withdraw(id)
    }

    /// Stops waiting for the peer's `RdmaKeyClosed` for withdrawn region
    /// `id` (it did not answer in time): its slot is free, and an answer
    /// that still comes is ignored (one whose withdrawal is not sent yet is
    /// freed once it is). False for a region not withdrawn.
    pub fn abandon_key(&mut self, id: u64) -> bool {
        self.half.keys_out.abandon(id)
    }

    /// Whether an RDMA task of this link is posted and not reported
    /// [`done`](Self::done).
    pub fn posted(&self) -> bool {
        self.tasks.rdma_posted()
    }
}

impl Link {
    /// The RDMA half: what this side and the peer said.
    pub fn rdma(&self) -> &Rdma {
        &self.s.rdma
    }

    /// The RDMA half, for a change: connecting, submitting, posting,
    /// regions.
    pub fn rdma_mut(&mut self) -> RdmaMut<'_> {
        let s = &mut self.s;
        RdmaMut {
            half: &mut s.rdma,
            closed: s.closed.as_ref(),
            tasks: &mut s.tasks,
        }
    }

    /// The connector's side: offers the peer this side's queue pairs (one
    /// per NIC, 1 to [`MAX_RDMA_QPS`]), once, after [`Event::Connected`](super::Event::Connected).
    /// The answer comes as [`Event::Rdma`](super::Event::Rdma). `NotReady`
    /// before the handshake ends or after the link closed, `NotSupported`
    /// when this side's or the peer's handshake lacks [`Caps::RDMA`],
    /// `Invalid` on the acceptor, for a second offer or a bad count.
    pub fn offer_rdma(&mut self, offer: &[ConnInfo]) -> Result<()> {
        let s = &mut self.s;
        if s.phase != Phase::Established {
            return Err(status!(
                NotReady,
                "RDMA offer before the handshake ended or after the close"
            ));
        }
        if s.role != Role::Connector {
            return Err(status!(
                Invalid,
                "RDMA offer from the acceptor: only the connector offers"
            ));
        }
        let peer_caps = s.peer.as_ref().map_or(Caps::empty(), |p| p.caps);
        if !s.cfg.caps.contains(Caps::RDMA) || !peer_caps.contains(Caps::RDMA) {
            return Err(status!(
                NotSupported,
                "RDMA offer to {:?}: the RDMA capability is missing on {}",
                s.peer_name(),
                if s.cfg.caps.contains(Caps::RDMA) {
                    "the peer"
                } else {
                    "this side"
                }
            ));
        }
        if s.rdma.local.is_some() {
            return Err(status!(Invalid, "a second RDMA offer on this link"));
        }
        let c = conns(offer)?;
        s.rdma.local = Some(c);
        s.rdma.due = Some(RdmaMsg::Offer(c));
        Ok(())
    }

    /// The acceptor's side: answers the peer's offer ([`Rdma::offer_pending`])
    /// with this side's queue pairs (`Ok`, connected to the peer's) or
    /// refuses it with a reason (`Err`), once. `NotReady` after the link
    /// closed, `Invalid` without an offer pending or for a bad count.
    pub fn answer_rdma(&mut self, answer: core::result::Result<&[ConnInfo], RdmaOff>) -> Result<()> {
        let s = &mut self.s;
        if s.phase != Phase::Established {
            return Err(status!(NotReady, "RDMA answer on a link that is not open"));
        }
        if !s.rdma.offer_pending() {
            return Err(status!(
                Invalid,
                "RDMA answer with no offer from the peer pending"
            ));
        }
        let msg = match answer {
            Ok(a) => {
                let c = conns(a)?;
                s.rdma.local = Some(c);
                RdmaMsg::Answer(c)
            }
            Err(why) => {
                s.rdma.refused = Some(why);
                RdmaMsg::Off(why)
            }
        };
        s.rdma.due = Some(msg);
        Ok(())
    }
}

impl State {
    /// The peer's `RdmaConn`: an offer reaches only an acceptor that set
    /// [`Caps::RDMA`], once; an answer or refusal only the connector that
    /// offered, once. Anything else is a protocol violation.
    pub(super) fn on_rdma<S>(&mut self, msg: RdmaMsg, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        let said = match msg {
            RdmaMsg::Offer(c) => {
                if self.role != Role::Acceptor {
                    return self.violation(reg, format_args!("RdmaConn offer sent to the connector"));
                }
                if !self.cfg.caps.contains(Caps::RDMA) {
                    return self.violation(
                        reg,
                        format_args!("RdmaConn offer to a side without the RDMA capability"),
                    );
                }
                Ok(c)
            }
            RdmaMsg::Answer(c) => Ok(c),
            RdmaMsg::Off(why) => Err(why),
        };
        if self.rdma.peer.is_some() {
            return self.violation(reg, format_args!("a second RdmaConn from the peer"));
        }
        if !matches!(msg, RdmaMsg::Offer(_)) && (self.role != Role::Connector || self.rdma.local.is_none()) {
            return self.violation(reg, format_args!("RdmaConn answer to no offer of this side"));
        }
        self.rdma.peer = Some(said);
        self.rdma.announce = true;
    }
}
