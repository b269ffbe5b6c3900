//! `te memcpy`: one thread copying blocks between two buffers of this
//! process, the memory-bandwidth yardstick for the same-host path. The
//! cold regime cycles through buffers much larger than the caches, the
//! hot regime copies one block again and again, as `te bench` does.

use std::time::{Duration, Instant};

use te_runtime::{Engine, EngineConfig, Path, Perm, Status};

use crate::bench::parse_seconds;
use crate::report::{self, Row};
use crate::size;

/// Arguments of `te memcpy`.
#[derive(clap::Args, Debug)]
pub struct MemcpyArgs {
    /// Block sizes, one configuration each.
    #[arg(long, value_delimiter = ',', value_parser = size::parse, default_values_t = [4u64 << 10, 64 << 10, 1 << 20, 16 << 20])]
    pub block_size: Vec<u64>,
    /// Size of each of the two buffers cycled through.
    #[arg(long, default_value = "512M", value_parser = size::parse)]
    pub buffer: u64,
    /// Copy one block over and over (hot cache).
    #[arg(long)]
    pub hot: bool,
    /// Seconds per configuration.
    #[arg(long, default_value_t = 2.0, value_parser = parse_seconds)]
    pub duration: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: MemcpyArgs) -> Result<(), Status> {
    if let Some(&b) = args.block_size.iter().find(|&&b| b == 0 || b > args.buffer) {
        return Err(crate::bench::err(format!(
            "--block-size {b} out of range 1..={} (the --buffer size)",
            args.buffer
        )));
    }
    let len = usize::try_from(args.buffer)
        .map_err(|_| crate::bench::err(format!("--buffer {} too large", args.buffer)))?;
    // The fastest memory for one thread's memcpy here: anonymous, on huge
    // pages where the OS allows, populated up front, which is what an
    // engine without the same-host path allocates (te's own buffers for
    // that path are shared memfds, on huge pages only where the shmem
    // setting allows).
    let engine = Engine::start(EngineConfig {
        path: Path::Tcp,
        ..EngineConfig::default()
    })?;
    let src_addr = engine.alloc_memory(args.buffer, Perm::LOCAL_ONLY)?;
    let dst_addr = engine.alloc_memory(args.buffer, Perm::LOCAL_ONLY)?;
    // SAFETY: two distinct engine allocations of `len` bytes each, used by
    // this thread alone and alive until `engine` is dropped below.
    let (src, dst) = unsafe {
        (
            std::slice::from_raw_parts(src_addr as *const u8, len),
            std::slice::from_raw_parts_mut(dst_addr as *mut u8, len),
        )
    };
    let duration = Duration::from_secs_f64(args.duration);
    let regime = if args.hot { "hot" } else { "cold" };
    let mut rows = Vec::new();
    if !args.json {
        out!(
            "te memcpy: one thread, {} buffers ({regime})",
            size::show(args.buffer)
        );
        out!("{}", report::HEADER);
    }
    for &block in &args.block_size {
        let block = block as usize;
        let slots = if args.hot { 1 } else { len / block };
        let mut copies = 0u64;
        let mut slot = 0;
        let start = Instant::now();
        while start.elapsed() < duration {
            // Check the clock every 64 copies: a 4 KiB copy is far shorter than a clock read.
            for _ in 0..64 {
                let off = slot * block;
                dst[off..off + block].copy_from_slice(&src[off..off + block]);
                std::hint::black_box(&mut *dst);
                slot = (slot + 1) % slots;
                copies += 1;
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        let row = Row {
            op: "copy",
            block: block as u64,
            batch: 1,
            threads: 1,
            regime,
            bytes: copies * block as u64,
            ops: copies,
            seconds,
            batch_us: vec![seconds * 1e6 / copies.max(1) as f64],
        };
        if !args.json {
            out!("{}", report::line(&row));
        }
        rows.push(row);
    }
    if args.json {
        out!("{}", report::json(&rows, "memcpy", "memory"));
    }
    drop(engine);
    Ok(())
}
