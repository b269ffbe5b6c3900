//! Each node's runtime: what te-runtime's core does around its
//! `te_proto::Endpoint`, with the fabric in place of sockets. The rules
//! (queues, deadlines, pins, batch ends, path choice, notification bounds)
//! are the endpoint's; this file only drains it: `Service` events connect
//! and feed a segment's link, `BatchEnded` events queue a batch's
//! notification bytes for every segment it touched, link events go through
//! `handle_link_event`, and a link's end goes to `link_closed`.

use std::collections::VecDeque;
use std::time::Duration;

use te_proto::batch::{Op, TaskState};
use te_proto::endpoint::{self, NoteOutcome, SegmentId};
use te_proto::link::{LinkConfig, LinkState};
use te_proto::{BatchId, ErrorCode};
use te_testkit::fabric::{ConnId, NodeId};

use super::model::{Owner, TaskKey};
use super::world::{NoteState, World};

/// Notifications waiting for one segment (standalone and batch ones
/// together): the endpoint's `max_notifications`.
pub const NOTE_QUEUE: u32 = 8;

/// The runtime of one node: its link settings and, per peer, the segment
/// it opened, its connection and the notification bytes it queued.
pub struct Runtime {
    pub cfg: LinkConfig,
    /// The endpoint's transfer timeout.
    pub timeout: Duration,
    /// The segment this node opened for each peer (`None` for itself).
    pub seg: Vec<Option<SegmentId>>,
    /// The connection this node opened to each peer.
    pub out: Vec<Option<ConnId>>,
    /// Notification bytes per peer waiting for room on the link.
    pub notes: Vec<VecDeque<u64>>,
    /// The endpoint asked for a link to this peer (`Event::Service`).
    pub wanted: Vec<bool>,
    /// What the model expects in the endpoint's queue per peer, in order.
    pub queued: Vec<VecDeque<TaskKey>>,
}

/// The code a task state stands for.
pub fn code_of_state(s: TaskState) -> ErrorCode {
    match s {
        TaskState::Completed => ErrorCode::Ok,
        TaskState::Canceled => ErrorCode::Canceled,
        TaskState::Timeout => ErrorCode::Timeout,
        TaskState::Failed(c) => c,
        TaskState::Pending | TaskState::Initial => ErrorCode::Ok,
    }
}

impl World {
    /// The peer that node `n`'s segment `s` stands for.
    pub fn peer_of(&self, n: usize, s: SegmentId) -> Option<usize> {
        self.rt[n].seg.iter().position(|x| *x == Some(s))
    }

    /// The segment of node `n` whose link is its end of `conn`, if `n`
    /// opened that connection.
    pub fn seg_of_conn(&self, n: usize, conn: ConnId) -> Option<(usize, SegmentId)> {
        let p = self.rt[n].out.iter().position(|c| *c == Some(conn))?;
        Some((p, self.rt[n].seg[p]?))
    }

    /// Takes every end of a task of node `n` that the endpoint decided by
    /// itself (a deadline in the queue, a cancel of a queued task, a queue
    /// failed with its link, a link refusing a task): such a task never
    /// reached a link, and only a deadline, a cancel or its link's end
    /// explains it.
    pub fn sync(&mut self, n: usize) {
        let running: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(k, r)| k.0 == n && r.done.is_none())
            .map(|(k, _)| *k)
            .collect();
        for k in running {
            let rec = &self.tasks[&k];
            let st = match self.fab.node(NodeId(n)).ep.task_status(rec.id) {
                Ok(st) => st,
                Err(e) => return self.violation(format!("task {k:?}: endpoint lost it: {e}")),
            };
            if st.state == TaskState::Pending {
                continue;
            }
            let code = code_of_state(st.state);
            let why = match code {
                _ if rec.conn.is_some() => Some("a task on a link ended without its TaskDone"),
                ErrorCode::Timeout if rec.deadline.is_some_and(|d| self.now() >= d) => None,
                ErrorCode::Canceled if rec.canceled || rec.swept => None,
                ErrorCode::Disconnected | ErrorCode::Timeout if rec.swept => None,
                _ => Some("no deadline, cancel or link end explains it"),
            };
            self.log(format_args!("task {k:?} ended in the endpoint: {code:?}"));
            if let Some(why) = why {
                let e = self.fab.node(NodeId(n)).ep.batch_error(rec.id.batch).cloned();
                return self.violation(format!(
                    "task {k:?} ended {code:?} in the endpoint: {why} ({e:?})"
                ));
            }
            self.task_ended(k, code);
        }
    }

    /// The model's side of task `k` ending with `code`: expected memory,
    /// holds, quarantine, the batch's notification data.
    pub fn task_ended(&mut self, k: TaskKey, code: ErrorCode) {
        let node = k.0;
        let Some(rec) = self.tasks.get_mut(&k) else { return };
        rec.done = Some(code);
        let (peer, req, conn) = (rec.peer, rec.req, rec.conn);
        self.rt[node].queued[peer].retain(|q| *q != k);
        let len = req.local.len;
        let (local, remote) = (req.local.addr, req.remote_addr);
        self.models[node].release(Owner::Task(k));
        self.models[peer].release(Owner::Task(k));
        let live = conn.filter(|&c| self.fab.live_conns().any(|l| l == c));
        let note = self
            .batches
            .get(&(node, k.1))
            .and_then(|b| b.notes.iter().find(|(p, _)| *p == peer).map(|(_, id)| *id));
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
    }

    /// The endpoint says a batch ended: its notification goes to every
    /// segment the batch touched, or is dropped.
    fn batch_ended(&mut self, n: usize, batch: BatchId, state: TaskState, note: NoteOutcome) {
        let Some(b) = self.batches.get(&(n, batch.to_u64())) else {
            return;
        };
        let left: Vec<TaskKey> = b
            .tasks
            .iter()
            .copied()
            .filter(|k| self.tasks[k].done.is_none())
            .collect();
        if !left.is_empty() {
            return self.violation(format!(
                "node {n}: batch {batch} ended {state:?} with {left:?} running"
            ));
        }
        let all_ok = b.tasks.iter().all(|k| self.tasks[k].done == Some(ErrorCode::Ok));
        let notes = b.notes.clone();
        let want = match (notes.is_empty(), all_ok) {
            (true, _) => NoteOutcome::None,
            (false, true) => NoteOutcome::Send,
            (false, false) => NoteOutcome::Dropped,
        };
        if note != want {
            return self.violation(format!(
                "node {n}: batch {batch} ended with note {note:?}, model {want:?}"
            ));
        }
        let mut to = Vec::new();
        let _ = self
            .fab
            .node_mut(NodeId(n))
            .ep
            .batch_segments(batch, |s| to.push(s));
        let mut to: Vec<usize> = to.into_iter().filter_map(|s| self.peer_of(n, s)).collect();
        to.sort_unstable();
        let mut peers: Vec<usize> = notes.iter().map(|(p, _)| *p).collect();
        peers.sort_unstable();
        if note != NoteOutcome::None && to != peers {
            return self.violation(format!(
                "node {n}: batch {batch} touched segments of {to:?}, model {peers:?}"
            ));
        }
        for (p, id) in notes {
            if self.notes[id as usize].state != NoteState::Waiting {
                continue;
            }
            if note == NoteOutcome::Send {
                self.notes[id as usize].state = NoteState::Queued;
                self.rt[n].notes[p].push_back(id);
            } else {
                self.note_ends(id, NoteState::Dropped);
            }
        }
    }

    pub fn note_ends(&mut self, id: u64, state: NoteState) {
        self.notes[id as usize].state = state;
        let to = self.notes[id as usize].to;
        self.models[to].release(Owner::Note(id));
    }

    /// Node `n`'s link to peer `p` ended (or will carry nothing more): as
    /// te-runtime's `drop_conn`, the notification bytes queued for it are
    /// lost and the endpoint fails the segment's queue.
    pub fn link_gone(&mut self, n: usize, p: usize) {
        self.rt[n].out[p] = None;
        let lost: Vec<u64> = self.rt[n].notes[p].drain(..).collect();
        for &id in &lost {
            self.note_ends(id, NoteState::Lost);
        }
        for k in self.rt[n].queued[p].clone() {
            if let Some(r) = self.tasks.get_mut(&k) {
                r.swept = true;
            }
        }
        if let Some(s) = self.rt[n].seg[p] {
            self.fab.node_mut(NodeId(n)).ep.link_closed(s, lost.len() as u32);
        }
        self.sync(n);
    }

    /// Drains node `n`'s endpoint as te-runtime's `after_work` does and
    /// hands queued notifications and tasks to its links, connecting where
    /// the endpoint asked for a link.
    pub fn pump(&mut self, n: usize) {
        if self.fab.node(NodeId(n)).is_frozen() || self.failed() {
            return;
        }
        for _ in 0..16 {
            self.sync(n);
            let mut any = false;
            while let Some(e) = self.fab.node_mut(NodeId(n)).ep.poll_event() {
                any = true;
                match e {
                    endpoint::Event::Service(s) => match self.peer_of(n, s) {
                        Some(p) => self.rt[n].wanted[p] = true,
                        None => self.violation(format!("node {n}: service of unknown segment {s:?}")),
                    },
                    endpoint::Event::BatchEnded { batch, state, note } => {
                        self.batch_ended(n, batch, state, note)
                    }
                }
            }
            for p in 0..self.rt.len() {
                any |= self.serve(n, p);
            }
            if !any || self.failed() {
                return;
            }
        }
    }

    /// Connects node `n` to peer `p` if asked, sends its queued
    /// notifications and feeds the endpoint's queue to the link. Whether
    /// anything moved.
    fn serve(&mut self, n: usize, p: usize) -> bool {
        let Some(s) = self.rt[n].seg[p] else { return false };
        let usable = |c: &ConnId| {
            self.fab.is_open(*c, NodeId(n))
                && self
                    .fab
                    .link(*c, NodeId(n))
                    .is_some_and(|l| l.state() != LinkState::Closed)
        };
        let want = std::mem::take(&mut self.rt[n].wanted[p]) || !self.rt[n].notes[p].is_empty();
        let c = match self.rt[n].out[p].filter(usable) {
            Some(c) => c,
            None if want => {
                if self.rt[n].out[p].is_some() {
                    // Closed, its event still to come: the link is gone for us.
                    self.link_gone(n, p);
                }
                let (a, b) = (self.rt[n].cfg.clone(), self.rt[p].cfg.clone());
                match self.fab.connect(NodeId(n), NodeId(p), a, b) {
                    Ok(c) => {
                        self.log(format_args!("node {n} connects to {p}: conn {}", c.0));
                        self.rt[n].out[p] = Some(c);
                        if let Err(e) = self.fab.node_mut(NodeId(n)).ep.link_up(s) {
                            self.violation(format!("node {n}: link_up refused: {e}"));
                        }
                        c
                    }
                    Err(e) => {
                        self.violation(format!("connect refused: {e}"));
                        return false;
                    }
                }
            }
            None => return false,
        };
        let Some((link, ep)) = self.fab.link_mut(c, NodeId(n)) else {
            return false;
        };
        let mut sent = Vec::new();
        let mut broken = None;
        while let Some(&id) = self.rt[n].notes[p].front() {
            match link.send_notification("sim", &id.to_le_bytes()) {
                Ok(()) => {
                    self.rt[n].notes[p].pop_front();
                    ep.note_sent(s);
                    sent.push(id);
                }
                Err(e) if e.code() == ErrorCode::NotReady => break,
                Err(e) => {
                    broken = Some(format!("send_notification on an open link: {e}"));
                    break;
                }
            }
        }
        let fed = ep.feed(s, link, &mut ());
        for id in &sent {
            self.notes[*id as usize].state = NoteState::OnLink(c);
        }
        if let Some(what) = broken {
            self.violation(what);
            return false;
        }
        // What the link refused ended in the endpoint; the next `fed`
        // tasks of the queue are on the link now, in order.
        self.sync(n);
        for _ in 0..fed {
            match self.rt[n].queued[p].pop_front() {
                Some(k) => {
                    if let Some(r) = self.tasks.get_mut(&k) {
                        r.conn = Some(c);
                    }
                }
                None => {
                    self.violation(format!(
                        "node {n}: the endpoint fed more tasks to {p} than were queued"
                    ));
                    return false;
                }
            }
        }
        let mut reports = std::mem::take(&mut self.reports);
        self.fab.drain(c, NodeId(n), &mut reports);
        self.reports.append(&mut reports);
        fed > 0 || !sent.is_empty()
    }
}
