//! The fake libibverbs.so.1 (te-fake-verbs) behind the RDMA path in the
//! tests: its process-wide state, taken one test at a time, and engines and
//! `te-peer` processes on it.

use std::sync::{Mutex, MutexGuard};

use te_fake_verbs::Control;
use te_runtime::{EngineConfig, Path, RdmaSettings};

/// The fake's device count, faults and counters are process-wide (every
/// engine of this process that loads the fake shares them, and its NIC
/// serves them all): a test that uses them holds the guard for its whole
/// run. It starts with every fault reset and one device offered, so that
/// engines started afterwards with [`config_on_fake`] have RDMA.
pub fn fake_verbs() -> (MutexGuard<'static, ()>, &'static Control) {
    static SERIAL: Mutex<()> = Mutex::new(());
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = Control::get().expect("the fake libibverbs.so.1 is built next to this test");
    c.reset();
    c.set_devices(1);
    (g, c)
}

/// Where the fake library is, as a string for a child's environment.
pub fn fake_path() -> String {
    te_fake_verbs::library_path()
        .expect("the fake libibverbs.so.1 is built")
        .display()
        .to_string()
}

/// An engine's settings over `path`, its verbs library the fake (RDMA on
/// as long as the fake offers a device, [`fake_verbs`]).
pub fn config_on_fake(path: Path) -> EngineConfig {
    EngineConfig {
        path,
        rdma: RdmaSettings {
            library: te_fake_verbs::library_path(),
            ..RdmaSettings::default()
        },
        ..EngineConfig::default()
    }
}

/// An engine's settings over `path` with RDMA off (`enabled: false`): how a
/// test process whose fake offers a device runs an engine without one (the
/// fake's device count is one for the whole process).
pub fn config_without_rdma(path: Path) -> EngineConfig {
    EngineConfig {
        path,
        rdma: RdmaSettings {
            enabled: false,
            ..RdmaSettings::default()
        },
        ..EngineConfig::default()
    }
}

/// The environment of a `te-peer` whose verbs library is the fake offering
/// `devices` devices, plus `extra` variables (e.g. `TE_FAKE_VERBS_STALL_US`).
pub fn peer_env(devices: u32, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("TE_VERBS_LIBRARY".to_string(), fake_path()),
        ("TE_FAKE_VERBS_DEVICES".to_string(), devices.to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}
