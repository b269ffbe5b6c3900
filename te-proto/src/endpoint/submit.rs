//! Submission (validated once, stored once), batch notifications and their
//! room per segment, and cancellation.

use crate::batch::{BatchId, TaskId, TaskState, TransferRequest};
use crate::error::Result;
use crate::region::Span;
use crate::registry::PinKey;
use crate::status;
use crate::time::Instant;

use super::{Cancel, Endpoint, Path, Request, SegmentEntry, SegmentId, Storage};

impl<S: Storage> Endpoint<S> {
    fn local_span(&self, r: &Request) -> Span {
        Span {
            addr: r.local,
            len: r.len,
            location: self.cfg.location,
        }
    }

    /// Submits requests into a batch, each task over `path` (the
    /// endpoint's default path when `None`). All or nothing: a stale batch
    /// or one that carries a notification (`Invalid`), an empty list, a
    /// zero length or a full batch (`Invalid`), an unknown segment or local
    /// memory that is not registered (`NotFound`) submits none. The tasks
    /// queue at their segments, each with its deadline; every segment they
    /// went to is reported by an [`Event::Service`](super::Event::Service).
    pub fn submit(
        &mut self,
        now: Instant,
        batch: BatchId,
        reqs: &[Request],
        path: Option<Path>,
    ) -> Result<()> {
        self.check_running()?;
        // A stale batch id is the first thing wrong with any request list.
        let b = self.batches.batch_index(batch)?;
        if self.batch_entries.as_ref().get(b).is_some_and(|e| e.sealed) {
            return Err(status!(
                Invalid,
                "batch {batch} carries a notification: that submission must be its last"
            ));
        }
        if reqs.is_empty() {
            return Err(status!(Invalid, "empty request list"));
        }
        for (i, r) in reqs.iter().enumerate() {
            if let Err(e) = self.check_and_pin(i, r) {
                self.unpin_all(&reqs[..i]);
                return Err(e);
            }
        }
        let location = self.cfg.location;
        let target = |r: &Request| TransferRequest {
            op: r.op,
            local: Span {
                addr: r.local,
                len: r.len,
                location,
            },
            segment: r.segment.0,
            remote_addr: r.remote,
            remote_location: None,
        };
        let submitted = self.batches.submit_iter(batch, reqs.iter().map(target));
        let range = match submitted {
            Ok(range) => range,
            Err(e) => {
                self.unpin_all(reqs);
                return Err(e);
            }
        };
        let deadline = now + self.cfg.transfer_timeout;
        let path = path.unwrap_or(self.cfg.path);
        for (index, r) in range.zip(reqs) {
            let task = TaskId { batch, index };
            let (Ok(t), Ok(region)) = (
                self.batches.task_index(task),
                self.reg.lookup_local(self.local_span(r)),
            ) else {
                debug_assert!(false, "{task} was just submitted over pinned memory");
                continue;
            };
            let pin = PinKey {
                location: region.span.location,
                base: region.span.addr,
            };
            if let Some(e) = self.tasks.as_mut().get_mut(t) {
                e.task = task;
                e.segment = r.segment.0;
                e.pin = Some(pin);
                e.deadline = deadline;
                e.path = path;
            }
            self.in_flight += 1;
            self.enqueue(r.segment, t as u32);
            self.push_service(r.segment);
        }
        Ok(())
    }

    /// Checks request `i` (open segment, nonzero length) and pins its
    /// local memory.
    fn check_and_pin(&mut self, i: usize, r: &Request) -> Result<()> {
        if self.segment(r.segment).is_err() {
            return Err(status!(
                NotFound,
                "request {i}: no open segment with handle {}",
                r.segment.0
            ));
        }
        if r.len == 0 {
            return Err(status!(Invalid, "request {i}: length is zero"));
        }
        match self.reg.pin_local(self.local_span(r)) {
            Ok(_) => Ok(()),
            Err(e) => Err(status!(=e.code(), "request {i}: {}", e.message())),
        }
    }

    /// Undoes the pins of requests that [`check_and_pin`](Self::check_and_pin) passed.
    fn unpin_all(&mut self, reqs: &[Request]) {
        for r in reqs {
            // A pinned region can neither go nor start draining meanwhile
            // (this is one call), so the lookup finds what was pinned.
            match self.reg.lookup_local(self.local_span(r)) {
                Ok(region) => {
                    self.reg.unpin(PinKey {
                        location: region.span.location,
                        base: region.span.addr,
                    });
                }
                Err(_) => debug_assert!(false, "a region pinned by this call vanished"),
            }
        }
    }

    /// As [`submit`](Self::submit), and the batch's notification goes, once
    /// every task of the batch has completed, to every segment the batch
    /// touched. Make it the batch's last submission: later ones are
    /// refused. `NotReady` when a segment already has `max_notifications`
    /// waiting; nothing is submitted then. The bytes are the runtime's: it
    /// sends them on [`NoteOutcome::Send`](super::NoteOutcome::Send).
    pub fn submit_with_notify(
        &mut self,
        now: Instant,
        batch: BatchId,
        reqs: &[Request],
        path: Option<Path>,
    ) -> Result<()> {
        self.check_running()?;
        self.batches.batch_index(batch)?;
        let max = self.cfg.max_notifications;
        let mut full = None;
        self.walk_segments(batch, reqs, |seg, _| {
            if seg.notes >= max && full.is_none() {
                full = Some(status!(
                    NotReady,
                    "{} notifications already wait to be sent to {}",
                    seg.notes,
                    seg.label
                ));
            }
        })?;
        if let Some(e) = full {
            return Err(e);
        }
        self.submit(now, batch, reqs, path)?;
        self.walk_segments(batch, &[], |seg, _| seg.notes += 1)?;
        let b = self.batches.batch_index(batch)?;
        if let Some(e) = self.batch_entries.as_mut().get_mut(b) {
            e.note = true;
            e.sealed = true;
        }
        Ok(())
    }

    /// Counts a standalone notification for segment `id` before the runtime
    /// queues its bytes. `NotReady` when `max_notifications` already wait
    /// there (queued ones and those waiting for their batch: one bound for
    /// both, so a peer that reads none makes neither grow).
    pub fn reserve_note(&mut self, id: SegmentId) -> Result<()> {
        self.check_running()?;
        let max = self.cfg.max_notifications;
        let seg = self.segment_mut(id)?;
        if seg.notes >= max {
            return Err(status!(
                NotReady,
                "{} notifications already wait to be sent to {}",
                seg.notes,
                seg.label
            ));
        }
        seg.notes += 1;
        Ok(())
    }

    /// A notification counted for segment `id` was handed to its link, or
    /// will never be (its link went): it no longer counts.
    pub fn note_sent(&mut self, id: SegmentId) {
        if let Ok(seg) = self.segment_mut(id) {
            debug_assert!(
                seg.notes > 0,
                "segment {} sent a notification it did not count",
                id.0
            );
            seg.notes = seg.notes.saturating_sub(1);
        }
    }

    /// Calls `f` once for every distinct segment that tasks of `batch` go
    /// to: where its notification goes.
    pub fn batch_segments(&mut self, batch: BatchId, mut f: impl FnMut(SegmentId)) -> Result<()> {
        self.walk_segments(batch, &[], |_, id| f(id))
    }

    /// Visits every distinct open segment of the tasks of `batch` and of
    /// `more`, once each, without allocating (a walk marks what it saw).
    pub(super) fn walk_segments(
        &mut self,
        batch: BatchId,
        more: &[Request],
        mut f: impl FnMut(&mut SegmentEntry, SegmentId),
    ) -> Result<()> {
        let total = self.batches.status(batch)?.total;
        self.walk += 1;
        let walk = self.walk;
        let submitted = (0..total).filter_map(|index| self.batches.request(TaskId { batch, index }).ok());
        let segments = self.segments.as_mut();
        for s in submitted
            .map(|r| r.segment)
            .chain(more.iter().map(|r| r.segment.0))
        {
            if let Some(seg) = segments.get_mut(s as usize).filter(|g| g.used && g.mark != walk) {
                seg.mark = walk;
                f(seg, SegmentId(s));
            }
        }
        Ok(())
    }

    /// Holds batch `id`: its tasks queued now or submitted later wait in
    /// their segments' queues, their deadlines running, until
    /// [`release`](Self::release) (tasks already on a link go on). What
    /// a runtime uses to start a batch only after an event it cannot see
    /// in here, such as the work a device stream had queued before it.
    pub fn hold(&mut self, id: BatchId) -> Result<()> {
        let b = self.batches.batch_index(id)?;
        if let Some(e) = self.batch_entries.as_mut().get_mut(b) {
            e.held = true;
        }
        Ok(())
    }

    /// Ends the hold of batch `id`. With `Ok(())` its queued tasks go to
    /// their links: every segment they wait at is reported by an
    /// [`Event::Service`](super::Event::Service). With `Err(why)` (what the
    /// batch waited for failed) every queued task of it ends with `why`.
    /// A batch not held is left as it is.
    pub fn release(&mut self, id: BatchId, outcome: Result<()>) -> Result<()> {
        let b = self.batches.batch_index(id)?;
        let held = self
            .batch_entries
            .as_mut()
            .get_mut(b)
            .map(|e| core::mem::take(&mut e.held));
        if held != Some(true) {
            return Ok(());
        }
        if let Err(why) = outcome {
            let total = self.batches.status(id)?.total;
            for index in 0..total {
                let task = TaskId { batch: id, index };
                let Ok(t) = self.batches.task_index(task) else {
                    continue;
                };
                if self.tasks.as_ref().get(t).is_some_and(|e| e.queued) {
                    self.dequeue(t as u32);
                    self.finish(task, Err(why.clone()));
                }
            }
            return Ok(());
        }
        // The walk marks the batch's segments; each marked one is served.
        self.walk_segments(id, &[], |_, _| ())?;
        for s in 0..self.opened {
            if self
                .segments
                .as_ref()
                .get(s as usize)
                .is_some_and(|g| g.mark == self.walk)
            {
                self.push_service(SegmentId(s));
            }
        }
        Ok(())
    }

    /// Whether batch `id` is held (a stale id is not).
    pub(super) fn is_held(&self, id: BatchId) -> bool {
        self.batches
            .batch_index(id)
            .ok()
            .and_then(|b| self.batch_entries.as_ref().get(b))
            .is_some_and(|e| e.held)
    }

    /// Cancels a pending task. One still queued ends `Canceled` now; one on
    /// a link is the runtime's to cancel there ([`Cancel::OnLink`]). A task
    /// already ended is left as it is.
    pub fn cancel_task(&mut self, task: TaskId) -> Result<Cancel> {
        let req = self.batches.request(task)?;
        if self.batches.task(task)?.state != TaskState::Pending {
            return Ok(Cancel::Ended);
        }
        let t = self.batches.task_index(task)?;
        if self.tasks.as_ref().get(t).is_some_and(|e| e.queued) {
            self.finish(task, Err(status!(Canceled, "canceled before it started")));
            return Ok(Cancel::Ended);
        }
        Ok(Cancel::OnLink {
            segment: SegmentId(req.segment),
            local: req.local,
        })
    }
}
