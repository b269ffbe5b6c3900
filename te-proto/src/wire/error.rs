//! Typed decode and encode errors.

use core::fmt;

use super::header::Opcode;
use crate::error::{ErrorCode, Status};

/// Why bytes from a peer are not a valid frame, or why a frame cannot be
/// encoded. Every variant carries the offending value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The frame does not start with `"TE"`.
    BadMagic([u8; 2]),
    /// The header names a protocol version this side does not speak.
    UnsupportedVersion(u8),
    /// The opcode byte is not a known opcode.
    UnknownOpcode(u8),
    /// A reserved field or flag bit is not zero.
    ReservedBits {
        /// The frame's opcode.
        opcode: Opcode,
        /// Which field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// The body length does not fit the opcode's layout or exceeds the limit.
    BodyLength {
        /// The frame's opcode.
        opcode: Opcode,
        /// The announced length.
        len: u32,
    },
    /// The payload length is zero where data is required, too large, or set
    /// on a frame that carries none.
    PayloadLength {
        /// The frame's opcode.
        opcode: Opcode,
        /// The announced length.
        len: u32,
        /// The largest allowed.
        max: u32,
    },
    /// A length field inside the body disagrees with the body or a limit.
    FieldLength {
        /// The frame's opcode.
        opcode: Opcode,
        /// Which field.
        field: &'static str,
        /// Its value.
        value: u32,
    },
    /// A text field is not UTF-8.
    NotUtf8 {
        /// The frame's opcode.
        opcode: Opcode,
        /// Which field.
        field: &'static str,
    },
    /// A field holds a value outside its domain (unknown location or error
    /// code, zero length, unknown auth mode).
    BadValue {
        /// The frame's opcode.
        opcode: Opcode,
        /// Which field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// The output buffer is too small for the frame.
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
}

impl WireError {
    /// The error code a peer gets for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            WireError::UnsupportedVersion(_) => ErrorCode::NotSupported,
            _ => ErrorCode::Invalid,
        }
    }

    /// This error as a [`Status`].
    pub fn to_status(&self) -> Status {
        Status::with_args(self.code(), format_args!("{self}"))
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::BadMagic(m) => write!(f, "bad magic {:02x}{:02x}, expected 5445 (\"TE\")", m[0], m[1]),
            WireError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "protocol version {v} not supported (this side speaks {})",
                    super::VERSION
                )
            }
            WireError::UnknownOpcode(o) => write!(f, "unknown opcode {o}"),
            WireError::ReservedBits { opcode, field, value } => {
                write!(f, "{opcode:?}: reserved {field} is {value:#x}, must be zero")
            }
            WireError::BodyLength { opcode, len } => write!(f, "{opcode:?}: body length {len} does not fit"),
            WireError::PayloadLength { opcode, len, max } => {
                write!(f, "{opcode:?}: payload length {len} not allowed (max {max})")
            }
            WireError::FieldLength { opcode, field, value } => {
                write!(
                    f,
                    "{opcode:?}: {field} {value} does not fit the body or its limit"
                )
            }
            WireError::NotUtf8 { opcode, field } => write!(f, "{opcode:?}: {field} is not UTF-8"),
            WireError::BadValue { opcode, field, value } => write!(f, "{opcode:?}: bad {field} {value:#x}"),
            WireError::BufferTooSmall { need, have } => {
                write!(f, "buffer of {have} bytes, frame needs {need}")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for WireError {}
