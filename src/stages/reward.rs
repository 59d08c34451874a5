//! Stage 2, `rlhf reward`: a reward model from human comparisons. The Bradley–Terry loss
//! `−log σ(r_better − r_worse − margin)` over every ranked pair of a prompt, the pairs of one
//! prompt weighing as much as one comparison (InstructGPT), plus a small pull of the scores
//! toward zero; validation pairwise accuracy and margin; the final model saved with the mean
//! and spread of its training rewards for PPO to normalise with.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::log_sigmoid;
use serde_json::{Map, Value, json};
use tokenizers::Tokenizer;

use crate::checkpoint::{Lineage, Source, save_atomically};
use crate::cli::{EvalArgs, TrainArgs};
use crate::config::reward::RewardConfig;
use crate::data::chat::{Message, Role, parse_messages};
use crate::data::jsonl::read_rows;
use crate::data::preference::{Comparison, prompt_field};
use crate::data::scoring::{ResponseEncoder, Sequence, SequenceBatch};
use crate::data::sft::FitReport;
use crate::data::template::ChatTemplate;
use crate::data::tokenizer;
use crate::dist;
use crate::error::Interrupted;
use crate::model::config::{Arch, HeadKind};
use crate::model::heads::{EncoderClassifier, ScalarModel};
use crate::model::prefix_cache::{PrefixCache, frozen_blocks};
use crate::model::pretrained::{init_causal_lm, load_encoder_classifier, save_classifier};
use crate::model::reinit::reinit_top_blocks;
use crate::model::reward::{
    RewardModel, RewardNet, RewardStats, Scorer, response_encoder, score_all,
};
use crate::model::{ModelConfig, load_causal_lm, load_scalar_model, preset, save_scalar_model};
use crate::train::grad_norm::clip_factor;
use crate::train::interrupt;
use crate::train::run::{self, Stage, Trainer, round};
use crate::train::state::{RunProgress, STATE_DIR};
use crate::{bad_input, config};

/// A comparison encoded: its responses' sequences, best first.
#[derive(Debug, Clone)]
struct Encoded {
    sequences: Vec<Sequence>,
    comparison: Comparison,
}

pub fn train(args: &TrainArgs, device: &Device) -> Result<()> {
    let config: RewardConfig = config::load(&args.config, &args.overrides)?;
    crate::model::precision::set(config.train.precision, device);
    let origin = args.config.display();
    config.validate().map_err(|e| bad_input!("{origin}: {e}"))?;
    run::check_output(&config.output, args.resume)?;

    // Everything is loaded and checked before the first step, so bad input writes nothing.
    let ad = device.clone().autodiff();
    let start = Start::open(&config, args.resume, &ad)?;
    interrupt::install();
    let trained = config.model.train_layers;
    let reinit = if args.resume { 0 } else { config.model.reinit_layers };
    let model_config = &start.info.config;
    match start.net {
        RewardNet::Decoder(model) => {
            let model = reinit_top_blocks(model, reinit, model_config).train_top_layers(trained);
            let model = dist::broadcast_parameters(model)?;
            Run::new(config, model, start.info, device, &args.overrides)?.train()
        }
        RewardNet::CrossEncoder(model) => {
            let model = reinit_top_blocks(model, reinit, model_config).train_top_layers(trained);
            let model = dist::broadcast_parameters(model)?;
            Run::new(config, model, start.info, device, &args.overrides)?.train()
        }
    }
}

/// `rlhf reward eval`: pairwise accuracy and mean margin on comparisons.
pub fn eval(args: &EvalArgs, device: &Device) -> Result<()> {
    let model = RewardModel::load(&args.model, device)?;
    let encoder = model.encoder()?;
    let (encoded, report) = encode_file(&args.data, &encoder)?;
    let sequences = flat_sequences(&encoded);
    let scores = model.score_sequences(&sequences, device);
    let metrics = PairMetrics::of(&encoded, &scores, 0.0);
    let report = json!({
        "accuracy": metrics.accuracy,
        "mean_margin": metrics.mean_margin,
        "loss": metrics.loss,
        "comparisons": encoded.len(),
        "pairs": metrics.pairs,
        "truncated": report.truncated,
        "dropped": report.dropped,
    });
    if args.json {
        println!("{report}");
    } else {
        println!("accuracy     {:.4}", metrics.accuracy);
        println!("mean margin  {:.4}", metrics.mean_margin);
        println!("loss         {:.4}", metrics.loss);
        println!("count        {} comparisons, {} pairs", encoded.len(), metrics.pairs);
    }
    Ok(())
}

/// `rlhf reward score`: each row of `data` with its reward added — `score` for a single
/// response (`prompt` + `response`/`completion`, or `messages` ending with the assistant),
/// `scores` (best first) for comparison rows.
pub fn score(args: &crate::cli::ScoreArgs, device: &Device) -> Result<()> {
    let model = RewardModel::load(&args.model, device)?;
    let encoder = model.encoder()?;
    let started = Instant::now(); // scoring speed: tokenization and forward passes
    let path = &args.data;
    let rows = read_rows(path)?;
    let mut sequences = Vec::new();
    let mut counts = Vec::with_capacity(rows.len());
    for row in &rows {
        let at = |e: String| bad_input!("{}:{}: {e}", path.display(), row.line);
        let (prompt, responses) = scored_row(&row.fields).map_err(at)?;
        for response in &responses {
            let sequence =
                encoder.encode(&prompt, response, &mut FitReport::default()).map_err(at)?;
            sequences.push(sequence.ok_or_else(|| {
                at("the response alone is longer than the model's context window".into())
            })?);
        }
        counts.push(responses.len());
    }
    let scores = model.score_sequences(&sequences.iter().collect::<Vec<_>>(), device);
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "reward: scored {} responses in {seconds:.2} s ({:.1} responses/s)",
        scores.len(),
        scores.len() as f64 / seconds
    );
    let mut out: Box<dyn Write> = match &args.out {
        Some(file) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(file)
                .map_err(|e| bad_input!("cannot write {}: {e}", file.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut next = scores.into_iter();
    for (row, count) in rows.into_iter().zip(counts) {
        let mut fields = row.fields;
        let mine: Vec<f32> = next.by_ref().take(count).collect();
        let single = !(fields.contains_key("chosen") || fields.contains_key("responses"));
        match single {
            true => fields.insert("score".into(), json!(mine[0])),
            false => fields.insert("scores".into(), json!(mine)),
        };
        writeln!(out, "{}", Value::Object(fields))?;
    }
    out.flush()?;
    Ok(())
}

/// A row to score: its prompt and the response(s).
fn scored_row(row: &Map<String, Value>) -> Result<(Vec<Message>, Vec<String>), String> {
    if row.contains_key("chosen") || row.contains_key("responses") {
        let comparison = Comparison::parse(row)?;
        return Ok((comparison.prompt, comparison.responses));
    }
    if let Some(messages) = row.get("messages") {
        let mut messages = parse_messages(messages, "messages")?;
        return match messages.pop() {
            Some(last) if last.role == Role::Assistant && !messages.is_empty() => {
                Ok((messages, vec![last.content]))
            }
            _ => Err("field `messages` must end with the assistant turn to score".into()),
        };
    }
    let response = match (row.get("response"), row.get("completion")) {
        (Some(Value::String(r)), None) | (None, Some(Value::String(r))) => r.clone(),
        (None, None) => {
            return Err(
                "expected `prompt` + `response` (or `completion`), `messages`, or a comparison row"
                    .into(),
            );
        }
        _ => return Err("field `response` (or `completion`) must be one string".into()),
    };
    let prompt = prompt_field(row)?.ok_or("field `prompt` is missing")?;
    Ok((prompt, vec![response]))
}

/// Reads and encodes every comparison of `path`; errors name `FILE:LINE`. A comparison one of
/// whose responses does not fit is dropped whole (and counted).
fn encode_file(path: &Path, encoder: &ResponseEncoder) -> Result<(Vec<Encoded>, FitReport)> {
    let mut report = FitReport::default();
    let mut encoded = Vec::new();
    for row in read_rows(path)? {
        let at = |e: String| bad_input!("{}:{}: {e}", path.display(), row.line);
        let comparison = Comparison::parse(&row.fields).map_err(at)?;
        let mut sequences = Vec::new();
        let mut fit = FitReport::default();
        for response in &comparison.responses {
            if let Some(sequence) =
                encoder.encode(&comparison.prompt, response, &mut fit).map_err(at)?
            {
                sequences.push(sequence);
            }
        }
        if sequences.len() == comparison.responses.len() {
            report.truncated += usize::from(fit.truncated > 0);
            encoded.push(Encoded { sequences, comparison });
        } else {
            report.dropped += 1;
        }
    }
    Ok((encoded, report))
}

/// Accuracy, margin and loss over every pair of some comparisons.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PairMetrics {
    /// Pairs whose better response scores strictly higher.
    accuracy: f64,
    /// Mean r_better − r_worse.
    mean_margin: f64,
    /// Mean over comparisons of the weighted pair loss.
    loss: f64,
    pairs: usize,
}

impl PairMetrics {
    /// `scores` holds each comparison's responses in order.
    fn of(encoded: &[Encoded], scores: &[f32], default_margin: f64) -> Self {
        let (mut right, mut pairs, mut margin_sum, mut loss_sum) = (0, 0, 0.0, 0.0);
        let mut at = 0;
        for e in encoded {
            let s = &scores[at..at + e.sequences.len()];
            at += e.sequences.len();
            let margin = e.comparison.margin.unwrap_or(default_margin);
            for pair in e.comparison.pairs() {
                let gap = (s[pair.better] - s[pair.worse]) as f64;
                right += usize::from(gap > 0.0);
                pairs += 1;
                margin_sum += gap;
                loss_sum += pair.weight * softplus(-(gap - margin));
            }
        }
        let n = pairs.max(1) as f64;
        Self {
            accuracy: right as f64 / n,
            mean_margin: margin_sum / n,
            loss: loss_sum / encoded.len().max(1) as f64,
            pairs,
        }
    }
}

/// `−(1 − ε)·log σ(d) − ε·log σ(−d)` per pair.
fn smoothed_pair_loss(d: Tensor<1>, smoothing: f64) -> Tensor<1> {
    let loss = -log_sigmoid(d.clone());
    match smoothing > 0.0 {
        true => loss.mul_scalar(1.0 - smoothing) - log_sigmoid(-d).mul_scalar(smoothing),
        false => loss,
    }
}

/// log(1 + eˣ), stable: −log σ(d) = softplus(−d).
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
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
    resumed: Option<(RunProgress, Lineage)>,
}

struct Start {
    net: RewardNet,
    info: StartInfo,
}

impl Start {
    fn open(config: &RewardConfig, resume: bool, ad: &Device) -> Result<Self> {
        let (dir, parent, resumed) = match (&config.model.base, resume) {
            (_, true) => {
                let dir = &config.output.dir;
                let lineage = Lineage::read(dir).map_err(|e| bad_input!("--resume: {e:#}"))?;
                let progress = RunProgress::read(&dir.join(STATE_DIR))
                    .map_err(|e| bad_input!("--resume: {e:#}"))?;
                (dir.clone(), lineage.parent.clone(), Some((progress, lineage)))
            }
            (Some(base), false) => (base.clone(), Some(Source::model_dir(base)?), None),
            (None, false) => return Self::from_preset(config, ad),
        };
        ad.seed(config.train.seed); // a fresh head draws its initial weights
        let mut model_config = ModelConfig::read(&dir)?;
        if let Some(pooling) = config.model.pooling {
            model_config = model_config.with_pooling(pooling)?;
        }
        let (net, tokenizer) = match (&model_config.arch, model_config.head_kind()) {
            (Arch::Bert(bert), _) => {
                let loaded = load_encoder_classifier(&dir, Some(1), ad)?;
                let model = loaded.model.with_pooling(bert.classifier_pooling);
                (RewardNet::CrossEncoder(model), loaded.tokenizer)
            }
            (_, HeadKind::Scalar) => {
                let loaded = load_scalar_model(&dir, ad)?;
                (RewardNet::Decoder(loaded.model), loaded.tokenizer)
            }
            (_, HeadKind::CausalLm) => {
                // InstructGPT: the RM starts as the SFT model with its LM head replaced.
                let loaded = load_causal_lm(&dir, ad)?;
                let (d, std) = (model_config.hidden_size(), model_config.initializer_range());
                let model = ScalarModel::from_decoder(loaded.model.body, d, 1, std, ad);
                (RewardNet::Decoder(model), loaded.tokenizer)
            }
            (_, HeadKind::Classifier | HeadKind::Encoder) => {
                return Err(bad_input!(
                    "{}: a classifier with {} labels cannot become a reward model\nhint: start from an SFT checkpoint, a base model or an encoder",
                    dir.display(),
                    model_config.num_labels()
                ));
            }
        };
        let tokenizer = tokenizer.ok_or_else(|| {
            bad_input!(
                "{}: no tokenizer.json\nhint: the reward model needs the base model's tokenizer",
                dir.display()
            )
        })?;
        let info =
            StartInfo { config: model_config, tokenizer, tokenizer_dir: dir, parent, resumed };
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
    fn read(config: &RewardConfig, encoder: &ResponseEncoder) -> Result<Self> {
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
            eprintln!(
                "reward: {} comparison(s) longer than data.max_len = {}: {} with prompts cut from the left, {} dropped",
                report.truncated + report.dropped,
                data.max_len,
                report.truncated,
                report.dropped
            );
        }
        if train.is_empty() {
            return Err(bad_input!(
                "{}: no comparison fits data.max_len = {}",
                data.train.display(),
                data.max_len
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
        let window = model.max_len();
        if config.data.max_len > window {
            return Err(bad_input!(
                "key `data.max_len` = {} exceeds the model's context window of {window} tokens",
                config.data.max_len
            ));
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
            config.data.max_len,
            config.data.truncation,
        )?;
        let data = Data::read(&config, &encoder)?;
        drop(encoder);
        let lineage =
            run::lineage("reward", &config, overrides, info.parent.clone(), data.files.clone())?;
        let trainer = Trainer::new(
            "reward",
            &config.train,
            &config.output.dir,
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
        if t.progress.step >= t.total_steps {
            t.log.say(&format!(
                "reward: {} already has all {} steps",
                t.out.display(),
                t.total_steps
            ));
        } else if t.progress.step == 0 {
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
        let mut accumulator = GradientsAccumulator::<M>::new();
        // This rank's Σ loss, right pairs, pairs and tokens; then the whole step's.
        let mut sums = [0.0; 4];
        let smoothing = self.config.loss.label_smoothing;
        for rows in &micro_batches {
            let rows = dist::shard(rows);
            if rows.is_empty() {
                continue;
            }
            let examples: Vec<&Encoded> = rows.iter().map(|&i| &self.data.train[i]).collect();
            let step = PairBatch::new(&examples, self.config.loss.margin, self.pad, ad);
            sums[3] += step.batch.token_count as f64;
            let scores = match &self.frozen {
                Some(frozen) => {
                    let hidden = frozen.train.batch(&frozen.sequence_rows(rows)).autodiff();
                    self.model.scores_after(hidden, &step.batch, frozen.train.blocks)
                }
                None => self.model.scores(&step.batch),
            };
            let gaps = scores.clone().select(0, step.better) - scores.clone().select(0, step.worse);
            let pair_loss = smoothed_pair_loss(gaps.clone() - step.margins, smoothing);
            let loss = (pair_loss * step.weights).sum().div_scalar(comparisons as f64)
                + scores
                    .powi_scalar(2)
                    .sum()
                    .mul_scalar(self.config.loss.center_coefficient / sequences as f64);
            let grads = GradientsParams::from_grads(loss.backward(), &self.model);
            accumulator.accumulate(&self.model, grads);
            sums[0] += loss.into_scalar::<f32>() as f64;
            let gaps = gaps.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 gaps");
            sums[1] += gaps.iter().filter(|&&g| g > 0.0).count() as f64;
            sums[2] += gaps.len() as f64;
        }
        let mut grads = accumulator.grads();
        dist::all_reduce_gradients(&self.model, &mut grads)?;
        dist::sum(&mut sums)?;
        let [loss_sum, right, pairs, tokens] = sums;
        self.trainer.progress.tokens += tokens as u64;
        let (grad_norm, clip) = clip_factor(&self.model, &grads, self.config.train.max_grad_norm);
        if !loss_sum.is_finite() || !grad_norm.is_finite() {
            return Err(self.trainer.diverged(loss_sum));
        }
        self.trainer.adam.step(&mut self.model, grads, lr, clip);
        Ok((loss_sum, right / pairs, grad_norm))
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
            self.model.write(&info.config, &info.tokenizer_dir, dir)?;
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
        let stop = || match interrupt::requested() {
            Some(signal) => Err(anyhow::Error::new(Interrupted {
                signal,
                message: "reward: stopped while running the frozen blocks; nothing was saved"
                    .into(),
            })),
            None => Ok(()),
        };
        let cache = |sequences: &[&Sequence]| {
            PrefixCache::build(&model, sequences, blocks, run.pad, &run.device, stop)
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

/// Every response of `examples`, in order.
fn flat_sequences(examples: &[Encoded]) -> Vec<&Sequence> {
    examples.iter().flat_map(|e| &e.sequences).collect()
}

/// A micro-batch of comparisons: all their responses in one batch, and the pairs as indices
/// into it with their weights and margins.
struct PairBatch {
    batch: SequenceBatch,
    better: Tensor<1, Int>,
    worse: Tensor<1, Int>,
    weights: Tensor<1>,
    margins: Tensor<1>,
}

impl PairBatch {
    fn new(examples: &[&Encoded], default_margin: f64, pad: u32, device: &Device) -> Self {
        let mut sequences = Vec::new();
        let (mut better, mut worse, mut weights, mut margins) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for e in examples {
            let offset = sequences.len() as i64;
            sequences.extend(&e.sequences);
            let margin = e.comparison.margin.unwrap_or(default_margin) as f32;
            for pair in e.comparison.pairs() {
                better.push(offset + pair.better as i64);
                worse.push(offset + pair.worse as i64);
                weights.push(pair.weight as f32);
                margins.push(margin);
            }
        }
        let p = better.len();
        let ints = |v: Vec<i64>| Tensor::from_data(TensorData::new(v, [p]), device);
        let floats = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [p]), device);
        Self {
            batch: SequenceBatch::new(&sequences, pad, device),
            better: ints(better),
            worse: ints(worse),
            weights: floats(weights),
            margins: floats(margins),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::preference::Comparison;
    use serde_json::json;

    fn encoded(row: Value) -> Encoded {
        let comparison = Comparison::parse(row.as_object().unwrap()).unwrap();
        let sequences =
            vec![Sequence { ids: vec![1], type_ids: vec![0] }; comparison.responses.len()];
        Encoded { sequences, comparison }
    }

    #[test]
    fn metrics_count_pairs_and_weigh_each_prompt_once() {
        let ranking = encoded(json!({"prompt": "p", "responses": ["a", "b", "c"]}));
        let pair = encoded(json!({"prompt": "p", "chosen": "a", "rejected": "b"}));
        // Ranking scored 3, 1, 2: pairs (0,1) ✓, (0,2) ✓, (1,2) ✗. Pair scored 0, 1: ✗.
        let scores = [3.0, 1.0, 2.0, 0.0, 1.0];
        let m = PairMetrics::of(&[ranking, pair], &scores, 0.0);
        assert_eq!(m.pairs, 4);
        assert!((m.accuracy - 0.5).abs() < 1e-12);
        assert!((m.mean_margin - (2.0 + 1.0 - 1.0 - 1.0) / 4.0).abs() < 1e-9);
        let ranking_loss = (softplus(-2.0) + softplus(-1.0) + softplus(1.0)) / 3.0;
        assert!((m.loss - (ranking_loss + softplus(1.0)) / 2.0).abs() < 1e-9);
    }

    #[test]
    fn smoothed_loss_mixes_both_directions_of_the_pair() {
        let device = crate::device::DeviceSpec::Cpu.device().unwrap();
        let d = [-2.0f32, 0.0, 3.0];
        let loss = |eps: f64| {
            let t = Tensor::<1>::from_floats(d, &device);
            smoothed_pair_loss(t, eps).into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
        };
        for eps in [0.0, 0.1] {
            for (got, &d) in loss(eps).iter().zip(&d) {
                let d = d as f64;
                let want = (1.0 - eps) * softplus(-d) + eps * softplus(d);
                assert!((*got as f64 - want).abs() < 1e-5, "ε {eps}, d {d}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn softplus_is_minus_log_sigmoid_of_minus_x() {
        for x in [-30.0, -1.0, 0.0, 2.0, 40.0] {
            let reference = -(1.0 / (1.0 + f64::exp(x))).ln();
            assert!((softplus(x) - reference).abs() < 1e-9, "{x}");
        }
    }
}
