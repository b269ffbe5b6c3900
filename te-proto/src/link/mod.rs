//! The per-peer link state machine, in the sans-IO style of quinn-proto.
//!
//! One [`Link`] runs one connection. It is both initiator (it carries the
//! tasks this side submits, cut into requests of at most the negotiated
//! payload size, at most a window of them in flight) and target (it answers
//! the peer's requests after checking them against the local
//! [`Registry`]). The shell moves bytes:
//!
//! - bytes from the connection go to [`Link::handle_input`], which consumes
//!   headers and bodies and stops where a payload starts; then
//!   [`Link::poll_payload`] says where the next payload bytes belong and the
//!   shell reads them straight there, reporting with [`Link::payload_landed`];
//! - [`Link::poll_transmit`] writes frames into the shell's buffer and may
//!   name a memory span to send right after them (one vectored write);
//!   [`Link::payload_sent`] reports that span sent;
//! - [`Link::poll_event`] reports task progress and ends, notifications,
//!   segment info and the link's close;
//! - [`Link::poll_timeout`] says when to call [`Link::handle_timeout`].
//!
//! See the crate documentation for a complete example and
//! `docs/PROTOCOL.md` for the normative protocol.

mod config;
mod event;
mod maps;
mod serve;
mod tasks;

pub use crate::wire::LocalMap;
pub use config::{caps, LinkConfig, PeerInfo, MAX_LINK_TASKS, MAX_OUTSTANDING};
pub use event::{Event, LocalCopy, Notification, PayloadDest, PidChallenge, SegmentPage, Transmit};
pub use maps::MAX_LOCAL_MAPS;

use heapless::Deque;

use self::maps::{InMaps, OutMaps};
use self::serve::{Landing, Response, Sending};
use self::tasks::{NextChunk, Tasks};
use crate::auth::{self, Side};
use crate::batch::{Op, TaskId, TransferRequest};
use crate::error::{ErrorCode, Result, Status};
use crate::location::Location;
use crate::region::{Perm, Span};
use crate::registry::{Entry, PinKey, Registry};
use crate::status;
use crate::time::{earliest, Instant};
use crate::wire::{
    encode_info_reply, Decoder, Frame, Hello, LocalAccess, Progress, WireError, AUTH_HMAC_SHA256, AUTH_NONE,
    MAX_CONTROL_LEN,
};

/// Notifications queued per direction before the link pushes back.
pub const NOTIFY_QUEUE: usize = 4;

/// The coarse state of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// The handshake is under way; submitted tasks wait for it.
    Handshaking,
    /// Transfers flow.
    Established,
    /// Closed; see [`Event::Closed`] for why.
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    AwaitHello,
    AwaitHelloAck,
    AwaitAuth,
    Established,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Connector,
    Acceptor,
}

/// One connection to one peer. See the [module docs](self).
pub struct Link {
    decoder: Decoder,
    s: Inner,
}

struct Inner {
    cfg: LinkConfig,
    role: Role,
    phase: Phase,
    nonce: [u8; 32],
    peer_nonce: [u8; 32],
    peer: Option<PeerInfo>,
    started: Instant,
    last_rx: Instant,
    seq: u64,
    // Frames this side owes the peer.
    hello_due: bool,
    hello_mac: [u8; 32],
    auth_due: Option<[u8; 32]>,
    link_error_due: Option<Status>,
    goodbye_due: bool,
    pong_due: Option<u64>,
    ping_due: bool,
    ping_outstanding: Option<u64>,
    ping_seq: u64,
    notify_out: Deque<Notification, NOTIFY_QUEUE>,
    info_due: Option<(u64, Option<(Location, u64)>)>,
    info_req: Option<u64>,
    // Reports owed to the shell.
    connected_due: bool,
    inbox: Deque<Notification, NOTIFY_QUEUE>,
    inbox_announced: usize,
    info_page: Option<Result<SegmentPage>>,
    info_announced: bool,
    closed: Option<Status>,
    closed_reported: bool,
    // Data path.
    tasks: Tasks,
    responses: Deque<Response, MAX_OUTSTANDING>,
    landing: Option<Landing>,
    sending: Option<Sending>,
    prefer_requests: bool,
    // Same-host path.
    /// The peer verified our process id: tasks may go as copies.
    local_copy: bool,
    challenge_out: Option<PidChallenge>,
    challenge_in: Option<PidChallenge>,
    /// The peer's `LocalRead`/`LocalWrite`, validated and pinned, for the
    /// shell to copy.
    copies: Deque<(u64, LocalCopy, PinKey), MAX_OUTSTANDING>,
    /// This side's buffers announced to the peer (or about to be).
    maps_out: OutMaps,
    /// The peer's announced buffers.
    maps_in: InMaps,
}

type Reg<S> = Registry<S>;

impl Link {
    /// A link for a connection this side opened. `nonce` must be fresh
    /// random bytes (they make the authentication replay-proof).
    pub fn connect(cfg: LinkConfig, now: Instant, nonce: [u8; 32]) -> Result<Link> {
        Link::new(cfg, now, nonce, Role::Connector)
    }

    /// A link for a connection this side accepted. `nonce` must be fresh
    /// random bytes.
    pub fn accept(cfg: LinkConfig, now: Instant, nonce: [u8; 32]) -> Result<Link> {
        Link::new(cfg, now, nonce, Role::Acceptor)
    }

    fn new(cfg: LinkConfig, now: Instant, nonce: [u8; 32], role: Role) -> Result<Link> {
        cfg.validate()?;
        let decoder = Decoder::new(cfg.max_payload);
        Ok(Link {
            decoder,
            s: Inner {
                role,
                phase: if role == Role::Connector {
                    Phase::AwaitHelloAck
                } else {
                    Phase::AwaitHello
                },
                nonce,
                peer_nonce: [0; 32],
                peer: None,
                started: now,
                last_rx: now,
                seq: 0,
                hello_due: role == Role::Connector,
                hello_mac: [0; 32],
                auth_due: None,
                link_error_due: None,
                goodbye_due: false,
                pong_due: None,
                ping_due: false,
                ping_outstanding: None,
                ping_seq: 0,
                notify_out: Deque::new(),
                info_due: None,
                info_req: None,
                connected_due: false,
                inbox: Deque::new(),
                inbox_announced: 0,
                info_page: None,
                info_announced: false,
                closed: None,
                closed_reported: false,
                tasks: Tasks::new(),
                responses: Deque::new(),
                landing: None,
                sending: None,
                prefer_requests: false,
                local_copy: false,
                challenge_out: None,
                challenge_in: None,
                copies: Deque::new(),
                maps_out: OutMaps::default(),
                maps_in: InMaps::default(),
                cfg,
            },
        })
    }

    /// The coarse state.
    pub fn state(&self) -> LinkState {
        match self.s.phase {
            Phase::Established => LinkState::Established,
            Phase::Closed => LinkState::Closed,
            _ => LinkState::Handshaking,
        }
    }

    /// Why the link closed, once it has.
    pub fn close_reason(&self) -> Option<&Status> {
        self.s.closed.as_ref()
    }

    /// Who the peer is, once the handshake told.
    pub fn peer(&self) -> Option<&PeerInfo> {
        self.s.peer.as_ref()
    }

    /// This link's configuration.
    pub fn config(&self) -> &LinkConfig {
        &self.s.cfg
    }

    /// Tasks on the link that have not been reported done.
    pub fn tasks_in_flight(&self) -> usize {
        self.s.tasks.live()
    }

    /// Requests sent and not yet answered.
    pub fn requests_in_flight(&self) -> usize {
        self.s.tasks.in_flight()
    }

    /// Whether the link serves a request of the peer: an answer queued or
    /// being sent, a payload landing, a same-host copy waiting or under way.
    pub fn is_serving(&self) -> bool {
        !self.s.responses.is_empty()
            || self.s.sending.is_some()
            || self.s.landing.is_some()
            || !self.s.copies.is_empty()
    }

    /// Whether [`submit`](Self::submit) has room for another task.
    pub fn can_submit(&self) -> bool {
        self.s.phase != Phase::Closed && self.s.tasks.has_room()
    }

    /// Queues a transfer. `local` must be memory the shell keeps valid (and
    /// registered) until the task's [`Event::TaskDone`]; the link reads or
    /// writes it only through spans it hands out. Tasks submitted during
    /// the handshake start when it ends.
    ///
    /// Errors: `Disconnected` when the link is closed, `NotReady` when it
    /// carries [`MAX_LINK_TASKS`] tasks, `Invalid` for a zero length, a
    /// wrapping range or a task id already on the link.
    pub fn submit(&mut self, task: TaskId, req: &TransferRequest, deadline: Option<Instant>) -> Result<()> {
        if let Some(why) = &self.s.closed {
            return Err(status!(Disconnected, "link closed: {}", why.message()));
        }
        self.s.tasks.submit(task, req, deadline, false)
    }

    /// As [`submit`](Self::submit), but the task goes over the same-host
    /// path: `LocalRead`/`LocalWrite` requests that the peer answers by
    /// copying between its memory and `req.local` itself. The task's end is
    /// reported only once no copy of the peer can touch its memory.
    ///
    /// Errors as `submit`, and `NotSupported` until
    /// [`set_local_copy`](Self::set_local_copy) enabled the path.
    pub fn submit_local(
        &mut self,
        task: TaskId,
        req: &TransferRequest,
        deadline: Option<Instant>,
    ) -> Result<()> {
        if let Some(why) = &self.s.closed {
            return Err(status!(Disconnected, "link closed: {}", why.message()));
        }
        self.s.peer_offers_local()?;
        if !self.s.local_copy {
            return Err(status!(
                NotSupported,
                "same-host path not enabled on this link (peer has not verified our process)"
            ));
        }
        self.s.tasks.submit(task, req, deadline, true)
    }

    /// Enables (or disables) [`submit_local`](Self::submit_local): the shell
    /// calls it once the peer has verified this process's id.
    pub fn set_local_copy(&mut self, on: bool) {
        self.s.local_copy = on;
    }

    /// Whether [`submit_local`](Self::submit_local) is enabled.
    pub fn local_copy(&self) -> bool {
        self.s.local_copy
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
    /// [`caps::SHARED_MEMORY`] or the same-host path is not enabled
    /// ([`local_copy`](Self::local_copy)); `NotReady` when
    /// [`MAX_LOCAL_MAPS`] buffers are announced or waiting to be withdrawn;
    /// `Disconnected` when closed.
    pub fn announce_local_map(&mut self, m: LocalMap) -> Result<()> {
        if let Some(why) = &self.s.closed {
            return Err(status!(Disconnected, "link closed: {}", why.message()));
        }
        match &self.s.peer {
            Some(p) if p.caps & caps::SHARED_MEMORY != 0 => {}
            Some(p) => {
                return Err(status!(
                    NotSupported,
                    "peer {:?} does not map announced buffers",
                    p.segment_name.as_str()
                ))
            }
            None => return Err(status!(NotSupported, "handshake not finished")),
        }
        if !self.s.local_copy {
            return Err(status!(
                NotSupported,
                "same-host path not enabled on this link (peer has not verified our process)"
            ));
        }
        self.s.maps_out.announce(m)
    }

    /// Withdraws announced buffer `id`: the peer forgets it before any
    /// request submitted after this call. Never fails for an announced id
    /// (its slot is kept until the withdrawal is sent; an announcement not
    /// sent yet is simply dropped); false for an id that is not announced
    /// (every id once the link is closed: a closed link forgets its buffers).
    pub fn withdraw_local_map(&mut self, id: u64) -> bool {
        self.s.maps_out.withdraw(id)
    }

    /// Whether buffer `id` is announced (or its announcement is queued) and
    /// not withdrawn.
    pub fn local_map_announced(&self, id: u64) -> bool {
        self.s.maps_out.announced(id)
    }

    /// The peer's announced buffer that holds all of `[addr, addr + len)`,
    /// if any (none once the link is closed).
    pub fn peer_local_map(&self, addr: u64, len: u64) -> Option<LocalMap> {
        self.s.maps_in.find(addr, len)
    }

    /// The peer's announced buffers, in no particular order.
    pub fn peer_local_maps(&self) -> impl Iterator<Item = LocalMap> + '_ {
        self.s.maps_in.iter()
    }

    /// Queues a `PidChallenge` for the peer: it is to send `token` over the
    /// abstract Unix socket `socket` (see docs/PROTOCOL.md). `Invalid` for
    /// a socket name of 0 or more than [`PID_SOCKET_MAX`](crate::wire::PID_SOCKET_MAX) bytes,
    /// `NotSupported` when the peer did not offer the same-host path (or
    /// the handshake has not finished), `Disconnected` when closed.
    pub fn send_pid_challenge(&mut self, token: [u8; 32], socket: &[u8]) -> Result<()> {
        if let Some(why) = &self.s.closed {
            return Err(status!(Disconnected, "link closed: {}", why.message()));
        }
        self.s.peer_offers_local()?;
        self.s.challenge_out = Some(PidChallenge::new(token, socket)?);
        Ok(())
    }

    /// The peer's latest `PidChallenge`, once. The shell answers it out of
    /// band (over the named Unix socket).
    pub fn take_pid_challenge(&mut self) -> Option<PidChallenge> {
        self.s.challenge_in.take()
    }

    /// The oldest of the peer's same-host copies not yet done: validated
    /// and pinned like a `ReadReq`/`WriteData`. The shell copies, then
    /// calls [`copy_done`](Self::copy_done).
    pub fn poll_copy(&self) -> Option<LocalCopy> {
        self.s.copies.front().map(|c| c.1)
    }

    /// Every copy waiting, oldest first ([`poll_copy`](Self::poll_copy) is
    /// the first), so that the shell can do several in one call; it still
    /// reports each with [`copy_done`](Self::copy_done), in this order.
    pub fn pending_copies(&self) -> impl Iterator<Item = LocalCopy> + '_ {
        self.s.copies.iter().map(|c| c.1)
    }

    /// Reports the copy of [`poll_copy`](Self::poll_copy) done (or failed,
    /// with the status the peer's task gets): its pin is released and the
    /// answer queued.
    pub fn copy_done<S>(&mut self, result: Result<()>, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        let Some((req_id, _, pin)) = self.s.copies.pop_front() else {
            return;
        };
        reg.unpin(pin);
        let r = match result {
            Ok(()) => Response::Ack { req_id },
            Err(status) => Response::Fail { req_id, status },
        };
        // request_room() counted this copy when it arrived.
        let _ = self.s.responses.push_back(r);
    }

    /// Cancels a task: it ends `Canceled` (reported by [`poll_event`](Self::poll_event))
    /// and its memory is not touched after this call, except that a write
    /// whose payload is being sent right now is reported only after
    /// [`payload_sent`](Self::payload_sent). Returns false for a task that
    /// is not running on this link.
    pub fn cancel(&mut self, task: TaskId) -> bool {
        self.s.tasks.cancel(task)
    }

    /// Refuses the queued answers to the peer's reads of regions that have
    /// started draining: each becomes an `Error` frame (`NotAuthorized`)
    /// and releases its pin, so that an unregister does not wait for a peer
    /// slow to read. An answer already being sent keeps its pin until
    /// [`payload_sent`](Self::payload_sent). Returns how many were refused.
    pub fn revoke_draining<S>(&mut self, reg: &mut Reg<S>) -> usize
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        let mut n = 0;
        for r in self.s.responses.iter_mut() {
            let Response::Read { req_id, span, pin } = *r else {
                continue;
            };
            if !reg.is_draining(pin) {
                continue;
            }
            reg.unpin(pin);
            let status = status!(
                NotAuthorized,
                "read of {:#x}+{:#x} in {}: region {:#x} was unregistered before the answer was sent",
                span.addr,
                span.len,
                span.location,
                pin.base
            );
            *r = Response::Fail { req_id, status };
            n += 1;
        }
        n
    }

    /// Queues a notification for the peer (an empty message is fine).
    /// Errors: `Invalid` for an empty or too long name or a too long
    /// message, `NotReady` when [`NOTIFY_QUEUE`]
    /// notifications wait already, `Disconnected` when closed.
    pub fn send_notification(&mut self, name: &str, msg: &[u8]) -> Result<()> {
        if let Some(why) = &self.s.closed {
            return Err(status!(Disconnected, "link closed: {}", why.message()));
        }
        let n = Notification::new(name, msg)?;
        self.s.notify_out.push_back(n).map_err(|_| {
            status!(
                NotReady,
                "{NOTIFY_QUEUE} notifications already queued for the peer"
            )
        })
    }

    /// Asks the peer for a page of its remotely visible regions, after
    /// `after` (`None`: from the start). The answer comes as
    /// [`Event::SegmentInfo`]. `NotReady` while an earlier answer is pending.
    pub fn query_segment_info(&mut self, after: Option<(Location, u64)>) -> Result<()> {
        if let Some(why) = &self.s.closed {
            return Err(status!(Disconnected, "link closed: {}", why.message()));
        }
        if self.s.info_req.is_some() || self.s.info_due.is_some() || self.s.info_page.is_some() {
            return Err(status!(NotReady, "a segment info query is already pending"));
        }
        let id = self.s.next_req_id(0xff);
        self.s.info_due = Some((id, after));
        self.s.info_req = Some(id);
        Ok(())
    }

    /// Feeds bytes received from the peer; returns how many were consumed.
    /// It stops early where a payload starts (see [`poll_payload`](Self::poll_payload))
    /// and when a notification cannot be queued until [`poll_event`](Self::poll_event)
    /// takes one; call again with the rest. Malformed input closes the link
    /// (reported by [`Event::Closed`]); after the close all input is
    /// consumed and ignored.
    pub fn handle_input<S>(&mut self, now: Instant, input: &[u8], reg: &mut Reg<S>) -> usize
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        if self.s.phase == Phase::Closed {
            return input.len();
        }
        if !input.is_empty() {
            self.s.last_rx = self.s.last_rx.max(now);
        }
        let mut used = 0;
        loop {
            match self.decoder.progress() {
                Progress::Payload(_) => break,
                Progress::Frame => {
                    if self
                        .decoder
                        .header()
                        .is_some_and(|h| h.opcode == crate::wire::Opcode::Notify as u8)
                        && self.s.inbox.is_full()
                    {
                        break;
                    }
                    let Link { decoder, s } = self;
                    match decoder.frame() {
                        Some(Ok(frame)) => s.dispatch(frame, reg),
                        Some(Err(e)) => s.fatal(e, reg),
                        None => {}
                    }
                    decoder.next();
                    if s.phase == Phase::Closed {
                        return input.len();
                    }
                }
                Progress::NeedMore => {
                    let Some(rest) = input.get(used..).filter(|r| !r.is_empty()) else {
                        break;
                    };
                    match self.decoder.feed(rest) {
                        Ok(n) => used += n,
                        Err(e) => {
                            self.s.fatal(e, reg);
                            return input.len();
                        }
                    }
                }
            }
        }
        used
    }

    /// Where the next payload bytes from the connection belong, while a
    /// payload is arriving. The span is valid until the next call on this
    /// link; it always lies inside memory the registry (for the peer's
    /// writes) or a submitted task (for answers to reads) allows.
    pub fn poll_payload(&self) -> Option<PayloadDest> {
        let Progress::Payload(left) = self.decoder.progress() else {
            return None;
        };
        let left = left as u64;
        let dest = match self.s.landing.as_ref()? {
            Landing::Read { chunk, landed } => self
                .s
                .tasks
                .read_dest(*chunk)
                .map(|span| span.slice(*landed, left)),
            Landing::Write {
                span,
                pin: Some(_),
                landed,
                ..
            } => Some(span.slice(*landed, left)),
            Landing::Write { pin: None, .. } => None,
        };
        Some(dest.map_or(PayloadDest::Discard(left), PayloadDest::Memory))
    }

    /// Reports that the next `n` payload bytes were placed where
    /// [`poll_payload`](Self::poll_payload) said (or dropped). `n` beyond
    /// what is due is ignored.
    pub fn payload_landed<S>(&mut self, now: Instant, n: u64, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        let Progress::Payload(left) = self.decoder.progress() else {
            return;
        };
        let n = n.min(left as u64);
        if n > 0 {
            self.s.last_rx = self.s.last_rx.max(now);
        }
        self.decoder.payload_consumed(n as u32);
        match self.s.landing.as_mut() {
            Some(Landing::Read { landed, .. }) | Some(Landing::Write { landed, .. }) => *landed += n,
            None => {}
        }
        if n as u32 == left {
            self.s.finish_landing(reg);
        }
    }

    /// Writes the frames due into `buf` (which must hold at least
    /// [`MAX_CONTROL_LEN`] bytes) and returns them, with the memory span to
    /// send right after them, if any. Returns `None` when nothing is due, or
    /// while the payload of the previous transmit has not been reported
    /// with [`payload_sent`](Self::payload_sent).
    pub fn poll_transmit<S>(&mut self, now: Instant, buf: &mut [u8], reg: &Reg<S>) -> Option<Transmit>
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        let _ = now;
        if buf.len() < MAX_CONTROL_LEN {
            return None;
        }
        let mut len = 0;
        let mut payload = None;
        while self.s.sending.is_none() {
            let Some(out) = buf.get_mut(len..) else { break };
            match self.s.next_frame(out, reg) {
                Some((n, p)) => {
                    len += n;
                    if p.is_some() {
                        payload = p;
                        break;
                    }
                }
                None => break,
            }
        }
        (len > 0).then_some(Transmit { len, payload })
    }

    /// Reports that the payload of the last transmit has been sent in full
    /// (or will never be: the connection is gone).
    pub fn payload_sent<S>(&mut self, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        if let Some(Sending::Response { pin, .. }) = self.s.sending.take() {
            reg.unpin(pin);
        }
    }

    /// Reports that the payload of the last transmit cannot be read (a
    /// device copy failed) and that no byte of the frame announcing it has
    /// been sent. Returns how many bytes at the end of that transmit are
    /// that frame: the shell drops them instead of sending them. An answer
    /// to the peer's read becomes an `Error` frame carrying `why`; a write
    /// of this side fails its task with `why`. Returns 0, doing nothing,
    /// when no payload is being sent.
    pub fn payload_unavailable<S>(&mut self, why: Status, reg: &mut Reg<S>) -> usize
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        match self.s.sending.take() {
            Some(Sending::Response { req_id, pin, frame }) => {
                reg.unpin(pin);
                let fail = Response::Fail { req_id, status: why };
                // The read still counts against the peer's window, so a
                // full queue means the peer sent more than it may. A closed
                // link answers nothing.
                if self.s.phase != Phase::Closed && self.s.responses.push_front(fail).is_err() {
                    let limit = self.s.cfg.max_outstanding;
                    self.s.violation(
                        reg,
                        format_args!("peer exceeded the limit of {limit} requests in flight"),
                    );
                }
                frame
            }
            Some(Sending::Request { chunk, frame, .. }) => {
                self.s.tasks.abandon(chunk, why);
                frame
            }
            None => 0,
        }
    }

    /// Reports that the payload arriving cannot be placed where
    /// [`poll_payload`](Self::poll_payload) said (a device copy failed).
    /// From now on its remaining bytes are discarded (`poll_payload` says
    /// [`PayloadDest::Discard`]), and the transfer fails with `why`: an
    /// answer to a read of this side fails its task, a write of the peer is
    /// answered with an `Error` frame carrying `why`. Does nothing unless
    /// `poll_payload` names memory.
    pub fn landing_failed<S>(&mut self, why: Status, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        if !matches!(self.poll_payload(), Some(PayloadDest::Memory(_))) {
            return;
        }
        match self.s.landing.as_mut() {
            Some(Landing::Read { chunk, .. }) => self.s.tasks.fail_task_of(*chunk, why),
            Some(Landing::Write { pin, error, .. }) => {
                if let Some(pin) = pin.take() {
                    reg.unpin(pin);
                }
                error.get_or_insert(why);
            }
            None => {}
        }
    }

    /// The next event, or `None` when there is none.
    pub fn poll_event(&mut self) -> Option<Event> {
        let s = &mut self.s;
        if core::mem::take(&mut s.connected_due) {
            return Some(Event::Connected);
        }
        let hold = match s.sending {
            Some(Sending::Request { slot, .. }) => Some(slot),
            _ => None,
        };
        if let Some(e) = s.tasks.poll_report(hold) {
            return Some(e);
        }
        if s.inbox.len() > s.inbox_announced {
            s.inbox_announced += 1;
            return Some(Event::Notification);
        }
        if s.info_page.is_some() && !s.info_announced {
            s.info_announced = true;
            return Some(Event::SegmentInfo);
        }
        if !s.closed_reported && !s.tasks.has_reports() && hold.is_none() {
            if let Some(why) = &s.closed {
                s.closed_reported = true;
                return Some(Event::Closed(why.clone()));
            }
        }
        None
    }

    /// The oldest notification from the peer not yet taken. Until it is
    /// taken, at most [`NOTIFY_QUEUE`] notifications wait and input stalls
    /// behind the next one.
    pub fn take_notification(&mut self) -> Option<Notification> {
        let n = self.s.inbox.pop_front()?;
        self.s.inbox_announced = self.s.inbox_announced.saturating_sub(1);
        Some(n)
    }

    /// The answer to [`query_segment_info`](Self::query_segment_info), once
    /// it arrived (or failed).
    pub fn take_segment_info(&mut self) -> Option<Result<SegmentPage>> {
        self.s.info_announced = false;
        self.s.info_page.take()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let s = &self.s;
        if s.phase == Phase::Closed {
            return None;
        }
        let mut t = Some(s.last_rx + s.cfg.idle_timeout);
        if s.phase != Phase::Established {
            t = earliest(t, Some(s.started + s.cfg.handshake_timeout));
        } else if s.ping_outstanding.is_none() && !s.ping_due {
            t = earliest(t, Some(s.last_rx + s.cfg.heartbeat_interval));
        }
        earliest(t, s.tasks.earliest_deadline())
    }

    /// Acts on the passing of time: task deadlines, heartbeats, a silent
    /// peer, a handshake that takes too long.
    pub fn handle_timeout<S>(&mut self, now: Instant, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        let s = &mut self.s;
        if s.phase == Phase::Closed {
            return;
        }
        if s.phase != Phase::Established && now >= s.started + s.cfg.handshake_timeout {
            let st = status!(
                Timeout,
                "handshake not finished within {:?}",
                s.cfg.handshake_timeout
            );
            return s.shut(st, true, reg);
        }
        if now >= s.last_rx + s.cfg.idle_timeout {
            let st = status!(Timeout, "peer sent nothing for {:?}", now - s.last_rx);
            return s.shut(st, true, reg);
        }
        if s.phase == Phase::Established
            && s.ping_outstanding.is_none()
            && now >= s.last_rx + s.cfg.heartbeat_interval
        {
            s.ping_due = true;
        }
        s.tasks.expire(now);
    }

    /// Closes the link from this side: a `Goodbye` is queued for the peer,
    /// running tasks end `Canceled`, the peer's requests are dropped and
    /// their memory released. Idempotent.
    pub fn close<S>(&mut self, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        if self.s.phase != Phase::Closed {
            self.s.goodbye_due = true;
            self.s.shut(
                Status::new(ErrorCode::Canceled, "link closed locally"),
                false,
                reg,
            );
        }
    }

    /// The connection is gone (reset, end of stream, write error): running
    /// tasks end `Disconnected` and every pin is released, including that
    /// of a payload being sent. Idempotent.
    pub fn handle_disconnect<S>(&mut self, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        let peer = self.s.peer.as_ref().map_or("", |p| p.segment_name.as_str());
        let why = status!(Disconnected, "connection to peer {peer:?} lost");
        self.abort(why, reg);
    }

    /// Closes the link for a reason the shell found (a failed connect, an
    /// IO error): running tasks end with `why`, nothing more is sent, and
    /// every pin is released, including that of a payload being sent.
    /// Idempotent: a link already closed keeps its first reason.
    pub fn abort<S>(&mut self, why: Status, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        self.s.shut(why, false, reg);
        self.s.link_error_due = None;
        self.s.goodbye_due = false;
        self.payload_sent(reg);
    }

    /// Whether frames are still due for the peer (after a close: the
    /// `Error` or `Goodbye` that tells it why).
    pub fn wants_transmit(&self) -> bool {
        let s = &self.s;
        s.link_error_due.is_some() || s.goodbye_due || (s.phase != Phase::Closed && s.has_frames_due())
    }
}

impl Inner {
    fn next_req_id(&mut self, low: u64) -> u64 {
        self.seq += 1;
        (self.seq << 8) | low
    }

    /// `NotSupported` unless the peer's handshake set `PROCESS_VM`: the
    /// same-host frames go only to a peer that offers the path.
    fn peer_offers_local(&self) -> Result<()> {
        match &self.peer {
            Some(p) if p.caps & caps::PROCESS_VM != 0 => Ok(()),
            Some(p) => Err(status!(
                NotSupported,
                "peer {:?} does not offer the same-host path",
                p.segment_name.as_str()
            )),
            None => Err(status!(NotSupported, "handshake not finished")),
        }
    }

    /// Requests the peer accepts in flight from us.
    fn window(&self) -> usize {
        let peer = self.peer.as_ref().map_or(1, |p| p.max_outstanding as usize);
        peer.min(MAX_OUTSTANDING)
    }

    /// Room left in the window for data requests: a sent segment-info
    /// query counts against it like any request.
    fn data_window(&self) -> usize {
        self.window()
            .saturating_sub(usize::from(self.info_req.is_some() && self.info_due.is_none()))
    }

    /// Whether another request of any kind fits the window.
    fn window_has_room(&self) -> bool {
        self.tasks.in_flight() < self.data_window()
    }

    fn send_payload_max(&self) -> u32 {
        self.peer
            .as_ref()
            .map_or(4096, |p| p.max_payload.min(self.cfg.max_payload))
    }

    /// Mirrors `next_frame`: handshake frames go out in any phase, the
    /// rest only once the link is established.
    fn has_frames_due(&self) -> bool {
        if self.hello_due || self.auth_due.is_some() {
            return true;
        }
        self.phase == Phase::Established
            && (self.pong_due.is_some()
                || self.ping_due
                || (self.info_due.is_some() && self.window_has_room())
                || !self.notify_out.is_empty()
                || self.challenge_out.is_some()
                || self.maps_out.next_due().is_some()
                || !self.responses.is_empty()
                || self
                    .tasks
                    .peek_next(self.data_window(), self.send_payload_max())
                    .is_some())
    }

    fn hello(&self) -> Hello<'_> {
        Hello {
            caps: self.cfg.caps,
            max_payload: self.cfg.max_payload,
            max_outstanding: self.cfg.max_outstanding,
            auth: if self.cfg.secret.is_some() {
                AUTH_HMAC_SHA256
            } else {
                AUTH_NONE
            },
            host_id: self.cfg.host_id,
            nonce: self.nonce,
            mac: self.hello_mac,
            name: &self.cfg.segment_name,
        }
    }

    /// Encodes the next frame due into `out`; `None` when nothing is due or
    /// it does not fit.
    fn next_frame<S>(&mut self, out: &mut [u8], reg: &Reg<S>) -> Option<(usize, Option<Span>)>
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        if let Some(st) = &self.link_error_due {
            let n = Frame::Error {
                req_id: 0,
                code: st.code(),
                msg: st.message(),
            }
            .encode(out)
            .ok()?;
            self.link_error_due = None;
            return Some((n, None));
        }
        if self.phase == Phase::Closed {
            if self.goodbye_due {
                let n = Frame::Goodbye { code: ErrorCode::Ok }.encode(out).ok()?;
                self.goodbye_due = false;
                return Some((n, None));
            }
            return None;
        }
        if self.hello_due {
            let h = self.hello();
            let f = if self.role == Role::Connector {
                Frame::Hello(h)
            } else {
                Frame::HelloAck(h)
            };
            let n = f.encode(out).ok()?;
            self.hello_due = false;
            return Some((n, None));
        }
        if let Some(mac) = self.auth_due {
            let n = Frame::Auth { mac }.encode(out).ok()?;
            self.auth_due = None;
            return Some((n, None));
        }
        if self.phase != Phase::Established {
            return None;
        }
        if let Some(token) = self.pong_due {
            let n = Frame::Pong { token }.encode(out).ok()?;
            self.pong_due = None;
            return Some((n, None));
        }
        if self.ping_due {
            let token = self.ping_seq + 1;
            let n = Frame::Ping { token }.encode(out).ok()?;
            self.ping_seq = token;
            self.ping_due = false;
            self.ping_outstanding = Some(token);
            return Some((n, None));
        }
        if let Some((req_id, after)) = self.info_due.filter(|_| self.window_has_room()) {
            let n = Frame::InfoReq { req_id, after }.encode(out).ok()?;
            self.info_due = None;
            return Some((n, None));
        }
        if let Some(c) = &self.challenge_out {
            let n = Frame::PidChallenge {
                token: c.token,
                socket: &c.socket,
            }
            .encode(out)
            .ok()?;
            self.challenge_out = None;
            return Some((n, None));
        }
        if let Some(note) = self.notify_out.front() {
            let name = note.name.as_str();
            let n = Frame::Notify { name, msg: &note.msg }.encode(out).ok()?;
            self.notify_out.pop_front();
            return Some((n, None));
        }
        // Before any request: the peer must know a buffer before the first
        // request using it, and forget it before any later one.
        if let Some(m) = self.maps_out.next_due() {
            let n = Frame::LocalMap(m).encode(out).ok()?;
            self.maps_out.sent(m);
            return Some((n, None));
        }
        let next = self.tasks.peek_next(self.data_window(), self.send_payload_max());
        let response_first = !self.prefer_requests || next.is_none();
        if response_first && !self.responses.is_empty() {
            self.prefer_requests = true;
            return self.encode_response(out, reg);
        }
        let next = next?;
        self.prefer_requests = false;
        self.encode_request(out, &next)
    }

    fn encode_response<S>(&mut self, out: &mut [u8], reg: &Reg<S>) -> Option<(usize, Option<Span>)>
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        let (n, payload) = match self.responses.front()? {
            Response::Read { req_id, span, pin } => {
                let n = Frame::ReadData {
                    req_id: *req_id,
                    len: span.len as u32,
                }
                .encode(out)
                .ok()?;
                self.sending = Some(Sending::Response {
                    req_id: *req_id,
                    pin: *pin,
                    frame: n,
                });
                (n, Some(*span))
            }
            Response::Ack { req_id } => (Frame::WriteAck { req_id: *req_id }.encode(out).ok()?, None),
            Response::Fail { req_id, status } => {
                let f = Frame::Error {
                    req_id: *req_id,
                    code: status.code(),
                    msg: status.message(),
                };
                (f.encode(out).ok()?, None)
            }
            Response::Info { req_id, after } => {
                let (n, _) = encode_info_reply(out, *req_id, reg.remote_regions_after(*after)).ok()?;
                (n, None)
            }
        };
        self.responses.pop_front();
        Some((n, payload))
    }

    fn encode_request(&mut self, out: &mut [u8], next: &NextChunk) -> Option<(usize, Option<Span>)> {
        let req_id = (self.seq + 1) << 8 | next.chunk as u64;
        let access = LocalAccess {
            req_id,
            addr: next.remote_addr,
            location: next.remote_location,
            len: next.len,
            peer_addr: next.local.addr,
        };
        let (frame, payload) = match next.op {
            op if next.by_copy => (Frame::local(op == Op::Read, access), None),
            Op::Read => (
                Frame::ReadReq {
                    req_id,
                    addr: next.remote_addr,
                    location: next.remote_location,
                    len: next.len,
                },
                None,
            ),
            Op::Write => (
                Frame::WriteData {
                    req_id,
                    addr: next.remote_addr,
                    location: next.remote_location,
                    len: next.len,
                },
                Some(next.local),
            ),
        };
        let n = frame.encode(out).ok()?;
        self.seq += 1;
        self.tasks.commit(next, req_id);
        if payload.is_some() {
            self.sending = Some(Sending::Request {
                slot: next.slot,
                chunk: next.chunk,
                frame: n,
            });
        }
        Some((n, payload))
    }

    /// Closes the link for a reason found on this side and tells the peer.
    fn fatal<S>(&mut self, e: WireError, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        self.shut(e.to_status(), true, reg);
    }

    /// Moves to `Closed`: every running task fails with `why`, the peer's
    /// requests are dropped and their pins released. With `tell`, an
    /// `Error` frame carrying `why` is queued for the peer.
    fn shut<S>(&mut self, why: Status, tell: bool, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        if tell {
            self.link_error_due = Some(why.clone());
        }
        self.tasks.fail_all(&why);
        self.tasks.forget_in_flight();
        while let Some(r) = self.responses.pop_front() {
            if let Response::Read { pin, .. } = r {
                reg.unpin(pin);
            }
        }
        if let Some(Landing::Write { pin: Some(pin), .. }) = self.landing.take() {
            reg.unpin(pin);
        }
        while let Some((_, _, pin)) = self.copies.pop_front() {
            reg.unpin(pin);
        }
        self.challenge_out = None;
        self.challenge_in = None;
        self.local_copy = false;
        self.maps_out.clear();
        self.maps_in.clear();
        if self.info_req.take().is_some() {
            self.info_page = Some(Err(why.clone()));
        }
        self.info_due = None;
        self.notify_out.clear();
        self.hello_due = false;
        self.auth_due = None;
        self.pong_due = None;
        self.ping_due = false;
        self.connected_due = false;
        self.closed = Some(why);
    }

    fn violation<S>(&mut self, reg: &mut Reg<S>, args: core::fmt::Arguments<'_>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        self.shut(Status::with_args(ErrorCode::Invalid, args), true, reg);
    }

    fn dispatch<S>(&mut self, frame: Frame<'_>, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        match (self.phase, frame) {
            (_, Frame::Error { req_id: 0, code, msg }) => {
                self.shut(status!(=code, "peer closed the link: {msg}"), false, reg)
            }
            (_, Frame::Goodbye { code }) => {
                self.shut(status!(Disconnected, "peer said goodbye ({code})"), false, reg)
            }
            (Phase::AwaitHello, Frame::Hello(h)) => self.on_hello(&h, reg),
            (Phase::AwaitHelloAck, Frame::HelloAck(h)) => self.on_hello_ack(&h, reg),
            (Phase::AwaitAuth, Frame::Auth { mac }) => {
                let secret = self.cfg.secret.as_deref().unwrap_or(&[]);
                if auth::verify(secret, Side::Connector, &self.peer_nonce, &self.nonce, &mac) {
                    self.established();
                } else {
                    self.shut(
                        status!(NotAuthorized, "peer failed to prove the shared secret"),
                        true,
                        reg,
                    );
                }
            }
            (Phase::Established, f) => self.on_frame(f, reg),
            (phase, f) => self.violation(
                reg,
                format_args!("unexpected {:?} frame in phase {phase:?}", f.opcode()),
            ),
        }
    }

    fn record_peer(&mut self, h: &Hello<'_>) {
        let mut name = heapless::String::new();
        // The decoder bounded the name by SEGMENT_NAME_MAX, the capacity.
        let _ = name.push_str(h.name);
        self.peer = Some(PeerInfo {
            segment_name: name,
            host_id: h.host_id,
            caps: h.caps,
            max_payload: h.max_payload,
            max_outstanding: h.max_outstanding,
        });
        self.peer_nonce = h.nonce;
    }

    fn on_hello<S>(&mut self, h: &Hello<'_>, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        self.record_peer(h);
        self.hello_due = true;
        match &self.cfg.secret {
            Some(secret) if h.auth != AUTH_HMAC_SHA256 => {
                let _ = secret;
                self.shut(
                    status!(
                        NotAuthorized,
                        "peer offered no authentication; a shared secret is required"
                    ),
                    true,
                    reg,
                )
            }
            Some(secret) => {
                self.hello_mac = auth::prove(secret, Side::Acceptor, &h.nonce, &self.nonce);
                self.phase = Phase::AwaitAuth;
            }
            None if h.auth != AUTH_NONE => {
                let st = status!(
                    NotAuthorized,
                    "peer {:?} wants a shared secret; none is configured here",
                    h.name
                );
                self.shut(st, true, reg)
            }
            None => self.established(),
        }
    }

    fn on_hello_ack<S>(&mut self, h: &Hello<'_>, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        self.record_peer(h);
        match &self.cfg.secret {
            Some(secret) => {
                let proven = h.auth == AUTH_HMAC_SHA256
                    && auth::verify(secret, Side::Acceptor, &self.nonce, &h.nonce, &h.mac);
                if !proven {
                    let st = status!(NotAuthorized, "peer {:?} did not prove the shared secret", h.name);
                    return self.shut(st, true, reg);
                }
                self.auth_due = Some(auth::prove(secret, Side::Connector, &self.nonce, &h.nonce));
            }
            None if h.auth != AUTH_NONE => {
                let st = status!(NotAuthorized, "peer {:?} requires a shared secret", h.name);
                return self.shut(st, true, reg);
            }
            None => {}
        }
        self.established();
    }

    fn established(&mut self) {
        self.phase = Phase::Established;
        self.connected_due = true;
    }

    /// Admits a new request from the peer: its id must not be 0 (reserved
    /// for the link) and it must fit the limit of requests in flight.
    fn request_room<S>(&mut self, req_id: u64, reg: &mut Reg<S>) -> bool
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        if req_id == 0 {
            self.violation(reg, format_args!("request id 0 is reserved for the link"));
            return false;
        }
        let busy = self.responses.len()
            + self.copies.len()
            + usize::from(matches!(self.landing, Some(Landing::Write { .. })));
        if busy >= self.cfg.max_outstanding as usize {
            let limit = self.cfg.max_outstanding;
            self.violation(
                reg,
                format_args!("peer exceeded the limit of {limit} requests in flight"),
            );
            return false;
        }
        true
    }

    fn on_frame<S>(&mut self, frame: Frame<'_>, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        match frame {
            Frame::ReadReq {
                req_id,
                addr,
                location,
                len,
            } => {
                if !self.request_room(req_id, reg) {
                    return;
                }
                if len > self.cfg.max_payload {
                    let max = self.cfg.max_payload;
                    return self
                        .violation(reg, format_args!("read of {len} bytes exceeds max payload {max}"));
                }
                let r = match reg.pin_remote(addr, len as u64, location, Perm::REMOTE_READ) {
                    Ok(pin) => Response::Read {
                        req_id,
                        span: Span {
                            addr,
                            len: len as u64,
                            location: pin.location,
                        },
                        pin,
                    },
                    Err(status) => Response::Fail { req_id, status },
                };
                // request_room() proved there is room.
                let _ = self.responses.push_back(r);
            }
            Frame::WriteData {
                req_id,
                addr,
                location,
                len,
            } => {
                if !self.request_room(req_id, reg) {
                    return;
                }
                let len = len as u64;
                self.landing = Some(match reg.pin_remote(addr, len, location, Perm::REMOTE_WRITE) {
                    Ok(pin) => Landing::Write {
                        req_id,
                        span: Span {
                            addr,
                            len,
                            location: pin.location,
                        },
                        pin: Some(pin),
                        error: None,
                        landed: 0,
                    },
                    Err(e) => Landing::Write {
                        req_id,
                        span: Span::cpu(addr, len),
                        pin: None,
                        error: Some(e),
                        landed: 0,
                    },
                });
            }
            Frame::ReadData { req_id, len } => match self.tasks.chunk(req_id) {
                Some((idx, c)) if c.op == Op::Read && !c.by_copy && c.len == len => {
                    self.landing = Some(Landing::Read {
                        chunk: idx,
                        landed: 0,
                    })
                }
                _ => self.violation(
                    reg,
                    format_args!("ReadData of {len} bytes answers no read {req_id:#x}"),
                ),
            },
            Frame::WriteAck { req_id } => match self.tasks.chunk(req_id) {
                Some((idx, c)) if c.op == Op::Write || c.by_copy => self.tasks.complete(idx),
                _ => self.violation(reg, format_args!("WriteAck answers no write {req_id:#x}")),
            },
            Frame::Error { req_id, code, msg } => {
                let st = status!(=code, "{msg}");
                if self.info_req == Some(req_id) && self.info_due.is_none() {
                    self.info_req = None;
                    self.info_page = Some(Err(st));
                } else if let Some((idx, _)) = self.tasks.chunk(req_id) {
                    self.tasks.failed(idx, st);
                } else {
                    self.violation(reg, format_args!("Error answers no request {req_id:#x}"));
                }
            }
            Frame::Notify { name, msg } => match Notification::new(name, msg) {
                // handle_input() only dispatches a Notify when the inbox has room.
                Ok(n) => {
                    let _ = self.inbox.push_back(n);
                }
                // Unreachable: the decoder enforces the same limits.
                Err(e) => self.shut(e, true, reg),
            },
            Frame::InfoReq { req_id, after } => {
                if self.request_room(req_id, reg) {
                    let _ = self.responses.push_back(Response::Info { req_id, after });
                }
            }
            Frame::InfoReply {
                req_id,
                more,
                regions,
            } => {
                if self.info_req != Some(req_id) || self.info_due.is_some() {
                    return self.violation(reg, format_args!("InfoReply answers no query {req_id:#x}"));
                }
                self.info_req = None;
                let mut page = SegmentPage {
                    regions: heapless::Vec::new(),
                    more,
                };
                for r in regions.iter() {
                    // The decoder bounded the count by INFO_PAGE_MAX, the capacity.
                    let _ = page.regions.push(r);
                }
                self.info_page = Some(Ok(page));
            }
            Frame::PidChallenge { token, socket } => match PidChallenge::new(token, socket) {
                Ok(c) => self.challenge_in = Some(c),
                // Unreachable: the decoder enforces the same limits.
                Err(e) => self.shut(e, true, reg),
            },
            Frame::LocalRead(a) => self.on_local(Op::Read, a, reg),
            Frame::LocalWrite(a) => self.on_local(Op::Write, a, reg),
            Frame::LocalMap(m) => {
                if self.cfg.caps & caps::SHARED_MEMORY == 0 {
                    return self.violation(
                        reg,
                        format_args!(
                            "peer announced buffer {:#x} with LocalMap; this side does not map buffers",
                            m.id
                        ),
                    );
                }
                if let Err(why) = self.maps_in.apply(m) {
                    self.shut(why, true, reg);
                }
            }
            Frame::Ping { token } => self.pong_due = Some(token),
            Frame::Pong { token } => {
                if self.ping_outstanding == Some(token) {
                    self.ping_outstanding = None;
                }
            }
            f @ (Frame::Hello(_) | Frame::HelloAck(_) | Frame::Auth { .. } | Frame::Goodbye { .. }) => self
                .violation(
                    reg,
                    format_args!("unexpected {:?} frame after the handshake", f.opcode()),
                ),
        }
    }

    /// The peer's same-host request: checked and pinned exactly as its TCP
    /// twin, then queued for the shell's copy; a refusal is answered at once.
    fn on_local<S>(&mut self, op: Op, a: LocalAccess, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        let LocalAccess {
            req_id,
            addr,
            location,
            len,
            peer_addr,
        } = a;
        if !self.request_room(req_id, reg) {
            return;
        }
        if len > self.cfg.max_payload {
            let max = self.cfg.max_payload;
            return self.violation(reg, format_args!("copy of {len} bytes exceeds max payload {max}"));
        }
        let refuse = |status| Response::Fail { req_id, status };
        let r = if self.cfg.caps & caps::PROCESS_VM == 0 {
            refuse(status!(NotSupported, "same-host path not offered by this peer"))
        } else {
            let perm = match op {
                Op::Read => Perm::REMOTE_READ,
                Op::Write => Perm::REMOTE_WRITE,
            };
            match reg.pin_remote(addr, len as u64, location, perm) {
                Ok(pin) => {
                    let copy = LocalCopy {
                        span: Span {
                            addr,
                            len: len as u64,
                            location: pin.location,
                        },
                        peer_addr,
                        to_peer: op == Op::Read,
                    };
                    // request_room() proved there is room.
                    let _ = self.copies.push_back((req_id, copy, pin));
                    return;
                }
                Err(status) => refuse(status),
            }
        };
        // request_room() proved there is room.
        let _ = self.responses.push_back(r);
    }

    fn finish_landing<S>(&mut self, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        match self.landing.take() {
            Some(Landing::Read { chunk, .. }) => self.tasks.complete(chunk),
            Some(Landing::Write {
                req_id, pin, error, ..
            }) => {
                if let Some(pin) = pin {
                    reg.unpin(pin);
                }
                let r = match error {
                    None => Response::Ack { req_id },
                    Some(status) => Response::Fail { req_id, status },
                };
                // request_room() counted this write when it arrived.
                let _ = self.responses.push_back(r);
            }
            None => {}
        }
    }
}
