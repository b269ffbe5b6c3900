//! `te tcp-pingpong`: the raw-TCP latency floor that `te bench`'s
//! batch-1 reads are compared with. No te protocol: a 40-byte request
//! (the size of a te read request) answered by a 16-byte header plus the
//! block, one exchange in flight, between this process and a child, over
//! blocking sockets or, with `--busy-poll`, non-blocking sockets that spin.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use te_runtime::Status;

use crate::bench::{err, parse_seconds};
use crate::child::ChildTe;
use crate::report::{self, Row};
use crate::size;

/// Bytes of one request: a te frame header and read-request body.
const REQUEST: usize = 40;
/// Bytes in front of each reply's block: a te frame header.
const REPLY_HEADER: usize = 16;
/// Largest block a ping-pong moves.
const MAX_BLOCK: u64 = 64 << 20;

/// Arguments of `te tcp-pingpong`.
#[derive(clap::Args, Debug)]
pub struct PingPongArgs {
    /// Bytes each reply carries (e.g. 4K).
    #[arg(long, default_value = "4K", value_parser = parse_block)]
    pub block_size: u64,
    /// Seconds to measure.
    #[arg(long, default_value_t = 2.0, value_parser = parse_seconds)]
    pub duration: f64,
    /// Spin on non-blocking sockets instead of sleeping in the kernel (both processes).
    #[arg(long)]
    pub busy_poll: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Answer ping-pongs on this address instead (what the child process runs).
    #[arg(long, hide = true)]
    pub serve: Option<String>,
}

fn parse_block(s: &str) -> Result<u64, String> {
    match size::parse(s)? {
        n if (1..=MAX_BLOCK).contains(&n) => Ok(n),
        n => Err(format!("block size {n} out of range 1..={MAX_BLOCK}")),
    }
}

fn io_err(what: &str, e: io::Error) -> Status {
    err(format!("{what}: {e}"))
}

pub fn run(args: PingPongArgs) -> Result<(), Status> {
    if let Some(listen) = &args.serve {
        return serve(listen, args.block_size, args.busy_poll);
    }
    let mut child_args: Vec<String> = vec![
        "tcp-pingpong".into(),
        "--serve".into(),
        "127.0.0.1:0".into(),
        "--block-size".into(),
        args.block_size.to_string(),
    ];
    if args.busy_poll {
        child_args.push("--busy-poll".into());
    }
    let child = ChildTe::start(&child_args, "listening ")?;
    let mut stream = TcpStream::connect(&child.address).map_err(|e| io_err(&child.address, e))?;
    prepare(&stream, args.busy_poll)?;
    let request = [0u8; REQUEST];
    let mut reply = vec![0u8; REPLY_HEADER + args.block_size as usize];
    let duration = Duration::from_secs_f64(args.duration);
    let mut rtt_us = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        let t0 = Instant::now();
        write_full(&mut stream, &request).map_err(|e| io_err("send request", e))?;
        read_full(&mut stream, &mut reply).map_err(|e| io_err("read reply", e))?;
        rtt_us.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    let seconds = start.elapsed().as_secs_f64();
    rtt_us.sort_by(f64::total_cmp);
    let row = Row {
        op: "tcp",
        block: args.block_size,
        batch: 1,
        threads: 1,
        regime: "hot",
        bytes: rtt_us.len() as u64 * args.block_size,
        ops: rtt_us.len() as u64,
        seconds,
        batch_us: rtt_us,
    };
    if args.json {
        out!("{}", report::json(&[row], &child.address, "raw-tcp"));
    } else {
        out!(
            "te tcp-pingpong: raw TCP, one {} reply in flight, {}",
            size::show(args.block_size),
            if args.busy_poll {
                "busy-polling"
            } else {
                "blocking"
            }
        );
        out!("{}", report::HEADER);
        out!("{}", report::line(&row));
    }
    Ok(())
}

/// The child: answers every request on one connection until it closes.
fn serve(listen: &str, block: u64, busy: bool) -> Result<(), Status> {
    let listener = TcpListener::bind(listen).map_err(|e| io_err(listen, e))?;
    let addr = listener.local_addr().map_err(|e| io_err("listener", e))?;
    out!("listening {addr}");
    io::stdout().flush().map_err(|e| io_err("stdout", e))?;
    let (mut stream, _) = listener.accept().map_err(|e| io_err("accept", e))?;
    prepare(&stream, busy)?;
    let mut request = [0u8; REQUEST];
    let reply = vec![0x5a; REPLY_HEADER + block as usize];
    loop {
        match read_full(&mut stream, &mut request) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(io_err("read request", e)),
        }
        write_full(&mut stream, &reply).map_err(|e| io_err("send reply", e))?;
    }
}

fn prepare(stream: &TcpStream, busy: bool) -> Result<(), Status> {
    stream.set_nodelay(true).map_err(|e| io_err("TCP_NODELAY", e))?;
    stream.set_nonblocking(busy).map_err(|e| io_err("O_NONBLOCK", e))
}

/// `read_exact` that spins while a non-blocking socket has nothing.
fn read_full(stream: &mut TcpStream, mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match stream.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                std::hint::spin_loop()
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `write_all` that spins while a non-blocking socket takes nothing.
fn write_full(stream: &mut TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match stream.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                std::hint::spin_loop()
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
