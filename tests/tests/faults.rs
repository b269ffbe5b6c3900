//! Fault tests: a peer process killed mid-transfer, hostile bytes on a raw
//! socket, and missing or wrong shared secrets.
//!
//! No test sleeps to synchronise: they wait for engine events (batch ends,
//! transfer rounds) or read a raw socket until the engine closes it, each
//! bounded by a deadline.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use te_proto::wire::{
    Decoder, Frame, Header, Opcode, Progress, AUTH_HMAC_SHA256, AUTH_NONE, MAX_PAYLOAD_LIMIT,
};
use te_runtime::{
    BatchId, BatchStatus, Engine, EngineConfig, ErrorCode, Op, Perm, Request, SegmentId, TaskState,
};
use te_tests::proc::{check_pattern, fill_from, PeerProcess};
use te_tests::{encode, hello};
use zerocopy::IntoBytes;

const PEER: &str = env!("CARGO_BIN_EXE_te-peer");
const MIB: u64 = 1 << 20;
/// Upper bound for waits that only a hang reaches.
const WAIT: Duration = Duration::from_secs(30);
const IDLE: Duration = Duration::from_secs(2);
const CONNECT: Duration = Duration::from_secs(2);
/// Region of the peers killed or stopped mid-transfer.
const REGION: u64 = 128 * MIB;
/// Tasks of 1 MiB in their batches: 2 GiB, moving the region 16 times
/// over, so that the batch is far from done whenever the peer is hit.
const TASKS: u64 = 2048;
/// How long a raw socket waits for the engine to close it.
const RAW_WAIT: Duration = Duration::from_secs(10);

/// An engine that gives up on silent peers and handshakes quickly.
fn quick_config() -> EngineConfig {
    EngineConfig {
        idle_timeout: IDLE,
        heartbeat_interval: Duration::from_millis(400),
        connect_timeout: CONNECT,
        transfer_timeout: Duration::from_secs(20),
        ..EngineConfig::default()
    }
}

fn start(cfg: EngineConfig) -> Engine {
    Engine::start(cfg).expect("engine starts")
}

// ---------------------------------------------------------------------------
// A peer process killed mid-transfer
// ---------------------------------------------------------------------------

/// Waits until `batch` has moved some bytes, without letting it finish
/// unnoticed: panics if it ended first or nothing moved before `WAIT`.
fn wait_for_progress(engine: &Engine, batch: BatchId) -> BatchStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        let st = engine.batch_status(batch).expect("batch status");
        assert_eq!(
            st.state,
            TaskState::Pending,
            "the batch ended before the peer could be killed: {st:?}"
        );
        if st.transferred > 0 {
            return st;
        }
        assert!(Instant::now() < deadline, "no progress within {WAIT:?}: {st:?}");
        // Wakes on every round of the event loop; the short cap only
        // bounds how stale `transferred` can be.
        let _ = engine.wait_batch(batch, Duration::from_millis(1));
    }
}

/// `TASKS` transfers of 1 MiB between `local` and the peer's region, each
/// at the same offset on both sides, going round the region.
fn big_batch(seg: SegmentId, peer: &PeerProcess, op: Op, local: u64) -> Vec<Request> {
    (0..TASKS)
        .map(|i| {
            let off = (i * MIB) % REGION;
            Request {
                op,
                local: local + off,
                segment: seg,
                remote: peer.addr + off,
                len: MIB,
            }
        })
        .collect()
}

/// How many tasks of `batch` are in each state, for failure messages.
fn state_counts(engine: &Engine, batch: BatchId) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for t in engine.tasks_status(batch).unwrap_or_default() {
        *counts.entry(format!("{:?}", t.state)).or_insert(0) += 1;
    }
    format!("{counts:?}")
}

/// Submits `TASKS` transfers of 1 MiB between `local` and the peer, kills
/// the peer once bytes flow, and checks that the batch ends within the idle
/// timeout with every task either complete (and byte-exact, for reads) or
/// failed with `Disconnected`/`Timeout`.
fn kill_mid_batch(engine: &Engine, seg: SegmentId, peer: &mut PeerProcess, op: Op, local: u64) {
    let reqs = big_batch(seg, peer, op, local);
    let batch = engine.allocate_batch(TASKS as u32).expect("allocate batch");
    engine.submit(batch, &reqs).expect("submit");
    let before = wait_for_progress(engine, batch);
    let killed = Instant::now();
    peer.kill();
    let st = engine
        .wait_batch(batch, IDLE + Duration::from_secs(3))
        .unwrap_or_else(|e| {
            panic!(
                "{op:?} batch did not end after the peer was killed: {e}; tasks: {}",
                state_counts(engine, batch)
            )
        });
    let took = killed.elapsed();
    assert!(
        took <= IDLE + Duration::from_millis(500),
        "tasks took {took:?} to fail after the kill (idle timeout {IDLE:?})"
    );
    assert!(
        st.failed >= 1,
        "no task failed although the peer died: {st:?} (before kill: {before:?})"
    );
    assert_eq!(st.completed + st.failed, st.total, "{st:?}");
    let statuses = engine.tasks_status(batch).expect("tasks status");
    for (i, t) in statuses.iter().enumerate() {
        match t.state {
            TaskState::Completed => {
                assert_eq!(t.transferred, MIB, "task {i}");
                if op == Op::Read {
                    let off = (i as u64 * MIB) % REGION;
                    // SAFETY: the batch ended; nothing writes `local` now.
                    unsafe { check_pattern(local + off, MIB, peer.seed, off) }
                        .unwrap_or_else(|e| panic!("completed read task {i}: {e}"));
                }
            }
            TaskState::Failed(ErrorCode::Disconnected) | TaskState::Timeout => {}
            other => panic!("task {i} of the killed peer ended {other:?}, expected Disconnected or Timeout"),
        }
    }
    engine.free_batch(batch).expect("free batch");
}

/// Restarts the peer on the address `name` it had, and checks that the
/// engine reconnects through the old segment handle (batch API) and
/// through the name (synchronous helpers), byte-exact both ways.
fn restart_and_reconnect(engine: &Engine, seg: SegmentId, name: &str, buf: u64, seed: u64) {
    let peer = PeerProcess::spawn(PEER, name, 4 * MIB + 3, seed, &[]);
    assert_eq!(peer.segment, name, "restarted on the same address");
    let batch = engine.allocate_batch(4).expect("allocate batch");
    let reqs: Vec<Request> = (0..4)
        .map(|i| Request {
            op: Op::Read,
            local: buf + 5 + i * MIB,
            segment: seg,
            remote: peer.addr + 3 + i * MIB,
            len: MIB,
        })
        .collect();
    engine.submit(batch, &reqs).expect("submit after the restart");
    let st = engine.wait_batch(batch, WAIT).expect("batch ends");
    assert_eq!(
        st.state,
        TaskState::Completed,
        "reconnect through the old handle: {st:?}"
    );
    engine.free_batch(batch).expect("free batch");
    // SAFETY: the batch ended.
    unsafe { check_pattern(buf + 5, 4 * MIB, peer.seed, 3) }.expect("bytes from the restarted peer");
    // SAFETY: ours.
    unsafe { fill_from(buf, 3 * MIB, seed + 1, 0) };
    engine
        .transfer_sync_write(name, buf + 7, peer.addr + 1, 2 * MIB)
        .expect("write to the restarted peer by name");
    engine
        .transfer_sync_read(name, buf + 3 * MIB, peer.addr, 2 * MIB + 3)
        .expect("read back from the restarted peer by name");
    // SAFETY: the reads ended.
    unsafe {
        check_pattern(buf + 3 * MIB, 1, peer.seed, 0).expect("byte before the write");
        check_pattern(buf + 3 * MIB + 1, 2 * MIB, seed + 1, 7).expect("bytes written to the restarted peer");
        check_pattern(buf + 5 * MIB + 1, 2, peer.seed, 2 * MIB + 1).expect("bytes after the write");
    }
}

#[test]
fn a_peer_killed_mid_read_fails_its_tasks_and_a_restarted_peer_is_reconnected() {
    let engine = start(quick_config());
    let buf = engine
        .alloc_memory(REGION, Perm::LOCAL_ONLY)
        .expect("alloc local memory");
    let other = PeerProcess::spawn(PEER, "127.0.0.1:0", MIB + 3, 40, &[]);
    let mut peer = PeerProcess::spawn(PEER, "127.0.0.1:0", REGION, 41, &[]);
    let name = peer.segment.clone();
    let seg = engine.open_segment(&name).expect("open the peer");

    // Killed while reads run.
    kill_mid_batch(&engine, seg, &mut peer, Op::Read, buf);

    // The engine stays usable: another peer serves byte-exact.
    engine
        .transfer_sync_read(&other.segment, buf + 1, other.addr, MIB + 3)
        .expect("read from another peer after the kill");
    // SAFETY: the read ended.
    unsafe { check_pattern(buf + 1, MIB + 3, other.seed, 0) }.expect("bytes from the other peer");

    // The dead peer: a transfer fails fast with RuntimeError naming it,
    // through the synchronous helper and through the batch API.
    let t = Instant::now();
    let err = engine
        .transfer_sync_read(&name, buf, peer.addr, 1)
        .expect_err("a read from a dead peer fails");
    assert_eq!(err.code(), ErrorCode::RuntimeError, "{err}");
    assert!(
        err.message().contains(&name),
        "the error names the address {name}: {err}"
    );
    let batch = engine.allocate_batch(1).expect("allocate batch");
    let req = Request {
        op: Op::Read,
        local: buf,
        segment: seg,
        remote: peer.addr,
        len: 1,
    };
    engine.submit(batch, &[req]).expect("submit to a dead peer");
    let st = engine.wait_batch(batch, WAIT).expect("the task ends");
    assert_eq!(st.state, TaskState::Failed(ErrorCode::RuntimeError), "{st:?}");
    engine.free_batch(batch).expect("free batch");
    assert!(
        t.elapsed() < CONNECT,
        "failing against a dead peer took {:?}",
        t.elapsed()
    );

    // Restarted on the same port: reconnected.
    restart_and_reconnect(&engine, seg, &name, buf, 42);
}

/// Submits `TASKS` tasks of 1 MiB, stops the peer (SIGSTOP: its
/// connection stays open, it sends nothing) once bytes flow, and checks
/// that the batch ends within the idle timeout with every task complete
/// or `Timeout`; then resumes the peer and checks that the next transfers
/// reconnect, and that completed tasks moved the right bytes.
fn silent_peer(op: Op, seed: u64) {
    const WSEED: u64 = 47;
    let engine = start(quick_config());
    let buf = engine
        .alloc_memory(REGION, Perm::LOCAL_ONLY)
        .expect("alloc local memory");
    if op == Op::Write {
        // SAFETY: ours.
        unsafe { fill_from(buf, REGION, WSEED, 0) };
    }
    let peer = PeerProcess::spawn(PEER, "127.0.0.1:0", REGION, seed, &[]);
    let seg = engine.open_segment(&peer.segment).expect("open the peer");
    let reqs = big_batch(seg, &peer, op, buf);
    let batch = engine.allocate_batch(TASKS as u32).expect("allocate batch");
    engine.submit(batch, &reqs).expect("submit");
    wait_for_progress(&engine, batch);
    // Stopped, the peer keeps its connection open but sends nothing: only
    // the idle timeout can tell.
    peer.signal("STOP");
    let stopped = Instant::now();
    let ended = engine.wait_batch(batch, IDLE + Duration::from_secs(3));
    let took = stopped.elapsed();
    // Resume before asserting, so that a failure leaves no stopped process
    // behind for long (the guard kills it anyway).
    peer.signal("CONT");
    let st = ended.unwrap_or_else(|e| {
        panic!(
            "{op:?} batch did not end after the peer went silent: {e}; tasks: {}",
            state_counts(&engine, batch)
        )
    });
    assert!(
        took <= IDLE + Duration::from_millis(800),
        "tasks took {took:?} to fail after the peer went silent (idle timeout {IDLE:?})"
    );
    assert!(
        st.failed >= 1,
        "no task failed although the peer went silent: {st:?}"
    );
    let statuses = engine.tasks_status(batch).expect("tasks status");
    engine.free_batch(batch).expect("free batch");
    let check = engine.alloc_memory(MIB, Perm::LOCAL_ONLY).expect("alloc");
    let mut checked = vec![false; (REGION / MIB) as usize];
    for (i, t) in statuses.iter().enumerate() {
        let off = (i as u64 * MIB) % REGION;
        match t.state {
            TaskState::Completed if op == Op::Read => {
                // SAFETY: the batch ended.
                unsafe { check_pattern(buf + off, MIB, peer.seed, off) }
                    .unwrap_or_else(|e| panic!("completed read task {i}: {e}"))
            }
            TaskState::Completed if std::mem::replace(&mut checked[(off / MIB) as usize], true) => {}
            TaskState::Completed => {
                // Read the span back once the peer answers again.
                engine
                    .transfer_sync_read(&peer.segment, check, peer.addr + off, MIB)
                    .unwrap_or_else(|e| panic!("read back completed write task {i}: {e}"));
                // SAFETY: the read ended.
                unsafe { check_pattern(check, MIB, WSEED, off) }
                    .unwrap_or_else(|e| panic!("completed write task {i}: {e}"));
            }
            TaskState::Timeout => {}
            other => panic!("task {i} of the silent peer ended {other:?}, expected Timeout"),
        }
    }

    // Answering again, the peer is reconnected by the next transfers.
    // SAFETY: ours; no transfer uses `buf` now.
    unsafe { fill_from(buf, 4 * MIB, seed + 1, 0) };
    engine
        .transfer_sync_write(&peer.segment, buf + 1, peer.addr + 2, 3 * MIB)
        .expect("write after the peer answers again");
    engine
        .transfer_sync_read(&peer.segment, check, peer.addr + 2, MIB)
        .expect("read after the peer answers again");
    // SAFETY: the read ended.
    unsafe { check_pattern(check, MIB, seed + 1, 1) }.expect("bytes after the reconnect");
}

#[test]
fn a_silent_peer_fails_reads_with_timeout_and_is_reconnected_when_it_answers_again() {
    silent_peer(Op::Read, 46);
}

#[test]
fn a_silent_peer_fails_writes_with_timeout_and_is_reconnected_when_it_answers_again() {
    silent_peer(Op::Write, 48);
}

#[test]
fn a_peer_killed_mid_write_fails_its_tasks_and_a_restarted_peer_is_reconnected() {
    let engine = start(quick_config());
    let buf = engine
        .alloc_memory(REGION, Perm::LOCAL_ONLY)
        .expect("alloc local memory");
    // SAFETY: ours.
    unsafe { fill_from(buf, REGION, 43, 0) };
    let mut peer = PeerProcess::spawn(PEER, "127.0.0.1:0", REGION, 44, &[]);
    let name = peer.segment.clone();
    let seg = engine.open_segment(&name).expect("open the peer");

    // Killed while writes run.
    kill_mid_batch(&engine, seg, &mut peer, Op::Write, buf);

    // Restarted on the same port: reconnected.
    restart_and_reconnect(&engine, seg, &name, buf, 45);
}

// ---------------------------------------------------------------------------
// Raw sockets
// ---------------------------------------------------------------------------

fn header(op: Opcode, body_len: usize, payload_len: u32) -> Vec<u8> {
    Header::new(op, 0, body_len, payload_len).as_bytes().to_vec()
}

fn read_req(req_id: u64, addr: u64, len: u32) -> Vec<u8> {
    encode(&Frame::ReadReq {
        req_id,
        addr,
        location: None,
        len,
    })
}

fn write_data(req_id: u64, addr: u64, len: u32) -> Vec<u8> {
    encode(&Frame::WriteData {
        req_id,
        addr,
        location: None,
        len,
    })
}

fn info_req(req_id: u64) -> Vec<u8> {
    encode(&Frame::InfoReq { req_id, after: None })
}

/// How a raw connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Orderly end of stream.
    Eof,
    /// Reset (or another error) by the engine's side.
    Reset(ErrorKind),
    /// Still open at the deadline: the engine did not close it.
    Open,
}

/// What the engine sent on a raw connection.
#[derive(Debug)]
struct Reply {
    /// Opcodes of the frames received (pings left out), with the code of
    /// `Error` frames.
    frames: Vec<(Opcode, Option<ErrorCode>)>,
    /// Payload bytes received (data of `ReadData` frames).
    payload: u64,
    /// Bytes that do not decode as frames.
    junk: Option<String>,
    end: End,
}

impl Reply {
    fn count(&self, op: Opcode) -> usize {
        self.frames.iter().filter(|f| f.0 == op).count()
    }

    fn has_error(&self, code: ErrorCode) -> bool {
        self.frames.contains(&(Opcode::Error, Some(code)))
    }

    /// The engine closed the connection, sent only frames of `allowed`
    /// kinds and nothing undecodable, and told why with an `Error` of
    /// `code` unless it reset the connection (which may drop that frame).
    fn assert_closed(&self, case: &str, code: Option<ErrorCode>, allowed: &[Opcode]) {
        assert!(
            matches!(self.end, End::Eof | End::Reset(_)),
            "{case}: the engine did not close the connection: {self:?}"
        );
        assert!(
            self.junk.is_none(),
            "{case}: undecodable bytes from the engine: {self:?}"
        );
        for (op, _) in &self.frames {
            assert!(
                *op == Opcode::Error || allowed.contains(op),
                "{case}: unexpected {op:?} from the engine: {self:?}"
            );
        }
        if let Some(code) = code {
            assert!(
                self.has_error(code) || matches!(self.end, End::Reset(_)),
                "{case}: expected an Error frame with {code:?}: {self:?}"
            );
        }
    }
}

/// Reads everything the engine sends until it closes the connection or
/// `timeout` passes (socket read timeouts bound every read).
fn read_reply(stream: &mut TcpStream, timeout: Duration) -> Reply {
    let deadline = Instant::now() + timeout;
    let mut dec = Decoder::new(MAX_PAYLOAD_LIMIT);
    let mut reply = Reply {
        frames: Vec::new(),
        payload: 0,
        junk: None,
        end: End::Open,
    };
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            reply.end = End::Open;
            return reply;
        }
        stream.set_read_timeout(Some(left)).expect("set read timeout");
        let n = match stream.read(&mut buf) {
            Ok(0) => {
                reply.end = End::Eof;
                return reply;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                reply.end = End::Reset(e.kind());
                return reply;
            }
        };
        if reply.junk.is_none() {
            decode_into(&mut dec, &buf[..n], &mut reply);
        }
    }
}

fn decode_into(dec: &mut Decoder, mut input: &[u8], reply: &mut Reply) {
    loop {
        match dec.progress() {
            Progress::Payload(left) => {
                let n = (left as usize).min(input.len());
                if n == 0 {
                    return;
                }
                dec.payload_consumed(n as u32);
                reply.payload += n as u64;
                input = &input[n..];
            }
            Progress::Frame => {
                match dec.frame() {
                    Some(Ok(f)) => {
                        let code = match f {
                            Frame::Error { code, .. } => Some(code),
                            _ => None,
                        };
                        if f.opcode() != Opcode::Ping {
                            reply.frames.push((f.opcode(), code));
                        }
                    }
                    Some(Err(e)) => {
                        reply.junk = Some(e.to_string());
                        return;
                    }
                    None => {}
                }
                dec.next();
            }
            Progress::NeedMore => {
                if input.is_empty() {
                    return;
                }
                match dec.feed(input) {
                    Ok(n) => input = &input[n..],
                    Err(e) => {
                        reply.junk = Some(e.to_string());
                        return;
                    }
                }
            }
        }
    }
}

/// Reads the engine's `HelloAck` and returns the proof it carries.
fn read_hello_ack_mac(stream: &mut TcpStream) -> [u8; 32] {
    stream.set_read_timeout(Some(WAIT)).expect("set read timeout");
    let mut dec = Decoder::new(MAX_PAYLOAD_LIMIT);
    let mut byte = [0u8; 1];
    // Byte by byte, so that nothing after the HelloAck is consumed.
    loop {
        if dec.progress() == Progress::Frame {
            match dec.frame() {
                Some(Ok(Frame::HelloAck(h))) => return h.mac,
                other => panic!("expected a HelloAck, got {other:?}"),
            }
        }
        match stream.read(&mut byte) {
            Ok(1) => {
                dec.feed(&byte).expect("the engine's bytes decode");
            }
            other => panic!("no HelloAck from the engine: {other:?}"),
        }
    }
}

fn connect(segment: &str) -> TcpStream {
    let s = TcpStream::connect(segment).unwrap_or_else(|e| panic!("raw connect to {segment}: {e}"));
    s.set_nodelay(true).expect("nodelay");
    s.set_write_timeout(Some(WAIT)).expect("write timeout");
    s
}

/// Transfer rounds completed by the background traffic, per kind.
struct Rounds {
    done: Mutex<[u64; 2]>,
    changed: Condvar,
}

impl Rounds {
    fn bump(&self, kind: usize) {
        self.done.lock().unwrap()[kind] += 1;
        self.changed.notify_all();
    }

    fn now(&self) -> [u64; 2] {
        *self.done.lock().unwrap()
    }

    /// Waits until both kinds of traffic completed a round after `since`.
    fn wait_past(&self, since: [u64; 2], case: &str) {
        let (done, timeout) = self
            .changed
            .wait_timeout_while(self.done.lock().unwrap(), WAIT, |d| {
                d[0] <= since[0] || d[1] <= since[1]
            })
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "{case}: transfers of the good peers stalled ({:?} rounds, {since:?} before)",
            *done
        );
    }
}

/// Sets the flag when dropped, also when the test panics, so that the
/// traffic threads stop and the scope can end.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[test]
fn hostile_connections_are_closed_while_good_peers_keep_transferring() {
    const AREA: u64 = 4 * MIB;
    const CHUNK: u64 = 64 << 10;
    // The engine under attack, with a region a good in-process engine
    // writes and reads, one a raw client reads, and one it writes into.
    let engine = start(quick_config());
    let region = engine.alloc_memory(AREA, Perm::REMOTE_READ_WRITE).expect("alloc");
    let exposed = engine.alloc_memory(MIB, Perm::REMOTE_READ_WRITE).expect("alloc");
    // SAFETY: engine memory of this test.
    unsafe { fill_from(exposed, MIB, 50, 0) };
    let landing = engine
        .alloc_memory(64 << 10, Perm::REMOTE_READ_WRITE)
        .expect("alloc");
    let target = engine.segment_name();
    // Good peers: a process the engine reads from, an engine that writes
    // to and reads from it.
    let peer = PeerProcess::spawn(PEER, "127.0.0.1:0", AREA, 51, &[]);
    let good = start(EngineConfig::default());

    // Slow attackers, checked at the end: one that never says hello, one
    // that goes silent after the handshake.
    let opened = Instant::now();
    let mut silent = connect(&target);
    let mut mute = connect(&target);
    mute.write_all(&hello(AUTH_NONE)).expect("send hello");

    let stop = AtomicBool::new(false);
    let rounds = Rounds {
        done: Mutex::new([0; 2]),
        changed: Condvar::new(),
    };
    let total = std::thread::scope(|s| {
        let stopper = StopOnDrop(&stop);
        // Traffic 0: the engine reads 4 MiB from the peer process.
        let reads = s.spawn(|| {
            let dst = engine.alloc_memory(AREA, Perm::LOCAL_ONLY).expect("alloc");
            let seg = engine.open_segment(&peer.segment).expect("open the peer");
            let mut n = 0;
            // One more round after the stop: the engine still serves.
            let mut last = false;
            while !last {
                last = stop.load(Ordering::Acquire);
                // SAFETY: ours.
                unsafe { std::ptr::write_bytes(dst as *mut u8, 0, AREA as usize) };
                let reqs: Vec<Request> = (0..AREA / CHUNK)
                    .map(|i| Request {
                        op: Op::Read,
                        local: dst + i * CHUNK,
                        segment: seg,
                        remote: peer.addr + i * CHUNK,
                        len: CHUNK,
                    })
                    .collect();
                let b = engine.allocate_batch(reqs.len() as u32).expect("allocate batch");
                engine.submit(b, &reqs).expect("submit");
                let st = engine.wait_batch(b, WAIT).expect("batch ends");
                engine.free_batch(b).expect("free batch");
                assert_eq!(st.state, TaskState::Completed, "round {n}: {st:?}");
                // SAFETY: the batch ended.
                unsafe { check_pattern(dst, AREA, peer.seed, 0) }
                    .unwrap_or_else(|e| panic!("round {n} from the peer process: {e}"));
                n += 1;
                rounds.bump(0);
            }
            n
        });
        // Traffic 1: another engine writes then reads the engine's region.
        let writes = s.spawn(|| {
            let src = good.alloc_memory(AREA, Perm::LOCAL_ONLY).expect("alloc");
            let dst = good.alloc_memory(AREA, Perm::LOCAL_ONLY).expect("alloc");
            let mut n = 0;
            let mut last = false;
            while !last {
                last = stop.load(Ordering::Acquire);
                // SAFETY: ours.
                unsafe { fill_from(src, AREA, 100 + n, 0) };
                good.transfer_sync_write(&target, src + 1, region + 3, AREA - 3)
                    .unwrap_or_else(|e| panic!("round {n}: write to the engine: {e}"));
                good.transfer_sync_read(&target, dst, region + 3, AREA - 3)
                    .unwrap_or_else(|e| panic!("round {n}: read from the engine: {e}"));
                // SAFETY: the reads ended.
                unsafe { check_pattern(dst, AREA - 3, 100 + n, 1) }
                    .unwrap_or_else(|e| panic!("round {n} through the engine: {e}"));
                n += 1;
                rounds.bump(1);
            }
            n
        });

        // Every case: connect, send, let both kinds of traffic complete a
        // round with the hostile connection around, then read until the
        // engine closes it.
        let case = |name: &str, bytes: &[u8], half_close: bool| -> Reply {
            let mut raw = connect(&target);
            let since = rounds.now();
            // The engine may close before it has read everything: a
            // failed send is fine, the reply tells what happened.
            let _ = raw.write_all(bytes);
            rounds.wait_past(since, name);
            if half_close {
                let _ = raw.shutdown(Shutdown::Write);
            }
            read_reply(&mut raw, RAW_WAIT)
        };
        let h = hello(AUTH_NONE);
        let with_hello = |rest: &[u8]| [h.as_slice(), rest].concat();

        // (a) Garbage.
        let mut garbage: Vec<u8> = (0..4096u64).map(|i| te_tests::pattern(7, i)).collect();
        garbage[0] = b'X';
        case("garbage", &garbage, false).assert_closed("garbage", Some(ErrorCode::Invalid), &[]);
        case("garbage after hello", &with_hello(&garbage), false).assert_closed(
            "garbage after hello",
            Some(ErrorCode::Invalid),
            &[Opcode::HelloAck],
        );
        let mut bad_version = hello(AUTH_NONE);
        bad_version[2] = 9;
        case("bad version", &bad_version, false).assert_closed(
            "bad version",
            Some(ErrorCode::NotSupported),
            &[],
        );
        let mut bad_opcode = header(Opcode::Ping, 8, 0);
        bad_opcode[3] = 200;
        bad_opcode.extend_from_slice(&[0; 8]);
        case("unknown opcode", &with_hello(&bad_opcode), false).assert_closed(
            "unknown opcode",
            Some(ErrorCode::Invalid),
            &[Opcode::HelloAck],
        );

        // (b) Truncated frames, then end of stream.
        case("truncated hello", &h[..h.len() - 5], true).assert_closed("truncated hello", None, &[]);
        let req = read_req(0x100, exposed, 4096);
        let r = case("truncated header", &with_hello(&req[..10]), true);
        r.assert_closed("truncated header", None, &[Opcode::HelloAck]);
        let r = case("truncated body", &with_hello(&req[..req.len() - 3]), true);
        r.assert_closed("truncated body", None, &[Opcode::HelloAck]);
        assert_eq!(r.payload, 0, "truncated body: data was sent: {r:?}");
        let mut partial = with_hello(&write_data(0x200, landing, 64 << 10));
        partial.extend_from_slice(&[0xab; 1000]);
        case("truncated payload", &partial, true).assert_closed(
            "truncated payload",
            None,
            &[Opcode::HelloAck],
        );
        // The half-written region was released with the connection.
        engine
            .free_memory(landing)
            .expect("the region of a truncated write is released");

        // (c) Oversized lengths.
        case("oversized hello body", &header(Opcode::Hello, 1 << 20, 0), false).assert_closed(
            "oversized hello body",
            Some(ErrorCode::Invalid),
            &[],
        );
        case(
            "oversized notify body",
            &with_hello(&header(Opcode::Notify, u32::MAX as usize, 0)),
            false,
        )
        .assert_closed(
            "oversized notify body",
            Some(ErrorCode::Invalid),
            &[Opcode::HelloAck],
        );
        case(
            "payload above the hard limit",
            &with_hello(&write_data(0x300, exposed, 64 << 20)),
            false,
        )
        .assert_closed(
            "payload above the hard limit",
            Some(ErrorCode::Invalid),
            &[Opcode::HelloAck],
        );
        case(
            "payload above max_payload",
            &with_hello(&write_data(0x400, exposed, (1 << 20) + 1)),
            false,
        )
        .assert_closed(
            "payload above max_payload",
            Some(ErrorCode::Invalid),
            &[Opcode::HelloAck],
        );
        case(
            "payload on a frame without one",
            &with_hello(&header(Opcode::Ping, 8, 4096)),
            false,
        )
        .assert_closed(
            "payload on a frame without one",
            Some(ErrorCode::Invalid),
            &[Opcode::HelloAck],
        );
        let r = case(
            "read above max_payload",
            &with_hello(&read_req(0x500, exposed, 16 << 20)),
            false,
        );
        r.assert_closed(
            "read above max_payload",
            Some(ErrorCode::Invalid),
            &[Opcode::HelloAck],
        );
        assert_eq!(r.payload, 0, "read above max_payload: data was sent: {r:?}");

        // A flood of requests that are never read: more than
        // max_outstanding in flight closes the connection.
        let mut flood = hello(AUTH_NONE);
        for i in 0..4096u64 {
            flood.extend_from_slice(&read_req(0x1000 + i, exposed + (i % 16) * CHUNK, CHUNK as u32));
        }
        let r = case("request flood", &flood, false);
        r.assert_closed(
            "request flood",
            Some(ErrorCode::Invalid),
            &[Opcode::HelloAck, Opcode::ReadData],
        );
        assert!(
            r.count(Opcode::ReadData) < 4096,
            "request flood: every request was served: {r:?}"
        );

        // The slow attackers were closed by the handshake and idle timeouts.
        let r = read_reply(&mut silent, RAW_WAIT);
        r.assert_closed("silent before hello", Some(ErrorCode::Timeout), &[]);
        let r = read_reply(&mut mute, RAW_WAIT);
        r.assert_closed(
            "silent after hello",
            Some(ErrorCode::Timeout),
            &[Opcode::HelloAck],
        );
        assert!(
            opened.elapsed() >= CONNECT.min(IDLE),
            "silent connections closed before any timeout"
        );

        drop(stopper);
        (reads.join().unwrap(), writes.join().unwrap())
    });
    assert!(total.0 >= 2 && total.1 >= 2, "traffic rounds: {total:?}");

    // The engine still accepts and serves a new peer, and no raw client
    // wrote into the exposed region.
    let late = start(EngineConfig::default());
    let dst = late.alloc_memory(MIB, Perm::LOCAL_ONLY).expect("alloc");
    late.transfer_sync_read(&target, dst, exposed, MIB)
        .expect("a new peer reads after the attacks");
    // SAFETY: the read ended.
    unsafe { check_pattern(dst, MIB, 50, 0) }.expect("the exposed region is unchanged");
}

/// Says hello on a new raw connection; true when the engine answers with
/// a `HelloAck` (false when it refuses the connection).
fn accepted(segment: &str) -> (TcpStream, bool) {
    let mut raw = connect(segment);
    let _ = raw.write_all(&hello(AUTH_NONE));
    raw.set_read_timeout(Some(RAW_WAIT)).expect("set read timeout");
    let mut dec = Decoder::new(MAX_PAYLOAD_LIMIT);
    let mut buf = [0u8; 512];
    loop {
        if dec.progress() == Progress::Frame {
            let ok = matches!(dec.frame(), Some(Ok(Frame::HelloAck(_))));
            return (raw, ok);
        }
        match raw.read(&mut buf) {
            Ok(n) if n > 0 => {
                let mut input = &buf[..n];
                while !input.is_empty() && dec.progress() == Progress::NeedMore {
                    match dec.feed(input) {
                        Ok(used) => input = &input[used..],
                        Err(_) => return (raw, false),
                    }
                }
            }
            _ => return (raw, false),
        }
    }
}

#[test]
fn a_peer_that_stops_reading_is_disconnected_after_the_idle_timeout() {
    // Two connections at most; a client that asks for 32 MiB and never
    // reads must lose its slot, and its pin on the region it reads, once
    // the idle timeout closes its link.
    let engine = start(EngineConfig {
        idle_timeout: Duration::from_secs(1),
        heartbeat_interval: Duration::from_millis(300),
        connect_timeout: CONNECT,
        transfer_timeout: Duration::from_secs(2),
        max_connections: 2,
        ..EngineConfig::default()
    });
    let exposed = engine.alloc_memory(MIB, Perm::REMOTE_READ_WRITE).expect("alloc");
    let target = engine.segment_name();
    let mut hog = connect(&target);
    let mut reqs = hello(AUTH_NONE);
    for i in 0..32 {
        reqs.extend_from_slice(&read_req(0x100 + i, exposed, MIB as u32));
    }
    hog.write_all(&reqs).expect("send requests");
    assert_released(&engine, exposed, "the client that stopped reading");
    drop(hog);
}

/// After a bad reader (`who`) is gone or silent: waits two idle timeouts
/// by the engine's own clock (no sleep: the second silent client is
/// opened after the first was closed), then checks that the region it
/// read is no longer pinned (freeing it does not wait) and that both of
/// the engine's two connection slots take new clients.
#[track_caller]
fn assert_released(engine: &Engine, exposed: u64, who: &str) {
    let target = engine.segment_name();
    for marker in ["first silent", "second silent"] {
        let mut silent = connect(&target);
        read_reply(&mut silent, RAW_WAIT).assert_closed(marker, Some(ErrorCode::Timeout), &[]);
    }
    let t = Instant::now();
    let freed = engine.free_memory(exposed);
    assert!(
        freed.is_ok(),
        "the region read by {who} is still pinned after {:?}: {freed:?}",
        t.elapsed()
    );
    let (_a, first) = accepted(&target);
    let (_b, second) = accepted(&target);
    assert!(
        first && second,
        "new clients accepted: {first}, {second}; {who} still holds a slot"
    );
}

#[test]
fn a_reader_that_vanishes_mid_response_frees_its_slot_and_its_region() {
    let engine = start(EngineConfig {
        idle_timeout: Duration::from_secs(1),
        heartbeat_interval: Duration::from_millis(300),
        connect_timeout: CONNECT,
        transfer_timeout: Duration::from_secs(2),
        max_connections: 2,
        ..EngineConfig::default()
    });
    let exposed = engine.alloc_memory(MIB, Perm::REMOTE_READ_WRITE).expect("alloc");
    let target = engine.segment_name();
    {
        let mut reader = connect(&target);
        let mut reqs = hello(AUTH_NONE);
        for i in 0..32 {
            reqs.extend_from_slice(&read_req(0x100 + i, exposed, MIB as u32));
        }
        reader.write_all(&reqs).expect("send requests");
        // Wait until data flows, then vanish with unread data (a reset).
        let mut some = vec![0u8; 64 << 10];
        reader.set_read_timeout(Some(RAW_WAIT)).expect("set read timeout");
        reader.read_exact(&mut some).expect("the engine starts answering");
    }
    assert_released(&engine, exposed, "the vanished reader");
}

// ---------------------------------------------------------------------------
// Shared secrets
// ---------------------------------------------------------------------------

fn engine_with_secret(secret: Option<&str>) -> Engine {
    start(EngineConfig {
        secret: secret.map(|s| s.as_bytes().to_vec()),
        ..quick_config()
    })
}

fn secret_peer(secret: Option<&str>, seed: u64) -> PeerProcess {
    let extra: Vec<&str> = match secret {
        Some(s) => vec!["--secret", s],
        None => vec![],
    };
    PeerProcess::spawn(PEER, "127.0.0.1:0", MIB + 5, seed, &extra)
}

#[test]
fn engines_with_the_same_secret_transfer() {
    let peer = secret_peer(Some("open sesame"), 60);
    let engine = engine_with_secret(Some("open sesame"));
    engine
        .open_segment(&peer.segment)
        .expect("open with the right secret");
    let buf = engine.alloc_memory(3 * MIB, Perm::LOCAL_ONLY).expect("alloc");
    engine
        .transfer_sync_read(&peer.segment, buf + 1, peer.addr + 2, MIB + 3)
        .expect("read");
    // SAFETY: the read ended.
    unsafe { check_pattern(buf + 1, MIB + 3, peer.seed, 2) }.expect("bytes read");
    // SAFETY: ours.
    unsafe { fill_from(buf, 2 * MIB, 61, 0) };
    engine
        .transfer_sync_write(&peer.segment, buf + 3, peer.addr + 1, MIB - 1)
        .expect("write");
    engine
        .transfer_sync_read(&peer.segment, buf + 2 * MIB, peer.addr + 1, MIB - 1)
        .expect("read back");
    // SAFETY: the read ended.
    unsafe { check_pattern(buf + 2 * MIB, MIB - 1, 61, 3) }.expect("bytes written");
}

/// `engine` cannot open, read or write `peer`: every attempt is
/// `NotAuthorized`, and neither side's memory changes.
fn assert_refused(engine: &Engine, peer: &PeerProcess, case: &str) {
    let err = engine
        .open_segment(&peer.segment)
        .expect_err("open_segment is refused");
    assert_eq!(
        err.code(),
        ErrorCode::NotAuthorized,
        "{case}: open_segment: {err}"
    );
    let buf = engine.alloc_memory(4096, Perm::LOCAL_ONLY).expect("alloc");
    // SAFETY: ours.
    unsafe { fill_from(buf, 4096, 62, 0) };
    let err = engine
        .transfer_sync_read(&peer.segment, buf, peer.addr, 4096)
        .expect_err("read is refused");
    assert_eq!(err.code(), ErrorCode::NotAuthorized, "{case}: read: {err}");
    // SAFETY: the attempt ended.
    unsafe { check_pattern(buf, 4096, 62, 0) }
        .unwrap_or_else(|e| panic!("{case}: local memory written: {e}"));
    let err = engine
        .transfer_sync_write(&peer.segment, buf, peer.addr, 4096)
        .expect_err("write is refused");
    assert_eq!(err.code(), ErrorCode::NotAuthorized, "{case}: write: {err}");
}

/// The peer's region still holds its pattern (read by an engine that knows
/// `secret`).
fn assert_untouched(peer: &PeerProcess, secret: Option<&str>, case: &str) {
    let engine = engine_with_secret(secret);
    let buf = engine.alloc_memory(peer.len, Perm::LOCAL_ONLY).expect("alloc");
    engine
        .transfer_sync_read(&peer.segment, buf, peer.addr, peer.len)
        .unwrap_or_else(|e| panic!("{case}: read with the right secret: {e}"));
    // SAFETY: the read ended.
    unsafe { check_pattern(buf, peer.len, peer.seed, 0) }
        .unwrap_or_else(|e| panic!("{case}: the peer's memory changed: {e}"));
}

#[test]
fn a_wrong_secret_is_refused() {
    let peer = secret_peer(Some("right"), 63);
    assert_refused(&engine_with_secret(Some("wrong")), &peer, "wrong secret");
    assert_untouched(&peer, Some("right"), "wrong secret");
}

#[test]
fn a_secret_only_on_the_target_is_refused() {
    let peer = secret_peer(Some("target only"), 64);
    assert_refused(&engine_with_secret(None), &peer, "no secret on the initiator");
    assert_untouched(&peer, Some("target only"), "no secret on the initiator");
}

#[test]
fn a_secret_only_on_the_initiator_is_refused() {
    let peer = secret_peer(None, 65);
    assert_refused(
        &engine_with_secret(Some("initiator only")),
        &peer,
        "no secret on the target",
    );
    assert_untouched(&peer, None, "no secret on the target");
}

#[test]
fn a_raw_client_without_the_secret_reads_and_writes_nothing() {
    let peer = secret_peer(Some("guarded"), 66);
    let addr = peer.addr;
    let probes = || {
        [
            read_req(0x100, addr, 4096),
            info_req(0x201),
            write_data(0x300, addr, 4096),
            vec![0xab; 4096],
        ]
        .concat()
    };
    let cases: [(&str, Vec<u8>, ErrorCode, &[Opcode]); 4] = [
        (
            // The refusal's HelloAck comes first (the client sees which
            // secret the engine has); it carries no proof (below).
            "hello without auth",
            [hello(AUTH_NONE), probes()].concat(),
            ErrorCode::NotAuthorized,
            &[Opcode::HelloAck],
        ),
        (
            "hello with auth, wrong proof",
            [
                hello(AUTH_HMAC_SHA256),
                encode(&Frame::Auth { mac: [0x5a; 32] }),
                probes(),
            ]
            .concat(),
            ErrorCode::NotAuthorized,
            &[Opcode::HelloAck],
        ),
        (
            "hello with auth, no proof",
            [hello(AUTH_HMAC_SHA256), probes()].concat(),
            ErrorCode::Invalid,
            &[Opcode::HelloAck],
        ),
        (
            "no hello",
            [read_req(0x100, addr, 4096), info_req(0x201)].concat(),
            ErrorCode::Invalid,
            &[],
        ),
    ];
    for (name, bytes, code, allowed) in cases {
        let mut raw = connect(&peer.segment);
        // The engine may close before it has read everything: a failed
        // send is part of being refused.
        let _ = raw.write_all(&bytes);
        let r = read_reply(&mut raw, RAW_WAIT);
        r.assert_closed(name, Some(code), allowed);
        assert_eq!(r.payload, 0, "{name}: data leaked: {r:?}");
    }
    // A client without a secret learns only that the engine has one: its
    // HelloAck carries no proof to attack offline.
    let mut raw = connect(&peer.segment);
    raw.write_all(&hello(AUTH_NONE)).expect("send hello");
    assert_eq!(
        read_hello_ack_mac(&mut raw),
        [0u8; 32],
        "a proof for a client without a secret"
    );
    // Reflection: the engine's own proof from its HelloAck, sent back as
    // the client's, is refused too.
    let mut raw = connect(&peer.segment);
    raw.write_all(&hello(AUTH_HMAC_SHA256)).expect("send hello");
    let mac = read_hello_ack_mac(&mut raw);
    let _ = raw.write_all(&[encode(&Frame::Auth { mac }), probes()].concat());
    let r = read_reply(&mut raw, RAW_WAIT);
    r.assert_closed("reflected proof", Some(ErrorCode::NotAuthorized), &[]);
    assert_eq!(r.payload, 0, "reflected proof: data leaked: {r:?}");

    assert_untouched(&peer, Some("guarded"), "raw clients");
}
