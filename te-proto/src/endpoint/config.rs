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
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Path::Auto => "auto",
            Path::Tcp => "tcp",
            Path::Shm => "shm",
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
            _ => Err(status!(Invalid, "path {s:?}: expected tcp, shm or auto")),
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

/// Which way one task goes, from [`Path::route`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Requests and payloads over the link.
    Link,
    /// The same-host path: requests over the link, the owner of the memory
    /// copies.
    SameHost,
}

impl Path {
    /// The rule of path choice. A task whose local memory is in `local`
    /// goes over the same-host path when this path allows it, the link has
    /// the path (`same_host`: the peer offered it and verified this
    /// process) and the memory is host memory, or device memory the peer
    /// can import (`keyed`: announced to it with an IPC key). [`Path::Shm`]
    /// without it is `NotSupported`, naming `refusal` (why the link has no
    /// same-host path) or the device memory that has no key.
    pub fn route(
        self,
        local: Location,
        keyed: bool,
        same_host: bool,
        refusal: Option<&str>,
    ) -> Result<Route> {
        let shareable = local.is_host() || keyed;
        match self {
            Path::Tcp => Ok(Route::Link),
            Path::Auto | Path::Shm if shareable && same_host => Ok(Route::SameHost),
            Path::Auto => Ok(Route::Link),
            Path::Shm if !shareable => Err(status!(
                NotSupported,
                "same-host path needs host memory or device memory the peer can import (IPC), task's local memory is {local}"
            )),
            Path::Shm => Err(status!(
                NotSupported,
                "same-host path not available: {}",
                refusal.unwrap_or("peer did not offer it")
            )),
        }
    }
}
