//! The engine-like shell of each node, modelled on te-runtime's core:
//! tasks queued per peer and handed to the link, local pins, the batch
//! table, notifications (batch ones once the batch completed).

use std::collections::{BTreeMap, VecDeque};

use te_proto::batch::{BatchSlot, BatchTable, Op, Task, TaskState};
use te_proto::link::{LinkConfig, LinkState};
use te_proto::{ErrorCode, PinKey};
use te_testkit::fabric::{ConnId, NodeId};

use super::model::{Owner, TaskKey};
use super::world::{NoteState, World};

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

fn state_of(code: ErrorCode) -> TaskState {
    match code {
        ErrorCode::Ok => TaskState::Completed,
        ErrorCode::Canceled => TaskState::Canceled,
        ErrorCode::Timeout => TaskState::Timeout,
        c => TaskState::Failed(c),
    }
}

impl World {
    /// Shell deadlines: a task still queued at its deadline ends `Timeout`.
    pub fn expire_queued(&mut self) {
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
    pub fn batch_maybe_done(&mut self, node: usize, batch: u64) {
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

    pub fn note_ends(&mut self, id: u64, state: NoteState) {
        self.notes[id as usize].state = state;
        let to = self.notes[id as usize].to;
        self.models[to].release(Owner::Note(id));
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

    /// Standalone notifications in a shell queue.
    pub fn standalone(&self, queue: &VecDeque<u64>) -> usize {
        queue
            .iter()
            .filter(|&&id| self.notes[id as usize].batch.is_none())
            .count()
    }
}
