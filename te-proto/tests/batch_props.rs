//! Model-based test of `BatchTable`: random sequences of alloc, submit,
//! set_progress, finish (every terminal state and a few non-terminal ones),
//! free and queries, with stale and foreign ids mixed in, are applied to the
//! table and to a plain reference model (a `Vec` of batches, a `Vec` of task
//! slots and a simple next-fit placement); every result, error code included,
//! must agree, and after every step every batch ever allocated must read the
//! same in both.

use std::collections::HashSet;
use std::ops::Range;

use proptest::prelude::*;
use proptest::test_runner::Config;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};
use te_proto::batch::{
    BatchId, BatchSlot, BatchStatus, BatchTable, Op, Task, TaskId, TaskState, TaskStatus, TransferRequest,
};
use te_proto::{ErrorCode, Location, Span, Status};

prop_state_machine! {
    #![proptest_config(Config {
        cases: 1000,
        max_shrink_iters: 4096,
        .. Config::default()
    })]

    #[test]
    fn batch_table_matches_model(sequential 1..100 => BatchTableTest);
}

// ---------------------------------------------------------------- transitions

/// How a transition names a batch.
#[derive(Clone, Copy, Debug)]
enum BatchRef {
    /// The id returned by the `n`-th successful alloc (live or freed).
    Handle(usize),
    /// That id with its generation moved by +1 or -1; only used while the
    /// handle is live, so the slot holds another generation: stale.
    OtherGeneration(usize, bool),
    /// An id no table of this shape ever issues.
    Foreign(Foreign),
}

#[derive(Clone, Copy, Debug)]
enum Foreign {
    Zero,
    GenerationZero(u32),
    SlotOutOfRange,
    FarGeneration(u32),
}

#[derive(Clone, Debug)]
enum Transition {
    Alloc(u32),
    Submit(BatchRef, Vec<TransferRequest>),
    Progress(BatchRef, u32, u64),
    Finish(BatchRef, u32, TaskState),
    Free(BatchRef),
    Query(BatchRef, u32),
}

/// Expected (model) and actual (table) outcome of one transition.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Out {
    None,
    Allocated,
    Submitted(Range<u32>),
    Done,
    Finished(bool),
    Task(TaskStatus, TransferRequest),
}

type Outcome = Result<Out, ErrorCode>;

// ---------------------------------------------------------------- the model

#[derive(Clone, Debug)]
struct MTask {
    req: TransferRequest,
    state: TaskState,
    transferred: u64,
}

#[derive(Clone, Debug)]
struct MBatch {
    live: bool,
    start: usize,
    capacity: usize,
    tasks: Vec<MTask>,
}

#[derive(Clone, Debug)]
struct Model {
    batch_slots: usize,
    /// Owner handle of each task slot.
    slots: Vec<Option<usize>>,
    cursor: usize,
    /// Every batch ever allocated, by handle (allocation order).
    batches: Vec<MBatch>,
    /// Outcome of the last transition.
    last: Outcome,
}

impl Model {
    fn live(&self) -> Vec<usize> {
        (0..self.batches.len())
            .filter(|&h| self.batches[h].live)
            .collect()
    }

    /// The live batch a reference names, or `Invalid`.
    fn resolve(&self, r: BatchRef) -> Result<usize, ErrorCode> {
        match r {
            BatchRef::Handle(h) if self.batches[h].live => Ok(h),
            _ => Err(ErrorCode::Invalid),
        }
    }

    fn task(&self, r: BatchRef, index: u32) -> Result<(usize, usize), ErrorCode> {
        let h = self.resolve(r)?;
        let i = index as usize;
        if i < self.batches[h].tasks.len() {
            Ok((h, i))
        } else {
            Err(ErrorCode::Invalid)
        }
    }

    /// Next fit, written the obvious way: the first start position in
    /// circular order from the cursor with `n` free slots inside the storage.
    fn find_room(&self, n: usize) -> Option<usize> {
        let len = self.slots.len();
        (self.cursor..len)
            .chain(0..self.cursor)
            .find(|&p| p + n <= len && self.slots[p..p + n].iter().all(Option::is_none))
    }

    fn alloc(&mut self, capacity: u32) -> Outcome {
        let n = capacity as usize;
        if n == 0 || n > self.slots.len() {
            return Err(ErrorCode::Invalid);
        }
        if self.live().len() == self.batch_slots {
            return Err(ErrorCode::NotReady);
        }
        let start = self.find_room(n).ok_or(ErrorCode::NotReady)?;
        let handle = self.batches.len();
        self.slots[start..start + n].fill(Some(handle));
        self.cursor = if start + n == self.slots.len() {
            0
        } else {
            start + n
        };
        self.batches.push(MBatch {
            live: true,
            start,
            capacity: n,
            tasks: Vec::new(),
        });
        Ok(Out::Allocated)
    }

    fn submit(&mut self, r: BatchRef, reqs: &[TransferRequest]) -> Outcome {
        let h = self.resolve(r)?;
        let b = &mut self.batches[h];
        if reqs.is_empty() || reqs.len() > b.capacity - b.tasks.len() {
            return Err(ErrorCode::Invalid);
        }
        let bad = |q: &TransferRequest| {
            q.local.len == 0
                || q.local.addr.checked_add(q.local.len).is_none()
                || q.remote_addr.checked_add(q.local.len).is_none()
        };
        if reqs.iter().any(bad) {
            return Err(ErrorCode::Invalid);
        }
        let first = b.tasks.len() as u32;
        b.tasks.extend(reqs.iter().map(|&req| MTask {
            req,
            state: TaskState::Pending,
            transferred: 0,
        }));
        Ok(Out::Submitted(first..b.tasks.len() as u32))
    }

    fn progress(&mut self, r: BatchRef, index: u32, transferred: u64) -> Outcome {
        let (h, i) = self.task(r, index)?;
        let t = &mut self.batches[h].tasks[i];
        if t.state != TaskState::Pending || transferred > t.req.local.len {
            return Err(ErrorCode::Invalid);
        }
        t.transferred = transferred;
        Ok(Out::Done)
    }

    fn finish(&mut self, r: BatchRef, index: u32, state: TaskState) -> Outcome {
        let (h, i) = self.task(r, index)?;
        if !state.is_terminal() || state == TaskState::Failed(ErrorCode::Ok) {
            return Err(ErrorCode::Invalid);
        }
        let t = &mut self.batches[h].tasks[i];
        if t.state != TaskState::Pending {
            return Ok(Out::Finished(false));
        }
        t.state = state;
        if state == TaskState::Completed {
            t.transferred = t.req.local.len;
        }
        Ok(Out::Finished(true))
    }

    fn free(&mut self, r: BatchRef) -> Outcome {
        let h = self.resolve(r)?;
        let b = &mut self.batches[h];
        if b.tasks.iter().any(|t| t.state == TaskState::Pending) {
            return Err(ErrorCode::NotReady);
        }
        b.live = false;
        let (start, n) = (b.start, b.capacity);
        self.slots[start..start + n].fill(None);
        Ok(Out::Done)
    }

    fn query(&self, r: BatchRef, index: u32) -> Outcome {
        let (h, i) = self.task(r, index)?;
        let t = &self.batches[h].tasks[i];
        Ok(Out::Task(task_status(t), t.req))
    }
}

fn task_status(t: &MTask) -> TaskStatus {
    TaskStatus {
        state: t.state,
        transferred: t.transferred,
        len: t.req.local.len,
    }
}

/// The overall status, computed from scratch the way the docs state it.
fn batch_status(b: &MBatch) -> BatchStatus {
    let sum = |f: fn(&MTask) -> u64| {
        let total: u128 = b.tasks.iter().map(|t| u128::from(f(t))).sum();
        u64::try_from(total).unwrap_or(u64::MAX)
    };
    let count = |p: fn(TaskState) -> bool| b.tasks.iter().filter(|t| p(t.state)).count() as u32;
    let state = if b.tasks.is_empty() {
        TaskState::Initial
    } else if b.tasks.iter().any(|t| t.state == TaskState::Pending) {
        TaskState::Pending
    } else {
        b.tasks
            .iter()
            .map(|t| t.state)
            .find(|&s| s != TaskState::Completed)
            .unwrap_or(TaskState::Completed)
    };
    BatchStatus {
        state,
        total: b.tasks.len() as u32,
        completed: count(|s| s == TaskState::Completed),
        failed: count(|s| s.is_terminal() && s != TaskState::Completed),
        transferred: sum(|t| t.transferred),
        len: sum(|t| t.req.local.len),
    }
}

// ---------------------------------------------------------------- generation

fn request() -> impl Strategy<Value = TransferRequest> {
    // Mostly good requests; now and then one of length 0, one whose local
    // span or remote range wraps, and huge ones (byte sums must not overflow).
    let len = prop_oneof![40 => 1u64..=16, 1 => Just(0u64), 2 => Just(u64::MAX / 2)];
    let addr = prop_oneof![40 => 0x1000u64..0x2000, 1 => Just(u64::MAX - 8)];
    let remote = prop_oneof![40 => 0x10_0000u64..0x10_1000, 1 => Just(u64::MAX - 8)];
    let op = prop_oneof![Just(Op::Read), Just(Op::Write)];
    let location = prop_oneof![Just(None), (0u16..4).prop_map(|n| Some(Location::Sim(n)))];
    (op, len, addr, 0u32..4, remote, location).prop_map(
        |(op, len, addr, segment, remote_addr, remote_location)| TransferRequest {
            op,
            local: Span::cpu(addr, len),
            segment,
            remote_addr,
            remote_location,
        },
    )
}

fn terminal_or_not() -> impl Strategy<Value = TaskState> {
    let code = prop_oneof![
        Just(ErrorCode::Invalid),
        Just(ErrorCode::NotAuthorized),
        Just(ErrorCode::RuntimeError),
        Just(ErrorCode::Disconnected),
    ];
    prop_oneof![
        4 => Just(TaskState::Completed),
        2 => code.prop_map(TaskState::Failed),
        1 => Just(TaskState::Canceled),
        1 => Just(TaskState::Timeout),
        1 => prop_oneof![
            Just(TaskState::Pending),
            Just(TaskState::Initial),
            Just(TaskState::Failed(ErrorCode::Ok)),
        ],
    ]
}

fn foreign(batch_slots: usize) -> impl Strategy<Value = BatchRef> {
    let slots = batch_slots as u32;
    prop_oneof![
        Just(Foreign::Zero),
        (0..slots + 2).prop_map(Foreign::GenerationZero),
        Just(Foreign::SlotOutOfRange),
        (0..slots + 1).prop_map(Foreign::FarGeneration),
    ]
    .prop_map(BatchRef::Foreign)
}

fn batch_ref(m: &Model) -> BoxedStrategy<BatchRef> {
    let live = m.live();
    let all = m.batches.len();
    let mut choices: Vec<(u32, BoxedStrategy<BatchRef>)> = vec![(1, foreign(m.batch_slots).boxed())];
    if all > 0 {
        choices.push((2, (0..all).prop_map(BatchRef::Handle).boxed()));
    }
    if !live.is_empty() {
        let pick = proptest::sample::select(live);
        choices.push((10, pick.clone().prop_map(BatchRef::Handle).boxed()));
        choices.push((
            1,
            (pick, any::<bool>())
                .prop_map(|(h, up)| BatchRef::OtherGeneration(h, up))
                .boxed(),
        ));
    }
    proptest::strategy::Union::new_weighted(choices).boxed()
}

/// A submit: mostly into a live batch with room, with at most that many
/// requests; sometimes anything (too many, none, a stale or foreign id).
fn submit(m: &Model) -> BoxedStrategy<Transition> {
    let room: Vec<(usize, usize)> = m
        .live()
        .into_iter()
        .map(|h| (h, m.batches[h].capacity - m.batches[h].tasks.len()))
        .filter(|&(_, room)| room > 0)
        .collect();
    let any = (batch_ref(m), proptest::collection::vec(request(), 0..8))
        .prop_map(|(b, r)| Transition::Submit(b, r))
        .boxed();
    if room.is_empty() {
        return any;
    }
    let fitting = proptest::sample::select(room)
        .prop_flat_map(|(h, room)| {
            proptest::collection::vec(request(), 1..=room.min(4)).prop_map(move |r| (h, r))
        })
        .prop_map(|(h, r)| Transition::Submit(BatchRef::Handle(h), r));
    prop_oneof![3 => fitting, 1 => any].boxed()
}

/// A free: mostly of a live batch with nothing pending, else any reference.
fn free(m: &Model) -> BoxedStrategy<Transition> {
    let done: Vec<usize> = m
        .live()
        .into_iter()
        .filter(|&h| m.batches[h].tasks.iter().all(|t| t.state.is_terminal()))
        .collect();
    let any = batch_ref(m).prop_map(Transition::Free).boxed();
    if done.is_empty() {
        return any;
    }
    prop_oneof![3 => proptest::sample::select(done).prop_map(|h| Transition::Free(BatchRef::Handle(h))), 1 => any]
        .boxed()
}

/// A task: mostly a pending one (`pending`) or any submitted one of a live
/// batch, sometimes an index past the submitted ones or in a stale batch.
fn task_ref(m: &Model, pending: bool) -> BoxedStrategy<(BatchRef, u32)> {
    let mut submitted = Vec::new();
    let mut open = Vec::new();
    for h in m.live() {
        for (i, t) in m.batches[h].tasks.iter().enumerate() {
            submitted.push((BatchRef::Handle(h), i as u32));
            if t.state == TaskState::Pending {
                open.push((BatchRef::Handle(h), i as u32));
            }
        }
    }
    let index = prop_oneof![4 => 0u32..8, 1 => Just(u32::MAX)];
    let mut choices: Vec<(u32, BoxedStrategy<(BatchRef, u32)>)> = vec![(2, (batch_ref(m), index).boxed())];
    if !submitted.is_empty() {
        choices.push((4, proptest::sample::select(submitted).boxed()));
    }
    if !open.is_empty() {
        choices.push((
            if pending { 8 } else { 4 },
            proptest::sample::select(open).boxed(),
        ));
    }
    proptest::strategy::Union::new_weighted(choices).boxed()
}

struct BatchModel;

impl ReferenceStateMachine for BatchModel {
    type State = Model;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<Model> {
        let batch_slots = prop_oneof![1 => Just(0usize), 12 => 1usize..6];
        let task_slots = prop_oneof![1 => 0usize..4, 12 => 4usize..24];
        (batch_slots, task_slots)
            .prop_map(|(batch_slots, task_slots)| Model {
                batch_slots,
                slots: vec![None; task_slots],
                cursor: 0,
                batches: Vec::new(),
                last: Ok(Out::None),
            })
            .boxed()
    }

    fn transitions(m: &Model) -> BoxedStrategy<Transition> {
        let total = m.slots.len() as u32;
        let capacity = prop_oneof![8 => 1..=total.clamp(1, 6), 1 => Just(0u32), 1 => total..=total + 1];
        // Weights follow the state: with nothing live, mostly allocate (the
        // other operations can then only use stale or foreign ids).
        let live = m.live().len() as u32;
        let open = m
            .batches
            .iter()
            .filter(|b| b.live)
            .flat_map(|b| &b.tasks)
            .filter(|t| t.state == TaskState::Pending);
        let open = open.count() as u32;
        prop_oneof![
            if live == 0 { 12 } else { 3 } => capacity.prop_map(Transition::Alloc),
            1 + 3 * live.min(1) => submit(m),
            1 + 3 * open.min(1) => (task_ref(m, true), 0u64..20).prop_map(|((b, i), n)| Transition::Progress(b, i, n)),
            1 + 6 * open.min(1) => (task_ref(m, false), terminal_or_not()).prop_map(|((b, i), s)| Transition::Finish(b, i, s)),
            1 + 3 * live.min(1) => free(m),
            1 => task_ref(m, false).prop_map(|(b, i)| Transition::Query(b, i)),
        ]
        .boxed()
    }

    /// Handles must exist (shrinking removes allocs), and generation tricks
    /// need a live handle so that they name a stale generation.
    fn preconditions(m: &Model, t: &Transition) -> bool {
        let ok = |r: &BatchRef| match *r {
            BatchRef::Handle(h) => h < m.batches.len(),
            BatchRef::OtherGeneration(h, _) => h < m.batches.len() && m.batches[h].live,
            BatchRef::Foreign(_) => true,
        };
        match t {
            Transition::Alloc(_) => true,
            Transition::Submit(r, _)
            | Transition::Progress(r, ..)
            | Transition::Finish(r, ..)
            | Transition::Free(r)
            | Transition::Query(r, _) => ok(r),
        }
    }

    fn apply(mut m: Model, t: &Transition) -> Model {
        m.last = match t {
            Transition::Alloc(n) => m.alloc(*n),
            Transition::Submit(r, reqs) => m.submit(*r, reqs),
            Transition::Progress(r, i, n) => m.progress(*r, *i, *n),
            Transition::Finish(r, i, s) => m.finish(*r, *i, *s),
            Transition::Free(r) => m.free(*r),
            Transition::Query(r, i) => m.query(*r, *i),
        };
        m
    }
}

// ---------------------------------------------------------------- the table

type Table = BatchTable<Box<[BatchSlot]>, Box<[Task]>>;

struct Sut {
    table: Table,
    batch_slots: usize,
    /// Id of each handle, in allocation order.
    ids: Vec<BatchId>,
    /// Every id ever issued: a new one must never repeat an old one.
    issued: HashSet<BatchId>,
}

impl Sut {
    fn id(&self, r: BatchRef) -> BatchId {
        let slots = self.batch_slots as u64;
        match r {
            BatchRef::Handle(h) => self.ids[h],
            BatchRef::OtherGeneration(h, up) => {
                let v = self.ids[h].to_u64();
                let generation = (v >> 32) as u32;
                let generation = if up {
                    generation.wrapping_add(1)
                } else {
                    generation.wrapping_sub(1)
                };
                BatchId::from_u64(u64::from(generation) << 32 | (v & 0xffff_ffff))
            }
            BatchRef::Foreign(Foreign::Zero) => BatchId::from_u64(0),
            BatchRef::Foreign(Foreign::GenerationZero(slot)) => BatchId::from_u64(u64::from(slot)),
            BatchRef::Foreign(Foreign::SlotOutOfRange) => BatchId::from_u64(1 << 32 | slots),
            // Far beyond any generation a short test reaches.
            BatchRef::Foreign(Foreign::FarGeneration(slot)) => {
                BatchId::from_u64(0xdead_0000 << 32 | u64::from(slot))
            }
        }
    }
}

fn outcome<V>(r: Result<V, Status>, ok: impl FnOnce(V) -> Out) -> Outcome {
    match r {
        Ok(v) => Ok(ok(v)),
        Err(e) => {
            assert!(!e.message().is_empty(), "{e:?} has no message");
            assert!(
                matches!(e.code(), ErrorCode::Invalid | ErrorCode::NotReady),
                "unexpected code in {e}"
            );
            Err(e.code())
        }
    }
}

struct BatchTableTest;

impl StateMachineTest for BatchTableTest {
    type SystemUnderTest = Sut;
    type Reference = BatchModel;

    fn init_test(m: &Model) -> Sut {
        Sut {
            table: BatchTable::new(
                vec![BatchSlot::EMPTY; m.batch_slots].into_boxed_slice(),
                vec![Task::EMPTY; m.slots.len()].into_boxed_slice(),
            ),
            batch_slots: m.batch_slots,
            ids: Vec::new(),
            issued: HashSet::new(),
        }
    }

    fn apply(mut sut: Sut, m: &Model, t: Transition) -> Sut {
        let task = |sut: &Sut, r: BatchRef, index: u32| TaskId {
            batch: sut.id(r),
            index,
        };
        let got = match t {
            Transition::Alloc(n) => {
                let r = sut.table.alloc(n);
                if let Ok(id) = r {
                    assert!(sut.issued.insert(id), "alloc reissued {id:?}");
                    assert_ne!(id.to_u64() >> 32, 0, "generation 0 issued");
                    sut.ids.push(id);
                }
                outcome(r, |_| Out::Allocated)
            }
            Transition::Submit(r, reqs) => outcome(sut.table.submit(sut.id(r), &reqs), Out::Submitted),
            Transition::Progress(r, i, n) => {
                let id = task(&sut, r, i);
                outcome(sut.table.set_progress(id, n), |()| Out::Done)
            }
            Transition::Finish(r, i, s) => {
                let id = task(&sut, r, i);
                outcome(sut.table.finish(id, s), Out::Finished)
            }
            Transition::Free(r) => outcome(sut.table.free(sut.id(r)), |()| Out::Done),
            Transition::Query(r, i) => {
                let id = task(&sut, r, i);
                let status = sut.table.task(id);
                let request = sut.table.request(id);
                assert_eq!(status.is_ok(), request.is_ok());
                outcome(status.and_then(|s| Ok((s, request?))), |(s, q)| Out::Task(s, q))
            }
        };
        assert_eq!(got, m.last);
        sut
    }

    fn check_invariants(sut: &Sut, m: &Model) {
        let live = m.live();
        assert_eq!(sut.table.batches_in_use(), live.len());
        let reserved: usize = live.iter().map(|&h| m.batches[h].capacity).sum();
        assert_eq!(sut.table.tasks_in_use(), reserved);
        for (h, b) in m.batches.iter().enumerate() {
            let id = sut.ids[h];
            if !b.live {
                assert_eq!(
                    sut.table.status(id).map_err(|e| e.code()),
                    Err(ErrorCode::Invalid)
                );
                assert!(sut.table.tasks(id).is_err());
                continue;
            }
            assert_eq!(sut.table.status(id).unwrap(), batch_status(b), "batch {h}");
            let tasks: Vec<TaskStatus> = sut.table.tasks(id).unwrap().collect();
            let expected: Vec<TaskStatus> = b.tasks.iter().map(task_status).collect();
            assert_eq!(tasks, expected, "tasks of batch {h}");
            for (i, t) in b.tasks.iter().enumerate() {
                let tid = TaskId {
                    batch: id,
                    index: i as u32,
                };
                assert_eq!(sut.table.request(tid).unwrap(), t.req);
            }
            let past = TaskId {
                batch: id,
                index: b.tasks.len() as u32,
            };
            assert_eq!(
                sut.table.task(past).map_err(|e| e.code()),
                Err(ErrorCode::Invalid)
            );
        }
    }
}
