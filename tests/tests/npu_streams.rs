//! Transfers ordered on the application's device stream
//! (`Engine::submit_on_stream`, memfabric's `transfer_async_write_submit(...,
//! stream)`), on the fake libascendcl.so: this test process is the
//! application, with its own `aclrtStream`, and the initiating npu engine;
//! a `te-peer` child process owns the remote memory.
//!
//! The application's stream is held at first by a notify of its own (what
//! a long kernel would do), so the order is checked, not raced:
//! - the transfer does not start before the work queued ahead of it on the
//!   stream (a write sends what that work produced, not what was there);
//! - the work queued after it waits for its end (a read's bytes are what a
//!   copy queued behind it sees; an event behind it is never complete while
//!   the batch is pending);
//! - over TCP and over the same-host path;
//! - a transfer that fails still lets the stream go on, the batch names the
//!   failure; a failed ACL call at submission submits nothing; a stream that
//!   failed before the fence fails the batch;
//! - no event or notify is destroyed while the application's stream still
//!   names it: not when the batch times out before the stream reached it,
//!   not when the engine goes first (the fake counts such destroys);
//! - bad arguments are refused with the value named.

use std::ffi::c_void;
use std::ptr::null_mut;
use std::time::Duration;

use te_runtime::{Engine, ErrorCode, Location, Op, Path, Perm, Request, SegmentId, StreamHandle, TaskState};
use te_tests::acl::{config_on_fake, fake_acl, fake_path};
use te_tests::proc::PeerProcess;
use te_tests::transfer;

const PEER: &str = env!("CARGO_BIN_EXE_te-peer");
const WAIT: Duration = Duration::from_secs(60);
const LEN: u64 = 4 << 20;

type H = *mut c_void;
type E = i32;

/// The ACL calls the application makes (the C signatures of acl_rt.h).
struct App {
    init: unsafe extern "C" fn(*const std::ffi::c_char) -> E,
    finalize: unsafe extern "C" fn() -> E,
    set_device: unsafe extern "C" fn(i32) -> E,
    create_stream: unsafe extern "C" fn(*mut H) -> E,
    destroy_stream: unsafe extern "C" fn(H) -> E,
    sync_stream: unsafe extern "C" fn(H) -> E,
    memcpy_async: unsafe extern "C" fn(H, usize, *const c_void, usize, i32, H) -> E,
    create_event: unsafe extern "C" fn(*mut H) -> E,
    destroy_event: unsafe extern "C" fn(H) -> E,
    record_event: unsafe extern "C" fn(H, H) -> E,
    query_event_status: unsafe extern "C" fn(H, *mut i32) -> E,
    create_notify: unsafe extern "C" fn(*mut H, u64) -> E,
    destroy_notify: unsafe extern "C" fn(H) -> E,
    record_notify: unsafe extern "C" fn(H, H) -> E,
    wait_and_reset_notify: unsafe extern "C" fn(H, H, u32) -> E,
    _lib: libloading::Library,
}

const H2D: i32 = 1;
const D2H: i32 = 2;

macro_rules! sym {
    ($lib:expr, $name:literal) => {
        // SAFETY: the symbol is declared with the C signature acl_rt.h gives
        // it, which the field type spells out; the library outlives `App`.
        *unsafe { $lib.get(concat!($name, "\0").as_bytes()) }.expect($name)
    };
}

impl App {
    /// The application's ACL calls, this thread bound to device 0.
    fn load() -> App {
        let app = App::load_unbound();
        app.bind();
        app
    }

    /// As [`load`](Self::load), ACL initialised by the application first.
    fn load_initialised() -> App {
        let app = App::load_unbound();
        // SAFETY: a null configuration path is allowed.
        assert_eq!(unsafe { (app.init)(std::ptr::null()) }, 0);
        app.bind();
        app
    }

    /// The application's ACL calls, from the same library the engine loads
    /// (one ACL state per process).
    fn load_unbound() -> App {
        let path = te_fake_acl::library_path().expect("the fake libascendcl.so is built");
        // SAFETY: the fake's initialisers only set up its own state.
        let lib = unsafe { libloading::Library::new(path) }.expect("load the fake ACL");
        App {
            init: sym!(lib, "aclInit"),
            finalize: sym!(lib, "aclFinalize"),
            set_device: sym!(lib, "aclrtSetDevice"),
            create_stream: sym!(lib, "aclrtCreateStream"),
            destroy_stream: sym!(lib, "aclrtDestroyStream"),
            sync_stream: sym!(lib, "aclrtSynchronizeStream"),
            memcpy_async: sym!(lib, "aclrtMemcpyAsync"),
            create_event: sym!(lib, "aclrtCreateEvent"),
            destroy_event: sym!(lib, "aclrtDestroyEvent"),
            record_event: sym!(lib, "aclrtRecordEvent"),
            query_event_status: sym!(lib, "aclrtQueryEventStatus"),
            create_notify: sym!(lib, "aclrtCreateNotify"),
            destroy_notify: sym!(lib, "aclrtDestroyNotify"),
            record_notify: sym!(lib, "aclrtRecordNotify"),
            wait_and_reset_notify: sym!(lib, "aclrtWaitAndResetNotify"),
            _lib: lib,
        }
    }

    /// Binds this thread to device 0.
    fn bind(&self) {
        // SAFETY: no pointers.
        assert_eq!(unsafe { (self.set_device)(0) }, 0);
    }

    fn handle(&self, create: unsafe extern "C" fn(*mut H) -> E) -> H {
        let mut h = null_mut();
        // SAFETY: valid out pointer.
        assert_eq!(unsafe { create(&mut h) }, 0);
        h
    }

    fn stream(&self) -> H {
        self.handle(self.create_stream)
    }

    fn event(&self) -> H {
        self.handle(self.create_event)
    }

    fn notify(&self) -> H {
        let mut h = null_mut();
        // SAFETY: valid out pointer.
        assert_eq!(unsafe { (self.create_notify)(&mut h, 0) }, 0);
        h
    }

    /// Holds `s` until [`open`](Self::open): the application's own long work.
    fn gate(&self, s: H) -> H {
        let g = self.notify();
        // SAFETY: live handles.
        assert_eq!(unsafe { (self.wait_and_reset_notify)(g, s, 60) }, 0);
        g
    }

    fn open(&self, gate: H, other: H) {
        // SAFETY: live handles.
        assert_eq!(unsafe { (self.record_notify)(gate, other) }, 0);
    }

    /// Queues a copy of `src` into device memory at `dst` on `s`; `src`
    /// must live until `s` is synchronised.
    fn upload(&self, dst: u64, src: &[u8], s: H) {
        let d = dst as usize as H;
        // SAFETY: a device range of the engine's allocation; `src` outlives the copy.
        let rc = unsafe { (self.memcpy_async)(d, src.len(), src.as_ptr().cast(), src.len(), H2D, s) };
        assert_eq!(rc, 0);
    }

    /// Queues a copy of device memory at `src` into `dst` on `s`.
    fn download(&self, dst: &mut [u8], src: u64, s: H) {
        let p = src as usize as *const c_void;
        // SAFETY: a device range of the engine's allocation; `dst` outlives the copy.
        let rc = unsafe { (self.memcpy_async)(dst.as_mut_ptr().cast(), dst.len(), p, dst.len(), D2H, s) };
        assert_eq!(rc, 0);
    }

    fn sync(&self, s: H) -> E {
        // SAFETY: a live stream.
        unsafe { (self.sync_stream)(s) }
    }

    fn complete(&self, ev: H) -> bool {
        let mut st = -1;
        // SAFETY: a live event, valid out pointer.
        assert_eq!(unsafe { (self.query_event_status)(ev, &mut st) }, 0);
        st == 1
    }

    fn done(&self, streams: &[H], events: &[H], notifies: &[H]) {
        // SAFETY: live handles, each destroyed once.
        unsafe {
            for &s in streams {
                assert_eq!((self.destroy_stream)(s), 0);
            }
            for &e in events {
                assert_eq!((self.destroy_event)(e), 0);
            }
            for &n in notifies {
                assert_eq!((self.destroy_notify)(n), 0);
            }
        }
    }
}

fn engine(location: Location, path: Path) -> Engine {
    Engine::start(config_on_fake(location, path)).expect("engine starts")
}

fn owner(perm: &str) -> PeerProcess {
    let acl = fake_path();
    let args = ["--location", "npu:0", "--acl", acl.as_str(), "--perm", perm];
    PeerProcess::spawn_with_env(PEER, "127.0.0.1:0", LEN, 7, &args, &[])
}

fn open(e: &Engine, p: &PeerProcess) -> SegmentId {
    e.open_segment(&p.segment).expect("open the owner's segment")
}

fn pattern(seed: u64) -> Vec<u8> {
    (0..LEN).map(|i| te_tests::pattern(seed, i)).collect()
}

fn req(op: Op, local: u64, seg: SegmentId, remote: u64) -> Request {
    Request {
        op,
        local,
        segment: seg,
        remote,
        len: LEN,
    }
}

fn stream(h: H) -> StreamHandle {
    StreamHandle(h as u64)
}

/// A write ordered on a held stream: it sends what the work ahead of it
/// wrote, and the work behind it overwrites the buffer only afterwards.
fn ordered_write(e: &Engine, p: &PeerProcess, what: &str) {
    let app = App::load();
    let seg = open(e, p);
    let x = e.alloc_memory(LEN, Perm::LOCAL_ONLY).expect("alloc");
    let (s, other) = (app.stream(), app.stream());
    let (ahead, behind) = (pattern(21), pattern(22));
    let gate = app.gate(s);
    app.upload(x, &ahead, s);
    let batch = e.allocate_batch(1).expect("batch");
    e.submit_on_stream(batch, &[req(Op::Write, x, seg, p.addr)], stream(s))
        .expect("submit on the stream");
    app.upload(x, &behind, s);
    let after = app.event();
    // SAFETY: live handles.
    assert_eq!(unsafe { (app.record_event)(after, s) }, 0);
    let st = e.batch_status(batch).expect("status");
    assert_eq!(
        st.state,
        TaskState::Pending,
        "{what}: the transfer waits for the work ahead of it on the stream"
    );
    app.open(gate, other);
    loop {
        // The event behind the transfer completes only after its batch ended.
        let after_done = app.complete(after);
        let state = e.batch_status(batch).expect("status").state;
        assert!(
            !after_done || state != TaskState::Pending,
            "{what}: the stream ran past a transfer still pending"
        );
        if state != TaskState::Pending {
            break;
        }
        e.wait_batch(batch, Duration::from_millis(1)).ok();
    }
    assert_eq!(
        e.wait_batch(batch, WAIT).expect("ends").state,
        TaskState::Completed,
        "{what}"
    );
    assert_eq!(app.sync(s), 0, "{what}: the stream went on");
    let mut now = vec![0u8; LEN as usize];
    e.read_memory(x, &mut now).expect("read");
    assert!(now == behind, "{what}: the work behind the transfer ran");
    transfer(e, seg, Op::Read, x, p.addr, LEN, Path::Tcp).expect("read the owner back");
    e.read_memory(x, &mut now).expect("read");
    assert!(now == ahead, "{what}: the owner got what the work ahead wrote");
    app.done(&[s, other], &[after], &[gate]);
    e.free_memory(x).expect("free");
}

/// A read ordered on a held stream: a copy queued behind it sees its bytes.
fn ordered_read(e: &Engine, p: &PeerProcess, what: &str) {
    let app = App::load();
    let seg = open(e, p);
    let x = e.alloc_memory(LEN, Perm::LOCAL_ONLY).expect("alloc");
    let (s, other) = (app.stream(), app.stream());
    let gate = app.gate(s);
    let batch = e.allocate_batch(1).expect("batch");
    e.submit_on_stream(batch, &[req(Op::Read, x, seg, p.addr)], stream(s))
        .expect("submit on the stream");
    let mut seen = vec![0u8; LEN as usize];
    app.download(&mut seen, x, s);
    assert_eq!(
        e.batch_status(batch).expect("status").state,
        TaskState::Pending,
        "{what}"
    );
    app.open(gate, other);
    assert_eq!(app.sync(s), 0, "{what}");
    assert_eq!(
        e.batch_status(batch).expect("status").state,
        TaskState::Completed,
        "{what}: the stream went past the transfer only after it ended"
    );
    assert!(
        seen == pattern(p.seed),
        "{what}: the copy behind the read saw the owner's bytes"
    );
    app.done(&[s, other], &[], &[gate]);
    e.free_memory(x).expect("free");
}

#[test]
fn a_stream_ordered_transfer_runs_after_the_work_ahead_of_it_and_before_the_work_behind_it_over_tcp() {
    let _g = fake_acl();
    let p = owner("rw");
    let e = engine(Location::Npu(0), Path::Tcp);
    ordered_read(&e, &p, "tcp read");
    ordered_write(&e, &p, "tcp write");
    e.finalize();
}

#[test]
fn a_stream_ordered_transfer_keeps_the_order_over_the_same_host_path() {
    let _g = fake_acl();
    let p = owner("rw");
    let e = engine(Location::Npu(0), Path::Shm);
    let seg = open(&e, &p);
    assert_eq!(e.segment_path(seg).expect("path"), Path::Shm);
    ordered_read(&e, &p, "same-host read");
    ordered_write(&e, &p, "same-host write");
    e.finalize();
}

#[test]
fn a_failed_stream_ordered_transfer_names_its_failure_and_lets_the_stream_go_on() {
    let _g = fake_acl();
    let p = owner("r");
    let e = engine(Location::Npu(0), Path::Tcp);
    let app = App::load();
    let seg = open(&e, &p);
    let x = e.alloc_memory(LEN, Perm::LOCAL_ONLY).expect("alloc");
    let s = app.stream();
    let batch = e.allocate_batch(1).expect("batch");
    e.submit_on_stream(batch, &[req(Op::Write, x, seg, p.addr)], stream(s))
        .expect("submit on the stream");
    let st = e.wait_batch(batch, WAIT).expect("ends");
    assert!(
        matches!(st.state, TaskState::Failed(ErrorCode::NotAuthorized)),
        "{st:?}"
    );
    assert_eq!(
        app.sync(s),
        0,
        "a failed transfer does not leave the stream waiting"
    );
    app.done(&[s], &[], &[]);
    e.free_memory(x).expect("free");
    e.finalize();
}

#[test]
fn a_failed_acl_call_at_submission_submits_nothing_and_bad_arguments_are_named() {
    let (_g, fake) = fake_acl();
    let p = owner("rw");
    let e = engine(Location::Npu(0), Path::Tcp);
    let app = App::load();
    let seg = open(&e, &p);
    let x = e.alloc_memory(LEN, Perm::LOCAL_ONLY).expect("alloc");
    let s = app.stream();
    let w = [req(Op::Write, x, seg, p.addr)];

    fake.fail("aclrtWaitAndResetNotify", 1, 507_000, false);
    let batch = e.allocate_batch(1).expect("batch");
    let err = e
        .submit_on_stream(batch, &w, stream(s))
        .expect_err("the fence failed");
    assert_eq!(err.code(), ErrorCode::RuntimeError, "{err}");
    assert!(
        err.message().contains("aclrtWaitAndResetNotify") && err.message().contains("507000"),
        "{err}"
    );
    assert_eq!(
        e.batch_status(batch).expect("status").total,
        0,
        "nothing submitted"
    );
    assert_eq!(app.sync(s), 0, "the stream is not held");

    let err = e
        .submit_on_stream(batch, &w, StreamHandle(0))
        .expect_err("null stream");
    assert_eq!(err.code(), ErrorCode::Invalid, "{err}");
    assert!(err.message().contains("null"), "{err}");

    e.submit_on_stream(batch, &w, stream(s)).expect("submit");
    let err = e.submit(batch, &w).expect_err("the batch is ordered on a stream");
    assert_eq!(err.code(), ErrorCode::Invalid, "{err}");
    assert_eq!(
        e.wait_batch(batch, WAIT).expect("ends").state,
        TaskState::Completed
    );
    let err = e
        .submit_on_stream(batch, &w, stream(s))
        .expect_err("not a fresh batch");
    assert_eq!(err.code(), ErrorCode::Invalid, "{err}");
    assert!(err.message().contains("1 tasks already"), "{err}");
    assert_eq!(app.sync(s), 0);

    let host = engine(Location::Cpu, Path::Tcp);
    let hb = host.allocate_batch(1).expect("batch");
    let err = host.submit_on_stream(hb, &w, stream(s)).expect_err("host memory");
    assert_eq!(err.code(), ErrorCode::Invalid, "{err}");
    assert!(err.message().contains("cpu"), "{err}");
    app.done(&[s], &[], &[]);
    e.free_memory(x).expect("free");
    e.finalize();
    host.finalize();
}

fn engine_with_timeout(secs: u64) -> Engine {
    let mut cfg = config_on_fake(Location::Npu(0), Path::Tcp);
    cfg.transfer_timeout = Duration::from_secs(secs);
    Engine::start(cfg).expect("engine starts")
}

#[test]
fn a_batch_that_times_out_before_its_stream_reaches_it_destroys_nothing_the_stream_still_names() {
    let (_g, fake) = fake_acl();
    let p = owner("rw");
    let e = engine_with_timeout(1);
    let app = App::load();
    let seg = open(&e, &p);
    let x = e.alloc_memory(LEN, Perm::LOCAL_ONLY).expect("alloc");
    let (s, s2, other) = (app.stream(), app.stream(), app.stream());
    let misuse = fake.handle_misuse();
    let gate = app.gate(s);
    let batch = e.allocate_batch(1).expect("batch");
    e.submit_on_stream(batch, &[req(Op::Read, x, seg, p.addr)], stream(s))
        .expect("submit");
    assert_eq!(e.wait_batch(batch, WAIT).expect("ends").state, TaskState::Timeout);
    let why = e.batch_error(batch).expect("the failure");
    assert!(why.message().contains("still held"), "{why}");
    // Other fenced transfers retire what they can meanwhile.
    let again = || {
        let b = e.allocate_batch(1).expect("batch");
        e.submit_on_stream(b, &[req(Op::Read, x, seg, p.addr)], stream(s2))
            .expect("submit");
        assert_eq!(e.wait_batch(b, WAIT).expect("ends").state, TaskState::Completed);
        assert_eq!(app.sync(s2), 0);
    };
    again();
    assert_eq!(
        fake.handle_misuse(),
        misuse,
        "a handle s still names was destroyed"
    );
    app.open(gate, other);
    assert_eq!(
        app.sync(s),
        0,
        "the stream passes the fence the timed-out batch released"
    );
    again();
    assert_eq!(fake.handle_misuse(), misuse);
    app.done(&[s, s2, other], &[], &[gate]);
    e.free_memory(x).expect("free");
    e.finalize();
}

#[test]
fn an_engine_finalized_under_a_held_stream_releases_it_and_destroys_nothing_it_names() {
    let (_g, fake) = fake_acl();
    let p = owner("rw");
    // The application initialised ACL itself (as torch_npu does), so the
    // engine going does not finalize it under the application's streams.
    let app = App::load_initialised();
    let e = engine_with_timeout(1);
    let seg = open(&e, &p);
    let x = e.alloc_memory(LEN, Perm::LOCAL_ONLY).expect("alloc");
    let (s, other) = (app.stream(), app.stream());
    let misuse = fake.handle_misuse();
    let gate = app.gate(s);
    let batch = e.allocate_batch(1).expect("batch");
    e.submit_on_stream(batch, &[req(Op::Read, x, seg, p.addr)], stream(s))
        .expect("submit");
    e.finalize();
    drop(e);
    assert_eq!(
        fake.handle_misuse(),
        misuse,
        "a handle the held stream names was destroyed"
    );
    app.open(gate, other);
    assert_eq!(
        app.sync(s),
        0,
        "the stream is not left waiting for an engine that is gone"
    );
    app.done(&[s, other], &[], &[gate]);
    // SAFETY: no pointers; the application's own init.
    assert_eq!(unsafe { (app.finalize)() }, 0);
}

#[test]
fn a_stream_that_failed_before_the_fence_fails_the_batch_naming_it() {
    let (_g, fake) = fake_acl();
    let p = owner("rw");
    let e = engine(Location::Npu(0), Path::Tcp);
    let app = App::load();
    let seg = open(&e, &p);
    let x = e.alloc_memory(LEN, Perm::LOCAL_ONLY).expect("alloc");
    let s = app.stream();
    let data = pattern(31);
    fake.fail("aclrtMemcpyAsync", 1, 507_053, true);
    app.upload(x, &data, s);
    let batch = e.allocate_batch(1).expect("batch");
    e.submit_on_stream(batch, &[req(Op::Write, x, seg, p.addr)], stream(s))
        .expect("submit");
    let st = e.wait_batch(batch, WAIT).expect("ends");
    assert!(
        matches!(st.state, TaskState::Failed(ErrorCode::RuntimeError)),
        "{st:?}"
    );
    let why = e.batch_error(batch).expect("the failure");
    assert!(
        why.message().contains("before the transfer") && why.message().contains("507053"),
        "{why}"
    );
    assert_eq!(
        app.sync(s),
        507_053,
        "the stream's own error stays the application's"
    );
    assert_eq!(app.sync(s), 0);
    app.done(&[s], &[], &[]);
    e.free_memory(x).expect("free");
    e.finalize();
}
