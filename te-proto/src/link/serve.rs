//! The target half of a link: answers to the peer's requests, and the
//! payload currently arriving.

use crate::location::Location;
use crate::region::Span;
use crate::registry::PinKey;
use crate::Status;

/// An answer waiting to be sent.
#[derive(Clone, Debug)]
pub(super) enum Response {
    /// Send `span` (pinned by `pin`) as the answer to a read.
    Read { req_id: u64, span: Span, pin: PinKey },
    /// A write was applied.
    Ack { req_id: u64 },
    /// A request failed.
    Fail { req_id: u64, status: Status },
    /// A page of the segment info, starting after `after`.
    Info {
        req_id: u64,
        after: Option<(Location, u64)>,
    },
}

/// The payload currently arriving.
#[derive(Clone, Debug)]
pub(super) enum Landing {
    /// The answer to our read request `chunk`.
    Read { chunk: usize, landed: u64 },
    /// The peer's write: into `span` when `pin` is set, else dropped and
    /// answered with `error`.
    Write {
        req_id: u64,
        span: Span,
        pin: Option<PinKey>,
        error: Option<Status>,
        landed: u64,
    },
}

/// A payload the shell is sending right now, and the length of the frame
/// that announces it (the end of the transmit that named the payload).
#[derive(Clone, Copy, Debug)]
pub(super) enum Sending {
    /// The answer to the peer's read `req_id`; the region stays pinned
    /// until it is sent.
    Response { req_id: u64, pin: PinKey, frame: usize },
    /// One of our writes: request `chunk` of the task in `slot`.
    Request { slot: usize, chunk: usize, frame: usize },
}
