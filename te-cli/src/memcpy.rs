//! `te memcpy`: one thread copying blocks between two buffers of this
//! process, the memory-bandwidth yardstick for the same-host path. The
//! cold regime cycles through buffers much larger than the caches, the
//! hot regime copies one block again and again, as `te bench` does.
//! Copies are timed in groups of at least 64 KiB (one copy from 64 KiB
//! up), so that reading the clock costs little beside them; the latency
//! percentiles are of those groups.

use std::time::{Duration, Instant};

use serde_json::json;
use te_runtime::{Engine, EngineConfig, Path, Perm};

use crate::error::{fail, Ended, Result};
use crate::flags::parse_seconds;
use crate::output::{Output, OutputArgs};
use crate::progress::Feedback;
use crate::report::{Row, Skipped};
use crate::{memory, size, stop};

/// Bytes copied between two clock reads, at least.
const GROUP_BYTES: usize = 64 << 10;

/// Arguments of `te memcpy`.
#[derive(clap::Args, Debug)]
pub struct MemcpyArgs {
    /// Block sizes, one configuration each.
    #[arg(long, value_delimiter = ',', value_parser = size::parse, allow_hyphen_values = true,
          default_value = "4K,64K,1M,16M")]
    pub block_size: Vec<u64>,
    /// Size of each of the two buffers cycled through; checked against the memory available.
    #[arg(long, default_value = "512M", value_parser = size::parse, allow_hyphen_values = true)]
    pub buffer: u64,
    /// Copy one block over and over (hot cache).
    #[arg(long)]
    pub hot: bool,
    /// Seconds per configuration.
    #[arg(long, default_value = "2", value_parser = parse_seconds, allow_negative_numbers = true)]
    pub duration: f64,
    /// How to print the results.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs `te memcpy`.
pub fn run(args: MemcpyArgs) -> Result<Ended> {
    let feedback = Feedback::new("te memcpy");
    let len =
        usize::try_from(args.buffer).map_err(|_| fail(format!("--buffer {} too large", args.buffer)))?;
    memory::check(
        &format!("--buffer {} (two buffers)", size::show(args.buffer)),
        args.buffer.saturating_mul(2),
    )?;
    let (blocks, skipped): (Vec<u64>, Vec<u64>) = args.block_size.iter().partition(|&&b| b <= args.buffer);
    let skipped: Vec<Skipped> = skipped
        .into_iter()
        .map(|b| Skipped {
            op: "copy",
            block: b,
            threads: 1,
            reason: format!("larger than the {} buffer (--buffer)", size::show(args.buffer)),
        })
        .collect();
    // The fastest memory for one thread's memcpy here: anonymous, on huge
    // pages where the OS allows, populated up front, which is what an
    // engine without the same-host path allocates (te's own buffers for
    // that path are shared memfds, on huge pages only where the shmem
    // setting allows).
    let engine = Engine::start(EngineConfig {
        path: Path::Tcp,
        ..EngineConfig::default()
    })?;
    let (src_addr, dst_addr) = memory::populate(&feedback, args.buffer.saturating_mul(2), || {
        Ok((
            engine.alloc_memory(args.buffer, Perm::LOCAL_ONLY)?,
            engine.alloc_memory(args.buffer, Perm::LOCAL_ONLY)?,
        ))
    })?;
    // SAFETY: two distinct engine allocations of `len` bytes each, used by
    // this thread alone and alive until `engine` is dropped at the end of
    // this function, after the last use of the slices.
    let (src, dst) = unsafe {
        (
            std::slice::from_raw_parts(src_addr as *const u8, len),
            std::slice::from_raw_parts_mut(dst_addr as *mut u8, len),
        )
    };
    let duration = Duration::from_secs_f64(args.duration);
    let regime = if args.hot { "hot" } else { "cold" };
    let echo = [format!(
        "te memcpy {}: one thread, two {} buffers ({regime}), {} s per block size, copies timed in groups of at least {}",
        env!("CARGO_PKG_VERSION"),
        size::show(args.buffer),
        args.duration,
        size::show(GROUP_BYTES as u64)
    )];
    stop::defer();
    let mut out = Output::begin(args.output, &feedback, &echo, skipped);
    let mut abandoned = None;
    {
        let mut sweep = feedback.sweep(blocks.len(), duration);
        for &block in &blocks {
            let label = format!("copy {}", size::show(block));
            sweep.start(&label);
            match copy(src, dst, block as usize, args.hot, duration, &sweep) {
                Some(row) => out.row(Row { regime, ..row }),
                None => {
                    abandoned = Some(label);
                    break;
                }
            }
            sweep.done();
        }
    }
    let settings = json!({
        "block_bytes": blocks, "buffer_bytes": args.buffer, "duration_s": args.duration,
        "regime": regime, "group_bytes": GROUP_BYTES,
    });
    let ended = out.finish("te memcpy", "memcpy", "memory", settings, abandoned);
    drop(engine);
    ended
}

/// Copies `block`-byte blocks from `src` to `dst` for `duration`; `None` when a signal stopped it.
fn copy(
    src: &[u8],
    dst: &mut [u8],
    block: usize,
    hot: bool,
    duration: Duration,
    sweep: &crate::progress::Sweep<'_>,
) -> Option<Row> {
    let slots = if hot { 1 } else { src.len() / block };
    let group = GROUP_BYTES.div_ceil(block).max(1);
    let (mut copies, mut slot) = (0u64, 0);
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut ticked = start;
    while start.elapsed() < duration {
        let t0 = Instant::now();
        for _ in 0..group {
            let off = slot * block;
            dst[off..off + block].copy_from_slice(&src[off..off + block]);
            std::hint::black_box(&mut *dst);
            slot = (slot + 1) % slots;
        }
        let t1 = Instant::now();
        lat.push((t1 - t0).as_secs_f64() * 1e6);
        copies += group as u64;
        if t1 - ticked >= Duration::from_millis(200) {
            ticked = t1;
            if stop::requested().is_some() {
                return None;
            }
            sweep.tick(t1 - start);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Some(Row {
        op: "copy",
        block: block as u64,
        batch: group as u32,
        threads: 1,
        regime: "cold",
        bytes: copies * block as u64,
        ops: copies,
        seconds,
        batch_us: lat,
    })
}
