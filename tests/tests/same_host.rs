//! The same-host path between two OS processes: this test process runs the
//! initiating [`Engine`], a `te-peer` child process the target.
//!
//! - byte-exact reads and writes from 1 B to 64 MiB over the same-host
//!   path and over forced TCP, for engine-owned and user memory on both
//!   sides;
//! - path selection: `auto` picks the same-host path for a peer on this
//!   host, TCP for a peer that is forced to TCP or lives in another network
//!   namespace (run as root with `ip`; skipped with the reason otherwise);
//! - the owner's checks hold on the same-host path: bad ranges and missing
//!   permissions are `NotAuthorized`, an unregister waits for the copies
//!   under way and then refuses.

use std::process::Command;
use std::time::Duration;

use te_runtime::{Engine, EngineConfig, EngineCore, ErrorCode, Op, Path, Perm, Request, SegmentId};
use te_tests::netns::{self, Network};
use te_tests::proc::{check_pattern, fill_from, PeerProcess};
use te_tests::transfer;
use te_tests::{assert_completed_or_refused, fill_fast, spin_until, SilentPeer};

const PEER: &str = env!("CARGO_BIN_EXE_te-peer");
const NETEM: &str = env!("CARGO_BIN_EXE_te-netem");
/// The network of the namespace test: 10.77.0.0/24.
const NET: u8 = 77;
const MIB: u64 = 1 << 20;
const WAIT: Duration = Duration::from_secs(60);
/// Sizes from 1 B to 64 MiB, with frame-boundary neighbours.
const SIZES: &[u64] = &[1, 7, 4095, 4096, 65_537, MIB, MIB + 1, 16 * MIB + 3, 64 * MIB];
/// The peer's region: the largest size plus room for offsets.
const REMOTE_LEN: u64 = 64 * MIB + 4096;

/// Local memory of the test process: engine-owned or a registered heap
/// buffer; unregistered (or freed) on drop, before the buffer goes.
struct Local<'e> {
    engine: &'e Engine,
    addr: u64,
    heap: Option<Vec<u8>>,
}

fn local(e: &Engine, len: u64, user: bool) -> Local<'_> {
    let (addr, heap) = if user {
        let mut heap = vec![0u8; len as usize];
        let addr = heap.as_mut_ptr() as u64;
        // SAFETY: the vector lives in `Local`, whose drop unregisters it
        // before the vector is freed.
        unsafe { e.register_memory(addr, len, Perm::LOCAL_ONLY) }.expect("register user memory");
        (addr, Some(heap))
    } else {
        (e.alloc_memory(len, Perm::LOCAL_ONLY).expect("alloc"), None)
    };
    Local {
        engine: e,
        addr,
        heap,
    }
}

impl Drop for Local<'_> {
    fn drop(&mut self) {
        let r = match self.heap {
            Some(_) => self.engine.unregister_memory(self.addr),
            None => self.engine.free_memory(self.addr),
        };
        r.expect("release local memory");
    }
}

fn peer(len: u64, seed: u64, extra: &[&str]) -> PeerProcess {
    PeerProcess::spawn(PEER, "127.0.0.1:0", len, seed, extra)
}

fn open(e: &Engine, p: &PeerProcess) -> SegmentId {
    e.open_segment(&p.segment).expect("open the peer's segment")
}

/// Reads every size from the peer's pattern, checks it, writes a new
/// pattern back and reads that back: over `path`, with local memory of
/// the given kind.
fn round_trips(e: &Engine, p: &PeerProcess, seg: SegmentId, path: Path, user: bool) {
    // Two halves, each the largest size plus the largest local offset.
    let half = 64 * MIB + 8192;
    let buf = local(e, 2 * half, user);
    let (a, b) = (buf.addr, buf.addr + half);
    for (k, &n) in SIZES.iter().enumerate() {
        let roff = [0, 1, 4093][k % 3];
        let loff = [3, 0, 4097][k % 3];
        transfer(e, seg, Op::Read, a + loff, p.addr + roff, n, path)
            .unwrap_or_else(|e| panic!("{path} read of {n} bytes (user memory {user}): {e}"));
        // SAFETY: the transfer ended; nothing writes `a` now.
        unsafe { check_pattern(a + loff, n, p.seed, roff) }
            .unwrap_or_else(|e| panic!("{path} read of {n} bytes (user memory {user}): {e}"));
        // Write a fresh pattern over the same remote span, read it back
        // into the other half.
        let seed = 100 + k as u64;
        // SAFETY: our memory; no transfer runs on it.
        unsafe { fill_from(a + loff, n, seed, 0) };
        transfer(e, seg, Op::Write, a + loff, p.addr + roff, n, path)
            .unwrap_or_else(|e| panic!("{path} write of {n} bytes (user memory {user}): {e}"));
        transfer(e, seg, Op::Read, b + loff, p.addr + roff, n, path)
            .unwrap_or_else(|e| panic!("{path} read-back of {n} bytes (user memory {user}): {e}"));
        // SAFETY: the transfers ended.
        unsafe { check_pattern(b + loff, n, seed, 0) }
            .unwrap_or_else(|e| panic!("{path} write of {n} bytes read back (user memory {user}): {e}"));
        // Restore the peer's pattern for the next size.
        // SAFETY: our memory.
        unsafe { fill_from(a + loff, n, p.seed, roff) };
        transfer(e, seg, Op::Write, a + loff, p.addr + roff, n, path).expect("restore");
    }
}

#[test]
fn engine_owned_memory_moves_byte_exact_over_both_paths() {
    let p = peer(REMOTE_LEN, 7, &[]);
    let e = Engine::start(EngineConfig::default()).expect("engine");
    let seg = open(&e, &p);
    assert_eq!(e.segment_path(seg).expect("path"), Path::Shm, "auto on one host");
    round_trips(&e, &p, seg, Path::Shm, false);
    round_trips(&e, &p, seg, Path::Tcp, false);
}

/// How many mappings of te's memfd buffers process `pid` has.
fn buffer_mappings(pid: u32) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("the peer's maps");
    maps.lines().filter(|l| l.contains("memfd:te-buffer")).count()
}

#[test]
fn the_peer_maps_engine_owned_memory_once_and_unmaps_it_when_freed() {
    let p = peer(4 * MIB, 9, &[]);
    let e = Engine::start(EngineConfig::default()).expect("engine");
    let seg = open(&e, &p);
    // The peer's own region is one of its buffers.
    let own = buffer_mappings(p.pid());
    let buf = local(&e, 4 * MIB, false);
    for _ in 0..3 {
        transfer(&e, seg, Op::Read, buf.addr, p.addr, 4 * MIB, Path::Shm).expect("read");
        // SAFETY: the transfer ended.
        unsafe { check_pattern(buf.addr, 4 * MIB, p.seed, 0) }.expect("read byte-exact");
        transfer(&e, seg, Op::Write, buf.addr, p.addr, 4 * MIB, Path::Shm).expect("write back");
    }
    assert_eq!(
        buffer_mappings(p.pid()),
        own + 1,
        "the peer maps our buffer, once for all its copies"
    );
    drop(buf);
    // User memory is copied with process_vm; the request carrying it comes
    // after the withdrawal of the freed buffer, which the peer acts on first.
    let user = local(&e, 4096, true);
    transfer(&e, seg, Op::Read, user.addr, p.addr, 4096, Path::Shm).expect("read into user memory");
    // SAFETY: the transfer ended.
    unsafe { check_pattern(user.addr, 4096, p.seed, 0) }.expect("user read byte-exact");
    assert_eq!(buffer_mappings(p.pid()), own, "the freed buffer is unmapped");
}

#[test]
fn a_buffer_freed_while_its_tasks_wait_for_the_link_stays_mapped_then_is_forgotten() {
    let p = peer(MIB, 12, &[]);
    let e = Engine::start(EngineConfig::default()).expect("engine");
    let seg = open(&e, &p);
    let own = buffer_mappings(p.pid());
    let x = e.alloc_memory(MIB, Perm::LOCAL_ONLY).expect("alloc");
    // Far more tasks than a link takes at once (128): most wait in the
    // engine while the buffer is freed, and reach the link afterwards.
    const TASKS: u32 = 1024;
    let batch = e.allocate_batch(TASKS).expect("allocate");
    let reqs: Vec<Request> = (0..TASKS)
        .map(|_| Request {
            op: Op::Read,
            local: x,
            segment: seg,
            remote: p.addr,
            len: MIB,
        })
        .collect();
    e.submit_via(batch, &reqs, Path::Shm).expect("submit");
    // Returns once the tasks using it have ended.
    e.free_memory(x).expect("free while in use");
    let st = e.wait_batch(batch, WAIT).expect("wait");
    assert_eq!(st.completed, TASKS, "{st:?}: {:?}", e.batch_error(batch));
    e.free_batch(batch).expect("free batch");
    // A new buffer of the same size, most likely at the same address: the
    // peer must copy into it, not into its mapping of the old one.
    let y = local(&e, MIB, false);
    transfer(&e, seg, Op::Read, y.addr, p.addr, MIB, Path::Shm).expect("read into the new buffer");
    // SAFETY: the transfer ended.
    unsafe { check_pattern(y.addr, MIB, p.seed, 0) }.expect("the read landed in the new buffer");
    assert_eq!(
        buffer_mappings(p.pid()),
        own + 1,
        "the peer maps the new buffer and no longer the freed one"
    );
}

#[test]
fn a_passed_wait_for_the_peers_challenge_leaves_no_deadline_behind() {
    // An embedded core and a peer that offers the path but never challenges.
    let mut poll = mio::Poll::new().expect("poll");
    let mut core = EngineCore::new(EngineConfig::default(), poll.registry(), mio::Token(0)).expect("core");
    let peer = SilentPeer::start_same_host();
    let seg = core.open_segment(&peer.name()).expect("open");
    let mut events = mio::Events::with_capacity(64);
    // Opened once the wait for the challenge (2 s) has passed.
    while !core.segment_state(seg).expect("state") {
        let t = core.poll_timeout().unwrap_or(Duration::from_millis(100));
        poll.poll(&mut events, Some(t)).expect("poll");
        for ev in events.iter() {
            core.handle_event(ev);
        }
        core.handle_timeout();
    }
    core.handle_timeout();
    // Nothing is due now (the next heartbeat is a second away); a deadline
    // left in the past would make every poll return at once: a spinning loop.
    let t = core.poll_timeout();
    assert!(t.is_none_or(|t| t > Duration::ZERO), "poll_timeout {t:?}");
}

#[test]
fn user_memory_moves_byte_exact_over_both_paths() {
    let p = peer(REMOTE_LEN, 8, &["--user"]);
    let e = Engine::start(EngineConfig::default()).expect("engine");
    let seg = open(&e, &p);
    assert_eq!(e.segment_path(seg).expect("path"), Path::Shm);
    round_trips(&e, &p, seg, Path::Shm, true);
    round_trips(&e, &p, seg, Path::Auto, true);
    round_trips(&e, &p, seg, Path::Tcp, true);
}

#[test]
fn a_peer_forced_to_tcp_gets_tcp_and_forcing_shm_is_not_supported() {
    let p = peer(MIB, 9, &["--path", "tcp"]);
    let e = Engine::start(EngineConfig::default()).expect("engine");
    let seg = open(&e, &p);
    assert_eq!(e.segment_path(seg).expect("path"), Path::Tcp);
    let buf = local(&e, MIB, false);
    transfer(&e, seg, Op::Read, buf.addr, p.addr, MIB, Path::Auto).expect("auto read over TCP");
    // SAFETY: the transfer ended.
    unsafe { check_pattern(buf.addr, MIB, p.seed, 0) }.expect("bytes over TCP");
    let err = transfer(&e, seg, Op::Read, buf.addr, p.addr, MIB, Path::Shm).unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotSupported);

    // The same from this side: an engine forced to TCP offers nothing.
    let p2 = peer(MIB, 10, &[]);
    let tcp = Engine::start(EngineConfig {
        path: Path::Tcp,
        ..EngineConfig::default()
    })
    .expect("engine");
    let seg2 = open(&tcp, &p2);
    assert_eq!(tcp.segment_path(seg2).expect("path"), Path::Tcp);
}

#[test]
fn a_same_host_peer_that_never_challenges_gets_tcp_after_a_short_wait() {
    let fake = SilentPeer::start_same_host();
    let e = Engine::start(EngineConfig::default()).expect("engine");
    // The open waits for the challenge a while (2 s), then settles on TCP;
    // without that wait ending it would fail after the connect timeout.
    let seg = e
        .open_segment(&fake.name())
        .expect("open settles without a challenge");
    assert_eq!(e.segment_path(seg).expect("path"), Path::Tcp);
    let buf = local(&e, 4096, false);
    let err = transfer(&e, seg, Op::Read, buf.addr, 0x1000, 4096, Path::Shm).unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotSupported, "{err}");
}

#[test]
fn bad_ranges_and_missing_permissions_are_not_authorized_over_the_same_host_path() {
    let p = peer(MIB, 11, &["--perm", "r"]);
    let e = Engine::start(EngineConfig::default()).expect("engine");
    let seg = open(&e, &p);
    assert_eq!(e.segment_path(seg).expect("path"), Path::Shm);
    let buf = local(&e, 2 * MIB, false);
    let cases = [
        (Op::Write, p.addr, 4096, "write without permission"),
        (Op::Read, p.addr + MIB - 10, 11, "read past the end"),
        (Op::Read, p.addr - 1, 2, "read before the start"),
        (Op::Read, p.addr, MIB + 1, "read longer than the region"),
        (Op::Read, 0x1000, 16, "read of memory never registered"),
    ];
    for (op, remote, len, what) in cases {
        let err = transfer(&e, seg, op, buf.addr, remote, len, Path::Shm).unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotAuthorized, "{what}");
    }
    // The peer's memory is unchanged and still served.
    transfer(&e, seg, Op::Read, buf.addr, p.addr, MIB, Path::Shm).expect("read");
    // SAFETY: the transfer ended.
    unsafe { check_pattern(buf.addr, MIB, p.seed, 0) }.expect("peer memory unchanged");
}

#[test]
fn unregister_during_same_host_writes_waits_then_refuses() {
    const LEN: u64 = 8 * MIB;
    const TASKS: u32 = 2048; // 16 GiB: far more than lands before the unregister
                             // Target and initiator in this process: the same-host path copies
                             // between them exactly as between two processes.
    let mut region = vec![0u8; LEN as usize];
    let base = region.as_mut_ptr() as u64;
    let target = Engine::start(EngineConfig::default()).expect("target");
    // SAFETY: `region` is declared before the engine and outlives it.
    unsafe { target.register_memory(base, LEN, Perm::REMOTE_READ_WRITE) }.expect("register");
    let e = Engine::start(EngineConfig::default()).expect("initiator");
    let src = e.alloc_memory(LEN, Perm::LOCAL_ONLY).expect("alloc");
    // SAFETY: engine memory; no transfer runs yet.
    unsafe { fill_fast(src, LEN, 3) };
    let seg = e.open_segment(&target.segment_name()).expect("open");
    assert_eq!(e.segment_path(seg).expect("path"), Path::Shm);
    let reqs: Vec<Request> = (0..TASKS)
        .map(|_| Request {
            op: Op::Write,
            local: src,
            segment: seg,
            remote: base,
            len: LEN,
        })
        .collect();
    let batch = e.allocate_batch(TASKS).expect("allocate");
    e.submit_via(batch, &reqs, Path::Shm).expect("submit");
    assert!(
        spin_until(WAIT, || e.batch_status(batch).unwrap().transferred > 0),
        "no write landed"
    );
    target.unregister_memory(base).expect("unregister");
    // From here on no copy may touch the region.
    region.fill(0xee);
    let st = e.wait_batch(batch, WAIT).expect("wait");
    assert_eq!(st.completed + st.failed, TASKS, "{st:?}");
    assert!(
        st.failed > 0,
        "every write landed before the unregister: proved nothing"
    );
    assert_completed_or_refused(&e, batch);
    assert!(
        region.iter().all(|&b| b == 0xee),
        "region written after unregister returned"
    );
    e.free_batch(batch).expect("free");
    drop(e);
    drop(target);
}

#[test]
fn a_claim_waiting_on_the_peers_verifier_holds_up_no_api_call() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener};
    use std::sync::mpsc;

    // The peer's verifier: takes the engine's claim, then says nothing
    // until the test has made its API calls.
    let name = format!("te-pid-test-{}", std::process::id());
    let listener =
        UnixListener::bind_addr(&UnixAddr::from_abstract_name(&name).expect("name")).expect("bind");
    let (arrived_tx, arrived) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let verifier = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("the engine claims");
        let mut line = String::new();
        BufReader::new(&mut s).read_line(&mut line).expect("claim line");
        arrived_tx.send(()).expect("report the claim");
        release_rx.recv().expect("released");
        // The claimant still waits for the answer: its end is open.
        s.set_nonblocking(true).expect("nonblocking");
        let open = matches!(s.read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        let _ = s.write_all(b"0 refused by the test\n");
        open
    });
    let peer = SilentPeer::start_challenging(name.as_bytes());
    let e = Engine::start(EngineConfig::default()).expect("engine");
    std::thread::scope(|scope| {
        // Opening waits for the claim to end (the path is settled then).
        let opening = scope.spawn(|| e.open_segment(&peer.name()));
        arrived
            .recv_timeout(WAIT)
            .expect("the claim reached the verifier");
        // Calls that take the engine's lock return while the claim waits.
        let a = e
            .alloc_memory(4096, Perm::LOCAL_ONLY)
            .expect("alloc while claiming");
        assert_eq!(e.regions().len(), 1);
        e.free_memory(a).expect("free while claiming");
        release.send(()).expect("release the verifier");
        let seg = opening.join().expect("open thread").expect("open");
        // The claim was refused: the segment takes TCP.
        assert_eq!(e.segment_path(seg).expect("path"), Path::Tcp);
    });
    assert!(
        verifier.join().expect("verifier thread"),
        "the claim had given up before the API calls returned"
    );
}

// ---- another network namespace ----

#[test]
fn a_peer_in_another_network_namespace_gets_tcp() {
    if let Some(why) = netns::unavailable() {
        println!("skipped: {why}");
        return;
    }
    let net = match Network::create(NET, 2, NETEM, 12) {
        Ok(net) => net,
        Err(why) => {
            println!("skipped: cannot set up network namespaces: {why}");
            return;
        }
    };
    let (a, b) = (net.host(0), net.host(1));
    // The target listens in B; a probing initiator in A opens it, reads
    // 64 KiB and reports the path it got and whether the bytes match.
    let target = PeerProcess::spawn_in_netns(b, PEER, &format!("{}:0", net.addr(1)), MIB, 12, &[]);
    let remote = target.addr.to_string();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            a,
            PEER,
            &format!("{}:0", net.addr(0)),
            "65536",
            "12",
        ])
        .args(["--probe", &target.segment, &remote])
        .output()
        .expect("run the probing peer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.lines().any(|l| l == "PROBE tcp ok"),
        "expected TCP across namespaces, got {stdout:?}"
    );
    // Within one namespace the same probe picks the same-host path:
    let local_target = peer(MIB, 13, &[]);
    let remote = local_target.addr.to_string();
    let out = Command::new(PEER)
        .args([
            "127.0.0.1:0",
            "65536",
            "13",
            "--probe",
            &local_target.segment,
            &remote,
        ])
        .output()
        .expect("run the probing peer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l == "PROBE shm ok"),
        "expected the same-host path in one namespace, got {stdout:?}"
    );
}

#[test]
fn a_local_map_from_a_peer_whose_process_is_not_proven_closes_the_link() {
    use std::io::{Read, Write};
    use te_proto::link::{Caps, LocalMap};
    use te_proto::wire::{Decoder, Frame, Hello, Progress, AUTH_NONE};

    let engine = te_tests::engine();
    let mut s = std::net::TcpStream::connect(engine.segment_name()).expect("connect");
    // A peer that offers the path, never proves its process, and announces
    // a buffer right after its Hello.
    let mut out = te_tests::encode(&Frame::Hello(Hello {
        caps: (Caps::PROCESS_VM | Caps::SHARED_MEMORY).bits(),
        max_payload: 1 << 20,
        max_outstanding: 8,
        auth: AUTH_NONE,
        host_id: [0; 32],
        nonce: [4; 32],
        mac: [0; 32],
        name: "unproven",
    }));
    out.extend(te_tests::encode(&Frame::LocalMap(LocalMap {
        id: 5,
        base: 0x10_0000,
        len: 4096,
        fd: 3,
    })));
    s.write_all(&out).expect("send");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut dec = Decoder::new(16 << 20);
    let mut byte = [0u8; 1];
    // The link closes before its HelloAck leaves (both came in one read).
    let closing = loop {
        assert_eq!(
            s.read(&mut byte).expect("the engine answers"),
            1,
            "closed without a reason"
        );
        dec.feed(&byte).expect("te frames");
        if dec.progress() != Progress::Frame {
            continue;
        }
        if let Frame::Error { req_id: 0, code, msg } = dec.frame().expect("a frame").expect("valid") {
            break (code, msg.to_string());
        }
        dec.next();
    };
    assert_eq!(closing.0, ErrorCode::Invalid, "{closing:?}");
    // An engine that maps buffers says why; one that does not (the OS
    // forbids the path here) refuses any LocalMap in te-proto.
    let m = &closing.1;
    assert!(
        m.contains("buffer 0x5 with LocalMap before its process was proven")
            || m.contains("does not map buffers"),
        "{closing:?}"
    );
}
