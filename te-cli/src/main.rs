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
/// a terminal that draws colours. `TE_LOG` adds to the default: a directive that does not
/// parse is reported and left out, and one that can match nothing of te
/// (a bare word that is neither a level nor a te module) is reported too.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let mut filter = EnvFilter::new("warn");
    if let Ok(v) = std::env::var("TE_LOG") {
        for d in v.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match d.parse() {
                Ok(directive) => {
                    if let Some(why) = matches_nothing(d) {
                        eprintln!("te: warning: TE_LOG directive {d:?} {why}; e.g. TE_LOG=debug or TE_LOG=te_runtime=info");
                    }
                    filter = filter.add_directive(directive);
                }
                Err(e) => eprintln!(
                    "te: warning: ignoring TE_LOG directive {d:?} ({e}); e.g. TE_LOG=debug or TE_LOG=te_runtime=info"
                ),
            }
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(progress::draws())
        .with_writer(std::io::stderr)
        .init();
}

/// Why a parsed `TE_LOG` directive can show nothing of te, if it cannot:
/// its target (what precedes `=` or `[`) is not a te module.
fn matches_nothing(directive: &str) -> Option<&'static str> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let target = directive.split(['=', '[']).next().unwrap_or("");
    if target.is_empty() || LEVELS.iter().any(|l| target.eq_ignore_ascii_case(l)) {
        return None;
    }
    if target == "te" || target.starts_with("te_") {
        return None;
    }
    Some("names neither a level nor a te module (te_runtime, te_proto, te_cli, ...), so it shows nothing")
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
