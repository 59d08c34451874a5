//! `rlhf grpo`: Group Relative Policy Optimization (Shao et al., 2024) and RLOO (Ahmadian et
//! al., 2024) — online RL without a value model. TRL's `GRPOConfig` names and defaults.
//!
//! The loop, as the paper's Algorithm 1 reads: for each step, a batch of prompts → G
//! completions of each, sampled from one shared prefill → the reward functions' scores (reward
//! models, the moderation penalty, reward programs) → each completion's advantage relative to
//! its group → μ updates of the clipped objective, plus β·KL to the reference when β > 0 →
//! log → save.

pub mod advantage;
pub mod loss;
pub mod program;
pub mod rewards;
pub mod stats;

use std::time::Instant;

use anyhow::Result;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use serde_json::{Value, json};
use tokenizers::Tokenizer;

use crate::bad_input;
use crate::checkpoint::{Source, save_atomically};
use crate::config::grpo::GrpoConfig;
use crate::data::prompts::{Prompt, read_prompts};
use crate::data::template::ChatTemplate;
use crate::data::tokenizer;
use crate::dist;
use crate::dpo::policy::{load_reference, open_policy, record_reference};
use crate::generate::Generator;
use crate::metrics::{read_jsonl, write_jsonl};
use crate::model::lora::{LoraRun, save_policy, without_adapters};
use crate::model::pretrained::init_causal_lm;
use crate::model::{CausalLm, ModelConfig};
use crate::ppo::rollout::{Rollout, Sampler, SharedPrompts, decode_all, entropy, shared_log_probs};
use crate::train::run::{self, Stage, Trainer, round};
use crate::train::start::{self, CausalStart, TrainOptions};
use crate::train::step;
use advantage::{advantages, batch_moments};
use loss::{BatchSize, KlPenalty, grpo_loss, token_weight};
use rewards::Rewards;
use stats::{IterationStats, UpdateSums};

/// Every logged iteration's completions, with their rewards and advantages.
const COMPLETIONS_FILE: &str = "completions.jsonl";

pub fn train(options: &TrainOptions, device: &Device) -> Result<()> {
    let config: GrpoConfig = start::load_config(options, device)?;
    // Everything is loaded, checked and started before the first rollout, so bad input
    // writes nothing.
    let out = &config.output.dir;
    let start = open_policy("grpo", &config.model, out, options, config.train.seed, device)?;
    let template = ChatTemplate::resolve(None, &start.tokenizer_dir)?;
    let prompts = read_prompts_for(&config, &start, &template)?;
    let reference = match (config.grpo.beta > 0.0, &config.model.reference, &start.lora) {
        (false, ..) => None,
        // LoRA: π_ref is the policy with its adapters off, the same weights in memory.
        (true, None, Some(_)) => {
            let shell = init_causal_lm(&start.config, device)?;
            Some(without_adapters(&start.model, shell))
        }
        (true, reference, _) => {
            let dir = reference.as_ref().or(config.model.base.as_ref());
            let dir = dir.expect("validated: β > 0 needs model.reference or model.base");
            Some(load_reference(dir, &start.tokenizer, device)?)
        }
    };
    let rewards = Rewards::open(&config.rewards, device)?;
    let mut files = vec![Source::file(&config.data.prompts)?];
    files.extend(program_sources(&config)?);
    let overrides = &options.overrides;
    let mut run =
        Run::new(config, start, template, prompts, files, reference, rewards, overrides, device)?;
    run.train()
}

fn read_prompts_for(
    config: &GrpoConfig,
    start: &CausalStart,
    template: &ChatTemplate,
) -> Result<Vec<Prompt>> {
    let window = start.config.context_window();
    let (max_prompt, new) = (config.data.max_prompt_len, config.rollout.max_new_tokens);
    if max_prompt + new > window {
        return Err(bad_input!(
            "keys `data.max_prompt_len` ({max_prompt}) + `rollout.max_new_tokens` ({new}) exceed the policy's context window of {window} tokens"
        ));
    }
    let path = &config.data.prompts;
    let (prompts, truncated) = read_prompts(path, &start.tokenizer, template, max_prompt)?;
    if truncated > 0 {
        dist::warn(&format!(
            "grpo: {truncated} prompt(s) longer than data.max_prompt_len = {max_prompt} cut from the left"
        ));
    }
    if prompts.len() < config.train.batch_size {
        return Err(bad_input!(
            "{}: {} prompts, fewer than one iteration's train.batch_size = {}",
            path.display(),
            prompts.len(),
            config.train.batch_size
        ));
    }
    Ok(prompts)
}

/// A reward program's script is part of the run's data: a resumed run with an edited judge
/// would optimise another reward. Its arguments that name files are recorded with their hash.
fn program_sources(config: &GrpoConfig) -> Result<Vec<Source>> {
    let arguments = config.rewards.iter().filter_map(|r| r.command.as_ref());
    let files = arguments.flat_map(|c| c.iter().skip(1)).map(std::path::Path::new);
    files.filter(|path| path.is_file()).map(Source::file).collect()
}

/// What scoring an iteration's completions gives: each function's scores, their weighted sum
/// and the advantages at full precision (the rollouts keep f32 copies for the loss).
struct Scored {
    /// `[function][completion]`.
    scores: Vec<Vec<f64>>,
    rewards: Vec<f64>,
    advantages: Vec<f64>,
    texts: Vec<String>,
    /// Per completion, the reward standard deviation whose zeros `frac_reward_zero_std`
    /// counts: its group's, or with `scale_rewards = "batch"` the batch's (TRL's).
    group_stds: Vec<f64>,
}

/// A training run in progress.
struct Run {
    config: GrpoConfig,
    model: CausalLm,
    model_config: ModelConfig,
    tokenizer: Tokenizer,
    tokenizer_dir: std::path::PathBuf,
    template: ChatTemplate,
    prompts: Vec<Prompt>,
    /// π_ref, loaded only when β > 0.
    reference: Option<CausalLm>,
    /// With `[model.lora]`: what the checkpoint's adapters apply to.
    lora: Option<LoraRun>,
    rewards: Rewards,
    trainer: Trainer,
    /// `completions.jsonl` so far.
    completions: Vec<Value>,
    /// The last iteration's metrics, for the lineage.
    last: Value,
    pad: u32,
    /// Tokens that end a completion.
    eos: Vec<u32>,
    device: Device,
}

impl Run {
    #[allow(clippy::too_many_arguments)]
    fn new(
        config: GrpoConfig,
        start: CausalStart,
        template: ChatTemplate,
        prompts: Vec<Prompt>,
        files: Vec<Source>,
        reference: Option<CausalLm>,
        rewards: Rewards,
        overrides: &[String],
        device: &Device,
    ) -> Result<Self> {
        let mut lineage = run::lineage("grpo", &config, overrides, start.parent.clone(), files)?;
        let reference_dir = config.model.reference.as_deref().filter(|_| reference.is_some());
        record_reference(&mut lineage, reference_dir, start.resumed.as_ref())?;
        let resuming = start.resumed.is_some();
        let mut trainer = Trainer::new(
            "grpo",
            &config.train,
            &config.output,
            prompts.len(),
            lineage,
            start.resumed,
            &start.model,
            start.config.layout(),
            device,
        )?;
        trainer.drop_last(prompts.len());
        // μ optimizer updates a step: AdamW's bias correction counts updates.
        trainer.adam.set_steps((trainer.progress.step * config.grpo.num_iterations) as u64);
        let completions = match resuming {
            true => read_jsonl(&config.output.dir.join(COMPLETIONS_FILE)),
            false => Vec::new(),
        };
        let pad = start.config.pad_id(&start.tokenizer);
        let eos = Generator::new(&start.model.valid(), &start.tokenizer, &start.config, device)
            .with_generation_config(&start.tokenizer_dir)
            .eos()
            .to_vec();
        Ok(Self {
            config,
            model: start.model,
            model_config: start.config,
            tokenizer: start.tokenizer,
            tokenizer_dir: start.tokenizer_dir,
            template,
            prompts,
            reference,
            lora: start.lora,
            rewards,
            trainer,
            completions,
            last: Value::Null,
            pad,
            eos,
            device: device.clone(),
        })
    }

    fn train(&mut self) -> Result<()> {
        let t = &self.trainer;
        if t.progress.step == 0 {
            let g = &self.config.grpo;
            let names: Vec<&str> = self.rewards.functions.iter().map(|f| f.name.as_str()).collect();
            t.log.say(&format!(
                "grpo: {} prompts, {} iterations of {} prompts × {} completions, {} update(s) each; rewards: {}",
                self.prompts.len(),
                t.total_steps,
                self.config.train.batch_size,
                g.num_generations,
                g.num_iterations,
                names.join(", ")
            ));
        }
        run::run(self)?;
        let progress = &self.trainer.progress;
        if dist::is_main() {
            eprintln!(
                "grpo: {} iterations, {} tokens sampled in {:.1} s; saved {}",
                progress.step,
                progress.tokens,
                progress.seconds,
                self.trainer.out.display()
            );
        }
        Ok(())
    }

    /// G completions of each prompt in `rows` (a group's completions side by side), with the
    /// sampler's log π_old of every token and, when β > 0, log π_ref from one pass of the
    /// reference over the finished sequences (each group's prompt read once).
    fn roll_out(&self, rows: &[usize]) -> Result<Vec<Rollout>> {
        let g = self.config.grpo.num_generations;
        let prompts: Vec<Vec<u32>> = rows
            .iter()
            .flat_map(|&i| std::iter::repeat_n(self.prompts[i].ids.clone(), g))
            .collect();
        // LoRA adapters merged into a copy of the weights, once per rollout: every decoding
        // step then runs at the base model's speed (a no-op without adapters).
        let policy = self.model.valid().materialize();
        let sampler = Sampler {
            policy: &policy,
            tokenizer: &self.tokenizer,
            config: &self.model_config,
            eos: &self.eos,
            rollout: &self.config.rollout,
        };
        let step = self.trainer.progress.step;
        let mut rollouts = sampler.roll_out(prompts, self.config.train.seed, step, &self.device)?;
        let temperature = self.config.rollout.temperature;
        if let Some(reference) = &self.reference {
            for chunk in rollouts.chunks_mut(self.config.grpo.micro_batch_size) {
                let rows: Vec<(&[u32], &[u32])> = chunk.iter().map(Rollout::pair).collect();
                let log_probs =
                    shared_log_probs(reference, &rows, self.pad, temperature, &self.device);
                for (rollout, log_probs) in chunk.iter_mut().zip(log_probs) {
                    rollout.ref_log_probs = log_probs;
                }
            }
        }
        Ok(rollouts)
    }

    /// Scores every completion with every reward function and sets each rollout's reward
    /// (`score`) and advantage (on every token of `advantages`).
    fn score(&mut self, rows: &[usize], rollouts: &mut [Rollout]) -> Result<Scored> {
        let g = self.config.grpo.num_generations;
        let texts = decode_all(&self.tokenizer, rollouts.iter().map(|r| &r.response))?;
        let prompts: Vec<&Prompt> =
            rows.iter().flat_map(|&i| std::iter::repeat_n(&self.prompts[i], g)).collect();
        let scores = self.rewards.score(&prompts, &texts, &self.device)?;
        let rewards = self.rewards.combine(&scores);
        let mut moments = batch_moments(&rewards);
        dist::sum(&mut moments)?;
        let grpo = &self.config.grpo;
        let (advantages, group_stds) =
            advantages(&rewards, g, grpo.advantage, grpo.scale_rewards, moments);
        for ((rollout, &reward), &advantage) in rollouts.iter_mut().zip(&rewards).zip(&advantages) {
            rollout.score = reward as f32;
            rollout.advantages = vec![advantage as f32; rollout.response.len()];
        }
        Ok(Scored { scores, rewards, advantages, texts, group_stds })
    }

    /// `grpo.num_iterations` optimizer updates, each over every completion of the iteration
    /// (this rank's, in micro-batches), its loss normalised over all ranks' completions.
    fn update(&mut self, rollouts: &[Rollout], lr: f64) -> Result<UpdateSums> {
        let ad = self.device.clone().autodiff();
        let grpo = self.config.grpo.clone();
        let temperature = self.config.rollout.temperature;
        // Tokens in the loss of each completion: all of them, or none of a truncated one.
        let active: Vec<usize> = rollouts
            .iter()
            .map(|r| match grpo.mask_truncated_completions && !r.ended {
                true => 0,
                false => r.response.len(),
            })
            .collect();
        let mut counts = [rollouts.len() as f64, active.iter().sum::<usize>() as f64];
        dist::sum(&mut counts)?;
        let size = BatchSize {
            completions: counts[0],
            tokens: counts[1],
            tokens_here: active.iter().sum::<usize>() as f64,
            ranks: dist::world_size() as f64,
            max_completion_length: self.config.rollout.max_new_tokens as f64,
        };
        let weights: Vec<Vec<f32>> = rollouts
            .iter()
            .zip(&active)
            .map(|(r, &n)| {
                let w = if n == 0 { 0.0 } else { token_weight(grpo.loss_type, n, &size) };
                vec![w as f32; r.response.len()]
            })
            .collect();
        let in_loss: Vec<Vec<f32>> = rollouts
            .iter()
            .zip(&active)
            .map(|(r, &n)| vec![if n == 0 { 0.0 } else { 1.0 }; r.response.len()])
            .collect();
        let order: Vec<usize> = (0..rollouts.len()).collect();
        let mut total = UpdateSums::default();
        for _ in 0..grpo.num_iterations {
            let mut accumulator = GradientsAccumulator::<CausalLm>::new();
            let mut sums = [0.0; UpdateSums::LEN];
            for chunk in order.chunks(grpo.micro_batch_size) {
                let rows: Vec<&Rollout> = chunk.iter().map(|&i| &rollouts[i]).collect();
                // A group's G completions read their prompt once (and back-propagate into it).
                let pairs: Vec<(&[u32], &[u32])> = rows.iter().map(|r| r.pair()).collect();
                let shared = SharedPrompts::new(&pairs, self.pad, &ad);
                let batch = &shared.batch;
                let per_token = |rows: Vec<&[f32]>| batch.per_token(&rows);
                let of = |field: fn(&Rollout) -> &[f32]| rows.iter().map(|r| field(r)).collect();
                let logits = batch.logits(&self.model, shared.hidden(&self.model), temperature);
                let log_probs = batch.chosen(logits.clone());
                // With one update, π_old is the policy itself (ratio 1, TRL's shortcut);
                // with more, the sampler's log-probabilities.
                let old = match grpo.num_iterations {
                    1 => log_probs.clone().detach(),
                    _ => per_token(of(|r| &r.log_probs)),
                };
                let reference = (grpo.beta > 0.0).then(|| per_token(of(|r| &r.ref_log_probs)));
                let mask = per_token(chunk.iter().map(|&i| in_loss[i].as_slice()).collect());
                let out = grpo_loss(
                    log_probs,
                    old,
                    reference,
                    per_token(of(|r| &r.advantages)),
                    per_token(chunk.iter().map(|&i| weights[i].as_slice()).collect()),
                    mask.clone(),
                    grpo.clip(),
                    KlPenalty { beta: grpo.beta, bias_correction: grpo.use_bias_correction_kl },
                );
                let entropy = (entropy(logits.detach(), batch.shape()) * mask).sum();
                let parts = Tensor::cat(vec![out.loss.clone().detach(), out.sums, entropy], 0);
                let parts: Vec<f32> = parts.into_data().convert::<f32>().try_to_vec().expect("f32");
                sums.iter_mut().zip(parts).for_each(|(s, p)| *s += p as f64);
                let grads = GradientsParams::from_grads(out.loss.backward(), &self.model);
                accumulator.accumulate(&self.model, grads);
            }
            let step = step::apply(
                &mut self.trainer,
                &mut self.model,
                accumulator.grads(),
                sums,
                lr,
                |sums| sums[0],
            )?;
            total.add(step.sums, step.grad_norm);
        }
        total.tokens = size.tokens;
        Ok(total)
    }

    fn write_checkpoint(&mut self) -> Result<()> {
        let metrics = self.last.clone();
        let (completions, template) = (&self.completions, &self.template);
        save_atomically(&self.config.output.dir, |dir| {
            let (model, config, from) = (&self.model, &self.model_config, &self.tokenizer_dir);
            save_policy(self.lora.as_ref(), model, config, from, dir)?;
            if let Some(source) = template.builtin_source() {
                tokenizer::set_chat_template(dir, source)?;
            }
            write_jsonl(&dir.join(COMPLETIONS_FILE), completions)?;
            self.trainer.write_state(metrics, &self.model, self.model_config.layout(), dir)
        })
    }

    /// Adds this iteration's completions to `completions.jsonl` (the main rank's), with what a
    /// reference implementation needs to recompute the step: the token ids (the completion's
    /// end-of-turn token included when it ended) and the rewards and advantages at full
    /// precision.
    fn log_completions(&mut self, rows: &[usize], rollouts: &[Rollout], scored: &Scored) {
        let every = self.config.grpo.log_completions_every;
        let iteration = self.trainer.progress.step + 1;
        if every == 0 || !dist::is_main() || (iteration != 1 && iteration % every != 0) {
            return;
        }
        let g = self.config.grpo.num_generations;
        for (i, rollout) in rollouts.iter().enumerate() {
            let mut functions = serde_json::Map::new();
            for (function, scores) in self.rewards.functions.iter().zip(&scored.scores) {
                functions.insert(function.name.clone(), json_number(scores[i]));
            }
            self.completions.push(json!({
                "step": iteration,
                "prompt": self.prompts[rows[i / g]].source,
                "completion": scored.texts[i],
                "reward": json_number(scored.rewards[i]),
                "rewards": functions,
                "advantage": json_number(scored.advantages[i]),
                "tokens": rollout.response.len(),
                "ended": rollout.ended,
                "prompt_ids": rollout.prompt,
                "completion_ids": rollout.response,
            }));
        }
    }
}

/// A score for JSON, unrounded (NaN, a function's "no score", is null).
fn json_number(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
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
        self.prompts.len()
    }

    /// One iteration: sampling, scoring, advantages, μ updates. With several ranks, each
    /// samples and scores the groups of its share of the prompts; batch statistics are summed
    /// over ranks.
    fn step(&mut self, lr: f64) -> Result<(Value, String)> {
        let started = Instant::now();
        let all_rows = self.trainer.next_batch(self.prompts.len());
        let rows = dist::shard(&all_rows).to_vec();
        let mut rollouts = self.roll_out(&rows)?;
        let scored = self.score(&rows, &mut rollouts)?;
        let rollout_seconds = started.elapsed().as_secs_f64();
        let updated = Instant::now();
        let update = self.update(&rollouts, lr)?;
        let update_seconds = updated.elapsed().as_secs_f64();
        self.log_completions(&rows, &rollouts, &scored);

        let stats =
            IterationStats::of(&rollouts, &scored.rewards, &scored.scores, &scored.group_stds)?;
        self.trainer.progress.tokens += stats.completion_tokens as u64;
        let rate = self.trainer.tokens_per_second();
        let names: Vec<&str> = self.rewards.functions.iter().map(|f| f.name.as_str()).collect();
        let mut record = stats.json(&names, &update, self.config.grpo.beta > 0.0);
        record.insert("rollout_s".into(), round(rollout_seconds, 3).into());
        record.insert("update_s".into(), round(update_seconds, 3).into());
        record.insert("tokens".into(), self.trainer.progress.tokens.into());
        record.insert("tokens_per_s".into(), round(rate, 1).into());
        let message = format!(
            "reward {:.3} ± {:.3}  zero-std {:.2}  len {:.1}  {rate:.0} tok/s",
            stats.reward, stats.reward_std, stats.frac_reward_zero_std, stats.mean_length
        );
        self.last = Value::Object(record.clone());
        Ok((Value::Object(record), message))
    }

    fn evaluate(&mut self) -> Result<Option<f64>> {
        Ok(None) // `rlhf grpo eval` measures a saved policy on held-out prompts
    }

    fn save(&mut self) -> Result<()> {
        self.write_checkpoint()
    }
}
