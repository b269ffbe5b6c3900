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
mod error;
mod flags;
mod info;
mod memcpy;
mod memory;
mod meta;
mod output;
mod pattern;
mod pingpong;
mod progress;
mod report;
mod serve;
mod size;
mod stop;

use std::io::IsTerminal;

use clap::{Parser, Subcommand};

/// The version line: the crate's version and the commit it was built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("TE_COMMIT"), ")");

/// te: a transfer engine between the registered memory of processes.
#[derive(Parser, Debug)]
#[command(name = "te", version = VERSION, about)]
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
    Info(info::InfoArgs),
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

/// Logs to stderr filtered by `TE_LOG` (default `warn`), coloured only on
/// a terminal; an invalid `TE_LOG` is reported and the default used.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("TE_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(&v).unwrap_or_else(|e| {
            eprintln!("te: warning: ignoring TE_LOG={v:?} ({e}); logging warnings only, e.g. TE_LOG=debug or TE_LOG=te_runtime=info");
            EnvFilter::new("warn")
        }),
        _ => EnvFilter::new("warn"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() {
    init_logging();
    let cli = Cli::parse();
    if let Err(e) = stop::install() {
        eprintln!("te: {e}");
        std::process::exit(1);
    }
    let result = match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Info(a) => info::run(a),
        Command::TcpPingpong(a) => pingpong::run(a),
        Command::Memcpy(a) => memcpy::run(a),
    };
    match result {
        Ok(ended) => std::process::exit(ended.exit_code()),
        Err(e) => {
            eprintln!("te: {e}");
            std::process::exit(1);
        }
    }
}
