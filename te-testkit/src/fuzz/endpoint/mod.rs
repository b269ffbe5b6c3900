//! The endpoint harness: one [`Endpoint`](te_proto::Endpoint) with small
//! heap tables and 2 or 3 segments, each with a link to a peer link that
//! has memory of its own, driven by an input-chosen script of API calls
//! (register, batches, submissions valid and not, cancels, notifications,
//! finalize), link traffic (frames and payloads both ways, raw hostile
//! bytes, drops, failed connects, local closes) and time, and checked
//! against a model after every step:
//!
//! - every task ends exactly once and keeps its end; `tasks_in_flight` is
//!   the model's pending count;
//! - a batch's `BatchEnded` comes once per end, after its last task ended,
//!   never for a freed batch, with [`NoteOutcome::Send`](te_proto::endpoint::NoteOutcome::Send)
//!   exactly when every task completed and it carried a notification;
//! - a batch's state and its `batch_error` (the first failure, stable);
//! - a segment's notification room: `reserve_note` and
//!   `submit_with_notify` are refused exactly when it is full, and it is
//!   empty again once everything was sent or dropped;
//! - queued tasks past their deadline end `Timeout` at `handle_timeout`,
//!   no other; `poll_timeout` is the earliest queued deadline;
//! - links send and land payloads only inside registered memory, and no
//!   pin is left once nothing is in flight;
//! - no panic, debug assertions included.
//!
//! - [`script`]: the input format;
//! - [`model`]: the model and the oracle;
//! - [`driver`]: the endpoint, its links, each op as the runtime does it.

pub mod driver;
pub mod model;
pub mod script;

use self::script::{encode, next_op, Input, Op, Req};

/// Most ops one input runs.
const MAX_OPS: usize = 400;

/// Runs one input: a panic is a bug found.
pub fn run(data: &[u8]) {
    run_traced(data, false);
}

/// As [`run`], printing each op to stderr when `trace` is set (for
/// reading a reproducer).
pub fn run_traced(data: &[u8], trace: bool) {
    let mut inp = Input::new(data);
    let segments = 2 + usize::from(inp.u8() & 1);
    let mut world = driver::World::new(segments);
    for _ in 0..MAX_OPS {
        let Some(op) = next_op(&mut inp) else { break };
        if trace {
            eprintln!("{op:?}");
        }
        world.step(&op);
    }
    world.finish();
    if trace {
        eprintln!(
            "batch ends {}, notifications sent {}",
            world.stats.1, world.stats.0
        );
    }
}

/// The hand-written seeds of `fuzz/corpus/endpoint/`: (file name, bytes).
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let read = |seg, len| Req {
        write: false,
        local: 0,
        offset: 0,
        seg,
        remote: 0,
        len,
    };
    let write = |seg, len| Req {
        write: true,
        local: 3,
        offset: 4,
        seg,
        remote: 1,
        len,
    };
    let connect_all = [Op::Register(0), Op::Register(3), Op::Connect(0), Op::Connect(1)];
    let pumps = |n| {
        (0..n)
            .map(|_| Op::Pump {
                s: 0,
                rounds: 3,
                hold: false,
            })
            .chain((0..n).map(|_| Op::Pump {
                s: 1,
                rounds: 3,
                hold: false,
            }))
    };
    let mut sets: Vec<(&str, u8, Vec<Op>)> = Vec::new();
    // Two segments, one batch, a notification, everything completes.
    let mut ops = connect_all.to_vec();
    ops.extend([
        Op::Alloc(3),
        Op::Submit {
            b: 0,
            notify: true,
            path: 0,
            reqs: vec![read(0, 5000), write(1, 300)],
        },
        Op::PollEvents,
    ]);
    ops.extend(pumps(4));
    ops.extend([
        Op::PollEvents,
        Op::SendNotes(0),
        Op::SendNotes(1),
        Op::Pump {
            s: 0,
            rounds: 2,
            hold: false,
        },
        Op::Free(0),
    ]);
    sets.push(("seed-notify-complete", 2, ops));
    // Queued tasks time out; the notification is dropped.
    sets.push((
        "seed-timeout",
        3,
        vec![
            Op::Register(0),
            Op::Alloc(2),
            Op::Submit {
                b: 0,
                notify: true,
                path: 0,
                reqs: vec![read(0, 100), read(2, 100)],
            },
            Op::Advance(100),
            Op::Advance(100),
            Op::PollEvents,
            Op::ReserveNote(0),
            Op::ReserveNote(0),
            Op::ReserveNote(0),
            Op::Free(0),
        ],
    ));
    // A link dies mid-transfer; another batch is canceled; finalize.
    let mut ops = connect_all.to_vec();
    ops.extend([
        Op::Alloc(2),
        Op::Alloc(2),
        Op::Submit {
            b: 0,
            notify: false,
            path: 1,
            reqs: vec![read(0, 9000)],
        },
        Op::Submit {
            b: 1,
            notify: false,
            path: 2,
            reqs: vec![write(1, 64), read(1, 64)],
        },
        Op::PollEvents,
        Op::Pump {
            s: 0,
            rounds: 1,
            hold: true,
        },
        Op::Cancel(1, 1),
        Op::Drop(0),
        Op::LinkFailed(0),
        Op::Finalize,
        Op::FailQueued,
        Op::PollEvents,
        Op::Unregister(0),
    ]);
    sets.push(("seed-drop-cancel-finalize", 2, ops));
    // The peer reads and writes our memory while we unregister it, then
    // sends garbage.
    let mut ops = connect_all.to_vec();
    ops.extend([
        Op::Pump {
            s: 0,
            rounds: 2,
            hold: false,
        },
        Op::PeerSubmit {
            s: 0,
            write: false,
            region: 0,
            len: 0x1800,
        },
        Op::PeerSubmit {
            s: 0,
            write: true,
            region: 3,
            len: 0x0800,
        },
        Op::Pump {
            s: 0,
            rounds: 1,
            hold: true,
        },
        Op::Unregister(0),
        Op::Pump {
            s: 0,
            rounds: 5,
            hold: false,
        },
        Op::Inject {
            s: 0,
            to_peer: false,
            bytes: vec![0xff; 40],
        },
        Op::Deliver {
            s: 0,
            to_peer: false,
            n: 100,
        },
        Op::Advance(255),
        Op::PollEvents,
    ]);
    sets.push(("seed-peer-unregister-garbage", 2, ops));
    // A held batch waits while one behind it goes; released, it goes too;
    // another held batch is released with an error, a third times out.
    let mut ops = connect_all.to_vec();
    ops.extend([
        Op::Alloc(2),
        Op::Alloc(2),
        Op::Alloc(2),
        Op::Hold(0),
        Op::Hold(2),
        Op::Submit {
            b: 0,
            notify: false,
            path: 0,
            reqs: vec![read(0, 64), write(1, 64)],
        },
        Op::Submit {
            b: 1,
            notify: false,
            path: 0,
            reqs: vec![read(0, 64)],
        },
        Op::Submit {
            b: 2,
            notify: true,
            path: 0,
            reqs: vec![read(1, 64)],
        },
        Op::Pump {
            s: 0,
            rounds: 3,
            hold: false,
        },
        Op::Release { b: 0, fail: false },
        Op::Pump {
            s: 0,
            rounds: 3,
            hold: false,
        },
        Op::Release { b: 2, fail: true },
        Op::Hold(1),
        Op::Hold(0x80),
        Op::PollEvents,
        Op::Free(0),
        Op::Alloc(2),
        Op::Hold(2),
        Op::Submit {
            b: 2,
            notify: false,
            path: 0,
            reqs: vec![read(0, 64)],
        },
        Op::Advance(200),
        Op::PollEvents,
    ]);
    sets.push(("seed-hold-release", 2, ops));
    sets.into_iter()
        .map(|(name, n, ops)| (name.to_string(), encode(n, &ops)))
        .collect()
}
