//! The threaded engine: two engines in one process, many threads writing
//! KV-cache-like blocks to a target at once, each batch followed by a
//! notification that arrives after its data.
//!
//! `cargo run --release -p te-runtime --example threaded`

use std::sync::Arc;
use std::time::Duration;

use te_runtime::{Engine, EngineConfig, Op, Perm, Request, Status};

const BLOCK: u64 = 256 << 10;
const BLOCKS_PER_THREAD: u64 = 32;
const THREADS: u64 = 4;

fn main() -> Result<(), Status> {
    let target = Engine::start(EngineConfig::default())?;
    let total = BLOCK * BLOCKS_PER_THREAD * THREADS;
    let remote = target.alloc_memory(total, Perm::REMOTE_READ_WRITE)?;

    let initiator = Arc::new(Engine::start(EngineConfig::default())?);
    let local = initiator.alloc_memory(total, Perm::LOCAL_ONLY)?;
    // SAFETY: `local` is `total` bytes of engine-owned memory that nothing else touches yet.
    unsafe { std::ptr::write_bytes(local as *mut u8, 0xab, total as usize) };
    let peer = initiator.open_segment(&target.segment_name())?;

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let engine = Arc::clone(&initiator);
            std::thread::spawn(move || -> Result<(), Status> {
                let base = t * BLOCK * BLOCKS_PER_THREAD;
                let reqs: Vec<Request> = (0..BLOCKS_PER_THREAD)
                    .map(|i| Request {
                        op: Op::Write,
                        local: local + base + i * BLOCK,
                        segment: peer,
                        remote: remote + base + i * BLOCK,
                        len: BLOCK,
                    })
                    .collect();
                let batch = engine.allocate_batch(reqs.len() as u32)?;
                engine.submit_with_notify(batch, &reqs, "kv", format!("thread {t} done").as_bytes())?;
                let status = engine.wait_batch(batch, Duration::from_secs(30))?;
                engine.free_batch(batch)?;
                println!("thread {t}: {:?}, {} bytes", status.state, status.transferred);
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker")?;
    }

    let mut notes = Vec::new();
    while notes.len() < THREADS as usize {
        let got = target.wait_notifications(Duration::from_secs(10));
        assert!(!got.is_empty(), "notifications arrive");
        notes.extend(got);
    }
    for n in &notes {
        println!(
            "target got {:?} from {}: {}",
            n.name,
            n.from,
            String::from_utf8_lossy(&n.msg)
        );
    }
    // SAFETY: all writes have completed; the region is stable.
    let landed = unsafe { std::slice::from_raw_parts(remote as *const u8, total as usize) };
    assert!(landed.iter().all(|&b| b == 0xab));
    println!("{total} bytes written by {THREADS} threads, byte-exact");
    Ok(())
}
