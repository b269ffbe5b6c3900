//! The tool's errors and how a run ended.

use std::fmt;

use te_runtime::Status;

use crate::stop::Interrupted;

/// Why a command failed (exit code 1).
#[derive(Debug)]
pub enum Error {
    /// An engine call failed; its status says why.
    Engine(Status),
    /// The tool's own check failed; the message names the bad value (kept
    /// whole: a `Status` message is capped at 120 bytes).
    Tool(String),
}

impl From<Status> for Error {
    fn from(s: Status) -> Error {
        Error::Engine(s)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Engine(s) => write!(f, "{s}"),
            Error::Tool(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// The tool's own failure with `msg`.
pub fn fail(msg: impl Into<String>) -> Error {
    Error::Tool(msg.into())
}

/// A command's result.
pub type Result<T> = std::result::Result<T, Error>;

/// How a command that did not fail ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// It did all it was asked to.
    Done,
    /// A signal stopped it; what it had measured was printed.
    Stopped(Interrupted),
}

impl Ended {
    /// The process exit code: 0, or 130 / 143 after SIGINT / SIGTERM.
    pub fn exit_code(self) -> i32 {
        match self {
            Ended::Done => 0,
            Ended::Stopped(i) => i.exit_code(),
        }
    }
}
