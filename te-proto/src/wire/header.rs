//! The fixed frame header.

use zerocopy::byteorder::network_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::error::WireError;
use super::{MAX_BODY, MAX_PAYLOAD_LIMIT};

/// The two magic bytes that open every frame: `"TE"`.
pub const MAGIC: [u8; 2] = *b"TE";
/// The protocol version this crate speaks.
pub const VERSION: u8 = 2;
/// Size of the header in bytes.
pub const HEADER_LEN: usize = 16;
/// Header flag of `InfoReply`: more pages follow.
pub const FLAG_MORE: u16 = 0x0001;
/// `LocalRead`/`LocalWrite` flag: the sender's address lies in a device
/// buffer it announced with `LocalKey`.
pub const FLAG_PEER_DEVICE: u16 = 0x0002;

/// The 16-byte frame header, as it is on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Header {
    /// Always [`MAGIC`].
    pub magic: [u8; 2],
    /// Always [`VERSION`].
    pub version: u8,
    /// An [`Opcode`].
    pub opcode: u8,
    /// Opcode-specific flags; undefined bits must be zero.
    pub flags: U16,
    /// Must be zero.
    pub reserved: U16,
    /// Bytes of body after the header.
    pub body_len: U32,
    /// Bytes of payload after the body.
    pub payload_len: U32,
}

const _: () = assert!(core::mem::size_of::<Header>() == HEADER_LEN);

macro_rules! opcodes {
    ($($(#[$doc:meta])* $name:ident = $value:literal,)+) => {
        /// What a frame is.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Opcode {
            $($(#[$doc])* $name = $value,)+
        }

        impl Opcode {
            /// Every opcode.
            pub const ALL: &'static [Opcode] = &[$(Opcode::$name,)+];

            /// The opcode for a byte, or `None` for an unknown one.
            pub const fn from_u8(v: u8) -> Option<Opcode> {
                match v {
                    $($value => Some(Opcode::$name),)+
                    _ => None,
                }
            }
        }
    };
}

opcodes! {
    /// Handshake opening, sent by the connecting side.
    Hello = 1,
    /// Handshake answer, sent by the accepting side.
    HelloAck = 2,
    /// The connecting side's proof of the shared secret.
    Auth = 3,
    /// Request to read a span of the receiver's memory.
    ReadReq = 4,
    /// Answer to a `ReadReq`, followed by the data.
    ReadData = 5,
    /// Data to write into the receiver's memory, followed by the data.
    WriteData = 6,
    /// The receiver applied a `WriteData`.
    WriteAck = 7,
    /// A request failed, or (request id 0) the link is being closed.
    Error = 8,
    /// A notification `{name, msg}`.
    Notify = 9,
    /// Request for a page of the receiver's remotely visible regions.
    InfoReq = 10,
    /// A page of regions.
    InfoReply = 11,
    /// Liveness probe.
    Ping = 12,
    /// Answer to a ping.
    Pong = 13,
    /// Orderly close.
    Goodbye = 14,
    /// Same-host path: a challenge to prove the receiver's process id.
    PidChallenge = 15,
    /// Same-host path: copy a span of the receiver's memory into the
    /// sender's memory (the receiver does the copy).
    LocalRead = 16,
    /// Same-host path: copy a span of the sender's memory into the
    /// receiver's memory (the receiver does the copy).
    LocalWrite = 17,
    /// Same-host path: announce (or withdraw) a buffer of the sender's
    /// memory held by a sealed memfd, for the receiver to map.
    LocalMap = 18,
    /// Same-host path: announce (or withdraw) a buffer of the sender's
    /// device memory exported with an IPC key, for the receiver to import.
    LocalKey = 19,
    /// RDMA path: the connector's offer of its queue pairs, the acceptor's
    /// answer with its own, or the acceptor's refusal with a reason.
    RdmaConn = 20,
    /// Same-host path: the sender closed its import of the receiver's
    /// device buffer, which the receiver withdrew (the receiver may close
    /// its export now).
    KeyClosed = 21,
    /// RDMA path: announce (or withdraw) a region of the sender's host
    /// memory registered with its NIC, with the rkey and the permission the
    /// NIC enforces, for the receiver's one-sided READ and WRITE.
    RdmaKey = 22,
    /// RDMA path: no READ or WRITE of the sender runs any more on region
    /// `id`, which the receiver withdrew (the receiver may deregister it now).
    RdmaKeyClosed = 23,
}

impl Opcode {
    /// Body length rule: `(fixed part, whether a variable part may follow)`,
    /// from the body layouts.
    pub(crate) const fn body_shape(self) -> (usize, bool) {
        super::body::shape(self)
    }

    /// Whether frames of this opcode carry a payload.
    pub const fn has_payload(self) -> bool {
        matches!(self, Opcode::ReadData | Opcode::WriteData)
    }

    const fn allowed_flags(self) -> u16 {
        match self {
            Opcode::InfoReply => FLAG_MORE,
            Opcode::LocalRead | Opcode::LocalWrite => FLAG_PEER_DEVICE,
            _ => 0,
        }
    }
}

impl Header {
    /// A header for `opcode` with the given lengths.
    pub fn new(opcode: Opcode, flags: u16, body_len: usize, payload_len: u32) -> Header {
        Header {
            magic: MAGIC,
            version: VERSION,
            opcode: opcode as u8,
            flags: U16::new(flags),
            reserved: U16::new(0),
            // Bodies are bounded by MAX_BODY, far below u32::MAX.
            body_len: U32::new(body_len as u32),
            payload_len: U32::new(payload_len),
        }
    }

    /// Checks every header field. `max_payload` is the largest payload this
    /// side accepts. Returns the opcode on success.
    pub fn validate(&self, max_payload: u32) -> Result<Opcode, WireError> {
        if self.magic != MAGIC {
            return Err(WireError::BadMagic(self.magic));
        }
        if self.version != VERSION {
            return Err(WireError::UnsupportedVersion(self.version));
        }
        let op = Opcode::from_u8(self.opcode).ok_or(WireError::UnknownOpcode(self.opcode))?;
        let flags = self.flags.get();
        if flags & !op.allowed_flags() != 0 {
            return Err(WireError::ReservedBits {
                opcode: op,
                field: "flags",
                value: flags as u64,
            });
        }
        if self.reserved.get() != 0 {
            return Err(WireError::ReservedBits {
                opcode: op,
                field: "header reserved",
                value: self.reserved.get() as u64,
            });
        }
        let body = self.body_len.get() as usize;
        let (fixed, var) = op.body_shape();
        if body > MAX_BODY || body < fixed || (!var && body != fixed) {
            return Err(WireError::BodyLength {
                opcode: op,
                len: self.body_len.get(),
            });
        }
        let payload = self.payload_len.get();
        if op.has_payload() {
            if payload == 0 || payload > max_payload.min(MAX_PAYLOAD_LIMIT) {
                return Err(WireError::PayloadLength {
                    opcode: op,
                    len: payload,
                    max: max_payload.min(MAX_PAYLOAD_LIMIT),
                });
            }
        } else if payload != 0 {
            return Err(WireError::PayloadLength {
                opcode: op,
                len: payload,
                max: 0,
            });
        }
        Ok(op)
    }
}
