//! The endpoint's storage: one entry per task, per batch and per segment,
//! in arrays the caller provides (as the [`Registry`](crate::Registry) and
//! the [`BatchTable`](crate::BatchTable) do), so nothing grows.

use crate::batch::{BatchId, BatchSlot, Task, TaskId};
use crate::error::Status;
use crate::registry::{Entry, PinKey};
use crate::time::Instant;

use super::config::Path;

/// The longest segment name an endpoint keeps for its messages, in bytes.
pub const LABEL_MAX: usize = 64;

/// "No index" in the endpoint's intrusive lists.
pub(super) const NONE: u32 = u32::MAX;

/// The kinds of storage an endpoint keeps its tables in: boxed slices for a
/// program with a heap ([`Heap`], feature `std`), arrays or `&mut` slices
/// for one without.
pub trait Storage {
    /// Registered regions: [`Entry::EMPTY`] slots.
    type Regions: AsRef<[Entry]> + AsMut<[Entry]>;
    /// Batch slots of the [`BatchTable`](crate::BatchTable).
    type Batches: AsRef<[BatchSlot]> + AsMut<[BatchSlot]>;
    /// Task slots of the [`BatchTable`](crate::BatchTable).
    type Tasks: AsRef<[Task]> + AsMut<[Task]>;
    /// The endpoint's data per task slot: as many as task slots.
    type TaskEntries: AsRef<[TaskEntry]> + AsMut<[TaskEntry]>;
    /// The endpoint's data per batch slot: as many as batch slots.
    type BatchEntries: AsRef<[BatchEntry]> + AsMut<[BatchEntry]>;
    /// One entry per segment that can be open at once.
    type Segments: AsRef<[SegmentEntry]> + AsMut<[SegmentEntry]>;
}

/// The storage of one endpoint, handed to [`Endpoint::new`](super::Endpoint::new).
pub struct Parts<S: Storage> {
    /// Registered regions.
    pub regions: S::Regions,
    /// Batch slots.
    pub batches: S::Batches,
    /// Task slots.
    pub tasks: S::Tasks,
    /// Per task slot: as long as `tasks`.
    pub task_entries: S::TaskEntries,
    /// Per batch slot: as long as `batches`.
    pub batch_entries: S::BatchEntries,
    /// Segments.
    pub segments: S::Segments,
}

/// Borrowed slices: storage for programs without a heap (arrays on the
/// stack or in statics).
#[derive(Debug)]
pub struct Borrowed<'a>(core::marker::PhantomData<&'a mut ()>);

impl<'a> Storage for Borrowed<'a> {
    type Regions = &'a mut [Entry];
    type Batches = &'a mut [BatchSlot];
    type Tasks = &'a mut [Task];
    type TaskEntries = &'a mut [TaskEntry];
    type BatchEntries = &'a mut [BatchEntry];
    type Segments = &'a mut [SegmentEntry];
}

/// Boxed slices: storage for programs with a heap.
#[cfg(feature = "std")]
#[derive(Debug)]
pub struct Heap;

#[cfg(feature = "std")]
impl Storage for Heap {
    type Regions = std::boxed::Box<[Entry]>;
    type Batches = std::boxed::Box<[BatchSlot]>;
    type Tasks = std::boxed::Box<[Task]>;
    type TaskEntries = std::boxed::Box<[TaskEntry]>;
    type BatchEntries = std::boxed::Box<[BatchEntry]>;
    type Segments = std::boxed::Box<[SegmentEntry]>;
}

#[cfg(feature = "std")]
impl Parts<Heap> {
    /// Boxed tables of the given sizes, every slot empty.
    pub fn with_capacity(regions: usize, batches: usize, tasks: usize, segments: usize) -> Parts<Heap> {
        use std::vec;
        Parts {
            regions: vec![Entry::EMPTY; regions].into_boxed_slice(),
            batches: vec![BatchSlot::EMPTY; batches].into_boxed_slice(),
            tasks: vec![Task::EMPTY; tasks].into_boxed_slice(),
            task_entries: vec![TaskEntry::EMPTY; tasks].into_boxed_slice(),
            batch_entries: vec![BatchEntry::EMPTY; batches].into_boxed_slice(),
            segments: vec![SegmentEntry::EMPTY; segments].into_boxed_slice(),
        }
    }
}

/// The endpoint's data of one task: its local pin, deadline and path, and
/// its place in its segment's queue while it waits for room on the link.
#[derive(Clone, Copy, Debug)]
pub struct TaskEntry {
    /// The task in this slot.
    pub(super) task: TaskId,
    /// Its segment.
    pub(super) segment: u32,
    /// The local region pinned while the task runs.
    pub(super) pin: Option<PinKey>,
    pub(super) deadline: Instant,
    pub(super) path: Path,
    /// Whether the task waits in its segment's queue.
    pub(super) queued: bool,
    pub(super) prev: u32,
    pub(super) next: u32,
}

impl TaskEntry {
    /// A task slot with no task.
    pub const EMPTY: TaskEntry = TaskEntry {
        task: TaskId {
            batch: BatchId::from_u64(0),
            index: 0,
        },
        segment: NONE,
        pin: None,
        deadline: Instant::ZERO,
        path: Path::Auto,
        queued: false,
        prev: NONE,
        next: NONE,
    };
}

/// The endpoint's data of one batch: its first failure, its notification,
/// and whether its end is still to be reported.
#[derive(Clone, Debug)]
pub struct BatchEntry {
    /// The first failure, with the message that names why.
    pub(super) error: Option<Status>,
    /// The batch carries a notification, sent once every task completed.
    pub(super) note: bool,
    /// A submission with a notification was its last: it takes no more.
    pub(super) sealed: bool,
    /// Its queued tasks wait until [`Endpoint::release`](super::Endpoint::release).
    pub(super) held: bool,
    /// The end to report, taken by `poll_event`.
    pub(super) ended: Option<BatchId>,
    /// Linked into the list of ended batches.
    pub(super) listed: bool,
    pub(super) next: u32,
}

impl BatchEntry {
    /// A batch slot with no batch.
    pub const EMPTY: BatchEntry = BatchEntry {
        error: None,
        note: false,
        sealed: false,
        held: false,
        ended: None,
        listed: false,
        next: NONE,
    };
}

/// One peer segment: the queue of tasks waiting for room on its link, its
/// last failure and its count of notifications waiting to be sent.
#[derive(Clone, Debug)]
pub struct SegmentEntry {
    pub(super) used: bool,
    /// The name errors give it (cut at [`LABEL_MAX`] bytes).
    pub(super) label: heapless::String<LABEL_MAX>,
    pub(super) head: u32,
    pub(super) tail: u32,
    /// Why its last link ended.
    pub(super) last_error: Option<Status>,
    /// Notifications waiting to be sent: queued ones and those waiting for
    /// their batch.
    pub(super) notes: u32,
    /// The walk that last visited it (distinct segments of a batch).
    pub(super) mark: u64,
    /// Linked into the list of segments to service.
    pub(super) listed: bool,
    pub(super) next: u32,
}

impl SegmentEntry {
    /// A segment slot not in use.
    pub const EMPTY: SegmentEntry = SegmentEntry {
        used: false,
        label: heapless::String::new(),
        head: NONE,
        tail: NONE,
        last_error: None,
        notes: 0,
        mark: 0,
        listed: false,
        next: NONE,
    };
}
