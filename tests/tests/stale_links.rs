//! A connection that its initiator gave up on may still deliver bytes
//! later (they waited in a router, a long queue, the kernel's buffers of a
//! frozen peer): the target must never apply them after the writes of the
//! initiator's next connection. Found by the namespace soak (scenario
//! 790, a frozen target); here a proxy holds the old connection's bytes,
//! so the late delivery happens every time.
//!
//! No sleeps: the test waits for batch ends and for the target to close
//! the old connection, each bounded by a deadline.

use std::time::Duration;

use te_runtime::{Engine, EngineConfig, ErrorCode, Op, Perm, Request, SegmentId, TaskState};
use te_tests::fill;
use te_tests::gate::Proxy;
use te_tests::proc::check_pattern;

const MIB: u64 = 1 << 20;
const REGION: u64 = 16 * MIB;
/// Upper bound for waits that only a hang reaches.
const WAIT: Duration = Duration::from_secs(30);

fn writes(seg: SegmentId, local: u64, remote: u64) -> Vec<Request> {
    (0..REGION / MIB)
        .map(|i| Request {
            op: Op::Write,
            local: local + i * MIB,
            segment: seg,
            remote: remote + i * MIB,
            len: MIB,
        })
        .collect()
}

#[test]
fn bytes_of_a_connection_given_up_on_never_land_after_the_next_connections_writes() {
    // The target waits long for a silent peer; the initiator gives up fast.
    let target = Engine::start(EngineConfig {
        idle_timeout: Duration::from_secs(120),
        ..EngineConfig::default()
    })
    .expect("target starts");
    let initiator = Engine::start(EngineConfig {
        idle_timeout: Duration::from_secs(1),
        heartbeat_interval: Duration::from_millis(300),
        transfer_timeout: Duration::from_secs(20),
        ..EngineConfig::default()
    })
    .expect("initiator starts");
    let remote = target
        .alloc_memory(REGION, Perm::REMOTE_READ_WRITE)
        .expect("target region");
    let (old, new) = (1, 2);
    let a = initiator
        .alloc_memory(REGION, Perm::LOCAL_ONLY)
        .expect("buffer a");
    let b = initiator
        .alloc_memory(REGION, Perm::LOCAL_ONLY)
        .expect("buffer b");
    // SAFETY: both buffers are the initiator's, and no transfer uses them yet.
    unsafe {
        fill(a, REGION, old);
        fill(b, REGION, new);
    }
    let proxy = Proxy::start(&target.segment_name());
    let seg = initiator
        .open_segment(&proxy.name())
        .expect("open the target through the proxy");
    // The handshake is done (open_segment waited for it); from now on the
    // first connection's bytes stay in the proxy.
    proxy.hold(0);

    // Writes of the old pattern: they reach nobody, and the initiator gives
    // up on the silent connection.
    let batch = initiator.allocate_batch(16).expect("batch");
    initiator
        .submit(batch, &writes(seg, a, remote))
        .expect("submit the old writes");
    let st = initiator
        .wait_batch(batch, WAIT)
        .expect("the old writes end when the initiator gives up");
    assert_eq!(
        st.completed, 0,
        "a write completed through a held connection: {st:?}"
    );
    let codes: Vec<TaskState> = initiator
        .tasks_status(batch)
        .expect("tasks")
        .iter()
        .map(|t| t.state)
        .collect();
    assert!(
        codes.iter().all(|s| matches!(
            s,
            TaskState::Timeout | TaskState::Failed(ErrorCode::Timeout | ErrorCode::Disconnected)
        )),
        "the old writes failed otherwise: {codes:?}"
    );
    initiator.free_batch(batch).expect("free");

    // The same addresses again, over a new connection: these complete.
    let batch = initiator.allocate_batch(16).expect("batch");
    initiator
        .submit_with_notify(batch, &writes(seg, b, remote), "fenced", b"new")
        .expect("submit the new writes");
    let st = initiator.wait_batch(batch, WAIT).expect("the new writes end");
    assert_eq!(st.state, TaskState::Completed, "the new writes: {st:?}");
    assert_eq!(proxy.connections(), 2, "one old connection, one new");
    let note = target.wait_notifications(WAIT);
    assert_eq!(note.len(), 1, "the new batch's notification: {note:?}");

    // Now the old connection's bytes arrive, late.
    proxy.release(0);
    assert!(
        proxy.wait_target_closed(0, WAIT),
        "the target kept the old connection open ({} of its bytes forwarded)",
        proxy.forwarded(0)
    );
    // SAFETY: the target's region; no transfer into it runs any more.
    let got = unsafe { check_pattern(remote, REGION, new, 0) };
    assert!(
        got.is_ok(),
        "old bytes landed after the new connection's writes ({} bytes forwarded late): {}",
        proxy.forwarded(0),
        got.unwrap_err()
    );
}

#[test]
fn a_hello_that_arrives_late_never_closes_the_peers_live_link() {
    let target = Engine::start(EngineConfig {
        idle_timeout: Duration::from_secs(120),
        ..EngineConfig::default()
    })
    .expect("target starts");
    let initiator = Engine::start(EngineConfig {
        connect_timeout: Duration::from_millis(500),
        ..EngineConfig::default()
    })
    .expect("initiator starts");
    let remote = target
        .alloc_memory(MIB, Perm::REMOTE_READ_WRITE)
        .expect("target region");
    let local = initiator.alloc_memory(MIB, Perm::LOCAL_ONLY).expect("buffer");
    let proxy = Proxy::start(&target.segment_name());
    let name = proxy.name();
    // The first connection's Hello stays in the proxy: the handshake times out.
    proxy.hold_new_connections(true);
    let opened = initiator.open_segment(&name);
    assert!(opened.is_err(), "a handshake through a held connection succeeded");
    proxy.hold_new_connections(false);
    // The second one gets through, and moves data.
    let seg = initiator
        .open_segment(&name)
        .expect("open through a second connection");
    let write = |seed: u64| {
        // SAFETY: the initiator's buffer; no transfer uses it now.
        unsafe { fill(local, MIB, seed) };
        let req = Request {
            op: Op::Write,
            local,
            segment: seg,
            remote,
            len: MIB,
        };
        let batch = initiator.allocate_batch(1).expect("batch");
        initiator.submit(batch, &[req]).expect("submit");
        let st = initiator.wait_batch(batch, WAIT).expect("the write ends");
        initiator.free_batch(batch).expect("free");
        st.state
    };
    assert_eq!(write(3), TaskState::Completed);
    // The old Hello arrives now: the target answers it, the initiator's
    // kernel resets it, and the live link goes on.
    proxy.release(0);
    assert!(
        proxy.wait_target_closed(0, WAIT),
        "the target kept the late connection open"
    );
    assert_eq!(
        write(4),
        TaskState::Completed,
        "the live link after the late Hello"
    );
    assert_eq!(proxy.connections(), 2, "the live link was replaced");
    // SAFETY: the target's region; no transfer into it runs any more.
    unsafe { check_pattern(remote, MIB, 4, 0) }.expect("the second write's bytes");
}

#[test]
fn one_engine_under_two_addresses_is_one_segment_or_refused() {
    let target = Engine::start(EngineConfig {
        listen: "0.0.0.0:0".into(),
        ..EngineConfig::default()
    })
    .expect("target starts");
    let port = target
        .segment_name()
        .rsplit_once(':')
        .expect("host:port")
        .1
        .to_string();
    let initiator = Engine::start(EngineConfig::default()).expect("initiator starts");
    let first = initiator
        .open_segment(&format!("127.0.0.1:{port}"))
        .expect("open by address");
    // Another spelling of the same address (inet_aton's short form, which
    // resolves through getaddrinfo like a host name): the same segment.
    let again = initiator
        .open_segment(&format!("127.1:{port}"))
        .expect("open by name");
    assert_eq!(first, again, "two segments for one address");
    // Another address of the same engine: refused, naming the open one.
    let err = initiator
        .open_segment(&format!("127.0.0.2:{port}"))
        .expect_err("a second link to the same engine");
    assert!(
        err.code() == ErrorCode::Invalid && err.message().contains("already open as 127.0.0.1:"),
        "{err}"
    );
    // The first segment still works.
    let local = initiator.alloc_memory(4096, Perm::LOCAL_ONLY).expect("buffer");
    let remote = target
        .alloc_memory(4096, Perm::REMOTE_READ_WRITE)
        .expect("region");
    initiator
        .transfer_sync_write(&format!("127.0.0.1:{port}"), local, remote, 4096)
        .expect("write through the first segment");
}
