//! Byte-exact transfers between two engines in one process (issue 3, "done
//! when" 2): sizes from 1 B to 256 MiB at unaligned addresses, reads and
//! writes, batches of 1 to 4096 tasks, 8 threads submitting at once,
//! notifications after batches and alone, and segment info.
//!
//! Every transfer is verified byte for byte, and the bytes right outside a
//! destination are checked untouched.

use std::collections::BTreeSet;
use std::sync::Barrier;
use std::time::Duration;

use te_runtime::{
    BatchId, Engine, EngineConfig, ErrorCode, Location, Op, Perm, Region, Request, SegmentId, TaskState,
};
use te_tests::{bytes, engine, fast_pattern_matches, fill, fill_fast, pattern};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// Generous bound for any single wait; a healthy run needs a fraction.
const WAIT: Duration = Duration::from_secs(60);

/// Asserts that two byte slices are equal, naming the first difference
/// instead of printing megabytes.
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    if got != want {
        let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "{what}: first difference at byte {i} of {}: got {:#04x}, want {:#04x}",
            got.len(),
            got[i],
            want[i]
        );
    }
}

/// Reads one byte of memory the test owns.
fn peek(addr: u64) -> u8 {
    // SAFETY: callers pass addresses inside engine-allocated buffers that
    // no transfer touches at that moment.
    unsafe { *(addr as *const u8) }
}

/// Writes one byte of memory the test owns.
fn poke(addr: u64, v: u8) {
    // SAFETY: as `peek`.
    unsafe { *(addr as *mut u8) = v }
}

/// A target engine with `remote_len` bytes of remote read-write memory and
/// an initiator with `local_len` bytes of local memory and the target opened.
struct Pair {
    target: Engine,
    initiator: Engine,
    remote: u64,
    local: u64,
    seg: SegmentId,
    name: String,
}

impl Pair {
    fn new(remote_len: u64, local_len: u64) -> Pair {
        Pair::with_configs(
            EngineConfig::default(),
            EngineConfig::default(),
            remote_len,
            local_len,
        )
    }

    fn with_configs(target: EngineConfig, initiator: EngineConfig, remote_len: u64, local_len: u64) -> Pair {
        let target = Engine::start(target).expect("target starts");
        let initiator = Engine::start(initiator).expect("initiator starts");
        let remote = target
            .alloc_memory(remote_len, Perm::REMOTE_READ_WRITE)
            .expect("alloc remote");
        let local = initiator
            .alloc_memory(local_len, Perm::LOCAL_ONLY)
            .expect("alloc local");
        let name = target.segment_name();
        let seg = initiator.open_segment(&name).expect("open target");
        Pair {
            target,
            initiator,
            remote,
            local,
            seg,
            name,
        }
    }

    /// Submits `reqs` as one batch, waits for it and checks that every task
    /// completed with all its bytes; frees the batch.
    fn run_batch(&self, reqs: &[Request]) {
        run_batch(&self.initiator, reqs, None);
    }
}

fn run_batch(e: &Engine, reqs: &[Request], notify: Option<(&str, &[u8])>) {
    let batch = e.allocate_batch(reqs.len() as u32).expect("allocate batch");
    match notify {
        Some((name, msg)) => e.submit_with_notify(batch, reqs, name, msg).expect("submit"),
        None => e.submit(batch, reqs).expect("submit"),
    }
    check_completed(e, batch, reqs);
}

fn check_completed(e: &Engine, batch: BatchId, reqs: &[Request]) {
    let st = e.wait_batch(batch, WAIT).expect("wait batch");
    let total: u64 = reqs.iter().map(|r| r.len).sum();
    assert_eq!(st.state, TaskState::Completed, "{st:?}");
    assert_eq!(
        (st.total, st.completed, st.failed),
        (reqs.len() as u32, reqs.len() as u32, 0)
    );
    assert_eq!((st.transferred, st.len), (total, total));
    let tasks = e.tasks_status(batch).expect("tasks status");
    assert_eq!(tasks.len(), reqs.len());
    for (i, (t, r)) in tasks.iter().zip(reqs).enumerate() {
        assert_eq!(t.state, TaskState::Completed, "task {i}");
        assert_eq!((t.transferred, t.len), (r.len, r.len), "task {i}");
    }
    e.free_batch(batch).expect("free batch");
}

/// One size, written then read, at odd offsets; guard bytes around each
/// destination must stay as they were.
fn write_then_read(p: &Pair, k: u64, size: u64) {
    let (lo, ro) = (1 + (k * 3) % 29, 3 + (k * 5) % 27);
    let (l, r) = (p.local + lo, p.remote + ro);

    // Write: local -> remote (synchronous helper).
    // SAFETY: inside the initiator's buffer; no transfer runs.
    unsafe { fill_fast(l, size, 2 * k + 1) };
    poke(r - 1, 0xA5);
    poke(r + size, 0x5A);
    p.initiator
        .transfer_sync_write(&p.name, l, r, size)
        .expect("write");
    // SAFETY: both buffers are engine memory no transfer touches now.
    unsafe { assert_same(bytes(r, size), bytes(l, size), &format!("write of {size} B")) };
    assert_eq!(
        (peek(r - 1), peek(r + size)),
        (0xA5, 0x5A),
        "write of {size} B overran"
    );

    // Read: remote -> local (asynchronous batch).
    let (l, r) = (p.local + ro, p.remote + lo);
    // SAFETY: inside the target's buffer; no transfer runs.
    unsafe { fill_fast(r, size, 2 * k + 2) };
    poke(l - 1, 0xC3);
    poke(l + size, 0x3C);
    p.run_batch(&[Request {
        op: Op::Read,
        local: l,
        segment: p.seg,
        remote: r,
        len: size,
    }]);
    // SAFETY: as above.
    unsafe { assert_same(bytes(l, size), bytes(r, size), &format!("read of {size} B")) };
    assert_eq!(
        (peek(l - 1), peek(l + size)),
        (0xC3, 0x3C),
        "read of {size} B overran"
    );
}

#[test]
fn sizes_from_1_byte_to_64_mib_at_unaligned_addresses() {
    let sizes = [
        1,
        2,
        3,
        7,
        4095,
        4096,
        4097,
        65535,
        65537,
        MIB - 1,
        MIB,
        MIB + 1,
        3 * MIB + 5,
        16 * MIB - 1,
        64 * MIB + 7,
    ];
    let p = Pair::new(64 * MIB + 4 * KIB, 64 * MIB + 4 * KIB);
    for (k, &size) in sizes.iter().enumerate() {
        write_then_read(&p, k as u64, size);
    }
}

#[test]
fn small_frames_a_window_of_one_and_mismatched_limits() {
    let small = EngineConfig {
        max_payload: 4096,
        max_outstanding: 1,
        ..EngineConfig::default()
    };
    let large = EngineConfig {
        max_payload: 16 << 20,
        max_outstanding: 64,
        ..EngineConfig::default()
    };
    let sizes = [1, 4095, 4096, 4097, 65537, MIB + 3, 5 * MIB - 1];
    // Small target, large initiator, then the other way round.
    for (t, i) in [(small.clone(), large.clone()), (large, small)] {
        let p = Pair::with_configs(t, i, 5 * MIB + 4 * KIB, 5 * MIB + 4 * KIB);
        for (k, &size) in sizes.iter().enumerate() {
            write_then_read(&p, 200 + k as u64, size);
        }
    }
}

#[test]
fn size_256_mib_read_and_write() {
    let p = Pair::new(256 * MIB + 4 * KIB, 256 * MIB + 4 * KIB);
    write_then_read(&p, 100, 256 * MIB);
}

/// Requests of varied odd lengths packed at odd offsets; local spans in
/// order, remote spans in reverse order.
fn scattered(p: &Pair, n: u64, op: Op) -> Vec<Request> {
    let lens: Vec<u64> = (0..n).map(|i| 1 + (i * 7919 + n) % (8 * KIB)).collect();
    let mut reqs = Vec::with_capacity(n as usize);
    let mut at = 1;
    for &len in &lens {
        reqs.push(Request {
            op,
            local: p.local + at,
            segment: p.seg,
            remote: 0,
            len,
        });
        at += len + 1 + len % 3;
    }
    let mut at = 3;
    for r in reqs.iter_mut().rev() {
        r.remote = p.remote + at;
        at += r.len + 2 + r.len % 5;
    }
    reqs
}

/// The image `dst_base..dst_base + len` must have after the spans
/// `(src, dst, len)` were copied into it: `before`, with each span replaced
/// by its source bytes. Checking whole buffers against it also catches
/// bytes written outside the spans.
fn expected_image(before: &[u8], dst_base: u64, spans: impl Iterator<Item = (u64, u64, u64)>) -> Vec<u8> {
    let mut want = before.to_vec();
    for (src, dst, len) in spans {
        let at = (dst - dst_base) as usize;
        // SAFETY: callers pass spans inside engine buffers no transfer touches.
        want[at..at + len as usize].copy_from_slice(unsafe { bytes(src, len) });
    }
    want
}

#[test]
fn batches_of_1_7_128_1000_and_4096_tasks() {
    const LEN: u64 = 40 * MIB;
    let p = Pair::new(LEN, LEN);
    for (k, n) in [1u64, 7, 128, 1000, 4096].into_iter().enumerate() {
        let seed = 10 * k as u64;
        // Writes, submitted in up to four calls into one batch.
        // SAFETY (all of this test's memory accesses): engine buffers that
        // no transfer touches at that moment.
        unsafe { fill_fast(p.local, LEN, seed) };
        unsafe { fill_fast(p.remote, LEN, seed + 1) };
        let reqs = scattered(&p, n, Op::Write);
        let want = expected_image(
            unsafe { bytes(p.remote, LEN) },
            p.remote,
            reqs.iter().map(|r| (r.local, r.remote, r.len)),
        );
        let batch = p.initiator.allocate_batch(n as u32).expect("allocate");
        for part in reqs.chunks(reqs.len().div_ceil(4)) {
            p.initiator.submit(batch, part).expect("submit");
        }
        check_completed(&p.initiator, batch, &reqs);
        unsafe { assert_same(bytes(p.remote, LEN), &want, &format!("target after {n} writes")) };

        // Reads, in one call.
        unsafe { fill_fast(p.remote, LEN, seed + 2) };
        let reqs = scattered(&p, n, Op::Read);
        let want = expected_image(
            unsafe { bytes(p.local, LEN) },
            p.local,
            reqs.iter().map(|r| (r.remote, r.local, r.len)),
        );
        p.run_batch(&reqs);
        unsafe { assert_same(bytes(p.local, LEN), &want, &format!("initiator after {n} reads")) };
    }
}

#[test]
fn synchronous_batch_helpers_move_1000_spans() {
    let p = Pair::new(16 * MIB, 16 * MIB);
    // SAFETY: engine buffers, no transfer runs.
    unsafe { fill_fast(p.local, 16 * MIB, 41) };
    let reqs = scattered(&p, 1000, Op::Write);
    let local: Vec<u64> = reqs.iter().map(|r| r.local).collect();
    let remote: Vec<u64> = reqs.iter().map(|r| r.remote).collect();
    let lens: Vec<u64> = reqs.iter().map(|r| r.len).collect();
    p.initiator
        .batch_transfer_sync_write(&p.name, &local, &remote, &lens)
        .expect("batch write");
    for r in &reqs {
        // SAFETY: as above.
        unsafe { assert_same(bytes(r.remote, r.len), bytes(r.local, r.len), "sync batch write") };
    }
    unsafe { fill_fast(p.remote, 16 * MIB, 42) };
    p.initiator
        .batch_transfer_sync_read(&p.name, &local, &remote, &lens)
        .expect("batch read");
    for r in &reqs {
        // SAFETY: as above.
        unsafe { assert_same(bytes(r.local, r.len), bytes(r.remote, r.len), "sync batch read") };
    }
}

#[test]
fn eight_threads_submit_at_once_to_one_engine() {
    threads_submit_at_once(8, EngineConfig::default());
}

/// Busy-poll engines: the waiting threads take turns driving the event
/// loop and see each other's answers; a notification is waited for the
/// same way.
#[test]
fn busy_polling_engines_serve_four_threads_and_notifications() {
    let busy = EngineConfig {
        busy_poll: true,
        ..EngineConfig::default()
    };
    let p = threads_submit_at_once(4, busy);
    p.initiator
        .send_notification(p.seg, "busy", b"done")
        .expect("notify");
    let notes = p.target.wait_notifications(WAIT);
    assert_eq!(notes.len(), 1);
    assert_eq!(
        (notes[0].name.as_str(), notes[0].msg.as_slice()),
        ("busy", &b"done"[..])
    );
}

/// `threads` threads of one initiator (configured by `cfg`, as its target
/// is) write and read their own slices at once, half through batches, half
/// through the synchronous helpers; every byte is checked.
fn threads_submit_at_once(threads: u64, cfg: EngineConfig) -> Pair {
    const SLICE: u64 = 4 * MIB;
    const ROUNDS: u64 = 6;
    let p = Pair::with_configs(cfg.clone(), cfg, threads * SLICE, threads * SLICE);
    let start = Barrier::new(threads as usize);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (p, start) = (&p, &start);
            s.spawn(move || {
                let (l0, r0) = (p.local + t * SLICE, p.remote + t * SLICE);
                start.wait();
                for round in 0..ROUNDS {
                    let seed = 1000 * t + round;
                    let op = if round % 2 == 0 { Op::Write } else { Op::Read };
                    // 16 tasks of odd lengths inside this thread's slice.
                    let tasks = 16 + t;
                    let len = SLICE / (tasks + 1) - 1 - t;
                    let src = match op {
                        Op::Write => l0,
                        Op::Read => r0,
                    };
                    // SAFETY: this thread's slice; no transfer runs on it.
                    unsafe { fill_fast(src, SLICE, seed) };
                    let reqs: Vec<Request> = (0..tasks)
                        .map(|i| Request {
                            op,
                            local: l0 + 1 + i * (len + 1),
                            segment: p.seg,
                            remote: r0 + 1 + (tasks - 1 - i) * (len + 1),
                            len,
                        })
                        .collect();
                    if t % 2 == 0 {
                        run_batch(&p.initiator, &reqs, None);
                    } else {
                        let local: Vec<u64> = reqs.iter().map(|r| r.local).collect();
                        let remote: Vec<u64> = reqs.iter().map(|r| r.remote).collect();
                        let lens: Vec<u64> = reqs.iter().map(|r| r.len).collect();
                        let done = match op {
                            Op::Write => p
                                .initiator
                                .batch_transfer_sync_write(&p.name, &local, &remote, &lens),
                            Op::Read => p
                                .initiator
                                .batch_transfer_sync_read(&p.name, &local, &remote, &lens),
                        };
                        done.expect("synchronous batch");
                    }
                    for (i, r) in reqs.iter().enumerate() {
                        let (s, d) = match op {
                            Op::Write => (r.local, r.remote),
                            Op::Read => (r.remote, r.local),
                        };
                        // SAFETY: as above.
                        unsafe { assert_same(bytes(d, r.len), bytes(s, r.len), &format!("thread {t} #{i}")) };
                    }
                }
            });
        }
    });
    p
}

#[test]
fn batch_notifications_arrive_after_the_data() {
    // 64 tasks of 512 KiB: more frames than one window (32), so a
    // notification sent too early would overtake data not yet sent.
    const TASKS: u64 = 64;
    const LEN: u64 = 512 * KIB;
    const ALL: u64 = TASKS * LEN;
    let p = Pair::new(ALL, ALL);
    for round in 0..8u64 {
        let op = if round % 2 == 1 { Op::Read } else { Op::Write };
        let seed = 500 + round;
        // SAFETY: engine buffers, no transfer runs.
        match op {
            Op::Write => unsafe { fill_fast(p.local, ALL, seed) },
            Op::Read => unsafe { fill_fast(p.remote, ALL, seed) },
        }
        let reqs: Vec<Request> = (0..TASKS)
            .map(|i| Request {
                op,
                local: p.local + i * LEN,
                segment: p.seg,
                remote: p.remote + i * LEN,
                len: LEN,
            })
            .collect();
        let batch = p.initiator.allocate_batch(TASKS as u32).expect("allocate");
        let msg = format!("round {round}");
        p.initiator
            .submit_with_notify(batch, &reqs, "kv-ready", msg.as_bytes())
            .expect("submit");
        // The receiver: when it sees the notification, the data is there
        // (in its own memory after writes, in the initiator's after reads).
        let notes = p.target.wait_notifications(WAIT);
        let (src, dst) = match op {
            Op::Write => (p.local, p.remote),
            Op::Read => (p.remote, p.local),
        };
        // Checked at once, the last task's span first (the one most likely
        // to be missing).
        // SAFETY: engine memory; by the rule under test the batch has
        // completed, so no transfer touches it.
        let in_place = unsafe {
            let last = ALL - LEN;
            bytes(dst + last, LEN) == bytes(src + last, LEN) && bytes(dst, ALL) == bytes(src, ALL)
        };
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].name, "kv-ready");
        assert_eq!(notes[0].msg, msg.as_bytes());
        assert_eq!(notes[0].from, p.initiator.segment_name());
        assert!(
            in_place,
            "round {round} ({op:?}): the notification arrived before the data"
        );
        check_completed(&p.initiator, batch, &reqs);
    }
}

#[test]
fn a_batch_to_two_segments_notifies_each_after_its_data() {
    // Writes to two targets in one batch: each target gets the
    // notification, and when it does, its own data is in place.
    const LEN: u64 = 8 * MIB;
    let initiator = engine();
    let local = initiator.alloc_memory(2 * LEN, Perm::LOCAL_ONLY).expect("alloc");
    // SAFETY: engine memory; no transfer runs yet.
    unsafe { fill_fast(local, 2 * LEN, 77) };
    let targets = [engine(), engine()];
    let mut reqs = Vec::new();
    let mut remotes = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let remote = t.alloc_memory(LEN, Perm::REMOTE_READ_WRITE).expect("alloc");
        let seg = initiator.open_segment(&t.segment_name()).expect("open");
        remotes.push(remote);
        // Each target's half in 1 MiB tasks: several frames per target.
        for k in 0..8 {
            reqs.push(Request {
                op: Op::Write,
                local: local + i as u64 * LEN + k * MIB,
                segment: seg,
                remote: remote + k * MIB,
                len: MIB,
            });
        }
    }
    let batch = initiator.allocate_batch(reqs.len() as u32).expect("allocate");
    initiator
        .submit_with_notify(batch, &reqs, "kv-ready", b"both")
        .expect("submit");
    for (i, t) in targets.iter().enumerate() {
        let notes = t.wait_notifications(WAIT);
        // SAFETY: engine memory; by the rule under test the batch's writes
        // to this target have landed.
        let in_place = unsafe { bytes(remotes[i], LEN) == bytes(local + i as u64 * LEN, LEN) };
        assert_eq!(notes.len(), 1, "target {i}: {notes:?}");
        assert_eq!(
            (notes[0].name.as_str(), notes[0].msg.as_slice()),
            ("kv-ready", &b"both"[..])
        );
        assert!(in_place, "target {i}: the notification arrived before the data");
    }
    check_completed(&initiator, batch, &reqs);
}

#[test]
fn notifications_of_many_batches_in_flight_all_arrive() {
    const BATCHES: u64 = 32;
    let p = Pair::new(BATCHES * 4 * KIB, BATCHES * 4 * KIB);
    // SAFETY: engine buffer, no transfer runs.
    unsafe { fill_fast(p.local, BATCHES * 4 * KIB, 77) };
    let mut batches = Vec::new();
    for i in 0..BATCHES {
        let req = Request {
            op: Op::Write,
            local: p.local + i * 4 * KIB,
            segment: p.seg,
            remote: p.remote + i * 4 * KIB,
            len: 4 * KIB,
        };
        let b = p.initiator.allocate_batch(1).expect("allocate");
        p.initiator
            .submit_with_notify(b, &[req], "done", &i.to_le_bytes())
            .expect("submit");
        batches.push((b, req));
    }
    for (b, req) in &batches {
        check_completed(&p.initiator, *b, std::slice::from_ref(req));
    }
    let mut got = BTreeSet::new();
    while got.len() < BATCHES as usize {
        let notes = p.target.wait_notifications(Duration::from_secs(5));
        assert!(
            !notes.is_empty(),
            "only {} of {BATCHES} batch notifications arrived: {got:?}",
            got.len()
        );
        for n in notes {
            assert_eq!(n.name, "done");
            let i = u64::from_le_bytes(n.msg.as_slice().try_into().expect("8-byte message"));
            assert!(got.insert(i), "notification {i} twice");
        }
    }
    // SAFETY: all batches completed.
    unsafe {
        assert_same(
            bytes(p.remote, BATCHES * 4 * KIB),
            bytes(p.local, BATCHES * 4 * KIB),
            "data",
        )
    };
}

#[test]
fn failed_batch_sends_no_notification() {
    let p = Pair::new(MIB, MIB);
    // The second task reads past the end of the target's region.
    let reqs = [
        Request {
            op: Op::Read,
            local: p.local,
            segment: p.seg,
            remote: p.remote,
            len: 4 * KIB,
        },
        Request {
            op: Op::Read,
            local: p.local + 8 * KIB,
            segment: p.seg,
            remote: p.remote + MIB - 8,
            len: 16,
        },
    ];
    let b = p.initiator.allocate_batch(2).expect("allocate");
    p.initiator
        .submit_with_notify(b, &reqs, "bad", b"x")
        .expect("submit");
    let st = p.initiator.wait_batch(b, WAIT).expect("wait");
    assert_eq!(st.state, TaskState::Failed(ErrorCode::NotAuthorized));
    p.initiator.free_batch(b).expect("free");
    // Notifications on one connection keep their order: if "bad" had been
    // sent, it would come before "after".
    p.initiator
        .send_notification(p.seg, "after", b"y")
        .expect("notify");
    let notes = p.target.wait_notifications(WAIT);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(
        (notes[0].name.as_str(), notes[0].msg.as_slice()),
        ("after", &b"y"[..])
    );
}

#[test]
fn notifications_sent_alone_arrive_in_order() {
    use te_proto::wire::{NOTIFY_MSG_MAX, NOTIFY_NAME_MAX};
    let p = Pair::new(4 * KIB, 4 * KIB);
    const N: usize = 200;
    let long_name = "n".repeat(NOTIFY_NAME_MAX);
    let mut sent = Vec::new();
    for i in 0..N {
        let (name, msg): (String, Vec<u8>) = match i {
            0 => ("empty".into(), Vec::new()),
            1 => (
                long_name.clone(),
                (0..NOTIFY_MSG_MAX).map(|j| pattern(9, j as u64)).collect(),
            ),
            _ => (format!("note{}", i % 7), format!("message {i}").into_bytes()),
        };
        // `NotReady` is the link's explicit backpressure: retry.
        let ok = te_tests::spin_until(WAIT, || match p.initiator.send_notification(p.seg, &name, &msg) {
            Ok(()) => true,
            Err(e) if e.code() == ErrorCode::NotReady => false,
            Err(e) => panic!("notification {i}: {e}"),
        });
        assert!(ok, "notification {i} refused for {WAIT:?}");
        sent.push((name, msg));
    }
    let mut got = Vec::new();
    while got.len() < N {
        let notes = p.target.wait_notifications(Duration::from_secs(5));
        assert!(
            !notes.is_empty(),
            "only {} of {N} notifications arrived",
            got.len()
        );
        got.extend(notes);
    }
    assert_eq!(got.len(), N);
    for (i, (n, (name, msg))) in got.iter().zip(&sent).enumerate() {
        assert_eq!((&n.name, &n.msg), (name, msg), "notification {i}");
        assert_eq!(n.from, p.initiator.segment_name());
    }
    assert!(p.target.take_notifications().is_empty());

    // Bad names and messages are refused, naming the length.
    for (name, msg, what) in [
        ("", &b"m"[..], "0 bytes"),
        (&*"x".repeat(NOTIFY_NAME_MAX + 1), &b"m"[..], "65 bytes"),
        ("ok", &vec![0u8; NOTIFY_MSG_MAX + 1][..], "2049 bytes"),
    ] {
        let e = p.initiator.send_notification(p.seg, name, msg).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Invalid, "{e}");
        assert!(e.message().contains(what), "{e}");
    }
}

#[test]
fn segment_info_lists_remote_regions_not_local_only_ones() {
    const N: u64 = 300; // more than one reply page (128 regions)
    let mut mem = vec![0u8; (N * 4 * KIB) as usize];
    let base = mem.as_mut_ptr() as u64;
    let perm = |i: u64| match i % 4 {
        0 => Perm::LOCAL_ONLY,
        1 => Perm::REMOTE_READ,
        2 => Perm::REMOTE_WRITE,
        _ => Perm::REMOTE_READ_WRITE,
    };
    // Regions of different lengths with gaps between them.
    let regions: Vec<(u64, u64, Perm)> = (0..N)
        .map(|i| (base + i * 4 * KIB, 1 + i * 13, perm(i)))
        .collect();
    let target = engine();
    let initiator = engine();
    // SAFETY: `mem` outlives both engines (declared before them).
    unsafe { target.register_memory_batch(&regions).expect("register") };
    let owned = target
        .alloc_memory(3 * MIB + 1, Perm::REMOTE_READ)
        .expect("alloc");
    let hidden = target.alloc_memory(MIB, Perm::LOCAL_ONLY).expect("alloc");
    let seg = initiator.open_segment(&target.segment_name()).expect("open");

    let mut want: Vec<Region> = regions
        .iter()
        .filter(|r| r.2 != Perm::LOCAL_ONLY)
        .map(|&(a, l, pm)| Region::new(a, l, Location::Cpu, pm))
        .collect();
    want.push(Region::new(owned, 3 * MIB + 1, Location::Cpu, Perm::REMOTE_READ));
    want.sort_by_key(|r| r.span.addr);
    let mut got = initiator.segment_info(seg).expect("segment info");
    got.sort_by_key(|r| r.span.addr);
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    assert!(got.iter().all(|r| r.span.addr != hidden));

    // Changes show in the next query.
    target.unregister_memory(regions[1].0).expect("unregister");
    target.free_memory(owned).expect("free");
    let got = initiator.segment_info(seg).expect("segment info");
    assert_eq!(got.len(), want.len() - 2);
    assert!(got
        .iter()
        .all(|r| r.span.addr != regions[1].0 && r.span.addr != owned));
    drop(initiator);
    drop(target);
    drop(mem);
}

#[test]
fn segment_info_from_eight_threads_at_once() {
    const N: u64 = 300; // three reply pages each
    let mem = vec![0u8; (N * 4 * KIB) as usize];
    let base = mem.as_ptr() as u64;
    let regions: Vec<(u64, u64, Perm)> = (0..N)
        .map(|i| (base + i * 4 * KIB, 4 * KIB, Perm::REMOTE_READ))
        .collect();
    let target = engine();
    let initiator = engine();
    // SAFETY: `mem` outlives both engines (declared before them).
    unsafe { target.register_memory_batch(&regions).expect("register") };
    let seg = initiator.open_segment(&target.segment_name()).expect("open");
    let start = Barrier::new(8);
    std::thread::scope(|s| {
        for t in 0..8 {
            let (initiator, start) = (&initiator, &start);
            s.spawn(move || {
                start.wait();
                for k in 0..10 {
                    let got = initiator.segment_info(seg);
                    let got = got.unwrap_or_else(|e| panic!("thread {t}, query {k}: {e}"));
                    assert_eq!(got.len(), N as usize, "thread {t}, query {k}");
                }
            });
        }
    });
    drop(initiator);
    drop(target);
    drop(mem);
}

/// Sanity of the helpers the byte checks rely on.
#[test]
fn pattern_helpers_differ_by_seed() {
    let mut a = vec![0u8; 4097];
    let mut b = vec![0u8; 4097];
    // SAFETY: our own vectors.
    unsafe {
        fill_fast(a.as_mut_ptr() as u64, 4097, 1);
        fill_fast(b.as_mut_ptr() as u64, 4097, 2);
        assert!(fast_pattern_matches(a.as_ptr() as u64, 4097, 1));
        assert!(!fast_pattern_matches(a.as_ptr() as u64, 4097, 2));
        fill(b.as_mut_ptr() as u64, 4097, 3);
    }
    assert_ne!(a, b);
    assert_eq!(b[5], pattern(3, 5));
}
