//! The per-peer link state machine, in the sans-IO style of quinn-proto.
//!
//! One [`Link`] runs one connection. It is both initiator (it carries the
//! tasks this side submits, cut into requests of at most the negotiated
//! payload size, at most a window of them in flight) and target (it answers
//! the peer's requests after checking them against the local
//! [`Registry`](crate::Registry)). The shell moves bytes:
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
//! - [`Link::poll_timeout`] says when to call [`Link::handle_timeout`];
//! - the same-host path (process-id challenges, the peer's copies, mapped
//!   buffers) is reached through [`Link::same_host`] and
//!   [`Link::same_host_mut`].
//!
//! This file is the public facade; the state lives in the modules named
//! after it: `state` (phase, peer, the halves), `due` (frames owed to the
//! peer), `tasks` (the initiator half), `target` (the target half),
//! `same_host` (the same-host half), `info` (segment-info paging), with
//! `handshake`, `receive` and `transmit` handling frames.
//!
//! See the crate documentation for a complete example and
//! `docs/PROTOCOL.md` for the normative protocol.

mod config;
mod due;
mod event;
mod handshake;
mod info;
mod maps;
mod rdma;
mod receive;
mod same_host;
mod state;
mod target;
mod tasks;
mod transmit;

pub use crate::wire::{LocalKey, LocalMap, RdmaKey};
pub use config::{Caps, LinkConfig, PeerInfo, DEFAULT_MIN_FRAME_RATE, MAX_LINK_TASKS, MAX_OUTSTANDING};
pub use event::{Event, Notification, PayloadDest, PidChallenge, SameHostCopy, SegmentPage, Transmit};
pub use handshake::SECRET_MISMATCH;
pub use maps::MAX_LOCAL_MAPS;
pub use rdma::{Rdma, RdmaMut};
pub use same_host::{SameHost, SameHostMut};
pub use tasks::RdmaPost;

use self::state::{FrameClock, Phase, Reg, Role, State};
use crate::batch::{TaskId, TransferRequest};
use crate::error::{ErrorCode, Result, Status};
use crate::registry::Entry;
use crate::status;
use crate::time::{earliest, Instant};
use crate::wire::{Decoder, Progress, MAX_CONTROL_LEN};

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

/// One connection to one peer. See the [module docs](self).
pub struct Link {
    decoder: Decoder,
    s: State,
}

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
        Ok(Link {
            decoder: Decoder::new(cfg.max_payload),
            s: State::new(cfg, now, nonce, role),
        })
    }

    fn open(&self) -> Result<()> {
        match &self.s.closed {
            Some(why) => Err(status!(Disconnected, "link closed: {}", why.message())),
            None => Ok(()),
        }
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

    /// Whether the peer has sent anything but `Ping` and `Pong` since the
    /// handshake (a request, an answer, a notification). A target orders
    /// the links of one peer by it: docs/PROTOCOL.md 11.3.
    pub fn peer_acted(&self) -> bool {
        self.s.peer_acted
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
        self.s.target.busy() > 0 || self.s.target.is_sending() || self.s.same_host.poll_copy().is_some()
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
        self.open()?;
        self.s.tasks.submit(task, req, deadline, tasks::Via::Link)
    }

    /// The same-host half: whether the path is enabled, the buffers, the
    /// peer's copies waiting.
    pub fn same_host(&self) -> &SameHost {
        &self.s.same_host
    }

    /// The same-host half, for a change: submitting over the path,
    /// challenges, buffers, copies done.
    pub fn same_host_mut(&mut self) -> SameHostMut<'_> {
        let s = &mut self.s;
        SameHostMut {
            half: &mut s.same_host,
            closed: s.closed.as_ref(),
            peer: s.peer.as_ref(),
            tasks: &mut s.tasks,
            target: &mut s.target,
        }
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
        self.s.target.revoke_draining(reg)
    }

    /// Queues a notification for the peer (an empty message is fine).
    /// Errors: `Invalid` for an empty or too long name or a too long
    /// message, `NotReady` when [`NOTIFY_QUEUE`]
    /// notifications wait already, `Disconnected` when closed.
    pub fn send_notification(&mut self, name: &str, msg: &[u8]) -> Result<()> {
        self.open()?;
        let n = Notification::new(name, msg)?;
        self.s.notify_out.push_back(n).map_err(|_| {
            status!(
                NotReady,
                "{NOTIFY_QUEUE} notifications already queued for the peer"
            )
        })
    }

    /// Asks the peer for its remotely visible regions, at most `cap` of
    /// them. The link drives the pages (docs/PROTOCOL.md, "Segment
    /// information"): each page is announced by [`Event::SegmentInfo`] and
    /// taken with [`take_segment_info`](Self::take_segment_info), and once
    /// it is taken the link asks for the next one itself, until the peer
    /// says there is no more ([`SegmentPage::more`] false) or `cap` regions
    /// were handed out ([`SegmentPage::truncated`]). Every page is checked
    /// to list regions strictly after the ones before it; a page that does
    /// not is a protocol violation, which ends the query with `Invalid`
    /// naming the bad key and closes the link.
    ///
    /// Errors: `Invalid` for a `cap` of 0, `NotReady` while an earlier
    /// query is under way or its last page not taken, `Disconnected` when
    /// closed.
    pub fn query_segment_info(&mut self, cap: usize) -> Result<()> {
        self.open()?;
        self.s.info.start(cap)?;
        let id = self.s.next_req_id(0xff);
        self.s.due.info = Some((id, None));
        self.s.info.asked(id);
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
        let used = self.decode(input, reg);
        self.track_frame(now);
        used
    }

    /// Follows the frame the peer has begun, for the floor on its progress
    /// (`LinkConfig::min_frame_rate`).
    fn track_frame(&mut self, now: Instant) {
        let s = &mut self.s;
        s.frame = match (self.decoder.frame_in_progress(), s.frame) {
            (None, _) => None,
            (Some((n, len)), Some(f)) if f.n == n => Some(FrameClock { len, ..f }),
            (Some((n, len)), _) => Some(FrameClock { n, began: now, len }),
        };
    }

    fn decode<S>(&mut self, input: &[u8], reg: &mut Reg<S>) -> usize
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
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
        let Some(r) = self.s.reading else {
            return self.s.target.landing_dest(left);
        };
        let dest = self
            .s
            .tasks
            .read_dest(r.chunk)
            .map(|span| span.slice(r.landed, left));
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
            self.s.last_payload_rx = Some(now.max(self.s.last_payload_rx.unwrap_or(now)));
        }
        self.decoder.payload_consumed(n as u32);
        match self.s.reading.as_mut() {
            Some(r) => r.landed += n,
            None => self.s.target.landed(n),
        }
        if n as u32 == left {
            self.s.finish_landing(reg);
        }
        self.track_frame(now);
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
        if buf.len() < MAX_CONTROL_LEN {
            return None;
        }
        let mut len = 0;
        let mut payload = None;
        while !self.s.sending() {
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
        if len == 0 {
            return None;
        }
        self.s.last_tx = self.s.last_tx.max(now);
        Some(Transmit { len, payload })
    }

    /// Reports that the payload of the last transmit has been sent in full
    /// (or will never be: the connection is gone).
    pub fn payload_sent<S>(&mut self, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        self.s.writing = None;
        self.s.target.payload_sent(reg);
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
        if let Some(w) = self.s.writing.take() {
            self.s.tasks.abandon(w.chunk, why);
            return w.frame;
        }
        let closed = self.s.phase == Phase::Closed;
        self.s.target.payload_unavailable(why, closed, reg).unwrap_or(0)
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
        match self.s.reading {
            Some(r) => self.s.tasks.fail_task_of(r.chunk, why),
            None => self.s.target.landing_failed(why, reg),
        }
    }

    /// The next event, or `None` when there is none.
    pub fn poll_event(&mut self) -> Option<Event> {
        let s = &mut self.s;
        if core::mem::take(&mut s.connected_due) {
            return Some(Event::Connected);
        }
        let hold = s.writing.map(|w| w.slot);
        if let Some(e) = s.tasks.poll_report(hold) {
            return Some(e);
        }
        if s.inbox.len() > s.inbox_announced {
            s.inbox_announced += 1;
            return Some(Event::Notification);
        }
        if s.info.announce() {
            return Some(Event::SegmentInfo);
        }
        if s.rdma.take_announce() {
            return Some(Event::Rdma);
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

    /// The page of [`query_segment_info`](Self::query_segment_info) that
    /// [`Event::SegmentInfo`] announced, once; or how the query failed (the
    /// peer refused it, broke the paging rules, or the link closed). Taking
    /// a page with [`more`](SegmentPage::more) set makes the link ask for
    /// the next one.
    pub fn take_segment_info(&mut self) -> Option<Result<SegmentPage>> {
        let s = &mut self.s;
        let (page, next) = s.info.take();
        if let Some(after) = next {
            // A closed link ended the query (InfoQuery::close).
            debug_assert!(s.phase != Phase::Closed, "paging on a closed link");
            let id = s.next_req_id(0xff);
            s.due.info = Some((id, after));
            s.info.asked(id);
        }
        page
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
        } else if s.ping_outstanding.is_none() && !s.due.ping {
            t = earliest(t, Some(s.last_rx + s.cfg.heartbeat_interval));
        }
        t = earliest(t, s.frame_deadline());
        t = earliest(t, s.keepalive_at());
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
            let limit = s.cfg.handshake_timeout;
            let st = if s.last_rx == s.started {
                status!(
                    Timeout,
                    "handshake not finished within {limit:?}: the peer sent nothing (does it speak te?)"
                )
            } else {
                status!(Timeout, "handshake not finished within {limit:?}")
            };
            return s.shut(st, true, reg);
        }
        if now >= s.last_rx + s.cfg.idle_timeout {
            let st = status!(Timeout, "peer sent nothing for {:?}", now - s.last_rx);
            return s.shut(st, true, reg);
        }
        if let (Some(due), Some(f)) = (s.frame_deadline(), s.frame) {
            if now >= due {
                let st = status!(
                    Timeout,
                    "peer's frame of {} bytes unfinished after {:?}: below the floor of {} B/s",
                    f.len,
                    now - f.began,
                    s.cfg.min_frame_rate
                );
                return s.shut(st, true, reg);
            }
        }
        if s.keepalive_at().is_some_and(|at| now >= at) {
            s.due.keepalive = true;
        }
        if s.phase == Phase::Established
            && s.ping_outstanding.is_none()
            && now >= s.last_rx + s.cfg.heartbeat_interval
        {
            s.due.ping = true;
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
            self.s.due.goodbye = true;
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
        let why = status!(Disconnected, "connection to peer {:?} lost", self.s.peer_name());
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
        // Nothing more goes: not the closing frames, nor the `HelloAck` a
        // refusing acceptor sends before its `Error`.
        self.s.due.link_error = None;
        self.s.due.goodbye = false;
        self.s.due.hello = false;
        self.payload_sent(reg);
    }

    /// Closes the link for a rule of docs/PROTOCOL.md that only the shell
    /// can check, such as a `LocalMap` from a peer whose process the shell
    /// has not proven (15.5): running tasks end with `why`, every pin is
    /// released, and the peer is told with `Error(0)` carrying `why`. A link
    /// already closed keeps its first reason.
    pub fn refuse_peer<S>(&mut self, why: Status, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        self.s.shut(why, true, reg);
    }

    /// Whether frames are still due for the peer (after a close: the
    /// `Error` or `Goodbye` that tells it why).
    pub fn wants_transmit(&self) -> bool {
        let s = &self.s;
        s.due.link_error.is_some() || s.due.goodbye || (s.phase != Phase::Closed && s.has_frames_due())
    }
}
