//! A fake `libibverbs.so.1` for testing RDMA drivers without an RDMA NIC.
//!
//! The cdylib exports the verbs entry points te-driver-rdma resolves, with the C ABI of
//! rdma-core's `libibverbs/verbs.h` (structures laid out as there, [`abi`]), and fills the
//! context's `struct ibv_context_ops` so that the header's inline `ibv_post_send`,
//! `ibv_poll_cq` and `ibv_req_notify_cq` work through it. Nothing here links or needs
//! rdma-core. Exported: `ibv_get_device_list`, `ibv_free_device_list`, `ibv_get_device_name`,
//! `ibv_open_device`, `ibv_close_device`, `ibv_query_device`, `ibv_query_port`,
//! `ibv_query_gid`, `ibv_alloc_pd`, `ibv_dealloc_pd`, `ibv_reg_mr`, `ibv_dereg_mr`,
//! `ibv_create_comp_channel`, `ibv_destroy_comp_channel`, `ibv_create_cq`, `ibv_destroy_cq`,
//! `ibv_get_cq_event`, `ibv_ack_cq_events`, `ibv_create_qp`, `ibv_modify_qp`,
//! `ibv_query_qp`, `ibv_destroy_qp`; in the ops table `poll_cq`, `req_notify_cq`, `post_send`
//! and `post_recv`/`post_srq_recv` (`EOPNOTSUPP`: there is no receive side).
//!
//! # What is faked, and how
//!
//! * **Devices** ([`device`]): none unless `TE_FAKE_VERBS_DEVICES=N` (at most 4) or
//!   [`Control::set_devices`]; then `fake_verbs0..`, one RoCE-like port each (port 1, active,
//!   link layer Ethernet, LID 0, active MTU 1024, one GID `fe80::<pid>:<nonce>:<index>`).
//! * **Memory regions**: `ibv_reg_mr` checks the access flags as the kernel does (remote
//!   write without local write: `EINVAL`); lkey = rkey, never reused.
//! * **Queue pairs** ([`qp`]): RC only; the RESET→INIT→RTR→RTS state machine with the
//!   kernel's attribute masks; posts refused outside RTS (`EINVAL`, `*bad_wr` set) or past
//!   `max_send_wr` outstanding (`ENOMEM`); work executed in order by a requester thread per
//!   QP; errors move the QP to ERR and flush what follows (`IBV_WC_WR_FLUSH_ERR`).
//! * **The NIC** ([`nic`]): a thread per device and process serves the peers' one-sided
//!   READ/WRITE over an abstract Unix socket named after the port GID ([`wire`]), checking
//!   the addressed QP, rkey, bounds and access flags (`IBV_WC_REM_ACCESS_ERR`); a peer that is
//!   gone gives `IBV_WC_RETRY_EXC_ERR`.
//! * **Completions** ([`cq`]): CQs of exactly `cqe` entries, overrun as on hardware (the
//!   entry is lost, the CQ broken, the QP in ERR, counted by [`Control::cq_overruns`]);
//!   completion channels are pipes whose read end becomes readable after
//!   `ibv_req_notify_cq` and a new completion.
//!
//! # How tests control it
//!
//! * `TE_FAKE_VERBS_DEVICES=N` (above); `TE_FAKE_VERBS_STALL_US=N`: this process's responder
//!   waits N µs before each request (a slow peer NIC).
//! * `TE_FAKE_VERBS_FAIL="ibv_reg_mr:1:12,wc:3:10"`: the first `ibv_reg_mr` fails with
//!   `ENOMEM` (12); the third work request executed completes with status 10
//!   (`IBV_WC_REM_ACCESS_ERR`) without being carried out ([`fault`]). Any exported function
//!   and `ibv_post_send` / `ibv_poll_cq` / `ibv_req_notify_cq` can be named.
//! * The same through [`Control`] (`te_fake_verbs_*` C symbols resolved from the built
//!   library), plus call counts, leak counts and requests served.
//!
//! # Finding the built library
//!
//! [`library_path`]: a dependent crate's test finds `libte_fake_verbs.so` in its own
//! directory (`<target>/<profile>/deps/`). To stand in for the real library through the
//! loader, a symlink named `libibverbs.so.1` in a directory on `LD_LIBRARY_PATH` is enough;
//! te-driver-rdma also takes the path in `TE_VERBS_LIBRARY`.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod abi;
mod control;
pub mod cq;
pub mod device;
pub mod fault;
mod locate;
pub mod nic;
pub mod qp;
pub mod verbs;
pub mod wire;

pub use control::Control;
pub use locate::library_path;
