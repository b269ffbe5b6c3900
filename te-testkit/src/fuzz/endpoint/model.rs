//! The model of what the endpoint must do, and the oracle that compares
//! it with what the endpoint does, after every step.

use std::collections::VecDeque;

use te_proto::batch::{BatchId, TaskId, TaskState};
use te_proto::endpoint::{Heap, NoteOutcome, SegmentId};
use te_proto::{Endpoint, ErrorCode, Instant};

/// Where a pending task is, as far as the endpoint is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// In its segment's queue, with its deadline.
    Queued(Instant),
    /// Handed to its segment's link.
    OnLink,
}

/// One submitted task.
#[derive(Clone, Debug)]
pub struct MTask {
    /// Its segment.
    pub seg: u32,
    /// `None` while pending.
    pub end: Option<TaskState>,
    /// Where it is while pending.
    pub place: Place,
}

/// One live batch.
#[derive(Clone, Debug)]
pub struct MBatch {
    /// Its id.
    pub id: BatchId,
    /// How many tasks it holds at most.
    pub capacity: u32,
    /// Its tasks, in submission order.
    pub tasks: Vec<MTask>,
    /// It carries a notification.
    pub noted: bool,
    /// The notification's fate is settled (the batch ended).
    pub note_settled: bool,
    /// An end is to be reported by `poll_event`.
    pub end_due: bool,
    /// The codes its first failure may have (failures seen in one step).
    pub first_failure: Option<Vec<ErrorCode>>,
    /// The first failure the endpoint reported, once seen.
    pub reported_error: Option<(ErrorCode, String)>,
    /// Held: its queued tasks are not fed.
    pub held: bool,
}

impl MBatch {
    /// Its tasks not ended.
    pub fn pending(&self) -> usize {
        self.tasks.iter().filter(|t| t.end.is_none()).count()
    }

    /// The overall state the batch table must report.
    pub fn state(&self) -> TaskState {
        if self.tasks.is_empty() {
            return TaskState::Initial;
        }
        if self.pending() > 0 {
            return TaskState::Pending;
        }
        self.tasks
            .iter()
            .filter_map(|t| t.end)
            .find(|s| *s != TaskState::Completed)
            .unwrap_or(TaskState::Completed)
    }

    /// The distinct segments of its tasks.
    pub fn segments(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.tasks.iter().map(|t| t.seg).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// The whole model.
#[derive(Debug, Default)]
pub struct Model {
    /// Live batches, in allocation order.
    pub batches: Vec<MBatch>,
    /// Ids of freed batches.
    pub stale: Vec<BatchId>,
    /// Per segment: queued task ids, first in first out.
    pub queues: Vec<VecDeque<TaskId>>,
    /// Per segment: notifications counted against its room.
    pub notes: Vec<u32>,
    /// Per segment: notifications the runtime queued for its link.
    pub notes_queued: Vec<u32>,
    /// Tasks submitted and not ended.
    pub pending: usize,
    /// `begin_finalize` ran.
    pub finalizing: bool,
}

/// Fails the run with a message naming the broken rule.
#[track_caller]
pub fn fail(why: impl core::fmt::Display) -> ! {
    panic!("endpoint oracle: {why}")
}

impl Model {
    /// A model of an endpoint with `segments` open segments.
    pub fn new(segments: usize) -> Model {
        Model {
            queues: vec![VecDeque::new(); segments],
            notes: vec![0; segments],
            notes_queued: vec![0; segments],
            ..Model::default()
        }
    }

    /// The live batch `id`.
    pub fn batch(&mut self, id: BatchId) -> Option<&mut MBatch> {
        self.batches.iter_mut().find(|b| b.id == id)
    }

    /// The model task `t`.
    pub fn task(&self, t: TaskId) -> Option<&MTask> {
        self.batches
            .iter()
            .find(|b| b.id == t.batch)?
            .tasks
            .get(t.index as usize)
    }

    /// The earliest deadline of a queued task.
    pub fn earliest_deadline(&self) -> Option<Instant> {
        self.batches
            .iter()
            .flat_map(|b| &b.tasks)
            .filter(|t| t.end.is_none())
            .filter_map(|t| match t.place {
                Place::Queued(d) => Some(d),
                Place::OnLink => None,
            })
            .min()
    }

    /// The first `n` queued tasks of segment `s` not held went to its link.
    pub fn fed(&mut self, s: u32, n: usize) {
        for _ in 0..n {
            let held: Vec<BatchId> = self.batches.iter().filter(|b| b.held).map(|b| b.id).collect();
            let q = &mut self.queues[s as usize];
            let Some(t) = q
                .iter()
                .position(|t| !held.contains(&t.batch))
                .and_then(|at| q.remove(at))
            else {
                fail(format!(
                    "segment {s} fed more tasks than it had queued and not held"
                ));
            };
            let Some(b) = self.batch(t.batch) else {
                fail(format!("fed {t} of a batch not live"))
            };
            b.tasks[t.index as usize].place = Place::OnLink;
        }
    }

    /// Takes in every task end the endpoint shows, and compares the rest of
    /// its state with the model.
    pub fn scan(&mut self, ep: &Endpoint<Heap>) {
        self.take_ends(ep);
        if ep.tasks_in_flight() != self.pending {
            fail(format!(
                "tasks_in_flight {} but the model has {} pending",
                ep.tasks_in_flight(),
                self.pending
            ));
        }
        if ep.poll_timeout() != self.earliest_deadline() {
            fail(format!(
                "poll_timeout {:?} but the earliest queued deadline is {:?}",
                ep.poll_timeout(),
                self.earliest_deadline()
            ));
        }
        for (s, &n) in self.notes.iter().enumerate() {
            if n < self.notes_queued[s] {
                fail(format!(
                    "segment {s} counts {n} notes but has {} queued",
                    self.notes_queued[s]
                ));
            }
        }
    }

    /// Takes in every task end the endpoint shows and checks each batch's
    /// state and first failure (not yet the totals: a feed is half done).
    pub fn take_ends(&mut self, ep: &Endpoint<Heap>) {
        let Model {
            batches,
            queues,
            notes,
            pending,
            ..
        } = self;
        for b in batches.iter_mut() {
            let was_pending = b.pending();
            let mut failures = Vec::new();
            for (i, t) in b.tasks.iter_mut().enumerate() {
                let id = TaskId {
                    batch: b.id,
                    index: i as u32,
                };
                let st = match ep.task_status(id) {
                    Ok(st) => st.state,
                    Err(e) => fail(format!("{id} of a live batch: {e}")),
                };
                match t.end {
                    Some(end) if end != st => fail(format!("{id} ended {end:?}, then shows {st:?}")),
                    Some(_) => {}
                    None if st == TaskState::Pending => {}
                    None if !st.is_terminal() => fail(format!("{id} pending shows {st:?}")),
                    None => {
                        t.end = Some(st);
                        *pending -= 1;
                        if let Place::Queued(_) = t.place {
                            let q = &mut queues[t.seg as usize];
                            let Some(at) = q.iter().position(|x| *x == id) else {
                                fail(format!("queued {id} not in its segment's queue"))
                            };
                            q.remove(at);
                        }
                        match st {
                            TaskState::Completed => {}
                            TaskState::Canceled => failures.push(ErrorCode::Canceled),
                            TaskState::Timeout => failures.push(ErrorCode::Timeout),
                            TaskState::Failed(c) => failures.push(c),
                            _ => unreachable!(),
                        }
                    }
                }
            }
            if !failures.is_empty() && b.first_failure.is_none() {
                b.first_failure = Some(failures);
            }
            if was_pending > 0 && b.pending() == 0 {
                b.end_due = true;
                if b.noted && !b.note_settled {
                    b.note_settled = true;
                    if b.state() != TaskState::Completed {
                        for s in b.segments() {
                            notes[s as usize] -= 1;
                        }
                    }
                }
            }
            // The batch's state and first failure.
            match ep.batch_status(b.id) {
                Ok(st) if st.state == b.state() && st.total as usize == b.tasks.len() => {}
                Ok(st) => fail(format!(
                    "batch {} shows {:?} of {} tasks, the model {:?} of {}",
                    b.id,
                    st.state,
                    st.total,
                    b.state(),
                    b.tasks.len()
                )),
                Err(e) => fail(format!("live batch {}: {e}", b.id)),
            }
            let err = ep.batch_error(b.id).map(|e| (e.code(), e.message().to_string()));
            match (&b.first_failure, &err, &b.reported_error) {
                (None, None, _) => {}
                (None, Some(e), _) => fail(format!("batch {} has error {e:?} without a failure", b.id)),
                (Some(_), None, _) => fail(format!("batch {} failed and has no error", b.id)),
                (Some(_), Some(e), Some(r)) if e != r => {
                    fail(format!("batch {} error changed from {r:?} to {e:?}", b.id))
                }
                (Some(codes), Some(e), _) if !codes.contains(&e.0) => fail(format!(
                    "batch {} error {e:?} is not its first failure {codes:?}",
                    b.id
                )),
                (Some(_), Some(e), _) => b.reported_error = Some(e.clone()),
            }
        }
    }

    /// A `BatchEnded` event: reported once per end, after the last task,
    /// never for a freed batch, with the note outcome the rule gives.
    /// Returns the segments a sent notification goes to.
    pub fn batch_ended(&mut self, batch: BatchId, state: TaskState, note: NoteOutcome) -> Vec<u32> {
        let Some(b) = self.batch(batch) else {
            fail(format!("BatchEnded for batch {batch}, which is not live"))
        };
        if !b.end_due {
            fail(format!(
                "BatchEnded for batch {batch} twice, or before it ended ({state:?})"
            ));
        }
        b.end_due = false;
        if b.pending() > 0 || state != b.state() {
            fail(format!(
                "BatchEnded {batch} {state:?} while the model has it {:?}",
                b.state()
            ));
        }
        let want = match (b.noted, state) {
            (false, _) => NoteOutcome::None,
            (true, TaskState::Completed) => NoteOutcome::Send,
            (true, _) => NoteOutcome::Dropped,
        };
        if note != want {
            fail(format!(
                "BatchEnded {batch} {state:?} note {note:?}, want {want:?}"
            ));
        }
        if note == NoteOutcome::Send {
            b.segments()
        } else {
            Vec::new()
        }
    }

    /// Segment `s` as a [`SegmentId`].
    pub fn seg(s: u32) -> SegmentId {
        SegmentId(s)
    }
}
