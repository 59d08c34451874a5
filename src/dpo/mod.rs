//! `rlhf dpo`: Direct Preference Optimization (Rafailov et al., 2023) — the policy trained on
//! comparisons directly, against a frozen reference whose log-probabilities are computed once
//! before the first step; TRL's loss types (`sigmoid`, `ipo`, `hinge`, `robust`), defaults and
//! metric names. `kto.rs` is its unpaired sibling (`rlhf kto`).
//!
//! The loop, as the paper's algorithm reads: encode the comparisons → log π_ref of every
//! answer, once → for each step: log π of a batch's answers → the loss of each pair from the
//! log-ratios → the shared optimizer step → log `rewards/*`, `logps/*` → validate → save.

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::prelude::*;
use serde_json::{Value, json};
use tokenizers::Tokenizer;

pub mod kto;
pub mod logps;
pub mod loss;
pub mod pairs;

use logps::{Cached, FrozenStates, ReferenceLogps, batch_of, sequence_log_probs};
use pairs::{Encoded, PairStats, PairSums, Pairs, encode_file, flat_completions, offsets};

use crate::bad_input;
use crate::checkpoint::{Source, save_atomically};
use crate::config::dpo::{DpoConfig, PolicySource, PreferenceData};
use crate::data::completion::Completion;
use crate::data::sft::{FitReport, SftEncoder};
use crate::data::template::ChatTemplate;
use crate::data::tokenizer;
use crate::dist;
use crate::metrics::RunLog;
use crate::model::{CausalLm, ModelConfig, load_causal_lm, save_causal_lm};
use crate::train::run::{self, Stage, Trainer, round};
use crate::train::start::{self, CausalStart, LmSource, TrainOptions, resume_error};
use crate::train::state::STATE_DIR;
use crate::train::step;

pub fn train(options: &TrainOptions, device: &Device) -> Result<()> {
    let config: DpoConfig = start::load_config(options, device)?;
    // Everything is loaded and checked before the first step, so bad input writes nothing.
    let start =
        open_policy("dpo", &config.model, &config.output.dir, options, config.train.seed, device)?;
    let data = Data::read(&config, &start)?;
    Run::new(config, start, data, device, &options.overrides)?.train()
}

/// The policy a run trains (on the autodiff device), with `model.train_layers` applied and
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
    };
    let ad = device.clone().autodiff();
    let mut start = CausalStart::open(stage, lm, out, options.resume, seed, &ad)?;
    start.model = start.model.train_top_layers(source.train_layers);
    start.model = dist::broadcast_parameters(start.model)?;
    Ok(start)
}

/// How the run's conversations become tokens: the chat template (`data.template`, else the
/// starting model's own, else ChatML) and SFT's encoder.
pub(crate) struct Encoding {
    pub template: ChatTemplate,
    max_len: usize,
}

impl Encoding {
    pub fn resolve(data: &PreferenceData, start: &CausalStart) -> Result<Self> {
        let window = start.config.context_window();
        if data.max_len > window {
            return Err(bad_input!(
                "key `data.max_len` = {} exceeds the model's context window of {window} tokens",
                data.max_len
            ));
        }
        let template = ChatTemplate::resolve(data.template.as_deref(), &start.tokenizer_dir)?;
        Ok(Self { template, max_len: data.max_len })
    }

    pub fn encoder<'a>(&'a self, data: &PreferenceData, start: &'a CausalStart) -> SftEncoder<'a> {
        SftEncoder {
            tokenizer: &start.tokenizer,
            template: &self.template,
            max_len: self.max_len,
            truncation: data.truncation,
            eos: start.config.eos_id(&start.tokenizer),
            eos_after_answers: matches!(self.template, ChatTemplate::Hh),
        }
    }
}

/// Says once how many rows did not fit `data.max_len`.
pub(crate) fn warn_fit(stage: &str, what: &str, report: FitReport, max_len: usize) {
    if report.truncated + report.dropped > 0 {
        dist::warn(&format!(
            "{stage}: {} {what} longer than data.max_len = {max_len}: {} with prompts cut from the left, {} dropped",
            report.truncated + report.dropped,
            report.truncated,
            report.dropped
        ));
    }
}

/// Training and validation comparisons, encoded.
struct Data {
    train: Vec<Encoded>,
    valid: Vec<Encoded>,
    /// Comparison i's completions are flat completions `offsets[i]..offsets[i + 1]`.
    offsets: Vec<usize>,
    template: ChatTemplate,
    files: Vec<Source>,
}

impl Data {
    fn read(config: &DpoConfig, start: &CausalStart) -> Result<Self> {
        let data = &config.data;
        let encoding = Encoding::resolve(data, start)?;
        let encoder = encoding.encoder(data, start);
        let mut report = FitReport::default();
        let (train, valid, files) = run::read_splits(
            &data.train,
            data.valid.as_deref(),
            data.valid_fraction,
            config.train.seed,
            |path| {
                let (encoded, fit) = encode_file(path, &encoder)?;
                report.truncated += fit.truncated;
                report.dropped += fit.dropped;
                Ok(encoded)
            },
        )?;
        warn_fit("dpo", "comparison(s)", report, data.max_len);
        if train.is_empty() {
            return Err(bad_input!(
                "{}: no comparison fits data.max_len = {}",
                data.train.display(),
                data.max_len
            ));
        }
        let offsets = offsets(&train);
        Ok(Self { train, valid, offsets, template: encoding.template, files })
    }
}

/// The reference's log-probabilities of `train` and `valid`: read from the run's `state/`
/// when resuming, else computed once with `model.reference` (loaded, used and dropped) or,
/// without one, with the starting policy itself (from its `frozen` blocks' output, if any).
#[allow(clippy::too_many_arguments)]
pub(crate) fn prepare_reference(
    stage: &str,
    reference: Option<&Path>,
    resuming: Option<&Path>,
    policy: &CausalLm,
    frozen: Option<&FrozenStates>,
    policy_tokenizer: &Tokenizer,
    train: &[&Completion],
    valid: &[&Completion],
    pad: u32,
    device: &Device,
    log: &RunLog,
) -> Result<ReferenceLogps> {
    if let Some(out) = resuming {
        return ReferenceLogps::read(&out.join(STATE_DIR), train.len(), valid.len())
            .map_err(resume_error);
    }
    let Some(dir) = reference else {
        let policy = policy.valid();
        return ReferenceLogps::compute(stage, &policy, frozen, train, valid, pad, device, log);
    };
    let reference = load_reference(dir, policy_tokenizer, device)?;
    ReferenceLogps::compute(stage, &reference, None, train, valid, pad, device, log)
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

/// A training run in progress.
struct Run {
    config: DpoConfig,
    model: CausalLm,
    model_config: ModelConfig,
    tokenizer: Tokenizer,
    tokenizer_dir: PathBuf,
    data: Data,
    trainer: Trainer,
    /// log π_ref of every training and validation completion (set when training starts).
    reference: ReferenceLogps,
    /// With `model.train_layers`, the frozen blocks' output (set when training starts).
    frozen: Option<FrozenStates>,
    /// Resumed from the output directory (the reference is read from its state).
    resuming: bool,
    /// Validation statistics at the last evaluation.
    valid: Option<PairStats>,
    pad: u32,
    /// The plain (no autodiff) device, for the reference and validation.
    device: Device,
}

impl Run {
    fn new(
        config: DpoConfig,
        start: CausalStart,
        data: Data,
        device: &Device,
        overrides: &[String],
    ) -> Result<Self> {
        let mut lineage =
            run::lineage("dpo", &config, overrides, start.parent.clone(), data.files.clone())?;
        record_reference(&mut lineage, config.model.reference.as_deref(), start.resumed.as_ref())?;
        let resuming = start.resumed.is_some();
        let trainer = Trainer::new(
            "dpo",
            &config.train,
            &config.output,
            data.train.len(),
            lineage,
            start.resumed,
            &start.model,
            start.config.layout(),
            device,
        )?;
        trainer.check_selection(data.valid.len())?;
        let pad = start.config.pad_id(&start.tokenizer);
        Ok(Self {
            config,
            model: start.model,
            model_config: start.config,
            tokenizer: start.tokenizer,
            tokenizer_dir: start.tokenizer_dir,
            data,
            trainer,
            reference: ReferenceLogps::default(),
            frozen: None,
            resuming,
            valid: None,
            pad,
            device: device.clone(),
        })
    }

    fn train(&mut self) -> Result<()> {
        let train = &self.config.train;
        let t = &self.trainer;
        let pairs: usize = self.data.train.iter().map(|e| e.comparison.pairs().len()).sum();
        if t.progress.step == 0 {
            t.log.say(&format!(
                "dpo: {} comparisons ({pairs} pairs; {} for validation), {} steps of {} × {} comparisons, loss {} with β = {}",
                self.data.train.len(),
                self.data.valid.len(),
                t.total_steps,
                train.grad_accum,
                train.batch_size,
                self.config.dpo.loss_type.name(),
                self.config.dpo.beta,
            ));
        }
        if t.progress.step < t.total_steps {
            let out = self.config.output.dir.clone();
            let (train, valid) =
                (flat_completions(&self.data.train), flat_completions(&self.data.valid));
            self.frozen = FrozenStates::build(
                "dpo",
                &self.model.valid(),
                self.config.model.train_layers,
                &train,
                &valid,
                self.pad,
                &self.device,
                &self.trainer.log,
            )?;
            self.reference = prepare_reference(
                "dpo",
                self.config.model.reference.as_deref(),
                self.resuming.then_some(out.as_path()),
                &self.model,
                self.frozen.as_ref(),
                &self.tokenizer,
                &train,
                &valid,
                self.pad,
                &self.device,
                &self.trainer.log,
            )?;
            self.trainer.restart_rates();
        }
        run::run(self)?;
        let valid = self.valid.map_or(String::new(), |v| {
            format!(", valid reward accuracy {:.4} (margin {:.4})", v.accuracy, v.margin())
        });
        if dist::is_main() {
            eprintln!(
                "dpo: {} steps in {:.1} s{valid}; saved {}",
                self.trainer.progress.step,
                self.trainer.progress.seconds,
                self.trainer.out.display()
            );
        }
        Ok(())
    }

    /// One optimizer step over `grad_accum` micro-batches of comparisons. The loss is a mean
    /// over the step's comparisons, each the weighted sum of its pairs (a pair row weighs 1).
    fn optimizer_step(&mut self, lr: f64) -> Result<(PairStats, f64)> {
        let ad = &self.device.clone().autodiff();
        let n = self.data.train.len();
        let micro_batches: Vec<Vec<usize>> =
            (0..self.config.train.grad_accum).map(|_| self.trainer.next_batch(n)).collect();
        let comparisons: usize = micro_batches.iter().map(Vec::len).sum();
        let (train, offsets, reference) =
            (&self.data.train, &self.data.offsets, &self.reference.train);
        let cache = self.frozen.as_ref().map(|f| &f.train);
        let (dpo, pad) = (&self.config.dpo, self.pad);
        // The pairs' sums (`PairSums`), then tokens.
        let step = step::optimizer_step(
            &mut self.trainer,
            &mut self.model,
            &micro_batches,
            lr,
            |model, rows, sums: &mut [f64; 9]| {
                let examples: Vec<&Encoded> = rows.iter().map(|&i| &train[i]).collect();
                let references: Vec<&[f32]> =
                    rows.iter().map(|&i| &reference[offsets[i]..offsets[i + 1]]).collect();
                let (pairs, completions) = Pairs::new(&examples, &references, ad);
                sums[8] += completions.iter().map(|c| c.len()).sum::<usize>() as f64;
                let flat: Vec<usize> =
                    rows.iter().flat_map(|&i| offsets[i]..offsets[i + 1]).collect();
                let cached = cache.map(|cache| Cached { cache, rows: &flat });
                let logps = sequence_log_probs(model, &batch_of(&completions, pad, ad), cached);
                let (loss, mine) = pairs.loss(dpo, logps);
                let before = PairSums::from_array(sums[..8].try_into().expect("8 sums"));
                sums[..8].copy_from_slice(&before.merge(mine).to_array());
                loss.div_scalar(comparisons as f64)
            },
            |sums| PairSums::from_array(sums[..8].try_into().expect("8 sums")).stats().loss,
        )?;
        self.trainer.progress.tokens += step.sums[8] as u64;
        let sums = PairSums::from_array(step.sums[..8].try_into().expect("8 sums"));
        Ok((sums.stats(), step.grad_norm))
    }

    /// Validation statistics (recorded).
    fn validate(&mut self) -> Result<PairStats> {
        let model = self.model.valid();
        let stats = pairs::evaluate(
            &model,
            &self.data.valid,
            &self.reference.valid,
            self.frozen.as_ref().map(|f| &f.valid),
            &self.config.dpo,
            self.pad,
            &self.device,
        )?;
        let step = self.trainer.progress.step;
        let mut record = stats.json("valid_");
        record.insert("step".into(), step.into());
        self.trainer.log.record(Value::Object(record));
        self.trainer.log.say(&format!(
            "step {step}: valid loss {:.4}, reward accuracy {:.4}, margin {:.4}",
            stats.loss,
            stats.accuracy,
            stats.margin()
        ));
        Ok(stats)
    }

    fn write_checkpoint(&mut self) -> Result<()> {
        let valid = self.valid;
        let metrics = json!({
            "step": self.trainer.progress.step,
            "valid_loss": valid.map(|v| v.loss),
            "valid_rewards/accuracies": valid.map(|v| v.accuracy),
            "valid_rewards/margins": valid.map(|v| v.margin()),
        });
        let reference = &self.reference;
        save_atomically(&self.config.output.dir, |dir| {
            save_causal_lm(&self.model, &self.model_config, Some(&self.tokenizer_dir), dir)?;
            if let Some(source) = self.data.template.builtin_source() {
                tokenizer::set_chat_template(dir, source)?;
            }
            self.trainer.write_state(metrics, &self.model, self.model_config.layout(), dir)?;
            reference.write(&dir.join(STATE_DIR))
        })
    }
}

/// Keeps the reference model (path and hash) in the lineage, beside the parent: a new run
/// records `model.reference` (none: the parent is the reference), a resumed one what it
/// started with.
pub(crate) fn record_reference(
    lineage: &mut crate::checkpoint::Lineage,
    reference: Option<&Path>,
    resumed: Option<&start::Resumed>,
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

impl Stage for Run {
    type Model = CausalLm;

    fn trainer(&mut self) -> &mut Trainer {
        &mut self.trainer
    }

    fn model(&mut self) -> &mut CausalLm {
        &mut self.model
    }

    fn examples(&self) -> usize {
        self.data.train.len()
    }

    fn step(&mut self, lr: f64) -> Result<(Value, String)> {
        let (stats, grad_norm) = self.optimizer_step(lr)?;
        let rate = self.trainer.rows_per_second();
        let mut record = stats.json("");
        record.insert("grad_norm".into(), round(grad_norm, 5).into());
        record.insert("tokens".into(), self.trainer.progress.tokens.into());
        record.insert("comparisons_per_s".into(), round(rate, 2).into());
        let message = format!(
            "loss {:.4}  acc {:.3}  margin {:.3}  lr {lr:.2e}  {rate:.1} cmp/s",
            stats.loss,
            stats.accuracy,
            stats.margin()
        );
        Ok((Value::Object(record), message))
    }

    /// Lower validation loss is better.
    fn evaluate(&mut self) -> Result<Option<f64>> {
        if self.data.valid.is_empty() {
            return Ok(None);
        }
        let stats = self.validate()?;
        self.valid = Some(stats);
        Ok(Some(-stats.loss))
    }

    fn save(&mut self) -> Result<()> {
        self.write_checkpoint()
    }
}
