//! Segment-info paging driven by the link, against a scripted peer that
//! answers each `InfoReq` with the page the test chooses.

use te_proto::link::{Event, Link, LinkConfig, LinkState, SegmentPage};
use te_proto::wire::{encode_info_reply, Decoder, Frame, Hello, Progress, AUTH_NONE, MAX_CONTROL_LEN};
use te_proto::{Entry, ErrorCode, Instant, Location, Perm, Region, Registry, Result};

type Key = Option<(Location, u64)>;

/// A connected link with a scripted peer on the other end.
struct Scripted {
    link: Link,
    reg: Registry<[Entry; 4]>,
    now: Instant,
    /// Decodes what the link sends.
    out: Decoder,
    /// Frames the link sent, in order, as `(opcode name, request id, cursor)`
    /// for the queries and `(opcode name, 0, None)` for the rest.
    sent: Vec<(String, u64, Key)>,
}

impl Scripted {
    fn connected() -> Scripted {
        let now = Instant::from_nanos(1_000_000);
        let cfg = LinkConfig::new("a:1").unwrap();
        let mut s = Scripted {
            link: Link::connect(cfg, now, [1; 32]).unwrap(),
            reg: Registry::new([Entry::EMPTY; 4]),
            now,
            out: Decoder::new(16 << 20),
            sent: Vec::new(),
        };
        s.flush();
        let ack = Frame::HelloAck(Hello {
            caps: 0,
            max_payload: 1 << 20,
            max_outstanding: 32,
            auth: AUTH_NONE,
            host_id: [0; 32],
            nonce: [2; 32],
            mac: [0; 32],
            name: "b:2",
        });
        s.feed_frame(&ack);
        assert_eq!(s.events(), vec![Event::Connected]);
        assert_eq!(s.link.state(), LinkState::Established);
        s.sent.clear();
        s
    }

    /// Takes every transmit of the link and records its frames.
    fn flush(&mut self) {
        let mut buf = vec![0u8; MAX_CONTROL_LEN];
        while let Some(t) = self.link.poll_transmit(self.now, &mut buf, &self.reg) {
            assert!(t.payload.is_none());
            let mut bytes = &buf[..t.len];
            while !bytes.is_empty() {
                let n = self.out.feed(bytes).unwrap();
                bytes = &bytes[n..];
                if self.out.progress() == Progress::Frame {
                    let f = self.out.frame().unwrap().unwrap();
                    let rec = match f {
                        Frame::InfoReq { req_id, after } => ("InfoReq".to_string(), req_id, after),
                        f => (format!("{:?}", f.opcode()), 0, None),
                    };
                    self.sent.push(rec);
                    self.out.next();
                }
            }
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        let used = self.link.handle_input(self.now, bytes, &mut self.reg);
        assert_eq!(used, bytes.len());
    }

    fn feed_frame(&mut self, f: &Frame<'_>) {
        let mut buf = vec![0u8; MAX_CONTROL_LEN];
        let n = f.encode(&mut buf).unwrap();
        self.feed(&buf[..n]);
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.link.poll_event()).collect()
    }

    /// The query the link sent last and has not been answered: its id and
    /// cursor.
    fn pending_query(&mut self) -> Option<(u64, Key)> {
        self.flush();
        let q = self.sent.iter().rev().find(|f| f.0 == "InfoReq")?;
        Some((q.1, q.2))
    }

    /// Answers query `req_id` with these regions (the page's "more" flag is
    /// set when there are more than a page holds).
    fn answer(&mut self, req_id: u64, regions: impl Iterator<Item = Region>) {
        let mut buf = vec![0u8; MAX_CONTROL_LEN];
        let (n, _) = encode_info_reply(&mut buf, req_id, regions).unwrap();
        self.sent.retain(|f| f.1 != req_id);
        self.feed(&buf[..n]);
    }

    /// Takes the page an event announced.
    fn take_page(&mut self) -> Option<Result<SegmentPage>> {
        let events = self.events();
        assert!(events.len() <= 2, "{events:?}");
        if !events.contains(&Event::SegmentInfo) {
            return None;
        }
        self.link.take_segment_info()
    }
}

/// Remote-readable regions of 0x800 bytes, 0x1000 apart, from `first`.
fn regions_from(first: u64) -> impl Iterator<Item = Region> {
    (0u64..).map(move |i| Region::new(first + i * 0x1000, 0x800, Location::Cpu, Perm::REMOTE_READ))
}

/// The first key after `after` on the peer's side, 0x1000 apart from 0x1000.
fn first_after(after: Key) -> u64 {
    after.map_or(0x1000, |(_, base)| base + 0x1000)
}

#[test]
fn a_peer_that_always_answers_more_stops_at_the_cap() {
    let mut s = Scripted::connected();
    s.link.query_segment_info(1000).unwrap();
    let mut got = 0;
    let mut pages = Vec::new();
    while let Some((req_id, after)) = s.pending_query() {
        // An endless listing: every page is full and says more follow.
        s.answer(req_id, regions_from(first_after(after)));
        let page = s.take_page().expect("a page per answer").unwrap();
        got += page.regions.len();
        pages.push((page.regions.len(), page.more, page.truncated));
        assert!(pages.len() <= 8, "the link kept asking: {pages:?}");
    }
    assert_eq!(got, 1000);
    assert_eq!(pages.len(), 8);
    assert!(pages[..7].iter().all(|p| *p == (128, true, false)), "{pages:?}");
    assert_eq!(pages[7], (1000 - 7 * 128, false, true));
    assert!(!s.link.wants_transmit(), "no query after the cap");
    assert_eq!(s.link.state(), LinkState::Established);
    // The query is over: a new one may start.
    s.link.query_segment_info(1).unwrap();
}

#[test]
fn a_page_that_does_not_start_after_the_key_is_refused() {
    let mut s = Scripted::connected();
    s.link.query_segment_info(usize::MAX).unwrap();
    let (req_id, after) = s.pending_query().unwrap();
    assert_eq!(after, None);
    s.answer(req_id, regions_from(0x1000));
    let page = s.take_page().unwrap().unwrap();
    assert!(page.more);
    let last = page.regions.last().unwrap().span.addr;
    let (req_id, after) = s.pending_query().unwrap();
    assert_eq!(after, Some((Location::Cpu, last)));
    // The peer starts the next page at the cursor itself.
    s.answer(req_id, regions_from(last).take(3));
    let err = s.link.take_segment_info().expect("the query ended").unwrap_err();
    assert_eq!(err.code(), ErrorCode::Invalid);
    assert!(err.message().contains(&format!("{last:#x}")), "{err}");
    // A protocol violation: the link closes and tells the peer.
    assert_eq!(s.link.state(), LinkState::Closed);
    s.flush();
    assert_eq!(s.sent.last().map(|f| f.0.as_str()), Some("Error"));
    assert!(matches!(s.events().last(), Some(Event::Closed(st)) if st.code() == ErrorCode::Invalid));
    assert_eq!(s.link.take_segment_info(), None);
}

#[test]
fn a_page_out_of_order_is_refused() {
    let mut s = Scripted::connected();
    s.link.query_segment_info(usize::MAX).unwrap();
    let (req_id, _) = s.pending_query().unwrap();
    let shuffled = [0x3000u64, 0x2000]
        .into_iter()
        .map(|b| Region::new(b, 0x800, Location::Cpu, Perm::REMOTE_READ));
    s.answer(req_id, shuffled);
    let err = s.take_page().expect("the query ended").unwrap_err();
    assert_eq!(err.code(), ErrorCode::Invalid);
    assert!(err.message().contains("0x2000"), "{err}");
    assert_eq!(s.link.state(), LinkState::Closed);
}

#[test]
fn a_page_that_says_more_but_lists_nothing_is_refused() {
    let mut s = Scripted::connected();
    s.link.query_segment_info(usize::MAX).unwrap();
    let (req_id, _) = s.pending_query().unwrap();
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    let (n, _) = encode_info_reply(&mut buf, req_id, regions_from(0x1000).take(129)).unwrap();
    // Rewrite the page as empty, keeping its "more" flag: count 0, body 16.
    buf[8..12].copy_from_slice(&16u32.to_be_bytes());
    buf[24..28].copy_from_slice(&0u32.to_be_bytes());
    assert!(n > 32);
    s.feed(&buf[..32]);
    let err = s.take_page().expect("the query ended").unwrap_err();
    assert_eq!(err.code(), ErrorCode::Invalid);
    assert_eq!(s.link.state(), LinkState::Closed);
}

#[test]
fn paging_across_short_pages_yields_every_region_once_in_order() {
    let mut s = Scripted::connected();
    s.link.query_segment_info(usize::MAX).unwrap();
    let all: Vec<Region> = regions_from(0x1000).take(10).collect();
    let mut listed = Vec::new();
    let mut pages = 0;
    while let Some((req_id, after)) = s.pending_query() {
        // Pages of 3, flagged "more" by hand while regions remain.
        let rest: Vec<Region> = all
            .iter()
            .copied()
            .filter(|r| after.is_none_or(|a| (r.span.location, r.span.addr) > a))
            .collect();
        let page = &rest[..rest.len().min(3)];
        let mut buf = vec![0u8; MAX_CONTROL_LEN];
        let (n, _) = encode_info_reply(&mut buf, req_id, page.iter().copied()).unwrap();
        if rest.len() > 3 {
            buf[4..6].copy_from_slice(&te_proto::wire::FLAG_MORE.to_be_bytes());
        }
        s.sent.retain(|f| f.1 != req_id);
        s.feed(&buf[..n]);
        let got = s.take_page().expect("a page").unwrap();
        assert_eq!(got.more, rest.len() > 3);
        assert!(!got.truncated);
        listed.extend(got.regions.iter().copied());
        pages += 1;
    }
    assert_eq!(pages, 4);
    assert_eq!(listed, all);
}

#[test]
fn a_query_refused_by_the_peer_ends_with_its_error() {
    let mut s = Scripted::connected();
    s.link.query_segment_info(5).unwrap();
    let (req_id, _) = s.pending_query().unwrap();
    s.feed_frame(&Frame::Error {
        req_id,
        code: ErrorCode::NotReady,
        msg: "busy",
    });
    let err = s.take_page().expect("the query ended").unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotReady);
    assert_eq!(s.link.state(), LinkState::Established);
    assert_eq!(
        s.link.query_segment_info(0).unwrap_err().code(),
        ErrorCode::Invalid
    );
    s.link.query_segment_info(5).unwrap();
}

#[test]
fn a_link_closed_between_pages_ends_the_query_with_the_reason() {
    let mut s = Scripted::connected();
    s.link.query_segment_info(usize::MAX).unwrap();
    let (req_id, _) = s.pending_query().unwrap();
    s.answer(req_id, regions_from(0x1000));
    assert_eq!(s.events(), vec![Event::SegmentInfo]);
    s.link.close(&mut s.reg);
    // The listing cannot be completed: the page waiting gives way to the
    // reason, and nothing is announced after the close.
    let err = s.link.take_segment_info().unwrap().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Canceled);
    assert!(matches!(s.events()[..], [Event::Closed(_)]));
    assert_eq!(s.link.take_segment_info(), None);
}
