//! The `Endpoint` above the links: submission rules, queues and deadlines,
//! batch ends and their notifications, cancel, finalize and the path rule.
//! Links are real; the peer side of each is a `Link` with a registry of its
//! own, and bytes are carried by hand (payload bytes are not looked at:
//! these tests are about states).

use core::time::Duration;

use te_proto::batch::{BatchSlot, Task};
use te_proto::batch::{Op, TaskState};
use te_proto::endpoint::{
    BatchEntry, Borrowed, Cancel, Endpoint, EndpointConfig, Event, Feed, NoteOutcome, Offers, Parts, Path,
    Request, Route, SegmentEntry, SegmentId, TaskEntry,
};
use te_proto::link::{Caps, Link, LinkConfig, PayloadDest, RdmaKey};
use te_proto::rdma::{ConnInfo, RdmaOff};
use te_proto::wire::MAX_CONTROL_LEN;
use te_proto::{Entry, ErrorCode, Instant, Location, Perm, Region, Registry, TaskId};

const LOCAL: u64 = 0x10_0000;
const REMOTE: u64 = 0x20_0000;
const LEN: u64 = 1 << 16;

type Ep = Endpoint<Borrowed<'static>>;

/// A slice of `n` copies of `v` for the life of the test (te-proto's own
/// tests build without its `std` feature, so without `Heap`).
fn slots<T: Clone>(v: T, n: usize) -> &'static mut [T] {
    Box::leak(vec![v; n].into_boxed_slice())
}

fn endpoint(max_notifications: u32) -> Ep {
    let cfg = EndpointConfig {
        transfer_timeout: Duration::from_secs(1),
        max_notifications,
        ..EndpointConfig::default()
    };
    let parts = Parts::<Borrowed> {
        regions: slots(Entry::EMPTY, 8),
        batches: slots(BatchSlot::EMPTY, 4),
        tasks: slots(Task::EMPTY, 64),
        task_entries: slots(TaskEntry::EMPTY, 64),
        batch_entries: slots(BatchEntry::EMPTY, 4),
        segments: slots(SegmentEntry::EMPTY, 4),
    };
    let mut ep = Endpoint::new(cfg, parts).expect("endpoint");
    ep.register_batch(&[Region::new(LOCAL, 4 * LEN, Location::Cpu, Perm::LOCAL_ONLY)])
        .expect("register");
    ep
}

fn read(segment: SegmentId, i: u64) -> Request {
    Request {
        op: Op::Read,
        local: LOCAL + i * LEN,
        segment,
        remote: REMOTE + i * LEN,
        len: LEN,
    }
}

/// A peer: an accepting link over a registry that exposes `REMOTE`.
struct Peer {
    link: Link,
    reg: Registry<Vec<Entry>>,
}

impl Peer {
    fn new(name: &str) -> Peer {
        let mut reg = Registry::new(vec![Entry::EMPTY; 4]);
        reg.register(Region::new(
            REMOTE,
            4 * LEN,
            Location::Cpu,
            Perm::REMOTE_READ_WRITE,
        ))
        .expect("peer region");
        let link = Link::accept(LinkConfig::new(name).expect("cfg"), Instant::ZERO, [2; 32]).expect("accept");
        Peer { link, reg }
    }
}

fn connect() -> Link {
    Link::connect(LinkConfig::new("me:1").expect("cfg"), Instant::ZERO, [1; 32]).expect("connect")
}

/// Carries bytes both ways until neither side has anything to say, and
/// hands every event of `ours` to the endpoint.
fn shuttle(ep: &mut Ep, seg: SegmentId, ours: &mut Link, peer: &mut Peer) {
    shuttle_with(ep, seg, ours, peer, &mut ());
}

/// As [`shuttle`], feeding with `shell`.
fn shuttle_with(ep: &mut Ep, seg: SegmentId, ours: &mut Link, peer: &mut Peer, shell: &mut dyn Feed) {
    let now = Instant::ZERO;
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    loop {
        let mut moved = false;
        ep.feed(seg, ours, shell);
        while let Some(t) = ours.poll_transmit(now, &mut buf, ep.registry()) {
            moved = true;
            assert_eq!(peer.link.handle_input(now, &buf[..t.len], &mut peer.reg), t.len);
            if let Some(span) = t.payload {
                assert!(matches!(peer.link.poll_payload(), Some(PayloadDest::Memory(_))));
                peer.link.payload_landed(now, span.len, &mut peer.reg);
                ours.payload_sent(ep.registry_mut());
            }
        }
        while let Some(t) = peer.link.poll_transmit(now, &mut buf, &peer.reg) {
            moved = true;
            assert_eq!(ours.handle_input(now, &buf[..t.len], ep.registry_mut()), t.len);
            if let Some(span) = t.payload {
                assert!(matches!(ours.poll_payload(), Some(PayloadDest::Memory(_))));
                ours.payload_landed(now, span.len, ep.registry_mut());
                peer.link.payload_sent(&mut peer.reg);
            }
        }
        while let Some(e) = ours.poll_event() {
            moved = true;
            ep.handle_link_event(Some(seg), e);
        }
        while peer.link.poll_event().is_some() {}
        if !moved {
            return;
        }
    }
}

fn events(ep: &mut Ep) -> Vec<Event> {
    std::iter::from_fn(|| ep.poll_event()).collect()
}

/// The `BatchEnded` events among the endpoint's events.
fn batch_ends(ep: &mut Ep) -> Vec<Event> {
    events(ep)
        .into_iter()
        .filter(|e| matches!(e, Event::BatchEnded { .. }))
        .collect()
}

#[test]
fn a_submission_with_one_bad_request_submits_nothing_and_pins_nothing() {
    let mut ep = endpoint(4);
    let seg = ep.open_segment("peer:1").expect("open");
    let batch = ep.alloc_batch(4).expect("batch");
    let mut bad = read(seg, 1);
    bad.local = 0x9999_0000;
    let e = ep
        .submit(Instant::ZERO, batch, &[read(seg, 0), bad], None)
        .expect_err("unregistered local memory");
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
    assert!(e.message().starts_with("request 1:"), "{e}");
    let unknown = read(SegmentId(3), 0);
    let e = ep
        .submit(Instant::ZERO, batch, &[unknown], None)
        .expect_err("unknown segment");
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
    assert_eq!(ep.tasks_in_flight(), 0);
    assert_eq!(ep.batch_status(batch).expect("status").total, 0);
    assert_eq!(events(&mut ep), []);
    // Nothing pins the region: it goes at once.
    let r = ep.unregister(Location::Cpu, LOCAL).expect("unregister");
    assert!(matches!(r, te_proto::Unregister::Removed(_)), "{r:?}");
}

#[test]
fn a_task_still_queued_at_its_deadline_ends_timeout_naming_its_segment() {
    let mut ep = endpoint(4);
    let seg = ep.open_segment("slow-peer:7").expect("open");
    let batch = ep.alloc_batch(2).expect("batch");
    ep.submit(Instant::ZERO, batch, &[read(seg, 0), read(seg, 1)], None)
        .expect("submit");
    assert_eq!(
        events(&mut ep),
        [Event::Service(seg)],
        "one service event per segment"
    );
    let deadline = ep.poll_timeout().expect("deadline");
    assert_eq!(deadline, Instant::ZERO + Duration::from_secs(1));
    ep.handle_timeout(Instant::from_nanos(deadline.as_nanos() - 1));
    assert_eq!(ep.tasks_in_flight(), 2, "nothing ends before its deadline");
    ep.handle_timeout(deadline);
    assert_eq!(
        events(&mut ep),
        [Event::BatchEnded {
            batch,
            state: TaskState::Timeout,
            note: NoteOutcome::None
        }]
    );
    let e = ep.batch_error(batch).expect("first failure");
    assert_eq!(e.code(), ErrorCode::Timeout);
    assert!(
        e.message().contains("task 0") && e.message().contains("slow-peer:7"),
        "{e}"
    );
    assert_eq!(ep.poll_timeout(), None);
    assert_eq!(ep.tasks_in_flight(), 0);
}

#[test]
fn a_completed_batch_to_two_segments_sends_its_notification_to_both() {
    let mut ep = endpoint(1);
    let (s0, s1) = (
        ep.open_segment("a:1").expect("open"),
        ep.open_segment("b:2").expect("open"),
    );
    let (mut l0, mut l1) = (connect(), connect());
    let (mut p0, mut p1) = (Peer::new("a:1"), Peer::new("b:2"));
    let batch = ep.alloc_batch(3).expect("batch");
    let reqs = [read(s0, 0), read(s1, 1), read(s0, 2)];
    ep.submit_with_notify(Instant::ZERO, batch, &reqs, None)
        .expect("submit");
    // Each segment's room holds that one notification now.
    for s in [s0, s1] {
        let e = ep
            .reserve_note(s)
            .expect_err("room taken by the batch's notification");
        assert_eq!(e.code(), ErrorCode::NotReady, "{e}");
    }
    let e = ep
        .submit(Instant::ZERO, batch, &[read(s1, 3)], None)
        .expect_err("a batch with a notification takes no later submission");
    assert_eq!(e.code(), ErrorCode::Invalid, "{e}");
    shuttle(&mut ep, s0, &mut l0, &mut p0);
    assert_eq!(ep.batch_status(batch).expect("status").state, TaskState::Pending);
    shuttle(&mut ep, s1, &mut l1, &mut p1);
    let ended = batch_ends(&mut ep);
    assert_eq!(
        ended,
        [Event::BatchEnded {
            batch,
            state: TaskState::Completed,
            note: NoteOutcome::Send
        }]
    );
    let mut to = Vec::new();
    ep.batch_segments(batch, |s| to.push(s)).expect("segments");
    assert_eq!(to, [s0, s1], "each segment once");
    for s in to {
        ep.note_sent(s);
        ep.reserve_note(s).expect("room again once it was sent");
    }
    assert_eq!(ep.tasks_in_flight(), 0);
}

#[test]
fn a_batch_whose_link_closes_drops_its_notification_and_gives_the_room_back() {
    let mut ep = endpoint(1);
    let seg = ep.open_segment("a:1").expect("open");
    let batch = ep.alloc_batch(1).expect("batch");
    ep.submit_with_notify(Instant::ZERO, batch, &[read(seg, 0)], None)
        .expect("submit");
    ep.link_closed(seg, 0);
    let ended = events(&mut ep).pop();
    assert_eq!(
        ended,
        Some(Event::BatchEnded {
            batch,
            state: TaskState::Failed(ErrorCode::Disconnected),
            note: NoteOutcome::Dropped
        })
    );
    assert_eq!(
        ep.segment_error(seg).map(|e| e.code()),
        Some(ErrorCode::Disconnected)
    );
    ep.reserve_note(seg)
        .expect("the dropped notification holds no room");
}

#[test]
fn cancel_ends_a_queued_task_at_once_and_leaves_one_on_a_link_to_the_link() {
    let mut ep = endpoint(4);
    let seg = ep.open_segment("a:1").expect("open");
    let batch = ep.alloc_batch(2).expect("batch");
    ep.submit(Instant::ZERO, batch, &[read(seg, 0), read(seg, 1)], None)
        .expect("submit");
    let mut link = connect();
    // The second is canceled while queued; only the first goes to the link.
    let second = TaskId { batch, index: 1 };
    assert_eq!(ep.cancel_task(second).expect("cancel"), Cancel::Ended);
    assert_eq!(ep.task_status(second).expect("status").state, TaskState::Canceled);
    assert_eq!(ep.feed(seg, &mut link, &mut ()), 1);
    let first = TaskId { batch, index: 0 };
    let on_link = ep.cancel_task(first).expect("cancel");
    assert!(
        matches!(on_link, Cancel::OnLink { segment, .. } if segment == seg),
        "{on_link:?}"
    );
    assert_eq!(ep.task_status(first).expect("status").state, TaskState::Pending);
    assert_eq!(ep.tasks_in_flight(), 1);
}

#[test]
fn a_held_batch_waits_in_the_queue_while_others_pass_it_and_goes_when_released() {
    let mut ep = endpoint(4);
    let seg = ep.open_segment("a:1").expect("open");
    let held = ep.alloc_batch(2).expect("batch");
    let other = ep.alloc_batch(1).expect("batch");
    ep.hold(held).expect("hold");
    ep.submit(Instant::ZERO, held, &[read(seg, 0), read(seg, 1)], None)
        .expect("submit");
    ep.submit(Instant::ZERO, other, &[read(seg, 2)], None)
        .expect("submit");
    assert_eq!(events(&mut ep), [Event::Service(seg)]);
    let mut link = connect();
    assert_eq!(
        ep.feed(seg, &mut link, &mut ()),
        1,
        "only the batch behind the held one goes to the link"
    );
    assert_eq!(ep.feed(seg, &mut link, &mut ()), 0, "the held tasks stay queued");
    assert_eq!(ep.tasks_in_flight(), 3);
    ep.release(held, Ok(())).expect("release");
    assert_eq!(
        events(&mut ep),
        [Event::Service(seg)],
        "its segment is served again"
    );
    assert_eq!(ep.feed(seg, &mut link, &mut ()), 2);
    ep.release(held, Ok(()))
        .expect("releasing a batch not held changes nothing");
    assert_eq!(events(&mut ep), []);
}

#[test]
fn a_held_batch_released_with_an_error_ends_its_queued_tasks_with_it() {
    let mut ep = endpoint(4);
    let seg = ep.open_segment("a:1").expect("open");
    let batch = ep.alloc_batch(2).expect("batch");
    ep.hold(batch).expect("hold");
    ep.submit(Instant::ZERO, batch, &[read(seg, 0), read(seg, 1)], None)
        .expect("submit");
    let why = te_proto::status!(RuntimeError, "the stream failed before the fence");
    ep.release(batch, Err(why)).expect("release");
    assert_eq!(ep.tasks_in_flight(), 0);
    let e = ep.batch_error(batch).expect("first failure");
    assert_eq!(e.code(), ErrorCode::RuntimeError);
    assert!(e.message().contains("the stream failed before the fence"), "{e}");
    let ended = batch_ends(&mut ep);
    assert_eq!(ended.len(), 1, "{ended:?}");
    let mut link = connect();
    assert_eq!(ep.feed(seg, &mut link, &mut ()), 0, "nothing is left to go");
    let r = ep.unregister(Location::Cpu, LOCAL).expect("unregister");
    assert!(
        matches!(r, te_proto::Unregister::Removed(_)),
        "the failed tasks unpinned: {r:?}"
    );
}

#[test]
fn a_held_batch_ends_timeout_at_its_deadline_and_a_freed_one_is_held_no_more() {
    let mut ep = endpoint(4);
    let seg = ep.open_segment("stalled-stream:1").expect("open");
    let batch = ep.alloc_batch(1).expect("batch");
    ep.hold(batch).expect("hold");
    ep.submit(Instant::ZERO, batch, &[read(seg, 0)], None)
        .expect("submit");
    let deadline = ep.poll_timeout().expect("a held task keeps its deadline");
    ep.handle_timeout(deadline);
    let ended = batch_ends(&mut ep);
    assert_eq!(
        ended,
        [Event::BatchEnded {
            batch,
            state: TaskState::Timeout,
            note: NoteOutcome::None
        }]
    );
    ep.free_batch(batch).expect("free");
    let again = ep.alloc_batch(1).expect("batch");
    ep.submit(Instant::ZERO, again, &[read(seg, 0)], None)
        .expect("submit");
    let mut link = connect();
    assert_eq!(
        ep.feed(seg, &mut link, &mut ()),
        1,
        "a new batch in the slot is not held"
    );
    let stale = ep.hold(batch).expect_err("a freed batch");
    assert_eq!(stale.code(), ErrorCode::Invalid, "{stale}");
}

#[test]
fn after_finalize_begins_nothing_new_starts_and_queued_tasks_can_be_failed() {
    let mut ep = endpoint(4);
    let seg = ep.open_segment("a:1").expect("open");
    let batch = ep.alloc_batch(1).expect("batch");
    ep.submit(Instant::ZERO, batch, &[read(seg, 0)], None)
        .expect("submit");
    ep.begin_finalize();
    let region = Region::new(0x90_0000, 4096, Location::Cpu, Perm::LOCAL_ONLY);
    let refused = [
        ep.register_batch(&[region]).map(|_| ()),
        ep.unregister(Location::Cpu, LOCAL).map(|_| ()),
        ep.alloc_batch(1).map(|_| ()),
        ep.open_segment("b:2").map(|_| ()),
        ep.reserve_note(seg),
        ep.submit(Instant::ZERO, batch, &[read(seg, 1)], None),
    ];
    for r in refused {
        assert_eq!(r.expect_err("refused").code(), ErrorCode::NotReady);
    }
    assert!(
        ep.registry().region(Location::Cpu, LOCAL).is_some(),
        "the region stays"
    );
    ep.fail_queued(&te_proto::status!(Canceled, "engine finalized"));
    assert_eq!(
        ep.task_status(TaskId { batch, index: 0 }).expect("status").state,
        TaskState::Canceled
    );
    assert_eq!(ep.tasks_in_flight(), 0);
}

fn offers(same_host: bool, rdma: bool) -> Offers<'static> {
    Offers {
        same_host,
        rdma,
        ..Offers::default()
    }
}

#[test]
fn the_path_rule_takes_the_same_host_path_only_for_host_memory_on_a_link_that_has_it() {
    let (cpu, sim) = (Location::Cpu, Location::Sim(0));
    assert_eq!(Path::Auto.route(cpu, &offers(true, false)), Ok(Route::SameHost));
    assert_eq!(Path::Auto.route(cpu, &offers(false, false)), Ok(Route::Link));
    assert_eq!(Path::Auto.route(sim, &offers(true, false)), Ok(Route::Link));
    let keyed = Offers {
        keyed: true,
        ..offers(true, false)
    };
    assert_eq!(Path::Auto.route(sim, &keyed), Ok(Route::SameHost));
    assert_eq!(Path::Tcp.route(cpu, &offers(true, true)), Ok(Route::Link));
    assert_eq!(Path::Shm.route(cpu, &offers(true, false)), Ok(Route::SameHost));
    let other_host = Offers {
        same_host_refusal: Some("peer is on another host"),
        ..offers(false, false)
    };
    let e = Path::Shm.route(cpu, &other_host).expect_err("no path");
    assert_eq!(e.code(), ErrorCode::NotSupported);
    assert!(e.message().contains("peer is on another host"), "{e}");
    let e = Path::Shm
        .route(sim, &offers(true, false))
        .expect_err("device memory");
    assert!(e.message().contains("sim:0"), "{e}");
}

#[test]
fn the_path_rule_prefers_the_same_host_path_then_rdma_then_tcp() {
    let (cpu, sim) = (Location::Cpu, Location::Sim(0));
    assert_eq!(
        Path::Auto.route(cpu, &offers(true, true)),
        Ok(Route::SameHost),
        "on one host a copy beats a trip through the NIC"
    );
    assert_eq!(Path::Auto.route(cpu, &offers(false, true)), Ok(Route::Rdma));
    assert_eq!(
        Path::Auto.route(sim, &offers(false, true)),
        Ok(Route::Link),
        "device memory is not registered with the NIC"
    );
    assert_eq!(Path::Rdma.route(cpu, &offers(true, true)), Ok(Route::Rdma));
    assert_eq!(Path::Shm.route(cpu, &offers(true, true)), Ok(Route::SameHost));
    let refused = Offers {
        rdma_refusal: Some(RdmaOff::NoCommonFabric.as_str()),
        ..offers(true, false)
    };
    assert_eq!(Path::Auto.route(cpu, &refused), Ok(Route::SameHost));
    let e = Path::Rdma.route(cpu, &refused).expect_err("no RDMA");
    assert_eq!(e.code(), ErrorCode::NotSupported);
    assert!(e.message().contains("no common RDMA fabric"), "{e}");
    let e = Path::Rdma
        .route(cpu, &offers(false, false))
        .expect_err("no offer");
    assert!(e.message().contains("peer did not offer it"), "{e}");
    let e = Path::Rdma
        .route(sim, &offers(false, true))
        .expect_err("device memory");
    assert_eq!(e.code(), ErrorCode::NotSupported);
    assert!(e.message().contains("sim:0"), "{e}");
}

#[test]
fn paths_parse_and_print_by_name() {
    for p in [Path::Auto, Path::Tcp, Path::Shm, Path::Rdma] {
        assert_eq!(p.to_string().parse::<Path>(), Ok(p));
    }
    let e = "ib".parse::<Path>().expect_err("unknown path");
    assert_eq!(e.code(), ErrorCode::Invalid);
    assert!(e.message().contains("rdma"), "{e}");
}

/// A shell whose NIC registered every local region under lkey 0x55.
struct Nic;

impl Feed for Nic {
    fn rdma_lkey(&mut self, _pin: te_proto::PinKey) -> Option<u32> {
        Some(0x55)
    }
}

/// A link pair with RDMA connected, the peer announcing the first two
/// blocks of `REMOTE` (read-write) under rkey 0xbeef.
fn rdma_pair(ep: &mut Ep, seg: SegmentId) -> (Link, Peer) {
    let qp = |qpn| ConnInfo {
        qpn,
        psn: 1,
        gid: [0xfe; 16],
        lid: 0,
        mtu: 5,
    };
    let mut cfg = LinkConfig::new("me:1").expect("cfg");
    cfg.caps |= Caps::RDMA;
    let mut ours = Link::connect(cfg, Instant::ZERO, [1; 32]).expect("connect");
    let mut peer = Peer::new("peer:1");
    let mut pcfg = LinkConfig::new("peer:1").expect("cfg");
    pcfg.caps |= Caps::RDMA;
    peer.link = Link::accept(pcfg, Instant::ZERO, [2; 32]).expect("accept");
    shuttle(ep, seg, &mut ours, &mut peer);
    ours.offer_rdma(&[qp(1)]).expect("offer");
    shuttle(ep, seg, &mut ours, &mut peer);
    peer.link.answer_rdma(Ok(&[qp(2)])).expect("answer");
    let key = RdmaKey {
        id: 1,
        base: REMOTE,
        len: 2 * LEN,
        rkey: 0xbeef,
        perm: Perm::REMOTE_READ_WRITE,
    };
    peer.link.rdma_mut().announce_key(key).expect("announce");
    shuttle(ep, seg, &mut ours, &mut peer);
    ours.rdma_mut().set_available(true);
    assert!(ours.rdma().available());
    (ours, peer)
}

#[test]
fn auto_sends_tasks_on_announced_regions_over_rdma_and_the_rest_over_tcp() {
    let mut ep = endpoint(4);
    let seg = ep.open_segment("peer:1").expect("segment");
    let (mut ours, mut peer) = rdma_pair(&mut ep, seg);
    let batch = ep.alloc_batch(3).expect("batch");
    let reqs = [read(seg, 0), read(seg, 1), read(seg, 2)];
    ep.submit(Instant::ZERO, batch, &reqs, None).expect("submit");
    shuttle_with(&mut ep, seg, &mut ours, &mut peer, &mut Nic);
    let mut posted = Vec::new();
    while let Some(w) = ours.rdma_mut().next_post() {
        assert_eq!((w.lkey, w.rkey), (0x55, 0xbeef));
        posted.push(w.task.index);
    }
    assert_eq!(posted, [0, 1], "the two blocks the peer announced");
    let third = ep.task_status(TaskId { batch, index: 2 }).expect("status");
    assert_eq!(
        third.state,
        TaskState::Completed,
        "the block beyond them went over TCP"
    );
    assert!(batch_ends(&mut ep).is_empty(), "the RDMA tasks still run");
    for index in [0, 1] {
        assert!(ours.rdma_mut().done(TaskId { batch, index }, Ok(())));
    }
    shuttle_with(&mut ep, seg, &mut ours, &mut peer, &mut Nic);
    assert_eq!(
        batch_ends(&mut ep),
        [Event::BatchEnded {
            batch,
            state: TaskState::Completed,
            note: NoteOutcome::None
        }]
    );
    // Forced onto RDMA, a block beyond the announced ones fails naming why.
    let forced = ep.alloc_batch(1).expect("batch");
    ep.submit(Instant::ZERO, forced, &[read(seg, 3)], Some(Path::Rdma))
        .expect("submit");
    shuttle_with(&mut ep, seg, &mut ours, &mut peer, &mut Nic);
    assert_eq!(ours.rdma_mut().next_post(), None);
    let why = ep.batch_error(forced).expect("failed");
    assert_eq!(why.code(), ErrorCode::NotFound, "{why}");
    assert!(why.message().contains("announced for RDMA"), "{why}");
    // Without the NIC's lkey (the shell did not register the region), TCP.
    let plain = ep.alloc_batch(1).expect("batch");
    ep.submit(Instant::ZERO, plain, &[read(seg, 0)], None)
        .expect("submit");
    shuttle(&mut ep, seg, &mut ours, &mut peer);
    assert_eq!(ours.rdma_mut().next_post(), None);
    assert_eq!(
        ep.batch_status(plain).expect("status").state,
        TaskState::Completed
    );
}

#[test]
fn a_task_forced_onto_rdma_after_the_path_was_lost_ends_disconnected_and_auto_goes_over_tcp() {
    let mut ep = endpoint(4);
    let seg = ep.open_segment("peer:1").expect("segment");
    let (mut ours, mut peer) = rdma_pair(&mut ep, seg);
    let lost = te_proto::status!(Disconnected, "completion queue failed: peer vanished");
    ours.rdma_mut().set_lost(lost);
    assert!(!ours.rdma().available());
    assert_eq!(
        ours.rdma().lost().map(|s| s.code()),
        Some(ErrorCode::Disconnected)
    );
    // A lost path stays off.
    ours.rdma_mut().set_available(true);
    assert!(!ours.rdma().available());
    let forced = ep.alloc_batch(1).expect("batch");
    ep.submit(Instant::ZERO, forced, &[read(seg, 0)], Some(Path::Rdma))
        .expect("submit");
    shuttle_with(&mut ep, seg, &mut ours, &mut peer, &mut Nic);
    assert_eq!(ours.rdma_mut().next_post(), None);
    let why = ep.batch_error(forced).expect("failed");
    assert_eq!(why.code(), ErrorCode::Disconnected, "{why}");
    assert!(
        why.message().contains("RDMA path lost: completion queue failed"),
        "{why}"
    );
    // Auto: the same block, announced for RDMA, goes over TCP.
    let auto = ep.alloc_batch(1).expect("batch");
    ep.submit(Instant::ZERO, auto, &[read(seg, 0)], None)
        .expect("submit");
    shuttle_with(&mut ep, seg, &mut ours, &mut peer, &mut Nic);
    assert_eq!(ours.rdma_mut().next_post(), None);
    assert_eq!(ep.batch_status(auto).expect("status").state, TaskState::Completed);
}
