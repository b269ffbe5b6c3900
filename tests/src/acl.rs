//! The fake libascendcl.so behind `npu:N` in the tests: its process-wide
//! controls, taken one test at a time, and engines on it.

use std::sync::{Mutex, MutexGuard};

use te_fake_acl::Control;
use te_runtime::ascend::AscendConfig;
use te_runtime::{EngineConfig, Location, Path};

/// The fake's faults and counters are process-wide: a test that uses them
/// holds the guard for its whole run, and starts with every fault reset.
pub fn fake_acl() -> (MutexGuard<'static, ()>, &'static Control) {
    static SERIAL: Mutex<()> = Mutex::new(());
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = Control::get().expect("the fake libascendcl.so is built next to this test");
    c.reset();
    (g, c)
}

/// Where the fake library is, as a string for a child's arguments.
pub fn fake_path() -> String {
    te_fake_acl::library_path()
        .expect("the fake libascendcl.so is built")
        .display()
        .to_string()
}

/// An engine's settings in `location` over `path`, its ACL the fake.
pub fn config_on_fake(location: Location, path: Path) -> EngineConfig {
    EngineConfig {
        location,
        path,
        ascend: AscendConfig {
            library: te_fake_acl::library_path(),
            ..AscendConfig::default()
        },
        ..EngineConfig::default()
    }
}
