//! The driver with the real libibverbs (Debian's `libibverbs1`, which `.ci/run` installs)
//! or with none at all: on a machine without RDMA hardware it must say why RDMA is off, not
//! crash. Its own test binary, so no fake is loaded in this process.

use std::path::Path;

use te_driver_rdma::{RdmaConfig, RdmaDriver, Unavailable};
use te_proto::ErrorCode;

const DEBIAN: &str = "/usr/lib/x86_64-linux-gnu/libibverbs.so.1";

#[test]
fn the_real_library_or_its_absence_gives_a_clear_reason() {
    let installed = Path::new(DEBIAN).exists();
    let library = installed.then(|| DEBIAN.into());
    let cfg = RdmaConfig {
        library: library.clone(),
        ..RdmaConfig::default()
    };
    match RdmaDriver::open(cfg) {
        // A machine with an RDMA NIC (or rdma_rxe): the device is usable.
        Ok(d) => {
            assert!(installed, "only the real library opens a device here");
            assert!(!d.info().name.is_empty());
            println!("RDMA device {} port {} is up", d.info().name, d.info().port);
        }
        Err(e) => {
            println!("RDMA off: {e}");
            assert_eq!(e.code(), ErrorCode::NotSupported, "{e}");
            let shown = e.to_string();
            if installed {
                // Debian's library loads and lists nothing here (no kernel devices).
                assert!(matches!(e, Unavailable::NoDevices { .. }), "{e:?}");
                assert!(
                    shown.contains(DEBIAN) && shown.contains("found no RDMA device"),
                    "{shown}"
                );
            } else {
                assert!(matches!(e, Unavailable::Library(_)), "{e:?}");
                assert!(shown.contains("libibverbs.so.1"), "{shown}");
            }
        }
    }
    // The device list says the same.
    match te_driver_rdma::device::list(library.as_deref()) {
        Ok(names) => assert!(!names.is_empty()),
        Err(e) => assert_eq!(e.code(), ErrorCode::NotSupported, "{e}"),
    }
}
