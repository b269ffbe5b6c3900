//! Ascend NPU memory for te, through the CANN ACL runtime (`libascendcl.so`).
//!
//! The library is loaded at run time with `dlopen` (no CANN at build time),
//! so one te binary runs on machines with and without NPUs: where the
//! library or a required symbol is missing, [`AscendDriver::new`] fails
//! with a [`LoadError`] naming the path tried and the symbol, which the
//! runtime reports as `NotSupported` at `Engine::start`.
//!
//! [`AscendDriver`] implements te-proto's
//! [`DeviceDriver`](te_proto::driver::DeviceDriver) for `npu:N` locations:
//!
//! | te operation | ACL calls |
//! |---|---|
//! | driver start / last driver dropped | `aclInit` / `aclFinalize`, counted per process ([`process`]) |
//! | any call on a thread | `aclrtSetDevice` first, once per thread and device |
//! | `device_count`, `capacity` | `aclrtGetDeviceCount`, `aclrtGetMemInfo(ACL_HBM_MEM)` |
//! | `alloc`, `free` | `aclrtMalloc(HUGE_FIRST)`, `aclrtFree` |
//! | `check_range` (registration) | the driver's allocations, else `aclrtMemGetAddressRange` (memory the application allocated) |
//! | `copy_to_host`, `copy_from_host`, `copy_device` | `aclrtMemcpy` (D2H, H2D, D2D; peer access through `aclrtDeviceCanAccessPeer`/`aclrtDeviceEnablePeerAccess`, else staged through the host) |
//! | `alloc_staging`, `free_staging` | `aclrtMallocHost`, `aclrtFreeHost` |
//! | `submit_copy` | `aclrtMemcpyAsync` on a driver-owned stream of the device, then `aclrtRecordEvent` |
//! | `poll_copy` | `aclrtQueryEventStatus` (never the deprecated `aclrtQueryEvent`, whose numbers are the other way round) |
//! | `fence_stream` (stream-ordered submit) | `aclrtRecordEvent` on the caller's stream (the start), `aclrtCreateNotify` and `aclrtWaitAndResetNotify` on it (the end), `aclrtRecordEvent(passed)` behind it (src/fence.rs) |
//! | `poll_fence` | `aclrtQueryEventStatus` of the start |
//! | `release_fence` | `aclrtRecordNotify` on the driver's stream; `aclrtDestroyNotify` and the fence's events once `passed` completed (the caller's stream ran past the fence) |
//!
//! Every `aclError` becomes a [`Status`](te_proto::Status) naming the call,
//! the device and the ACL code with its name ([`acl_error`]).
#![warn(missing_docs)]

pub mod acl_error;
pub mod driver;
mod fence;
pub mod library;
pub mod process;

pub use driver::{AscendConfig, AscendDriver};
pub use library::LoadError;
