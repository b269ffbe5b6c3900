//! Results of one benchmark configuration, as a table row or JSON.

use crate::size;

/// What one configuration measured.
#[derive(Clone, Debug)]
pub struct Row {
    pub op: &'static str,
    pub block: u64,
    pub batch: u32,
    pub threads: u32,
    /// "cold" (cycling through a large buffer) or "hot" (one block reused).
    pub regime: &'static str,
    pub bytes: u64,
    pub ops: u64,
    pub seconds: f64,
    /// Batch latencies in microseconds, sorted.
    pub batch_us: Vec<f64>,
}

impl Row {
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e9
    }

    pub fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.seconds
    }

    /// The q-quantile of the batch latencies (0 when none).
    pub fn batch_pct(&self, q: f64) -> f64 {
        if self.batch_us.is_empty() {
            return 0.0;
        }
        let i = ((self.batch_us.len() - 1) as f64 * q).round() as usize;
        self.batch_us[i.min(self.batch_us.len() - 1)]
    }

    /// Latency per operation at the q-quantile, amortized over the batch.
    pub fn op_pct(&self, q: f64) -> f64 {
        self.batch_pct(q) / self.batch as f64
    }
}

pub const HEADER: &str =
    "op     block  batch thr regime      GB/s       ops/s  op p50 us  batch p50 us  p99 us  p99.9 us";

pub fn line(r: &Row) -> String {
    format!(
        "{:<5} {:>6} {:>6} {:>3} {:<6} {:>9.3} {:>11.0} {:>10.2} {:>13.1} {:>7.1} {:>9.1}",
        r.op,
        size::show(r.block),
        r.batch,
        r.threads,
        r.regime,
        r.gbps(),
        r.ops_per_s(),
        r.op_pct(0.5),
        r.batch_pct(0.5),
        r.batch_pct(0.99),
        r.batch_pct(0.999),
    )
}

/// The rows as JSON, with the target and the path the bytes took
/// (`tcp`/`shm` for te, `raw-tcp` or `memory` for the yardsticks).
pub fn json(rows: &[Row], target: &str, path: &str) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
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
                "op_latency_us": {"p50": r.op_pct(0.5), "p99": r.op_pct(0.99), "p999": r.op_pct(0.999), "amortized_over_batch": true},
                "batch_latency_us": {"p50": r.batch_pct(0.5), "p99": r.batch_pct(0.99), "p999": r.batch_pct(0.999)},
            })
        })
        .collect();
    serde_json::json!({ "target": target, "path": path, "results": rows })
}
