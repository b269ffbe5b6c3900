//! What a link reports to its shell.

use crate::batch::TaskId;
use crate::error::{Result, Status};
use crate::region::{Region, Span};
use crate::wire::{INFO_PAGE_MAX, NOTIFY_MSG_MAX, NOTIFY_NAME_MAX, PID_SOCKET_MAX};

/// A notification `{name, msg}` from the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// Name (1 to 64 bytes of UTF-8).
    pub name: heapless::String<NOTIFY_NAME_MAX>,
    /// Message (up to 2048 bytes).
    pub msg: heapless::Vec<u8, NOTIFY_MSG_MAX>,
}

impl Notification {
    /// A notification within the wire's limits; `Invalid` names the bad
    /// length (an empty message is fine, an empty name is not).
    pub fn new(name: &str, msg: &[u8]) -> Result<Notification> {
        let mut n = Notification {
            name: heapless::String::new(),
            msg: heapless::Vec::new(),
        };
        if name.is_empty() || n.name.push_str(name).is_err() {
            return Err(crate::status!(
                Invalid,
                "notification name of {} bytes: must be 1 to {NOTIFY_NAME_MAX}",
                name.len()
            ));
        }
        if n.msg.extend_from_slice(msg).is_err() {
            return Err(crate::status!(
                Invalid,
                "notification message of {} bytes: at most {NOTIFY_MSG_MAX}",
                msg.len()
            ));
        }
        Ok(n)
    }
}

/// A peer's challenge to prove this process's id (same-host path): send
/// `token` over the abstract Unix socket `socket`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PidChallenge {
    /// Random bytes the peer sent over this link only.
    pub token: [u8; 32],
    /// Abstract Unix socket name (without the leading NUL).
    pub socket: heapless::Vec<u8, PID_SOCKET_MAX>,
}

impl PidChallenge {
    /// A challenge within the wire's limits; `Invalid` names a socket name
    /// of 0 or more than [`PID_SOCKET_MAX`] bytes.
    pub fn new(token: [u8; 32], socket: &[u8]) -> Result<PidChallenge> {
        match heapless::Vec::from_slice(socket) {
            Ok(socket) if !socket.is_empty() => Ok(PidChallenge { token, socket }),
            _ => Err(crate::status!(
                Invalid,
                "socket name of {} bytes: must be 1 to {PID_SOCKET_MAX}",
                socket.len()
            )),
        }
    }
}

/// A copy the shell does for the peer over the same-host path, from
/// [`SameHost::poll_copy`](super::SameHost::poll_copy). `span` is this side's
/// memory, validated and pinned; `peer_addr` is the peer's own memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SameHostCopy {
    /// This side's registered memory.
    pub span: Span,
    /// The first byte in the peer process (`span.len` bytes).
    pub peer_addr: u64,
    /// True: copy `span` to the peer (its read); false: copy from the peer
    /// into `span` (its write).
    pub to_peer: bool,
    /// `peer_addr` lies in a device buffer the peer announced with
    /// `LocalKey` ([`SameHost::peer_local_key`](super::SameHost::peer_local_key)
    /// finds it), not in its host memory.
    pub peer_device: bool,
}

/// One page of the peer's remotely visible regions, from
/// [`Link::take_segment_info`](super::Link::take_segment_info).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentPage {
    /// The regions, sorted by location and base address, each after every
    /// region of the pages before.
    pub regions: heapless::Vec<Region, INFO_PAGE_MAX>,
    /// The rkey the peer's NIC checks for each region, in the order of
    /// `regions` (`None`: the peer registered it with no RDMA device).
    pub rkeys: heapless::Vec<Option<u32>, INFO_PAGE_MAX>,
    /// More pages follow: the link asks for the next one once this one is
    /// taken, and announces it with another [`Event::SegmentInfo`]. False
    /// on the last page.
    pub more: bool,
    /// The last page: the peer has more regions than the query's cap, and
    /// this page ends where the cap was reached (`more` is false).
    pub truncated: bool,
}

/// Something the shell must know, from [`Link::poll_event`](super::Link::poll_event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The handshake finished; [`Link::peer`](super::Link::peer) tells who the peer is.
    Connected,
    /// A task moved more bytes (reported once per completed frame, not for
    /// the last one: that one is reported by `TaskDone`).
    Progress {
        /// The task.
        task: TaskId,
        /// Bytes transferred so far.
        transferred: u64,
    },
    /// A task ended. After this event the link never touches the task's
    /// local memory again.
    TaskDone {
        /// The task.
        task: TaskId,
        /// `Ok` when every byte was moved, else why not.
        result: Result<()>,
    },
    /// A notification arrived: take it with
    /// [`Link::take_notification`](super::Link::take_notification).
    Notification,
    /// A page of the answer to [`Link::query_segment_info`](super::Link::query_segment_info)
    /// arrived, or the query failed: take it with
    /// [`Link::take_segment_info`](super::Link::take_segment_info). Once per
    /// page; the page after comes only once this one is taken.
    SegmentInfo,
    /// The peer's `RdmaConn` came: on the acceptor its offer (answer it
    /// with [`Link::answer_rdma`](super::Link::answer_rdma)), on the
    /// connector the answer or refusal; [`Link::rdma`](super::Link::rdma)
    /// tells which. Once per link.
    Rdma,
    /// The link is closed (reported after every task's `TaskDone`). Flush
    /// the remaining transmits, then close the connection.
    Closed(Status),
}

/// Bytes for the shell to send, from [`Link::poll_transmit`](super::Link::poll_transmit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Bytes of frames written at the start of the shell's buffer.
    pub len: usize,
    /// Memory to send right after those bytes, straight from where it lives.
    /// Once all of it is sent the shell calls
    /// [`Link::payload_sent`](super::Link::payload_sent).
    pub payload: Option<Span>,
}

/// Where incoming payload bytes go, from [`Link::poll_payload`](super::Link::poll_payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadDest {
    /// The next `span.len` bytes of the stream belong at `span`.
    Memory(Span),
    /// The next this-many bytes of the stream are to be read and dropped.
    Discard(u64),
}
