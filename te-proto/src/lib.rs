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
//!
//! | module | holds |
//! |---|---|
//! | [`error`] | [`ErrorCode`] (the seed systems' numbers) and [`Status`] |
//! | [`location`] | `cpu`, `sim:N`, `npu:N` |
//! | [`driver`] | the interface of device drivers (device memory, copies) |
//! | [`registry`] | registered regions, their validation, pins |
//! | [`batch`] | batches of tasks with per-task status |
//! | [`wire`] | frames, encoder and incremental decoder (`docs/PROTOCOL.md`) |
//! | [`link`] | the per-peer state machine |
//! | [`text`] | [`text::Escaped`]: a peer's text made safe to log |
//! | [`endpoint`] | the layer above the links: per-segment queues, deadlines, results, notifications, path choice |
//!
//! # Two links driven by hand
//!
//! The shell's whole job, without sockets: carry bytes between two links
//! and put payload bytes where the links say.
//!
//! ```
//! use te_proto::batch::{BatchId, Op, TaskId, TransferRequest};
//! use te_proto::link::{Event, Link, LinkConfig, PayloadDest};
//! use te_proto::wire::MAX_CONTROL_LEN;
//! use te_proto::{Entry, Instant, Location, Perm, Region, Registry, Span};
//!
//! // Each side's memory, at made-up addresses.
//! const REMOTE: u64 = 0x1000;
//! const LOCAL: u64 = 0x2000;
//! let target_mem = *b"te-proto";
//! let mut local_mem = [0u8; 8];
//!
//! let now = Instant::ZERO;
//! let mut a = Link::connect(LinkConfig::new("a:1")?, now, [1; 32])?;
//! let mut b = Link::accept(LinkConfig::new("b:2")?, now, [2; 32])?;
//! let mut reg_a = Registry::new([Entry::EMPTY; 4]);
//! let mut reg_b = Registry::new([Entry::EMPTY; 4]);
//! reg_a.register(Region::new(LOCAL, 8, Location::Cpu, Perm::LOCAL_ONLY))?;
//! reg_b.register(Region::new(REMOTE, 8, Location::Cpu, Perm::REMOTE_READ))?;
//!
//! // a reads b's 8 bytes into its own memory.
//! let task = TaskId { batch: BatchId::from_u64(1), index: 0 };
//! let read = TransferRequest {
//!     op: Op::Read,
//!     local: Span::cpu(LOCAL, 8),
//!     segment: 0,
//!     remote_addr: REMOTE,
//!     remote_location: None,
//! };
//! a.submit(task, &read, None)?;
//!
//! let mut buf = vec![0u8; MAX_CONTROL_LEN];
//! let mut result = None;
//! while result.is_none() {
//!     // a -> b: handshake and the read request (no payload).
//!     while let Some(t) = a.poll_transmit(now, &mut buf, &reg_a) {
//!         assert_eq!(b.handle_input(now, &buf[..t.len], &mut reg_b), t.len);
//!     }
//!     // b -> a: frames, then a span of b's memory sent straight from there.
//!     while let Some(t) = b.poll_transmit(now, &mut buf, &reg_b) {
//!         assert_eq!(a.handle_input(now, &buf[..t.len], &mut reg_a), t.len);
//!         if let Some(src) = t.payload {
//!             let bytes = &target_mem[(src.addr - REMOTE) as usize..][..src.len as usize];
//!             // a names the destination: inside the task's local span.
//!             let Some(PayloadDest::Memory(dst)) = a.poll_payload() else { unreachable!() };
//!             local_mem[(dst.addr - LOCAL) as usize..][..bytes.len()].copy_from_slice(bytes);
//!             a.payload_landed(now, bytes.len() as u64, &mut reg_a);
//!             b.payload_sent(&mut reg_b);
//!         }
//!     }
//!     while let Some(event) = a.poll_event() {
//!         if let Event::TaskDone { result: r, .. } = event {
//!             result = Some(r);
//!         }
//!     }
//!     while b.poll_event().is_some() {}
//! }
//! assert_eq!(result, Some(Ok(())));
//! assert_eq!(&local_mem, b"te-proto");
//! # Ok::<(), te_proto::Status>(())
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(any(feature = "std", test))]
extern crate std;

mod auth;
pub mod batch;
pub mod driver;
pub mod endpoint;
pub mod error;
pub mod link;
pub mod location;
pub mod rdma;
pub mod region;
pub mod registry;
pub mod text;
pub mod time;
pub mod wire;

pub use batch::{BatchId, BatchStatus, BatchTable, TaskId, TaskState, TaskStatus, TransferRequest};
pub use endpoint::{Endpoint, EndpointConfig};
pub use error::{ErrorCode, Result, Status};
pub use location::Location;
pub use region::{Perm, Region, Span};
pub use registry::{Entry, PinKey, Registry, Unregister};
pub use time::Instant;
