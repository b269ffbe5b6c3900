//! The memory the tool allocates: checked up front against what the
//! machine has available, and announced while the engine populates it.

use std::time::{Duration, Instant};

use crate::error::{fail, Result};
use crate::progress::Feedback;
use crate::size;

/// Bytes the kernel estimates can be allocated without swapping
/// (`MemAvailable` in /proc/meminfo); `None` where that is not known.
pub fn available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&info)
}

/// `MemAvailable` of a /proc/meminfo text, in bytes.
fn parse_meminfo(info: &str) -> Option<u64> {
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Fails when `need` bytes (what `what` asks for, e.g. `--size 100G`)
/// exceed the memory available, naming both sizes.
pub fn check(what: &str, need: u64) -> Result<()> {
    check_against(what, need, available())
}

fn check_against(what: &str, need: u64, available: Option<u64>) -> Result<()> {
    match available {
        Some(avail) if need > avail => Err(fail(format!(
            "{what} needs {} ({need} bytes) of memory, but only {} ({avail} bytes) is available \
             (MemAvailable in /proc/meminfo): choose a smaller size",
            size::approx(need),
            size::approx(avail)
        ))),
        _ => Ok(()),
    }
}

/// This process's resident bytes (/proc/self/statm), to watch population.
fn resident() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// Runs `alloc`, which allocates and populates `len` bytes, announcing it
/// on stderr ("allocating 4G...") and showing progress (growth of this
/// process's resident memory) while it takes more than a second. A signal
/// meanwhile ends the process at once (see `stop`).
pub fn populate<T>(feedback: &Feedback, len: u64, alloc: impl FnOnce() -> Result<T>) -> Result<T> {
    let before = resident().unwrap_or(0);
    let mut progress = feedback.bytes(&format!("allocating {}", size::approx(len)), len);
    let start = Instant::now();
    let result = std::thread::scope(|s| {
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let shown = &mut progress;
        let watcher = s.spawn(move || {
            // Ticks of the display, not synchronisation: the channel ends the loop.
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                done_rx.recv_timeout(Duration::from_millis(200))
            {
                let grown = resident().unwrap_or(before).saturating_sub(before);
                shown.set(grown.min(len), start.elapsed());
            }
        });
        let r = alloc();
        drop(done_tx);
        let _ = watcher.join();
        r
    });
    progress.finish(result.is_ok(), start.elapsed());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_the_check() {
        let info = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2097152 kB\n";
        assert_eq!(parse_meminfo(info), Some(2 << 30));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        let e = check_against("--size 100G", 100 << 30, Some(2 << 30)).unwrap_err();
        assert!(
            e.to_string().contains("--size 100G needs 100G") && e.to_string().contains("only 2G"),
            "{e}"
        );
        assert!(check_against("--size 1G", 1 << 30, Some(2 << 30)).is_ok());
        assert!(check_against("--size 1T", 1 << 40, None).is_ok());
    }
}
