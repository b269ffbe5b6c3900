//! `te`: serve a segment, benchmark transfers, inspect a peer.

/// `println!` for the tool's output: a reader that went away (`te ... |
/// head`) ends the tool quietly instead of panicking.
macro_rules! out {
    ($($t:tt)*) => {
        $crate::write_out(format_args!($($t)*))
    };
}

mod bench;
mod child;
mod memcpy;
mod pingpong;
mod report;
mod serve;
mod size;

use clap::{Parser, Subcommand};

/// te: a transfer engine between the registered memory of processes.
#[derive(Parser, Debug)]
#[command(name = "te", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a target engine with a registered buffer and serve until interrupted.
    Serve(serve::ServeArgs),
    /// Measure transfers against a target (by default one started on loopback in a child process).
    Bench(bench::BenchArgs),
    /// List a peer segment's remotely visible regions.
    Info(InfoArgs),
    /// Raw-TCP ping-pong between this process and a child: the latency floor for `te bench --batch 1`.
    TcpPingpong(pingpong::PingPongArgs),
    /// One thread copying blocks in memory: the yardstick for the same-host path.
    Memcpy(memcpy::MemcpyArgs),
}

/// Writes one line to standard output; exits quietly when the reader is
/// gone (a child target, if any, ends when its standard input closes).
fn write_out(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("te: cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// Arguments of `te info`.
#[derive(clap::Args, Debug)]
struct InfoArgs {
    /// The peer's segment name, host:port.
    segment: String,
    /// Shared secret of the peer.
    #[arg(long)]
    secret: Option<String>,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Info(a) => info(a),
        Command::TcpPingpong(a) => pingpong::run(a),
        Command::Memcpy(a) => memcpy::run(a),
    };
    if let Err(e) = result {
        eprintln!("te: {e}");
        std::process::exit(1);
    }
}

fn info(args: InfoArgs) -> Result<(), te_runtime::Status> {
    let cfg = te_runtime::EngineConfig {
        secret: args.secret.map(String::into_bytes),
        ..Default::default()
    };
    let engine = te_runtime::Engine::start(cfg)?;
    let seg = engine.open_segment(&args.segment)?;
    let regions = engine.segment_info(seg)?;
    out!("{:<10} {:>18} {:>14} perm", "location", "base", "length");
    for r in &regions {
        let perm = match (
            r.perm.contains(te_runtime::Perm::REMOTE_READ),
            r.perm.contains(te_runtime::Perm::REMOTE_WRITE),
        ) {
            (true, true) => "rw",
            (true, false) => "r",
            (false, true) => "w",
            (false, false) => "-",
        };
        out!(
            "{:<10} {:>#18x} {:>14} {perm}",
            r.span.location.to_string(),
            r.span.addr,
            r.span.len
        );
    }
    out!("{} regions", regions.len());
    Ok(())
}
