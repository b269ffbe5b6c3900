//! # te-runtime: the te transfer engine
//!
//! Assembles the sans-IO [`te_proto`] core into an engine that moves bytes
//! between the registered memory of processes over TCP.
//!
//! - [`Engine`]: the engine on an event-loop thread of its own; `Send + Sync`,
//!   blocking helpers mirroring `yr.datasystem.TransferEngine`.
//! - [`EngineCore`]: the same engine with no event-loop thread, driven from the caller's
//!   `mio::Poll` (see `examples/embedded.rs`).
//!
//! An engine's memory lives in its [`EngineConfig::location`]: host memory
//! (`cpu`, the default) or a device (`sim:N` with the `sim` feature, on by
//! default). Device memory is not host-addressable; the engine stages it
//! through bounded buffers of each connection, and
//! [`Engine::read_memory`] / [`Engine::write_memory`] reach it from the
//! application.
//!
//! # Quick start
//!
//! ```
//! use std::time::Duration;
//! use te_runtime::{Engine, EngineConfig, Op, Perm, Request};
//!
//! // A target engine exposes 1 MiB; an initiator reads it in 16 tasks.
//! let target = Engine::start(EngineConfig::default())?;
//! let remote = target.alloc_memory(1 << 20, Perm::REMOTE_READ_WRITE)?;
//!
//! let initiator = Engine::start(EngineConfig::default())?;
//! let local = initiator.alloc_memory(1 << 20, Perm::LOCAL_ONLY)?;
//! let peer = initiator.open_segment(&target.segment_name())?;
//!
//! let batch = initiator.allocate_batch(16)?;
//! let reqs: Vec<Request> = (0..16u64)
//!     .map(|i| Request { op: Op::Read, local: local + i * 65536, segment: peer, remote: remote + i * 65536, len: 65536 })
//!     .collect();
//! initiator.submit_with_notify(batch, &reqs, "kv", b"layer 0 ready")?;
//! let status = initiator.wait_batch(batch, Duration::from_secs(10))?;
//! assert_eq!(status.completed, 16);
//! initiator.free_batch(batch)?;
//!
//! let notes = target.wait_notifications(Duration::from_secs(10));
//! assert_eq!(notes[0].msg, b"layer 0 ready");
//! # Ok::<(), te_runtime::Status>(())
//! ```

#![warn(missing_docs)]

// The README's example runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

mod admission;
mod config;
mod conn;
mod core;
mod devices;
pub mod directory;
mod engine;
mod mem;
mod rdma;
mod same_host;
mod staging;
pub mod sync;

pub use crate::config::EngineConfig;
pub use crate::config::Path;
pub use crate::core::{EngineCore, Notification, Request, SegmentId};
pub use crate::engine::Engine;
pub use crate::rdma::RdmaSettings;
/// The Ascend NPU driver behind `npu:N` locations (te-driver-ascend), set
/// up through [`EngineConfig::ascend`].
#[cfg(feature = "ascend")]
pub use te_driver_ascend as ascend;
/// The simulated devices behind `sim:N` locations (te-driver-sim), for
/// fault injection and statistics through [`Engine::with_sim_driver`].
#[cfg(feature = "sim")]
pub use te_driver_sim as sim;
pub use te_proto::batch::{Op, TaskState, TaskStatus};
pub use te_proto::driver::StreamHandle;
pub use te_proto::{BatchId, BatchStatus, ErrorCode, Location, Perm, Region, Status, TaskId};
