//! The policy a `rlhf dpo` or `rlhf kto` run trains, with what it is measured against: the
//! reference's log-probabilities, computed once before the first step and kept in `state/`,
//! and — with `model.train_layers` — the frozen blocks' output, so that neither a second model
//! nor the frozen blocks run during training.

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::prelude::*;
use serde_json::Value;
use tokenizers::Tokenizer;

use super::logps::{FrozenStates, ReferenceLogps};
use crate::bad_input;
use crate::checkpoint::{Lineage, Source, save_atomically};
use crate::config::dpo::PolicySource;
use crate::data::completion::Completion;
use crate::data::template::ChatTemplate;
use crate::data::tokenizer;
use crate::dist;
use crate::metrics::RunLog;
use crate::model::lora::{LoraRun, save_policy};
use crate::model::{CausalLm, ModelConfig, load_causal_lm};
use crate::train::run::Trainer;
use crate::train::start::{CausalStart, LmSource, Resumed, TrainOptions, resume_error};
use crate::train::state::STATE_DIR;

pub(crate) struct Policy {
    /// On the autodiff device, with `model.train_layers` applied.
    pub model: CausalLm,
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    /// Where the tokenizer files (and the `model` chat template) come from.
    pub tokenizer_dir: PathBuf,
    /// log π_ref of every training and validation completion (set by `prepare`).
    pub reference: ReferenceLogps,
    /// With `model.train_layers`, the frozen blocks' output (set by `prepare`).
    pub frozen: Option<FrozenStates>,
    /// Resumed from the output directory: the reference is read back from its `state/`.
    resuming: bool,
    /// With `[model.lora]`: what the checkpoint's adapters apply to.
    lora: Option<LoraRun>,
    pub pad: u32,
    /// The plain (no autodiff) device, for the reference and validation.
    pub device: Device,
}

/// The policy a run starts from (on the autodiff device), with `model.train_layers` applied and
/// the same weights on every rank.
pub(crate) fn open_policy(
    stage: &str,
    source: &PolicySource,
    out: &Path,
    options: &TrainOptions,
    seed: u64,
    device: &Device,
) -> Result<CausalStart> {
    let lm = LmSource {
        base: source.base.as_deref(),
        init: source.init.as_deref(),
        tokenizer: source.tokenizer.as_deref(),
        lora: source.lora.as_ref(),
        train_layers: source.train_layers,
    };
    let ad = device.clone().autodiff();
    let mut start = CausalStart::open(stage, lm, out, options.resume, seed, &ad)?;
    start.model = start.model.train_top_layers(source.train_layers);
    start.model = dist::broadcast_parameters(start.model)?;
    Ok(start)
}

impl Policy {
    /// The policy `start` opened, and its resumed state (for the trainer); `lineage` gains the
    /// reference (`record_reference`).
    pub fn new(
        start: CausalStart,
        source: &PolicySource,
        lineage: &mut Lineage,
        device: &Device,
    ) -> Result<(Self, Option<Resumed>)> {
        record_reference(lineage, source.reference.as_deref(), start.resumed.as_ref())?;
        let policy = Self {
            pad: start.config.pad_id(&start.tokenizer),
            model: start.model,
            config: start.config,
            tokenizer: start.tokenizer,
            tokenizer_dir: start.tokenizer_dir,
            reference: ReferenceLogps::default(),
            frozen: None,
            resuming: start.resumed.is_some(),
            lora: start.lora,
            device: device.clone(),
        };
        Ok((policy, start.resumed))
    }

    /// Before this process's first step: the frozen blocks' output (with `train_layers`), then
    /// the reference's log-probabilities of `train` and `valid` — read from the run's `state/`
    /// when resuming, else computed once with `source.reference` (loaded, used and dropped)
    /// or, without one, with the starting policy itself.
    pub fn prepare(
        &mut self,
        stage: &str,
        source: &PolicySource,
        out: &Path,
        train: &[&Completion],
        valid: &[&Completion],
        log: &RunLog,
    ) -> Result<()> {
        let (pad, device) = (self.pad, &self.device);
        let policy = self.model.valid();
        self.frozen = FrozenStates::build(
            stage,
            &policy,
            source.train_layers,
            train,
            valid,
            pad,
            device,
            log,
        )?;
        let frozen = self.frozen.as_ref();
        self.reference = match (self.resuming, &source.reference) {
            (true, _) => ReferenceLogps::read(&out.join(STATE_DIR), train.len(), valid.len())
                .map_err(resume_error)?,
            (false, None) => {
                ReferenceLogps::compute(stage, &policy, frozen, train, valid, pad, device, log)?
            }
            (false, Some(dir)) => {
                let reference = load_reference(dir, &self.tokenizer, device)?;
                ReferenceLogps::compute(stage, &reference, None, train, valid, pad, device, log)?
            }
        };
        Ok(())
    }

    /// Saves the policy as an ordinary causal LM directory in `out` (atomically), with the
    /// trainer's state and the reference's log-probabilities in `state/`.
    pub fn save(
        &self,
        out: &Path,
        template: &ChatTemplate,
        trainer: &mut Trainer,
        metrics: Value,
    ) -> Result<()> {
        save_atomically(out, |dir| {
            let (model, config, from) = (&self.model, &self.config, &self.tokenizer_dir);
            save_policy(self.lora.as_ref(), model, config, from, dir)?;
            if let Some(source) = template.builtin_source() {
                tokenizer::set_chat_template(dir, source)?;
            }
            trainer.write_state(metrics, &self.model, self.config.layout(), dir)?;
            self.reference.write(&dir.join(STATE_DIR))
        })
    }
}

/// Keeps the reference model (path and hash) in the lineage, beside the parent: a new run
/// records `model.reference` (none: the parent is the reference), a resumed one what it
/// started with.
pub(crate) fn record_reference(
    lineage: &mut Lineage,
    reference: Option<&Path>,
    resumed: Option<&Resumed>,
) -> Result<()> {
    let source = match (resumed, reference) {
        (Some(resumed), _) => resumed.lineage.config.get("reference").cloned(),
        (None, Some(dir)) => Some(serde_json::to_value(Source::model_dir(dir)?)?),
        (None, None) => None,
    };
    if let Some(source) = source.filter(|s| !s.is_null()) {
        lineage.config["reference"] = source;
    }
    Ok(())
}

/// The causal LM in `dir` as a reference for a policy with `policy_tokenizer`: their
/// vocabularies must agree, or their log-probabilities do not compare.
pub fn load_reference(
    dir: &Path,
    policy_tokenizer: &Tokenizer,
    device: &Device,
) -> Result<CausalLm> {
    let loaded = load_causal_lm(dir, device)?;
    let same_vocabulary = match &loaded.tokenizer {
        Some(tokenizer) => tokenizer.get_vocab(true) == policy_tokenizer.get_vocab(true),
        None => loaded.config.vocab_size() >= policy_tokenizer.get_vocab_size(true),
    };
    if !same_vocabulary {
        return Err(bad_input!(
            "{}: the reference's tokenizer differs from the policy's, so their log-probabilities do not compare\nhint: use the model the policy was trained from (usually the SFT checkpoint)",
            dir.display()
        ));
    }
    Ok(loaded.model)
}
