//! Engine configuration.

use std::time::Duration;

use te_proto::link::{LinkConfig, MAX_OUTSTANDING};
use te_proto::{status, Location, Result};

pub use te_proto::endpoint::Path;

/// How an engine is set up. Every field has a sensible default
/// ([`EngineConfig::default`]); [`EngineConfig::validate`] names the bad
/// field and value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Where to listen, `host:port`; port 0 picks a free port. Default
    /// `127.0.0.1:0`: the engine binds only where told.
    pub listen: String,
    /// This engine's segment name; default: the listen address with the
    /// actual port (what peers use to open it).
    pub segment_name: Option<String>,
    /// Where this engine's memory lives (default `cpu`): memory from
    /// `alloc_memory` and `register_memory`, and the local side of every
    /// transfer. `sim:N` is device memory of te-driver-sim (feature `sim`).
    pub location: Location,
    /// Largest payload of one frame (default 1 MiB).
    pub max_payload: u32,
    /// Requests accepted in flight per connection (default 64, the most;
    /// fewer cost small blocks throughput, docs/PERFORMANCE.md).
    pub max_outstanding: u32,
    /// Time allowed to connect and finish the handshake (default 5 s).
    pub connect_timeout: Duration,
    /// A task not done this long after its submission ends `Timeout`
    /// (default 60 s).
    pub transfer_timeout: Duration,
    /// Probe a silent peer after this long (default 1 s).
    pub heartbeat_interval: Duration,
    /// Give up on a peer silent this long (default 10 s).
    pub idle_timeout: Duration,
    /// Shared secret for the handshake; peers without it are refused.
    pub secret: Option<Vec<u8>>,
    /// Capacity of the registration table (default 65536 regions).
    pub max_regions: usize,
    /// Batches that can exist at once (default 1024).
    pub max_batches: usize,
    /// Tasks over all batches at once (default 65536).
    pub max_tasks: usize,
    /// Connections accepted at once (default 1024). When all are taken, a
    /// new one evicts a connection still in the handshake; only when all
    /// are established is it refused (docs/DESIGN.md, "Admission").
    pub max_connections: usize,
    /// Connections accepted at once from one source address (default 64;
    /// more than `max_connections` counts as `max_connections`); beyond, the source's oldest connection
    /// still in the handshake is closed, or the new one refused.
    pub max_connections_per_source: usize,
    /// Accepted connections still in the handshake at once (default 64;
    /// more than `max_connections` counts as `max_connections`); beyond, the oldest handshake of the source
    /// holding the most is closed to make room.
    pub max_handshaking: usize,
    /// The floor on the progress of a frame a peer has begun, bytes per
    /// second (default 8192; 0: none): a frame of `n` bytes must be complete
    /// `idle_timeout + n / min_frame_rate` after its first byte, else the
    /// link closes with `Timeout` (docs/PROTOCOL.md 11.1).
    pub min_frame_rate: u32,
    /// Peer segments this engine can open over its life (default 4096).
    pub max_segments: usize,
    /// Notifications kept until taken; beyond this the sending peers are
    /// slowed down, never dropped (default 4096). Also the most
    /// notifications waiting to be sent to one segment, standalone or with
    /// their batch together: beyond, sending is `NotReady`.
    pub max_notifications: usize,
    /// Staging slots per connection and direction for device payloads
    /// (default 4, 1..=16): how many frame payloads of device memory are
    /// copied ahead of the socket. 1 copies one payload at a time, with no
    /// overlap of the device copy and the socket (for measuring what the
    /// overlap gains); each slot is at most `max_payload` bytes of pinned
    /// host memory.
    pub staging_slots: usize,
    /// Busy-poll: the event loop never sleeps in the kernel and blocked
    /// callers spin instead of sleeping, for the lowest latency at the
    /// price of a core kept busy (default off).
    pub busy_poll: bool,
    /// The simulated devices of this engine (default: 8 devices, `sim:0`
    /// to `sim:7`, of 4 GiB each).
    #[cfg(feature = "sim")]
    pub sim: te_driver_sim::SimConfig,
    /// How this engine finds and uses CANN's ACL runtime for `npu:N`
    /// memory (default: `libascendcl.so` from `$TE_ACL_LIBRARY`,
    /// `$ASCEND_HOME_PATH/lib64` or the loader path, loaded at the first
    /// use of an `npu:N` location; see te-driver-ascend).
    #[cfg(feature = "ascend")]
    pub ascend: te_driver_ascend::AscendConfig,
    /// The RDMA device (docs/RDMA.md): by default the first device the
    /// verbs library lists is tried at start; without one RDMA is off
    /// (`RDMA off: <reason>`, logged once) and TCP carries everything.
    pub rdma: crate::rdma::RdmaSettings,
    /// The path to peers (default [`Path::Auto`]: the same-host path where
    /// the peer offers it, else TCP); [`Path::Tcp`] also stops offering the
    /// same-host path to peers.
    pub path: Path,
    /// The directory where this engine publishes its segment name and
    /// looks up the names it opens: `etcd://host:port[,host:port...]` or
    /// `redis://host:port[/db]` (default none: peer-to-peer, names are
    /// `host:port`). See [`crate::directory`].
    pub directory: Option<String>,
    /// The namespace of this cluster's keys in the directory (default `te`).
    pub directory_prefix: String,
    /// How long the directory keeps this engine's entry without a renewal
    /// (default 10 s, renewed every third of it): a crashed engine's name is
    /// free again after this.
    pub directory_ttl: Duration,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            listen: "127.0.0.1:0".into(),
            segment_name: None,
            location: Location::Cpu,
            max_payload: 1 << 20,
            max_outstanding: 64,
            connect_timeout: Duration::from_secs(5),
            transfer_timeout: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
            secret: None,
            max_regions: 65536,
            max_batches: 1024,
            max_tasks: 65536,
            max_connections: 1024,
            max_connections_per_source: 64,
            max_handshaking: 64,
            min_frame_rate: te_proto::link::DEFAULT_MIN_FRAME_RATE,
            max_segments: 4096,
            max_notifications: 4096,
            staging_slots: 4,
            busy_poll: false,
            #[cfg(feature = "sim")]
            sim: te_driver_sim::SimConfig::default(),
            #[cfg(feature = "ascend")]
            ascend: te_driver_ascend::AscendConfig::default(),
            rdma: crate::rdma::RdmaSettings::default(),
            path: Path::Auto,
            directory: None,
            directory_prefix: "te".into(),
            directory_ttl: Duration::from_secs(10),
        }
    }
}

impl EngineConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        for (name, v, min) in [
            ("max_regions", self.max_regions, 1),
            ("max_batches", self.max_batches, 1),
            ("max_tasks", self.max_tasks, 1),
            ("max_connections", self.max_connections, 1),
            ("max_segments", self.max_segments, 1),
            ("max_notifications", self.max_notifications, 1),
        ] {
            if v < min || v > u32::MAX as usize {
                return Err(status!(Invalid, "{name} {v} out of range 1..={}", u32::MAX));
            }
        }
        for (name, v) in [
            ("max_connections_per_source", self.max_connections_per_source),
            ("max_handshaking", self.max_handshaking),
        ] {
            if v == 0 {
                return Err(status!(Invalid, "{name} is zero"));
            }
        }
        if !(1..=16).contains(&self.staging_slots) {
            return Err(status!(
                Invalid,
                "staging_slots {} out of range 1..=16",
                self.staging_slots
            ));
        }
        if self.max_outstanding as usize > MAX_OUTSTANDING {
            return Err(status!(
                Invalid,
                "max_outstanding {} above {MAX_OUTSTANDING}",
                self.max_outstanding
            ));
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("transfer_timeout", self.transfer_timeout),
        ] {
            if d.is_zero() {
                return Err(status!(Invalid, "{name} is zero"));
            }
        }
        if let Some(url) = &self.directory {
            crate::directory::check(url, &self.directory_prefix)?;
            if self.directory_ttl < Duration::from_secs(1) || self.directory_ttl > Duration::from_secs(86_400)
            {
                return Err(status!(
                    Invalid,
                    "directory_ttl {:?} out of range 1 s..=1 day",
                    self.directory_ttl
                ));
            }
        }
        self.link_config("validate")?;
        Ok(())
    }

    /// The link settings for this engine, under segment name `name`.
    pub(crate) fn link_config(&self, name: &str) -> Result<LinkConfig> {
        let mut c = LinkConfig::new(name)?;
        c.max_payload = self.max_payload;
        c.max_outstanding = self.max_outstanding;
        c.heartbeat_interval = self.heartbeat_interval;
        c.idle_timeout = self.idle_timeout;
        c.handshake_timeout = self.connect_timeout;
        c.min_frame_rate = self.min_frame_rate;
        if let Some(s) = &self.secret {
            c = c.with_secret(s)?;
        }
        c.validate()?;
        Ok(c)
    }

    /// The bounds of the admission of accepted connections.
    pub(crate) fn admission_limits(&self) -> crate::admission::Limits {
        crate::admission::Limits {
            max: self.max_connections,
            per_source: self.max_connections_per_source.min(self.max_connections),
            handshaking: self.max_handshaking.min(self.max_connections),
        }
    }
}
