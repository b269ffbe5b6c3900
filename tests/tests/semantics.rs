//! The semantics table of ARCHITECTURE section 4, one test per rule,
//! through the public [`te_runtime::Engine`] API. Every test asserts the
//! exact [`ErrorCode`] and, where there is a bad value to name, that the
//! message names it.
//!
//! Memory is either engine-owned (`alloc_memory`) or a `Vec` registered
//! with `register_memory`; a `Vec` is always declared before the engines
//! that register it (or placed after them in a struct), so it is dropped
//! after them: an engine touches registered memory only while it runs.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use te_runtime::{
    BatchId, Engine, EngineConfig, ErrorCode, Location, Op, Path, Perm, Request, SegmentId, Status, TaskId,
    TaskState,
};
use te_tests::gate::{Direction, Gate};
use te_tests::{
    assert_completed_or_refused, bytes, engine, fast_pattern_matches, fill_fast, spin_until, SilentPeer,
};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// Generous bound for any single wait; a healthy run needs a fraction.
const WAIT: Duration = Duration::from_secs(60);

/// Asserts that `r` failed with `code` and that its message contains every
/// string of `names`; returns the status.
#[track_caller]
fn expect_err<T: Debug>(r: Result<T, Status>, code: ErrorCode, names: &[&str]) -> Status {
    let e = match r {
        Ok(v) => panic!("expected {code}, got Ok({v:?})"),
        Err(e) => e,
    };
    assert_eq!(e.code(), code, "{e}");
    for n in names {
        assert!(
            e.message().contains(n),
            "message {:?} does not name {n:?}",
            e.message()
        );
    }
    e
}

fn hex(a: u64) -> String {
    format!("{a:#x}")
}

/// A heap buffer for `register_memory`.
fn buffer(len: u64) -> Vec<u8> {
    vec![0u8; len as usize]
}

fn addr(v: &[u8]) -> u64 {
    v.as_ptr() as u64
}

/// A target engine and an initiator with the target open and `local_len`
/// bytes of local-only memory. Field order is drop order: the engines go
/// before `mem`, which the target registers parts of.
struct Fixture {
    initiator: Engine,
    target: Engine,
    seg: SegmentId,
    name: String,
    local: u64,
    mem: Vec<u8>,
}

impl Fixture {
    /// `mem_len` bytes of heap memory for the target to register, filled
    /// with a pattern; nothing registered yet.
    fn new(mem_len: u64, local_len: u64) -> Fixture {
        let mut mem = buffer(mem_len);
        // SAFETY: our own vector.
        unsafe { fill_fast(mem.as_mut_ptr() as u64, mem_len, 99) };
        let target = engine();
        let initiator = engine();
        let local = initiator
            .alloc_memory(local_len, Perm::LOCAL_ONLY)
            .expect("alloc local");
        let name = target.segment_name();
        let seg = initiator.open_segment(&name).expect("open target");
        Fixture {
            initiator,
            target,
            seg,
            name,
            local,
            mem,
        }
    }

    /// Moves the fixture's segment behind `gate` and returns it; the direct
    /// link is closed first, since te keeps one link per pair of engines
    /// (docs/PROTOCOL.md 11.3).
    fn open_through(&mut self, gate: &Gate) -> SegmentId {
        self.initiator
            .close_segment(self.seg)
            .expect("close the direct link");
        self.seg = self
            .initiator
            .open_segment(&gate.name())
            .expect("open through the gate");
        self.seg
    }

    fn base(&self) -> u64 {
        addr(&self.mem)
    }

    /// Registers `[base + off, base + off + len)` at the target.
    fn register(&self, off: u64, len: u64, perm: Perm) {
        assert!(off + len <= self.mem.len() as u64);
        // SAFETY: inside `mem`, which outlives the target (field order).
        unsafe { self.target.register_memory(self.base() + off, len, perm) }.expect("register");
    }

    fn read(&self, remote: u64, len: u64) -> Result<(), Status> {
        self.initiator
            .transfer_sync_read(&self.name, self.local, remote, len)
    }

    fn write(&self, remote: u64, len: u64) -> Result<(), Status> {
        self.initiator
            .transfer_sync_write(&self.name, self.local, remote, len)
    }

    /// Runs one asynchronous task and returns its final state.
    fn task(&self, op: Op, remote: u64, len: u64) -> TaskState {
        let b = self.initiator.allocate_batch(1).expect("allocate");
        let req = Request {
            op,
            local: self.local,
            segment: self.seg,
            remote,
            len,
        };
        self.initiator.submit(b, &[req]).expect("submit");
        let st = self.initiator.wait_batch(b, WAIT).expect("wait");
        self.initiator.free_batch(b).expect("free");
        st.state
    }

    /// Asserts that both a read and a write of `[remote, remote + len)` are
    /// refused `NotAuthorized`, synchronously and asynchronously, and that
    /// the target's memory is unchanged.
    #[track_caller]
    fn assert_refused(&self, remote: u64, len: u64) {
        let before = self.mem.clone();
        expect_err(self.read(remote, len), ErrorCode::NotAuthorized, &[]);
        expect_err(self.write(remote, len), ErrorCode::NotAuthorized, &[]);
        let denied = TaskState::Failed(ErrorCode::NotAuthorized);
        assert_eq!(self.task(Op::Read, remote, len), denied);
        assert_eq!(self.task(Op::Write, remote, len), denied);
        assert!(self.mem == before, "a refused write changed the target's memory");
    }
}

fn request(op: Op, local: u64, segment: SegmentId, remote: u64, len: u64) -> Request {
    Request {
        op,
        local,
        segment,
        remote,
        len,
    }
}

// ---- codes ----

#[test]
fn error_codes_keep_the_seed_numbers() {
    let seeds = [
        (ErrorCode::Ok, 0),
        (ErrorCode::Invalid, 2),
        (ErrorCode::NotFound, 3),
        (ErrorCode::RuntimeError, 5),
        (ErrorCode::NotReady, 8),
        (ErrorCode::NotAuthorized, 9),
        (ErrorCode::NotSupported, 36),
    ];
    for (code, n) in seeds {
        assert_eq!(code.as_u32(), n, "{code}");
        assert_eq!(ErrorCode::from_u32(n), Some(code));
    }
    // te's own codes have numbers of their own.
    let own = [ErrorCode::Timeout, ErrorCode::Canceled, ErrorCode::Disconnected];
    let mut all: Vec<u32> = ErrorCode::ALL.iter().map(|c| c.as_u32()).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), ErrorCode::ALL.len(), "two codes share a number");
    for code in own {
        assert!(seeds.iter().all(|&(_, n)| n != code.as_u32()), "{code}");
        assert_eq!(ErrorCode::from_u32(code.as_u32()), Some(code));
    }
}

// ---- register ----

#[test]
fn register_address_zero_is_invalid() {
    let e = engine();
    // SAFETY: refused before any memory is used.
    let r = unsafe { e.register_memory(0, 4096, Perm::REMOTE_READ_WRITE) };
    expect_err(r, ErrorCode::Invalid, &["address is 0"]);
    // SAFETY: as above.
    let r = unsafe { e.register_memory_batch(&[(0, 4096, Perm::LOCAL_ONLY)]) };
    expect_err(r, ErrorCode::Invalid, &["address is 0"]);
    assert!(e.regions().is_empty());
}

#[test]
fn register_length_zero_is_invalid() {
    let mem = buffer(4096);
    let e = engine();
    // SAFETY: refused before any memory is used.
    let r = unsafe { e.register_memory(addr(&mem), 0, Perm::REMOTE_READ_WRITE) };
    expect_err(r, ErrorCode::Invalid, &["length is 0", &hex(addr(&mem))]);
    expect_err(
        e.alloc_memory(0, Perm::REMOTE_READ_WRITE),
        ErrorCode::Invalid,
        &["zero"],
    );
    assert!(e.regions().is_empty());
}

#[test]
fn register_wrapping_range_is_invalid() {
    let mem = buffer(4096);
    let e = engine();
    for (a, len) in [(u64::MAX - 4095, 8192), (addr(&mem), u64::MAX), (u64::MAX, 2)] {
        // SAFETY: refused before any memory is used.
        let r = unsafe { e.register_memory(a, len, Perm::REMOTE_READ_WRITE) };
        expect_err(r, ErrorCode::Invalid, &["wraps", &hex(a)]);
    }
    assert!(e.regions().is_empty());
    // The last byte of the address space is a valid end.
    // SAFETY: the engine only touches registered memory for transfers, and
    // none is ever issued on this range; it is unregistered right away.
    unsafe { e.register_memory(u64::MAX - 4095, 4095, Perm::LOCAL_ONLY) }.expect("ends at u64::MAX");
    e.unregister_memory(u64::MAX - 4095).expect("unregister");
}

#[test]
fn register_overlap_in_same_location_is_invalid() {
    let mem = buffer(64 * KIB);
    let b = addr(&mem);
    let e = engine();
    // SAFETY: inside `mem`, declared before the engine.
    unsafe { e.register_memory(b + 16 * KIB, 16 * KIB, Perm::REMOTE_READ_WRITE) }.expect("first");
    for (a, len) in [
        (b + 16 * KIB, 16 * KIB), // the same range
        (b + 8 * KIB, 16 * KIB),  // over the start
        (b + 24 * KIB, 16 * KIB), // over the end
        (b + 20 * KIB, 4 * KIB),  // inside
        (b, 64 * KIB),            // around
        (b + 32 * KIB - 1, 1),    // its last byte
        (b + 16 * KIB - 1, 2),    // across its first byte
    ] {
        // SAFETY: refused; and inside `mem` anyway.
        let r = unsafe { e.register_memory(a, len, Perm::LOCAL_ONLY) };
        expect_err(r, ErrorCode::Invalid, &["overlaps", &hex(a), &hex(b + 16 * KIB)]);
    }
    assert_eq!(e.regions().len(), 1);
    // Touching neighbours do not overlap.
    // SAFETY: inside `mem`.
    unsafe { e.register_memory(b + 32 * KIB, 16 * KIB, Perm::LOCAL_ONLY) }.expect("right neighbour");
    unsafe { e.register_memory(b, 16 * KIB, Perm::LOCAL_ONLY) }.expect("left neighbour");
    assert_eq!(e.regions().len(), 3);
    // (Overlap is per location; a second location needs a device driver,
    // see `unknown_device_name_is_invalid_and_a_missing_driver_not_supported`.)
}

#[test]
fn register_batch_is_all_or_nothing() {
    let mem = buffer(64 * KIB);
    let b = addr(&mem);
    let e = engine();
    let rw = Perm::REMOTE_READ_WRITE;
    // SAFETY (every call below): all ranges lie inside `mem`, declared
    // before the engine.
    let bad_member_2 = [
        (b, 4 * KIB, rw),
        (b + 8 * KIB, 4 * KIB, rw),
        (b + 16 * KIB, 0, rw),
    ];
    let r = unsafe { e.register_memory_batch(&bad_member_2) };
    expect_err(r, ErrorCode::Invalid, &["member 2", "length is 0"]);
    assert!(e.regions().is_empty(), "members 0 and 1 stayed registered");

    let inner_overlap = [
        (b, 4 * KIB, rw),
        (b + 8 * KIB, 4 * KIB, rw),
        (b + 10 * KIB, 4 * KIB, rw),
    ];
    let r = unsafe { e.register_memory_batch(&inner_overlap) };
    expect_err(
        r,
        ErrorCode::Invalid,
        &["member 2", "overlaps", &hex(b + 10 * KIB)],
    );
    assert!(e.regions().is_empty());

    unsafe { e.register_memory(b + 32 * KIB, 4 * KIB, rw) }.expect("single");
    let outer_overlap = [(b, 4 * KIB, rw), (b + 30 * KIB, 4 * KIB, rw)];
    let r = unsafe { e.register_memory_batch(&outer_overlap) };
    expect_err(r, ErrorCode::Invalid, &["member 1", "overlaps"]);
    assert_eq!(e.regions().len(), 1, "the batch's first member stayed registered");

    expect_err(
        unsafe { e.register_memory_batch(&[]) },
        ErrorCode::Invalid,
        &["empty"],
    );

    // All members, when all are good.
    let good = [
        (b, 4 * KIB, rw),
        (b + 8 * KIB, 4 * KIB, Perm::LOCAL_ONLY),
        (b + 16 * KIB, 1, rw),
    ];
    unsafe { e.register_memory_batch(&good) }.expect("good batch");
    let mut got: Vec<(u64, u64, Perm)> = e
        .regions()
        .iter()
        .map(|r| (r.span.addr, r.span.len, r.perm))
        .collect();
    got.sort_by_key(|r| r.0);
    let mut want = good.to_vec();
    want.push((b + 32 * KIB, 4 * KIB, rw));
    want.sort_by_key(|r| r.0);
    assert_eq!(got, want);
}

#[test]
fn permissions_local_only_remote_read_and_read_write_are_enforced() {
    let fx = Fixture::new(256 * KIB, 64 * KIB);
    let b = fx.base();
    fx.register(0, 64 * KIB, Perm::LOCAL_ONLY);
    fx.register(64 * KIB, 64 * KIB, Perm::REMOTE_READ);
    fx.register(128 * KIB, 64 * KIB, Perm::REMOTE_READ_WRITE);
    fx.register(192 * KIB, 64 * KIB, Perm::REMOTE_READ_WRITE);
    let perms: Vec<Perm> = fx.target.regions().iter().map(|r| r.perm).collect();
    assert_eq!(
        perms,
        [
            Perm::LOCAL_ONLY,
            Perm::REMOTE_READ,
            Perm::REMOTE_READ_WRITE,
            Perm::REMOTE_READ_WRITE
        ]
    );

    // Local only: invisible to peers.
    fx.assert_refused(b, 4096);
    // Remote read: reads, no writes.
    fx.read(b + 64 * KIB, 4096).expect("read of a read-only region");
    // SAFETY: engine memory / our vector; no transfer runs.
    unsafe { assert_eq!(bytes(fx.local, 4096), &fx.mem[64 * KIB as usize..][..4096]) };
    let before = fx.mem.clone();
    expect_err(fx.write(b + 64 * KIB, 4096), ErrorCode::NotAuthorized, &[]);
    assert!(fx.mem == before, "a refused write changed memory");
    // Remote read-write, explicit and by default: both.
    for off in [128 * KIB, 192 * KIB] {
        // SAFETY: engine memory; no transfer runs.
        unsafe { fill_fast(fx.local, 4096, off) };
        fx.write(b + off, 4096).expect("write");
        // SAFETY: as above.
        unsafe { assert!(fast_pattern_matches(b + off, 4096, off)) };
        unsafe { fill_fast(fx.local, 4096, 0) };
        fx.read(b + off, 4096).expect("read");
        // SAFETY: as above.
        unsafe { assert!(fast_pattern_matches(fx.local, 4096, off)) };
    }
}

// ---- unregister ----

#[test]
fn unregister_needs_the_exact_base_else_not_found() {
    let mem = buffer(64 * KIB);
    let b = addr(&mem);
    let e = engine();
    // SAFETY: inside `mem`, declared before the engine.
    unsafe { e.register_memory(b + 4 * KIB, 16 * KIB, Perm::REMOTE_READ_WRITE) }.expect("register");
    expect_err(
        e.unregister_memory(b + 4 * KIB + 1),
        ErrorCode::NotFound,
        &[&hex(b + 4 * KIB + 1), "not its base"],
    );
    expect_err(
        e.unregister_memory(b + 20 * KIB - 1),
        ErrorCode::NotFound,
        &[&hex(b + 20 * KIB - 1)],
    );
    expect_err(
        e.unregister_memory(b + 20 * KIB),
        ErrorCode::NotFound,
        &[&hex(b + 20 * KIB)],
    );
    expect_err(e.unregister_memory(b), ErrorCode::NotFound, &[&hex(b)]);
    assert_eq!(e.regions().len(), 1);
    e.unregister_memory(b + 4 * KIB).expect("exact base");
    assert!(e.regions().is_empty());
    expect_err(
        e.unregister_memory(b + 4 * KIB),
        ErrorCode::NotFound,
        &[&hex(b + 4 * KIB)],
    );

    // Engine-owned memory: the same rule for free_memory.
    let owned = e.alloc_memory(8 * KIB, Perm::LOCAL_ONLY).expect("alloc");
    assert_eq!(owned % 4096, 0, "engine memory is page-aligned");
    expect_err(e.free_memory(owned + 1), ErrorCode::NotFound, &[&hex(owned + 1)]);
    expect_err(
        e.free_memory(b + 4 * KIB),
        ErrorCode::NotFound,
        &[&hex(b + 4 * KIB)],
    );
    e.free_memory(owned).expect("free");
    expect_err(e.free_memory(owned), ErrorCode::NotFound, &[&hex(owned)]);
}

/// Snapshot of `len` bytes at `a`.
fn snapshot(a: u64, len: u64) -> Vec<u8> {
    // SAFETY: callers pass memory they own and that, by the rule under
    // test, no transfer writes any more.
    unsafe { bytes(a, len).to_vec() }
}

/// Whether the target behind `observer`'s segment `seg` no longer shows
/// any region to peers: an unregister has started (draining regions are
/// hidden) or ended.
fn no_region_visible(observer: &Engine, seg: SegmentId) -> bool {
    observer.segment_info(seg).expect("segment info").is_empty()
}

/// Runs `fx.target.unregister_memory(base)` on a thread while `gate` holds
/// peers' writes landing in the region, releases the gate once peers can no
/// longer see the region (the unregister has started: draining regions
/// are hidden), and returns when the unregister has.
fn unregister_while_gated(fx: &Fixture, gate: &Gate, base: u64) {
    let observer = engine();
    let seg = observer
        .open_segment(&fx.name)
        .expect("observer opens the target");
    assert!(
        !no_region_visible(&observer, seg),
        "region hidden before unregister"
    );
    std::thread::scope(|s| {
        let unregister = s.spawn(|| fx.target.unregister_memory(base));
        assert!(
            spin_until(WAIT, || no_region_visible(&observer, seg)),
            "the unregister never started"
        );
        gate.release();
        unregister.join().expect("unregister thread").expect("unregister");
    });
}

#[test]
fn unregister_of_a_region_peers_are_writing_waits_then_memory_is_untouched() {
    const LEN: u64 = 2 * MIB;
    const TASKS: u32 = 16;
    let mut fx = Fixture::new(LEN, TASKS as u64 * LEN);
    let b = fx.base();
    fx.register(0, LEN, Perm::REMOTE_READ_WRITE);
    // The writes pass a gate that lets 3 MiB through and then holds, so
    // that the unregister below meets a write under way (the first landed,
    // the second in part) whatever the machine's speed. Each write has its
    // own source bytes: any frame landing later changes the region.
    let gate = Gate::start(&fx.name, Direction::ToTarget, 3 * MIB);
    fx.open_through(&gate);
    for i in 0..TASKS as u64 {
        // SAFETY: engine memory; no transfer runs yet.
        unsafe { fill_fast(fx.local + i * LEN, LEN, 1000 + i) };
    }
    let reqs: Vec<Request> = (0..TASKS as u64)
        .map(|i| request(Op::Write, fx.local + i * LEN, fx.seg, b, LEN))
        .collect();
    let batch = fx.initiator.allocate_batch(TASKS).expect("allocate");
    fx.initiator.submit_via(batch, &reqs, Path::Tcp).expect("submit");
    assert!(
        spin_until(WAIT, || fx.initiator.batch_status(batch).unwrap().transferred > 0),
        "no write landed"
    );
    // The target has landed part of a frame and waits for the rest.
    unregister_while_gated(&fx, &gate, b);
    // From here on, no byte of the region changes.
    let after = snapshot(b, LEN);
    let st = fx.initiator.wait_batch(batch, WAIT).expect("wait");
    assert_eq!(st.failed + st.completed, TASKS);
    assert_completed_or_refused(&fx.initiator, batch);
    assert!(st.failed > 0, "every write completed: the gate did not hold");
    assert!(
        snapshot(b, LEN) == after,
        "memory changed after unregister returned"
    );
    assert!(fx.target.regions().is_empty());
}

#[test]
fn unregister_of_a_region_a_stalled_peer_reads_returns_and_memory_is_not_read() {
    const LEN: u64 = 8 * MIB;
    const TASKS: u64 = 16;
    let mut fx = Fixture::new(LEN, LEN);
    let b = fx.base();
    fx.register(0, LEN, Perm::REMOTE_READ);
    // SAFETY: our vector, registered; no transfer runs yet.
    unsafe { fill_fast(b, LEN, 11) };
    let mut old = vec![0u8; LEN as usize];
    // SAFETY: our vector.
    unsafe { fill_fast(old.as_mut_ptr() as u64, LEN, 11) };
    // 16 reads of the whole region (128 MiB), all into the same local span,
    // answered through a gate that lets 3 MiB through and then holds: the
    // target blocks sending an answer (its socket buffers full, a few MiB)
    // and the unregister meets a read under way.
    let gate = Gate::start(&fx.name, Direction::FromTarget, 3 * MIB);
    fx.open_through(&gate);
    let reqs: Vec<Request> = (0..TASKS)
        .map(|_| request(Op::Read, fx.local, fx.seg, b, LEN))
        .collect();
    let batch = fx.initiator.allocate_batch(TASKS as u32).expect("allocate");
    fx.initiator.submit_via(batch, &reqs, Path::Tcp).expect("submit");
    assert!(
        spin_until(WAIT, || fx.initiator.batch_status(batch).unwrap().transferred > 0),
        "no read answered"
    );
    assert!(spin_until(WAIT, || gate.holding()), "the gate never held");
    // The target is stuck sending an answer the gate holds, more answers
    // queued behind it. The unregister does not wait for the peer to read
    // them (it would until the idle timeout closes the link, failing the
    // reads with `Timeout`): the queued ones are refused and the rest of
    // the one being sent goes from a copy.
    fx.target.unregister_memory(b).expect("unregister");
    // After unregister returns, the memory is the user's again: its new
    // bytes must never reach a peer.
    // SAFETY: our vector; by the rule under test no transfer reads it.
    unsafe { fill_fast(b, LEN, 12) };
    gate.release();
    let st = fx.initiator.wait_batch(batch, WAIT).expect("wait");
    assert!(st.failed > 0, "every read completed: the gate did not hold");
    assert_completed_or_refused(&fx.initiator, batch);
    // Every 1 MiB frame holds the old bytes (or nothing, had no read of it
    // been answered): answers are sent in order, so one sent after the
    // unregister would never be overwritten by an older one.
    let zero = vec![0u8; MIB as usize];
    for f in 0..LEN / MIB {
        // SAFETY: engine memory; the batch has ended.
        let got = unsafe { bytes(fx.local + f * MIB, MIB) };
        let want = &old[(f * MIB) as usize..][..MIB as usize];
        assert!(
            got == want || got == &zero[..],
            "frame {f} holds bytes written after unregister"
        );
    }
}

#[test]
fn unregister_of_local_memory_in_use_waits_for_the_transfers() {
    const LEN: u64 = 64 * MIB;
    let mut local = buffer(LEN);
    let l = local.as_mut_ptr() as u64;
    let target = engine();
    let initiator = engine();
    let remote = target.alloc_memory(LEN, Perm::REMOTE_READ).expect("alloc");
    // SAFETY: engine memory; no transfer runs yet.
    unsafe { fill_fast(remote, LEN, 6) };
    // SAFETY: `local` is declared before the engines.
    unsafe { initiator.register_memory(l, LEN, Perm::LOCAL_ONLY) }.expect("register");
    // The answers pass a gate that lets 1 MiB through and then holds: the
    // reads (256 MiB) are under way, whatever the machine's speed, when the
    // unregister is called.
    let gate = Gate::start(&target.segment_name(), Direction::FromTarget, MIB);
    let seg = initiator
        .open_segment(&gate.name())
        .expect("open through the gate");
    let reqs: Vec<Request> = (0..4).map(|_| request(Op::Read, l, seg, remote, LEN)).collect();
    let batch = initiator.allocate_batch(4).expect("allocate");
    initiator.submit_via(batch, &reqs, Path::Tcp).expect("submit");
    // A probe that changes nothing: a read into `l` next to a zero-length
    // request fails on the first while `l` is draining, else on the second.
    let probe = initiator.allocate_batch(2).expect("allocate the probe");
    let draining = || {
        let r = initiator.submit(
            probe,
            &[
                request(Op::Read, l, seg, remote, 8),
                request(Op::Read, l, seg, remote, 0),
            ],
        );
        match r.expect_err("the probe never submits") {
            e if e.code() == ErrorCode::NotFound => true,
            e if e.code() == ErrorCode::Invalid => false,
            e => panic!("probe: {e}"),
        }
    };
    assert!(!draining());
    std::thread::scope(|s| {
        let unregister = s.spawn(|| initiator.unregister_memory(l));
        assert!(spin_until(WAIT, draining), "the unregister never started");
        let st = initiator.batch_status(batch).expect("status");
        assert_eq!(st.state, TaskState::Pending, "the gate did not hold: {st:?}");
        gate.release();
        unregister.join().expect("unregister thread").expect("unregister");
    });
    // The reads were let finish before unregister returned.
    let st = initiator.batch_status(batch).expect("status");
    assert_eq!((st.state, st.completed), (TaskState::Completed, 4), "{st:?}");
    // SAFETY: our vector; no transfer touches it any more.
    unsafe { assert!(fast_pattern_matches(l, LEN, 6)) };
    // It is gone: the local side is now unregistered.
    let b2 = initiator.allocate_batch(1).expect("allocate");
    let r = initiator.submit(b2, &[request(Op::Read, l, seg, remote, 8)]);
    expect_err(r, ErrorCode::NotFound, &[&hex(l)]);
    drop(initiator);
    drop(target);
    local[0] = 0;
}

// ---- remote access ----

#[test]
fn remote_range_never_registered_is_not_authorized() {
    let fx = Fixture::new(256 * KIB, 64 * KIB);
    let b = fx.base();
    fx.register(0, 64 * KIB, Perm::REMOTE_READ_WRITE);
    fx.register(128 * KIB, 64 * KIB, Perm::REMOTE_READ_WRITE);
    fx.assert_refused(b + 64 * KIB, 4096); // the gap between the regions
    fx.assert_refused(b + 200 * KIB, 4096); // after both
    fx.assert_refused(0x1000, 4096); // far away
    fx.read(b, 4096).expect("a registered range reads");
}

#[test]
fn remote_range_partly_outside_a_region_is_not_authorized() {
    let fx = Fixture::new(256 * KIB, 256 * KIB);
    let b = fx.base();
    fx.register(64 * KIB, 64 * KIB, Perm::REMOTE_READ_WRITE);
    fx.assert_refused(b + 128 * KIB - 100, 200); // past the end
    fx.assert_refused(b + 64 * KIB - 100, 200); // before the start
    fx.assert_refused(b + 32 * KIB, 128 * KIB); // around it
    fx.read(b + 128 * KIB - 100, 100)
        .expect("the last 100 bytes read");
    fx.read(b + 64 * KIB, 64 * KIB).expect("the whole region reads");
}

#[test]
fn remote_range_spanning_two_regions_is_not_authorized() {
    let fx = Fixture::new(256 * KIB, 256 * KIB);
    let b = fx.base();
    fx.register(0, 64 * KIB, Perm::REMOTE_READ_WRITE);
    fx.register(64 * KIB, 64 * KIB, Perm::REMOTE_READ_WRITE);
    fx.assert_refused(b + 64 * KIB - 100, 200);
    fx.assert_refused(b, 128 * KIB);
    fx.read(b + 64 * KIB - 100, 100).expect("left part alone");
    fx.read(b + 64 * KIB, 100).expect("right part alone");
}

#[test]
fn remote_range_after_unregister_is_not_authorized() {
    let fx = Fixture::new(64 * KIB, 64 * KIB);
    let b = fx.base();
    fx.register(0, 64 * KIB, Perm::REMOTE_READ_WRITE);
    fx.read(b, 4096).expect("read while registered");
    fx.write(b, 4096).expect("write while registered");
    fx.target.unregister_memory(b).expect("unregister");
    fx.assert_refused(b, 4096);
    fx.register(0, 64 * KIB, Perm::REMOTE_READ_WRITE);
    fx.read(b, 4096).expect("read after registering again");
}

#[test]
fn remote_access_with_the_wrong_permission_is_not_authorized() {
    let fx = Fixture::new(192 * KIB, 64 * KIB);
    let b = fx.base();
    fx.register(0, 64 * KIB, Perm::REMOTE_WRITE);
    fx.register(64 * KIB, 64 * KIB, Perm::REMOTE_READ);
    fx.register(128 * KIB, 64 * KIB, Perm::LOCAL_ONLY);
    let denied = TaskState::Failed(ErrorCode::NotAuthorized);
    // Write-only: reads refused, writes pass.
    expect_err(fx.read(b, 4096), ErrorCode::NotAuthorized, &[]);
    assert_eq!(fx.task(Op::Read, b, 4096), denied);
    fx.write(b, 4096).expect("write of a write-only region");
    // Read-only: writes refused (memory unchanged), reads pass.
    let before = fx.mem.clone();
    expect_err(fx.write(b + 64 * KIB, 4096), ErrorCode::NotAuthorized, &[]);
    assert_eq!(fx.task(Op::Write, b + 64 * KIB, 4096), denied);
    assert!(fx.mem == before, "a refused write changed memory");
    fx.read(b + 64 * KIB, 4096).expect("read of a read-only region");
    // Local only: both refused.
    fx.assert_refused(b + 128 * KIB, 4096);
}

#[test]
fn remote_refusal_message_names_the_range() {
    let fx = Fixture::new(64 * KIB, 64 * KIB);
    let b = fx.base();
    fx.register(0, 64 * KIB, Perm::REMOTE_READ);
    expect_err(
        fx.read(b + 64 * KIB, 16),
        ErrorCode::NotAuthorized,
        &[&hex(b + 64 * KIB)],
    );
    expect_err(fx.write(b, 16), ErrorCode::NotAuthorized, &[&hex(b)]);
}

#[test]
fn local_side_not_registered_is_not_found() {
    let mut unregistered = buffer(64 * KIB);
    let u = unregistered.as_mut_ptr() as u64;
    let fx = Fixture::new(64 * KIB, 64 * KIB);
    let b = fx.base();
    fx.register(0, 64 * KIB, Perm::REMOTE_READ_WRITE);
    let bad = [
        (u, 4096),                      // never registered
        (fx.local + 64 * KIB - 10, 20), // runs past its region
        (fx.local + 64 * KIB, 1),       // just after it
    ];
    for (l, len) in bad {
        let r = fx.initiator.transfer_sync_read(&fx.name, l, b, len);
        expect_err(r, ErrorCode::NotFound, &[&hex(l)]);
        let r = fx.initiator.transfer_sync_write(&fx.name, l, b, len);
        expect_err(r, ErrorCode::NotFound, &[&hex(l)]);
        // Asynchronously: the whole submission is refused, nothing runs.
        let batch = fx.initiator.allocate_batch(2).expect("allocate");
        let reqs = [
            request(Op::Read, fx.local, fx.seg, b, 16),
            request(Op::Read, l, fx.seg, b, len),
        ];
        let r = fx.initiator.submit(batch, &reqs);
        expect_err(r, ErrorCode::NotFound, &["request 1", &hex(l)]);
        let st = fx.initiator.batch_status(batch).expect("status");
        assert_eq!((st.state, st.total), (TaskState::Initial, 0));
        fx.initiator.free_batch(batch).expect("free");
    }
    // SAFETY: never registered, so never touched.
    assert!(unregistered.iter().all(|&x| x == 0));
    unregistered[0] = 1;
}

// ---- lifecycle ----

// "Before initialization ... NotReady" cannot happen with this API:
// `Engine::start` is the initialization and there is no handle to an engine
// that has not started. The rule is covered for "after finalize begins".

#[test]
fn after_finalize_everything_is_not_ready_in_flight_work_drains_and_finalize_is_idempotent() {
    const LEN: u64 = 64 * MIB;
    let mem = buffer(4096);
    let target = engine();
    let initiator = engine();
    let remote = target.alloc_memory(LEN, Perm::REMOTE_READ).expect("alloc");
    // SAFETY: engine memory; no transfer runs yet.
    unsafe { fill_fast(remote, LEN, 8) };
    let local = initiator.alloc_memory(LEN, Perm::LOCAL_ONLY).expect("alloc");
    let name = target.segment_name();
    let seg = initiator.open_segment(&name).expect("open");
    let batch = initiator.allocate_batch(1).expect("allocate");
    let spare = initiator.allocate_batch(1).expect("allocate");
    initiator
        .submit(batch, &[request(Op::Read, local, seg, remote, LEN)])
        .expect("submit");
    let kept = buffer(4096);
    // SAFETY: `kept` outlives the engine.
    unsafe { initiator.register_memory(addr(&kept), 4096, Perm::LOCAL_ONLY) }.expect("register");

    initiator.finalize();
    // In-flight work drained.
    let st = initiator.batch_status(batch).expect("status after finalize");
    assert_eq!(st.state, TaskState::Completed, "{st:?}");
    // SAFETY: engine memory; nothing runs any more.
    unsafe { assert!(fast_pattern_matches(local, LEN, 8)) };

    let me = initiator.segment_name();
    let nr = ErrorCode::NotReady;
    for round in 0..2 {
        // SAFETY: refused; `mem` outlives the engine anyway.
        expect_err(
            unsafe { initiator.register_memory(addr(&mem), 4096, Perm::LOCAL_ONLY) },
            nr,
            &[&me],
        );
        let r = unsafe { initiator.register_memory_batch(&[(addr(&mem), 4096, Perm::LOCAL_ONLY)]) };
        expect_err(r, nr, &[&me]);
        expect_err(initiator.alloc_memory(4096, Perm::LOCAL_ONLY), nr, &[&me]);
        // Unregistering and freeing too: the regions stay as they were.
        expect_err(initiator.unregister_memory(addr(&kept)), nr, &[&me]);
        expect_err(initiator.free_memory(local), nr, &[&me]);
        let bases: Vec<u64> = initiator.regions().iter().map(|r| r.span.addr).collect();
        assert!(
            bases.contains(&addr(&kept)) && bases.contains(&local),
            "{bases:x?}"
        );
        expect_err(initiator.allocate_batch(1), nr, &[&me]);
        let r = initiator.submit(spare, &[request(Op::Read, local, seg, remote, 8)]);
        expect_err(r, nr, &[&me]);
        let r = initiator.submit_with_notify(spare, &[request(Op::Read, local, seg, remote, 8)], "n", b"");
        expect_err(r, nr, &[&me]);
        expect_err(initiator.open_segment(&name), nr, &[&me]);
        expect_err(initiator.segment_info(seg), nr, &[&me]);
        expect_err(initiator.send_notification(seg, "n", b"m"), nr, &[&me]);
        expect_err(initiator.transfer_sync_read(&name, local, remote, 8), nr, &[&me]);
        expect_err(
            initiator.batch_transfer_sync_write(&name, &[local], &[remote], &[8]),
            nr,
            &[&me],
        );
        if round == 0 {
            let t = Instant::now();
            initiator.finalize(); // idempotent
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "second finalize took {:?}",
                t.elapsed()
            );
        }
    }
    // Finalizing the target too, twice, and dropping both.
    target.finalize();
    target.finalize();
}

#[test]
fn finalized_engine_refuses_peers_promptly() {
    const CONNECT: Duration = Duration::from_secs(2);
    let target = engine();
    let name = target.segment_name();
    target.finalize();
    let cfg = EngineConfig {
        connect_timeout: CONNECT,
        ..EngineConfig::default()
    };
    let initiator = Engine::start(cfg).expect("start");
    let t = Instant::now();
    expect_err(initiator.open_segment(&name), ErrorCode::RuntimeError, &[&name]);
    assert!(t.elapsed() < CONNECT / 2, "refusal took {:?}", t.elapsed());
}

#[test]
fn finalize_fails_work_that_cannot_drain() {
    let silent = SilentPeer::start();
    let cfg = EngineConfig {
        transfer_timeout: Duration::from_millis(300),
        ..EngineConfig::default()
    };
    let initiator = Engine::start(cfg).expect("start");
    let local = initiator.alloc_memory(64 * KIB, Perm::LOCAL_ONLY).expect("alloc");
    let seg = initiator
        .open_segment(&silent.name())
        .expect("open the silent peer");
    let batch = initiator.allocate_batch(4).expect("allocate");
    let reqs: Vec<Request> = (0..4)
        .map(|i| request(Op::Read, local + i * 4096, seg, 0x10_0000, 4096))
        .collect();
    initiator.submit(batch, &reqs).expect("submit");
    let t = Instant::now();
    initiator.finalize();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "finalize took {:?}",
        t.elapsed()
    );
    for (i, task) in initiator.tasks_status(batch).expect("tasks").iter().enumerate() {
        assert!(
            matches!(task.state, TaskState::Timeout | TaskState::Canceled),
            "task {i}: {task:?}"
        );
    }
    // SAFETY: engine memory; nothing ever arrived.
    unsafe { assert!(bytes(local, 64 * KIB).iter().all(|&x| x == 0)) };
}

// ---- batches ----

#[test]
fn empty_batch_is_invalid() {
    let fx = Fixture::new(4096, 4096);
    fx.register(0, 4096, Perm::REMOTE_READ_WRITE);
    expect_err(
        fx.initiator.allocate_batch(0),
        ErrorCode::Invalid,
        &["capacity 0"],
    );
    let batch = fx.initiator.allocate_batch(4).expect("allocate");
    expect_err(fx.initiator.submit(batch, &[]), ErrorCode::Invalid, &["empty"]);
    expect_err(
        fx.initiator.submit_with_notify(batch, &[], "n", b"m"),
        ErrorCode::Invalid,
        &["empty"],
    );
    let e = ErrorCode::Invalid;
    expect_err(
        fx.initiator.batch_transfer_sync_read(&fx.name, &[], &[], &[]),
        e,
        &["empty"],
    );
    expect_err(
        fx.initiator.batch_transfer_sync_write(&fx.name, &[], &[], &[]),
        e,
        &["empty"],
    );
    // A zero-length request is an empty transfer: refused too.
    let r = fx
        .initiator
        .submit(batch, &[request(Op::Read, fx.local, fx.seg, fx.base(), 0)]);
    expect_err(r, e, &["request 0", "length"]);
    assert_eq!(
        fx.initiator.batch_status(batch).expect("status").state,
        TaskState::Initial
    );
    fx.initiator.free_batch(batch).expect("free");
}

#[test]
fn lists_of_different_lengths_are_invalid() {
    let fx = Fixture::new(4096, 4096);
    fx.register(0, 4096, Perm::REMOTE_READ_WRITE);
    let (l, r) = (fx.local, fx.base());
    let e = ErrorCode::Invalid;
    let got = fx
        .initiator
        .batch_transfer_sync_read(&fx.name, &[l, l + 8], &[r], &[8, 8]);
    expect_err(got, e, &["2 local", "1 remote", "2 lengths"]);
    let got = fx
        .initiator
        .batch_transfer_sync_read(&fx.name, &[l], &[r], &[8, 8]);
    expect_err(got, e, &["1 local", "1 remote", "2 lengths"]);
    let got = fx
        .initiator
        .batch_transfer_sync_write(&fx.name, &[l, l + 8, l + 16], &[r, r + 8], &[8]);
    expect_err(got, e, &["3 local", "2 remote", "1 lengths"]);
    // More requests than the batch holds: nothing is submitted.
    let batch = fx.initiator.allocate_batch(2).expect("allocate");
    let reqs = [request(Op::Read, l, fx.seg, r, 8); 3];
    expect_err(fx.initiator.submit(batch, &reqs), e, &["3 requests"]);
    assert_eq!(fx.initiator.batch_status(batch).expect("status").total, 0);
    fx.initiator.free_batch(batch).expect("free");
    // Equal lists work.
    fx.initiator
        .batch_transfer_sync_read(&fx.name, &[l, l + 8], &[r, r + 8], &[8, 8])
        .expect("equal lists");
}

#[test]
fn unknown_device_name_is_invalid_and_a_missing_driver_not_supported() {
    for s in [
        "gpu:0",
        "cuda",
        "npu",
        "npu:",
        "cpu:0",
        "sim:x",
        "NPU:1",
        "npu:65536",
        "",
    ] {
        let e = s.parse::<Location>();
        expect_err(e, ErrorCode::Invalid, &[&format!("{s:?}")]);
    }
    assert_eq!("cpu".parse::<Location>().expect("cpu"), Location::Cpu);
    assert_eq!("sim:0".parse::<Location>().expect("sim"), Location::Sim(0));
    assert_eq!("npu:3".parse::<Location>().expect("npu"), Location::Npu(3));

    // A well-formed device name whose vendor library is missing (this
    // machine has no CANN, and no TE_ACL_LIBRARY is set here).
    let mem = buffer(4096);
    let start_at = |location| {
        let cfg = EngineConfig {
            location,
            ..EngineConfig::default()
        };
        Engine::start(cfg).expect("start")
    };
    // The engine does not start: it would fail at its first allocation.
    let r = Engine::start(EngineConfig {
        location: Location::Npu(0),
        ..EngineConfig::default()
    });
    expect_err(
        r.map(|_| ()),
        ErrorCode::NotSupported,
        &["npu:0", "libascendcl.so"],
    );

    // sim:N has a driver, whose memory is not host memory: a host pointer
    // registered as sim:0 memory is refused.
    let e = start_at(Location::Sim(0));
    // SAFETY: refused; `mem` outlives the engine anyway.
    let r = unsafe { e.register_memory(addr(&mem), 4096, Perm::REMOTE_READ_WRITE) };
    expect_err(r, ErrorCode::Invalid, &["not a sim device address"]);
    assert!(e.regions().is_empty());
}

// ---- peers ----

/// A loopback port nobody listens on.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address").port()
}

#[test]
fn peer_unreachable_is_runtime_error_naming_the_address() {
    let e = engine();
    let local = e.alloc_memory(4096, Perm::LOCAL_ONLY).expect("alloc");
    let name = format!("127.0.0.1:{}", dead_port());
    let t = Instant::now();
    expect_err(e.open_segment(&name), ErrorCode::RuntimeError, &[&name]);
    expect_err(
        e.transfer_sync_read(&name, local, 0x1000, 8),
        ErrorCode::RuntimeError,
        &[&name],
    );
    expect_err(
        e.batch_transfer_sync_write(&name, &[local], &[0x1000], &[8]),
        ErrorCode::RuntimeError,
        &[&name],
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "refused connects took {:?}",
        t.elapsed()
    );
    // Not a host:port at all: the name is bad, not the peer.
    expect_err(
        e.open_segment("no-port-here"),
        ErrorCode::Invalid,
        &["no-port-here"],
    );

    // A port that takes the TCP connection and never answers (the kernel
    // accepts into the backlog, nobody calls accept): connect times out.
    const CONNECT: Duration = Duration::from_millis(300);
    let mute = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let name = mute.local_addr().expect("address").to_string();
    let cfg = EngineConfig {
        connect_timeout: CONNECT,
        ..EngineConfig::default()
    };
    let e = Engine::start(cfg).expect("start");
    let local = e.alloc_memory(4096, Perm::LOCAL_ONLY).expect("alloc");
    let t = Instant::now();
    expect_err(e.open_segment(&name), ErrorCode::RuntimeError, &[&name]);
    let took = t.elapsed();
    assert!(took >= CONNECT && took < CONNECT * 10, "mute peer: {took:?}");
    let r = e.transfer_sync_write(&name, local, 0x1000, 8);
    expect_err(r, ErrorCode::RuntimeError, &[&name]);
}

#[track_caller]
fn assert_disconnected(e: &Engine, batch: BatchId) {
    let st = e.wait_batch(batch, WAIT).expect("tasks end");
    assert_eq!(st.state, TaskState::Failed(ErrorCode::Disconnected), "{st:?}");
    for (i, t) in e.tasks_status(batch).expect("tasks").iter().enumerate() {
        assert!(
            matches!(
                t.state,
                TaskState::Completed | TaskState::Failed(ErrorCode::Disconnected)
            ),
            "task {i}: {t:?}"
        );
    }
    e.free_batch(batch).expect("free");
}

// 160 tasks of 8 MiB (1.25 GiB) each time: some run on the link (at most
// 128), the rest wait for room; all must fail.
const LOST_LEN: u64 = 8 * MIB;
const LOST_TASKS: u32 = 160;

/// A new target on the address `name` an old one used; a transfer to it
/// through the segment name must reconnect and succeed.
#[track_caller]
fn assert_reconnects(initiator: &Engine, name: &str, local: u64) {
    let cfg = EngineConfig {
        listen: name.to_string(),
        ..EngineConfig::default()
    };
    let target = Engine::start(cfg).expect("a new target on the same address");
    let remote = target.alloc_memory(4096, Perm::REMOTE_READ_WRITE).expect("alloc");
    // SAFETY: engine memory; no transfer runs.
    unsafe { fill_fast(local, 4096, 13) };
    initiator
        .transfer_sync_write(name, local, remote, 4096)
        .expect("write after reconnecting");
    // SAFETY: as above.
    unsafe { assert!(fast_pattern_matches(remote, 4096, 13)) };
}

#[test]
fn peer_lost_mid_transfer_fails_its_tasks_disconnected() {
    let initiator = engine();
    let local = initiator.alloc_memory(LOST_LEN, Perm::LOCAL_ONLY).expect("alloc");
    // The connection to the target is cut during the reads.
    let target = engine();
    let remote = target
        .alloc_memory(LOST_LEN, Perm::REMOTE_READ_WRITE)
        .expect("alloc");
    let name = target.segment_name();
    // The answers pass a gate that holds after 2 MiB: the reads are under
    // way when the target goes, however fast the machine.
    let gate = Gate::start(&name, Direction::FromTarget, 2 * MIB);
    let seg = initiator.open_segment(&gate.name()).expect("open");
    let batch = initiator.allocate_batch(LOST_TASKS).expect("allocate");
    let reqs: Vec<Request> = (0..LOST_TASKS)
        .map(|_| request(Op::Read, local, seg, remote, LOST_LEN))
        .collect();
    initiator.submit_via(batch, &reqs, Path::Tcp).expect("submit");
    assert!(
        spin_until(WAIT, || initiator.batch_status(batch).unwrap().transferred > 0),
        "no progress"
    );
    drop(gate);
    assert_disconnected(&initiator, batch);
    drop(target);
    assert_reconnects(&initiator, &name, local);
}

#[test]
fn an_owner_that_finalizes_lets_the_reads_it_serves_finish_first() {
    let initiator = engine();
    let local = initiator.alloc_memory(LOST_LEN, Perm::LOCAL_ONLY).expect("alloc");
    let target = engine();
    let remote = target
        .alloc_memory(LOST_LEN, Perm::REMOTE_READ_WRITE)
        .expect("alloc");
    // SAFETY: engine memory; no transfer runs yet.
    unsafe { fill_fast(remote, LOST_LEN, 21) };
    // One read of 8 MiB: its requests (of 1 MiB each) all reach the
    // target at once; the answers pass a gate that holds after 2 MiB.
    let gate = Gate::start(&target.segment_name(), Direction::FromTarget, 2 * MIB);
    let seg = initiator.open_segment(&gate.name()).expect("open");
    let batch = initiator.allocate_batch(1).expect("allocate");
    let req = request(Op::Read, local, seg, remote, LOST_LEN);
    initiator.submit_via(batch, &[req], Path::Tcp).expect("submit");
    assert!(
        spin_until(WAIT, || initiator.batch_status(batch).unwrap().transferred > 0),
        "no progress"
    );
    std::thread::scope(|s| {
        let finalizing = s.spawn(|| target.finalize());
        // Finalize has begun once the target takes no new work.
        assert!(
            spin_until(WAIT, || target.alloc_memory(4096, Perm::LOCAL_ONLY).is_err()),
            "finalize never began"
        );
        assert!(
            !finalizing.is_finished(),
            "finalize returned while a peer's read was under way"
        );
        gate.release();
        let st = initiator.wait_batch(batch, WAIT).expect("the read ends");
        assert_eq!(
            st.state,
            TaskState::Completed,
            "{st:?} {:?}",
            initiator.batch_error(batch)
        );
        finalizing.join().expect("finalize");
    });
    // SAFETY: engine memory; the read has ended.
    unsafe { assert!(fast_pattern_matches(local, LOST_LEN, 21)) };
}

#[test]
fn peer_lost_mid_write_fails_its_tasks_disconnected() {
    // A peer that reads nothing: the engine's writes fill the socket
    // buffers and it blocks in the middle of a 1 MiB frame; then the peer's
    // connection is reset.
    let silent = SilentPeer::start();
    let cfg = EngineConfig {
        transfer_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
        ..EngineConfig::default()
    };
    let initiator = Engine::start(cfg).expect("start");
    let local = initiator.alloc_memory(MIB, Perm::LOCAL_ONLY).expect("alloc");
    let seg = initiator.open_segment(&silent.name()).expect("open");
    let batch = initiator.allocate_batch(LOST_TASKS).expect("allocate");
    let reqs: Vec<Request> = (0..LOST_TASKS)
        .map(|_| request(Op::Write, local, seg, 0x1000, MIB))
        .collect();
    initiator.submit(batch, &reqs).expect("submit");
    assert!(
        spin_until(WAIT, || silent.queued_bytes() >= 32 * 1024),
        "nothing written"
    );
    silent.reset();
    assert_disconnected(&initiator, batch);
    // The segment is not wedged: opening it again connects again.
    initiator.open_segment(&silent.name()).expect("open again");
    assert_eq!(silent.connections(), 1);
}

#[test]
fn task_past_its_deadline_ends_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let silent = SilentPeer::start();
    let cfg = EngineConfig {
        transfer_timeout: TIMEOUT,
        ..EngineConfig::default()
    };
    let e = Engine::start(cfg).expect("start");
    let local = e.alloc_memory(MIB, Perm::LOCAL_ONLY).expect("alloc");
    let seg = e.open_segment(&silent.name()).expect("the handshake completes");
    // 200 tasks: more than one link carries at once (128), so tasks time
    // out both on the link and while queued for it.
    let n = 200u32;
    let reqs: Vec<Request> = (0..n as u64)
        .map(|i| {
            request(
                if i % 2 == 0 { Op::Read } else { Op::Write },
                local + i * 4096,
                seg,
                0x1000,
                4096,
            )
        })
        .collect();
    let batch = e.allocate_batch(n).expect("allocate");
    let t = Instant::now();
    e.submit(batch, &reqs).expect("submit");
    let st = e.wait_batch(batch, WAIT).expect("the deadline ends the tasks");
    assert!(
        t.elapsed() >= TIMEOUT,
        "tasks ended after {:?}, before their deadline",
        t.elapsed()
    );
    assert_eq!(
        (st.state, st.failed, st.completed, st.transferred),
        (TaskState::Timeout, n, 0, 0),
        "{st:?}"
    );
    for (i, task) in e.tasks_status(batch).expect("tasks").iter().enumerate() {
        assert_eq!(
            (task.state, task.transferred),
            (TaskState::Timeout, 0),
            "task {i}"
        );
    }
    e.free_batch(batch).expect("free");
    // The synchronous helper reports it as a `Timeout` status.
    expect_err(
        e.transfer_sync_read(&silent.name(), local, 0x1000, 8),
        ErrorCode::Timeout,
        &[],
    );
    // SAFETY: engine memory; the peer never sent a byte.
    unsafe { assert!(bytes(local, MIB).iter().all(|&x| x == 0)) };
    assert_eq!(silent.connections(), 1, "one connection, reused");
}

#[test]
fn freeing_a_batch_with_pending_tasks_is_not_ready() {
    let silent = SilentPeer::start();
    let e = engine();
    let local = e.alloc_memory(64 * KIB, Perm::LOCAL_ONLY).expect("alloc");
    let seg = e.open_segment(&silent.name()).expect("open");
    let batch = e.allocate_batch(3).expect("allocate");
    let reqs: Vec<Request> = (0..3)
        .map(|i| request(Op::Read, local + i * 4096, seg, 0x1000, 4096))
        .collect();
    e.submit(batch, &reqs).expect("submit");
    expect_err(
        e.free_batch(batch),
        ErrorCode::NotReady,
        &["3 pending", &batch.to_string()],
    );
    // Still usable: cancel one, the rest stays pending.
    e.cancel_task(TaskId { batch, index: 0 }).expect("cancel");
    expect_err(e.free_batch(batch), ErrorCode::NotReady, &["2 pending"]);
    e.cancel_batch(batch).expect("cancel");
    let st = e.wait_batch(batch, WAIT).expect("wait");
    assert_eq!(st.state, TaskState::Canceled);
    e.free_batch(batch).expect("free once nothing is pending");
}

#[test]
fn stale_or_freed_batch_id_is_invalid() {
    let fx = Fixture::new(4096, 4096);
    fx.register(0, 4096, Perm::REMOTE_READ_WRITE);
    let e = &fx.initiator;
    let batch = e.allocate_batch(2).expect("allocate");
    e.free_batch(batch).expect("free");
    // The slot is reused; the old id stays stale.
    let fresh = e.allocate_batch(2).expect("allocate");
    assert_ne!(fresh, batch);
    let id = batch.to_string();
    let req = request(Op::Read, fx.local, fx.seg, fx.base(), 8);
    let inv = ErrorCode::Invalid;
    for stale in [batch, BatchId::from_u64(0), BatchId::from_u64(u64::MAX)] {
        let names: &[&str] = if stale == batch { &[&id, "stale"] } else { &[] };
        expect_err(e.free_batch(stale), inv, names);
        expect_err(e.batch_status(stale), inv, names);
        expect_err(e.tasks_status(stale), inv, names);
        expect_err(
            e.task_status(TaskId {
                batch: stale,
                index: 0,
            }),
            inv,
            names,
        );
        expect_err(e.submit(stale, &[req]), inv, names);
        expect_err(e.submit_with_notify(stale, &[req], "n", b""), inv, names);
        expect_err(e.cancel_batch(stale), inv, names);
        expect_err(
            e.cancel_task(TaskId {
                batch: stale,
                index: 0,
            }),
            inv,
            names,
        );
        expect_err(e.wait_batch(stale, WAIT), inv, names);
    }
    // The fresh batch is unaffected.
    e.submit(fresh, &[req]).expect("submit");
    assert_eq!(
        e.wait_batch(fresh, WAIT).expect("wait").state,
        TaskState::Completed
    );
    // A task index never submitted is invalid too.
    expect_err(
        e.task_status(TaskId {
            batch: fresh,
            index: 1,
        }),
        inv,
        &["not submitted"],
    );
    e.free_batch(fresh).expect("free");
}

#[test]
fn cancel_ends_tasks_canceled() {
    let silent = SilentPeer::start();
    let e = engine();
    let local = e.alloc_memory(MIB, Perm::LOCAL_ONLY).expect("alloc");
    let seg = e.open_segment(&silent.name()).expect("open");
    // 200 tasks: the first 128 run on the link, the rest wait for room.
    let n = 200u32;
    let reqs: Vec<Request> = (0..n as u64)
        .map(|i| request(Op::Read, local + i * 4096, seg, 0x1000, 4096))
        .collect();
    let batch = e.allocate_batch(n).expect("allocate");
    e.submit(batch, &reqs).expect("submit");
    let task = |index| e.task_status(TaskId { batch, index }).expect("task").state;
    for index in [3, n - 1] {
        // One on the link, one still queued.
        e.cancel_task(TaskId { batch, index }).expect("cancel");
        assert_eq!(
            task(index),
            TaskState::Canceled,
            "task {index} right after cancel"
        );
    }
    assert_eq!(task(0), TaskState::Pending);
    let st = e.batch_status(batch).expect("status");
    assert_eq!((st.state, st.failed), (TaskState::Pending, 2));
    e.cancel_batch(batch).expect("cancel batch");
    let st = e.wait_batch(batch, WAIT).expect("wait");
    assert_eq!((st.state, st.failed, st.completed), (TaskState::Canceled, n, 0));
    for (i, t) in e.tasks_status(batch).expect("tasks").iter().enumerate() {
        assert_eq!(t.state, TaskState::Canceled, "task {i}");
    }
    // Canceling what has ended changes nothing.
    e.cancel_task(TaskId { batch, index: 3 }).expect("cancel again");
    assert_eq!(task(3), TaskState::Canceled);
    e.free_batch(batch).expect("free");
}

/// Local bytes the fence reads into.
const FENCE: u64 = 64 * 16 * KIB;

/// A batch of 64 reads of 16 KiB from `remote + 7777 + i * 12345` (memory
/// the test owns) into `local + i * 16 KiB`: on one connection it completes
/// only after every answer sent before it has been consumed. Its bytes are
/// checked too: an answer to an ended task must not land in the memory of
/// a later task (which may take the ended task's place on the link).
#[track_caller]
fn fence(e: &Engine, seg: SegmentId, local: u64, remote: u64) {
    const N: u64 = 64;
    const LEN: u64 = 16 * KIB;
    let reqs: Vec<Request> = (0..N)
        .map(|i| request(Op::Read, local + i * LEN, seg, remote + 7777 + i * 12345, LEN))
        .collect();
    let batch = e.allocate_batch(N as u32).expect("allocate the fence");
    e.submit(batch, &reqs).expect("submit the fence");
    let st = e.wait_batch(batch, WAIT).expect("wait for the fence");
    assert_eq!(st.state, TaskState::Completed, "fence: {st:?}");
    e.free_batch(batch).expect("free the fence");
    for r in &reqs {
        // SAFETY: engine memory and the test's own remote memory; the read
        // has ended.
        unsafe {
            assert!(
                bytes(r.local, LEN) == bytes(r.remote, LEN),
                "the fence read got wrong bytes"
            )
        };
    }
}

/// Reads for the "not touched afterwards" tests: `n` tasks, each reading
/// `len` bytes into the same local span from a remote window shifted by
/// 64 KiB per task, so that every task lands different bytes and any late
/// landing changes the local memory.
fn shifted_reads(local: u64, seg: SegmentId, remote: u64, len: u64, n: u64) -> Vec<Request> {
    (0..n)
        .map(|i| request(Op::Read, local, seg, remote + i * 64 * KIB, len))
        .collect()
}

#[test]
fn canceled_reads_leave_local_memory_untouched_afterwards() {
    const LEN: u64 = 16 * MIB;
    const TASKS: u64 = 64; // 1 GiB in all
    let mut fx = Fixture::new(LEN + TASKS * 64 * KIB, LEN + FENCE);
    let b = fx.base();
    fx.register(0, fx.mem.len() as u64, Perm::REMOTE_READ);
    // The answers pass a gate that lets 2 MiB through and then holds until
    // the tasks are canceled: the rest arrive after the cancel.
    let gate = Gate::start(&fx.name, Direction::FromTarget, 2 * MIB);
    fx.open_through(&gate);
    let e = &fx.initiator;
    let batch = e.allocate_batch(TASKS as u32).expect("allocate");
    let reqs = shifted_reads(fx.local, fx.seg, b, LEN, TASKS);
    e.submit_via(batch, &reqs, Path::Tcp).expect("submit");
    e.cancel_task(TaskId { batch, index: 0 }).expect("cancel one");
    e.cancel_batch(batch).expect("cancel the rest");
    gate.release();
    let st = e.batch_status(batch).expect("status");
    assert_eq!(
        (st.state, st.failed),
        (TaskState::Canceled, TASKS as u32),
        "{st:?}"
    );
    assert!(st.transferred < st.len);
    let after = snapshot(fx.local, LEN);
    // A later read on the same connection completes only after every answer
    // sent before it has been consumed.
    fence(e, fx.seg, fx.local + LEN, b);
    assert!(
        snapshot(fx.local, LEN) == after,
        "a canceled read wrote local memory afterwards"
    );
    e.free_batch(batch).expect("free");
}

/// Whether every 1 MiB frame of `got` equals the same frame of one of
/// `allowed`.
fn frames_from(got: &[u8], allowed: &[&[u8]]) -> Result<(), usize> {
    let frame = MIB as usize;
    for (f, g) in got.chunks(frame).enumerate() {
        if !allowed.iter().any(|a| &a[f * frame..][..g.len()] == g) {
            return Err(f);
        }
    }
    Ok(())
}

#[test]
fn canceled_write_no_longer_reads_local_memory() {
    const LEN: u64 = 128 * MIB;
    let mut fx = Fixture::new(LEN, LEN + 4096);
    let b = fx.base();
    fx.register(0, LEN, Perm::REMOTE_READ_WRITE);
    let before = fx.mem.clone();
    // The write passes a gate that lets 2 MiB through and then holds until
    // the write is canceled: it is under way, the rest not yet sent.
    let gate = Gate::start(&fx.name, Direction::ToTarget, 2 * MIB);
    let seg = fx.open_through(&gate);
    let e = &fx.initiator;
    // SAFETY: engine memory; no transfer runs yet.
    unsafe { fill_fast(fx.local, LEN, 21) };
    let sent = snapshot(fx.local, LEN);
    let batch = e.allocate_batch(1).expect("allocate");
    e.submit_via(batch, &[request(Op::Write, fx.local, seg, b, LEN)], Path::Tcp)
        .expect("submit");
    let task = TaskId { batch, index: 0 };
    // The frame being sent when the gate stopped it goes on from a copy:
    // the cancel does not wait for the peer to read it.
    e.cancel_task(task).expect("cancel");
    let st = e.batch_status(batch).expect("status");
    assert_eq!(st.state, TaskState::Canceled);
    assert!(st.transferred < LEN, "the write ended: the gate did not hold");
    // The local memory is the user's again: its new bytes must never be
    // sent. Overwritten from the end, where a write still running would
    // read next.
    for f in (0..LEN / MIB).rev() {
        // SAFETY: engine memory; by the rule under test no transfer reads it.
        unsafe { fill_fast(fx.local + f * MIB, MIB, 2200 + f) };
    }
    // A read on the same connection is answered after every frame sent
    // before it has landed.
    gate.release();
    e.transfer_sync_read(&gate.name(), fx.local + LEN, b, 4096)
        .expect("fence read");
    // Every frame of the target holds its old bytes or the bytes sent
    // before the cancel.
    let landed = frames_from(&fx.mem, &[&before, &sent]);
    assert_eq!(landed, Ok(()), "a frame holds bytes written after the cancel");
    e.free_batch(batch).expect("free");
}

#[test]
fn timed_out_reads_leave_local_memory_untouched_afterwards() {
    const LEN: u64 = 16 * MIB;
    const TASKS: u64 = 256; // 4 GiB: cannot end within 500 ms
    let remote_len = LEN + TASKS * 64 * KIB;
    let mem = {
        let mut v = buffer(remote_len);
        // SAFETY: our vector.
        unsafe { fill_fast(v.as_mut_ptr() as u64, remote_len, 23) };
        v
    };
    let target = engine();
    // Over TCP: the same-host path moves 4 GiB within 500 ms.
    let cfg = EngineConfig {
        transfer_timeout: Duration::from_millis(500),
        path: Path::Tcp,
        ..EngineConfig::default()
    };
    let initiator = Engine::start(cfg).expect("start");
    // SAFETY: `mem` is declared before the engines.
    unsafe { target.register_memory(addr(&mem), remote_len, Perm::REMOTE_READ) }.expect("register");
    let local = initiator
        .alloc_memory(LEN + FENCE, Perm::LOCAL_ONLY)
        .expect("alloc");
    let name = target.segment_name();
    let seg = initiator.open_segment(&name).expect("open");
    let reqs = shifted_reads(local, seg, addr(&mem), LEN, TASKS);
    let batch = initiator.allocate_batch(TASKS as u32).expect("allocate");
    initiator.submit(batch, &reqs).expect("submit");
    let st = initiator.wait_batch(batch, WAIT).expect("wait");
    assert_eq!(st.state, TaskState::Timeout, "{st:?}");
    let tasks = initiator.tasks_status(batch).expect("tasks");
    assert!(tasks
        .iter()
        .all(|t| matches!(t.state, TaskState::Completed | TaskState::Timeout)));
    let after = snapshot(local, LEN);
    fence(&initiator, seg, local + LEN, addr(&mem));
    assert!(
        snapshot(local, LEN) == after,
        "a timed-out read wrote local memory afterwards"
    );
    initiator.free_batch(batch).expect("free");
}

#[test]
fn task_status_follows_tent_states_per_task_all_tasks_and_overall() {
    const BIG: u64 = 64 * MIB;
    let fx = Fixture::new(BIG, BIG);
    let b = fx.base();
    fx.register(0, BIG, Perm::REMOTE_READ_WRITE);
    let e = &fx.initiator;

    // Initial: nothing submitted.
    let batch = e.allocate_batch(4).expect("allocate");
    let st = e.batch_status(batch).expect("status");
    assert_eq!(
        (st.state, st.total, st.transferred, st.len),
        (TaskState::Initial, 0, 0, 0)
    );
    assert!(e.tasks_status(batch).expect("tasks").is_empty());

    // Completed and Failed(code) in one batch, with bytes per task.
    let reqs = [
        request(Op::Write, fx.local, fx.seg, b, 1000),
        request(Op::Read, fx.local + 4096, fx.seg, b + BIG - 10, 20), // past the end
        request(Op::Read, fx.local + 8192, fx.seg, b + 4096, 3000),
    ];
    e.submit(batch, &reqs).expect("submit");
    let st = e.wait_batch(batch, WAIT).expect("wait");
    assert_eq!(
        st.state,
        TaskState::Failed(ErrorCode::NotAuthorized),
        "overall: the first failure"
    );
    assert_eq!((st.total, st.completed, st.failed), (3, 2, 1));
    assert_eq!((st.transferred, st.len), (4000, 4020));
    let tasks = e.tasks_status(batch).expect("tasks");
    let got: Vec<(TaskState, u64, u64)> = tasks.iter().map(|t| (t.state, t.transferred, t.len)).collect();
    assert_eq!(
        got,
        [
            (TaskState::Completed, 1000, 1000),
            (TaskState::Failed(ErrorCode::NotAuthorized), 0, 20),
            (TaskState::Completed, 3000, 3000),
        ]
    );
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(
            e.task_status(TaskId {
                batch,
                index: i as u32
            })
            .expect("task"),
            *t
        );
    }
    // A fourth task into the same batch makes it pending again, then done.
    e.submit(batch, &[request(Op::Read, fx.local, fx.seg, b, 10)])
        .expect("submit");
    let st = e.wait_batch(batch, WAIT).expect("wait");
    assert_eq!((st.total, st.completed, st.failed), (4, 3, 1));
    e.free_batch(batch).expect("free");

    // Pending, with transferred bytes moving up to the length: 8 reads of
    // 64 MiB (the same span), each cut into 1 MiB frames.
    const N: u32 = 8;
    let batch = e.allocate_batch(N).expect("allocate");
    let reqs = vec![request(Op::Read, fx.local, fx.seg, b, BIG); N as usize];
    e.submit(batch, &reqs).expect("submit");
    let mut seen = Vec::new();
    let ended = spin_until(WAIT, || {
        let st = e.batch_status(batch).expect("status");
        let first = e.task_status(TaskId { batch, index: 0 }).expect("task");
        assert_eq!((st.len, first.len), (N as u64 * BIG, BIG));
        let now = (st.state, st.transferred, first.state, first.transferred);
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        st.state.is_terminal()
    });
    assert!(ended, "the reads did not end");
    assert_eq!(seen.first().map(|s| s.0), Some(TaskState::Pending), "{seen:?}");
    let done = (TaskState::Completed, N as u64 * BIG, TaskState::Completed, BIG);
    assert_eq!(seen.last(), Some(&done));
    assert!(
        seen.windows(2).all(|w| w[0].1 <= w[1].1 && w[0].3 <= w[1].3),
        "transferred went down: {seen:?}"
    );
    let moving = seen
        .iter()
        .any(|&(s, n, ..)| s == TaskState::Pending && n > 0 && n < N as u64 * BIG);
    assert!(moving, "transferred never moved while pending: {seen:?}");
    e.free_batch(batch).expect("free");
    // Canceled and Timeout: see `cancel_ends_tasks_canceled` and
    // `task_past_its_deadline_ends_timeout`.
}

#[test]
fn notifications_waiting_for_their_batches_are_bounded() {
    // The peer never answers, so every batch stays pending and its
    // notification waits; max_notifications bounds how many may wait.
    let silent = SilentPeer::start();
    let initiator = Engine::start(EngineConfig {
        max_notifications: 2,
        transfer_timeout: Duration::from_millis(300),
        ..EngineConfig::default()
    })
    .expect("start");
    let local = initiator.alloc_memory(64 * KIB, Perm::LOCAL_ONLY).expect("alloc");
    let seg = initiator.open_segment(&silent.name()).expect("open");
    for i in 0..2 {
        let batch = initiator.allocate_batch(1).expect("allocate");
        let req = request(Op::Read, local + i * 4096, seg, 0x10_0000, 4096);
        initiator
            .submit_with_notify(batch, &[req], "layer", b"ready")
            .expect("within the bound");
    }
    let batch = initiator.allocate_batch(1).expect("allocate");
    let req = request(Op::Read, local + 8192, seg, 0x10_0000, 4096);
    let err = initiator
        .submit_with_notify(batch, &[req], "layer", b"ready")
        .expect_err("a third waiting notification is refused");
    assert_eq!(err.code(), ErrorCode::NotReady, "{err}");
    assert!(err.message().contains(&silent.name()), "{err}");
    assert_eq!(
        initiator.tasks_status(batch).expect("tasks").len(),
        0,
        "nothing of the refused batch was submitted"
    );
    // The same bound holds for standalone notifications: the two waiting
    // with their batches already take it.
    let err = initiator
        .send_notification(seg, "alone", b"")
        .expect_err("a standalone notification beyond the bound is refused");
    assert_eq!(err.code(), ErrorCode::NotReady, "{err}");
}
