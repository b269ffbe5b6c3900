//! Simulated accelerator memory for te.
//!
//! `sim:N` devices hold memory the host cannot address: their bytes are
//! reachable only through the driver's copy calls, so every staging path of
//! the runtime is exercised without hardware. [`SimDriver`] implements
//! te-proto's [`DeviceDriver`](te_proto::driver::DeviceDriver) interface,
//! the one the Ascend and RDMA drivers implement too, and injects faults
//! deterministically per device ([`Faults`]): fail the Nth operation with a
//! chosen code, delay asynchronous completions, refuse allocations beyond a
//! limit, or make a device disappear.
//!
//! ```
//! use te_driver_sim::{Faults, SimConfig, SimDriver};
//! use te_proto::driver::DeviceDriver;
//! use te_proto::ErrorCode;
//!
//! let mut sim = SimDriver::new(SimConfig::default())?;
//! let a = sim.alloc(3, 4096)?;
//! sim.copy_from_host(3, b"bytes on sim:3", a)?;
//! let mut back = [0u8; 14];
//! sim.copy_to_host(3, a, &mut back)?;
//! assert_eq!(&back, b"bytes on sim:3");
//!
//! // The next operation on sim:3 fails with the code chosen.
//! let next = sim.stats(3)?.ops + 1;
//! sim.set_faults(3, Faults { fail_op: Some((next, ErrorCode::RuntimeError)), ..Faults::default() })?;
//! assert_eq!(sim.copy_to_host(3, a, &mut back).unwrap_err().code(), ErrorCode::RuntimeError);
//! # Ok::<(), te_proto::Status>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod device;

pub use device::{DeviceStats, Faults, SimConfig, SimDriver, MAX_DEVICES};
