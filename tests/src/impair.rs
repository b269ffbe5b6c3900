//! What `te-netem` does to a frame, without the IO: a port's impairment
//! (delay, jitter, loss, reordering, a bandwidth cap, a partition) decides,
//! from the time a frame arrives, when it leaves or that it is dropped.
//!
//! The semantics follow Linux's netem where they overlap: jitter is spread
//! uniformly around the delay (which reorders frames, as there), a frame
//! picked for reordering skips the delay, and a bandwidth cap queues frames
//! behind each other, dropping any that would wait longer than
//! [`MAX_QUEUE_DELAY`].

use std::time::Duration;

use te_testkit::rng::SimRng;

/// The longest a frame waits behind others of a capped port before it is
/// dropped instead (a tail drop, as a router's queue would).
pub const MAX_QUEUE_DELAY: Duration = Duration::from_secs(1);

/// What a port does to the frames that pass it. The default passes every
/// frame at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Impairment {
    /// Added to every frame (but reordered ones).
    pub delay: Duration,
    /// The delay varies uniformly by up to this much either way.
    pub jitter: Duration,
    /// Frames dropped, in parts per million.
    pub loss_ppm: u64,
    /// Frames sent at once, before delayed ones, in parts per million.
    pub reorder_ppm: u64,
    /// Bandwidth cap in bits per second; 0 is no cap.
    pub rate_bps: u64,
    /// A partition: every frame is dropped.
    pub down: bool,
}

impl Impairment {
    /// Parses `key=value` words: `delay_ms`, `jitter_ms`, `loss_pct`,
    /// `reorder_pct` (fractions allowed), `rate_kbit`, `down` (0 or 1).
    /// Keys not given stay at their default; the error names a bad word.
    pub fn parse<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<Impairment, String> {
        let mut imp = Impairment::default();
        for w in words {
            let (key, value) = w
                .split_once('=')
                .ok_or_else(|| format!("expected key=value, got {w:?}"))?;
            let num = |what: &str| -> Result<f64, String> {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| format!("{key}: {value:?} is not a non-negative {what}"))
            };
            match key {
                "delay_ms" => imp.delay = Duration::from_secs_f64(num("number")? / 1e3),
                "jitter_ms" => imp.jitter = Duration::from_secs_f64(num("number")? / 1e3),
                "loss_pct" => imp.loss_ppm = pct_to_ppm(key, num("percentage")?)?,
                "reorder_pct" => imp.reorder_ppm = pct_to_ppm(key, num("percentage")?)?,
                "rate_kbit" => imp.rate_bps = (num("number")? * 1e3) as u64,
                "down" => {
                    imp.down = match value {
                        "0" => false,
                        "1" => true,
                        _ => return Err(format!("down: {value:?} is not 0 or 1")),
                    }
                }
                _ => return Err(format!("unknown impairment {key:?}")),
            }
        }
        Ok(imp)
    }
}

fn pct_to_ppm(key: &str, pct: f64) -> Result<u64, String> {
    if pct > 100.0 {
        return Err(format!("{key}: {pct} is above 100"));
    }
    Ok((pct * 1e4).round() as u64)
}

/// One direction of a port: its impairment and the queue of its bandwidth cap.
#[derive(Clone, Debug, Default)]
pub struct Stage {
    /// What the stage does.
    pub impairment: Impairment,
    /// When the cap's queue is free again.
    free_at: Duration,
}

impl Stage {
    /// When a frame of `len` bytes that reaches the stage at `now` (both
    /// times since the switch started) leaves it, or `None` when the frame
    /// is dropped.
    pub fn pass(&mut self, now: Duration, len: usize, rng: &mut SimRng) -> Option<Duration> {
        let imp = self.impairment;
        if imp.down || rng.chance(imp.loss_ppm, 1_000_000) {
            return None;
        }
        let mut leave = now;
        if imp.rate_bps > 0 {
            let start = now.max(self.free_at);
            if start - now > MAX_QUEUE_DELAY {
                return None;
            }
            let nanos = (len as u128 * 8 * 1_000_000_000) / u128::from(imp.rate_bps);
            leave = start + Duration::from_nanos(nanos.min(u64::MAX as u128) as u64);
            self.free_at = leave;
        }
        if rng.chance(imp.reorder_ppm, 1_000_000) {
            return Some(leave);
        }
        let jitter = imp.jitter.as_nanos().min(u64::MAX as u128 / 2) as u64;
        let spread = rng.range(0, 2 * jitter);
        let delay = (imp.delay.as_nanos() as u64 + spread).saturating_sub(jitter);
        Some(leave + Duration::from_nanos(delay))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_unimpaired_stage_passes_every_frame_at_once() {
        let mut s = Stage::default();
        let mut rng = SimRng::with_seed(1);
        for i in 0..100 {
            assert_eq!(s.pass(i * MS, 1500, &mut rng), Some(i * MS));
        }
    }

    #[test]
    fn delay_and_jitter_stay_in_their_range_and_reorder() {
        let mut s = Stage {
            impairment: Impairment::parse(["delay_ms=40", "jitter_ms=20"]).unwrap(),
            ..Stage::default()
        };
        let mut rng = SimRng::with_seed(2);
        let mut last = Duration::ZERO;
        let mut reordered = 0;
        for i in 0..1000u32 {
            let now = i * MS / 10;
            let at = s.pass(now, 100, &mut rng).expect("no loss configured");
            assert!(at >= now + 20 * MS && at <= now + 60 * MS, "{at:?} for {now:?}");
            reordered += usize::from(at < last);
            last = at;
        }
        assert!(reordered > 100, "jitter reordered only {reordered} of 1000");
    }

    #[test]
    fn loss_drops_about_its_share_and_down_drops_everything() {
        let mut s = Stage {
            impairment: Impairment::parse(["loss_pct=5"]).unwrap(),
            ..Stage::default()
        };
        let mut rng = SimRng::with_seed(3);
        let lost = (0..100_000)
            .filter(|_| s.pass(Duration::ZERO, 64, &mut rng).is_none())
            .count();
        assert!((4_000..6_000).contains(&lost), "lost {lost} of 100000 at 5 %");
        s.impairment = Impairment::parse(["down=1"]).unwrap();
        assert!((0..100).all(|_| s.pass(Duration::ZERO, 64, &mut rng).is_none()));
    }

    #[test]
    fn a_rate_cap_queues_frames_and_drops_beyond_the_queue_limit() {
        // 8 Mbit/s: 1000 bytes take 1 ms.
        let mut s = Stage {
            impairment: Impairment::parse(["rate_kbit=8000"]).unwrap(),
            ..Stage::default()
        };
        let mut rng = SimRng::with_seed(4);
        for i in 1..=1000u32 {
            assert_eq!(s.pass(Duration::ZERO, 1000, &mut rng), Some(i * MS));
        }
        // The queue now holds a second of frames: the next is dropped.
        assert_eq!(s.pass(Duration::ZERO, 1000, &mut rng), Some(1001 * MS));
        assert_eq!(s.pass(Duration::ZERO, 1000, &mut rng), None);
        // Once drained, frames pass at the line rate again.
        assert_eq!(s.pass(5000 * MS, 1000, &mut rng), Some(5001 * MS));
    }

    #[test]
    fn reordered_frames_skip_the_delay() {
        let mut s = Stage {
            impairment: Impairment::parse(["delay_ms=10", "reorder_pct=100"]).unwrap(),
            ..Stage::default()
        };
        let mut rng = SimRng::with_seed(5);
        assert_eq!(s.pass(3 * MS, 64, &mut rng), Some(3 * MS));
    }

    #[test]
    fn bad_words_are_named() {
        for (words, want) in [
            (&["delay"][..], "expected key=value"),
            (&["delay_ms=-1"][..], "delay_ms: \"-1\""),
            (&["loss_pct=101"][..], "above 100"),
            (&["down=yes"][..], "not 0 or 1"),
            (&["colour=red"][..], "unknown impairment \"colour\""),
        ] {
            let err = Impairment::parse(words.iter().copied()).unwrap_err();
            assert!(err.contains(want), "{words:?}: {err}");
        }
    }
}
