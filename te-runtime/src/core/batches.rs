//! Batches: submission, status, cancellation, completion.

use super::notify::check_note;
use super::*;

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

impl EngineCore {
    /// Allocates a batch for up to `capacity` tasks.
    pub fn alloc_batch(&mut self, capacity: u32) -> Result<BatchId> {
        self.check_running()?;
        self.batches.alloc(capacity)
    }

    /// Frees a batch; `NotReady` while any of its tasks is pending.
    pub fn free_batch(&mut self, id: BatchId) -> Result<()> {
        self.batches.free(id)?;
        self.batch_notes.remove(&id);
        self.batch_errors.remove(&id);
        Ok(())
    }

    /// Submits requests into a batch. All or nothing: an unknown segment
    /// (`NotFound`), unregistered local memory (`NotFound`), an empty list
    /// or a full batch (`Invalid`) submits none.
    pub fn submit(&mut self, batch: BatchId, reqs: &[Request]) -> Result<()> {
        self.check_running()?;
        // A stale batch id is the first thing wrong with any request list.
        self.batches.status(batch)?;
        if reqs.is_empty() {
            return Err(status!(Invalid, "empty request list"));
        }
        let loc = self.cfg.location;
        // Scratch vectors keep their capacity from call to call: no
        // allocation per submission in steady state.
        let mut treqs = std::mem::take(&mut self.scratch.reqs);
        let mut pins = std::mem::take(&mut self.scratch.pins);
        treqs.clear();
        pins.clear();
        let mut fail = None;
        for (i, r) in reqs.iter().enumerate() {
            if self.segments.get(r.segment.0 as usize).is_none() {
                fail = Some(status!(
                    NotFound,
                    "request {i}: no open segment with handle {}",
                    r.segment.0
                ));
                break;
            }
            let local = Span {
                addr: r.local,
                len: r.len,
                location: loc,
            };
            if r.len == 0 {
                fail = Some(status!(Invalid, "request {i}: length is zero"));
                break;
            }
            match self.reg.pin_local(local) {
                Ok(pin) => pins.push(pin),
                Err(e) => {
                    fail = Some(status!(=e.code(), "request {i}: {}", e.message()));
                    break;
                }
            }
            treqs.push(TransferRequest {
                op: r.op,
                local,
                target: r.segment.0,
                remote_addr: r.remote,
                remote_location: None,
            });
        }
        let submitted = match fail {
            Some(e) => Err(e),
            None => self.batches.submit(batch, &treqs),
        };
        self.scratch.reqs = treqs;
        let range = match submitted {
            Ok(range) => range,
            Err(e) => {
                for pin in pins.drain(..) {
                    self.reg.unpin(pin);
                }
                self.scratch.pins = pins;
                return Err(e);
            }
        };
        let deadline = self.now() + self.cfg.transfer_timeout;
        let mut touched = std::mem::take(&mut self.scratch.segments);
        touched.clear();
        for (index, pin) in range.zip(pins.drain(..)) {
            let task = TaskId { batch, index };
            self.local_pins.insert(task, pin);
            if let Some(p) = self.submit_path {
                self.task_paths.insert(task, p);
            }
            let req = self.batches.request(task)?;
            let s = req.target as usize;
            self.segments[s].pending.push_back((task, deadline));
            if !touched.contains(&s) {
                touched.push(s);
            }
        }
        self.scratch.pins = pins;
        for &s in &touched {
            if let Err(e) = self.ensure_connection(s) {
                self.fail_pending(s, &e);
            }
            if let Some(c) = self.segments[s].conn {
                self.service(c);
            }
        }
        self.scratch.segments = touched;
        Ok(())
    }

    /// As [`submit`](Self::submit), over `path` instead of the engine's
    /// [`EngineConfig::path`](crate::EngineConfig::path).
    pub fn submit_via(&mut self, batch: BatchId, reqs: &[Request], path: Path) -> Result<()> {
        self.submit_path = Some(path);
        let r = self.submit(batch, reqs);
        self.submit_path = None;
        r
    }

    /// As [`submit`](Self::submit), and sends `{name, msg}` to the peer of
    /// the first request once every task of the batch has completed. Make
    /// it the batch's last submission: the notification goes as soon as no
    /// task of the batch is pending.
    pub fn submit_with_notify(
        &mut self,
        batch: BatchId,
        reqs: &[Request],
        name: &str,
        msg: &[u8],
    ) -> Result<()> {
        let seg = reqs
            .first()
            .map(|r| r.segment.0 as usize)
            .ok_or_else(|| status!(Invalid, "empty request list"))?;
        check_note(name, msg)?;
        self.check_note_room(seg)?;
        self.submit(batch, reqs)?;
        self.batch_notes
            .insert(batch, (seg, name.to_string(), msg.to_vec()));
        self.maybe_send_batch_note(batch);
        Ok(())
    }

    /// Status of one task.
    pub fn task_status(&self, task: TaskId) -> Result<TaskStatus> {
        self.batches.task(task)
    }

    /// Status of every submitted task of a batch.
    pub fn tasks_status(&self, batch: BatchId) -> Result<Vec<TaskStatus>> {
        Ok(self.batches.tasks(batch)?.collect())
    }

    /// Overall status of a batch.
    pub fn batch_status(&self, batch: BatchId) -> Result<BatchStatus> {
        self.batches.status(batch)
    }

    /// The first failure of a batch, with the message that names why
    /// (`None` while nothing failed).
    pub fn batch_error(&self, batch: BatchId) -> Option<Status> {
        self.batch_errors.get(&batch).cloned()
    }

    /// Cancels a pending task: it ends `Canceled` and its memory is not
    /// touched afterwards. A task already ended is left as it is.
    pub fn cancel_task(&mut self, task: TaskId) -> Result<()> {
        let req = self.batches.request(task)?;
        if self.batches.task(task)?.state != TaskState::Pending {
            return Ok(());
        }
        let s = req.target as usize;
        if let Some(pos) = self.segments[s].pending.iter().position(|(t, _)| *t == task) {
            self.segments[s].pending.remove(pos);
            self.finish_task(task, TaskState::Canceled);
            return Ok(());
        }
        if let Some(c) = self.segments[s].conn {
            if let Some(conn) = self.conns[c].as_mut() {
                conn.link.cancel(task);
                // A write frame being sent goes on from a copy: the task
                // ends now, however slowly the peer reads.
                conn.detach_payload(req.local, &mut self.reg);
            }
            self.service(c);
        }
        Ok(())
    }

    /// Cancels every pending task of a batch.
    pub fn cancel_batch(&mut self, batch: BatchId) -> Result<()> {
        let n = self.batches.tasks(batch)?.len() as u32;
        for index in 0..n {
            self.cancel_task(TaskId { batch, index })?;
        }
        Ok(())
    }

    /// Tasks submitted and not yet ended.
    pub fn tasks_in_flight(&self) -> usize {
        self.local_pins.len()
    }
}
