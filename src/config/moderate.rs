//! `rlhf moderate train` configuration (see `configs/moderate.toml`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::NamedPath;

use super::train::{OutputConfig, TrainConfig};
use crate::model::bert::Pooling;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModerateConfig {
    pub model: ModerateModel,
    pub data: ModerateData,
    pub loss: ModerateLoss,
    pub thresholds: Thresholds,
    pub train: TrainConfig,
    pub output: OutputConfig,
}

/// The backbone: a BERT-family encoder or a causal language model (each gets a fresh
/// eight-output head), or a moderation checkpoint to train further.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModerateModel {
    pub base: PathBuf,
    /// Train only the top N blocks and the head (0: all of them).
    pub train_layers: usize,
    /// Draw the top N blocks afresh before training (and a BERT pooler); 0: keep them all.
    pub reinit_layers: usize,
    /// BERT-family encoders: the sentence vector the head reads (unset: the checkpoint's,
    /// `cls` for a bare encoder).
    pub pooling: Option<Pooling>,
}

impl Default for ModerateModel {
    fn default() -> Self {
        Self { base: "models/minilm".into(), train_layers: 0, reinit_layers: 0, pooling: None }
    }
}

/// `data.max_len` when unset (capped at the model's positions).
pub const DEFAULT_MAX_LEN: usize = 256;

/// The shortest `data.max_len` a chunk can be read with.
pub const MIN_MAX_LEN: usize = 40;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModerateData {
    pub train: PathBuf,
    /// Validation file (thresholds are chosen on it); without one, `valid_fraction` of `train`.
    pub valid: Option<PathBuf>,
    pub valid_fraction: f64,
    /// Tokens per sequence, `[CLS]` and `[SEP]` included, at most the model's positions; unset:
    /// [`DEFAULT_MAX_LEN`], or the positions when fewer. Training reads the first `max_len`
    /// tokens of a text; scoring reads every chunk.
    pub max_len: Option<usize>,
}

impl Default for ModerateData {
    fn default() -> Self {
        Self { train: PathBuf::new(), valid: None, valid_fraction: 0.2, max_len: None }
    }
}

/// Class imbalance: `balanced` weighs a category's positives by negatives/positives among its
/// known training labels (PyTorch's `pos_weight`), capped at `max_pos_weight`; `none` does not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModerateLoss {
    pub pos_weight: PosWeight,
    pub max_pos_weight: f64,
}

impl Default for ModerateLoss {
    fn default() -> Self {
        Self { pos_weight: PosWeight::Balanced, max_pos_weight: 10.0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PosWeight {
    Balanced,
    None,
}

/// How each category's decision threshold is chosen on the validation data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// `best_f1`, or `precision`: the lowest threshold reaching `target_precision`.
    pub rule: ThresholdRule,
    pub target_precision: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self { rule: ThresholdRule::BestF1, target_precision: 0.8 }
    }
}

impl ModerateConfig {
    pub fn paths(&self) -> Vec<NamedPath<'_>> {
        let mut paths = vec![
            NamedPath::model("model.base", &self.model.base),
            NamedPath::file("data.train", &self.data.train),
        ];
        paths.extend(self.data.valid.as_deref().map(|v| NamedPath::file("data.valid", v)));
        paths
    }
}

impl ModerateConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.train.validate()?;
        super::train::check_reinit(self.model.reinit_layers, self.model.train_layers)?;
        if self.data.train.as_os_str().is_empty() {
            return Err("key `data.train` is required (a JSONL file of labelled texts)".into());
        }
        if self.data.max_len.is_some_and(|n| n < MIN_MAX_LEN) {
            return Err(format!("key `data.max_len` must be at least {MIN_MAX_LEN}"));
        }
        if !(0.0..1.0).contains(&self.data.valid_fraction) {
            return Err(format!(
                "key `data.valid_fraction` must be in [0, 1), not {}",
                self.data.valid_fraction
            ));
        }
        if self.data.valid.is_some() && self.data.valid_fraction > 0.0 {
            return Err("keys `data.valid` and `data.valid_fraction` exclude each other (set valid_fraction = 0 with a valid file)".into());
        }
        if self.loss.max_pos_weight.is_nan() || self.loss.max_pos_weight < 1.0 {
            return Err("key `loss.max_pos_weight` must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.thresholds.target_precision) {
            return Err("key `thresholds.target_precision` must be in [0, 1]".into());
        }
        if self.output.dir.as_os_str().is_empty() {
            return Err("key `output.dir` is required".into());
        }
        Ok(())
    }
}

/// How a category's decision threshold is chosen on validation data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdRule {
    /// The threshold with the highest F1.
    BestF1,
    /// The lowest threshold whose precision reaches the target (most recall at that
    /// precision); the best-F1 one when none does.
    Precision,
}
