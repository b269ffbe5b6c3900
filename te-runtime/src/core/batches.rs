//! Batches: submission, status, cancellation. The rules are the
//! endpoint's; this side carries the notification bytes and the links.

use super::notify::check_note;
use super::*;

impl EngineCore {
    /// Allocates a batch for up to `capacity` tasks.
    pub fn alloc_batch(&mut self, capacity: u32) -> Result<BatchId> {
        self.check_running()?;
        self.ep.alloc_batch(capacity)
    }

    /// Frees a batch; `NotReady` while any of its tasks is pending.
    pub fn free_batch(&mut self, id: BatchId) -> Result<()> {
        self.ep.free_batch(id)?;
        self.batch_notes.remove(&id);
        // An end not reported yet is never reported now: its stream goes on.
        self.batch_unfenced(id);
        Ok(())
    }

    /// Submits requests into a batch. All or nothing: an unknown segment
    /// (`NotFound`), unregistered local memory (`NotFound`), an empty list
    /// or a full batch (`Invalid`) submits none.
    pub fn submit(&mut self, batch: BatchId, reqs: &[Request]) -> Result<()> {
        self.submit_on(batch, reqs, None)
    }

    /// As [`submit`](Self::submit), over `path` instead of the engine's
    /// [`EngineConfig::path`](crate::EngineConfig::path).
    pub fn submit_via(&mut self, batch: BatchId, reqs: &[Request], path: Path) -> Result<()> {
        self.submit_on(batch, reqs, Some(path))
    }

    fn submit_on(&mut self, batch: BatchId, reqs: &[Request], path: Option<Path>) -> Result<()> {
        self.check_running()?;
        self.check_unfenced(batch)?;
        self.ep.submit(self.now(), batch, reqs, path)?;
        self.after_work();
        Ok(())
    }

    /// As [`submit`](Self::submit), and sends `{name, msg}`, once every task
    /// of the batch has completed, to every segment the batch wrote to or
    /// read from, after its data. It must be the batch's last submission:
    /// later ones are refused (`Invalid`).
    pub fn submit_with_notify(
        &mut self,
        batch: BatchId,
        reqs: &[Request],
        name: &str,
        msg: &[u8],
    ) -> Result<()> {
        self.check_running()?;
        self.check_unfenced(batch)?;
        check_note(name, msg)?;
        self.ep.submit_with_notify(self.now(), batch, reqs, None)?;
        self.batch_notes.insert(batch, (name.to_string(), msg.to_vec()));
        self.after_work();
        Ok(())
    }

    /// Status of one task.
    pub fn task_status(&self, task: TaskId) -> Result<TaskStatus> {
        self.ep.task_status(task)
    }

    /// Status of every submitted task of a batch.
    pub fn tasks_status(&self, batch: BatchId) -> Result<Vec<TaskStatus>> {
        Ok(self.ep.tasks_status(batch)?.collect())
    }

    /// Overall status of a batch.
    pub fn batch_status(&self, batch: BatchId) -> Result<BatchStatus> {
        self.ep.batch_status(batch)
    }

    /// The first failure of a batch, with the message that names why
    /// (`None` while nothing failed).
    pub fn batch_error(&self, batch: BatchId) -> Option<Status> {
        self.ep.batch_error(batch).cloned()
    }

    /// Cancels a pending task: it ends `Canceled` and its memory is not
    /// touched afterwards. A task already ended is left as it is.
    pub fn cancel_task(&mut self, task: TaskId) -> Result<()> {
        match self.ep.cancel_task(task)? {
            Cancel::Ended => self.after_work(),
            Cancel::OnLink { segment, local } => {
                if let Some(c) = self.segments[segment.0 as usize].conn {
                    if let Some(conn) = self.conns[c].as_mut() {
                        conn.link.cancel(task);
                        // A write frame being sent goes on from a copy: the
                        // task ends now, however slowly the peer reads.
                        conn.detach_payload(local, self.ep.registry_mut());
                    }
                    self.service(c);
                }
            }
        }
        Ok(())
    }

    /// Cancels every pending task of a batch.
    pub fn cancel_batch(&mut self, batch: BatchId) -> Result<()> {
        let n = self.ep.tasks_status(batch)?.len() as u32;
        for index in 0..n {
            self.cancel_task(TaskId { batch, index })?;
        }
        Ok(())
    }

    /// Tasks submitted and not yet ended.
    pub fn tasks_in_flight(&self) -> usize {
        self.ep.tasks_in_flight()
    }
}
