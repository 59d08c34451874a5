//! `rlhf moderate`: the moderation classifier — a multi-label head over an encoder (or a
//! decoder) trained with binary cross-entropy on the known labels only, positives weighted
//! against class imbalance; per-category thresholds chosen on validation; OpenAI-shaped
//! verdicts.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::softplus;
use serde_json::{Value, json};

use crate::checkpoint::{Lineage, Source, save_atomically};
use crate::cli::{EvalArgs, ModerateScoreArgs, TrainArgs};
use crate::config::moderate::{ModerateConfig, PosWeight};
use crate::data::jsonl::read_rows;
use crate::data::moderation::{CATEGORIES, LabeledText, NUM_CATEGORIES, row_text};
use crate::data::scoring::{Sequence, SequenceBatch};
use crate::dist;
use crate::model::ModelConfig;
use crate::model::config::HeadKind;
use crate::model::reinit::reinit_top_blocks;
use crate::moderation::calibration::{Platt, expected_calibration_error};
use crate::moderation::metrics::{average_precision, choose_threshold, precision_recall_f1};
use crate::moderation::net::ModerationNet;
use crate::moderation::{
    Chunker, Moderation, ModerationSettings, Moderator, calibrated, category_logits,
};
use crate::train::grad_norm::clip_factor;
use crate::train::interrupt;
use crate::train::run::{self, Stage, Trainer, round};
use crate::train::state::{RunProgress, STATE_DIR};
use crate::{bad_input, config};

pub fn train(args: &TrainArgs, device: &Device) -> Result<()> {
    let config: ModerateConfig = config::load(&args.config, &args.overrides)?;
    crate::model::precision::set(config.train.precision, device);
    let origin = args.config.display();
    config.validate().map_err(|e| bad_input!("{origin}: {e}"))?;
    run::check_output(&config.output, args.resume)?;
    let ad = device.clone().autodiff();
    let mut run = Run::open(config, args.resume, &ad, device, &args.overrides)?;
    interrupt::install();
    run.train()
}

/// `rlhf moderate eval`: per-category AUPRC, and precision, recall and F1 at the saved
/// thresholds, over the known labels of a labelled file.
pub fn eval(args: &EvalArgs, device: &Device) -> Result<()> {
    let moderator = Moderator::load(&args.model, device)?;
    let rows = read_labeled(&args.data)?;
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let verdicts = moderator.moderate(&texts)?;
    let report = evaluate(&rows, &verdicts);
    if args.json {
        println!("{report}");
        return Ok(());
    }
    println!(
        "{:<18} {:>7} {:>9} {:>7} {:>9} {:>7} {:>7} {:>6} {:>9}",
        "category", "AUPRC", "precision", "recall", "F1", "ECE", "known", "pos", "threshold"
    );
    for ((_, name), row) in
        CATEGORIES.iter().zip(report["categories"].as_array().expect("built above"))
    {
        let f = |key: &str| row[key].as_f64().map_or("-".to_string(), |v| format!("{v:.3}"));
        println!(
            "{name:<18} {:>7} {:>9} {:>7} {:>9} {:>7} {:>7} {:>6} {:>9}",
            f("auprc"),
            f("precision"),
            f("recall"),
            f("f1"),
            f("ece"),
            row["known"],
            row["positives"],
            moderator.settings.thresholds[*name]
                .as_f64()
                .map_or("never".into(), |t| format!("{t:.3}"))
        );
    }
    let any = &report["any"];
    println!(
        "any category: AUPRC {}  ({} texts, {} positive); ECE over every label {}",
        any["auprc"].as_f64().map_or("-".into(), |v| format!("{v:.3}")),
        any["known"],
        any["positives"],
        report["ece"].as_f64().map_or("-".into(), |v| format!("{v:.3}"))
    );
    Ok(())
}

/// "Any category": a text is positive when a known label is, its score the highest category
/// score. Returns (scores, labels).
fn any_category<'a>(
    rows: &[LabeledText],
    scores: impl Iterator<Item = &'a [f32; NUM_CATEGORIES]>,
) -> (Vec<f32>, Vec<bool>) {
    rows.iter()
        .zip(scores)
        .map(|(row, s)| (s.iter().copied().fold(0.0, f32::max), row.labels.contains(&Some(true))))
        .unzip()
}

/// Metrics of verdicts against labels (see `eval`).
fn evaluate(rows: &[LabeledText], verdicts: &[Moderation]) -> Value {
    let mut categories = Vec::new();
    let (mut all_scores, mut all_labels) = (Vec::new(), Vec::new());
    for (c, (code, name)) in CATEGORIES.iter().enumerate() {
        let (mut scores, mut labels, mut decisions) = (Vec::new(), Vec::new(), Vec::new());
        for (row, verdict) in rows.iter().zip(verdicts) {
            if let Some(label) = row.labels[c] {
                scores.push(verdict.scores[c]);
                labels.push(label);
                decisions.push(if verdict.categories[c] { 1.0f32 } else { 0.0 });
            }
        }
        let (precision, recall, f1) = precision_recall_f1(&decisions, &labels, 0.5);
        let positives = labels.iter().filter(|&&l| l).count();
        let defined = positives > 0;
        categories.push(json!({
            "category": name, "code": code,
            "auprc": average_precision(&scores, &labels),
            "precision": defined.then_some(precision), "recall": defined.then_some(recall), "f1": defined.then_some(f1),
            "ece": expected_calibration_error(&scores, &labels),
            "known": labels.len(), "positives": positives,
        }));
        all_scores.extend(scores);
        all_labels.extend(labels);
    }
    let (any_scores, any_labels) = any_category(rows, verdicts.iter().map(|v| &v.scores));
    let auprcs: Vec<f64> = categories.iter().filter_map(|c| c["auprc"].as_f64()).collect();
    json!({
        "categories": categories,
        "macro_auprc": auprcs.iter().sum::<f64>() / auprcs.len().max(1) as f64,
        "ece": expected_calibration_error(&all_scores, &all_labels),
        "any": {
            "auprc": average_precision(&any_scores, &any_labels),
            "known": rows.len(),
            "positives": any_labels.iter().filter(|&&l| l).count(),
        },
    })
}

/// `rlhf moderate score`: one OpenAI-shaped verdict per text — the TEXT arguments, the rows of
/// `--data` (`text` or `prompt`), or else the lines of stdin.
pub fn score(args: &ModerateScoreArgs, device: &Device) -> Result<()> {
    let moderator = Moderator::load(&args.model, device)?;
    let texts: Vec<String> = match (&args.data, args.text.is_empty()) {
        (Some(_), false) => return Err(bad_input!("give texts as arguments or --data, not both")),
        (Some(path), true) => read_rows(path)?
            .iter()
            .map(|row| {
                row_text(&row.fields)
                    .map_err(|e| bad_input!("{}:{}: {e}", path.display(), row.line))
            })
            .collect::<Result<_>>()?,
        (None, false) => args.text.clone(),
        (None, true) => std::io::stdin().lock().lines().collect::<std::io::Result<_>>()?,
    };
    let started = Instant::now();
    let verdicts = moderator.moderate(&texts.iter().map(String::as_str).collect::<Vec<_>>())?;
    let seconds = started.elapsed().as_secs_f64();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for verdict in &verdicts {
        writeln!(out, "{}", verdict.to_json())?;
    }
    out.flush()?;
    eprintln!(
        "moderate: {} texts in {seconds:.2} s ({:.1} texts/s)",
        texts.len(),
        texts.len() as f64 / seconds
    );
    Ok(())
}

fn read_labeled(path: &Path) -> Result<Vec<LabeledText>> {
    read_rows(path)?
        .iter()
        .map(|row| {
            LabeledText::parse(&row.fields)
                .map_err(|e| bad_input!("{}:{}: {e}", path.display(), row.line))
        })
        .collect()
}

/// A labelled text encoded for training: the head of the text, its labels as targets and
/// which of them are known.
struct Example {
    sequence: Sequence,
    row: LabeledText,
}

/// A training run in progress.
struct Run {
    config: ModerateConfig,
    model: ModerationNet,
    model_config: ModelConfig,
    tokenizer_dir: PathBuf,
    chunker: Chunker,
    train: Vec<Example>,
    valid: Vec<LabeledText>,
    /// Per category, the weight of a positive label.
    pos_weight: [f32; NUM_CATEGORIES],
    /// Categories with a positive training example (the others are never flagged).
    learnable: [bool; NUM_CATEGORIES],
    trainer: Trainer,
    /// What the last evaluation measured and chose.
    valid_result: Option<Validation>,
    device: Device,
}

impl Run {
    fn open(
        config: ModerateConfig,
        resume: bool,
        ad: &Device,
        device: &Device,
        overrides: &[String],
    ) -> Result<Self> {
        let (dir, parent, resumed) = if resume {
            let dir = config.output.dir.clone();
            let lineage = Lineage::read(&dir).map_err(|e| bad_input!("--resume: {e:#}"))?;
            let progress = RunProgress::read(&dir.join(STATE_DIR))
                .map_err(|e| bad_input!("--resume: {e:#}"))?;
            (dir, lineage.parent.clone(), Some((progress, lineage)))
        } else {
            let base = config.model.base.clone();
            let parent = Source::model_dir(&base)?;
            (base, Some(parent), None)
        };
        let model_config = ModelConfig::read(&dir)?;
        if model_config.head_kind() == HeadKind::Classifier {
            check_labels(&model_config, &dir)?;
        }
        ad.seed(config.train.seed); // a fresh head draws its initial weights
        let (model, model_config, tokenizer) = ModerationNet::load(&dir, ad)?;
        let (model, model_config) = match config.model.pooling {
            Some(pooling) => (model.with_pooling(pooling), model_config.with_pooling(pooling)?),
            None => (model, model_config),
        };
        let reinit = if resume { 0 } else { config.model.reinit_layers };
        let model = reinit_top_blocks(model, reinit, &model_config);
        let model = model.train_top_layers(config.model.train_layers);
        let model = dist::broadcast_parameters(model)?;
        let window = model.max_len();
        if config.data.max_len > window {
            return Err(bad_input!(
                "key `data.max_len` = {} exceeds the model's {window} positions",
                config.data.max_len
            ));
        }
        let chunker = Chunker::new(&model_config, &tokenizer, config.data.max_len)?;

        let data = &config.data;
        let (train, valid, files) = run::read_splits(
            &data.train,
            data.valid.as_deref(),
            data.valid_fraction,
            config.train.seed,
            read_labeled,
        )?;
        if valid.is_empty() {
            eprintln!(
                "moderate: no validation data, so every threshold stays 0.5\nhint: set data.valid or data.valid_fraction"
            );
        }
        let pos_weight = positive_weights(&train, &config);
        let learnable = std::array::from_fn(|c| train.iter().any(|r| r.labels[c] == Some(true)));
        let train = train
            .into_iter()
            .map(|row| Ok(Example { sequence: chunker.head(&row.text)?, row }))
            .collect::<Result<Vec<_>>>()?;
        let lineage = run::lineage("moderate", &config, overrides, parent, files)?;
        let trainer = Trainer::new(
            "moderate",
            &config.train,
            &config.output.dir,
            train.len(),
            lineage,
            resumed,
            &model,
            model_config.layout(),
            device,
        )?;
        trainer.check_selection(valid.len())?;
        Ok(Self {
            config,
            model,
            model_config,
            tokenizer_dir: dir,
            chunker,
            train,
            valid,
            pos_weight,
            learnable,
            trainer,
            valid_result: None,
            device: device.clone(),
        })
    }

    fn train(&mut self) -> Result<()> {
        let train = &self.config.train;
        let n = self.train.len();
        let t = &self.trainer;
        if t.progress.step >= t.total_steps {
            t.log.say(&format!(
                "moderate: {} already has all {} steps",
                t.out.display(),
                t.total_steps
            ));
        } else if t.progress.step == 0 {
            let weights: Vec<String> = CATEGORIES
                .iter()
                .zip(self.pos_weight)
                .map(|((code, _), w)| format!("{code} {w:.1}"))
                .collect();
            t.log.say(&format!(
                "moderate: {n} texts ({} for validation), {} steps of {} × {} texts; positive weights {}",
                self.valid.len(), t.total_steps, train.grad_accum, train.batch_size, weights.join(", ")
            ));
        }
        run::run(self)?;
        let valid = self.valid_result.map_or(String::new(), |v| {
            format!(", valid AUPRC any {:.4} / macro {:.4}", v.any_auprc, v.macro_auprc)
        });
        if dist::is_main() {
            eprintln!(
                "moderate: {} steps in {:.1} s{valid}; saved {}",
                self.trainer.progress.step,
                self.trainer.progress.seconds,
                self.trainer.out.display()
            );
        }
        Ok(())
    }

    /// One optimizer step; returns the loss (weighted BCE averaged over the step's known
    /// labels) and the gradient norm before clipping.
    fn optimizer_step(&mut self, lr: f64) -> Result<(f64, f64)> {
        let ad = &self.device.clone().autodiff();
        let n = self.train.len();
        let micro_batches: Vec<Vec<usize>> =
            (0..self.config.train.grad_accum).map(|_| self.trainer.next_batch(n)).collect();
        let known: usize = micro_batches
            .iter()
            .flatten()
            .map(|&i| self.train[i].row.labels.iter().flatten().count())
            .sum();
        let mut accumulator = GradientsAccumulator::<ModerationNet>::new();
        // This rank's Σ loss and tokens; then the whole step's.
        let mut sums = [0.0; 2];
        for rows in &micro_batches {
            let rows = dist::shard(rows);
            if rows.is_empty() {
                continue;
            }
            let examples: Vec<&Example> = rows.iter().map(|&i| &self.train[i]).collect();
            let (batch, targets, weights) = self.batch(&examples, ad);
            sums[1] += batch.token_count as f64;
            let logits = self.model.logits(&batch);
            let loss = weighted_bce_sum(logits, targets, weights).div_scalar(known.max(1) as f64);
            let grads = GradientsParams::from_grads(loss.backward(), &self.model);
            accumulator.accumulate(&self.model, grads);
            sums[0] += loss.into_scalar::<f32>() as f64;
        }
        let mut grads = accumulator.grads();
        dist::all_reduce_gradients(&self.model, &mut grads)?;
        dist::sum(&mut sums)?;
        let [loss_sum, tokens] = sums;
        self.trainer.progress.tokens += tokens as u64;
        let (grad_norm, clip) = clip_factor(&self.model, &grads, self.config.train.max_grad_norm);
        if !loss_sum.is_finite() || !grad_norm.is_finite() {
            return Err(self.trainer.diverged(loss_sum));
        }
        self.trainer.adam.step(&mut self.model, grads, lr, clip);
        Ok((loss_sum, grad_norm))
    }

    /// The batch with its targets and weights (see `label_targets`), `[B, C]` each.
    fn batch(
        &self,
        examples: &[&Example],
        device: &Device,
    ) -> (SequenceBatch, Tensor<2>, Tensor<2>) {
        let sequences: Vec<&Sequence> = examples.iter().map(|e| &e.sequence).collect();
        let batch = SequenceBatch::new(&sequences, self.chunker.pad, device);
        let rows: Vec<&LabeledText> = examples.iter().map(|e| &e.row).collect();
        let (targets, weights) = label_targets(&rows, &self.pos_weight);
        let shape = [examples.len(), NUM_CATEGORIES];
        let tensor = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, shape), device);
        (batch, tensor(targets), tensor(weights))
    }

    /// Calibrates each category on the validation labels, then chooses its threshold on the
    /// calibrated scores; records AUPRC per category, macro, "any category" and the ECE.
    fn validate(&mut self) -> Result<Validation> {
        let texts: Vec<&str> = self.valid.iter().map(|r| r.text.as_str()).collect();
        let logits = category_logits(&self.model.valid(), &self.chunker, &texts, &self.device)?;
        let known = |values: &[[f32; NUM_CATEGORIES]], c: usize| -> (Vec<f32>, Vec<bool>) {
            let rows = self.valid.iter().zip(values);
            rows.filter_map(|(row, v)| row.labels[c].map(|l| (v[c], l))).unzip()
        };
        let calibration: [Platt; NUM_CATEGORIES] = std::array::from_fn(|c| {
            let (z, l) = known(&logits, c);
            if z.is_empty() { Platt::default() } else { Platt::fit(&z, &l) }
        });
        let scores = calibrated(&logits, &calibration);
        let rule = &self.config.thresholds;
        let mut record = json!({ "step": self.trainer.progress.step });
        let mut thresholds = self.default_thresholds();
        let (mut auprcs, mut all_scores, mut all_labels) = (Vec::new(), Vec::new(), Vec::new());
        for (c, (code, _)) in CATEGORIES.iter().enumerate() {
            let (s, l) = known(&scores, c);
            if self.learnable[c] {
                thresholds[c] = Some(choose_threshold(&s, &l, rule.rule, rule.target_precision));
            }
            if let Some(ap) = average_precision(&s, &l) {
                record[format!("valid_auprc_{code}")] = round(ap, 4).into();
                auprcs.push(ap);
            }
            all_scores.extend(s);
            all_labels.extend(l);
        }
        let macro_auprc = auprcs.iter().sum::<f64>() / auprcs.len().max(1) as f64;
        let (any_scores, any_labels) = any_category(&self.valid, scores.iter());
        let any_auprc = average_precision(&any_scores, &any_labels).unwrap_or(0.0);
        let ece = expected_calibration_error(&all_scores, &all_labels).unwrap_or(0.0);
        record["valid_macro_auprc"] = round(macro_auprc, 4).into();
        record["valid_auprc_any"] = round(any_auprc, 4).into();
        record["valid_ece"] = round(ece, 4).into();
        self.trainer.log.record(record);
        self.trainer.log.say(&format!(
            "step {}: valid AUPRC any {any_auprc:.4}, macro {macro_auprc:.4}; ECE {ece:.4}",
            self.trainer.progress.step
        ));
        Ok(Validation { any_auprc, macro_auprc, ece, thresholds, calibration })
    }

    /// 0.5, or none for a category without positive training examples.
    fn default_thresholds(&self) -> [Option<f32>; NUM_CATEGORIES] {
        self.learnable.map(|learnable| learnable.then_some(0.5))
    }

    /// Writes the checkpoint atomically, with the calibration and thresholds of the last
    /// evaluation.
    fn write_checkpoint(&mut self) -> Result<()> {
        let valid = self.valid_result;
        let thresholds = valid.map_or_else(|| self.default_thresholds(), |v| v.thresholds);
        let calibration = valid.map_or_else(Default::default, |v| v.calibration);
        let rule = &self.config.thresholds;
        let settings = ModerationSettings::new(
            &thresholds,
            &calibration,
            rule.rule,
            rule.target_precision,
            self.config.data.max_len,
        );
        let metrics = json!({
            "step": self.trainer.progress.step,
            "valid_auprc_any": valid.map(|v| v.any_auprc),
            "valid_macro_auprc": valid.map(|v| v.macro_auprc),
            "valid_ece": valid.map(|v| v.ece),
            "thresholds": settings.thresholds,
        });
        save_atomically(&self.config.output.dir, |dir| {
            self.model.save(&self.model_config, &self.tokenizer_dir, dir)?;
            settings.write(dir)?;
            self.trainer.write_state(metrics, &self.model, self.model_config.layout(), dir)
        })
    }
}

impl Stage for Run {
    type Model = ModerationNet;

    fn trainer(&mut self) -> &mut Trainer {
        &mut self.trainer
    }

    fn model(&mut self) -> &mut ModerationNet {
        &mut self.model
    }

    fn examples(&self) -> usize {
        self.train.len()
    }

    fn step(&mut self, lr: f64) -> Result<(Value, String)> {
        let (loss, grad_norm) = self.optimizer_step(lr)?;
        let rate = self.trainer.rows_per_second();
        let record = json!({
            "loss": round(loss, 5), "grad_norm": round(grad_norm, 5),
            "tokens": self.trainer.progress.tokens, "texts_per_s": round(rate, 2),
        });
        Ok((record, format!("loss {loss:.4}  lr {lr:.2e}  {rate:.1} texts/s")))
    }

    /// Validation "any category" AUPRC.
    fn evaluate(&mut self) -> Result<Option<f64>> {
        if self.valid.is_empty() {
            return Ok(None);
        }
        let validation = self.validate()?;
        self.valid_result = Some(validation);
        Ok(Some(validation.any_auprc))
    }

    fn save(&mut self) -> Result<()> {
        self.write_checkpoint()
    }
}

/// What one validation measured and chose.
#[derive(Debug, Clone, Copy)]
struct Validation {
    any_auprc: f64,
    macro_auprc: f64,
    /// Expected calibration error over every known category label.
    ece: f64,
    thresholds: [Option<f32>; NUM_CATEGORIES],
    calibration: [Platt; NUM_CATEGORIES],
}

/// Row-major targets (1 for a positive label, else 0) and loss weights: 0 where the label is
/// unknown, the category's positive weight on a positive, 1 on a negative.
fn label_targets(
    rows: &[&LabeledText],
    pos_weight: &[f32; NUM_CATEGORIES],
) -> (Vec<f32>, Vec<f32>) {
    let labels = rows.iter().flat_map(|r| r.labels.iter().enumerate());
    labels
        .map(|(c, label)| match label {
            None => (0.0, 0.0),
            Some(true) => (1.0, pos_weight[c]),
            Some(false) => (0.0, 1.0),
        })
        .unzip()
}

/// Σ w·[y·softplus(−x) + (1 − y)·softplus(x)] = Σ −w·[y·log σ(x) + (1 − y)·log(1 − σ(x))].
fn weighted_bce_sum(logits: Tensor<2>, targets: Tensor<2>, weights: Tensor<2>) -> Tensor<1> {
    let per_label = targets.clone() * softplus(-logits.clone(), 1.0)
        + (targets.neg() + 1.0) * softplus(logits, 1.0);
    (per_label * weights).sum()
}

/// negatives / positives among each category's known training labels, in [1, max].
fn positive_weights(rows: &[LabeledText], config: &ModerateConfig) -> [f32; NUM_CATEGORIES] {
    std::array::from_fn(|c| {
        if config.loss.pos_weight == PosWeight::None {
            return 1.0;
        }
        let known: Vec<bool> = rows.iter().filter_map(|r| r.labels[c]).collect();
        let positives = known.iter().filter(|&&l| l).count();
        let ratio = (known.len() - positives) as f64 / positives.max(1) as f64;
        ratio.clamp(1.0, config.loss.max_pos_weight) as f32
    })
}

/// A classifier to train further must have the eight categories as its labels, in order.
fn check_labels(config: &ModelConfig, dir: &Path) -> Result<()> {
    let labels = config.json.get("id2label").and_then(Value::as_object);
    let names: Vec<&str> =
        (0..config.num_labels()).filter_map(|i| labels?.get(&i.to_string())?.as_str()).collect();
    let expected: Vec<&str> = CATEGORIES.iter().map(|(_, n)| *n).collect();
    if names != expected {
        return Err(bad_input!(
            "{}: a classifier with labels {names:?}, not the moderation categories {expected:?}\nhint: start from a bare encoder (models/minilm), an SFT or base model, or a `rlhf moderate train` checkpoint",
            dir.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_labels_weigh_nothing_and_positives_are_weighted() {
        let rows: Vec<LabeledText> = [
            json!({"text": "a", "S": 1, "H": 0}),
            json!({"text": "b", "S": 0, "H": 0}),
            json!({"text": "c", "S": 0}),
            json!({"text": "d", "S": 0, "H": 1}),
        ]
        .iter()
        .map(|r| LabeledText::parse(r.as_object().unwrap()).unwrap())
        .collect();
        let config = ModerateConfig::default();
        let w = positive_weights(&rows, &config);
        assert_eq!(w[0], 3.0); // S: 3 negatives, 1 positive
        assert_eq!(w[1], 2.0); // H: known on 3 rows, 1 positive
        assert_eq!(w[2], 1.0); // V: never known
        let none = ModerateConfig {
            loss: crate::config::moderate::ModerateLoss {
                pos_weight: PosWeight::None,
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(positive_weights(&rows, &none), [1.0; NUM_CATEGORIES]);
    }

    #[test]
    fn unknown_labels_do_not_change_the_loss_or_get_a_gradient() {
        let device = crate::device::DeviceSpec::Cpu.device().unwrap().autodiff();
        let row =
            LabeledText::parse(json!({"text": "a", "S": 1, "H": 0}).as_object().unwrap()).unwrap();
        let (targets, weights) = label_targets(&[&row], &[2.0; NUM_CATEGORIES]);
        assert_eq!(&weights[..3], [2.0, 1.0, 0.0]);
        let tensor =
            |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [1, NUM_CATEGORIES]), &device);
        let loss = |unknown_logit: f32| {
            let mut logits = vec![0.5, -0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
            logits[2..].fill(unknown_logit);
            let logits = tensor(logits).require_grad();
            let loss =
                weighted_bce_sum(logits.clone(), tensor(targets.clone()), tensor(weights.clone()));
            let grads = loss.backward();
            let grad = logits
                .grad(&grads)
                .unwrap()
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap();
            (loss.into_scalar::<f32>(), grad)
        };
        let ((a, grad), (b, _)) = (loss(-3.0), loss(7.0));
        assert_eq!(a, b);
        assert!(grad[2..].iter().all(|&g| g == 0.0), "{grad:?}");
        // Known: 2·softplus(−0.5) + softplus(−0.5) (S positive at 0.5, H negative at −0.5).
        let softplus = |x: f32| (1.0 + x.exp()).ln();
        assert!((a - 3.0 * softplus(-0.5)).abs() < 1e-5, "{a}");
    }
}
