//! Device memory over the same-host path (docs/DESIGN.md, "NPU memory on
//! the same-host path"). The owner of the registered memory still does
//! every copy itself; what is new is how it reaches the initiator's device
//! memory: the initiator exports its registered device region with an IPC
//! key whitelisting only the owner's verified process and announces it
//! (`LocalKey`), and the owner imports it once and copies device to device
//! (or device to host) with its own driver. The initiator never touches
//! the owner's memory; the owner's checks and pins are those of TCP.
//!
//! - [`Exports`]: the initiator's keys, per connection: exported at the
//!   first task on a region, withdrawn when the region is unregistered and
//!   closed once the owner answers that it closed its import (`KeyClosed`:
//!   CANN wants importers to close first), the connection ends, or
//!   [`KEY_CLOSE_WAIT`] passed; unregister returns only after that.
//! - [`Imports`]: the owner's imports of the peer's keys, per connection:
//!   imported at the first copy, closed when the peer withdraws the key
//!   (once no copy runs through it; then `KeyClosed` answers) or the
//!   connection ends.

use std::collections::HashMap;
use std::time::Duration;

use te_proto::link::{Link, LocalKey, SameHostCopy, MAX_LOCAL_MAPS};
use te_proto::{status, Instant, Location, Result, Span};
use tracing::{debug, info, warn};

use crate::devices::Devices;

/// How long a withdrawn key stays exported waiting for the owner's
/// `KeyClosed`: past it (a peer that never answers) the export is closed
/// anyway, so that unregister ends.
pub(crate) const KEY_CLOSE_WAIT: Duration = Duration::from_secs(10);

/// The device regions this side announced to one peer, by region base.
#[derive(Debug, Default)]
pub(crate) struct Exports {
    by_base: HashMap<(Location, u64), LocalKey>,
    /// Withdrawn keys whose export waits for the owner's `KeyClosed`, each
    /// with the time it is closed regardless.
    closing: Vec<(LocalKey, Instant)>,
    /// The last key id used on this link.
    last_id: u64,
}

impl Exports {
    /// The announcement of device region `region` for the peer process
    /// `importer` (verified), exported now if it was not: `None` (logged)
    /// when the driver cannot export it, so that the task takes TCP.
    pub fn key(&mut self, region: Span, importer: u32, devices: &mut Devices) -> Option<LocalKey> {
        if let Some(k) = self.by_base.get(&(region.location, region.addr)) {
            return Some(*k);
        }
        if !devices.ipc(region.location) {
            return None;
        }
        match devices.export(region, importer) {
            Ok(key) => {
                self.last_id += 1;
                let k = LocalKey {
                    id: self.last_id,
                    base: region.addr,
                    len: region.len,
                    location: region.location,
                    key: Some(key),
                };
                debug!(
                    "exported {} region {:#x}+{:#x} to process {importer} as {key:?}",
                    region.location, region.addr, region.len
                );
                self.by_base.insert((region.location, region.addr), k);
                Some(k)
            }
            Err(e) => {
                info!(
                    "{} region {:#x} not exported to process {importer}, its task uses TCP: {e}",
                    region.location, region.addr
                );
                None
            }
        }
    }

    /// The announcement of `k` failed: the export is closed (its task takes
    /// TCP; a later task exports again).
    pub fn announce_failed(&mut self, k: LocalKey, devices: &mut Devices) {
        if self.by_base.remove(&(k.location, k.base)).is_some() {
            close(&k, devices);
        }
    }

    /// Region `base` in `loc` is being unregistered: its key is withdrawn
    /// from the peer, and closed once the peer closed its import (then the
    /// peer can no longer import it and copies through an import fail).
    /// True when there was a key (its withdrawal is to be sent).
    pub fn revoke(
        &mut self,
        loc: Location,
        base: u64,
        link: &mut Link,
        devices: &mut Devices,
        now: Instant,
    ) -> bool {
        let Some(k) = self.by_base.remove(&(loc, base)) else {
            return false;
        };
        link.same_host_mut().withdraw_local_key(k.id);
        self.closing.push((k, now + KEY_CLOSE_WAIT));
        self.reap(link, devices, now);
        true
    }

    /// Withdraws every key (the engine is finalizing): each is closed once
    /// the peer closed its import, as at unregister.
    /// True when there was a key.
    pub fn revoke_all(&mut self, link: &mut Link, devices: &mut Devices, now: Instant) -> bool {
        let any = !self.by_base.is_empty();
        for (_, k) in self.by_base.drain() {
            link.same_host_mut().withdraw_local_key(k.id);
            self.closing.push((k, now + KEY_CLOSE_WAIT));
        }
        self.reap(link, devices, now);
        any
    }

    /// Whether any withdrawn key waits for the peer.
    pub fn any_closing(&self) -> bool {
        !self.closing.is_empty()
    }

    /// Closes the withdrawn keys the peer has let go of (or that waited
    /// [`KEY_CLOSE_WAIT`], or whose link is closed).
    pub fn reap(&mut self, link: &mut Link, devices: &mut Devices, now: Instant) {
        self.closing.retain(|(k, until)| {
            let waiting = link.same_host().local_key_closing(k.id);
            if waiting && now < *until {
                return true;
            }
            if waiting {
                warn!(
                    "the peer did not answer the withdrawal of device buffer {:#x} within {KEY_CLOSE_WAIT:?}: its export is closed first",
                    k.id
                );
                // Its slot on the link is free again; a late answer is ignored.
                link.same_host_mut().abandon_local_key(k.id);
            }
            close(k, devices);
            false
        });
    }

    /// Whether the key of region `base` in `loc` is withdrawn and not
    /// closed yet.
    pub fn closing(&self, loc: Location, base: u64) -> bool {
        self.closing
            .iter()
            .any(|(k, _)| (k.location, k.base) == (loc, base))
    }

    /// When the earliest withdrawn key is closed regardless.
    pub fn deadline(&self) -> Option<Instant> {
        self.closing.iter().map(|&(_, until)| until).min()
    }

    /// Whether a withdrawn key waits for the peer's `KeyClosed` (its export
    /// is closed as soon as that came, by [`reap`](Self::reap)).
    pub fn awaiting_answers(&self) -> bool {
        !self.closing.is_empty()
    }

    /// The connection ended: every key is closed.
    pub fn close_all(&mut self, devices: &mut Devices) {
        for (_, k) in self.by_base.drain() {
            close(&k, devices);
        }
        for (k, _) in self.closing.drain(..) {
            close(&k, devices);
        }
    }
}

fn close(k: &LocalKey, devices: &mut Devices) {
    let Some(key) = &k.key else { return };
    if let Err(e) = devices.close_export(k.location, key) {
        warn!(
            "cannot close export {key:?} of {} at {:#x}: {e}",
            k.location, k.base
        );
    }
}

/// One of the peer's keys, imported here.
#[derive(Debug)]
struct Imported {
    /// The announcement it was imported for.
    key: LocalKey,
    /// The device whose copies use it.
    on: Location,
    /// Its address on `on`.
    addr: u64,
}

/// The peer's device buffers imported for one connection, by key id.
#[derive(Debug, Default)]
pub(crate) struct Imports {
    by_id: HashMap<u64, Imported>,
}

impl Imports {
    /// The device span, on `on`, of the peer's `[addr, addr + len)` inside
    /// its announced buffer `key`, imported at first use. An import that
    /// fails fails this copy (and is tried again by the next).
    /// `busy`: copies of this connection run on a device now.
    fn span(
        &mut self,
        key: LocalKey,
        on: Location,
        addr: u64,
        len: u64,
        busy: bool,
        devices: &mut Devices,
    ) -> Result<Span> {
        let stale = self
            .by_id
            .get(&key.id)
            .is_some_and(|i| i.key != key || i.on != on);
        if stale {
            if busy {
                // Copies through the old import may still run: it stays
                // open, and this copy fails.
                return Err(status!(
                    Invalid,
                    "the peer announced its device buffer {:#x} anew while copies through it run",
                    key.id
                ));
            }
            self.close(key.id, devices);
        }
        let imported = self.by_id.len();
        let i = match self.by_id.entry(key.id) {
            std::collections::hash_map::Entry::Occupied(i) => i.into_mut(),
            // Withdrawn imports are closed only once no copy runs: a peer
            // cycling announcements meanwhile meets this bound.
            std::collections::hash_map::Entry::Vacant(_) if imported >= MAX_LOCAL_MAPS => {
                return Err(status!(
                    NotSupported,
                    "{imported} of the peer's device buffers are imported already (at most {MAX_LOCAL_MAPS})"
                ));
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                let ipc = key
                    .key
                    .ok_or_else(|| status!(Invalid, "peer's device buffer {:#x} has no key", key.id))?;
                let at = devices.import(on, key.location, &ipc, key.len)?;
                debug!(
                    id = key.id,
                    "imported the peer's {} buffer as {at:#x} on {on}", key.location
                );
                slot.insert(Imported { key, on, addr: at })
            }
        };
        Ok(Span {
            addr: i.addr + (addr - key.base),
            len,
            location: on,
        })
    }

    /// Closes the imports of buffers the peer no longer announces and no
    /// copy in `running` uses, and tells the peer of each withdrawn one it
    /// no longer imports that it may close its export.
    pub fn retain_announced(&mut self, link: &mut Link, devices: &mut Devices, running: &[Started]) {
        let gone: Vec<u64> = self
            .by_id
            .values()
            .filter(|i| !link.same_host().peer_local_keys().any(|k| k == i.key))
            .filter(|i| !running.iter().any(|s| s.touches(i.on, i.addr, i.key.len)))
            .map(|i| i.key.id)
            .collect();
        for id in gone {
            self.close(id, devices);
        }
        let withdrawn: Vec<u64> = link.same_host().peer_keys_withdrawn().collect();
        for id in withdrawn {
            if !self.by_id.contains_key(&id) {
                link.same_host_mut().let_go_of_key(id);
            }
        }
    }

    fn close(&mut self, id: u64, devices: &mut Devices) {
        if let Some(i) = self.by_id.remove(&id) {
            if let Err(e) = devices.close_import(i.on, i.addr) {
                warn!("cannot close the import of the peer's buffer {id:#x}: {e}");
            }
        }
    }

    /// The connection ended: every import is closed.
    pub fn close_all(&mut self, devices: &mut Devices) {
        let ids: Vec<u64> = self.by_id.keys().copied().collect();
        for id in ids {
            self.close(id, devices);
        }
    }

    /// Starts copy `c`, whose peer memory lies in a device buffer the peer
    /// announced: device to device when our span is device memory too
    /// (asynchronously, on our device's stream), else between our host span
    /// and the import (done now). `busy`: copies of this connection run on
    /// a device now.
    pub fn start(
        &mut self,
        c: &SameHostCopy,
        busy: bool,
        link: &Link,
        devices: &mut Devices,
        now: Instant,
    ) -> Started {
        let theirs = match self.theirs(c, busy, link, devices) {
            Ok(t) => t,
            Err(e) => return Started::Done(Err(e)),
        };
        let (src, dst) = if c.to_peer {
            (c.span, theirs)
        } else {
            (theirs, c.span)
        };
        let started = match (c.span.location.is_host(), c.to_peer) {
            (false, _) => devices
                .submit_device(now, src, dst)
                .map(|copy| Started::Device { copy, src, dst }),
            // SAFETY: our span is registered host memory, pinned by the
            // link until `copy_done`; the engine writes it only on this
            // thread, and no other reference to it lives meanwhile.
            (true, true) => devices
                .write(dst, unsafe { crate::mem::host_bytes(src) })
                .map(|()| Started::Done(Ok(()))),
            // SAFETY: as above.
            (true, false) => devices
                .read(src, unsafe { crate::mem::host_bytes_mut(dst) })
                .map(|()| Started::Done(Ok(()))),
        };
        started.unwrap_or_else(|e| Started::Done(Err(e)))
    }

    /// Our import of the peer's memory that copy `c` names, as a device span.
    fn theirs(&mut self, c: &SameHostCopy, busy: bool, link: &Link, devices: &mut Devices) -> Result<Span> {
        let key = link
            .same_host()
            .peer_local_key(c.peer_addr, c.span.len)
            .ok_or_else(|| {
                status!(
                    Invalid,
                    "peer range {:#x}+{:#x} lies in no device buffer it announced",
                    c.peer_addr,
                    c.span.len
                )
            })?;
        let on = if c.span.location.is_host() {
            key.location
        } else {
            c.span.location
        };
        self.span(key, on, c.peer_addr, c.span.len, busy, devices)
    }
}

/// A copy of the peer's started by this side, reported once every copy
/// before it has been.
#[derive(Debug)]
pub(crate) enum Started {
    /// Done, with this outcome.
    Done(Result<()>),
    /// Running on a device stream, from `src` to `dst` (kept to copy again
    /// when an earlier copy's failure on the same stream taints its outcome).
    Device {
        /// The copy on the stream.
        copy: crate::staging::Copy,
        /// Its source span.
        src: Span,
        /// Its destination span.
        dst: Span,
    },
}

impl Started {
    /// Whether this copy runs on a device through `[addr, addr + len)` of
    /// `loc` (an import, say).
    pub fn touches(&self, loc: Location, addr: u64, len: u64) -> bool {
        let Started::Device { src, dst, .. } = self else {
            return false;
        };
        [src, dst].iter().any(|s| {
            s.location == loc && s.addr < addr.saturating_add(len) && addr < s.addr.saturating_add(s.len)
        })
    }
}
