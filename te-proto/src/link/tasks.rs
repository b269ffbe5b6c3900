//! The initiator half of a link: tasks this side submitted, and the
//! requests (chunks) in flight for them.

use super::config::{MAX_LINK_TASKS, MAX_OUTSTANDING};
use super::event::Event;
use crate::batch::{Op, TaskId, TransferRequest};
use crate::error::{Result, Status};
use crate::location::Location;
use crate::region::Span;
use crate::status;
use crate::time::Instant;

/// One task on the link.
#[derive(Clone, Debug)]
struct TaskSlot {
    id: TaskId,
    op: Op,
    local: Span,
    remote_addr: u64,
    remote_location: Option<Location>,
    /// Bytes handed to requests so far.
    issued: u64,
    /// Bytes whose requests completed.
    done: u64,
    deadline: Option<Instant>,
    /// Moved by the peer's copies (same-host path) instead of payloads.
    by_copy: bool,
    /// Moved by this side's NIC (RDMA path) instead of requests.
    rdma: Option<RdmaSlot>,
    /// `None` while running.
    outcome: Option<Result<()>>,
}

/// How a task's bytes move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Via {
    /// Requests and payloads over the link.
    Link,
    /// Same-host requests: the peer copies.
    Copy,
    /// One RDMA transfer of this side's NIC, in the peer's region `key`.
    Rdma {
        /// The peer's `RdmaKey` id.
        key: u64,
        /// Its rkey.
        rkey: u32,
        /// The local region's lkey, from the shell.
        lkey: u32,
    },
}

/// A task that moves by RDMA.
#[derive(Clone, Copy, Debug)]
struct RdmaSlot {
    key: u64,
    rkey: u32,
    lkey: u32,
    /// Handed to the shell ([`Tasks::next_rdma`]) and not reported done:
    /// the NIC may be touching the task's memory.
    posted: bool,
}

/// One RDMA transfer for the shell to post, from
/// [`RdmaMut::next_post`](super::RdmaMut::next_post).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RdmaPost {
    /// The task; report its end with [`RdmaMut::done`](super::RdmaMut::done).
    pub task: TaskId,
    /// Read (RDMA READ into `local`) or write (RDMA WRITE from `local`).
    pub op: Op,
    /// The task's memory.
    pub local: Span,
    /// The local region's lkey, as the shell gave it at submission.
    pub lkey: u32,
    /// The first byte in the peer's memory.
    pub remote_addr: u64,
    /// The rkey of the peer's region holding the remote range.
    pub rkey: u32,
}

/// One request in flight towards the peer.
#[derive(Clone, Copy, Debug)]
pub(super) struct Chunk {
    pub req_id: u64,
    pub slot: usize,
    pub offset: u64,
    pub len: u32,
    pub op: Op,
    /// A `LocalRead`/`LocalWrite`: the peer copies into or out of the
    /// task's memory itself, so the task's end waits for the answer.
    pub by_copy: bool,
    /// The task ended while this request was in flight: its answer is
    /// consumed without touching the task's memory.
    pub orphan: bool,
}

/// The next request to send, chosen but not yet committed.
#[derive(Clone, Copy, Debug)]
pub(super) struct NextChunk {
    pub slot: usize,
    pub chunk: usize,
    pub op: Op,
    pub remote_addr: u64,
    pub remote_location: Option<Location>,
    pub offset: u64,
    pub len: u32,
    /// The local memory the request reads from (writes) or lands in (reads).
    pub local: Span,
    /// Send as `LocalRead`/`LocalWrite` (the peer copies).
    pub by_copy: bool,
}

pub(super) struct Tasks {
    slots: [Option<TaskSlot>; MAX_LINK_TASKS],
    /// Bit i: slot i holds a task. The questions asked every round of an
    /// event loop (deadlines, the next request, reports) look only at these
    /// slots, so an idle link answers them at once.
    used: u128,
    /// Bit i: slot i has something to report (progress or its end).
    report: u128,
    chunks: [Option<Chunk>; MAX_OUTSTANDING],
    in_flight: usize,
    rr: usize,
}

// Slots are bits of a u128 (`used`, `report`, `copying`).
const _: () = assert!(MAX_LINK_TASKS == 128);

impl Tasks {
    pub fn new() -> Tasks {
        Tasks {
            slots: core::array::from_fn(|_| None),
            used: 0,
            report: 0,
            chunks: [None; MAX_OUTSTANDING],
            in_flight: 0,
            rr: 0,
        }
    }

    pub fn live(&self) -> usize {
        self.used.count_ones() as usize
    }

    /// The slots holding a task, lowest first.
    fn used_slots(&self) -> impl Iterator<Item = usize> {
        let mut bits = self.used;
        core::iter::from_fn(move || {
            let i = bits.trailing_zeros() as usize;
            bits &= bits.checked_sub(1)?;
            Some(i)
        })
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub fn submit(
        &mut self,
        id: TaskId,
        req: &TransferRequest,
        deadline: Option<Instant>,
        via: Via,
    ) -> Result<()> {
        let len = req.local.len;
        if len == 0 {
            return Err(status!(
                Invalid,
                "task {}/{}: length is zero",
                id.batch.to_u64(),
                id.index
            ));
        }
        if req.local.end().is_none() {
            return Err(status!(
                Invalid,
                "local range {:#x}+{:#x} wraps",
                req.local.addr,
                len
            ));
        }
        if req.remote_addr.checked_add(len).is_none() {
            return Err(status!(
                Invalid,
                "remote range {:#x}+{:#x} wraps",
                req.remote_addr,
                len
            ));
        }
        let mut free = None;
        for (i, s) in self.slots.iter().enumerate() {
            match s {
                Some(t) if t.id == id => {
                    return Err(status!(
                        Invalid,
                        "task {}/{} is already on this link",
                        id.batch.to_u64(),
                        id.index
                    ))
                }
                None if free.is_none() => free = Some(i),
                _ => {}
            }
        }
        let slot = free.ok_or_else(|| status!(NotReady, "link carries {MAX_LINK_TASKS} tasks already"))?;
        self.used |= 1 << slot;
        self.slots[slot] = Some(TaskSlot {
            id,
            op: req.op,
            local: req.local,
            remote_addr: req.remote_addr,
            remote_location: req.remote_location,
            issued: 0,
            done: 0,
            deadline,
            by_copy: via == Via::Copy,
            rdma: match via {
                Via::Rdma { key, rkey, lkey } => Some(RdmaSlot {
                    key,
                    rkey,
                    lkey,
                    posted: false,
                }),
                _ => None,
            },
            outcome: None,
        });
        Ok(())
    }

    /// The oldest-slotted RDMA task not handed to the shell yet, now marked
    /// posted: its end waits for [`rdma_done`](Self::rdma_done).
    pub fn next_rdma(&mut self) -> Option<RdmaPost> {
        let t = self
            .slots
            .iter_mut()
            .flatten()
            .find(|t| t.outcome.is_none() && t.rdma.is_some_and(|r| !r.posted))?;
        let r = t.rdma.as_mut()?;
        r.posted = true;
        Some(RdmaPost {
            task: t.id,
            op: t.op,
            local: t.local,
            lkey: r.lkey,
            remote_addr: t.remote_addr,
            rkey: r.rkey,
        })
    }

    /// The NIC is done with RDMA task `id` (posted): its memory is free and
    /// it ends with `result`, unless it ended already (canceled, expired,
    /// the link closed), which keeps that end. False for a task not posted.
    pub fn rdma_done(&mut self, id: TaskId, result: Result<()>) -> bool {
        let Some(slot) = self.slots.iter().position(|s| {
            s.as_ref()
                .is_some_and(|t| t.id == id && t.rdma.is_some_and(|r| r.posted))
        }) else {
            return false;
        };
        if let Some(t) = self.slots[slot].as_mut() {
            t.rdma = None;
            if result.is_ok() && t.outcome.is_none() {
                t.done = t.local.len;
                t.outcome = Some(Ok(()));
            }
            self.report |= 1 << slot;
        }
        if let Err(e) = result {
            self.fail_slot(slot, e);
        }
        true
    }

    /// Whether an RDMA task running or posted uses the peer's region `key`.
    pub fn uses_key(&self, key: u64) -> bool {
        self.slots.iter().flatten().any(|t| {
            t.rdma
                .is_some_and(|r| r.key == key && (r.posted || t.outcome.is_none()))
        })
    }

    /// The peer withdrew region `key`: RDMA tasks on it not posted yet fail
    /// with `status` (posted ones run to their end).
    pub fn fail_unposted(&mut self, key: u64, status: &Status) {
        for slot in 0..MAX_LINK_TASKS {
            let hit = self.slots[slot]
                .as_ref()
                .is_some_and(|t| t.rdma.is_some_and(|r| r.key == key && !r.posted));
            if hit {
                self.fail_slot(slot, status.clone());
            }
        }
    }

    /// Whether an RDMA task is posted and not reported done by the shell.
    pub fn rdma_posted(&self) -> bool {
        self.slots
            .iter()
            .flatten()
            .any(|t| t.rdma.is_some_and(|r| r.posted))
    }

    pub fn has_room(&self) -> bool {
        self.live() < MAX_LINK_TASKS
    }

    /// Picks the next request to send, round robin over running tasks, when
    /// fewer than `window` requests are in flight.
    pub fn peek_next(&self, window: usize, max_payload: u32) -> Option<NextChunk> {
        if self.in_flight >= window || self.used == 0 {
            return None;
        }
        let chunk = self.chunks.iter().position(|c| c.is_none())?;
        // The used slots from `rr` on, wrapping: bit k of `from_rr` is slot rr + k.
        let mut from_rr = self.used.rotate_right(self.rr as u32);
        while from_rr != 0 {
            let k = from_rr.trailing_zeros() as usize;
            from_rr &= from_rr - 1;
            let slot = (self.rr + k) % MAX_LINK_TASKS;
            let Some(t) = &self.slots[slot] else { continue };
            if t.outcome.is_some() || t.rdma.is_some() || t.issued >= t.local.len {
                continue;
            }
            let len = (t.local.len - t.issued).min(max_payload as u64) as u32;
            return Some(NextChunk {
                slot,
                chunk,
                op: t.op,
                remote_addr: t.remote_addr + t.issued,
                remote_location: t.remote_location,
                offset: t.issued,
                len,
                local: t.local.slice(t.issued, len as u64),
                by_copy: t.by_copy,
            });
        }
        None
    }

    /// Records `next` as sent with `req_id`.
    pub fn commit(&mut self, next: &NextChunk, req_id: u64) {
        // `next` came from peek_next on this table, unchanged since.
        debug_assert!(
            self.slots[next.slot].is_some(),
            "a request for empty slot {}",
            next.slot
        );
        debug_assert!(
            self.chunks[next.chunk].is_none(),
            "request slot {} taken",
            next.chunk
        );
        if let Some(t) = self.slots[next.slot].as_mut() {
            t.issued += next.len as u64;
        }
        self.chunks[next.chunk] = Some(Chunk {
            req_id,
            slot: next.slot,
            offset: next.offset,
            len: next.len,
            op: next.op,
            by_copy: next.by_copy,
            orphan: false,
        });
        self.in_flight += 1;
        self.rr = (next.slot + 1) % MAX_LINK_TASKS;
    }

    /// The in-flight request with this id.
    pub fn chunk(&self, req_id: u64) -> Option<(usize, Chunk)> {
        let idx = (req_id & 0xff) as usize;
        match self.chunks.get(idx) {
            Some(Some(c)) if c.req_id == req_id => Some((idx, *c)),
            _ => None,
        }
    }

    /// Where the answer to a read lands: the task's memory, or nowhere for
    /// an orphan.
    pub fn read_dest(&self, idx: usize) -> Option<Span> {
        let c = self.chunks.get(idx).copied().flatten()?;
        if c.orphan {
            return None;
        }
        let t = self.slots[c.slot].as_ref()?;
        Some(t.local.slice(c.offset, c.len as u64))
    }

    /// The request finished well: count its bytes.
    pub fn complete(&mut self, idx: usize) {
        let Some(c) = self.release(idx) else { return };
        if let Some(t) = self.slots[c.slot].as_mut() {
            t.done += c.len as u64;
            if t.done >= t.local.len {
                t.outcome = Some(Ok(()));
            }
            self.report |= 1 << c.slot;
        }
    }

    /// The request failed: the task fails with `status`.
    pub fn failed(&mut self, idx: usize, status: Status) {
        if let Some(c) = self.release(idx) {
            self.fail_slot(c.slot, status);
        }
    }

    /// The payload answering request `idx` cannot be placed: its task fails
    /// with `status`, and the request, still in flight, becomes an orphan
    /// whose remaining bytes are discarded. An orphan already is left alone:
    /// its task has ended and its slot may hold another task by now.
    pub fn fail_task_of(&mut self, idx: usize, status: Status) {
        if let Some(Some(c)) = self.chunks.get_mut(idx) {
            if !c.orphan {
                c.orphan = true;
                let slot = c.slot;
                self.fail_slot(slot, status);
            }
        }
    }

    /// Request `idx` was committed but never sent (its payload could not be
    /// read): it is forgotten and its task fails with `status`.
    pub fn abandon(&mut self, idx: usize, status: Status) {
        if let Some(c) = self.chunks.get_mut(idx).and_then(|c| c.take()) {
            self.in_flight -= 1;
            self.fail_slot(c.slot, status);
        }
    }

    /// Frees a request slot; returns it unless it was an orphan.
    fn release(&mut self, idx: usize) -> Option<Chunk> {
        let c = self.chunks.get_mut(idx)?.take()?;
        self.in_flight -= 1;
        (!c.orphan).then_some(c)
    }

    fn fail_slot(&mut self, slot: usize, status: Status) {
        let Some(t) = self.slots[slot].as_mut() else {
            return;
        };
        if t.outcome.is_some() {
            return;
        }
        t.outcome = Some(Err(status));
        self.report |= 1 << slot;
        for c in self.chunks.iter_mut().flatten() {
            if c.slot == slot {
                c.orphan = true;
            }
        }
    }

    /// Fails every running task with `status`.
    pub fn fail_all(&mut self, status: &Status) {
        for slot in 0..MAX_LINK_TASKS {
            self.fail_slot(slot, status.clone());
        }
    }

    /// Every in-flight request becomes an orphan (the connection is gone).
    pub fn forget_in_flight(&mut self) {
        self.chunks = [None; MAX_OUTSTANDING];
        self.in_flight = 0;
    }

    pub fn cancel(&mut self, id: TaskId) -> bool {
        let found = self
            .slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|t| t.id == id && t.outcome.is_none()));
        match found {
            Some(slot) => {
                let msg = status!(Canceled, "task {}/{} canceled", id.batch.to_u64(), id.index);
                self.fail_slot(slot, msg);
                true
            }
            None => false,
        }
    }

    /// Fails the tasks whose deadline has passed.
    pub fn expire(&mut self, now: Instant) {
        for slot in 0..MAX_LINK_TASKS {
            let expired = self.slots[slot]
                .as_ref()
                .is_some_and(|t| t.outcome.is_none() && t.deadline.is_some_and(|d| now >= d));
            if expired {
                let msg = self.slots[slot].as_ref().map(|t| {
                    status!(
                        Timeout,
                        "task deadline passed with {} of {} bytes moved",
                        t.done,
                        t.local.len
                    )
                });
                if let Some(msg) = msg {
                    self.fail_slot(slot, msg);
                }
            }
        }
    }

    pub fn earliest_deadline(&self) -> Option<Instant> {
        self.used_slots()
            .filter_map(|i| self.slots[i].as_ref())
            .filter(|t| t.outcome.is_none())
            .filter_map(|t| t.deadline)
            .min()
    }

    /// True when a task still has something to report.
    pub fn has_reports(&self) -> bool {
        self.report != 0
    }

    /// Slots whose end must wait: the peer may still be copying into or
    /// out of their memory (same-host requests in flight), or this side's
    /// NIC (RDMA transfers posted).
    fn copying(&self) -> u128 {
        let nic = self
            .used_slots()
            .filter(|&i| {
                self.slots[i]
                    .as_ref()
                    .is_some_and(|t| t.rdma.is_some_and(|r| r.posted))
            })
            .fold(0, |bits, i| bits | 1u128 << i);
        self.chunks
            .iter()
            .flatten()
            .filter(|c| c.by_copy)
            .fold(nic, |bits, c| bits | 1u128 << c.slot)
    }

    /// The next report; `hold` names a slot whose end must not be reported
    /// yet (its payload is still being sent).
    pub fn poll_report(&mut self, hold: Option<usize>) -> Option<Event> {
        let mut bits = self.report;
        if bits == 0 {
            // Asked every round of the event loop: nothing to scan for.
            return None;
        }
        let mut held = self.copying();
        if let Some(h) = hold {
            held |= 1u128 << h;
        }
        held &= bits;
        while held != 0 {
            let h = held.trailing_zeros() as usize;
            held &= held - 1;
            if self.slots[h].as_ref().is_some_and(|t| t.outcome.is_some()) {
                bits &= !(1u128 << h);
            }
        }
        if bits == 0 {
            return None;
        }
        let slot = bits.trailing_zeros() as usize;
        self.report &= !(1u128 << slot);
        // A bit is set only for a slot holding a task, and cleared when the
        // task leaves it.
        debug_assert!(self.slots[slot].is_some(), "a report for empty slot {slot}");
        let t = self.slots[slot].as_ref()?;
        match &t.outcome {
            None => Some(Event::Progress {
                task: t.id,
                transferred: t.done,
            }),
            Some(_) => {
                self.used &= !(1 << slot);
                let t = self.slots[slot].take()?;
                let result = t.outcome.unwrap_or(Ok(()));
                Some(Event::TaskDone { task: t.id, result })
            }
        }
    }
}
