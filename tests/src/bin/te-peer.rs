//! A peer process for the integration tests: starts an engine on the given
//! listen address, allocates a region of the given size filled with a
//! known pattern, prints `READY <segment> <addr> <len>` and serves until
//! its standard input closes (or it is killed).
//!
//! Logs to stderr as `TE_LOG` says (default `warn`).
//!
//! Usage: `te-peer [<listen> [<len> [<seed>]]] [--secret <text>] [--perm rw|r|w|local]
//! [--path tcp|shm|rdma|auto] [--user]`
//!
//! - `--secret <text>`: the engine's shared secret (default: none).
//! - `--perm`: the permission of the region (default `rw`, remote read-write).
//! - `--path`: the engine's path to peers (default `auto`); `rdma` needs a
//!   verbs library with a device (`TE_VERBS_LIBRARY`, e.g. the fake with
//!   `TE_FAKE_VERBS_DEVICES=1`).
//! - `--user`: the region is user memory (a heap buffer registered by
//!   address) instead of engine-owned memory.
//! - `--probe <segment> <addr>`: instead of serving, open `segment`, read
//!   `len` bytes at `addr` of it (filled by a peer with the same seed),
//!   print `PROBE <path> ok` (or the error) and exit.
//! - `--idle-ms <ms>`: the engine's idle timeout (the heartbeat a fifth of
//!   it, the connect timeout the same), for tests of broken networks.
//! - `--name <name> --directory <url>`: the engine's segment name, published in
//!   the directory at `url`; `--directory-ttl-ms <ms>` its time to live.
//!   A named peer prints `LISTEN <port>` after its READY line.
//! - `--check-notify`: for each notification `check` with message
//!   `<offset> <len> <seed> <start>`, check that the region's bytes at
//!   `offset..offset + len` are `pattern(seed, start + i)` when it arrives,
//!   and print `NOTIFY ok <offset>` or `NOTIFY bad <offset> <what>`.
//! - `--location <loc>`: the engine's location (default `cpu`); the region
//!   is then engine-owned device memory, filled through the driver.
//! - `--acl <path>`: the `libascendcl.so` for `npu:N` (and for imports of
//!   a peer's npu buffers), e.g. the fake's.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use te_runtime::{Engine, EngineConfig, Location, Notification, Path, Perm};

fn usage(why: &str) -> ! {
    eprintln!("te-peer: {why}");
    eprintln!(
        "usage: te-peer [<listen> [<len> [<seed>]]] [--secret <text>] [--perm rw|r|w|local] \
         [--path tcp|shm|rdma|auto] [--user] [--probe <segment> <addr>] [--idle-ms <ms>] \
         [--check-notify] [--name <name> --directory <url> [--directory-ttl-ms <ms>]] \
         [--location <loc>] [--acl <path>]"
    );
    std::process::exit(2);
}

fn main() {
    // The engine's log on stderr, as `TE_LOG` says (default: warnings).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let mut positional = Vec::new();
    let mut secret = None;
    let mut perm = Perm::REMOTE_READ_WRITE;
    let mut path = Path::Auto;
    let mut user = false;
    let mut probe = None;
    let mut idle = None;
    let mut check_notify = false;
    let (mut name, mut directory, mut ttl) = (None, None, None);
    let (mut location, mut acl) = (Location::Cpu, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--secret" => match args.next() {
                Some(s) => secret = Some(s.into_bytes()),
                None => usage("--secret needs a value"),
            },
            "--perm" => {
                perm = match args.next().as_deref() {
                    Some("rw") => Perm::REMOTE_READ_WRITE,
                    Some("r") => Perm::REMOTE_READ,
                    Some("w") => Perm::REMOTE_WRITE,
                    Some("local") => Perm::LOCAL_ONLY,
                    other => usage(&format!("bad --perm {other:?}")),
                }
            }
            "--path" => match args.next().map(|p| p.parse()) {
                Some(Ok(p)) => path = p,
                other => usage(&format!("bad --path {other:?}")),
            },
            "--user" => user = true,
            "--probe" => match (args.next(), args.next().and_then(|a| a.parse::<u64>().ok())) {
                (Some(seg), Some(addr)) => probe = Some((seg, addr)),
                _ => usage("--probe needs a segment and an address"),
            },
            "--idle-ms" => match args.next().and_then(|a| a.parse::<u64>().ok()) {
                Some(ms) if ms > 0 => idle = Some(Duration::from_millis(ms)),
                _ => usage("--idle-ms needs a positive number of milliseconds"),
            },
            "--check-notify" => check_notify = true,
            "--location" => match args.next().map(|l| l.parse()) {
                Some(Ok(l)) => location = l,
                other => usage(&format!("bad --location {other:?}")),
            },
            "--acl" => acl = Some(args.next().unwrap_or_else(|| usage("--acl needs a path")).into()),
            "--name" => name = Some(args.next().unwrap_or_else(|| usage("--name needs a value"))),
            "--directory" => {
                directory = Some(args.next().unwrap_or_else(|| usage("--directory needs a URL")))
            }
            "--directory-ttl-ms" => match args.next().and_then(|a| a.parse::<u64>().ok()) {
                Some(ms) => ttl = Some(Duration::from_millis(ms)),
                _ => usage("--directory-ttl-ms needs a number of milliseconds"),
            },
            _ => positional.push(a),
        }
    }
    let mut positional = positional.into_iter();
    let listen = positional.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let len: u64 = positional.next().and_then(|s| s.parse().ok()).unwrap_or(1 << 20);
    let seed: u64 = positional.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut cfg = EngineConfig {
        listen,
        secret,
        path,
        segment_name: name.clone(),
        directory,
        location,
        ..EngineConfig::default()
    };
    cfg.ascend.library = acl;
    if !location.is_host() && (user || probe.is_some() || check_notify) {
        usage("--location with device memory takes no --user, --probe or --check-notify");
    }
    if let Some(ttl) = ttl {
        cfg.directory_ttl = ttl;
    }
    let named = name.is_some();
    if let Some(idle) = idle {
        cfg.idle_timeout = idle;
        cfg.heartbeat_interval = idle / 5;
        cfg.connect_timeout = idle;
    }
    let engine = match Engine::start(cfg) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("te-peer: {e}");
            std::process::exit(2);
        }
    };
    // User memory lives as long as the process: the engine is finalized first.
    let mut heap = Vec::new();
    let addr = if user {
        heap = vec![0u8; len as usize];
        let addr = heap.as_mut_ptr() as u64;
        // SAFETY: `heap` outlives the engine (finalized below, before it drops).
        unsafe { engine.register_memory(addr, len, perm) }.expect("register");
        addr
    } else {
        engine.alloc_memory(len, perm).expect("alloc")
    };
    if let Some((seg, remote)) = probe {
        return run_probe(&engine, &seg, addr, remote, len, seed);
    }
    if location.is_host() {
        // SAFETY: freshly allocated engine memory of `len` bytes.
        unsafe { te_tests::fill(addr, len, seed) };
    } else {
        let mut bytes = vec![0u8; len as usize];
        // SAFETY: our own vector of `len` bytes.
        unsafe { te_tests::fill(bytes.as_mut_ptr() as u64, len, seed) };
        engine.write_memory(addr, &bytes).expect("fill the device region");
    }
    println!("READY {} {addr} {len}", engine.segment_name());
    if named {
        println!("LISTEN {}", engine.rpc_port());
    }
    std::io::stdout().flush().expect("stdout");
    let serving = AtomicBool::new(true);
    std::thread::scope(|s| {
        if check_notify {
            s.spawn(|| {
                while serving.load(Ordering::Relaxed) {
                    for n in engine.wait_notifications(Duration::from_millis(100)) {
                        check_notification(addr, len, &n);
                    }
                }
            });
        }
        // Serve until the test closes our stdin.
        for _ in std::io::stdin().lock().lines() {}
        serving.store(false, Ordering::Relaxed);
    });
    engine.finalize();
    drop(heap);
}

/// Checks the bytes a `check` notification describes and prints the verdict.
fn check_notification(addr: u64, region: u64, n: &Notification) {
    if n.name != "check" {
        return;
    }
    let text = String::from_utf8_lossy(&n.msg);
    let nums: Vec<u64> = text.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    let verdict = match nums.as_slice() {
        &[off, len, seed, start] if off.checked_add(len).is_some_and(|end| end <= region) => {
            // SAFETY: inside the region; the test writes nothing there
            // until it has read this verdict.
            match unsafe { te_tests::proc::check_pattern(addr + off, len, seed, start) } {
                Ok(()) => format!("NOTIFY ok {off}"),
                Err(e) => format!("NOTIFY bad {off} {e}"),
            }
        }
        _ => format!("NOTIFY bad 0 message {text:?} is not <offset> <len> <seed> <start> in the region"),
    };
    println!("{verdict}");
    let _ = std::io::stdout().flush();
}

/// Reads `len` bytes at `remote` of segment `seg` into `local`, checks them
/// against `pattern(seed, i)` and prints `PROBE <path> ok` or the error.
fn run_probe(engine: &Engine, seg: &str, local: u64, remote: u64, len: u64, seed: u64) {
    let result = engine.open_segment(seg).and_then(|id| {
        let path = engine.segment_path(id)?;
        engine.transfer_sync_read(seg, local, remote, len)?;
        Ok(path)
    });
    match result {
        Ok(path) => {
            // SAFETY: the read ended; `local` is engine memory of `len` bytes.
            let ok = unsafe { te_tests::proc::check_pattern(local, len, seed, 0) };
            match ok {
                Ok(()) => println!("PROBE {path} ok"),
                Err(e) => println!("PROBE {path} {e}"),
            }
        }
        Err(e) => println!("PROBE error {e}"),
    }
    engine.finalize();
}
