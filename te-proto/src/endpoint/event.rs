//! What an endpoint reports to its runtime, and the handles it deals in.

use crate::batch::{BatchId, Op, TaskState};
use crate::region::Span;

/// Handle of an opened peer segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId(pub u32);

/// One transfer of a batch: `len` bytes between local address `local` and
/// address `remote` of segment `segment`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Read from the peer into local memory, or write local memory to the peer.
    pub op: Op,
    /// Local address (must lie in registered memory).
    pub local: u64,
    /// The peer.
    pub segment: SegmentId,
    /// Address in the peer's registered memory.
    pub remote: u64,
    /// Bytes to move.
    pub len: u64,
}

/// What became of a batch's notification when the batch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteOutcome {
    /// The batch carried none.
    None,
    /// Every task completed: the notification goes now, after the data, to
    /// every segment the batch touched
    /// ([`Endpoint::batch_segments`](super::Endpoint::batch_segments)).
    /// Each of them counts it until [`Endpoint::note_sent`](super::Endpoint::note_sent).
    Send,
    /// A task did not complete: the notification is not sent.
    Dropped,
}

/// What the runtime must act on, from [`Endpoint::poll_event`](super::Endpoint::poll_event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The segment has work for its link: connect it if it has none
    /// (reporting [`link_up`](super::Endpoint::link_up) or
    /// [`link_failed`](super::Endpoint::link_failed)), then
    /// [`feed`](super::Endpoint::feed) it.
    Service(SegmentId),
    /// No task of the batch is pending any more.
    BatchEnded {
        /// The batch.
        batch: BatchId,
        /// Its overall state.
        state: TaskState,
        /// Its notification.
        note: NoteOutcome,
    },
}

/// Where a canceled task stands, from [`Endpoint::cancel_task`](super::Endpoint::cancel_task).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cancel {
    /// The task has ended (now `Canceled`, or earlier).
    Ended,
    /// The task is on the segment's link: cancel it there
    /// ([`Link::cancel`](crate::link::Link::cancel)) and let go of a payload
    /// of `local` being sent; the link reports its end.
    OnLink {
        /// The segment whose link carries it.
        segment: SegmentId,
        /// The task's local memory.
        local: Span,
    },
}
