//! Frame bodies as they are on the wire: one `repr(C)` struct of
//! byte-aligned big-endian fields per fixed part, and the body length rule
//! of every opcode, derived from those structs (the one source of body
//! sizes for the header check, the decoder and the encoder).

use core::mem::size_of;

use zerocopy::byteorder::network_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::error::WireError;
use super::header::Opcode;
use super::{LOCATION_ANY, REGION_ENTRY_LEN};
use crate::location::Location;

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct HelloBody {
    pub(super) caps: U32,
    pub(super) max_payload: U32,
    pub(super) max_outstanding: U32,
    pub(super) auth: u8,
    pub(super) reserved: [u8; 3],
    pub(super) name_len: U16,
    pub(super) reserved2: U16,
    pub(super) host_id: [u8; 32],
    pub(super) nonce: [u8; 32],
    pub(super) mac: [u8; 32],
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct AccessBody {
    pub(super) req_id: U64,
    pub(super) addr: U64,
    pub(super) location: U32,
    pub(super) len: U32,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct LocalBody {
    pub(super) req_id: U64,
    pub(super) addr: U64,
    pub(super) location: U32,
    pub(super) len: U32,
    pub(super) peer_addr: U64,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct MapBody {
    pub(super) id: U64,
    pub(super) base: U64,
    pub(super) len: U64,
    pub(super) fd: U32,
    pub(super) reserved: U32,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct KeyBody {
    pub(super) id: U64,
    pub(super) base: U64,
    pub(super) len: U64,
    pub(super) location: U32,
    pub(super) key_len: U16,
    pub(super) reserved: U16,
    pub(super) key: [u8; crate::driver::IPC_KEY_MAX],
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct ErrorBody {
    pub(super) req_id: U64,
    pub(super) code: U32,
    pub(super) msg_len: U16,
    pub(super) reserved: U16,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct NotifyBody {
    pub(super) name_len: U16,
    pub(super) reserved: U16,
    pub(super) msg_len: U32,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct InfoReqBody {
    pub(super) req_id: U64,
    pub(super) has_after: U32,
    pub(super) after_location: U32,
    pub(super) after_base: U64,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct InfoReplyBody {
    pub(super) req_id: U64,
    pub(super) count: U32,
    pub(super) reserved: U32,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct RegionEntry {
    pub(super) base: U64,
    pub(super) len: U64,
    pub(super) location: U32,
    pub(super) perm: u8,
    pub(super) has_rkey: u8,
    pub(super) reserved: U16,
    pub(super) rkey: U32,
}

/// The fixed part of `RdmaConn`; `count` [`ConnInfo`](crate::rdma::ConnInfo)s
/// of [`CONN_INFO_LEN`](crate::rdma::CONN_INFO_LEN) bytes follow.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct RdmaBody {
    pub(super) kind: u8,
    pub(super) reason: u8,
    pub(super) count: u8,
    pub(super) reserved: u8,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct CodeBody {
    pub(super) code: U32,
    pub(super) reserved: U32,
}

const _: () = assert!(size_of::<HelloBody>() == 116);
const _: () = assert!(size_of::<AccessBody>() == 24);
const _: () = assert!(size_of::<InfoReqBody>() == 24);
const _: () = assert!(size_of::<LocalBody>() == 32);
const _: () = assert!(size_of::<MapBody>() == 32);
const _: () = assert!(size_of::<KeyBody>() == 96);
const _: () = assert!(size_of::<RegionEntry>() == REGION_ENTRY_LEN);

/// The body of `RdmaKey`: `LocalMap`'s layout, the rkey in place of the fd
/// and the permission bits in the low byte of the last word.
pub(super) type RdmaKeyBody = MapBody;

/// The 8-byte bodies: `ReadData`, `WriteAck`, `Ping`, `Pong`, `KeyClosed`,
/// `RdmaKeyClosed` (one u64).
pub(super) type IdBody = U64;

/// The fixed part of `Auth` and of `PidChallenge`: a 32-byte token or proof.
pub(super) type Token = [u8; 32];

/// Body length rule of `op`: `(fixed part, whether a variable part may
/// follow)`.
pub(super) const fn shape(op: Opcode) -> (usize, bool) {
    match op {
        Opcode::Hello | Opcode::HelloAck => (size_of::<HelloBody>(), true),
        Opcode::Auth => (size_of::<Token>(), false),
        Opcode::ReadReq | Opcode::WriteData => (size_of::<AccessBody>(), false),
        Opcode::InfoReq => (size_of::<InfoReqBody>(), false),
        Opcode::ReadData
        | Opcode::WriteAck
        | Opcode::Ping
        | Opcode::Pong
        | Opcode::KeyClosed
        | Opcode::RdmaKeyClosed => (size_of::<IdBody>(), false),
        Opcode::Goodbye => (size_of::<CodeBody>(), false),
        Opcode::Error => (size_of::<ErrorBody>(), true),
        Opcode::InfoReply => (size_of::<InfoReplyBody>(), true),
        Opcode::Notify => (size_of::<NotifyBody>(), true),
        Opcode::PidChallenge => (size_of::<Token>(), true),
        Opcode::LocalRead | Opcode::LocalWrite => (size_of::<LocalBody>(), false),
        Opcode::LocalMap => (size_of::<MapBody>(), false),
        Opcode::LocalKey => (size_of::<KeyBody>(), false),
        Opcode::RdmaConn => (size_of::<RdmaBody>(), true),
        Opcode::RdmaKey => (size_of::<RdmaKeyBody>(), false),
    }
}

pub(super) fn location_to_wire(l: Option<Location>) -> u32 {
    l.map_or(LOCATION_ANY, Location::to_wire)
}

pub(super) fn field_len(op: Opcode, field: &'static str, value: usize) -> WireError {
    WireError::FieldLength {
        opcode: op,
        field,
        value: u32::try_from(value).unwrap_or(u32::MAX),
    }
}
