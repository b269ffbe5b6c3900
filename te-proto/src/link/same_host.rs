//! The same-host half of a link (docs/PROTOCOL.md, "Same-host path"): the
//! process-id challenges, the peer's copies waiting for the shell, and the
//! buffers announced with `LocalMap` in both directions.
//!
//! The shell reaches it through [`Link::same_host`](super::Link::same_host)
//! (a shared borrow of [`SameHost`]) and
//! [`Link::same_host_mut`](super::Link::same_host_mut) (a [`SameHostMut`]
//! view, which also lends the parts of the link its methods touch: the
//! peer's capabilities, the task table, the queue of answers).

use core::ops::Deref;

use heapless::Deque;

use super::config::{Caps, PeerInfo, MAX_OUTSTANDING};
use super::event::{PidChallenge, SameHostCopy};
use super::maps::{InMaps, OutMaps};
use super::target::{Response, Target};
use super::tasks::Tasks;
use crate::batch::{Op, TaskId, TransferRequest};
use crate::error::{Result, Status};
use crate::region::Span;
use crate::registry::{Entry, PinKey, Registry};
use crate::status;
use crate::time::Instant;
use crate::wire::{LocalAccess, LocalKey, LocalMap};

/// The same-host half of a link (docs/PROTOCOL.md, "Same-host path"): the
/// process-id challenges, the peer's copies waiting for the shell, and the
/// buffers announced in both directions; its methods are the queries that
/// need nothing else. From [`Link::same_host`](super::Link::same_host).
pub struct SameHost {
    /// The peer verified our process id: tasks may go as copies.
    available: bool,
    challenge_out: Option<PidChallenge>,
    challenge_in: Option<PidChallenge>,
    /// The peer's `PidChallenge` came (a second one is a violation).
    challenged: bool,
    /// The peer's `LocalRead`/`LocalWrite`, validated and pinned, for the
    /// shell to copy.
    copies: Deque<(u64, SameHostCopy, PinKey), MAX_OUTSTANDING>,
    /// This side's buffers announced to the peer (or about to be).
    maps_out: OutMaps,
    /// The peer's announced buffers.
    maps_in: InMaps,
    /// This side's device buffers announced to the peer (or about to be).
    keys_out: OutMaps<LocalKey>,
    /// The peer's announced device buffers.
    keys_in: InMaps<LocalKey>,
}

impl core::fmt::Debug for SameHost {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SameHost")
            .field("available", &self.available)
            .field("copies", &self.copies.len())
            .finish_non_exhaustive()
    }
}

type Reg<S> = Registry<S>;

impl SameHost {
    pub(super) fn new() -> SameHost {
        SameHost {
            available: false,
            challenge_out: None,
            challenge_in: None,
            challenged: false,
            copies: Deque::new(),
            maps_out: OutMaps::default(),
            maps_in: InMaps::default(),
            keys_out: OutMaps::default(),
            keys_in: InMaps::default(),
        }
    }

    /// Whether [`SameHostMut::submit`] is enabled.
    pub fn available(&self) -> bool {
        self.available
    }

    /// Whether buffer `id` is announced (or its announcement is queued) and
    /// not withdrawn.
    pub fn local_map_announced(&self, id: u64) -> bool {
        self.maps_out.announced(id)
    }

    /// The peer's announced buffer that holds all of `[addr, addr + len)`,
    /// if any (none once the link is closed).
    pub fn peer_local_map(&self, addr: u64, len: u64) -> Option<LocalMap> {
        self.maps_in.find(addr, len)
    }

    /// The peer's announced buffers, in no particular order.
    pub fn peer_local_maps(&self) -> impl Iterator<Item = LocalMap> + '_ {
        self.maps_in.iter()
    }

    /// Whether device buffer `id` is announced (or its announcement is
    /// queued) and not withdrawn.
    pub fn local_key_announced(&self, id: u64) -> bool {
        self.keys_out.announced(id)
    }

    /// The peer's announced device buffer that holds all of `[addr, addr +
    /// len)`, if any (none once the link is closed).
    pub fn peer_local_key(&self, addr: u64, len: u64) -> Option<LocalKey> {
        self.keys_in.find(addr, len)
    }

    /// The peer's announced device buffers, in no particular order.
    pub fn peer_local_keys(&self) -> impl Iterator<Item = LocalKey> + '_ {
        self.keys_in.iter()
    }

    /// Whether this side's device buffer `id` was withdrawn and the peer
    /// has not yet answered that it closed its import (`KeyClosed`): its
    /// export must stay open until then, as CANN wants importers to close
    /// first. False for any id once the link is closed.
    pub fn local_key_closing(&self, id: u64) -> bool {
        self.keys_out.closing(id)
    }

    /// The device buffers the peer withdrew and this side has not let go
    /// of yet ([`SameHostMut::let_go_of_key`] once its import is closed).
    pub fn peer_keys_withdrawn(&self) -> impl Iterator<Item = u64> + '_ {
        self.keys_in.withdrawn()
    }

    /// The oldest of the peer's same-host copies not yet done: validated
    /// and pinned like a `ReadReq`/`WriteData`. The shell copies, then
    /// calls [`SameHostMut::copy_done`].
    pub fn poll_copy(&self) -> Option<SameHostCopy> {
        self.copies.front().map(|c| c.1)
    }

    /// Every copy waiting, oldest first ([`poll_copy`](Self::poll_copy) is
    /// the first), so that the shell can do several in one call; it still
    /// reports each with [`SameHostMut::copy_done`], in this order.
    pub fn pending_copies(&self) -> impl Iterator<Item = SameHostCopy> + '_ {
        self.copies.iter().map(|c| c.1)
    }

    // ---- for the link ----

    /// The peer's copies admitted and not done (they count against the
    /// limit of the peer's requests in flight).
    pub(super) fn busy(&self) -> usize {
        self.copies.len()
    }

    /// The peer's `LocalRead` (`op` Read) or `LocalWrite`, admitted by the
    /// link: checked and pinned exactly as its TCP twin and queued for the
    /// shell's copy, or refused at once through `target`.
    pub(super) fn on_copy<S>(
        &mut self,
        op: Op,
        a: LocalAccess,
        offered: bool,
        target: &mut Target,
        reg: &mut Reg<S>,
    ) where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        let req_id = a.req_id;
        if !offered {
            let status = status!(NotSupported, "same-host path not offered by this peer");
            return target.answer(Response::Fail { req_id, status });
        }
        if a.peer_device && self.keys_in.find(a.peer_addr, a.len as u64).is_none() {
            let status = status!(
                Invalid,
                "peer range {:#x}+{:#x} lies in no device buffer it announced",
                a.peer_addr,
                a.len
            );
            return target.answer(Response::Fail { req_id, status });
        }
        match reg.pin_remote(a.addr, a.len as u64, a.location, op.remote_perm()) {
            Ok(pin) => {
                let copy = SameHostCopy {
                    span: Span {
                        addr: a.addr,
                        len: a.len as u64,
                        location: pin.location,
                    },
                    peer_addr: a.peer_addr,
                    to_peer: op == Op::Read,
                    peer_device: a.peer_device,
                };
                // The link admitted it: at most max_outstanding copies wait.
                let queued = self.copies.push_back((req_id, copy, pin));
                debug_assert!(queued.is_ok(), "a copy beyond the admitted requests");
            }
            Err(status) => target.answer(Response::Fail { req_id, status }),
        }
    }

    /// Whether the peer's `PidChallenge` came already: a link carries one.
    pub(super) fn challenged(&self) -> bool {
        self.challenged
    }

    /// The peer's `PidChallenge`, the one of the link: it waits for the shell.
    pub(super) fn on_challenge(&mut self, c: PidChallenge) {
        debug_assert!(!self.challenged, "a second challenge admitted");
        self.challenged = true;
        self.challenge_in = Some(c);
    }

    /// The peer's `LocalMap`; the error, a protocol violation, names the
    /// bad value.
    pub(super) fn on_map(&mut self, m: LocalMap) -> Result<()> {
        self.maps_in.apply(m)
    }

    /// The peer's `LocalKey`; the error, a protocol violation, names the
    /// bad value.
    pub(super) fn on_key(&mut self, k: LocalKey) -> Result<()> {
        self.keys_in.apply(k)
    }

    /// The peer's `KeyClosed`; the error, a protocol violation, names a
    /// buffer not being withdrawn.
    pub(super) fn on_key_closed(&mut self, id: u64) -> Result<()> {
        self.keys_out.closed(id)
    }

    /// Whether a same-host frame is due for the peer.
    pub(super) fn has_frames_due(&self) -> bool {
        self.challenge_out.is_some()
            || self.maps_out.next_due().is_some()
            || self.keys_out.next_due().is_some()
            || self.keys_in.answer_due().is_some()
    }

    /// The `KeyClosed` due, if any; [`key_closed_sent`](Self::key_closed_sent)
    /// once encoded.
    pub(super) fn key_closed_due(&self) -> Option<u64> {
        self.keys_in.answer_due()
    }

    /// The `KeyClosed` for `id` was sent.
    pub(super) fn key_closed_sent(&mut self, id: u64) {
        self.keys_in.answered(id)
    }

    /// The `LocalKey` due, if any; [`key_sent`](Self::key_sent) once encoded.
    pub(super) fn key_due(&self) -> Option<LocalKey> {
        self.keys_out.next_due()
    }

    /// The `LocalKey` from [`key_due`](Self::key_due) was sent.
    pub(super) fn key_sent(&mut self, k: LocalKey) {
        self.keys_out.sent(k)
    }

    /// The `PidChallenge` due, if any; [`challenge_sent`](Self::challenge_sent)
    /// once encoded.
    pub(super) fn challenge_due(&self) -> Option<&PidChallenge> {
        self.challenge_out.as_ref()
    }

    /// The challenge from [`challenge_due`](Self::challenge_due) was sent.
    pub(super) fn challenge_sent(&mut self) {
        self.challenge_out = None;
    }

    /// The `LocalMap` due, if any; [`map_sent`](Self::map_sent) once encoded.
    pub(super) fn map_due(&self) -> Option<LocalMap> {
        self.maps_out.next_due()
    }

    /// The `LocalMap` from [`map_due`](Self::map_due) was sent.
    pub(super) fn map_sent(&mut self, m: LocalMap) {
        self.maps_out.sent(m)
    }

    /// The link closed: the path is off, the peer's copies are dropped and
    /// their pins released, and every buffer is forgotten.
    pub(super) fn close<S>(&mut self, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        while let Some((_, _, pin)) = self.copies.pop_front() {
            reg.unpin(pin);
        }
        self.challenge_out = None;
        self.challenge_in = None;
        self.available = false;
        self.maps_out.clear();
        self.maps_in.clear();
        self.keys_out.clear();
        self.keys_in.clear();
    }
}

/// The same-host half of a link, borrowed for a change, with the parts of
/// the link its methods touch. From [`Link::same_host_mut`](super::Link::same_host_mut);
/// it dereferences to [`SameHost`] for the queries.
pub struct SameHostMut<'a> {
    pub(super) half: &'a mut SameHost,
    pub(super) closed: Option<&'a Status>,
    pub(super) peer: Option<&'a PeerInfo>,
    pub(super) tasks: &'a mut Tasks,
    pub(super) target: &'a mut Target,
}

impl Deref for SameHostMut<'_> {
    type Target = SameHost;

    fn deref(&self) -> &SameHost {
        self.half
    }
}

impl SameHostMut<'_> {
    fn open(&self) -> Result<()> {
        match self.closed {
            Some(why) => Err(status!(Disconnected, "link closed: {}", why.message())),
            None => Ok(()),
        }
    }

    /// `NotSupported` unless the peer's handshake set `PROCESS_VM`: the
    /// same-host frames go only to a peer that offers the path.
    fn peer_offers(&self) -> Result<()> {
        match self.peer {
            Some(p) if p.caps.contains(Caps::PROCESS_VM) => Ok(()),
            Some(p) => Err(status!(
                NotSupported,
                "peer {:?} does not offer the same-host path",
                p.segment_name.as_str()
            )),
            None => Err(status!(NotSupported, "handshake not finished")),
        }
    }

    fn enabled(&self) -> Result<()> {
        if self.half.available {
            return Ok(());
        }
        Err(status!(
            NotSupported,
            "same-host path not enabled on this link (peer has not verified our process)"
        ))
    }

    /// As [`Link::submit`](super::Link::submit), but the task goes over the
    /// same-host path: `LocalRead`/`LocalWrite` requests that the peer
    /// answers by copying between its memory and `req.local` itself. The
    /// task's end is reported only once no copy of the peer can touch its
    /// memory.
    ///
    /// Errors as `Link::submit`, and `NotSupported` until
    /// [`set_available`](Self::set_available) enabled the path.
    pub fn submit(&mut self, task: TaskId, req: &TransferRequest, deadline: Option<Instant>) -> Result<()> {
        self.open()?;
        self.peer_offers()?;
        self.enabled()?;
        self.tasks.submit(task, req, deadline, super::tasks::Via::Copy)
    }

    /// Enables (or disables) [`submit`](Self::submit): the shell calls it
    /// once the peer has verified this process's id.
    pub fn set_available(&mut self, on: bool) {
        self.half.available = on;
    }

    /// Announces buffer `m` of this process's memory to the peer, which may
    /// then map it (docs/PROTOCOL.md, "Mapped buffers"): `m.fd` must be a
    /// sealed memfd holding `[m.base, m.base + m.len)`, and stay so until the
    /// buffer is withdrawn. Its `LocalMap` frame is sent before any request
    /// submitted after this call.
    ///
    /// Errors: `Invalid` for a length of 0, a null or wrapping range, an id
    /// announced or still being withdrawn, or a range overlapping an
    /// announced buffer; `NotSupported` when the peer did not set
    /// [`Caps::SHARED_MEMORY`] or the same-host path is not enabled
    /// ([`available`](SameHost::available)); `NotReady` when
    /// [`MAX_LOCAL_MAPS`](super::MAX_LOCAL_MAPS) buffers are announced or
    /// waiting to be withdrawn; `Disconnected` when closed.
    pub fn announce_local_map(&mut self, m: LocalMap) -> Result<()> {
        self.open()?;
        match self.peer {
            Some(p) if p.caps.contains(Caps::SHARED_MEMORY) => {}
            Some(p) => {
                return Err(status!(
                    NotSupported,
                    "peer {:?} does not map announced buffers",
                    p.segment_name.as_str()
                ))
            }
            None => return Err(status!(NotSupported, "handshake not finished")),
        }
        self.enabled()?;
        self.half.maps_out.announce(m)
    }

    /// Announces device buffer `k` of this process to the peer, which may
    /// then import it (docs/PROTOCOL.md, "Device buffers"): `k.key` must be
    /// an export of `[k.base, k.base + k.len)` on `k.location` to the peer's
    /// verified process, valid until the buffer is withdrawn. Its
    /// `LocalKey` frame is sent before any request submitted after this call.
    ///
    /// Errors as [`announce_local_map`](Self::announce_local_map), with
    /// [`Caps::DEVICE_IPC`] in place of `SHARED_MEMORY`, and `Invalid` for a
    /// withdrawal-shaped announcement (no key, or `cpu`).
    pub fn announce_local_key(&mut self, k: LocalKey) -> Result<()> {
        self.open()?;
        match self.peer {
            Some(p) if p.caps.contains(Caps::DEVICE_IPC) => {}
            Some(p) => {
                return Err(status!(
                    NotSupported,
                    "peer {:?} does not import device buffers",
                    p.segment_name.as_str()
                ))
            }
            None => return Err(status!(NotSupported, "handshake not finished")),
        }
        self.enabled()?;
        if k.key.is_none() || k.location.is_host() {
            return Err(status!(
                Invalid,
                "device buffer {:#x} on {} without a key",
                k.id,
                k.location
            ));
        }
        self.half.keys_out.announce(k)
    }

    /// Withdraws announced device buffer `id`, as
    /// [`withdraw_local_map`](Self::withdraw_local_map) does a mapped one;
    /// its slot is kept until the peer answers that it closed its import
    /// ([`SameHost::local_key_closing`]).
    pub fn withdraw_local_key(&mut self, id: u64) -> bool {
        self.half.keys_out.withdraw(id)
    }

    /// Stops waiting for the peer's `KeyClosed` for withdrawn device
    /// buffer `id` (it did not answer in time; the export is closed
    /// regardless): its slot is free, and an answer that still comes is
    /// ignored. One whose withdrawal is not sent yet is freed once it is.
    /// False for a buffer not withdrawn.
    pub fn abandon_local_key(&mut self, id: u64) -> bool {
        self.half.keys_out.abandon(id)
    }

    /// This side closed (or never opened) its import of the peer's
    /// withdrawn device buffer `id`: `KeyClosed` tells the peer, which may
    /// close its export then. False for an id the peer did not withdraw
    /// (or already let go of).
    pub fn let_go_of_key(&mut self, id: u64) -> bool {
        self.half.keys_in.let_go(id)
    }

    /// Withdraws announced buffer `id`: the peer forgets it before any
    /// request submitted after this call. Never fails for an announced id
    /// (its slot is kept until the withdrawal is sent; an announcement not
    /// sent yet is simply dropped); false for an id that is not announced
    /// (every id once the link is closed: a closed link forgets its buffers).
    pub fn withdraw_local_map(&mut self, id: u64) -> bool {
        self.half.maps_out.withdraw(id)
    }

    /// Queues a `PidChallenge` for the peer: it is to send `token` over the
    /// abstract Unix socket `socket` (see docs/PROTOCOL.md). `Invalid` for
    /// a socket name of 0 or more than [`PID_SOCKET_MAX`](crate::wire::PID_SOCKET_MAX) bytes,
    /// `NotSupported` when the peer did not offer the same-host path (or
    /// the handshake has not finished), `Disconnected` when closed.
    pub fn send_pid_challenge(&mut self, token: [u8; 32], socket: &[u8]) -> Result<()> {
        self.open()?;
        self.peer_offers()?;
        self.half.challenge_out = Some(PidChallenge::new(token, socket)?);
        Ok(())
    }

    /// The peer's `PidChallenge` (a link carries one), once. The shell answers it out of
    /// band (over the named Unix socket).
    pub fn take_pid_challenge(&mut self) -> Option<PidChallenge> {
        self.half.challenge_in.take()
    }

    /// Reports the copy of [`poll_copy`](SameHost::poll_copy) done (or
    /// failed, with the status the peer's task gets): its pin is released
    /// and the answer queued.
    pub fn copy_done<S>(&mut self, result: Result<()>, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        let Some((req_id, _, pin)) = self.half.copies.pop_front() else {
            return;
        };
        reg.unpin(pin);
        // Admitted when it arrived; it moves from the copies to the answers.
        self.target.answer(match result {
            Ok(()) => Response::Ack { req_id },
            Err(status) => Response::Fail { req_id, status },
        });
    }
}
