//! What an [`Endpoint`](super::Endpoint) is told at creation, and the
//! [`Path`] a task may take.

use core::fmt;
use core::str::FromStr;
use core::time::Duration;

use crate::error::{Result, Status};
use crate::location::Location;
use crate::status;

/// Which path transfers take to a peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Path {
    /// The same-host path where the peer offers it and proved its process,
    /// else TCP (the default).
    #[default]
    Auto,
    /// Always TCP.
    Tcp,
    /// Always the same-host path; a transfer to a peer without it fails
    /// `NotSupported`, naming why.
    Shm,
    /// Always RDMA; a transfer to a peer without it fails `NotSupported`,
    /// naming why.
    Rdma,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Path::Auto => "auto",
            Path::Tcp => "tcp",
            Path::Shm => "shm",
            Path::Rdma => "rdma",
        })
    }
}

impl FromStr for Path {
    type Err = Status;

    fn from_str(s: &str) -> Result<Path> {
        match s {
            "auto" => Ok(Path::Auto),
            "tcp" => Ok(Path::Tcp),
            "shm" => Ok(Path::Shm),
            "rdma" => Ok(Path::Rdma),
            _ => Err(status!(Invalid, "path {s:?}: expected tcp, shm, rdma or auto")),
        }
    }
}

/// The settings of an [`Endpoint`](super::Endpoint).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointConfig {
    /// Where this side's memory lives: the local span of every task.
    pub location: Location,
    /// A task not done this long after its submission ends `Timeout`.
    pub transfer_timeout: Duration,
    /// The most notifications waiting to be sent to one segment, standalone
    /// ones and those waiting for their batch together.
    pub max_notifications: u32,
    /// The path of tasks submitted without one of their own.
    pub path: Path,
}

impl Default for EndpointConfig {
    /// Host memory, 60 s per task, 4096 notifications, [`Path::Auto`].
    fn default() -> EndpointConfig {
        EndpointConfig {
            location: Location::Cpu,
            transfer_timeout: Duration::from_secs(60),
            max_notifications: 4096,
            path: Path::Auto,
        }
    }
}

/// What [`Path::route`] names when the link gives no refusal of its own.
const NOT_OFFERED: &str = "peer did not offer it";

/// Which way one task goes, from [`Path::route`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Requests and payloads over the link.
    Link,
    /// The same-host path: requests over the link, the owner of the memory
    /// copies.
    SameHost,
    /// One-sided RDMA READ/WRITE on the queue pairs of the link's RDMA
    /// exchange (docs/PROTOCOL.md, "RDMA path").
    Rdma,
}

/// What the link to a peer offers a task, for [`Path::route`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offers<'a> {
    /// The same-host path: the peer offered it and verified this process.
    pub same_host: bool,
    /// The task's device memory is announced to the peer with an IPC key,
    /// so the same-host path can reach it.
    pub keyed: bool,
    /// Why the link has no same-host path, when it has none.
    pub same_host_refusal: Option<&'a str>,
    /// RDMA: both sides gave queue pairs sharing a fabric
    /// ([`Rdma::usable`](crate::link::Rdma::usable)).
    pub rdma: bool,
    /// Why the link has no RDMA, when it has none.
    pub rdma_refusal: Option<&'a str>,
}

impl Path {
    /// The rule of path choice. A task whose local memory is in `local`
    /// goes over the same-host path when this path allows it, the link has
    /// it (`offers.same_host`) and the memory is host memory or device
    /// memory the peer can import (`offers.keyed`): on one host a copy is
    /// faster than a trip through the NIC; else over RDMA when this path
    /// allows it, the link has it (`offers.rdma`) and the memory is host
    /// memory (the NIC registers host memory only); else over the link
    /// (TCP). [`Path::Rdma`] and [`Path::Shm`] without
    /// their path are `NotSupported`, naming why the link has none (the
    /// refusal) or the memory the path cannot reach.
    pub fn route(self, local: Location, offers: &Offers<'_>) -> Result<Route> {
        let rdma = offers.rdma && local.is_host();
        let shareable = local.is_host() || offers.keyed;
        match self {
            Path::Tcp => Ok(Route::Link),
            Path::Auto | Path::Shm if shareable && offers.same_host => Ok(Route::SameHost),
            Path::Auto | Path::Rdma if rdma => Ok(Route::Rdma),
            Path::Auto => Ok(Route::Link),
            Path::Rdma if !local.is_host() => Err(status!(
                NotSupported,
                "RDMA path needs host memory (the NIC registers host memory only), task's local memory is {local}"
            )),
            Path::Rdma => Err(status!(
                NotSupported,
                "RDMA path not available: {}",
                offers.rdma_refusal.unwrap_or(NOT_OFFERED)
            )),
            Path::Shm if !shareable => Err(status!(
                NotSupported,
                "same-host path needs host memory or device memory the peer can import (IPC), task's local memory is {local}"
            )),
            Path::Shm => Err(status!(
                NotSupported,
                "same-host path not available: {}",
                offers.same_host_refusal.unwrap_or(NOT_OFFERED)
            )),
        }
    }
}
