//! `te serve`: a target engine with one registered buffer.

use std::io::{BufRead, Write};
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use te_runtime::{Engine, EngineConfig, Location, Path, Perm};

use crate::error::{fail, Ended, Result};
use crate::pattern;
use crate::progress::Feedback;
use crate::{memory, size, stop};

/// Arguments of `te serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port). Beyond loopback,
    /// give --secret too: without one any process that reaches the port
    /// can read and write the buffer.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Size of the registered buffer (e.g. 1G, 256M, 1.5G); checked
    /// against the memory available.
    #[arg(long, default_value = "1G", value_parser = size::parse, allow_hyphen_values = true)]
    pub size: u64,
    /// Memory location of the buffer: cpu, sim:N or npu:N.
    #[arg(long, default_value = "cpu", value_parser = crate::flags::parse_location)]
    pub location: Location,
    /// Staging slots per connection for device payloads (1..=16).
    #[arg(long, default_value = "4", value_parser = clap::value_parser!(u8).range(1..=16))]
    pub staging_slots: u8,
    /// Fill the buffer with the bench's byte pattern for this seed (`te bench --verify`
    /// recognises seed 1, what its own embedded target uses).
    #[arg(long)]
    pub fill: Option<u64>,
    /// Shared secret peers must prove (authenticates links; does not encrypt them).
    #[arg(long)]
    pub secret: Option<String>,
    /// Segment name to publish in --directory (default: the listen address).
    #[arg(long, requires = "directory")]
    pub name: Option<String>,
    /// Where the name is published, renewed while this runs and removed at the end.
    #[command(flatten)]
    pub directory: crate::flags::DirectoryArgs,
    /// Also stop when standard input closes (for a parent process).
    #[arg(long)]
    pub until_stdin_closes: bool,
    /// Busy-poll: the event loop never sleeps (lowest latency, one busy core).
    #[arg(long)]
    pub busy_poll: bool,
    /// Path offered to peers: auto (the same-host path where a peer can
    /// take it), tcp (TCP only) or shm (as auto).
    #[arg(long, default_value = "auto", value_parser = crate::flags::parse_path)]
    pub path: Path,
    /// Regions to register: the buffer and N-1 regions of 4 KiB each
    /// beside it, read-write (to measure transfers among many regions).
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub regions: u32,
    /// Connections accepted at once, from all peers.
    #[arg(long, default_value_t = EngineConfig::default().max_connections)]
    pub max_connections: usize,
    /// Connections accepted at once from one source address (beyond, the
    /// source's oldest is closed).
    #[arg(long, default_value_t = EngineConfig::default().max_connections_per_source)]
    pub max_connections_per_source: usize,
}

/// Bytes of each extra region of `--regions`.
const EXTRA_REGION: u64 = 4096;

/// The N-1 extra regions of `--regions N`: memory of this process of
/// `(N-1) * 4 KiB`, registered page by page. The caller keeps it until the
/// engine is finalized.
fn extra_regions(engine: &Engine, n: u32) -> Result<Vec<u8>> {
    let extra = u64::from(n.saturating_sub(1));
    let len = extra * EXTRA_REGION;
    if extra == 0 {
        return Ok(Vec::new());
    }
    memory::check(&format!("--regions {n}"), len)?;
    let mem = vec![0u8; len as usize];
    let addr = mem.as_ptr() as u64;
    let regions: Vec<(u64, u64, Perm)> = (0..extra)
        .map(|i| (addr + i * EXTRA_REGION, EXTRA_REGION, Perm::REMOTE_READ_WRITE))
        .collect();
    // SAFETY: `mem` is neither moved nor freed before the caller has
    // finalized the engine, after which no transfer touches it.
    unsafe { engine.register_memory_batch(&regions)? };
    Ok(mem)
}

/// Whether every address `listen` names is a loopback address (an
/// unresolvable name counts as not loopback: the engine will say more).
fn loopback_only(listen: &str) -> bool {
    listen
        .to_socket_addrs()
        .map(|mut a| a.all(|a| a.ip().is_loopback()))
        .unwrap_or(false)
}

/// The warning for a buffer exposed beyond loopback without a secret.
fn exposure_warning(listen: &str) -> String {
    format!(
        "warning: listening on {listen} without --secret: any process that can reach this port can read \
         and write the whole registered buffer (every region with remote permission); pass --secret on \
         both sides to authenticate peers (links are authenticated, never encrypted)"
    )
}

/// Runs `te serve` until SIGINT or SIGTERM (or the end of standard input).
pub fn run(args: ServeArgs) -> Result<Ended> {
    let feedback = Feedback::new("te serve");
    if args.location.is_host() {
        memory::check(&format!("--size {}", size::show(args.size)), args.size)?;
    }
    if args.secret.is_none() && !loopback_only(&args.listen) {
        feedback.line(&exposure_warning(&args.listen));
    }
    let cfg = args.directory.apply(EngineConfig {
        listen: args.listen,
        segment_name: args.name,
        location: args.location,
        staging_slots: usize::from(args.staging_slots),
        secret: args.secret.map(String::into_bytes),
        busy_poll: args.busy_poll,
        path: args.path,
        max_connections: args.max_connections,
        max_connections_per_source: args.max_connections_per_source,
        // Room for --regions beside the buffer.
        max_regions: EngineConfig::default().max_regions.max(args.regions as usize + 1),
        ..EngineConfig::default()
    });
    let engine = Engine::start(cfg)?;
    let extra = extra_regions(&engine, args.regions)?;
    let addr = memory::populate(&feedback, args.size, || {
        Ok(engine.alloc_memory(args.size, Perm::REMOTE_READ_WRITE)?)
    })?;
    if let Some(seed) = args.fill {
        // Through the engine, so that device memory is filled too.
        let mut chunk = vec![0u8; args.size.min(1 << 20) as usize];
        let mut off = 0;
        while off < args.size {
            let n = (args.size - off).min(chunk.len() as u64) as usize;
            pattern::fill(&mut chunk[..n], seed, off);
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
        .map_err(|e| fail(format!("cannot write the segment line: {e}")))?;
    stop::defer();
    let stdin_closed = Arc::new(AtomicBool::new(false));
    if args.until_stdin_closes {
        let s = Arc::clone(&stdin_closed);
        std::thread::spawn(move || {
            for _ in std::io::stdin().lock().lines() {}
            s.store(true, Ordering::Release);
        });
    }
    while stop::requested().is_none() && !stdin_closed.load(Ordering::Acquire) {
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
    drop(extra);
    Ok(match stop::requested() {
        Some(i) => {
            feedback.line(&format!("stopped by {}", i.name()));
            Ended::Stopped(i)
        }
        None => Ended::Done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_listeners_go_without_the_warning() {
        assert!(loopback_only("127.0.0.1:0"));
        assert!(loopback_only("[::1]:0"));
        assert!(!loopback_only("0.0.0.0:0"));
        assert!(!loopback_only("[::]:0"));
        assert!(!loopback_only("no such host:0"));
        assert!(exposure_warning("0.0.0.0:0").contains("without --secret"));
    }
}
