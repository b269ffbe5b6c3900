//! The invariants: what every report from the fabric, and every step, must
//! satisfy against the model.

use te_proto::batch::Op;
use te_proto::link::{Event, Notification, SegmentPage, MAX_LINK_TASKS, MAX_OUTSTANDING};
use te_proto::{ErrorCode, Location, Perm, Span, TaskId};
use te_testkit::fabric::{ConnId, NodeId};

use super::model::{Owner, TaskKey};
use super::runtime::{code_of_state, NOTE_QUEUE};
use super::world::{key_of, NoteState, World};

fn code_of(r: &te_proto::Result<()>) -> ErrorCode {
    match r {
        Ok(()) => ErrorCode::Ok,
        Err(e) => e.code(),
    }
}

/// Known bytes of `want` that `got` does not match: (offset, want, got).
fn first_mismatch(want: &[Option<u8>], got: &[u8]) -> Option<(usize, u8, u8)> {
    want.iter()
        .zip(got)
        .enumerate()
        .find_map(|(i, (w, g))| w.filter(|w| w != g).map(|w| (i, w, *g)))
}

impl World {
    pub fn on_event(&mut self, conn: ConnId, node: usize, event: Event) {
        match event {
            // The simulated nodes set no Caps::RDMA.
            Event::Connected | Event::SegmentInfo | Event::Rdma => {}
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
                let seg = self.seg_of_conn(node, conn).map(|(_, s)| s);
                let ep = &mut self.fab.node_mut(NodeId(node)).ep;
                let back = ep.handle_link_event(seg, Event::Progress { task, transferred });
                let got = ep.task_status(task).map(|t| t.transferred);
                if back.is_some() || got != Ok(transferred) {
                    self.violation(format!(
                        "task {k:?}: endpoint took progress {transferred} as {got:?}, {back:?}"
                    ));
                }
            }
            Event::TaskDone { task, result } => self.on_done(conn, node, task, &result),
            Event::Closed(why) => {
                let f = self.fab.faults(conn);
                self.log(format_args!("conn {} node {node} closed: {why}", conn.0));
                if !(f.cut || f.frozen || f.closed) {
                    return self.violation(format!(
                        "link of node {node} on conn {} closed with no fault injected: {why}",
                        conn.0
                    ));
                }
                let seg = self.seg_of_conn(node, conn);
                let ep = &mut self.fab.node_mut(NodeId(node)).ep;
                if ep
                    .handle_link_event(seg.map(|(_, s)| s), Event::Closed(why))
                    .is_none()
                {
                    return self.violation(format!("node {node}: the endpoint kept a Closed event"));
                }
                if let Some((p, _)) = seg {
                    self.link_gone(node, p);
                }
            }
            Event::Notification => {}
        }
    }

    pub fn on_done(&mut self, conn: ConnId, node: usize, task: TaskId, result: &te_proto::Result<()>) {
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
        let seg = self.seg_of_conn(node, conn).map(|(_, s)| s);
        let ep = &mut self.fab.node_mut(NodeId(node)).ep;
        let back = ep.handle_link_event(
            seg,
            Event::TaskDone {
                task,
                result: result.clone(),
            },
        );
        let got = ep.task_status(task).map(|t| code_of_state(t.state));
        if back.is_some() || got != Ok(code) {
            return self.violation(format!(
                "task {k:?} done {code:?}: the endpoint says {got:?}, {back:?}"
            ));
        }
        self.task_ended(k, code);
    }

    /// A completed task moved exactly the expected bytes.
    pub fn check_bytes(&mut self, k: TaskKey) {
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

    pub fn on_note(&mut self, conn: ConnId, node: usize, note: &Notification) {
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

    pub fn on_access(&mut self, node: usize, span: Span, landed: bool) {
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
    pub fn on_info(&mut self, conn: ConnId, node: usize, page: &te_proto::Result<SegmentPage>) {
        let Some(mut q) = self.queries.remove(&conn).filter(|q| q.node == node) else {
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
        q.pages
            .extend(page.regions.iter().map(|r| (r.span.addr, r.span.len, r.perm)));
        if page.more {
            // The link asks for the next page itself.
            self.queries.insert(conn, q);
            return;
        }
        let got = std::mem::take(&mut q.pages);
        let sorted = got.windows(2).all(|w| w[0].0 < w[1].0);
        if !sorted || page.truncated || got.iter().any(|r| r.2.is_empty()) {
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

    pub fn on_gone(&mut self, conn: ConnId) {
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
        for n in 0..self.rt.len() {
            if let Some((p, _)) = self.seg_of_conn(n, conn) {
                self.link_gone(n, p);
            }
        }
    }

    /// Draining regions leave the model when the registry drops them.
    pub fn sync_draining(&mut self) {
        for n in 0..self.models.len() {
            if !self.models[n].regions.iter().any(|r| r.draining) {
                continue;
            }
            let reg = self.fab.node(NodeId(n)).reg();
            self.models[n]
                .regions
                .retain(|r| !r.draining || reg.pins(Location::Cpu, r.base).is_some());
        }
    }

    /// Bounds that must hold after every step.
    pub fn check_step(&mut self) {
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
                let window = (self.rt[peer.0].cfg.max_outstanding as usize).min(MAX_OUTSTANDING);
                let req = link.requests_in_flight();
                if req > window {
                    self.violation(format!(
                        "conn {} node {}: {req} requests in flight, window {window}",
                        c.0, me.0
                    ));
                }
            }
        }
        for n in 0..self.rt.len() {
            if self.rt[n].notes.iter().any(|q| q.len() > NOTE_QUEUE as usize) {
                let what = format!("node {n}: more than {NOTE_QUEUE} notifications queued for a peer");
                self.fab.violation(what);
            }
        }
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
        for n in 0..self.rt.len() {
            let running = self
                .tasks
                .iter()
                .filter(|(k, r)| k.0 == n && r.done.is_none())
                .count();
            let ep = &self.fab.node(NodeId(n)).ep;
            if ep.tasks_in_flight() != running {
                let got = ep.tasks_in_flight();
                self.violation(format!(
                    "node {n}: endpoint has {got} tasks in flight, model {running}"
                ));
            }
            let stale = self
                .batches
                .iter()
                .filter(|((node, _), _)| *node == n)
                .find(|(_, r)| self.fab.node(NodeId(n)).ep.batch_status(r.id).is_err())
                .map(|(b, _)| *b);
            if let Some(b) = stale {
                self.violation(format!("node {n}: the endpoint lost batch {b:?}"));
            }
        }
    }
}
