//! The engine's RDMA device (docs/RDMA.md): probed at start when the
//! configuration asks for it (opened and closed again: it carries no
//! transfer yet, [`RDMA_NOT_CARRIED`](crate::RDMA_NOT_CARRIED)), else the
//! reason RDMA is off, logged once and shown by `te info`.

use std::path::PathBuf;

use tracing::info;

/// The RDMA section of [`EngineConfig`](crate::EngineConfig).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdmaSettings {
    /// Try to open a device at start (default true; a failure only turns
    /// RDMA off, logged once).
    pub enabled: bool,
    /// The verbs library; `None`: `$TE_VERBS_LIBRARY`, else `libibverbs.so.1`.
    pub library: Option<PathBuf>,
    /// The device by name (`mlx5_0`); `None`: the first listed.
    pub device: Option<String>,
    /// Port number, 1-based (default 1).
    pub port: u8,
    /// GID table index (default 0).
    pub gid_index: u8,
}

impl Default for RdmaSettings {
    fn default() -> RdmaSettings {
        RdmaSettings {
            enabled: true,
            library: None,
            device: None,
            port: 1,
            gid_index: 0,
        }
    }
}

/// What the probe at start found: the device, or why there is none.
pub(crate) struct Rdma {
    /// `RDMA: <device> port <n> gid index <i>` or `RDMA off: <reason>`.
    status: String,
}

impl Rdma {
    /// Opens (and closes) the device `settings` names, logging the outcome once.
    pub fn open(settings: &RdmaSettings) -> Rdma {
        if !settings.enabled {
            return Rdma::off("disabled in the configuration".into());
        }
        Rdma::open_driver(settings)
    }

    #[cfg(feature = "rdma")]
    fn open_driver(s: &RdmaSettings) -> Rdma {
        let cfg = te_driver_rdma::RdmaConfig {
            library: s.library.clone(),
            device: s.device.clone(),
            port: s.port,
            gid_index: s.gid_index,
            ..Default::default()
        };
        match te_driver_rdma::RdmaDriver::open(cfg) {
            Ok(d) => {
                let i = d.info();
                let status = format!("RDMA: {} port {} gid index {}", i.name, i.port, i.gid_index);
                info!("{status}");
                Rdma { status }
            }
            Err(why) => Rdma::off(why.to_string()),
        }
    }

    #[cfg(not(feature = "rdma"))]
    fn open_driver(_: &RdmaSettings) -> Rdma {
        Rdma::off("te-runtime built without the rdma feature".into())
    }

    fn off(why: String) -> Rdma {
        let status = format!("RDMA off: {why}");
        info!("{status}");
        Rdma { status }
    }

    /// `RDMA: <device> port <n> gid index <i>` or `RDMA off: <reason>`.
    pub fn status(&self) -> &str {
        &self.status
    }
}
