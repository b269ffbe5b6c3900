//! Every frame type survives encode and an incremental decode, fed in
//! random pieces, unchanged.

use proptest::prelude::*;
use te_proto::wire::{
    encode_info_reply, Decoder, Frame, Hello, LocalMap, Progress, INFO_PAGE_MAX, MAX_CONTROL_LEN,
    NOTIFY_MSG_MAX,
};
use te_proto::{ErrorCode, Location, Perm, Region};

/// Owned inputs from which a frame is built.
#[derive(Clone, Debug)]
enum Owned {
    Hello {
        ack: bool,
        caps: u32,
        max_payload: u32,
        max_outstanding: u32,
        auth: u8,
        id: [u8; 32],
        nonce: [u8; 32],
        mac: [u8; 32],
        name: String,
    },
    Auth([u8; 32]),
    ReadReq(u64, u64, Option<Location>, u32),
    ReadData(u64, u32),
    WriteData(u64, u64, Option<Location>, u32),
    WriteAck(u64),
    Error(u64, ErrorCode, String),
    Notify(String, Vec<u8>),
    InfoReq(u64, Option<(Location, u64)>),
    InfoReply(u64, Vec<Region>),
    Ping(u64),
    Pong(u64),
    Goodbye(ErrorCode),
    LocalMap(LocalMap),
}

fn location() -> impl Strategy<Value = Location> {
    prop_oneof![
        Just(Location::Cpu),
        any::<u16>().prop_map(Location::Sim),
        any::<u16>().prop_map(Location::Npu)
    ]
}

fn code() -> impl Strategy<Value = ErrorCode> {
    proptest::sample::select(&ErrorCode::ALL[1..])
}

fn region() -> impl Strategy<Value = Region> {
    (1u64..u64::MAX / 2, 1u64..u64::MAX / 2, location(), 1u8..4)
        .prop_map(|(base, len, loc, perm)| Region::new(base, len, loc, Perm::from_bits_truncate(perm)))
}

fn owned() -> impl Strategy<Value = Owned> {
    let bytes32 = any::<[u8; 32]>();
    prop_oneof![
        (
            any::<bool>(),
            any::<u32>(),
            4096u32..=16 << 20,
            1u32..,
            0u8..2,
            bytes32,
            bytes32,
            bytes32,
            "[a-z0-9:.]{1,255}"
        )
            .prop_map(
                |(ack, caps, max_payload, max_outstanding, auth, id, nonce, mac, name)| Owned::Hello {
                    ack,
                    caps,
                    max_payload,
                    max_outstanding,
                    auth,
                    id,
                    nonce,
                    mac: if ack && auth == 1 { mac } else { [0; 32] },
                    name
                }
            ),
        any::<[u8; 32]>().prop_map(Owned::Auth),
        (
            any::<u64>(),
            any::<u64>(),
            proptest::option::of(location()),
            1u32..
        )
            .prop_map(|(a, b, c, d)| Owned::ReadReq(a, b, c, d)),
        (any::<u64>(), 1u32..=1 << 20).prop_map(|(a, b)| Owned::ReadData(a, b)),
        (
            any::<u64>(),
            any::<u64>(),
            proptest::option::of(location()),
            1u32..=1 << 20
        )
            .prop_map(|(a, b, c, d)| Owned::WriteData(a, b, c, d)),
        any::<u64>().prop_map(Owned::WriteAck),
        (any::<u64>(), code(), "\\PC{0,40}").prop_map(|(a, b, c)| Owned::Error(a, b, c)),
        (
            "\\PC{1,16}",
            proptest::collection::vec(any::<u8>(), 0..=NOTIFY_MSG_MAX)
        )
            .prop_map(|(n, m)| Owned::Notify(n, m)),
        (any::<u64>(), proptest::option::of((location(), any::<u64>())))
            .prop_map(|(a, b)| Owned::InfoReq(a, b)),
        (
            any::<u64>(),
            proptest::collection::vec(region(), 0..=INFO_PAGE_MAX + 3)
        )
            .prop_map(|(a, b)| Owned::InfoReply(a, b)),
        any::<u64>().prop_map(Owned::Ping),
        any::<u64>().prop_map(Owned::Pong),
        proptest::sample::select(&ErrorCode::ALL[..]).prop_map(Owned::Goodbye),
        (any::<u64>(), 1u64.., any::<u64>(), any::<u32>()).prop_map(|(id, base, len, fd)| {
            // A withdrawal when the range would wrap or be empty.
            Owned::LocalMap(match base.checked_add(len) {
                Some(_) if len > 0 => LocalMap { id, base, len, fd },
                _ => LocalMap::withdraw(id),
            })
        }),
    ]
}

/// Encodes `o` into `buf`; returns the length.
fn encode(o: &Owned, buf: &mut [u8]) -> usize {
    let f = match o {
        Owned::Hello {
            ack,
            caps,
            max_payload,
            max_outstanding,
            auth,
            id,
            nonce,
            mac,
            name,
        } => {
            let h = Hello {
                caps: *caps,
                max_payload: *max_payload,
                max_outstanding: *max_outstanding,
                auth: *auth,
                host_id: *id,
                nonce: *nonce,
                mac: *mac,
                name,
            };
            if *ack {
                Frame::HelloAck(h)
            } else {
                Frame::Hello(h)
            }
        }
        Owned::Auth(mac) => Frame::Auth { mac: *mac },
        &Owned::ReadReq(req_id, addr, location, len) => Frame::ReadReq {
            req_id,
            addr,
            location,
            len,
        },
        &Owned::ReadData(req_id, len) => Frame::ReadData { req_id, len },
        &Owned::WriteData(req_id, addr, location, len) => Frame::WriteData {
            req_id,
            addr,
            location,
            len,
        },
        &Owned::WriteAck(req_id) => Frame::WriteAck { req_id },
        Owned::Error(req_id, code, msg) => Frame::Error {
            req_id: *req_id,
            code: *code,
            msg,
        },
        Owned::Notify(name, msg) => Frame::Notify { name, msg },
        &Owned::InfoReq(req_id, after) => Frame::InfoReq { req_id, after },
        Owned::InfoReply(req_id, regions) => {
            return encode_info_reply(buf, *req_id, regions.iter().copied())
                .unwrap()
                .0;
        }
        &Owned::Ping(token) => Frame::Ping { token },
        &Owned::Pong(token) => Frame::Pong { token },
        &Owned::Goodbye(code) => Frame::Goodbye { code },
        &Owned::LocalMap(m) => Frame::LocalMap(m),
    };
    f.encode(buf).unwrap()
}

/// Checks the decoded frame against what was encoded.
fn check(o: &Owned, f: &Frame<'_>) {
    match (o, f) {
        (
            Owned::Hello {
                ack,
                caps,
                max_payload,
                max_outstanding,
                auth,
                id,
                nonce,
                mac,
                name,
            },
            Frame::Hello(h) | Frame::HelloAck(h),
        ) => {
            assert_eq!(*ack, matches!(f, Frame::HelloAck(_)));
            assert_eq!(
                (h.caps, h.max_payload, h.max_outstanding, h.auth),
                (*caps, *max_payload, *max_outstanding, *auth)
            );
            assert_eq!(
                (&h.host_id, &h.nonce, &h.mac, h.name),
                (id, nonce, mac, name.as_str())
            );
        }
        (Owned::Auth(m), Frame::Auth { mac }) => assert_eq!(m, mac),
        (
            &Owned::ReadReq(a, b, c, d),
            &Frame::ReadReq {
                req_id,
                addr,
                location,
                len,
            },
        ) => assert_eq!((a, b, c, d), (req_id, addr, location, len)),
        (&Owned::ReadData(a, b), &Frame::ReadData { req_id, len }) => assert_eq!((a, b), (req_id, len)),
        (
            &Owned::WriteData(a, b, c, d),
            &Frame::WriteData {
                req_id,
                addr,
                location,
                len,
            },
        ) => assert_eq!((a, b, c, d), (req_id, addr, location, len)),
        (&Owned::WriteAck(a), &Frame::WriteAck { req_id }) => assert_eq!(a, req_id),
        (Owned::Error(a, b, c), Frame::Error { req_id, code, msg }) => {
            assert_eq!((*a, *b), (*req_id, *code));
            assert!(c.starts_with(msg) && msg.len() <= 120 && (msg.len() == c.len() || c.len() > 116));
        }
        (Owned::Notify(n, m), Frame::Notify { name, msg }) => {
            assert_eq!((n.as_str(), m.as_slice()), (*name, *msg))
        }
        (&Owned::InfoReq(a, b), &Frame::InfoReq { req_id, after }) => assert_eq!((a, b), (req_id, after)),
        (
            Owned::InfoReply(a, rs),
            Frame::InfoReply {
                req_id,
                more,
                regions,
            },
        ) => {
            assert_eq!(*a, *req_id);
            let page = rs.len().min(INFO_PAGE_MAX);
            assert_eq!(*more, rs.len() > INFO_PAGE_MAX);
            assert_eq!(regions.iter().collect::<Vec<_>>(), rs[..page]);
        }
        (&Owned::Ping(a), &Frame::Ping { token }) | (&Owned::Pong(a), &Frame::Pong { token }) => {
            assert_eq!(a, token)
        }
        (&Owned::Goodbye(a), &Frame::Goodbye { code }) => assert_eq!(a, code),
        (&Owned::LocalMap(a), &Frame::LocalMap(m)) => assert_eq!(a, m),
        (o, f) => panic!("{o:?} decoded as {f:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_frame_round_trips_through_the_incremental_decoder(
        frames in proptest::collection::vec(owned(), 1..6),
        pieces in proptest::collection::vec(1usize..64, 1..32),
    ) {
        let mut stream = Vec::new();
        for o in &frames {
            let mut buf = vec![0u8; MAX_CONTROL_LEN];
            let n = encode(o, &mut buf);
            stream.extend_from_slice(&buf[..n]);
        }
        let mut d = Decoder::new(16 << 20);
        let mut at = 0;
        let mut k = 0;
        let mut decoded = 0;
        while decoded < frames.len() {
            match d.progress() {
                Progress::Frame => {
                    let f = d.frame().unwrap().unwrap();
                    check(&frames[decoded], &f);
                    decoded += 1;
                    d.next();
                    // Payload frames are encoded without payload here: skip it.
                    if let Progress::Payload(n) = d.progress() {
                        d.payload_consumed(n);
                    }
                }
                _ => {
                    let end = (at + pieces[k % pieces.len()]).min(stream.len());
                    k += 1;
                    at += d.feed(&stream[at..end]).unwrap();
                }
            }
        }
        prop_assert_eq!(at, stream.len());
    }
}
