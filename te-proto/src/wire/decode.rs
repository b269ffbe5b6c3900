//! [`Frame::decode`]: the checks of docs/PROTOCOL.md section 4 on a body
//! whose header passed [`Header::validate`], one function per frame family.

use zerocopy::byteorder::network_endian::U64;
use zerocopy::{FromBytes, Immutable, KnownLayout};

use super::body::*;
use super::error::WireError;
use super::frame::{
    Frame, Hello, LocalAccess, LocalKey, LocalMap, RdmaKey, RdmaMsg, RegionList, AUTH_HMAC_SHA256, AUTH_NONE,
    LOCATION_ANY, RDMA_ANSWER, RDMA_OFF, RDMA_OFFER,
};
use super::header::{Header, Opcode, FLAG_MORE, FLAG_PEER_DEVICE};
use super::{
    ERROR_MSG_MAX, INFO_PAGE_MAX, MAX_PAYLOAD_LIMIT, NOTIFY_MSG_MAX, NOTIFY_NAME_MAX, PID_SOCKET_MAX,
    REGION_ENTRY_LEN, SEGMENT_NAME_MAX,
};
use crate::driver::{IpcKey, IPC_KEY_MAX};
use crate::error::ErrorCode;
use crate::location::Location;
use crate::rdma::{ConnInfo, Conns, RdmaOff, CONN_INFO_LEN, MAX_RDMA_QPS};
use crate::region::{Perm, Region};

impl<'a> Frame<'a> {
    /// Decodes a body whose header has passed [`Header::validate`].
    pub fn decode(header: &Header, body: &'a [u8]) -> Result<Frame<'a>, WireError> {
        let op = Opcode::from_u8(header.opcode).ok_or(WireError::UnknownOpcode(header.opcode))?;
        if body.len() != header.body_len.get() as usize {
            return Err(WireError::BodyLength {
                opcode: op,
                len: body.len() as u32,
            });
        }
        let payload = header.payload_len.get();
        match op {
            Opcode::Hello | Opcode::HelloAck | Opcode::Auth => handshake(op, body),
            Opcode::ReadReq | Opcode::WriteData | Opcode::ReadData | Opcode::WriteAck => {
                data(op, body, payload)
            }
            Opcode::Error | Opcode::Goodbye | Opcode::Notify | Opcode::Ping | Opcode::Pong => {
                control(op, body)
            }
            Opcode::InfoReq | Opcode::InfoReply => info(op, body, header.flags.get()),
            Opcode::PidChallenge
            | Opcode::LocalRead
            | Opcode::LocalWrite
            | Opcode::LocalMap
            | Opcode::LocalKey
            | Opcode::KeyClosed => same_host(op, body, header.flags.get()),
            Opcode::RdmaConn => rdma(op, body),
            Opcode::RdmaKey => rdma_key(op, body),
            Opcode::RdmaKeyClosed => Ok(Frame::RdmaKeyClosed {
                id: read::<U64>(op, body)?.0.get(),
            }),
        }
    }
}

/// Decodes the body of RdmaKey: a region with its rkey and a remote
/// permission, or a withdrawal.
fn rdma_key(op: Opcode, body: &[u8]) -> Result<Frame<'_>, WireError> {
    let (b, _) = read::<RdmaKeyBody>(op, body)?;
    let word = b.reserved.get();
    let perm = u8::try_from(word)
        .ok()
        .and_then(Perm::from_bits)
        .ok_or(WireError::ReservedBits {
            opcode: op,
            field: "rdma key permission",
            value: u64::from(word),
        })?;
    let k = RdmaKey {
        id: b.id.get(),
        base: b.base.get(),
        len: b.len.get(),
        rkey: b.fd.get(),
        perm,
    };
    k.check(op)?;
    Ok(Frame::RdmaKey(k))
}

/// Decodes the body of RdmaConn (the RDMA path): an offer or answer of 1
/// to [`MAX_RDMA_QPS`] queue pairs, or a refusal with a known reason and
/// none.
fn rdma(op: Opcode, body: &[u8]) -> Result<Frame<'_>, WireError> {
    let (b, rest) = read::<RdmaBody>(op, body)?;
    if b.reserved != 0 {
        return Err(WireError::ReservedBits {
            opcode: op,
            field: "rdma reserved",
            value: u64::from(b.reserved),
        });
    }
    let count = usize::from(b.count);
    if rest.len() != count * CONN_INFO_LEN {
        return Err(field_len(op, "queue pair list", rest.len()));
    }
    let bad = |field, value: u8| WireError::BadValue {
        opcode: op,
        field,
        value: u64::from(value),
    };
    let mut items = [ConnInfo::default(); MAX_RDMA_QPS];
    let listed = match b.kind {
        RDMA_OFFER | RDMA_ANSWER if b.reason != 0 => return Err(bad("rdma reason", b.reason)),
        RDMA_OFFER | RDMA_ANSWER if count == 0 || count > MAX_RDMA_QPS => {
            return Err(field_len(op, "queue pair count", count))
        }
        RDMA_OFFER | RDMA_ANSWER => &mut items[..count],
        RDMA_OFF if count != 0 => return Err(field_len(op, "queue pair count", count)),
        RDMA_OFF => {
            let why = RdmaOff::from_u8(b.reason).ok_or(bad("rdma reason", b.reason))?;
            return Ok(Frame::RdmaConn(RdmaMsg::Off(why)));
        }
        k => return Err(bad("rdma kind", k)),
    };
    for (slot, raw) in listed.iter_mut().zip(rest.chunks_exact(CONN_INFO_LEN)) {
        *slot = ConnInfo::decode(raw).ok_or(bad("queue pair (qpn, psn or mtu out of range)", raw[26]))?;
    }
    // 1 to MAX_RDMA_QPS entries, checked above.
    let conns = Conns::new(listed).ok_or(field_len(op, "queue pair count", count))?;
    Ok(Frame::RdmaConn(if b.kind == RDMA_OFFER {
        RdmaMsg::Offer(conns)
    } else {
        RdmaMsg::Answer(conns)
    }))
}

/// Decodes the body of Hello, HelloAck and Auth.
fn handshake<'a>(op: Opcode, body: &'a [u8]) -> Result<Frame<'a>, WireError> {
    let frame = match op {
        Opcode::Hello | Opcode::HelloAck => {
            let (h, rest) = read::<HelloBody>(op, body)?;
            let name_len = h.name_len.get() as usize;
            if name_len == 0 || name_len > SEGMENT_NAME_MAX || rest.len() != name_len {
                return Err(field_len(op, "segment name length", name_len));
            }
            let [r0, r1, r2] = h.reserved;
            for (field, value) in [
                ("hello reserved", u64::from_be_bytes([0, 0, 0, 0, 0, r0, r1, r2])),
                ("hello reserved2", u64::from(h.reserved2.get())),
            ] {
                if value != 0 {
                    return Err(WireError::ReservedBits {
                        opcode: op,
                        field,
                        value,
                    });
                }
            }
            if h.auth > AUTH_HMAC_SHA256 {
                return Err(WireError::BadValue {
                    opcode: op,
                    field: "auth mode",
                    value: h.auth as u64,
                });
            }
            if (op == Opcode::Hello || h.auth == AUTH_NONE) && h.mac != [0; 32] {
                // Its first non-zero 8-byte word.
                let value = h
                    .mac
                    .chunks_exact(8)
                    .map(|w| w.iter().fold(0u64, |v, &b| v << 8 | u64::from(b)))
                    .find(|&w| w != 0)
                    .unwrap_or_default();
                return Err(WireError::ReservedBits {
                    opcode: op,
                    field: "hello mac",
                    value,
                });
            }
            let max_payload = h.max_payload.get();
            if !(4096..=MAX_PAYLOAD_LIMIT).contains(&max_payload) {
                return Err(WireError::BadValue {
                    opcode: op,
                    field: "max payload",
                    value: max_payload as u64,
                });
            }
            let max_outstanding = h.max_outstanding.get();
            if max_outstanding == 0 {
                return Err(WireError::BadValue {
                    opcode: op,
                    field: "max outstanding",
                    value: 0,
                });
            }
            let hello = Hello {
                caps: h.caps.get(),
                max_payload,
                max_outstanding,
                auth: h.auth,
                host_id: h.host_id,
                nonce: h.nonce,
                mac: h.mac,
                name: utf8(op, "segment name", rest)?,
            };
            if op == Opcode::Hello {
                Frame::Hello(hello)
            } else {
                Frame::HelloAck(hello)
            }
        }
        Opcode::Auth => {
            let (mac, _) = read::<[u8; 32]>(op, body)?;
            Frame::Auth { mac }
        }
        _ => {
            debug_assert!(false, "{op:?} is not decoded by handshake");
            return Err(WireError::UnknownOpcode(op as u8));
        }
    };
    Ok(frame)
}

/// Decodes the body of ReadReq, WriteData, ReadData and WriteAck: the requests and answers that move data.
fn data<'a>(op: Opcode, body: &'a [u8], payload: u32) -> Result<Frame<'a>, WireError> {
    let frame = match op {
        Opcode::ReadReq | Opcode::WriteData => {
            let (b, _) = read::<AccessBody>(op, body)?;
            let location = location_from_wire(op, b.location.get())?;
            let (req_id, addr) = (b.req_id.get(), b.addr.get());
            if op == Opcode::ReadReq {
                let len = b.len.get();
                if len == 0 {
                    return Err(WireError::BadValue {
                        opcode: op,
                        field: "length",
                        value: 0,
                    });
                }
                Frame::ReadReq {
                    req_id,
                    addr,
                    location,
                    len,
                }
            } else {
                if b.len.get() != 0 {
                    return Err(WireError::ReservedBits {
                        opcode: op,
                        field: "write reserved",
                        value: b.len.get() as u64,
                    });
                }
                Frame::WriteData {
                    req_id,
                    addr,
                    location,
                    len: payload,
                }
            }
        }
        Opcode::ReadData => Frame::ReadData {
            req_id: read::<U64>(op, body)?.0.get(),
            len: payload,
        },
        Opcode::WriteAck => Frame::WriteAck {
            req_id: read::<U64>(op, body)?.0.get(),
        },
        _ => {
            debug_assert!(false, "{op:?} is not decoded by data");
            return Err(WireError::UnknownOpcode(op as u8));
        }
    };
    Ok(frame)
}

/// Decodes the body of Error, Goodbye, Notify, Ping and Pong.
fn control<'a>(op: Opcode, body: &'a [u8]) -> Result<Frame<'a>, WireError> {
    let frame = match op {
        Opcode::Error => {
            let (b, rest) = read::<ErrorBody>(op, body)?;
            let msg_len = b.msg_len.get() as usize;
            if msg_len > ERROR_MSG_MAX || rest.len() != msg_len {
                return Err(field_len(op, "message length", msg_len));
            }
            if b.reserved.get() != 0 {
                return Err(WireError::ReservedBits {
                    opcode: op,
                    field: "error reserved",
                    value: b.reserved.get() as u64,
                });
            }
            let code = code_from_wire(op, b.code.get())?;
            if code == ErrorCode::Ok {
                return Err(WireError::BadValue {
                    opcode: op,
                    field: "error code",
                    value: 0,
                });
            }
            Frame::Error {
                req_id: b.req_id.get(),
                code,
                msg: utf8(op, "message", rest)?,
            }
        }
        Opcode::Goodbye => {
            let (b, _) = read::<CodeBody>(op, body)?;
            if b.reserved.get() != 0 {
                return Err(WireError::ReservedBits {
                    opcode: op,
                    field: "goodbye reserved",
                    value: b.reserved.get() as u64,
                });
            }
            Frame::Goodbye {
                code: code_from_wire(op, b.code.get())?,
            }
        }
        Opcode::Notify => {
            let (b, rest) = read::<NotifyBody>(op, body)?;
            let name_len = b.name_len.get() as usize;
            let msg_len = b.msg_len.get() as usize;
            if name_len == 0 || name_len > NOTIFY_NAME_MAX {
                return Err(field_len(op, "name length", name_len));
            }
            if msg_len > NOTIFY_MSG_MAX || rest.len() != name_len + msg_len {
                return Err(field_len(op, "message length", msg_len));
            }
            if b.reserved.get() != 0 {
                return Err(WireError::ReservedBits {
                    opcode: op,
                    field: "notify reserved",
                    value: b.reserved.get() as u64,
                });
            }
            let (name, msg) = rest.split_at(name_len);
            Frame::Notify {
                name: utf8(op, "name", name)?,
                msg,
            }
        }
        Opcode::Ping => Frame::Ping {
            token: read::<U64>(op, body)?.0.get(),
        },
        Opcode::Pong => Frame::Pong {
            token: read::<U64>(op, body)?.0.get(),
        },
        _ => {
            debug_assert!(false, "{op:?} is not decoded by control");
            return Err(WireError::UnknownOpcode(op as u8));
        }
    };
    Ok(frame)
}

/// Decodes the body of InfoReq and InfoReply (segment information).
fn info<'a>(op: Opcode, body: &'a [u8], flags: u16) -> Result<Frame<'a>, WireError> {
    let frame = match op {
        Opcode::InfoReq => {
            let (b, _) = read::<InfoReqBody>(op, body)?;
            let after = match b.has_after.get() {
                0 if b.after_location.get() == 0 && b.after_base.get() == 0 => None,
                1 => {
                    let loc = location_from_wire(op, b.after_location.get())?.ok_or(WireError::BadValue {
                        opcode: op,
                        field: "after location",
                        value: LOCATION_ANY as u64,
                    })?;
                    Some((loc, b.after_base.get()))
                }
                0 => {
                    return Err(WireError::ReservedBits {
                        opcode: op,
                        field: "cursor without has_after",
                        value: b.after_base.get(),
                    })
                }
                v => {
                    return Err(WireError::BadValue {
                        opcode: op,
                        field: "has_after",
                        value: v as u64,
                    })
                }
            };
            Frame::InfoReq {
                req_id: b.req_id.get(),
                after,
            }
        }
        Opcode::InfoReply => {
            let (b, rest) = read::<InfoReplyBody>(op, body)?;
            let count = b.count.get() as usize;
            if count > INFO_PAGE_MAX || rest.len() != count * REGION_ENTRY_LEN {
                return Err(field_len(op, "region count", count));
            }
            if b.reserved.get() != 0 {
                return Err(WireError::ReservedBits {
                    opcode: op,
                    field: "info reserved",
                    value: b.reserved.get() as u64,
                });
            }
            for entry in rest.chunks_exact(REGION_ENTRY_LEN) {
                region_from_entry(entry)?;
            }
            Frame::InfoReply {
                req_id: b.req_id.get(),
                more: flags & FLAG_MORE != 0,
                regions: RegionList { raw: rest },
            }
        }
        _ => {
            debug_assert!(false, "{op:?} is not decoded by info");
            return Err(WireError::UnknownOpcode(op as u8));
        }
    };
    Ok(frame)
}

/// Decodes the body of PidChallenge, LocalRead, LocalWrite and LocalMap (the same-host path).
fn same_host<'a>(op: Opcode, body: &'a [u8], flags: u16) -> Result<Frame<'a>, WireError> {
    let frame = match op {
        Opcode::PidChallenge => {
            let (token, socket) = read::<[u8; 32]>(op, body)?;
            if socket.is_empty() || socket.len() > PID_SOCKET_MAX {
                return Err(field_len(op, "socket name length", socket.len()));
            }
            Frame::PidChallenge { token, socket }
        }
        Opcode::LocalRead | Opcode::LocalWrite => {
            let (b, _) = read::<LocalBody>(op, body)?;
            let a = LocalAccess {
                req_id: b.req_id.get(),
                addr: b.addr.get(),
                location: location_from_wire(op, b.location.get())?,
                len: b.len.get(),
                peer_addr: b.peer_addr.get(),
                peer_device: flags & FLAG_PEER_DEVICE != 0,
            };
            if a.len == 0 {
                return Err(WireError::BadValue {
                    opcode: op,
                    field: "length",
                    value: 0,
                });
            }
            if a.peer_addr == 0 || a.peer_addr.checked_add(a.len as u64).is_none() {
                return Err(WireError::BadValue {
                    opcode: op,
                    field: "peer address",
                    value: a.peer_addr,
                });
            }
            Frame::local(op == Opcode::LocalRead, a)
        }
        Opcode::LocalMap => {
            let (b, _) = read::<MapBody>(op, body)?;
            if b.reserved.get() != 0 {
                return Err(WireError::ReservedBits {
                    opcode: op,
                    field: "map reserved",
                    value: b.reserved.get() as u64,
                });
            }
            let m = LocalMap {
                id: b.id.get(),
                base: b.base.get(),
                len: b.len.get(),
                fd: b.fd.get(),
            };
            m.check(op)?;
            Frame::LocalMap(m)
        }
        Opcode::LocalKey => {
            let (b, _) = read::<KeyBody>(op, body)?;
            if b.reserved.get() != 0 {
                return Err(WireError::ReservedBits {
                    opcode: op,
                    field: "key reserved",
                    value: u64::from(b.reserved.get()),
                });
            }
            let key_len = usize::from(b.key_len.get());
            if key_len > IPC_KEY_MAX {
                return Err(field_len(op, "key length", key_len));
            }
            if b.key[key_len..].iter().any(|&x| x != 0) {
                return Err(WireError::ReservedBits {
                    opcode: op,
                    field: "key padding",
                    value: key_len as u64,
                });
            }
            let key = match key_len {
                0 => None,
                _ => Some(IpcKey::new(&b.key[..key_len]).map_err(|_| WireError::BadValue {
                    opcode: op,
                    field: "key byte",
                    value: 0,
                })?),
            };
            let location = location_from_wire(op, b.location.get())?.ok_or(WireError::BadValue {
                opcode: op,
                field: "key location",
                value: u64::from(b.location.get()),
            })?;
            let k = LocalKey {
                id: b.id.get(),
                base: b.base.get(),
                len: b.len.get(),
                location,
                key,
            };
            k.check(op)?;
            Frame::LocalKey(k)
        }
        Opcode::KeyClosed => Frame::KeyClosed {
            id: read::<U64>(op, body)?.0.get(),
        },
        _ => {
            debug_assert!(false, "{op:?} is not decoded by same_host");
            return Err(WireError::UnknownOpcode(op as u8));
        }
    };
    Ok(frame)
}

pub(super) fn region_from_entry(bytes: &[u8]) -> Result<(Region, Option<u32>), WireError> {
    let op = Opcode::InfoReply;
    let e = RegionEntry::read_from_bytes(bytes).map_err(|_| WireError::FieldLength {
        opcode: op,
        field: "region entry",
        value: bytes.len() as u32,
    })?;
    let location = Location::from_wire(e.location.get()).ok_or(WireError::BadValue {
        opcode: op,
        field: "region location",
        value: e.location.get() as u64,
    })?;
    let perm = Perm::from_bits(e.perm)
        .filter(|p| !p.is_empty())
        .ok_or(WireError::BadValue {
            opcode: op,
            field: "region perm",
            value: e.perm as u64,
        })?;
    if e.reserved.get() != 0 {
        return Err(WireError::ReservedBits {
            opcode: op,
            field: "region reserved",
            value: u64::from(e.reserved.get()),
        });
    }
    let rkey = match e.has_rkey {
        0 if e.rkey.get() != 0 => {
            return Err(WireError::ReservedBits {
                opcode: op,
                field: "rkey without has_rkey",
                value: u64::from(e.rkey.get()),
            })
        }
        0 => None,
        1 => Some(e.rkey.get()),
        v => {
            return Err(WireError::BadValue {
                opcode: op,
                field: "region has_rkey",
                value: u64::from(v),
            })
        }
    };
    let (base, len) = (e.base.get(), e.len.get());
    if base == 0 || len == 0 || base.checked_add(len).is_none() {
        return Err(WireError::BadValue {
            opcode: op,
            field: "region range",
            value: base,
        });
    }
    Ok((Region::new(base, len, location, perm), rkey))
}

fn location_from_wire(op: Opcode, v: u32) -> Result<Option<Location>, WireError> {
    if v == LOCATION_ANY {
        return Ok(None);
    }
    Location::from_wire(v).map(Some).ok_or(WireError::BadValue {
        opcode: op,
        field: "location",
        value: v as u64,
    })
}

fn code_from_wire(op: Opcode, v: u32) -> Result<ErrorCode, WireError> {
    ErrorCode::from_u32(v).ok_or(WireError::BadValue {
        opcode: op,
        field: "error code",
        value: v as u64,
    })
}

fn utf8<'a>(op: Opcode, field: &'static str, b: &'a [u8]) -> Result<&'a str, WireError> {
    core::str::from_utf8(b).map_err(|_| WireError::NotUtf8 { opcode: op, field })
}

fn read<T: FromBytes + KnownLayout + Immutable>(op: Opcode, body: &[u8]) -> Result<(T, &[u8]), WireError> {
    T::read_from_prefix(body).map_err(|_| WireError::BodyLength {
        opcode: op,
        len: body.len() as u32,
    })
}
