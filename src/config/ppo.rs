//! `rlhf ppo train` configuration (see `configs/ppo.toml`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::NamedPath;

use super::train::{OutputConfig, TrainConfig};
use crate::model::lora::LoraSpec;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    pub model: PpoModels,
    pub data: PpoData,
    pub rollout: RolloutConfig,
    pub reward: RewardShaping,
    pub ppo: PpoHyper,
    /// `batch_size` is the number of prompts (rollouts) per PPO iteration, and a step is one
    /// iteration: rollout, then `ppo.ppo_epochs` passes of minibatch updates.
    pub train: TrainConfig,
    pub output: OutputConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoModels {
    /// The SFT checkpoint: the policy starts from it, and it is the frozen reference.
    pub policy: PathBuf,
    /// The frozen reward model (a decoder with a scalar head, or a cross-encoder).
    pub reward: PathBuf,
    /// `separate`: a value model initialised from the reward model (InstructGPT); `shared`: a
    /// value head on the policy's own body.
    pub value_model: ValueModel,
    /// Train only the policy's top N blocks and final norm (0: all of it); the embeddings,
    /// and so a tied LM head, stay as SFT left them.
    pub train_layers: usize,
    /// `[model.lora]`: train LoRA adapters on the frozen model instead of every weight.
    pub lora: Option<LoraSpec>,
}

impl Default for PpoModels {
    fn default() -> Self {
        Self {
            policy: PathBuf::new(),
            reward: PathBuf::new(),
            value_model: ValueModel::Separate,
            train_layers: 0,
            lora: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueModel {
    Separate,
    Shared,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoData {
    /// Prompts: `{"prompt": …}` or `{"messages": [… ending with a user turn]}` rows.
    pub prompts: PathBuf,
    /// Longer prompts are cut from the left (the question and the assistant cue stay).
    pub max_prompt_len: usize,
    /// PPO-ptx: `{"text": …}` rows whose language-model loss is mixed into every update.
    pub ptx: Option<PathBuf>,
}

impl Default for PpoData {
    fn default() -> Self {
        Self { prompts: PathBuf::new(), max_prompt_len: 256, ptx: None }
    }
}

/// How responses are sampled from the policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutConfig {
    pub max_new_tokens: usize,
    /// Also divides the logits when log-probabilities are taken, so the ratios and the KL are
    /// those of the distribution that was sampled.
    pub temperature: f64,
    pub top_k: usize,
    pub top_p: f64,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self { max_new_tokens: 64, temperature: 1.0, top_k: 0, top_p: 1.0 }
    }
}

/// What the reward model's score becomes before PPO sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardShaping {
    /// (score − mean) / std with the reward model's `reward_stats.json`.
    pub normalize: bool,
    /// Subtracted from the score of a response that ran out of `max_new_tokens` before its
    /// end-of-turn token.
    pub missing_eos_penalty: f64,
    /// A `rlhf moderate` checkpoint: its highest category score of the response, times
    /// `moderation_penalty`, is subtracted from the score.
    pub moderation: Option<PathBuf>,
    pub moderation_penalty: f64,
}

impl Default for RewardShaping {
    fn default() -> Self {
        Self {
            normalize: true,
            missing_eos_penalty: 0.0,
            moderation: None,
            moderation_penalty: 1.0,
        }
    }
}

/// The PPO update and the KL penalty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoHyper {
    /// Passes over each iteration's rollouts.
    pub ppo_epochs: usize,
    /// Rollouts per gradient update.
    pub mini_batch_size: usize,
    /// ε of the clipped policy ratio.
    pub clip_range: f64,
    /// Values move at most this far from their rollout values in the clipped value loss.
    pub value_clip_range: f64,
    pub vf_coef: f64,
    pub gamma: f64,
    pub lam: f64,
    pub whiten_advantages: bool,
    /// β, the weight of the per-token KL penalty (the starting value when adaptive).
    pub kl_coef: f64,
    /// Adapt β toward `target_kl` (Ziegler et al., 2019); false keeps it fixed.
    pub adaptive_kl: bool,
    /// KL(π‖π_ref) per response, in nats, that the adaptive β aims for.
    pub target_kl: f64,
    /// Rollouts over which the controller closes a ±20 % error.
    pub kl_horizon: f64,
    /// Weight of the pre-training loss on `data.ptx` (InstructGPT's PPO-ptx γ).
    pub ptx_coef: f64,
    /// Write a few (prompt, response, reward) rows to `samples.jsonl` every N iterations.
    pub log_samples_every: usize,
}

impl Default for PpoHyper {
    fn default() -> Self {
        Self {
            ppo_epochs: 4,
            mini_batch_size: 8,
            clip_range: 0.2,
            value_clip_range: 0.2,
            vf_coef: 0.1,
            gamma: 1.0,
            lam: 0.95,
            whiten_advantages: true,
            kl_coef: 0.05,
            adaptive_kl: true,
            target_kl: 6.0,
            kl_horizon: 10000.0,
            ptx_coef: 0.0,
            log_samples_every: 10,
        }
    }
}

impl PpoConfig {
    pub fn paths(&self) -> Vec<NamedPath<'_>> {
        let mut paths = vec![
            NamedPath::model("model.policy", &self.model.policy),
            NamedPath::model("model.reward", &self.model.reward),
            NamedPath::file("data.prompts", &self.data.prompts),
        ];
        paths.extend(self.data.ptx.as_deref().map(|p| NamedPath::file("data.ptx", p)));
        paths.extend(
            self.reward.moderation.as_deref().map(|m| NamedPath::model("reward.moderation", m)),
        );
        paths
    }
}

impl PpoConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.train.validate()?;
        super::train::check_lora(self.model.lora.as_ref(), true, 0)?;
        if self.train.keep_best || self.train.patience > 0 {
            return Err("keys `train.keep_best` and `train.patience` need a validation metric, which PPO has not\nhint: measure saved policies with `rlhf ppo eval`".into());
        }
        let required = [
            ("model.policy", &self.model.policy, "the SFT checkpoint"),
            ("model.reward", &self.model.reward, "the reward model"),
            ("data.prompts", &self.data.prompts, "a JSONL file of prompts"),
            ("output.dir", &self.output.dir, "where the run is written"),
        ];
        for (key, path, what) in required {
            if path.as_os_str().is_empty() {
                return Err(format!("key `{key}` is required ({what})"));
            }
        }
        let positive = [
            ("data.max_prompt_len", self.data.max_prompt_len),
            ("rollout.max_new_tokens", self.rollout.max_new_tokens),
            ("ppo.ppo_epochs", self.ppo.ppo_epochs),
            ("ppo.mini_batch_size", self.ppo.mini_batch_size),
            ("ppo.log_samples_every", self.ppo.log_samples_every),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("key `{key}` must be at least 1"));
        }
        if self.rollout.temperature <= 0.0 {
            return Err("key `rollout.temperature` must be > 0 (PPO samples)".into());
        }
        if !(self.rollout.top_p > 0.0 && self.rollout.top_p <= 1.0) {
            return Err(format!(
                "key `rollout.top_p` must be in (0, 1], not {}",
                self.rollout.top_p
            ));
        }
        let p = &self.ppo;
        let non_negative = [
            ("ppo.clip_range", p.clip_range),
            ("ppo.value_clip_range", p.value_clip_range),
            ("ppo.vf_coef", p.vf_coef),
            ("ppo.kl_coef", p.kl_coef),
            ("ppo.ptx_coef", p.ptx_coef),
            ("reward.missing_eos_penalty", self.reward.missing_eos_penalty),
            ("reward.moderation_penalty", self.reward.moderation_penalty),
        ];
        if let Some((key, v)) = non_negative.iter().find(|(_, v)| !(*v >= 0.0 && v.is_finite())) {
            return Err(format!("key `{key}` must be a number ≥ 0, not {v}"));
        }
        for (key, v) in [("ppo.gamma", p.gamma), ("ppo.lam", p.lam)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("key `{key}` must be in [0, 1], not {v}"));
            }
        }
        if p.adaptive_kl && !(p.target_kl > 0.0 && p.kl_horizon > 0.0) {
            return Err(
                "keys `ppo.target_kl` and `ppo.kl_horizon` must be > 0 with `ppo.adaptive_kl`"
                    .into(),
            );
        }
        if p.ptx_coef > 0.0 && self.data.ptx.is_none() {
            return Err(
                "key `ppo.ptx_coef` > 0 needs `data.ptx` (a JSONL file of text rows)".into()
            );
        }
        Ok(())
    }
}
