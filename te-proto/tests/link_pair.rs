//! Two te-proto links wired back to back in memory (no sockets): transfers
//! of every size, interleaving, remote errors, authentication, timeouts,
//! cancellation, unregister under load and malformed input.

mod support;

use std::time::Duration;

use support::{config, placed, task, Pair, Rng};
use te_proto::batch::Op;
use te_proto::link::LinkState;
use te_proto::wire::{Frame, Header, Opcode, HEADER_LEN, VERSION};
use te_proto::{ErrorCode, Location, Perm, Span, Unregister};
use zerocopy::IntoBytes;

const SRC: u64 = 0x1000_0000_0000;
const DST: u64 = 0x2000_0000_0000;
const REMOTE: u64 = 0x9000_0000_0000;
/// A second region of the serving side, left registered.
const OTHER: u64 = 0xA000_0000_0000;

fn connected_pair(max_payload: u32, seed: u64) -> Pair {
    let mut p = Pair::new(config("a:1", max_payload), config("b:2", max_payload), seed);
    p.run();
    assert!(p.a.connected && p.b.connected);
    p
}

fn code(r: &te_proto::Result<()>) -> ErrorCode {
    match r {
        Ok(()) => ErrorCode::Ok,
        Err(e) => e.code(),
    }
}

/// Writes every size from `sizes` to the peer at odd offsets, all tasks
/// submitted at once, then reads each back into a second buffer.
fn round_trip(p: &mut Pair, sizes: &[u64]) {
    let total: u64 = sizes.iter().map(|s| s + 3).sum();
    let mut rng = Rng(7);
    p.a.region(SRC, total, Perm::LOCAL_ONLY, &mut rng);
    p.a.region(DST, total, Perm::LOCAL_ONLY, &mut rng);
    p.b.region(REMOTE, total + 1, Perm::REMOTE_READ_WRITE, &mut rng);
    let placed = placed(sizes);
    for &(i, len, off) in &placed {
        p.a.submit(task(1, i), Op::Write, Span::cpu(SRC + off, len), REMOTE + off + 1)
            .unwrap();
    }
    p.run();
    for &(i, len, off) in &placed {
        assert_eq!(p.a.done.get(&task(1, i)), Some(&Ok(())), "write of {len} bytes");
        assert!(
            p.a.mem.read(Span::cpu(SRC + off, len)) == p.b.mem.read(Span::cpu(REMOTE + off + 1, len)),
            "write of {len} bytes not byte-exact"
        );
        p.a.submit(task(2, i), Op::Read, Span::cpu(DST + off, len), REMOTE + off + 1)
            .unwrap();
    }
    p.run();
    for &(i, len, off) in &placed {
        assert_eq!(p.a.done.get(&task(2, i)), Some(&Ok(())), "read of {len} bytes");
        assert!(
            p.a.mem.read(Span::cpu(SRC + off, len)) == p.a.mem.read(Span::cpu(DST + off, len)),
            "read of {len} bytes not byte-exact"
        );
    }
    assert_eq!(p.a.link.tasks_in_flight(), 0);
    assert_eq!(p.a.link.state(), LinkState::Established);
}

#[test]
fn reads_and_writes_from_1_byte_to_64_mib_are_byte_exact() {
    let mut p = connected_pair(256 << 10, 1);
    let sizes = [
        1,
        2,
        7,
        4095,
        4096,
        4097,
        65_535,
        65_537,
        1 << 20,
        (1 << 20) + 3,
        (5 << 20) + 11,
        64 << 20,
    ];
    round_trip(&mut p, &sizes);
}

#[test]
fn byte_exact_when_bytes_arrive_in_random_small_pieces() {
    let mut p = connected_pair(4096, 2);
    p.max_piece = 13;
    round_trip(&mut p, &[1, 3, 100, 4096, 4097, 20_000, 100_003]);
}

#[test]
fn large_tasks_interleave_and_respect_the_window() {
    let mut a = config("a:1", 64 << 10);
    a.max_outstanding = 8;
    let mut b = config("b:2", 64 << 10);
    b.max_outstanding = 4;
    let mut p = Pair::new(a, b, 3);
    p.run();
    let mut rng = Rng(3);
    let n = 16u32;
    let len = 1u64 << 20;
    p.a.region(DST, len * n as u64, Perm::LOCAL_ONLY, &mut rng);
    p.b.region(REMOTE, len * n as u64, Perm::REMOTE_READ, &mut rng);
    for i in 0..n {
        let off = i as u64 * len;
        p.a.submit(task(1, i), Op::Read, Span::cpu(DST + off, len), REMOTE + off)
            .unwrap();
    }
    while p.step() {
        assert!(p.a.link.requests_in_flight() <= 4, "window of the peer exceeded");
    }
    assert_eq!(p.a.done.len(), n as usize);
    assert!(p.a.done.values().all(|r| r.is_ok()));
    // Every task had moved bytes before the first one finished.
    let first_done_at =
        p.a.progress
            .iter()
            .filter(|(_, b)| *b == len - (64 << 10))
            .count();
    assert!(first_done_at > 0);
    let mut seen = std::collections::HashSet::new();
    for (t, _) in &p.a.progress[..n as usize] {
        seen.insert(*t);
    }
    assert_eq!(
        seen.len(),
        n as usize,
        "the first {n} progress reports come from {n} different tasks"
    );
    assert!(p.a.mem.read(Span::cpu(DST, len * n as u64)) == p.b.mem.read(Span::cpu(REMOTE, len * n as u64)));
}

#[test]
fn remote_errors_fail_only_the_affected_tasks() {
    let mut p = connected_pair(64 << 10, 4);
    let mut rng = Rng(4);
    let rw = REMOTE;
    let ro = REMOTE + 0x10_0000;
    let wo = REMOTE + 0x20_0000;
    let local_only = REMOTE + 0x30_0000;
    p.a.region(SRC, 1 << 20, Perm::LOCAL_ONLY, &mut rng);
    p.b.region(rw, 0x1_0000, Perm::REMOTE_READ_WRITE, &mut rng);
    p.b.region(ro, 0x1_0000, Perm::REMOTE_READ, &mut rng);
    p.b.region(wo, 0x1_0000, Perm::REMOTE_WRITE, &mut rng);
    p.b.region(local_only, 0x1_0000, Perm::LOCAL_ONLY, &mut rng);
    let ro_before = p.b.mem.read(Span::cpu(ro, 0x1_0000)).to_vec();
    let cases: &[(Op, u64, u64, ErrorCode)] = &[
        (Op::Write, rw, 4096, ErrorCode::Ok),
        (Op::Read, rw + 100, 5000, ErrorCode::Ok),
        (Op::Read, REMOTE + 0x40_0000, 16, ErrorCode::NotAuthorized), // never registered
        (Op::Write, rw + 0x1_0000 - 10, 100, ErrorCode::NotAuthorized), // past the end
        (Op::Read, ro + 0x1_0000 - 8, 16, ErrorCode::NotAuthorized),  // spans ro and wo
        (Op::Write, ro, 64, ErrorCode::NotAuthorized),                // read-only
        (Op::Read, wo, 64, ErrorCode::NotAuthorized),                 // write-only
        (Op::Read, local_only, 64, ErrorCode::NotAuthorized),         // local only
        (Op::Read, ro, 300_000 & 0xffff, ErrorCode::Ok),
        (Op::Write, wo + 8, 100, ErrorCode::Ok),
    ];
    for (i, &(op, addr, len, _)) in cases.iter().enumerate() {
        p.a.submit(
            task(9, i as u32),
            op,
            Span::cpu(SRC + i as u64 * 0x1_0000, len),
            addr,
        )
        .unwrap();
    }
    p.run();
    for (i, &(op, addr, len, want)) in cases.iter().enumerate() {
        let got =
            p.a.done
                .get(&task(9, i as u32))
                .unwrap_or_else(|| panic!("case {i} not done"));
        assert_eq!(code(got), want, "case {i}: {op:?} {addr:#x}+{len}: {got:?}");
        if let Err(e) = got {
            assert!(e.message().contains("0x"), "message names the address: {e}");
        }
    }
    assert_eq!(
        p.b.mem.read(Span::cpu(ro, 0x1_0000)),
        &ro_before[..],
        "refused write touched memory"
    );
    assert_eq!(p.a.link.state(), LinkState::Established);
    assert_eq!(p.b.link.state(), LinkState::Established);
}

fn secret_pair(a: Option<&[u8]>, b: Option<&[u8]>, seed: u64) -> Pair {
    let mut ca = config("a:1", 64 << 10);
    let mut cb = config("b:2", 64 << 10);
    if let Some(s) = a {
        ca = ca.with_secret(s).unwrap();
    }
    if let Some(s) = b {
        cb = cb.with_secret(s).unwrap();
    }
    let mut p = Pair::new(ca, cb, seed);
    let mut rng = Rng(seed);
    p.a.region(DST, 4096, Perm::LOCAL_ONLY, &mut rng);
    p.b.region(REMOTE, 4096, Perm::REMOTE_READ_WRITE, &mut rng);
    p.a.submit(task(1, 0), Op::Read, Span::cpu(DST, 4096), REMOTE)
        .unwrap();
    p.run();
    p
}

#[test]
fn matching_secret_authenticates_and_transfers() {
    let p = secret_pair(Some(b"s3cret"), Some(b"s3cret"), 5);
    assert_eq!(p.a.done.get(&task(1, 0)), Some(&Ok(())));
    assert!(p.a.mem.read(Span::cpu(DST, 4096)) == p.b.mem.read(Span::cpu(REMOTE, 4096)));
}

#[test]
fn wrong_secret_fails_only_that_links_tasks() {
    let bad = secret_pair(Some(b"alpha"), Some(b"beta"), 6);
    let good = secret_pair(Some(b"beta"), Some(b"beta"), 6);
    let r = bad.a.done.get(&task(1, 0)).expect("task ended");
    assert_eq!(code(r), ErrorCode::NotAuthorized, "{r:?}");
    assert_eq!(
        bad.a.closed.as_ref().map(|s| s.code()),
        Some(ErrorCode::NotAuthorized)
    );
    assert_ne!(
        bad.a.mem.read(Span::cpu(DST, 4096)),
        bad.b.mem.read(Span::cpu(REMOTE, 4096))
    );
    assert_eq!(good.a.done.get(&task(1, 0)), Some(&Ok(())));
}

#[test]
fn missing_secret_on_either_side_is_refused() {
    for (a, b) in [(None, Some(&b"x"[..])), (Some(&b"x"[..]), None)] {
        let p = secret_pair(a, b, 7);
        let r = p.a.done.get(&task(1, 0)).expect("task ended");
        assert_eq!(code(r), ErrorCode::NotAuthorized, "{a:?}/{b:?}: {r:?}");
        assert_eq!(
            p.b.closed.as_ref().map(|s| s.code()),
            Some(ErrorCode::NotAuthorized)
        );
    }
}

#[test]
fn notifications_arrive_in_order_with_backpressure_on_the_sender() {
    let mut p = connected_pair(64 << 10, 8);
    for i in 0..4 {
        p.a.link
            .send_notification("kv", format!("block {i}").as_bytes())
            .unwrap();
    }
    let e = p.a.link.send_notification("kv", b"one too many").unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotReady);
    assert_eq!(
        p.a.link.send_notification("", b"x").unwrap_err().code(),
        ErrorCode::Invalid
    );
    assert_eq!(
        p.a.link.send_notification("n", &[0; 4096]).unwrap_err().code(),
        ErrorCode::Invalid
    );
    p.run();
    let got: Vec<_> =
        p.b.notes
            .iter()
            .map(|n| (n.name.as_str(), n.msg.as_slice()))
            .collect();
    assert_eq!(
        got,
        [
            ("kv", &b"block 0"[..]),
            ("kv", b"block 1"),
            ("kv", b"block 2"),
            ("kv", b"block 3")
        ]
    );
}

#[test]
fn paging_across_several_pages_yields_every_region_once_in_order() {
    let mut p = connected_pair(64 << 10, 9);
    let mut rng = Rng(9);
    for i in 0..300u64 {
        let perm = match i % 4 {
            0 => Perm::LOCAL_ONLY,
            1 => Perm::REMOTE_READ,
            2 => Perm::REMOTE_WRITE,
            _ => Perm::REMOTE_READ_WRITE,
        };
        p.b.region(REMOTE + i * 0x1000, 64 + i, perm, &mut rng);
    }
    p.a.link.query_segment_info(usize::MAX).unwrap();
    assert_eq!(
        p.a.link.query_segment_info(usize::MAX).unwrap_err().code(),
        ErrorCode::NotReady
    );
    p.run();
    // The link asked for the second page itself once the first was taken.
    let pages: Vec<_> = p.a.pages.drain(..).map(|r| r.unwrap()).collect();
    let listed: Vec<_> = pages.iter().flat_map(|pg| pg.regions.iter().copied()).collect();
    let flags: Vec<_> = pages.iter().map(|pg| (pg.more, pg.truncated)).collect();
    assert_eq!(flags, [(true, false), (false, false)]);
    let want: Vec<_> = p.b.reg.regions().filter(|r| !r.perm.is_empty()).collect();
    assert_eq!(want.len(), 225);
    assert_eq!(listed, want);
    // Done: a new query may start.
    p.a.link.query_segment_info(1).unwrap();
}

#[test]
fn a_listing_longer_than_the_cap_ends_truncated_at_the_cap() {
    let mut p = connected_pair(64 << 10, 9);
    let mut rng = Rng(9);
    for i in 0..300u64 {
        p.b.region(REMOTE + i * 0x1000, 64, Perm::REMOTE_READ, &mut rng);
    }
    p.a.link.query_segment_info(200).unwrap();
    p.run();
    let pages: Vec<_> = p.a.pages.drain(..).map(|r| r.unwrap()).collect();
    let shape: Vec<_> = pages
        .iter()
        .map(|pg| (pg.regions.len(), pg.more, pg.truncated))
        .collect();
    assert_eq!(shape, [(128, true, false), (72, false, true)]);
    let listed: Vec<_> = pages.iter().flat_map(|pg| pg.regions.iter().copied()).collect();
    let want: Vec<_> = p.b.reg.regions().take(200).collect();
    assert_eq!(listed, want);
    assert!(!p.a.link.wants_transmit());
}

#[test]
fn silent_peer_fails_tasks_with_timeout_after_heartbeats() {
    let mut p = connected_pair(64 << 10, 10);
    let mut rng = Rng(10);
    p.a.region(DST, 4096, Perm::LOCAL_ONLY, &mut rng);
    p.b.region(REMOTE, 4096, Perm::REMOTE_READ, &mut rng);
    p.b_talks = false;
    p.a.submit(task(1, 0), Op::Read, Span::cpu(DST, 4096), REMOTE)
        .unwrap();
    p.run();
    assert!(p.a.done.is_empty());
    let before = p.a.bytes_out;
    for _ in 0..12 {
        p.advance(Duration::from_secs(1));
        p.run();
    }
    assert!(p.a.bytes_out > before, "a probed its silent peer with pings");
    assert_eq!(p.a.done.get(&task(1, 0)).map(code), Some(ErrorCode::Timeout));
    assert_eq!(p.a.closed.as_ref().map(|s| s.code()), Some(ErrorCode::Timeout));
    assert_eq!(p.a.link.poll_timeout(), None);
}

#[test]
fn heartbeats_keep_an_idle_link_alive() {
    let mut p = connected_pair(64 << 10, 11);
    for _ in 0..60 {
        p.advance(Duration::from_millis(500));
        p.run();
    }
    assert_eq!(p.a.link.state(), LinkState::Established);
    assert_eq!(p.b.link.state(), LinkState::Established);
}

#[test]
fn work_queued_during_the_handshake_waits_without_claiming_transmits() {
    let mut p = Pair::new(config("a:1", 64 << 10), config("b:2", 64 << 10), 20);
    p.a.link.send_notification("n", b"early").unwrap();
    p.a.link.query_segment_info(16).unwrap();
    let mut buf = vec![0u8; te_proto::wire::MAX_CONTROL_LEN];
    // The Hello goes out; then nothing more is due until the peer answers.
    assert!(p.a.link.poll_transmit(p.now, &mut buf, &p.a.reg).is_some());
    assert!(!p.a.link.wants_transmit());
    assert!(p.a.link.poll_transmit(p.now, &mut buf, &p.a.reg).is_none());
}

#[test]
fn handshake_that_never_finishes_times_out() {
    let mut p = Pair::new(config("a:1", 64 << 10), config("b:2", 64 << 10), 12);
    p.b_talks = false;
    p.run();
    p.advance(Duration::from_secs(6));
    assert_eq!(p.a.closed.as_ref().map(|s| s.code()), Some(ErrorCode::Timeout));
}

/// A read whose task ends (deadline or cancel) while its answer is on the
/// way: the answer is dropped and the local memory stays as it was.
fn ended_read_leaves_memory_untouched(cancel: bool) {
    let mut p = connected_pair(64 << 10, 13);
    let mut rng = Rng(13);
    p.a.region(DST, 1 << 20, Perm::LOCAL_ONLY, &mut rng);
    p.b.region(REMOTE, 1 << 20, Perm::REMOTE_READ, &mut rng);
    let before = p.a.mem.read(Span::cpu(DST, 1 << 20)).to_vec();
    p.b_talks = false;
    let deadline = Some(p.now + Duration::from_millis(5));
    let req = te_proto::TransferRequest {
        op: Op::Read,
        local: Span::cpu(DST, 1 << 20),
        segment: 0,
        remote_addr: REMOTE,
        remote_location: None,
    };
    p.a.link
        .submit(task(1, 0), &req, if cancel { None } else { deadline })
        .unwrap();
    p.run();
    if cancel {
        assert!(p.a.link.cancel(task(1, 0)));
        assert!(!p.a.link.cancel(task(1, 0)), "a task is canceled once");
    } else {
        p.advance(Duration::from_millis(6));
    }
    p.run();
    let want = if cancel {
        ErrorCode::Canceled
    } else {
        ErrorCode::Timeout
    };
    assert_eq!(p.a.done.get(&task(1, 0)).map(code), Some(want));
    p.b_talks = true;
    p.run();
    assert_eq!(
        p.a.mem.read(Span::cpu(DST, 1 << 20)),
        &before[..],
        "ended task's memory was touched"
    );
    assert_eq!(
        p.a.link.requests_in_flight(),
        0,
        "answers to the ended task were consumed"
    );
    assert_eq!(p.a.link.state(), LinkState::Established);
}

#[test]
fn canceled_read_leaves_memory_untouched() {
    ended_read_leaves_memory_untouched(true);
}

#[test]
fn read_past_its_deadline_ends_timeout_and_leaves_memory_untouched() {
    ended_read_leaves_memory_untouched(false);
}

#[test]
fn lost_connection_fails_tasks_with_disconnected() {
    let mut p = connected_pair(64 << 10, 14);
    let mut rng = Rng(14);
    p.a.region(DST, 4096, Perm::LOCAL_ONLY, &mut rng);
    p.b_talks = false;
    p.a.submit(task(1, 0), Op::Read, Span::cpu(DST, 4096), REMOTE)
        .unwrap();
    p.run();
    p.a.link.handle_disconnect(&mut p.a.reg);
    p.run();
    assert_eq!(p.a.done.get(&task(1, 0)).map(code), Some(ErrorCode::Disconnected));
    assert_eq!(
        p.a.closed.as_ref().map(|s| s.code()),
        Some(ErrorCode::Disconnected)
    );
    let e =
        p.a.submit(task(1, 1), Op::Read, Span::cpu(DST, 4096), REMOTE)
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Disconnected);
}

#[test]
fn local_close_says_goodbye_and_is_idempotent() {
    let mut p = connected_pair(64 << 10, 15);
    let mut rng = Rng(15);
    p.a.region(DST, 4096, Perm::LOCAL_ONLY, &mut rng);
    p.b_talks = false;
    p.a.submit(task(1, 0), Op::Read, Span::cpu(DST, 4096), REMOTE)
        .unwrap();
    p.run();
    p.a.link.close(&mut p.a.reg);
    p.a.link.close(&mut p.a.reg);
    p.run();
    assert_eq!(p.a.done.get(&task(1, 0)).map(code), Some(ErrorCode::Canceled));
    assert!(!p.a.link.wants_transmit());
    assert_eq!(
        p.b.closed.as_ref().map(|s| s.code()),
        Some(ErrorCode::Disconnected)
    );
}

#[test]
fn unregister_while_the_peer_reads_drains_then_refuses() {
    let mut b = config("b:2", 64 << 10);
    b.max_outstanding = 4;
    let mut p = Pair::new(config("a:1", 64 << 10), b, 16);
    p.run();
    let mut rng = Rng(16);
    let len = 1u64 << 20;
    p.a.region(DST, len, Perm::LOCAL_ONLY, &mut rng);
    p.b.region(REMOTE, len, Perm::REMOTE_READ, &mut rng);
    p.a.submit(task(1, 0), Op::Read, Span::cpu(DST, len), REMOTE)
        .unwrap();
    // One round: a's first requests reach b, which pins the region for them.
    p.step();
    let pins = p.b.reg.pins(Location::Cpu, REMOTE).unwrap();
    assert_eq!(pins, 4, "b pinned the region for the reads it accepted");
    match p.b.reg.unregister(Location::Cpu, REMOTE).unwrap() {
        Unregister::Draining { pins: n } => assert_eq!(n, pins),
        other => panic!("expected draining, got {other:?}"),
    }
    p.run();
    // The reads accepted before unregister completed their frames; the rest were refused.
    let r = p.a.done.get(&task(1, 0)).unwrap();
    assert_eq!(code(r), ErrorCode::NotAuthorized, "{r:?}");
    let first = 4 * (64 << 10);
    assert!(p.a.mem.read(Span::cpu(DST, first)) == p.b.mem.read(Span::cpu(REMOTE, first)));
    assert_eq!(
        p.b.reg.pins(Location::Cpu, REMOTE),
        None,
        "the last unpin removed the region"
    );
    assert!(p.b.reg.is_empty());
}

#[test]
fn revoke_draining_refuses_queued_reads_and_releases_the_region() {
    let mut b = config("b:2", 64 << 10);
    b.max_outstanding = 4;
    let mut p = Pair::new(config("a:1", 64 << 10), b, 18);
    p.run();
    let mut rng = Rng(18);
    let len = 1u64 << 20;
    p.a.region(DST, len, Perm::LOCAL_ONLY, &mut rng);
    p.b.region(REMOTE, len, Perm::REMOTE_READ, &mut rng);
    p.b.region(OTHER, len, Perm::REMOTE_READ, &mut rng);
    p.a.submit(task(1, 0), Op::Read, Span::cpu(DST, len), REMOTE)
        .unwrap();
    let before = p.a.mem.read(Span::cpu(DST, len)).to_vec();
    // One round: a's first requests reach b, which queues their answers.
    p.step();
    assert_eq!(p.b.reg.pins(Location::Cpu, REMOTE), Some(4));
    assert!(matches!(
        p.b.reg.unregister(Location::Cpu, REMOTE),
        Ok(Unregister::Draining { pins: 4 })
    ));
    // Nothing to refuse for a region that is not draining.
    assert_eq!(p.b.reg.pins(Location::Cpu, OTHER), Some(0));
    let refused = p.b.link.revoke_draining(&mut p.b.reg);
    assert_eq!(refused, 4, "every queued answer is refused");
    assert_eq!(
        p.b.reg.pins(Location::Cpu, REMOTE),
        None,
        "the last released pin removed the region"
    );
    assert_eq!(p.b.reg.pins(Location::Cpu, OTHER), Some(0));
    p.run();
    let r = p.a.done.get(&task(1, 0)).unwrap();
    assert_eq!(code(r), ErrorCode::NotAuthorized, "{r:?}");
    assert!(r
        .as_ref()
        .unwrap_err()
        .message()
        .contains("unregistered before the answer"));
    assert!(
        p.a.mem.read(Span::cpu(DST, len)) == before.as_slice(),
        "no byte of the region was sent"
    );
}

fn raw_header(version: u8, opcode: u8, body_len: u32, payload_len: u32) -> Vec<u8> {
    let mut h = Header::new(Opcode::Ping, 0, 8, 0);
    h.version = version;
    h.opcode = opcode;
    h.body_len.set(body_len);
    h.payload_len.set(payload_len);
    h.as_bytes().to_vec()
}

fn garbage_closes_link(bytes: &[u8], want: ErrorCode) {
    let mut p = connected_pair(64 << 10, 17);
    let mut rng = Rng(17);
    p.a.region(DST, 4096, Perm::LOCAL_ONLY, &mut rng);
    p.run();
    p.inject_to_b(bytes);
    p.run();
    assert_eq!(
        p.b.closed.as_ref().map(|s| s.code()),
        Some(want),
        "b closes on {bytes:02x?}"
    );
    // b told a why; a's link is closed with b's code.
    assert_eq!(p.a.closed.as_ref().map(|s| s.code()), Some(want));
    assert!(p
        .a
        .closed
        .as_ref()
        .unwrap()
        .message()
        .starts_with("peer closed: "));
}

#[test]
fn bad_magic_closes_the_link() {
    garbage_closes_link(b"GET / HTTP/1.1\r\n\r\n", ErrorCode::Invalid);
}

#[test]
fn unknown_version_closes_with_not_supported() {
    for v in [VERSION - 1, VERSION + 1] {
        garbage_closes_link(&raw_header(v, Opcode::Ping as u8, 8, 0), ErrorCode::NotSupported);
    }
}

#[test]
fn unknown_opcode_closes_the_link() {
    garbage_closes_link(&raw_header(VERSION, 99, 8, 0), ErrorCode::Invalid);
}

#[test]
fn oversized_lengths_close_the_link() {
    garbage_closes_link(
        &raw_header(VERSION, Opcode::Notify as u8, 1 << 30, 0),
        ErrorCode::Invalid,
    );
    garbage_closes_link(
        &raw_header(VERSION, Opcode::WriteData as u8, 24, 1 << 30),
        ErrorCode::Invalid,
    );
}

#[test]
fn exceeding_the_request_limit_closes_the_link() {
    // b accepts 32 requests in flight (the default); the 33rd arrives
    // before b could answer any.
    let mut bytes = Vec::new();
    let mut buf = [0u8; 64];
    for i in 1..=33u64 {
        let n = Frame::ReadReq {
            req_id: i << 8,
            addr: REMOTE,
            location: None,
            len: 8,
        }
        .encode(&mut buf)
        .unwrap();
        bytes.extend_from_slice(&buf[..n]);
    }
    garbage_closes_link(&bytes, ErrorCode::Invalid);
}

#[test]
fn request_id_zero_closes_the_link() {
    let mut buf = [0u8; 64];
    let n = Frame::ReadReq {
        req_id: 0,
        addr: REMOTE,
        location: None,
        len: 8,
    }
    .encode(&mut buf)
    .unwrap();
    garbage_closes_link(&buf[..n], ErrorCode::Invalid);
}

#[test]
fn segment_info_query_waits_for_room_in_the_window() {
    let mut a = config("a:1", 64 << 10);
    a.max_outstanding = 2;
    let mut b = config("b:2", 64 << 10);
    b.max_outstanding = 2;
    let mut p = Pair::new(a, b, 19);
    p.run();
    let mut rng = Rng(19);
    p.a.region(DST, 8192, Perm::LOCAL_ONLY, &mut rng);
    p.b.region(REMOTE, 8192, Perm::REMOTE_READ, &mut rng);
    p.b_talks = false;
    p.a.submit(task(1, 0), Op::Read, Span::cpu(DST, 4096), REMOTE)
        .unwrap();
    p.a.submit(task(1, 1), Op::Read, Span::cpu(DST + 4096, 4096), REMOTE + 4096)
        .unwrap();
    p.run();
    assert_eq!(p.a.link.requests_in_flight(), 2);
    p.a.link.query_segment_info(16).unwrap();
    p.run();
    assert_eq!(
        p.b.link.state(),
        LinkState::Established,
        "the query did not overrun b's limit"
    );
    p.b_talks = true;
    p.run();
    assert_eq!(p.a.done.len(), 2);
    let page = p.a.pages.pop().expect("the query was answered").unwrap();
    assert_eq!(page.regions.len(), 1);
}

#[test]
fn unsolicited_answers_close_the_link() {
    let mut buf = [0u8; 64];
    let n = Frame::WriteAck { req_id: 0x1234 }.encode(&mut buf).unwrap();
    garbage_closes_link(&buf[..n], ErrorCode::Invalid);
}

#[test]
fn truncated_frame_stays_pending_until_the_rest_arrives() {
    let mut p = connected_pair(64 << 10, 18);
    let mut buf = [0u8; 64];
    let n = Frame::Ping { token: 5 }.encode(&mut buf).unwrap();
    p.inject_to_b(&buf[..n - 1]);
    p.run();
    assert_eq!(p.b.link.state(), LinkState::Established);
    assert_eq!(p.pending_a_to_b(), 0, "b consumed the partial frame");
    p.inject_to_b(&buf[n - 1..n]);
    p.run();
    assert_eq!(p.b.link.state(), LinkState::Established);
    assert!(HEADER_LEN < n);
}

#[test]
fn a_payload_that_cannot_be_read_fails_only_its_task() {
    let mut p = connected_pair(4096, 11);
    let mut rng = Rng(11);
    p.a.region(SRC, 0x1_0000, Perm::LOCAL_ONLY, &mut rng);
    p.a.region(DST, 0x1_0000, Perm::LOCAL_ONLY, &mut rng);
    p.b.region(REMOTE, 0x1_0000, Perm::REMOTE_READ_WRITE, &mut rng);
    // b cannot read one page of its memory; a cannot read one of its own.
    p.b.unreadable = Some(Span::cpu(REMOTE + 0x4000, 0x1000));
    p.a.unreadable = Some(Span::cpu(SRC + 0x8000, 0x1000));
    let cases: &[(Op, u64, u64, u64, ErrorCode)] = &[
        (Op::Read, DST, REMOTE, 0x3000, ErrorCode::Ok),
        (
            Op::Read,
            DST + 0x3000,
            REMOTE + 0x3000,
            0x3000,
            ErrorCode::RuntimeError,
        ),
        (Op::Read, DST + 0x6000, REMOTE + 0x6000, 8000, ErrorCode::Ok),
        (
            Op::Write,
            SRC + 0x7000,
            REMOTE + 0xa000,
            0x3000,
            ErrorCode::RuntimeError,
        ),
        (Op::Write, SRC, REMOTE + 0xd000, 5000, ErrorCode::Ok),
    ];
    for (i, &(op, local, remote, len, _)) in cases.iter().enumerate() {
        p.a.submit(task(1, i as u32), op, Span::cpu(local, len), remote)
            .unwrap();
    }
    p.run();
    for (i, &(op, local, remote, len, want)) in cases.iter().enumerate() {
        let got = &p.a.done[&task(1, i as u32)];
        assert_eq!(code(got), want, "case {i}: {got:?}");
        match (got, op) {
            (Err(e), Op::Read) => assert_eq!(e.message(), format!("cannot read {:#x}", REMOTE + 0x4000)),
            (Err(e), Op::Write) => assert_eq!(e.message(), format!("cannot read {:#x}", SRC + 0x8000)),
            (Ok(()), _) => assert!(
                p.a.mem.read(Span::cpu(local, len)) == p.b.mem.read(Span::cpu(remote, len)),
                "case {i} not byte-exact"
            ),
        }
    }
    assert_eq!(p.a.link.tasks_in_flight(), 0);
    assert_eq!(p.a.link.requests_in_flight(), 0);
    assert_eq!(p.b.reg.pins(Location::Cpu, REMOTE), Some(0));
    // With no payload under way both reports are no-ops.
    let why = te_proto::status!(RuntimeError, "nothing to fail");
    assert_eq!(p.b.link.payload_unavailable(why.clone(), &mut p.b.reg), 0);
    p.a.link.landing_failed(why, &mut p.a.reg);
    assert_eq!(p.a.link.poll_payload(), None);
    // The link goes on: the same memory, minus the bad page, reads fine.
    p.b.unreadable = None;
    p.a.submit(task(2, 0), Op::Read, Span::cpu(DST, 0x1_0000), REMOTE)
        .unwrap();
    p.run();
    assert_eq!(p.a.done[&task(2, 0)], Ok(()));
    assert_eq!(p.a.link.state(), LinkState::Established);
    assert_eq!(p.b.link.state(), LinkState::Established);
}

#[test]
fn a_landing_that_fails_discards_the_rest_and_fails_only_its_task() {
    let mut p = connected_pair(64 << 10, 12);
    p.max_piece = 1000;
    let mut rng = Rng(12);
    p.a.region(SRC, 0x2_0000, Perm::LOCAL_ONLY, &mut rng);
    p.a.region(DST, 0x4_0000, Perm::LOCAL_ONLY, &mut rng);
    p.b.region(REMOTE, 0x6_0000, Perm::REMOTE_READ_WRITE, &mut rng);
    p.a.unwritable = Some(Span::cpu(DST + 0x2_0000 + 5000, 1));
    p.b.unwritable = Some(Span::cpu(REMOTE + 0x5_0000 + 100, 1));
    let a_tail = Span::cpu(DST + 0x2_0000 + 5000, 0x1_0000 - 5000);
    let b_tail = Span::cpu(REMOTE + 0x5_0000 + 100, 0x1_0000 - 100);
    let a_before = p.a.mem.read(a_tail).to_vec();
    let b_before = p.b.mem.read(b_tail).to_vec();
    let cases: &[(Op, u64, u64, ErrorCode)] = &[
        (Op::Read, DST, REMOTE, ErrorCode::Ok),
        (
            Op::Read,
            DST + 0x2_0000,
            REMOTE + 0x2_0000,
            ErrorCode::RuntimeError,
        ),
        (Op::Write, SRC, REMOTE + 0x3_0000, ErrorCode::Ok),
        (
            Op::Write,
            SRC + 0x1_0000,
            REMOTE + 0x5_0000,
            ErrorCode::RuntimeError,
        ),
    ];
    for (i, &(op, local, remote, _)) in cases.iter().enumerate() {
        p.a.submit(task(3, i as u32), op, Span::cpu(local, 0x1_0000), remote)
            .unwrap();
    }
    p.run();
    for (i, &(_, local, remote, want)) in cases.iter().enumerate() {
        let got = &p.a.done[&task(3, i as u32)];
        assert_eq!(code(got), want, "case {i}: {got:?}");
        if let Err(e) = got {
            assert!(e.message().starts_with("cannot write 0x"), "{e}");
        } else {
            let len = 0x1_0000;
            assert!(p.a.mem.read(Span::cpu(local, len)) == p.b.mem.read(Span::cpu(remote, len)));
        }
    }
    // Nothing was placed from the failed piece on.
    assert_eq!(p.a.mem.read(a_tail), &a_before[..]);
    assert_eq!(p.b.mem.read(b_tail), &b_before[..]);
    assert_eq!(p.b.reg.pins(Location::Cpu, REMOTE), Some(0));
    assert_eq!(p.a.link.requests_in_flight(), 0);
    assert_eq!(p.a.link.state(), LinkState::Established);
    assert_eq!(p.b.link.state(), LinkState::Established);
}
