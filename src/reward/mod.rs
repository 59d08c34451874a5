//! Stage 2, `rlhf reward`: a reward model from human comparisons. The Bradley–Terry loss
//! `−log σ(r_better − r_worse − margin)` over every ranked pair of a prompt, the pairs of one
//! prompt weighing as much as one comparison (InstructGPT), plus a small pull of the scores
//! toward zero; validation pairwise accuracy and margin; the final model saved with the mean
//! and spread of its training rewards for PPO to normalise with.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use burn::prelude::*;
use serde_json::{Value, json};
use tokenizers::Tokenizer;

pub mod length;
pub mod pairs;

use pairs::{Encoded, PairBatch, PairMetrics, encode_file, flat_sequences, smoothed_pair_loss};

use crate::bad_input;
use crate::checkpoint::{Source, save_atomically};
use crate::config::reward::{DEFAULT_MAX_LEN, RewardConfig};
use crate::config::train::resolve_max_len;
use crate::data::scoring::{ResponseEncoder, Sequence};
use crate::data::sft::FitReport;
use crate::data::template::ChatTemplate;
use crate::data::tokenizer;
use crate::dist;
use crate::model::adapter::{self, Adapter, Task};
use crate::model::auto::{Classifier, ModelDir};
use crate::model::config::Arch;
use crate::model::heads::{EncoderClassifier, ScalarModel};
use crate::model::lora::LoraRun;
use crate::model::prefix_cache::{PrefixCache, frozen_blocks};
use crate::model::pretrained::{init_causal_lm, save_classifier};
use crate::model::reinit::reinit_top_blocks;
use crate::model::reward::{RewardNet, RewardStats, Scorer, response_encoder, score_all};
use crate::model::{ModelConfig, preset, save_scalar_model};
use crate::train::interrupt;
use crate::train::run::{self, Stage, Trainer, round};
use crate::train::start::{self, Resumed, TrainOptions, resume_error, with_lora};
use crate::train::step;

pub fn train(options: &TrainOptions, device: &Device) -> Result<()> {
    let config: RewardConfig = start::load_config(options, device)?;
    // Everything is loaded and checked before the first step, so bad input writes nothing.
    let ad = device.clone().autodiff();
    let start = Start::open(&config, options.resume, &ad)?;
    let trained = config.model.train_layers;
    let reinit = if options.resume { 0 } else { config.model.reinit_layers };
    let model_config = &start.info.config;
    match start.net {
        RewardNet::Decoder(model) => {
            let model = reinit_top_blocks(model, reinit, model_config).train_top_layers(trained);
            let model = match &start.info.lora {
                Some(lora) => {
                    with_lora_adapters(model, lora, &start.info, &config, options.resume, &ad)?
                }
                None => model,
            };
            let model = dist::broadcast_parameters(model)?;
            Run::new(config, model, start.info, device, &options.overrides)?.train()
        }
        RewardNet::CrossEncoder(_) if config.model.lora.is_some() => Err(bad_input!(
            "{}: key `model.lora` applies to decoder reward models; a BERT-family cross-encoder trains in full\nhint: remove [model.lora], or start from an SFT checkpoint",
            options.config.display()
        )),
        RewardNet::CrossEncoder(model) => {
            let model = reinit_top_blocks(model, reinit, model_config).train_top_layers(trained);
            let model = dist::broadcast_parameters(model)?;
            Run::new(config, model, start.info, device, &options.overrides)?.train()
        }
    }
}

/// The decoder reward model with LoRA adapters on its body and its score head trained in full
/// (`peft`'s `modules_to_save`); a resumed run's adapters and head read back from its output.
fn with_lora_adapters(
    model: ScalarModel,
    lora: &LoraRun,
    info: &StartInfo,
    config: &RewardConfig,
    resume: bool,
    ad: &Device,
) -> Result<ScalarModel> {
    ad.seed(config.train.seed);
    let mut model = with_lora(model, &lora.spec, &info.config, config.model.train_layers)?;
    model.score = model.score.set_require_grad(true);
    match resume {
        true => adapter::restore(model, &config.output.dir, info.config.layout(), ad),
        false => Ok(model),
    }
}

/// The network a run trains, with how to save it.
trait Backbone: Scorer + Clone {
    fn write(&self, config: &ModelConfig, tokenizer_dir: &Path, dir: &Path) -> Result<()>;
}

impl Backbone for ScalarModel {
    fn write(&self, config: &ModelConfig, tokenizer_dir: &Path, dir: &Path) -> Result<()> {
        save_scalar_model(self, config, Some(tokenizer_dir), dir)
    }
}

impl Backbone for EncoderClassifier {
    fn write(&self, config: &ModelConfig, tokenizer_dir: &Path, dir: &Path) -> Result<()> {
        save_classifier(self, config, &["LABEL_0".into()], None, Some(tokenizer_dir), dir)
    }
}

/// What a run starts from, besides the network.
struct StartInfo {
    config: ModelConfig,
    tokenizer: Tokenizer,
    /// Where the tokenizer files (and a decoder's chat template) come from.
    tokenizer_dir: PathBuf,
    parent: Option<Source>,
    resumed: Option<Resumed>,
    /// With `[model.lora]`: what the checkpoint's adapters apply to.
    lora: Option<LoraRun>,
}

struct Start {
    net: RewardNet,
    info: StartInfo,
}

impl Start {
    fn open(config: &RewardConfig, resume: bool, ad: &Device) -> Result<Self> {
        let (dir, parent, resumed) = match (&config.model.base, resume) {
            // A LoRA run resumes from its base; its adapters are put back later.
            (_, true) if config.model.lora.is_some() => {
                let resumed = Resumed::read(&config.output.dir)?;
                let base = Adapter::open(&config.output.dir).map_err(resume_error)?.base;
                (base, resumed.lineage.parent.clone(), Some(resumed))
            }
            (_, true) => {
                let dir = &config.output.dir;
                let resumed = Resumed::read(dir)?;
                (dir.clone(), resumed.lineage.parent.clone(), Some(resumed))
            }
            (Some(base), false) => (base.clone(), Some(Source::model_dir(base)?), None),
            (None, false) => return Self::from_preset(config, ad),
        };
        ad.seed(config.train.seed); // a fresh head draws its initial weights
        let mut opened = ModelDir::open(&dir)?;
        if let Some(pooling) = config.model.pooling {
            opened = opened.with_pooling(pooling)?;
        }
        // InstructGPT: the RM starts as the SFT model with its LM head replaced.
        let loaded = opened.trainable_classifier(1, ad)?;
        let net = match loaded.model {
            Classifier::Decoder(model) => RewardNet::Decoder(model),
            Classifier::Encoder(model) => RewardNet::CrossEncoder(model),
        };
        let (model_config, tokenizer) = (loaded.config, loaded.tokenizer);
        let tokenizer = tokenizer.ok_or_else(|| {
            bad_input!(
                "{}: no tokenizer.json\nhint: the reward model needs the base model's tokenizer",
                dir.display()
            )
        })?;
        let lora = config
            .model
            .lora
            .as_ref()
            .map(|spec| LoraRun { spec: spec.clone(), base: dir.clone() });
        let info = StartInfo {
            config: model_config,
            tokenizer,
            tokenizer_dir: dir,
            parent,
            resumed,
            lora,
        };
        Ok(Self { net, info })
    }

    fn from_preset(config: &RewardConfig, ad: &Device) -> Result<Self> {
        let source = &config.model;
        let (preset_name, tokenizer_path) = (
            source.init.as_deref().expect("validated: init or base"),
            source.tokenizer.as_ref().expect("validated: init comes with tokenizer"),
        );
        let tokenizer = tokenizer::read(tokenizer_path)?;
        let tokenizer_dir = tokenizer::files_dir(tokenizer_path).to_path_buf();
        let model_config = preset::resolve(preset_name, &[], &tokenizer, &tokenizer_dir)?;
        ad.seed(config.train.seed);
        let body = init_causal_lm(&model_config, ad)?.body;
        let (d, std) = (model_config.hidden_size(), model_config.initializer_range());
        let net = RewardNet::Decoder(ScalarModel::from_decoder(body, d, 1, std, ad));
        let info = StartInfo {
            config: model_config,
            tokenizer,
            tokenizer_dir,
            parent: None,
            resumed: None,
            lora: None,
        };
        Ok(Self { net, info })
    }
}

/// Training and validation comparisons, encoded.
struct Data {
    train: Vec<Encoded>,
    valid: Vec<Encoded>,
    files: Vec<Source>,
}

impl Data {
    fn read(config: &RewardConfig, encoder: &ResponseEncoder, max_len: usize) -> Result<Self> {
        let data = &config.data;
        let mut report = FitReport::default();
        let (train, valid, files) = run::read_splits(
            &data.train,
            data.valid.as_deref(),
            data.valid_fraction,
            config.train.seed,
            |path| {
                let (encoded, fit) = encode_file(path, encoder)?;
                report.truncated += fit.truncated;
                report.dropped += fit.dropped;
                Ok(encoded)
            },
        )?;
        if report.truncated + report.dropped > 0 {
            dist::warn(&format!(
                "reward: {} comparison(s) longer than data.max_len = {}: {} with prompts cut from the left, {} dropped",
                report.truncated + report.dropped,
                max_len,
                report.truncated,
                report.dropped
            ));
        }
        if train.is_empty() {
            return Err(bad_input!(
                "{}: no comparison fits data.max_len = {}",
                data.train.display(),
                max_len
            ));
        }
        Ok(Self { train, valid, files })
    }
}

/// A training run in progress.
struct Run<M: Backbone> {
    config: RewardConfig,
    model: M,
    info: StartInfo,
    /// Decoders only.
    template: Option<ChatTemplate>,
    data: Data,
    trainer: Trainer,
    /// Validation metrics at the last evaluation.
    valid: Option<PairMetrics>,
    /// The frozen blocks' output, with `model.train_layers` (built when training starts).
    frozen: Option<Frozen>,
    pad: u32,
    /// The plain (no autodiff) device, for evaluation.
    device: Device,
}

impl<M: Backbone> Run<M> {
    fn new(
        config: RewardConfig,
        model: M,
        mut info: StartInfo,
        device: &Device,
        overrides: &[String],
    ) -> Result<Self> {
        let (max_len, note) =
            resolve_max_len(config.data.max_len, DEFAULT_MAX_LEN, model.max_len())
                .map_err(|e| bad_input!("{e}"))?;
        if let Some(note) = note {
            dist::note(&format!("reward: {note}"));
        }
        let template = match (&info.config.arch, &config.data.template) {
            (Arch::Bert(_), Some(_)) => {
                return Err(bad_input!(
                    "key `data.template` applies to decoder backbones; a cross-encoder reads [CLS] prompt [SEP] response [SEP]\nhint: remove it"
                ));
            }
            (Arch::Bert(_), None) => None,
            (_, name) => Some(ChatTemplate::resolve(name.as_deref(), &info.tokenizer_dir)?),
        };
        let encoder = response_encoder(
            &info.config,
            &info.tokenizer,
            template.as_ref(),
            max_len,
            config.data.truncation,
        )?;
        let data = Data::read(&config, &encoder, max_len)?;
        drop(encoder);
        let lineage =
            run::lineage("reward", &config, overrides, info.parent.clone(), data.files.clone())?;
        let trainer = Trainer::new(
            "reward",
            &config.train,
            &config.output,
            data.train.len(),
            lineage,
            info.resumed.take(),
            &model,
            info.config.layout(),
            device,
        )?;
        trainer.check_selection(data.valid.len())?;
        let pad = info.config.pad_id(&info.tokenizer);
        Ok(Self {
            config,
            model,
            info,
            template,
            data,
            trainer,
            valid: None,
            frozen: None,
            pad,
            device: device.clone(),
        })
    }

    fn train(&mut self) -> Result<()> {
        let train = &self.config.train;
        let t = &self.trainer;
        if t.progress.step == 0 {
            t.log.say(&format!(
                "reward: {} comparisons ({} for validation), {} steps of {} × {} comparisons",
                self.data.train.len(),
                self.data.valid.len(),
                t.total_steps,
                train.grad_accum,
                train.batch_size
            ));
        }
        if t.progress.step < t.total_steps {
            self.frozen = Frozen::build(self)?;
            self.trainer.restart_rates();
        }
        run::run(self)?;
        let valid = self.valid.map_or(String::new(), |v| {
            format!(", valid accuracy {:.4} (mean margin {:.3})", v.accuracy, v.mean_margin)
        });
        if dist::is_main() {
            eprintln!(
                "reward: {} steps in {:.1} s{valid}; saved {}",
                self.trainer.progress.step,
                self.trainer.progress.seconds,
                self.trainer.out.display()
            );
        }
        Ok(())
    }

    /// One optimizer step over `grad_accum` micro-batches of comparisons; returns the loss,
    /// the pairwise accuracy, and the gradient norm before clipping.
    /// The loss is a mean over the step's comparisons, each the weighted sum of its pairs.
    fn optimizer_step(&mut self, lr: f64) -> Result<(f64, f64, f64)> {
        let ad = &self.device.clone().autodiff();
        let n = self.data.train.len();
        let micro_batches: Vec<Vec<usize>> =
            (0..self.config.train.grad_accum).map(|_| self.trainer.next_batch(n)).collect();
        let comparisons: usize = micro_batches.iter().map(Vec::len).sum();
        let sequences: usize =
            micro_batches.iter().flatten().map(|&i| self.data.train[i].sequences.len()).sum();
        let (train, frozen, loss, pad) =
            (&self.data.train, &self.frozen, &self.config.loss, self.pad);
        // Σ loss, right pairs, pairs and tokens.
        let step = step::optimizer_step(
            &mut self.trainer,
            &mut self.model,
            &micro_batches,
            lr,
            |model, rows, [loss_sum, right, pairs, tokens]: &mut [f64; 4]| {
                let examples: Vec<&Encoded> = rows.iter().map(|&i| &train[i]).collect();
                let step = PairBatch::new(&examples, loss.margin, pad, ad);
                *tokens += step.batch.token_count as f64;
                let scores = match frozen {
                    Some(frozen) => {
                        let hidden = frozen.train.batch(&frozen.sequence_rows(rows)).autodiff();
                        model.scores_after(hidden, &step.batch, frozen.train.blocks)
                    }
                    None => model.scores(&step.batch),
                };
                let gaps =
                    scores.clone().select(0, step.better) - scores.clone().select(0, step.worse);
                let pair_loss =
                    smoothed_pair_loss(gaps.clone() - step.margins, loss.label_smoothing);
                let loss = (pair_loss * step.weights).sum().div_scalar(comparisons as f64)
                    + scores
                        .powi_scalar(2)
                        .sum()
                        .mul_scalar(loss.center_coefficient / sequences as f64);
                *loss_sum += loss.clone().into_scalar::<f32>() as f64;
                let gaps = gaps.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 gaps");
                *right += gaps.iter().filter(|&&g| g > 0.0).count() as f64;
                *pairs += gaps.len() as f64;
                loss
            },
            |[loss_sum, ..]| *loss_sum,
        )?;
        let [loss_sum, right, pairs, tokens] = step.sums;
        self.trainer.progress.tokens += tokens as u64;
        Ok((loss_sum, right / pairs, step.grad_norm))
    }

    /// Scores of the training (or validation) responses, in order.
    fn scores(&self, train: bool) -> Vec<f32> {
        let sequences = flat_sequences(if train { &self.data.train } else { &self.data.valid });
        let model = self.model.valid();
        match &self.frozen {
            Some(f) => {
                let cache = if train { &f.train } else { &f.valid };
                cache.scores(&model, &sequences, self.pad, &self.device)
            }
            None => score_all(&model, &sequences, self.pad, &self.device),
        }
    }

    /// Validation accuracy, margin and loss (recorded).
    fn validate(&mut self) -> PairMetrics {
        let scores = self.scores(false);
        let metrics = PairMetrics::of(&self.data.valid, &scores, self.config.loss.margin);
        let step = self.trainer.progress.step;
        self.trainer.log.record(json!({
            "step": step, "valid_accuracy": round(metrics.accuracy, 5),
            "valid_mean_margin": round(metrics.mean_margin, 5), "valid_loss": round(metrics.loss, 5),
        }));
        self.trainer.log.say(&format!(
            "step {step}: valid accuracy {:.4}, mean margin {:.4}, loss {:.4}",
            metrics.accuracy, metrics.mean_margin, metrics.loss
        ));
        metrics
    }

    /// Writes the whole checkpoint atomically; the last one also gets the reward statistics
    /// of the training set.
    fn write_checkpoint(&mut self) -> Result<()> {
        let valid = self.valid;
        let last = self.trainer.progress.step == self.trainer.total_steps;
        let stats = last.then(|| RewardStats::of(&self.scores(true)));
        let metrics = json!({
            "step": self.trainer.progress.step,
            "valid_accuracy": valid.map(|v| v.accuracy),
            "valid_mean_margin": valid.map(|v| v.mean_margin),
            "reward_mean": stats.map(|s| s.mean),
            "reward_std": stats.map(|s| s.std),
        });
        let info = &self.info;
        save_atomically(&self.config.output.dir, |dir| {
            match &info.lora {
                Some(lora) => {
                    lora.save(&self.model, &info.config, Task::SeqCls, &info.tokenizer_dir, dir)?
                }
                None => self.model.write(&info.config, &info.tokenizer_dir, dir)?,
            }
            if let Some(source) = self.template.as_ref().and_then(ChatTemplate::builtin_source) {
                tokenizer::set_chat_template(dir, source)?;
            }
            if let Some(stats) = stats {
                stats.write(dir)?;
            }
            self.trainer.write_state(metrics, &self.model, info.config.layout(), dir)
        })
    }
}

impl<M: Backbone> Stage for Run<M> {
    type Model = M;

    fn trainer(&mut self) -> &mut Trainer {
        &mut self.trainer
    }

    fn model(&mut self) -> &mut M {
        &mut self.model
    }

    fn examples(&self) -> usize {
        self.data.train.len()
    }

    fn step(&mut self, lr: f64) -> Result<(Value, String)> {
        let (loss, accuracy, grad_norm) = self.optimizer_step(lr)?;
        let rate = self.trainer.rows_per_second();
        let record = json!({
            "loss": round(loss, 5), "accuracy": round(accuracy, 4), "grad_norm": round(grad_norm, 5),
            "tokens": self.trainer.progress.tokens, "comparisons_per_s": round(rate, 2),
        });
        Ok((record, format!("loss {loss:.4}  acc {accuracy:.3}  lr {lr:.2e}  {rate:.1} cmp/s")))
    }

    /// Validation pairwise accuracy.
    fn evaluate(&mut self) -> Result<Option<f64>> {
        if self.data.valid.is_empty() {
            return Ok(None);
        }
        let metrics = self.validate();
        self.valid = Some(metrics);
        Ok(Some(metrics.accuracy))
    }

    fn save(&mut self) -> Result<()> {
        self.write_checkpoint()
    }
}

/// With `model.train_layers`, the training and validation responses' hidden states after the
/// frozen blocks, computed once before the first step (see `model::prefix_cache`).
struct Frozen {
    train: PrefixCache,
    valid: PrefixCache,
    /// Comparison i's responses are training sequences `offsets[i]..offsets[i + 1]`.
    offsets: Vec<usize>,
}

impl Frozen {
    fn build<M: Backbone>(run: &Run<M>) -> Result<Option<Self>> {
        let model = run.model.valid();
        let blocks = frozen_blocks(model.depth(), run.config.model.train_layers);
        if blocks == 0 {
            return Ok(None);
        }
        let (train, valid) = (flat_sequences(&run.data.train), flat_sequences(&run.data.valid));
        let log = &run.trainer.log;
        log.say(&format!(
            "reward: the frozen blocks ({blocks} of {}) run once over {} responses",
            model.depth(),
            train.len() + valid.len()
        ));
        let started = Instant::now();
        let stop = interrupt::check_with(
            "reward: stopped while running the frozen blocks; nothing was saved".into(),
        );
        let cache = |sequences: &[&Sequence]| {
            PrefixCache::build(&model, sequences, blocks, run.pad, &run.device, &stop)
        };
        let mut offsets = vec![0];
        for e in &run.data.train {
            offsets.push(offsets[offsets.len() - 1] + e.sequences.len());
        }
        let frozen = Self { train: cache(&train)?, valid: cache(&valid)?, offsets };
        log.say(&format!("reward: frozen blocks done in {:.1} s", started.elapsed().as_secs_f64()));
        Ok(Some(frozen))
    }

    /// The training sequences of comparisons `rows`, in `PairBatch`'s order.
    fn sequence_rows(&self, rows: &[usize]) -> Vec<usize> {
        rows.iter().flat_map(|&i| self.offsets[i]..self.offsets[i + 1]).collect()
    }
}
