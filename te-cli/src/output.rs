//! How a measuring command prints: the effective configuration, then a
//! table (or CSV) row per configuration as it finishes, or one JSON
//! document at the end; the skipped configurations once; and how the run
//! ended (a run that measured nothing fails).

use serde_json::Value;

use crate::error::{fail, Ended, Result};
use crate::progress::Feedback;
use crate::report::{self, Row, Skipped};
use crate::stop;

/// The output flags every measuring command shares.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct OutputArgs {
    /// Print one JSON document at the end (with the te version and commit,
    /// a timestamp, the settings, the results and the skipped configurations).
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV rows (block size in bytes, latencies in microseconds); the
    /// configuration goes to stderr.
    #[arg(long)]
    pub csv: bool,
}

/// A run's output, row by row.
pub struct Output<'a> {
    args: OutputArgs,
    /// Where feedback and the table's lines go.
    pub feedback: &'a Feedback,
    rows: Vec<Row>,
    skipped: Vec<Skipped>,
}

impl<'a> Output<'a> {
    /// Prints the effective configuration (`echo`, one line each: to
    /// stdout for a table, to stderr for CSV and JSON) and the skipped
    /// configurations; the column heads follow with the first row.
    pub fn begin(args: OutputArgs, feedback: &'a Feedback, echo: &[String], skipped: Vec<Skipped>) -> Self {
        for l in echo {
            if args.json || args.csv {
                feedback.raw(l);
            } else {
                feedback.out(format_args!("{l}"));
            }
        }
        for l in report::skipped_lines(&skipped) {
            feedback.line(&l);
        }
        Output {
            args,
            feedback,
            rows: Vec::new(),
            skipped,
        }
    }

    /// A configuration finished.
    pub fn row(&mut self, r: Row) {
        // The column heads come with the first row: a run that measures
        // nothing prints none.
        if self.rows.is_empty() {
            if self.args.csv {
                self.feedback.out(format_args!("{}", report::CSV_HEADER));
            } else if !self.args.json {
                self.feedback.out(format_args!("{}", report::HEADER));
            }
        }
        if self.args.csv {
            self.feedback.out(format_args!("{}", report::csv(&r)));
        } else if !self.args.json {
            self.feedback.out(format_args!("{}", report::line(&r)));
        }
        self.rows.push(r);
    }

    /// Ends the run: the JSON document (with `tool`, `target`, `path` and
    /// `settings`), the note on latencies under a table, the skipped
    /// and the outcome:
    /// `Stopped` after a signal (naming the `abandoned` configuration),
    /// an error when nothing was measured.
    pub fn finish(
        self,
        tool: &'static str,
        target: &str,
        path: &str,
        settings: Value,
        abandoned: Option<String>,
    ) -> Result<Ended> {
        let stopped = stop::requested();
        if self.args.json {
            let doc = report::json(&report::Document {
                tool,
                target,
                path,
                settings,
                rows: &self.rows,
                skipped: &self.skipped,
                abandoned: abandoned.clone(),
                stopped,
            });
            self.feedback.out(format_args!("{doc}"));
        } else if !self.args.csv && !self.rows.is_empty() {
            self.feedback.out(format_args!("({})", report::LATENCY_NOTE));
        }
        if let (Some(i), Some(a)) = (stopped, &abandoned) {
            self.feedback.line(&format!(
                "stopped by {}: abandoned {a}; the rows above were measured in full",
                i.name()
            ));
        }
        match stopped {
            Some(i) => Ok(Ended::Stopped(i)),
            None if self.rows.is_empty() => Err(fail(format!(
                "nothing measured: {}",
                match self.skipped.len() {
                    0 => "no configuration to run".to_string(),
                    n => format!("every configuration ({n}) was skipped, as listed above"),
                }
            ))),
            None => Ok(Ended::Done),
        }
    }
}
