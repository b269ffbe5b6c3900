//! Fences on the application's streams: what a stream-ordered transfer
//! (memfabric's `transfer_async_write_submit(..., stream)`) needs from ACL.
//!
//! A fence has two halves, both queued on the caller's stream when it is
//! set, so the host never blocks:
//!
//! * **start**: an event recorded on the stream. It completes once the work
//!   the caller had queued before the transfer has run; the runtime holds
//!   the transfer until then ([`DeviceDriver::poll_fence`]).
//! * **end**: `aclrtWaitAndResetNotify` on the stream. Everything the
//!   caller queues after the transfer waits behind it until the runtime,
//!   once the transfer has ended, records the notify on a driver stream
//!   ([`DeviceDriver::release_fence`]).
//!
//! A notify rather than an event for the end: CANN documents
//! `aclrtStreamWaitEvent` for an event already recorded (create, record,
//! wait), and the transfer's end has no device work to record an event
//! behind at submission time. A notify wait queued first holds the stream
//! until the record, which is what "the stream waits for the transfer" is.
//!
//! A third event, recorded on the caller's stream right behind the wait,
//! tells when the stream has passed the fence: only then are the fence's
//! events and notify destroyed (never while a task of the caller's stream
//! still names them, whenever the transfer ended). One that has not passed
//! when the driver is dropped is left alive rather than destroyed.
//!
//! [`DeviceDriver::poll_fence`]: te_proto::driver::DeviceDriver::poll_fence
//! [`DeviceDriver::release_fence`]: te_proto::driver::DeviceDriver::release_fence

use std::collections::HashMap;
use std::time::Duration;

use te_proto::driver::{DeviceIndex, FenceId};

use crate::driver::Handle;

/// How long a dropped driver waits for callers' streams to pass their
/// released fences before it leaves their handles alive.
pub(crate) const FENCE_DROP_WAIT: Duration = Duration::from_secs(1);

/// `ACL_NOTIFY_DEFAULT`: a notify the host records and waits on.
pub(crate) const NOTIFY_DEFAULT: u64 = 0;

/// One fence set on a caller's stream.
pub(crate) struct Fence {
    /// The device whose stream it is on.
    pub dev: DeviceIndex,
    /// Recorded on the caller's stream: the start.
    pub start: Handle,
    /// Waited for on the caller's stream: the end.
    pub notify: Handle,
    /// Recorded on the caller's stream behind the wait: the stream passed.
    pub passed: Handle,
    /// The start was seen complete (its event is no longer asked).
    pub started: bool,
}

/// Handles the caller's stream may still name, kept until it has run
/// past them.
pub(crate) struct Retiring {
    /// The device of that stream.
    pub dev: DeviceIndex,
    /// The last of them on the stream: complete (or failed) once the
    /// stream is past all of them.
    pub until: Handle,
    /// Events recorded on the stream before `until`.
    pub events: Vec<Handle>,
    /// The fence's notify, if it got one.
    pub notify: Option<Handle>,
}

/// The fences of one driver.
#[derive(Default)]
pub(crate) struct Fences {
    next: u64,
    /// Fences set and not released, by id.
    pub live: HashMap<u64, Fence>,
    /// Released fences whose notify is not destroyed yet.
    pub retiring: Vec<Retiring>,
}

impl Fences {
    /// Stores a fence, returning its id.
    pub fn insert(&mut self, fence: Fence) -> FenceId {
        let id = self.next;
        self.next += 1;
        self.live.insert(id, fence);
        FenceId(id)
    }
}

/// `aclrtWaitAndResetNotify`'s timeout, whole seconds (0 would be
/// forever): `timeout` rounded up, at least one.
pub(crate) fn wait_secs(timeout: Duration) -> u32 {
    let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notify_wait_lasts_at_least_the_transfer_timeout_and_never_forever() {
        assert_eq!(wait_secs(Duration::ZERO), 1);
        assert_eq!(wait_secs(Duration::from_millis(1)), 1);
        assert_eq!(wait_secs(Duration::from_secs(60)), 60);
        assert_eq!(wait_secs(Duration::from_millis(60_001)), 61);
        assert_eq!(wait_secs(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
