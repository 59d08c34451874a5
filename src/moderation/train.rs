//! `rlhf moderate`: the moderation classifier — a multi-label head over an encoder (or a
//! decoder) trained with binary cross-entropy on the known labels only, positives weighted
//! against class imbalance; per-category thresholds chosen on validation.

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::module::Module;
use burn::prelude::*;
use burn::tensor::activation::softplus;
use serde_json::{Value, json};

use super::calibration::{Platt, expected_calibration_error};
use super::metrics::{any_category, average_precision, choose_threshold};
use super::net::ModerationNet;
use super::{Chunker, ModerationSettings, calibrated, category_logits};
use crate::bad_input;
use crate::checkpoint::{Source, save_atomically};
use crate::config::moderate::{DEFAULT_MAX_LEN, MIN_MAX_LEN, ModerateConfig, PosWeight};
use crate::config::train::resolve_max_len;
use crate::data::moderation::{CATEGORIES, LabeledText, NUM_CATEGORIES, read_labeled};
use crate::data::scoring::{Sequence, SequenceBatch};
use crate::dist;
use crate::model::config::HeadKind;
use crate::model::reinit::reinit_top_blocks;
use crate::model::{ModelConfig, ModelDir};
use crate::train::run::{self, Stage, Trainer, round};
use crate::train::start::{self, Resumed, TrainOptions};
use crate::train::step;

pub fn train(options: &TrainOptions, device: &Device) -> Result<()> {
    let config: ModerateConfig = start::load_config(options, device)?;
    let ad = device.clone().autodiff();
    let mut run = Run::open(config, options.resume, &ad, device, &options.overrides)?;
    run.train()
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

/// A micro-batch with its targets and weights (see `label_targets`), `[B, C]` each.
fn labeled_batch(
    examples: &[&Example],
    pad: u32,
    pos_weight: &[f32; NUM_CATEGORIES],
    device: &Device,
) -> (SequenceBatch, Tensor<2>, Tensor<2>) {
    let sequences: Vec<&Sequence> = examples.iter().map(|e| &e.sequence).collect();
    let batch = SequenceBatch::new(&sequences, pad, device);
    let rows: Vec<&LabeledText> = examples.iter().map(|e| &e.row).collect();
    let (targets, weights) = label_targets(&rows, pos_weight);
    let shape = [examples.len(), NUM_CATEGORIES];
    let tensor = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, shape), device);
    (batch, tensor(targets), tensor(weights))
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
            let resumed = Resumed::read(&dir)?;
            (dir, resumed.lineage.parent.clone(), Some(resumed))
        } else {
            let base = config.model.base.clone();
            let parent = Source::model_dir(&base)?;
            (base, Some(parent), None)
        };
        let mut opened = ModelDir::open(&dir)?;
        if opened.config.head_kind() == HeadKind::Classifier {
            check_labels(&opened.config, &dir)?;
        }
        if let Some(pooling) = config.model.pooling {
            opened = opened.with_pooling(pooling)?;
        }
        ad.seed(config.train.seed); // a fresh head draws its initial weights
        let (model, model_config, tokenizer) = ModerationNet::load(&opened, ad)?;
        let reinit = if resume { 0 } else { config.model.reinit_layers };
        let model = reinit_top_blocks(model, reinit, &model_config);
        let model = model.train_top_layers(config.model.train_layers);
        let model = dist::broadcast_parameters(model)?;
        let (max_len, note) =
            resolve_max_len(config.data.max_len, DEFAULT_MAX_LEN, model.max_len())
                .map_err(|e| bad_input!("{e}"))?;
        if max_len < MIN_MAX_LEN {
            return Err(bad_input!(
                "data.max_len would be {max_len}, the model's context window, but a chunk needs at least {MIN_MAX_LEN} tokens\nhint: start from a model with a longer window"
            ));
        }
        if let Some(note) = note {
            dist::note(&format!("moderate: {note}"));
        }
        let chunker = Chunker::new(&model_config, &tokenizer, max_len)?;

        let data = &config.data;
        let (train, valid, files) = run::read_splits(
            &data.train,
            data.valid.as_deref(),
            data.valid_fraction,
            config.train.seed,
            read_labeled,
        )?;
        if valid.is_empty() {
            dist::warn(
                "moderate: no validation data, so every threshold stays 0.5\nhint: set data.valid or data.valid_fraction",
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
            &config.output,
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
        if t.progress.step == 0 {
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
        if let Some(validation) = &self.valid_result {
            for warning in weak_classifier_warnings(validation, &self.trainer.out) {
                dist::warn(&warning);
            }
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
        let (train, pad, pos_weight) = (&self.train, self.chunker.pad, &self.pos_weight);
        // Σ loss and tokens.
        let step = step::optimizer_step(
            &mut self.trainer,
            &mut self.model,
            &micro_batches,
            lr,
            |model, rows, [loss_sum, tokens]: &mut [f64; 2]| {
                let examples: Vec<&Example> = rows.iter().map(|&i| &train[i]).collect();
                let (batch, targets, weights) = labeled_batch(&examples, pad, pos_weight, ad);
                *tokens += batch.token_count as f64;
                let logits = model.logits(&batch);
                let loss =
                    weighted_bce_sum(logits, targets, weights).div_scalar(known.max(1) as f64);
                *loss_sum += loss.clone().into_scalar::<f32>() as f64;
                loss
            },
            |[loss_sum, _]| *loss_sum,
        )?;
        let [loss_sum, tokens] = step.sums;
        self.trainer.progress.tokens += tokens as u64;
        Ok((loss_sum, step.grad_norm))
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
            self.chunker.max_len,
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

/// A chosen threshold at or below this flags nearly every text for its category.
const LOW_THRESHOLD: f32 = 0.05;

/// Validation "any category" AUPRC below this: flagged and safe texts are told apart poorly.
const WEAK_AUPRC: f64 = 0.5;

/// What the user should know about the classifier a run saved: thresholds so low that it flags
/// harmless text ("Hello, how are you today?"), or a weak validation AUPRC; each with a hint.
fn weak_classifier_warnings(validation: &Validation, out: &Path) -> Vec<String> {
    let data_hint = "more labelled texts of these categories help most (docs/cli.md, \"Labelled moderation data\", says where to find them)";
    let mut warnings = Vec::new();
    let low: Vec<String> = CATEGORIES
        .iter()
        .zip(validation.thresholds)
        .filter_map(|((_, name), t)| {
            t.filter(|&t| t <= LOW_THRESHOLD).map(|t| format!("{name} ({t:.3})"))
        })
        .collect();
    if !low.is_empty() {
        warnings.push(format!(
            "moderate: the threshold{} chosen for {} {} at most {LOW_THRESHOLD}, so the classifier flags almost any text for {} (even \"Hello, how are you today?\")\nhint: {data_hint}; see the effect with `rlhf moderate score --model {} \"Hello, how are you today?\"`; thresholds.rule = \"precision\" flags less",
            if low.len() == 1 { "" } else { "s" },
            low.join(", "),
            if low.len() == 1 { "is" } else { "are" },
            if low.len() == 1 { "it" } else { "them" },
            out.display()
        ));
    }
    if validation.any_auprc < WEAK_AUPRC {
        warnings.push(format!(
            "moderate: validation AUPRC (any category) is {:.3}, below {WEAK_AUPRC}: the classifier tells flagged texts from safe ones apart poorly\nhint: {data_hint}; more epochs may help too",
            validation.any_auprc
        ));
    }
    warnings
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

    /// Issue 48: a classifier whose chosen thresholds fell to ~0.05 flagged "Hello, how are
    /// you today?", and `moderate train` ended without a word about it.
    #[test]
    fn low_thresholds_and_a_weak_auprc_are_warned_about() {
        let mut validation = Validation {
            any_auprc: 0.9,
            macro_auprc: 0.9,
            ece: 0.0,
            thresholds: [Some(0.5), Some(0.04), None, Some(0.05), Some(0.3), None, None, None],
            calibration: Default::default(),
        };
        let warnings = weak_classifier_warnings(&validation, Path::new("runs/moderate"));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(
                "moderate: the thresholds chosen for hate (0.040), harassment (0.050) are at most 0.05"
            ),
            "{}",
            warnings[0]
        );
        assert!(warnings[0].contains("\nhint: more labelled texts"), "{}", warnings[0]);
        validation.thresholds = [Some(0.5); NUM_CATEGORIES];
        validation.any_auprc = 0.31;
        let warnings = weak_classifier_warnings(&validation, Path::new("runs/moderate"));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("validation AUPRC (any category) is 0.310"), "{warnings:?}");
        validation.any_auprc = 0.8;
        assert!(weak_classifier_warnings(&validation, Path::new("x")).is_empty());
    }

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
