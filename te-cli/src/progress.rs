//! Feedback on stderr while the tool works: progress bars (indicatif) when
//! stderr is a terminal that draws them, plain lines otherwise (one per step, so that a
//! log or a script sees where a run is).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::size;

/// Where feedback goes: bars on a terminal, lines elsewhere.
pub struct Feedback {
    /// `te bench`, `te serve`, ...: the prefix of every plain line.
    tool: &'static str,
    /// The bars' owner, on a terminal only.
    multi: Option<MultiProgress>,
}

/// Whether stderr is a terminal that draws bars and colours (not
/// `TERM=dumb` or unset, where indicatif draws nothing).
pub fn draws() -> bool {
    std::io::stderr().is_terminal() && !ProgressDrawTarget::stderr().is_hidden()
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Feedback {
    /// Feedback for `tool`, with bars when stderr is a terminal that can
    /// draw them (not `TERM=dumb` or unset, where indicatif draws nothing:
    /// plain lines there too).
    pub fn new(tool: &'static str) -> Feedback {
        Feedback {
            tool,
            multi: draws().then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    /// One line of news on stderr, after the tool's name (above the bars on a terminal).
    pub fn line(&self, msg: &str) {
        self.raw(&format!("{}: {msg}", self.tool));
    }

    /// One line on stderr as it is (above the bars on a terminal).
    pub fn raw(&self, line: &str) {
        match &self.multi {
            Some(m) if m.println(line).is_ok() => {}
            _ => eprintln!("{line}"),
        }
    }

    /// Writes a line of the tool's output to stdout with the bars out of the way.
    pub fn out(&self, line: std::fmt::Arguments<'_>) {
        match &self.multi {
            Some(m) => m.suspend(|| crate::write_out(line)),
            None => crate::write_out(line),
        }
    }

    /// Progress of `what` over `len` bytes (an allocation being populated).
    pub fn bytes(&self, what: &str, len: u64) -> BytesProgress<'_> {
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new(len));
            b.set_style(style("{msg} [{bar:30}] {bytes}/{total_bytes} {elapsed}"));
            b.set_message(what.to_string());
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        if bar.is_none() {
            self.line(&format!("{what}..."));
        }
        BytesProgress {
            feedback: self,
            what: what.to_string(),
            len,
            bar,
            shown: Duration::ZERO,
        }
    }

    /// Progress of a sweep of `configs` configurations of about `each` apiece.
    pub fn sweep(&self, configs: usize, each: Duration) -> Sweep<'_> {
        let overall = self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new(
                (configs as u64 * each.as_millis() as u64).max(1),
            ));
            b.set_style(style("{msg:<28} [{bar:30}] {elapsed} elapsed, about {eta} left"));
            b
        });
        Sweep {
            feedback: self,
            configs,
            each,
            started: 0,
            overall,
            current: None,
        }
    }
}

/// Progress of an allocation; plain lines each second after the first.
pub struct BytesProgress<'a> {
    feedback: &'a Feedback,
    what: String,
    len: u64,
    bar: Option<ProgressBar>,
    /// When the last plain progress line was printed (time since the start).
    shown: Duration,
}

impl BytesProgress<'_> {
    /// `done` of the bytes are in place, `elapsed` after the start.
    pub fn set(&mut self, done: u64, elapsed: Duration) {
        match &self.bar {
            Some(b) => b.set_position(done),
            None if elapsed >= self.shown + Duration::from_secs(1) => {
                self.shown = elapsed;
                self.feedback.line(&format!(
                    "{}: {} of {} after {:.1} s",
                    self.what,
                    size::approx(done),
                    size::approx(self.len),
                    elapsed.as_secs_f64()
                ));
            }
            None => {}
        }
    }

    /// The allocation ended (`ok`: it succeeded) after `elapsed`.
    pub fn finish(self, ok: bool, elapsed: Duration) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if ok && elapsed >= Duration::from_secs(1) {
            self.feedback
                .line(&format!("{}: done in {:.1} s", self.what, elapsed.as_secs_f64()));
        }
    }
}

/// Progress of a sweep: one bar for the configuration in flight, one for the whole.
pub struct Sweep<'a> {
    feedback: &'a Feedback,
    configs: usize,
    each: Duration,
    started: usize,
    overall: Option<ProgressBar>,
    current: Option<ProgressBar>,
}

impl Sweep<'_> {
    /// The next configuration, `label`, starts; it runs for about `self.each`.
    pub fn start(&mut self, label: &str) {
        self.started += 1;
        let left = self.each * (self.configs - self.started + 1) as u32;
        match (&self.feedback.multi, &self.overall) {
            (Some(m), Some(o)) => {
                o.set_message(format!("configuration {}/{}", self.started, self.configs));
                o.set_position(self.each.as_millis() as u64 * (self.started - 1) as u64);
                let b = m.insert_before(o, ProgressBar::new(self.each.as_millis().max(1) as u64));
                b.set_style(style("{msg:<28} [{bar:30}] {elapsed}"));
                b.set_message(label.to_string());
                b.enable_steady_tick(Duration::from_millis(200));
                self.current = Some(b);
            }
            _ => self.feedback.line(&format!(
                "[{}/{}] {label} (about {:.0} s left)",
                self.started,
                self.configs,
                left.as_secs_f64().ceil()
            )),
        }
    }

    /// The configuration in flight has run for `elapsed`.
    pub fn tick(&self, elapsed: Duration) {
        let ms = (elapsed.min(self.each).as_millis()) as u64;
        if let Some(b) = &self.current {
            b.set_position(ms);
        }
        if let Some(o) = &self.overall {
            o.set_position(self.each.as_millis() as u64 * (self.started.saturating_sub(1)) as u64 + ms);
        }
    }

    /// The configuration in flight ended.
    pub fn done(&mut self) {
        if let Some(b) = self.current.take() {
            b.finish_and_clear();
        }
    }
}

impl Drop for Sweep<'_> {
    fn drop(&mut self) {
        self.done();
        if let Some(o) = &self.overall {
            o.finish_and_clear();
        }
    }
}
