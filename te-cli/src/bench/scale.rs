//! What `te bench` measures about scale besides speed: idle peers holding
//! connections to the target (`--idle-peers`), and the resident memory of
//! both processes (the target's only when it is the embedded child).

use std::time::Instant;

use te_runtime::{Engine, EngineConfig, Path};

use crate::error::{fail, Result};

/// Engines of this process that each hold an idle connection to every
/// target, for as long as this lives (each engine finalizes when dropped).
pub struct IdlePeers {
    /// Held, never read: each keeps its connections open until dropped.
    _engines: Vec<Engine>,
    /// The connections they hold.
    pub connections: usize,
    /// Seconds it took to connect them all.
    pub seconds: f64,
    /// The target's resident memory before and after, when its process is
    /// known (the embedded child).
    pub target_change: Option<(Resident, Resident)>,
}

impl IdlePeers {
    /// Starts `n` engines (TCP only, so that no same-host proof runs) and
    /// opens every one of `targets` from each, waiting for every handshake.
    /// `secret` is the targets'; `target_pid`, the target's process if known.
    pub fn connect(
        targets: &[String],
        n: u32,
        secret: Option<&[u8]>,
        target_pid: Option<u32>,
    ) -> Result<IdlePeers> {
        let before = Resident::of(target_pid);
        let start = Instant::now();
        let mut engines = Vec::with_capacity(n as usize);
        for i in 0..n {
            // Small tables: an engine preallocates them (about 12 MiB at the
            // defaults), and these only hold a connection.
            let engine = Engine::start(EngineConfig {
                secret: secret.map(<[u8]>::to_vec),
                path: Path::Tcp,
                max_regions: 16,
                max_batches: 4,
                max_tasks: 16,
                max_segments: targets.len().max(1),
                max_notifications: 16,
                ..EngineConfig::default()
            })
            .map_err(|e| fail(format!("--idle-peers: engine {i} of {n} did not start: {e}")))?;
            for target in targets {
                engine.open_segment(target).map_err(|e| {
                    fail(format!(
                        "--idle-peers: peer {i} of {n} could not open {target}: {e}"
                    ))
                })?;
            }
            engines.push(engine);
        }
        let seconds = start.elapsed().as_secs_f64();
        Ok(IdlePeers {
            connections: engines.len() * targets.len(),
            _engines: engines,
            seconds,
            target_change: before.zip(Resident::of(target_pid)),
        })
    }
}

/// Resident memory of a process, from `/proc/PID/status`: now (`VmRSS`)
/// and at its peak (`VmHWM`), in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resident {
    /// Resident now.
    pub now: u64,
    /// The most it was resident.
    pub peak: u64,
}

impl Resident {
    /// Of process `pid` (`None`: this one); `None` where `/proc` does not
    /// tell (not Linux, or the process is gone).
    pub fn of(pid: Option<u32>) -> Option<Resident> {
        let path = match pid {
            Some(p) => format!("/proc/{p}/status"),
            None => "/proc/self/status".to_string(),
        };
        let status = std::fs::read_to_string(path).ok()?;
        Some(Resident {
            now: field_kib(&status, "VmRSS:")? * 1024,
            peak: field_kib(&status, "VmHWM:")? * 1024,
        })
    }

    /// As JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"rss_bytes": self.now, "peak_bytes": self.peak})
    }
}

/// The value of a `Name:   123 kB` line of `/proc/PID/status`, in KiB.
fn field_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_is_read_from_the_status_lines() {
        let status = "Name:\tte\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(field_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(field_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(field_kib(status, "VmSwap:"), None);
        let me = Resident::of(None).expect("this process's /proc status");
        assert!(me.now > 0 && me.peak >= me.now);
    }
}
