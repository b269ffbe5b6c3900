//! One test per validation rule of the header, the bodies and the decoder.

use std::string::String;
use std::vec;
use std::vec::Vec;
use zerocopy::IntoBytes;

use super::*;
use crate::error::ErrorCode;
use crate::location::Location;
use crate::region::Perm;

fn hello<'a>(name: &'a str) -> Hello<'a> {
    Hello {
        caps: 0,
        max_payload: 1 << 20,
        max_outstanding: 8,
        auth: AUTH_NONE,
        host_id: [3; 32],
        nonce: [4; 32],
        mac: [0; 32],
        name,
    }
}

fn encode(f: &Frame<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    let n = f.encode(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// Feeds `bytes` and returns the first error, or the decoded frame's opcode.
fn decode(bytes: &[u8]) -> Result<Opcode, WireError> {
    let mut d = Decoder::new(1 << 20);
    let used = d.feed(bytes)?;
    assert_eq!(
        d.progress(),
        Progress::Frame,
        "decoder wants more after {used} bytes"
    );
    let op = d.frame().unwrap()?.opcode();
    Ok(op)
}

fn with_header(mut bytes: Vec<u8>, edit: impl FnOnce(&mut Header)) -> Vec<u8> {
    let mut h = Header::read_from_bytes(&bytes[..HEADER_LEN]).unwrap();
    edit(&mut h);
    bytes[..HEADER_LEN].copy_from_slice(h.as_bytes());
    bytes
}

use zerocopy::FromBytes;

fn ping() -> Vec<u8> {
    encode(&Frame::Ping { token: 9 })
}

#[test]
fn bad_magic_is_rejected() {
    let b = with_header(ping(), |h| h.magic = *b"XX");
    assert_eq!(decode(&b), Err(WireError::BadMagic(*b"XX")));
}

#[test]
fn unknown_version_is_not_supported() {
    for v in [VERSION - 1, VERSION + 1] {
        let b = with_header(ping(), |h| h.version = v);
        let e = decode(&b).unwrap_err();
        assert_eq!(e, WireError::UnsupportedVersion(v));
        assert_eq!(e.code(), ErrorCode::NotSupported);
    }
}

#[test]
fn unknown_opcode_is_rejected() {
    for op in [0u8, 24, 255] {
        let b = with_header(ping(), |h| h.opcode = op);
        assert_eq!(decode(&b), Err(WireError::UnknownOpcode(op)));
    }
}

#[test]
fn undefined_flag_bits_are_rejected() {
    let b = with_header(ping(), |h| h.flags.set(FLAG_MORE));
    assert!(matches!(
        decode(&b),
        Err(WireError::ReservedBits { field: "flags", .. })
    ));
}

#[test]
fn header_reserved_field_is_rejected() {
    let b = with_header(ping(), |h| h.reserved.set(1));
    assert!(matches!(
        decode(&b),
        Err(WireError::ReservedBits {
            field: "header reserved",
            ..
        })
    ));
}

#[test]
fn body_over_the_limit_is_rejected_before_it_is_read() {
    let b = with_header(encode(&Frame::Notify { name: "n", msg: b"m" }), |h| {
        h.body_len.set(MAX_BODY as u32 + 1)
    });
    let mut d = Decoder::new(1 << 20);
    // Only the header is read; the oversized body is refused at once.
    assert!(matches!(
        d.feed(&b[..HEADER_LEN]),
        Err(WireError::BodyLength { .. })
    ));
}

#[test]
fn body_length_must_fit_the_fixed_layout() {
    let b = with_header(ping(), |h| h.body_len.set(9));
    assert!(matches!(
        decode(&[b, vec![0]].concat()),
        Err(WireError::BodyLength {
            opcode: Opcode::Ping,
            len: 9
        })
    ));
    let short = with_header(
        encode(&Frame::Error {
            req_id: 1,
            code: ErrorCode::Invalid,
            msg: "",
        }),
        |h| h.body_len.set(15),
    );
    assert!(matches!(decode(&short), Err(WireError::BodyLength { .. })));
}

#[test]
fn payload_on_a_control_frame_is_rejected() {
    let b = with_header(ping(), |h| h.payload_len.set(1));
    assert!(matches!(
        decode(&b),
        Err(WireError::PayloadLength {
            opcode: Opcode::Ping,
            len: 1,
            max: 0
        })
    ));
}

#[test]
fn payload_over_the_limit_is_rejected() {
    let b = encode(&Frame::WriteData {
        req_id: 1,
        addr: 64,
        location: None,
        len: (1 << 20) + 1,
    });
    assert!(matches!(decode(&b), Err(WireError::PayloadLength { len, .. }) if len == (1 << 20) + 1));
}

#[test]
fn empty_payload_on_a_data_frame_is_rejected() {
    let b = encode(&Frame::ReadData { req_id: 1, len: 0 });
    assert!(matches!(
        decode(&b),
        Err(WireError::PayloadLength {
            opcode: Opcode::ReadData,
            len: 0,
            ..
        })
    ));
}

#[test]
fn segment_name_length_is_checked() {
    let long: String = "n".repeat(SEGMENT_NAME_MAX + 1);
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    assert!(Frame::Hello(hello(&long)).encode(&mut buf).is_err());
    assert!(Frame::Hello(hello("")).encode(&mut buf).is_err());
    // A name_len that disagrees with the body.
    let mut b = encode(&Frame::Hello(hello("abc")));
    b[HEADER_LEN + 16] = 0;
    b[HEADER_LEN + 17] = 4;
    assert!(matches!(
        decode(&b),
        Err(WireError::FieldLength {
            field: "segment name length",
            ..
        })
    ));
}

#[test]
fn segment_name_must_be_utf8() {
    let mut b = encode(&Frame::Hello(hello("abc")));
    let last = b.len() - 1;
    b[last] = 0xff;
    assert!(matches!(
        decode(&b),
        Err(WireError::NotUtf8 {
            field: "segment name",
            ..
        })
    ));
}

#[test]
fn hello_limits_are_checked() {
    for (field, edit) in
        [("max payload", 4usize..8, 4095u32), ("max outstanding", 8..12, 0)].map(|(f, r, v)| (f, (r, v)))
    {
        let mut b = encode(&Frame::Hello(hello("abc")));
        b[HEADER_LEN + edit.0.start..HEADER_LEN + edit.0.end].copy_from_slice(&edit.1.to_be_bytes());
        assert!(
            matches!(decode(&b), Err(WireError::BadValue { field: f, .. }) if f == field),
            "{field}"
        );
    }
}

#[test]
fn unknown_auth_mode_is_rejected() {
    let mut b = encode(&Frame::Hello(hello("abc")));
    b[HEADER_LEN + 12] = 2;
    assert!(matches!(
        decode(&b),
        Err(WireError::BadValue {
            field: "auth mode",
            ..
        })
    ));
}

#[test]
fn hello_mac_must_be_zero_unless_an_ack_proves_the_secret() {
    let mut h = hello("abc");
    h.mac = [1; 32];
    assert!(matches!(
        decode(&encode(&Frame::Hello(h))),
        Err(WireError::ReservedBits { .. })
    ));
    assert!(matches!(
        decode(&encode(&Frame::HelloAck(h))),
        Err(WireError::ReservedBits { .. })
    ));
    h.auth = AUTH_HMAC_SHA256;
    assert_eq!(decode(&encode(&Frame::HelloAck(h))), Ok(Opcode::HelloAck));
}

#[test]
fn unknown_location_is_rejected() {
    let mut b = encode(&Frame::ReadReq {
        req_id: 1,
        addr: 64,
        location: Some(Location::Npu(1)),
        len: 8,
    });
    b[HEADER_LEN + 16..HEADER_LEN + 20].copy_from_slice(&0x0009_0000u32.to_be_bytes());
    assert!(matches!(
        decode(&b),
        Err(WireError::BadValue {
            field: "location",
            ..
        })
    ));
}

#[test]
fn zero_length_read_is_rejected() {
    let b = encode(&Frame::ReadReq {
        req_id: 1,
        addr: 64,
        location: None,
        len: 0,
    });
    assert!(matches!(
        decode(&b),
        Err(WireError::BadValue { field: "length", .. })
    ));
}

fn local(op: Opcode, len: u32, peer_addr: u64) -> Frame<'static> {
    let a = LocalAccess {
        req_id: 7,
        addr: 0x1000,
        location: Some(Location::Cpu),
        len,
        peer_addr,
        peer_device: false,
    };
    Frame::local(op == Opcode::LocalRead, a)
}

/// Decodes one frame and hands it to `check`.
fn decode_with(bytes: &[u8], check: impl FnOnce(Frame<'_>)) {
    let mut d = Decoder::new(1 << 20);
    d.feed(bytes).unwrap();
    check(d.frame().unwrap().unwrap());
}

#[test]
fn same_host_frames_round_trip() {
    for op in [Opcode::LocalRead, Opcode::LocalWrite] {
        let f = local(op, 4096, 0x7f00_0000);
        let b = encode(&f);
        assert_eq!(b.len(), HEADER_LEN + 32);
        decode_with(&b, |g| assert_eq!(g, f));
    }
    let f = Frame::PidChallenge {
        token: [9; 32],
        socket: b"te-pid-1",
    };
    decode_with(&encode(&f), |g| assert_eq!(g, f));
}

#[test]
fn same_host_copy_length_and_peer_range_are_checked() {
    for op in [Opcode::LocalRead, Opcode::LocalWrite] {
        let zero = encode(&local(op, 0, 0x7f00_0000));
        assert!(matches!(
            decode(&zero),
            Err(WireError::BadValue { field: "length", .. })
        ));
        for peer in [0, u64::MAX - 8] {
            let b = encode(&local(op, 64, peer));
            assert!(matches!(
                decode(&b),
                Err(WireError::BadValue {
                    field: "peer address",
                    ..
                })
            ));
        }
        // A body of the wrong size is refused by the header rule.
        let b = with_header(encode(&local(op, 64, 0x1000)), |h| h.body_len.set(24));
        assert!(matches!(decode(&b), Err(WireError::BodyLength { .. })));
    }
}

#[test]
fn pid_challenge_socket_name_length_is_checked() {
    let long = [b's'; PID_SOCKET_MAX + 1];
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    for socket in [&b""[..], &long[..]] {
        let f = Frame::PidChallenge {
            token: [1; 32],
            socket,
        };
        assert!(matches!(f.encode(&mut buf), Err(WireError::FieldLength { .. })));
    }
    // Forge the frames the encoder refuses: the decoder refuses them too.
    let ok = encode(&Frame::PidChallenge {
        token: [1; 32],
        socket: b"x",
    });
    let empty = with_header(ok[..HEADER_LEN + 32].to_vec(), |h| h.body_len.set(32));
    assert!(matches!(decode(&empty), Err(WireError::FieldLength { .. })));
    let mut too_long = ok[..HEADER_LEN + 32].to_vec();
    too_long.extend_from_slice(&long);
    let too_long = with_header(too_long, |h| h.body_len.set(32 + long.len() as u32));
    assert!(matches!(decode(&too_long), Err(WireError::FieldLength { .. })));
}

#[test]
fn error_frame_code_must_be_a_known_failure() {
    let b = encode(&Frame::Error {
        req_id: 1,
        code: ErrorCode::Ok,
        msg: "x",
    });
    assert!(matches!(
        decode(&b),
        Err(WireError::BadValue {
            field: "error code",
            value: 0,
            ..
        })
    ));
    let mut b = encode(&Frame::Error {
        req_id: 1,
        code: ErrorCode::Invalid,
        msg: "x",
    });
    b[HEADER_LEN + 8..HEADER_LEN + 12].copy_from_slice(&77u32.to_be_bytes());
    assert!(matches!(
        decode(&b),
        Err(WireError::BadValue {
            field: "error code",
            value: 77,
            ..
        })
    ));
}

#[test]
fn notify_limits_are_checked() {
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    let long_name = "n".repeat(NOTIFY_NAME_MAX + 1);
    assert!(Frame::Notify {
        name: &long_name,
        msg: b""
    }
    .encode(&mut buf)
    .is_err());
    assert!(Frame::Notify {
        name: "n",
        msg: &[0; NOTIFY_MSG_MAX + 1]
    }
    .encode(&mut buf)
    .is_err());
    let mut b = encode(&Frame::Notify {
        name: "n",
        msg: b"abc",
    });
    b[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&2u32.to_be_bytes());
    assert!(matches!(
        decode(&b),
        Err(WireError::FieldLength {
            field: "message length",
            ..
        })
    ));
}

#[test]
fn info_reply_entries_are_validated() {
    let regions = [crate::Region::new(
        0x1000,
        64,
        Location::Sim(2),
        crate::Perm::REMOTE_READ,
    )];
    let mut buf = vec![0u8; MAX_CONTROL_LEN];
    let (n, last) = encode_info_reply(&mut buf, 7, regions.iter().copied()).unwrap();
    assert_eq!(last, Some((Location::Sim(2), 0x1000)));
    let good = buf[..n].to_vec();
    assert_eq!(decode(&good), Ok(Opcode::InfoReply));
    let perm_at = HEADER_LEN + 16 + 20;
    let mut bad = good.clone();
    bad[perm_at] = 0;
    assert!(matches!(
        decode(&bad),
        Err(WireError::BadValue {
            field: "region perm",
            ..
        })
    ));
    let mut bad = good.clone();
    bad[HEADER_LEN + 11] = 2; // count 2, one entry
    assert!(matches!(
        decode(&bad),
        Err(WireError::FieldLength {
            field: "region count",
            ..
        })
    ));
}

#[test]
fn decoder_is_poisoned_after_an_error() {
    let mut d = Decoder::new(1 << 20);
    let bad = with_header(ping(), |h| h.magic = *b"XX");
    assert!(d.feed(&bad).is_err());
    assert!(d.feed(&ping()).is_err());
    assert!(d.error().is_some());
}

#[test]
fn decoder_takes_one_byte_at_a_time_and_stops_at_frame_boundaries() {
    let two = [ping(), encode(&Frame::Pong { token: 3 })].concat();
    let mut d = Decoder::new(1 << 20);
    let mut seen = Vec::new();
    let mut at = 0;
    while at < two.len() {
        at += d.feed(&two[at..at + 1]).unwrap();
        if d.progress() == Progress::Frame {
            seen.push(d.frame().unwrap().unwrap().opcode());
            d.next();
        }
    }
    assert_eq!(seen, [Opcode::Ping, Opcode::Pong]);
    // A frame in the buffer is not overrun by the next one.
    let mut d = Decoder::new(1 << 20);
    assert_eq!(d.feed(&two).unwrap(), ping().len());
    assert_eq!(d.feed(&two[ping().len()..]).unwrap(), 0);
}

#[test]
fn payload_bytes_bypass_the_decoder() {
    let b = encode(&Frame::ReadData { req_id: 1, len: 10 });
    let mut d = Decoder::new(1 << 20);
    assert_eq!(d.feed(&b).unwrap(), b.len());
    d.next();
    assert_eq!(d.progress(), Progress::Payload(10));
    assert_eq!(d.feed(&[0; 4]).unwrap(), 0);
    d.payload_consumed(4);
    assert_eq!(d.progress(), Progress::Payload(6));
    d.payload_consumed(100);
    assert_eq!(d.progress(), Progress::NeedMore);
}

#[test]
fn encode_reports_a_small_buffer() {
    let mut buf = [0u8; 20];
    assert!(matches!(
        Frame::Hello(hello("abc")).encode(&mut buf),
        Err(WireError::BufferTooSmall { have: 20, .. })
    ));
    let mut tiny = [0u8; 4];
    assert!(Frame::Ping { token: 1 }.encode(&mut tiny).is_err());
}

fn map(id: u64, base: u64, len: u64, fd: u32) -> Vec<u8> {
    encode(&Frame::LocalMap(LocalMap { id, base, len, fd }))
}

#[test]
fn local_map_frames_round_trip() {
    for m in [
        LocalMap {
            id: 0x1122_3344_5566_7788,
            base: 0x7f00_0000_1000,
            len: 1 << 30,
            fd: 41,
        },
        LocalMap::withdraw(9),
    ] {
        let b = encode(&Frame::LocalMap(m));
        assert_eq!(b.len(), HEADER_LEN + 32);
        // Big-endian, in field order: id, base, len, fd, reserved.
        assert_eq!(&b[HEADER_LEN..HEADER_LEN + 8], &m.id.to_be_bytes());
        assert_eq!(&b[HEADER_LEN + 24..HEADER_LEN + 28], &m.fd.to_be_bytes());
        decode_with(&b, |g| assert_eq!(g, Frame::LocalMap(m)));
    }
}

#[test]
fn local_map_fields_are_checked() {
    let bad_value = |b: &[u8], want: &str| {
        assert!(
            matches!(decode(b), Err(WireError::BadValue { field, .. }) if field == want),
            "{:?}, wanted {want}",
            decode(b)
        );
    };
    bad_value(&map(1, 0, 16, 3), "mapped range");
    bad_value(&map(1, u64::MAX - 8, 16, 3), "mapped range");
    bad_value(&map(1, 0x1000, 0, 0), "withdrawn base");
    bad_value(&map(1, 0, 0, 3), "withdrawn fd");
    // The largest range that does not wrap is fine.
    assert_eq!(decode(&map(1, 1, u64::MAX - 1, 0)), Ok(Opcode::LocalMap));
    let mut b = map(1, 0x1000, 16, 3);
    b[HEADER_LEN + 31] = 1;
    assert!(matches!(
        decode(&b),
        Err(WireError::ReservedBits {
            field: "map reserved",
            ..
        })
    ));
    let b = with_header(map(1, 0x1000, 16, 3), |h| h.body_len.set(24));
    assert!(matches!(decode(&b), Err(WireError::BodyLength { .. })));
    let b = with_header(map(1, 0x1000, 16, 3), |h| h.flags.set(FLAG_MORE));
    assert!(matches!(decode(&b), Err(WireError::ReservedBits { .. })));
}

fn key(id: u64, base: u64, len: u64, location: Location, k: &[u8]) -> LocalKey {
    LocalKey {
        id,
        base,
        len,
        location,
        key: crate::driver::IpcKey::new(k).ok(),
    }
}

#[test]
fn local_key_frames_round_trip_and_carry_the_device_flag() {
    for k in [
        key(
            0x55,
            0x7e00_0000_0000_1000,
            1 << 20,
            Location::Npu(3),
            b"tefakeacl-1-3-1000-100000-7",
        ),
        key(1, 1, u64::MAX - 1, Location::Sim(0), &[b'k'; 64]),
        LocalKey::withdraw(0x55),
    ] {
        let b = encode(&Frame::LocalKey(k));
        assert_eq!(b.len(), HEADER_LEN + 96);
        assert_eq!(&b[HEADER_LEN..HEADER_LEN + 8], &k.id.to_be_bytes());
        decode_with(&b, |g| assert_eq!(g, Frame::LocalKey(k)));
    }
    let b = encode(&Frame::KeyClosed { id: 0x55 });
    assert_eq!(b.len(), HEADER_LEN + 8);
    assert_eq!(b[3], 21, "opcode");
    decode_with(&b, |g| assert_eq!(g, Frame::KeyClosed { id: 0x55 }));
    let a = LocalAccess {
        req_id: 3,
        addr: 0x1000,
        location: None,
        len: 8,
        peer_addr: 0x7e00_0000_0000_0000,
        peer_device: true,
    };
    let b = encode(&Frame::LocalWrite(a));
    assert_eq!(&b[4..6], &FLAG_PEER_DEVICE.to_be_bytes(), "the header flags");
    decode_with(&b, |g| assert_eq!(g, Frame::LocalWrite(a)));
}

#[test]
fn local_key_fields_are_checked() {
    let bad = |k: LocalKey| {
        let mut b = encode(&Frame::LocalKey(LocalKey::withdraw(1)));
        // Hand-written body: the encoder refuses what the decoder must.
        let body = &mut b[HEADER_LEN..];
        body[..8].copy_from_slice(&k.id.to_be_bytes());
        body[8..16].copy_from_slice(&k.base.to_be_bytes());
        body[16..24].copy_from_slice(&k.len.to_be_bytes());
        body[24..28].copy_from_slice(&k.location.to_wire().to_be_bytes());
        let bytes = k.key.as_ref().map_or(&[][..], |k| k.as_bytes());
        body[28..30].copy_from_slice(&(bytes.len() as u16).to_be_bytes());
        body[32..32 + bytes.len()].copy_from_slice(bytes);
        b
    };
    let field = |b: &[u8]| match decode(b) {
        Err(WireError::BadValue { field, .. } | WireError::ReservedBits { field, .. }) => field,
        other => panic!("decoded {other:?}"),
    };
    let good = key(2, 0x1000, 64, Location::Npu(0), b"k");
    assert_eq!(field(&bad(LocalKey { base: 0, ..good })), "imported range");
    assert_eq!(
        field(&bad(LocalKey {
            base: u64::MAX,
            ..good
        })),
        "imported range"
    );
    assert_eq!(
        field(&bad(LocalKey {
            location: Location::Cpu,
            ..good
        })),
        "key location"
    );
    assert_eq!(field(&bad(LocalKey { key: None, ..good })), "key length");
    assert_eq!(
        field(&bad(LocalKey {
            len: 0,
            key: None,
            ..good
        })),
        "withdrawn base"
    );
    let mut b = bad(good);
    b[HEADER_LEN + 32] = 0; // a NUL inside the key
    assert_eq!(field(&b), "key byte");
    let mut b = bad(good);
    b[HEADER_LEN + 40] = 1; // past the key's length
    assert_eq!(field(&b), "key padding");
    let mut b = bad(good);
    b[HEADER_LEN + 31] = 1;
    assert_eq!(field(&b), "key reserved");
    let mut b = bad(good);
    b[HEADER_LEN + 28..HEADER_LEN + 30].copy_from_slice(&65u16.to_be_bytes());
    assert!(matches!(
        decode(&b),
        Err(WireError::FieldLength {
            field: "key length",
            ..
        })
    ));
    let b = with_header(bad(good), |h| h.flags.set(FLAG_PEER_DEVICE));
    assert!(matches!(
        decode(&b),
        Err(WireError::ReservedBits { field: "flags", .. })
    ));
    // The encoder refuses a key announcement without its key.
    assert!(Frame::LocalKey(LocalKey { key: None, ..good })
        .encode(&mut [0u8; 256])
        .is_err());
}

#[test]
fn rdma_key_frames_round_trip_and_their_fields_are_checked() {
    let good = RdmaKey {
        id: 7,
        base: 0x7f00_0000_1000,
        len: 1 << 20,
        rkey: 0xdead_beef,
        perm: Perm::REMOTE_READ,
    };
    for k in [good, RdmaKey::withdraw(7)] {
        let b = encode(&Frame::RdmaKey(k));
        assert_eq!(b.len(), HEADER_LEN + 32);
        assert_eq!(b[3], 22, "opcode");
        assert_eq!(&b[HEADER_LEN + 24..HEADER_LEN + 28], &k.rkey.to_be_bytes());
        decode_with(&b, |g| assert_eq!(g, Frame::RdmaKey(k)));
    }
    let b = encode(&Frame::RdmaKeyClosed { id: 7 });
    assert_eq!((b.len(), b[3]), (HEADER_LEN + 8, 23));
    decode_with(&b, |g| assert_eq!(g, Frame::RdmaKeyClosed { id: 7 }));
    // Hand-written bodies: the encoder refuses what the decoder must.
    let bad = |k: RdmaKey, perm_word: u32| {
        let mut b = encode(&Frame::RdmaKey(good));
        let body = &mut b[HEADER_LEN..];
        body[8..16].copy_from_slice(&k.base.to_be_bytes());
        body[16..24].copy_from_slice(&k.len.to_be_bytes());
        body[24..28].copy_from_slice(&k.rkey.to_be_bytes());
        body[28..32].copy_from_slice(&perm_word.to_be_bytes());
        b
    };
    let field = |b: &[u8]| match decode(b) {
        Err(WireError::BadValue { field, .. } | WireError::ReservedBits { field, .. }) => field,
        other => panic!("decoded {other:?}"),
    };
    assert_eq!(field(&bad(RdmaKey { base: 0, ..good }, 1)), "registered range");
    assert_eq!(
        field(&bad(
            RdmaKey {
                base: u64::MAX,
                ..good
            },
            1
        )),
        "registered range"
    );
    assert_eq!(field(&bad(good, 0)), "rdma permission");
    assert_eq!(field(&bad(good, 4)), "rdma key permission");
    assert_eq!(field(&bad(good, 0x100)), "rdma key permission");
    let withdrawn = RdmaKey { len: 0, ..good };
    assert_eq!(field(&bad(withdrawn, 1)), "withdrawn base");
    assert_eq!(
        field(&bad(RdmaKey { base: 0, ..withdrawn }, 1)),
        "withdrawn rkey or permission"
    );
    assert!(Frame::RdmaKey(RdmaKey {
        perm: Perm::LOCAL_ONLY,
        ..good
    })
    .encode(&mut [0u8; 256])
    .is_err());
}
