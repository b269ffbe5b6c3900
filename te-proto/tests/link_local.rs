//! The same-host path of two te-proto links wired back to back: requests
//! travel as `LocalRead`/`LocalWrite`, the owner of the memory checks and
//! pins them like TCP requests and its shell copies (here between two fake
//! memories); no payload crosses the link.

mod support;

use support::{config, placed, task, Pair, Rng};
use te_proto::batch::Op;
use te_proto::driver::IpcKey;
use te_proto::link::{Caps, LinkConfig, LocalKey, LocalMap, PidChallenge, MAX_LOCAL_MAPS};
use te_proto::wire::{Decoder, Frame, LocalAccess, Opcode, Progress, MAX_CONTROL_LEN, PID_SOCKET_MAX};
use te_proto::{ErrorCode, Location, Perm, Span, Unregister};

const SRC: u64 = 0x1000_0000_0000;
const DST: u64 = 0x2000_0000_0000;
const REMOTE: u64 = 0x9000_0000_0000;

fn offering(name: &str) -> LinkConfig {
    let mut c = config(name, 64 << 10);
    c.caps = Caps::PROCESS_VM;
    c
}

/// a may send local requests to b (b offers the path).
fn local_pair(b: LinkConfig) -> Pair {
    let mut p = Pair::new(offering("a:1"), b, 5);
    p.run();
    assert!(p.a.connected && p.b.connected);
    p.a.link.same_host_mut().set_available(true);
    p
}

fn code(r: Option<&te_proto::Result<()>>) -> Option<ErrorCode> {
    r.map(|r| r.as_ref().map_or_else(|e| e.code(), |()| ErrorCode::Ok))
}

#[test]
fn local_reads_and_writes_are_byte_exact_and_carry_no_payload() {
    let mut p = local_pair(offering("b:2"));
    let sizes = [1u64, 7, 4096, 65_537, 1 << 20, (3 << 20) + 5];
    let total: u64 = sizes.iter().sum::<u64>() + 64;
    let mut rng = Rng(1);
    p.a.region(SRC, total, Perm::LOCAL_ONLY, &mut rng);
    p.a.region(DST, total, Perm::LOCAL_ONLY, &mut rng);
    p.b.region(REMOTE, total, Perm::REMOTE_READ_WRITE, &mut rng);
    let placed = placed(&sizes);
    for (batch, op, buf) in [(1, Op::Write, SRC), (2, Op::Read, DST)] {
        for &(i, len, off) in &placed {
            p.a.submit_local(task(batch, i), op, Span::cpu(buf + off, len), REMOTE + off)
                .unwrap();
        }
        p.run();
        for &(i, len, off) in &placed {
            assert_eq!(
                code(p.a.done.get(&task(batch, i))),
                Some(ErrorCode::Ok),
                "{op:?} of {len}"
            );
            let theirs = p.b.mem.read(Span::cpu(REMOTE + off, len));
            assert!(
                p.a.mem.read(Span::cpu(buf + off, len)) == theirs,
                "{op:?} of {len} not byte-exact"
            );
        }
    }
    // Only control frames crossed the link: well under 1 % of the bytes moved.
    let moved = 2 * sizes.iter().sum::<u64>();
    assert!(
        p.a.bytes_out + p.b.bytes_out < moved / 100,
        "payload crossed the link"
    );
    assert!(p.b.copies_done >= 2 * sizes.len() as u64);
}

#[test]
fn local_submission_needs_the_path_enabled() {
    let mut p = Pair::new(offering("a:1"), offering("b:2"), 6);
    p.run();
    let mut rng = Rng(6);
    p.a.region(DST, 4096, Perm::LOCAL_ONLY, &mut rng);
    let e =
        p.a.submit_local(task(1, 0), Op::Read, Span::cpu(DST, 4096), REMOTE)
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotSupported);
    assert!(!p.a.link.same_host().available());
}

#[test]
fn same_host_frames_go_only_to_a_peer_that_offers_the_path() {
    let mut p = local_pair(config("b:2", 64 << 10));
    let mut rng = Rng(7);
    p.a.region(DST, 4096, Perm::LOCAL_ONLY, &mut rng);
    let e =
        p.a.submit_local(task(1, 0), Op::Read, Span::cpu(DST, 4096), REMOTE)
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotSupported);
    let e =
        p.a.link
            .same_host_mut()
            .send_pid_challenge([1; 32], b"te-pid-x")
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotSupported);
}

#[test]
fn a_peer_without_the_path_refuses_local_requests() {
    // b offers nothing yet a claims it did (a broken or hostile peer).
    let mut p = Pair::new(offering("a:1"), config("b:2", 64 << 10), 7);
    p.run();
    let mut rng = Rng(7);
    p.b.region(REMOTE, 4096, Perm::REMOTE_READ_WRITE, &mut rng);
    let req = LocalAccess {
        req_id: 0x101,
        addr: REMOTE,
        location: None,
        len: 16,
        peer_addr: DST,
        peer_device: false,
    };
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    let n = Frame::LocalRead(req).encode(&mut buf).unwrap();
    p.inject_to_b(&buf[..n]);
    p.run();
    assert_eq!(p.b.copies_done, 0);
    assert_eq!(p.b.reg.pins(Location::Cpu, REMOTE), Some(0));
    // b answered with an Error (a refusal, not a violation), which a, who
    // never sent the request, takes for a stray answer.
    let why = p.a.closed.as_ref().map(|s| s.message().to_string());
    assert!(
        why.as_deref()
            .is_some_and(|m| m.contains("Error answers no request 0x101")),
        "{why:?}"
    );
}

#[test]
fn bad_ranges_and_permissions_are_not_authorized() {
    let mut p = local_pair(offering("b:2"));
    let mut rng = Rng(8);
    p.a.region(DST, 1 << 16, Perm::LOCAL_ONLY, &mut rng);
    p.b.region(REMOTE, 4096, Perm::REMOTE_READ, &mut rng);
    let cases = [
        (Op::Write, REMOTE, 16),
        (Op::Read, REMOTE + 4090, 16),
        (Op::Read, REMOTE - 1, 2),
        (Op::Read, REMOTE + 8192, 16),
    ];
    for (i, &(op, remote, len)) in cases.iter().enumerate() {
        p.a.submit_local(task(1, i as u32), op, Span::cpu(DST, len), remote)
            .unwrap();
    }
    p.run();
    for i in 0..cases.len() {
        assert_eq!(
            code(p.a.done.get(&task(1, i as u32))),
            Some(ErrorCode::NotAuthorized),
            "case {i}"
        );
    }
    assert_eq!(p.b.copies_done, 0, "a refused request was copied");
}

/// a reads 1 MiB of b over the same-host path while b's shell holds its
/// copies back; returns once the requests wait in b.
fn stalled_read(b: LinkConfig, seed: u64) -> Pair {
    let mut p = local_pair(b);
    let mut rng = Rng(seed);
    p.a.region(DST, 1 << 20, Perm::LOCAL_ONLY, &mut rng);
    p.b.region(REMOTE, 1 << 20, Perm::REMOTE_READ, &mut rng);
    p.b.copies_paused = true;
    p.a.submit_local(task(1, 0), Op::Read, Span::cpu(DST, 1 << 20), REMOTE)
        .unwrap();
    p.run();
    p
}

#[test]
fn a_canceled_local_task_ends_only_after_the_peers_copies() {
    let mut p = stalled_read(offering("b:2"), 9);
    assert!(p.a.link.cancel(task(1, 0)));
    p.run();
    // b may still copy into a's memory: the end is held back.
    assert!(
        p.a.done.is_empty(),
        "a task ended while the peer may still copy into it"
    );
    p.b.copies_paused = false;
    p.run();
    assert_eq!(code(p.a.done.get(&task(1, 0))), Some(ErrorCode::Canceled));
    assert_eq!(p.a.link.requests_in_flight(), 0);
}

#[test]
fn unregister_while_copies_wait_drains_then_refuses() {
    let mut b = offering("b:2");
    b.max_outstanding = 4;
    let mut p = stalled_read(b, 10);
    assert_eq!(
        p.b.reg.pins(Location::Cpu, REMOTE),
        Some(4),
        "b pinned the accepted copies"
    );
    let waiting: Vec<_> = p.b.link.same_host().pending_copies().collect();
    assert_eq!(waiting.len(), 4);
    assert_eq!(
        waiting[0],
        p.b.link.same_host().poll_copy().unwrap(),
        "oldest first"
    );
    assert!(waiting
        .windows(2)
        .all(|w| w[1].span.addr == w[0].span.addr + w[0].span.len));
    match p.b.reg.unregister(Location::Cpu, REMOTE).unwrap() {
        Unregister::Draining { pins } => assert_eq!(pins, 4),
        other => panic!("expected draining, got {other:?}"),
    }
    p.b.copies_paused = false;
    p.run();
    assert_eq!(
        p.b.copies_done, 4,
        "only the copies accepted before unregister ran"
    );
    assert_eq!(code(p.a.done.get(&task(1, 0))), Some(ErrorCode::NotAuthorized));
    assert!(p.b.reg.is_empty(), "the last copy's unpin removed the region");
}

#[test]
fn closing_the_link_releases_the_pins_of_waiting_copies() {
    let mut p = stalled_read(offering("b:2"), 11);
    assert!(p.b.reg.pins(Location::Cpu, REMOTE).is_some());
    p.b.link.close(&mut p.b.reg);
    assert!(p.b.link.same_host().poll_copy().is_none());
    assert_eq!(p.b.reg.pins(Location::Cpu, REMOTE), Some(0));
    p.run();
    assert_eq!(code(p.a.done.get(&task(1, 0))), Some(ErrorCode::Disconnected));
}

#[test]
fn pid_challenges_reach_the_peer_once() {
    let mut p = Pair::new(offering("a:1"), offering("b:2"), 12);
    p.run();
    p.a.link
        .same_host_mut()
        .send_pid_challenge([3; 32], b"te-pid-test")
        .unwrap();
    p.run();
    let want = PidChallenge::new([3; 32], b"te-pid-test").unwrap();
    assert_eq!(p.b.link.same_host_mut().take_pid_challenge(), Some(want));
    assert_eq!(p.b.link.same_host_mut().take_pid_challenge(), None);
    for bad in [&b""[..], &[b's'; PID_SOCKET_MAX + 1][..]] {
        let e =
            p.a.link
                .same_host_mut()
                .send_pid_challenge([3; 32], bad)
                .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Invalid);
    }
}

// ---- Mapped buffers (`LocalMap`) ----

/// Offers the same-host path and maps announced buffers.
fn mapping(name: &str) -> LinkConfig {
    let mut c = offering(name);
    c.caps |= Caps::SHARED_MEMORY;
    c
}

fn buffer(id: u64, base: u64, len: u64) -> LocalMap {
    LocalMap {
        id,
        base,
        len,
        fd: 3 + id as u32,
    }
}

/// The frames of a's next transmit, in order.
fn frames_of_a(p: &mut Pair) -> Vec<Opcode> {
    let mut buf = vec![0u8; MAX_CONTROL_LEN * 8];
    let t = p.a.link.poll_transmit(p.now, &mut buf, &p.a.reg).unwrap();
    let mut d = Decoder::new(1 << 20);
    let mut ops = Vec::new();
    let mut at = 0;
    while at < t.len {
        at += d.feed(&buf[at..t.len]).unwrap();
        assert_eq!(d.progress(), Progress::Frame);
        ops.push(d.frame().unwrap().unwrap().opcode());
        d.next();
    }
    // Hand the bytes on to b, as the pipe would have.
    p.inject_to_b(&buf[..t.len]);
    ops
}

fn inject_map(p: &mut Pair, m: LocalMap) {
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    let n = Frame::LocalMap(m).encode(&mut buf).unwrap();
    p.inject_to_b(&buf[..n]);
}

/// b's close reason, which must mention `want`.
fn b_closed_with(p: &Pair, want: &str) {
    let why = p.b.closed.as_ref().map(|s| s.message().to_string());
    assert!(
        why.as_deref().is_some_and(|m| m.contains(want)),
        "{why:?}, wanted {want:?}"
    );
    assert_eq!(
        p.b.link.same_host().peer_local_maps().count(),
        0,
        "a closed link keeps no buffers"
    );
}

#[test]
fn announced_buffers_are_found_by_contained_ranges_only() {
    let mut p = local_pair(mapping("b:2"));
    p.a.link
        .same_host_mut()
        .announce_local_map(buffer(1, DST, 4096))
        .unwrap();
    p.a.link
        .same_host_mut()
        .announce_local_map(buffer(2, DST + 4096, 100))
        .unwrap();
    assert!(p.a.link.same_host().local_map_announced(1));
    assert!(
        p.b.link.same_host().peer_local_map(DST, 1).is_none(),
        "nothing sent yet"
    );
    p.run();
    let b = p.b.link.same_host();
    assert_eq!(b.peer_local_map(DST, 4096), Some(buffer(1, DST, 4096)));
    assert_eq!(b.peer_local_map(DST + 100, 1), Some(buffer(1, DST, 4096)));
    assert_eq!(
        b.peer_local_map(DST + 4096, 100),
        Some(buffer(2, DST + 4096, 100))
    );
    // Straddling the two buffers, or running past or before them.
    assert_eq!(b.peer_local_map(DST + 4000, 200), None);
    assert_eq!(b.peer_local_map(DST + 4096, 101), None);
    assert_eq!(b.peer_local_map(DST - 1, 2), None);
    assert_eq!(b.peer_local_map(u64::MAX - 1, 8), None);
    let mut all: Vec<_> = b.peer_local_maps().map(|m| m.id).collect();
    all.sort();
    assert_eq!(all, [1, 2]);
    // a's side: a buffer b announces would need a to map buffers.
    assert_eq!(p.a.link.same_host().peer_local_maps().count(), 0);
    assert!(p.b.closed.is_none() && p.a.closed.is_none());
}

#[test]
fn an_announcement_reaches_the_peer_before_a_later_request() {
    let mut p = local_pair(mapping("b:2"));
    let mut rng = Rng(20);
    p.a.region(DST, 1 << 16, Perm::LOCAL_ONLY, &mut rng);
    p.b.region(REMOTE, 1 << 16, Perm::REMOTE_READ, &mut rng);
    p.b.copies_paused = true;
    p.a.link
        .same_host_mut()
        .announce_local_map(buffer(7, DST, 1 << 16))
        .unwrap();
    p.a.submit_local(task(1, 0), Op::Read, Span::cpu(DST + 64, 512), REMOTE)
        .unwrap();
    assert_eq!(frames_of_a(&mut p), [Opcode::LocalMap, Opcode::LocalRead]);
    p.run();
    let c = p.b.link.same_host().poll_copy().expect("b holds a's copy");
    assert_eq!(c.peer_addr, DST + 64);
    assert_eq!(
        p.b.link.same_host().peer_local_map(c.peer_addr, c.span.len),
        Some(buffer(7, DST, 1 << 16))
    );
    p.b.copies_paused = false;
    p.run();
    assert_eq!(code(p.a.done.get(&task(1, 0))), Some(ErrorCode::Ok));
}

#[test]
fn a_withdrawal_goes_before_a_new_buffer_at_the_same_address() {
    let mut p = local_pair(mapping("b:2"));
    let mut rng = Rng(21);
    p.a.region(DST, 8192, Perm::LOCAL_ONLY, &mut rng);
    p.b.region(REMOTE, 8192, Perm::REMOTE_READ, &mut rng);
    p.a.link
        .same_host_mut()
        .announce_local_map(buffer(1, DST, 4096))
        .unwrap();
    p.run();
    assert!(p.a.link.same_host_mut().withdraw_local_map(1));
    assert!(!p.a.link.same_host().local_map_announced(1));
    // The old id stays taken until its withdrawal is sent; the range is free.
    let e =
        p.a.link
            .same_host_mut()
            .announce_local_map(buffer(1, DST + 4096, 16))
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Invalid);
    p.a.link
        .same_host_mut()
        .announce_local_map(buffer(2, DST, 8192))
        .unwrap();
    p.b.copies_paused = true;
    p.a.submit_local(task(1, 0), Op::Read, Span::cpu(DST + 4096, 100), REMOTE)
        .unwrap();
    assert_eq!(
        frames_of_a(&mut p),
        [Opcode::LocalMap, Opcode::LocalMap, Opcode::LocalRead]
    );
    p.run();
    assert!(p.b.closed.is_none(), "{:?}", p.b.closed);
    let c = p.b.link.same_host().poll_copy().expect("b holds a's copy");
    assert_eq!(
        p.b.link.same_host().peer_local_map(c.peer_addr, c.span.len),
        Some(buffer(2, DST, 8192))
    );
    assert_eq!(p.b.link.same_host().peer_local_maps().count(), 1);
    // Once sent, the id is free again.
    assert!(p.a.link.same_host_mut().withdraw_local_map(2));
    p.run();
    assert_eq!(p.b.link.same_host().peer_local_maps().count(), 0);
    p.a.link
        .same_host_mut()
        .announce_local_map(buffer(1, DST, 16))
        .unwrap();
    assert!(!p.a.link.same_host_mut().withdraw_local_map(99), "unknown id");
}

#[test]
fn withdrawing_an_unsent_announcement_sends_nothing() {
    let mut p = local_pair(mapping("b:2"));
    p.a.link
        .same_host_mut()
        .announce_local_map(buffer(1, DST, 4096))
        .unwrap();
    assert!(p.a.link.same_host_mut().withdraw_local_map(1));
    assert!(
        !p.a.link.wants_transmit(),
        "a frame is due for a forgotten buffer"
    );
    assert!(!p.a.link.same_host_mut().withdraw_local_map(1), "withdrawn twice");
    // Its slot and id are free at once.
    p.a.link
        .same_host_mut()
        .announce_local_map(buffer(1, DST, 4096))
        .unwrap();
    p.run();
    assert_eq!(
        p.b.link.same_host().peer_local_maps().collect::<Vec<_>>(),
        [buffer(1, DST, 4096)]
    );
}

#[test]
fn announcements_are_checked() {
    // b does not map buffers: NotSupported.
    let mut p = local_pair(offering("b:2"));
    let e =
        p.a.link
            .same_host_mut()
            .announce_local_map(buffer(1, DST, 4096))
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotSupported);
    // b maps buffers, but the path is not enabled on a: NotSupported.
    let mut p = local_pair(mapping("b:2"));
    p.a.link.same_host_mut().set_available(false);
    let e =
        p.a.link
            .same_host_mut()
            .announce_local_map(buffer(1, DST, 4096))
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotSupported);
    p.a.link.same_host_mut().set_available(true);
    p.a.link
        .same_host_mut()
        .announce_local_map(buffer(1, DST, 4096))
        .unwrap();
    let invalid = [
        buffer(2, DST + 8192, 0),
        buffer(2, 0, 16),
        buffer(2, u64::MAX - 8, 16),
        buffer(1, DST + 8192, 16),
        buffer(2, DST + 4095, 16),
        buffer(2, DST - 8, 9),
        buffer(2, DST - 8, 8192),
    ];
    for m in invalid {
        let e = p.a.link.same_host_mut().announce_local_map(m).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Invalid, "{m:?}");
    }
    // Adjacent is fine; the table holds MAX_LOCAL_MAPS buffers.
    for id in 2..=MAX_LOCAL_MAPS as u64 {
        p.a.link
            .same_host_mut()
            .announce_local_map(buffer(id, DST + 4096 * id, 4096))
            .unwrap();
    }
    let e =
        p.a.link
            .same_host_mut()
            .announce_local_map(buffer(999, REMOTE, 1))
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotReady);
    p.run();
    assert_eq!(p.b.link.same_host().peer_local_maps().count(), MAX_LOCAL_MAPS);
    // A withdrawal not yet sent still takes its slot.
    assert!(p.a.link.same_host_mut().withdraw_local_map(5));
    let e =
        p.a.link
            .same_host_mut()
            .announce_local_map(buffer(999, REMOTE, 1))
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotReady);
    p.run();
    p.a.link
        .same_host_mut()
        .announce_local_map(buffer(999, REMOTE, 1))
        .unwrap();
    p.a.link.close(&mut p.a.reg);
    let e =
        p.a.link
            .same_host_mut()
            .announce_local_map(buffer(1000, REMOTE + 8, 1))
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Disconnected);
}

#[test]
fn a_peers_bad_announcements_close_the_link() {
    let cases: [(&[LocalMap], &str); 4] = [
        (
            &[buffer(1, DST, 16), buffer(1, DST + 64, 16)],
            "announced buffer 0x1 twice",
        ),
        (
            &[buffer(1, DST, 16), buffer(2, DST + 15, 16)],
            "overlaps peer's buffer 0x1",
        ),
        (
            &[buffer(1, DST, 16), LocalMap::withdraw(3)],
            "withdrew buffer 0x3",
        ),
        (&[LocalMap::withdraw(1)], "withdrew buffer 0x1"),
    ];
    for (frames, want) in cases {
        let mut p = local_pair(mapping("b:2"));
        for &m in frames {
            inject_map(&mut p, m);
        }
        p.run();
        b_closed_with(&p, want);
    }
}

#[test]
fn a_peer_may_announce_no_more_than_the_limit() {
    let mut p = local_pair(mapping("b:2"));
    for id in 0..MAX_LOCAL_MAPS as u64 {
        inject_map(&mut p, buffer(id, DST + 16 * id, 16));
    }
    p.run();
    assert!(p.b.closed.is_none());
    assert_eq!(p.b.link.same_host().peer_local_maps().count(), MAX_LOCAL_MAPS);
    inject_map(&mut p, buffer(100, REMOTE, 16));
    p.run();
    b_closed_with(&p, "beyond the limit of 64");
}

#[test]
fn a_side_that_maps_nothing_refuses_announcements() {
    let mut p = local_pair(offering("b:2"));
    inject_map(&mut p, buffer(1, DST, 16));
    p.run();
    b_closed_with(&p, "does not map buffers");
    assert_eq!(p.b.closed.as_ref().map(|s| s.code()), Some(ErrorCode::Invalid));
}

/// The key a announces for its device buffer at `base`.
fn device_key(id: u64, base: u64, len: u64) -> LocalKey {
    LocalKey {
        id,
        base,
        len,
        location: Location::Npu(1),
        key: IpcKey::new(b"tefakeacl-1-1-0-1000-1").ok(),
    }
}

#[test]
fn device_buffers_are_announced_by_key_only_to_a_peer_that_imports_them() {
    let mut p = local_pair(offering("b:2"));
    let e =
        p.a.link
            .same_host_mut()
            .announce_local_key(device_key(1, DST, 4096))
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotSupported);
    assert!(e.message().contains("does not import device buffers"), "{e}");
    // A LocalKey sent anyway breaks b's rule: b closes the link.
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    let n = Frame::LocalKey(device_key(1, DST, 4096))
        .encode(&mut buf)
        .unwrap();
    p.inject_to_b(&buf[..n]);
    p.run();
    let why = p.b.closed.as_ref().map(|s| s.message().to_string());
    assert!(
        why.as_deref().is_some_and(|m| m.contains("does not import keys")),
        "{why:?}"
    );
}

#[test]
fn copies_of_announced_device_buffers_reach_the_shell_marked_and_others_are_refused() {
    let mut b = offering("b:2");
    b.caps |= Caps::DEVICE_IPC;
    let mut p = local_pair(b);
    let mut rng = Rng(21);
    // a's device buffer, as the fake memories hold it.
    p.a.region(DST, 4096, Perm::LOCAL_ONLY, &mut rng);
    p.b.region(REMOTE, 4096, Perm::REMOTE_READ_WRITE, &mut rng);
    let k = device_key(7, DST, 4096);
    p.a.link.same_host_mut().announce_local_key(k).unwrap();
    assert!(p.a.link.same_host().local_key_announced(7));
    let dev = |addr, len| Span {
        addr,
        len,
        location: Location::Npu(1),
    };
    p.b.copies_paused = true;
    p.a.submit_local(task(1, 0), Op::Read, dev(DST, 64), REMOTE)
        .unwrap();
    p.run();
    assert_eq!(p.b.link.same_host().peer_local_key(DST + 8, 8), Some(k));
    let c =
        p.b.link
            .same_host()
            .poll_copy()
            .expect("the read waits for b's shell");
    assert!(c.peer_device && c.to_peer, "{c:?}");
    p.b.copies_paused = false;
    p.run();
    assert_eq!(code(p.a.done.get(&task(1, 0))), Some(ErrorCode::Ok));
    // Past the announced buffer: refused by b's link, never copied.
    let done = p.b.copies_done;
    p.a.submit_local(task(1, 1), Op::Write, dev(DST + 4000, 200), REMOTE)
        .unwrap();
    p.run();
    assert_eq!(code(p.a.done.get(&task(1, 1))), Some(ErrorCode::Invalid));
    assert_eq!(p.b.copies_done, done);
    // Withdrawn: b forgets it, and a's export stays open until b says it
    // closed its import (CANN wants importers to close first).
    assert!(p.a.link.same_host_mut().withdraw_local_key(7));
    p.run();
    assert_eq!(p.b.link.same_host().peer_local_key(DST, 8), None);
    assert!(!p.a.link.same_host().local_key_announced(7));
    assert!(p.a.link.same_host().local_key_closing(7));
    assert_eq!(
        p.b.link.same_host().peer_keys_withdrawn().collect::<Vec<_>>(),
        [7]
    );
    assert!(!p.b.link.same_host_mut().let_go_of_key(8), "not withdrawn");
    assert!(p.b.link.same_host_mut().let_go_of_key(7));
    assert!(!p.b.link.same_host_mut().let_go_of_key(7), "once");
    p.run();
    assert!(!p.a.link.same_host().local_key_closing(7), "b's KeyClosed came");
    assert_eq!(p.b.link.same_host().peer_keys_withdrawn().count(), 0);
    assert!(p.a.closed.is_none() && p.b.closed.is_none());
}

#[test]
fn a_withdrawal_given_up_on_frees_its_slot_and_its_late_answer_is_ignored() {
    let mut b = offering("b:2");
    b.caps |= Caps::DEVICE_IPC;
    let mut p = local_pair(b);
    // a fills its table, withdraws every buffer, and b never answers.
    for id in 0..MAX_LOCAL_MAPS as u64 {
        let k = device_key(id, DST + id * 4096, 4096);
        p.a.link.same_host_mut().announce_local_key(k).unwrap();
        p.run();
        assert!(p.a.link.same_host_mut().withdraw_local_key(id));
    }
    p.run();
    let more = device_key(100, DST, 4096);
    let full = p.a.link.same_host_mut().announce_local_key(more).unwrap_err();
    assert_eq!(full.code(), ErrorCode::NotReady, "{full}");
    assert!(
        !p.a.link.same_host_mut().abandon_local_key(100),
        "never withdrawn"
    );
    for id in 0..MAX_LOCAL_MAPS as u64 {
        assert!(p.a.link.same_host_mut().abandon_local_key(id));
    }
    assert!(!p.a.link.same_host().local_key_closing(0));
    p.a.link
        .same_host_mut()
        .announce_local_key(more)
        .expect("the slots are free again");
    // b's answer comes late: a ignores it, once; a second one is a violation.
    assert!(p.b.link.same_host_mut().let_go_of_key(3));
    p.run();
    assert!(
        p.a.closed.is_none() && p.b.closed.is_none(),
        "{:?} {:?}",
        p.a.closed,
        p.b.closed
    );
    assert_eq!(
        p.b.link.same_host().peer_local_keys().count(),
        1,
        "b took the new buffer"
    );
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    let n = Frame::KeyClosed { id: 3 }.encode(&mut buf).unwrap();
    p.inject_to_a(&buf[..n]);
    p.run();
    assert!(
        p.a.closed.is_some(),
        "a second answer for buffer 3 closes the link"
    );
}

#[test]
fn a_key_closed_for_a_buffer_not_withdrawn_closes_the_link_and_a_closed_link_holds_no_key() {
    let mut b = offering("b:2");
    b.caps |= Caps::DEVICE_IPC;
    let mut p = local_pair(b);
    p.a.link
        .same_host_mut()
        .announce_local_key(device_key(5, DST, 4096))
        .unwrap();
    p.run();
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    let n = Frame::KeyClosed { id: 5 }.encode(&mut buf).unwrap();
    p.inject_to_a(&buf[..n]);
    p.run();
    let why = p.a.closed.as_ref().map(|s| s.message().to_string());
    assert!(
        why.as_deref()
            .is_some_and(|m| m.contains("peer closed buffer 0x5, which was not withdrawn")),
        "{why:?}"
    );
    assert!(
        !p.a.link.same_host().local_key_closing(5),
        "a closed link waits for nothing"
    );
}

#[test]
fn a_device_buffer_announced_twice_overlapping_or_withdrawn_unknown_closes_the_link() {
    let k = device_key(3, DST, 4096);
    let twice = [k, k];
    let overlapping = [
        k,
        LocalKey {
            id: 4,
            base: DST + 4000,
            ..k
        },
    ];
    let unknown = [LocalKey::withdraw(9)];
    for (frames, want) in [
        (&twice[..], "announced buffer 0x3 twice"),
        (&overlapping[..], "overlaps"),
        (&unknown[..], "never announced"),
    ] {
        let mut b = offering("b:2");
        b.caps |= Caps::DEVICE_IPC;
        let mut p = local_pair(b);
        let mut buf = vec![0u8; MAX_CONTROL_LEN];
        for f in frames {
            let n = Frame::LocalKey(*f).encode(&mut buf).unwrap();
            p.inject_to_b(&buf[..n]);
        }
        p.run();
        let why = p.b.closed.as_ref().map(|s| s.message().to_string());
        assert!(
            why.as_deref().is_some_and(|m| m.contains(want)),
            "{want}: {why:?}"
        );
    }
    // The same range on another device is another buffer: no overlap.
    let mut b = offering("b:2");
    b.caps |= Caps::DEVICE_IPC;
    let mut p = local_pair(b);
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    for f in [
        k,
        LocalKey {
            id: 4,
            location: Location::Npu(2),
            ..k
        },
    ] {
        let n = Frame::LocalKey(f).encode(&mut buf).unwrap();
        p.inject_to_b(&buf[..n]);
    }
    p.run();
    assert!(p.b.closed.is_none(), "{:?}", p.b.closed);
    assert_eq!(p.b.link.same_host().peer_local_keys().count(), 2);
}
