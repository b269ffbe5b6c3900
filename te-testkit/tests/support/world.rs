//! The simulated world: the fabric (whose nodes hold the real
//! endpoints), one runtime per node, the reference
//! model and the records of tasks, batches and notifications; and the loop
//! that steps the fabric and hands every report to the checks.

use std::collections::BTreeMap;
use std::time::Duration;

use te_proto::batch::TransferRequest;
use te_proto::{BatchId, ErrorCode, Instant, TaskId};
use te_testkit::fabric::{ConnId, Fabric, NodeId, Report};
use te_testkit::rng::SimRng;

use super::model::{NodeModel, TaskKey};
use super::runtime::Runtime;

pub struct TaskRec {
    pub id: TaskId,
    pub peer: usize,
    pub req: TransferRequest,
    pub deadline: Option<Instant>,
    pub canceled: bool,
    pub conn: Option<ConnId>,
    pub done: Option<ErrorCode>,
    /// It was in the endpoint's queue when its segment's link ended.
    pub swept: bool,
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
    /// In the runtime's queue of notification bytes.
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
    pub tasks: Vec<TaskKey>,
    /// Its notification, one record per peer it touched.
    pub notes: Vec<(usize, u64)>,
}

/// A segment info query waiting for its answer.
pub struct InfoQuery {
    pub node: usize,
    pub peer: usize,
    /// The peer's registration counters when it was asked.
    pub registers: u64,
    pub unregisters: u64,
    /// The regions of the pages before, when the link pages.
    pub pages: Vec<(u64, u64, te_proto::Perm)>,
}

pub struct World {
    /// Segment info queries by connection (a link has one at a time).
    pub queries: BTreeMap<ConnId, InfoQuery>,
    /// Segment info answers: failed, arrived, compared with the model.
    pub infos: [u64; 3],
    pub fab: Fabric,
    pub rt: Vec<Runtime>,
    pub models: Vec<NodeModel>,
    pub tasks: BTreeMap<TaskKey, TaskRec>,
    pub batches: BTreeMap<(usize, u64), BatchRec>,
    pub notes: Vec<NoteRec>,
    pub reports: Vec<Report>,
    pub trace: bool,
    pub steps: u64,
}

pub fn key_of(node: usize, id: TaskId) -> TaskKey {
    (node, id.batch.to_u64(), id.index)
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
            let eps = (0..self.rt.len())
                .filter(|&n| !self.fab.node(NodeId(n)).is_frozen())
                .filter_map(|n| self.fab.node(NodeId(n)).ep.poll_timeout());
            let (w, last) = match self.fab.next_wakeup().into_iter().chain(eps).min() {
                Some(w) if w <= t => (w, false),
                _ => (t, true),
            };
            self.fab.advance_to(w);
            // Time passing may thaw a node with work queued, or pass a
            // queued task's deadline.
            let now = self.now();
            for n in 0..self.rt.len() {
                if !self.fab.node(NodeId(n)).is_frozen() {
                    self.fab.node_mut(NodeId(n)).ep.handle_timeout(now);
                }
            }
            self.handle_reports();
            if last {
                return;
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
        for n in 0..self.rt.len() {
            self.pump(n);
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
