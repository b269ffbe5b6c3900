//! Error codes and the [`Status`] that carries a code with a message.
//!
//! The numeric values of the first seven codes are the ones users of Mooncake
//! Transfer Engine and openYuanrong's `TransferEngine` already know; the last
//! three are te's own and sit well outside the range those systems use.

use core::fmt;

/// Capacity in bytes of a [`Status`] message; a longer message is cut at a
/// word boundary (or, without one near the end, a character boundary) and
/// ends in `...`.
pub const STATUS_MSG_CAP: usize = 120;

/// Outcome code of an operation. `Ok` is included so that the code can be
/// carried on the wire and through C-style APIs unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    /// Success.
    Ok = 0,
    /// A bad argument: zero address or length, wrapping range, overlap,
    /// unknown device name, empty batch, stale id.
    Invalid = 2,
    /// The named thing does not exist (unregistered local memory, unknown
    /// base address, unknown segment).
    NotFound = 3,
    /// An error of the environment: peer unreachable, driver failure.
    RuntimeError = 5,
    /// Not initialised yet, shutting down, or busy with work that must end
    /// first (for example freeing a batch with pending tasks).
    NotReady = 8,
    /// The peer refused access: memory not registered there with the needed
    /// permission, or authentication failed.
    NotAuthorized = 9,
    /// The operation or location is not supported here.
    NotSupported = 36,
    /// A deadline passed before the operation ended.
    Timeout = 100,
    /// The operation was canceled by the user.
    Canceled = 101,
    /// The connection to the peer was lost before the operation ended.
    Disconnected = 102,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::Ok,
        ErrorCode::Invalid,
        ErrorCode::NotFound,
        ErrorCode::RuntimeError,
        ErrorCode::NotReady,
        ErrorCode::NotAuthorized,
        ErrorCode::NotSupported,
        ErrorCode::Timeout,
        ErrorCode::Canceled,
        ErrorCode::Disconnected,
    ];

    /// The numeric value, as carried on the wire.
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// The code for a numeric value, or `None` for a number no code has.
    pub fn from_u32(value: u32) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_u32() == value)
    }

    /// The code's name as written in the docs (`"NotAuthorized"`).
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::Ok => "Ok",
            ErrorCode::Invalid => "Invalid",
            ErrorCode::NotFound => "NotFound",
            ErrorCode::RuntimeError => "RuntimeError",
            ErrorCode::NotReady => "NotReady",
            ErrorCode::NotAuthorized => "NotAuthorized",
            ErrorCode::NotSupported => "NotSupported",
            ErrorCode::Timeout => "Timeout",
            ErrorCode::Canceled => "Canceled",
            ErrorCode::Disconnected => "Disconnected",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A code with a message that names what was wrong.
///
/// The message lives inline (no allocation) and is truncated to
/// [`STATUS_MSG_CAP`] bytes. Build one with [`Status::new`] or, with
/// formatting, with the [`status!`](crate::status) macro.
#[derive(Clone, PartialEq, Eq)]
pub struct Status {
    code: ErrorCode,
    /// The message was cut: it ends in [`ELLIPSIS`] and takes no more text.
    cut: bool,
    msg: heapless::String<STATUS_MSG_CAP>,
}

/// What ends a message cut at [`STATUS_MSG_CAP`].
const ELLIPSIS: &str = "...";

/// How far back from the cut a word boundary is looked for: a cut message
/// loses at most this much more than the room forced.
const WORD_BACKTRACK: usize = 24;

impl Status {
    /// A status with a fixed message.
    pub fn new(code: ErrorCode, msg: &str) -> Status {
        let mut s = Status::empty(code);
        s.push_truncated(msg);
        s
    }

    /// A status with a formatted message (see also [`status!`](crate::status)).
    pub fn with_args(code: ErrorCode, args: fmt::Arguments<'_>) -> Status {
        let mut s = Status::empty(code);
        // Truncation is handled by `write_str`; it never reports an error.
        let _ = fmt::write(&mut s, args);
        s
    }

    fn empty(code: ErrorCode) -> Status {
        Status {
            code,
            cut: false,
            msg: heapless::String::new(),
        }
    }

    fn push_truncated(&mut self, text: &str) {
        if self.cut {
            return;
        }
        let room = STATUS_MSG_CAP - self.msg.len();
        if text.len() <= room {
            // It fits the remaining capacity, so the push cannot fail.
            let _ = self.msg.push_str(text);
            return;
        }
        // Too long: keep what fits before the ellipsis, back to the last
        // space when there is one close to the cut.
        let mut end = room.saturating_sub(ELLIPSIS.len()).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let _ = self.msg.push_str(&text[..end]);
        let mut keep = self.msg.len().min(STATUS_MSG_CAP - ELLIPSIS.len());
        while !self.msg.is_char_boundary(keep) {
            keep -= 1;
        }
        let floor = keep.saturating_sub(WORD_BACKTRACK);
        if let Some(space) = self.msg[..keep].rfind(' ').filter(|&at| at > floor) {
            keep = space;
        }
        self.msg.truncate(keep);
        let _ = self.msg.push_str(ELLIPSIS);
        self.cut = true;
    }

    /// Whether the message was cut at [`STATUS_MSG_CAP`] bytes (it then
    /// ends in `...`).
    pub fn is_cut(&self) -> bool {
        self.cut
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.msg
    }
}

impl fmt::Write for Status {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_truncated(s);
        Ok(())
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({:?})", self.code, self.msg.as_str())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.msg)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Status {}

/// Builds a [`Status`] from a code and `format!`-style arguments:
/// `status!(Invalid, "length {} is zero", len)`, or with a code held in a
/// variable, `status!(=code, "...")`.
#[macro_export]
macro_rules! status {
    (= $code:expr, $($arg:tt)+) => {
        $crate::Status::with_args($code, format_args!($($arg)+))
    };
    ($code:ident, $($arg:tt)+) => {
        $crate::Status::with_args($crate::ErrorCode::$code, format_args!($($arg)+))
    };
}

/// Result type of te-proto operations.
pub type Result<T, E = Status> = core::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_numbers_are_kept() {
        assert_eq!(ErrorCode::Ok as u32, 0);
        assert_eq!(ErrorCode::Invalid as u32, 2);
        assert_eq!(ErrorCode::NotFound as u32, 3);
        assert_eq!(ErrorCode::RuntimeError as u32, 5);
        assert_eq!(ErrorCode::NotReady as u32, 8);
        assert_eq!(ErrorCode::NotAuthorized as u32, 9);
        assert_eq!(ErrorCode::NotSupported as u32, 36);
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u32(c.as_u32()), Some(c));
        }
        assert_eq!(ErrorCode::from_u32(1), None);
    }

    #[test]
    fn long_messages_truncate_on_char_boundary() {
        let long = "é".repeat(200);
        let s = Status::new(ErrorCode::Invalid, &long);
        assert!(s.message().len() <= STATUS_MSG_CAP);
        let body = s.message().strip_suffix("...").expect("an ellipsis");
        assert!(body.chars().all(|c| c == 'é'), "{s:?}");
        assert!(s.is_cut());
        let f = crate::status!(NotFound, "base {:#x} {}", 0x1000u64, long);
        assert!(f.message().starts_with("base 0x1000 é"));
        assert_eq!(f.code(), ErrorCode::NotFound);
    }

    #[test]
    fn long_messages_are_cut_at_a_word_with_an_ellipsis() {
        // The message of issue 16: cut mid-word ("...or refu") before.
        let words = "the peer closed the connection during the handshake: it may not speak te, or refuse this side for a reason of its own, see its log";
        let s = Status::new(ErrorCode::RuntimeError, words);
        let m = s.message();
        assert!(m.len() <= STATUS_MSG_CAP, "{m:?}");
        assert!(m.ends_with(" reason of its..."), "{m:?}");
        // Formatting in pieces cuts the same way, and nothing follows the cut.
        let f = crate::status!(RuntimeError, "{} {}", &words[..59], &words[60..]);
        assert_eq!(f.message(), m);
        // A message that fits is kept whole, without an ellipsis.
        let exact = "x".repeat(STATUS_MSG_CAP);
        let e = Status::new(ErrorCode::Invalid, &exact);
        assert_eq!(e.message(), exact);
        assert!(!e.is_cut());
        // One word longer than the room is cut inside it.
        let one = "y".repeat(STATUS_MSG_CAP + 1);
        let o = Status::new(ErrorCode::Invalid, &one);
        assert_eq!(o.message().len(), STATUS_MSG_CAP);
        assert!(o.message().ends_with("y..."));
    }
}
