//! Large same-host copies on two cores: the event loop copies one half of
//! a mapped copy while a helper thread copies the other.
//!
//! One copy of a few hundred KiB takes tens of microseconds, less than
//! waking a sleeping thread, so the helper spins for a while after each
//! job ([`SPIN`]) and only then parks. A copy that finds it parked is done
//! by the caller alone and wakes the helper for the copies that follow, so
//! a stream of copies runs on both cores and an idle engine burns nothing.
//! A half the helper has not begun by the time the caller finishes its own
//! is taken back by the caller (the helper may be descheduled), so a copy
//! never waits for a thread that does not run.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Copies at least this long are split between two threads; shorter ones
/// cost more to hand over than they gain.
pub(crate) const SPLIT_MIN: usize = 256 << 10;

/// How long the helper spins for the next job before it parks.
const SPIN: Duration = Duration::from_micros(200);

/// The job slot shared with the helper.
struct Slot {
    /// Jobs posted so far; job `posted` is open while `claimed < posted`.
    posted: AtomicU64,
    /// The last job someone (helper or poster) took on; taken by moving it
    /// from `job - 1` to `job`, so exactly one of the two copies it.
    claimed: AtomicU64,
    /// The last job finished.
    done: AtomicU64,
    dst: AtomicUsize,
    src: AtomicUsize,
    len: AtomicUsize,
    /// The helper is spinning (it will see a posted job without a wake-up).
    awake: AtomicBool,
    stop: AtomicBool,
    /// Copies split so far (for tests).
    #[cfg(test)]
    split: AtomicU64,
}

/// The helper thread and its job slot.
pub(crate) struct Splitter {
    slot: Arc<Slot>,
    helper: Option<JoinHandle<()>>,
}

impl Splitter {
    /// Starts the helper thread; `None` with fewer than two CPUs to run on
    /// (a split would only add hand-over costs) or when the OS refuses a
    /// thread: copies then run on the caller's thread alone.
    pub fn start() -> Option<Splitter> {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return None;
        }
        let slot = Arc::new(Slot {
            posted: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
            done: AtomicU64::new(0),
            dst: AtomicUsize::new(0),
            src: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            awake: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            #[cfg(test)]
            split: AtomicU64::new(0),
        });
        let s = slot.clone();
        let helper = std::thread::Builder::new()
            .name("te-copy".into())
            .spawn(move || help(&s))
            .ok()?;
        Some(Splitter {
            slot,
            helper: Some(helper),
        })
    }

    /// Copies `len` bytes from `src` to `dst`, on two threads when the copy
    /// is long and the helper is awake.
    ///
    /// # Safety
    /// `src` must be valid for reads and `dst` for writes of `len` bytes
    /// until this returns, and the ranges must not overlap. No Rust
    /// reference to either may be alive meanwhile (other processes may
    /// change the bytes of shared memory: a torn copy, not a fault). Calls
    /// on one splitter must not overlap (the engine's lock orders them):
    /// it has one job slot.
    pub unsafe fn copy(&self, dst: *mut u8, src: *const u8, len: usize) {
        let slot = &*self.slot;
        let helper = self.helper.as_ref();
        if len < SPLIT_MIN || helper.is_none() || !slot.awake.load(Ordering::SeqCst) {
            if let Some(h) = helper.filter(|_| len >= SPLIT_MIN) {
                h.thread().unpark();
            }
            // SAFETY: the caller's contract.
            unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
            return;
        }
        #[cfg(test)]
        slot.split.fetch_add(1, Ordering::Relaxed);
        let half = len / 2;
        slot.dst.store(dst as usize + half, Ordering::Relaxed);
        slot.src.store(src as usize + half, Ordering::Relaxed);
        slot.len.store(len - half, Ordering::Relaxed);
        let job = slot.posted.fetch_add(1, Ordering::SeqCst) + 1;
        // The helper may have decided to park just as we posted: it checks
        // `posted` after clearing `awake`, and we check `awake` after
        // posting, so one of us sees the other (both SeqCst).
        if !slot.awake.load(Ordering::SeqCst) {
            if let Some(h) = helper {
                h.thread().unpark();
            }
        }
        // SAFETY: the caller's contract; the helper copies the other half.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, half) };
        if slot
            .claimed
            .compare_exchange(job - 1, job, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // The helper has not begun: the other half is ours too.
            // SAFETY: the caller's contract.
            unsafe { std::ptr::copy_nonoverlapping(src.add(half), dst.add(half), len - half) };
            slot.done.store(job, Ordering::Release);
            return;
        }
        while slot.done.load(Ordering::Acquire) < job {
            std::hint::spin_loop();
        }
    }
}

/// The helper's loop: run posted jobs; spin for [`SPIN`] after the last
/// one, then park until woken.
fn help(slot: &Slot) {
    while !slot.stop.load(Ordering::Acquire) {
        slot.awake.store(true, Ordering::SeqCst);
        let mut idle_since = Instant::now();
        let mut spins = 0u32;
        loop {
            let posted = slot.posted.load(Ordering::SeqCst);
            let open = slot.claimed.load(Ordering::Acquire) < posted;
            if open
                && slot
                    .claimed
                    .compare_exchange(posted - 1, posted, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                let dst = slot.dst.load(Ordering::Relaxed) as *mut u8;
                let src = slot.src.load(Ordering::Relaxed) as *const u8;
                let len = slot.len.load(Ordering::Relaxed);
                // SAFETY: the poster guarantees both ranges for the life of
                // the job; having claimed the job, it waits for `done`
                // before it returns.
                unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
                slot.done.store(posted, Ordering::Release);
                idle_since = Instant::now();
                continue;
            }
            if slot.stop.load(Ordering::Acquire) {
                return;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) && idle_since.elapsed() >= SPIN {
                break;
            }
            std::hint::spin_loop();
        }
        slot.awake.store(false, Ordering::SeqCst);
        if slot.posted.load(Ordering::SeqCst) > slot.claimed.load(Ordering::Acquire) {
            continue;
        }
        std::thread::park();
    }
}

impl Drop for Splitter {
    fn drop(&mut self) {
        self.slot.stop.store(true, Ordering::Release);
        if let Some(h) = self.helper.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A splitter, or `None` (said on stderr) on a machine with one CPU,
    /// where the engine runs without one.
    fn started() -> Option<Splitter> {
        let s = Splitter::start();
        if s.is_none() {
            eprintln!("skipped: fewer than two CPUs, no splitter");
        }
        s
    }

    #[test]
    fn long_and_short_copies_move_every_byte_whether_the_helper_is_awake_or_not() {
        let Some(s) = started() else { return };
        for len in [1, 4095, SPLIT_MIN - 1, SPLIT_MIN, SPLIT_MIN + 1, 3 << 20] {
            let src: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            // Many rounds: the first finds the helper parked, later ones
            // split while it spins.
            for round in 0..8u8 {
                let mut dst = vec![round; len];
                // SAFETY: two distinct vectors of `len` bytes.
                unsafe { s.copy(dst.as_mut_ptr(), src.as_ptr(), len) };
                assert!(dst == src, "len {len} round {round}");
            }
        }
    }

    #[test]
    fn a_stream_of_long_copies_wakes_the_helper_and_splits() {
        let Some(s) = started() else { return };
        let src = vec![3u8; 1 << 20];
        let mut dst = vec![0u8; 1 << 20];
        let deadline = Instant::now() + Duration::from_secs(60);
        // The first copy finds the helper parked and wakes it; once it is
        // scheduled, copies split.
        while s.slot.split.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "no copy was ever split");
            dst.fill(0);
            // SAFETY: two distinct vectors.
            unsafe { s.copy(dst.as_mut_ptr(), src.as_ptr(), src.len()) };
            assert!(dst == src);
        }
    }

    #[test]
    fn a_splitter_stops_when_dropped_parked_or_spinning() {
        let Some(parked) = started() else { return };
        drop(parked);
        let Some(busy) = started() else { return };
        let src = vec![1u8; SPLIT_MIN];
        let mut dst = vec![0u8; SPLIT_MIN];
        // SAFETY: two distinct vectors.
        unsafe { busy.copy(dst.as_mut_ptr(), src.as_ptr(), SPLIT_MIN) };
        drop(busy);
        assert_eq!(dst, src);
    }
}
