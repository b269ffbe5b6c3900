//! The layer above the links: what one side of te decides for all its
//! peers together, without IO and without a clock.
//!
//! An [`Endpoint`] owns the registration table, the batch table and, per
//! peer segment, the queue of tasks waiting for room on that segment's
//! link with their deadlines. It validates a submission once and stores it
//! once, pins the local memory of each task, hands queued tasks to a link
//! on the path the rule of [`Path::route`] gives, maps every result to the
//! task's state in one place, keeps each batch's first failure, and lets a
//! batch's notification go only once all its data is in place, to every
//! segment the batch touched. The runtime keeps what needs IO: sockets and
//! links' buffers, the bytes of notifications, the same-host path's OS
//! work, devices. The [`Link`](crate::link::Link)s themselves belong to the runtime too (like
//! quinn-proto's connections, they are lent to the endpoint per call), so
//! the endpoint stores nothing per connection.
//!
//! The runtime's loop, in short:
//!
//! - API calls go to the endpoint ([`submit`](Endpoint::submit),
//!   [`cancel_task`](Endpoint::cancel_task), ...);
//! - every [`Event`] from [`poll_event`](Endpoint::poll_event) is acted on:
//!   [`Event::Service`] means "connect this segment if it has no link, then
//!   [`feed`](Endpoint::feed) the link"; [`Event::BatchEnded`] carries the
//!   fate of a batch's notification;
//! - every link event goes through
//!   [`handle_link_event`](Endpoint::handle_link_event), which consumes what
//!   is the endpoint's and hands back what is the runtime's;
//! - it sleeps at most until [`poll_timeout`](Endpoint::poll_timeout) and
//!   then calls [`handle_timeout`](Endpoint::handle_timeout).
//!
//! # Example
//!
//! A task queued for a segment whose link never comes ends `Timeout` at its
//! deadline, and its batch reports the end.
//!
//! ```
//! use core::time::Duration;
//! use te_proto::batch::{BatchSlot, Op, Task, TaskState};
//! use te_proto::endpoint::{
//!     BatchEntry, Borrowed, Endpoint, EndpointConfig, Event, NoteOutcome, Parts, Request, SegmentEntry,
//!     TaskEntry,
//! };
//! use te_proto::{Entry, Instant, Location, Perm, Region};
//!
//! // Storage on the stack: 4 regions, 2 batches, 8 tasks, 2 segments.
//! let (mut regions, mut batches, mut tasks) = ([Entry::EMPTY; 4], [BatchSlot::EMPTY; 2], [Task::EMPTY; 8]);
//! let (mut task_entries, mut batch_entries) = ([TaskEntry::EMPTY; 8], [BatchEntry::EMPTY, BatchEntry::EMPTY]);
//! let mut segments = [SegmentEntry::EMPTY, SegmentEntry::EMPTY];
//! let parts = Parts::<Borrowed> {
//!     regions: &mut regions,
//!     batches: &mut batches,
//!     tasks: &mut tasks,
//!     task_entries: &mut task_entries,
//!     batch_entries: &mut batch_entries,
//!     segments: &mut segments,
//! };
//! let cfg = EndpointConfig { transfer_timeout: Duration::from_secs(1), ..EndpointConfig::default() };
//! let mut ep = Endpoint::new(cfg, parts)?;
//! ep.register_batch(&[Region::new(0x1000, 4096, Location::Cpu, Perm::LOCAL_ONLY)])?;
//! let peer = ep.open_segment("peer:7000")?;
//! let batch = ep.alloc_batch(1)?;
//! let read = Request { op: Op::Read, local: 0x1000, segment: peer, remote: 0, len: 4096 };
//! ep.submit(Instant::ZERO, batch, &[read], None)?;
//! assert_eq!(ep.poll_event(), Some(Event::Service(peer)));
//!
//! let deadline = ep.poll_timeout().expect("the queued task has a deadline");
//! ep.handle_timeout(deadline);
//! assert_eq!(
//!     ep.poll_event(),
//!     Some(Event::BatchEnded { batch, state: TaskState::Timeout, note: NoteOutcome::None })
//! );
//! assert_eq!(ep.tasks_in_flight(), 0);
//! # Ok::<(), te_proto::Status>(())
//! ```

mod config;
mod event;
mod links;
mod slots;
mod submit;

pub use config::{EndpointConfig, Offers, Path, Route};
pub use event::{Cancel, Event, NoteOutcome, Request, SegmentId};
pub use links::{Feed, RDMA_LOCAL_UNREGISTERED, RDMA_NOT_CONNECTED, RDMA_NOT_HERE};
#[cfg(feature = "std")]
pub use slots::Heap;
pub use slots::{BatchEntry, Borrowed, Parts, SegmentEntry, Storage, TaskEntry, LABEL_MAX};

use crate::batch::{BatchId, BatchStatus, BatchTable, TaskId, TaskState, TaskStatus};
use crate::error::{ErrorCode, Result, Status};
use crate::location::Location;
use crate::region::Region;
use crate::registry::{Registry, Unregister};
use crate::status;
use crate::time::Instant;

use self::slots::NONE;

/// Whether the endpoint takes new work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// Finalize began: new work is refused, work in flight goes on.
    Finalizing,
}

/// The layer above the links. See the [module docs](self).
pub struct Endpoint<S: Storage> {
    cfg: EndpointConfig,
    reg: Registry<S::Regions>,
    batches: BatchTable<S::Batches, S::Tasks>,
    tasks: S::TaskEntries,
    batch_entries: S::BatchEntries,
    segments: S::Segments,
    /// Segments opened so far (they stay open: ids are never reused).
    opened: u32,
    phase: Phase,
    /// Tasks submitted and not ended (each holds a local pin).
    in_flight: usize,
    /// The id of the latest walk over a batch's distinct segments.
    walk: u64,
    /// Ended batches still to report, first in first out.
    ended: (u32, u32),
    /// Segments with work for their link, first in first out.
    service: (u32, u32),
}

/// The state a result puts a task in: the one mapping of the engine.
pub fn state_of(result: &Result<()>) -> TaskState {
    match result {
        Ok(()) => TaskState::Completed,
        Err(e) => match e.code() {
            ErrorCode::Ok => TaskState::Completed,
            ErrorCode::Canceled => TaskState::Canceled,
            ErrorCode::Timeout => TaskState::Timeout,
            code => TaskState::Failed(code),
        },
    }
}

impl<S: Storage> Endpoint<S> {
    /// An endpoint over `parts`. `Invalid` when the per-task or per-batch
    /// entries are not as many as the batch table's slots.
    pub fn new(cfg: EndpointConfig, parts: Parts<S>) -> Result<Endpoint<S>> {
        let Parts {
            regions,
            batches,
            tasks,
            mut task_entries,
            mut batch_entries,
            mut segments,
        } = parts;
        for (what, entries, slots) in [
            ("task", task_entries.as_ref().len(), tasks.as_ref().len()),
            ("batch", batch_entries.as_ref().len(), batches.as_ref().len()),
        ] {
            if entries != slots {
                return Err(status!(
                    Invalid,
                    "{entries} {what} entries for {slots} {what} slots: they must be as many"
                ));
            }
        }
        task_entries.as_mut().fill(TaskEntry::EMPTY);
        batch_entries.as_mut().fill(BatchEntry::EMPTY);
        segments.as_mut().fill(SegmentEntry::EMPTY);
        Ok(Endpoint {
            cfg,
            reg: Registry::new(regions),
            batches: BatchTable::new(batches, tasks),
            tasks: task_entries,
            batch_entries,
            segments,
            opened: 0,
            phase: Phase::Running,
            in_flight: 0,
            walk: 0,
            ended: (NONE, NONE),
            service: (NONE, NONE),
        })
    }

    /// The settings it was made with.
    pub fn config(&self) -> &EndpointConfig {
        &self.cfg
    }

    /// The registration table, for lookups.
    pub fn registry(&self) -> &Registry<S::Regions> {
        &self.reg
    }

    /// The registration table, to lend to links (which pin what peers
    /// access). Register and unregister through the endpoint: they obey
    /// its phase.
    pub fn registry_mut(&mut self) -> &mut Registry<S::Regions> {
        &mut self.reg
    }

    /// `NotReady` once finalize began.
    pub fn check_running(&self) -> Result<()> {
        match self.phase {
            Phase::Running => Ok(()),
            Phase::Finalizing => Err(status!(
                NotReady,
                "the engine is finalizing: it takes no new work"
            )),
        }
    }

    /// Refuses new work from now on: every call that would start something
    /// answers `NotReady`. Work in flight goes on. Idempotent.
    pub fn begin_finalize(&mut self) {
        self.phase = Phase::Finalizing;
    }

    /// Whether [`begin_finalize`](Self::begin_finalize) has run.
    pub fn is_finalizing(&self) -> bool {
        self.phase == Phase::Finalizing
    }

    // ---- memory ----

    /// Registers regions, all or nothing ([`Registry::register_batch`]).
    pub fn register_batch(&mut self, regions: &[Region]) -> Result<()> {
        self.check_running()?;
        self.reg.register_batch(regions)
    }

    /// Starts unregistering the region at `base` ([`Registry::unregister`]).
    /// `NotReady` once finalize began.
    pub fn unregister(&mut self, location: Location, base: u64) -> Result<Unregister> {
        self.check_running()?;
        self.reg.unregister(location, base)
    }

    // ---- segments ----

    /// Opens a segment slot for the peer `name` (what its errors call it).
    /// `NotReady` once finalize began or when every slot is taken (the
    /// message names how many there are).
    pub fn open_segment(&mut self, name: &str) -> Result<SegmentId> {
        self.check_running()?;
        let i = self.opened;
        let Some(seg) = self.segments.as_mut().get_mut(i as usize) else {
            return Err(status!(
                NotReady,
                "all {} segment slots are in use",
                self.segments.as_ref().len()
            ));
        };
        let mut label = heapless::String::new();
        for c in name.chars() {
            if label.push(c).is_err() {
                break;
            }
        }
        *seg = SegmentEntry {
            used: true,
            label,
            ..SegmentEntry::EMPTY
        };
        self.opened += 1;
        Ok(SegmentId(i))
    }

    fn segment(&self, id: SegmentId) -> Result<&SegmentEntry> {
        self.segments
            .as_ref()
            .get(id.0 as usize)
            .filter(|s| s.used)
            .ok_or_else(|| status!(NotFound, "no open segment with handle {}", id.0))
    }

    fn segment_mut(&mut self, id: SegmentId) -> Result<&mut SegmentEntry> {
        self.segments
            .as_mut()
            .get_mut(id.0 as usize)
            .filter(|s| s.used)
            .ok_or_else(|| status!(NotFound, "no open segment with handle {}", id.0))
    }

    /// The name segment `id` was opened with (cut at [`LABEL_MAX`] bytes).
    pub fn segment_name(&self, id: SegmentId) -> Option<&str> {
        self.segment(id).ok().map(|s| s.label.as_str())
    }

    /// Why the segment's last link ended or could not be made, if it did.
    pub fn segment_error(&self, id: SegmentId) -> Option<&Status> {
        self.segment(id).ok()?.last_error.as_ref()
    }

    // ---- batches ----

    /// Allocates a batch for up to `capacity` tasks.
    pub fn alloc_batch(&mut self, capacity: u32) -> Result<BatchId> {
        self.check_running()?;
        self.batches.alloc(capacity)
    }

    /// Frees a batch; `NotReady` while any of its tasks is pending.
    pub fn free_batch(&mut self, id: BatchId) -> Result<()> {
        let b = self.batches.batch_index(id)?;
        // A notification due to be sent, whose end was not polled yet, is
        // never sent now: the room it holds at each segment comes back.
        let due = self
            .batch_entries
            .as_ref()
            .get(b)
            .is_some_and(|e| e.note && e.ended.is_some())
            && self
                .batches
                .status(id)
                .is_ok_and(|s| s.state == TaskState::Completed);
        if due {
            self.walk_segments(id, &[], |seg, _| seg.notes = seg.notes.saturating_sub(1))?;
        }
        self.batches.free(id)?;
        if let Some(e) = self.batch_entries.as_mut().get_mut(b) {
            // Its place in the list of ended batches stays; nothing is
            // reported for it any more.
            e.error = None;
            e.note = false;
            e.sealed = false;
            e.held = false;
            e.ended = None;
        }
        Ok(())
    }

    /// Status of one task.
    pub fn task_status(&self, task: TaskId) -> Result<TaskStatus> {
        self.batches.task(task)
    }

    /// Status of every submitted task of a batch, in submission order.
    pub fn tasks_status(&self, batch: BatchId) -> Result<impl ExactSizeIterator<Item = TaskStatus> + '_> {
        self.batches.tasks(batch)
    }

    /// Overall status of a batch.
    pub fn batch_status(&self, batch: BatchId) -> Result<BatchStatus> {
        self.batches.status(batch)
    }

    /// The first failure of a batch, with the message that names why
    /// (`None` while nothing failed).
    pub fn batch_error(&self, batch: BatchId) -> Option<&Status> {
        let b = self.batches.batch_index(batch).ok()?;
        self.batch_entries.as_ref().get(b)?.error.as_ref()
    }

    /// Tasks submitted and not yet ended.
    pub fn tasks_in_flight(&self) -> usize {
        self.in_flight
    }

    // ---- events and time ----

    /// The next thing the runtime must act on.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(s) = self.pop_service() {
            return Some(Event::Service(s));
        }
        while let Some(b) = self.pop_ended() {
            let Some(batch) = self
                .batch_entries
                .as_mut()
                .get_mut(b as usize)
                .and_then(|e| e.ended.take())
            else {
                continue;
            };
            // A batch that runs again (a later submission) reports its
            // next end instead.
            let Some(st) = self
                .batches
                .status(batch)
                .ok()
                .filter(|s| s.state != TaskState::Pending)
            else {
                continue;
            };
            let note = self
                .batch_entries
                .as_mut()
                .get_mut(b as usize)
                .is_some_and(|e| core::mem::replace(&mut e.note, false));
            let note = match (note, st.state) {
                (false, _) => NoteOutcome::None,
                (true, TaskState::Completed) => NoteOutcome::Send,
                (true, _) => NoteOutcome::Dropped,
            };
            return Some(Event::BatchEnded {
                batch,
                state: st.state,
                note,
            });
        }
        None
    }

    /// The earliest deadline of a task waiting in a segment's queue (tasks
    /// on a link have theirs in the link).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let tasks = self.tasks.as_ref();
        let opened = self
            .segments
            .as_ref()
            .get(..self.opened as usize)
            .unwrap_or_default();
        opened
            .iter()
            .filter_map(|s| tasks.get(s.head as usize))
            .map(|t| t.deadline)
            .min()
    }

    /// Ends every queued task whose deadline has passed: `Timeout`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for s in 0..self.opened {
            while let Some(t) = self.queue_front(SegmentId(s)) {
                let Some(entry) = self.tasks.as_ref().get(t as usize) else {
                    break;
                };
                if entry.deadline > now {
                    break;
                }
                let task = entry.task;
                let label = self
                    .segments
                    .as_ref()
                    .get(s as usize)
                    .map_or("?", |g| g.label.as_str());
                let why = if self.is_held(task.batch) {
                    status!(
                        Timeout,
                        "batch still held at the transfer timeout of {:?} (its device stream had not reached it)",
                        self.cfg.transfer_timeout
                    )
                } else {
                    status!(
                        Timeout,
                        "not handed to the link to {label} within the transfer timeout of {:?}",
                        self.cfg.transfer_timeout
                    )
                };
                self.finish(task, Err(why));
            }
        }
    }

    /// Ends every queued task with `why` (finalize: `Canceled`); tasks on
    /// links are the links' to end.
    pub fn fail_queued(&mut self, why: &Status) {
        for s in 0..self.opened {
            self.fail_segment_queue(SegmentId(s), why);
        }
    }

    // ---- lists ----

    fn push_service(&mut self, s: SegmentId) {
        let (head, tail) = self.service;
        let segs = self.segments.as_mut();
        let Some(seg) = segs.get_mut(s.0 as usize) else {
            return;
        };
        if seg.listed {
            return;
        }
        seg.listed = true;
        seg.next = NONE;
        match segs.get_mut(tail as usize) {
            Some(last) => last.next = s.0,
            None => debug_assert_eq!(head, NONE, "a service list with a head has a tail"),
        }
        self.service = (if head == NONE { s.0 } else { head }, s.0);
    }

    fn pop_service(&mut self) -> Option<SegmentId> {
        let (head, tail) = self.service;
        let seg = self.segments.as_mut().get_mut(head as usize)?;
        seg.listed = false;
        let next = core::mem::replace(&mut seg.next, NONE);
        self.service = if head == tail { (NONE, NONE) } else { (next, tail) };
        Some(SegmentId(head))
    }

    fn push_ended(&mut self, batch: BatchId) {
        let Ok(b) = self.batches.batch_index(batch) else {
            return;
        };
        let b = b as u32;
        let (head, tail) = self.ended;
        let entries = self.batch_entries.as_mut();
        let Some(entry) = entries.get_mut(b as usize) else {
            return;
        };
        entry.ended = Some(batch);
        if entry.listed {
            return;
        }
        entry.listed = true;
        entry.next = NONE;
        match entries.get_mut(tail as usize) {
            Some(last) => last.next = b,
            None => debug_assert_eq!(head, NONE, "an ended list with a head has a tail"),
        }
        self.ended = (if head == NONE { b } else { head }, b);
    }

    fn pop_ended(&mut self) -> Option<u32> {
        let (head, tail) = self.ended;
        let entry = self.batch_entries.as_mut().get_mut(head as usize)?;
        entry.listed = false;
        let next = core::mem::replace(&mut entry.next, NONE);
        self.ended = if head == tail { (NONE, NONE) } else { (next, tail) };
        Some(head)
    }

    // ---- segment queues (intrusive, through the task entries) ----

    fn queue_front(&self, s: SegmentId) -> Option<u32> {
        let head = self.segments.as_ref().get(s.0 as usize)?.head;
        (head != NONE).then_some(head)
    }

    fn enqueue(&mut self, s: SegmentId, t: u32) {
        let Some(seg) = self.segments.as_mut().get_mut(s.0 as usize) else {
            debug_assert!(false, "enqueue on segment {} that does not exist", s.0);
            return;
        };
        let tail = seg.tail;
        if tail == NONE {
            seg.head = t;
        }
        seg.tail = t;
        let tasks = self.tasks.as_mut();
        if let Some(last) = tasks.get_mut(tail as usize) {
            last.next = t;
        }
        if let Some(e) = tasks.get_mut(t as usize) {
            e.queued = true;
            e.prev = tail;
            e.next = NONE;
        }
    }

    /// Takes task slot `t` out of its segment's queue (a no-op when it is
    /// not queued).
    fn dequeue(&mut self, t: u32) {
        let tasks = self.tasks.as_mut();
        let Some(e) = tasks.get_mut(t as usize).filter(|e| e.queued) else {
            return;
        };
        e.queued = false;
        let (prev, next, s) = (e.prev, e.next, e.segment);
        e.prev = NONE;
        e.next = NONE;
        if let Some(p) = tasks.get_mut(prev as usize) {
            p.next = next;
        }
        if let Some(n) = tasks.get_mut(next as usize) {
            n.prev = prev;
        }
        let Some(seg) = self.segments.as_mut().get_mut(s as usize) else {
            debug_assert!(false, "queued task slot {t} has no segment");
            return;
        };
        if seg.head == t {
            seg.head = next;
        }
        if seg.tail == t {
            seg.tail = prev;
        }
    }

    fn fail_segment_queue(&mut self, s: SegmentId, why: &Status) {
        while let Some(t) = self.queue_front(s) {
            let Some(task) = self.tasks.as_ref().get(t as usize).map(|e| e.task) else {
                break;
            };
            self.finish(task, Err(why.clone()));
        }
    }

    // ---- task ends ----

    /// Ends `task` with `result`, if it is still pending: its state (the
    /// one mapping, [`state_of`]), its batch's first failure, its local pin,
    /// its batch's end.
    fn finish(&mut self, task: TaskId, result: Result<()>) {
        let Ok(t) = self.batches.task_index(task) else {
            return;
        };
        if self.batches.finish(task, state_of(&result)) != Ok(true) {
            return;
        }
        let t = t as u32;
        self.dequeue(t);
        if let Err(e) = result {
            if let Ok(b) = self.batches.batch_index(task.batch) {
                if let Some(entry) = self.batch_entries.as_mut().get_mut(b) {
                    entry
                        .error
                        .get_or_insert_with(|| status!(=e.code(), "task {}: {}", task.index, e.message()));
                }
            }
        }
        if let Some(pin) = self.tasks.as_mut().get_mut(t as usize).and_then(|e| e.pin.take()) {
            self.reg.unpin(pin);
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        if self
            .batches
            .status(task.batch)
            .is_ok_and(|s| s.state != TaskState::Pending)
        {
            self.batch_ended(task.batch);
        }
    }

    /// A batch has no pending task left: queue its report, and give back the
    /// room its notification held at segments it will not be sent to.
    fn batch_ended(&mut self, batch: BatchId) {
        let Ok(b) = self.batches.batch_index(batch) else {
            return;
        };
        let noted = self.batch_entries.as_ref().get(b).is_some_and(|e| e.note);
        let completed = self
            .batches
            .status(batch)
            .is_ok_and(|s| s.state == TaskState::Completed);
        if noted && !completed {
            let _ = self.walk_segments(batch, &[], |seg, _| seg.notes = seg.notes.saturating_sub(1));
        }
        self.push_ended(batch);
    }
}
