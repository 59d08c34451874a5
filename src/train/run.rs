//! The bookkeeping every training stage shares: the output directory rules, the optimizer and
//! where the run stands, the metrics log and lineage, and how a run ends (saved, interrupted,
//! diverged). A stage supplies the model and what one step computes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, anyhow};
use burn::module::Module;
use burn::prelude::*;
use serde_json::{Value, json};

use super::adamw::{AdamW, AdamWConfig};
use super::interrupt;
use super::lr_groups::lr_scales;
use super::schedule::learning_rate;
use super::shuffle::permutation;
use super::start::{Resumed, config_changes, resume_error};
use super::state::{BEST_FILE, BestStep, OPTIMIZER_FILE, RunProgress, STATE_DIR};
use crate::bad_input;
use crate::checkpoint::{Lineage, Source};
use crate::config::train::{KeepState, OutputConfig, TrainConfig};
use crate::dist;
use crate::error::Interrupted;
use crate::metrics::{METRICS_FILE, RunLog, read_jsonl};
use crate::model::naming::{HfLayout, named_tensors, param_names, restore_module};
use crate::model::weights::{self, NamedTensors};

/// A run's state between steps.
pub struct Trainer {
    pub stage: &'static str,
    pub train: TrainConfig,
    pub out: PathBuf,
    output: OutputConfig,
    pub adam: AdamW,
    pub progress: RunProgress,
    pub lineage: Lineage,
    pub log: RunLog,
    pub total_steps: usize,
    /// Step of the last checkpoint on disk, if any.
    pub saved_step: Option<usize>,
    /// Skip an epoch's short last batch (see `drop_last`).
    drop_last: bool,
    /// How the model's tensors are named on disk, and the plain device.
    layout: HfLayout,
    device: Device,
    /// With `train.keep_best`: the best step's weights so far.
    best_weights: Option<NamedTensors>,
    /// This process's share of the run, for rates: when it started, where the run stood then,
    /// and the rows it has read.
    started: Instant,
    seconds_before: f64,
    tokens_before: u64,
    rows_read: usize,
}

/// A stage's part in the shared training loop ([`run`]).
pub trait Stage {
    /// The network being trained.
    type Model: Module;
    fn trainer(&mut self) -> &mut Trainer;
    fn model(&mut self) -> &mut Self::Model;
    /// Training examples (for the epoch count).
    fn examples(&self) -> usize;
    /// One optimizer step at `lr`: its metrics (`loss`, …) and the progress message.
    fn step(&mut self, lr: f64) -> Result<(Value, String)>;
    /// Validation, when due: the score runs are compared by, higher is better (none without
    /// validation data).
    fn evaluate(&mut self) -> Result<Option<f64>>;
    /// Writes the whole checkpoint.
    fn save(&mut self) -> Result<()>;
}

/// Steps until the last, logging each, evaluating and saving when due; Ctrl-C saves and ends
/// the run with [`Trainer::interrupted`].
pub fn run<S: Stage>(stage: &mut S) -> Result<()> {
    let t = stage.trainer();
    if t.progress.step >= t.total_steps {
        t.log.say(&format!(
            "{}: {} already has all {} steps",
            t.stage,
            t.out.display(),
            t.total_steps
        ));
    }
    loop {
        let n = stage.examples();
        let t = stage.trainer();
        if t.progress.step >= t.total_steps {
            break;
        }
        let lr = learning_rate(&t.train, t.progress.step, t.total_steps);
        let (metrics, message) = stage.step(lr)?;
        let t = stage.trainer();
        t.progress.step += 1;
        t.progress.seconds = t.seconds_before + t.started.elapsed().as_secs_f64();
        let mut record = json!({ "step": t.progress.step, "epoch": round(t.epoch(n), 3) });
        if let (Value::Object(line), Value::Object(metrics)) = (&mut record, metrics) {
            line.extend(metrics);
        }
        record["lr"] = lr.into();
        record["seconds"] = round(t.progress.seconds, 2).into();
        t.report_step(record, &message, n);
        if t.evaluates_now() {
            if let Some(score) = stage.evaluate()? {
                select(stage, score);
            }
        }
        let t = stage.trainer();
        if t.progress.step == t.total_steps && t.train.keep_best {
            restore_best(stage)?;
        }
        let signal = agreed_signal()?;
        if signal.is_some() || stage.trainer().saves_now() {
            save(stage)?;
        }
        if let Some(signal) = signal {
            return Err(stage.trainer().interrupted(signal));
        }
    }
    dist::check_replicas(stage.model())?;
    stage.trainer().log.finish();
    Ok(())
}

/// A signal any rank received: every rank saves and stops at the same step (a launcher
/// forwards Ctrl-C to all ranks, but they need not see it between the same two steps).
fn agreed_signal() -> Result<Option<i32>> {
    let mut signal = [interrupt::requested().unwrap_or(0) as f64];
    dist::max(&mut signal)?;
    Ok((signal[0] > 0.0).then_some(signal[0] as i32))
}

/// Rank 0 writes the checkpoint; every rank learns whether it could before going on.
fn save<S: Stage>(stage: &mut S) -> Result<()> {
    let saved = match dist::is_main() {
        true => stage.save(),
        false => Ok(()),
    };
    let mut failed = [saved.is_err() as u8 as f64];
    dist::max(&mut failed)?;
    let t = stage.trainer();
    saved.map_err(|e| t.save_failed(e))?;
    if failed[0] > 0.0 {
        return Err(t.save_failed(anyhow!("rank 0 could not write it")));
    }
    t.saved_step = Some(t.progress.step);
    Ok(())
}

/// Tracks the best validation score: keeps its weights (`train.keep_best`), and ends the run
/// once `train.patience` evaluations in a row have not improved on it.
fn select<S: Stage>(stage: &mut S, score: f64) {
    let t = stage.trainer();
    let step = t.progress.step;
    if t.progress.best.is_none_or(|best| score > best.score) {
        t.progress.best = Some(BestStep { step, score });
        t.progress.evals_since_best = 0;
        if t.train.keep_best {
            let layout = t.layout;
            let weights = named_tensors(stage.model(), layout);
            stage.trainer().best_weights = Some(weights);
        }
        return;
    }
    t.progress.evals_since_best += 1;
    let patience = t.train.patience;
    if patience > 0 && t.progress.evals_since_best >= patience && step < t.total_steps {
        t.log.say(&format!(
            "{}: no better validation score in {patience} evaluations since step {}; stopping at step {step}",
            t.stage,
            t.progress.best.map_or(0, |b| b.step)
        ));
        t.total_steps = step;
        t.progress.stopped_at = Some(step);
        t.log.set_total(step);
    }
}

/// Before the last save: puts the best step's weights back into the model (and validates
/// again, so what the stage saves with them — thresholds, metrics — is theirs).
fn restore_best<S: Stage>(stage: &mut S) -> Result<()> {
    let t = stage.trainer();
    let (Some(best), Some(mut weights)) = (t.progress.best, t.best_weights.take()) else {
        return Ok(());
    };
    if best.step == t.progress.step {
        return Ok(());
    }
    t.log.say(&format!(
        "{}: keeping the weights of step {} (validation score {:.4})",
        t.stage, best.step, best.score
    ));
    let (layout, device) = (t.layout, t.device.clone());
    let model = stage.model().clone();
    *stage.model() = restore_module(model, &mut weights, layout, &device)?;
    stage.evaluate()?;
    Ok(())
}

impl Trainer {
    /// A fresh run, or (with `resumed`, read from `out`) the continuation of one, whose
    /// optimizer moments are restored into `model`. `device` is the plain one. From here on,
    /// Ctrl-C saves and stops the run.
    #[allow(clippy::too_many_arguments)]
    pub fn new<M: Module>(
        stage: &'static str,
        train: &TrainConfig,
        output: &OutputConfig,
        examples: usize,
        lineage: Lineage,
        resumed: Option<Resumed>,
        model: &M,
        layout: HfLayout,
        device: &Device,
    ) -> Result<Self> {
        let out = &output.dir;
        let batches_per_epoch = examples.div_ceil(train.batch_size);
        let total_steps = match train.max_steps {
            0 => (train.epochs * batches_per_epoch).div_ceil(train.grad_accum),
            n => n,
        };
        let mut adam = AdamW::new(AdamWConfig {
            beta1: train.adam_beta1,
            beta2: train.adam_beta2,
            epsilon: train.adam_epsilon,
            weight_decay: train.weight_decay,
        });
        adam.set_lr_scales(lr_scales(&param_names(model, layout), train));
        let mut trainer = Self {
            stage,
            train: train.clone(),
            out: out.to_path_buf(),
            output: output.clone(),
            adam,
            progress: RunProgress::default(),
            lineage,
            log: RunLog::new(0, total_steps, Vec::new()),
            total_steps,
            saved_step: None,
            drop_last: false,
            layout,
            device: device.clone(),
            best_weights: None,
            started: Instant::now(),
            seconds_before: 0.0,
            tokens_before: 0,
            rows_read: 0,
        };
        interrupt::install();
        let Some(Resumed { progress, lineage: previous }) = resumed else {
            return Ok(trainer);
        };
        if previous.data != trainer.lineage.data {
            return Err(resume_error(anyhow!(
                "the data files differ from those {} was trained on (paths or contents)\nhint: resume with the same data, or start a new run in another output.dir",
                out.display()
            )));
        }
        let state = out.join(STATE_DIR).join(OPTIMIZER_FILE);
        // Moments are plain tensors: they never track gradients.
        trainer
            .adam
            .restore(progress.step as u64, model, layout, &state, device)
            .map_err(resume_error)?;
        if let Some(stopped) = progress.stopped_at {
            trainer.total_steps = stopped;
        }
        // A finished run already holds its best weights as the model.
        let unfinished = progress.step < trainer.total_steps;
        if let (true, true, Some(best)) = (train.keep_best, unfinished, progress.best) {
            trainer.best_weights = Some(match best.step == progress.step {
                true => named_tensors(model, layout),
                false => weights::read_file(&out.join(STATE_DIR).join(BEST_FILE))
                    .map_err(resume_error)?,
            });
        }
        trainer.record_resume(&previous, &progress);
        trainer.log = RunLog::new(progress.step, total_steps, read_jsonl(&out.join(METRICS_FILE)));
        trainer.saved_step = Some(progress.step);
        (trainer.seconds_before, trainer.tokens_before) = (progress.seconds, progress.tokens);
        trainer.progress = progress;
        Ok(trainer)
    }

    /// Says where the run goes on from and which config values changed, and keeps the
    /// changes in the lineage beside those of earlier resumes.
    fn record_resume(&mut self, previous: &Lineage, progress: &RunProgress) {
        let changes = config_changes(&previous.config["config"], &self.lineage.config["config"]);
        let mut resumes = previous.config["resumes"].as_array().cloned().unwrap_or_default();
        if !changes.is_empty() {
            let changed: serde_json::Map<String, Value> = changes
                .iter()
                .map(|(key, before, now)| (key.clone(), json!([before, now])))
                .collect();
            resumes.push(json!({ "step": progress.step, "changed": changed }));
        }
        if !resumes.is_empty() {
            self.lineage.config["resumes"] = resumes.into();
        }
        if dist::is_main() {
            eprintln!(
                "{}: resuming {} at step {} of {} (epoch {}, batch {} of it)",
                self.stage,
                self.out.display(),
                progress.step,
                self.total_steps,
                progress.epoch,
                progress.batch_in_epoch
            );
            for (key, before, now) in &changes {
                eprintln!("{}: {key} {before} → {now}", self.stage);
            }
        }
    }

    /// `train.keep_best` and `train.patience` compare validation scores: refused without
    /// validation data rather than silently ignored.
    pub fn check_selection(&self, validation_examples: usize) -> Result<()> {
        let train = &self.train;
        if validation_examples == 0 && (train.keep_best || train.patience > 0) {
            return Err(bad_input!(
                "keys `train.keep_best` and `train.patience` need validation data, and this run has none\nhint: set data.valid or data.valid_fraction"
            ));
        }
        Ok(())
    }

    /// Every batch full: an epoch's last rows that do not fill one are skipped, and with
    /// `train.epochs` there are ⌊n / batch_size⌋ steps an epoch (PPO whitens advantages and
    /// splits minibatches over a whole batch of rollouts). Needs `n ≥ batch_size`.
    pub fn drop_last(&mut self, n: usize) {
        self.drop_last = true;
        if self.train.max_steps == 0 {
            self.total_steps = self.train.epochs * (n / self.train.batch_size).max(1);
            self.log.set_total(self.total_steps);
        }
    }

    /// The rows of the next micro-batch among `n`, advancing the run's position: epochs are
    /// read in the order `permutation(n, seed, epoch)`, so a position is all `--resume` needs.
    pub fn next_batch(&mut self, n: usize) -> Vec<usize> {
        let progress = &mut self.progress;
        let batch_size = self.train.batch_size;
        let short = self.drop_last && (progress.batch_in_epoch + 1) * batch_size > n;
        if progress.batch_in_epoch * batch_size >= n || short {
            progress.epoch += 1;
            progress.batch_in_epoch = 0;
        }
        let order = permutation(n, self.train.seed, progress.epoch as u64);
        let from = progress.batch_in_epoch * batch_size;
        progress.batch_in_epoch += 1;
        let rows = order[from..(from + batch_size).min(n)].to_vec();
        self.rows_read += rows.len();
        rows
    }

    /// Rates count from now: work before the first step (a one-off pass over the data) stays
    /// in the run's seconds but not in its rates.
    pub fn restart_rates(&mut self) {
        self.seconds_before += self.started.elapsed().as_secs_f64();
        self.started = Instant::now();
    }

    /// Rows per second read by this process.
    pub fn rows_per_second(&self) -> f64 {
        self.rows_read as f64 / self.started.elapsed().as_secs_f64()
    }

    /// Tokens per second trained on by this process.
    pub fn tokens_per_second(&self) -> f64 {
        (self.progress.tokens - self.tokens_before) as f64 / self.started.elapsed().as_secs_f64()
    }

    /// Fractional epoch of the run's position over `n` examples.
    pub fn epoch(&self, n: usize) -> f64 {
        self.progress.epoch as f64
            + (self.progress.batch_in_epoch * self.train.batch_size) as f64 / n as f64
    }

    /// Records `record` (a metrics line) when the step is one to log, and updates the live
    /// display with `message`.
    pub fn report_step(&mut self, record: Value, message: &str, n: usize) {
        let step = self.progress.step;
        let logged = step % self.train.log_every == 0 || step == self.total_steps;
        if logged {
            self.log.record(record);
        }
        let line =
            format!("step {step}/{}  epoch {:.2}  {message}", self.total_steps, self.epoch(n));
        self.log.show(step, message, logged.then_some(line.as_str()));
    }

    /// Whether this step ends with an evaluation / a save.
    pub fn evaluates_now(&self) -> bool {
        let (step, every) = (self.progress.step, self.train.eval_every);
        step == self.total_steps || every > 0 && step % every == 0
    }

    pub fn saves_now(&self) -> bool {
        let (step, every) = (self.progress.step, self.train.save_every);
        step == self.total_steps || every > 0 && step % every == 0
    }

    /// Writes lineage, metrics and `state/` into a checkpoint being saved (`dir`), with the
    /// run's final `metrics` in the lineage.
    pub fn write_state<M: Module>(
        &mut self,
        metrics: Value,
        model: &M,
        layout: HfLayout,
        dir: &Path,
    ) -> Result<()> {
        self.lineage.metrics = metrics;
        self.lineage.write(dir)?;
        self.log.write(dir)?;
        let done = self.progress.step >= self.total_steps;
        if done && self.output.keep_state == KeepState::UntilDone {
            return Ok(());
        }
        let state = dir.join(STATE_DIR);
        std::fs::create_dir(&state)?;
        self.progress.write(&state)?;
        if let (Some(best), Some(weights)) = (self.progress.best, &self.best_weights) {
            if best.step != self.progress.step {
                weights::write_file(&state.join(BEST_FILE), weights)?;
            }
        }
        self.adam.save(model, layout, &state.join(OPTIMIZER_FILE))
    }

    /// The error that ends a run stopped by `signal` (after its save).
    pub fn interrupted(&self, signal: i32) -> anyhow::Error {
        self.log.finish();
        let message = format!(
            "{}: interrupted; step {} is saved in {}\nhint: continue with the same command plus --resume",
            self.stage,
            self.progress.step,
            self.out.display()
        );
        Interrupted { signal, message }.into()
    }

    /// The error for a checkpoint that could not be written (a full disk, permissions).
    pub fn save_failed(&self, err: anyhow::Error) -> anyhow::Error {
        self.log.finish();
        anyhow!(
            "{}: step {} could not be saved: {err:#}\n{}\nhint: free some space (or fix the permissions), then continue with the same command plus --resume",
            self.stage,
            self.progress.step,
            self.kept()
        )
    }

    fn kept(&self) -> String {
        match self.saved_step {
            Some(saved) => format!("{} keeps the checkpoint of step {saved}", self.out.display()),
            None => "no checkpoint was written yet".to_string(),
        }
    }

    /// The error for a step whose loss or gradient norm is not finite (no update was made).
    pub fn diverged(&self, loss: f64) -> anyhow::Error {
        self.log.finish();
        anyhow!(
            "{}: step {}: the loss is {loss} (or the gradient norm is not finite); stopped. {}\nhint: lower train.lr, keep train.max_grad_norm > 0, or check the data",
            self.stage,
            self.progress.step + 1,
            self.kept()
        )
    }
}

/// A lineage for a new run of `stage` with its resolved config, parent and data files.
pub fn lineage<C: serde::Serialize>(
    stage: &str,
    config: &C,
    overrides: &[String],
    parent: Option<Source>,
    data: Vec<Source>,
) -> Result<Lineage> {
    let resolved = serde_json::to_value(config)?;
    let mut lineage = Lineage::new(stage, json!({ "config": resolved, "overrides": overrides }));
    lineage.parent = parent;
    lineage.data = data;
    Ok(lineage)
}

/// Training and validation examples: `train` read with `read`, and `valid` read likewise when
/// given, else `fraction` of `train` held out (see `hold_out`), else none. Also returns the files
/// read, for the lineage.
pub fn read_splits<T>(
    train: &Path,
    valid: Option<&Path>,
    fraction: f64,
    seed: u64,
    mut read: impl FnMut(&Path) -> Result<Vec<T>>,
) -> Result<(Vec<T>, Vec<T>, Vec<Source>)> {
    let examples = read(train)?;
    let mut files = vec![Source::file(train)?];
    let (train, valid) = match valid {
        Some(path) => {
            files.push(Source::file(path)?);
            (examples, read(path)?)
        }
        None if fraction > 0.0 => hold_out(examples, fraction, seed),
        None => (examples, Vec::new()),
    };
    Ok((train, valid, files))
}

/// Moves `fraction` of `examples` (at least one, never all) into a validation set, chosen by
/// `seed`; returns (train, valid).
pub fn hold_out<T>(examples: Vec<T>, fraction: f64, seed: u64) -> (Vec<T>, Vec<T>) {
    let n = examples.len();
    let count = ((n as f64 * fraction).ceil() as usize).min(n.saturating_sub(1));
    let mut chosen = vec![false; n];
    permutation(n, seed, u64::MAX)[..count].iter().for_each(|&i| chosen[i] = true);
    let (valid, train): (Vec<_>, Vec<_>) = examples.into_iter().zip(chosen).partition(|(_, c)| *c);
    (train.into_iter().map(|(e, _)| e).collect(), valid.into_iter().map(|(e, _)| e).collect())
}

pub fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::RunLog;

    #[test]
    fn each_epoch_reads_every_row_once_in_a_new_order() {
        let train = TrainConfig { batch_size: 4, ..TrainConfig::default() };
        let mut trainer = Trainer {
            stage: "test",
            train,
            out: PathBuf::new(),
            output: OutputConfig::default(),
            adam: AdamW::new(AdamWConfig {
                beta1: 0.9,
                beta2: 0.999,
                epsilon: 1e-8,
                weight_decay: 0.0,
            }),
            progress: RunProgress::default(),
            lineage: Lineage::new("test", Value::Null),
            log: RunLog::new(0, 1, Vec::new()),
            total_steps: 1,
            saved_step: None,
            drop_last: false,
            layout: HfLayout { body_prefix: "model", body_is_conv1d: false, renames: &[] },
            device: crate::device::DeviceSpec::Cpu.device().unwrap(),
            best_weights: None,
            started: Instant::now(),
            seconds_before: 0.0,
            tokens_before: 0,
            rows_read: 0,
        };
        let mut epochs = vec![Vec::new(); 2];
        for _ in 0..6 {
            let rows = trainer.next_batch(10);
            epochs[trainer.progress.epoch].extend(rows);
        }
        assert_ne!(epochs[0], epochs[1]);
        for rows in &mut epochs {
            rows.sort_unstable();
            assert_eq!(*rows, (0..10).collect::<Vec<_>>(), "batches of 4, 4 and 2 cover the epoch");
        }
    }
}
