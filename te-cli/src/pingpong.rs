//! `te tcp-pingpong`: the raw-TCP latency floor that `te bench`'s
//! batch-1 reads are compared with. No te protocol: a 40-byte request
//! (the size of a te read request, its first 8 bytes the block size asked
//! for) answered by a 16-byte header plus the block, one exchange in
//! flight, between this process and a child, over blocking sockets or,
//! with `--busy-poll`, non-blocking sockets that spin.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::child::ChildTe;
use crate::error::{fail, Ended, Error, Result};
use crate::flags::parse_seconds;
use crate::output::{Output, OutputArgs};
use crate::progress::Feedback;
use crate::report::Row;
use crate::{size, stop};

/// Bytes of one request: a te frame header and read-request body.
const REQUEST: usize = 40;
/// Bytes in front of each reply's block: a te frame header.
const REPLY_HEADER: usize = 16;
/// Largest block a ping-pong moves.
const MAX_BLOCK: u64 = 64 << 20;

/// Arguments of `te tcp-pingpong`.
#[derive(clap::Args, Debug)]
pub struct PingPongArgs {
    /// Bytes each reply carries, one configuration each (e.g. 4K or 4K,64K).
    #[arg(long, value_delimiter = ',', default_value = "4K", value_parser = parse_block,
          allow_hyphen_values = true)]
    pub block_size: Vec<u64>,
    /// Seconds to measure per block size.
    #[arg(long, default_value = "2", value_parser = parse_seconds, allow_negative_numbers = true)]
    pub duration: f64,
    /// Spin on non-blocking sockets instead of sleeping in the kernel (both processes).
    #[arg(long)]
    pub busy_poll: bool,
    /// How to print the results.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Answer ping-pongs on this address instead (what the child process runs).
    #[arg(long, hide = true)]
    pub serve: Option<String>,
}

fn parse_block(s: &str) -> std::result::Result<u64, String> {
    match size::parse(s)? {
        n if (1..=MAX_BLOCK).contains(&n) => Ok(n),
        n => Err(format!("block size {n} out of range 1..={MAX_BLOCK} (64M)")),
    }
}

fn io_err(what: &str, e: io::Error) -> Error {
    fail(format!("{what}: {e}"))
}

/// Runs `te tcp-pingpong` (or, with the hidden `--serve`, its child).
pub fn run(args: PingPongArgs) -> Result<Ended> {
    if let Some(listen) = &args.serve {
        serve(listen, args.busy_poll)?;
        return Ok(Ended::Done);
    }
    let feedback = Feedback::new("te tcp-pingpong");
    let mut child_args: Vec<String> = vec!["tcp-pingpong".into(), "--serve".into(), "127.0.0.1:0".into()];
    if args.busy_poll {
        child_args.push("--busy-poll".into());
    }
    let child = ChildTe::start(&child_args, "listening ")?;
    let mut stream = TcpStream::connect(&child.address).map_err(|e| io_err(&child.address, e))?;
    prepare(&stream, args.busy_poll)?;
    let duration = Duration::from_secs_f64(args.duration);
    let echo =
        [format!(
        "te tcp-pingpong {}: raw TCP to a child process at {}, one reply in flight, {}, {} s per block size",
        env!("CARGO_PKG_VERSION"),
        child.address,
        if args.busy_poll { "busy-polling" } else { "blocking" },
        args.duration
    )];
    stop::defer();
    let mut out = Output::begin(args.output, &feedback, &echo, Vec::new());
    let mut abandoned = None;
    {
        let mut sweep = feedback.sweep(args.block_size.len(), duration);
        for &block in &args.block_size {
            let label = format!("round trips of {}", size::show(block));
            sweep.start(&label);
            match round_trips(&mut stream, block, duration, &sweep)? {
                Some(row) => out.row(row),
                None => {
                    abandoned = Some(label);
                    break;
                }
            }
            sweep.done();
        }
    }
    drop(stream);
    let target = child.address.clone();
    drop(child);
    let settings = json!({
        "block_bytes": args.block_size, "duration_s": args.duration, "busy_poll": args.busy_poll,
        "request_bytes": REQUEST, "reply_header_bytes": REPLY_HEADER,
    });
    out.finish("te tcp-pingpong", &target, "raw-tcp", settings, abandoned)
}

/// Round trips of `block`-byte replies for `duration`; `None` when a signal stopped them.
fn round_trips(
    stream: &mut TcpStream,
    block: u64,
    duration: Duration,
    sweep: &crate::progress::Sweep<'_>,
) -> Result<Option<Row>> {
    let mut request = [0u8; REQUEST];
    request[..8].copy_from_slice(&block.to_le_bytes());
    let mut reply = vec![0u8; REPLY_HEADER + block as usize];
    let mut rtt_us = Vec::new();
    let start = Instant::now();
    let mut ticked = start;
    while start.elapsed() < duration {
        let t0 = Instant::now();
        write_full(stream, &request).map_err(|e| io_err("send request", e))?;
        read_full(stream, &mut reply).map_err(|e| io_err("read reply", e))?;
        let t1 = Instant::now();
        rtt_us.push((t1 - t0).as_secs_f64() * 1e6);
        if t1 - ticked >= Duration::from_millis(200) {
            ticked = t1;
            if stop::requested().is_some() {
                return Ok(None);
            }
            sweep.tick(t1 - start);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    rtt_us.sort_by(f64::total_cmp);
    Ok(Some(Row {
        op: "tcp",
        block,
        batch: 1,
        threads: 1,
        regime: "hot",
        bytes: rtt_us.len() as u64 * block,
        ops: rtt_us.len() as u64,
        seconds,
        batch_us: rtt_us,
    }))
}

/// The child: answers every request on one connection until it closes,
/// each with the block size the request asks for.
fn serve(listen: &str, busy: bool) -> Result<()> {
    let listener = TcpListener::bind(listen).map_err(|e| io_err(listen, e))?;
    let addr = listener.local_addr().map_err(|e| io_err("listener", e))?;
    out!("listening {addr}");
    io::stdout().flush().map_err(|e| io_err("stdout", e))?;
    let (mut stream, _) = listener.accept().map_err(|e| io_err("accept", e))?;
    prepare(&stream, busy)?;
    let mut request = [0u8; REQUEST];
    let mut reply = Vec::new();
    loop {
        match read_full(&mut stream, &mut request) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(io_err("read request", e)),
        }
        let mut asked = [0u8; 8];
        asked.copy_from_slice(&request[..8]);
        let block = u64::from_le_bytes(asked);
        if !(1..=MAX_BLOCK).contains(&block) {
            return Err(fail(format!(
                "request for a {block}-byte block: out of range 1..={MAX_BLOCK}"
            )));
        }
        reply.resize(REPLY_HEADER + block as usize, 0x5a);
        write_full(&mut stream, &reply).map_err(|e| io_err("send reply", e))?;
    }
}

fn prepare(stream: &TcpStream, busy: bool) -> Result<()> {
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
