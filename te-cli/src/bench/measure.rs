//! Measuring one `te bench` configuration: threads submitting batches and
//! timing each, until --duration or --total-bytes is reached or a signal
//! abandons the configuration.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use te_runtime::{Engine, ErrorCode, Op, Path, Request, SegmentId, TaskState};

use crate::bench::args::OpArg;
use crate::bench::plan::Config;
use crate::bench::verify::{self, Verifier};
use crate::error::{fail, Result};
use crate::progress::Sweep;
use crate::report::Row;
use crate::stop;

/// How long one wait for a batch lasts before a stop request is looked at.
const WAIT_SLICE: Duration = Duration::from_millis(100);
/// How long a batch may take before the run fails.
const BATCH_TIMEOUT: Duration = Duration::from_secs(120);

/// The shared state of a run.
pub struct Run<'a> {
    /// This process's engine.
    pub engine: &'a Engine,
    /// The targets: each one's segment and the address of its buffer. The
    /// blocks of a batch go to them in turn.
    pub targets: Vec<(SegmentId, u64)>,
    /// The path every batch is submitted on.
    pub path: Path,
    /// Address of this side's buffer.
    pub local: u64,
    /// One block reused per thread.
    pub hot: bool,
    /// Measured time per configuration.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// A byte budget per configuration instead of the duration.
    pub total_bytes: Option<u64>,
    /// With --verify: the target's shadow.
    pub verifier: Option<Verifier>,
}

impl Run<'_> {
    /// A request for `len` bytes at `offset` of both buffers, the
    /// `index`th block of its batch (which picks the target).
    pub fn request(&self, op: Op, offset: u64, len: u64, index: usize) -> Request {
        let (segment, remote) = self.targets[index % self.targets.len()];
        Request {
            op,
            local: self.local + offset,
            segment,
            remote: remote + offset,
            len,
        }
    }
}

/// What measuring a configuration came to.
pub enum Measured {
    /// It ran to the end.
    Row(Row),
    /// A signal abandoned it.
    Abandoned,
}

/// What one thread measured: bytes, operations, batch latencies (µs); `None` when abandoned.
type Counts = Option<(u64, u64, Vec<f64>)>;

/// Measures configuration `c`, ticking `sweep` while it runs.
pub fn measure(run: &Run<'_>, c: Config, sweep: &Sweep<'_>) -> Result<Measured> {
    let start = Instant::now();
    let mut guard = run
        .verifier
        .as_ref()
        .map(|v| v.shadow.lock().unwrap_or_else(|p| p.into_inner()));
    let mut shadows: Vec<Option<&mut [u8]>> = match guard.as_deref_mut() {
        Some(s) => s
            .chunks_mut(c.share as usize)
            .take(c.threads as usize)
            .map(Some)
            .collect(),
        None => (0..c.threads).map(|_| None).collect(),
    };
    let results: Vec<Result<Counts>> = std::thread::scope(|s| {
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let workers: Vec<_> = shadows
            .iter_mut()
            .enumerate()
            .map(|(t, shadow)| {
                let done = done_tx.clone();
                let shadow = shadow.take();
                s.spawn(move || {
                    let r = worker(run, c, t as u32, start, shadow);
                    let _ = done.send(());
                    r
                })
            })
            .collect();
        drop(done_tx);
        // Ticks of the progress display; the channel says when every thread is done.
        let mut finished = 0;
        while finished < c.threads {
            match done_rx.recv_timeout(Duration::from_millis(200)) {
                Ok(()) => finished += 1,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    sweep.tick(start.elapsed().saturating_sub(run.warmup))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(fail("a bench thread panicked"))))
            .collect()
    });
    let seconds = start.elapsed().saturating_sub(run.warmup).as_secs_f64();
    let (mut bytes, mut ops, mut batch_us) = (0, 0, Vec::new());
    for r in results {
        match r? {
            Some((b, o, mut lat)) => {
                bytes += b;
                ops += o;
                batch_us.append(&mut lat);
            }
            None => return Ok(Measured::Abandoned),
        }
    }
    batch_us.sort_by(f64::total_cmp);
    Ok(Measured::Row(Row {
        op: c.op.name(),
        block: c.block,
        batch: c.batch,
        threads: c.threads,
        regime: if run.hot { "hot" } else { "cold" },
        bytes,
        ops,
        seconds,
        batch_us,
    }))
}

/// One thread of a configuration, over its share of both buffers.
fn worker(run: &Run<'_>, c: Config, t: u32, start: Instant, mut shadow: Option<&mut [u8]>) -> Result<Counts> {
    let base = t as u64 * c.share;
    let slots = if run.hot { 1 } else { (c.share / c.block).max(1) };
    let measure_from = start + run.warmup;
    let end = measure_from + run.duration;
    let quota = run.total_bytes.map(|tb| tb.div_ceil(c.threads as u64));
    let (mut cursor, mut round) = (0u64, 0u64);
    let (mut bytes, mut ops, mut lat) = (0u64, 0u64, Vec::new());
    while Instant::now() < end && quota.is_none_or(|q| bytes < q) {
        if stop::requested().is_some() {
            return Ok(None);
        }
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
            verify::prepare_write(run, base, &offsets, c.block, round)?;
        }
        let reqs: Vec<Request> = offsets
            .iter()
            .enumerate()
            .map(|(i, &off)| run.request(op, base + off, c.block, i))
            .collect();
        let t0 = Instant::now();
        if !transfer(run, &reqs)? {
            return Ok(None);
        }
        if t0 >= measure_from {
            lat.push(t0.elapsed().as_secs_f64() * 1e6);
            bytes += c.block * c.batch as u64;
            ops += c.batch as u64;
        }
        if let Some(shadow) = shadow.as_deref_mut() {
            if !verify::check(run, op, &reqs, base, c.block, shadow)? {
                return Ok(None);
            }
        }
    }
    Ok(Some((bytes, ops, lat)))
}

/// One batch, submitted and waited for; any failed task fails the run.
/// Returns false when a signal asked for a stop meanwhile: the batch is
/// canceled and freed.
pub fn transfer(run: &Run<'_>, reqs: &[Request]) -> Result<bool> {
    let e = run.engine;
    let batch = e.allocate_batch(reqs.len() as u32)?;
    e.submit_via(batch, reqs, run.path)?;
    let started = Instant::now();
    let st = loop {
        match e.wait_batch(batch, WAIT_SLICE) {
            Ok(st) => break st,
            Err(s) if s.code() == ErrorCode::Timeout && started.elapsed() < BATCH_TIMEOUT => {
                if stop::requested().is_some() {
                    let _ = e.cancel_batch(batch);
                    let _ = e.free_batch(batch);
                    return Ok(false);
                }
            }
            Err(s) => {
                let _ = e.cancel_batch(batch);
                let _ = e.free_batch(batch);
                return Err(s.into());
            }
        }
    };
    let why = e.batch_error(batch);
    e.free_batch(batch)?;
    match st.state {
        TaskState::Completed => Ok(true),
        other => Err(fail(format!(
            "batch ended {other:?}: {} of {} tasks completed{}",
            st.completed,
            st.total,
            why.map(|w| format!(" ({w})")).unwrap_or_default()
        ))),
    }
}
