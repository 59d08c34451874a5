//! What a training run reports: `metrics.jsonl` (one JSON object per logged step or
//! evaluation), a progress bar on a terminal or plain lines otherwise, and messages between.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

pub const METRICS_FILE: &str = "metrics.jsonl";

pub struct RunLog {
    records: Vec<Value>,
    /// Ranks other than 0 of a distributed run keep the records but show nothing.
    quiet: bool,
    /// `None` when stderr is not a terminal: then each logged step is one plain line.
    bar: Option<ProgressBar>,
}

impl RunLog {
    /// A log for steps `start..total`, continuing `previous` records (a resumed run).
    pub fn new(start: usize, total: usize, previous: Vec<Value>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64).with_position(start as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} step {pos}/{len}  {msg}  {elapsed} (eta {eta})",
                )
                .expect("static template"),
            );
            bar
        });
        let quiet = !crate::dist::is_main();
        let bar = bar.filter(|_| !quiet);
        Self { records: previous, quiet, bar }
    }

    /// The live display after a step; `line` is printed as is when there is no bar and the step
    /// is one to log.
    pub fn show(&self, step: usize, message: &str, line: Option<&str>) {
        if self.quiet {
            return;
        }
        match (&self.bar, line) {
            (Some(bar), _) => {
                bar.set_position(step as u64);
                bar.set_message(message.to_string());
            }
            (None, Some(line)) => eprintln!("{line}"),
            (None, None) => {}
        }
    }

    /// A message that stays (above the bar on a terminal).
    pub fn say(&self, message: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(message),
            None => eprintln!("{message}"),
        }
    }

    /// Changes the number of steps the display counts to.
    pub fn set_total(&self, total: usize) {
        if let Some(bar) = &self.bar {
            bar.set_length(total as u64);
        }
    }

    pub fn record(&mut self, record: Value) {
        self.records.push(record);
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Writes every record so far to `dir/metrics.jsonl`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_jsonl(&dir.join(METRICS_FILE), &self.records)
    }
}

/// Writes `records` as JSON lines.
pub fn write_jsonl(path: &Path, records: &[Value]) -> Result<()> {
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The JSON lines of a file a checkpoint holds (a resumed run continues them); none when
/// the file is missing.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}
