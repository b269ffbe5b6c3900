//! `te bench --verify`: what the target's buffer holds, kept in a shadow
//! copy across configurations (writes change it), and the checks of every
//! block moved, through the engine's `read_memory`/`write_memory`.

use std::sync::Mutex;

use te_runtime::{Op, Request};

use crate::bench::measure::{transfer, Run};
use crate::error::{fail, Result};
use crate::pattern::{self, TARGET_SEED};

/// What reads are compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The target holds `te serve --fill 1`'s pattern (the embedded target does).
    Pattern,
    /// The target's content was unknown: a snapshot read at the start.
    Snapshot,
}

impl Source {
    /// For the configuration echo.
    pub fn describe(self) -> &'static str {
        match self {
            Source::Pattern => {
                "reads compared with the target's fill pattern (te serve --fill 1), writes read back"
            }
            Source::Snapshot => {
                "the target does not hold te serve --fill 1's pattern: reads compared with a snapshot \
                 read at the start (this catches changed content, not a read wrong the same way twice); \
                 writes read back"
            }
        }
    }
}

/// The shadow of the target's buffer.
pub struct Verifier {
    /// What the target's buffer holds now.
    pub shadow: Mutex<Vec<u8>>,
    /// Where the shadow's first content came from.
    pub source: Source,
}

/// Bytes read per transfer of the snapshot.
const SNAPSHOT_CHUNK: u64 = 16 << 20;

impl Verifier {
    /// The shadow of an embedded target, which holds the pattern.
    pub fn of_pattern(len: u64) -> Result<Verifier> {
        let mut shadow = vec_of(len)?;
        pattern::fill(&mut shadow, TARGET_SEED, 0);
        Ok(Verifier {
            shadow: Mutex::new(shadow),
            source: Source::Pattern,
        })
    }

    /// The shadow of an external target: its first `len` bytes read now.
    pub fn of_target(run: &Run<'_>, len: u64) -> Result<Verifier> {
        let mut shadow = vec_of(len)?;
        let mut off = 0;
        while off < len {
            let n = (len - off).min(SNAPSHOT_CHUNK);
            let req = run.request(Op::Read, off, n, 0);
            if !transfer(run, &[req])? {
                return Err(fail(
                    "interrupted while reading the target's content for --verify",
                ));
            }
            run.engine
                .read_memory(run.local + off, &mut shadow[off as usize..(off + n) as usize])?;
            off += n;
        }
        let source = if pattern::matches(&shadow, TARGET_SEED, 0) {
            Source::Pattern
        } else {
            Source::Snapshot
        };
        Ok(Verifier {
            shadow: Mutex::new(shadow),
            source,
        })
    }
}

fn vec_of(len: u64) -> Result<Vec<u8>> {
    let n = usize::try_from(len).map_err(|_| fail(format!("--verify: a {len}-byte shadow does not fit")))?;
    Ok(vec![0; n])
}

/// Before a write: fills the blocks at `offsets` (of the thread's share at
/// `base`) with a pattern of their own for this `round`.
pub fn prepare_write(run: &Run<'_>, base: u64, offsets: &[u64], block: u64, round: u64) -> Result<()> {
    let mut buf = vec![0u8; block as usize];
    for (i, &off) in offsets.iter().enumerate() {
        pattern::fill(&mut buf, round * 1_000_003 + i as u64, base + off);
        run.engine.write_memory(run.local + base + off, &buf)?;
    }
    Ok(())
}

/// After a batch: reads are compared with the shadow of the target; writes
/// are read back (into zeroed blocks, so that a read-back that moves
/// nothing is caught) and compared with what was sent, then recorded in the
/// shadow. `shadow` is the thread's share. Returns false when a signal
/// abandoned the read-back.
pub fn check(
    run: &Run<'_>,
    op: Op,
    reqs: &[Request],
    base: u64,
    block: u64,
    shadow: &mut [u8],
) -> Result<bool> {
    let mut got = vec![0u8; block as usize];
    let offset = |r: &Request| r.local - run.local - base;
    if op == Op::Write {
        let zero = vec![0u8; block as usize];
        let mut sent = Vec::with_capacity(reqs.len());
        for r in reqs {
            run.engine.read_memory(r.local, &mut got)?;
            sent.push(got.clone());
            run.engine.write_memory(r.local, &zero)?;
        }
        let back: Vec<Request> = reqs.iter().map(|r| Request { op: Op::Read, ..*r }).collect();
        if !transfer(run, &back)? {
            return Ok(false);
        }
        for (r, s) in reqs.iter().zip(sent) {
            let off = offset(r) as usize;
            shadow[off..off + block as usize].copy_from_slice(&s);
        }
    }
    for r in reqs {
        let off = offset(r) as usize;
        run.engine.read_memory(r.local, &mut got)?;
        let want = &shadow[off..off + block as usize];
        if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
            return Err(fail(format!(
                "verify: byte {i} of the {} block at offset {:#x} of the target's buffer is {:#04x}, expected {:#04x}",
                if op == Op::Write { "written" } else { "read" },
                base + off as u64,
                got[i],
                want[i]
            )));
        }
    }
    Ok(true)
}
