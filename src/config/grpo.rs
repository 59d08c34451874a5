//! `rlhf grpo train` configuration (see `configs/grpo.toml`). The `[grpo]` keys are TRL's
//! `GRPOConfig` names and defaults; `[[rewards]]` is TRL's `reward_funcs` with
//! `reward_weights` written beside each one.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::NamedPath;
use super::dpo::PolicySource;
use super::ppo::RolloutConfig;
use super::train::{OutputConfig, TrainConfig};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpoConfig {
    /// The starting policy; `reference` is read only when `grpo.beta` > 0.
    pub model: PolicySource,
    pub data: GrpoData,
    pub rollout: RolloutConfig,
    pub rewards: Vec<RewardSource>,
    pub grpo: GrpoHyper,
    /// `batch_size` counts prompts per iteration; each is answered `grpo.num_generations`
    /// times. A step is one iteration: sampling, scoring, then `grpo.num_iterations` updates.
    pub train: TrainConfig,
    pub output: OutputConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpoData {
    /// `{"prompt"}` or `{"messages"}` rows; a row's other fields (`"answer"`, …) reach the
    /// reward programs with each of its completions.
    pub prompts: PathBuf,
    /// Longer prompts are cut from the left (the question and the assistant cue stay).
    pub max_prompt_len: usize,
}

impl Default for GrpoData {
    fn default() -> Self {
        Self { prompts: PathBuf::new(), max_prompt_len: 256 }
    }
}

/// One reward function: exactly one of `model`, `moderation` or `command`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardSource {
    /// How the logs call it (`rewards/<name>/mean`); default: the directory's or program's
    /// file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A reward model directory (decoder with a scalar head, or a cross-encoder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    /// A `rlhf moderate` checkpoint: the reward is minus the completion's highest category
    /// score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation: Option<PathBuf>,
    /// A reward program, started once: one JSON request a line on its stdin, one number a
    /// line on its stdout (`rlhf` as the first word is this binary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Seconds a program may take to answer one request.
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// TRL's `reward_weights`: the reward is the weighted sum of the functions.
    #[serde(default = "default_weight")]
    pub weight: f64,
}

fn default_timeout() -> f64 {
    60.0
}

fn default_weight() -> f64 {
    1.0
}

/// The baseline each completion's reward is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdvantageKind {
    /// r − the group's mean (Shao et al., 2024).
    Grpo,
    /// r − the mean of the group's other completions (RLOO, Ahmadian et al., 2024).
    Rloo,
}

/// What the advantages are divided by (TRL's `scale_rewards`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleRewards {
    Group,
    Batch,
    None,
}

/// How the token losses of a batch are averaged (TRL's `loss_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrpoLossType {
    /// Each completion's token mean, then the mean over completions.
    Grpo,
    /// Over the tokens of each rank's batch.
    Bnpo,
    /// ÷ (completions × `rollout.max_new_tokens`): no length bias (Liu et al., 2025).
    DrGrpo,
    /// ÷ the active tokens of the whole batch, every rank's (Yu et al., 2025).
    Dapo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpoHyper {
    /// G: completions sampled per prompt, from one shared prefill.
    pub num_generations: usize,
    pub advantage: AdvantageKind,
    pub scale_rewards: ScaleRewards,
    pub loss_type: GrpoLossType,
    /// ε of the clipped ratio (its lower side).
    pub epsilon: f64,
    /// The upper side of the clip (DAPO's clip-higher); unset: `epsilon`.
    pub epsilon_high: Option<f64>,
    /// Weight of the k3 KL estimate to the reference per token; 0 loads no reference.
    pub beta: f64,
    /// Multiply the KL term by the ratio π/π_old (DeepSeek-V3.2; TRL 1.12's default): the
    /// same value on policy, but the gradient of the unbiased reverse KL.
    pub use_bias_correction_kl: bool,
    /// μ: optimizer updates on each iteration's completions.
    pub num_iterations: usize,
    /// Completions that hit `rollout.max_new_tokens` are left out of the loss.
    pub mask_truncated_completions: bool,
    /// Completions per forward/backward pass (memory only: the update is over them all).
    pub micro_batch_size: usize,
    /// Write an iteration's completions with their rewards to `completions.jsonl` every N
    /// iterations (0: never).
    pub log_completions_every: usize,
}

impl Default for GrpoHyper {
    fn default() -> Self {
        Self {
            num_generations: 8,
            advantage: AdvantageKind::Grpo,
            scale_rewards: ScaleRewards::Group,
            loss_type: GrpoLossType::Dapo,
            epsilon: 0.2,
            epsilon_high: None,
            beta: 0.0,
            use_bias_correction_kl: true,
            num_iterations: 1,
            mask_truncated_completions: false,
            micro_batch_size: 16,
            log_completions_every: 10,
        }
    }
}

impl GrpoHyper {
    /// (ε_low, ε_high).
    pub fn clip(&self) -> (f64, f64) {
        (self.epsilon, self.epsilon_high.unwrap_or(self.epsilon))
    }
}

impl RewardSource {
    /// The name in the logs.
    pub fn name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let path = self.model.as_ref().or(self.moderation.as_ref());
        let word = match (path, &self.command) {
            (Some(path), _) => path.file_name().map(|n| n.to_string_lossy().into_owned()),
            (None, Some(command)) => {
                let program = command.iter().find(|w| !matches!(w.as_str(), "python" | "python3"));
                program.map(|w| w.rsplit('/').next().unwrap_or(w).to_string())
            }
            (None, None) => None,
        };
        word.unwrap_or_else(|| "reward".into())
    }
}

impl GrpoConfig {
    pub fn paths(&self) -> Vec<NamedPath<'_>> {
        let mut paths = self.model.paths();
        paths.push(NamedPath::file("data.prompts", &self.data.prompts));
        for reward in &self.rewards {
            paths.extend(reward.model.as_deref().map(|m| NamedPath::model("rewards.model", m)));
            paths.extend(
                reward.moderation.as_deref().map(|m| NamedPath::model("rewards.moderation", m)),
            );
        }
        paths
    }

    pub fn validate(&self) -> Result<(), String> {
        self.model.validate()?;
        self.train.validate()?;
        if self.train.keep_best || self.train.patience > 0 {
            return Err("keys `train.keep_best` and `train.patience` need a validation metric, which GRPO has not\nhint: measure saved policies with `rlhf grpo eval`".into());
        }
        if self.data.prompts.as_os_str().is_empty() {
            return Err("key `data.prompts` is required (a JSONL file of prompts)".into());
        }
        if self.output.dir.as_os_str().is_empty() {
            return Err("key `output.dir` is required".into());
        }
        if self.rewards.is_empty() {
            return Err("no reward: add a `[[rewards]]` table with `model`, `moderation` or `command`\nhint: `command = [\"python3\", \"judge.py\"]` runs a reward program (README: reward programs)".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, reward) in self.rewards.iter().enumerate() {
            let set =
                [reward.model.is_some(), reward.moderation.is_some(), reward.command.is_some()];
            if set.iter().filter(|&&s| s).count() != 1 {
                return Err(format!(
                    "`rewards[{i}]` needs exactly one of `model`, `moderation` or `command`"
                ));
            }
            if reward.command.as_ref().is_some_and(Vec::is_empty) {
                return Err(format!(
                    "key `rewards[{i}].command` is empty: give the program and its arguments"
                ));
            }
            if !(reward.timeout_s > 0.0 && reward.timeout_s.is_finite()) {
                return Err(format!(
                    "key `rewards[{i}].timeout_s` must be a positive number of seconds"
                ));
            }
            if !reward.weight.is_finite() {
                return Err(format!("key `rewards[{i}].weight` must be a number"));
            }
            if !names.insert(reward.name()) {
                return Err(format!(
                    "two rewards are called `{}`: give one a `name`",
                    reward.name()
                ));
            }
        }
        let g = &self.grpo;
        if g.num_generations < 2 {
            return Err("key `grpo.num_generations` must be at least 2: advantages compare the completions of a prompt".into());
        }
        let positive = [
            ("data.max_prompt_len", self.data.max_prompt_len),
            ("rollout.max_new_tokens", self.rollout.max_new_tokens),
            ("grpo.num_iterations", g.num_iterations),
            ("grpo.micro_batch_size", g.micro_batch_size),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("key `{key}` must be at least 1"));
        }
        if self.rollout.temperature <= 0.0 {
            return Err("key `rollout.temperature` must be > 0 (GRPO samples)".into());
        }
        if !(self.rollout.top_p > 0.0 && self.rollout.top_p <= 1.0) {
            return Err(format!(
                "key `rollout.top_p` must be in (0, 1], not {}",
                self.rollout.top_p
            ));
        }
        let (low, high) = g.clip();
        if !((0.0..1.0).contains(&low) && high >= 0.0 && high.is_finite()) {
            return Err(format!(
                "keys `grpo.epsilon` ({low}) and `grpo.epsilon_high` ({high}): ε must be in [0, 1) and ε_high ≥ 0"
            ));
        }
        if !(g.beta >= 0.0 && g.beta.is_finite()) {
            return Err(format!("key `grpo.beta` must be ≥ 0, not {}", g.beta));
        }
        if g.beta > 0.0 && self.model.base.is_none() && self.model.reference.is_none() {
            return Err("key `grpo.beta` > 0 needs a reference: set `model.reference` (a model started from a preset has none on disk)".into());
        }
        if g.beta == 0.0 && self.model.reference.is_some() {
            return Err("key `model.reference` is unused with `grpo.beta = 0` (no KL term)\nhint: set grpo.beta > 0, or remove model.reference".into());
        }
        Ok(())
    }
}
