//! `rlhf dpo`: Direct Preference Optimization (Rafailov et al., 2023) — the policy trained on
//! comparisons directly, against a frozen reference whose log-probabilities are computed once
//! before the first step; TRL's loss types (`sigmoid`, `ipo`, `hinge`, `robust`), defaults and
//! metric names. `kto.rs` is its unpaired sibling (`rlhf kto`).
//!
//! The loop, as the paper's algorithm reads: encode the comparisons → log π_ref of every
//! answer, once → for each step: log π of a batch's answers → the loss of each pair from the
//! log-ratios → the shared optimizer step → log `rewards/*`, `logps/*` → validate → save.

use anyhow::Result;
use burn::prelude::*;
use serde_json::{Value, json};

pub mod kto;
pub mod logps;
pub mod loss;
pub mod pairs;
pub mod policy;

use logps::{Cached, batch_of, sequence_log_probs};
use pairs::{Encoded, PairStats, PairSums, Pairs, encode_file, flat_completions, offsets};
use policy::{Policy, open_policy};

use crate::bad_input;
use crate::checkpoint::Source;
use crate::config::dpo::{DpoConfig, PreferenceData};
use crate::data::sft::{FitReport, SftEncoder};
use crate::data::template::ChatTemplate;
use crate::dist;
use crate::model::CausalLm;
use crate::train::run::{self, Stage, Trainer, round};
use crate::train::start::{self, CausalStart, TrainOptions};
use crate::train::step;

pub fn train(options: &TrainOptions, device: &Device) -> Result<()> {
    let config: DpoConfig = start::load_config(options, device)?;
    // Everything is loaded and checked before the first step, so bad input writes nothing.
    let start =
        open_policy("dpo", &config.model, &config.output.dir, options, config.train.seed, device)?;
    let data = Data::read(&config, &start)?;
    Run::new(config, start, data, device, &options.overrides)?.train()
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

/// A training run in progress.
struct Run {
    config: DpoConfig,
    policy: Policy,
    data: Data,
    trainer: Trainer,
    /// Validation statistics at the last evaluation.
    valid: Option<PairStats>,
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
        let (policy, resumed) = Policy::new(start, &config.model, &mut lineage, device)?;
        let trainer = Trainer::new(
            "dpo",
            &config.train,
            &config.output,
            data.train.len(),
            lineage,
            resumed,
            &policy.model,
            policy.config.layout(),
            device,
        )?;
        trainer.check_selection(data.valid.len())?;
        Ok(Self { config, policy, data, trainer, valid: None })
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
            let (train, valid) =
                (flat_completions(&self.data.train), flat_completions(&self.data.valid));
            let (source, out) = (&self.config.model, &self.config.output.dir);
            self.policy.prepare("dpo", source, out, &train, &valid, &self.trainer.log)?;
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
        let ad = &self.policy.device.clone().autodiff();
        let n = self.data.train.len();
        let micro_batches: Vec<Vec<usize>> =
            (0..self.config.train.grad_accum).map(|_| self.trainer.next_batch(n)).collect();
        let comparisons: usize = micro_batches.iter().map(Vec::len).sum();
        let (train, offsets, reference) =
            (&self.data.train, &self.data.offsets, &self.policy.reference.train);
        let cache = self.policy.frozen.as_ref().map(|f| &f.train);
        let (dpo, pad) = (&self.config.dpo, self.policy.pad);
        // The pairs' sums (`PairSums`), then tokens.
        let step = step::optimizer_step(
            &mut self.trainer,
            &mut self.policy.model,
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
        let policy = &self.policy;
        let stats = pairs::evaluate(
            &policy.model.valid(),
            &self.data.valid,
            &policy.reference.valid,
            policy.frozen.as_ref().map(|f| &f.valid),
            &self.config.dpo,
            policy.pad,
            &policy.device,
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
        let out = &self.config.output.dir;
        self.policy.save(out, &self.data.template, &mut self.trainer, metrics)
    }
}

impl Stage for Run {
    type Model = CausalLm;

    fn trainer(&mut self) -> &mut Trainer {
        &mut self.trainer
    }

    fn model(&mut self) -> &mut CausalLm {
        &mut self.policy.model
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
