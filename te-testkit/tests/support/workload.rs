//! The random operations of a seed's workload: registrations, batches,
//! notifications, cancels, frees, queries, closes and faults.

use std::time::Duration;

use te_proto::batch::{Op, TransferRequest};
use te_proto::endpoint::{Cancel, Request};
use te_proto::link::LinkState;
use te_proto::{status, ErrorCode, Location, Perm, Region, Span, TaskId, Unregister};
use te_testkit::fabric::NodeId;

use super::model::{ModelRegion, Owner, TaskKey};
use super::world::{key_of, InfoQuery, NoteRec, NoteState, TaskRec, World};

pub const ARENA: usize = 96 << 10;
pub const REGIONS: usize = 16;
/// Most regions a segment info query of the workload accepts: far more
/// than a node registers, so the answer is never truncated.
pub const INFO_CAP: usize = 1024;
const MAX_TASK: u64 = 24 << 10;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

impl World {
    pub fn op(&mut self, faults: bool) {
        let nodes = self.rt.len() as u64;
        let n = self.rng().below(nodes) as usize;
        let frozen = self.fab.node(NodeId(n)).is_frozen();
        let r = self.rng().below(100);
        match r {
            _ if frozen && r < 85 => {}
            0..=34 => self.batch(n),
            35..=44 => self.register(n),
            45..=52 => self.unregister(n),
            53..=60 => self.notify(n),
            61..=66 => self.cancel(n),
            67..=76 => self.free_batches(n),
            77..=84 => self.fill(n),
            85..=89 if faults => self.cut(),
            90..=93 if faults => {
                let d = ms(self.rng().range(20, 1500));
                self.log(format_args!("freeze node {n} for {d:?}"));
                self.fab.freeze(NodeId(n), d);
            }
            94..=95 if faults => self.restart(n),
            96..=97 => self.close(),
            98..=99 if !frozen => self.query(n),
            _ => {}
        }
    }

    /// A random range of node `n`: mostly inside one of its regions,
    /// sometimes anywhere in (or just outside) its memory.
    fn pick_range(&mut self, n: usize) -> (u64, u64) {
        let base = self.models[n].base;
        let len = if self.rng().chance(1, 4) {
            self.rng().range(1, 64)
        } else {
            self.rng().range(1, MAX_TASK)
        };
        let count = self.models[n].regions.len();
        match self.rng().index(count) {
            Some(i) if !self.rng().chance(1, 12) => {
                let r = self.models[n].regions[i];
                let len = len.min(r.len);
                let off = self.rng().below(r.len - len + 1);
                (r.base + off, len)
            }
            _ => {
                let start = self.rng().range(base.saturating_sub(64), base + ARENA as u64 - 1);
                let end = (start + len).min(base + ARENA as u64 + 64);
                (start, end - start)
            }
        }
    }

    /// Claims `[addr, addr + len)` of node `n` for task `k` if nothing
    /// conflicts; ranges outside memory need no claim.
    fn claim(&mut self, n: usize, addr: u64, len: u64, exclusive: bool, k: TaskKey) -> bool {
        let m = &mut self.models[n];
        if m.offsets(addr, len).is_none() {
            // Not all in memory: usable only when none of it is.
            let end = m.base + m.mem.len() as u64;
            return addr + len <= m.base || end <= addr;
        }
        if !m.free_for(addr, addr + len, exclusive) {
            return false;
        }
        m.hold(addr, addr + len, exclusive, Owner::Task(k));
        true
    }

    fn batch(&mut self, a: usize) {
        let cap = self.rng().range(1, 6) as u32;
        let id = match self.fab.node_mut(NodeId(a)).ep.alloc_batch(cap) {
            Ok(id) => id,
            Err(e) => {
                let live = self.batches.keys().filter(|b| b.0 == a).count();
                if e.code() != ErrorCode::NotReady || live == 0 {
                    self.violation(format!("node {a}: alloc({cap}) with {live} batches live: {e}"));
                }
                return;
            }
        };
        let bkey = (a, id.to_u64());
        let mut reqs = Vec::new();
        for index in 0..cap {
            let k = key_of(a, TaskId { batch: id, index });
            let nodes = self.rt.len() as u64;
            let p = loop {
                let p = self.rng().below(nodes) as usize;
                if p != a {
                    break p;
                }
            };
            let op = if self.rng().chance(1, 2) {
                Op::Read
            } else {
                Op::Write
            };
            let mut placed = None;
            for _ in 0..4 {
                let (local, len) = self.pick_range(a);
                let (remote, rlen) = self.pick_range(p);
                let len = len.min(rlen);
                let local_excl = op == Op::Read;
                if !self.claim(a, local, len, local_excl, k) {
                    continue;
                }
                if !self.claim(p, remote, len, !local_excl, k) {
                    self.models[a].release(Owner::Task(k));
                    continue;
                }
                placed = Some((local, remote, len));
                break;
            }
            let Some((local, remote, len)) = placed else { break };
            reqs.push((
                k,
                p,
                TransferRequest {
                    op,
                    local: Span::cpu(local, len),
                    segment: p as u32,
                    remote_addr: remote,
                    remote_location: None,
                },
            ));
        }
        let release = |w: &mut World, reqs: &[(TaskKey, usize, TransferRequest)]| {
            for (k, p, _) in reqs {
                w.models[a].release(Owner::Task(*k));
                w.models[*p].release(Owner::Task(*k));
            }
        };
        // The endpoint pins every local span, or none.
        let want_ok = reqs.iter().all(|(_, _, r)| {
            let end = r.local.addr + r.local.len;
            self.models[a].local_ok(r.local.addr, end)
        });
        let ereqs: Vec<Request> = reqs
            .iter()
            .map(|(_, p, r)| Request {
                op: r.op,
                local: r.local.addr,
                segment: self.rt[a].seg[*p].expect("a segment per peer"),
                remote: r.remote_addr,
                len: r.local.len,
            })
            .collect();
        let notify = self.rng().chance(1, 3);
        let now = self.now();
        let got = if reqs.is_empty() {
            None
        } else {
            let ep = &mut self.fab.node_mut(NodeId(a)).ep;
            Some(if notify {
                ep.submit_with_notify(now, id, &ereqs, None)
            } else {
                ep.submit(now, id, &ereqs, None)
            })
        };
        match &got {
            Some(Ok(())) if !want_ok => {
                return self.violation(format!(
                    "node {a}: the endpoint accepted a span the model says is not registered"
                ))
            }
            Some(Ok(())) => {}
            None => {}
            Some(Err(e)) if !want_ok && e.code() == ErrorCode::NotFound => {}
            Some(Err(e)) if notify && e.code() == ErrorCode::NotReady => {}
            Some(Err(e)) => return self.violation(format!("node {a}: submit refused: {e}")),
        }
        if !matches!(got, Some(Ok(()))) {
            release(self, &reqs);
            if let Err(e) = self.fab.node_mut(NodeId(a)).ep.free_batch(id) {
                self.violation(format!("node {a}: free of an empty batch: {e}"));
            }
            return;
        }
        let mut notes = Vec::new();
        if notify {
            let mut peers: Vec<usize> = reqs.iter().map(|(_, p, _)| *p).collect();
            peers.sort_unstable();
            peers.dedup();
            for to in peers {
                self.notes.push(NoteRec {
                    from: a,
                    to,
                    batch: Some(bkey),
                    state: NoteState::Waiting,
                    writes: Vec::new(),
                });
                notes.push((to, self.notes.len() as u64 - 1));
            }
        }
        self.batches.insert(
            bkey,
            super::world::BatchRec {
                id,
                tasks: reqs.iter().map(|(k, _, _)| *k).collect(),
                notes,
            },
        );
        let deadline = Some(now + self.rt[a].timeout);
        for (k, p, req) in reqs {
            let need = if req.op == Op::Read {
                Perm::REMOTE_READ
            } else {
                Perm::REMOTE_WRITE
            };
            let t = &self.models[p];
            let rec = TaskRec {
                id: TaskId {
                    batch: id,
                    index: k.2,
                },
                peer: p,
                req,
                deadline,
                canceled: false,
                conn: None,
                done: None,
                swept: false,
                transferred: 0,
                remote_valid: t.remote_ok(req.remote_addr, req.remote_addr + req.local.len, need),
                target_registers: t.registers,
                target_unregisters: t.unregisters,
            };
            self.log(format_args!(
                "node {a} submits {k:?}: {:?} {:#x}+{} <-> node {p} {:#x} (valid {})",
                req.op, req.local.addr, req.local.len, req.remote_addr, rec.remote_valid
            ));
            self.tasks.insert(k, rec);
            self.rt[a].queued[p].push_back(k);
        }
        self.pump(a);
        // Sometimes cancel one of them while its requests are in flight.
        if self.rng().chance(1, 4) {
            let d = Duration::from_micros(self.rng().range(0, 3000));
            self.settle(d);
            let index = self.rng().below(cap as u64) as u32;
            self.cancel_task(key_of(a, TaskId { batch: id, index }));
        }
    }

    pub fn register(&mut self, n: usize) {
        if self.models[n].regions.len() >= REGIONS - 2 {
            return;
        }
        let base = self.models[n].base;
        let len = self.rng().range(256, 16 << 10);
        let start = base + (self.rng().below(ARENA as u64 - len) & !63).max(64);
        let perm = match self.rng().below(16) {
            0 => Perm::REMOTE_READ,
            1 => Perm::REMOTE_WRITE,
            2 => Perm::LOCAL_ONLY,
            _ => Perm::REMOTE_READ_WRITE,
        };
        let overlap = self.models[n].overlaps_region(start, start + len);
        let got =
            self.fab
                .node_mut(NodeId(n))
                .ep
                .register_batch(&[Region::new(start, len, Location::Cpu, perm)]);
        self.log(format_args!(
            "node {n} registers {start:#x}+{len} {perm:?}: {got:?}"
        ));
        match (got, overlap) {
            (Ok(()), false) => {
                let m = &mut self.models[n];
                m.regions.push(ModelRegion {
                    base: start,
                    len,
                    perm,
                    draining: false,
                });
                m.registers += 1;
            }
            (Err(e), true) if e.code() == ErrorCode::Invalid => {}
            (got, _) => self.violation(format!(
                "node {n}: register {start:#x}+{len} answered {got:?}, model overlap {overlap}"
            )),
        }
    }

    fn unregister(&mut self, n: usize) {
        let live: Vec<ModelRegion> = self.models[n]
            .regions
            .iter()
            .copied()
            .filter(|r| !r.draining)
            .collect();
        let Some(i) = self.rng().index(live.len()) else {
            return;
        };
        let r = live[i];
        let held = self.models[n].held(r.base, r.base + r.len);
        let got = self.fab.node_mut(NodeId(n)).ep.unregister(Location::Cpu, r.base);
        self.log(format_args!(
            "node {n} unregisters {:#x}: {got:?} (held {held})",
            r.base
        ));
        let m = &mut self.models[n];
        m.unregisters += 1;
        match got {
            Ok(Unregister::Removed(_)) => m.regions.retain(|x| x.base != r.base),
            Ok(Unregister::Draining { .. }) if held => {
                if let Some(x) = m.regions.iter_mut().find(|x| x.base == r.base) {
                    x.draining = true;
                }
            }
            other => self.violation(format!(
                "node {n}: unregister {:#x} answered {other:?} with nothing holding it: a pin leaked",
                r.base
            )),
        }
    }

    /// A burst of 1 to 8 notifications to one peer (bursts fill the
    /// receiving link's inbox when its shell takes them late).
    fn notify(&mut self, a: usize) {
        let nodes = self.rt.len();
        let p = (a + 1 + self.rng().below(nodes as u64 - 1) as usize) % nodes;
        for _ in 0..self.rng().range(1, 8) {
            let s = self.rt[a].seg[p].expect("a segment per peer");
            match self.fab.node_mut(NodeId(a)).ep.reserve_note(s) {
                Ok(()) => {}
                Err(e) if e.code() == ErrorCode::NotReady => break,
                Err(e) => return self.violation(format!("node {a}: reserve_note refused: {e}")),
            }
            self.notes.push(NoteRec {
                from: a,
                to: p,
                batch: None,
                state: NoteState::Queued,
                writes: Vec::new(),
            });
            let id = self.notes.len() as u64 - 1;
            self.log(format_args!("node {a} notifies node {p}: note {id}"));
            self.rt[a].notes[p].push_back(id);
            self.pump(a);
        }
    }

    fn cancel(&mut self, a: usize) {
        let pending: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(k, r)| k.0 == a && r.done.is_none())
            .map(|(k, _)| *k)
            .collect();
        if let Some(i) = self.rng().index(pending.len()) {
            self.cancel_task(pending[i]);
        }
    }

    /// Cancels task `k` if it is still running.
    fn cancel_task(&mut self, k: TaskKey) {
        let a = k.0;
        if self.tasks.get(&k).is_none_or(|r| r.done.is_some()) {
            return;
        }
        self.log(format_args!("node {a} cancels {k:?}"));
        let rec = self.tasks.get_mut(&k).expect("running task");
        rec.canceled = true;
        let (id, conn) = (rec.id, rec.conn);
        match self.fab.node_mut(NodeId(a)).ep.cancel_task(id) {
            Ok(Cancel::Ended) => {}
            Ok(Cancel::OnLink { .. }) => {
                let Some(c) = conn else {
                    return self.violation(format!(
                        "task {k:?}: the endpoint says it is on a link, model: queued"
                    ));
                };
                if let Some((link, _)) = self.fab.link_mut(c, NodeId(a)) {
                    link.cancel(id);
                    let mut reports = std::mem::take(&mut self.reports);
                    self.fab.drain(c, NodeId(a), &mut reports);
                    self.reports = reports;
                }
            }
            Err(e) => return self.violation(format!("task {k:?}: cancel refused: {e}")),
        }
        self.pump(a);
    }

    fn free_batches(&mut self, a: usize) {
        let mine: Vec<(usize, u64)> = self.batches.keys().filter(|b| b.0 == a).copied().collect();
        for b in mine {
            let pending = self.batches[&b]
                .tasks
                .iter()
                .any(|k| self.tasks[k].done.is_none());
            if pending && !self.rng().chance(1, 5) {
                continue;
            }
            let id = self.batches[&b].id;
            let got = self.fab.node_mut(NodeId(a)).ep.free_batch(id);
            match (&got, pending) {
                (Ok(()), false) => {
                    self.log(format_args!("node {a} frees batch {:#x}", b.1));
                    self.batches.remove(&b);
                }
                (Err(e), true) if e.code() == ErrorCode::NotReady => {}
                _ => self.violation(format!(
                    "node {a}: free of batch {b:?} (pending {pending}): {got:?}"
                )),
            }
        }
    }

    /// The application writes fresh bytes into memory nothing holds.
    fn fill(&mut self, n: usize) {
        let base = self.models[n].base;
        let len = self.rng().range(1, 512);
        let start = base + self.rng().below(ARENA as u64 - len);
        if self.models[n].held(start, start + len) {
            return;
        }
        let mut bytes = vec![0u8; len as usize];
        self.rng().fill(&mut bytes);
        if let Some(m) = self.fab.node_mut(NodeId(n)).arena.get_mut(Span::cpu(start, len)) {
            m.copy_from_slice(&bytes);
        }
        self.log(format_args!("node {n} writes {len} bytes at {start:#x}"));
        let vals: Vec<Option<u8>> = bytes.into_iter().map(Some).collect();
        self.models[n].set(start, &vals);
    }

    /// Asks a peer, over this node's connection to it, for its regions.
    fn query(&mut self, a: usize) {
        let nodes = self.rt.len();
        let p = (a + 1 + self.rng().below(nodes as u64 - 1) as usize) % nodes;
        let Some(c) = self.rt[a].out[p] else {
            return;
        };
        let Some((link, _)) = self.fab.link_mut(c, NodeId(a)) else {
            return;
        };
        if link.state() == LinkState::Closed {
            return;
        }
        let got = link.query_segment_info(INFO_CAP);
        self.log(format_args!(
            "node {a} asks node {p} for its regions on conn {}: {got:?}",
            c.0
        ));
        match got {
            Ok(()) => {
                let m = &self.models[p];
                let q = InfoQuery {
                    node: a,
                    peer: p,
                    registers: m.registers,
                    unregisters: m.unregisters,
                    pages: Vec::new(),
                };
                self.queries.insert(c, q);
            }
            Err(e) if e.code() == ErrorCode::NotReady && self.queries.contains_key(&c) => {}
            Err(e) => self.violation(format!("node {a}: segment info query refused: {e}")),
        }
        let mut reports = std::mem::take(&mut self.reports);
        self.fab.drain(c, NodeId(a), &mut reports);
        self.reports = reports;
    }

    /// One side of a random connection says goodbye.
    fn close(&mut self) {
        let live: Vec<_> = self.fab.live_conns().collect();
        let Some(i) = self.rng().index(live.len()) else {
            return;
        };
        let (a, b) = self.fab.nodes_of(live[i]);
        let n = if self.rng().chance(1, 2) { a } else { b };
        if self.fab.node(n).is_frozen() {
            return;
        }
        self.log(format_args!("node {} closes conn {}", n.0, live[i].0));
        let mut reports = std::mem::take(&mut self.reports);
        self.fab.close(live[i], n, &mut reports);
        self.reports = reports;
        self.handle_reports();
    }

    fn cut(&mut self) {
        let live: Vec<_> = self.fab.live_conns().collect();
        let Some(i) = self.rng().index(live.len()) else {
            return;
        };
        self.log(format_args!("cut conn {}", live[i].0));
        let mut reports = std::mem::take(&mut self.reports);
        self.fab.cut(live[i], &mut reports);
        self.reports = reports;
        self.handle_reports();
    }

    /// Node `n` restarts: its connections reset, its queued work fails,
    /// and half the time it comes back with an empty registry.
    fn restart(&mut self, n: usize) {
        let reset = self.rng().chance(1, 2);
        self.log(format_args!("restart node {n} (reset registry {reset})"));
        // The process goes: its queued work fails, its queued
        // notification bytes are lost.
        for p in 0..self.rt.len() {
            for k in self.rt[n].queued[p].clone() {
                if let Some(r) = self.tasks.get_mut(&k) {
                    r.swept = true;
                }
            }
            while let Some(id) = self.rt[n].notes[p].pop_front() {
                self.note_ends(id, NoteState::Lost);
                if let Some(s) = self.rt[n].seg[p] {
                    self.fab.node_mut(NodeId(n)).ep.note_sent(s);
                }
            }
        }
        let why = status!(Disconnected, "node {n} restarted");
        self.fab.node_mut(NodeId(n)).ep.fail_queued(&why);
        self.sync(n);
        let mut reports = std::mem::take(&mut self.reports);
        self.fab.restart(NodeId(n), &mut reports);
        self.reports = reports;
        self.handle_reports();
        if reset {
            let left = self.fab.node(NodeId(n)).ep.tasks_in_flight();
            if left != 0 {
                return self.violation(format!("node {n}: {left} tasks still in flight after restart"));
            }
            // A process that registers anew: everything it had goes.
            let bases: Vec<u64> = self.models[n].regions.iter().map(|r| r.base).collect();
            for base in bases {
                match self.fab.node_mut(NodeId(n)).ep.unregister(Location::Cpu, base) {
                    Ok(Unregister::Removed(_)) => {}
                    other => {
                        return self.violation(format!(
                            "node {n}: unregister {base:#x} after restart answered {other:?}"
                        ))
                    }
                }
            }
            let m = &mut self.models[n];
            m.regions.clear();
            m.unregisters += 1;
        }
    }
}
