//! The simulated world: a fabric, one engine-like shell per node (batch
//! table, queues, pins) and the reference model, with every invariant
//! checked as the fabric reports what happened.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use te_driver_sim::fabric::{ConnId, Fabric, NodeId, Report, SimRng};
use te_proto::batch::{BatchSlot, BatchTable, Op, Task, TaskState, TransferRequest};
use te_proto::link::{
    Event, LinkConfig, LinkState, Notification, SegmentPage, MAX_LINK_TASKS, MAX_OUTSTANDING,
};
use te_proto::{BatchId, ErrorCode, Instant, Location, Perm, PinKey, Span, TaskId};

use super::model::{NodeModel, Owner, TaskKey};

/// Standalone notifications a shell queues per peer before refusing more.
/// Batch notifications queue regardless, as in te-runtime: each needs a
/// batch that completed.
pub const NOTE_QUEUE: usize = 8;

/// The engine-like shell of one node.
pub struct Shell {
    pub batches: BatchTable<Box<[BatchSlot]>, Box<[Task]>>,
    pub cfg: LinkConfig,
    /// The connection this node opened to each peer.
    pub out: Vec<Option<ConnId>>,
    /// Tasks per peer waiting for room on the link.
    pub queued: Vec<VecDeque<TaskKey>>,
    /// Notifications per peer waiting for room on the link.
    pub notes: Vec<VecDeque<u64>>,
    pub pins: BTreeMap<TaskKey, PinKey>,
}

pub struct TaskRec {
    pub id: TaskId,
    pub peer: usize,
    pub req: TransferRequest,
    pub deadline: Option<Instant>,
    pub canceled: bool,
    pub conn: Option<ConnId>,
    pub done: Option<ErrorCode>,
    pub transferred: u64,
    /// The model's view of the remote range at submission, and the target's
    /// registration counters then.
    pub remote_valid: bool,
    pub target_registers: u64,
    pub target_unregisters: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteState {
    /// Attached to a batch still running.
    Waiting,
    /// In the shell's queue.
    Queued,
    /// Handed to the link of this connection.
    OnLink(ConnId),
    Delivered,
    /// Its connection ended before it arrived.
    Lost,
    /// Its batch did not complete, so it was never sent.
    Dropped,
}

pub struct NoteRec {
    pub from: usize,
    pub to: usize,
    pub batch: Option<(usize, u64)>,
    pub state: NoteState,
    /// For a batch note: the bytes its writes left at the receiver.
    pub writes: Vec<(u64, Vec<Option<u8>>)>,
}

pub struct BatchRec {
    pub id: BatchId,
    pub capacity: u32,
    pub tasks: Vec<TaskKey>,
    pub note: Option<u64>,
}

/// A segment info query waiting for its answer.
pub struct InfoQuery {
    pub node: usize,
    pub peer: usize,
    /// The peer's registration counters when it was asked.
    pub registers: u64,
    pub unregisters: u64,
}

pub struct World {
    /// Segment info queries by connection (a link has one at a time).
    pub queries: BTreeMap<ConnId, InfoQuery>,
    /// Segment info answers: failed, arrived, compared with the model.
    pub infos: [u64; 3],
    pub fab: Fabric,
    pub shells: Vec<Shell>,
    pub models: Vec<NodeModel>,
    pub tasks: BTreeMap<TaskKey, TaskRec>,
    pub batches: BTreeMap<(usize, u64), BatchRec>,
    pub notes: Vec<NoteRec>,
    pub reports: Vec<Report>,
    pub trace: bool,
    pub steps: u64,
}

fn code_of(r: &te_proto::Result<()>) -> ErrorCode {
    match r {
        Ok(()) => ErrorCode::Ok,
        Err(e) => e.code(),
    }
}

fn state_of(code: ErrorCode) -> TaskState {
    match code {
        ErrorCode::Ok => TaskState::Completed,
        ErrorCode::Canceled => TaskState::Canceled,
        ErrorCode::Timeout => TaskState::Timeout,
        c => TaskState::Failed(c),
    }
}

pub fn key_of(node: usize, id: TaskId) -> TaskKey {
    (node, id.batch.to_u64(), id.index)
}

/// Known bytes of `want` that `got` does not match: (offset, want, got).
fn first_mismatch(want: &[Option<u8>], got: &[u8]) -> Option<(usize, u8, u8)> {
    want.iter()
        .zip(got)
        .enumerate()
        .find_map(|(i, (w, g))| w.filter(|w| w != g).map(|w| (i, w, *g)))
}

impl World {
    pub fn rng(&mut self) -> &mut SimRng {
        self.fab.rng()
    }

    pub fn now(&self) -> Instant {
        self.fab.now()
    }

    pub fn failed(&self) -> bool {
        !self.fab.violations().is_empty()
    }

    pub fn violation(&mut self, what: String) {
        if self.trace {
            eprintln!("[{:>12}] VIOLATION {what}", self.now().as_nanos());
            for c in self.fab.live_conns() {
                eprintln!("    {}", self.fab.describe(c));
            }
        }
        self.fab.violation(what);
    }

    pub fn log(&self, what: std::fmt::Arguments<'_>) {
        if self.trace {
            eprintln!("[{:>12}] {what}", self.now().as_nanos());
        }
    }

    /// Runs the fabric until virtual time `t` (or a violation), checking
    /// after every step.
    pub fn run_until(&mut self, t: Instant) {
        while !self.failed() {
            let acted = {
                let mut reports = std::mem::take(&mut self.reports);
                let acted = self.fab.step(&mut reports);
                self.reports = reports;
                acted
            };
            if acted {
                self.steps += 1;
                self.handle_reports();
                self.check_step();
                if self.steps > 3_000_000 {
                    self.violation("more than 3 million steps: the run does not settle".into());
                }
                continue;
            }
            let (w, last) = match self.fab.next_wakeup() {
                Some(w) if w <= t => (w, false),
                _ => (t, true),
            };
            self.fab.advance_to(w);
            // Time passing may thaw a node with work queued, or pass a
            // queued task's deadline.
            self.expire_queued();
            self.handle_reports();
            if last {
                return;
            }
        }
    }

    /// Shell deadlines: a task still queued at its deadline ends `Timeout`.
    fn expire_queued(&mut self) {
        let now = self.now();
        for n in 0..self.shells.len() {
            for p in 0..self.shells.len() {
                let expired: Vec<TaskKey> = self.shells[n].queued[p]
                    .iter()
                    .copied()
                    .filter(|k| self.tasks[k].deadline.is_some_and(|d| d <= now))
                    .collect();
                for k in expired {
                    self.shells[n].queued[p].retain(|q| *q != k);
                    self.finish_task(k, ErrorCode::Timeout);
                }
            }
        }
    }

    pub fn handle_reports(&mut self) {
        let mut reports = std::mem::take(&mut self.reports);
        for r in reports.drain(..) {
            match r {
                Report::Event { conn, node, event } => self.on_event(conn, node.0, event),
                Report::Notification { conn, node, note } => self.on_note(conn, node.0, &note),
                Report::Access { node, span, landed } => self.on_access(node.0, span, landed),
                Report::Gone { conn } => self.on_gone(conn),
                Report::SegmentInfo { conn, node, page } => self.on_info(conn, node.0, &page),
            }
        }
        self.reports = reports;
        self.sync_draining();
        for n in 0..self.shells.len() {
            self.pump(n);
        }
    }

    fn on_event(&mut self, conn: ConnId, node: usize, event: Event) {
        match event {
            Event::Connected | Event::SegmentInfo => {}
            Event::Progress { task, transferred } => {
                let k = key_of(node, task);
                let Some(rec) = self.tasks.get_mut(&k) else {
                    return self.violation(format!("progress of unknown task {k:?}"));
                };
                if rec.done.is_some() || transferred < rec.transferred || transferred > rec.req.local.len {
                    let (done, before, len) = (rec.done, rec.transferred, rec.req.local.len);
                    return self.violation(format!(
                        "task {k:?}: progress {transferred} after {before} of {len} (done {done:?})"
                    ));
                }
                rec.transferred = transferred;
                if let Err(e) = self.shells[node].batches.set_progress(task, transferred) {
                    self.violation(format!("task {k:?}: batch table refused progress: {e}"));
                }
            }
            Event::TaskDone { task, result } => self.on_done(conn, node, task, &result),
            Event::Closed(why) => {
                let f = self.fab.faults(conn);
                self.log(format_args!("conn {} node {node} closed: {why}", conn.0));
                if !(f.cut || f.frozen || f.closed) {
                    self.violation(format!(
                        "link of node {node} on conn {} closed with no fault injected: {why}",
                        conn.0
                    ));
                }
            }
            Event::Notification => {}
        }
    }

    fn on_done(&mut self, conn: ConnId, node: usize, task: TaskId, result: &te_proto::Result<()>) {
        let k = key_of(node, task);
        let code = code_of(result);
        self.log(format_args!("task {k:?} done on conn {}: {result:?}", conn.0));
        let Some(rec) = self.tasks.get(&k) else {
            return self.violation(format!("TaskDone for unknown task {k:?}"));
        };
        if let Some(first) = rec.done {
            return self.violation(format!("task {k:?} ended twice: {first:?}, then {result:?}"));
        }
        if rec.conn != Some(conn) {
            return self.violation(format!(
                "task {k:?} ended on conn {} it was not submitted on",
                conn.0
            ));
        }
        let f = self.fab.faults(conn);
        let target = &self.models[rec.peer];
        let why = match code {
            ErrorCode::Ok => None,
            ErrorCode::NotAuthorized if !rec.remote_valid || target.unregisters != rec.target_unregisters => {
                None
            }
            ErrorCode::Disconnected if f.cut || f.frozen || f.closed => None,
            ErrorCode::Timeout if f.frozen || rec.deadline.is_some_and(|d| self.now() >= d) => None,
            ErrorCode::Canceled if rec.canceled || f.closed => None,
            _ => Some("no fault, deadline, cancel or bad range explains it"),
        };
        if let Some(why) = why {
            return self.violation(format!("task {k:?} ended {result:?}: {why} (faults {f:?})"));
        }
        if code == ErrorCode::Ok {
            if !rec.remote_valid && target.registers == rec.target_registers {
                return self.violation(format!(
                    "task {k:?} completed on remote {:#x}+{} that was never valid for it",
                    rec.req.remote_addr, rec.req.local.len
                ));
            }
            self.check_bytes(k);
        }
        self.finish_task(k, code);
    }

    /// A completed task moved exactly the expected bytes.
    fn check_bytes(&mut self, k: TaskKey) {
        let rec = &self.tasks[&k];
        let (node, peer, len) = (k.0, rec.peer, rec.req.local.len);
        let (local, remote) = (rec.req.local.addr, rec.req.remote_addr);
        let (src_node, src, dst_node, dst) = match rec.req.op {
            Op::Write => (node, local, peer, remote),
            Op::Read => (peer, remote, node, local),
        };
        let want = self.models[src_node].expected(src, len);
        let got = self.fab.node(NodeId(dst_node)).arena.get(Span::cpu(dst, len));
        let bad = match (want, got) {
            (Some(w), Some(g)) => first_mismatch(w, g).map(|(i, w, g)| {
                format!(
                    "byte {i} at node {dst_node} {:#x} is {g:#04x}, expected {w:#04x}",
                    dst + i as u64
                )
            }),
            _ => Some("its range lies outside memory".to_string()),
        };
        if let Some(bad) = bad {
            self.violation(format!(
                "task {k:?} ({:?} of {len} bytes) completed but {bad}",
                rec.req.op
            ));
        }
    }

    /// Ends task `k` with `code` in the shell: unpin, batch table, model.
    pub fn finish_task(&mut self, k: TaskKey, code: ErrorCode) {
        let node = k.0;
        let Some(rec) = self.tasks.get_mut(&k) else { return };
        rec.done = Some(code);
        let (id, peer, req, conn) = (rec.id, rec.peer, rec.req, rec.conn);
        if let Some(pin) = self.shells[node].pins.remove(&k) {
            self.fab.node_mut(NodeId(node)).reg.unpin(pin);
        }
        match self.shells[node].batches.finish(id, state_of(code)) {
            Ok(true) => {}
            other => self.violation(format!("task {k:?}: batch table finish answered {other:?}")),
        }
        let len = req.local.len;
        let (local, remote) = (req.local.addr, req.remote_addr);
        self.models[node].release(Owner::Task(k));
        self.models[peer].release(Owner::Task(k));
        let live = conn.filter(|&c| self.fab.live_conns().any(|l| l == c));
        let note = self.batches.get(&(node, k.1)).and_then(|b| b.note);
        match (req.op, code) {
            (Op::Write, ErrorCode::Ok) => {
                let vals = self.models[node].expected(local, len).map(<[_]>::to_vec);
                if let Some(vals) = vals {
                    self.models[peer].set(remote, &vals);
                    if let Some(id) = note {
                        self.models[peer].hold(remote, remote + len, true, Owner::Note(id));
                        self.notes[id as usize].writes.push((remote, vals));
                    }
                }
            }
            (Op::Read, ErrorCode::Ok) => {
                let vals = self.models[peer].expected(remote, len).map(<[_]>::to_vec);
                if let Some(vals) = vals {
                    self.models[node].set(local, &vals);
                }
            }
            (Op::Write, _) => {
                self.models[peer].forget(remote, len);
                if let Some(c) = live {
                    self.models[peer].hold(remote, remote + len, true, Owner::Quarantine(c));
                }
            }
            (Op::Read, _) => {
                self.models[node].forget(local, len);
                if let Some(c) = live {
                    self.models[peer].hold(remote, remote + len, false, Owner::Quarantine(c));
                }
            }
        }
        self.batch_maybe_done(node, k.1);
    }

    /// Once every task of a batch ended, its notification goes (all
    /// completed) or is dropped.
    fn batch_maybe_done(&mut self, node: usize, batch: u64) {
        let Some(b) = self.batches.get(&(node, batch)) else {
            return;
        };
        if b.tasks.iter().any(|k| self.tasks[k].done.is_none()) {
            return;
        }
        let Some(id) = b.note else { return };
        if self.notes[id as usize].state != NoteState::Waiting {
            return;
        }
        let all_ok = b.tasks.iter().all(|k| self.tasks[k].done == Some(ErrorCode::Ok));
        let to = self.notes[id as usize].to;
        if all_ok {
            self.notes[id as usize].state = NoteState::Queued;
            self.shells[node].notes[to].push_back(id);
        } else {
            self.note_ends(id, NoteState::Dropped);
        }
    }

    fn note_ends(&mut self, id: u64, state: NoteState) {
        self.notes[id as usize].state = state;
        let to = self.notes[id as usize].to;
        self.models[to].release(Owner::Note(id));
    }

    fn on_note(&mut self, conn: ConnId, node: usize, note: &Notification) {
        let Ok(raw) = <[u8; 8]>::try_from(&note.msg[..]) else {
            return self.violation(format!(
                "node {node} got a notification it cannot parse: {note:?}"
            ));
        };
        let id = u64::from_le_bytes(raw);
        self.log(format_args!("node {node} got note {id} on conn {}", conn.0));
        let Some(rec) = self.notes.get(id as usize) else {
            return self.violation(format!("node {node} got notification {id} nobody sent"));
        };
        let (a, b) = self.fab.nodes_of(conn);
        let from = if a.0 == node { b.0 } else { a.0 };
        if rec.state != NoteState::OnLink(conn) || rec.to != node || rec.from != from {
            return self.violation(format!(
                "notification {id} arrived at node {node} from {from} on conn {} in state {:?} (sent {} -> {})",
                conn.0, rec.state, rec.from, rec.to
            ));
        }
        let arena = &self.fab.node(NodeId(node)).arena;
        let bad = rec.writes.iter().find_map(|(addr, want)| {
            let got = arena.get(Span::cpu(*addr, want.len() as u64))?;
            first_mismatch(want, got).map(|(i, w, g)| (addr + i as u64, w, g))
        });
        if let Some((at, w, g)) = bad {
            return self.violation(format!(
                "notification {id} of batch {:?} arrived before its data: {at:#x} is {g:#04x}, expected {w:#04x}",
                rec.batch
            ));
        }
        self.note_ends(id, NoteState::Delivered);
    }

    fn on_access(&mut self, node: usize, span: Span, landed: bool) {
        let (start, end) = (span.addr, span.addr + span.len);
        let m = &self.models[node];
        let what = if landed { "landed in" } else { "sent from" };
        if !m.registered(start, end) {
            return self.violation(format!(
                "payload {what} node {node} {start:#x}..{end:#x}: not registered (or unregistered)"
            ));
        }
        if !m.covered(start, end, landed) {
            self.violation(format!(
                "payload {what} node {node} {start:#x}..{end:#x}: no running transfer holds it"
            ));
        }
    }

    /// A segment info answer: one per query; when the peer's regions did
    /// not change meanwhile, exactly its remotely visible regions, in order.
    fn on_info(&mut self, conn: ConnId, node: usize, page: &te_proto::Result<SegmentPage>) {
        let Some(q) = self.queries.remove(&conn).filter(|q| q.node == node) else {
            return self.violation(format!(
                "node {node} got segment info on conn {} it did not ask",
                conn.0
            ));
        };
        let f = self.fab.faults(conn);
        let page = match page {
            Ok(page) => page,
            Err(e) if f.cut || f.frozen || f.closed => {
                self.infos[0] += 1;
                return self.log(format_args!("segment info: {e}"));
            }
            Err(e) => return self.violation(format!("segment info query failed with no fault: {e}")),
        };
        let got: Vec<(u64, u64, Perm)> = page
            .regions
            .iter()
            .map(|r| (r.span.addr, r.span.len, r.perm))
            .collect();
        let sorted = got.windows(2).all(|w| w[0].0 < w[1].0);
        if !sorted || page.more || got.iter().any(|r| r.2.is_empty()) {
            return self.violation(format!("segment info of node {} malformed: {got:x?}", q.peer));
        }
        self.infos[1] += 1;
        let m = &self.models[q.peer];
        if m.registers == q.registers && m.unregisters == q.unregisters {
            self.infos[2] += 1;
            let mut want: Vec<(u64, u64, Perm)> = m
                .regions
                .iter()
                .filter(|r| !r.draining && !r.perm.is_empty())
                .map(|r| (r.base, r.len, r.perm))
                .collect();
            want.sort_by_key(|r| r.0);
            if got != want {
                self.violation(format!(
                    "segment info of node {}: {got:x?}, model {want:x?}",
                    q.peer
                ));
            }
        }
    }

    fn on_gone(&mut self, conn: ConnId) {
        if self.queries.contains_key(&conn) {
            self.violation(format!("segment info query on conn {} never answered", conn.0));
        }
        self.log(format_args!("conn {} gone", conn.0));
        for m in &mut self.models {
            m.release(Owner::Quarantine(conn));
        }
        let f = self.fab.faults(conn);
        for id in 0..self.notes.len() {
            if self.notes[id].state == NoteState::OnLink(conn) {
                if !(f.cut || f.frozen || f.closed) {
                    self.violation(format!(
                        "notification {id} lost on conn {} without a fault",
                        conn.0
                    ));
                }
                self.note_ends(id as u64, NoteState::Lost);
            }
        }
        for s in &mut self.shells {
            for o in &mut s.out {
                if *o == Some(conn) {
                    *o = None;
                }
            }
        }
    }

    /// Draining regions leave the model when the registry drops them.
    fn sync_draining(&mut self) {
        for n in 0..self.models.len() {
            if !self.models[n].regions.iter().any(|r| r.draining) {
                continue;
            }
            let reg = &self.fab.node(NodeId(n)).reg;
            self.models[n]
                .regions
                .retain(|r| !r.draining || reg.pins(Location::Cpu, r.base).is_some());
        }
    }

    /// Hands queued notifications and tasks of node `n` to its links,
    /// opening connections as needed.
    pub fn pump(&mut self, n: usize) {
        if self.fab.node(NodeId(n)).is_frozen() {
            return;
        }
        for p in 0..self.shells.len() {
            if self.shells[n].queued[p].is_empty() && self.shells[n].notes[p].is_empty() {
                continue;
            }
            let usable = |c: &ConnId| {
                self.fab.is_open(*c, NodeId(n))
                    && self
                        .fab
                        .link(*c, NodeId(n))
                        .is_some_and(|l| l.state() != LinkState::Closed)
            };
            let c = match self.shells[n].out[p].filter(usable) {
                Some(c) => c,
                None => {
                    let (a, b) = (self.shells[n].cfg.clone(), self.shells[p].cfg.clone());
                    match self.fab.connect(NodeId(n), NodeId(p), a, b) {
                        Ok(c) => {
                            self.log(format_args!("node {n} connects to {p}: conn {}", c.0));
                            self.shells[n].out[p] = Some(c);
                            c
                        }
                        Err(e) => return self.violation(format!("connect refused: {e}")),
                    }
                }
            };
            let mut broken = None;
            let Some((link, _)) = self.fab.link_mut(c, NodeId(n)) else {
                continue;
            };
            while let Some(&id) = self.shells[n].notes[p].front() {
                match link.send_notification("sim", &id.to_le_bytes()) {
                    Ok(()) => {
                        self.shells[n].notes[p].pop_front();
                        self.notes[id as usize].state = NoteState::OnLink(c);
                    }
                    Err(e) if e.code() == ErrorCode::NotReady => break,
                    Err(e) => {
                        broken = Some(format!("send_notification on an open link: {e}"));
                        break;
                    }
                }
            }
            while link.can_submit() {
                let Some(k) = self.shells[n].queued[p].pop_front() else {
                    break;
                };
                let rec = self.tasks.get_mut(&k).expect("queued tasks are known");
                match link.submit(rec.id, &rec.req, rec.deadline) {
                    Ok(()) => rec.conn = Some(c),
                    Err(e) => {
                        broken = Some(format!("submit of {k:?} on an open link with room: {e}"));
                        break;
                    }
                }
            }
            if let Some(what) = broken {
                return self.violation(what);
            }
            let mut reports = std::mem::take(&mut self.reports);
            self.fab.drain(c, NodeId(n), &mut reports);
            self.reports.append(&mut reports);
        }
    }

    /// Bounds that must hold after every step.
    fn check_step(&mut self) {
        let live: Vec<ConnId> = self.fab.live_conns().collect();
        for c in live {
            let (a, b) = self.fab.nodes_of(c);
            for (me, peer) in [(a, b), (b, a)] {
                let Some(link) = self.fab.link(c, me) else {
                    continue;
                };
                if !self.fab.is_open(c, me) {
                    continue;
                }
                let window = (self.shells[peer.0].cfg.max_outstanding as usize).min(MAX_OUTSTANDING);
                let req = link.requests_in_flight();
                if req > window {
                    self.violation(format!(
                        "conn {} node {}: {req} requests in flight, window {window}",
                        c.0, me.0
                    ));
                }
            }
        }
        for n in 0..self.shells.len() {
            if self.shells[n]
                .notes
                .iter()
                .any(|q| self.standalone(q) > NOTE_QUEUE)
            {
                let what = format!("node {n}: more than {NOTE_QUEUE} notifications queued for a peer");
                self.fab.violation(what);
            }
        }
    }

    /// Standalone notifications in a shell queue.
    pub fn standalone(&self, queue: &VecDeque<u64>) -> usize {
        queue
            .iter()
            .filter(|&&id| self.notes[id as usize].batch.is_none())
            .count()
    }

    /// The batch table holds exactly the batches the model has, and no
    /// link carries more tasks than it may.
    pub fn check_batch_table(&mut self) {
        let live: Vec<ConnId> = self.fab.live_conns().collect();
        for c in live {
            let (a, b) = self.fab.nodes_of(c);
            for n in [a, b] {
                let tasks = self.fab.link(c, n).map_or(0, |l| l.tasks_in_flight());
                if tasks > MAX_LINK_TASKS {
                    self.violation(format!("conn {} node {}: {tasks} tasks on the link", c.0, n.0));
                }
            }
        }
        for n in 0..self.shells.len() {
            let (b, t) = self
                .batches
                .iter()
                .filter(|((node, _), _)| *node == n)
                .fold((0, 0), |(b, t), (_, r)| (b + 1, t + r.capacity as usize));
            let table = &self.shells[n].batches;
            if table.batches_in_use() != b || table.tasks_in_use() != t {
                let got = (table.batches_in_use(), table.tasks_in_use());
                self.violation(format!(
                    "node {n}: batch table holds {got:?} batches/task slots, model {:?}",
                    (b, t)
                ));
            }
        }
    }

    /// What has not ended yet, for the final check.
    pub fn unfinished(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, r)| r.done.is_none())
            .map(|(k, r)| format!("task {k:?} on conn {:?}", r.conn.map(|c| c.0)))
            .collect();
        for c in self.queries.keys() {
            out.push(format!("segment info query on conn {}", c.0));
        }
        for (id, n) in self.notes.iter().enumerate() {
            if matches!(
                n.state,
                NoteState::Waiting | NoteState::Queued | NoteState::OnLink(_)
            ) {
                out.push(format!("notification {id} {:?}", n.state));
            }
        }
        out
    }

    pub fn settle(&mut self, d: Duration) {
        let t = self.now() + d;
        self.run_until(t);
    }
}
