//! `rlhf reward train` configuration (see `configs/reward.toml`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::NamedPath;

use super::sft::Truncation;
use super::train::{ModelSource, OutputConfig, TrainConfig};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardConfig {
    pub model: ModelSource,
    pub data: RewardData,
    pub loss: RewardLoss,
    pub train: TrainConfig,
    pub output: OutputConfig,
}

/// `data.max_len` when unset (capped at the model's context window).
pub const DEFAULT_MAX_LEN: usize = 512;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardData {
    pub train: PathBuf,
    /// Validation file; without one, `valid_fraction` of `train` is held out.
    pub valid: Option<PathBuf>,
    pub valid_fraction: f64,
    /// Longest prompt + response in tokens, at most the model's context window; unset:
    /// [`DEFAULT_MAX_LEN`], or the window when that is shorter.
    pub max_len: Option<usize>,
    /// Decoder backbones: `chatml`, `hh` or `model`; unset: the base model's own template if
    /// it has one, else `chatml`. Cross-encoders read `[CLS] prompt [SEP] response [SEP]`.
    pub template: Option<String>,
    /// Too long: `left` cuts the prompt from the left (the response stays whole), `drop` skips
    /// the comparison.
    pub truncation: Truncation,
}

impl Default for RewardData {
    fn default() -> Self {
        Self {
            train: PathBuf::new(),
            valid: None,
            valid_fraction: 0.0,
            max_len: None,
            template: None,
            truncation: Truncation::Left,
        }
    }
}

/// The Bradley–Terry loss `−log σ(r_better − r_worse − margin)` and its regulariser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardLoss {
    /// Margin for pairs whose row gives none (a row's `margin` field wins).
    pub margin: f64,
    /// Weight of mean(r²) over the scored responses, which pulls rewards toward zero mean
    /// (Eisenstein et al., 2023; TRL's `center_rewards_coefficient`). The pairwise loss only
    /// sees differences, so without it the scores drift by an arbitrary offset.
    pub center_coefficient: f64,
    /// Label smoothing ε: each pair counts as right with probability 1 − ε, so the loss is
    /// `−(1 − ε)·log σ(d) − ε·log σ(−d)` (TRL's conservative DPO loss). For noisy human
    /// labels (HH-RLHF has an estimated quarter of them): it bounds how far one pair can pull.
    pub label_smoothing: f64,
}

impl Default for RewardLoss {
    fn default() -> Self {
        Self { margin: 0.0, center_coefficient: 0.01, label_smoothing: 0.0 }
    }
}

impl RewardConfig {
    pub fn paths(&self) -> Vec<NamedPath<'_>> {
        let mut paths = self.model.paths();
        paths.push(NamedPath::file("data.train", &self.data.train));
        paths.extend(self.data.valid.as_deref().map(|v| NamedPath::file("data.valid", v)));
        paths
    }
}

impl RewardConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.model.validate()?;
        self.train.validate()?;
        if self.data.train.as_os_str().is_empty() {
            return Err("key `data.train` is required (a JSONL file of comparisons)".into());
        }
        if self.data.max_len.is_some_and(|n| n < 4) {
            return Err("key `data.max_len` must be at least 4".into());
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
        if let Some(name) = &self.data.template {
            if !["chatml", "hh", "model"].contains(&name.as_str()) {
                return Err(format!(
                    "key `data.template`: unknown template `{name}` (expected chatml, hh or model)"
                ));
            }
        }
        if !(self.loss.center_coefficient >= 0.0 && self.loss.center_coefficient.is_finite()) {
            return Err("key `loss.center_coefficient` must be a number ≥ 0".into());
        }
        if !(0.0..0.5).contains(&self.loss.label_smoothing) {
            return Err(format!(
                "key `loss.label_smoothing` must be in [0, 0.5), not {}",
                self.loss.label_smoothing
            ));
        }
        if !self.loss.margin.is_finite() {
            return Err("key `loss.margin` must be a finite number".into());
        }
        if self.output.dir.as_os_str().is_empty() {
            return Err("key `output.dir` is required".into());
        }
        Ok(())
    }
}
