//! The state of one link besides its input decoder: the connection's
//! phase and peer, and the halves that own the rest (the initiator's task
//! table, the target half, the same-host half, the segment-info query, the
//! frames due). Frames received are handled in `receive.rs`, the handshake
//! in `handshake.rs`, frames to send are chosen in `transmit.rs`.

use heapless::Deque;

use super::config::{LinkConfig, PeerInfo, MAX_OUTSTANDING};
use super::due::Due;
use super::event::Notification;
use super::info::InfoQuery;
use super::rdma::Rdma;
use super::same_host::SameHost;
use super::target::Target;
use super::tasks::Tasks;
use super::NOTIFY_QUEUE;
use crate::error::{ErrorCode, Status};
use crate::registry::{Entry, Registry};
use crate::time::Instant;
use crate::wire::WireError;

pub(super) type Reg<S> = Registry<S>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    AwaitHello,
    AwaitHelloAck,
    AwaitAuth,
    Established,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    Connector,
    Acceptor,
}

/// The answer to one of our reads whose payload is arriving: request
/// `chunk`, `landed` bytes of it so far.
#[derive(Clone, Copy, Debug)]
pub(super) struct Reading {
    pub chunk: usize,
    pub landed: u64,
}

/// One of our writes whose payload the shell is sending: request `chunk`
/// of the task in `slot`; `frame` is the length of its `WriteData` frame.
#[derive(Clone, Copy, Debug)]
pub(super) struct Writing {
    pub slot: usize,
    pub chunk: usize,
    pub frame: usize,
}

/// A frame the peer has begun to send: the `n`th of the link, its first
/// byte at `began`, `len` bytes in all (docs/PROTOCOL.md 11.1: it must be
/// complete by [`State::frame_deadline`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FrameClock {
    pub n: u64,
    pub began: Instant,
    pub len: u64,
}

pub(super) struct State {
    pub cfg: LinkConfig,
    pub role: Role,
    pub phase: Phase,
    pub nonce: [u8; 32],
    pub peer_nonce: [u8; 32],
    /// The acceptor's proof of the secret, sent in its `HelloAck`.
    pub hello_mac: [u8; 32],
    pub peer: Option<PeerInfo>,
    pub started: Instant,
    /// When the peer's last byte arrived.
    pub last_rx: Instant,
    /// When the last byte of a payload from the peer landed.
    pub last_payload_rx: Option<Instant>,
    /// When this side last handed frames to the shell.
    pub last_tx: Instant,
    /// The frame the peer has begun and not finished: its number in the
    /// decoder's count, when its first byte came, and its length.
    pub frame: Option<FrameClock>,
    pub seq: u64,
    /// Frames this side owes the peer.
    pub due: Due,
    pub ping_outstanding: Option<u64>,
    pub ping_seq: u64,
    pub notify_out: Deque<Notification, NOTIFY_QUEUE>,
    // Reports owed to the shell.
    pub connected_due: bool,
    /// The peer has sent a frame other than `Ping`/`Pong` since the handshake.
    pub peer_acted: bool,
    pub inbox: Deque<Notification, NOTIFY_QUEUE>,
    pub inbox_announced: usize,
    pub info: InfoQuery,
    pub closed: Option<Status>,
    pub closed_reported: bool,
    // The initiator half: our tasks, the answer to a read landing, the
    // payload of a write being sent.
    pub tasks: Tasks,
    pub reading: Option<Reading>,
    pub writing: Option<Writing>,
    /// Alternates answers and requests so that neither starves.
    pub prefer_requests: bool,
    pub target: Target,
    pub same_host: SameHost,
    pub rdma: Rdma,
}

impl State {
    /// The peer's segment name from its handshake; empty before it.
    pub fn peer_name(&self) -> &str {
        self.peer.as_ref().map_or("", |p| p.segment_name.as_str())
    }

    pub fn new(cfg: LinkConfig, now: Instant, nonce: [u8; 32], role: Role) -> State {
        State {
            role,
            phase: if role == Role::Connector {
                Phase::AwaitHelloAck
            } else {
                Phase::AwaitHello
            },
            nonce,
            peer_nonce: [0; 32],
            hello_mac: [0; 32],
            peer: None,
            started: now,
            last_rx: now,
            last_payload_rx: None,
            last_tx: now,
            frame: None,
            seq: 0,
            due: Due {
                hello: role == Role::Connector,
                ..Due::default()
            },
            ping_outstanding: None,
            ping_seq: 0,
            notify_out: Deque::new(),
            connected_due: false,
            peer_acted: false,
            inbox: Deque::new(),
            inbox_announced: 0,
            info: InfoQuery::default(),
            closed: None,
            closed_reported: false,
            tasks: Tasks::new(),
            reading: None,
            writing: None,
            prefer_requests: false,
            target: Target::new(),
            same_host: SameHost::new(),
            rdma: Rdma::default(),
            cfg,
        }
    }

    /// When the frame the peer has begun must be complete: after the idle
    /// timeout plus its length at [`LinkConfig::min_frame_rate`]; `None`
    /// between frames or without a floor.
    pub fn frame_deadline(&self) -> Option<Instant> {
        let rate = u64::from(self.cfg.min_frame_rate);
        let f = self.frame.filter(|_| rate > 0)?;
        // len < 2^25 (a header, 4 KiB of body, 16 MiB of payload): no overflow.
        let transfer = core::time::Duration::from_nanos(f.len.saturating_mul(1_000_000_000) / rate);
        Some(f.began + self.cfg.idle_timeout + transfer)
    }

    /// When this side, receiving a payload and sending nothing, owes the
    /// peer a keepalive (docs/PROTOCOL.md 11.1): a heartbeat interval after
    /// it last sent, once payload bytes landed since.
    pub fn keepalive_at(&self) -> Option<Instant> {
        let landed = self.last_payload_rx?;
        (self.phase == Phase::Established && landed > self.last_tx && !self.due.keepalive)
            .then(|| self.last_tx + self.cfg.heartbeat_interval)
    }

    pub fn next_req_id(&mut self, low: u64) -> u64 {
        self.seq += 1;
        (self.seq << 8) | low
    }

    /// Whether a payload is being sent (ours or an answer's): nothing else
    /// goes out until the shell reports it sent.
    pub fn sending(&self) -> bool {
        debug_assert!(
            !(self.writing.is_some() && self.target.is_sending()),
            "two payloads being sent at once"
        );
        self.writing.is_some() || self.target.is_sending()
    }

    /// Requests the peer accepts in flight from us.
    pub fn window(&self) -> usize {
        let peer = self.peer.as_ref().map_or(1, |p| p.max_outstanding as usize);
        peer.min(MAX_OUTSTANDING)
    }

    /// Room left in the window for data requests: a sent segment-info
    /// query counts against it like any request.
    pub fn data_window(&self) -> usize {
        let info_out = self.info.requested().is_some() && self.due.info.is_none();
        self.window().saturating_sub(usize::from(info_out))
    }

    /// Whether another request of any kind fits the window.
    pub fn window_has_room(&self) -> bool {
        self.tasks.in_flight() < self.data_window()
    }

    pub fn send_payload_max(&self) -> u32 {
        self.peer
            .as_ref()
            .map_or(4096, |p| p.max_payload.min(self.cfg.max_payload))
    }

    /// Closes the link for a reason found on this side and tells the peer.
    pub fn fatal<S>(&mut self, e: WireError, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        let st = match e {
            // The handshake's first frame does not even start with "TE".
            WireError::BadMagic(m) if matches!(self.phase, Phase::AwaitHello | Phase::AwaitHelloAck) => {
                Status::with_args(
                    ErrorCode::Invalid,
                    format_args!(
                        "peer does not speak te: its first bytes {:02x} {:02x} are not a te frame",
                        m[0], m[1]
                    ),
                )
            }
            e => e.to_status(),
        };
        self.shut(st, true, reg);
    }

    /// The peer broke a rule: close with `Invalid`, telling it why.
    pub fn violation<S>(&mut self, reg: &mut Reg<S>, args: core::fmt::Arguments<'_>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        self.shut(Status::with_args(ErrorCode::Invalid, args), true, reg);
    }

    /// Moves to `Closed`: every running task fails with `why`, the peer's
    /// requests are dropped and their pins released. With `tell`, an
    /// `Error` frame carrying `why` is queued for the peer.
    pub fn shut<S>(&mut self, why: Status, tell: bool, reg: &mut Reg<S>)
    where
        S: AsRef<[Entry]> + AsMut<[Entry]>,
    {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        if tell {
            self.due.link_error = Some(why.clone());
        }
        self.tasks.fail_all(&why);
        self.tasks.forget_in_flight();
        self.reading = None;
        self.target.close(reg);
        self.same_host.close(reg);
        self.rdma.close();
        self.info.close(&why);
        self.due.clear_open();
        self.notify_out.clear();
        self.connected_due = false;
        self.closed = Some(why);
    }
}
