//! Rings of driver staging buffers: how a connection moves device payloads
//! between device memory and the socket without waiting on each copy.
//!
//! A device payload to send is copied asynchronously (`CopyOp::ToHost`)
//! into a free slot of the connection's send ring while the slot before it
//! is still going out on the socket; arriving device payloads are copied
//! from the read buffer into a slot of the receive ring and on to the
//! device (`CopyOp::FromHost`) while the next bytes are read. Each ring has
//! at most `EngineConfig::staging_slots` slots of pinned host memory from the driver, so
//! the memory a connection stages with is bounded whatever the transfer
//! size, and the slots are reused from one payload to the next.
//!
//! No file descriptor tells of a device copy's end (ACL has none), so a
//! connection with copies in flight asks the event loop to look again
//! after [`DEVICE_POLL`].

use std::time::Duration;

use te_proto::driver::{CopyId, CopyOp, StagingId};
use te_proto::{Instant, Location, Result};

use crate::devices::Devices;

/// The smallest slot: a slot is allocated this large, or as large as the
/// payload when that is larger (at most a frame's payload), and reused.
const SLOT_MIN: usize = 256 << 10;
/// How soon a connection with device copies in flight is looked at again.
pub(crate) const DEVICE_POLL: Duration = Duration::from_micros(20);

/// One ring of staging slots (see the [module docs](self)).
pub(crate) struct Ring {
    slots: Vec<Slot>,
    /// The most slots.
    cap: usize,
}

struct Slot {
    /// A location of the driver that owns the buffer.
    owner: Location,
    id: StagingId,
    len: usize,
    busy: bool,
}

/// Whether two device locations are served by one driver (and so can share
/// its staging buffers).
fn same_driver(a: Location, b: Location) -> bool {
    core::mem::discriminant(&a) == core::mem::discriminant(&b)
}

impl Ring {
    /// An empty ring of at most `cap` slots.
    pub fn new(cap: usize) -> Ring {
        Ring {
            slots: Vec::new(),
            cap,
        }
    }

    /// The most slots, and so the most payloads of one direction staged at once.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// A free slot of `owner`'s driver holding at least `len` bytes, now
    /// marked busy; `None` while all slots are busy. A free slot
    /// too small or of another driver is replaced.
    pub fn take(&mut self, devices: &mut Devices, owner: Location, len: usize) -> Result<Option<usize>> {
        let fits = |s: &Slot| !s.busy && same_driver(s.owner, owner) && s.len >= len;
        if let Some(i) = self.slots.iter().position(fits) {
            self.slots[i].busy = true;
            return Ok(Some(i));
        }
        let size = len.max(SLOT_MIN);
        if let Some(i) = self.slots.iter().position(|s| !s.busy) {
            let old = &self.slots[i];
            devices.free_staging(old.owner, old.id)?;
            let id = devices.alloc_staging(owner, size)?;
            self.slots[i] = Slot {
                owner,
                id,
                len: size,
                busy: true,
            };
            return Ok(Some(i));
        }
        if self.slots.len() == self.cap {
            return Ok(None);
        }
        let id = devices.alloc_staging(owner, size)?;
        self.slots.push(Slot {
            owner,
            id,
            len: size,
            busy: true,
        });
        Ok(Some(self.slots.len() - 1))
    }

    /// Marks slot `i` free for the next payload.
    pub fn release(&mut self, i: usize) {
        if let Some(s) = self.slots.get_mut(i) {
            s.busy = false;
        }
    }

    /// The first `len` bytes of slot `i`.
    pub fn bytes<'d>(&self, devices: &'d mut Devices, i: usize, len: usize) -> Result<&'d [u8]> {
        let s = &self.slots[i];
        Ok(&devices.staging(s.owner, s.id)?[..len])
    }

    /// Slot `i`'s bytes, for filling.
    pub fn bytes_mut<'d>(&self, devices: &'d mut Devices, i: usize) -> Result<&'d mut [u8]> {
        let s = &self.slots[i];
        devices.staging_mut(s.owner, s.id)
    }

    /// Starts copying `len` bytes of device memory at `src` into slot `i`.
    pub fn load(&self, devices: &mut Devices, now: Instant, i: usize, src: u64, len: u64) -> Result<Copy> {
        let s = &self.slots[i];
        let (loc, staging) = (s.owner, s.id);
        devices.submit(now, loc, src, |dev, addr| CopyOp::ToHost {
            dev,
            src: addr,
            staging,
            offset: 0,
            len,
        })
    }

    /// Starts copying the first `len` bytes of slot `i` to device memory at
    /// `dst` in `loc`.
    pub fn store(
        &self,
        devices: &mut Devices,
        now: Instant,
        i: usize,
        loc: Location,
        dst: u64,
        len: u64,
    ) -> Result<Copy> {
        let staging = self.slots[i].id;
        devices.submit(now, loc, dst, |dev, addr| CopyOp::FromHost {
            staging,
            offset: 0,
            dev,
            dst: addr,
            len,
        })
    }

    /// Bytes of pinned host memory the ring holds.
    pub fn bytes_held(&self) -> usize {
        self.slots.iter().map(|s| s.len).sum()
    }

    /// Gives every slot back to its driver; copies using them have ended.
    pub fn free_all(&mut self, devices: &mut Devices) {
        for s in self.slots.drain(..) {
            let _ = devices.free_staging(s.owner, s.id);
        }
    }
}

/// An asynchronous device copy in flight: the location whose driver runs
/// it and its id there.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Copy {
    pub loc: Location,
    pub id: CopyId,
}

impl Copy {
    /// Its outcome once it has ended.
    pub fn poll(&self, devices: &mut Devices, now: Instant) -> Option<Result<()>> {
        devices.poll(now, self.loc, self.id)
    }

    /// Waits until it has ended (a connection going away must not release
    /// memory a device is still copying), polling between yields until
    /// `deadline` (one for all the copies of a connection); the outcome, or
    /// `None` if it did not end by then.
    pub fn wait(
        &self,
        devices: &mut Devices,
        now: impl Fn() -> Instant,
        deadline: std::time::Instant,
    ) -> Option<Result<()>> {
        loop {
            if let Some(r) = self.poll(devices, now()) {
                return Some(r);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::yield_now();
        }
    }
}
