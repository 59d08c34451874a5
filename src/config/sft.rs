//! `rlhf sft train` configuration (see `configs/sft.toml`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::NamedPath;

use super::train::{ModelSource, OutputConfig, TrainConfig};
pub use crate::data::sft::Truncation;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftConfig {
    pub model: ModelSource,
    pub data: SftData,
    pub train: TrainConfig,
    pub samples: SampleConfig,
    pub output: OutputConfig,
}

/// `data.max_len` when unset (capped at the model's context window).
pub const DEFAULT_MAX_LEN: usize = 512;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftData {
    pub train: PathBuf,
    /// Validation file; without one, `valid_fraction` of `train` is held out.
    pub valid: Option<PathBuf>,
    pub valid_fraction: f64,
    /// Longest sequence in tokens (prompt + response), at most the model's context window;
    /// unset: [`DEFAULT_MAX_LEN`], or the window when that is shorter.
    pub max_len: Option<usize>,
    /// `chatml`, `hh` or `model` (the base tokenizer's own chat template).
    pub template: String,
    /// Rows longer than `max_len`: `left` cuts the prompt from the left, `drop` skips the row.
    pub truncation: Truncation,
    /// Concatenate `text` rows (with end-of-text between) into full `max_len` blocks.
    pub packing: bool,
}

impl Default for SftData {
    fn default() -> Self {
        Self {
            train: PathBuf::new(),
            valid: None,
            valid_fraction: 0.0,
            max_len: None,
            template: "chatml".into(),
            truncation: Truncation::Left,
            packing: false,
        }
    }
}

/// Greedy completions of a few validation prompts at each evaluation, to read how the model
/// is coming along (`samples.jsonl` in the run directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SampleConfig {
    pub count: usize,
    pub max_new_tokens: usize,
}

impl Default for SampleConfig {
    fn default() -> Self {
        Self { count: 4, max_new_tokens: 64 }
    }
}

impl SftConfig {
    pub fn paths(&self) -> Vec<NamedPath<'_>> {
        let mut paths = self.model.paths();
        paths.push(NamedPath::file("data.train", &self.data.train));
        paths.extend(self.data.valid.as_deref().map(|v| NamedPath::file("data.valid", v)));
        paths
    }
}

impl SftConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.model.validate()?;
        self.train.validate()?;
        if self.model.pooling.is_some() {
            return Err("key `model.pooling` applies to encoder classifiers (reward, moderate), not to SFT\nhint: remove it".into());
        }
        if self.data.train.as_os_str().is_empty() {
            return Err("key `data.train` is required (a JSONL file of demonstrations)".into());
        }
        if self.data.max_len.is_some_and(|n| n < 2) {
            return Err("key `data.max_len` must be at least 2".into());
        }
        if !(0.0..1.0).contains(&self.data.valid_fraction) {
            return Err(format!(
                "key `data.valid_fraction` must be in [0, 1), not {}",
                self.data.valid_fraction
            ));
        }
        if self.data.valid.is_some() && self.data.valid_fraction > 0.0 {
            return Err("keys `data.valid` and `data.valid_fraction` exclude each other".into());
        }
        if !["chatml", "hh", "model"].contains(&self.data.template.as_str()) {
            return Err(format!(
                "key `data.template`: unknown template `{}` (expected chatml, hh or model)",
                self.data.template
            ));
        }
        if self.output.dir.as_os_str().is_empty() {
            return Err("key `output.dir` is required".into());
        }
        Ok(())
    }
}
