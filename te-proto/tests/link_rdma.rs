//! The RDMA exchange of two te-proto links wired back to back in memory
//! (docs/PROTOCOL.md, "RDMA path"): the connector's offer and the
//! acceptor's answer or refusal, once, after the handshake (and its
//! authentication); the calls refused in the wrong order; a peer breaking
//! the order closes the link; the rkeys of the region listing; the
//! regions announced with `RdmaKey`, and tasks that this side's NIC moves
//! (posted once, ended only when the NIC is done, a withdrawal answered
//! once none runs).

mod support;

use support::{config, request, task, Pair, Rng};
use te_proto::batch::{Op, TaskId};
use te_proto::link::{Caps, LinkConfig, LinkState, RdmaKey, RdmaPost};
use te_proto::rdma::{ConnInfo, Conns, RdmaOff, MAX_RDMA_QPS};
use te_proto::wire::{Frame, RdmaMsg, MAX_CONTROL_LEN};
use te_proto::{ErrorCode, Location, Perm, Span};

const REMOTE: u64 = 0x9000_0000_0000;
const PRIVATE: u64 = 0xA000_0000_0000;

fn qp(qpn: u32) -> ConnInfo {
    ConnInfo {
        qpn,
        psn: qpn + 1,
        gid: [0xfe; 16],
        lid: 7,
        mtu: 5,
    }
}

fn rdma_config(name: &str, rdma: bool, secret: bool) -> LinkConfig {
    let mut c = config(name, 1 << 20);
    if rdma {
        c.caps |= Caps::RDMA;
    }
    if secret {
        c = c.with_secret(b"rdma pair secret").unwrap();
    }
    c
}

fn pair(a_rdma: bool, b_rdma: bool) -> Pair {
    let mut p = Pair::new(
        rdma_config("a:1", a_rdma, true),
        rdma_config("b:2", b_rdma, true),
        3,
    );
    p.run();
    assert!(p.a.connected && p.b.connected);
    p
}

fn code(r: te_proto::Result<()>) -> ErrorCode {
    r.map_or_else(|e| e.code(), |()| ErrorCode::Ok)
}

fn frame(msg: RdmaMsg) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    let n = Frame::RdmaConn(msg).encode(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn offer_and_answer_give_both_sides_the_others_queue_pairs() {
    let mut p = pair(true, true);
    assert!(!p.a.rdma_heard && !p.b.rdma_heard, "no RdmaConn before an offer");
    p.a.link.offer_rdma(&[qp(0x10), qp(0x11)]).unwrap();
    p.run();
    assert!(p.b.rdma_heard, "the acceptor hears of the offer");
    assert!(p.b.link.rdma().offer_pending());
    assert_eq!(p.b.link.rdma().peer(), Some(Ok(&[qp(0x10), qp(0x11)][..])));
    assert!(!p.a.link.rdma().ready(), "no answer yet");
    assert!(p.a.link.rdma().answer_pending() && !p.b.link.rdma().answer_pending());
    p.b.link.answer_rdma(Ok(&[qp(0x20)])).unwrap();
    p.run();
    assert!(p.a.rdma_heard, "the connector hears of the answer");
    assert_eq!(p.a.link.rdma().peer(), Some(Ok(&[qp(0x20)][..])));
    assert_eq!(p.a.link.rdma().local(), Some(&[qp(0x10), qp(0x11)][..]));
    assert!(p.a.link.rdma().ready() && p.b.link.rdma().ready());
    assert!(!p.b.link.rdma().offer_pending());
    assert!(!p.a.link.rdma().answer_pending(), "answered");
    assert_eq!(p.a.link.rdma().refusal(), None);
    // Once per link, on both sides.
    assert_eq!(code(p.a.link.offer_rdma(&[qp(0x12)])), ErrorCode::Invalid);
    assert_eq!(code(p.b.link.answer_rdma(Ok(&[qp(0x21)]))), ErrorCode::Invalid);
    assert_eq!(p.a.link.state(), LinkState::Established);
    assert_eq!(p.b.link.state(), LinkState::Established);
}

#[test]
fn a_refusal_carries_its_reason_to_the_connector() {
    let mut p = pair(true, true);
    p.a.link.offer_rdma(&[qp(0x10)]).unwrap();
    p.run();
    p.b.link.answer_rdma(Err(RdmaOff::NoCommonFabric)).unwrap();
    p.run();
    assert_eq!(p.a.link.rdma().peer(), Some(Err(RdmaOff::NoCommonFabric)));
    assert_eq!(p.a.link.rdma().refusal(), Some(RdmaOff::NoCommonFabric));
    assert_eq!(p.b.link.rdma().refusal(), Some(RdmaOff::NoCommonFabric));
    assert!(!p.a.link.rdma().ready() && !p.b.link.rdma().ready());
    assert_eq!(p.a.link.state(), LinkState::Established, "TCP goes on");
}

#[test]
fn calls_out_of_order_are_refused_and_change_nothing() {
    let mut early = Pair::new(rdma_config("a:1", true, true), rdma_config("b:2", true, true), 5);
    assert_eq!(
        code(early.a.link.offer_rdma(&[qp(1)])),
        ErrorCode::NotReady,
        "an offer before the handshake (and its authentication) ended"
    );
    let mut p = pair(true, true);
    assert_eq!(
        code(p.b.link.offer_rdma(&[qp(1)])),
        ErrorCode::Invalid,
        "the acceptor offers"
    );
    assert_eq!(
        code(p.b.link.answer_rdma(Ok(&[qp(1)]))),
        ErrorCode::Invalid,
        "no offer pending"
    );
    assert_eq!(code(p.a.link.offer_rdma(&[])), ErrorCode::Invalid);
    assert_eq!(
        code(p.a.link.offer_rdma(&[qp(1); MAX_RDMA_QPS + 1])),
        ErrorCode::Invalid
    );
    assert_eq!(p.a.link.rdma().local(), None);
    p.run();
    assert!(!p.b.rdma_heard, "a refused call sent nothing");
    early.run();
    assert!(
        early.a.link.offer_rdma(&[qp(1)]).is_ok(),
        "once connected the offer goes"
    );
}

#[test]
fn an_offer_needs_the_capability_on_both_sides() {
    let mut p = pair(true, false);
    let e = p.a.link.offer_rdma(&[qp(1)]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotSupported);
    assert!(e.message().contains("the peer"), "{e}");
    let mut p = pair(false, true);
    let e = p.a.link.offer_rdma(&[qp(1)]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotSupported);
    assert!(e.message().contains("this side"), "{e}");
}

/// A peer breaking the order of the exchange closes the link with a
/// message naming the rule.
fn violation(b_rdma: bool, msgs: &[RdmaMsg], expect: &str) {
    let mut p = pair(true, b_rdma);
    for m in msgs {
        p.inject_to_b(&frame(*m));
    }
    p.run();
    assert_eq!(p.b.link.state(), LinkState::Closed, "{expect}");
    let why = p.b.closed.clone().expect("closed reported");
    assert!(why.message().contains(expect), "{why} does not say {expect:?}");
}

#[test]
fn a_peer_breaking_the_exchange_closes_the_link() {
    let offer = RdmaMsg::Offer(Conns::new(&[qp(1)]).unwrap());
    let answer = RdmaMsg::Answer(Conns::new(&[qp(1)]).unwrap());
    violation(false, &[offer], "without the RDMA capability");
    violation(true, &[offer, offer], "a second RdmaConn");
    violation(true, &[answer], "answer to no offer");
    violation(true, &[RdmaMsg::Off(RdmaOff::NoDevice)], "answer to no offer");
}

#[test]
fn the_connector_answers_nothing() {
    let mut p = pair(true, true);
    p.a.link.offer_rdma(&[qp(1)]).unwrap();
    p.run();
    assert_eq!(code(p.a.link.answer_rdma(Ok(&[qp(3)]))), ErrorCode::Invalid);
    assert_eq!(
        p.a.link.rdma().local(),
        Some(&[qp(1)][..]),
        "the refused answer changed nothing"
    );
}

#[test]
fn the_region_listing_carries_the_rkeys_of_remote_regions() {
    let mut p = pair(true, true);
    let mut rng = Rng(9);
    p.b.region(REMOTE, 4096, Perm::REMOTE_READ, &mut rng);
    p.b.region(REMOTE + 0x10_0000, 4096, Perm::REMOTE_READ_WRITE, &mut rng);
    p.b.region(PRIVATE, 4096, Perm::LOCAL_ONLY, &mut rng);
    p.b.reg.set_rkey(Location::Cpu, REMOTE, 0xdead_beef).unwrap();
    assert_eq!(
        p.b.reg.set_rkey(Location::Cpu, PRIVATE, 1).map_err(|e| e.code()),
        Err(ErrorCode::Invalid),
        "a local-only region has no rkey"
    );
    assert_eq!(
        p.b.reg
            .set_rkey(Location::Cpu, REMOTE + 1, 1)
            .map_err(|e| e.code()),
        Err(ErrorCode::NotFound)
    );
    assert_eq!(p.b.reg.rkey(Location::Cpu, REMOTE), Some(0xdead_beef));
    p.a.link.query_segment_info(100).unwrap();
    p.run();
    let page = p.a.pages.pop().expect("a page").unwrap();
    let listed: Vec<(u64, Option<u32>)> = page
        .regions
        .iter()
        .zip(&page.rkeys)
        .map(|(r, k)| (r.span.addr, *k))
        .collect();
    assert_eq!(listed, [(REMOTE, Some(0xdead_beef)), (REMOTE + 0x10_0000, None)]);
}

const LOCAL: u64 = 0x5000_0000_0000;
const LKEY: u32 = 0x77;

/// A pair whose queue pairs are exchanged and connected, `a` with 64 KiB of
/// local memory at LOCAL, `b` with a read-write region at REMOTE announced
/// as region 1 (rkey 0xbeef) and a read-only one at PRIVATE as region 2.
fn connected() -> Pair {
    let mut p = pair(true, true);
    p.a.link.offer_rdma(&[qp(0x10)]).unwrap();
    p.run();
    p.b.link.answer_rdma(Ok(&[qp(0x20)])).unwrap();
    p.run();
    p.a.link.rdma_mut().set_available(true);
    let mut rng = Rng(5);
    p.a.region(LOCAL, 1 << 16, Perm::LOCAL_ONLY, &mut rng);
    p.b.region(REMOTE, 1 << 16, Perm::REMOTE_READ_WRITE, &mut rng);
    p.b.region(PRIVATE, 1 << 16, Perm::REMOTE_READ, &mut rng);
    p.b.link
        .rdma_mut()
        .announce_key(key(1, REMOTE, 1 << 16, 0xbeef, Perm::REMOTE_READ_WRITE))
        .unwrap();
    p.b.link
        .rdma_mut()
        .announce_key(key(2, PRIVATE, 1 << 16, 0xcafe, Perm::REMOTE_READ))
        .unwrap();
    p.run();
    p
}

fn key(id: u64, base: u64, len: u64, rkey: u32, perm: Perm) -> RdmaKey {
    RdmaKey {
        id,
        base,
        len,
        rkey,
        perm,
    }
}

fn submit(p: &mut Pair, t: TaskId, op: Op, local: Span, remote: u64) -> te_proto::Result<()> {
    p.a.link
        .rdma_mut()
        .submit(t, &request(op, local, remote), None, LKEY)
}

/// What a NIC does with a posted transfer: the bytes move between `a`'s
/// local span and `b`'s memory.
fn carry_out(p: &mut Pair, w: &RdmaPost) {
    let remote = Span::cpu(w.remote_addr, w.local.len);
    match w.op {
        Op::Read => {
            let bytes = p.b.mem.read(remote).to_vec();
            p.a.mem.write(w.local, &bytes);
        }
        Op::Write => {
            let bytes = p.a.mem.read(w.local).to_vec();
            p.b.mem.write(remote, &bytes);
        }
    }
}

#[test]
fn an_rdma_task_is_posted_once_with_both_keys_and_ends_when_the_nic_is_done() {
    let mut p = connected();
    assert_eq!(p.a.link.rdma().peer_keys().count(), 2, "both regions announced");
    let (t, local) = (task(1, 0), Span::cpu(LOCAL + 8, 4096));
    submit(&mut p, t, Op::Read, local, REMOTE + 100).unwrap();
    let w = p.a.link.rdma_mut().next_post().expect("posted");
    assert_eq!(
        w,
        RdmaPost {
            task: t,
            op: Op::Read,
            local,
            lkey: LKEY,
            remote_addr: REMOTE + 100,
            rkey: 0xbeef,
        }
    );
    assert_eq!(p.a.link.rdma_mut().next_post(), None, "posted once");
    p.run();
    assert!(p.a.done.is_empty(), "no end before the NIC's");
    assert!(!p.b.link.is_serving(), "the owner sees no request");
    carry_out(&mut p, &w);
    assert!(p.a.link.rdma_mut().done(t, Ok(())));
    assert!(!p.a.link.rdma_mut().done(t, Ok(())), "done once");
    p.run();
    assert_eq!(p.a.done.get(&t), Some(&Ok(())));
    assert_eq!(p.a.mem.read(local), p.b.mem.read(Span::cpu(REMOTE + 100, 4096)));
}

#[test]
fn submit_names_what_the_rdma_path_lacks() {
    let mut p = connected();
    let local = Span::cpu(LOCAL, 4096);
    let code_of = |r: te_proto::Result<()>| r.unwrap_err().code();
    assert_eq!(
        code_of(submit(
            &mut p,
            task(1, 0),
            Op::Read,
            local,
            REMOTE + (1 << 16) - 100
        )),
        ErrorCode::NotFound,
        "a range running past the announced region"
    );
    let e = submit(&mut p, task(1, 1), Op::Write, local, PRIVATE).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotAuthorized, "{e}");
    assert!(e.message().contains("remote writes"), "{e}");
    assert!(
        submit(&mut p, task(1, 2), Op::Read, local, PRIVATE).is_ok(),
        "reads are allowed"
    );
    p.a.link.rdma_mut().set_available(false);
    assert_eq!(
        code_of(submit(&mut p, task(1, 3), Op::Read, local, REMOTE)),
        ErrorCode::NotSupported
    );
    let mut early = pair(true, true);
    early.a.link.rdma_mut().set_available(true);
    assert!(!early.a.link.rdma().available(), "no queue pairs exchanged yet");
    assert_eq!(
        early
            .b
            .link
            .rdma_mut()
            .announce_key(key(1, REMOTE, 64, 1, Perm::REMOTE_READ))
            .map_err(|e| e.code()),
        Err(ErrorCode::NotSupported)
    );
    assert_eq!(
        p.b.link
            .rdma_mut()
            .announce_key(key(9, REMOTE + (1 << 20), 64, 1, Perm::LOCAL_ONLY))
            .map_err(|e| e.code()),
        Err(ErrorCode::Invalid),
        "a region without a remote permission"
    );
}

#[test]
fn a_cancel_of_a_posted_task_is_reported_only_once_the_nic_is_done() {
    let mut p = connected();
    let t = task(1, 0);
    submit(&mut p, t, Op::Write, Span::cpu(LOCAL, 4096), REMOTE).unwrap();
    let w = p.a.link.rdma_mut().next_post().unwrap();
    assert!(p.a.link.cancel(t));
    p.run();
    assert!(p.a.done.is_empty(), "the NIC may still read the task's memory");
    carry_out(&mut p, &w);
    p.a.link.rdma_mut().done(t, Ok(()));
    p.run();
    assert_eq!(p.a.done[&t].as_ref().unwrap_err().code(), ErrorCode::Canceled);
}

#[test]
fn a_withdrawn_region_fails_unposted_tasks_and_is_answered_once_posted_ones_end() {
    let mut p = connected();
    let (posted, waiting) = (task(1, 0), task(1, 1));
    submit(&mut p, posted, Op::Read, Span::cpu(LOCAL, 4096), REMOTE).unwrap();
    let w = p.a.link.rdma_mut().next_post().unwrap();
    submit(&mut p, waiting, Op::Read, Span::cpu(LOCAL + 4096, 4096), REMOTE).unwrap();
    assert!(p.b.link.rdma_mut().withdraw_key(1));
    p.run();
    assert_eq!(
        p.a.done[&waiting].as_ref().unwrap_err().code(),
        ErrorCode::NotAuthorized,
        "a task not posted when its region went (as TCP refuses a draining region)"
    );
    assert!(p.a.link.rdma().peer_key(REMOTE, 1).is_none(), "forgotten at once");
    assert!(p.b.link.rdma().key_closing(1), "a posted transfer still runs");
    carry_out(&mut p, &w);
    p.a.link.rdma_mut().done(posted, Ok(()));
    p.run();
    assert!(!p.b.link.rdma().key_closing(1), "answered once it ended");
    assert!(!p.b.link.rdma().key_announced(1));
    assert_eq!(p.a.done.get(&posted), Some(&Ok(())));
    assert_eq!(
        submit(&mut p, task(1, 2), Op::Read, Span::cpu(LOCAL, 64), REMOTE)
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
    // A new region where the old one was.
    p.b.link
        .rdma_mut()
        .announce_key(key(3, REMOTE, 4096, 0xf00d, Perm::REMOTE_READ))
        .unwrap();
    p.run();
    assert_eq!(
        p.a.link.rdma().peer_key(REMOTE, 4096).map(|k| k.rkey),
        Some(0xf00d)
    );
    assert_eq!(p.a.link.state(), LinkState::Established);
}

#[test]
fn a_closed_link_reports_its_posted_tasks_after_the_nic_is_done_and_then_closes() {
    let mut p = connected();
    let t = task(1, 0);
    submit(&mut p, t, Op::Read, Span::cpu(LOCAL, 4096), REMOTE).unwrap();
    let _ = p.a.link.rdma_mut().next_post().unwrap();
    p.a.link.close(&mut p.a.reg);
    p.run();
    assert!(
        p.a.done.is_empty() && p.a.closed.is_none(),
        "the NIC may still write"
    );
    assert!(p.a.link.rdma_mut().posted());
    let lost = te_proto::status!(Disconnected, "queue pair destroyed");
    p.a.link.rdma_mut().done(t, Err(lost));
    p.run();
    assert_eq!(
        p.a.done[&t].as_ref().unwrap_err().code(),
        ErrorCode::Canceled,
        "the close's reason came first"
    );
    assert!(p.a.closed.is_some());
    assert!(!p.a.link.rdma().available());
}

#[test]
fn rdma_key_frames_out_of_order_close_the_link() {
    let mut early = pair(true, true);
    let k = key(1, REMOTE, 64, 1, Perm::REMOTE_READ);
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    let n = Frame::RdmaKey(k).encode(&mut buf).unwrap();
    early.inject_to_a(&buf[..n]);
    early.run();
    let why = early.a.closed.clone().expect("closed");
    assert!(
        why.message().contains("before both sides gave queue pairs"),
        "{why}"
    );

    let mut p = connected();
    let n = Frame::RdmaKeyClosed { id: 1 }.encode(&mut buf).unwrap();
    p.inject_to_b(&buf[..n]);
    p.run();
    let why = p.b.closed.clone().expect("closed");
    assert!(why.message().contains("not withdrawn"), "{why}");
}

#[test]
fn a_withdrawal_given_up_on_before_it_was_sent_still_goes_and_frees_its_slot() {
    let mut p = connected();
    assert!(p.b.link.rdma_mut().withdraw_key(1));
    // Given up on at once: its withdrawal has not been sent yet.
    assert!(p.b.link.rdma_mut().abandon_key(1));
    assert!(!p.b.link.rdma().key_closing(1), "nothing is awaited for it");
    p.run();
    assert!(
        p.a.link.rdma().peer_key(REMOTE, 1).is_none(),
        "the withdrawal went"
    );
    assert_eq!(
        p.b.link.state(),
        LinkState::Established,
        "its late answer is ignored"
    );
    // The slot is free: the table takes MAX_LOCAL_MAPS - 1 more next to region 2.
    for id in 0..te_proto::link::MAX_LOCAL_MAPS as u64 - 1 {
        let base = REMOTE + (1 << 20) + id * 4096;
        p.b.link
            .rdma_mut()
            .announce_key(key(10 + id, base, 4096, 7, Perm::REMOTE_READ))
            .unwrap_or_else(|e| panic!("announcement {id}: {e}"));
    }
    assert!(
        !p.b.link.rdma_mut().abandon_key(2),
        "region 2 was never withdrawn"
    );
}
