//! The RDMA exchange of two te-proto links wired back to back in memory
//! (docs/PROTOCOL.md, "RDMA path"): the connector's offer and the
//! acceptor's answer or refusal, once, after the handshake (and its
//! authentication); the calls refused in the wrong order; a peer breaking
//! the order closes the link; the rkeys of the region listing.

mod support;

use support::{config, Pair, Rng};
use te_proto::link::{Caps, LinkConfig, LinkState};
use te_proto::rdma::{ConnInfo, Conns, RdmaOff, MAX_RDMA_QPS};
use te_proto::wire::{Frame, RdmaMsg, MAX_CONTROL_LEN};
use te_proto::{ErrorCode, Location, Perm};

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
    p.b.link.answer_rdma(Ok(&[qp(0x20)])).unwrap();
    p.run();
    assert!(p.a.rdma_heard, "the connector hears of the answer");
    assert_eq!(p.a.link.rdma().peer(), Some(Ok(&[qp(0x20)][..])));
    assert_eq!(p.a.link.rdma().local(), Some(&[qp(0x10), qp(0x11)][..]));
    assert!(p.a.link.rdma().ready() && p.b.link.rdma().ready());
    assert!(!p.b.link.rdma().offer_pending());
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
