//! The configurations of a `te bench` run, and those that cannot run.

use crate::bench::args::OpArg;
use crate::report::Skipped;
use crate::size;

/// One configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The operation.
    pub op: OpArg,
    /// Bytes per block.
    pub block: u64,
    /// Blocks per batch (capped to fit a thread's share).
    pub batch: u32,
    /// Threads submitting at once.
    pub threads: u32,
    /// Bytes of the buffer each thread owns (on both sides).
    pub share: u64,
}

impl Config {
    /// `read 64K batch 128 threads 1`.
    pub fn label(&self) -> String {
        format!(
            "{} {} batch {} threads {}",
            self.op.name(),
            size::show(self.block),
            self.batch,
            self.threads
        )
    }
}

/// Every combination of ops, threads, batches and blocks over a `buffer`
/// of bytes, in that order of nesting; blocks larger than a thread's share
/// of the buffer are skipped, with the reason.
pub fn plan(
    ops: &[OpArg],
    threads: &[u32],
    batches: &[u32],
    blocks: &[u64],
    buffer: u64,
) -> (Vec<Config>, Vec<Skipped>) {
    let (mut run, mut skipped) = (Vec::new(), Vec::new());
    for &op in ops {
        for &t in threads {
            let share = buffer / t as u64;
            for &batch in batches {
                for &block in blocks {
                    if block > share {
                        let reason = if t == 1 {
                            format!("larger than the {} buffer (--buffer)", size::show(buffer))
                        } else {
                            format!(
                                "larger than each of {t} threads' {} share of the {} buffer (--buffer)",
                                size::approx(share),
                                size::show(buffer)
                            )
                        };
                        let s = Skipped {
                            op: op.name(),
                            block,
                            threads: t,
                            reason,
                        };
                        // A block skipped for one batch size is skipped for all: list it once.
                        if !skipped
                            .iter()
                            .any(|k: &Skipped| k.op == s.op && k.block == block && k.threads == t)
                        {
                            skipped.push(s);
                        }
                        continue;
                    }
                    let cap = u32::try_from(share / block).unwrap_or(u32::MAX).max(1);
                    let c = Config {
                        op,
                        block,
                        batch: batch.min(cap),
                        threads: t,
                        share,
                    };
                    // Two batch sizes capped to the same one are one configuration.
                    if !run.contains(&c) {
                        run.push(c);
                    }
                }
            }
        }
    }
    (run, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_beyond_a_share_are_skipped_once_and_batches_capped() {
        let (run, skipped) = plan(
            &[OpArg::Read, OpArg::Write],
            &[1],
            &[1, 128],
            &[4096, 1 << 30],
            512 << 20,
        );
        assert_eq!(run.len(), 4);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[0].reason.contains("512M buffer"), "{skipped:?}");
        let (run, skipped) = plan(&[OpArg::Read], &[1, 4], &[128], &[16 << 20], 64 << 20);
        assert_eq!(run[0].batch, 4);
        assert_eq!((run[1].threads, run[1].batch), (4, 1));
        assert!(skipped.is_empty());
        let (run, skipped) = plan(&[OpArg::Read], &[8], &[128], &[16 << 20], 64 << 20);
        assert!(run.is_empty());
        assert!(skipped[0].reason.contains("8 threads' 8M share"), "{skipped:?}");
    }
}
