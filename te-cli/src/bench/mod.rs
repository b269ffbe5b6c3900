//! `te bench`: the initiator side of a transfer benchmark.

mod args;
mod lookup;
mod measure;
mod plan;
mod scale;
mod verify;

use std::time::Duration;

use serde_json::json;
use te_runtime::{Engine, EngineConfig, Path, Perm, SegmentId};

pub use args::BenchArgs;

use crate::child::ChildTe;
use crate::error::{fail, Ended, Result};
use crate::output::Output;
use crate::pattern::TARGET_SEED;
use crate::progress::Feedback;
use crate::{memory, size, stop};
use measure::{measure, Measured, Run};
use scale::{IdlePeers, Resident};
use verify::Verifier;

/// Starts `te serve` on loopback in a child process; returns it with its
/// segment name. A benchmark of TCP (`--path tcp`) makes the target a
/// TCP-only engine too, with the memory such an engine has.
fn start_target(args: &BenchArgs) -> Result<ChildTe> {
    let mut child: Vec<String> = ["serve", "--listen", "127.0.0.1:0", "--until-stdin-closes"]
        .map(String::from)
        .into();
    child.extend([
        "--size".into(),
        args.buffer.to_string(),
        "--fill".into(),
        TARGET_SEED.to_string(),
    ]);
    if let Some(s) = &args.secret {
        child.extend(["--secret".into(), s.clone()]);
    }
    if args.busy_poll {
        child.push("--busy-poll".into());
    }
    if args.path == Path::Tcp {
        child.extend(["--path".into(), "tcp".into()]);
    }
    if args.target_regions > 1 {
        child.extend(["--regions".into(), args.target_regions.to_string()]);
    }
    if args.idle_peers > 0 {
        // Every idle peer comes from 127.0.0.1, like this process.
        let room = args.idle_peers as usize + 64;
        child.extend([
            "--max-connections-per-source".into(),
            room.to_string(),
            "--max-connections".into(),
            room.max(EngineConfig::default().max_connections).to_string(),
        ]);
    }
    let location = args.target_location.unwrap_or(args.location);
    child.extend([
        "--location".into(),
        location.to_string(),
        "--staging-slots".into(),
        args.staging_slots.to_string(),
    ]);
    ChildTe::start(&child, "segment ")
}

/// The host memory this process needs beside the target: its buffer (unless
/// it is device memory) and, with --verify, the shadow of the target's.
fn local_need(args: &BenchArgs, buffer: u64) -> u64 {
    let own = if args.location.is_host() { buffer } else { 0 };
    own.saturating_add(if args.verify { buffer } else { 0 })
}

/// The host memory the embedded target needs: its buffer, unless that is
/// device memory.
fn target_need(args: &BenchArgs) -> u64 {
    match args.target_location.unwrap_or(args.location) {
        l if l.is_host() => args.buffer,
        _ => 0,
    }
}

/// The host buffers [`local_need`] (and, with `embedded`, [`target_need`])
/// count, for the message of a failed memory check.
fn host_buffers(args: &BenchArgs, embedded: bool) -> String {
    let mut parts = Vec::new();
    if args.location.is_host() {
        parts.push("this process's buffer");
    }
    if embedded && target_need(args) > 0 {
        parts.push("the embedded target's");
    }
    if args.verify {
        parts.push("the --verify shadow");
    }
    parts.join(", ")
}

/// When every configuration would be skipped over a `buffer` of bytes,
/// the run ends before anything more is started or allocated, with the
/// skipped configurations listed (and the JSON document, with `--json`)
/// and the error that nothing was measured.
fn nothing_to_run(
    args: &BenchArgs,
    feedback: &Feedback,
    buffer: u64,
    target: Option<(&str, Path)>,
) -> Option<Result<Ended>> {
    let blocks = args.blocks();
    let (configs, skipped) = plan::plan(&args.op, &args.threads, &args.batches(), &blocks, buffer);
    if !configs.is_empty() {
        return None;
    }
    let out = Output::begin(args.output, feedback, &[], skipped);
    let (target, path) = target.unwrap_or(("", args.path));
    let settings = settings(args, &blocks, buffer, args.target.is_empty());
    Some(out.finish("te bench", target, &path.to_string(), settings, None))
}

/// What [`open_target`] found.
struct Opened {
    segment: SegmentId,
    /// The path it takes.
    path: Path,
    /// Address and length of its largest read-write region.
    addr: u64,
    len: u64,
    /// How many regions it lists.
    regions: usize,
}

/// Opens target `name`: its segment, the path it takes (an error when
/// --path shm cannot be had), its largest read-write region and how many
/// it lists. Reports the directory lookup's cost when --target is a name in
/// --directory.
fn open_target(engine: &Engine, args: &BenchArgs, name: &str, feedback: &Feedback) -> Result<Opened> {
    let segment = engine.open_segment(name)?;
    if let Some(url) = &args.directory.directory {
        feedback.line(&lookup::report(
            engine,
            url,
            &args.directory.directory_prefix,
            name,
        )?);
    }
    let auto = engine.segment_path(segment)?;
    let path = match args.path {
        Path::Auto => auto,
        Path::Shm if auto != Path::Shm => {
            return Err(fail(format!(
                "--path shm: no same-host path to {name}: it offers only TCP, runs on another host or \
                 network namespace, or refused this process (TE_LOG=info tells which)"
            )))
        }
        forced => forced,
    };
    let regions = engine.segment_info(segment)?;
    let region = regions
        .iter()
        .filter(|r| r.perm.contains(Perm::REMOTE_READ_WRITE))
        .max_by_key(|r| r.span.len)
        .ok_or_else(|| fail(format!("segment {name} has no read-write region")))?;
    Ok(Opened {
        segment,
        path,
        addr: region.span.addr,
        len: region.span.len,
        regions: regions.len(),
    })
}

/// Runs `te bench`.
pub fn run(args: BenchArgs) -> Result<Ended> {
    let feedback = Feedback::new("te bench");
    if args.verify && args.target.len() > 1 {
        return Err(fail(format!(
            "--verify takes one --target, not {}: the shadow copy follows one target's buffer",
            args.target.len()
        )));
    }
    let child = match args.target.is_empty() {
        false => None,
        true => {
            if let Some(empty) = nothing_to_run(&args, &feedback, args.buffer, None) {
                return empty;
            }
            memory::check(
                &format!(
                    "--buffer {} ({})",
                    size::show(args.buffer),
                    host_buffers(&args, true)
                ),
                local_need(&args, args.buffer).saturating_add(target_need(&args)),
            )?;
            Some(start_target(&args)?)
        }
    };
    let names: Vec<String> = match &child {
        Some(c) => vec![c.address.clone()],
        None => args.target.clone(),
    };
    let target = names.join(",");
    let engine = Engine::start(args.directory.apply(EngineConfig {
        secret: args.secret.clone().map(String::into_bytes),
        busy_poll: args.busy_poll,
        path: args.path,
        location: args.location,
        staging_slots: usize::from(args.staging_slots),
        ..EngineConfig::default()
    }))?;
    let mut targets = Vec::with_capacity(names.len());
    let mut paths = Vec::with_capacity(names.len());
    let mut listed = Vec::with_capacity(names.len());
    let mut buffer = args.buffer;
    for name in &names {
        let t = open_target(&engine, &args, name, &feedback)?;
        targets.push((t.segment, t.addr));
        paths.push(t.path);
        listed.push(t.regions);
        buffer = buffer.min(t.len);
    }
    // One path for the run: the one every target takes, else `auto` (each
    // target's own).
    let path = match paths.split_first() {
        Some((first, rest)) if rest.iter().all(|p| p == first) => *first,
        _ => Path::Auto,
    };
    if child.is_none() {
        if let Some(empty) = nothing_to_run(&args, &feedback, buffer, Some((&target, path))) {
            return empty;
        }
        memory::check(
            &format!("--buffer {} ({})", size::show(buffer), host_buffers(&args, false)),
            local_need(&args, buffer),
        )?;
    }
    let target_pid = child.as_ref().and_then(ChildTe::pid);
    let idle = idle_peers(&args, &names, target_pid, &feedback)?;
    let local = memory::populate(&feedback, buffer, || {
        Ok(engine.alloc_memory(buffer, Perm::LOCAL_ONLY)?)
    })?;
    let mut run = Run {
        engine: &engine,
        targets,
        path,
        local,
        hot: args.hot,
        duration: Duration::from_secs_f64(args.duration),
        warmup: Duration::from_secs_f64(args.warmup),
        total_bytes: args.total_bytes,
        verifier: None,
    };
    if args.verify {
        run.verifier = Some(match child {
            Some(_) => Verifier::of_pattern(buffer)?,
            None => Verifier::of_target(&run, buffer)?,
        });
    }
    let blocks = args.blocks();
    let (configs, skipped) = plan::plan(&args.op, &args.threads, &args.batches(), &blocks, buffer);
    let echo = echo(
        &args,
        &target,
        path,
        buffer,
        child.is_some(),
        run.verifier.as_ref(),
    );
    let mut settings = settings(&args, &blocks, buffer, child.is_some());
    settings["target_regions"] = json!(listed);
    stop::defer();
    let mut out = Output::begin(args.output, &feedback, &echo, skipped);
    let mut abandoned = None;
    {
        let mut sweep = feedback.sweep(configs.len(), run.warmup + run.duration);
        for &c in &configs {
            sweep.start(&c.label());
            match measure(&run, c, &sweep)? {
                Measured::Row(row) => out.row(row),
                Measured::Abandoned => {
                    abandoned = Some(c.label());
                    break;
                }
            }
            sweep.done();
            if stop::requested().is_some() {
                break;
            }
        }
    }
    settings["memory"] = memory_report(&feedback, target_pid, idle.as_ref());
    // This side closes its connections first, then the target stops: a
    // deliberate stop leaves nothing half-done in either log.
    drop(run);
    drop(idle);
    engine.finalize();
    drop(child);
    out.finish("te bench", &target, &path.to_string(), settings, abandoned)
}

/// The idle peers of `--idle-peers`, connected to every target, with the
/// embedded target's resident memory before and after (per connection).
fn idle_peers(
    args: &BenchArgs,
    names: &[String],
    target_pid: Option<u32>,
    feedback: &Feedback,
) -> Result<Option<IdlePeers>> {
    if args.idle_peers == 0 {
        return Ok(None);
    }
    let secret = args.secret.as_deref().map(str::as_bytes);
    let peers = IdlePeers::connect(names, args.idle_peers, secret, target_pid)?;
    let mut line = format!(
        "{} idle peer connection(s) open, made in {:.2} s",
        peers.connections, peers.seconds
    );
    // Only the embedded target is measured, and it is the only target.
    if let Some((b, a)) = peers.target_change {
        line += &format!(
            "; the target's resident memory {} -> {} ({} per connection)",
            mib(b.now),
            mib(a.now),
            kib(a.now.saturating_sub(b.now) / peers.connections as u64)
        );
    }
    feedback.line(&line);
    Ok(Some(peers))
}

/// `12.3 MiB`.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// `12.3 KiB`.
fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

/// The resident memory of this process and of the embedded target at the
/// end of the run (peak and now), and what the idle peers cost the target:
/// printed, and returned for the JSON document.
fn memory_report(
    feedback: &Feedback,
    target_pid: Option<u32>,
    idle: Option<&IdlePeers>,
) -> serde_json::Value {
    let me = Resident::of(None);
    let target = Resident::of(target_pid);
    let show = |r: Option<Resident>| {
        r.map_or("unknown".to_string(), |r| {
            format!("{} now, {} at peak", mib(r.now), mib(r.peak))
        })
    };
    feedback.line(&format!(
        "resident memory: this process {}; {} {}",
        show(me),
        if target_pid.is_some() {
            "the target"
        } else {
            "the target (not a child of this run)"
        },
        show(target)
    ));
    let idle_json = idle.map(|peers| {
        let change = peers.target_change;
        json!({
            "connections": peers.connections,
            "connect_seconds": peers.seconds,
            "target_before": change.map(|(b, _)| b.json()),
            "target_after": change.map(|(_, a)| a.json()),
            "target_bytes_per_connection":
                change.map(|(b, a)| a.now.saturating_sub(b.now) / peers.connections.max(1) as u64),
        })
    });
    json!({
        "initiator": me.map(|r| r.json()),
        "target": target.map(|r| r.json()),
        "idle_peers": idle_json,
    })
}

/// The effective configuration, printed before the table.
fn echo(
    args: &BenchArgs,
    target: &str,
    path: Path,
    buffer: u64,
    embedded: bool,
    verifier: Option<&Verifier>,
) -> Vec<String> {
    let list = |v: Vec<String>| v.join(",");
    let mut lines = vec![
        format!(
            "te bench {}: target {target}{}, path {path}",
            env!("CARGO_PKG_VERSION"),
            if embedded {
                " (te serve in a child process)"
            } else {
                ""
            }
        ),
        format!(
            "  op {}, block {}, batch {}, threads {}; {} buffer on each side ({})",
            list(args.op.iter().map(|o| o.name().to_string()).collect()),
            list(args.blocks().into_iter().map(size::show).collect()),
            list(args.batches().iter().map(u32::to_string).collect()),
            list(args.threads.iter().map(u32::to_string).collect()),
            size::show(buffer),
            if args.hot {
                "hot: one block reused per thread"
            } else {
                "cold: cycling through it"
            },
        ),
        format!(
            "  {} per configuration (the batch in flight at the end finishes), after {} s of warm-up; busy-poll {}",
            match args.total_bytes {
                Some(tb) => format!(
                    "{} or {} s measured, whichever comes first,",
                    size::show(tb),
                    args.duration
                ),
                None => format!(
                    "{} s measured",
                    args.duration
                ),
            },
            args.warmup,
            if args.busy_poll { "on" } else { "off" },
        ),
    ];
    if !args.location.is_host() || args.target_location.is_some_and(|l| !l.is_host()) {
        lines.push(format!(
            "  memory: {} here, {} at the target; device payloads staged through {} slot(s) per connection and direction",
            args.location,
            args.target_location.unwrap_or(args.location),
            args.staging_slots
        ));
    }
    if let Some(v) = verifier {
        lines.push(format!("  verify: {}", v.source.describe()));
    }
    lines
}

/// The effective settings, for the JSON document.
fn settings(args: &BenchArgs, blocks: &[u64], buffer: u64, embedded: bool) -> serde_json::Value {
    json!({
        "ops": args.op.iter().map(|o| o.name()).collect::<Vec<_>>(),
        "block_bytes": blocks,
        "batch": args.batches(),
        "threads": args.threads,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "total_bytes": args.total_bytes,
        "buffer_bytes": buffer,
        "regime": if args.hot { "hot" } else { "cold" },
        "verify": args.verify,
        "busy_poll": args.busy_poll,
        "path_requested": args.path.to_string(),
        "embedded_target": embedded,
        "location": args.location.to_string(),
        "target_location": args.target_location.unwrap_or(args.location).to_string(),
        "staging_slots": args.staging_slots,
    })
}
