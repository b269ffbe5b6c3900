//! Value parsers shared by the commands' flags; each error names the bad value.

use te_runtime::{EngineConfig, Path, Status};

/// Where segment names are looked up (and `te serve --name` published).
#[derive(clap::Args, Debug, Clone)]
pub struct DirectoryArgs {
    /// Directory of segment names: etcd://host:port[,host:port...] or
    /// redis://host:port[/db]; without it names are host:port (peer to peer).
    #[arg(long)]
    pub directory: Option<String>,
    /// Namespace of this cluster's keys in the directory.
    #[arg(long, default_value = "te", requires = "directory")]
    pub directory_prefix: String,
}

impl DirectoryArgs {
    /// `cfg` with this directory.
    pub fn apply(&self, cfg: EngineConfig) -> EngineConfig {
        EngineConfig {
            directory: self.directory.clone(),
            directory_prefix: self.directory_prefix.clone(),
            ..cfg
        }
    }
}

/// Parses `tcp`, `shm` or `auto` (any case).
pub fn parse_path(s: &str) -> Result<Path, String> {
    s.trim()
        .to_ascii_lowercase()
        .parse()
        .map_err(|_: Status| format!("invalid path {s:?}: expected tcp, shm, rdma or auto"))
}

/// Parses a positive number of seconds (at most a day).
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "invalid duration {s:?}: expected seconds in (0, 86400], e.g. 2 or 0.5"
        )),
    }
}

/// Parses a number of seconds that may be zero (at most a day).
pub fn parse_seconds_or_zero(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "invalid duration {s:?}: expected seconds in [0, 86400], e.g. 0 or 0.5"
        )),
    }
}

/// A memory location flag: cpu, sim:N or npu:N.
pub fn parse_location(s: &str) -> std::result::Result<te_runtime::Location, String> {
    s.parse::<te_runtime::Location>()
        .map_err(|e| e.message().to_string())
}

/// One item of a list flag: a value, or `START..MAX`, every value from
/// START doubling while it is at most MAX (as nixlbench sweeps between its
/// `--start_*` and `--max_*` flags). Each end is parsed by `one`.
pub fn doubling(s: &str, one: fn(&str) -> Result<u64, String>) -> Result<Vec<u64>, String> {
    let Some((start, max)) = s.split_once("..") else {
        return Ok(vec![one(s)?]);
    };
    let (start, max) = (one(start)?, one(max)?);
    if start > max {
        return Err(format!("invalid range {s:?}: the start is larger than the end"));
    }
    Ok(std::iter::successors(Some(start), |v| v.checked_mul(2).filter(|n| *n <= max)).collect())
}

/// A batch size of `te bench --batch`: 1..=65536.
pub fn parse_batch(s: &str) -> Result<u64, String> {
    let v: i64 = s
        .trim()
        .parse()
        .map_err(|_| format!("invalid batch size {s:?}: expected a whole number of blocks"))?;
    if !(1..=65536).contains(&v) {
        return Err(format!("{v} is not in 1..=65536"));
    }
    Ok(v as u64)
}

/// One item of `--batch`: a batch size or `START..MAX`, doubling.
pub fn parse_batches(s: &str) -> Result<Vec<u64>, String> {
    doubling(s, parse_batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_seconds() {
        assert_eq!(parse_path("TCP"), Ok(Path::Tcp));
        assert_eq!(parse_path("shm"), Ok(Path::Shm));
        assert_eq!(parse_path("rdma"), Ok(Path::Rdma));
        assert!(parse_path("ib").unwrap_err().contains("rdma"));
        assert_eq!(parse_seconds("0.5"), Ok(0.5));
        assert!(parse_seconds("-1").unwrap_err().contains("\"-1\""));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("nan").is_err());
        assert_eq!(parse_seconds_or_zero("0"), Ok(0.0));
        assert!(parse_seconds_or_zero("-0.5").is_err());
    }
}
