//! Simulated accelerator memory for te.
//!
//! `sim:N` devices hold memory the host cannot address: their bytes are
//! reachable only through the driver's copy calls, so every staging path of
//! the runtime is exercised without hardware.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod fabric;
