//! Batches and their tasks, as in Mooncake TENT.
//!
//! A user allocates a batch of capacity N, submits transfer requests into it
//! (in one call or several, up to N), then polls the status of each task, of
//! all tasks, or of the batch as a whole. Each task is `Initial`, `Pending`,
//! `Completed`, `Failed(code)`, `Canceled` or `Timeout` and counts the bytes
//! transferred so far. The shell reports progress with
//! [`BatchTable::set_progress`] and outcomes with [`BatchTable::finish`].
//!
//! [`BatchTable`] owns no memory of its own: the caller hands it storage for
//! batch slots and task slots (`[X::EMPTY; N]`, `Box<[X]>`, `&mut [X]`). A
//! batch of capacity N reserves N contiguous task slots, found next-fit from
//! where the previous allocation ended, so a first-in first-out pattern of
//! batches costs O(N) per allocation whatever the table size.
//!
//! A [`BatchId`] carries a generation next to its slot index: once a batch
//! is freed its id is stale and every call with it answers `Invalid`; a new
//! batch in the same slot gets a new id.
//!
//! ```
//! use te_proto::batch::{BatchSlot, BatchTable, Op, Task, TaskId, TaskState, TransferRequest};
//! use te_proto::{ErrorCode, Span};
//!
//! let mut table = BatchTable::new([BatchSlot::EMPTY; 4], [Task::EMPTY; 32]);
//! let batch = table.alloc(2)?;
//! let req = TransferRequest {
//!     op: Op::Write,
//!     local: Span::cpu(0x1000, 4096),
//!     segment: 1,
//!     remote_addr: 0x20_0000,
//!     remote_location: None,
//! };
//! let tasks = table.submit(batch, &[req, req])?;
//! assert_eq!(tasks, 0..2);
//! assert_eq!(table.status(batch)?.state, TaskState::Pending);
//!
//! table.set_progress(TaskId { batch, index: 0 }, 1024)?;
//! table.finish(TaskId { batch, index: 0 }, TaskState::Completed)?;
//! table.finish(TaskId { batch, index: 1 }, TaskState::Failed(ErrorCode::Disconnected))?;
//! let status = table.status(batch)?;
//! assert_eq!(status.state, TaskState::Failed(ErrorCode::Disconnected));
//! assert_eq!((status.completed, status.failed, status.transferred), (1, 1, 4096));
//!
//! table.free(batch)?;
//! assert_eq!(table.status(batch).unwrap_err().code(), ErrorCode::Invalid);
//! # Ok::<(), te_proto::Status>(())
//! ```

use core::fmt;
use core::ops::Range;

use crate::error::{ErrorCode, Result, Status};
use crate::location::Location;
use crate::region::Span;
use crate::status;

/// "No index" in free-list links and first-failure markers.
const NONE: u32 = u32::MAX;

/// Identifies a batch of one [`BatchTable`].
///
/// The low 32 bits are the batch slot, the high 32 bits its generation. The
/// generation starts at 1, so `BatchId::from_u64(0)` is never valid, and it
/// moves on every time the slot is freed, so a freed id is never confused
/// with the batch that reuses its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatchId(u64);

impl BatchId {
    /// The numeric form, for C-style APIs and the wire.
    pub const fn to_u64(self) -> u64 {
        self.0
    }

    /// The id with numeric form `v`. Any value is accepted here; a value that
    /// names no live batch is rejected with `Invalid` by the table.
    pub const fn from_u64(v: u64) -> BatchId {
        BatchId(v)
    }

    const fn new(slot: u32, generation: u32) -> BatchId {
        BatchId(((generation as u64) << 32) | slot as u64)
    }

    const fn slot(self) -> u32 {
        (self.0 & 0xffff_ffff) as u32
    }

    const fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

impl fmt::Display for BatchId {
    /// The numeric form in hex: generation in the high, slot in the low 32 bits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Identifies one task: the `index`-th request submitted into `batch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TaskId {
    /// The batch the task belongs to.
    pub batch: BatchId,
    /// Position of the task among the batch's submitted requests, from 0.
    pub index: u32,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {} of batch {}", self.index, self.batch)
    }
}

/// Direction of a transfer, seen from the local side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Copy remote memory into local memory.
    Read,
    /// Copy local memory into remote memory.
    Write,
}

impl Op {
    /// The permission the remote region must grant: `REMOTE_READ` for a
    /// read, `REMOTE_WRITE` for a write.
    pub fn remote_perm(self) -> crate::region::Perm {
        match self {
            Op::Read => crate::region::Perm::REMOTE_READ,
            Op::Write => crate::region::Perm::REMOTE_WRITE,
        }
    }
}

/// One transfer: `local.len` bytes between `local` and `remote_addr` in the
/// segment `segment`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferRequest {
    /// Read or write.
    pub op: Op,
    /// The local memory; its length is the length of the transfer.
    pub local: Span,
    /// The segment (peer) handle.
    pub segment: u32,
    /// First byte of the remote range in the segment's address space.
    pub remote_addr: u64,
    /// Where the remote bytes live, when the caller knows; `None` lets the
    /// target's registration decide.
    pub remote_location: Option<Location>,
}

impl TransferRequest {
    const EMPTY: TransferRequest = TransferRequest {
        op: Op::Read,
        local: Span::cpu(0, 0),
        segment: 0,
        remote_addr: 0,
        remote_location: None,
    };
}

/// State of a task, or of a batch as a whole (see [`BatchStatus::state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Not submitted yet (a batch with nothing submitted).
    Initial,
    /// Submitted and not ended.
    Pending,
    /// All bytes transferred.
    Completed,
    /// Ended with an error.
    Failed(ErrorCode),
    /// Canceled by the user.
    Canceled,
    /// Its deadline passed.
    Timeout,
}

impl TaskState {
    /// True for the states a task ends in: `Completed`, `Failed`, `Canceled`
    /// and `Timeout`.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed(_) | TaskState::Canceled | TaskState::Timeout
        )
    }
}

/// Status of one task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskStatus {
    /// Its state.
    pub state: TaskState,
    /// Bytes transferred so far (equal to `len` once `Completed`).
    pub transferred: u64,
    /// Length of the transfer in bytes.
    pub len: u64,
}

/// Status of a batch: the overall state and counts over its submitted tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchStatus {
    /// Overall state: `Initial` when nothing is submitted, `Pending` while any
    /// task is pending, `Completed` when every task completed, otherwise the
    /// state of the first task (in submission order) that ended without
    /// completing: `Failed(code)`, `Canceled` or `Timeout`.
    pub state: TaskState,
    /// Number of submitted tasks.
    pub total: u32,
    /// Tasks that completed.
    pub completed: u32,
    /// Tasks that ended without completing (failed, canceled or timed out).
    pub failed: u32,
    /// Bytes transferred over all tasks (saturating at `u64::MAX`).
    pub transferred: u64,
    /// Bytes requested over all tasks (saturating at `u64::MAX`).
    pub len: u64,
}

/// Storage for one batch of a [`BatchTable`]. Callers allocate these (for
/// example `[BatchSlot::EMPTY; 64]`) and never look inside.
#[derive(Clone, Copy, Debug)]
pub struct BatchSlot {
    generation: u32,
    used: bool,
    /// First task slot of the batch's range.
    start: u32,
    capacity: u32,
    submitted: u32,
    pending: u32,
    completed: u32,
    failed: u32,
    /// Index of the first task that ended without completing, or `NONE`.
    first_failed: u32,
    /// Next slot in the free list, or `NONE`.
    next_free: u32,
    /// Sums over submitted tasks; u128 so they never overflow.
    transferred: u128,
    len: u128,
}

impl BatchSlot {
    /// A free batch slot.
    pub const EMPTY: BatchSlot = BatchSlot {
        generation: 1,
        used: false,
        start: 0,
        capacity: 0,
        submitted: 0,
        pending: 0,
        completed: 0,
        failed: 0,
        first_failed: NONE,
        next_free: NONE,
        transferred: 0,
        len: 0,
    };
}

/// Storage for one task of a [`BatchTable`]. Callers allocate these (for
/// example `[Task::EMPTY; 1024]`) and never look inside.
#[derive(Clone, Copy, Debug)]
pub struct Task {
    req: TransferRequest,
    state: TaskState,
    transferred: u64,
    /// End (exclusive) of the reserved range this slot belongs to; 0 when the
    /// slot is free. Lets the allocator skip a whole range from any slot.
    range_end: u32,
}

impl Task {
    /// A free task slot.
    pub const EMPTY: Task = Task {
        req: TransferRequest::EMPTY,
        state: TaskState::Initial,
        transferred: 0,
        range_end: 0,
    };

    fn status(&self) -> TaskStatus {
        TaskStatus {
            state: self.state,
            transferred: self.transferred,
            len: self.req.local.len,
        }
    }
}

/// The batches and tasks of one engine, in caller-provided storage.
///
/// Bounded: at most as many live batches as batch slots and at most as many
/// reserved tasks as task slots; a full table answers `NotReady`. No
/// operation allocates, and none panics whatever the arguments.
pub struct BatchTable<B, T> {
    batches: B,
    tasks: T,
    /// Usable lengths of the two storages (at most `u32::MAX`).
    batch_slots: u32,
    task_slots: u32,
    /// Free list of batch slots, first-in first-out so generations advance
    /// evenly over the slots.
    free_head: u32,
    free_tail: u32,
    /// Task slot where the next allocation search starts.
    cursor: u32,
    batches_used: u32,
    tasks_used: u32,
}

/// An error for storage that no longer matches the lengths seen by `new`
/// (only possible with a storage type whose `as_ref` changes length).
fn storage_lost(what: &str, index: u32) -> Status {
    status!(
        RuntimeError,
        "{what} slot {index} is missing from the table's storage"
    )
}

fn usable_len(len: usize) -> u32 {
    // Indices are u32 and `NONE` (u32::MAX) is reserved; a longer storage is
    // only used up to that length.
    u32::try_from(len).unwrap_or(NONE)
}

fn u64_saturating(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

impl<B, T> BatchTable<B, T>
where
    B: AsRef<[BatchSlot]> + AsMut<[BatchSlot]>,
    T: AsRef<[Task]> + AsMut<[Task]>,
{
    /// A table over `batches` (one slot per live batch) and `tasks` (one
    /// slot per task of every live batch). All slots start free; storage that
    /// was used before is reset, keeping generations moving so that ids from
    /// an earlier table over the same storage stay stale.
    pub fn new(mut batches: B, mut tasks: T) -> Self {
        let batch_slots = usable_len(batches.as_ref().len());
        let task_slots = usable_len(tasks.as_ref().len());
        for (i, slot) in (0..batch_slots).zip(batches.as_mut().iter_mut()) {
            let mut generation = slot.generation;
            if slot.used {
                generation = next_generation(generation);
            }
            *slot = BatchSlot {
                generation: generation.max(1),
                next_free: if i.saturating_add(1) < batch_slots {
                    i + 1
                } else {
                    NONE
                },
                ..BatchSlot::EMPTY
            };
        }
        for task in tasks.as_mut().iter_mut().take(task_slots as usize) {
            *task = Task::EMPTY;
        }
        let (free_head, free_tail) = if batch_slots == 0 {
            (NONE, NONE)
        } else {
            (0, batch_slots - 1)
        };
        BatchTable {
            batches,
            tasks,
            batch_slots,
            task_slots,
            free_head,
            free_tail,
            cursor: 0,
            batches_used: 0,
            tasks_used: 0,
        }
    }

    /// Allocates a batch for up to `capacity` tasks.
    ///
    /// `Invalid` for a capacity of 0 or one larger than the table's task
    /// storage; `NotReady` when every batch slot is in use or no `capacity`
    /// contiguous task slots are free (retry after a free; the message says
    /// which). Nothing changes on error.
    pub fn alloc(&mut self, capacity: u32) -> Result<BatchId> {
        if capacity == 0 {
            return Err(status!(
                Invalid,
                "batch capacity 0: a batch holds at least one task"
            ));
        }
        if capacity > self.task_slots {
            return Err(status!(
                Invalid,
                "batch capacity {capacity} exceeds the {} task slots of this table",
                self.task_slots
            ));
        }
        if self.free_head == NONE {
            return Err(status!(
                NotReady,
                "all {} batch slots in use; free a batch first",
                self.batch_slots
            ));
        }
        let Some(start) = self.find_room(capacity) else {
            return Err(status!(
                NotReady,
                "no {capacity} contiguous free task slots ({} of {} free); free a batch first",
                self.task_slots.saturating_sub(self.tasks_used),
                self.task_slots
            ));
        };
        let end = start.saturating_add(capacity);
        let index = self.free_head;
        let slot = self.batch_mut(index)?;
        let next = slot.next_free;
        let generation = slot.generation;
        *slot = BatchSlot {
            generation,
            used: true,
            start,
            capacity,
            ..BatchSlot::EMPTY
        };
        self.free_head = next;
        if next == NONE {
            self.free_tail = NONE;
        }
        let range = self
            .tasks
            .as_mut()
            .get_mut(start as usize..end as usize)
            .unwrap_or_default();
        for task in range {
            *task = Task {
                range_end: end,
                ..Task::EMPTY
            };
        }
        self.cursor = if end >= self.task_slots { 0 } else { end };
        self.batches_used = self.batches_used.saturating_add(1);
        self.tasks_used = self.tasks_used.saturating_add(capacity);
        Ok(BatchId::new(index, generation))
    }

    /// Next fit: the first position, in circular order from the cursor, that
    /// starts `n` free task slots inside the storage. Free slots are visited
    /// one by one, reserved ranges are skipped whole.
    fn find_room(&self, n: u32) -> Option<u32> {
        let tasks = self.tasks.as_ref();
        let len = self.task_slots;
        let cursor = self.cursor;
        let mut pos = cursor;
        let mut run_start = cursor;
        let mut wrapped = false;
        loop {
            if pos.saturating_sub(run_start) >= n {
                return Some(run_start);
            }
            if wrapped && run_start >= cursor {
                // Every run from here on was examined before the wrap.
                return None;
            }
            if pos >= len {
                if wrapped {
                    return None;
                }
                wrapped = true;
                pos = 0;
                run_start = 0;
                continue;
            }
            let range_end = tasks.get(pos as usize)?.range_end;
            if range_end == 0 {
                pos += 1;
            } else {
                // Skip the whole reserved range; never move backwards.
                pos = range_end.max(pos + 1).min(len);
                run_start = pos;
            }
        }
    }

    /// Submits `reqs` as the next tasks of batch `id`; they become `Pending`.
    /// Returns their task indices. May be called several times until the
    /// batch is full.
    ///
    /// `Invalid`, with nothing submitted, for a stale or foreign id, an empty
    /// `reqs`, more requests than the batch has room left for, or a request
    /// of length 0 or whose local span or remote range wraps the address
    /// space (the message names the first such request by index).
    pub fn submit(&mut self, id: BatchId, reqs: &[TransferRequest]) -> Result<Range<u32>> {
        self.submit_iter(id, reqs.iter().copied())
    }

    /// As [`submit`](Self::submit), for requests that are made on the fly
    /// (the iterator is walked twice: once to check, once to store).
    pub fn submit_iter<I>(&mut self, id: BatchId, reqs: I) -> Result<Range<u32>>
    where
        I: ExactSizeIterator<Item = TransferRequest> + Clone,
    {
        let index = self.live(id)?;
        let slot = self.batch(index)?;
        if reqs.len() == 0 {
            return Err(status!(Invalid, "empty request list for batch {id}"));
        }
        let room = slot.capacity.saturating_sub(slot.submitted);
        let count = match u32::try_from(reqs.len()) {
            Ok(count) if count <= room => count,
            _ => {
                return Err(status!(
                    Invalid,
                    "{} requests exceed batch {id}: {} of {} tasks already submitted",
                    reqs.len(),
                    slot.submitted,
                    slot.capacity
                ))
            }
        };
        for (i, req) in reqs.clone().enumerate() {
            check_request(i, &req)?;
        }
        let first = slot.submitted;
        let last = first.saturating_add(count);
        let from = slot.start.saturating_add(first) as usize;
        let tasks = self.tasks.as_mut().get_mut(from..).unwrap_or_default();
        let mut len_sum: u128 = 0;
        for (task, req) in tasks.iter_mut().zip(reqs) {
            task.req = req;
            task.state = TaskState::Pending;
            task.transferred = 0;
            len_sum = len_sum.saturating_add(u128::from(req.local.len));
        }
        let slot = self.batch_mut(index)?;
        slot.submitted = last;
        slot.pending = slot.pending.saturating_add(count);
        slot.len = slot.len.saturating_add(len_sum);
        Ok(first..last)
    }

    /// The request behind a submitted task. `Invalid` for a stale batch or
    /// an index not submitted.
    pub fn request(&self, task: TaskId) -> Result<TransferRequest> {
        let (_, t) = self.locate(task)?;
        Ok(self.task_ref(t)?.req)
    }

    /// The status of a submitted task. `Invalid` for a stale batch or an
    /// index not submitted.
    pub fn task(&self, task: TaskId) -> Result<TaskStatus> {
        let (_, t) = self.locate(task)?;
        Ok(self.task_ref(t)?.status())
    }

    /// The status of every submitted task of batch `id`, in submission order.
    /// `Invalid` for a stale or foreign id.
    pub fn tasks(&self, id: BatchId) -> Result<impl ExactSizeIterator<Item = TaskStatus> + '_> {
        let slot = self.batch(self.live(id)?)?;
        let start = slot.start as usize;
        let end = start.saturating_add(slot.submitted as usize);
        let tasks = self.tasks.as_ref().get(start..end).unwrap_or_default();
        Ok(tasks.iter().map(Task::status))
    }

    /// The overall status of batch `id` (see [`BatchStatus`]). O(1).
    /// `Invalid` for a stale or foreign id.
    pub fn status(&self, id: BatchId) -> Result<BatchStatus> {
        let slot = self.batch(self.live(id)?)?;
        let state = if slot.submitted == 0 {
            TaskState::Initial
        } else if slot.pending > 0 {
            TaskState::Pending
        } else if slot.first_failed == NONE {
            TaskState::Completed
        } else {
            let t = slot.start.saturating_add(slot.first_failed);
            self.task_ref(t)?.state
        };
        Ok(BatchStatus {
            state,
            total: slot.submitted,
            completed: slot.completed,
            failed: slot.failed,
            transferred: u64_saturating(slot.transferred),
            len: u64_saturating(slot.len),
        })
    }

    /// Records that `transferred` bytes of a pending task have moved.
    ///
    /// `Invalid` for a stale batch, an index not submitted, a task that is no
    /// longer pending, or `transferred` beyond the task's length.
    pub fn set_progress(&mut self, task: TaskId, transferred: u64) -> Result<()> {
        let (index, t) = self.locate(task)?;
        let entry = self.task_mut(t)?;
        if entry.state != TaskState::Pending {
            return Err(status!(Invalid, "{task} is {:?}, not Pending", entry.state));
        }
        let len = entry.req.local.len;
        if transferred > len {
            return Err(status!(
                Invalid,
                "transferred {transferred} exceeds the {len} bytes of {task}"
            ));
        }
        let old = core::mem::replace(&mut entry.transferred, transferred);
        let slot = self.batch_mut(index)?;
        slot.transferred = slot
            .transferred
            .saturating_sub(u128::from(old))
            .saturating_add(u128::from(transferred));
        Ok(())
    }

    /// Ends a task in the terminal `state`. Returns `Ok(true)` when the task
    /// was pending and now ended, `Ok(false)` when it had already ended: the
    /// first outcome wins and a task never completes twice. `Completed` sets
    /// the transferred bytes to the task's length.
    ///
    /// `Invalid` for a stale batch, an index not submitted, a state that is
    /// not terminal, or `Failed(ErrorCode::Ok)`.
    pub fn finish(&mut self, task: TaskId, state: TaskState) -> Result<bool> {
        let (index, t) = self.locate(task)?;
        if !state.is_terminal() {
            return Err(status!(Invalid, "{state:?} is not a terminal state for {task}"));
        }
        if state == TaskState::Failed(ErrorCode::Ok) {
            return Err(status!(
                Invalid,
                "Failed(Ok) is not a failure; finish {task} as Completed"
            ));
        }
        let entry = self.task_mut(t)?;
        if entry.state.is_terminal() {
            return Ok(false);
        }
        entry.state = state;
        let old = entry.transferred;
        let len = entry.req.local.len;
        if state == TaskState::Completed {
            entry.transferred = len;
        }
        let slot = self.batch_mut(index)?;
        slot.pending = slot.pending.saturating_sub(1);
        if state == TaskState::Completed {
            slot.completed = slot.completed.saturating_add(1);
            slot.transferred = slot
                .transferred
                .saturating_sub(u128::from(old))
                .saturating_add(u128::from(len));
        } else {
            slot.failed = slot.failed.saturating_add(1);
            slot.first_failed = slot.first_failed.min(task.index);
        }
        Ok(true)
    }

    /// Frees batch `id` and its task slots; from now on `id` is stale.
    ///
    /// `NotReady` while any of its tasks is pending (the message says how
    /// many); `Invalid` for a stale or foreign id.
    ///
    /// Generations are 32 bits and skip 0 when they wrap, so an id could only
    /// come back after its slot has been reused 2^32 - 1 times; free slots are
    /// reused first-in first-out, spreading reuse over all slots.
    pub fn free(&mut self, id: BatchId) -> Result<()> {
        let index = self.live(id)?;
        let slot = self.batch(index)?;
        if slot.pending > 0 {
            return Err(status!(
                NotReady,
                "batch {id} has {} pending tasks; finish them first",
                slot.pending
            ));
        }
        let start = slot.start as usize;
        let capacity = slot.capacity;
        let end = start.saturating_add(capacity as usize);
        for task in self.tasks.as_mut().get_mut(start..end).unwrap_or_default() {
            *task = Task::EMPTY;
        }
        let slot = self.batch_mut(index)?;
        *slot = BatchSlot {
            generation: next_generation(slot.generation),
            ..BatchSlot::EMPTY
        };
        if self.free_tail == NONE {
            self.free_head = index;
        } else {
            self.batch_mut(self.free_tail)?.next_free = index;
        }
        self.free_tail = index;
        self.batches_used = self.batches_used.saturating_sub(1);
        self.tasks_used = self.tasks_used.saturating_sub(capacity);
        Ok(())
    }

    /// The storage index of the live batch `id` (its [`BatchSlot`]), for
    /// callers that keep data of their own per batch in a parallel array.
    /// `Invalid` for a stale or foreign id.
    pub fn batch_index(&self, id: BatchId) -> Result<usize> {
        Ok(self.live(id)? as usize)
    }

    /// The storage index of a submitted task (its [`Task`] slot), for
    /// callers that keep data of their own per task in a parallel array.
    /// `Invalid` for a stale batch or an index not submitted.
    pub fn task_index(&self, task: TaskId) -> Result<usize> {
        Ok(self.locate(task)?.1 as usize)
    }

    /// Number of live (allocated, not freed) batches.
    pub fn batches_in_use(&self) -> usize {
        self.batches_used as usize
    }

    /// Number of task slots reserved by live batches (their capacities, not
    /// just what was submitted).
    pub fn tasks_in_use(&self) -> usize {
        self.tasks_used as usize
    }

    /// The slot index of the live batch `id`, or `Invalid` naming why not.
    fn live(&self, id: BatchId) -> Result<u32> {
        let index = id.slot();
        let generation = id.generation();
        if generation == 0 {
            return Err(status!(Invalid, "batch {id} is not a batch id (generation 0)"));
        }
        if index >= self.batch_slots {
            return Err(status!(
                Invalid,
                "batch {id} is not from this table (slot {index} of {})",
                self.batch_slots
            ));
        }
        let slot = self.batch(index)?;
        if !slot.used {
            return Err(status!(Invalid, "batch {id} is stale: slot {index} is free"));
        }
        if slot.generation != generation {
            return Err(status!(
                Invalid,
                "batch {id} is stale: slot {index} is at generation {}",
                slot.generation
            ));
        }
        Ok(index)
    }

    /// The batch slot index and absolute task slot of a submitted task.
    fn locate(&self, task: TaskId) -> Result<(u32, u32)> {
        let index = self.live(task.batch)?;
        let slot = self.batch(index)?;
        if task.index >= slot.submitted {
            return Err(status!(
                Invalid,
                "{task} is not submitted ({} submitted)",
                slot.submitted
            ));
        }
        Ok((index, slot.start.saturating_add(task.index)))
    }

    fn batch(&self, index: u32) -> Result<&BatchSlot> {
        self.batches
            .as_ref()
            .get(index as usize)
            .ok_or_else(|| storage_lost("batch", index))
    }

    fn batch_mut(&mut self, index: u32) -> Result<&mut BatchSlot> {
        self.batches
            .as_mut()
            .get_mut(index as usize)
            .ok_or_else(|| storage_lost("batch", index))
    }

    fn task_ref(&self, t: u32) -> Result<&Task> {
        self.tasks
            .as_ref()
            .get(t as usize)
            .ok_or_else(|| storage_lost("task", t))
    }

    fn task_mut(&mut self, t: u32) -> Result<&mut Task> {
        self.tasks
            .as_mut()
            .get_mut(t as usize)
            .ok_or_else(|| storage_lost("task", t))
    }
}

impl<B, T> fmt::Debug for BatchTable<B, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchTable")
            .field("batch_slots", &self.batch_slots)
            .field("task_slots", &self.task_slots)
            .field("batches_in_use", &self.batches_used)
            .field("tasks_in_use", &self.tasks_used)
            .field("cursor", &self.cursor)
            .finish()
    }
}

/// The generation after `g`, skipping 0 on wrap.
fn next_generation(g: u32) -> u32 {
    match g.wrapping_add(1) {
        0 => 1,
        n => n,
    }
}

/// Checks one request of a submit; `i` is its index in the call.
fn check_request(i: usize, req: &TransferRequest) -> Result<()> {
    let len = req.local.len;
    if len == 0 {
        return Err(status!(Invalid, "request {i}: length 0"));
    }
    if req.local.end().is_none() {
        return Err(status!(
            Invalid,
            "request {i}: local span {:#x}+{len} wraps the address space",
            req.local.addr
        ));
    }
    if req.remote_addr.checked_add(len).is_none() {
        return Err(status!(
            Invalid,
            "request {i}: remote range {:#x}+{len} wraps the address space",
            req.remote_addr
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::boxed::Box;
    use std::vec;
    use std::vec::Vec;

    use super::*;

    type Table = BatchTable<Box<[BatchSlot]>, Box<[Task]>>;

    fn table(batches: usize, tasks: usize) -> Table {
        BatchTable::new(
            vec![BatchSlot::EMPTY; batches].into_boxed_slice(),
            vec![Task::EMPTY; tasks].into_boxed_slice(),
        )
    }

    fn req(len: u64) -> TransferRequest {
        TransferRequest {
            op: Op::Write,
            local: Span::cpu(0x1000, len),
            segment: 7,
            remote_addr: 0x9000,
            remote_location: Some(Location::Sim(1)),
        }
    }

    fn err<V: fmt::Debug>(r: Result<V>) -> Status {
        r.expect_err("expected an error")
    }

    fn tid(batch: BatchId, index: u32) -> TaskId {
        TaskId { batch, index }
    }

    fn start_of(t: &Table, id: BatchId) -> u32 {
        t.batches[id.slot() as usize].start
    }

    #[test]
    fn alloc_zero_capacity_is_invalid() {
        let mut t = table(2, 8);
        let e = err(t.alloc(0));
        assert_eq!(e.code(), ErrorCode::Invalid);
        assert!(e.message().contains("capacity 0"), "{e}");
        assert_eq!(t.batches_in_use(), 0);
    }

    #[test]
    fn alloc_beyond_task_capacity_is_invalid() {
        let mut t = table(2, 8);
        let e = err(t.alloc(9));
        assert_eq!(e.code(), ErrorCode::Invalid);
        assert!(e.message().contains('9') && e.message().contains('8'), "{e}");
        assert_eq!(err(t.alloc(u32::MAX)).code(), ErrorCode::Invalid);
        let mut none = table(2, 0);
        assert_eq!(err(none.alloc(1)).code(), ErrorCode::Invalid);
        assert!(t.alloc(8).is_ok());
    }

    #[test]
    fn alloc_when_full_is_not_ready() {
        let mut t = table(2, 8);
        t.alloc(1).unwrap();
        let b = t.alloc(1).unwrap();
        let e = err(t.alloc(1));
        assert_eq!(e.code(), ErrorCode::NotReady);
        assert!(e.message().contains("all 2 batch slots"), "{e}");
        t.free(b).unwrap();
        assert!(t.alloc(1).is_ok());
        let mut none = table(0, 8);
        assert_eq!(err(none.alloc(1)).code(), ErrorCode::NotReady);
    }

    #[test]
    fn alloc_without_contiguous_room_is_not_ready() {
        let mut t = table(4, 8);
        t.alloc(3).unwrap();
        let b = t.alloc(3).unwrap();
        t.alloc(2).unwrap();
        t.free(b).unwrap();
        let e = err(t.alloc(4));
        assert_eq!(e.code(), ErrorCode::NotReady);
        assert!(
            e.message().contains("no 4 contiguous") && e.message().contains("3 of 8 free"),
            "{e}"
        );
        assert_eq!(t.tasks_in_use(), 5);
        assert!(t.alloc(3).is_ok());
    }

    #[test]
    fn submit_empty_is_invalid() {
        let mut t = table(2, 8);
        let b = t.alloc(2).unwrap();
        let e = err(t.submit(b, &[]));
        assert_eq!(e.code(), ErrorCode::Invalid);
        assert!(e.message().contains("empty"), "{e}");
    }

    #[test]
    fn submit_over_capacity_is_invalid() {
        let mut t = table(2, 8);
        let b = t.alloc(3).unwrap();
        assert_eq!(t.submit(b, &[req(1), req(2)]).unwrap(), 0..2);
        let e = err(t.submit(b, &[req(3), req(4)]));
        assert_eq!(e.code(), ErrorCode::Invalid);
        assert!(
            e.message().contains("2 requests") && e.message().contains("2 of 3"),
            "{e}"
        );
        assert_eq!(t.status(b).unwrap().total, 2, "nothing submitted");
        assert_eq!(t.submit(b, &[req(3)]).unwrap(), 2..3);
        assert_eq!(err(t.submit(b, &[req(4)])).code(), ErrorCode::Invalid);
    }

    #[test]
    fn submit_zero_length_is_invalid() {
        let mut t = table(2, 8);
        let b = t.alloc(4).unwrap();
        let e = err(t.submit(b, &[req(5), req(0), req(6)]));
        assert_eq!(e.code(), ErrorCode::Invalid);
        assert!(e.message().contains("request 1"), "{e}");
        let s = t.status(b).unwrap();
        assert_eq!(
            (s.state, s.total, s.len),
            (TaskState::Initial, 0, 0),
            "nothing submitted"
        );
    }

    #[test]
    fn submit_wrapping_range_is_invalid() {
        let mut t = table(2, 8);
        let b = t.alloc(4).unwrap();
        let local = TransferRequest {
            local: Span::cpu(u64::MAX, 2),
            ..req(2)
        };
        let e = err(t.submit(b, &[req(1), local]));
        assert_eq!(e.code(), ErrorCode::Invalid);
        assert!(e.message().contains("request 1: local"), "{e}");
        let remote = TransferRequest {
            remote_addr: u64::MAX - 1,
            ..req(2)
        };
        let e = err(t.submit(b, &[remote]));
        assert_eq!(e.code(), ErrorCode::Invalid);
        assert!(e.message().contains("request 0: remote"), "{e}");
        // Ending exactly at the top of the address space does not wrap.
        let top = TransferRequest {
            local: Span::cpu(u64::MAX - 2, 2),
            remote_addr: u64::MAX - 2,
            ..req(2)
        };
        assert!(t.submit(b, &[top]).is_ok());
    }

    #[test]
    fn submit_in_parts_keeps_order() {
        let mut t = table(2, 8);
        let b = t.alloc(4).unwrap();
        assert_eq!(t.submit(b, &[req(10)]).unwrap(), 0..1);
        assert_eq!(t.submit(b, &[req(20), req(30), req(40)]).unwrap(), 1..4);
        let lens: Vec<u64> = t.tasks(b).unwrap().map(|s| s.len).collect();
        assert_eq!(lens, [10, 20, 30, 40]);
        assert_eq!(t.tasks(b).unwrap().len(), 4);
        assert!(t
            .tasks(b)
            .unwrap()
            .all(|s| s.state == TaskState::Pending && s.transferred == 0));
        assert_eq!(t.request(tid(b, 2)).unwrap(), req(30));
        assert_eq!(t.status(b).unwrap().len, 100);
    }

    #[test]
    fn task_index_not_submitted_is_invalid() {
        let mut t = table(2, 8);
        let b = t.alloc(4).unwrap();
        t.submit(b, &[req(1)]).unwrap();
        let e = err(t.task(tid(b, 1)));
        assert_eq!(e.code(), ErrorCode::Invalid);
        assert!(
            e.message().contains("task 1") && e.message().contains("1 submitted"),
            "{e}"
        );
        assert_eq!(err(t.request(tid(b, 4))).code(), ErrorCode::Invalid);
        assert_eq!(
            err(t.finish(tid(b, u32::MAX), TaskState::Completed)).code(),
            ErrorCode::Invalid
        );
        assert_eq!(err(t.set_progress(tid(b, 1), 0)).code(), ErrorCode::Invalid);
    }

    #[test]
    fn freed_id_is_invalid() {
        let mut t = table(1, 8);
        let b = t.alloc(2).unwrap();
        t.submit(b, &[req(1)]).unwrap();
        t.finish(tid(b, 0), TaskState::Completed).unwrap();
        t.free(b).unwrap();
        let e = err(t.status(b));
        assert_eq!(e.code(), ErrorCode::Invalid);
        assert!(
            e.message().contains("stale") && e.message().contains("0x100000000"),
            "{e}"
        );
        // The only slot is reused: the old id must not alias the new batch.
        let c = t.alloc(2).unwrap();
        assert_ne!(b, c);
        t.submit(c, &[req(1)]).unwrap();
        let e = err(t.task(tid(b, 0)));
        assert_eq!(e.code(), ErrorCode::Invalid);
        assert!(e.message().contains("generation 2"), "{e}");
        assert_eq!(err(t.submit(b, &[req(1)])).code(), ErrorCode::Invalid);
        assert_eq!(err(t.tasks(b).map(|_| ())).code(), ErrorCode::Invalid);
        assert_eq!(err(t.request(tid(b, 0))).code(), ErrorCode::Invalid);
        assert_eq!(err(t.set_progress(tid(b, 0), 0)).code(), ErrorCode::Invalid);
        assert_eq!(
            err(t.finish(tid(b, 0), TaskState::Canceled)).code(),
            ErrorCode::Invalid
        );
        assert_eq!(err(t.free(b)).code(), ErrorCode::Invalid);
        assert_eq!(
            t.task(tid(c, 0)).unwrap().state,
            TaskState::Pending,
            "new batch untouched"
        );
    }

    #[test]
    fn foreign_id_is_invalid() {
        let mut t = table(2, 8);
        let b = t.alloc(2).unwrap();
        let foreign = [
            BatchId::from_u64(0),
            BatchId::new(b.slot(), 0),
            BatchId::new(2, 1),
            BatchId::new(u32::MAX, 1),
            BatchId::new(b.slot(), b.generation() + 1),
            BatchId::new(b.slot() ^ 1, 1), // a free slot
        ];
        for id in foreign {
            let e = err(t.status(id));
            assert_eq!(e.code(), ErrorCode::Invalid, "{id}");
            let mut shown: heapless::String<24> = heapless::String::new();
            fmt::write(&mut shown, format_args!("{id}")).unwrap();
            assert!(e.message().contains(shown.as_str()), "{e}");
            assert_eq!(err(t.free(id)).code(), ErrorCode::Invalid);
            assert_eq!(err(t.submit(id, &[req(1)])).code(), ErrorCode::Invalid);
        }
        assert_eq!(t.batches_in_use(), 1);
    }

    #[test]
    fn free_with_pending_is_not_ready() {
        let mut t = table(2, 8);
        let b = t.alloc(3).unwrap();
        t.submit(b, &[req(1), req(2), req(3)]).unwrap();
        t.finish(tid(b, 1), TaskState::Completed).unwrap();
        let e = err(t.free(b));
        assert_eq!(e.code(), ErrorCode::NotReady);
        assert!(e.message().contains("2 pending"), "{e}");
        assert_eq!(t.status(b).unwrap().state, TaskState::Pending, "still live");
        t.finish(tid(b, 0), TaskState::Timeout).unwrap();
        t.finish(tid(b, 2), TaskState::Canceled).unwrap();
        t.free(b).unwrap();
        assert_eq!((t.batches_in_use(), t.tasks_in_use()), (0, 0));
    }

    #[test]
    fn free_with_unsubmitted_room_is_ok() {
        let mut t = table(2, 8);
        let b = t.alloc(3).unwrap();
        t.free(b).unwrap();
        let c = t.alloc(3).unwrap();
        t.submit(c, &[req(1)]).unwrap();
        t.finish(tid(c, 0), TaskState::Completed).unwrap();
        t.free(c).unwrap();
        assert_eq!((t.batches_in_use(), t.tasks_in_use()), (0, 0));
    }

    #[test]
    fn finish_twice_keeps_first() {
        let mut t = table(2, 8);
        let b = t.alloc(1).unwrap();
        t.submit(b, &[req(100)]).unwrap();
        t.set_progress(tid(b, 0), 40).unwrap();
        assert!(t
            .finish(tid(b, 0), TaskState::Failed(ErrorCode::Disconnected))
            .unwrap());
        assert!(!t.finish(tid(b, 0), TaskState::Completed).unwrap());
        assert!(!t.finish(tid(b, 0), TaskState::Timeout).unwrap());
        let s = t.task(tid(b, 0)).unwrap();
        assert_eq!(
            s,
            TaskStatus {
                state: TaskState::Failed(ErrorCode::Disconnected),
                transferred: 40,
                len: 100
            }
        );
        let all = t.status(b).unwrap();
        assert_eq!((all.completed, all.failed, all.transferred), (0, 1, 40));
    }

    #[test]
    fn finish_non_terminal_is_invalid() {
        let mut t = table(2, 8);
        let b = t.alloc(1).unwrap();
        t.submit(b, &[req(1)]).unwrap();
        for state in [
            TaskState::Pending,
            TaskState::Initial,
            TaskState::Failed(ErrorCode::Ok),
        ] {
            let e = err(t.finish(tid(b, 0), state));
            assert_eq!(e.code(), ErrorCode::Invalid, "{state:?}");
        }
        assert!(err(t.finish(tid(b, 0), TaskState::Initial))
            .message()
            .contains("Initial"));
        assert_eq!(t.task(tid(b, 0)).unwrap().state, TaskState::Pending);
    }

    #[test]
    fn set_progress_beyond_len_is_invalid() {
        let mut t = table(2, 8);
        let b = t.alloc(2).unwrap();
        t.submit(b, &[req(100), req(50)]).unwrap();
        let e = err(t.set_progress(tid(b, 0), 101));
        assert_eq!(e.code(), ErrorCode::Invalid);
        assert!(e.message().contains("101") && e.message().contains("100"), "{e}");
        t.set_progress(tid(b, 0), 100).unwrap();
        t.set_progress(tid(b, 0), 60).unwrap();
        t.set_progress(tid(b, 1), 5).unwrap();
        assert_eq!(t.task(tid(b, 0)).unwrap().transferred, 60);
        assert_eq!(t.status(b).unwrap().transferred, 65);
    }

    #[test]
    fn set_progress_after_finish_is_invalid() {
        let mut t = table(2, 8);
        let b = t.alloc(1).unwrap();
        t.submit(b, &[req(100)]).unwrap();
        t.finish(tid(b, 0), TaskState::Canceled).unwrap();
        let e = err(t.set_progress(tid(b, 0), 1));
        assert_eq!(e.code(), ErrorCode::Invalid);
        assert!(e.message().contains("Canceled"), "{e}");
    }

    #[test]
    fn overall_initial_when_nothing_submitted() {
        let mut t = table(2, 8);
        let b = t.alloc(2).unwrap();
        let s = t.status(b).unwrap();
        assert_eq!(
            s,
            BatchStatus {
                state: TaskState::Initial,
                total: 0,
                completed: 0,
                failed: 0,
                transferred: 0,
                len: 0
            }
        );
        assert_eq!(t.tasks(b).unwrap().count(), 0);
    }

    #[test]
    fn overall_pending_while_any_pending() {
        let mut t = table(2, 8);
        let b = t.alloc(3).unwrap();
        t.submit(b, &[req(1), req(2), req(3)]).unwrap();
        assert_eq!(t.status(b).unwrap().state, TaskState::Pending);
        t.finish(tid(b, 0), TaskState::Failed(ErrorCode::RuntimeError))
            .unwrap();
        t.finish(tid(b, 2), TaskState::Completed).unwrap();
        let s = t.status(b).unwrap();
        assert_eq!((s.state, s.completed, s.failed), (TaskState::Pending, 1, 1));
    }

    #[test]
    fn overall_completed_when_all_completed() {
        let mut t = table(2, 8);
        let b = t.alloc(3).unwrap();
        t.submit(b, &[req(10), req(20)]).unwrap();
        t.set_progress(tid(b, 0), 3).unwrap();
        t.finish(tid(b, 0), TaskState::Completed).unwrap();
        t.finish(tid(b, 1), TaskState::Completed).unwrap();
        let s = t.status(b).unwrap();
        assert_eq!(
            s,
            BatchStatus {
                state: TaskState::Completed,
                total: 2,
                completed: 2,
                failed: 0,
                transferred: 30,
                len: 30
            }
        );
        // Submitting more makes the batch pending again.
        t.submit(b, &[req(5)]).unwrap();
        assert_eq!(t.status(b).unwrap().state, TaskState::Pending);
    }

    #[test]
    fn overall_first_failure_in_task_order() {
        let mut t = table(2, 8);
        let b = t.alloc(4).unwrap();
        t.submit(b, &[req(1), req(2), req(3), req(4)]).unwrap();
        t.finish(tid(b, 3), TaskState::Timeout).unwrap();
        t.finish(tid(b, 1), TaskState::Canceled).unwrap();
        t.finish(tid(b, 0), TaskState::Completed).unwrap();
        t.finish(tid(b, 2), TaskState::Failed(ErrorCode::NotAuthorized))
            .unwrap();
        let s = t.status(b).unwrap();
        assert_eq!(
            (s.state, s.completed, s.failed, s.total),
            (TaskState::Canceled, 1, 3, 4)
        );
    }

    #[test]
    fn byte_counts_saturate() {
        let mut t = table(2, 8);
        let b = t.alloc(2).unwrap();
        let huge = TransferRequest {
            local: Span::cpu(0, u64::MAX),
            remote_addr: 0,
            ..req(1)
        };
        t.submit(b, &[huge, huge]).unwrap();
        t.finish(tid(b, 0), TaskState::Completed).unwrap();
        assert_eq!(t.status(b).unwrap().len, u64::MAX);
        assert_eq!(t.status(b).unwrap().transferred, u64::MAX);
        t.set_progress(tid(b, 1), 7).unwrap();
        t.finish(tid(b, 1), TaskState::Completed).unwrap();
        let s = t.status(b).unwrap();
        assert_eq!((s.transferred, s.len), (u64::MAX, u64::MAX));
    }

    #[test]
    fn fragmentation_reuse() {
        let mut t = table(4, 10);
        let a = t.alloc(4).unwrap();
        let b = t.alloc(3).unwrap();
        let c = t.alloc(3).unwrap();
        assert_eq!((start_of(&t, a), start_of(&t, b), start_of(&t, c)), (0, 4, 7));
        t.free(b).unwrap();
        // The hole left by b is found after wrapping past the end.
        let b2 = t.alloc(3).unwrap();
        assert_eq!(start_of(&t, b2), 4);
        t.free(a).unwrap();
        assert_eq!(err(t.alloc(5)).code(), ErrorCode::NotReady);
        let a2 = t.alloc(4).unwrap();
        assert_eq!(start_of(&t, a2), 0);
        t.free(a2).unwrap();
        t.free(c).unwrap();
        // Free runs on both sides of the cursor (which sits at 4): [0, 4) and
        // [7, 10) are each too short, and the run that crosses the cursor is
        // not split by it.
        assert_eq!(err(t.alloc(5)).code(), ErrorCode::NotReady);
        t.free(b2).unwrap();
        let all = t.alloc(10).unwrap();
        assert_eq!(start_of(&t, all), 0);
    }

    #[test]
    fn next_fit_continues_after_last_allocation() {
        let mut t = table(4, 10);
        // A first-in first-out stream of batches walks around the storage.
        let mut starts = Vec::new();
        let mut live = Vec::new();
        for _ in 0..8 {
            let id = t.alloc(3).unwrap();
            starts.push(start_of(&t, id));
            live.push(id);
            if live.len() == 3 {
                t.free(live.remove(0)).unwrap();
            }
        }
        assert_eq!(starts, [0, 3, 6, 0, 3, 6, 0, 3]);
        // A run that starts before the cursor and extends past it is found.
        let mut t = table(4, 10);
        let a = t.alloc(2).unwrap();
        let b = t.alloc(2).unwrap();
        let c = t.alloc(6).unwrap();
        t.free(a).unwrap();
        t.free(b).unwrap();
        t.free(c).unwrap();
        let d = t.alloc(2).unwrap(); // cursor 0 -> 2
        t.free(d).unwrap();
        let e = t.alloc(9).unwrap(); // scans from 2: [2, 10) has only 8
        assert_eq!(start_of(&t, e), 0);
    }

    #[test]
    fn generation_wraps_skipping_zero() {
        let slots = [BatchSlot {
            generation: u32::MAX,
            ..BatchSlot::EMPTY
        }];
        let mut t = BatchTable::new(slots, [Task::EMPTY; 2]);
        let a = t.alloc(1).unwrap();
        assert_eq!(a.to_u64() >> 32, u64::from(u32::MAX));
        t.free(a).unwrap();
        let b = t.alloc(1).unwrap();
        assert_eq!(b.to_u64(), 1 << 32, "generation 0 is skipped");
        assert_eq!(err(t.status(a)).code(), ErrorCode::Invalid);
    }

    #[test]
    fn reused_storage_keeps_old_ids_stale() {
        let mut slots = [BatchSlot::EMPTY; 2];
        let mut tasks = [Task::EMPTY; 4];
        let old = {
            let mut t = BatchTable::new(&mut slots[..], &mut tasks[..]);
            t.alloc(2).unwrap()
        };
        let mut t = BatchTable::new(&mut slots[..], &mut tasks[..]);
        assert_eq!(t.batches_in_use(), 0);
        assert_eq!(err(t.status(old)).code(), ErrorCode::Invalid);
        let new = t.alloc(2).unwrap();
        assert_ne!(old, new);
    }

    #[test]
    fn ids_round_trip_and_display() {
        for v in [0, 1, 1 << 32, u64::MAX] {
            assert_eq!(BatchId::from_u64(v).to_u64(), v);
        }
        let id = BatchId::new(3, 2);
        assert_eq!((id.slot(), id.generation()), (3, 2));
        let mut s: heapless::String<48> = heapless::String::new();
        fmt::write(&mut s, format_args!("{}", tid(id, 5))).unwrap();
        assert_eq!(s.as_str(), "task 5 of batch 0x200000003");
        assert!(TaskState::Failed(ErrorCode::Canceled).is_terminal());
        assert!(!TaskState::Pending.is_terminal() && !TaskState::Initial.is_terminal());
    }
}
