//! The flags of `te bench`.

use te_runtime::{Location, Path};

use crate::flags::{parse_path, parse_seconds, parse_seconds_or_zero};
use crate::output::OutputArgs;
use crate::size;

/// An operation to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OpArg {
    /// One-sided reads from the target (nixlbench READ).
    Read,
    /// One-sided writes into the target (nixlbench WRITE).
    Write,
    /// Read and write batches alternating.
    Mix,
}

impl OpArg {
    /// The name in the output.
    pub fn name(self) -> &'static str {
        match self {
            OpArg::Read => "read",
            OpArg::Write => "write",
            OpArg::Mix => "mix",
        }
    }
}

/// What `te bench --help` says after the flags (`-h` leaves it out).
const AFTER_HELP: &str = "\
Every combination of --op, --threads, --batch and --block-size is one configuration, measured for \
--duration seconds after --warmup. The effective configuration is printed first, then a row per \
configuration: GB/s (1e9 bytes/s), operations/s, the seconds measured, and latencies per batch \
(from submission until the batch's last block completed: average, p50, p99, p99.9); `op avg` is \
the batch average divided by the blocks in the batch (amortized; --batch 1 measures a single \
round trip). Sizes take B, K, M, G, T (binary multiples) and fractions (1.5M).

Flags as in Mooncake's transfer_engine_bench / nixlbench: --op is --operation / --op_type, \
--block-size is --block_size, --batch is --batch_size, --threads is --threads / --num_threads, \
--buffer is --buffer_size / --total_buffer_size, --verify is --check_consistency, --warmup is \
--warmup_iter (in seconds). nixlbench's sweeps --start_block_size=4K --max_block_size=64M and \
--start_batch_size=1 --max_batch_size=128 are --block-size 4K..64M and --batch 1..128 (doubling).

Configurations whose blocks exceed a thread's share of the buffer are skipped and listed; a run \
that measures nothing exits 1. Ctrl-C (SIGINT) or SIGTERM abandons the configuration in flight, \
prints the ones finished (valid JSON with --json) and exits 130 or 143.";

/// Arguments of `te bench`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = AFTER_HELP)]
pub struct BenchArgs {
    /// Target segment (host:port, or a name in --directory); without it, a
    /// target is started on loopback in a child process. Several
    /// (`--target A,B,...`): the blocks of every batch go to them in turn,
    /// each target's buffer at the same offsets (not with --verify).
    #[arg(long, value_delimiter = ',')]
    pub target: Vec<String>,
    /// Where --target is looked up; the cost of a lookup (cold and cached)
    /// is reported before the results.
    #[command(flatten)]
    pub directory: crate::flags::DirectoryArgs,
    /// Operations to measure, one configuration each (any case: READ, WRITE as nixlbench spells them).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        ignore_case = true,
        default_value = "read,write"
    )]
    pub op: Vec<OpArg>,
    /// Block sizes (bytes per operation), one configuration each: 4096, 4K, 1.5M, 1G ...;
    /// START..MAX doubles from START up to MAX (4K..1M is 4K,8K,...,1M).
    #[arg(long, value_delimiter = ',', value_parser = size::parse_sweep, allow_hyphen_values = true,
          default_value = "4K,64K,1M,16M")]
    pub block_size: Vec<Vec<u64>>,
    /// Sweep block sizes 4K, 16K, ..., 64M instead of --block-size.
    #[arg(long, conflicts_with = "block_size")]
    pub sweep: bool,
    /// Blocks per batch, one configuration each (e.g. 1,32,128, or 1..128
    /// doubling); capped so that a batch fits each thread's share of the buffer.
    #[arg(long, value_delimiter = ',', default_value = "128", allow_negative_numbers = true,
          value_parser = crate::flags::parse_batches)]
    batch: Vec<Vec<u64>>,
    /// Threads submitting batches at once, one configuration each (e.g. 1,2,4).
    #[arg(long, value_delimiter = ',', default_value = "1", allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: Vec<u32>,
    /// Seconds measured per configuration (a batch in flight when time is up finishes).
    #[arg(long, default_value = "2", value_parser = parse_seconds, allow_negative_numbers = true)]
    pub duration: f64,
    /// Seconds of warm-up per configuration before measuring (not counted).
    #[arg(long, default_value = "0", value_parser = parse_seconds_or_zero, allow_negative_numbers = true)]
    pub warmup: f64,
    /// Stop a configuration after this many bytes (over all threads) instead of after --duration.
    #[arg(long, value_parser = size::parse, allow_hyphen_values = true)]
    pub total_bytes: Option<u64>,
    /// Size of the buffer cycled through on each side (much larger than the
    /// CPU caches); checked against the memory available.
    #[arg(long, default_value = "512M", value_parser = size::parse, allow_hyphen_values = true)]
    pub buffer: u64,
    /// Reuse one block per thread (hot cache), as ucx_perftest and fi_pingpong do.
    #[arg(long)]
    pub hot: bool,
    /// Check every byte moved (slow: reads back each write, compares each
    /// read). Against --target, reads are compared with `te serve --fill 1`'s
    /// pattern when the target holds it, else with a snapshot read at the start.
    #[arg(long)]
    pub verify: bool,
    /// How to print the results.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Shared secret of the target.
    #[arg(long)]
    pub secret: Option<String>,
    /// Busy-poll: the event loops (this one and the embedded target's) never
    /// sleep, for the lowest latency at the price of a busy core each.
    #[arg(long)]
    pub busy_poll: bool,
    /// Path to the target: tcp, shm (same-host; an error when the target
    /// is not on this host), rdma (an error until the runtime carries RDMA
    /// transfers, docs/RDMA.md) or auto (shm where possible).
    #[arg(long, default_value = "auto", value_parser = parse_path)]
    pub path: Path,
    /// Memory of this side's buffer: cpu, sim:N or npu:N (device memory is
    /// staged through host memory by the engine; nixlbench's
    /// --initiator_seg_type).
    #[arg(long, default_value = "cpu", value_parser = crate::flags::parse_location)]
    pub location: Location,
    /// Memory of the embedded target's buffer (default: --location;
    /// nixlbench's --target_seg_type). With --target, the target's largest
    /// read-write region is used, wherever it lies.
    #[arg(long, value_parser = crate::flags::parse_location, conflicts_with = "target")]
    pub target_location: Option<Location>,
    /// Staging slots per connection for device payloads, on both sides
    /// (1..=16): 1 copies one payload at a time, without overlapping the
    /// device copy and the socket.
    #[arg(long, default_value = "4", value_parser = clap::value_parser!(u8).range(1..=16))]
    pub staging_slots: u8,
    /// Before measuring, this many engines of this process each open every
    /// target and hold the connection idle (the target's memory per idle
    /// connection is reported when it is the embedded child).
    #[arg(long, default_value = "0", value_parser = clap::value_parser!(u32).range(0..=4096))]
    pub idle_peers: u32,
    /// Regions the embedded target registers: its buffer and N-1 regions of
    /// 4 KiB beside it (`te serve --regions`), for the cost of a transfer
    /// among many regions.
    #[arg(long, default_value = "1", conflicts_with = "target",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub target_regions: u32,
}

impl BenchArgs {
    /// The block sizes to measure.
    pub fn blocks(&self) -> Vec<u64> {
        if self.sweep {
            (0..=7).map(|i| 4096u64 << (2 * i)).collect()
        } else {
            self.block_size.concat()
        }
    }

    /// The batch sizes to measure.
    pub fn batches(&self) -> Vec<u32> {
        // parse_batch bounds each to 1..=65536.
        self.batch.concat().into_iter().map(|b| b as u32).collect()
    }
}
