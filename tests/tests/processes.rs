//! Byte-exact transfers between two OS processes on loopback: this test
//! process runs the initiating [`Engine`]; a `te-peer` child process is the
//! target, its region filled with `pattern(seed, i)`.
//!
//! Every transfer is checked byte for byte, and so are guard bytes on both
//! sides of it: a transfer must land exactly where it was asked to and
//! nowhere else.

use std::time::Duration;

use te_runtime::{Engine, EngineConfig, Op, Perm, Request, SegmentId, TaskState};
use te_tests::proc::{check_pattern, fill_from, PeerProcess};

const PEER: &str = env!("CARGO_BIN_EXE_te-peer");
const MIB: u64 = 1 << 20;
/// Upper bound for any single wait: generous, only a hang reaches it.
const WAIT: Duration = Duration::from_secs(60);
/// Seed of the pattern local buffers start with, to detect stray writes.
const GUARD_SEED: u64 = 0xdead;
/// Guard bytes checked on each side of a transfer.
const GUARD: u64 = 61;

/// Sizes from 1 byte to 32 MiB, odd ones and frame-boundary neighbours.
const SIZES: &[u64] = &[
    1,
    2,
    3,
    7,
    63,
    4095,
    4096,
    4097,
    65_535,
    65_537,
    MIB - 1,
    MIB,
    MIB + 1,
    3 * MIB + 5,
    16 * MIB + 3,
    32 * MIB + 11,
];

/// An initiating engine in this process and a target `te-peer` process.
struct Pair {
    engine: Engine,
    peer: PeerProcess,
    seg: SegmentId,
}

fn pair(len: u64, seed: u64) -> Pair {
    let peer = PeerProcess::spawn(PEER, "127.0.0.1:0", len, seed, &[]);
    let engine = Engine::start(EngineConfig::default()).expect("engine starts");
    let seg = engine
        .open_segment(&peer.segment)
        .expect("open the peer's segment");
    Pair { engine, peer, seg }
}

/// A local buffer of `len` bytes filled with the guard pattern.
fn local(engine: &Engine, len: u64) -> u64 {
    let addr = engine
        .alloc_memory(len, Perm::LOCAL_ONLY)
        .expect("alloc local memory");
    // SAFETY: freshly allocated, owned by the test until freed.
    unsafe { fill_from(addr, len, GUARD_SEED, 0) };
    addr
}

/// Submits `reqs` as one batch, waits, and asserts that every task
/// completed with all its bytes.
fn run_batch(engine: &Engine, reqs: &[Request]) {
    let batch = engine.allocate_batch(reqs.len() as u32).expect("allocate batch");
    engine.submit(batch, reqs).expect("submit");
    let st = engine.wait_batch(batch, WAIT).expect("batch ends");
    let tasks = engine.tasks_status(batch).expect("tasks status");
    engine.free_batch(batch).expect("free batch");
    let total: u64 = reqs.iter().map(|r| r.len).sum();
    assert_eq!(
        st.state,
        TaskState::Completed,
        "batch of {} tasks: {st:?}",
        reqs.len()
    );
    assert_eq!(st.completed as usize, reqs.len(), "{st:?}");
    assert_eq!((st.failed, st.transferred, st.len), (0, total, total), "{st:?}");
    assert_eq!(tasks.len(), reqs.len());
    for (i, (t, r)) in tasks.iter().zip(reqs).enumerate() {
        assert_eq!(
            (t.state, t.transferred, t.len),
            (TaskState::Completed, r.len, r.len),
            "task {i}: {r:?}"
        );
    }
}

/// Checks the guard bytes around `[off, off + len)` of a local buffer of
/// `buf_len` bytes starting at `base` (filled with the guard pattern).
fn check_guards(base: u64, buf_len: u64, off: u64, len: u64) {
    let before = off.min(GUARD);
    let after = (buf_len - off - len).min(GUARD);
    // SAFETY: inside the local buffer; no transfer into it is running.
    unsafe {
        check_pattern(base + off - before, before, GUARD_SEED, off - before)
            .unwrap_or_else(|e| panic!("bytes before local offset {off} overwritten: {e}"));
        check_pattern(base + off + len, after, GUARD_SEED, off + len)
            .unwrap_or_else(|e| panic!("bytes after local offset {off} + {len} overwritten: {e}"));
    }
}

#[test]
fn reads_of_odd_sizes_at_unaligned_addresses_are_byte_exact() {
    let remote_len = 64 * MIB + 13;
    let p = pair(remote_len, 11);
    let buf_len = 34 * MIB;
    let buf = local(&p.engine, buf_len);

    // One synchronous read per size, at odd offsets on both sides.
    for (k, &n) in SIZES.iter().enumerate() {
        let roff = [0, 1, 3, 4093, MIB - 1, 7 * MIB + 5][k % 6] + k as u64;
        let loff = [5, 1, 0, 4097, 3][k % 5] + k as u64;
        // SAFETY: `buf` is ours; refresh the guard pattern of the span and
        // its guard bytes, which earlier reads may have overwritten.
        let (from, to) = (loff.saturating_sub(GUARD), (loff + n + GUARD).min(buf_len));
        unsafe { fill_from(buf + from, to - from, GUARD_SEED, from) };
        p.engine
            .transfer_sync_read(&p.peer.segment, buf + loff, p.peer.addr + roff, n)
            .unwrap_or_else(|e| panic!("read of {n} bytes at remote offset {roff}: {e}"));
        // SAFETY: the transfer ended; nothing writes `buf` now.
        unsafe { check_pattern(buf + loff, n, p.peer.seed, roff) }
            .unwrap_or_else(|e| panic!("read of {n} bytes at remote +{roff} into local +{loff}: {e}"));
        check_guards(buf, buf_len, loff, n);
    }

    // All sizes at once in one batch, packed at odd offsets.
    // SAFETY: `buf` is ours.
    unsafe { fill_from(buf, buf_len, GUARD_SEED, 0) };
    let (mut roff, mut loff) = (17, 3);
    let mut reqs = Vec::new();
    for &n in SIZES.iter().take(SIZES.len() - 1) {
        reqs.push(Request {
            op: Op::Read,
            local: buf + loff,
            segment: p.seg,
            remote: p.peer.addr + roff,
            len: n,
        });
        roff += n + 2;
        loff += n + GUARD;
    }
    assert!(roff <= remote_len && loff <= buf_len);
    run_batch(&p.engine, &reqs);
    for r in &reqs {
        let (roff, loff) = (r.remote - p.peer.addr, r.local - buf);
        // SAFETY: the batch ended.
        unsafe { check_pattern(r.local, r.len, p.peer.seed, roff) }
            .unwrap_or_else(|e| panic!("batched read of {} bytes at remote +{roff}: {e}", r.len));
        check_guards(buf, buf_len, loff, r.len);
    }
}

#[test]
fn writes_of_odd_sizes_at_unaligned_addresses_are_byte_exact() {
    const WSEED: u64 = 0x5eed;
    let remote_len = 2 * 60 * MIB + 7;
    let p = pair(remote_len, 12);
    let src_len = 34 * MIB;
    let src = local(&p.engine, src_len);
    // SAFETY: ours.
    unsafe { fill_from(src, src_len, WSEED, 0) };
    let back_len = 34 * MIB;
    let back = local(&p.engine, back_len);

    // Write one span per size to its own remote area, then read it back
    // with guard bytes around it from the untouched remote pattern.
    let mut roff = GUARD + 1;
    let mut written = Vec::new();
    for (k, &n) in SIZES.iter().enumerate() {
        let loff = [1, 0, 3, 4097, 4093][k % 5] + k as u64;
        p.engine
            .transfer_sync_write(&p.peer.segment, src + loff, p.peer.addr + roff, n)
            .unwrap_or_else(|e| panic!("write of {n} bytes at remote offset {roff}: {e}"));
        written.push((roff, loff, n));
        roff += n + 2 * GUARD + (k as u64 % 3);
    }
    assert!(roff <= remote_len / 2);
    for &(roff, loff, n) in &written {
        // SAFETY: ours.
        unsafe { fill_from(back, back_len, GUARD_SEED, 0) };
        let boff = 1 + n % 5;
        p.engine
            .transfer_sync_read(
                &p.peer.segment,
                back + boff,
                p.peer.addr + roff - GUARD,
                n + 2 * GUARD,
            )
            .unwrap_or_else(|e| panic!("read back of {n} bytes at remote offset {roff}: {e}"));
        // SAFETY: the read ended.
        unsafe {
            check_pattern(back + boff, GUARD, p.peer.seed, roff - GUARD)
                .unwrap_or_else(|e| panic!("remote bytes before a write of {n} at +{roff} changed: {e}"));
            check_pattern(back + boff + GUARD, n, WSEED, loff)
                .unwrap_or_else(|e| panic!("write of {n} bytes local +{loff} -> remote +{roff}: {e}"));
            check_pattern(back + boff + GUARD + n, GUARD, p.peer.seed, roff + n)
                .unwrap_or_else(|e| panic!("remote bytes after a write of {n} at +{roff} changed: {e}"));
        }
        check_guards(back, back_len, boff, n + 2 * GUARD);
    }

    // All sizes but the largest in one write batch to the second half of
    // the region, then one read batch back.
    let base = remote_len / 2;
    let (mut roff, mut loff) = (base + 5, 7);
    let mut writes = Vec::new();
    for &n in SIZES.iter().take(SIZES.len() - 1) {
        writes.push(Request {
            op: Op::Write,
            local: src + loff,
            segment: p.seg,
            remote: p.peer.addr + roff,
            len: n,
        });
        roff += n + 1;
        loff += n % 4093 + 1;
    }
    assert!(roff <= remote_len);
    run_batch(&p.engine, &writes);
    // SAFETY: ours.
    unsafe { fill_from(back, back_len, GUARD_SEED, 0) };
    let mut boff = 3;
    let reads: Vec<Request> = writes
        .iter()
        .map(|w| {
            let r = Request {
                op: Op::Read,
                local: back + boff,
                remote: w.remote,
                ..*w
            };
            boff += w.len + GUARD;
            r
        })
        .collect();
    run_batch(&p.engine, &reads);
    for (w, r) in writes.iter().zip(&reads) {
        // SAFETY: the batch ended.
        unsafe { check_pattern(r.local, r.len, WSEED, w.local - src) }.unwrap_or_else(|e| {
            panic!(
                "batched write of {} bytes local +{} -> remote +{}: {e}",
                w.len,
                w.local - src,
                w.remote - p.peer.addr
            )
        });
        check_guards(back, back_len, r.local - back, r.len);
    }
    // The single remote byte between two batched writes is untouched.
    for w in &writes[..writes.len() - 1] {
        let gap = w.remote + w.len;
        p.engine
            .transfer_sync_read(&p.peer.segment, back, gap, 1)
            .expect("read a gap byte");
        // SAFETY: the read ended.
        unsafe { check_pattern(back, 1, p.peer.seed, gap - p.peer.addr) }
            .unwrap_or_else(|e| panic!("remote byte after a batched write of {} changed: {e}", w.len));
    }
}

#[test]
fn a_256_mib_read_and_write_are_byte_exact() {
    const N: u64 = 256 * MIB;
    const WSEED: u64 = 0xbeef;
    let remote_len = N + 8;
    let p = pair(remote_len, 13);
    let a = local(&p.engine, N + 8);
    let b = local(&p.engine, N + 8);

    // Read 256 MiB: remote +3 -> local +5, one task through the batch API.
    run_batch(
        &p.engine,
        &[Request {
            op: Op::Read,
            local: a + 5,
            segment: p.seg,
            remote: p.peer.addr + 3,
            len: N,
        }],
    );
    // SAFETY: the batch ended.
    unsafe { check_pattern(a + 5, N, p.peer.seed, 3) }.unwrap_or_else(|e| panic!("256 MiB read: {e}"));
    check_guards(a, N + 8, 5, N);

    // Write 256 MiB of another pattern: local +1 -> remote +7, through the
    // synchronous helper; read it back into the other buffer.
    // SAFETY: ours.
    unsafe { fill_from(a, N + 8, WSEED, 0) };
    p.engine
        .transfer_sync_write(&p.peer.segment, a + 1, p.peer.addr + 7, N)
        .expect("256 MiB write");
    p.engine
        .transfer_sync_read(&p.peer.segment, b, p.peer.addr, N + 8)
        .expect("read back 256 MiB + 8");
    // SAFETY: the read ended.
    unsafe {
        check_pattern(b, 7, p.peer.seed, 0).unwrap_or_else(|e| panic!("bytes before the write: {e}"));
        check_pattern(b + 7, N, WSEED, 1).unwrap_or_else(|e| panic!("256 MiB write: {e}"));
        check_pattern(b + 7 + N, 1, p.peer.seed, 7 + N)
            .unwrap_or_else(|e| panic!("byte after the write: {e}"));
    }
}

/// A layout of `count` small spans of odd sizes, scattered over the remote
/// region in a permuted order with gaps, packed in the local buffer:
/// `(remote offset, local offset, len)` per task.
fn scattered(count: u64) -> (Vec<(u64, u64, u64)>, u64, u64) {
    let lens: Vec<u64> = (0..count).map(|i| 1 + (i * 7919) % 1500).collect();
    // Remote order: a permutation (multiplication by a unit modulo count).
    let mut remote = vec![0; count as usize];
    let mut roff = 1;
    for k in 0..count {
        let i = ((k * 2897) % count) as usize;
        remote[i] = roff;
        roff += lens[i] + 1 + k % 3;
    }
    let mut spans = Vec::new();
    let mut loff = 3;
    for i in 0..count as usize {
        spans.push((remote[i], loff, lens[i]));
        loff += lens[i] + (i as u64 % 2);
    }
    (spans, roff + 1, loff + 1)
}

#[test]
fn batches_of_4096_scattered_reads_and_writes_are_byte_exact() {
    const WSEED: u64 = 0xfeed;
    let (spans, remote_need, local_len) = scattered(4096);
    let remote_len = remote_need + 9;
    let p = pair(remote_len, 14);
    let dst = local(&p.engine, local_len);
    let src = local(&p.engine, local_len);
    let back = local(&p.engine, remote_len);
    let req = |op, base: u64, &(roff, loff, len): &(u64, u64, u64)| Request {
        op,
        local: base + loff,
        segment: p.seg,
        remote: p.peer.addr + roff,
        len,
    };

    // 4096 reads in one batch.
    let reads: Vec<Request> = spans.iter().map(|s| req(Op::Read, dst, s)).collect();
    run_batch(&p.engine, &reads);
    for (i, &(roff, loff, len)) in spans.iter().enumerate() {
        // SAFETY: the batch ended.
        unsafe { check_pattern(dst + loff, len, p.peer.seed, roff) }
            .unwrap_or_else(|e| panic!("read task {i} ({len} bytes at remote +{roff}): {e}"));
    }

    // 4096 writes of another pattern in one batch.
    // SAFETY: ours.
    unsafe { fill_from(src, local_len, WSEED, 0) };
    let writes: Vec<Request> = spans.iter().map(|s| req(Op::Write, src, s)).collect();
    run_batch(&p.engine, &writes);

    // Read them back with the synchronous batch helper (4096 entries) ...
    // SAFETY: ours.
    unsafe { fill_from(dst, local_len, GUARD_SEED, 0) };
    let locals: Vec<u64> = spans.iter().map(|s| dst + s.1).collect();
    let remotes: Vec<u64> = spans.iter().map(|s| p.peer.addr + s.0).collect();
    let lens: Vec<u64> = spans.iter().map(|s| s.2).collect();
    p.engine
        .batch_transfer_sync_read(&p.peer.segment, &locals, &remotes, &lens)
        .expect("batch_transfer_sync_read of 4096 spans");
    for (i, &(roff, loff, len)) in spans.iter().enumerate() {
        // SAFETY: the transfer ended.
        unsafe { check_pattern(dst + loff, len, WSEED, loff) }
            .unwrap_or_else(|e| panic!("write task {i} ({len} bytes at remote +{roff}): {e}"));
    }

    // ... and the whole region at once: every byte outside the written
    // spans still has the peer's pattern.
    p.engine
        .transfer_sync_read(&p.peer.segment, back, p.peer.addr, remote_len)
        .expect("read the whole region");
    let mut by_remote = spans.clone();
    by_remote.sort_unstable();
    let mut at = 0;
    for &(roff, loff, len) in by_remote.iter().chain([(remote_len, 0, 0)].iter()) {
        // SAFETY: the read ended.
        unsafe {
            check_pattern(back + at, roff - at, p.peer.seed, at)
                .unwrap_or_else(|e| panic!("remote gap at +{at}..+{roff} changed: {e}"));
            check_pattern(back + roff, len, WSEED, loff)
                .unwrap_or_else(|e| panic!("remote span at +{roff} ({len} bytes): {e}"));
        }
        at = roff + len;
    }
}

#[test]
fn eight_threads_against_two_peer_processes() {
    const THREADS: u64 = 8;
    const ROUNDS: u64 = 12;
    const AREA: u64 = 2 * MIB;
    let peers = [
        PeerProcess::spawn(PEER, "127.0.0.1:0", 4 * AREA + 1, 21, &[]),
        PeerProcess::spawn(PEER, "127.0.0.1:0", 4 * AREA + 1, 22, &[]),
    ];
    let engine = Engine::start(EngineConfig::default()).expect("engine starts");
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (engine, peer) = (&engine, &peers[t as usize % 2]);
            s.spawn(move || {
                // Each thread owns a 2 MiB area (at an odd offset) of one peer.
                let area = peer.addr + 1 + (t / 2) * AREA;
                let src = engine.alloc_memory(AREA, Perm::LOCAL_ONLY).expect("alloc");
                let dst = engine.alloc_memory(AREA, Perm::LOCAL_ONLY).expect("alloc");
                let seg = engine.open_segment(&peer.segment).expect("open segment");
                for round in 0..ROUNDS {
                    let seed = 1000 * t + round;
                    let n = AREA - round * 4099;
                    // SAFETY: ours.
                    unsafe { fill_from(src, AREA, seed, 0) };
                    let chunk = 65_536 + t * 7 + round;
                    let reqs = |op, base: u64| -> Vec<Request> {
                        (0..n.div_ceil(chunk))
                            .map(|i| Request {
                                op,
                                local: base + i * chunk,
                                segment: seg,
                                remote: area + i * chunk,
                                len: chunk.min(n - i * chunk),
                            })
                            .collect()
                    };
                    run_batch(engine, &reqs(Op::Write, src));
                    run_batch(engine, &reqs(Op::Read, dst));
                    // SAFETY: the batches ended.
                    unsafe { check_pattern(dst, n, seed, 0) }
                        .unwrap_or_else(|e| panic!("thread {t} round {round}: {e}"));
                }
                engine.free_memory(src).expect("free");
                engine.free_memory(dst).expect("free");
            });
        }
    });
}
