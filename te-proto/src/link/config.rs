//! Link configuration and what a link learns about its peer.

use core::time::Duration;

use crate::auth::SECRET_MAX;
use crate::error::Result;
use crate::status;
use crate::wire::{MAX_PAYLOAD_LIMIT, SEGMENT_NAME_MAX};

/// Most requests a link keeps in flight towards its peer, and most it
/// accepts from the peer: the ceiling for [`LinkConfig::max_outstanding`].
pub const MAX_OUTSTANDING: usize = 64;

/// The default of [`LinkConfig::min_frame_rate`], bytes per second.
pub const DEFAULT_MIN_FRAME_RATE: u32 = 8192;

/// Most tasks one link carries at once; further submissions answer
/// `NotReady` until a task ends.
pub const MAX_LINK_TASKS: usize = 128;

bitflags::bitflags! {
    /// Capability bits a side sends in its handshake (docs/PROTOCOL.md).
    /// Bits this version does not know are kept as the peer sent them and
    /// mean nothing here. The default is none.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Caps: u32 {
        /// The sender maps the buffers its same-host peer announces with
        /// `LocalMap` (docs/PROTOCOL.md, "Mapped buffers"); a peer may send
        /// `LocalMap` only to a side that set this bit.
        const SHARED_MEMORY = 1 << 0;
        /// The sender can copy to and from a same-host peer's memory by process id.
        const PROCESS_VM = 1 << 1;
        /// The sender imports the device buffers its same-host peer
        /// announces with `LocalKey` (docs/PROTOCOL.md, "Device buffers");
        /// a peer may send `LocalKey` only to a side that set this bit.
        const DEVICE_IPC = 1 << 2;
        /// The sender has an RDMA device and takes part in the RDMA path
        /// (docs/PROTOCOL.md, "RDMA path"): a connector with the bit may
        /// offer its queue pairs with `RdmaConn` to an acceptor with it.
        const RDMA = 1 << 3;
    }
}

/// Settings of one link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    /// This side's segment name, sent in the handshake (1 to 255 bytes).
    pub segment_name: heapless::String<SEGMENT_NAME_MAX>,
    /// Opaque host identity, for same-host detection by the peer.
    pub host_id: [u8; 32],
    /// Capability bits.
    pub caps: Caps,
    /// Largest payload of one frame, both accepted and sent (4 KiB to 16 MiB;
    /// default 1 MiB). Larger transfers are cut into frames of this size.
    pub max_payload: u32,
    /// Most requests accepted in flight from the peer (1 to
    /// [`MAX_OUTSTANDING`]; default 32).
    pub max_outstanding: u32,
    /// Probe a peer that has sent nothing for this long (default 1 s).
    pub heartbeat_interval: Duration,
    /// Close the link when the peer has sent nothing for this long (default 10 s).
    pub idle_timeout: Duration,
    /// Close the link when the handshake has not finished after this long (default 5 s).
    pub handshake_timeout: Duration,
    /// The floor on the progress of a frame the peer has begun, in bytes per
    /// second (default 8192; 0: no floor). A frame of `n` bytes (header,
    /// body and payload) whose first byte came at `t` must be complete by
    /// `t + idle_timeout + n / min_frame_rate`, else the link closes with
    /// `Timeout`: a peer cannot hold a link by trickling a frame, since
    /// bytes arriving keep the idle timeout away. The default lets a 1 MiB
    /// frame take 138 s.
    pub min_frame_rate: u32,
    /// Shared secret; when set, both sides must prove it (up to 64 bytes).
    pub secret: Option<heapless::Vec<u8, SECRET_MAX>>,
}

impl LinkConfig {
    /// Defaults for a segment named `segment_name`; `Invalid` when the name
    /// is empty or longer than 255 bytes.
    pub fn new(segment_name: &str) -> Result<LinkConfig> {
        let mut name = heapless::String::new();
        if segment_name.is_empty() || name.push_str(segment_name).is_err() {
            return Err(status!(
                Invalid,
                "segment name of {} bytes: must be 1 to {SEGMENT_NAME_MAX}",
                segment_name.len()
            ));
        }
        Ok(LinkConfig {
            segment_name: name,
            host_id: [0; 32],
            caps: Caps::empty(),
            max_payload: 1 << 20,
            max_outstanding: 32,
            heartbeat_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            min_frame_rate: DEFAULT_MIN_FRAME_RATE,
            secret: None,
        })
    }

    /// Sets the shared secret; `Invalid` when it is empty or longer than 64 bytes.
    pub fn with_secret(mut self, secret: &[u8]) -> Result<LinkConfig> {
        if secret.is_empty() {
            return Err(status!(Invalid, "shared secret is empty"));
        }
        let s = heapless::Vec::from_slice(secret).map_err(|_| {
            status!(
                Invalid,
                "shared secret of {} bytes: at most {SECRET_MAX}",
                secret.len()
            )
        })?;
        self.secret = Some(s);
        Ok(self)
    }

    /// Checks every field; the message names the bad one and its value.
    pub fn validate(&self) -> Result<()> {
        if self.segment_name.is_empty() {
            return Err(status!(Invalid, "segment name is empty"));
        }
        if !(4096..=MAX_PAYLOAD_LIMIT).contains(&self.max_payload) {
            return Err(status!(
                Invalid,
                "max_payload {} out of range 4096..={MAX_PAYLOAD_LIMIT}",
                self.max_payload
            ));
        }
        if self.max_outstanding == 0 || self.max_outstanding as usize > MAX_OUTSTANDING {
            return Err(status!(
                Invalid,
                "max_outstanding {} out of range 1..={MAX_OUTSTANDING}",
                self.max_outstanding
            ));
        }
        for (name, d) in [
            ("heartbeat_interval", self.heartbeat_interval),
            ("idle_timeout", self.idle_timeout),
            ("handshake_timeout", self.handshake_timeout),
        ] {
            if d.is_zero() {
                return Err(status!(Invalid, "{name} is zero"));
            }
        }
        if self.idle_timeout <= self.heartbeat_interval {
            return Err(status!(
                Invalid,
                "idle_timeout {:?} must exceed heartbeat_interval {:?}",
                self.idle_timeout,
                self.heartbeat_interval
            ));
        }
        if self.secret.as_ref().is_some_and(|s| s.is_empty()) {
            return Err(status!(Invalid, "shared secret is empty"));
        }
        Ok(())
    }
}

/// What the handshake told about the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's segment name.
    pub segment_name: heapless::String<SEGMENT_NAME_MAX>,
    /// The peer's host identity.
    pub host_id: [u8; 32],
    /// The peer's capability bits.
    pub caps: Caps,
    /// Largest payload the peer accepts.
    pub max_payload: u32,
    /// Most requests the peer accepts in flight.
    pub max_outstanding: u32,
}

impl PeerInfo {
    /// True when the peer runs on the same host (same non-zero host identity).
    pub fn same_host(&self, local: &LinkConfig) -> bool {
        self.host_id != [0; 32] && self.host_id == local.host_id
    }
}
