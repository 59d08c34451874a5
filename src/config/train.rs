//! The `[train]` and `[output]` sections every training stage shares.

use serde::{Deserialize, Serialize};

use super::NamedPath;

use crate::model::bert::Pooling;
use crate::model::lora::LoraSpec;
use crate::model::precision::Precision;

/// Optimisation: AdamW with warm-up and a decaying schedule, gradient accumulation and
/// clipping, periodic evaluation and saving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Passes over the training set (ignored when `max_steps` > 0).
    pub epochs: usize,
    /// Optimizer steps to run; 0 means `epochs` decide.
    pub max_steps: usize,
    /// Rows per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Peak learning rate of a freshly initialised head (the reward model's score, the
    /// moderation classifier); unset: `lr`. A new head starts from noise while the body
    /// is already trained, so it can take larger steps.
    pub head_lr: Option<f64>,
    /// Layer-wise learning-rate decay: the top block trains at `lr`, each block below at
    /// this factor times the one above, the embeddings last (1.0: the same rate everywhere).
    pub layer_lr_decay: f64,
    /// Steps of linear warm-up from 0 to `lr`.
    pub warmup_steps: usize,
    /// After warm-up: `cosine` (to `min_lr_ratio`·lr), `linear` (to 0) or `constant`.
    pub schedule: Schedule,
    /// Floor of the cosine schedule as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// Decoupled weight decay (AdamW), on matrices only: biases and norms are not decayed.
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub max_grad_norm: f64,
    /// Seeds the data order (and the initialisation of models made from a preset).
    pub seed: u64,
    /// Evaluate on the validation set every N steps (0: only at the end).
    pub eval_every: usize,
    /// Write a checkpoint every N steps (0: only at the end).
    pub save_every: usize,
    /// One metrics line every N steps.
    pub log_every: usize,
    /// Save the weights of the best validation step instead of the last (sft: lowest loss,
    /// reward: highest accuracy, moderate: highest "any category" AUPRC).
    pub keep_best: bool,
    /// Stop once this many evaluations in a row have not improved on the best (0: never).
    pub patience: usize,
    /// `f32`, or `bf16`: matrix products and attention in bf16, weights, optimizer state,
    /// norms, softmax and losses in f32 (as `torch.autocast`); checkpoints stay f32.
    pub precision: Precision,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            max_steps: 0,
            batch_size: 8,
            grad_accum: 1,
            lr: 1e-4,
            head_lr: None,
            layer_lr_decay: 1.0,
            warmup_steps: 100,
            schedule: Schedule::Cosine,
            min_lr_ratio: 0.0,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            max_grad_norm: 1.0,
            seed: 0,
            eval_every: 200,
            save_every: 500,
            log_every: 10,
            keep_best: false,
            patience: 0,
            precision: Precision::F32,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Cosine,
    Linear,
    Constant,
}

impl TrainConfig {
    /// Checks what serde cannot: ranges and combinations. Messages name the key.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("train.batch_size", self.batch_size),
            ("train.grad_accum", self.grad_accum),
            ("train.log_every", self.log_every),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("key `{key}` must be at least 1"));
        }
        if self.epochs == 0 && self.max_steps == 0 {
            return Err(
                "key `train.epochs` is 0 and `train.max_steps` is 0: nothing to train".into()
            );
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("key `train.lr` must be a positive number, not {}", self.lr));
        }
        for (key, beta) in
            [("train.adam_beta1", self.adam_beta1), ("train.adam_beta2", self.adam_beta2)]
        {
            if !(0.0..1.0).contains(&beta) {
                return Err(format!("key `{key}` must be in [0, 1), not {beta}"));
            }
        }
        if let Some(head_lr) = self.head_lr {
            if !(head_lr > 0.0 && head_lr.is_finite()) {
                return Err(format!(
                    "key `train.head_lr` must be a positive number, not {head_lr}"
                ));
            }
        }
        if !(self.layer_lr_decay > 0.0 && self.layer_lr_decay <= 1.0) {
            return Err(format!(
                "key `train.layer_lr_decay` must be in (0, 1], not {}",
                self.layer_lr_decay
            ));
        }
        if self.adam_epsilon <= 0.0 {
            return Err("key `train.adam_epsilon` must be positive".into());
        }
        if self.weight_decay < 0.0 || self.max_grad_norm < 0.0 {
            return Err(
                "keys `train.weight_decay` and `train.max_grad_norm` cannot be negative".into()
            );
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(format!(
                "key `train.min_lr_ratio` must be in [0, 1], not {}",
                self.min_lr_ratio
            ));
        }
        if self.precision == Precision::Int8 {
            return Err("key `train.precision`: int8 is for decoding (generate, chat, serve); \
                 train in f32 or bf16"
                .into());
        }
        Ok(())
    }
}

/// Where a run writes its checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    pub dir: std::path::PathBuf,
    /// Replace an existing `dir` when not resuming (otherwise that is an error); `--force`
    /// on the command line sets it.
    pub overwrite: bool,
    /// When the resumable state (`state/`: optimizer moments, about twice the weights) is
    /// kept: `always` (a finished run can still be extended with --resume), or `until-done`
    /// (dropped from the final checkpoint).
    pub keep_state: KeepState,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self { dir: "runs/out".into(), overwrite: false, keep_state: KeepState::Always }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeepState {
    Always,
    UntilDone,
}

/// The model a stage starts from: a Hugging Face directory (`base`), or a preset initialised
/// from scratch (`init` + `tokenizer`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSource {
    pub base: Option<std::path::PathBuf>,
    /// A built-in preset name (`tiny`, `small`, …) or a preset TOML file.
    pub init: Option<String>,
    /// Tokenizer directory (or `tokenizer.json`) for `init`.
    pub tokenizer: Option<std::path::PathBuf>,
    /// Train only the top N blocks (0: all of them); the embeddings and the blocks below stay
    /// as they were, so backward stops early and the optimizer holds less.
    pub train_layers: usize,
    /// Draw the top N blocks afresh before training (and a BERT pooler); 0: keep them all.
    pub reinit_layers: usize,
    /// BERT-family classifiers: the sentence vector the head reads (unset: the checkpoint's,
    /// `cls` for a bare encoder).
    pub pooling: Option<Pooling>,
    /// `[model.lora]`: train LoRA adapters on the frozen model instead of every weight.
    pub lora: Option<LoraSpec>,
}

/// `data.max_len` against the model's context window of `window` tokens: a value the user set
/// must fit it (bad input otherwise); unset, the stage's `default` is capped at the window, and
/// the second value is a note saying so.
pub fn resolve_max_len(
    set: Option<usize>,
    default: usize,
    window: usize,
) -> Result<(usize, Option<String>), String> {
    match set {
        Some(n) if n > window => Err(format!(
            "key `data.max_len` = {n} exceeds the model's context window of {window} tokens\nhint: set it to {window} or less, or leave it unset to use the window"
        )),
        Some(n) => Ok((n, None)),
        None if default > window => Ok((
            window,
            Some(format!(
                "data.max_len is {window}, the model's context window (the default {default} does not fit it; set data.max_len to choose)"
            )),
        )),
        None => Ok((default, None)),
    }
}

/// Re-initialised blocks must be trained: `reinit_layers` ≤ `train_layers` when that is set.
pub fn check_reinit(reinit_layers: usize, train_layers: usize) -> Result<(), String> {
    if train_layers > 0 && reinit_layers > train_layers {
        return Err(format!(
            "key `model.reinit_layers` = {reinit_layers} exceeds `model.train_layers` = {train_layers}: re-initialised blocks would stay random\nhint: train at least as many blocks as you re-initialise"
        ));
    }
    Ok(())
}

/// `[model.lora]` checked: adapters are saved against a base model directory, and a block
/// drawn afresh would stay random under frozen weights.
pub fn check_lora(
    lora: Option<&LoraSpec>,
    has_base: bool,
    reinit_layers: usize,
) -> Result<(), String> {
    let Some(lora) = lora else { return Ok(()) };
    lora.validate()?;
    if !has_base {
        return Err("key `model.lora` needs `model.base`: adapters are saved against a base model directory\nhint: train the preset in full first, or remove [model.lora]".into());
    }
    if reinit_layers > 0 {
        return Err("keys `model.lora` and `model.reinit_layers` exclude each other: a block drawn afresh would stay random under frozen weights".into());
    }
    Ok(())
}

impl ModelSource {
    /// `model.base` (a model directory); `model.tokenizer` may be a directory or a file.
    pub fn paths(&self) -> Vec<NamedPath<'_>> {
        self.base.as_deref().map(|b| NamedPath::model("model.base", b)).into_iter().collect()
    }
}

impl ModelSource {
    pub fn validate(&self) -> Result<(), String> {
        check_reinit(self.reinit_layers, self.train_layers)?;
        check_lora(self.lora.as_ref(), self.base.is_some(), self.reinit_layers)?;
        if self.init.is_some() && self.pooling.is_some() {
            return Err("key `model.pooling` applies to BERT-family encoders, not to a preset decoder\nhint: remove it".into());
        }
        match (&self.base, &self.init, &self.tokenizer) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => Ok(()),
            (Some(_), Some(_), _) => {
                Err("keys `model.base` and `model.init` exclude each other: start from a checkpoint or from a preset".into())
            }
            (None, Some(_), None) => {
                Err("key `model.tokenizer` is required with `model.init` (a directory with tokenizer.json)".into())
            }
            (Some(_), None, Some(_)) => {
                Err("key `model.tokenizer` only goes with `model.init`; `model.base` brings its own".into())
            }
            (None, None, _) => Err(
                "no model: set `model.base` (a Hugging Face directory) or `model.init` (a preset) with `model.tokenizer`".into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 48: the default `data.max_len` of 512 failed on a model with a 256-token window,
    /// though the user had asked for nothing.
    #[test]
    fn an_unset_max_len_is_capped_at_the_window_and_a_set_one_checked() {
        let (len, note) = resolve_max_len(None, 512, 256).unwrap();
        assert_eq!(len, 256);
        assert!(note.unwrap().contains("the default 512 does not fit"));
        assert_eq!(resolve_max_len(None, 512, 1024).unwrap(), (512, None));
        assert_eq!(resolve_max_len(Some(128), 512, 256).unwrap(), (128, None));
        let err = resolve_max_len(Some(512), 512, 256).unwrap_err();
        assert!(
            err.starts_with(
                "key `data.max_len` = 512 exceeds the model's context window of 256 tokens"
            ),
            "{err}"
        );
    }
}
