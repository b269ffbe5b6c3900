//! The endpoint and the links it is lent: feeding queued tasks, taking the
//! links' reports, a link's coming and going.

use crate::error::{Result, Status};
use crate::link::{self, Link, LocalKey, LocalMap};
use crate::region::Span;
use crate::registry::PinKey;
use crate::status;

use super::{Endpoint, Offers, Path, Route, SegmentId, Storage};

/// Why a link whose RDMA exchange succeeded carries no RDMA transfer: the
/// shell has not connected its queue pair to the peer's, or the queue pair
/// failed since.
pub const RDMA_NOT_CONNECTED: &str =
    "queue pairs exchanged but not connected on this link (not yet, or its queue pair failed: the log says why)";

/// Why a link has no RDMA when this side set no [`Caps::RDMA`](crate::link::Caps::RDMA).
pub const RDMA_NOT_HERE: &str = "this side has no RDMA device in use (its log and `te info` say why)";

/// Why a task whose link has RDMA does not take it: its local region is
/// not registered with this side's NIC.
pub const RDMA_LOCAL_UNREGISTERED: &str = "the task's local region is not registered with this side's NIC";

/// What the endpoint asks of the runtime about one link while it feeds it.
pub trait Feed {
    /// Why the link has no same-host path, when it has none: named in the
    /// error of a task forced onto that path.
    fn same_host_refusal(&self) -> Option<&str> {
        None
    }

    /// The announcement of the engine-owned buffer holding the region
    /// `pin`, for a peer that maps buffers; `None` for memory the peer
    /// cannot map.
    fn local_map(&mut self, pin: PinKey) -> Option<LocalMap> {
        let _ = pin;
        None
    }

    /// Announcing buffer `map` failed: the peer copies with its fallback.
    fn announce_failed(&mut self, map: LocalMap, why: Status) {
        let _ = (map, why);
    }

    /// The announcement of device region `region` (pinned as `pin`) with
    /// an IPC key exported to the peer's process, made at the first call
    /// for the region and link and the same afterwards; `None` when the
    /// region cannot be exported to this peer (its tasks take the link).
    fn local_key(&mut self, pin: PinKey, region: Span) -> Option<LocalKey> {
        let _ = (pin, region);
        None
    }

    /// Announcing device buffer `key` failed: its tasks take the link.
    fn announce_key_failed(&mut self, key: LocalKey, why: Status) {
        let _ = (key, why);
    }

    /// The NIC's lkey of host region `pin`, where the shell registered it
    /// with its RDMA device; `None` keeps the region's tasks off RDMA.
    fn rdma_lkey(&mut self, pin: PinKey) -> Option<u32> {
        let _ = pin;
        None
    }
}

/// A link with nothing to ask: no same-host refusal, no mapped buffers.
impl Feed for () {}

impl<S: Storage> Endpoint<S> {
    /// Hands tasks queued for segment `id` to its `link` while the link has
    /// room, each on the path [`Path::route`](super::Path::route) gives
    /// (announcing the task's engine-owned buffer first where the path is
    /// the same-host one and the buffer was not announced on this link). A
    /// task the link refuses ends with the refusal. Returns how many tasks
    /// went to the link.
    pub fn feed<L: Feed + ?Sized>(&mut self, id: SegmentId, link: &mut Link, shell: &mut L) -> usize {
        let mut fed = 0;
        let mut next = self.queue_front(id);
        while link.can_submit() {
            let Some(t) = next else {
                break;
            };
            let Some(entry) = self.tasks.as_ref().get(t as usize).copied() else {
                break;
            };
            next = (entry.next != super::NONE).then_some(entry.next);
            let task = entry.task;
            if self.is_held(task.batch) {
                continue;
            }
            self.dequeue(t);
            let Ok(req) = self.batches.request(task) else {
                debug_assert!(false, "queued {task} has no request");
                continue;
            };
            let deadline = Some(entry.deadline);
            let keyed = !req.local.location.is_host()
                && entry.path != Path::Tcp
                && link.same_host().available()
                && entry.pin.is_some_and(|p| self.key_announced(p, link, shell));
            let lkey = match entry.path {
                Path::Auto | Path::Rdma if link.rdma().available() && req.local.location.is_host() => {
                    entry.pin.and_then(|p| shell.rdma_lkey(p))
                }
                _ => None,
            };
            // Auto takes RDMA where the peer announced the remote range with
            // the permission the task needs (else TCP reaches what it may);
            // a task forced onto RDMA goes to the link's checks, which name
            // what is missing.
            let rdma = lkey.is_some()
                && (entry.path == Path::Rdma
                    || link
                        .rdma()
                        .peer_key(req.remote_addr, req.local.len)
                        .is_some_and(|k| k.perm.contains(req.op.remote_perm()))
                        && req.remote_location.is_none_or(|l| l.is_host()));
            let offers = Offers {
                same_host: link.same_host().available(),
                keyed,
                same_host_refusal: shell.same_host_refusal(),
                rdma,
                rdma_refusal: match link.rdma().refusal() {
                    _ if !link.config().caps.contains(crate::link::Caps::RDMA) => Some(RDMA_NOT_HERE),
                    Some(why) => Some(why.as_str()),
                    None if !link.rdma().available() => link.rdma().usable().then_some(RDMA_NOT_CONNECTED),
                    None => lkey.is_none().then_some(RDMA_LOCAL_UNREGISTERED),
                },
            };
            // A task that must go over RDMA, on a link whose RDMA was lost,
            // ends as a task of a lost peer does.
            let lost = link
                .rdma()
                .lost()
                .filter(|_| entry.path == Path::Rdma)
                .map(|why| status!(Disconnected, "RDMA path lost: {}", why.message()));
            let submitted = match lost {
                Some(why) => Err(why),
                None => entry.path.route(req.local.location, &offers),
            }
            .and_then(|route| match route {
                Route::Link => link.submit(task, &req, deadline),
                Route::Rdma => {
                    let lkey = lkey.ok_or_else(|| status!(NotSupported, "{RDMA_LOCAL_UNREGISTERED}"))?;
                    link.rdma_mut().submit(task, &req, deadline, lkey)
                }
                Route::SameHost => {
                    let map = entry.pin.and_then(|p| shell.local_map(p));
                    if let Some(m) = map.filter(|m| !link.same_host().local_map_announced(m.id)) {
                        if let Err(why) = link.same_host_mut().announce_local_map(m) {
                            shell.announce_failed(m, why);
                        }
                    }
                    link.same_host_mut().submit(task, &req, deadline)
                }
            });
            match submitted {
                Ok(()) => fed += 1,
                Err(e) => self.finish(task, Err(e)),
            }
        }
        fed
    }

    /// Whether device region `pin` is announced to the link's peer with an
    /// IPC key, announcing it now if the shell can export it.
    fn key_announced<L: Feed + ?Sized>(&self, pin: PinKey, link: &mut Link, shell: &mut L) -> bool {
        // A draining region is exported no more (its key was revoked).
        let Some(region) = self
            .reg
            .region(pin.location, pin.base)
            .filter(|_| !self.reg.is_draining(pin))
        else {
            return false;
        };
        let Some(key) = shell.local_key(pin, region.span) else {
            return false;
        };
        if link.same_host().local_key_announced(key.id) {
            return true;
        }
        match link.same_host_mut().announce_local_key(key) {
            Ok(()) => true,
            Err(why) => {
                shell.announce_key_failed(key, why);
                false
            }
        }
    }

    /// Takes one event of the link of segment `id` (`None` for a link the
    /// peer opened, which carries no tasks of ours): task progress and ends
    /// are the endpoint's (their state, the batch's first failure, pins and
    /// the batch's end) and are consumed; everything else is handed back
    /// for the runtime (`Closed` is also noted as the segment's last error).
    pub fn handle_link_event(&mut self, id: Option<SegmentId>, event: link::Event) -> Option<link::Event> {
        match event {
            link::Event::Progress { task, transferred } => {
                // A late report of a task that has ended is no news.
                let _ = self.batches.set_progress(task, transferred);
                None
            }
            link::Event::TaskDone { task, result } => {
                self.finish(task, result);
                None
            }
            link::Event::Closed(why) => {
                if let Some(seg) = id.and_then(|id| self.segment_mut(id).ok()) {
                    seg.last_error = Some(why.clone());
                }
                Some(link::Event::Closed(why))
            }
            other => Some(other),
        }
    }

    /// The runtime made a link to segment `id`: its last error is past.
    pub fn link_up(&mut self, id: SegmentId) -> Result<()> {
        self.segment_mut(id)?.last_error = None;
        Ok(())
    }

    /// No link to segment `id` could be made: its queued tasks end with
    /// `why`, which becomes its last error.
    pub fn link_failed(&mut self, id: SegmentId, why: Status) {
        self.fail_segment_queue(id, &why);
        if let Ok(seg) = self.segment_mut(id) {
            seg.last_error = Some(why);
        }
    }

    /// The link of segment `id` is gone, and with it `notes_lost`
    /// notifications the runtime had queued for it: its queued tasks end
    /// with the link's close reason (`Disconnected` when it gave none).
    pub fn link_closed(&mut self, id: SegmentId, notes_lost: u32) {
        let Ok(seg) = self.segment_mut(id) else { return };
        seg.notes = seg.notes.saturating_sub(notes_lost);
        let why = seg
            .last_error
            .get_or_insert_with(|| status!(Disconnected, "connection closed"))
            .clone();
        self.fail_segment_queue(id, &why);
    }
}
