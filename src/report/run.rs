//! A training run as the report reads it: `metrics.jsonl`, `rlhf.json` and `samples.jsonl`
//! of one output directory, checked before anything is drawn or written.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::{Map, Value};

use crate::bad_input;
use crate::checkpoint::{LINEAGE_FILE, Lineage};
use crate::error::ResultExt;
use crate::metrics::METRICS_FILE;

pub const SAMPLES_FILE: &str = "samples.jsonl";

/// Metric names that start with this come from validation rows.
pub const VALID_PREFIX: &str = "valid_";

pub struct Run {
    /// What legends and headings call it: the directory's name (its path when two runs
    /// share a name).
    pub name: String,
    pub dir: PathBuf,
    pub lineage: Lineage,
    pub rows: Vec<Row>,
    /// `samples.jsonl` rows (none when the stage writes no samples).
    pub samples: Vec<Map<String, Value>>,
}

/// One line of `metrics.jsonl`: its step and its numeric fields, in the file's order.
pub struct Row {
    pub step: f64,
    pub values: Vec<(String, f64)>,
}

impl Run {
    /// Reads a run directory; anything missing or malformed is bad input naming the file
    /// (and line).
    pub fn read(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(bad_input!("{}: not a directory", dir.display()));
        }
        let metrics = dir.join(METRICS_FILE);
        if !metrics.is_file() {
            return Err(bad_input!(
                "{}: no {METRICS_FILE}, so not a training run\nhint: pass the output directory of `rlhf sft|reward|ppo|moderate train`",
                dir.display()
            ));
        }
        let lineage_path = dir.join(LINEAGE_FILE);
        if !lineage_path.is_file() {
            return Err(bad_input!("{}: no {LINEAGE_FILE}", dir.display()));
        }
        let lineage = Lineage::read(dir).bad_input()?;
        let rows = read_objects(&metrics)?
            .into_iter()
            .map(|(line, object)| Row::parse(&object).map_err(|e| located(&metrics, line, e)))
            .collect::<Result<_>>()?;
        let samples_path = dir.join(SAMPLES_FILE);
        let samples = if samples_path.is_file() {
            read_objects(&samples_path)?.into_iter().map(|(_, object)| object).collect()
        } else {
            Vec::new()
        };
        Ok(Self { name: dir_name(dir), dir: dir.to_path_buf(), lineage, rows, samples })
    }

    /// Reads every directory, naming each run after its directory unless two share a name.
    pub fn read_all(dirs: &[PathBuf]) -> Result<Vec<Self>> {
        let mut runs = dirs.iter().map(|d| Self::read(d)).collect::<Result<Vec<_>>>()?;
        let names: Vec<String> = runs.iter().map(|r| r.name.clone()).collect();
        for run in &mut runs {
            if names.iter().filter(|n| **n == run.name).count() > 1 {
                run.name = run.dir.display().to_string();
            }
        }
        Ok(runs)
    }

    /// The number that says how the run went, as its stage measures it, with its step: the
    /// last logged value of the first of the stage's headline metrics that the run logged
    /// (sft: validation loss, reward: validation accuracy, ppo: reward-model score, moderate:
    /// validation "any category" AUPRC; the training value without validation).
    pub fn headline(&self) -> Option<(String, f64, f64)> {
        let candidates: &[&str] = match self.lineage.stage.as_str() {
            "sft" => &["valid_loss", "loss"],
            "reward" => &["valid_accuracy", "accuracy"],
            "ppo" => &["rm_score", "score"],
            "moderate" => &["valid_auprc_any", "loss"],
            _ => &["valid_loss", "loss"],
        };
        let last = self.last_values();
        candidates.iter().find_map(|key| last.iter().find(|(k, _, _)| k == key).cloned())
    }

    /// The last value logged for each metric, with its step, in order of first appearance.
    pub fn last_values(&self) -> Vec<(String, f64, f64)> {
        let mut last: Vec<(String, f64, f64)> = Vec::new();
        for row in &self.rows {
            for (key, value) in &row.values {
                match last.iter_mut().find(|(k, _, _)| k == key) {
                    Some(entry) => (entry.1, entry.2) = (*value, row.step),
                    None => last.push((key.clone(), *value, row.step)),
                }
            }
        }
        last
    }
}

impl Row {
    /// The numeric fields of a metrics object; strings, nulls and nested values (moderate's
    /// thresholds) are not curves and are left out.
    fn parse(object: &Map<String, Value>) -> Result<Self, String> {
        let step = match object.get("step").and_then(Value::as_f64) {
            Some(step) if step >= 0.0 => step,
            _ => return Err("no numeric `step` field".into()),
        };
        let values = object
            .iter()
            .filter(|(key, _)| *key != "step")
            .filter_map(|(key, value)| Some((key.clone(), value.as_f64()?)))
            .filter(|(_, value)| value.is_finite())
            .collect();
        Ok(Self { step, values })
    }
}

/// The JSON objects of a JSONL file with their 1-based line numbers; blank lines are skipped.
fn read_objects(path: &Path) -> Result<Vec<(usize, Map<String, Value>)>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad_input!("{}: cannot read: {e}", path.display()))?;
    let mut objects = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(Value::Object(object)) => objects.push((i + 1, object)),
            Ok(_) => return Err(located(path, i + 1, "not a JSON object")),
            Err(e) => return Err(located(path, i + 1, format!("invalid JSON: {e}"))),
        }
    }
    Ok(objects)
}

fn located(path: &Path, line: usize, message: impl std::fmt::Display) -> anyhow::Error {
    bad_input!("{}:{line}: {message}", path.display())
}

/// `runs/sft/` → `sft`; `.` → the current directory's name.
fn dir_name(dir: &Path) -> String {
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let clean: PathBuf = absolute.components().collect();
    clean
        .file_name()
        .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_keep_finite_numbers_in_order() {
        let object =
            json!({"step": 3, "loss": 1.5, "note": "x", "lr": 1e-3, "t": null, "m": {"a": 1}});
        let row = Row::parse(object.as_object().unwrap()).unwrap();
        assert_eq!(row.step, 3.0);
        assert_eq!(row.values, vec![("loss".to_string(), 1.5), ("lr".to_string(), 1e-3)]);
    }

    #[test]
    fn a_row_needs_a_step() {
        for bad in [json!({"loss": 1.0}), json!({"step": "3"}), json!({"step": -1})] {
            assert!(Row::parse(bad.as_object().unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_come_from_the_directory() {
        assert_eq!(dir_name(Path::new("runs/sft/")), "sft");
        assert_eq!(dir_name(Path::new("runs/sft/./")), "sft");
        assert!(!dir_name(Path::new(".")).is_empty());
    }
}
