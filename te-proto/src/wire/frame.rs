//! The decoded [`Frame`] view and the encoder. The body layouts are in
//! `body.rs`, the decoder's checks in `decode.rs`.

use core::mem::{offset_of, size_of};

use zerocopy::byteorder::network_endian::{U16, U32, U64};
use zerocopy::{Immutable, IntoBytes};

use super::body::*;
use super::decode::region_from_entry;
use super::error::WireError;
use super::header::{Header, Opcode, FLAG_MORE, FLAG_PEER_DEVICE, HEADER_LEN};
use super::{
    ERROR_MSG_MAX, INFO_PAGE_MAX, NOTIFY_MSG_MAX, NOTIFY_NAME_MAX, PID_SOCKET_MAX, SEGMENT_NAME_MAX,
};
use crate::driver::{IpcKey, IPC_KEY_MAX};
use crate::error::ErrorCode;
use crate::location::Location;
use crate::rdma::{Conns, RdmaOff};
use crate::region::{Perm, Region};

/// Wire value of a location field meaning "any location: resolve by address".
pub const LOCATION_ANY: u32 = 0xffff_ffff;
/// Handshake auth mode: no authentication.
pub const AUTH_NONE: u8 = 0;
/// Handshake auth mode: HMAC-SHA256 challenge-response over a shared secret.
pub const AUTH_HMAC_SHA256: u8 = 1;
/// Size of one region entry in an `InfoReply`.
pub const REGION_ENTRY_LEN: usize = 28;

/// The handshake fields of `Hello` and `HelloAck`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello<'a> {
    /// Capability bits of the sender (unknown bits are ignored).
    pub caps: u32,
    /// Largest payload the sender accepts in one frame.
    pub max_payload: u32,
    /// Most requests the sender accepts in flight from this peer.
    pub max_outstanding: u32,
    /// [`AUTH_NONE`] or [`AUTH_HMAC_SHA256`].
    pub auth: u8,
    /// Opaque host identity (same-host detection).
    pub host_id: [u8; 32],
    /// The sender's challenge nonce.
    pub nonce: [u8; 32],
    /// `HelloAck` only: the acceptor's proof of the secret (zero otherwise).
    pub mac: [u8; 32],
    /// The sender's segment name.
    pub name: &'a str,
}

/// The region entries of an `InfoReply`, validated at decode time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionList<'a> {
    pub(super) raw: &'a [u8],
}

impl<'a> RegionList<'a> {
    /// Number of regions.
    pub fn len(&self) -> usize {
        self.raw.len() / REGION_ENTRY_LEN
    }

    /// True when the page holds no region.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The regions, in the order the peer sent them.
    pub fn iter(&self) -> impl Iterator<Item = Region> + 'a {
        self.entries().map(|(r, _)| r)
    }

    /// The regions with the rkey the peer's NIC checks for each (`None`
    /// where the peer registered the region with no RDMA device), in the
    /// order the peer sent them.
    pub fn entries(&self) -> impl Iterator<Item = (Region, Option<u32>)> + 'a {
        self.raw.chunks_exact(REGION_ENTRY_LEN).filter_map(|c| {
            let r = region_from_entry(c);
            // The decoder checked every entry before making the list.
            debug_assert!(r.is_ok(), "a region list with a bad entry: {r:?}");
            r.ok()
        })
    }
}

/// What an `RdmaConn` frame says (docs/PROTOCOL.md, "RDMA path").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RdmaMsg {
    /// The connector offers its queue pairs, one per NIC.
    Offer(Conns),
    /// The acceptor takes the offer and answers with its own queue pairs.
    Answer(Conns),
    /// The acceptor refuses the offer: there is no RDMA on this link.
    Off(RdmaOff),
}

/// `RdmaConn` kind byte of an offer.
pub(super) const RDMA_OFFER: u8 = 1;
/// `RdmaConn` kind byte of an answer.
pub(super) const RDMA_ANSWER: u8 = 2;
/// `RdmaConn` kind byte of a refusal.
pub(super) const RDMA_OFF: u8 = 3;

/// A decoded frame (header and body; a payload, if any, follows on the wire
/// and is not part of this value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Handshake opening.
    Hello(Hello<'a>),
    /// Handshake answer.
    HelloAck(Hello<'a>),
    /// The connecting side's proof of the secret.
    Auth {
        /// HMAC-SHA256 proof.
        mac: [u8; 32],
    },
    /// Read `len` bytes at `addr` of the receiver's memory.
    ReadReq {
        /// Request id, echoed by the answer.
        req_id: u64,
        /// First byte to read.
        addr: u64,
        /// Location, or `None` to resolve by address.
        location: Option<Location>,
        /// Bytes to read (non-zero, at most the receiver's max payload).
        len: u32,
    },
    /// Answer to a read; `len` payload bytes follow.
    ReadData {
        /// The request's id.
        req_id: u64,
        /// Payload length.
        len: u32,
    },
    /// Write the `len` payload bytes that follow at `addr`.
    WriteData {
        /// Request id, echoed by the ack.
        req_id: u64,
        /// First byte to write.
        addr: u64,
        /// Location, or `None` to resolve by address.
        location: Option<Location>,
        /// Payload length.
        len: u32,
    },
    /// A write was applied.
    WriteAck {
        /// The request's id.
        req_id: u64,
    },
    /// A request failed (or, with id 0, the link is closing).
    Error {
        /// The request's id, 0 for the whole link.
        req_id: u64,
        /// Why (never `Ok`).
        code: ErrorCode,
        /// What was wrong.
        msg: &'a str,
    },
    /// A notification.
    Notify {
        /// Name, 1 to 64 bytes of UTF-8.
        name: &'a str,
        /// Message, up to 2048 bytes.
        msg: &'a [u8],
    },
    /// Ask for a page of remotely visible regions.
    InfoReq {
        /// Request id.
        req_id: u64,
        /// Start after this `(location, base)`; `None` from the start.
        after: Option<(Location, u64)>,
    },
    /// A page of remotely visible regions.
    InfoReply {
        /// The request's id.
        req_id: u64,
        /// More pages follow (ask again after the last region).
        more: bool,
        /// The regions.
        regions: RegionList<'a>,
    },
    /// Liveness probe.
    Ping {
        /// Echoed by the pong.
        token: u64,
    },
    /// Answer to a ping.
    Pong {
        /// The ping's token.
        token: u64,
    },
    /// Orderly close.
    Goodbye {
        /// Why.
        code: ErrorCode,
    },
    /// Same-host path: prove your process id by sending `token` over the
    /// Unix socket named `socket` (docs/PROTOCOL.md, "Same-host path").
    PidChallenge {
        /// Random bytes, valid for this link only.
        token: [u8; 32],
        /// Abstract Unix socket name, 1 to [`PID_SOCKET_MAX`] bytes.
        socket: &'a [u8],
    },
    /// Same-host path: copy the access's span of the receiver's memory to
    /// `peer_addr` in the sender's memory, then answer `WriteAck`.
    LocalRead(LocalAccess),
    /// Same-host path: copy `len` bytes at `peer_addr` of the sender's
    /// memory into the access's span of the receiver, then answer `WriteAck`.
    LocalWrite(LocalAccess),
    /// Same-host path: with `len > 0` the sender announces that its memory
    /// `[base, base + len)` is held by its sealed memfd `fd`; with `len == 0`
    /// it withdraws buffer `id`.
    LocalMap(LocalMap),
    /// Same-host path: with `len > 0` the sender announces that its device
    /// memory `[base, base + len)` on `location` is exported to the
    /// receiver's process under `key`; with `len == 0` it withdraws buffer
    /// `id`.
    LocalKey(LocalKey),
    /// Same-host path: the sender closed its import of device buffer `id`,
    /// which the receiver announced with `LocalKey` and then withdrew.
    KeyClosed {
        /// The receiver's buffer id.
        id: u64,
    },
    /// RDMA path: an offer of queue pairs, the answer, or a refusal.
    RdmaConn(RdmaMsg),
    /// RDMA path: with `len > 0` the sender announces that its host memory
    /// `[base, base + len)` is registered with its NIC under `rkey` with
    /// `perm`; with `len == 0` it withdraws region `id`.
    RdmaKey(RdmaKey),
    /// RDMA path: the sender's READs and WRITEs on region `id`, which the
    /// receiver announced with `RdmaKey` and then withdrew, have all ended.
    RdmaKeyClosed {
        /// The receiver's region id.
        id: u64,
    },
}

/// The fields of `LocalMap`: one buffer of the sender's memory that the
/// receiver may map (or, with `len == 0`, the withdrawal of buffer `id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalMap {
    /// Names the buffer on this link.
    pub id: u64,
    /// First byte of the buffer in the sender's memory (0 in a withdrawal).
    pub base: u64,
    /// Bytes of the buffer; 0 withdraws buffer `id`.
    pub len: u64,
    /// The sender's file descriptor holding the buffer, a sealed memfd (0 in
    /// a withdrawal).
    pub fd: u32,
}

impl LocalMap {
    /// The withdrawal of buffer `id`.
    pub fn withdraw(id: u64) -> LocalMap {
        LocalMap {
            id,
            base: 0,
            len: 0,
            fd: 0,
        }
    }

    /// Whether this is a withdrawal (`len == 0`).
    pub fn is_withdraw(&self) -> bool {
        self.len == 0
    }

    /// One past the buffer's last byte, or `None` when it wraps.
    pub fn end(&self) -> Option<u64> {
        self.base.checked_add(self.len)
    }

    /// Whether the buffer holds all of `[addr, addr + len)`.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        range_contains((self.base, self.len), addr, len)
    }

    /// Whether the buffer shares a byte with `other` (a wrapping range is
    /// taken to run to the end of the address space).
    pub fn overlaps(&self, other: &LocalMap) -> bool {
        ranges_overlap((self.base, self.len), (other.base, other.len))
    }

    /// The wire rules of a `LocalMap` body: an announcement has a non-zero
    /// base and does not wrap; a withdrawal has base and fd 0.
    pub(super) fn check(&self, op: Opcode) -> Result<(), WireError> {
        let bad = |field, value| WireError::BadValue {
            opcode: op,
            field,
            value,
        };
        if self.is_withdraw() {
            if self.base != 0 {
                return Err(bad("withdrawn base", self.base));
            }
            if self.fd != 0 {
                return Err(bad("withdrawn fd", self.fd as u64));
            }
        } else if self.base == 0 || self.end().is_none() {
            return Err(bad("mapped range", self.base));
        }
        Ok(())
    }
}

/// Whether `(base, len)` holds all of `[addr, addr + len)`.
fn range_contains((base, blen): (u64, u64), addr: u64, len: u64) -> bool {
    match (base.checked_add(blen), addr.checked_add(len)) {
        (Some(end), Some(last)) => addr >= base && last <= end,
        _ => false,
    }
}

/// Whether two non-empty ranges share a byte (a wrapping range runs to the
/// end of the address space).
fn ranges_overlap(a: (u64, u64), b: (u64, u64)) -> bool {
    let end = |(base, len): (u64, u64)| base.saturating_add(len);
    a.1 > 0 && b.1 > 0 && a.0 < end(b) && b.0 < end(a)
}

/// The fields of `RdmaKey`: one region of the sender's host memory that the
/// receiver may reach with one-sided RDMA READ and WRITE under `rkey`, as
/// `perm` allows (or, with `len == 0`, the withdrawal of region `id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RdmaKey {
    /// Names the region on this link (its own id space).
    pub id: u64,
    /// First byte of the region in the sender's memory (0 in a withdrawal).
    pub base: u64,
    /// Bytes of the region; 0 withdraws region `id`.
    pub len: u64,
    /// The key the sender's NIC checks (0 in a withdrawal).
    pub rkey: u32,
    /// What the NIC lets the receiver do: at least one remote permission
    /// (empty in a withdrawal).
    pub perm: Perm,
}

impl RdmaKey {
    /// The withdrawal of region `id`.
    pub fn withdraw(id: u64) -> RdmaKey {
        RdmaKey {
            id,
            base: 0,
            len: 0,
            rkey: 0,
            perm: Perm::LOCAL_ONLY,
        }
    }

    /// Whether this is a withdrawal (`len == 0`).
    pub fn is_withdraw(&self) -> bool {
        self.len == 0
    }

    /// Whether the region holds all of `[addr, addr + len)`.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        range_contains((self.base, self.len), addr, len)
    }

    /// Whether the region shares a byte with `other`.
    pub fn overlaps(&self, other: &RdmaKey) -> bool {
        ranges_overlap((self.base, self.len), (other.base, other.len))
    }

    /// The wire rules of an `RdmaKey` body: an announcement has a non-zero
    /// base, does not wrap and grants a remote permission; a withdrawal has
    /// base, rkey and permission 0.
    pub(super) fn check(&self, op: Opcode) -> Result<(), WireError> {
        let bad = |field, value| WireError::BadValue {
            opcode: op,
            field,
            value,
        };
        if self.is_withdraw() {
            if self.base != 0 {
                return Err(bad("withdrawn base", self.base));
            }
            if self.rkey != 0 || !self.perm.is_empty() {
                return Err(bad("withdrawn rkey or permission", u64::from(self.rkey)));
            }
        } else if self.base == 0 || self.base.checked_add(self.len).is_none() {
            return Err(bad("registered range", self.base));
        } else if self.perm.is_empty() {
            return Err(bad("rdma permission", 0));
        }
        Ok(())
    }
}

/// The fields of `LocalKey`: one buffer of the sender's device memory that
/// the receiver may import with an IPC key the sender exported to the
/// receiver's process alone (or, with `len == 0`, the withdrawal of buffer
/// `id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalKey {
    /// Names the buffer on this link (its own id space, apart from
    /// `LocalMap`'s).
    pub id: u64,
    /// First byte of the buffer in the sender's device memory (0 in a
    /// withdrawal).
    pub base: u64,
    /// Bytes of the buffer; 0 withdraws buffer `id`.
    pub len: u64,
    /// The sender's device holding the buffer (`cpu` in a withdrawal).
    pub location: Location,
    /// The export key (`None` in a withdrawal).
    pub key: Option<IpcKey>,
}

impl LocalKey {
    /// The withdrawal of buffer `id`.
    pub fn withdraw(id: u64) -> LocalKey {
        LocalKey {
            id,
            base: 0,
            len: 0,
            location: Location::Cpu,
            key: None,
        }
    }

    /// Whether this is a withdrawal (`len == 0`).
    pub fn is_withdraw(&self) -> bool {
        self.len == 0
    }

    /// One past the buffer's last byte, or `None` when it wraps.
    pub fn end(&self) -> Option<u64> {
        self.base.checked_add(self.len)
    }

    /// Whether the buffer holds all of `[addr, addr + len)`.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        range_contains((self.base, self.len), addr, len)
    }

    /// Whether the buffer shares a byte with `other` on the same device.
    pub fn overlaps(&self, other: &LocalKey) -> bool {
        self.location == other.location && ranges_overlap((self.base, self.len), (other.base, other.len))
    }

    /// The wire rules of a `LocalKey` body: an announcement names a device
    /// (not `cpu`), has a non-zero base, does not wrap and carries a key; a
    /// withdrawal has base 0, location `cpu` and no key.
    pub(super) fn check(&self, op: Opcode) -> Result<(), WireError> {
        let bad = |field, value| WireError::BadValue {
            opcode: op,
            field,
            value,
        };
        if self.is_withdraw() {
            if self.base != 0 {
                return Err(bad("withdrawn base", self.base));
            }
            if self.location != Location::Cpu {
                return Err(bad("withdrawn location", u64::from(self.location.to_wire())));
            }
            if self.key.is_some() {
                return Err(bad("withdrawn key", 1));
            }
            return Ok(());
        }
        if self.base == 0 || self.end().is_none() {
            return Err(bad("imported range", self.base));
        }
        if self.location.is_host() {
            return Err(bad("key location", u64::from(self.location.to_wire())));
        }
        if self.key.is_none() {
            return Err(bad("key length", 0));
        }
        Ok(())
    }
}

/// The fields of `LocalRead` and `LocalWrite`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalAccess {
    /// Request id, echoed by the answer.
    pub req_id: u64,
    /// First byte of the receiver's memory.
    pub addr: u64,
    /// Location, or `None` to resolve by address.
    pub location: Option<Location>,
    /// Bytes to copy (non-zero).
    pub len: u32,
    /// First byte of the sender's memory.
    pub peer_addr: u64,
    /// `peer_addr` lies in a device buffer the sender announced with
    /// `LocalKey` (flag [`FLAG_PEER_DEVICE`](super::FLAG_PEER_DEVICE)),
    /// not in its host memory.
    pub peer_device: bool,
}

impl<'a> Frame<'a> {
    /// The frame's opcode.
    pub fn opcode(&self) -> Opcode {
        match self {
            Frame::Hello(_) => Opcode::Hello,
            Frame::HelloAck(_) => Opcode::HelloAck,
            Frame::Auth { .. } => Opcode::Auth,
            Frame::ReadReq { .. } => Opcode::ReadReq,
            Frame::ReadData { .. } => Opcode::ReadData,
            Frame::WriteData { .. } => Opcode::WriteData,
            Frame::WriteAck { .. } => Opcode::WriteAck,
            Frame::Error { .. } => Opcode::Error,
            Frame::Notify { .. } => Opcode::Notify,
            Frame::InfoReq { .. } => Opcode::InfoReq,
            Frame::InfoReply { .. } => Opcode::InfoReply,
            Frame::Ping { .. } => Opcode::Ping,
            Frame::Pong { .. } => Opcode::Pong,
            Frame::Goodbye { .. } => Opcode::Goodbye,
            Frame::PidChallenge { .. } => Opcode::PidChallenge,
            Frame::LocalRead(_) => Opcode::LocalRead,
            Frame::LocalWrite(_) => Opcode::LocalWrite,
            Frame::LocalMap(_) => Opcode::LocalMap,
            Frame::LocalKey(_) => Opcode::LocalKey,
            Frame::KeyClosed { .. } => Opcode::KeyClosed,
            Frame::RdmaConn(_) => Opcode::RdmaConn,
            Frame::RdmaKey(_) => Opcode::RdmaKey,
            Frame::RdmaKeyClosed { .. } => Opcode::RdmaKeyClosed,
        }
    }

    /// `LocalRead(a)` when `read`, else `LocalWrite(a)`.
    pub fn local(read: bool, a: LocalAccess) -> Frame<'static> {
        if read {
            Frame::LocalRead(a)
        } else {
            Frame::LocalWrite(a)
        }
    }

    /// Encodes header and body into `buf`; returns the bytes written. For
    /// `ReadData` and `WriteData` the header announces `len` payload bytes,
    /// which the caller sends right after.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let op = self.opcode();
        let mut w = Writer::new(buf, op);
        let mut flags = 0;
        let mut payload = 0;
        match *self {
            Frame::Hello(ref h) | Frame::HelloAck(ref h) => {
                if h.name.is_empty() || h.name.len() > SEGMENT_NAME_MAX {
                    return Err(field_len(op, "segment name length", h.name.len()));
                }
                w.put(&HelloBody {
                    caps: U32::new(h.caps),
                    max_payload: U32::new(h.max_payload),
                    max_outstanding: U32::new(h.max_outstanding),
                    auth: h.auth,
                    reserved: [0; 3],
                    name_len: U16::new(h.name.len() as u16),
                    reserved2: U16::new(0),
                    host_id: h.host_id,
                    nonce: h.nonce,
                    mac: h.mac,
                })?;
                w.bytes(h.name.as_bytes())?;
            }
            Frame::Auth { ref mac } => w.bytes(mac)?,
            Frame::ReadReq {
                req_id,
                addr,
                location,
                len,
            } => w.put(&AccessBody {
                req_id: U64::new(req_id),
                addr: U64::new(addr),
                location: U32::new(location_to_wire(location)),
                len: U32::new(len),
            })?,
            Frame::WriteData {
                req_id,
                addr,
                location,
                len,
            } => {
                payload = len;
                w.put(&AccessBody {
                    req_id: U64::new(req_id),
                    addr: U64::new(addr),
                    location: U32::new(location_to_wire(location)),
                    len: U32::new(0),
                })?
            }
            Frame::ReadData { req_id, len } => {
                payload = len;
                w.put(&U64::new(req_id))?
            }
            Frame::WriteAck { req_id } => w.put(&U64::new(req_id))?,
            Frame::PidChallenge { ref token, socket } => {
                if socket.is_empty() || socket.len() > PID_SOCKET_MAX {
                    return Err(field_len(op, "socket name length", socket.len()));
                }
                w.bytes(token)?;
                w.bytes(socket)?;
            }
            Frame::LocalRead(a) | Frame::LocalWrite(a) => {
                if a.peer_device {
                    flags = FLAG_PEER_DEVICE;
                }
                w.put(&LocalBody {
                    req_id: U64::new(a.req_id),
                    addr: U64::new(a.addr),
                    location: U32::new(location_to_wire(a.location)),
                    len: U32::new(a.len),
                    peer_addr: U64::new(a.peer_addr),
                })?
            }
            Frame::LocalKey(k) => {
                k.check(op)?;
                let mut key = [0u8; IPC_KEY_MAX];
                let bytes = k.key.as_ref().map_or(&[][..], IpcKey::as_bytes);
                key[..bytes.len()].copy_from_slice(bytes);
                w.put(&KeyBody {
                    id: U64::new(k.id),
                    base: U64::new(k.base),
                    len: U64::new(k.len),
                    location: U32::new(k.location.to_wire()),
                    key_len: U16::new(bytes.len() as u16),
                    reserved: U16::new(0),
                    key,
                })?
            }
            Frame::LocalMap(m) => w.put(&MapBody {
                id: U64::new(m.id),
                base: U64::new(m.base),
                len: U64::new(m.len),
                fd: U32::new(m.fd),
                reserved: U32::new(0),
            })?,
            Frame::RdmaKey(k) => {
                k.check(op)?;
                w.put(&RdmaKeyBody {
                    id: U64::new(k.id),
                    base: U64::new(k.base),
                    len: U64::new(k.len),
                    fd: U32::new(k.rkey),
                    reserved: U32::new(u32::from(k.perm.bits())),
                })?
            }
            Frame::Ping { token }
            | Frame::Pong { token }
            | Frame::KeyClosed { id: token }
            | Frame::RdmaKeyClosed { id: token } => w.put(&U64::new(token))?,
            Frame::RdmaConn(ref m) => {
                let (kind, reason, conns) = match m {
                    RdmaMsg::Offer(c) => (RDMA_OFFER, 0, c.as_slice()),
                    RdmaMsg::Answer(c) => (RDMA_ANSWER, 0, c.as_slice()),
                    RdmaMsg::Off(r) => (RDMA_OFF, r.as_u8(), &[][..]),
                };
                w.put(&RdmaBody {
                    kind,
                    reason,
                    count: conns.len() as u8,
                    reserved: 0,
                })?;
                for c in conns {
                    w.bytes(&c.encode())?;
                }
            }
            Frame::Goodbye { code } => w.put(&CodeBody {
                code: U32::new(code.as_u32()),
                reserved: U32::new(0),
            })?,
            Frame::Error { req_id, code, msg } => {
                let mut end = msg.len().min(ERROR_MSG_MAX);
                while !msg.is_char_boundary(end) {
                    end -= 1;
                }
                w.put(&ErrorBody {
                    req_id: U64::new(req_id),
                    code: U32::new(code.as_u32()),
                    msg_len: U16::new(end as u16),
                    reserved: U16::new(0),
                })?;
                w.bytes(&msg.as_bytes()[..end])?;
            }
            Frame::Notify { name, msg } => {
                if name.is_empty() || name.len() > NOTIFY_NAME_MAX {
                    return Err(field_len(op, "name length", name.len()));
                }
                if msg.len() > NOTIFY_MSG_MAX {
                    return Err(field_len(op, "message length", msg.len()));
                }
                w.put(&NotifyBody {
                    name_len: U16::new(name.len() as u16),
                    reserved: U16::new(0),
                    msg_len: U32::new(msg.len() as u32),
                })?;
                w.bytes(name.as_bytes())?;
                w.bytes(msg)?;
            }
            Frame::InfoReq { req_id, after } => {
                let (has, loc, base) = match after {
                    Some((l, b)) => (1, l.to_wire(), b),
                    None => (0, 0, 0),
                };
                w.put(&InfoReqBody {
                    req_id: U64::new(req_id),
                    has_after: U32::new(has),
                    after_location: U32::new(loc),
                    after_base: U64::new(base),
                })?
            }
            Frame::InfoReply {
                req_id,
                more,
                regions,
            } => {
                if more {
                    flags = FLAG_MORE;
                }
                w.put(&InfoReplyBody {
                    req_id: U64::new(req_id),
                    count: U32::new(regions.len() as u32),
                    reserved: U32::new(0),
                })?;
                w.bytes(regions.raw)?;
            }
        }
        w.finish(flags, payload)
    }
}

/// Encodes an `InfoReply` page straight from an iterator of regions and
/// their rkeys (`None`: no RDMA registration; docs/PROTOCOL.md, "Segment
/// information"): at most
/// [`INFO_PAGE_MAX`] regions, with the "more" flag set when the iterator
/// still had regions after the page. Returns the bytes written and the key
/// of the last region in the page.
pub fn encode_info_reply(
    buf: &mut [u8],
    req_id: u64,
    regions: impl Iterator<Item = impl Into<(Region, Option<u32>)>>,
) -> Result<(usize, Option<(Location, u64)>), WireError> {
    let op = Opcode::InfoReply;
    let mut w = Writer::new(buf, op);
    let need = HEADER_LEN + size_of::<InfoReplyBody>() + INFO_PAGE_MAX * REGION_ENTRY_LEN;
    if w.buf.len() < need {
        return Err(WireError::BufferTooSmall {
            need,
            have: w.buf.len(),
        });
    }
    w.put(&InfoReplyBody {
        req_id: U64::new(req_id),
        count: U32::new(0),
        reserved: U32::new(0),
    })?;
    let mut count = 0u32;
    let mut last = None;
    let mut more = false;
    for (r, rkey) in regions.map(Into::into) {
        if count as usize == INFO_PAGE_MAX {
            more = true;
            break;
        }
        w.put(&RegionEntry {
            base: U64::new(r.span.addr),
            len: U64::new(r.span.len),
            location: U32::new(r.span.location.to_wire()),
            perm: r.perm.bits(),
            has_rkey: u8::from(rkey.is_some()),
            reserved: U16::new(0),
            rkey: U32::new(rkey.unwrap_or(0)),
        })?;
        last = Some((r.span.location, r.span.addr));
        count += 1;
    }
    let count_at = HEADER_LEN + offset_of!(InfoReplyBody, count);
    let field = w.buf.get_mut(count_at..count_at + size_of::<U32>());
    // The buffer was checked to hold a full page.
    debug_assert!(field.is_some(), "no room for the region count");
    if let Some(field) = field {
        field.copy_from_slice(&count.to_be_bytes());
    }
    Ok((w.finish(if more { FLAG_MORE } else { 0 }, 0)?, last))
}

/// Writes a header placeholder, then body pieces; `finish` fills the header.
struct Writer<'b> {
    buf: &'b mut [u8],
    at: usize,
    op: Opcode,
}

impl<'b> Writer<'b> {
    fn new(buf: &'b mut [u8], op: Opcode) -> Writer<'b> {
        Writer {
            buf,
            at: HEADER_LEN,
            op,
        }
    }

    fn bytes(&mut self, b: &[u8]) -> Result<(), WireError> {
        let end = self.at + b.len();
        let have = self.buf.len();
        let dst = self
            .buf
            .get_mut(self.at..end)
            .ok_or(WireError::BufferTooSmall { need: end, have })?;
        dst.copy_from_slice(b);
        self.at = end;
        Ok(())
    }

    fn put<T: IntoBytes + Immutable>(&mut self, v: &T) -> Result<(), WireError> {
        self.bytes(v.as_bytes())
    }

    fn finish(self, flags: u16, payload: u32) -> Result<usize, WireError> {
        let header = Header::new(self.op, flags, self.at - HEADER_LEN, payload);
        let have = self.buf.len();
        let dst = self.buf.get_mut(..HEADER_LEN).ok_or(WireError::BufferTooSmall {
            need: HEADER_LEN,
            have,
        })?;
        dst.copy_from_slice(header.as_bytes());
        Ok(self.at)
    }
}
