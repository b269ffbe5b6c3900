//! The RDMA path between engines (docs/RDMA.md), on the fake
//! `libibverbs.so.1` of te-fake-verbs (no NIC needed): two engines in this
//! process (the fake's NIC serves the queue pairs of both), or this process
//! and a `te-peer` child whose verbs library is the fake too.
//!
//! - reads and writes of host memory move exact bytes over RDMA, both
//!   directions, 4 KiB to 4 MiB + 3 at offsets inside the regions, in one
//!   process and across processes; a batch of 4096 reads lands every byte;
//! - the bytes went over RDMA: the tasks are forced onto `Path::Rdma`
//!   (where the link has no RDMA they fail `NotSupported`),
//!   `segment_path` says `Rdma`, and the fake counts the work: `served`
//!   (requests this process's responder served, so the owner's side when
//!   both engines are here) and `calls("wc")` (work requests this
//!   process's queue pairs executed, so the initiator's side);
//! - a batch's notification comes after its RDMA data;
//! - the owner's NIC enforces its permissions: no write into a read-only
//!   region, no read of a local-only one, nothing of a region once its
//!   unregister returned;
//! - a peer killed with transfers in flight ends every one of them;
//! - without RDMA on one side `Path::Auto` takes the other paths, and
//!   `Path::Rdma` fails `NotSupported` naming why.
//!
//! The fake's device count and counters are process-wide, so every test
//! holds [`fake_verbs`]'s guard and they run one at a time. It offers one
//! device to this process; an engine here without RDMA has it turned off
//! (`RdmaSettings::enabled: false`), and a side whose fake has no device
//! at all is a `te-peer` started with `TE_FAKE_VERBS_DEVICES=0`.

use std::time::Duration;

use te_runtime::{
    BatchId, Engine, EngineConfig, ErrorCode, Op, Path, Perm, Request, SegmentId, Status, TaskState,
};
use te_tests::proc::{check_pattern, fill_from, PeerProcess};
use te_tests::verbs::{config_on_fake, config_without_rdma, fake_verbs, peer_env};
use te_tests::{spin_until, transfer};

const PEER: &str = env!("CARGO_BIN_EXE_te-peer");
const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// Upper bound for any single wait: generous, only a hang reaches it.
const WAIT: Duration = Duration::from_secs(60);
/// How long a new link may take to have RDMA: its queue pairs are
/// exchanged (`RdmaConn`) after the handshake, so possibly after
/// `open_segment` returned. Only a link that never gets RDMA reaches it.
const RDMA_READY: Duration = Duration::from_secs(10);
/// Seed of the pattern local buffers start with, to detect stray writes.
const GUARD_SEED: u64 = 0xdead;
/// Guard bytes checked on each side of a transfer.
const GUARD: u64 = 61;
/// A page, one work request of te's default `max_wr_bytes` (1 MiB), and
/// several work requests with an odd tail; each with (local offset, remote
/// offset) inside the regions.
const SIZES: &[(u64, u64, u64)] = &[(4 * KIB, 0, 4096), (MIB, 4096 + 7, 1), (4 * MIB + 3, 3, 12_345)];
/// The regions of the round trips: the largest size plus its offsets.
const REGION: u64 = 8 * MIB;

// ---- set-up ----

/// Two engines in this process: `owner` with `remote_len` bytes of
/// `perm` memory filled with `pattern(OWNER_SEED, i)`, `initiator` with
/// `local_len` bytes of local memory filled with the guard pattern and the
/// owner's segment opened.
struct Pair {
    owner: Engine,
    initiator: Engine,
    remote: u64,
    local: u64,
    seg: SegmentId,
}

const OWNER_SEED: u64 = 41;

impl Pair {
    /// Both engines with RDMA on the fake and `Path::Rdma` for every task.
    fn rdma(remote_len: u64, perm: Perm, local_len: u64) -> Pair {
        let p = Pair::with(
            config_on_fake(Path::Rdma),
            config_on_fake(Path::Rdma),
            remote_len,
            perm,
            local_len,
        );
        assert_has_rdma(&p.owner);
        assert_has_rdma(&p.initiator);
        p
    }

    fn with(
        owner: EngineConfig,
        initiator: EngineConfig,
        remote_len: u64,
        perm: Perm,
        local_len: u64,
    ) -> Pair {
        let owner = Engine::start(owner).expect("owner starts");
        let initiator = Engine::start(initiator).expect("initiator starts");
        let remote = owner.alloc_memory(remote_len, perm).expect("alloc remote");
        let local = initiator
            .alloc_memory(local_len, Perm::LOCAL_ONLY)
            .expect("alloc local");
        // SAFETY: fresh engine memory; no transfer runs.
        unsafe {
            fill_from(remote, remote_len, OWNER_SEED, 0);
            fill_from(local, local_len, GUARD_SEED, 0);
        }
        let seg = initiator
            .open_segment(&owner.segment_name())
            .expect("open the owner");
        Pair {
            owner,
            initiator,
            remote,
            local,
            seg,
        }
    }
}

/// A `te-peer` serving a region of `len` bytes filled with `pattern(seed,
/// i)`, its verbs library the fake offering `devices` devices, with
/// `extra` options and `env` variables.
fn rdma_peer(len: u64, seed: u64, devices: u32, extra: &[&str], env: &[(&str, &str)]) -> PeerProcess {
    let env = peer_env(devices, env);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    PeerProcess::spawn_with_env(PEER, "127.0.0.1:0", len, seed, extra, &env)
}

/// An engine in this process with RDMA on the fake and `Path::Rdma`, and
/// `local_len` bytes of local memory filled with the guard pattern.
fn rdma_engine(cfg: EngineConfig, local_len: u64) -> (Engine, u64) {
    let e = Engine::start(cfg).expect("engine starts");
    assert_has_rdma(&e);
    let local = e.alloc_memory(local_len, Perm::LOCAL_ONLY).expect("alloc local");
    // SAFETY: fresh engine memory; no transfer runs.
    unsafe { fill_from(local, local_len, GUARD_SEED, 0) };
    (e, local)
}

/// The engine opened the fake's device at start (else nothing here is
/// about RDMA).
fn assert_has_rdma(e: &Engine) {
    assert!(
        e.rdma_status().starts_with("RDMA: "),
        "the engine did not open the fake's device: {}",
        e.rdma_status()
    );
}

/// Waits until the link to `seg` has RDMA (`segment_path` says `Rdma`).
/// When it never does, panics naming the path it has and why a one-byte
/// `Path::Rdma` read from `remote` into `local` fails on it.
fn wait_for_rdma(e: &Engine, seg: SegmentId, local: u64, remote: u64) {
    if spin_until(RDMA_READY, || matches!(e.segment_path(seg), Ok(Path::Rdma))) {
        return;
    }
    let path = e.segment_path(seg);
    let probe = transfer(e, seg, Op::Read, local, remote, 1, Path::Rdma);
    panic!("the link has no RDMA after {RDMA_READY:?}: segment_path {path:?}; a Path::Rdma read: {probe:?}");
}

/// One transfer over `Path::Rdma` that must complete.
fn rdma(e: &Engine, seg: SegmentId, op: Op, local: u64, remote: u64, len: u64) {
    transfer(e, seg, op, local, remote, len, Path::Rdma).unwrap_or_else(|err| {
        panic!("RDMA {op:?} of {len} bytes (local {local:#x}, remote {remote:#x}): {err}")
    });
}

/// One transfer over `path` that must fail: its task's end and the error
/// the engine recorded for it.
fn failing(
    e: &Engine,
    seg: SegmentId,
    op: Op,
    local: u64,
    remote: u64,
    len: u64,
    path: Path,
) -> (TaskState, Status) {
    let batch = e.allocate_batch(1).expect("allocate");
    let req = Request {
        op,
        local,
        segment: seg,
        remote,
        len,
    };
    e.submit_via(batch, &[req], path).expect("submit");
    let st = e.wait_batch(batch, WAIT).expect("the transfer ends");
    let task = e.tasks_status(batch).expect("tasks")[0];
    let err = e.batch_error(batch);
    e.free_batch(batch).expect("free");
    assert_ne!(
        st.state,
        TaskState::Completed,
        "{op:?} of {len} bytes over {path} completed"
    );
    let err = err.unwrap_or_else(|| panic!("{op:?} ended {:?} and recorded no error", task.state));
    (task.state, err)
}

/// Checks the guard bytes around `[off, off + len)` of a buffer of
/// `buf_len` bytes at `base`, filled with `pattern(seed, i)`.
fn check_guards(base: u64, buf_len: u64, off: u64, len: u64, seed: u64, what: &str) {
    let before = off.min(GUARD);
    let after = (buf_len - off - len).min(GUARD);
    // SAFETY: inside the buffer; no transfer into it is running.
    unsafe {
        check_pattern(base + off - before, before, seed, off - before)
            .unwrap_or_else(|e| panic!("{what}: bytes before offset {off} overwritten: {e}"));
        check_pattern(base + off + len, after, seed, off + len)
            .unwrap_or_else(|e| panic!("{what}: bytes after offset {off} + {len} overwritten: {e}"));
    }
}

/// Waits for `batch` and asserts that every one of its `reqs` completed
/// with all its bytes; frees the batch.
fn check_completed(e: &Engine, batch: BatchId, reqs: &[Request]) {
    let st = e.wait_batch(batch, WAIT).expect("the batch ends");
    let total: u64 = reqs.iter().map(|r| r.len).sum();
    assert_eq!(
        st.state,
        TaskState::Completed,
        "{st:?}: {:?}",
        e.batch_error(batch)
    );
    assert_eq!(
        (st.total, st.completed, st.failed, st.transferred),
        (reqs.len() as u32, reqs.len() as u32, 0, total),
        "{st:?}"
    );
    let tasks = e.tasks_status(batch).expect("tasks status");
    for (i, (t, r)) in tasks.iter().zip(reqs).enumerate() {
        assert_eq!(
            (t.state, t.transferred),
            (TaskState::Completed, r.len),
            "task {i}: {r:?}"
        );
    }
    e.free_batch(batch).expect("free batch");
}

/// A `Path::Rdma` failure names why the link has no RDMA: `reason`.
fn assert_names_why_no_rdma(err: &Status, what: &str, reason: &str) {
    assert_eq!(err.code(), ErrorCode::NotSupported, "{what}: {err}");
    let why = err
        .message()
        .split_once("RDMA path not available: ")
        .map(|(_, why)| why);
    assert!(
        why.is_some_and(|why| !why.trim().is_empty()),
        "{what}: the error does not say why RDMA is not available: {err}"
    );
    assert!(
        err.message().contains(reason),
        "{what}: {err} does not say {reason:?}"
    );
}

// ---- bytes over RDMA ----

#[test]
fn reads_and_writes_between_two_engines_of_one_process_move_exact_bytes_over_rdma() {
    let (_g, fake) = fake_verbs();
    let p = Pair::rdma(REGION, Perm::REMOTE_READ_WRITE, REGION);
    wait_for_rdma(&p.initiator, p.seg, p.local, p.remote);
    for (k, &(n, loff, roff)) in SIZES.iter().enumerate() {
        let (local, remote) = (p.local + loff, p.remote + roff);
        // Read: the owner's pattern lands in the local buffer, exactly there.
        let served = fake.served();
        rdma(&p.initiator, p.seg, Op::Read, local, remote, n);
        assert!(
            fake.served() > served,
            "the owner's NIC served no request for the read of {n} bytes"
        );
        // SAFETY: the read ended; nothing writes the local buffer now.
        unsafe { check_pattern(local, n, OWNER_SEED, roff) }
            .unwrap_or_else(|e| panic!("read of {n} bytes at remote offset {roff}: {e}"));
        check_guards(
            p.local,
            REGION,
            loff,
            n,
            GUARD_SEED,
            "local buffer after the read",
        );
        // Write: a fresh pattern lands in the owner's region, exactly there.
        let seed = 100 + k as u64;
        // SAFETY: our memory; no transfer runs on it.
        unsafe { fill_from(local, n, seed, 0) };
        let served = fake.served();
        rdma(&p.initiator, p.seg, Op::Write, local, remote, n);
        assert!(
            fake.served() > served,
            "the owner's NIC served no request for the write of {n} bytes"
        );
        // SAFETY: the write ended; the owner's region is ours to read here.
        unsafe { check_pattern(remote, n, seed, 0) }
            .unwrap_or_else(|e| panic!("write of {n} bytes at remote offset {roff}: {e}"));
        check_guards(
            p.remote,
            REGION,
            roff,
            n,
            OWNER_SEED,
            "owner's region after the write",
        );
        // Restore both buffers for the next size.
        // SAFETY: no transfer runs.
        unsafe {
            fill_from(remote, n, OWNER_SEED, roff);
            fill_from(local, n, GUARD_SEED, loff);
        }
    }
    assert_eq!(p.initiator.segment_path(p.seg).expect("path"), Path::Rdma);
}

#[test]
fn reads_and_writes_to_a_peer_process_move_exact_bytes_over_rdma() {
    let (_g, fake) = fake_verbs();
    let peer = rdma_peer(REGION, 7, 1, &["--path", "rdma"], &[]);
    let (e, local) = rdma_engine(config_on_fake(Path::Rdma), 2 * REGION);
    let seg = e.open_segment(&peer.segment).expect("open the peer");
    wait_for_rdma(&e, seg, local, peer.addr);
    // Reads into the first half, read-backs of writes into the second,
    // each filled with the guard pattern from its own start.
    let back = local + REGION;
    // SAFETY: our memory; no transfer runs on it.
    unsafe { fill_from(back, REGION, GUARD_SEED, 0) };
    for (k, &(n, loff, roff)) in SIZES.iter().enumerate() {
        let remote = peer.addr + roff;
        // The work requests are executed by this process's queue pair.
        let wrs = fake.calls("wc");
        rdma(&e, seg, Op::Read, local + loff, remote, n);
        assert!(
            fake.calls("wc") > wrs,
            "no work request executed for the read of {n} bytes"
        );
        // SAFETY: the read ended.
        unsafe { check_pattern(local + loff, n, peer.seed, roff) }
            .unwrap_or_else(|e| panic!("read of {n} bytes at remote offset {roff}: {e}"));
        check_guards(local, REGION, loff, n, GUARD_SEED, "local buffer after the read");
        // Write a fresh pattern over the same span and read it back.
        let seed = 200 + k as u64;
        // SAFETY: our memory; no transfer runs on it.
        unsafe { fill_from(local + loff, n, seed, 0) };
        let wrs = fake.calls("wc");
        rdma(&e, seg, Op::Write, local + loff, remote, n);
        assert!(
            fake.calls("wc") > wrs,
            "no work request executed for the write of {n} bytes"
        );
        rdma(&e, seg, Op::Read, back + loff, remote, n);
        // SAFETY: the transfers ended.
        unsafe { check_pattern(back + loff, n, seed, 0) }
            .unwrap_or_else(|e| panic!("write of {n} bytes at remote offset {roff}, read back: {e}"));
        check_guards(back, REGION, loff, n, GUARD_SEED, "read-back buffer");
        // Restore the peer's pattern and the local guards.
        // SAFETY: our memory; no transfer runs on it.
        unsafe { fill_from(local + loff, n, peer.seed, roff) };
        rdma(&e, seg, Op::Write, local + loff, remote, n);
        // SAFETY: as above.
        unsafe {
            fill_from(local + loff, n, GUARD_SEED, loff);
            fill_from(back + loff, n, GUARD_SEED, loff);
        }
    }
    assert_eq!(e.segment_path(seg).expect("path"), Path::Rdma);
}

#[test]
fn a_batch_of_4096_rdma_reads_lands_every_byte_in_its_own_place() {
    const TASKS: u64 = 4096;
    const LEN: u64 = 4 * KIB;
    const ALL: u64 = TASKS * LEN;
    // Task i reads remote block (i * 1031) mod 4096 (a permutation: 1031 is
    // odd) into local block i, so no two tasks' spans are adjacent on both
    // sides and none can be merged with another.
    let block = |i: u64| (i * 1031) % TASKS;
    let (_g, fake) = fake_verbs();
    let p = Pair::rdma(ALL, Perm::REMOTE_READ_WRITE, ALL);
    wait_for_rdma(&p.initiator, p.seg, p.local, p.remote);
    let reqs: Vec<Request> = (0..TASKS)
        .map(|i| Request {
            op: Op::Read,
            local: p.local + i * LEN,
            segment: p.seg,
            remote: p.remote + block(i) * LEN,
            len: LEN,
        })
        .collect();
    let served = fake.served();
    let batch = p.initiator.allocate_batch(TASKS as u32).expect("allocate");
    p.initiator.submit(batch, &reqs).expect("submit");
    check_completed(&p.initiator, batch, &reqs);
    // Each task is at least one RDMA READ the owner's NIC served.
    let requests = fake.served() - served;
    assert!(
        requests >= TASKS,
        "the owner's NIC served {requests} requests for {TASKS} reads"
    );
    for i in 0..TASKS {
        // SAFETY: the batch ended.
        unsafe { check_pattern(p.local + i * LEN, LEN, OWNER_SEED, block(i) * LEN) }
            .unwrap_or_else(|e| panic!("task {i} (remote block {}): {e}", block(i)));
    }
}

// ---- notifications ----

#[test]
fn a_notification_after_an_rdma_batch_finds_all_its_data_in_place() {
    // 64 tasks of 512 KiB, each several work requests' worth of data in
    // flight: a notification sent before the last completion would find
    // data missing.
    const TASKS: u64 = 64;
    const LEN: u64 = 512 * KIB;
    const ALL: u64 = TASKS * LEN;
    let (_g, fake) = fake_verbs();
    // `submit_with_notify` takes the engine's path: the initiator's is Rdma.
    let p = Pair::rdma(ALL, Perm::REMOTE_READ_WRITE, ALL);
    wait_for_rdma(&p.initiator, p.seg, p.local, p.remote);
    for round in 0..4u64 {
        let op = if round % 2 == 0 { Op::Write } else { Op::Read };
        let seed = 500 + round;
        let (src, dst) = match op {
            Op::Write => (p.local, p.remote),
            Op::Read => (p.remote, p.local),
        };
        // SAFETY: engine memory; no transfer runs.
        unsafe { fill_from(src, ALL, seed, 0) };
        let reqs: Vec<Request> = (0..TASKS)
            .map(|i| Request {
                op,
                local: p.local + i * LEN,
                segment: p.seg,
                remote: p.remote + i * LEN,
                len: LEN,
            })
            .collect();
        let served = fake.served();
        let batch = p.initiator.allocate_batch(TASKS as u32).expect("allocate");
        let msg = format!("round {round}");
        p.initiator
            .submit_with_notify(batch, &reqs, "kv-ready", msg.as_bytes())
            .expect("submit");
        // The receiver: when it has the notification, the data is there (in
        // its own memory after writes, in the initiator's after reads).
        let notes = p.owner.wait_notifications(WAIT);
        // Checked at once, the last task's span first (the one most likely
        // to be missing).
        // SAFETY: engine memory; by the rule under test the batch has
        // completed, so no transfer touches it.
        let in_place = unsafe {
            check_pattern(dst + ALL - LEN, LEN, seed, ALL - LEN)
                .and_then(|()| check_pattern(dst, ALL, seed, 0))
        };
        assert_eq!(notes.len(), 1, "round {round}: {notes:?}");
        assert_eq!(
            (notes[0].name.as_str(), notes[0].msg.as_slice()),
            ("kv-ready", msg.as_bytes())
        );
        assert_eq!(notes[0].from, p.initiator.segment_name());
        if let Err(e) = in_place {
            panic!("round {round} ({op:?}): the notification arrived before the data: {e}");
        }
        check_completed(&p.initiator, batch, &reqs);
        assert!(fake.served() > served, "round {round}: no RDMA request served");
    }
}

#[test]
fn a_peer_process_notified_after_rdma_writes_finds_the_data_in_its_memory() {
    const TASKS: u64 = 64;
    const LEN: u64 = 256 * KIB;
    const ALL: u64 = TASKS * LEN;
    let (_g, fake) = fake_verbs();
    let peer = rdma_peer(ALL, 9, 1, &["--path", "rdma", "--check-notify"], &[]);
    let (e, local) = rdma_engine(config_on_fake(Path::Rdma), ALL);
    let seg = e.open_segment(&peer.segment).expect("open the peer");
    wait_for_rdma(&e, seg, local, peer.addr);
    for round in 0..4u64 {
        // Each round writes a new pattern over the whole region; the peer
        // checks it when the notification arrives.
        let seed = 900 + round;
        // SAFETY: our memory; no transfer runs on it.
        unsafe { fill_from(local, ALL, seed, 0) };
        let reqs: Vec<Request> = (0..TASKS)
            .map(|i| Request {
                op: Op::Write,
                local: local + i * LEN,
                segment: seg,
                remote: peer.addr + i * LEN,
                len: LEN,
            })
            .collect();
        let wrs = fake.calls("wc");
        let batch = e.allocate_batch(TASKS as u32).expect("allocate");
        let msg = format!("0 {ALL} {seed} 0");
        e.submit_with_notify(batch, &reqs, "check", msg.as_bytes())
            .expect("submit");
        let verdict = peer.line(WAIT);
        check_completed(&e, batch, &reqs);
        assert_eq!(verdict.as_deref(), Some("NOTIFY ok 0"), "round {round}");
        let executed = fake.calls("wc") - wrs;
        assert!(
            executed >= TASKS,
            "round {round}: {executed} work requests for {TASKS} writes"
        );
    }
}

// ---- the owner's permissions ----

#[test]
fn a_write_into_a_read_only_region_fails_not_authorized_over_rdma_and_writes_nothing() {
    const LEN: u64 = MIB;
    let (_g, _fake) = fake_verbs();
    let p = Pair::rdma(LEN, Perm::REMOTE_READ, LEN);
    // The region is readable over RDMA: the link has it, and the read works.
    wait_for_rdma(&p.initiator, p.seg, p.local, p.remote);
    rdma(&p.initiator, p.seg, Op::Read, p.local, p.remote, LEN);
    // SAFETY: the read ended.
    unsafe { check_pattern(p.local, LEN, OWNER_SEED, 0) }.expect("read of the read-only region");
    // SAFETY: our memory; no transfer runs on it.
    unsafe { fill_from(p.local, LEN, 77, 0) };
    let (state, err) = failing(
        &p.initiator,
        p.seg,
        Op::Write,
        p.local,
        p.remote + 4096,
        64 * KIB,
        Path::Rdma,
    );
    assert_eq!(state, TaskState::Failed(ErrorCode::NotAuthorized), "{err}");
    assert_eq!(err.code(), ErrorCode::NotAuthorized, "{err}");
    // SAFETY: the write ended; the owner's memory is ours to read here.
    unsafe { check_pattern(p.remote, LEN, OWNER_SEED, 0) }
        .expect("the refused write changed the owner's region");
}

#[test]
fn a_read_of_a_local_only_region_over_rdma_fails_and_leaves_the_local_buffer_untouched() {
    const LEN: u64 = MIB;
    let (_g, _fake) = fake_verbs();
    let p = Pair::rdma(LEN, Perm::REMOTE_READ_WRITE, LEN);
    let private = p
        .owner
        .alloc_memory(LEN, Perm::LOCAL_ONLY)
        .expect("alloc local-only");
    // SAFETY: fresh engine memory.
    unsafe { fill_from(private, LEN, 55, 0) };
    wait_for_rdma(&p.initiator, p.seg, p.local, p.remote);
    // The link carries RDMA reads of the owner's remote region...
    rdma(&p.initiator, p.seg, Op::Read, p.local, p.remote, 4096);
    // SAFETY: the read ended.
    unsafe { check_pattern(p.local, 4096, OWNER_SEED, 0) }.expect("read of the remote region");
    // SAFETY: our memory; no transfer runs on it.
    unsafe { fill_from(p.local, 4096, GUARD_SEED, 0) };
    // ...but none of its local-only one: the NIC registered it with no
    // remote access (and the owner lists no rkey for it).
    let (state, err) = failing(&p.initiator, p.seg, Op::Read, p.local, private, LEN, Path::Rdma);
    assert!(
        matches!(
            state,
            TaskState::Failed(ErrorCode::NotFound | ErrorCode::NotAuthorized)
        ),
        "{state:?}: {err}"
    );
    // SAFETY: the read ended.
    unsafe { check_pattern(p.local, LEN, GUARD_SEED, 0) }
        .expect("the refused read wrote into the local buffer");
}

#[test]
fn after_unregister_returns_the_region_is_out_of_rdma_reach_and_memory_registered_later_is_not() {
    const LEN: u64 = MIB;
    let (_g, _fake) = fake_verbs();
    // User memory of the owner, registered for remote reads and writes;
    // declared before the engines, so that it outlives them when a check
    // fails while it is registered.
    let mut first = vec![0u8; LEN as usize];
    let mut second = vec![0u8; LEN as usize];
    let p = Pair::rdma(4096, Perm::REMOTE_READ_WRITE, LEN);
    let addr = first.as_mut_ptr() as u64;
    // SAFETY: the vector outlives the registration (above).
    unsafe {
        fill_from(addr, LEN, 61, 0);
        p.owner.register_memory(addr, LEN, Perm::REMOTE_READ_WRITE)
    }
    .expect("register");
    wait_for_rdma(&p.initiator, p.seg, p.local, addr);
    rdma(&p.initiator, p.seg, Op::Read, p.local, addr, LEN);
    // SAFETY: the read ended.
    unsafe { check_pattern(p.local, LEN, 61, 0) }.expect("read before unregister");
    p.owner.unregister_memory(addr).expect("unregister");
    // A write of the unregistered region fails and changes none of it.
    // SAFETY: our memory; no transfer runs on it.
    unsafe { fill_from(p.local, LEN, 62, 0) };
    let (state, err) = failing(&p.initiator, p.seg, Op::Write, p.local, addr, LEN, Path::Rdma);
    assert!(
        matches!(state, TaskState::Failed(_)),
        "write after unregister ended {state:?}: {err}"
    );
    // SAFETY: the vector is ours; nothing may touch it any more.
    unsafe { check_pattern(addr, LEN, 61, 0) }.expect("a write after unregister reached the memory");
    // A read of it fails and brings nothing. (A refusal by the owner's NIC
    // ends the link's queue pair; the read goes on the link's next one.)
    // SAFETY: our memory; no transfer runs on it.
    unsafe { fill_from(p.local, LEN, GUARD_SEED, 0) };
    wait_for_rdma(&p.initiator, p.seg, p.local, p.remote);
    let (state, err) = failing(&p.initiator, p.seg, Op::Read, p.local, addr, LEN, Path::Rdma);
    assert!(
        matches!(state, TaskState::Failed(_)),
        "read after unregister ended {state:?}: {err}"
    );
    // SAFETY: the read ended.
    unsafe { check_pattern(p.local, LEN, GUARD_SEED, 0) }.expect("a read after unregister brought bytes");
    // Other memory registered now is read over RDMA.
    let addr = second.as_mut_ptr() as u64;
    // SAFETY: the vector outlives the registration (above).
    unsafe {
        fill_from(addr, LEN, 63, 0);
        p.owner.register_memory(addr, LEN, Perm::REMOTE_READ_WRITE)
    }
    .expect("register other memory");
    wait_for_rdma(&p.initiator, p.seg, p.local, addr);
    rdma(&p.initiator, p.seg, Op::Read, p.local, addr, LEN);
    // SAFETY: the read ended.
    unsafe { check_pattern(p.local, LEN, 63, 0) }.expect("read of memory registered after the unregister");
}

// ---- a peer that dies ----

#[test]
fn every_rdma_transfer_in_flight_when_the_peer_process_is_killed_ends_disconnected() {
    const TASKS: u64 = 4096;
    const LEN: u64 = 4 * KIB;
    const ALL: u64 = TASKS * LEN;
    let (_g, _fake) = fake_verbs();
    // The peer's NIC waits 500 µs before each request: serving all 4096
    // takes at least 2 s, so the kill finds most of them still to do.
    let mut peer = rdma_peer(
        ALL,
        13,
        1,
        &["--path", "rdma"],
        &[("TE_FAKE_VERBS_STALL_US", "500")],
    );
    // Tasks that nothing ends otherwise end Timeout within the wait below.
    let cfg = EngineConfig {
        transfer_timeout: WAIT / 2,
        ..config_on_fake(Path::Rdma)
    };
    let (e, local) = rdma_engine(cfg, ALL);
    let seg = e.open_segment(&peer.segment).expect("open the peer");
    wait_for_rdma(&e, seg, local, peer.addr);
    let reqs: Vec<Request> = (0..TASKS)
        .map(|i| Request {
            op: Op::Read,
            local: local + i * LEN,
            segment: seg,
            remote: peer.addr + i * LEN,
            len: LEN,
        })
        .collect();
    let batch = e.allocate_batch(TASKS as u32).expect("allocate");
    e.submit(batch, &reqs).expect("submit");
    // Kill the peer once the first task has completed: the link worked.
    spin_until(
        WAIT,
        || !matches!(e.batch_status(batch), Ok(s) if s.completed == 0 && s.state == TaskState::Pending),
    );
    let st = e.batch_status(batch).expect("status");
    assert!(
        st.completed > 0 && st.state == TaskState::Pending,
        "{st:?} before the kill: {:?}",
        e.batch_error(batch)
    );
    peer.kill();
    // Every task ends: none hangs.
    let st = e.wait_batch(batch, WAIT).expect("every task ends after the kill");
    assert_ne!(
        st.state,
        TaskState::Completed,
        "all {TASKS} tasks completed before the kill"
    );
    assert_eq!(st.completed + st.failed, TASKS as u32, "{st:?}");
    let tasks = e.tasks_status(batch).expect("tasks");
    for (i, t) in tasks.iter().enumerate() {
        match t.state {
            // SAFETY: the batch ended.
            TaskState::Completed => {
                unsafe { check_pattern(local + i as u64 * LEN, LEN, peer.seed, i as u64 * LEN) }
                    .unwrap_or_else(|e| panic!("completed task {i}: {e}"))
            }
            TaskState::Failed(ErrorCode::Disconnected | ErrorCode::Timeout) | TaskState::Timeout => {}
            other => panic!("task {i} ended {other:?}: {:?}", e.batch_error(batch)),
        }
    }
    e.free_batch(batch).expect("free batch");
}

// ---- without RDMA on one side ----

#[test]
fn an_engine_with_rdma_reaches_one_without_it_over_another_path_and_rdma_alone_says_why_not() {
    const LEN: u64 = MIB + 3;
    let (_g, fake) = fake_verbs();
    // The fake offers a device to the whole process: the side without RDMA
    // has it turned off.
    let sides = [
        (
            "the owner has RDMA off",
            config_without_rdma(Path::Auto),
            config_on_fake(Path::Auto),
            "peer did not offer it",
        ),
        (
            "the initiator has RDMA off",
            config_on_fake(Path::Auto),
            config_without_rdma(Path::Auto),
            te_proto::endpoint::RDMA_NOT_HERE,
        ),
    ];
    for (what, owner, initiator, reason) in sides {
        let p = Pair::with(owner, initiator, 2 * LEN, Perm::REMOTE_READ_WRITE, 2 * LEN);
        let status = [p.owner.rdma_status(), p.initiator.rdma_status()];
        assert_eq!(
            status.iter().filter(|s| s.starts_with("RDMA off: ")).count(),
            1,
            "{what}: {status:?}"
        );
        let (served, wrs) = (fake.served(), fake.calls("wc"));
        // Auto: a read and a write move their bytes.
        transfer(
            &p.initiator,
            p.seg,
            Op::Read,
            p.local + 1,
            p.remote + 5,
            LEN,
            Path::Auto,
        )
        .unwrap_or_else(|e| panic!("{what}: read: {e}"));
        // SAFETY: the read ended.
        unsafe { check_pattern(p.local + 1, LEN, OWNER_SEED, 5) }
            .unwrap_or_else(|e| panic!("{what}: read: {e}"));
        // SAFETY: our memory; no transfer runs on it.
        unsafe { fill_from(p.local + 1, LEN, 31, 0) };
        transfer(
            &p.initiator,
            p.seg,
            Op::Write,
            p.local + 1,
            p.remote + 5,
            LEN,
            Path::Auto,
        )
        .unwrap_or_else(|e| panic!("{what}: write: {e}"));
        // SAFETY: the write ended; the owner's memory is ours to read here.
        unsafe { check_pattern(p.remote + 5, LEN, 31, 0) }.unwrap_or_else(|e| panic!("{what}: write: {e}"));
        // ...over the path the link has without RDMA: the same-host one
        // (both engines are in this process), or TCP where that is off.
        let path = p.initiator.segment_path(p.seg).expect("path");
        assert!(
            matches!(path, Path::Shm | Path::Tcp),
            "{what}: segment_path {path}"
        );
        assert_eq!(
            (fake.served(), fake.calls("wc")),
            (served, wrs),
            "{what}: RDMA work was done"
        );
        // Rdma alone: NotSupported, naming why; nothing lands.
        // SAFETY: our memory; no transfer runs on it.
        unsafe { fill_from(p.local, 2 * LEN, GUARD_SEED, 0) };
        let (state, err) = failing(&p.initiator, p.seg, Op::Read, p.local, p.remote, LEN, Path::Rdma);
        assert_eq!(state, TaskState::Failed(ErrorCode::NotSupported), "{what}: {err}");
        assert_names_why_no_rdma(&err, what, reason);
        // SAFETY: the read ended.
        unsafe { check_pattern(p.local, 2 * LEN, GUARD_SEED, 0) }.unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

#[test]
fn a_peer_process_whose_verbs_library_has_no_device_is_reached_without_rdma() {
    const LEN: u64 = 4 * MIB + 3;
    let (_g, fake) = fake_verbs();
    // The fake in the peer offers no device (`TE_FAKE_VERBS_DEVICES=0`);
    // this process's offers one.
    let peer = rdma_peer(LEN, 17, 0, &[], &[]);
    let (e, local) = rdma_engine(config_on_fake(Path::Auto), LEN);
    let seg = e.open_segment(&peer.segment).expect("open the peer");
    let wrs = fake.calls("wc");
    transfer(&e, seg, Op::Read, local, peer.addr, LEN, Path::Auto).expect("read with auto");
    // SAFETY: the read ended.
    unsafe { check_pattern(local, LEN, peer.seed, 0) }.expect("read with auto");
    let path = e.segment_path(seg).expect("path");
    assert!(matches!(path, Path::Shm | Path::Tcp), "segment_path {path}");
    assert_eq!(fake.calls("wc"), wrs, "this process executed RDMA work requests");
    // SAFETY: our memory; no transfer runs on it.
    unsafe { fill_from(local, LEN, GUARD_SEED, 0) };
    let (state, err) = failing(&e, seg, Op::Read, local, peer.addr, LEN, Path::Rdma);
    assert_eq!(state, TaskState::Failed(ErrorCode::NotSupported), "{err}");
    assert_names_why_no_rdma(&err, "peer without a device", "peer did not offer it");
    // SAFETY: the read ended.
    unsafe { check_pattern(local, LEN, GUARD_SEED, 0) }.expect("the refused read brought bytes");
}

// ---- the completion queue fails ----

#[test]
fn a_completion_queue_that_fails_ends_the_posted_task_and_leaves_tcp_to_carry_on() {
    const LEN: u64 = MIB;
    let (_g, fake) = fake_verbs();
    let peer = rdma_peer(LEN, 23, 1, &["--path", "rdma"], &[]);
    let (e, local) = rdma_engine(config_on_fake(Path::Rdma), LEN);
    let seg = e.open_segment(&peer.segment).expect("open the peer");
    wait_for_rdma(&e, seg, local, peer.addr);
    // The next ibv_poll_cq of this process fails with EIO (5): the one
    // that takes the read's completion.
    fake.fail("ibv_poll_cq", 1, 5);
    let (state, err) = failing(&e, seg, Op::Read, local, peer.addr, LEN, Path::Rdma);
    assert_eq!(state, TaskState::Failed(ErrorCode::RuntimeError), "{err}");
    assert!(err.message().contains("completion queue failed"), "{err}");
    assert!(
        e.rdma_status()
            .starts_with("RDMA off: RDMA completion queue failed"),
        "{}",
        e.rdma_status()
    );
    // The same read, now over the path the engine has left.
    // SAFETY: our memory; no transfer runs on it.
    unsafe { fill_from(local, LEN, GUARD_SEED, 0) };
    transfer(&e, seg, Op::Read, local, peer.addr, LEN, Path::Auto).expect("read over TCP");
    // SAFETY: the read ended.
    unsafe { check_pattern(local, LEN, peer.seed, 0) }.expect("read over TCP");
}
