//! Simulated accelerator memory for te.
//!
//! `sim:N` devices hold memory the host cannot address: their bytes are
//! reachable only through the driver's copy calls, so every staging path of
//! the runtime is exercised without hardware.
//!
//! [`fabric`] is a simulated byte-pipe fabric for deterministic simulation
//! of te-proto links: simulated memory, virtual time, one seed for all
//! randomness, and faults (partial IO, delays, cuts, frozen and restarted
//! peers); see docs/DESIGN.md, "Deterministic simulation".
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod fabric;
