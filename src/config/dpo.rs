//! `rlhf dpo train` and `rlhf kto train` configurations (see `configs/dpo.toml`,
//! `configs/kto.toml`). The loss keys are TRL's `DPOConfig` / `KTOConfig` names and defaults.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::NamedPath;
use super::sft::Truncation;
use super::train::{OutputConfig, TrainConfig};
use crate::model::lora::LoraSpec;

/// Prompt + answer tokens of a comparison (`data.max_len`) unless a config says otherwise.
pub const DEFAULT_MAX_LEN: usize = 512;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpoConfig {
    pub model: PolicySource,
    pub data: PreferenceData,
    pub dpo: DpoLoss,
    /// `batch_size` counts comparisons (all their responses go through the model together).
    pub train: TrainConfig,
    pub output: OutputConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KtoConfig {
    pub model: PolicySource,
    pub data: PreferenceData,
    pub kto: KtoLoss,
    /// `batch_size` counts rows (answers), and the KL estimate pairs rows within groups of it.
    pub train: TrainConfig,
    pub output: OutputConfig,
}

/// The policy a run starts from and the frozen reference it is held to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySource {
    /// A causal LM directory (usually the SFT checkpoint) …
    pub base: Option<PathBuf>,
    /// … or a preset initialised at random, with `tokenizer`.
    pub init: Option<String>,
    pub tokenizer: Option<PathBuf>,
    /// The frozen reference π_ref (unset: the starting model). Its log-probabilities are
    /// computed once before the first step and kept in the run's `state/`.
    pub reference: Option<PathBuf>,
    /// Train only the top N blocks, the final norm and an untied head (0: all of it).
    pub train_layers: usize,
    /// `[model.lora]`: train LoRA adapters on the frozen model instead of every weight.
    pub lora: Option<LoraSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreferenceData {
    pub train: PathBuf,
    /// Validation file; without one, `valid_fraction` of `train` is held out.
    pub valid: Option<PathBuf>,
    pub valid_fraction: f64,
    /// Longest prompt + response in tokens; at most the model's context window.
    pub max_len: usize,
    /// `chatml`, `hh` or `model`; unset: the starting model's own template if it has one,
    /// else `chatml`.
    pub template: Option<String>,
    /// Too long: `left` cuts the prompt from the left (the response stays whole), `drop` skips
    /// the row (DPO: the whole comparison).
    pub truncation: Truncation,
}

impl Default for PreferenceData {
    fn default() -> Self {
        Self {
            train: PathBuf::new(),
            valid: None,
            valid_fraction: 0.0,
            max_len: DEFAULT_MAX_LEN,
            template: None,
            truncation: Truncation::Left,
        }
    }
}

/// TRL's `DPOConfig.loss_type` (the four single-loss types the DPO family is known by).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DpoLossType {
    /// −log σ(β·Δ) (Rafailov et al., 2023).
    Sigmoid,
    /// (Δ̄ − 1/(2β))², Δ̄ of per-token mean log-ratios (Azar et al., 2023).
    Ipo,
    /// max(0, 1 − β·Δ) (SLiC, Zhao et al., 2023).
    Hinge,
    /// Unbiased under label noise ε (Chowdhury et al., 2024).
    Robust,
}

impl DpoLossType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sigmoid => "sigmoid",
            Self::Ipo => "ipo",
            Self::Hinge => "hinge",
            Self::Robust => "robust",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpoLoss {
    pub loss_type: DpoLossType,
    /// β: how far the policy may move from the reference (IPO: the regulariser τ).
    pub beta: f64,
    /// ε of the `robust` loss: the probability that a label is flipped, in [0, 0.5).
    pub label_smoothing: f64,
}

impl Default for DpoLoss {
    fn default() -> Self {
        Self { loss_type: DpoLossType::Sigmoid, beta: 0.1, label_smoothing: 0.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KtoLoss {
    pub beta: f64,
    /// Weights of the desirable and undesirable rows' losses (for unbalanced data; the KTO
    /// paper suggests λ_D·n_D / (λ_U·n_U) in [1, 4/3]).
    pub desirable_weight: f64,
    pub undesirable_weight: f64,
}

impl Default for KtoLoss {
    fn default() -> Self {
        Self { beta: 0.1, desirable_weight: 1.0, undesirable_weight: 1.0 }
    }
}

impl PolicySource {
    pub fn paths(&self) -> Vec<NamedPath<'_>> {
        let mut paths = Vec::new();
        paths.extend(self.base.as_deref().map(|b| NamedPath::model("model.base", b)));
        paths.extend(self.reference.as_deref().map(|r| NamedPath::model("model.reference", r)));
        paths
    }

    pub fn validate(&self) -> Result<(), String> {
        super::train::check_lora(self.lora.as_ref(), self.base.is_some(), 0)?;
        match (&self.base, &self.init, &self.tokenizer) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => Ok(()),
            (Some(_), Some(_), _) => Err("keys `model.base` and `model.init` exclude each other: start from a checkpoint or from a preset".into()),
            (None, Some(_), None) => Err("key `model.tokenizer` is required with `model.init` (a directory with tokenizer.json)".into()),
            (Some(_), None, Some(_)) => Err("key `model.tokenizer` only goes with `model.init`; `model.base` brings its own".into()),
            (None, None, _) => Err("no model: set `model.base` (usually the SFT checkpoint) or `model.init` (a preset) with `model.tokenizer`".into()),
        }
    }
}

impl PreferenceData {
    fn paths(&self) -> Vec<NamedPath<'_>> {
        let mut paths = vec![NamedPath::file("data.train", &self.train)];
        paths.extend(self.valid.as_deref().map(|v| NamedPath::file("data.valid", v)));
        paths
    }

    fn validate(&self, rows: &str) -> Result<(), String> {
        if self.train.as_os_str().is_empty() {
            return Err(format!("key `data.train` is required (a JSONL file of {rows})"));
        }
        if self.max_len < 4 {
            return Err("key `data.max_len` must be at least 4".into());
        }
        if !(0.0..1.0).contains(&self.valid_fraction) {
            return Err(format!(
                "key `data.valid_fraction` must be in [0, 1), not {}",
                self.valid_fraction
            ));
        }
        if self.valid.is_some() && self.valid_fraction > 0.0 {
            return Err("keys `data.valid` and `data.valid_fraction` exclude each other".into());
        }
        if let Some(name) = &self.template {
            if !["chatml", "hh", "model"].contains(&name.as_str()) {
                return Err(format!(
                    "key `data.template`: unknown template `{name}` (expected chatml, hh or model)"
                ));
            }
        }
        Ok(())
    }
}

fn check_beta(key: &str, beta: f64) -> Result<(), String> {
    match beta > 0.0 && beta.is_finite() {
        true => Ok(()),
        false => Err(format!("key `{key}` must be a positive number, not {beta}")),
    }
}

fn check_output(output: &OutputConfig) -> Result<(), String> {
    match output.dir.as_os_str().is_empty() {
        true => Err("key `output.dir` is required".into()),
        false => Ok(()),
    }
}

impl DpoConfig {
    pub fn paths(&self) -> Vec<NamedPath<'_>> {
        let mut paths = self.model.paths();
        paths.extend(self.data.paths());
        paths
    }

    pub fn validate(&self) -> Result<(), String> {
        self.model.validate()?;
        self.train.validate()?;
        self.data.validate("comparisons")?;
        check_beta("dpo.beta", self.dpo.beta)?;
        let smoothing = self.dpo.label_smoothing;
        if !(0.0..0.5).contains(&smoothing) {
            return Err(format!("key `dpo.label_smoothing` must be in [0, 0.5), not {smoothing}"));
        }
        if smoothing > 0.0 && self.dpo.loss_type != DpoLossType::Robust {
            return Err(format!(
                "key `dpo.label_smoothing` applies to loss_type = \"robust\", not \"{}\"\nhint: set dpo.loss_type = \"robust\", or remove label_smoothing",
                self.dpo.loss_type.name()
            ));
        }
        check_output(&self.output)
    }
}

impl KtoConfig {
    pub fn paths(&self) -> Vec<NamedPath<'_>> {
        let mut paths = self.model.paths();
        paths.extend(self.data.paths());
        paths
    }

    pub fn validate(&self) -> Result<(), String> {
        self.model.validate()?;
        self.train.validate()?;
        self.data.validate("rows with a thumbs up or down")?;
        check_beta("kto.beta", self.kto.beta)?;
        for (key, weight) in [
            ("kto.desirable_weight", self.kto.desirable_weight),
            ("kto.undesirable_weight", self.kto.undesirable_weight),
        ] {
            if !(weight > 0.0 && weight.is_finite()) {
                return Err(format!("key `{key}` must be a positive number, not {weight}"));
            }
        }
        if self.train.batch_size < 2 {
            return Err("key `train.batch_size` must be at least 2: KTO estimates the KL term from each row's prompt paired with another row's answer".into());
        }
        check_output(&self.output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dpo(text: &str) -> Result<DpoConfig, String> {
        let config: DpoConfig =
            crate::config::parse(text, "dpo.toml", &[]).map_err(|e| format!("{e:#}"))?;
        config.validate().map(|()| config)
    }

    #[test]
    fn defaults_are_trls() {
        let config = dpo("[model]\nbase = \"m\"\n[data]\ntrain = \"p.jsonl\"").unwrap();
        assert_eq!(
            config.dpo,
            DpoLoss { loss_type: DpoLossType::Sigmoid, beta: 0.1, label_smoothing: 0.0 }
        );
        assert_eq!(
            KtoLoss::default(),
            KtoLoss { beta: 0.1, desirable_weight: 1.0, undesirable_weight: 1.0 }
        );
    }

    #[test]
    fn the_shipped_configs_are_valid_and_show_the_loss_defaults() {
        let dpo: DpoConfig =
            crate::config::parse(include_str!("../../configs/dpo.toml"), "dpo.toml", &[]).unwrap();
        dpo.validate().unwrap();
        assert_eq!(dpo.dpo, DpoLoss::default());
        let kto: KtoConfig =
            crate::config::parse(include_str!("../../configs/kto.toml"), "kto.toml", &[]).unwrap();
        kto.validate().unwrap();
        assert_eq!(kto.kto, KtoLoss::default());
    }

    #[test]
    fn bad_keys_are_named() {
        let base = "[model]\nbase = \"m\"\n[data]\ntrain = \"p.jsonl\"\n[dpo]\n";
        let err = dpo(&format!("{base}loss_type = \"kto\"")).unwrap_err();
        assert!(err.contains("dpo.loss_type"), "{err}");
        let err = dpo(&format!("{base}beta = 0.0")).unwrap_err();
        assert!(err.contains("`dpo.beta`"), "{err}");
        let err = dpo(&format!("{base}label_smoothing = 0.1")).unwrap_err();
        assert!(err.contains("robust"), "{err}");
        dpo(&format!("{base}label_smoothing = 0.1\nloss_type = \"robust\"")).unwrap();
        let err = dpo(&format!("{base}label_smoothing = 0.5\nloss_type = \"robust\"")).unwrap_err();
        assert!(err.contains("[0, 0.5)"), "{err}");
    }
}
