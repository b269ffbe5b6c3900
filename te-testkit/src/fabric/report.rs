//! What a fabric tells its caller: events of the links, payload accesses,
//! broken contracts, and the faults that touched a connection.

use te_proto::link::{Event, Notification, SegmentPage};
use te_proto::{Instant, Span};

use super::{ConnId, NodeId};

/// Something the fabric saw, in the order it happened.
#[derive(Clone, Debug)]
pub enum Report {
    /// A link reported an event (notifications and segment info come as
    /// [`Report::Notification`] and [`Report::SegmentInfo`]).
    Event {
        /// The connection.
        conn: ConnId,
        /// The node whose link it is.
        node: NodeId,
        /// The event.
        event: Event,
    },
    /// A link received a notification (already taken from it).
    Notification {
        /// The connection it arrived on.
        conn: ConnId,
        /// The receiving node.
        node: NodeId,
        /// The notification (boxed: it holds up to 2 KiB).
        note: Box<Notification>,
    },
    /// The answer to a segment info query arrived (already taken).
    SegmentInfo {
        /// The connection.
        conn: ConnId,
        /// The node that asked.
        node: NodeId,
        /// The answer (boxed: a page holds up to 128 regions).
        page: Box<te_proto::Result<SegmentPage>>,
    },
    /// Payload bytes were read from (`landed: false`) or landed in
    /// (`landed: true`) a node's memory.
    Access {
        /// The node.
        node: NodeId,
        /// The bytes.
        span: Span,
        /// Written into memory (else read from it).
        landed: bool,
    },
    /// Both ends of a connection are closed; nothing more moves on it.
    Gone {
        /// The connection.
        conn: ConnId,
    },
}

/// A contract broken under the fabric's eyes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Virtual time.
    pub at: Instant,
    /// What happened.
    pub what: String,
}

/// Faults that touched a connection while it lived.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnFaults {
    /// Reset by [`Fabric::cut`](super::Fabric::cut) or [`Fabric::restart`](super::Fabric::restart).
    pub cut: bool,
    /// One of its nodes was frozen while it lived.
    pub frozen: bool,
    /// Closed on purpose by [`Fabric::close`](super::Fabric::close) (a goodbye, not a fault).
    pub closed: bool,
}
