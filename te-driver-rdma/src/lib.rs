//! RDMA verbs for te, through `libibverbs.so.1` loaded at run time (no rdma-core at build
//! time).
//!
//! Where the library, a symbol, a device or an active port is missing,
//! [`RdmaDriver::open`] fails with an [`Unavailable`] whose text says why, for the runtime's
//! log and `te info`, and te uses its other paths.
//!
//! | step | verbs |
//! |---|---|
//! | load | `dlopen(libibverbs.so.1)`, 22 symbols ([`library`]) |
//! | discovery ([`device`]) | `ibv_get_device_list`, `ibv_get_device_name`, `ibv_open_device`, `ibv_free_device_list`, `ibv_query_device`, `ibv_query_port`, `ibv_query_gid` |
//! | resources ([`RdmaDriver::open`]) | `ibv_alloc_pd`, `ibv_create_comp_channel` (fd made non-blocking), `ibv_create_cq` |
//! | regions ([`RdmaDriver::register`]) | `ibv_reg_mr` with flags from [`te_proto::Perm`] ([`memory::access_flags`]), `ibv_dereg_mr` once no transfer uses the region |
//! | queue pairs ([`qp`]) | `ibv_create_qp` (RC), `ibv_modify_qp` RESET→INIT→RTR→RTS from the peer's [`ConnInfo`], `ibv_query_qp`, `ibv_destroy_qp` |
//! | transfers ([`RdmaDriver::submit`]) | `ops.post_send` of signaled RDMA_READ/RDMA_WRITE chains, at most `max_wr_bytes` each, at most `max_outstanding` per QP |
//! | completions ([`RdmaDriver::poll`]) | `ibv_get_cq_event`, `ibv_ack_cq_events`, `ops.poll_cq`, `ops.req_notify_cq` ([`ops`]) |
//!
//! Errors name the call and the errno or work-completion status ([`VerbsError`]), and map
//! to te codes: `IBV_WC_REM_ACCESS_ERR` is `NotAuthorized`, a lost peer or flushed work
//! `Disconnected`.
#![warn(missing_docs)]

pub mod abi;
pub mod conn;
pub mod device;
pub mod driver;
pub mod error;
pub mod library;
pub mod memory;
pub mod ops;
pub mod qp;
pub mod transfer;

pub use conn::{ConnInfo, RemoteKey};
pub use device::{DeviceInfo, Unavailable};
pub use driver::{Event, RdmaConfig, RdmaDriver};
pub use error::{Cause, VerbsError};
pub use memory::{Deregister, MemoryRegion};
pub use qp::{QpId, QpState};
pub use transfer::{Op, Transfer, TransferId};
