//! Fuzz harness for [`te_proto::link::Link`], fed arbitrary peer bytes.
//!
//! The input is a script. Byte 0 holds the `F_*` flags (role, a valid
//! handshake prepended to the peer's bytes, shared secret, limits, how the
//! run ends); every later command is one byte `op` (see the `OP_*`
//! constants, taken modulo 32) followed by its arguments. The harness plays
//! the shell and the peer at once: the peer's bytes, raw from the input or
//! encoded from input-chosen fields ([`OP_FRAME`]), queue up and are fed to
//! the link in input-chosen pieces; payloads land in a fake memory; time
//! advances by input-chosen steps; transmits are drained and decoded as the
//! peer would.
//!
//! A shadow decoder follows the bytes the link consumed, another one the
//! bytes it sent, and a model of the tasks and the registry checks that
//!
//! - every [`PayloadDest::Memory`] span lies inside a region registered with
//!   `REMOTE_WRITE` (the peer's writes, exactly at the address the peer
//!   named) or inside the local span of a live, not canceled read task, at
//!   the offset its request named; a write the registry allows lands, one it
//!   refuses is discarded; nothing lands after the link closed;
//! - every transmit is whole, valid frames; a payload span lies inside a
//!   region registered with `REMOTE_READ` (answering a read the peer made and
//!   the registry allows) or inside the local span of a live, not canceled
//!   write task; requests respect the peer's limits and come from tasks;
//!   answers match the peer's requests;
//! - no task is reported done twice, or done while its write payload is
//!   being sent; a canceled task ends `Canceled`; `Closed` comes once, last,
//!   after every task ended;
//! - once the link is closed it sends nothing but the final `Error` and
//!   `Goodbye`, and after a disconnect nothing at all;
//! - a payload the shell cannot read ([`OP_UNAVAILABLE`]) takes back exactly
//!   its frame and turns a read answer into an `Error`; a payload it cannot
//!   place ([`OP_LANDING_FAILED`]) is discarded from then on and a write of
//!   the peer is answered with an `Error`;
//! - the peer's buffers announced with `LocalMap` ([`K_LOCAL_MAP`]) are
//!   exactly those of a model after every command, and a frame breaking a
//!   rule of them closes the link; the link's own `LocalMap` frames
//!   ([`OP_MAP`]) follow what the shell announced and withdrew, break no
//!   rule the peer checks, and all are sent before any later request;
//! - at the end every pin is released and nothing is due.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use te_proto::batch::{BatchId, Op, TaskId, TransferRequest};
use te_proto::link::{
    Caps, Event, Link, LinkConfig, LinkState, LocalMap, PayloadDest, RdmaKey, Transmit, MAX_LINK_TASKS,
    MAX_LOCAL_MAPS, MAX_OUTSTANDING,
};
use te_proto::rdma::{ConnInfo, Conns, RdmaOff};
use te_proto::wire::RdmaMsg;
use te_proto::wire::{
    encode_info_reply, Decoder, Frame, Hello, LocalAccess, Opcode, Progress, AUTH_HMAC_SHA256, AUTH_NONE,
    HEADER_LEN, INFO_PAGE_MAX, MAX_CONTROL_LEN, MAX_PAYLOAD_LIMIT,
};
use te_proto::{Entry, ErrorCode, Instant, Location, Perm, Region, Registry, Span, Status};

use super::Input;

/// Flag: the link is the connecting side (else the accepting side).
pub const F_CONNECTOR: u8 = 0x01;
/// Flag: a valid handshake from the peer is queued before anything else.
pub const F_HANDSHAKE: u8 = 0x02;
/// Flag: both sides share a secret (the harness's peer proves it).
pub const F_SECRET: u8 = 0x04;
/// Flag: the link accepts 2 requests in flight from the peer (else 8).
pub const F_TIGHT: u8 = 0x08;
/// Flag: the queued handshake advertises 64 KiB payloads and 2 requests in
/// flight (else 4 KiB and 64).
pub const F_BIG_PEER: u8 = 0x10;
/// Flag: the run ends with a disconnect (else with a local close).
pub const F_DISCONNECT_END: u8 = 0x20;
/// Flag: the link offers the same-host path (`PROCESS_VM`): it serves the
/// peer's `LocalRead`/`LocalWrite`, whose copies the harness does at
/// [`OP_EVENTS`], checking that each lies in a region allowing it.
pub const F_OFFER_LOCAL: u8 = 0x40;
/// Flag: both sides map announced buffers (`SHARED_MEMORY`; the queued
/// handshake also offers `PROCESS_VM`) and the shell enables the same-host
/// path once connected, so that the link may announce buffers.
pub const F_MAPS: u8 = 0x80;

/// `OP_RAW len:u16 bytes[len]`: raw bytes from the peer.
pub const OP_RAW: u8 = 0;
/// `OP_FRAME kind:u8 args...`: a frame from the peer (see the `K_*` constants).
pub const OP_FRAME: u8 = 1;
/// `OP_PUMP piece:u8 rounds:u8`: feed the peer's queued bytes in pieces
/// (piece 0: all at once), at most `rounds` of them (0: until all are in).
pub const OP_PUMP: u8 = 2;
/// `OP_TIME step:u8`: advance time by `step² × 200 µs`, then `handle_timeout`.
pub const OP_TIME: u8 = 3;
/// `OP_TRANSMIT flags:u8`: up to `1 + (flags >> 1) % 8` transmits; bit 0 leaves
/// the last payload unsent.
pub const OP_TRANSMIT: u8 = 4;
/// `OP_SENT`: the pending payload is sent.
pub const OP_SENT: u8 = 5;
/// `OP_EVENTS flags:u8`: drain events; bit 0 takes notifications, bit 1
/// segment info; then do the same-host copies waiting.
pub const OP_EVENTS: u8 = 6;
/// `OP_SUBMIT flags area off:u16 len:u16 region roff:u16 locmode deadline`:
/// flags bit 0 write (else read), bit 1 reuse a live task id, bit 2 set a
/// deadline of `deadline² × 200 µs`.
pub const OP_SUBMIT: u8 = 7;
/// `OP_CANCEL k:u8`: cancel a live task (or an unknown one).
pub const OP_CANCEL: u8 = 8;
/// `OP_CLOSE`: close the link locally.
pub const OP_CLOSE: u8 = 9;
/// `OP_DISCONNECT`: the connection is gone.
pub const OP_DISCONNECT: u8 = 10;
/// `OP_NOTIFY name_len:u8 msg_len:u16`: send a notification.
pub const OP_NOTIFY: u8 = 11;
/// `OP_QUERY cap:u8`: query the peer's segment info, at most `cap` regions
/// (0 is refused).
pub const OP_QUERY: u8 = 12;
/// `OP_TOGGLE idx:u8`: unregister region `idx`, or register it again.
pub const OP_TOGGLE: u8 = 13;
/// `OP_LANDING_FAILED`: the payload arriving cannot be placed (a device
/// copy failed).
pub const OP_LANDING_FAILED: u8 = 19;
/// `OP_UNAVAILABLE`: the pending payload cannot be read (a device copy
/// failed); its frame is taken back unsent.
pub const OP_UNAVAILABLE: u8 = 23;
/// `OP_MAP flags id:u8 base:u8 len:u8`: flags bit 0 withdraws buffer
/// `id % 80`, else announces it at `0x6000_0000 + base × 0x100` (address 0
/// with bit 1, a wrapping range with bit 2) of `len × 4` bytes.
pub const OP_MAP: u8 = 31;
/// `OP_RDMA p:u8`: the connector offers, the acceptor answers with,
/// `p % 6` queue pairs (0 and 5 are refused as `Invalid`), or with p bit 7
/// the acceptor refuses with reason `1 + p % 4`.
pub const OP_RDMA: u8 = 18;
/// `OP_RDMA_SUBMIT flags area off:u16 len:u16 roff:u16`: the shell
/// enables the RDMA path (a no-op until both sides gave queue pairs) and
/// submits an RDMA task (flags bit 0 write) on the peer's memory at
/// `0x8000_0000 + roff` (where `K_RDMA_KEY` announces regions).
pub const OP_RDMA_SUBMIT: u8 = 32;
/// `OP_RDMA_POST`: the shell takes the next RDMA task to post.
pub const OP_RDMA_POST: u8 = 33;
/// `OP_RDMA_DONE k ok`: the NIC is done with the `k`-th posted task
/// (ok bit 0: it succeeded, else it failed `Disconnected`).
pub const OP_RDMA_DONE: u8 = 34;

/// `K_HELLO p`: the peer's `Hello` (p: bit 0 flips the auth mode, bits 1-2
/// the payload limit, bits 3-4 the request limit).
pub const K_HELLO: u8 = 0;
/// `K_HELLO_ACK p`: the peer's `HelloAck`, proving the secret (p as above).
pub const K_HELLO_ACK: u8 = 1;
/// `K_AUTH p`: the peer's `Auth` (p bit 0: a wrong proof).
pub const K_AUTH: u8 = 2;
/// `K_READ_REQ region off:u16 len:u16 locmode req`: a read request.
pub const K_READ_REQ: u8 = 3;
/// `K_WRITE_DATA region off:u16 len:u16 locmode req`: a write and its payload.
pub const K_WRITE_DATA: u8 = 4;
/// `K_READ_DATA k`: answers the link's `k`-th open read (bit 7: wrong length).
pub const K_READ_DATA: u8 = 5;
/// `K_WRITE_ACK k`: acks the link's `k`-th open write.
pub const K_WRITE_ACK: u8 = 6;
/// `K_ERROR k code`: fails the link's `k`-th open request (`k` = 0xff: id 0,
/// closing the link).
pub const K_ERROR: u8 = 7;
/// `K_NOTIFY name_len msg_len:u16`: a notification.
pub const K_NOTIFY: u8 = 8;
/// `K_INFO_REQ after`: a segment-info query.
pub const K_INFO_REQ: u8 = 9;
/// `K_INFO_REPLY k count`: answers the link's query with `count` regions
/// (`count % 136`; more than a page sets "more"), right after the query's
/// cursor, or (k bit 7) from a fixed start, which breaks the paging rules
/// once a cursor is past it.
pub const K_INFO_REPLY: u8 = 10;
/// `K_PING token`: a ping.
pub const K_PING: u8 = 11;
/// `K_PONG k`: answers the link's ping.
pub const K_PONG: u8 = 12;
/// `K_GOODBYE code`: the peer closes.
pub const K_GOODBYE: u8 = 13;
/// `K_LOCAL region off:u16 len:u16 locmode req`: a same-host `LocalRead`
/// (req bit 0 clear) or `LocalWrite`; refused with an `Error` unless the
/// link offers the path ([`F_OFFER_LOCAL`]) and the registry allows it.
pub const K_LOCAL: u8 = 14;
/// `K_PID_CHALLENGE len`: a `PidChallenge` with a socket name of `1 + len % 100` bytes.
pub const K_PID_CHALLENGE: u8 = 15;
/// `K_LOCAL_MAP flags id:u8 base:u8 len:u8 fd:u8`: a `LocalMap` announcing
/// buffer `id` at `0x7000_0000 + base × 0x100` of `len × 4` bytes (len 0:
/// withdrawing it); flags bit 0 puts it at address 0, bit 1 makes it wrap,
/// bit 2 sets the fd of a withdrawal (all three malformed).
pub const K_LOCAL_MAP: u8 = 16;
/// `K_RDMA kind count`: an `RdmaConn` of the peer: an offer (`kind % 3`
/// = 0), an answer (1) of `1 + count % 4` queue pairs, or a refusal (2)
/// with reason `1 + count % 4`.
pub const K_RDMA: u8 = 17;
/// `K_RDMA_KEY flags id:u8 base:u8 len:u8`: with flags bit 0 an
/// `RdmaKeyClosed` for region `id`, else an `RdmaKey` announcing region
/// `id` at `0x8000_0000 + base × 0x100` of `len × 4` bytes with permission
/// `1 + (flags >> 1) % 3` (len 0: withdrawing it).
pub const K_RDMA_KEY: u8 = 18;
/// Or-ed into the kind: flip bits of the encoded frame at `pos:u16` with `xor:u8`.
pub const K_CORRUPT: u8 = 0x80;

/// The lkey the model shell gives RDMA tasks.
const RDMA_LKEY: u32 = 7;

/// The queue pairs of both sides' `RdmaConn`s.
const RDMA_QPS: [ConnInfo; 5] = {
    let c = ConnInfo {
        qpn: 0x11,
        psn: 0x22,
        gid: [0xfe; 16],
        lid: 3,
        mtu: 5,
    };
    [c; 5]
};

const LINK_NONCE: [u8; 32] = [0xa5; 32];
const PEER_NONCE: [u8; 32] = [0x5a; 32];
const SECRET: &[u8] = b"fuzz shared secret";
const LINK_NAME: &str = "fuzz-link";
const PEER_NAME: &str = "fuzz-peer";
const LINK_MAX_PAYLOAD: u32 = 4096;
const BATCH: BatchId = BatchId::from_u64(0x0000_0001_0000_0007);
/// A step of time: `OP_TIME` and deadlines use `b² × STEP`.
const STEP: Duration = Duration::from_micros(200);

/// The registered regions, one fake memory area behind each. Two are
/// adjacent (a span across both is refused), two share addresses in
/// different locations (an address alone is ambiguous).
pub const REGIONS: [Region; 6] = [
    Region::new(0x1_0000, 0x3000, Location::Cpu, Perm::REMOTE_READ_WRITE),
    Region::new(0x1_3000, 0x1000, Location::Cpu, Perm::REMOTE_READ),
    Region::new(0x2_0000, 0x2000, Location::Cpu, Perm::REMOTE_WRITE),
    Region::new(0x3_0000, 0x2000, Location::Cpu, Perm::LOCAL_ONLY),
    Region::new(0x1_0000, 0x1000, Location::Sim(0), Perm::REMOTE_READ_WRITE),
    Region::new(0x5_0000, 0x1800, Location::Npu(1), Perm::REMOTE_READ),
];

/// Runs one input; panics on a bug.
pub fn run(data: &[u8]) {
    run_traced(data, false);
}

/// Runs one input; with `trace`, prints what happens to stderr (for
/// reading a reproducer).
pub fn run_traced(data: &[u8], trace: bool) {
    let mut input = Input::new(data);
    let mut h = Harness::new(input.u8());
    h.trace = trace;
    let mut commands = 0;
    while !input.is_empty() && commands < 4096 {
        commands += 1;
        h.command(&mut input);
        h.check_steady();
    }
    h.finish();
}

/// Fake memory: one block of bytes per registered region.
struct Memory {
    blocks: Vec<(Span, Vec<u8>)>,
}

impl Memory {
    fn new() -> Memory {
        Memory {
            blocks: REGIONS
                .iter()
                .map(|r| (r.span, vec![0u8; r.span.len as usize]))
                .collect(),
        }
    }

    fn find(&self, span: Span) -> (usize, usize) {
        for (i, (b, _)) in self.blocks.iter().enumerate() {
            if b.location == span.location && b.addr <= span.addr && end(span) <= end(*b) {
                return (i, (span.addr - b.addr) as usize);
            }
        }
        panic!("access outside the fake memory: {span:?}");
    }

    fn write(&mut self, span: Span, bytes: &[u8]) {
        assert_eq!(span.len, bytes.len() as u64);
        let (i, off) = self.find(span);
        self.blocks[i].1[off..off + bytes.len()].copy_from_slice(bytes);
    }

    fn read(&self, span: Span) -> &[u8] {
        let (i, off) = self.find(span);
        &self.blocks[i].1[off..off + span.len as usize]
    }
}

fn end(span: Span) -> u64 {
    span.end().expect("spans here never wrap")
}

/// A request of the peer that the link has to answer.
#[derive(Clone, Copy, Debug)]
struct PeerRequest {
    req_id: u64,
    addr: u64,
    len: u64,
    location: Option<Location>,
    /// The registry allowed it when it arrived.
    allowed: bool,
    /// For an allowed read: the region it resolved to (location, base),
    /// which the link pins until the answer is sent.
    region: Option<(Location, u64)>,
}

/// The payload the link is receiving, as the shadow decoder saw its frame.
#[derive(Clone, Copy, Debug)]
enum Incoming {
    Write { req: PeerRequest, landed: u64 },
    Read { req_id: u64, landed: u64 },
}

/// A request the link sent.
#[derive(Clone, Copy, Debug)]
struct LinkRequest {
    addr: u64,
    len: u64,
    location: Option<Location>,
}

/// A task the shell submitted and the link has not reported done.
#[derive(Clone, Copy, Debug)]
struct TaskRec {
    id: TaskId,
    req: TransferRequest,
    canceled: bool,
    progress: u64,
}

/// What the harness needs of a frame, owned (frames borrow their decoder).
#[derive(Clone, Copy, Debug)]
enum Seen {
    Hello,
    HelloAck,
    Auth,
    ReadReq {
        req_id: u64,
        addr: u64,
        location: Option<Location>,
        len: u32,
    },
    WriteData {
        req_id: u64,
        addr: u64,
        location: Option<Location>,
        len: u32,
    },
    ReadData {
        req_id: u64,
        len: u32,
    },
    WriteAck {
        req_id: u64,
    },
    Error {
        req_id: u64,
    },
    Notify,
    InfoReq {
        req_id: u64,
        after: Option<(Location, u64)>,
    },
    InfoReply {
        req_id: u64,
        count: usize,
    },
    Ping {
        token: u64,
    },
    Pong {
        token: u64,
    },
    Goodbye,
    /// A same-host request (`LocalRead`/`LocalWrite`).
    LocalReq {
        req_id: u64,
        read: bool,
        addr: u64,
        location: Option<Location>,
        len: u32,
    },
    PidChallenge,
    LocalMap(LocalMap),
    /// A `LocalKey`: the modelled link never announces device buffers.
    LocalKey,
    /// A `KeyClosed`: the modelled link imports no device buffers.
    KeyClosed,
    /// An `RdmaConn`.
    RdmaConn(RdmaMsg),
    /// An `RdmaKey`: the modelled link never announces regions.
    RdmaKey,
    /// An `RdmaKeyClosed` for region `id`.
    RdmaKeyClosed {
        id: u64,
    },
}

impl Seen {
    fn of(frame: &Frame<'_>) -> Seen {
        match *frame {
            Frame::Hello(_) => Seen::Hello,
            Frame::HelloAck(_) => Seen::HelloAck,
            Frame::Auth { .. } => Seen::Auth,
            Frame::ReadReq {
                req_id,
                addr,
                location,
                len,
            } => Seen::ReadReq {
                req_id,
                addr,
                location,
                len,
            },
            Frame::WriteData {
                req_id,
                addr,
                location,
                len,
            } => Seen::WriteData {
                req_id,
                addr,
                location,
                len,
            },
            Frame::ReadData { req_id, len } => Seen::ReadData { req_id, len },
            Frame::WriteAck { req_id } => Seen::WriteAck { req_id },
            Frame::Error { req_id, .. } => Seen::Error { req_id },
            Frame::Notify { .. } => Seen::Notify,
            Frame::InfoReq { req_id, after } => Seen::InfoReq { req_id, after },
            Frame::InfoReply { req_id, regions, .. } => Seen::InfoReply {
                req_id,
                count: regions.len(),
            },
            Frame::Ping { token } => Seen::Ping { token },
            Frame::Pong { token } => Seen::Pong { token },
            Frame::Goodbye { .. } => Seen::Goodbye,
            Frame::LocalRead(a) | Frame::LocalWrite(a) => Seen::LocalReq {
                req_id: a.req_id,
                read: matches!(frame, Frame::LocalRead(_)),
                addr: a.addr,
                location: a.location,
                len: a.len,
            },
            Frame::PidChallenge { .. } => Seen::PidChallenge,
            Frame::LocalMap(m) => Seen::LocalMap(m),
            Frame::LocalKey(_) => Seen::LocalKey,
            Frame::KeyClosed { .. } => Seen::KeyClosed,
            Frame::RdmaConn(m) => Seen::RdmaConn(m),
            Frame::RdmaKey(_) => Seen::RdmaKey,
            Frame::RdmaKeyClosed { id } => Seen::RdmaKeyClosed { id },
        }
    }
}

/// A segment-info query as the shell sees it: its cap, the regions taken
/// and the key of the last one.
struct QueryModel {
    cap: usize,
    got: usize,
    last: Option<(Location, u64)>,
}

struct Harness {
    trace: bool,
    flags: u8,
    now: Instant,
    link: Link,
    reg: Registry<[Entry; 16]>,
    mem: Memory,
    /// Region `i` was unregistered by the harness (and not registered again).
    unregistered: [bool; 6],
    tx_buf: Vec<u8>,

    /// Bytes the peer sent that the link has not consumed yet.
    inbound: Vec<u8>,
    /// Shadow of the link's input decoder; `None` once the link closed.
    in_dec: Option<Decoder>,
    in_cur: Option<Incoming>,
    /// The peer's reads not answered yet.
    in_reads: Vec<PeerRequest>,
    /// The peer's writes whose payload arrived, not answered yet.
    in_writes: Vec<PeerRequest>,
    in_infos: Vec<u64>,
    in_pings: HashSet<u64>,
    /// The peer's Ping the link has not answered yet: a second Ping
    /// before that answer breaks the one-unanswered rule.
    pong_owed: Option<u64>,
    /// The peer broke that rule, or sent a second `PidChallenge`: the link
    /// must be closed.
    violation: bool,
    /// The peer sent a `PidChallenge` (a link carries one).
    challenged: bool,
    /// The link sent its `RdmaConn` (a link sends at most one).
    rdma_sent: bool,
    /// RDMA tasks the shell took to post and the NIC is not done with:
    /// their ends must not be reported.
    rdma_posted: Vec<TaskId>,
    /// The regions the peer withdrew with `RdmaKey`: the link answers
    /// (`RdmaKeyClosed`) only those it was told of.
    rdma_withdrawn: Vec<u64>,

    /// Decodes what the link sends, as the peer does.
    out_dec: Option<Decoder>,
    /// Every read request the link sent, by id.
    out_read_log: HashMap<u64, LinkRequest>,
    /// The link's requests the peer has not answered, for `OP_FRAME`.
    out_reads: Vec<(u64, u32)>,
    out_writes: Vec<u64>,
    out_infos: Vec<u64>,
    /// The cursor of each of the link's queries, by id.
    out_cursors: HashMap<u64, Option<(Location, u64)>>,
    /// The segment-info query under way, as the shell sees it.
    query: Option<QueryModel>,
    out_pings: Vec<u64>,
    out_ids: HashSet<u64>,
    sent_hello: bool,
    sent_auth: bool,
    sent_final_error: bool,
    sent_goodbye: bool,
    disconnected: bool,
    /// The payload handed out by the last transmit, not reported sent yet,
    /// and the write task it belongs to when that is unambiguous.
    pending_send: Option<(Span, Option<TaskId>)>,
    /// The frame that announced the pending payload.
    pending_frame: Option<Seen>,

    tasks: Vec<TaskRec>,
    next_index: u32,
    connected: bool,
    closed_event: bool,
    notes_taken: usize,

    /// The peer's buffers as the link must hold them; `None` once the peer
    /// broke a rule of `LocalMap` (the link must then be closed).
    peer_maps: Option<Vec<LocalMap>>,
    /// The buffers the shell announced and has not seen withdrawn on the
    /// wire: `(buffer, sent, withdrawn)`.
    my_maps: Vec<(LocalMap, bool, bool)>,
    /// The link's buffers as the peer knows them from the frames sent.
    peer_view: Vec<LocalMap>,
}

/// One `LocalMap` applied to `maps` by the receiver's rules; false when it
/// breaks one (unknown withdrawal, id twice, overlap, table full).
fn apply_map(maps: &mut Vec<LocalMap>, m: LocalMap) -> bool {
    if m.len == 0 {
        let Some(i) = maps.iter().position(|e| e.id == m.id) else {
            return false;
        };
        maps.remove(i);
        return true;
    }
    let clash = maps
        .iter()
        .any(|e| e.id == m.id || (m.base < e.base + e.len && e.base < m.base + m.len));
    if clash || maps.len() == MAX_LOCAL_MAPS {
        return false;
    }
    maps.push(m);
    true
}

impl Harness {
    fn new(flags: u8) -> Harness {
        let mut cfg = LinkConfig::new(LINK_NAME).expect("valid name");
        cfg.max_payload = LINK_MAX_PAYLOAD;
        cfg.max_outstanding = if flags & F_TIGHT != 0 { 2 } else { 8 };
        cfg.host_id = [7; 32];
        if flags & F_OFFER_LOCAL != 0 {
            cfg.caps = Caps::PROCESS_VM;
        }
        if flags & F_MAPS != 0 {
            cfg.caps |= Caps::SHARED_MEMORY | Caps::RDMA;
        }
        if flags & F_SECRET != 0 {
            cfg = cfg.with_secret(SECRET).expect("valid secret");
        }
        let now = Instant::from_nanos(1_000_000_000);
        let link = if flags & F_CONNECTOR != 0 {
            Link::connect(cfg, now, LINK_NONCE)
        } else {
            Link::accept(cfg, now, LINK_NONCE)
        }
        .expect("valid config");
        let mut reg = Registry::new([Entry::EMPTY; 16]);
        reg.register_batch(&REGIONS).expect("the regions do not overlap");
        let mut h = Harness {
            trace: false,
            flags,
            now,
            link,
            reg,
            mem: Memory::new(),
            unregistered: [false; 6],
            tx_buf: vec![0; MAX_CONTROL_LEN],
            inbound: Vec::new(),
            in_dec: Some(Decoder::new(LINK_MAX_PAYLOAD)),
            in_cur: None,
            in_reads: Vec::new(),
            in_writes: Vec::new(),
            in_infos: Vec::new(),
            in_pings: HashSet::new(),
            pong_owed: None,
            violation: false,
            challenged: false,
            rdma_sent: false,
            rdma_posted: Vec::new(),
            rdma_withdrawn: Vec::new(),
            out_dec: Some(Decoder::new(MAX_PAYLOAD_LIMIT)),
            out_read_log: HashMap::new(),
            out_reads: Vec::new(),
            out_writes: Vec::new(),
            out_infos: Vec::new(),
            out_cursors: HashMap::new(),
            query: None,
            out_pings: Vec::new(),
            out_ids: HashSet::new(),
            sent_hello: false,
            sent_auth: false,
            sent_final_error: false,
            sent_goodbye: false,
            disconnected: false,
            pending_send: None,
            pending_frame: None,
            tasks: Vec::new(),
            next_index: 0,
            connected: false,
            closed_event: false,
            notes_taken: 0,
            peer_maps: Some(Vec::new()),
            my_maps: Vec::new(),
            peer_view: Vec::new(),
        };
        assert_eq!(h.link.state(), LinkState::Handshaking);
        if flags & F_HANDSHAKE != 0 {
            let p = if flags & F_BIG_PEER != 0 {
                0b0_1100
            } else {
                0b1_1000
            };
            if flags & F_CONNECTOR != 0 {
                h.peer_frame_bytes(K_HELLO_ACK, p);
            } else {
                h.peer_frame_bytes(K_HELLO, p);
                if flags & F_SECRET != 0 {
                    h.peer_frame_bytes(K_AUTH, 0);
                }
            }
        }
        h
    }

    fn closed(&self) -> bool {
        self.link.state() == LinkState::Closed
    }

    fn command(&mut self, input: &mut Input<'_>) {
        let op = input.u8() % 35;
        if self.trace {
            eprintln!(
                "op {op} (link {:?}, {} bytes queued)",
                self.link.state(),
                self.inbound.len()
            );
        }
        match op {
            OP_RAW | 28 => {
                let n = usize::from(input.u16());
                let bytes = input.bytes(n);
                self.inbound.extend_from_slice(bytes);
            }
            OP_FRAME | 29 | 30 => self.peer_frame(input),
            OP_MAP => self.map(input),
            OP_PUMP | 14..=17 => {
                let b = input.u8();
                let piece = match b {
                    0 => usize::MAX,
                    0xf0..=0xff => 4096 * usize::from(b - 0xef),
                    _ => usize::from(b),
                };
                let rounds = match input.u8() {
                    0 => usize::MAX,
                    r => usize::from(r),
                };
                self.pump(piece, rounds);
            }
            OP_TIME | 27 => {
                let b = u32::from(input.u8());
                self.now = self.now + STEP * (b * b);
                self.link.handle_timeout(self.now, &mut self.reg);
            }
            OP_TRANSMIT | 20..=22 => {
                let flags = input.u8();
                self.transmit(1 + usize::from(flags >> 1) % 8, flags & 1 != 0);
            }
            OP_SENT => self.payload_sent(),
            OP_LANDING_FAILED => self.landing_failed(),
            OP_UNAVAILABLE => self.payload_unavailable(),
            OP_EVENTS | 24..=26 => {
                let flags = input.u8();
                self.events(flags & 1 != 0, flags & 2 != 0);
                self.copies();
            }
            OP_SUBMIT => self.submit(input),
            OP_CANCEL => self.cancel(input.u8()),
            OP_CLOSE => self.link.close(&mut self.reg),
            OP_DISCONNECT => {
                self.link.handle_disconnect(&mut self.reg);
                self.pending_send = None;
                self.pending_frame = None;
                self.disconnected = true;
            }
            OP_NOTIFY => {
                let name = "n".repeat(usize::from(input.u8() % 70));
                let msg = vec![0x6du8; usize::from(input.u16() % 2100)];
                let r = self.link.send_notification(&name, &msg);
                if self.closed() {
                    assert_eq!(r.map_err(|e| e.code()), Err(ErrorCode::Disconnected));
                } else if name.is_empty() || name.len() > 64 || msg.len() > 2048 {
                    assert_eq!(r.map_err(|e| e.code()), Err(ErrorCode::Invalid));
                }
            }
            OP_QUERY => {
                let cap = usize::from(input.u8());
                let r = self.link.query_segment_info(cap);
                let want = if self.closed() {
                    Err(ErrorCode::Disconnected)
                } else if cap == 0 {
                    Err(ErrorCode::Invalid)
                } else if self.query.is_some() {
                    Err(ErrorCode::NotReady)
                } else {
                    Ok(())
                };
                assert_eq!(
                    r.as_ref().map(|_| ()).map_err(|e| e.code()),
                    want,
                    "query for {cap}: {r:?}"
                );
                if r.is_ok() {
                    self.query = Some(QueryModel {
                        cap,
                        got: 0,
                        last: None,
                    });
                }
            }
            OP_TOGGLE => self.toggle(usize::from(input.u8() % 6)),
            OP_RDMA => self.rdma(input.u8()),
            OP_RDMA_SUBMIT => self.rdma_submit(input),
            OP_RDMA_POST => {
                if let Some(w) = self.link.rdma_mut().next_post() {
                    assert!(
                        self.tasks.iter().any(|t| t.id == w.task),
                        "{:?} is not running",
                        w.task
                    );
                    assert!(!self.rdma_posted.contains(&w.task), "{:?} posted twice", w.task);
                    assert_eq!(w.lkey, RDMA_LKEY);
                    self.rdma_posted.push(w.task);
                }
            }
            OP_RDMA_DONE => {
                let (k, ok) = (usize::from(input.u8()), input.u8() & 1 != 0);
                if self.rdma_posted.is_empty() {
                    return;
                }
                let task = self.rdma_posted.remove(k % self.rdma_posted.len());
                let result = if ok {
                    Ok(())
                } else {
                    Err(Status::new(ErrorCode::Disconnected, "fuzzed NIC failure"))
                };
                assert!(
                    self.link.rdma_mut().done(task, result),
                    "done for posted {task:?}"
                );
            }
            _ => {}
        }
    }

    /// [`OP_RDMA`]: the link's side of the RDMA exchange. Whatever the
    /// order, an accepted call leaves this side's queue pairs (or its
    /// refusal) recorded, and a refused one changes nothing.
    fn rdma(&mut self, p: u8) {
        let before = (
            self.link.rdma().local().map(<[ConnInfo]>::len),
            self.link.rdma().refusal(),
        );
        let qps = &RDMA_QPS[..usize::from(p % 6)];
        let r = if self.flags & F_CONNECTOR != 0 {
            self.link.offer_rdma(qps)
        } else if p & 0x80 != 0 {
            self.link
                .answer_rdma(Err(RdmaOff::from_u8(1 + p % 4).expect("reasons 1 to 4 exist")))
        } else {
            self.link.answer_rdma(Ok(qps))
        };
        let after = (
            self.link.rdma().local().map(<[ConnInfo]>::len),
            self.link.rdma().refusal(),
        );
        match r {
            Ok(()) if self.flags & F_CONNECTOR != 0 || p & 0x80 == 0 => assert_eq!(after.0, Some(qps.len())),
            Ok(()) => assert!(after.1.is_some(), "a refusal not recorded"),
            Err(e) => {
                assert!(
                    matches!(
                        e.code(),
                        ErrorCode::NotReady | ErrorCode::Invalid | ErrorCode::NotSupported
                    ),
                    "{e}"
                );
                assert_eq!(before, after, "a refused RDMA call changed the link");
            }
        }
    }

    /// Cheap checks after every command.
    fn check_steady(&self) {
        let rdma = self.link.rdma();
        assert_eq!(
            rdma.ready(),
            rdma.local().is_some() && matches!(rdma.peer(), Some(Ok(_))),
            "RDMA ready without both sides' queue pairs"
        );
        assert_eq!(
            self.link.tasks_in_flight(),
            self.tasks.len(),
            "tasks on the link vs tasks not reported done"
        );
        assert_eq!(
            self.link.poll_timeout().is_none(),
            self.closed(),
            "a live link always has a timeout"
        );
        assert!(self.link.requests_in_flight() <= MAX_OUTSTANDING);
        if self.closed() {
            assert!(!self.link.can_submit());
            assert_eq!(
                self.link.same_host().peer_local_maps().count(),
                0,
                "a closed link keeps buffers"
            );
            return;
        }
        let want = self
            .peer_maps
            .as_ref()
            .expect("the peer broke a rule of LocalMap and the link is still open");
        let mut have: Vec<LocalMap> = self.link.same_host().peer_local_maps().collect();
        have.sort_by_key(|m| m.id);
        let mut want = want.clone();
        want.sort_by_key(|m| m.id);
        assert_eq!(have, want, "the peer's buffers");
        for m in &want {
            assert_eq!(self.link.same_host().peer_local_map(m.base, m.len), Some(*m));
            assert_eq!(self.link.same_host().peer_local_map(m.base + m.len - 1, 2), None);
        }
    }

    // ---- the peer's bytes ----

    /// Encodes a frame of the peer from input-chosen fields and queues it.
    fn peer_frame(&mut self, input: &mut Input<'_>) {
        let kind = input.u8();
        let start = self.inbound.len();
        match (kind & 0x7f) % 19 {
            K_HELLO => self.peer_frame_bytes(K_HELLO, input.u8()),
            K_HELLO_ACK => self.peer_frame_bytes(K_HELLO_ACK, input.u8()),
            K_AUTH => self.peer_frame_bytes(K_AUTH, input.u8()),
            k @ (K_READ_REQ | K_WRITE_DATA) => {
                let region = input.u8();
                let off = u64::from(input.u16());
                let len = u32::from(input.u16());
                let locmode = input.u8();
                let req_id = u64::from(input.u8());
                let (base, location) = target(region, locmode);
                let addr = base + off;
                if k == K_READ_REQ {
                    self.push_frame(&Frame::ReadReq {
                        req_id,
                        addr,
                        location,
                        len,
                    });
                } else {
                    self.push_frame(&Frame::WriteData {
                        req_id,
                        addr,
                        location,
                        len,
                    });
                    self.push_payload(req_id, len);
                }
            }
            K_READ_DATA => {
                let k = input.u8();
                let (req_id, len) = if self.out_reads.is_empty() {
                    (u64::from(k), 16)
                } else {
                    self.out_reads
                        .remove(usize::from(k & 0x7f) % self.out_reads.len())
                };
                let len = if k & 0x80 != 0 {
                    len.wrapping_add(1).max(1)
                } else {
                    len
                };
                self.push_frame(&Frame::ReadData { req_id, len });
                self.push_payload(req_id, len);
            }
            K_WRITE_ACK => {
                let k = input.u8();
                let req_id = take_or(&mut self.out_writes, k);
                self.push_frame(&Frame::WriteAck { req_id });
            }
            K_ERROR => {
                let k = input.u8();
                let code = ErrorCode::ALL[usize::from(input.u8()) % ErrorCode::ALL.len()];
                let req_id = if k == 0xff {
                    0
                } else {
                    let mut open: Vec<u64> = self.out_reads.iter().map(|r| r.0).collect();
                    open.extend(&self.out_writes);
                    open.extend(&self.out_infos);
                    let id = take_or(&mut open, k);
                    self.out_reads.retain(|r| r.0 != id);
                    self.out_writes.retain(|&w| w != id);
                    self.out_infos.retain(|&i| i != id);
                    id
                };
                self.push_frame(&Frame::Error {
                    req_id,
                    code,
                    msg: "fuzz peer error",
                });
            }
            K_NOTIFY => {
                let name = "p".repeat(1 + usize::from(input.u8() % 64));
                let msg = vec![0x4eu8; usize::from(input.u16() % 2049)];
                self.push_frame(&Frame::Notify {
                    name: &name,
                    msg: &msg,
                });
            }
            K_INFO_REQ => {
                let after = match input.u8() % 8 {
                    k @ 0..=5 => Some((
                        REGIONS[usize::from(k)].span.location,
                        REGIONS[usize::from(k)].span.addr,
                    )),
                    _ => None,
                };
                let req_id = 0x100 + self.inbound.len() as u64;
                self.push_frame(&Frame::InfoReq { req_id, after });
            }
            K_INFO_REPLY => {
                let k = input.u8();
                let count = usize::from(input.u8()) % (INFO_PAGE_MAX + 8);
                let req_id = take_or(&mut self.out_infos, k);
                let (location, first) = match self.out_cursors.get(&req_id).copied().flatten() {
                    Some((l, base)) if k & 0x80 == 0 => (l, base.saturating_add(0x1000)),
                    _ => (Location::Sim(1), 0x10_0000),
                };
                let regions = (0..count as u64)
                    .map(move |i| {
                        first
                            .checked_add(i * 0x1000)
                            .filter(|b| b.checked_add(0x800).is_some())
                    })
                    .map_while(|b| b)
                    .map(move |b| (Region::new(b, 0x800, location, Perm::REMOTE_READ), Some(b as u32)));
                let mut buf = vec![0u8; MAX_CONTROL_LEN];
                let (n, _) = encode_info_reply(&mut buf, req_id, regions).expect("buffer fits a page");
                self.inbound.extend_from_slice(&buf[..n]);
            }
            K_LOCAL => {
                let region = input.u8();
                let off = u64::from(input.u16());
                let len = u32::from(input.u16()).max(1);
                let locmode = input.u8();
                let req_id = u64::from(input.u8());
                let (base, location) = target(region, locmode);
                let a = LocalAccess {
                    req_id,
                    addr: base + off,
                    location,
                    len,
                    peer_addr: 0x7000_0000,
                    peer_device: false,
                };
                self.push_frame(&Frame::local(req_id & 1 == 0, a));
            }
            K_PID_CHALLENGE => {
                let socket = vec![b's'; 1 + usize::from(input.u8()) % 100];
                self.push_frame(&Frame::PidChallenge {
                    token: [7; 32],
                    socket: &socket,
                });
            }
            K_LOCAL_MAP => {
                let flags = input.u8();
                let id = u64::from(input.u8());
                let base = 0x7000_0000 + u64::from(input.u8()) * 0x100;
                let len = u64::from(input.u8()) * 4;
                let fd = u32::from(input.u8());
                let m = match (len, flags & 7) {
                    (0, f) => LocalMap {
                        fd: u32::from(f & 4 != 0) * fd.max(1),
                        ..LocalMap::withdraw(id)
                    },
                    (_, f) if f & 1 != 0 => LocalMap { id, base: 0, len, fd },
                    (_, f) if f & 2 != 0 => LocalMap {
                        id,
                        base: u64::MAX - len / 2,
                        len,
                        fd,
                    },
                    _ => LocalMap { id, base, len, fd },
                };
                self.push_frame(&Frame::LocalMap(m));
            }
            K_RDMA => {
                let kind = input.u8() % 3;
                let count = input.u8();
                let conns = Conns::new(&RDMA_QPS[..1 + usize::from(count % 4)]).expect("1 to 4 queue pairs");
                let why = RdmaOff::from_u8(1 + count % 4).expect("reasons 1 to 4 exist");
                let msg = match kind {
                    0 => RdmaMsg::Offer(conns),
                    1 => RdmaMsg::Answer(conns),
                    _ => RdmaMsg::Off(why),
                };
                self.push_frame(&Frame::RdmaConn(msg));
            }
            K_RDMA_KEY => {
                let (flags, id) = (input.u8(), u64::from(input.u8()));
                let (base, len) = (u64::from(input.u8()), u64::from(input.u8()) * 4);
                if flags & 1 != 0 {
                    self.push_frame(&Frame::RdmaKeyClosed { id });
                } else if len == 0 {
                    self.rdma_withdrawn.push(id);
                    self.push_frame(&Frame::RdmaKey(RdmaKey::withdraw(id)));
                } else {
                    let perm = Perm::from_bits_truncate(1 + (flags >> 1) % 3);
                    let k = RdmaKey {
                        id,
                        base: 0x8000_0000 + base * 0x100,
                        len,
                        rkey: 0x1000 + id as u32,
                        perm,
                    };
                    self.push_frame(&Frame::RdmaKey(k));
                }
            }
            K_PING => {
                let token = u64::from(input.u8());
                self.push_frame(&Frame::Ping { token });
            }
            K_PONG => {
                let k = input.u8();
                let token = take_or(&mut self.out_pings, k);
                self.push_frame(&Frame::Pong { token });
            }
            _ => {
                // K_GOODBYE.
                let code = ErrorCode::ALL[usize::from(input.u8()) % ErrorCode::ALL.len()];
                self.push_frame(&Frame::Goodbye { code });
            }
        }
        if kind & K_CORRUPT != 0 {
            let pos = usize::from(input.u16());
            let xor = input.u8().max(1);
            let len = self.inbound.len() - start;
            if len > 0 {
                self.inbound[start + pos % len] ^= xor;
            }
        }
    }

    /// Queues a handshake frame of the peer.
    fn peer_frame_bytes(&mut self, kind: u8, p: u8) {
        let secret = self.flags & F_SECRET != 0;
        match kind {
            K_AUTH => {
                let mut mac = proof(b"te1 connector", &PEER_NONCE, &LINK_NONCE);
                if p & 1 != 0 {
                    mac[0] ^= 1;
                }
                self.push_frame(&Frame::Auth { mac });
            }
            _ => {
                let auth_on = secret != (p & 1 != 0);
                let mac = if kind == K_HELLO_ACK && auth_on {
                    proof(b"te1 acceptor", &LINK_NONCE, &PEER_NONCE)
                } else {
                    [0; 32]
                };
                let hello = Hello {
                    caps: if self.flags & F_MAPS != 0 {
                        (Caps::SHARED_MEMORY | Caps::PROCESS_VM | Caps::RDMA).bits()
                    } else {
                        0
                    },
                    max_payload: [4096, 8192, 65536, MAX_PAYLOAD_LIMIT][usize::from(p >> 1) & 3],
                    max_outstanding: [1, 2, 4, 64][usize::from(p >> 3) & 3],
                    auth: if auth_on { AUTH_HMAC_SHA256 } else { AUTH_NONE },
                    host_id: [9; 32],
                    nonce: PEER_NONCE,
                    mac,
                    name: PEER_NAME,
                };
                let frame = if kind == K_HELLO {
                    Frame::Hello(hello)
                } else {
                    Frame::HelloAck(hello)
                };
                self.push_frame(&frame);
            }
        }
    }

    fn push_frame(&mut self, frame: &Frame<'_>) {
        let mut buf = [0u8; MAX_CONTROL_LEN];
        let n = frame
            .encode(&mut buf)
            .unwrap_or_else(|e| panic!("the harness encodes {frame:?}: {e}"));
        self.inbound.extend_from_slice(&buf[..n]);
    }

    /// Queues `len` payload bytes (a pattern), at most 64 KiB of them.
    fn push_payload(&mut self, req_id: u64, len: u32) {
        let n = (len as usize).min(1 << 16);
        self.inbound.extend((0..n).map(|i| (i as u8) ^ (req_id as u8)));
    }

    // ---- feeding the link ----

    /// Feeds the queued peer bytes in pieces of at most `piece`, landing
    /// payloads in memory, like a shell reading its socket.
    fn pump(&mut self, piece: usize, rounds: usize) {
        let mut stalled = false;
        let mut steps = 0usize;
        loop {
            steps += 1;
            assert!(steps < 1_000_000, "pump makes no progress");
            if steps > rounds {
                break;
            }
            if let Some(dest) = self.link.poll_payload() {
                let due = match dest {
                    PayloadDest::Memory(span) => span.len,
                    PayloadDest::Discard(n) => n,
                };
                assert!(due > 0, "empty payload destination {dest:?}");
                self.check_dest(dest);
                let n = usize::try_from(due)
                    .unwrap_or(usize::MAX)
                    .min(self.inbound.len())
                    .min(piece);
                if n == 0 {
                    break;
                }
                if let PayloadDest::Memory(span) = dest {
                    let part = Span {
                        addr: span.addr,
                        len: n as u64,
                        location: span.location,
                    };
                    self.mem.write(part, &self.inbound[..n]);
                }
                self.inbound.drain(..n);
                self.link.payload_landed(self.now, n as u64, &mut self.reg);
                self.shadow_landed(n as u64);
                stalled = false;
                continue;
            }
            if self.inbound.is_empty() {
                break;
            }
            let take = piece.min(self.inbound.len());
            let used = self
                .link
                .handle_input(self.now, &self.inbound[..take], &mut self.reg);
            assert!(used <= take, "handle_input took {used} of {take} bytes");
            if used > 0 {
                let bytes: Vec<u8> = self.inbound.drain(..used).collect();
                self.shadow_input(&bytes);
                stalled = false;
                continue;
            }
            // Nothing taken and no payload due: only a full inbox of
            // notifications may hold input back. Take them and retry once.
            assert!(!stalled, "the link takes no input and wants no payload");
            stalled = true;
            let before = self.notes_taken;
            self.events(true, false);
            while self.link.take_notification().is_some() {
                self.notes_taken += 1;
            }
            assert!(
                self.notes_taken > before,
                "the link holds input back with no notification to take"
            );
        }
    }

    /// Follows the bytes the link consumed with the shadow decoder.
    fn shadow_input(&mut self, bytes: &[u8]) {
        let Some(mut dec) = self.in_dec.take() else { return };
        let closed = self.closed();
        let mut at = 0;
        let mut malformed = false;
        loop {
            match dec.progress() {
                Progress::NeedMore => {
                    if at == bytes.len() {
                        break;
                    }
                    match dec.feed(&bytes[at..]) {
                        Ok(n) => at += n,
                        Err(_) => {
                            malformed = true;
                            break;
                        }
                    }
                }
                Progress::Frame => {
                    // A Notify that ends the bytes may wait in the link,
                    // undecoded, while its inbox is full: follow it once the
                    // link has moved past it.
                    let notify = dec.header().is_some_and(|h| h.opcode == Opcode::Notify as u8);
                    if notify && at == bytes.len() && !closed {
                        break;
                    }
                    let seen = match dec.frame() {
                        Some(Ok(f)) => Seen::of(&f),
                        _ => {
                            malformed = true;
                            break;
                        }
                    };
                    dec.next();
                    self.on_peer_frame(seen);
                }
                Progress::Payload(_) => {
                    assert!(
                        closed || at == bytes.len(),
                        "the link consumed payload bytes as frames"
                    );
                    break;
                }
            }
        }
        if malformed {
            assert!(closed, "malformed input did not close the link");
        }
        if std::mem::take(&mut self.violation) {
            assert!(
                self.closed(),
                "a Ping while the last one's Pong was owed, or a second PidChallenge, left the link open"
            );
        }
        if !closed {
            self.in_dec = Some(dec);
        }
    }

    fn on_peer_frame(&mut self, seen: Seen) {
        if self.trace {
            eprintln!("  link got {seen:?}");
        }
        match seen {
            Seen::ReadReq {
                req_id,
                addr,
                location,
                len,
            } => {
                let region = self
                    .reg
                    .check_remote(addr, u64::from(len), location, Perm::REMOTE_READ)
                    .ok()
                    .map(|r| (r.span.location, r.span.addr));
                let req = PeerRequest {
                    req_id,
                    addr,
                    len: u64::from(len),
                    location,
                    allowed: region.is_some(),
                    region,
                };
                self.in_reads.push(req);
            }
            Seen::WriteData {
                req_id,
                addr,
                location,
                len,
            } => {
                let allowed = self
                    .reg
                    .check_remote(addr, u64::from(len), location, Perm::REMOTE_WRITE)
                    .is_ok();
                let req = PeerRequest {
                    req_id,
                    addr,
                    len: u64::from(len),
                    location,
                    allowed,
                    region: None,
                };
                self.in_cur = Some(Incoming::Write { req, landed: 0 });
            }
            Seen::LocalReq {
                req_id,
                read,
                addr,
                location,
                len,
            } => {
                // Answered like a write: WriteAck once copied when the link
                // offers the path and the registry allows it, else Error.
                let perm = if read {
                    Perm::REMOTE_READ
                } else {
                    Perm::REMOTE_WRITE
                };
                let allowed = self.flags & F_OFFER_LOCAL != 0
                    && self
                        .reg
                        .check_remote(addr, u64::from(len), location, perm)
                        .is_ok();
                self.in_writes.push(PeerRequest {
                    req_id,
                    addr,
                    len: u64::from(len),
                    location,
                    allowed,
                    region: None,
                });
            }
            Seen::PidChallenge => self.violation |= std::mem::replace(&mut self.challenged, true),
            // Whether the link takes it depends on its own calls, made in
            // any order against the peer's bytes: `check_steady` checks the
            // outcome instead.
            Seen::RdmaConn(_) => {}
            Seen::LocalMap(m) => {
                let Some(maps) = self.peer_maps.as_mut() else {
                    return;
                };
                if self.flags & F_MAPS == 0 || !apply_map(maps, m) {
                    self.peer_maps = None;
                }
            }
            Seen::ReadData { req_id, .. } => self.in_cur = Some(Incoming::Read { req_id, landed: 0 }),
            Seen::InfoReq { req_id, .. } => self.in_infos.push(req_id),
            Seen::Ping { token } => {
                self.in_pings.insert(token);
                if self.pong_owed.is_some() {
                    self.violation = true;
                } else {
                    self.pong_owed = Some(token);
                }
            }
            _ => {}
        }
    }

    fn shadow_landed(&mut self, n: u64) {
        let Some(dec) = self.in_dec.as_mut() else { return };
        dec.payload_consumed(n as u32);
        let done = !matches!(dec.progress(), Progress::Payload(_));
        match self.in_cur.as_mut() {
            Some(Incoming::Write { landed, .. }) | Some(Incoming::Read { landed, .. }) => *landed += n,
            None => {}
        }
        if done {
            if let Some(Incoming::Write { req, .. }) = self.in_cur.take() {
                self.in_writes.push(req);
            }
            self.in_cur = None;
        }
    }

    /// Where the link wants payload bytes must be where the frame said.
    fn check_dest(&self, dest: PayloadDest) {
        if self.trace {
            eprintln!("  payload to {dest:?}");
        }
        if self.closed() {
            assert!(
                matches!(dest, PayloadDest::Discard(_)),
                "payload lands in memory after the close: {dest:?}"
            );
            return;
        }
        let dec = self.in_dec.as_ref().expect("a live link has a shadow decoder");
        let Progress::Payload(left) = dec.progress() else {
            panic!("the link wants payload ({dest:?}) where the stream has none");
        };
        let left = u64::from(left);
        match dest {
            PayloadDest::Discard(n) => {
                assert_eq!(n, left, "discard length");
                if let Some(Incoming::Write { req, .. }) = self.in_cur {
                    assert!(!req.allowed, "a write the registry allows is discarded: {req:?}");
                }
            }
            PayloadDest::Memory(span) => {
                assert_eq!(span.len, left, "destination length");
                match self.in_cur {
                    Some(Incoming::Write { req, landed }) => {
                        assert!(
                            req.allowed,
                            "a write the registry refuses lands in {span:?}: {req:?}"
                        );
                        assert_eq!(span.addr, req.addr + landed, "write lands at another address");
                        assert!(
                            req.location.is_none_or(|l| l == span.location),
                            "write lands in another location"
                        );
                        assert!(
                            self.region_allows(span, Perm::REMOTE_WRITE),
                            "write lands outside a writable region: {span:?}"
                        );
                    }
                    Some(Incoming::Read { req_id, landed }) => {
                        let r = self.out_read_log.get(&req_id).unwrap_or_else(|| {
                            panic!("ReadData {req_id:#x} for no read the link sent lands in {span:?}")
                        });
                        let ok = self.tasks.iter().any(|t| {
                            t.req.op == Op::Read
                                && !t.canceled
                                && t.req.remote_location == r.location
                                && r.addr >= t.req.remote_addr
                                && r.addr - t.req.remote_addr + r.len <= t.req.local.len
                                && span.location == t.req.local.location
                                && span.addr == t.req.local.addr + (r.addr - t.req.remote_addr) + landed
                                && end(span) <= end(t.req.local)
                        });
                        assert!(
                            ok,
                            "read answer {req_id:#x} lands in {span:?}, in no live read task's memory"
                        );
                    }
                    None => panic!("payload into {span:?} for no data frame"),
                }
            }
        }
    }

    /// `span` lies in one registered region (draining ones included) with `need`.
    /// Does the same-host copies waiting, as a shell would: each must lie
    /// in a region (perhaps draining, but pinned) allowing its direction.
    fn copies(&mut self) {
        while let Some(c) = self.link.same_host().poll_copy() {
            assert!(
                self.flags & F_OFFER_LOCAL != 0,
                "a copy on a link that does not offer the path: {c:?}"
            );
            let need = if c.to_peer {
                Perm::REMOTE_READ
            } else {
                Perm::REMOTE_WRITE
            };
            assert!(
                self.region_allows(c.span, need),
                "copy {c:?} outside a region allowing it"
            );
            self.link.same_host_mut().copy_done(Ok(()), &mut self.reg);
        }
    }

    fn region_allows(&self, span: Span, need: Perm) -> bool {
        self.reg.regions().any(|r| {
            r.span.location == span.location
                && r.perm.contains(need)
                && r.span.addr <= span.addr
                && end(span) <= end(r.span)
        })
    }

    // ---- what the link sends ----

    /// Up to `count` transmits; with `hold`, the last payload stays unsent.
    /// Returns how many transmits there were.
    fn transmit(&mut self, count: usize, hold: bool) -> usize {
        let mut sent = 0;
        for _ in 0..count {
            let closed_before = self.closed();
            let state_before = self.link.state();
            let mut buf = std::mem::take(&mut self.tx_buf);
            let t = self.link.poll_transmit(self.now, &mut buf, &self.reg);
            if self.pending_send.is_some() {
                assert_eq!(t, None, "transmit while a payload is still being sent");
            }
            let Some(t) = t else {
                if self.pending_send.is_none() && state_before != LinkState::Handshaking {
                    assert!(
                        !self.link.wants_transmit(),
                        "wants_transmit but nothing to transmit"
                    );
                }
                self.tx_buf = buf;
                break;
            };
            assert!(!self.disconnected, "transmit after the disconnect");
            sent += 1;
            self.check_transmit(&buf, t, closed_before);
            self.tx_buf = buf;
            if t.payload.is_some() {
                if hold {
                    break;
                }
                self.payload_sent();
            }
        }
        sent
    }

    fn payload_sent(&mut self) {
        self.pending_send = None;
        self.pending_frame = None;
        self.link.payload_sent(&mut self.reg);
    }

    /// The shell cannot read the pending payload: the link gives back the
    /// length of the frame announcing it, which the peer then never sees.
    fn payload_unavailable(&mut self) {
        let why = Status::new(ErrorCode::RuntimeError, "fuzz: payload unreadable");
        let dropped = self.link.payload_unavailable(why, &mut self.reg);
        let (Some((span, _)), Some(frame)) = (self.pending_send.take(), self.pending_frame.take()) else {
            assert_eq!(dropped, 0, "a frame taken back with no payload pending");
            return;
        };
        match frame {
            Seen::ReadData { req_id, len } => {
                assert_eq!(dropped, HEADER_LEN + 8, "ReadData frame length");
                // The peer's read is now answered with an Error.
                self.in_reads.push(PeerRequest {
                    req_id,
                    addr: span.addr,
                    len: u64::from(len),
                    location: Some(span.location),
                    allowed: false,
                    region: None,
                });
            }
            Seen::WriteData { req_id, .. } => {
                assert_eq!(dropped, HEADER_LEN + 24, "WriteData frame length");
                // The peer never sees it, so it is never answered.
                self.out_writes.retain(|&w| w != req_id);
            }
            other => panic!("a payload announced by {other:?}"),
        }
    }

    /// The shell cannot place the payload arriving: the rest is discarded;
    /// a write of the peer is then refused.
    fn landing_failed(&mut self) {
        let before = self.link.poll_payload();
        let why = Status::new(ErrorCode::RuntimeError, "fuzz: payload unplaceable");
        self.link.landing_failed(why, &mut self.reg);
        let after = self.link.poll_payload();
        let Some(PayloadDest::Memory(span)) = before else {
            assert_eq!(after, before, "landing_failed without memory to fill");
            return;
        };
        assert_eq!(
            after,
            Some(PayloadDest::Discard(span.len)),
            "the rest is discarded"
        );
        if let Some(Incoming::Write { req, .. }) = self.in_cur.as_mut() {
            req.allowed = false;
        }
        if let Some(dest) = after {
            self.check_dest(dest);
        }
    }

    fn check_transmit(&mut self, buf: &[u8], t: Transmit, closed_before: bool) {
        assert!(t.len > 0 && t.len <= buf.len(), "transmit of {} bytes", t.len);
        let bytes = &buf[..t.len];
        let mut dec = self.out_dec.take().expect("output decoder");
        let mut at = 0;
        let mut boundary = 0;
        let mut with_payload = None;
        loop {
            match dec.progress() {
                Progress::NeedMore => {
                    if at == bytes.len() {
                        break;
                    }
                    let n = dec
                        .feed(&bytes[at..])
                        .unwrap_or_else(|e| panic!("the link sent a malformed frame: {e}"));
                    at += n;
                }
                Progress::Frame => {
                    let seen = match dec.frame() {
                        Some(Ok(f)) => Seen::of(&f),
                        other => panic!("the link sent a frame that does not decode: {other:?}"),
                    };
                    dec.next();
                    boundary = at;
                    if let Progress::Payload(n) = dec.progress() {
                        assert_eq!(at, bytes.len(), "frames follow a data frame in one transmit");
                        with_payload = Some((seen, n));
                        break;
                    }
                    self.on_link_frame(seen, None, closed_before);
                }
                Progress::Payload(_) => unreachable!("payloads are consumed below"),
            }
        }
        assert_eq!(boundary, bytes.len(), "a transmit ends inside a frame");
        match (with_payload, t.payload) {
            (Some((seen, n)), Some(span)) => {
                assert_eq!(span.len, u64::from(n), "payload span vs payload length");
                let _ = self.mem.read(span);
                self.on_link_frame(seen, Some(span), closed_before);
                dec.payload_consumed(n);
            }
            (None, None) => {}
            (frame, span) => panic!("transmit payload {span:?} does not match its frames ({frame:?})"),
        }
        self.out_dec = Some(dec);
    }

    fn send_limit(&self) -> u64 {
        let peer = self.link.peer().expect("requests only after the handshake");
        u64::from(peer.max_payload.min(LINK_MAX_PAYLOAD))
    }

    fn on_link_frame(&mut self, seen: Seen, payload: Option<Span>, closed_before: bool) {
        if self.trace {
            eprintln!("  link sent {seen:?} {payload:?}");
        }
        let connector = self.flags & F_CONNECTOR != 0;
        // An acceptor refusing the connector's secret sends its HelloAck,
        // its only one, before the Error.
        let refusing_ack = matches!(seen, Seen::HelloAck)
            && !connector
            && self
                .link
                .close_reason()
                .is_some_and(|why| why.code() == ErrorCode::NotAuthorized);
        if closed_before && !refusing_ack {
            assert!(
                matches!(seen, Seen::Error { req_id: 0 } | Seen::Goodbye),
                "the link sent {seen:?} after it closed"
            );
        }
        match seen {
            Seen::Hello | Seen::HelloAck => {
                assert_eq!(
                    matches!(seen, Seen::Hello),
                    connector,
                    "{seen:?} from the wrong side"
                );
                assert!(!self.sent_hello, "a second {seen:?}");
                self.sent_hello = true;
            }
            Seen::Auth => {
                assert!(
                    connector && self.flags & F_SECRET != 0,
                    "Auth from an acceptor or without a secret"
                );
                assert!(!self.sent_auth, "a second Auth");
                self.sent_auth = true;
            }
            Seen::ReadReq {
                req_id,
                addr,
                location,
                len,
            } => {
                let len = u64::from(len);
                self.check_request(req_id, len);
                let ok = self.tasks.iter().any(|t| {
                    t.req.op == Op::Read
                        && !t.canceled
                        && t.req.remote_location == location
                        && addr >= t.req.remote_addr
                        && addr - t.req.remote_addr + len <= t.req.local.len
                });
                assert!(ok, "ReadReq {addr:#x}+{len:#x} for no live read task");
                self.out_read_log
                    .insert(req_id, LinkRequest { addr, len, location });
                self.out_reads.push((req_id, len as u32));
            }
            Seen::WriteData {
                req_id,
                addr,
                location,
                len,
            } => {
                let len = u64::from(len);
                self.check_request(req_id, len);
                let span = payload.expect("a WriteData carries its payload");
                let owners: Vec<TaskId> = self
                    .tasks
                    .iter()
                    .filter(|t| {
                        t.req.op == Op::Write
                            && !t.canceled
                            && t.req.remote_location == location
                            && addr >= t.req.remote_addr
                            && span.location == t.req.local.location
                            && span.addr == t.req.local.addr + (addr - t.req.remote_addr)
                            && end(span) <= end(t.req.local)
                    })
                    .map(|t| t.id)
                    .collect();
                assert!(
                    !owners.is_empty(),
                    "WriteData from {span:?} to {addr:#x}: no live write task owns it"
                );
                self.pending_send = Some((span, (owners.len() == 1).then(|| owners[0])));
                self.pending_frame = Some(seen);
                self.out_writes.push(req_id);
            }
            Seen::ReadData { req_id, len } => {
                let span = payload.expect("a ReadData carries its payload");
                let i = self.in_reads.iter().position(|r| {
                    r.req_id == req_id
                        && r.allowed
                        && r.addr == span.addr
                        && r.len == u64::from(len)
                        && r.location.is_none_or(|l| l == span.location)
                });
                let i =
                    i.unwrap_or_else(|| panic!("ReadData {req_id:#x} from {span:?} answers no allowed read"));
                self.in_reads.remove(i);
                assert!(
                    self.region_allows(span, Perm::REMOTE_READ),
                    "ReadData from outside a readable region"
                );
                self.pending_send = Some((span, None));
                self.pending_frame = Some(seen);
            }
            Seen::WriteAck { req_id } => {
                let i = self
                    .in_writes
                    .iter()
                    .position(|w| w.req_id == req_id && w.allowed);
                let i = i.unwrap_or_else(|| panic!("WriteAck {req_id:#x} acks no landed write"));
                self.in_writes.remove(i);
            }
            Seen::Error { req_id: 0 } => {
                assert!(closed_before, "Error with id 0 (link close) from an open link");
                assert!(!self.sent_final_error, "a second closing Error");
                self.sent_final_error = true;
            }
            Seen::Error { req_id } => {
                if let Some(i) = self
                    .in_reads
                    .iter()
                    .position(|r| r.req_id == req_id && !r.allowed)
                {
                    self.in_reads.remove(i);
                } else if let Some(i) = self
                    .in_writes
                    .iter()
                    .position(|w| w.req_id == req_id && !w.allowed)
                {
                    self.in_writes.remove(i);
                } else if let Some(i) = self.in_infos.iter().position(|&q| q == req_id) {
                    self.in_infos.remove(i);
                } else {
                    panic!("Error {req_id:#x} answers no refused request of the peer");
                }
            }
            Seen::Notify => assert_eq!(self.link.state(), LinkState::Established),
            Seen::InfoReq { req_id, after } => {
                assert_eq!(self.link.state(), LinkState::Established);
                let q = self.query.as_ref().expect("InfoReq with no query under way");
                assert_eq!(
                    after, q.last,
                    "the next page is asked after the last region taken"
                );
                assert!(q.got < q.cap, "InfoReq past the cap");
                self.out_infos.push(req_id);
                self.out_cursors.insert(req_id, after);
            }
            Seen::InfoReply { req_id, count } => {
                let i = self.in_infos.iter().position(|&q| q == req_id);
                let i = i.unwrap_or_else(|| panic!("InfoReply {req_id:#x} answers no query"));
                self.in_infos.remove(i);
                assert!(count <= INFO_PAGE_MAX);
            }
            Seen::Ping { token } => self.out_pings.push(token),
            // Token 0 is the keepalive a receiver sends unasked while a
            // payload arrives (docs/PROTOCOL.md 11.1).
            Seen::Pong { token } => {
                assert!(
                    token == 0 || self.in_pings.contains(&token),
                    "Pong {token} answers no ping"
                );
                if self.pong_owed == Some(token) {
                    self.pong_owed = None;
                }
            }
            Seen::Goodbye => {
                assert!(closed_before, "Goodbye from an open link");
                assert!(!self.sent_goodbye, "a second Goodbye");
                self.sent_goodbye = true;
            }
            Seen::LocalMap(m) => self.on_link_map(m),
            Seen::RdmaConn(m) => {
                assert!(!self.rdma_sent, "a second RdmaConn from the link");
                self.rdma_sent = true;
                let rdma = self.link.rdma();
                match m {
                    RdmaMsg::Offer(c) => {
                        assert!(self.flags & F_CONNECTOR != 0, "an offer from the acceptor");
                        assert_eq!(rdma.local(), Some(c.as_slice()));
                    }
                    RdmaMsg::Answer(c) => {
                        assert!(self.flags & F_CONNECTOR == 0, "an answer from the connector");
                        assert_eq!(rdma.local(), Some(c.as_slice()));
                    }
                    RdmaMsg::Off(why) => {
                        assert!(self.flags & F_CONNECTOR == 0, "a refusal from the connector");
                        assert_eq!(rdma.refusal(), Some(why));
                    }
                }
            }
            Seen::LocalReq { .. } | Seen::PidChallenge | Seen::LocalKey | Seen::KeyClosed => {
                panic!("{seen:?}: same-host frame from a link whose shell never enabled the path")
            }
            Seen::RdmaKey => panic!("an RdmaKey from a link whose shell announced no region"),
            Seen::RdmaKeyClosed { id } => {
                let at = self.rdma_withdrawn.iter().position(|&w| w == id);
                let at = at.unwrap_or_else(|| {
                    panic!("RdmaKeyClosed for region {id:#x}, which the peer never withdrew")
                });
                self.rdma_withdrawn.swap_remove(at);
            }
        }
    }

    /// A `LocalMap` of the link: to a peer that maps buffers, for what the
    /// shell announced or withdrew, by the rules the peer checks.
    fn on_link_map(&mut self, m: LocalMap) {
        assert!(
            self.flags & F_MAPS != 0,
            "LocalMap to a peer that maps no buffers"
        );
        let due = |e: &(LocalMap, bool, bool)| {
            e.0.id == m.id
                && if m.len == 0 {
                    e.1 && e.2
                } else {
                    !e.1 && !e.2 && e.0 == m
                }
        };
        let i = self.my_maps.iter().position(due);
        let i = i.unwrap_or_else(|| panic!("{m:?} was not due: {:?}", self.my_maps));
        if m.len == 0 {
            self.my_maps.remove(i);
        } else {
            self.my_maps[i].1 = true;
        }
        assert!(
            apply_map(&mut self.peer_view, m),
            "{m:?} breaks a rule: {:?}",
            self.peer_view
        );
    }

    /// A request of the link: established, fresh id, within the limits,
    /// and no change of buffers still due before it.
    fn check_request(&mut self, req_id: u64, len: u64) {
        assert!(
            self.my_maps.iter().all(|e| e.1 != e.2),
            "a request went before a due LocalMap: {:?}",
            self.my_maps
        );
        assert_eq!(
            self.link.state(),
            LinkState::Established,
            "a request before the handshake ended"
        );
        assert!(
            req_id != 0 && self.out_ids.insert(req_id),
            "request id {req_id:#x} is 0 or reused"
        );
        assert!(
            len > 0 && len <= self.send_limit(),
            "request of {len} bytes, limit {}",
            self.send_limit()
        );
        let peer = self.link.peer().expect("established");
        let window = (peer.max_outstanding as usize).min(MAX_OUTSTANDING);
        assert!(
            self.link.requests_in_flight() <= window,
            "more requests in flight than the peer allows"
        );
    }

    // ---- events ----

    /// Drains events; returns how many there were.
    fn events(&mut self, take_notes: bool, take_info: bool) -> usize {
        for count in 0..100_000 {
            let Some(e) = self.link.poll_event() else {
                return count;
            };
            if self.trace {
                eprintln!("  event {e:?}");
            }
            assert!(!self.closed_event, "event {e:?} after Closed");
            match e {
                Event::Connected => {
                    assert!(!self.connected, "Connected twice");
                    self.connected = true;
                    if self.flags & F_MAPS != 0 {
                        self.link.same_host_mut().set_available(true);
                    }
                    assert_eq!(self.link.state(), LinkState::Established);
                    assert!(self.link.peer().is_some());
                }
                Event::Progress { task, transferred } => {
                    let t = self.tasks.iter_mut().find(|t| t.id == task);
                    let t = t.unwrap_or_else(|| panic!("Progress of {task}, which is not running"));
                    assert!(
                        transferred >= t.progress && transferred <= t.req.local.len,
                        "Progress {transferred}"
                    );
                    t.progress = transferred;
                }
                Event::TaskDone { task, result } => {
                    assert!(
                        !self.rdma_posted.contains(&task),
                        "TaskDone for {task} while the NIC may still move its bytes"
                    );
                    let i = self.tasks.iter().position(|t| t.id == task);
                    let i = i
                        .unwrap_or_else(|| panic!("TaskDone for {task}, which is not running (done twice?)"));
                    if let Some((_, Some(owner))) = self.pending_send {
                        assert_ne!(owner, task, "TaskDone while its write payload is being sent");
                    }
                    let t = self.tasks.remove(i);
                    if t.canceled {
                        assert_eq!(
                            result.map_err(|e| e.code()),
                            Err(ErrorCode::Canceled),
                            "canceled task"
                        );
                    }
                }
                Event::Notification => {
                    if take_notes {
                        assert!(
                            self.link.take_notification().is_some(),
                            "announced notification missing"
                        );
                        self.notes_taken += 1;
                    }
                }
                Event::Rdma => {
                    assert!(
                        self.link.rdma().peer().is_some(),
                        "Event::Rdma before the peer said anything"
                    );
                }
                Event::SegmentInfo => {
                    if take_info {
                        let page = self.link.take_segment_info();
                        self.on_page(page.expect("announced segment info missing"));
                    }
                }
                Event::Closed(_) => {
                    assert_eq!(self.link.state(), LinkState::Closed);
                    assert!(
                        self.tasks.is_empty(),
                        "Closed before every task ended: {:?}",
                        self.tasks
                    );
                    assert!(self.pending_send.is_none() || self.disconnected || self.pending_is_response());
                    self.closed_event = true;
                }
            }
        }
        panic!("poll_event never runs dry");
    }

    /// A page taken: in order after every region taken before, within the
    /// cap; the last one ends the query.
    fn on_page(&mut self, page: te_proto::Result<te_proto::link::SegmentPage>) {
        let q = self.query.as_mut().expect("segment info with no query under way");
        let page = match page {
            Ok(page) => page,
            Err(_) => {
                self.query = None;
                return;
            }
        };
        for r in &page.regions {
            let key = (r.span.location, r.span.addr);
            assert!(q.last.is_none_or(|l| key > l), "{key:?} after {:?}", q.last);
            q.last = Some(key);
        }
        q.got += page.regions.len();
        assert!(q.got <= q.cap, "{} regions for a cap of {}", q.got, q.cap);
        assert!(!(page.more && page.truncated));
        if page.truncated {
            assert_eq!(q.got, q.cap, "truncated before the cap");
        }
        if !page.more {
            self.query = None;
        }
    }

    fn pending_is_response(&self) -> bool {
        matches!(self.pending_send, Some((_, None)))
    }

    // ---- API calls ----

    /// [`OP_RDMA_SUBMIT`]: an RDMA task, checked against what the link
    /// knows of the peer's regions.
    fn rdma_submit(&mut self, input: &mut Input<'_>) {
        let flags = input.u8();
        let local = local_span(input);
        let remote_addr = 0x8000_0000 + u64::from(input.u16());
        self.link.rdma_mut().set_available(true);
        let op = if flags & 1 != 0 { Op::Write } else { Op::Read };
        let len = local.len;
        let req = TransferRequest {
            op,
            local,
            segment: 1,
            remote_addr,
            remote_location: None,
        };
        self.next_index += 1;
        let id = TaskId {
            batch: BATCH,
            index: self.next_index,
        };
        let key = self.link.rdma().peer_key(remote_addr, len);
        let available = self.link.rdma().available();
        let r = self.link.rdma_mut().submit(id, &req, None, RDMA_LKEY);
        let code = r.as_ref().err().map(|e| e.code());
        let want = if self.closed() {
            Some(ErrorCode::Disconnected)
        } else if !available {
            Some(ErrorCode::NotSupported)
        } else if key.is_none() {
            Some(ErrorCode::NotFound)
        } else if key.is_some_and(|k| !k.perm.contains(op.remote_perm())) {
            Some(ErrorCode::NotAuthorized)
        } else if len == 0 {
            Some(ErrorCode::Invalid)
        } else if self.tasks.len() >= MAX_LINK_TASKS {
            Some(ErrorCode::NotReady)
        } else {
            None
        };
        assert_eq!(code, want, "RDMA submit: {r:?}");
        if r.is_ok() {
            self.tasks.push(TaskRec {
                id,
                req,
                canceled: false,
                progress: 0,
            });
        }
    }

    fn submit(&mut self, input: &mut Input<'_>) {
        let flags = input.u8();
        let local = local_span(input);
        let len = local.len;
        let region = input.u8();
        let roff = u64::from(input.u16());
        let locmode = input.u8();
        let deadline = u32::from(input.u8());
        let (base, remote_location) = target(region, locmode);
        let op = if flags & 1 != 0 { Op::Write } else { Op::Read };
        let req = TransferRequest {
            op,
            local,
            segment: 1,
            remote_addr: base + roff,
            remote_location,
        };
        let reuse = flags & 2 != 0 && !self.tasks.is_empty();
        let id = if reuse {
            self.tasks[usize::from(flags >> 4) % self.tasks.len()].id
        } else {
            self.next_index += 1;
            TaskId {
                batch: BATCH,
                index: self.next_index,
            }
        };
        let deadline = (flags & 4 != 0).then(|| self.now + STEP * (deadline * deadline));
        let r = self.link.submit(id, &req, deadline);
        let code = r.as_ref().err().map(|e| e.code());
        if self.closed() {
            assert_eq!(code, Some(ErrorCode::Disconnected), "submit to a closed link");
        } else if reuse || len == 0 {
            assert_eq!(
                code,
                Some(ErrorCode::Invalid),
                "submit of a running id or an empty span"
            );
        } else if self.tasks.len() < MAX_LINK_TASKS {
            assert_eq!(code, None, "submit refused: {r:?}");
        } else {
            assert_eq!(code, Some(ErrorCode::NotReady), "submit to a full link");
        }
        if r.is_ok() {
            self.tasks.push(TaskRec {
                id,
                req,
                canceled: false,
                progress: 0,
            });
        }
    }

    /// Announces or withdraws one of this side's buffers, checking the
    /// answer against the model.
    fn map(&mut self, input: &mut Input<'_>) {
        let flags = input.u8();
        let id = u64::from(input.u8() % 80);
        let b = u64::from(input.u8());
        let len = u64::from(input.u8()) * 4;
        if self.closed() {
            self.my_maps.clear();
        }
        let live = |e: &&(LocalMap, bool, bool)| !e.2;
        if flags & 1 != 0 {
            let known = self.my_maps.iter().filter(live).any(|e| e.0.id == id);
            assert_eq!(
                self.link.same_host_mut().withdraw_local_map(id),
                known,
                "withdraw of {id}"
            );
            if let Some(i) = self.my_maps.iter().position(|e| e.0.id == id && !e.2) {
                if self.my_maps[i].1 {
                    self.my_maps[i].2 = true;
                } else {
                    self.my_maps.remove(i);
                }
            }
        } else {
            let base = match flags & 6 {
                0 => 0x6000_0000 + b * 0x100,
                2 => 0,
                _ => u64::MAX - b,
            };
            let m = LocalMap { id, base, len, fd: 5 };
            let may = self.flags & F_MAPS != 0
                && self.link.same_host().available()
                && self
                    .link
                    .peer()
                    .is_some_and(|p| p.caps.contains(Caps::SHARED_MEMORY));
            let bad = len == 0
                || base == 0
                || base.checked_add(len).is_none()
                || self.my_maps.iter().any(|e| e.0.id == id)
                || self
                    .my_maps
                    .iter()
                    .filter(live)
                    .any(|e| base < e.0.base + e.0.len && e.0.base < base.saturating_add(len));
            let want = if self.closed() {
                Some(ErrorCode::Disconnected)
            } else if !may {
                Some(ErrorCode::NotSupported)
            } else if bad {
                Some(ErrorCode::Invalid)
            } else if self.my_maps.len() == MAX_LOCAL_MAPS {
                Some(ErrorCode::NotReady)
            } else {
                None
            };
            let r = self.link.same_host_mut().announce_local_map(m);
            assert_eq!(r.as_ref().err().map(|e| e.code()), want, "announce {m:?}: {r:?}");
            if r.is_ok() {
                self.my_maps.push((m, false, false));
            }
        }
        for e in &self.my_maps {
            assert_eq!(self.link.same_host().local_map_announced(e.0.id), !e.2, "{e:?}");
        }
    }

    fn cancel(&mut self, k: u8) {
        let id = if self.tasks.is_empty() || k == 0xff {
            TaskId {
                batch: BATCH,
                index: u32::MAX,
            }
        } else {
            self.tasks[usize::from(k) % self.tasks.len()].id
        };
        let canceled = self.link.cancel(id);
        if canceled {
            let t = self.tasks.iter_mut().find(|t| t.id == id);
            let t = t.unwrap_or_else(|| panic!("cancel of {id}, which is not running, succeeded"));
            assert!(!t.canceled, "{id} canceled twice");
            t.canceled = true;
        }
    }

    fn toggle(&mut self, i: usize) {
        let r = REGIONS[i];
        if self.unregistered[i] {
            if self.reg.register(r).is_ok() {
                self.unregistered[i] = false;
            }
        } else {
            self.reg
                .unregister(r.span.location, r.span.addr)
                .unwrap_or_else(|e| panic!("unregister of a registered region: {e}"));
            // As the runtime does: queued answers of a draining region are
            // refused; the model expects an `Error` for each from now on.
            let refused = self.link.revoke_draining(&mut self.reg);
            let mut marked = 0;
            let key = Some((r.span.location, r.span.addr));
            for q in self.in_reads.iter_mut().filter(|q| q.allowed && q.region == key) {
                q.allowed = false;
                marked += 1;
            }
            if !self.closed() {
                assert_eq!(
                    refused, marked,
                    "revoke_draining refused other answers than queued"
                );
            }
            self.unregistered[i] = true;
        }
    }

    // ---- the end ----

    /// Ends the run: close or disconnect, drain, and check that nothing is
    /// left behind.
    fn finish(mut self) {
        self.pump(usize::MAX, usize::MAX);
        let disconnect = self.flags & F_DISCONNECT_END != 0;
        if disconnect {
            self.link.handle_disconnect(&mut self.reg);
            self.pending_send = None;
            self.pending_frame = None;
            self.disconnected = true;
        } else {
            self.link.close(&mut self.reg);
        }
        assert!(self.closed());
        // The shell's NIC ends what it was given (the runtime destroys the
        // queue pair first).
        for task in std::mem::take(&mut self.rdma_posted) {
            let why = Status::new(ErrorCode::Disconnected, "queue pair destroyed");
            assert!(self.link.rdma_mut().done(task, Err(why)));
        }
        let mut quiet = false;
        for _ in 0..1000 {
            if self.pending_send.is_some() {
                self.payload_sent();
            }
            let sent = self.transmit(64, false);
            let events = self.events(true, true);
            if sent == 0 && events == 0 {
                quiet = true;
                break;
            }
        }
        assert!(quiet, "the link never quiets down after the close");
        assert!(self.closed_event, "no Closed event");
        assert!(self.tasks.is_empty());
        assert_eq!(self.link.tasks_in_flight(), 0);
        assert_eq!(self.link.requests_in_flight(), 0);
        assert_eq!(self.link.poll_timeout(), None);
        assert!(!self.link.wants_transmit());
        for r in self.reg.regions() {
            assert_eq!(
                self.reg.pins(r.span.location, r.span.addr),
                Some(0),
                "pin left on {r:?}"
            );
        }
        for (i, r) in REGIONS.iter().enumerate() {
            if self.unregistered[i] {
                assert!(
                    !self.reg.regions().any(|x| x == *r),
                    "unregistered {r:?} never drained"
                );
            }
        }
        let task = TaskId {
            batch: BATCH,
            index: 0,
        };
        let req = TransferRequest {
            op: Op::Read,
            local: REGIONS[0].span,
            segment: 1,
            remote_addr: 0x1000,
            remote_location: None,
        };
        let r = self.link.submit(task, &req, None);
        assert_eq!(r.map_err(|e| e.code()), Err(ErrorCode::Disconnected));
        assert_eq!(self.link.poll_event(), None);
    }
}

/// The remote address base and location an input picks: a region's base
/// (or address 0), and no location, the region's, another one, or an
/// unregistered one.
fn target(region: u8, locmode: u8) -> (u64, Option<Location>) {
    let (base, location) = match REGIONS.get(usize::from(region % 7)) {
        Some(r) => (r.span.addr, r.span.location),
        None => (0, Location::Cpu),
    };
    let location = match locmode % 4 {
        0 => None,
        1 => Some(location),
        2 => Some(if location == Location::Cpu {
            Location::Sim(0)
        } else {
            Location::Cpu
        }),
        _ => Some(Location::Npu(9)),
    };
    (base, location)
}

/// `area off:u16 len:u16`: a span inside one of the link's regions (of 0
/// bytes at most at its end).
fn local_span(input: &mut Input<'_>) -> Span {
    let area = REGIONS[usize::from(input.u8() % 6)].span;
    let off = u64::from(input.u16()) % area.len;
    let len = u64::from(input.u16()).min(area.len - off);
    Span {
        addr: area.addr + off,
        len,
        location: area.location,
    }
}

/// Removes and returns the `k`-th open id, or makes one up from `k`.
fn take_or(open: &mut Vec<u64>, k: u8) -> u64 {
    if open.is_empty() {
        u64::from(k)
    } else {
        open.remove(usize::from(k) % open.len())
    }
}

/// `HMAC-SHA256(SECRET, label || nonce_c || nonce_a)`, the handshake proof.
fn proof(label: &[u8], nonce_c: &[u8; 32], nonce_a: &[u8; 32]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(SECRET).expect("HMAC takes keys of any length");
    m.update(label);
    m.update(nonce_c);
    m.update(nonce_a);
    m.finalize().into_bytes().into()
}

/// Builds link scripts (for the seed corpus).
pub struct Script(pub Vec<u8>);

impl Script {
    /// A script with the `F_*` flags.
    pub fn new(flags: u8) -> Script {
        Script(vec![flags])
    }

    fn op(mut self, op: u8, args: &[u8]) -> Script {
        self.0.push(op);
        self.0.extend_from_slice(args);
        self
    }

    /// Raw peer bytes.
    pub fn raw(self, bytes: &[u8]) -> Script {
        let n = u16::try_from(bytes.len()).expect("raw chunk fits u16");
        let mut s = self.op(OP_RAW, &n.to_be_bytes());
        s.0.extend_from_slice(bytes);
        s
    }

    /// A peer frame of `kind` (`K_*`) with its argument bytes.
    pub fn frame(self, kind: u8, args: &[u8]) -> Script {
        let mut a = vec![kind];
        a.extend_from_slice(args);
        self.op(OP_FRAME, &a)
    }

    /// A read request (`K_READ_REQ`) or write (`K_WRITE_DATA`) of the peer.
    pub fn access(self, kind: u8, region: u8, off: u16, len: u16, locmode: u8, req: u8) -> Script {
        let mut a = vec![region];
        a.extend_from_slice(&off.to_be_bytes());
        a.extend_from_slice(&len.to_be_bytes());
        a.extend_from_slice(&[locmode, req]);
        self.frame(kind, &a)
    }

    /// Feed the peer's bytes in pieces of `piece` (0: all at once).
    pub fn pump(self, piece: u8) -> Script {
        self.op(OP_PUMP, &[piece, 0])
    }

    /// Feed at most `rounds` pieces of `piece` bytes of the peer's bytes.
    pub fn pump_some(self, piece: u8, rounds: u8) -> Script {
        self.op(OP_PUMP, &[piece, rounds])
    }

    /// Advance time by `step² × 200 µs`.
    pub fn time(self, step: u8) -> Script {
        self.op(OP_TIME, &[step])
    }

    /// Transmits (see [`OP_TRANSMIT`]).
    pub fn transmit(self, flags: u8) -> Script {
        self.op(OP_TRANSMIT, &[flags])
    }

    /// The pending payload is sent.
    pub fn sent(self) -> Script {
        self.op(OP_SENT, &[])
    }

    /// The pending payload cannot be read (see [`OP_UNAVAILABLE`]).
    pub fn unavailable(self) -> Script {
        self.op(OP_UNAVAILABLE, &[])
    }

    /// The payload arriving cannot be placed (see [`OP_LANDING_FAILED`]).
    pub fn landing_failed(self) -> Script {
        self.op(OP_LANDING_FAILED, &[])
    }

    /// Drain events (see [`OP_EVENTS`]).
    pub fn events(self, flags: u8) -> Script {
        self.op(OP_EVENTS, &[flags])
    }

    /// Submit a task (see [`OP_SUBMIT`]).
    #[allow(clippy::too_many_arguments)]
    pub fn submit(
        self,
        flags: u8,
        area: u8,
        off: u16,
        len: u16,
        region: u8,
        roff: u16,
        locmode: u8,
        deadline: u8,
    ) -> Script {
        let mut a = vec![flags, area];
        a.extend_from_slice(&off.to_be_bytes());
        a.extend_from_slice(&len.to_be_bytes());
        a.push(region);
        a.extend_from_slice(&roff.to_be_bytes());
        a.extend_from_slice(&[locmode, deadline]);
        self.op(OP_SUBMIT, &a)
    }

    /// Cancel the `k`-th live task.
    pub fn cancel(self, k: u8) -> Script {
        self.op(OP_CANCEL, &[k])
    }

    /// Close locally.
    pub fn close(self) -> Script {
        self.op(OP_CLOSE, &[])
    }

    /// The connection is gone.
    pub fn disconnect(self) -> Script {
        self.op(OP_DISCONNECT, &[])
    }

    /// Send a notification.
    pub fn notify(self, name_len: u8, msg_len: u16) -> Script {
        let mut a = vec![name_len];
        a.extend_from_slice(&msg_len.to_be_bytes());
        self.op(OP_NOTIFY, &a)
    }

    /// Query the peer's segment info, at most `cap` regions.
    pub fn query(self, cap: u8) -> Script {
        self.op(OP_QUERY, &[cap])
    }

    /// Unregister region `idx`, or register it again.
    pub fn toggle(self, idx: u8) -> Script {
        self.op(OP_TOGGLE, &[idx])
    }

    /// Announce (flags bit 0 clear) or withdraw one of this side's buffers
    /// (see [`OP_MAP`]).
    pub fn map(self, flags: u8, id: u8, base: u8, len: u8) -> Script {
        self.op(OP_MAP, &[flags, id, base, len])
    }

    /// A `LocalMap` of the peer (see [`K_LOCAL_MAP`]).
    pub fn peer_map(self, flags: u8, id: u8, base: u8, len: u8) -> Script {
        self.frame(K_LOCAL_MAP, &[flags, id, base, len, 9])
    }

    /// The link's side of the RDMA exchange (see [`OP_RDMA`]).
    pub fn rdma(self, p: u8) -> Script {
        self.op(OP_RDMA, &[p])
    }

    /// An RDMA task (see [`OP_RDMA_SUBMIT`]).
    pub fn rdma_submit(self, flags: u8, area: u8, off: u16, len: u16, roff: u16) -> Script {
        let mut a = vec![flags, area];
        for v in [off, len, roff] {
            a.extend_from_slice(&v.to_be_bytes());
        }
        self.op(OP_RDMA_SUBMIT, &a)
    }

    /// The shell posts the next RDMA task (see [`OP_RDMA_POST`]).
    pub fn rdma_post(self) -> Script {
        self.op(OP_RDMA_POST, &[])
    }

    /// The NIC is done with a posted task (see [`OP_RDMA_DONE`]).
    pub fn rdma_done(self, k: u8, ok: bool) -> Script {
        self.op(OP_RDMA_DONE, &[k, u8::from(ok)])
    }

    /// An `RdmaKey` or `RdmaKeyClosed` of the peer (see [`K_RDMA_KEY`]).
    pub fn peer_rdma_key(self, flags: u8, id: u8, base: u8, len: u8) -> Script {
        self.frame(K_RDMA_KEY, &[flags, id, base, len])
    }
}
