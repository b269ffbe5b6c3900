//! The embedding mode: two engine cores driven from one caller-owned
//! `mio::Poll` on a single thread, next to the caller's own sources. te
//! starts no event loop; the same-host path (on by default, off with
//! `path: Path::Tcp`) runs its own small threads: the process-proof
//! verifier, one short-lived thread per claim, and a copy helper.
//!
//! `cargo run --release -p te-runtime --example embedded`

use std::time::Duration;

use mio::{Events, Poll, Token};
use te_runtime::{EngineConfig, EngineCore, Op, Perm, Request, Status, TaskState};

fn main() -> Result<(), Status> {
    let mut poll = Poll::new().expect("poll");
    // The caller gives each core a token range; tokens below 1000 stay free
    // for its own sources.
    let mut target = EngineCore::new(EngineConfig::default(), poll.registry(), Token(1000))?;
    let mut initiator = EngineCore::new(EngineConfig::default(), poll.registry(), Token(2000))?;

    let len = 4 << 20;
    let remote = target.alloc_memory(len, Perm::REMOTE_READ_WRITE)?;
    // SAFETY: `remote` is `len` bytes of engine-owned memory.
    unsafe { std::ptr::write_bytes(remote as *mut u8, 0x5a, len as usize) };
    let local = initiator.alloc_memory(len, Perm::LOCAL_ONLY)?;

    let peer = initiator.open_segment(target.segment_name())?;
    let batch = initiator.alloc_batch(4)?;
    let reqs: Vec<Request> = (0..4)
        .map(|i| Request {
            op: Op::Read,
            local: local + i * (len / 4),
            segment: peer,
            remote: remote + i * (len / 4),
            len: len / 4,
        })
        .collect();
    initiator.submit(batch, &reqs)?;

    // The caller's event loop.
    let mut events = Events::with_capacity(128);
    while initiator.batch_status(batch)?.state == TaskState::Pending {
        let timeout = [
            initiator.poll_timeout(),
            target.poll_timeout(),
            Some(Duration::from_secs(1)),
        ]
        .into_iter()
        .flatten()
        .min();
        poll.poll(&mut events, timeout).expect("poll");
        for ev in events.iter() {
            if initiator.owns(ev.token()) {
                initiator.handle_event(ev);
            } else if target.owns(ev.token()) {
                target.handle_event(ev);
            }
        }
        initiator.handle_timeout();
        target.handle_timeout();
    }
    let status = initiator.batch_status(batch)?;
    println!(
        "batch ended {:?} after {} bytes",
        status.state, status.transferred
    );
    // SAFETY: the batch is done; the memory is stable.
    let got = unsafe { std::slice::from_raw_parts(local as *const u8, len as usize) };
    assert!(got.iter().all(|&b| b == 0x5a));
    initiator.free_batch(batch)?;
    println!("{len} bytes read through one caller-owned mio::Poll, byte-exact");
    Ok(())
}
