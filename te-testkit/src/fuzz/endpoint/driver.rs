//! The driver: one [`Endpoint`] over small heap tables, its segments' link
//! pairs, the bytes between them, and each [`Op`] applied as the runtime
//! would (te-runtime's `after_work`, `pump`, `drop_conn`, `on_link_event`).

use core::time::Duration;

use te_proto::batch::{BatchId, Op as Dir, TaskId, TaskState, TransferRequest};
use te_proto::endpoint::{Cancel, EndpointConfig, Event, Heap, Parts, Path, Request, SegmentId};
use te_proto::link::{self, Link, LinkConfig, PayloadDest};
use te_proto::wire::MAX_CONTROL_LEN;
use te_proto::{Endpoint, Entry, ErrorCode, Instant, Location, Perm, Region, Registry, Span, Status};

use super::model::{fail, MBatch, MTask, Model, Place};
use super::script::{Op, Req};

/// Our side's region candidates: more than the table holds.
const LOCAL: [(u64, u64, Perm); 4] = [
    (0x10000, 0x4000, Perm::REMOTE_READ_WRITE),
    (0x20000, 0x2000, Perm::LOCAL_ONLY),
    (0x30000, 0x1000, Perm::REMOTE_READ),
    (0x40000, 0x8000, Perm::REMOTE_READ_WRITE),
];
/// Region slots of the endpoint's registry.
const REGION_SLOTS: usize = 3;
/// Batch and task slots, and the most notifications per segment.
const BATCHES: usize = 3;
const TASKS: usize = 6;
const MAX_NOTES: u32 = 2;
/// The peers' memory.
const PEER_RW: (u64, u64) = (0x1000, 0x8000);
const PEER_RO: (u64, u64) = (0x100000, 0x1000);
const TIMEOUT: Duration = Duration::from_secs(1);

type Reg = Registry<Box<[Entry]>>;

/// One connection: our link, the peer's link and registry, the bytes in
/// flight each way.
struct Conn {
    ours: Link,
    peer: Link,
    peer_reg: Reg,
    /// Bytes from us to the peer, not yet delivered.
    up: Vec<u8>,
    /// Bytes from the peer to us.
    down: Vec<u8>,
    ours_sending: bool,
    peer_sending: bool,
    peer_tasks: u32,
}

/// The endpoint, its connections and the model.
pub struct World {
    ep: Endpoint<Heap>,
    conns: Vec<Option<Conn>>,
    model: Model,
    now: Instant,
    /// Nonces of new links, counted.
    links_made: u8,
    /// Notifications sent on batch ends, and batch ends seen (for traces).
    pub stats: (u32, u32),
}

/// Whether `span` lies inside one region of `reg` (draining ones included).
fn inside(reg: &Reg, span: Span) -> bool {
    let Some(end) = span.end() else { return false };
    reg.regions().any(|r| {
        r.span.location == span.location && r.span.addr <= span.addr && r.span.end().is_some_and(|e| end <= e)
    })
}

impl World {
    /// A world with `segments` open segments and no link.
    pub fn new(segments: usize) -> World {
        let cfg = EndpointConfig {
            transfer_timeout: TIMEOUT,
            max_notifications: MAX_NOTES,
            ..EndpointConfig::default()
        };
        let parts = Parts::with_capacity(REGION_SLOTS, BATCHES, TASKS, segments);
        let mut ep = Endpoint::new(cfg, parts).expect("endpoint over matching tables");
        for s in 0..segments {
            let id = ep
                .open_segment(&format!("peer:{s}"))
                .expect("a free segment slot");
            assert_eq!(id, SegmentId(s as u32));
        }
        if ep.open_segment("one too many").is_ok() {
            fail("a segment opened beyond the table");
        }
        World {
            ep,
            conns: (0..segments).map(|_| None).collect(),
            model: Model::new(segments),
            now: Instant::ZERO,
            links_made: 0,
            stats: (0, 0),
        }
    }

    fn nseg(&self) -> u32 {
        self.conns.len() as u32
    }

    fn seg(&self, s: u8) -> u32 {
        u32::from(s) % self.nseg()
    }

    /// Applies one op, then checks the model.
    pub fn step(&mut self, op: &Op) {
        match op {
            Op::Register(r) => self.register(*r),
            Op::Unregister(r) => {
                let (base, _, _) = LOCAL[*r as usize % LOCAL.len()];
                let res = self.ep.unregister(Location::Cpu, base);
                if self.model.finalizing && !res.as_ref().is_err_and(|e| e.code() == ErrorCode::NotReady) {
                    fail(format!("unregister after finalize: {res:?}"));
                }
            }
            Op::Alloc(cap) => {
                let res = self.ep.alloc_batch(u32::from(*cap % 8));
                match res {
                    Ok(id) => {
                        if self.model.finalizing {
                            fail("alloc after finalize");
                        }
                        self.model.batches.push(MBatch {
                            id,
                            capacity: u32::from(*cap % 8),
                            tasks: Vec::new(),
                            noted: false,
                            note_settled: false,
                            end_due: false,
                            first_failure: None,
                            reported_error: None,
                            held: false,
                        });
                    }
                    Err(e) => {
                        let cap = usize::from(*cap % 8);
                        if (1..=TASKS).contains(&cap)
                            && !self.model.finalizing
                            && self.model.batches.is_empty()
                        {
                            fail(format!("alloc({cap}) refused in an empty table: {e}"));
                        }
                    }
                }
            }
            Op::Free(b) => self.free(*b),
            Op::Submit {
                b,
                notify,
                path,
                reqs,
            } => self.submit(*b, *notify, *path, reqs),
            Op::Cancel(b, i) => self.cancel(*b, *i),
            Op::Hold(b) => self.hold(*b),
            Op::Release { b, fail } => self.release(*b, *fail),
            Op::Feed(s) => {
                let s = self.seg(*s);
                self.feed(s);
            }
            Op::Connect(s) => self.connect(self.seg(*s)),
            Op::Pump { s, rounds, hold } => {
                let s = self.seg(*s);
                for _ in 0..(*rounds % 16) + 1 {
                    self.pump(s, *hold);
                }
            }
            Op::Deliver { s, to_peer, n } => {
                let s = self.seg(*s);
                self.deliver(s, *to_peer, usize::from(*n));
                self.drain_links(s);
            }
            Op::Inject { s, to_peer, bytes } => {
                let s = self.seg(*s);
                if let Some(c) = self.conns[s as usize].as_mut() {
                    if *to_peer { &mut c.up } else { &mut c.down }.extend_from_slice(bytes);
                }
            }
            Op::Drop(s) => self.drop_conn(self.seg(*s)),
            Op::LinkFailed(s) => {
                let s = self.seg(*s);
                if self.conns[s as usize].is_none() {
                    let queued: Vec<TaskId> = self.model.queues[s as usize].iter().copied().collect();
                    let why = Status::new(ErrorCode::Disconnected, "connect refused");
                    self.ep.link_failed(SegmentId(s), why);
                    self.model.scan(&self.ep);
                    self.expect_ended(&queued, TaskState::Failed(ErrorCode::Disconnected), "link_failed");
                }
            }
            Op::Close(s) => {
                let s = self.seg(*s);
                if let Some(c) = self.conns[s as usize].as_mut() {
                    c.ours.close(self.ep.registry_mut());
                }
                self.drain_links(s);
            }
            Op::Advance(n) => {
                self.now = self.now + Duration::from_millis(8 * u64::from(*n));
                let now = self.now;
                for s in 0..self.nseg() {
                    if let Some(c) = self.conns[s as usize].as_mut() {
                        if c.ours.poll_timeout().is_some_and(|t| t <= now) {
                            c.ours.handle_timeout(now, self.ep.registry_mut());
                        }
                        if c.peer.poll_timeout().is_some_and(|t| t <= now) {
                            c.peer.handle_timeout(now, &mut c.peer_reg);
                        }
                    }
                    self.drain_links(s);
                }
                self.ep_timeout();
            }
            Op::EpTimeout => self.ep_timeout(),
            Op::Finalize => {
                self.ep.begin_finalize();
                self.model.finalizing = true;
            }
            Op::FailQueued => {
                let queued: Vec<TaskId> = self.model.queues.iter().flatten().copied().collect();
                self.ep
                    .fail_queued(&Status::new(ErrorCode::Canceled, "finalized"));
                self.model.scan(&self.ep);
                self.expect_ended(&queued, TaskState::Canceled, "fail_queued");
            }
            Op::ReserveNote(s) => {
                let s = self.seg(*s);
                let room = !self.model.finalizing && self.model.notes[s as usize] < MAX_NOTES;
                match (self.ep.reserve_note(SegmentId(s)), room) {
                    (Ok(()), true) => {
                        self.model.notes[s as usize] += 1;
                        self.model.notes_queued[s as usize] += 1;
                    }
                    (Err(e), false) if e.code() == ErrorCode::NotReady => {}
                    (res, _) => fail(format!(
                        "reserve_note on segment {s} with {} counted: {res:?}",
                        self.model.notes[s as usize]
                    )),
                }
            }
            Op::SendNotes(s) => self.send_notes(self.seg(*s)),
            Op::PollEvents => self.poll_events(),
            Op::PeerSubmit {
                s,
                write,
                region,
                len,
            } => {
                let s = self.seg(*s);
                if let Some(c) = self.conns[s as usize].as_mut() {
                    let (base, _, _) = LOCAL[*region as usize % LOCAL.len()];
                    let req = TransferRequest {
                        op: if *write { Dir::Write } else { Dir::Read },
                        local: Span::cpu(
                            PEER_RW.0 + u64::from(*region & 0xf0) * 64,
                            u64::from(*len % 0x3000),
                        ),
                        segment: 0,
                        remote_addr: base + u64::from(*len >> 12) * 0x100,
                        remote_location: None,
                    };
                    let task = TaskId {
                        batch: BatchId::from_u64(0x7777_0000 + u64::from(s)),
                        index: c.peer_tasks,
                    };
                    if c.peer.submit(task, &req, None).is_ok() {
                        c.peer_tasks += 1;
                    }
                }
            }
        }
        self.model.scan(&self.ep);
    }

    fn register(&mut self, r: u8) {
        let (base, len, perm) = LOCAL[r as usize % LOCAL.len()];
        let res = self
            .ep
            .register_batch(&[Region::new(base, len, Location::Cpu, perm)]);
        if self.model.finalizing && res.is_ok() {
            fail("register after finalize");
        }
    }

    /// The batch an op's byte names: a live one, or a stale one (bit 7).
    fn pick_batch(&self, b: u8) -> Option<BatchId> {
        if b & 0x80 != 0 && !self.model.stale.is_empty() {
            let st = &self.model.stale;
            return Some(st[b as usize % st.len()]);
        }
        let live = &self.model.batches;
        (!live.is_empty()).then(|| live[b as usize % live.len()].id)
    }

    fn free(&mut self, b: u8) {
        let Some(id) = self.pick_batch(b) else { return };
        let res = self.ep.free_batch(id);
        let Some(at) = self.model.batches.iter().position(|x| x.id == id) else {
            if res.is_ok() {
                fail(format!("freed stale batch {id}"));
            }
            return;
        };
        let mb = &self.model.batches[at];
        match res {
            Ok(()) => {
                if mb.pending() > 0 {
                    fail(format!("freed batch {id} with pending tasks"));
                }
                // A notification that was to be sent and was never
                // reported goes with its batch: its room comes back.
                if mb.noted && mb.end_due && mb.state() == TaskState::Completed {
                    for s in mb.segments() {
                        self.model.notes[s as usize] -= 1;
                    }
                }
                self.model.batches.remove(at);
                self.model.stale.push(id);
            }
            Err(e) => {
                if mb.pending() == 0 {
                    fail(format!("free of batch {id} without pending tasks: {e}"));
                }
            }
        }
    }

    fn submit(&mut self, b: u8, notify: bool, path: u8, reqs: &[Req]) {
        let Some(batch) = self.pick_batch(b) else { return };
        let nseg = self.nseg();
        let requests: Vec<Request> = reqs
            .iter()
            .map(|r| {
                let (base, _, _) = LOCAL[r.local as usize % LOCAL.len()];
                let remote = match r.remote >> 6 {
                    0 | 1 => PEER_RW.0 + u64::from(r.remote & 0x7f) * 0x100,
                    2 => PEER_RO.0 + u64::from(r.remote & 0x3f) * 0x40,
                    _ => u64::from(r.remote) << 40,
                };
                Request {
                    op: if r.write { Dir::Write } else { Dir::Read },
                    local: base + u64::from(r.offset) * 0x40,
                    segment: SegmentId(u32::from(r.seg) % (nseg + 1)),
                    remote,
                    len: u64::from(r.len % 0x3000),
                }
            })
            .collect();
        let path = match path % 4 {
            0 | 3 => None,
            1 => Some(Path::Tcp),
            _ => Some(Path::Shm),
        };
        let before = self.ep.tasks_in_flight();
        let total_before = self.ep.batch_status(batch).map(|s| s.total);
        let res = if notify {
            self.ep.submit_with_notify(self.now, batch, &requests, path)
        } else {
            self.ep.submit(self.now, batch, &requests, path)
        };
        let live = self.model.batches.iter().position(|x| x.id == batch);
        // The segments a notification would count at.
        let touched = |m: &Model| -> Vec<u32> {
            let mut v: Vec<u32> = live
                .map(|i| m.batches[i].tasks.iter().map(|t| t.seg).collect())
                .unwrap_or_default();
            v.extend(requests.iter().map(|r| r.segment.0).filter(|&s| s < nseg));
            v.sort_unstable();
            v.dedup();
            v
        };
        let full = touched(&self.model)
            .iter()
            .any(|&s| self.model.notes[s as usize] >= MAX_NOTES);
        match res {
            Ok(()) => {
                let Some(i) = live else {
                    fail(format!("submit into stale batch {batch}"))
                };
                let mb = &self.model.batches[i];
                if self.model.finalizing
                    || mb.noted
                    || requests.is_empty()
                    || requests.iter().any(|r| r.len == 0 || r.segment.0 >= nseg)
                    || mb.tasks.len() + requests.len() > mb.capacity as usize
                    || (notify && full)
                {
                    fail(format!(
                        "submit {requests:?} into {batch} accepted: it should not be"
                    ));
                }
                let segs = touched(&self.model);
                let deadline = self.now + TIMEOUT;
                let mb = &mut self.model.batches[i];
                let base = mb.tasks.len() as u32;
                for (k, r) in requests.iter().enumerate() {
                    mb.tasks.push(MTask {
                        seg: r.segment.0,
                        end: None,
                        place: Place::Queued(deadline),
                    });
                    self.model.queues[r.segment.0 as usize].push_back(TaskId {
                        batch,
                        index: base + k as u32,
                    });
                }
                if notify {
                    mb.noted = true;
                    for s in segs {
                        self.model.notes[s as usize] += 1;
                    }
                }
                self.model.pending += requests.len();
            }
            Err(e) => {
                if self.ep.tasks_in_flight() != before
                    || self.ep.batch_status(batch).map(|s| s.total) != total_before
                {
                    fail(format!("submit failed ({e}) and still changed the batch"));
                }
                if notify
                    && e.code() == ErrorCode::NotReady
                    && !self.model.finalizing
                    && live.is_some()
                    && !full
                {
                    fail(format!("submit_with_notify refused for room with room left: {e}"));
                }
            }
        }
    }

    fn cancel(&mut self, b: u8, i: u8) {
        let Some(batch) = self.pick_batch(b) else { return };
        let n = self
            .model
            .batches
            .iter()
            .find(|x| x.id == batch)
            .map_or(1, |x| x.tasks.len().max(1));
        let task = TaskId {
            batch,
            index: u32::from(i) % (n as u32 + 1),
        };
        let res = self.ep.cancel_task(task);
        let Some(mt) = self.model.task(task).cloned() else {
            if res.is_ok() {
                fail(format!("cancel of unknown task {task}: {res:?}"));
            }
            return;
        };
        match (res, mt.end, mt.place) {
            (Ok(Cancel::Ended), Some(_), _) => {}
            (Ok(Cancel::Ended), None, Place::Queued(_)) => {
                self.model.scan(&self.ep);
                self.expect_ended(&[task], TaskState::Canceled, "cancel of a queued task");
            }
            (Ok(Cancel::OnLink { segment, local }), None, Place::OnLink) => {
                if segment.0 != mt.seg || self.ep.batch_status(batch).is_err() || local.len == 0 {
                    fail(format!(
                        "cancel of {task} names segment {} and {local:?}",
                        segment.0
                    ));
                }
                if let Some(c) = self.conns[mt.seg as usize].as_mut() {
                    c.ours.cancel(task);
                }
            }
            (res, end, place) => fail(format!("cancel of {task} ({end:?}, {place:?}): {res:?}")),
        }
    }

    fn hold(&mut self, b: u8) {
        let Some(id) = self.pick_batch(b) else { return };
        let res = self.ep.hold(id);
        match (self.model.batch(id), res) {
            (Some(mb), Ok(())) => mb.held = true,
            (None, Err(_)) => {}
            (Some(_), Err(e)) => fail(format!("hold of live batch {id}: {e}")),
            (None, Ok(())) => fail(format!("held stale batch {id}")),
        }
    }

    fn release(&mut self, b: u8, failed: bool) {
        let Some(id) = self.pick_batch(b) else { return };
        let outcome = match failed {
            true => Err(Status::new(ErrorCode::RuntimeError, "fence failed")),
            false => Ok(()),
        };
        let res = self.ep.release(id, outcome);
        let Some(mb) = self.model.batch(id) else {
            if res.is_ok() {
                fail(format!("released stale batch {id}"));
            }
            return;
        };
        if let Err(e) = res {
            fail(format!("release of live batch {id}: {e}"));
        }
        let was_held = std::mem::take(&mut mb.held);
        if !(was_held && failed) {
            return;
        }
        let queued: Vec<TaskId> = mb
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.end.is_none() && matches!(t.place, Place::Queued(_)))
            .map(|(i, _)| TaskId {
                batch: id,
                index: i as u32,
            })
            .collect();
        self.model.scan(&self.ep);
        self.expect_ended(
            &queued,
            TaskState::Failed(ErrorCode::RuntimeError),
            "release with an error",
        );
    }

    /// Every task of `ids` now ended in `state`.
    fn expect_ended(&self, ids: &[TaskId], state: TaskState, what: &str) {
        for &t in ids {
            match self.model.task(t).and_then(|m| m.end) {
                Some(s) if s == state => {}
                other => fail(format!("after {what}, queued {t} is {other:?}, not {state:?}")),
            }
        }
    }

    fn ep_timeout(&mut self) {
        let now = self.now;
        let due: Vec<TaskId> = self
            .model
            .batches
            .iter()
            .flat_map(|b| {
                b.tasks
                    .iter()
                    .enumerate()
                    .filter_map(move |(i, t)| match (t.end, t.place) {
                        (None, Place::Queued(d)) if d <= now => Some(TaskId {
                            batch: b.id,
                            index: i as u32,
                        }),
                        _ => None,
                    })
            })
            .collect();
        let pending = self.model.pending;
        self.ep.handle_timeout(now);
        self.model.scan(&self.ep);
        self.expect_ended(&due, TaskState::Timeout, "handle_timeout");
        if pending - self.model.pending != due.len() {
            fail("handle_timeout ended tasks whose deadline had not passed");
        }
    }

    fn connect(&mut self, s: u32) {
        if self.conns[s as usize].is_some() {
            return;
        }
        self.links_made = self.links_made.wrapping_add(1);
        let mut ours_cfg = LinkConfig::new("ep:1").expect("a valid name");
        ours_cfg.max_payload = 4096;
        ours_cfg.max_outstanding = 2;
        let mut peer_cfg = LinkConfig::new(&format!("peer:{s}")).expect("a valid name");
        peer_cfg.max_payload = 4096;
        peer_cfg.max_outstanding = 2;
        let ours = Link::connect(ours_cfg, self.now, [self.links_made; 32]).expect("a valid config");
        let peer = Link::accept(peer_cfg, self.now, [!self.links_made; 32]).expect("a valid config");
        let mut peer_reg: Reg = Registry::new(vec![Entry::EMPTY; 2].into_boxed_slice());
        peer_reg
            .register(Region::new(
                PEER_RW.0,
                PEER_RW.1,
                Location::Cpu,
                Perm::REMOTE_READ_WRITE,
            ))
            .expect("peer region");
        peer_reg
            .register(Region::new(
                PEER_RO.0,
                PEER_RO.1,
                Location::Cpu,
                Perm::REMOTE_READ,
            ))
            .expect("peer region");
        self.conns[s as usize] = Some(Conn {
            ours,
            peer,
            peer_reg,
            up: Vec::new(),
            down: Vec::new(),
            ours_sending: false,
            peer_sending: false,
            peer_tasks: 0,
        });
        if let Err(e) = self.ep.link_up(SegmentId(s)) {
            fail(format!("link_up of open segment {s}: {e}"));
        }
    }

    fn feed(&mut self, s: u32) {
        let Some(c) = self.conns[s as usize].as_mut() else {
            return;
        };
        let fed = self.ep.feed(SegmentId(s), &mut c.ours, &mut ());
        self.model.take_ends(&self.ep);
        self.model.fed(s, fed);
        self.model.scan(&self.ep);
    }

    /// What te-runtime's `pump` does, then frames both ways.
    fn pump(&mut self, s: u32, hold: bool) {
        self.send_notes(s);
        self.feed(s);
        let now = self.now;
        let Some(c) = self.conns[s as usize].as_mut() else {
            return;
        };
        let mut buf = vec![0u8; MAX_CONTROL_LEN];
        // Ours to the peer.
        if c.ours_sending && !hold {
            c.ours.payload_sent(self.ep.registry_mut());
            c.ours_sending = false;
        }
        while !c.ours_sending {
            let Some(t) = c.ours.poll_transmit(now, &mut buf, self.ep.registry()) else {
                break;
            };
            c.up.extend_from_slice(&buf[..t.len]);
            if let Some(p) = t.payload {
                if !inside(self.ep.registry(), p) {
                    fail(format!("our link sends {p:?}, outside registered memory"));
                }
                c.up.resize(c.up.len() + p.len as usize, 0xa5);
                c.ours_sending = true;
                if !hold {
                    c.ours.payload_sent(self.ep.registry_mut());
                    c.ours_sending = false;
                }
            }
        }
        // The peer to us.
        if c.peer_sending && !hold {
            c.peer.payload_sent(&mut c.peer_reg);
            c.peer_sending = false;
        }
        while !c.peer_sending {
            let Some(t) = c.peer.poll_transmit(now, &mut buf, &c.peer_reg) else {
                break;
            };
            c.down.extend_from_slice(&buf[..t.len]);
            if let Some(p) = t.payload {
                if !inside(&c.peer_reg, p) {
                    fail(format!("peer link sends {p:?}, outside its memory"));
                }
                c.down.resize(c.down.len() + p.len as usize, 0x5a);
                c.peer_sending = true;
                if !hold {
                    c.peer.payload_sent(&mut c.peer_reg);
                    c.peer_sending = false;
                }
            }
        }
        self.deliver(s, true, usize::MAX);
        self.deliver(s, false, usize::MAX);
        self.drain_links(s);
    }

    /// Up to `budget` queued bytes go to one side, payloads where the link
    /// says they belong.
    fn deliver(&mut self, s: u32, to_peer: bool, mut budget: usize) {
        let now = self.now;
        let Some(c) = self.conns[s as usize].as_mut() else {
            return;
        };
        let (link, reg, stream) = if to_peer {
            (&mut c.peer, &mut c.peer_reg, &mut c.up)
        } else {
            (&mut c.ours, self.ep.registry_mut(), &mut c.down)
        };
        let mut at = 0;
        for _ in 0..10_000 {
            if budget == 0 || at == stream.len() {
                break;
            }
            let left = (stream.len() - at).min(budget);
            let n = match link.poll_payload() {
                Some(PayloadDest::Memory(span)) => {
                    if !inside(reg, span) {
                        fail(format!("a payload lands at {span:?}, outside registered memory"));
                    }
                    let n = left.min(span.len as usize);
                    link.payload_landed(now, n as u64, reg);
                    n
                }
                Some(PayloadDest::Discard(k)) => {
                    let n = left.min(k as usize);
                    link.payload_landed(now, n as u64, reg);
                    n
                }
                None => link.handle_input(now, &stream[at..at + left], reg),
            };
            if n == 0 {
                // Stalled behind notifications nobody took: take them
                // (as the runtime does), once.
                if link.take_notification().is_none() {
                    break;
                }
                while link.take_notification().is_some() {}
                continue;
            }
            at += n;
            budget -= n;
        }
        stream.drain(..at);
    }

    /// Every event of both links of segment `s`: ours through the endpoint
    /// (`on_link_event`), the peer's taken and dropped.
    fn drain_links(&mut self, s: u32) {
        let Some(c) = self.conns[s as usize].as_mut() else {
            return;
        };
        for _ in 0..1000 {
            let Some(e) = c.ours.poll_event() else { break };
            match self.ep.handle_link_event(Some(SegmentId(s)), e) {
                None => {}
                Some(link::Event::Notification) => while c.ours.take_notification().is_some() {},
                Some(link::Event::SegmentInfo) => {
                    let _ = c.ours.take_segment_info();
                }
                Some(link::Event::Progress { .. } | link::Event::TaskDone { .. }) => {
                    fail("the endpoint handed back a task event")
                }
                Some(_) => {}
            }
        }
        for _ in 0..1000 {
            let Some(e) = c.peer.poll_event() else { break };
            if e == link::Event::Notification {
                while c.peer.take_notification().is_some() {}
            }
        }
        self.model.scan(&self.ep);
    }

    fn send_notes(&mut self, s: u32) {
        let Some(c) = self.conns[s as usize].as_mut() else {
            return;
        };
        while self.model.notes_queued[s as usize] > 0 {
            if c.ours.send_notification("n", b"done").is_err() {
                break;
            }
            self.model.notes_queued[s as usize] -= 1;
            self.model.notes[s as usize] -= 1;
            self.ep.note_sent(SegmentId(s));
        }
    }

    /// What te-runtime's `drop_conn` does.
    fn drop_conn(&mut self, s: u32) {
        let Some(mut c) = self.conns[s as usize].take() else {
            return;
        };
        c.ours.handle_disconnect(self.ep.registry_mut());
        c.peer.handle_disconnect(&mut c.peer_reg);
        let mut events = Vec::new();
        while let Some(e) = c.ours.poll_event() {
            events.push(e);
        }
        for e in events {
            let _ = self.ep.handle_link_event(Some(SegmentId(s)), e);
        }
        if c.ours.tasks_in_flight() != 0 {
            fail("a disconnected link still carries tasks");
        }
        let lost = core::mem::take(&mut self.model.notes_queued[s as usize]);
        self.model.notes[s as usize] -= lost;
        self.ep.link_closed(SegmentId(s), lost);
        self.model.scan(&self.ep);
        for b in &self.model.batches {
            if b.tasks.iter().any(|t| t.seg == s && t.end.is_none()) {
                fail(format!(
                    "segment {s}'s link is gone and batch {} still has a task there",
                    b.id
                ));
            }
        }
    }

    /// What te-runtime's `after_work` does with the endpoint's events.
    fn poll_events(&mut self) {
        for _ in 0..100 {
            let Some(e) = self.ep.poll_event() else { return };
            match e {
                Event::Service(id) => {
                    if id.0 >= self.nseg() {
                        fail(format!("service of segment {} never opened", id.0));
                    }
                    self.feed(id.0);
                }
                Event::BatchEnded { batch, state, note } => {
                    self.stats.1 += 1;
                    self.stats.0 += u32::from(note == te_proto::endpoint::NoteOutcome::Send);
                    for s in self.model.batch_ended(batch, state, note) {
                        self.model.notes_queued[s as usize] += 1;
                        let mut listed = false;
                        let _ = self.ep.batch_segments(batch, |x| listed |= x.0 == s);
                        if !listed {
                            fail(format!(
                                "batch {batch} touched segment {s}: batch_segments misses it"
                            ));
                        }
                    }
                }
            }
            self.model.scan(&self.ep);
        }
        fail("poll_event does not run dry");
    }

    /// Ends the run: every link goes, every queued task fails, every event
    /// is taken; then nothing may be left in flight, pinned or counted.
    pub fn finish(&mut self) {
        for s in 0..self.nseg() {
            self.drop_conn(s);
            self.poll_events();
            let queued = !self.model.queues[s as usize].is_empty();
            if queued {
                self.ep
                    .link_failed(SegmentId(s), Status::new(ErrorCode::Disconnected, "gone"));
                self.model.scan(&self.ep);
            }
        }
        self.poll_events();
        if self.ep.tasks_in_flight() != 0 || self.model.pending != 0 {
            fail("tasks in flight after every link went");
        }
        for b in &self.model.batches {
            if b.end_due {
                fail(format!("batch {} ended and it was never reported", b.id));
            }
        }
        for s in 0..self.nseg() {
            // Notifications the runtime queued go with the links: none is
            // left to send.
            let q = core::mem::take(&mut self.model.notes_queued[s as usize]);
            for _ in 0..q {
                self.ep.note_sent(SegmentId(s));
            }
            self.model.notes[s as usize] -= q;
            if self.model.notes[s as usize] != 0 {
                fail(format!(
                    "segment {s}: model counts {} notes at the end",
                    self.model.notes[s as usize]
                ));
            }
            if !self.model.finalizing {
                for i in 0..=MAX_NOTES {
                    let res = self.ep.reserve_note(SegmentId(s));
                    if res.is_ok() != (i < MAX_NOTES) {
                        fail(format!(
                            "segment {s}: reserve {i} of {MAX_NOTES} at the end: {res:?}"
                        ));
                    }
                }
                for _ in 0..MAX_NOTES {
                    self.ep.note_sent(SegmentId(s));
                }
            }
        }
        for r in self.ep.registry().regions() {
            let pins = self.ep.registry().pins(r.span.location, r.span.addr);
            if pins != Some(0) {
                fail(format!(
                    "region {:#x} still pinned {pins:?} with nothing in flight",
                    r.span.addr
                ));
            }
        }
        // Nothing in flight: every batch frees.
        for b in core::mem::take(&mut self.model.batches) {
            if let Err(e) = self.ep.free_batch(b.id) {
                fail(format!("batch {} does not free at the end: {e}", b.id));
            }
        }
    }
}
