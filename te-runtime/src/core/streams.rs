//! Batches ordered on an application's device stream (memfabric's
//! `transfer_async_write_submit(..., stream)`): the transfer starts after
//! the work the application queued on the stream before it, and the work it
//! queues after waits for the transfer's end, with no host thread blocked.
//!
//! The driver fences the stream ([`DeviceDriver::fence_stream`]); the
//! endpoint holds the batch until the fence's start has passed
//! ([`Endpoint::hold`]), and the batch's end releases the fence, whatever
//! the end was: a failed transfer is reported by the batch, as every
//! failure is, and never leaves the application's stream stuck.
//!
//! [`DeviceDriver::fence_stream`]: te_proto::driver::DeviceDriver::fence_stream
//! [`Endpoint::hold`]: te_proto::Endpoint::hold

use te_proto::driver::{FenceId, StreamHandle};

use super::*;

/// How much longer than the transfer timeout the application's stream
/// waits for a transfer's end before it gives up with an error: the loop
/// releases a fence in the turn after the batch ended.
const FENCE_SLACK: Duration = Duration::from_secs(1);

/// How often the loop asks whether an application's stream reached a
/// fence at first: coarser than a copy's poll, as the stream may run long
/// compute before it. The interval grows with the wait (an eighth of it),
/// up to [`FENCE_POLL_MAX`], so a long kernel costs few wake-ups.
const FENCE_POLL: Duration = Duration::from_micros(200);
/// The longest interval between two looks at a fence.
const FENCE_POLL_MAX: Duration = Duration::from_millis(2);

/// A batch's fence on the application's stream.
pub(crate) struct Fenced {
    fence: FenceId,
    /// The stream reached the fence and the batch was released.
    started: bool,
    /// When the batch was submitted.
    since: Instant,
}

impl EngineCore {
    /// Submits requests into a fresh batch, ordered on the application's
    /// device `stream` of this engine's device: the tasks start once the
    /// work queued on the stream before this call has run, and the work
    /// queued on it afterwards waits until every task has ended. Returns
    /// at once. `Invalid` for host memory, a batch that already has tasks,
    /// or the null stream; `NotSupported` where the driver has no streams.
    pub fn submit_on_stream(&mut self, batch: BatchId, reqs: &[Request], stream: StreamHandle) -> Result<()> {
        self.check_running()?;
        let loc = self.cfg.location;
        if loc.is_host() {
            return Err(status!(
                Invalid,
                "stream-ordered submit orders device memory on a device stream; this engine's memory is {loc}"
            ));
        }
        let tasks = self.ep.batch_status(batch)?.total;
        if tasks > 0 || self.fenced.contains_key(&batch) {
            return Err(status!(
                Invalid,
                "stream-ordered submit needs a batch of its own: batch {batch} has {tasks} tasks already"
            ));
        }
        let timeout = self.cfg.transfer_timeout + FENCE_SLACK;
        let (d, dev) = self.devices.driver(loc)?;
        let fence = d.fence_stream(dev, stream, timeout)?;
        let now = self.now();
        let submitted = self
            .ep
            .hold(batch)
            .and_then(|()| self.ep.submit(now, batch, reqs, None));
        if let Err(e) = submitted {
            let _ = self.ep.release(batch, Ok(()));
            if let Err(why) = self.release_fence(fence) {
                warn!("batch {batch} not submitted, and its stream fence not released: {why}");
            }
            return Err(e);
        }
        self.fenced.insert(
            batch,
            Fenced {
                fence,
                started: false,
                since: now,
            },
        );
        self.poll_fences();
        self.after_work();
        Ok(())
    }

    /// `Invalid` for a batch ordered on a stream that has not ended: it
    /// takes no more submissions.
    pub(super) fn check_unfenced(&self, id: BatchId) -> Result<()> {
        if self.fenced.contains_key(&id) {
            return Err(status!(
                Invalid,
                "batch {id} is ordered on a device stream: it takes no more submissions"
            ));
        }
        Ok(())
    }

    /// When the loop looks again at the fences whose batch still waits
    /// for its stream, if any does.
    pub(super) fn next_fence_poll(&self, now: Instant) -> Option<Instant> {
        self.fenced
            .values()
            .filter(|f| !f.started)
            .map(|f| now + ((now - f.since) / 8).clamp(FENCE_POLL, FENCE_POLL_MAX))
            .min()
    }

    /// Releases every held batch whose stream reached its fence, and fails
    /// the tasks of one whose stream failed before it.
    pub(super) fn poll_fences(&mut self) {
        if self.fenced.values().all(|f| f.started) {
            return;
        }
        let Ok((d, _)) = self.devices.driver(self.cfg.location) else {
            return;
        };
        let mut gone = Vec::new();
        for (&batch, f) in self.fenced.iter_mut().filter(|(_, f)| !f.started) {
            let Some(outcome) = d.poll_fence(f.fence) else {
                continue;
            };
            f.started = true;
            if let Err(why) = &outcome {
                debug!("batch {batch} fails: {why}");
            }
            if self.ep.release(batch, outcome).is_err() {
                // Not a live batch any more (its end went unreported): its
                // stream goes on now.
                gone.push(batch);
            }
        }
        for batch in gone {
            self.batch_unfenced(batch);
        }
    }

    /// The end of batch `id`: its stream goes on past the fence.
    pub(super) fn batch_unfenced(&mut self, id: BatchId) {
        let Some(f) = self.fenced.remove(&id) else {
            return;
        };
        if let Err(why) = self.release_fence(f.fence) {
            warn!("batch {id} ended, and the stream it is ordered on could not be released: {why}");
        }
    }

    fn release_fence(&mut self, fence: FenceId) -> Result<()> {
        let (d, _) = self.devices.driver(self.cfg.location)?;
        d.release_fence(fence)
    }
}
