//! `te bench`: the initiator side of a transfer benchmark.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use te_runtime::{Engine, EngineConfig, ErrorCode, Op, Path, Perm, Request, SegmentId, Status, TaskState};

use crate::child::ChildTe;
use crate::report::{self, Row};
use crate::serve::fill;
use crate::size;

/// Seed of the pattern an embedded target is filled with.
const TARGET_SEED: u64 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OpArg {
    Read,
    Write,
    /// Alternate read and write batches.
    Mix,
}

/// Arguments of `te bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Target segment (host:port); without it, a target is started on loopback in a child process.
    #[arg(long)]
    pub target: Option<String>,
    /// Operations to measure, one configuration each.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [OpArg::Read, OpArg::Write])]
    pub op: Vec<OpArg>,
    /// Block sizes, one configuration each (e.g. 4K,64K,1M,16M).
    #[arg(long, value_delimiter = ',', value_parser = size::parse, default_values_t = [4u64 << 10, 64 << 10, 1 << 20, 16 << 20])]
    pub block_size: Vec<u64>,
    /// Sweep block sizes 4K, 16K, ..., 64M instead of --block-size.
    #[arg(long)]
    pub sweep: bool,
    /// Blocks per batch (capped so that a batch fits each thread's share of the buffer).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub batch: u32,
    /// Threads submitting batches at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: u32,
    /// Seconds per configuration.
    #[arg(long, default_value_t = 2.0, value_parser = parse_seconds)]
    pub duration: f64,
    /// Stop a configuration after this many bytes instead of after --duration.
    #[arg(long, value_parser = size::parse)]
    pub total_bytes: Option<u64>,
    /// Size of the buffer cycled through on each side (much larger than the CPU caches).
    #[arg(long, default_value = "512M", value_parser = size::parse)]
    pub buffer: u64,
    /// Reuse one block per thread (hot cache), as ucx_perftest and fi_pingpong do.
    #[arg(long)]
    pub hot: bool,
    /// Check every byte moved (slow: reads back each write, compares each read).
    #[arg(long)]
    pub verify: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Shared secret of the target.
    #[arg(long)]
    pub secret: Option<String>,
    /// Busy-poll: the event loops (this one and the embedded target's) never
    /// sleep, for the lowest latency at the price of a busy core each.
    #[arg(long)]
    pub busy_poll: bool,
    /// Path to the target: tcp, shm (same-host; an error when the target
    /// is not on this host) or auto (shm where possible).
    #[arg(long, default_value = "auto", value_parser = parse_path)]
    pub path: Path,
}

/// Parses `tcp`, `shm` or `auto`.
pub fn parse_path(s: &str) -> Result<Path, String> {
    s.parse().map_err(|e: Status| e.message().to_string())
}

/// Parses a positive number of seconds (at most a day).
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!("invalid duration {s:?}: expected seconds in (0, 86400]")),
    }
}

/// A `RuntimeError` with `msg`.
pub fn err(msg: String) -> Status {
    Status::new(ErrorCode::RuntimeError, &msg)
}

/// Starts `te serve` on loopback in a child process; returns it with its
/// segment name. A benchmark of TCP (`--path tcp`) makes the target a
/// TCP-only engine too, with the memory such an engine has.
fn start_target(buffer: u64, secret: Option<&str>, busy_poll: bool, path: Path) -> Result<ChildTe, Status> {
    let mut args: Vec<String> = ["serve", "--listen", "127.0.0.1:0", "--until-stdin-closes"]
        .map(String::from)
        .into();
    args.extend([
        "--size".into(),
        buffer.to_string(),
        "--fill".into(),
        TARGET_SEED.to_string(),
    ]);
    if let Some(s) = secret {
        args.extend(["--secret".into(), s.to_string()]);
    }
    if busy_poll {
        args.push("--busy-poll".into());
    }
    if path == Path::Tcp {
        args.extend(["--path".into(), "tcp".into()]);
    }
    ChildTe::start(&args, "segment ")
}

/// One configuration.
#[derive(Clone, Copy, Debug)]
struct Config {
    op: OpArg,
    block: u64,
    batch: u32,
    threads: u32,
}

/// The shared state of a run.
struct Run {
    engine: Engine,
    segment: SegmentId,
    /// The path every batch is submitted on.
    path: Path,
    remote: u64,
    local: u64,
    /// Bytes of the buffer each thread owns (on both sides).
    share: u64,
    hot: bool,
    /// With --verify: per thread, what its share of the target holds now
    /// (kept across configurations, since writes change it).
    shadows: Option<Vec<std::sync::Mutex<Vec<u8>>>>,
    duration: Duration,
    total_bytes: Option<u64>,
}

pub fn run(args: BenchArgs) -> Result<(), Status> {
    let _child;
    let target = match &args.target {
        Some(t) => t.clone(),
        None => {
            let c = start_target(args.buffer, args.secret.as_deref(), args.busy_poll, args.path)?;
            let s = c.address.clone();
            _child = c;
            s
        }
    };
    let cfg = EngineConfig {
        secret: args.secret.clone().map(String::into_bytes),
        busy_poll: args.busy_poll,
        path: args.path,
        ..EngineConfig::default()
    };
    let engine = Engine::start(cfg)?;
    let segment = engine.open_segment(&target)?;
    let auto = engine.segment_path(segment)?;
    let path = match args.path {
        Path::Auto => auto,
        Path::Shm if auto != Path::Shm => {
            return Err(err(format!(
                "--path shm: no same-host path to {target}: it offers only TCP, runs on another host or \
                 network namespace, or refused this process (TE_LOG=info tells which)"
            )))
        }
        forced => forced,
    };
    let regions = engine.segment_info(segment)?;
    let region = regions
        .iter()
        .filter(|r| r.perm.contains(Perm::REMOTE_READ_WRITE) && r.span.location.is_host())
        .max_by_key(|r| r.span.len)
        .ok_or_else(|| err(format!("segment {target} has no read-write host region")))?;
    let buffer = args.buffer.min(region.span.len);
    let share = buffer / args.threads as u64;
    let local = engine.alloc_memory(buffer, Perm::LOCAL_ONLY)?;
    let run = Arc::new(Run {
        engine,
        segment,
        path,
        remote: region.span.addr,
        local,
        share,
        hot: args.hot,
        shadows: args.verify.then(|| {
            (0..args.threads as u64)
                .map(|t| {
                    let mut shadow = vec![0; share as usize];
                    fill(&mut shadow, TARGET_SEED, t * share);
                    std::sync::Mutex::new(shadow)
                })
                .collect()
        }),
        duration: Duration::from_secs_f64(args.duration),
        total_bytes: args.total_bytes,
    });
    let blocks: Vec<u64> = if args.sweep {
        (0..=7).map(|i| 4096u64 << (2 * i)).collect()
    } else {
        args.block_size.clone()
    };
    let tty = std::io::stdout().is_terminal() && !args.json;
    if !args.json {
        out!(
            "te bench: target {target}, path {path}, {} buffer ({}), {} thread(s), {} s per configuration{}{}",
            size::show(buffer),
            if args.hot {
                "hot: one block reused"
            } else {
                "cold: cycling"
            },
            args.threads,
            args.duration,
            if args.verify { ", verifying every byte" } else { "" },
            if args.busy_poll { ", busy-polling" } else { "" }
        );
        out!("{}", report::HEADER);
    }
    let mut rows = Vec::new();
    for &op in &args.op {
        for &block in &blocks {
            if block > share {
                eprintln!(
                    "te bench: skipping {} blocks: larger than each thread's {} share of the buffer",
                    size::show(block),
                    size::show(share)
                );
                continue;
            }
            let batch = args.batch.min((share / block).max(1) as u32);
            let config = Config {
                op,
                block,
                batch,
                threads: args.threads,
            };
            if tty {
                print!("  running {op:?} {} ...\r", size::show(block));
                let _ = std::io::stdout().flush();
            }
            let row = measure(&run, config)?;
            if !args.json {
                out!("{}", report::line(&row));
            }
            rows.push(row);
        }
    }
    if args.json {
        out!("{}", report::json(&rows, &target, &path.to_string()));
    }
    Ok(())
}

fn measure(run: &Arc<Run>, c: Config) -> Result<Row, Status> {
    let start = Instant::now();
    let workers: Vec<_> = (0..c.threads)
        .map(|t| {
            let run = Arc::clone(run);
            std::thread::spawn(move || worker(&run, c, t, start))
        })
        .collect();
    let mut bytes = 0;
    let mut ops = 0;
    let mut batch_us = Vec::new();
    for w in workers {
        let (b, o, mut lat) = w.join().map_err(|_| err("a bench thread panicked".into()))??;
        bytes += b;
        ops += o;
        batch_us.append(&mut lat);
    }
    let seconds = start.elapsed().as_secs_f64();
    batch_us.sort_by(f64::total_cmp);
    let op = match c.op {
        OpArg::Read => "read",
        OpArg::Write => "write",
        OpArg::Mix => "mix",
    };
    Ok(Row {
        op,
        block: c.block,
        batch: c.batch,
        threads: c.threads,
        regime: if run.hot { "hot" } else { "cold" },
        bytes,
        ops,
        seconds,
        batch_us,
    })
}

type WorkerResult = Result<(u64, u64, Vec<f64>), Status>;

fn worker(run: &Run, c: Config, t: u32, start: Instant) -> WorkerResult {
    let base = t as u64 * run.share;
    let slots = if run.hot { 1 } else { (run.share / c.block).max(1) };
    let mut cursor = 0u64;
    let (mut bytes, mut ops, mut lat) = (0u64, 0u64, Vec::new());
    let mut shadow = run
        .shadows
        .as_ref()
        .map(|s| s[t as usize].lock().unwrap_or_else(|p| p.into_inner()));
    let mut round = 0u64;
    while start.elapsed() < run.duration && run.total_bytes.is_none_or(|tb| bytes < tb / c.threads as u64) {
        let op = match c.op {
            OpArg::Read => Op::Read,
            OpArg::Write => Op::Write,
            OpArg::Mix if round.is_multiple_of(2) => Op::Read,
            OpArg::Mix => Op::Write,
        };
        round += 1;
        let offsets: Vec<u64> = (0..c.batch as u64)
            .map(|i| ((cursor + i) % slots) * c.block)
            .collect();
        cursor = (cursor + c.batch as u64) % slots;
        if shadow.is_some() && op == Op::Write {
            for (i, &off) in offsets.iter().enumerate() {
                // SAFETY: this thread alone uses its share of the local buffer.
                let src = unsafe { local_bytes(run, base + off, c.block) };
                fill(src, round * 1_000_003 + i as u64, base + off);
            }
        }
        let reqs: Vec<Request> = offsets
            .iter()
            .map(|&off| Request {
                op,
                local: run.local + base + off,
                segment: run.segment,
                remote: run.remote + base + off,
                len: c.block,
            })
            .collect();
        let t0 = Instant::now();
        transfer(run, &reqs)?;
        lat.push(t0.elapsed().as_secs_f64() * 1e6);
        bytes += c.block * c.batch as u64;
        ops += c.batch as u64;
        if let Some(shadow) = shadow.as_deref_mut() {
            verify(run, op, &reqs, &offsets, base, c.block, shadow)?;
        }
    }
    Ok((bytes, ops, lat))
}

/// One batch, submitted and waited for; any failed task fails the run.
fn transfer(run: &Run, reqs: &[Request]) -> Result<(), Status> {
    let e = &run.engine;
    let batch = e.allocate_batch(reqs.len() as u32)?;
    e.submit_via(batch, reqs, run.path)?;
    let st = e.wait_batch(batch, Duration::from_secs(120))?;
    e.free_batch(batch)?;
    match st.state {
        TaskState::Completed => Ok(()),
        other => Err(err(format!(
            "batch ended {other:?}: {} of {} tasks completed",
            st.completed, st.total
        ))),
    }
}

/// Reads are compared with the shadow of the target; writes are read back
/// and compared with what was sent, then recorded in the shadow.
fn verify(
    run: &Run,
    op: Op,
    reqs: &[Request],
    offsets: &[u64],
    base: u64,
    block: u64,
    shadow: &mut [u8],
) -> Result<(), Status> {
    if op == Op::Write {
        let back: Vec<Request> = reqs.iter().map(|r| Request { op: Op::Read, ..*r }).collect();
        let sent: Vec<Vec<u8>> = offsets
            .iter()
            // SAFETY: this thread alone uses its share of the local buffer.
            .map(|&off| unsafe { local_bytes(run, base + off, block) }.to_vec())
            .collect();
        // SAFETY: as above; zero the blocks so that a read-back that moves nothing is caught.
        offsets
            .iter()
            .for_each(|&off| unsafe { local_bytes(run, base + off, block) }.fill(0));
        transfer(run, &back)?;
        for (i, &off) in offsets.iter().enumerate() {
            shadow[off as usize..(off + block) as usize].copy_from_slice(&sent[i]);
        }
    }
    for &off in offsets {
        // SAFETY: as above.
        let got = unsafe { local_bytes(run, base + off, block) };
        let want = &shadow[off as usize..(off + block) as usize];
        if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
            return Err(err(format!(
                "verify: byte {} of the block at offset {:#x} is {:#04x}, expected {:#04x}",
                i,
                base + off,
                got[i],
                want[i]
            )));
        }
    }
    Ok(())
}

/// A thread's view of `len` bytes at `offset` of the local buffer.
///
/// # Safety
/// The caller's thread must be the only user of that part of the buffer,
/// and no transfer may be using it.
unsafe fn local_bytes<'a>(run: &Run, offset: u64, len: u64) -> &'a mut [u8] {
    // SAFETY: the range lies inside the engine-allocated local buffer; the caller guarantees exclusivity.
    unsafe { std::slice::from_raw_parts_mut((run.local + offset) as *mut u8, len as usize) }
}
