//! Results of a run: each configuration's row as a table line, a CSV line
//! or JSON, the configurations skipped, and the JSON document around them.

use serde_json::{json, Value};

use crate::size;
use crate::stop::Interrupted;

/// What one configuration measured.
#[derive(Clone, Debug)]
pub struct Row {
    /// `read`, `write`, `mix`, `copy` (memcpy) or `tcp` (ping-pong).
    pub op: &'static str,
    /// Bytes per block (one operation).
    pub block: u64,
    /// Operations per timed unit: a te batch, a group of copies, one round trip.
    pub batch: u32,
    /// Threads submitting at once.
    pub threads: u32,
    /// "cold" (cycling through a large buffer) or "hot" (one block reused).
    pub regime: &'static str,
    /// Bytes moved.
    pub bytes: u64,
    /// Operations completed.
    pub ops: u64,
    /// Seconds measured (after any warm-up).
    pub seconds: f64,
    /// Latencies of each timed unit (a whole batch) in microseconds, sorted.
    pub batch_us: Vec<f64>,
}

impl Row {
    /// GB/s, 1e9 bytes per second.
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e9
    }

    /// Operations per second.
    pub fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.seconds
    }

    /// The q-quantile of the batch latencies (nearest rank; 0 when none).
    pub fn batch_pct(&self, q: f64) -> f64 {
        if self.batch_us.is_empty() {
            return 0.0;
        }
        let i = ((self.batch_us.len() - 1) as f64 * q).round() as usize;
        self.batch_us[i.min(self.batch_us.len() - 1)]
    }

    /// The mean batch latency (0 when none).
    pub fn batch_avg(&self) -> f64 {
        if self.batch_us.is_empty() {
            return 0.0;
        }
        self.batch_us.iter().sum::<f64>() / self.batch_us.len() as f64
    }

    /// Latency per operation, the batch's amortized over its operations.
    pub fn op_avg(&self) -> f64 {
        self.batch_avg() / self.batch as f64
    }
}

/// A configuration that was not run, and why.
#[derive(Clone, Debug)]
pub struct Skipped {
    /// The operation.
    pub op: &'static str,
    /// The block size asked for.
    pub block: u64,
    /// Threads of the configuration.
    pub threads: u32,
    /// Why, naming the limit.
    pub reason: String,
}

/// The table's column heads; latencies are per batch (the timed unit)
/// except `op avg`, the batch average divided by the operations in it.
pub const HEADER: &str = "op     block  batch thr regime      GB/s       ops/s  time s  \
     batch avg us  batch p50 us  batch p99 us  batch p99.9 us  op avg us";

/// What the latency columns mean, printed under the table.
pub const LATENCY_NOTE: &str = "latency: per batch, from submission until its last operation \
     completed (nearest-rank percentiles); op avg = batch avg / operations per batch (amortized)";

/// A table line.
pub fn line(r: &Row) -> String {
    format!(
        "{:<5} {:>6} {:>6} {:>3} {:<6} {:>9.3} {:>11.0} {:>7.2} {:>13.1} {:>13.1} {:>13.1} {:>15.1} {:>10.2}",
        r.op,
        size::show(r.block),
        r.batch,
        r.threads,
        r.regime,
        r.gbps(),
        r.ops_per_s(),
        r.seconds,
        r.batch_avg(),
        r.batch_pct(0.5),
        r.batch_pct(0.99),
        r.batch_pct(0.999),
        r.op_avg(),
    )
}

/// The CSV header (block size in bytes, latencies in microseconds).
pub const CSV_HEADER: &str = "op,block_bytes,batch,threads,regime,bytes,ops,seconds,gb_per_s,ops_per_s,\
     batch_avg_us,batch_p50_us,batch_p99_us,batch_p999_us,op_avg_us";

/// A CSV line.
pub fn csv(r: &Row) -> String {
    format!(
        "{},{},{},{},{},{},{},{:.6},{:.6},{:.1},{:.3},{:.3},{:.3},{:.3},{:.4}",
        r.op,
        r.block,
        r.batch,
        r.threads,
        r.regime,
        r.bytes,
        r.ops,
        r.seconds,
        r.gbps(),
        r.ops_per_s(),
        r.batch_avg(),
        r.batch_pct(0.5),
        r.batch_pct(0.99),
        r.batch_pct(0.999),
        r.op_avg()
    )
}

/// One row as JSON.
pub fn row_json(r: &Row) -> Value {
    json!({
        "op": r.op,
        "block_bytes": r.block,
        "batch": r.batch,
        "threads": r.threads,
        "regime": r.regime,
        "bytes": r.bytes,
        "ops": r.ops,
        "seconds": r.seconds,
        "gb_per_s": r.gbps(),
        "ops_per_s": r.ops_per_s(),
        "batch_latency_us": {
            "avg": r.batch_avg(),
            "p50": r.batch_pct(0.5),
            "p99": r.batch_pct(0.99),
            "p999": r.batch_pct(0.999),
            "samples": r.batch_us.len(),
        },
        // Only the mean per operation: a batch's percentile divided by its
        // size would be an average dressed as a percentile.
        "op_latency_us": {
            "avg": r.op_avg(),
            "amortized_over_batch": true,
        },
    })
}

/// Everything a run produced, for the JSON document.
pub struct Document<'a> {
    /// `te bench`, `te memcpy`, `te tcp-pingpong`.
    pub tool: &'static str,
    /// The target (segment name, child address, or `memcpy`); empty when
    /// none was started (`null` in the JSON).
    pub target: &'a str,
    /// The path the bytes took: `tcp`/`shm` for te, `raw-tcp` or `memory` for the yardsticks.
    pub path: &'a str,
    /// The effective settings.
    pub settings: Value,
    /// The configurations measured.
    pub rows: &'a [Row],
    /// The configurations not run.
    pub skipped: &'a [Skipped],
    /// The configuration a signal abandoned, if any.
    pub abandoned: Option<String>,
    /// The signal that stopped the run, if any.
    pub stopped: Option<Interrupted>,
}

/// The run as one JSON document: the te version and commit, when, the
/// settings, the results, the skipped configurations and how the run ended.
pub fn json(d: &Document<'_>) -> Value {
    json!({
        "tool": d.tool,
        "te_version": env!("CARGO_PKG_VERSION"),
        "te_commit": crate::meta::COMMIT,
        "timestamp": crate::meta::utc_now(),
        "target": (!d.target.is_empty()).then_some(d.target),
        "path": d.path,
        "settings": d.settings,
        "results": d.rows.iter().map(row_json).collect::<Vec<_>>(),
        "skipped": d.skipped.iter().map(|s| json!({
            "op": s.op, "block_bytes": s.block, "threads": s.threads, "reason": s.reason,
        })).collect::<Vec<_>>(),
        "interrupted": d.stopped.map(|i| i.name()),
        "abandoned": d.abandoned,
    })
}

/// The skipped configurations as lines for stderr, each reason once.
pub fn skipped_lines(skipped: &[Skipped]) -> Vec<String> {
    let mut reasons: Vec<(&str, Vec<String>)> = Vec::new();
    for s in skipped {
        let what = format!("{} {}", s.op, size::show(s.block));
        match reasons.iter_mut().find(|(r, _)| *r == s.reason) {
            Some((_, list)) => list.push(what),
            None => reasons.push((&s.reason, vec![what])),
        }
    }
    reasons
        .into_iter()
        .map(|(r, list)| format!("skipped {}: {r}", list.join(", ")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(lat: Vec<f64>) -> Row {
        Row {
            op: "read",
            block: 4096,
            batch: 4,
            threads: 1,
            regime: "cold",
            bytes: 4096 * 4 * lat.len() as u64,
            ops: 4 * lat.len() as u64,
            seconds: 1.0,
            batch_us: lat,
        }
    }

    #[test]
    fn averages_and_percentiles_are_of_the_samples() {
        let r = row((1..=100).map(f64::from).collect());
        assert_eq!(r.batch_avg(), 50.5);
        assert_eq!(r.batch_pct(0.5), 51.0);
        assert_eq!(r.batch_pct(0.99), 99.0);
        assert_eq!(r.op_avg(), 50.5 / 4.0);
        let empty = row(vec![]);
        assert_eq!((empty.batch_avg(), empty.batch_pct(0.5)), (0.0, 0.0));
        assert_eq!(line(&r).split_whitespace().count(), 13);
        assert_eq!(csv(&r).split(',').count(), CSV_HEADER.split(',').count());
    }

    #[test]
    fn skipped_configurations_are_grouped_by_reason() {
        let s = |op, block, reason: &str| Skipped {
            op,
            block,
            threads: 1,
            reason: reason.into(),
        };
        let lines = skipped_lines(&[
            s("read", 1 << 30, "larger than the 512M buffer"),
            s("write", 1 << 30, "larger than the 512M buffer"),
        ]);
        assert_eq!(lines, ["skipped read 1G, write 1G: larger than the 512M buffer"]);
    }
}
