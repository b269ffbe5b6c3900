//! The cost of finding a segment by name in a directory: a lookup in the
//! store (what opening a name that is not open costs beyond the connect)
//! and a cached one (opening a name whose link is up: no store access).

use std::time::{Duration, Instant};

use te_runtime::directory::Directory;
use te_runtime::Engine;

use crate::error::Result;

/// Lookups timed of each kind.
const ROUNDS: usize = 200;

/// The median of `ROUNDS` runs of `f`.
fn median(mut f: impl FnMut() -> Result<()>) -> Result<Duration> {
    let mut t = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed());
    }
    t.sort();
    Ok(t[ROUNDS / 2])
}

/// `directory lookup of NAME in URL: store 412 µs, cached 2.1 µs (medians of 200)`.
pub fn report(engine: &Engine, url: &str, prefix: &str, name: &str) -> Result<String> {
    let dir = Directory::open(url, prefix, Duration::from_secs(5))?;
    let store = median(|| {
        dir.lookup(name)?;
        Ok(())
    })?;
    let cached = median(|| {
        engine.open_segment(name)?;
        Ok(())
    })?;
    Ok(format!(
        "directory lookup of {name} in {url}: store {store:.1?}, cached {cached:.1?} (medians of {ROUNDS})"
    ))
}
