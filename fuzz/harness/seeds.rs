//! The seed corpora: meaningful starting points for both targets, written to
//! `fuzz/corpus/{decoder,link}/seed-*` by the ignored test
//! `write_seed_corpus` of `te-proto/tests/fuzz_corpus.rs`:
//!
//! ```text
//! cargo test -p te-proto --test fuzz_corpus -- --ignored write_seed_corpus
//! ```
//!
//! The test `seed_corpus_is_current` fails when the committed seeds differ
//! from what this file generates (after a wire change, say).

use te_proto::driver::IpcKey;
use te_proto::link::MAX_LOCAL_MAPS;
use te_proto::rdma::{ConnInfo, Conns, RdmaOff};
use te_proto::wire::{
    encode_info_reply, Frame, Hello, LocalAccess, LocalKey, LocalMap, RdmaKey, RdmaMsg, AUTH_HMAC_SHA256,
    AUTH_NONE, HEADER_LEN, MAX_BODY, MAX_CONTROL_LEN, VERSION,
};
use te_proto::{ErrorCode, Location, Perm, Region};

use super::link::*;

/// A named seed.
pub type Seed = (String, Vec<u8>);

fn enc(frame: &Frame<'_>) -> Vec<u8> {
    let mut buf = [0u8; MAX_CONTROL_LEN];
    let n = frame
        .encode(&mut buf)
        .unwrap_or_else(|e| panic!("seed frame {frame:?}: {e}"));
    buf[..n].to_vec()
}

/// `frame` followed by its payload, if it has one.
fn with_payload(frame: &Frame<'_>) -> Vec<u8> {
    let mut v = enc(frame);
    if let Frame::ReadData { len, .. } | Frame::WriteData { len, .. } = *frame {
        v.extend((0..len).map(|i| i as u8));
    }
    v
}

fn hello(name: &str, auth: u8) -> Hello<'_> {
    Hello {
        caps: 3,
        max_payload: 1 << 20,
        max_outstanding: 32,
        auth,
        host_id: [1; 32],
        nonce: [2; 32],
        mac: [0; 32],
        name,
    }
}

fn info_reply(req_id: u64, count: u64) -> Vec<u8> {
    let mut buf = [0u8; MAX_CONTROL_LEN];
    let regions = (0..count).map(|i| {
        let perm = if i % 2 == 0 {
            Perm::REMOTE_READ_WRITE
        } else {
            Perm::REMOTE_READ
        };
        let region = Region::new(
            0x1000 * (i + 1),
            0x800,
            if i % 3 == 0 {
                Location::Cpu
            } else {
                Location::Npu(2)
            },
            perm,
        );
        (region, (i % 2 == 0).then_some(0x100 + i as u32))
    });
    let (n, _) = encode_info_reply(&mut buf, req_id, regions).expect("page fits");
    buf[..n].to_vec()
}

/// One valid frame of every opcode (data frames with their payload).
pub fn valid_frames() -> Vec<(&'static str, Vec<u8>)> {
    let mut ack = hello("acceptor", AUTH_HMAC_SHA256);
    ack.mac = [3; 32];
    vec![
        ("hello", enc(&Frame::Hello(hello("connector-segment", AUTH_NONE)))),
        ("hello-ack", enc(&Frame::HelloAck(ack))),
        ("auth", enc(&Frame::Auth { mac: [4; 32] })),
        (
            "read-req",
            enc(&Frame::ReadReq {
                req_id: 0x101,
                addr: 0x1_0000,
                location: None,
                len: 64,
            }),
        ),
        (
            "read-req-npu",
            enc(&Frame::ReadReq {
                req_id: 0x202,
                addr: 0x5_0000,
                location: Some(Location::Npu(1)),
                len: 4096,
            }),
        ),
        (
            "read-data",
            with_payload(&Frame::ReadData {
                req_id: 0x101,
                len: 64,
            }),
        ),
        (
            "write-data",
            with_payload(&Frame::WriteData {
                req_id: 0x303,
                addr: 0x2_0000,
                location: Some(Location::Cpu),
                len: 48,
            }),
        ),
        ("write-ack", enc(&Frame::WriteAck { req_id: 0x303 })),
        (
            "error",
            enc(&Frame::Error {
                req_id: 0x101,
                code: ErrorCode::NotAuthorized,
                msg: "range not registered",
            }),
        ),
        (
            "error-close",
            enc(&Frame::Error {
                req_id: 0,
                code: ErrorCode::Timeout,
                msg: "idle",
            }),
        ),
        (
            "notify",
            enc(&Frame::Notify {
                name: "kv-ready",
                msg: b"batch 7 done",
            }),
        ),
        (
            "info-req",
            enc(&Frame::InfoReq {
                req_id: 0x404,
                after: None,
            }),
        ),
        (
            "info-req-after",
            enc(&Frame::InfoReq {
                req_id: 0x505,
                after: Some((Location::Sim(3), 0x4000)),
            }),
        ),
        ("info-reply", info_reply(0x404, 3)),
        ("info-reply-full", info_reply(0x505, 130)),
        ("ping", enc(&Frame::Ping { token: 9 })),
        ("pong", enc(&Frame::Pong { token: 9 })),
        ("goodbye", enc(&Frame::Goodbye { code: ErrorCode::Ok })),
        (
            "pid-challenge",
            enc(&Frame::PidChallenge {
                token: [5; 32],
                socket: b"te-pid-1234",
            }),
        ),
        (
            "local-read",
            enc(&Frame::LocalRead(LocalAccess {
                req_id: 0x606,
                addr: 0x1_0000,
                location: Some(Location::Cpu),
                len: 64,
                peer_addr: 0x7000_0000,
                peer_device: false,
            })),
        ),
        (
            "local-write",
            enc(&Frame::LocalWrite(LocalAccess {
                req_id: 0x707,
                addr: 0x2_0000,
                location: None,
                len: 64,
                peer_addr: 0x7000_0000,
                peer_device: false,
            })),
        ),
        (
            "local-map",
            enc(&Frame::LocalMap(LocalMap {
                id: 0x808,
                base: 0x7000_0000,
                len: 1 << 20,
                fd: 12,
            })),
        ),
        ("local-unmap", enc(&Frame::LocalMap(LocalMap::withdraw(0x808)))),
        (
            "local-read-device",
            enc(&Frame::LocalRead(LocalAccess {
                req_id: 0x909,
                addr: 0x3_0000,
                location: Some(Location::Npu(0)),
                len: 64,
                peer_addr: 0x7e00_0000_0000_0000,
                peer_device: true,
            })),
        ),
        (
            "local-key",
            enc(&Frame::LocalKey(LocalKey {
                id: 0xa0a,
                base: 0x7e00_0000_0000_0000,
                len: 1 << 20,
                location: Location::Npu(1),
                key: IpcKey::new(b"tefakeacl-1234-1-0-100000-1").ok(),
            })),
        ),
        ("local-unkey", enc(&Frame::LocalKey(LocalKey::withdraw(0xa0a)))),
        ("key-closed", enc(&Frame::KeyClosed { id: 0xa0a })),
        ("rdma-offer", enc(&Frame::RdmaConn(RdmaMsg::Offer(rdma_qps(2))))),
        ("rdma-answer", enc(&Frame::RdmaConn(RdmaMsg::Answer(rdma_qps(4))))),
        (
            "rdma-off",
            enc(&Frame::RdmaConn(RdmaMsg::Off(RdmaOff::NoCommonFabric))),
        ),
        (
            "rdma-key",
            enc(&Frame::RdmaKey(RdmaKey {
                id: 3,
                base: 0x7f00_0000_0000,
                len: 1 << 20,
                rkey: 0xbeef,
                perm: Perm::REMOTE_READ_WRITE,
            })),
        ),
        ("rdma-unkey", enc(&Frame::RdmaKey(RdmaKey::withdraw(3)))),
        ("rdma-key-closed", enc(&Frame::RdmaKeyClosed { id: 3 })),
    ]
}

/// `n` (1 to 4) queue pairs, InfiniBand on one subnet.
fn rdma_qps(n: usize) -> Conns {
    let qps: Vec<ConnInfo> = (0..n as u32)
        .map(|i| ConnInfo {
            qpn: 0x100 + i,
            psn: 0x200 + i,
            gid: [0xfe; 16],
            lid: 1 + i as u16,
            mtu: 5,
        })
        .collect();
    Conns::new(&qps).expect("1 to 4 queue pairs")
}

fn patch(mut v: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    v[at..at + bytes.len()].copy_from_slice(bytes);
    v
}

/// Malformed variants of valid frames: each breaks one rule.
fn malformed() -> Vec<(&'static str, Vec<u8>)> {
    let ping = enc(&Frame::Ping { token: 1 });
    let hello_v = enc(&Frame::Hello(hello("seg", AUTH_NONE)));
    let read = enc(&Frame::ReadReq {
        req_id: 1,
        addr: 0x1000,
        location: None,
        len: 8,
    });
    let write = with_payload(&Frame::WriteData {
        req_id: 2,
        addr: 0x1000,
        location: None,
        len: 8,
    });
    let error = enc(&Frame::Error {
        req_id: 5,
        code: ErrorCode::Invalid,
        msg: "bad",
    });
    let notify = enc(&Frame::Notify { name: "n", msg: b"m" });
    let info = info_reply(6, 2);
    let offer = enc(&Frame::RdmaConn(RdmaMsg::Offer(rdma_qps(1))));
    let off = enc(&Frame::RdmaConn(RdmaMsg::Off(RdmaOff::NoDevice)));
    let h = HEADER_LEN;
    let body_len = |n: usize| (n as u32).to_be_bytes();
    vec![
        ("bad-magic", patch(ping.clone(), 0, b"XE")),
        ("bad-version", patch(ping.clone(), 2, &[VERSION + 1])),
        ("old-version", patch(ping.clone(), 2, &[VERSION - 1])),
        ("unknown-opcode-0", patch(ping.clone(), 3, &[0])),
        ("unknown-opcode-22", patch(ping.clone(), 3, &[22])),
        ("flags-set", patch(ping.clone(), 4, &[0, 1])),
        ("header-reserved-set", patch(ping.clone(), 6, &[0x80, 0])),
        ("body-too-long", patch(ping.clone(), 8, &body_len(MAX_BODY + 1))),
        ("body-wrong-fixed", patch(ping.clone(), 8, &body_len(9))),
        ("payload-on-ping", patch(ping.clone(), 12, &[0, 0, 0, 1])),
        ("payload-zero-write", patch(write.clone(), 12, &[0, 0, 0, 0])),
        (
            "payload-oversize-write",
            patch(write.clone(), 12, &[0x01, 0, 0, 1]),
        ),
        (
            "payload-max-write",
            patch(write.clone(), 12, &[0xff, 0xff, 0xff, 0xff]),
        ),
        ("write-len-field-set", patch(write, h + 20, &[0, 0, 0, 8])),
        ("read-len-zero", patch(read.clone(), h + 20, &[0, 0, 0, 0])),
        ("read-bad-location", patch(read.clone(), h + 16, &[0, 7, 0, 0])),
        ("read-cpu-index", patch(read, h + 16, &[0, 0, 0, 1])),
        ("hello-name-len", patch(hello_v.clone(), h + 16, &[0, 4])),
        ("hello-name-utf8", patch(hello_v.clone(), h + 116, &[0xff])),
        ("hello-mac-set", patch(hello_v.clone(), h + 84, &[1])),
        ("hello-reserved-set", patch(hello_v.clone(), h + 13, &[1])),
        ("hello-auth-mode", patch(hello_v.clone(), h + 12, &[2])),
        (
            "hello-max-payload-small",
            patch(hello_v.clone(), h + 4, &[0, 0, 0x0f, 0xff]),
        ),
        ("hello-outstanding-zero", patch(hello_v, h + 8, &[0, 0, 0, 0])),
        ("error-code-ok", patch(error.clone(), h + 8, &[0, 0, 0, 0])),
        ("error-code-unknown", patch(error.clone(), h + 8, &[0, 0, 0, 77])),
        ("error-msg-len", patch(error, h + 12, &[0, 9])),
        ("notify-empty-name", patch(notify.clone(), h, &[0, 0])),
        ("notify-msg-len", patch(notify, h + 4, &[0, 0, 0, 5])),
        ("info-count", patch(info.clone(), h + 8, &[0, 0, 0, 3])),
        ("info-perm", patch(info.clone(), h + 16 + 20, &[4])),
        ("info-zero-base", patch(info.clone(), h + 16, &[0; 8])),
        ("info-has-rkey-2", patch(info.clone(), h + 16 + 21, &[2])),
        (
            "info-rkey-without-flag",
            patch(info, h + 16 + 28 + 24, &[0, 0, 0, 9]),
        ),
        ("rdma-kind", patch(offer.clone(), h, &[4])),
        ("rdma-offer-reason", patch(offer.clone(), h + 1, &[1])),
        ("rdma-count", patch(offer.clone(), h + 2, &[2])),
        ("rdma-reserved", patch(offer.clone(), h + 3, &[1])),
        ("rdma-mtu", patch(offer.clone(), h + 4 + 26, &[6])),
        ("rdma-qpn", patch(offer, h + 4, &[1])),
        ("rdma-off-reason", patch(off.clone(), h + 1, &[9])),
        ("rdma-off-count", patch(off, h + 2, &[1])),
        (
            "goodbye-reserved",
            patch(enc(&Frame::Goodbye { code: ErrorCode::Ok }), h + 4, &[0, 0, 0, 1]),
        ),
        ("truncated-header", ping[..7].to_vec()),
        ("truncated-body", ping[..h + 3].to_vec()),
    ]
}

/// Seeds of the decoder target: `[mode, seed_hi, seed_lo] ++ stream`.
pub fn decoder_seeds() -> Vec<Seed> {
    let prefix = |mode: u8, seed: u16, stream: &[u8]| {
        let mut v = vec![mode, (seed >> 8) as u8, seed as u8];
        v.extend_from_slice(stream);
        v
    };
    let mut out = Vec::new();
    let mut all = Vec::new();
    for (name, bytes) in valid_frames() {
        out.push((format!("seed-valid-{name}"), prefix(2, 0, &bytes)));
        all.extend_from_slice(&bytes);
    }
    for (name, bytes) in malformed() {
        out.push((format!("seed-bad-{name}"), prefix(2, 0, &bytes)));
    }
    out.push(("seed-stream-whole".into(), prefix(2, 0, &all)));
    out.push(("seed-stream-pieces".into(), prefix(2, 0x1234, &all)));
    out.push(("seed-stream-small-limit".into(), prefix(0, 0xbeef, &all)));
    let big = with_payload(&Frame::WriteData {
        req_id: 7,
        addr: 0x9000,
        location: None,
        len: 20_000,
    });
    out.push(("seed-payload-over-limit".into(), prefix(0, 7, &big)));
    out.push(("seed-payload-under-limit".into(), prefix(1, 7, &big)));
    out.push((
        "seed-truncated-payload".into(),
        prefix(2, 3, &big[..HEADER_LEN + 24 + 100]),
    ));
    out
}

/// Seeds of the link target (scripts, see `link.rs`).
pub fn link_seeds() -> Vec<Seed> {
    const HS: u8 = F_HANDSHAKE;
    let mut out: Vec<(&str, Script)> = Vec::new();
    let drain = |s: Script| s.pump(0).transmit(0x0e).events(3);

    // Handshakes.
    out.push(("accept-handshake", drain(Script::new(HS))));
    let raw_hello = enc(&Frame::Hello(hello("raw-peer", AUTH_NONE)));
    out.push((
        "accept-handshake-raw",
        Script::new(0).raw(&raw_hello).pump(1).transmit(0x0e).events(3),
    ));
    out.push((
        "connect-handshake",
        Script::new(HS | F_CONNECTOR)
            .transmit(0)
            .pump(5)
            .transmit(0)
            .events(3),
    ));
    out.push(("accept-secret", drain(Script::new(HS | F_SECRET))));
    out.push((
        "connect-secret",
        drain(Script::new(HS | F_SECRET | F_CONNECTOR)).transmit(0),
    ));
    out.push((
        "accept-secret-bad-proof",
        drain(Script::new(F_SECRET).frame(K_HELLO, &[0]).frame(K_AUTH, &[1])),
    ));
    out.push((
        "accept-secret-refused",
        drain(Script::new(F_SECRET).frame(K_HELLO, &[1])),
    ));
    out.push((
        "connect-unexpected-hello",
        drain(Script::new(F_CONNECTOR).frame(K_HELLO, &[0])),
    ));
    out.push((
        "handshake-timeout",
        Script::new(0).time(200).transmit(0).events(3),
    ));

    // The peer's requests.
    let est = || drain(Script::new(HS));
    out.push((
        "peer-read",
        drain(est().access(K_READ_REQ, 0, 0x100, 0x200, 1, 1)),
    ));
    out.push((
        "peer-read-npu",
        drain(est().access(K_READ_REQ, 5, 0x800, 0x1000, 0, 2)),
    ));
    out.push((
        "peer-write",
        est()
            .access(K_WRITE_DATA, 0, 0x10, 0x300, 0, 2)
            .pump(7)
            .transmit(0x0e)
            .events(3),
    ));
    out.push((
        "peer-write-sim",
        drain(est().access(K_WRITE_DATA, 4, 0x0, 0x100, 1, 3)),
    ));
    out.push((
        "peer-denied",
        drain(
            est()
                .access(K_READ_REQ, 2, 0, 16, 0, 1)
                .access(K_WRITE_DATA, 1, 0, 16, 0, 2)
                .access(K_WRITE_DATA, 3, 0, 16, 0, 3)
                .access(K_READ_REQ, 0, 0x2f00, 0x200, 0, 4)
                .access(K_READ_REQ, 4, 0, 16, 0, 5)
                .access(K_READ_REQ, 6, 0x100, 16, 0, 6)
                .access(K_READ_REQ, 0, 0, 16, 3, 7),
        ),
    ));
    out.push((
        "peer-too-many",
        drain(
            drain(Script::new(HS | F_TIGHT))
                .access(K_READ_REQ, 0, 0, 16, 0, 1)
                .access(K_READ_REQ, 0, 16, 16, 0, 2)
                .access(K_READ_REQ, 0, 32, 16, 0, 3),
        ),
    ));
    out.push((
        "peer-local-refused",
        drain(
            est()
                .access(K_LOCAL, 0, 0x100, 0x200, 1, 2)
                .access(K_LOCAL, 0, 0x100, 0x200, 0, 3)
                .frame(K_PID_CHALLENGE, &[10]),
        ),
    ));
    out.push((
        "peer-local-served",
        drain(drain(
            drain(Script::new(HS | F_OFFER_LOCAL))
                .access(K_LOCAL, 0, 0x100, 0x200, 1, 2)
                .access(K_LOCAL, 0, 0x300, 0x200, 1, 3)
                .access(K_LOCAL, 1, 0, 16, 0, 5)
                .access(K_LOCAL, 0, 0x2f00, 0x200, 0, 6),
        )),
    ));
    out.push((
        "peer-local-unregister",
        drain(
            drain(Script::new(HS | F_OFFER_LOCAL))
                .access(K_LOCAL, 0, 0, 0x800, 1, 9)
                .pump(0)
                .toggle(0),
        )
        .toggle(0),
    ));
    // Mapped buffers, the peer's and the link's.
    let maps = || drain(Script::new(HS | F_MAPS));
    out.push((
        "peer-maps",
        drain(
            maps()
                .peer_map(0, 1, 0, 64)
                .peer_map(0, 2, 1, 64)
                .peer_map(0, 1, 0, 0)
                .peer_map(0, 3, 0, 32)
                .access(K_READ_REQ, 0, 0x100, 0x200, 1, 2),
        ),
    ));
    for (name, bad) in [
        ("peer-map-twice", [0u8, 1, 4, 1]),
        ("peer-map-overlap", [0, 2, 0, 80]),
        ("peer-map-unknown-withdraw", [0, 7, 0, 0]),
        ("peer-map-null", [1, 2, 9, 1]),
        ("peer-map-wraps", [2, 2, 9, 1]),
        ("peer-map-withdraw-fd", [4, 1, 0, 0]),
    ] {
        let s = maps().peer_map(0, 1, 0, 64);
        out.push((name, drain(s.peer_map(bad[0], bad[1], bad[2], bad[3]))));
    }
    out.push(("peer-map-not-offered", drain(est().peer_map(0, 1, 0, 64))));
    // The peer offers queue pairs, the link (the acceptor, with the RDMA
    // capability) answers with one, then the peer announces regions and
    // withdraws one: the link answers the withdrawal.
    let rdma = || drain(drain(maps().frame(K_RDMA, &[0, 1])).rdma(1));
    out.push((
        "rdma-keys",
        drain(
            rdma()
                .peer_rdma_key(0, 1, 0, 64)
                .peer_rdma_key(2, 2, 1, 64)
                .peer_rdma_key(0, 1, 0, 0),
        ),
    ));
    // RDMA tasks on an announced region: posted, one done, one canceled
    // and then done, one refused (a write into the read-only region), one
    // still posted when the link closes.
    out.push((
        "rdma-tasks",
        drain(
            drain(rdma().peer_rdma_key(0, 1, 0, 64))
                .rdma_submit(0, 0, 0x10, 0x40, 0)
                .rdma_submit(0, 0, 0x80, 0x40, 0x40)
                .rdma_submit(1, 0, 0x100, 0x40, 0)
                .rdma_submit(0, 0, 0x200, 0x40, 0x80)
                .rdma_post()
                .rdma_post()
                .rdma_post()
                .rdma_done(0, true)
                .cancel(0)
                .rdma_done(0, false),
        ),
    ));
    out.push((
        "rdma-key-before-exchange",
        drain(maps().peer_rdma_key(0, 1, 0, 64)),
    ));
    out.push(("rdma-key-closed-unknown", drain(rdma().peer_rdma_key(1, 5, 0, 0))));
    out.push((
        "rdma-key-overlap",
        drain(rdma().peer_rdma_key(0, 1, 0, 64).peer_rdma_key(0, 2, 0, 8)),
    ));
    let mut full = maps();
    for id in 0..=MAX_LOCAL_MAPS as u8 {
        full = full.peer_map(0, id, id, 1);
    }
    out.push(("peer-maps-full", drain(full)));
    out.push((
        "link-maps",
        drain(
            maps()
                .map(0, 1, 0, 64)
                .map(0, 2, 1, 64)
                .submit(0, 0, 0, 0x100, 0, 0, 0, 0)
                .transmit(0x0e)
                .map(1, 1, 0, 0)
                .map(0, 3, 0, 32)
                .map(0, 4, 0, 32)
                .map(0, 0, 0, 0)
                .map(2, 5, 0, 4)
                .map(4, 5, 0, 4)
                .map(0, 6, 7, 1)
                .map(1, 6, 0, 0)
                .map(1, 9, 0, 0)
                .submit(1, 0, 0, 0x100, 0, 0x200, 0, 0),
        ),
    ));
    let mut full = maps();
    for id in 0..=MAX_LOCAL_MAPS as u8 {
        full = full.map(0, id, id, 1);
    }
    out.push(("link-maps-refused", drain(est().map(0, 1, 0, 64)).map(0, 2, 1, 1)));
    out.push(("link-maps-many", drain(full.map(1, 3, 0, 0).map(0, 3, 40, 1))));
    out.push((
        "peer-read-too-big",
        drain(est().access(K_READ_REQ, 0, 0, 0x2000, 0, 1)),
    ));
    out.push((
        "peer-write-unregister",
        est()
            .access(K_WRITE_DATA, 0, 0, 0x800, 1, 9)
            .pump_some(100, 3)
            .toggle(0)
            .pump(0)
            .transmit(0x0e)
            .events(3)
            .toggle(0),
    ));
    out.push((
        "peer-read-unregister",
        est()
            .access(K_READ_REQ, 0, 0, 0x800, 1, 9)
            .pump(0)
            .toggle(0)
            .transmit(1),
    ));

    // Our tasks.
    out.push((
        "task-read",
        est()
            .submit(0, 3, 0, 0x1800, 0, 0, 1, 0)
            .transmit(0x0e)
            .frame(K_READ_DATA, &[0])
            .frame(K_READ_DATA, &[0])
            .pump(0)
            .events(3),
    ));
    out.push((
        "task-write",
        est()
            .submit(1, 3, 0x100, 0x1200, 2, 0, 0, 0)
            .transmit(1)
            .sent()
            .transmit(0x0f)
            .sent()
            .frame(K_WRITE_ACK, &[0])
            .frame(K_WRITE_ACK, &[0])
            .pump(0)
            .events(3),
    ));
    out.push((
        "task-read-big-peer",
        drain(Script::new(HS | F_BIG_PEER))
            .submit(0, 0, 0, 0x3000, 4, 0, 1, 0)
            .transmit(0x0e)
            .frame(K_READ_DATA, &[0])
            .pump(3)
            .events(3),
    ));
    out.push((
        "task-cancel",
        est()
            .submit(0, 3, 0, 0x1000, 0, 0, 0, 0)
            .transmit(0)
            .cancel(0)
            .frame(K_READ_DATA, &[0])
            .pump(0)
            .events(3),
    ));
    // Device copies that fail: a payload that cannot be read or placed.
    out.push((
        "peer-read-unreadable",
        est()
            .access(K_READ_REQ, 0, 0x100, 0x200, 1, 1)
            .pump(0)
            .transmit(0x0f)
            .unavailable()
            .transmit(0x0e)
            .events(3),
    ));
    out.push((
        "peer-write-unplaceable",
        est()
            .access(K_WRITE_DATA, 0, 0x10, 0x300, 1, 2)
            .pump_some(64, 2)
            .landing_failed()
            .pump(0)
            .transmit(0x0e)
            .events(3),
    ));
    out.push((
        "task-write-unreadable",
        est()
            .submit(1, 3, 0x100, 0x1200, 2, 0, 0, 0)
            .transmit(1)
            .unavailable()
            .transmit(0x0e)
            .events(3),
    ));
    out.push((
        "task-read-unplaceable",
        est()
            .submit(0, 3, 0, 0x1800, 0, 0, 1, 0)
            .transmit(0x0e)
            .frame(K_READ_DATA, &[0])
            .frame(K_READ_DATA, &[0])
            .pump_some(64, 2)
            .landing_failed()
            .pump(0)
            .events(3),
    ));
    out.push((
        "task-cancel-sending",
        est()
            .submit(1, 3, 0, 0x800, 0, 0, 0, 0)
            .transmit(1)
            .cancel(0)
            .events(3)
            .sent()
            .events(3),
    ));
    out.push((
        "task-error",
        est()
            .submit(0, 3, 0, 0x800, 1, 0, 1, 0)
            .transmit(0)
            .frame(K_ERROR, &[0, 5])
            .pump(0)
            .events(3),
    ));
    out.push((
        "task-deadline",
        est()
            .submit(4, 3, 0, 0x800, 0, 0, 0, 40)
            .transmit(0)
            .time(50)
            .events(3),
    ));
    out.push((
        "task-before-handshake",
        Script::new(F_CONNECTOR)
            .submit(1, 0, 0, 0x100, 2, 0, 0, 0)
            .transmit(0)
            .frame(K_HELLO_ACK, &[0])
            .pump(0)
            .transmit(0x0e)
            .events(3),
    ));
    out.push((
        "task-close-mid-write",
        est()
            .submit(1, 3, 0, 0x800, 2, 0, 0, 0)
            .transmit(1)
            .close()
            .transmit(0)
            .events(3)
            .sent()
            .events(3),
    ));
    out.push((
        "task-disconnect",
        est()
            .submit(1, 3, 0, 0x800, 2, 0, 0, 0)
            .transmit(1)
            .disconnect()
            .events(3),
    ));
    out.push((
        "task-duplicate-id",
        est()
            .submit(0, 3, 0, 0x10, 0, 0, 0, 0)
            .submit(2, 3, 0, 0x10, 0, 0, 0, 0)
            .submit(0, 3, 0, 0, 0, 0, 0, 0),
    ));

    // Notifications, segment info, liveness, closing.
    let mut notes = est();
    for i in 0..6 {
        notes = notes.frame(K_NOTIFY, &[i, 0, 10 * i]);
    }
    out.push(("notify-backpressure", notes.pump(0).events(0).pump(0).events(1)));
    out.push((
        "notify-send",
        drain(est().notify(8, 100).notify(0, 1).notify(64, 2048)),
    ));
    out.push((
        "segment-info",
        est()
            .query(7)
            .transmit(0)
            .frame(K_INFO_REPLY, &[0, 3])
            .pump(0)
            .events(3)
            .frame(K_INFO_REQ, &[7])
            .pump(0)
            .transmit(0),
    ));
    // The link pages by itself: full pages with more to come, the cap, a
    // page that does not start after the cursor.
    let mut paged = est().query(200).transmit(0);
    for _ in 0..2 {
        paged = paged.frame(K_INFO_REPLY, &[0, 135]).pump(0).events(3).transmit(0);
    }
    out.push(("segment-info-cap", paged.query(1).transmit(0)));
    out.push((
        "segment-info-stale-page",
        est()
            .query(255)
            .transmit(0)
            .frame(K_INFO_REPLY, &[0, 135])
            .pump(0)
            .events(3)
            .transmit(0)
            .frame(K_INFO_REPLY, &[0x80, 4])
            .pump(0)
            .events(3)
            .transmit(0),
    ));
    out.push((
        "segment-info-paged",
        drain(est().frame(K_INFO_REQ, &[1]).frame(K_INFO_REQ, &[4])),
    ));
    out.push((
        "heartbeat",
        est()
            .time(80)
            .transmit(0)
            .frame(K_PONG, &[0])
            .frame(K_PING, &[5])
            .pump(0)
            .transmit(0)
            .time(230)
            .events(3),
    ));
    out.push(("peer-goodbye", drain(est().frame(K_GOODBYE, &[0]))));
    out.push(("peer-error-close", drain(est().frame(K_ERROR, &[0xff, 1]))));
    out.push((
        "peer-bad-magic",
        drain(est().raw(b"XE\x01\x0c\0\0\0\0\0\0\0\x08\0\0\0\0")),
    ));
    out.push((
        "peer-corrupt-read",
        drain(est().frame(K_READ_REQ | K_CORRUPT, &[0, 0, 0, 0, 16, 0, 1, 0, 3, 0x40])),
    ));
    out.push(("peer-hello-again", drain(est().frame(K_HELLO, &[0]))));
    out.push(("local-close", drain(est().close())));
    out.push((
        "disconnect-end",
        drain(Script::new(HS | F_DISCONNECT_END).access(K_READ_REQ, 0, 0, 16, 0, 1)),
    ));
    out.into_iter()
        .map(|(name, s)| (format!("seed-{name}"), s.0))
        .collect()
}
