//! Stage 1, `rlhf sft`: supervised fine-tuning on demonstrations — next-token cross-entropy on
//! the response tokens only, AdamW with warm-up and cosine decay, gradient accumulation and
//! global-norm clipping, periodic validation and atomic, resumable checkpoints.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use burn::module::Module;
use burn::prelude::*;
use serde_json::{Value, json};
use tokenizers::Tokenizer;

use crate::bad_input;
use crate::checkpoint::{Source, save_atomically};
use crate::config::sft::{DEFAULT_MAX_LEN, SftConfig};
use crate::config::train::resolve_max_len;
use crate::data::batch::TokenBatch;
use crate::data::jsonl::read_rows;
use crate::data::sft::{Example, FitReport, SftEncoder, SftRow, pack};
use crate::data::template::ChatTemplate;
use crate::data::tokenizer;
use crate::dist;
use crate::generate::{Generator, SamplingConfig};
use crate::metrics::{read_jsonl, write_jsonl};
use crate::model::lora::{LoraRun, save_policy};
use crate::model::loss::selected_nll_sum;
use crate::model::mask::PaddedBatch;
use crate::model::reinit::reinit_top_blocks;
use crate::model::{CausalLm, ModelConfig};
use crate::train::run::{self, Stage, Trainer, round};
use crate::train::start::{self, CausalStart, LmSource, TrainOptions};
use crate::train::step;

const SAMPLES_FILE: &str = "samples.jsonl";
const EVAL_BATCH_SIZE: usize = 8;

pub fn train(options: &TrainOptions, device: &Device) -> Result<()> {
    let config: SftConfig = start::load_config(options, device)?;

    // Everything is loaded and checked before the first step, so bad input writes nothing.
    let ad = device.clone().autodiff();
    let source = LmSource::of(&config.model);
    let mut start = CausalStart::open(
        "sft",
        source,
        &config.output.dir,
        options.resume,
        config.train.seed,
        &ad,
    )?;
    if !options.resume {
        start.model = reinit_top_blocks(start.model, config.model.reinit_layers, &start.config);
    }
    start.model = start.model.train_top_layers(config.model.train_layers);
    start.model = dist::broadcast_parameters(start.model)?;
    let data = Data::read(&config, &start)?;
    let mut run = Run::new(config, start, data, device.clone(), &options.overrides)?;
    run.train()
}

/// Training and validation examples, encoded.
struct Data {
    train: Vec<Example>,
    valid: Vec<Example>,
    template: ChatTemplate,
    files: Vec<Source>,
}

impl Data {
    fn read(config: &SftConfig, start: &CausalStart) -> Result<Self> {
        let data = &config.data;
        let window = start.config.context_window();
        let (max_len, note) = resolve_max_len(data.max_len, DEFAULT_MAX_LEN, window)
            .map_err(|e| bad_input!("{e}"))?;
        if let Some(note) = note {
            dist::note(&format!("sft: {note}"));
        }
        let template = ChatTemplate::resolve(Some(&data.template), &start.tokenizer_dir)?;
        let encoder = SftEncoder {
            tokenizer: &start.tokenizer,
            template: &template,
            max_len,
            truncation: data.truncation,
            eos: start.config.eos_id(&start.tokenizer),
            eos_after_answers: matches!(template, ChatTemplate::Hh),
        };
        let mut report = FitReport::default();
        let (train, valid, files) = run::read_splits(
            &data.train,
            data.valid.as_deref(),
            data.valid_fraction,
            config.train.seed,
            |path| {
                let (examples, fit) = encode_file(path, &encoder)?;
                report.truncated += fit.truncated;
                report.dropped += fit.dropped;
                Ok(examples)
            },
        )?;
        if report.truncated + report.dropped > 0 {
            dist::warn(&format!(
                "sft: {} row(s) longer than data.max_len = {}: {} cut from the left of the prompt, {} dropped",
                report.truncated + report.dropped,
                max_len,
                report.truncated,
                report.dropped
            ));
        }
        let finish = |examples: Vec<(Example, bool)>| -> Vec<Example> {
            if !data.packing {
                return examples.into_iter().map(|(e, _)| e).collect();
            }
            let (text, chat): (Vec<_>, Vec<_>) =
                examples.into_iter().partition(|(_, is_text)| *is_text);
            let mut all: Vec<Example> = chat.into_iter().map(|(e, _)| e).collect();
            all.extend(pack(text.into_iter().map(|(e, _)| e).collect(), max_len));
            all
        };
        let (train, valid) = (finish(train), finish(valid));
        if train.is_empty() {
            return Err(bad_input!(
                "{}: no row fits data.max_len = {}",
                data.train.display(),
                max_len
            ));
        }
        Ok(Self { train, valid, template, files })
    }
}

/// Reads and encodes every row of `path`; errors name `FILE:LINE`. Each example comes with
/// whether it is a `text` row (only those are packed).
pub fn encode_file(path: &Path, encoder: &SftEncoder) -> Result<(Vec<(Example, bool)>, FitReport)> {
    let mut report = FitReport::default();
    let mut examples = Vec::new();
    for row in read_rows(path)? {
        let at = row.error_at(path);
        let parsed = SftRow::parse(&row.fields).map_err(&at)?;
        if let Some(example) = encoder.encode(&parsed, &mut report).map_err(&at)? {
            if example.target_count() > 0 {
                examples.push((example, matches!(parsed, SftRow::Text(_))));
            }
        }
    }
    Ok((examples, report))
}

/// Mean next-token loss over every target of `examples`, and the number of targets; batches
/// of similar lengths go together to pad less.
pub fn mean_loss(
    model: &CausalLm,
    examples: &[Example],
    pad: u32,
    device: &Device,
) -> (f64, usize) {
    let mut order: Vec<&Example> = examples.iter().collect();
    order.sort_by_key(|e| e.ids.len());
    let (mut sum, mut count) = (0.0, 0);
    for chunk in order.chunks(EVAL_BATCH_SIZE) {
        let batch = TokenBatch::new(chunk, pad, device);
        count += batch.target_count;
        sum += batch_nll(model, batch).into_scalar::<f32>() as f64;
    }
    (sum / count.max(1) as f64, count)
}

/// Σ −log p(target) over a batch's targets (the LM head runs at those positions only).
fn batch_nll(model: &CausalLm, batch: TokenBatch) -> Tensor<1> {
    let hidden = model.hidden(batch.input_ids, &PaddedBatch::new(batch.attention_mask), None);
    selected_nll_sum(model, hidden, batch.predict_at, batch.targets)
}

/// A training run in progress.
struct Run {
    config: SftConfig,
    model: CausalLm,
    model_config: ModelConfig,
    tokenizer: Tokenizer,
    tokenizer_dir: PathBuf,
    /// With `[model.lora]`: what the checkpoint's adapters apply to.
    lora: Option<LoraRun>,
    data: Data,
    trainer: Trainer,
    samples: Vec<Value>,
    /// Validation loss at the last evaluation.
    valid_loss: Option<f64>,
    pad: u32,
    /// The plain (no autodiff) device, for evaluation and sampling.
    device: Device,
}

impl Run {
    fn new(
        config: SftConfig,
        start: CausalStart,
        data: Data,
        device: Device,
        overrides: &[String],
    ) -> Result<Self> {
        let lineage =
            run::lineage("sft", &config, overrides, start.parent.clone(), data.files.clone())?;
        let out = &config.output.dir;
        let samples = match start.resumed {
            Some(_) => read_jsonl(&out.join(SAMPLES_FILE)),
            None => Vec::new(),
        };
        let trainer = Trainer::new(
            "sft",
            &config.train,
            &config.output,
            data.train.len(),
            lineage,
            start.resumed,
            &start.model,
            start.config.layout(),
            &device,
        )?;
        trainer.check_selection(data.valid.len())?;
        let pad = start.config.pad_id(&start.tokenizer);
        Ok(Self {
            config,
            model: start.model,
            model_config: start.config,
            tokenizer: start.tokenizer,
            tokenizer_dir: start.tokenizer_dir,
            lora: start.lora,
            data,
            trainer,
            samples,
            valid_loss: None,
            pad,
            device,
        })
    }

    fn train(&mut self) -> Result<()> {
        let train = &self.config.train;
        let t = &self.trainer;
        if t.progress.step == 0 {
            t.log.say(&format!(
                "sft: {} examples ({} for validation), {} steps of {} × {} rows",
                self.data.train.len(),
                self.data.valid.len(),
                t.total_steps,
                train.grad_accum,
                train.batch_size
            ));
        }
        run::run(self)?;
        let progress = &self.trainer.progress;
        let valid = self.valid_loss.map_or(String::new(), |l: f64| {
            format!(", valid loss {l:.4} (perplexity {:.2})", l.exp())
        });
        if dist::is_main() {
            eprintln!(
                "sft: {} steps, {} tokens in {:.1} s ({:.0} tokens/s){valid}; saved {}",
                progress.step,
                progress.tokens,
                progress.seconds,
                progress.tokens as f64 / progress.seconds.max(1e-9),
                self.trainer.out.display()
            );
        }
        Ok(())
    }

    /// One optimizer step over `grad_accum` micro-batches; returns the loss and the gradient
    /// norm before clipping. The loss is a mean over every target token of the step, so each
    /// token weighs the same however the rows are batched — or split over ranks: each rank
    /// runs its share of every micro-batch, and the gradients are summed before clipping.
    fn optimizer_step(&mut self, lr: f64) -> Result<(f64, f64)> {
        let ad = &self.device.clone().autodiff();
        let n = self.data.train.len();
        let micro_batches: Vec<Vec<usize>> =
            (0..self.config.train.grad_accum).map(|_| self.trainer.next_batch(n)).collect();
        let (train, pad) = (&self.data.train, self.pad);
        let examples =
            |rows: &[usize]| -> Vec<&Example> { rows.iter().map(|&i| &train[i]).collect() };
        let step_targets: usize =
            micro_batches.iter().flat_map(|rows| examples(rows)).map(Example::target_count).sum();
        // Σ nll and tokens.
        let step = step::optimizer_step(
            &mut self.trainer,
            &mut self.model,
            &micro_batches,
            lr,
            |model, rows, [nll_sum, tokens]: &mut [f64; 2]| {
                let batch = TokenBatch::new(&examples(rows), pad, ad);
                *tokens += batch.token_count as f64;
                let nll = batch_nll(model, batch);
                *nll_sum += nll.clone().into_scalar::<f32>() as f64;
                nll.div_scalar(step_targets as f64)
            },
            |[nll_sum, _]| nll_sum / step_targets as f64,
        )?;
        let [nll_sum, tokens] = step.sums;
        self.trainer.progress.tokens += tokens as u64;
        Ok((nll_sum / step_targets as f64, step.grad_norm))
    }

    /// Validation loss (recorded) and a few greedy samples (kept for `samples.jsonl`).
    fn validate(&mut self) -> Result<()> {
        let step = self.trainer.progress.step;
        let model = self.model.valid();
        let (loss, _) = mean_loss(&model, &self.data.valid, self.pad, &self.device);
        self.trainer.log.record(json!({ "step": step, "valid_loss": round(loss, 5), "valid_perplexity": round(loss.exp(), 4) }));
        self.trainer
            .log
            .say(&format!("step {step}: valid loss {loss:.4}, perplexity {:.3}", loss.exp()));
        let prompts: Vec<Vec<u32>> = self
            .data
            .valid
            .iter()
            .filter_map(|e| e.target.iter().skip(1).position(|&t| t).map(|i| e.ids[..=i].to_vec()))
            .filter(|prompt| {
                prompt.len() + self.config.samples.max_new_tokens
                    <= self.model_config.context_window()
            })
            .take(self.config.samples.count)
            .collect();
        if !prompts.is_empty() {
            let sampling = SamplingConfig {
                max_new_tokens: self.config.samples.max_new_tokens,
                ..SamplingConfig::default()
            };
            let generator =
                Generator::new(&model, &self.tokenizer, &self.model_config, &self.device);
            let generations = generator.generate(&prompts, &sampling, &mut |_, _| {})?;
            for (prompt, generation) in prompts.iter().zip(generations) {
                let decode = |ids: &[u32]| {
                    self.tokenizer.decode(ids, false).map_err(|e| anyhow!("decoding a sample: {e}"))
                };
                self.samples.push(json!({ "step": step, "prompt": decode(prompt)?, "completion": decode(&generation.tokens)? }));
            }
        }
        self.valid_loss = Some(loss);
        Ok(())
    }

    /// Writes the whole checkpoint atomically: model, tokenizer, lineage, metrics, state.
    fn write_checkpoint(&mut self) -> Result<()> {
        let valid_loss = self.valid_loss;
        let metrics = json!({
            "step": self.trainer.progress.step,
            "tokens": self.trainer.progress.tokens,
            "valid_loss": valid_loss,
            "valid_perplexity": valid_loss.map(f64::exp),
        });
        save_atomically(&self.config.output.dir, |dir| {
            let (model, config, from) = (&self.model, &self.model_config, &self.tokenizer_dir);
            save_policy(self.lora.as_ref(), model, config, from, dir)?;
            if let Some(source) = self.data.template.builtin_source() {
                tokenizer::set_chat_template(dir, source)?;
            }
            write_jsonl(&dir.join(SAMPLES_FILE), &self.samples)?;
            self.trainer.write_state(metrics, &self.model, self.model_config.layout(), dir)
        })
    }
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
        let (loss, grad_norm) = self.optimizer_step(lr)?;
        let (tokens, rate) = (self.trainer.progress.tokens, self.trainer.tokens_per_second());
        let record = json!({
            "loss": round(loss, 5), "grad_norm": round(grad_norm, 5),
            "tokens": tokens, "tokens_per_s": round(rate, 1),
        });
        Ok((record, format!("loss {loss:.4}  lr {lr:.2e}  {rate:.0} tok/s")))
    }

    /// Lower validation loss is better.
    fn evaluate(&mut self) -> Result<Option<f64>> {
        if self.data.valid.is_empty() {
            return Ok(None);
        }
        self.validate()?;
        Ok(self.valid_loss.map(|loss| -loss))
    }

    fn save(&mut self) -> Result<()> {
        self.write_checkpoint()
    }
}
