//! `rlhf kto`: Kahneman–Tversky Optimization (Ethayarajh et al., 2024) — the policy learns
//! from answers marked good or bad one at a time, against a frozen reference and a reference
//! point z₀: the KL between policy and reference estimated from each row's prompt paired with
//! another row's answer, clamped at 0 and not differentiated (TRL's `KTOTrainer`).
//!
//! The loop: encode the rows and their mismatched pairs → log π_ref of both, once → for each
//! step: z₀ of each micro-batch from its mismatched pairs (no gradient) → log π of the rows'
//! answers → KTO's loss → the shared optimizer step → log → validate → save.
//!
//! The mismatched pairs are fixed when the data is read, as TRL fixes them: rows in file order,
//! in groups of `train.batch_size`, each prompt with the previous row's answer (the group's
//! first with its last; a lone last row joins the group before it), so that the reference's
//! log-probabilities of them can be computed once.

use std::path::Path;

use anyhow::Result;
use burn::prelude::*;
use serde_json::{Map, Value, json};

use super::logps::{Cached, all_log_probs, batch_of, floats, sequence_log_probs};
use super::loss::{kto_kl, kto_loss};
use super::policy::{Policy, open_policy};
use super::{Encoding, warn_fit};
use crate::bad_input;
use crate::checkpoint::Source;
use crate::config::dpo::{KtoConfig, KtoLoss};
use crate::data::completion::Completion;
use crate::data::feedback::Feedback;
use crate::data::jsonl::read_rows;
use crate::data::sft::{FitReport, SftEncoder};
use crate::data::template::ChatTemplate;
use crate::dist;
use crate::model::CausalLm;
use crate::train::run::{self, Stage, Trainer, round};
use crate::train::start::{self, CausalStart, TrainOptions};
use crate::train::step;

pub fn train(options: &TrainOptions, device: &Device) -> Result<()> {
    let config: KtoConfig = start::load_config(options, device)?;
    // Everything is loaded and checked before the first step, so bad input writes nothing.
    let start =
        open_policy("kto", &config.model, &config.output.dir, options, config.train.seed, device)?;
    let data = Data::read(&config, &start)?;
    Run::new(config, start, data, device, &options.overrides)?.train()
}

/// A row encoded: its answer, whether it is desirable, and the mismatched pair that estimates
/// the KL (this row's prompt, another row's answer).
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub completion: Completion,
    pub mismatched: Completion,
    pub desirable: bool,
}

/// Reads and encodes every row of `path` (errors name `FILE:LINE`); rows that do not fit and
/// are dropped are counted.
pub fn encode_file(
    path: &Path,
    encoder: &SftEncoder,
) -> Result<(Vec<(Completion, bool)>, FitReport)> {
    let mut report = FitReport::default();
    let mut encoded = Vec::new();
    for row in read_rows(path)? {
        let at = row.error_at(path);
        for feedback in Feedback::parse(&row.fields).map_err(&at)? {
            let completion =
                encoder.encode_completion(&feedback.prompt, &feedback.answer, &mut report);
            if let Some(completion) = completion.map_err(&at)? {
                encoded.push((completion, feedback.desirable));
            }
        }
    }
    Ok((encoded, report))
}

/// Each row with its mismatched pair: in groups of `group` rows (a lone last row joins the
/// group before it), row k's prompt with row k − 1's answer and the first row's with the
/// last's (TRL's rotation). A pair longer than `max_len` loses the start of its prompt.
pub fn pair_up(rows: Vec<(Completion, bool)>, group: usize, max_len: usize) -> Vec<Judged> {
    let n = rows.len();
    let mut bounds: Vec<usize> = (0..n).step_by(group.max(2)).collect();
    if n - bounds[bounds.len() - 1] == 1 && bounds.len() > 1 {
        bounds.pop();
    }
    bounds.push(n);
    let mut judged = Vec::with_capacity(n);
    for w in bounds.windows(2) {
        let (from, to) = (w[0], w[1]);
        for k in from..to {
            let partner = if k == from { to - 1 } else { k - 1 };
            let mut prompt = rows[k].0.prompt.clone();
            let answer = rows[partner].0.answer.clone();
            let excess = (prompt.len() + answer.len()).saturating_sub(max_len);
            prompt.drain(..excess.min(prompt.len().saturating_sub(1)));
            judged.push(Judged {
                completion: rows[k].0.clone(),
                mismatched: Completion { prompt, answer },
                desirable: rows[k].1,
            });
        }
    }
    judged
}

/// The rows' answers, then their mismatched pairs (the order of the reference log-probs).
fn flat(rows: &[Judged]) -> Vec<&Completion> {
    rows.iter().map(|r| &r.completion).chain(rows.iter().map(|r| &r.mismatched)).collect()
}

/// Training and validation rows, encoded and paired.
struct Data {
    train: Vec<Judged>,
    valid: Vec<Judged>,
    template: ChatTemplate,
    files: Vec<Source>,
}

impl Data {
    fn read(config: &KtoConfig, start: &CausalStart) -> Result<Self> {
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
        warn_fit("kto", "row(s)", report, data.max_len);
        if train.len() < 2 {
            return Err(bad_input!(
                "{}: {} row(s) fit data.max_len = {}; KTO needs at least two (each prompt is also paired with another row's answer)",
                data.train.display(),
                train.len(),
                data.max_len
            ));
        }
        let desirable = train.iter().filter(|(_, d)| *d).count();
        if desirable == 0 || desirable == train.len() {
            dist::warn(&format!(
                "kto: every training row is {}; KTO learns from both kinds",
                if desirable == 0 { "undesirable" } else { "desirable" }
            ));
        }
        let group = config.train.batch_size;
        let valid = match valid.len() {
            0 | 1 => Vec::new(),
            _ => pair_up(valid, group, data.max_len),
        };
        let train = pair_up(train, group, data.max_len);
        Ok(Self { train, valid, template: encoding.template, files })
    }
}

/// Sums over rows for TRL's metrics, split by label; an array crosses ranks.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct KtoSums {
    pub loss: f64,
    pub desirable: f64,
    pub undesirable: f64,
    pub chosen_reward: f64,
    pub rejected_reward: f64,
    pub chosen_logp: f64,
    pub rejected_logp: f64,
}

impl KtoSums {
    /// Adds rows: their losses, policy and reference log-probabilities and labels.
    pub fn add(
        &mut self,
        beta: f64,
        losses: &[f32],
        logps: &[f32],
        reference: &[f32],
        desirable: &[bool],
    ) {
        for i in 0..losses.len() {
            let reward = beta * (logps[i] as f64 - reference[i] as f64);
            self.loss += losses[i] as f64;
            if desirable[i] {
                self.desirable += 1.0;
                self.chosen_reward += reward;
                self.chosen_logp += logps[i] as f64;
            } else {
                self.undesirable += 1.0;
                self.rejected_reward += reward;
                self.rejected_logp += logps[i] as f64;
            }
        }
    }

    pub fn to_array(self) -> [f64; 7] {
        let Self {
            loss,
            desirable,
            undesirable,
            chosen_reward,
            rejected_reward,
            chosen_logp,
            rejected_logp,
        } = self;
        [loss, desirable, undesirable, chosen_reward, rejected_reward, chosen_logp, rejected_logp]
    }

    pub fn from_array(
        [loss, desirable, undesirable, chosen_reward, rejected_reward, chosen_logp, rejected_logp]: [f64; 7],
    ) -> Self {
        Self {
            loss,
            desirable,
            undesirable,
            chosen_reward,
            rejected_reward,
            chosen_logp,
            rejected_logp,
        }
    }

    /// TRL's names: `loss` (mean over rows), `kl`, and `rewards/*`, `logps/*` per label (left
    /// out where no row has that label, as TRL leaves them out).
    pub fn json(&self, prefix: &str, kl: f64) -> Map<String, Value> {
        let rows = (self.desirable + self.undesirable).max(1.0);
        let mut values = vec![("loss", self.loss / rows), ("kl", kl)];
        if self.desirable > 0.0 {
            values.push(("rewards/chosen", self.chosen_reward / self.desirable));
            values.push(("logps/chosen", self.chosen_logp / self.desirable));
        }
        if self.undesirable > 0.0 {
            values.push(("rewards/rejected", self.rejected_reward / self.undesirable));
            values.push(("logps/rejected", self.rejected_logp / self.undesirable));
        }
        if self.desirable > 0.0 && self.undesirable > 0.0 {
            let margin =
                self.chosen_reward / self.desirable - self.rejected_reward / self.undesirable;
            values.push(("rewards/margins", margin));
        }
        values.into_iter().map(|(k, v)| (format!("{prefix}{k}"), json!(round(v, 6)))).collect()
    }
}

/// The KTO loss of some rows `[B]` and their statistics, given their policy log-probabilities.
fn rows_loss(
    config: &KtoLoss,
    logps: Tensor<1>,
    reference: &[f32],
    desirable: &[bool],
    kl: f64,
) -> (Tensor<1>, KtoSums) {
    let device = logps.device();
    let b = reference.len();
    let reference_t = Tensor::from_data(TensorData::new(reference.to_vec(), [b]), &device);
    let labels: Vec<f32> = desirable.iter().map(|&d| f32::from(u8::from(d))).collect();
    let labels = Tensor::from_data(TensorData::new(labels, [b]), &device);
    let losses = kto_loss(config, logps.clone() - reference_t, labels, kl);
    let values = floats(Tensor::cat(vec![losses.clone().detach(), logps.detach()], 0));
    let mut sums = KtoSums::default();
    sums.add(config.beta, &values[..b], &values[b..], reference, desirable);
    (losses, sums)
}

/// A training run in progress.
struct Run {
    config: KtoConfig,
    /// Its reference log-probabilities: the rows' answers, then their mismatched pairs (`flat`).
    policy: Policy,
    data: Data,
    trainer: Trainer,
    /// Validation loss at the last evaluation.
    valid_loss: Option<f64>,
}

impl Run {
    fn new(
        config: KtoConfig,
        start: CausalStart,
        data: Data,
        device: &Device,
        overrides: &[String],
    ) -> Result<Self> {
        let mut lineage =
            run::lineage("kto", &config, overrides, start.parent.clone(), data.files.clone())?;
        let (policy, resumed) = Policy::new(start, &config.model, &mut lineage, device)?;
        let trainer = Trainer::new(
            "kto",
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
        Ok(Self { config, policy, data, trainer, valid_loss: None })
    }

    fn train(&mut self) -> Result<()> {
        let train = &self.config.train;
        let t = &self.trainer;
        if t.progress.step == 0 {
            let desirable = self.data.train.iter().filter(|r| r.desirable).count();
            t.log.say(&format!(
                "kto: {} rows ({desirable} desirable, {} undesirable; {} for validation), {} steps of {} × {} rows, β = {}",
                self.data.train.len(),
                self.data.train.len() - desirable,
                self.data.valid.len(),
                t.total_steps,
                train.grad_accum,
                train.batch_size,
                self.config.kto.beta,
            ));
        }
        if t.progress.step < t.total_steps {
            let (train, valid) = (flat(&self.data.train), flat(&self.data.valid));
            let (source, out) = (&self.config.model, &self.config.output.dir);
            self.policy.prepare("kto", source, out, &train, &valid, &self.trainer.log)?;
            self.trainer.restart_rates();
        }
        run::run(self)?;
        let valid = self.valid_loss.map_or(String::new(), |l| format!(", valid loss {l:.4}"));
        if dist::is_main() {
            eprintln!(
                "kto: {} steps in {:.1} s{valid}; saved {}",
                self.trainer.progress.step,
                self.trainer.progress.seconds,
                self.trainer.out.display()
            );
        }
        Ok(())
    }

    /// z₀ of each micro-batch: the mean log-ratio of its rows' mismatched pairs over every
    /// rank, clamped at 0, from the policy as it is before the step (no gradient).
    fn reference_points(&self, micro_batches: &[Vec<usize>]) -> Result<Vec<f64>> {
        let policy = &self.policy;
        let model = policy.model.valid();
        let n = self.data.train.len();
        let mut sums = vec![0.0; 3 * micro_batches.len()];
        for (m, rows) in micro_batches.iter().enumerate() {
            let rows = dist::shard(rows);
            if rows.is_empty() {
                continue;
            }
            let pairs: Vec<&Completion> =
                rows.iter().map(|&i| &self.data.train[i].mismatched).collect();
            let flat: Vec<usize> = rows.iter().map(|&i| n + i).collect();
            let cached = policy.frozen.as_ref().map(|f| Cached { cache: &f.train, rows: &flat });
            let batch = batch_of(&pairs, policy.pad, &policy.device);
            let logps = floats(sequence_log_probs(&model, &batch, cached));
            sums[3 * m] += logps.iter().map(|&v| v as f64).sum::<f64>();
            sums[3 * m + 1] +=
                rows.iter().map(|&i| policy.reference.train[n + i] as f64).sum::<f64>();
            sums[3 * m + 2] += rows.len() as f64;
        }
        dist::sum(&mut sums)?;
        Ok(sums.chunks(3).map(|s| kto_kl(s[0], s[1], s[2] as usize)).collect())
    }

    /// One optimizer step over `grad_accum` micro-batches of rows; the loss is a mean over the
    /// step's rows. Returns the statistics, the mean z₀ and the gradient norm.
    fn optimizer_step(&mut self, lr: f64) -> Result<(KtoSums, f64, f64)> {
        let ad = &self.policy.device.clone().autodiff();
        let n = self.data.train.len();
        let micro_batches: Vec<Vec<usize>> =
            (0..self.config.train.grad_accum).map(|_| self.trainer.next_batch(n)).collect();
        let kls = self.reference_points(&micro_batches)?;
        let rows_in_step: usize = micro_batches.iter().map(Vec::len).sum();
        let (train, reference, kto, pad) =
            (&self.data.train, &self.policy.reference.train, &self.config.kto, self.policy.pad);
        let cache = self.policy.frozen.as_ref().map(|f| &f.train);
        // A rank's share of a micro-batch is a slice of it: its address says which one.
        let micro_batch_of = |rows: &[usize]| {
            micro_batches
                .iter()
                .position(|mb| mb.as_ptr_range().contains(&rows.as_ptr()))
                .expect("a share of one of the step's micro-batches")
        };
        // `KtoSums`, then tokens.
        let step = step::optimizer_step(
            &mut self.trainer,
            &mut self.policy.model,
            &micro_batches,
            lr,
            |model, rows, sums: &mut [f64; 8]| {
                let kl = kls[micro_batch_of(rows)];
                let completions: Vec<&Completion> =
                    rows.iter().map(|&i| &train[i].completion).collect();
                let references: Vec<f32> = rows.iter().map(|&i| reference[i]).collect();
                let desirable: Vec<bool> = rows.iter().map(|&i| train[i].desirable).collect();
                sums[7] += completions.iter().map(|c| c.len()).sum::<usize>() as f64;
                let cached = cache.map(|cache| Cached { cache, rows });
                let logps = sequence_log_probs(model, &batch_of(&completions, pad, ad), cached);
                let (losses, mine) = rows_loss(kto, logps, &references, &desirable, kl);
                let before = KtoSums::from_array(sums[..7].try_into().expect("7 sums"));
                let mut after = before.to_array();
                after.iter_mut().zip(mine.to_array()).for_each(|(a, b)| *a += b);
                sums[..7].copy_from_slice(&after);
                losses.sum().div_scalar(rows_in_step as f64)
            },
            |sums| sums[0] / rows_in_step as f64,
        )?;
        self.trainer.progress.tokens += step.sums[7] as u64;
        let sums = KtoSums::from_array(step.sums[..7].try_into().expect("7 sums"));
        let kl = kls.iter().sum::<f64>() / kls.len() as f64;
        Ok((sums, kl, step.grad_norm))
    }

    /// Validation loss and statistics (recorded), z₀ taken over the whole validation set.
    fn validate(&mut self) -> Result<f64> {
        let Policy { model, frozen, reference, pad, device, .. } = &self.policy;
        let rows = &self.data.valid;
        let n = rows.len();
        let cache = frozen.as_ref().map(|f| &f.valid);
        let logps = all_log_probs(&model.valid(), &flat(rows), cache, *pad, device, &|| Ok(()))?;
        let reference = &reference.valid;
        let sum = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>();
        let kl = kto_kl(sum(&logps[n..]), sum(&reference[n..]), n);
        let desirable: Vec<bool> = rows.iter().map(|r| r.desirable).collect();
        let policy = Tensor::from_data(TensorData::new(logps[..n].to_vec(), [n]), device);
        let (_, sums) = rows_loss(&self.config.kto, policy, &reference[..n], &desirable, kl);
        let step = self.trainer.progress.step;
        let mut record = sums.json("valid_", kl);
        record.insert("step".into(), step.into());
        self.trainer.log.record(Value::Object(record));
        let loss = sums.loss / n as f64;
        self.trainer.log.say(&format!("step {step}: valid loss {loss:.4}, kl {kl:.4}"));
        Ok(loss)
    }

    fn write_checkpoint(&mut self) -> Result<()> {
        let metrics = json!({ "step": self.trainer.progress.step, "valid_loss": self.valid_loss });
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
        let (sums, kl, grad_norm) = self.optimizer_step(lr)?;
        let rate = self.trainer.rows_per_second();
        let mut record = sums.json("", kl);
        record.insert("grad_norm".into(), round(grad_norm, 5).into());
        record.insert("tokens".into(), self.trainer.progress.tokens.into());
        record.insert("rows_per_s".into(), round(rate, 2).into());
        let loss = sums.loss / (sums.desirable + sums.undesirable).max(1.0);
        let message = format!("loss {loss:.4}  kl {kl:.4}  lr {lr:.2e}  {rate:.1} rows/s");
        Ok((Value::Object(record), message))
    }

    /// Lower validation loss is better.
    fn evaluate(&mut self) -> Result<Option<f64>> {
        if self.data.valid.is_empty() {
            return Ok(None);
        }
        let loss = self.validate()?;
        self.valid_loss = Some(loss);
        Ok(Some(-loss))
    }

    fn save(&mut self) -> Result<()> {
        self.write_checkpoint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(prompt: u32, answer: u32, desirable: bool) -> (Completion, bool) {
        (Completion { prompt: vec![prompt; 2], answer: vec![answer] }, desirable)
    }

    #[test]
    fn mismatched_pairs_rotate_within_groups_and_a_lone_row_joins_the_last_group() {
        let rows: Vec<_> = (0..5).map(|i| row(10 + i, 20 + i, i % 2 == 0)).collect();
        let judged = pair_up(rows, 2, 64);
        let pairs: Vec<(u32, u32)> =
            judged.iter().map(|j| (j.mismatched.prompt[0], j.mismatched.answer[0])).collect();
        // Groups {0, 1} and {2, 3, 4}: prompt k with answer k − 1, the first with the last.
        assert_eq!(pairs, [(10, 21), (11, 20), (12, 24), (13, 22), (14, 23)]);
        assert!(judged.iter().all(|j| j.mismatched.prompt.len() == 2));
        assert_eq!(judged[2].completion.answer, [22]);
        // Too long: the prompt loses its start, never all of it.
        let long = pair_up(vec![row(1, 2, true), row(3, 4, false)], 2, 2);
        assert_eq!(long[0].mismatched.prompt, [1]);
    }
}
