//! Links against a hostile or very slow peer (issue 17): answers cut to
//! the initiator's limit, Ping and PidChallenge rules, ranges ending at
//! 2^64, a frame trickled below the floor, a bulk sender kept alive on a
//! slow link, and messages that name the right side and carry no raw
//! control characters from the peer.

mod support;

use std::time::Duration;

use support::{config, task, Pair, Rng};
use te_proto::batch::Op;
use te_proto::link::{Link, LinkConfig, LinkState, SECRET_MISMATCH};
use te_proto::wire::{encode_info_reply, Decoder, Frame, Hello, AUTH_NONE, MAX_CONTROL_LEN};
use te_proto::{Entry, ErrorCode, Instant, Location, Perm, Region, Registry, Span};

const SRC: u64 = 0x1000_0000_0000;
const REMOTE: u64 = 0x9000_0000_0000;

fn encode(f: &Frame<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    let n = f.encode(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn connected(a: LinkConfig, b: LinkConfig) -> Pair {
    let mut p = Pair::new(a, b, 3);
    p.run();
    assert!(p.a.connected && p.b.connected);
    p
}

fn closed_code(side: &support::Side) -> Option<ErrorCode> {
    side.closed.as_ref().map(|s| s.code())
}

// ---- 17.3: the target cuts its answers to the initiator's max_payload ----

#[test]
fn a_read_larger_than_the_initiators_own_max_payload_is_a_violation_not_an_oversized_answer() {
    // a announced 4096, b 8192: P = 4096. A ReadReq of 8192 (a breaking its
    // own announcement) must not be answered with 8192 bytes.
    let mut p = connected(config("a:1", 4096), config("b:2", 8192));
    let mut rng = Rng(5);
    p.b.region(REMOTE, 8192, Perm::REMOTE_READ, &mut rng);
    let req = Frame::ReadReq {
        req_id: 0x1_01,
        addr: REMOTE,
        location: None,
        len: 8192,
    };
    p.inject_to_b(&encode(&req));
    p.run();
    let why = p.b.closed.as_ref().expect("b refuses the read");
    assert_eq!(why.code(), ErrorCode::Invalid, "{why:?}");
    assert!(why.message().starts_with("read of 8192 bytes exceeds"), "{why:?}");
    assert!(why.message().contains("4096"), "{why:?}");
    // a saw no oversized ReadData (its own header check would have refused
    // it): it closed because b told it so.
    let a_why = p.a.closed.as_ref().expect("b told a");
    assert!(
        a_why.message().starts_with("peer closed: read of 8192"),
        "{a_why:?}"
    );
    // Within P the same read is answered.
    let mut p = connected(config("a:1", 4096), config("b:2", 8192));
    p.b.region(REMOTE, 8192, Perm::REMOTE_READ, &mut rng);
    p.a.region(SRC, 8192, Perm::LOCAL_ONLY, &mut rng);
    p.a.submit(task(1, 0), Op::Read, Span::cpu(SRC, 8192), REMOTE)
        .unwrap();
    p.run();
    assert_eq!(p.a.done.get(&task(1, 0)), Some(&Ok(())));
    assert_eq!(p.b.link.state(), LinkState::Established);
}

// ---- 17.4: Pings, PidChallenges, 2^64, reserved fields ----

#[test]
fn a_ping_while_the_pong_for_the_last_one_is_unsent_closes_the_link() {
    let mut p = connected(config("a:1", 4096), config("b:2", 4096));
    let mut two = encode(&Frame::Ping { token: 7 });
    two.extend(encode(&Frame::Ping { token: 8 }));
    p.inject_to_b(&two);
    p.run();
    let why = p.b.closed.as_ref().expect("two Pings in one read");
    assert_eq!(why.code(), ErrorCode::Invalid);
    assert!(
        why.message().contains("0x8") && why.message().contains("0x7"),
        "{why:?}"
    );
}

#[test]
fn every_ping_sent_after_the_last_pong_is_answered() {
    let mut p = connected(config("a:1", 4096), config("b:2", 4096));
    for token in 1..=3 {
        p.inject_to_b(&encode(&Frame::Ping { token: 100 + token }));
        p.run();
    }
    assert_eq!(p.b.link.state(), LinkState::Established);
    assert_eq!(
        p.a.link.state(),
        LinkState::Established,
        "unknown Pongs are ignored"
    );
}

#[test]
fn a_second_pid_challenge_closes_the_link_and_the_first_is_the_one_answered() {
    let mut p = connected(config("a:1", 4096), config("b:2", 4096));
    let first = encode(&Frame::PidChallenge {
        token: [1; 32],
        socket: b"te-pid-1",
    });
    p.inject_to_b(&first);
    p.run();
    assert_eq!(p.b.link.state(), LinkState::Established);
    let ch =
        p.b.link
            .same_host_mut()
            .take_pid_challenge()
            .expect("the challenge");
    assert_eq!(ch.token, [1; 32]);
    // Two more in one read: the link takes no second challenge.
    let mut two = encode(&Frame::PidChallenge {
        token: [2; 32],
        socket: b"te-pid-2",
    });
    two.extend(first);
    p.inject_to_b(&two);
    p.run();
    assert_eq!(closed_code(&p.b), Some(ErrorCode::Invalid));
    assert!(p.b.link.same_host_mut().take_pid_challenge().is_none());
}

#[test]
fn two_challenges_in_one_read_leave_the_first_not_the_second() {
    let mut p = connected(config("a:1", 4096), config("b:2", 4096));
    let mut two = encode(&Frame::PidChallenge {
        token: [1; 32],
        socket: b"te-pid-1",
    });
    two.extend(encode(&Frame::PidChallenge {
        token: [2; 32],
        socket: b"te-pid-2",
    }));
    p.inject_to_b(&two);
    p.run();
    assert_eq!(closed_code(&p.b), Some(ErrorCode::Invalid));
    let why = p.b.closed.as_ref().unwrap();
    assert!(why.message().contains("second PidChallenge"), "{why:?}");
}

#[test]
fn a_range_ending_at_exactly_2_pow_64_counts_as_overflowing_everywhere() {
    // Registration: [2^64 - 16, 2^64) is refused, [2^64 - 17, 2^64 - 1) is fine.
    let mut reg = Registry::new([Entry::EMPTY; 4]);
    let e = reg
        .register(Region::new(u64::MAX - 15, 16, Location::Cpu, Perm::REMOTE_READ))
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Invalid);
    assert!(e.message().contains("wraps"), "{e:?}");
    reg.register(Region::new(u64::MAX - 16, 16, Location::Cpu, Perm::REMOTE_READ))
        .unwrap();
    // Access check: a range ending at 2^64 is refused.
    let e = reg
        .check_remote(u64::MAX - 15, 16, None, Perm::REMOTE_READ)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotAuthorized, "{e:?}");
    // Wire: a region entry ending at 2^64 makes the InfoReply malformed.
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    let edge = Region::new(u64::MAX - 15, 16, Location::Cpu, Perm::REMOTE_READ);
    let (n, _) = encode_info_reply(&mut buf, 0x1ff, [edge].into_iter()).unwrap();
    let mut dec = Decoder::new(4096);
    assert_eq!(dec.feed(&buf[..n]), Ok(n));
    let err = dec.frame().expect("a whole frame").unwrap_err();
    assert!(err.to_string().contains("region"), "{err}");
}

/// A connector's `Hello` without a secret, as a raw peer sends it.
fn hello(name: &str) -> Vec<u8> {
    encode(&Frame::Hello(Hello {
        caps: 0,
        max_payload: 4096,
        max_outstanding: 4,
        auth: AUTH_NONE,
        host_id: [0; 32],
        nonce: [3; 32],
        mac: [0; 32],
        name,
    }))
}

#[test]
fn a_nonzero_reserved_hello_field_is_reported_with_its_value() {
    let mut bytes = hello("x");
    // Body offset 13..16 is the 3-byte reserved field after `auth`.
    bytes[16 + 15] = 0x5a;
    let mut dec = Decoder::new(4096);
    dec.feed(&bytes).unwrap();
    let err = dec.frame().unwrap().unwrap_err();
    assert!(err.to_string().contains("0x5a"), "{err}");
}

// ---- 17.1: a floor on the progress of a frame begun ----

/// An acceptor that has finished the handshake with a hand-made Hello.
fn accepted(cfg: LinkConfig, now: Instant) -> (Link, Registry<[Entry; 4]>) {
    let mut reg = Registry::new([Entry::EMPTY; 4]);
    let mut link = Link::accept(cfg, now, [9; 32]).unwrap();
    let bytes = hello("trickler");
    assert_eq!(link.handle_input(now, &bytes, &mut reg), bytes.len());
    assert_eq!(link.state(), LinkState::Established);
    (link, reg)
}

/// Feeds `frame` one byte every `gap`, answering timeouts; returns how many
/// bytes went in before the link closed (all of them when it stayed open).
fn trickle(
    link: &mut Link,
    reg: &mut Registry<[Entry; 4]>,
    frame: &[u8],
    gap: Duration,
    mut now: Instant,
) -> usize {
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    for (i, b) in frame.iter().enumerate() {
        // Steps of at most 100 ms, so a timeout is handled when it is due.
        let until = now + gap;
        while now < until {
            now = (now + Duration::from_millis(100)).min(until);
            if link.poll_timeout().is_some_and(|t| t <= now) {
                link.handle_timeout(now, reg);
            }
            while link.poll_transmit(now, &mut buf, reg).is_some() {}
            if link.state() == LinkState::Closed {
                return i;
            }
        }
        link.handle_input(now, std::slice::from_ref(b), reg);
    }
    frame.len()
}

#[test]
fn a_frame_trickled_below_the_floor_closes_the_link_with_timeout() {
    let now = Instant::from_nanos(1);
    let cfg = config("b:2", 4096);
    assert_eq!(cfg.min_frame_rate, te_proto::link::DEFAULT_MIN_FRAME_RATE);
    let (mut link, mut reg) = accepted(cfg, now);
    // A 40-byte frame at one byte per 600 ms: every byte is activity, so
    // the idle timeout (10 s) never fires; the floor does, after the idle
    // timeout plus 40 bytes at 8 KiB/s.
    let frame = encode(&Frame::InfoReq {
        req_id: 0x1_ff,
        after: None,
    });
    let fed = trickle(&mut link, &mut reg, &frame, Duration::from_millis(600), now);
    assert!(fed < frame.len(), "the whole trickled frame was taken");
    let why = link.close_reason().expect("closed");
    assert_eq!(why.code(), ErrorCode::Timeout, "{why:?}");
    assert!(why.message().contains("B/s"), "{why:?}");
}

#[test]
fn frames_at_the_floor_rate_and_pauses_between_frames_are_fine() {
    let now = Instant::from_nanos(1);
    let mut cfg = config("b:2", 4096);
    cfg.idle_timeout = Duration::from_secs(10);
    let (mut link, mut reg) = accepted(cfg, now);
    // Ping frames of 24 bytes, one byte per 300 ms (7.2 s a frame): slow, but
    // each frame completes within the idle timeout plus its allowance.
    let mut at = now;
    for token in 1..=3u64 {
        let frame = encode(&Frame::Ping { token });
        assert_eq!(
            trickle(&mut link, &mut reg, &frame, Duration::from_millis(300), at),
            frame.len()
        );
        at = at + Duration::from_millis(300 * frame.len() as u64);
        let mut buf = vec![0u8; MAX_CONTROL_LEN];
        while link.poll_transmit(at, &mut buf, &reg).is_some() {}
    }
    assert_eq!(link.state(), LinkState::Established, "{:?}", link.close_reason());
}

// ---- 17.5: the receiver keeps a slow bulk sender alive ----

#[test]
fn a_bulk_write_over_a_slow_link_is_kept_alive_by_the_receiver() {
    let mb = 1u64 << 20;
    let mut p = connected(config("a:1", 1 << 20), config("b:2", 1 << 20));
    let mut rng = Rng(11);
    p.a.region(SRC, mb, Perm::LOCAL_ONLY, &mut rng);
    p.b.region(REMOTE, mb, Perm::REMOTE_WRITE, &mut rng);
    p.a.submit(task(1, 0), Op::Write, Span::cpu(SRC, mb), REMOTE)
        .unwrap();
    // 5 000 bytes every 100 ms: 50 KB/s, so the one 1 MiB frame takes 21 s,
    // twice the idle timeout, with nothing else for b to say meanwhile.
    for _ in 0..400 {
        p.step_with_budget(5000);
        p.advance(Duration::from_millis(100));
        if !p.a.done.is_empty() {
            break;
        }
    }
    p.run();
    assert_eq!(p.a.done.get(&task(1, 0)), Some(&Ok(())), "{:?}", p.a.closed);
    assert!(p.a.closed.is_none() && p.b.closed.is_none());
    assert!(p.a.mem.read(Span::cpu(SRC, mb)) == p.b.mem.read(Span::cpu(REMOTE, mb)));
}

// ---- 16.4 and 17.2: messages ----

fn secret_pair(a: Option<&[u8]>, b: Option<&[u8]>) -> Pair {
    let mut ca = config("node-a", 4096);
    let mut cb = config("node-b", 4096);
    if let Some(s) = a {
        ca = ca.with_secret(s).unwrap();
    }
    if let Some(s) = b {
        cb = cb.with_secret(s).unwrap();
    }
    let mut p = Pair::new(ca, cb, 9);
    p.run();
    p
}

#[test]
fn secret_mismatches_say_so_and_name_the_side_that_lacks_one() {
    // a (connector) and b (acceptor) with their secrets, and what each
    // side says, in its own words: "this side" and the peer's name.
    let x = Some(&b"x"[..]);
    let y = Some(&b"y"[..]);
    for (a, b, says_a, says_b) in [
        (
            None,
            x,
            "this side has none, the peer one (\"node-b\")",
            "this side has one, the peer none (\"node-a\")",
        ),
        (
            x,
            None,
            "this side has one, the peer none (\"node-b\")",
            "this side has none, the peer one (\"node-a\")",
        ),
        (
            x,
            y,
            "this side's and the peer's differ (\"node-b\")",
            "this side's and the peer's differ (\"node-a\")",
        ),
    ] {
        let p = secret_pair(a, b);
        for (side, says) in [(&p.a, says_a), (&p.b, says_b)] {
            let why = side.closed.as_ref().expect("refused");
            assert_eq!(why.code(), ErrorCode::NotAuthorized);
            let m = why.message();
            assert_eq!(m, format!("{SECRET_MISMATCH}: {says}"), "{a:?} {b:?}");
        }
    }
}

#[test]
fn a_mismatch_with_a_long_peer_name_loses_only_the_name_to_the_cut() {
    let long = "n".repeat(te_proto::wire::SEGMENT_NAME_MAX);
    let ca = config(&long, 4096);
    let cb = config("node-b", 4096).with_secret(b"x").unwrap();
    let mut p = Pair::new(ca, cb, 9);
    p.run();
    let why = p.b.closed.as_ref().expect("refused");
    let m = why.message();
    assert!(why.is_cut(), "{m:?}");
    assert!(
        m.starts_with(&format!(
            "{SECRET_MISMATCH}: this side has one, the peer none (\"nnn"
        )),
        "{m:?}"
    );
    assert!(m.ends_with("..."), "{m:?}");
}

#[test]
fn a_connector_meeting_a_non_te_server_says_so_at_once() {
    let now = Instant::from_nanos(1);
    let mut reg = Registry::new([Entry::EMPTY; 4]);
    let mut link = Link::connect(config("a:1", 4096), now, [1; 32]).unwrap();
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    while link.poll_transmit(now, &mut buf, &reg).is_some() {}
    link.handle_input(now, b"SSH-2.0-OpenSSH_9.6\r\n", &mut reg);
    let why = link.close_reason().expect("closed at once");
    assert!(why.message().contains("does not speak te"), "{why:?}");
    // A server that says nothing: the timeout says that too.
    let mut link = Link::connect(config("a:1", 4096), now, [1; 32]).unwrap();
    while link.poll_transmit(now, &mut buf, &reg).is_some() {}
    let later = now + Duration::from_secs(6);
    link.handle_timeout(later, &mut reg);
    let why = link.close_reason().expect("timed out");
    assert_eq!(why.code(), ErrorCode::Timeout);
    assert!(why.message().contains("sent nothing"), "{why:?}");
}

#[test]
fn a_peers_error_message_reaches_the_status_without_raw_control_characters() {
    let mut p = connected(config("a:1", 4096), config("b:2", 4096));
    let evil = "bye\n2026-12-02T00:00:00Z  INFO forged line\x1b[2J";
    let e = Frame::Error {
        req_id: 0,
        code: ErrorCode::RuntimeError,
        msg: evil,
    };
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    let n = e.encode(&mut buf).unwrap();
    // As if b had sent it: a's link reads it.
    let used = p.a.link.handle_input(p.now, &buf[..n], &mut p.a.reg);
    assert_eq!(used, n);
    let why = p.a.link.close_reason().expect("closed by the peer");
    let m = why.message();
    assert!(!m.chars().any(char::is_control), "{m:?}");
    assert!(m.contains("bye\\n2026") && m.contains("\\u{1b}[2J"), "{m:?}");
}
