//! `te serve`: a target engine with one registered buffer.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use te_runtime::{Engine, EngineConfig, Location, Path, Perm, Status};

/// Arguments of `te serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Size of the registered buffer (e.g. 1G, 256M).
    #[arg(long, default_value = "1G", value_parser = crate::size::parse)]
    pub size: u64,
    /// Memory location of the buffer: cpu, sim:N or npu:N.
    #[arg(long, default_value = "cpu", value_parser = parse_location)]
    pub location: Location,
    /// Fill the buffer with the bench's byte pattern for this seed (for `te bench --verify`).
    #[arg(long)]
    pub fill: Option<u64>,
    /// Shared secret peers must prove.
    #[arg(long)]
    pub secret: Option<String>,
    /// Also stop when standard input closes (for a parent process).
    #[arg(long)]
    pub until_stdin_closes: bool,
    /// Busy-poll: the event loop never sleeps (lowest latency, one busy core).
    #[arg(long)]
    pub busy_poll: bool,
    /// Path offered to peers: auto (the same-host path where a peer can
    /// take it), tcp (TCP only) or shm (as auto).
    #[arg(long, default_value = "auto", value_parser = crate::bench::parse_path)]
    pub path: Path,
}

fn parse_location(s: &str) -> Result<Location, String> {
    s.parse::<Location>().map_err(|e| e.message().to_string())
}

/// The byte at offset `i` of a buffer filled with `seed`.
pub fn pattern(seed: u64, i: u64) -> u8 {
    let x = ((i / 8) ^ seed.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x.to_le_bytes()[(i % 8) as usize]
}

/// Fills `buf` as the bytes at offsets `base..` of a buffer filled with `seed`.
pub fn fill(buf: &mut [u8], seed: u64, base: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern(seed, base + i as u64);
    }
}

pub fn run(args: ServeArgs) -> Result<(), Status> {
    let cfg = EngineConfig {
        listen: args.listen,
        location: args.location,
        secret: args.secret.map(String::into_bytes),
        busy_poll: args.busy_poll,
        path: args.path,
        ..EngineConfig::default()
    };
    let engine = Engine::start(cfg)?;
    let addr = engine.alloc_memory(args.size, Perm::REMOTE_READ_WRITE)?;
    if let Some(seed) = args.fill {
        // Through the engine, so that device memory is filled too.
        let mut chunk = vec![0u8; args.size.min(1 << 20) as usize];
        let mut off = 0;
        while off < args.size {
            let n = (args.size - off).min(chunk.len() as u64) as usize;
            fill(&mut chunk[..n], seed, off);
            engine.write_memory(addr + off, &chunk[..n])?;
            off += n as u64;
        }
    }
    out!(
        "segment {} addr {addr:#x} len {}",
        engine.segment_name(),
        args.size
    );
    std::io::stdout()
        .flush()
        .map_err(|e| te_runtime::Status::new(te_runtime::ErrorCode::RuntimeError, &e.to_string()))?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| te_proto_status(&format!("cannot handle signal {sig}: {e}")))?;
    }
    if args.until_stdin_closes {
        let s = Arc::clone(&stop);
        std::thread::spawn(move || {
            for _ in std::io::stdin().lock().lines() {}
            s.store(true, Ordering::Release);
        });
    }
    while !stop.load(Ordering::Acquire) {
        // Notifications are printed within a tenth of a second. This thread
        // sleeps rather than waits on the engine, which would spin in
        // busy-poll mode.
        for n in engine.take_notifications() {
            out!(
                "notification {:?} from {:?}: {} bytes",
                n.name,
                n.from,
                n.msg.len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    engine.finalize();
    eprintln!("te serve: stopped");
    Ok(())
}

fn te_proto_status(msg: &str) -> Status {
    Status::new(te_runtime::ErrorCode::RuntimeError, msg)
}
