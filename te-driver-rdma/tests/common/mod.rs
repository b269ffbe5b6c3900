//! Helpers shared by the tests that run the driver on the fake libibverbs.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use te_driver_rdma::{Event, RdmaConfig, RdmaDriver, TransferId, VerbsError};
use te_fake_verbs::Control;

/// The fake's state is process-wide: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the test lock, resets the fake's faults and offers one device.
pub fn fake() -> (MutexGuard<'static, ()>, &'static Control) {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = Control::get().expect("the fake libibverbs is built next to this test");
    c.reset();
    c.set_devices(1);
    (g, c)
}

/// The configuration that loads the fake.
pub fn config() -> RdmaConfig {
    RdmaConfig {
        library: te_fake_verbs::library_path(),
        ..RdmaConfig::default()
    }
}

/// A driver on the fake with `config`.
pub fn open(config: RdmaConfig) -> RdmaDriver {
    RdmaDriver::open(config).unwrap_or_else(|e| panic!("the driver opens the fake: {e}"))
}

/// Bytes that differ per position and seed.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// Ended transfers: result and bytes moved.
pub type Ended = HashMap<TransferId, (Result<(), VerbsError>, u64)>;

/// Waits (event-driven, through the completion channel) until every id in `ids` has ended;
/// their results and bytes, and the deregistrations seen on the way. Panics after 60 s, or
/// when one wait sees nothing for 20 s (a completion that did not wake the channel).
pub fn wait_all(d: &mut RdmaDriver, ids: &[TransferId]) -> (Ended, Vec<u32>) {
    let mut done = HashMap::new();
    let mut deregs = Vec::new();
    let end = Instant::now() + Duration::from_secs(60);
    let mut events = Vec::new();
    while ids.iter().any(|id| !done.contains_key(id)) {
        assert!(
            Instant::now() < end,
            "transfers never ended: {} of {} done",
            done.len(),
            ids.len()
        );
        events.clear();
        // Work is in flight, so the channel must wake this wait: a timeout is a lost wakeup.
        let n = d.wait(Duration::from_secs(20), &mut events).expect("wait");
        assert!(n > 0, "the completion channel did not wake the wait within 20 s");
        for e in events.drain(..) {
            match e {
                Event::Transfer { id, result, bytes } => {
                    done.insert(id, (result, bytes));
                }
                Event::Deregistered { lkey, result } => {
                    result.expect("deferred ibv_dereg_mr");
                    deregs.push(lkey);
                }
            }
        }
    }
    (done, deregs)
}

/// Encodes bytes as hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Decodes hex.
pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}
