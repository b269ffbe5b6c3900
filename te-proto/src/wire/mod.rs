//! The wire format: a fixed 16-byte header, an opcode-specific body and, for
//! data frames only, a payload of raw bytes. All integers are big-endian
//! (network byte order); every struct is `repr(C)` of byte-aligned fields, so
//! there are no padding bytes. The normative description is `docs/PROTOCOL.md`.

mod body;
mod decode;
mod decoder;
mod error;
mod frame;
mod header;

pub use decoder::{Decoder, Progress};
pub use error::WireError;
pub use frame::{
    encode_info_reply, Frame, Hello, LocalAccess, LocalKey, LocalMap, RdmaKey, RdmaMsg, RegionList,
    AUTH_HMAC_SHA256, AUTH_NONE, LOCATION_ANY, REGION_ENTRY_LEN,
};
pub use header::{Header, Opcode, FLAG_MORE, FLAG_PEER_DEVICE, HEADER_LEN, MAGIC, VERSION};

/// Largest body of any frame, in bytes. Bodies are copied into the decoder's
/// fixed buffer, so this bounds the decoder's memory.
pub const MAX_BODY: usize = 4096;

/// Largest header-plus-body of any frame: a transmit buffer of this size
/// always has room for the next frame.
pub const MAX_CONTROL_LEN: usize = HEADER_LEN + MAX_BODY;

/// Hard upper bound on a frame's payload (a link negotiates a smaller one).
pub const MAX_PAYLOAD_LIMIT: u32 = 16 << 20;

/// Longest segment name in a handshake, in bytes of UTF-8.
pub const SEGMENT_NAME_MAX: usize = 255;

/// Longest notification name, in bytes of UTF-8.
pub const NOTIFY_NAME_MAX: usize = 64;

/// Longest notification message, in bytes.
pub const NOTIFY_MSG_MAX: usize = 2048;

/// Longest error message carried by an `Error` frame, in bytes of UTF-8.
pub const ERROR_MSG_MAX: usize = crate::error::STATUS_MSG_CAP;

/// Longest socket name in a `PidChallenge`, in bytes (an abstract Unix
/// socket name fits in 107).
pub const PID_SOCKET_MAX: usize = 100;

/// Most regions in one segment-info reply page.
pub const INFO_PAGE_MAX: usize = 128;

#[cfg(test)]
mod tests;
