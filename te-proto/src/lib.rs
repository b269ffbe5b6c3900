//! # te-proto: the sans-IO core of the te transfer engine
//!
//! Everything a transfer engine must decide without doing IO: error codes,
//! memory locations, the registration table, batches and tasks, the wire
//! format and the per-peer link state machine. No sockets, no clocks, no
//! allocation: time comes in as a value, bytes come in through `handle_*`
//! calls and everything that must happen goes out through `poll_*` calls.
//!
//! Payload bytes never pass through this crate. A transmit is header bytes
//! plus the description of a memory span that follows them; on receive the
//! link says where the next payload bytes must land.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(any(feature = "std", test))]
extern crate std;

mod auth;
pub mod batch;
pub mod error;
pub mod link;
pub mod location;
pub mod region;
pub mod registry;
pub mod time;
pub mod wire;

pub use batch::{BatchId, BatchStatus, BatchTable, TaskId, TaskState, TaskStatus, TransferRequest};
pub use error::{ErrorCode, Result, Status};
pub use location::Location;
pub use region::{Perm, Region, Span};
pub use registry::{Entry, PinKey, Registry, Unregister};
pub use time::Instant;
