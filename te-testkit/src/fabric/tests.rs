//! The fabric's own faults, seen from two links.

use std::time::Duration;

use te_proto::batch::{BatchId, Op, TaskId, TransferRequest};
use te_proto::endpoint::{Endpoint, EndpointConfig, Parts};
use te_proto::link::{Event, LinkConfig};
use te_proto::{ErrorCode, Instant, Location, Perm, Region, Span};

use super::{ConnId, Fabric, FabricConfig, NodeId, Report};

const A: u64 = 0x1_0000;
const B: u64 = 0x8_0000;
const LEN: usize = 64 << 10;

/// Two nodes with all their memory registered and a connection, a
/// 64 KiB write from a to b submitted on it.
fn pair(seed: u64) -> (Fabric, NodeId, NodeId, ConnId) {
    let mut fab = Fabric::new(seed, FabricConfig::default());
    let ep = || Endpoint::new(EndpointConfig::default(), Parts::with_capacity(2, 1, 1, 1)).unwrap();
    let a = fab.add_node(A, LEN, ep());
    let b = fab.add_node(B, LEN, ep());
    for (n, base) in [(a, A), (b, B)] {
        let r = Region::new(base, LEN as u64, Location::Cpu, Perm::REMOTE_READ_WRITE);
        fab.node_mut(n).ep.register_batch(&[r]).unwrap();
    }
    let mut bytes = vec![0u8; LEN];
    fab.rng().fill(&mut bytes);
    fab.node_mut(a)
        .arena
        .get_mut(Span::cpu(A, LEN as u64))
        .unwrap()
        .copy_from_slice(&bytes);
    let mut cfg = LinkConfig::new("n").unwrap();
    cfg.max_payload = 4096;
    cfg.heartbeat_interval = Duration::from_millis(100);
    cfg.idle_timeout = Duration::from_millis(500);
    let c = fab.connect(a, b, cfg.clone(), cfg).unwrap();
    let write = TransferRequest {
        op: Op::Write,
        local: Span::cpu(A, LEN as u64),
        segment: 0,
        remote_addr: B,
        remote_location: None,
    };
    let task = TaskId {
        batch: BatchId::from_u64(1),
        index: 0,
    };
    fab.link_mut(c, a).unwrap().0.submit(task, &write, None).unwrap();
    (fab, a, b, c)
}

/// Runs until `until` and returns every report.
fn run(fab: &mut Fabric, until: Instant) -> Vec<Report> {
    let mut out = Vec::new();
    loop {
        if fab.step(&mut out) {
            continue;
        }
        match fab.next_wakeup() {
            Some(t) if t <= until => fab.advance_to(t),
            _ => return out,
        }
    }
}

fn ends(reports: &[Report]) -> Vec<(NodeId, ErrorCode)> {
    reports
        .iter()
        .filter_map(|r| match r {
            Report::Event {
                node,
                event: Event::TaskDone { result, .. },
                ..
            } => Some((
                *node,
                result.as_ref().map_or_else(|e| e.code(), |_| ErrorCode::Ok),
            )),
            Report::Event {
                node,
                event: Event::Closed(why),
                ..
            } => Some((*node, why.code())),
            _ => None,
        })
        .collect()
}

#[test]
fn bytes_arrive_exact_in_random_pieces_and_runs_replay() {
    let mut digests = Vec::new();
    for _ in 0..2 {
        let (mut fab, a, b, _) = pair(11);
        let reports = run(&mut fab, Instant::from_nanos(50_000_000));
        assert_eq!(ends(&reports), vec![(a, ErrorCode::Ok)]);
        let sent = fab.node(a).arena.get(Span::cpu(A, LEN as u64)).unwrap().to_vec();
        assert!(fab.node(b).arena.get(Span::cpu(B, LEN as u64)).unwrap() == &sent[..]);
        let pieces = reports
            .iter()
            .filter(|r| matches!(r, Report::Access { landed: true, .. }))
            .count();
        assert!(pieces > 16, "64 KiB in 4 KiB frames landed in {pieces} pieces");
        assert!(fab.violations().is_empty(), "{:?}", fab.violations());
        digests.push((fab.digest(), fab.now()));
    }
    assert_eq!(digests[0], digests[1]);
}

#[test]
fn a_cut_disconnects_both_links_and_frees_the_pins() {
    let (mut fab, a, b, c) = pair(12);
    let mut reports = Vec::new();
    // Until some of the write has landed.
    while !reports
        .iter()
        .any(|r| matches!(r, Report::Access { landed: true, .. }))
    {
        assert!(
            fab.step(&mut reports) || {
                let t = fab.next_wakeup().unwrap();
                fab.advance_to(t);
                true
            }
        );
    }
    reports.clear();
    fab.cut(c, &mut reports);
    let got = ends(&reports);
    assert!(got.contains(&(a, ErrorCode::Disconnected)), "{got:?}");
    assert!(got.contains(&(b, ErrorCode::Disconnected)), "{got:?}");
    assert!(matches!(reports.last(), Some(Report::Gone { .. })));
    assert!(fab.faults(c).cut && !fab.is_open(c, a) && !fab.is_open(c, b));
    assert_eq!(fab.node(b).reg().pins(Location::Cpu, B), Some(0));
}

#[test]
fn a_frozen_peer_times_out_its_partner() {
    let (mut fab, a, b, c) = pair(13);
    fab.freeze(b, Duration::from_secs(5));
    let reports = run(&mut fab, Instant::from_nanos(2_000_000_000));
    let got = ends(&reports);
    assert!(got.contains(&(a, ErrorCode::Timeout)), "{got:?}");
    assert!(
        !got.iter().any(|(n, _)| *n == b),
        "a frozen node reports nothing: {got:?}"
    );
    assert!(fab.faults(c).frozen);
    // Thawed, b finds the connection closed.
    let reports = run(&mut fab, Instant::from_nanos(6_000_000_000));
    assert!(
        ends(&reports).iter().any(|(n, _)| *n == b),
        "{:?}",
        ends(&reports)
    );
    assert!(fab.live_conns().next().is_none());
}
