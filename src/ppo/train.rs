//! Stage 3, `rlhf ppo`: InstructGPT's PPO. Each iteration samples responses to a batch of
//! prompts with the KV-cache engine, scores them with the frozen reward model, charges every
//! token −β·(log π − log π_ref) against the frozen SFT policy, estimates advantages with GAE,
//! and makes `ppo_epochs` passes of clipped policy + value updates over minibatches.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokenizers::Tokenizer;

use crate::checkpoint::{Source, save_atomically};
use crate::config::ppo::{PpoConfig, ValueModel};
use crate::data::batch::TokenBatch;
use crate::data::chat::Message;
use crate::data::jsonl::read_rows;
use crate::data::prompts::{Prompt, read_prompts};
use crate::data::sft::Truncation;
use crate::data::sft::{Example, FitReport, SftEncoder, SftRow, pack};
use crate::data::template::ChatTemplate;
use crate::dist;
use crate::generate::Generator;
use crate::metrics::{read_jsonl, write_jsonl};
use crate::model::adapter::{self, Adapter, Task};
use crate::model::auto::Classifier;
use crate::model::layers::normal_linear;
use crate::model::lora::{LoraRun, LoraSpec, save_policy, without_adapters};
use crate::model::loss::selected_nll_sum;
use crate::model::pretrained::init_causal_lm;
use crate::model::reward::{RewardModel, RewardNet, RewardStats};
use crate::model::{
    CausalLm, ModelConfig, ModelDir, PaddedBatch, ScalarModel, load_causal_lm, load_scalar_model,
    save_scalar_model,
};
use crate::moderation::Moderator;
use crate::ppo::actor_critic::{ActorCritic, Critic};
use crate::ppo::advantage::{explained_variance, gae, moments, token_rewards, whiten};
use crate::ppo::kl::{KlController, token_kl};
use crate::ppo::loss::{clipped_policy_loss, clipped_value_loss, masked_mean};
use crate::ppo::rollout::{
    ResponseBatch, Rollout, Sampler, decode_all, entropy, reference_log_probs,
};
use crate::ppo::stats::{RolloutSums, UpdateParts, UpdateStats};
use crate::train::run::{self, Stage, Trainer, round};
use crate::train::shuffle::permutation;
use crate::train::start::{self, Resumed, TrainOptions, resume_error, with_lora};
use crate::train::state::STATE_DIR;
use crate::train::step;
use crate::{bad_input, json_file};

/// The value model inside a PPO checkpoint (a `*ForSequenceClassification` directory).
pub const VALUE_DIR: &str = "value";
const SAMPLES_FILE: &str = "samples.jsonl";
/// PPO's own part of `state/`: β and the optimizer updates made.
const PPO_STATE_FILE: &str = "ppo.json";
/// Rows of `samples.jsonl` per logged iteration.
const SAMPLES_PER_LOG: usize = 4;

pub fn train(options: &TrainOptions, device: &Device) -> Result<()> {
    let config: PpoConfig = start::load_config(options, device)?;

    // Everything is loaded and checked before the first rollout, so bad input writes nothing.
    let mut models = Models::open(&config, options.resume, device)?;
    models.actor_critic = dist::broadcast_parameters(models.actor_critic)?;
    let data = Data::read(&config, &models)?;
    let mut run = Run::new(config, models, data, device.clone(), &options.overrides)?;
    run.train()
}

/// The models of a run: the trained pair and the frozen ones.
struct Models {
    actor_critic: ActorCritic,
    policy_config: ModelConfig,
    value_config: ModelConfig,
    /// Where the policy's and the value model's tokenizer files are copied from on save.
    policy_files: PathBuf,
    value_files: PathBuf,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    reference: CausalLm,
    reward: RewardModel,
    moderator: Option<Moderator>,
    resumed: Option<(Resumed, PpoState)>,
    /// With `[model.lora]`: the policy and the value model train adapters, saved against
    /// `policy_files` and `value_files`.
    lora: Option<LoraSpec>,
}

impl Models {
    fn open(config: &PpoConfig, resume: bool, device: &Device) -> Result<Self> {
        if let Some(spec) = &config.model.lora {
            return Self::open_lora(config, spec, resume, device);
        }
        let ad = device.clone().autodiff();
        let sft = &config.model.policy;
        let reference = load_causal_lm(sft, device)?;
        let tokenizer = reference.tokenizer.clone().ok_or_else(|| {
            bad_input!(
                "{}: no tokenizer.json\nhint: model.policy is the SFT checkpoint",
                sft.display()
            )
        })?;
        let template = ChatTemplate::resolve(None, sft)?;
        let reward = RewardModel::load(&config.model.reward, device)?;
        let moderator = match &config.reward.moderation {
            Some(dir) => Some(Moderator::load(dir, device)?),
            None => None,
        };
        let (d, std) = (reference.config.hidden_size(), reference.config.initializer_range());
        let out = &config.output.dir;

        let (policy, critic, value_config, files, resumed) = if resume {
            let policy = load_causal_lm(out, &ad)?.model;
            let value = load_scalar_model(&out.join(VALUE_DIR), &ad)?;
            let resumed = Resumed::read(out)?;
            let state: PpoState =
                json_file::read(&out.join(STATE_DIR).join(PPO_STATE_FILE)).map_err(resume_error)?;
            let critic = match config.model.value_model {
                ValueModel::Separate => Critic::Separate(value.model),
                ValueModel::Shared => Critic::Shared(value.model.score),
            };
            let files = (out.clone(), out.join(VALUE_DIR));
            (policy, critic, value.config, files, Some((resumed, state)))
        } else {
            let policy = load_causal_lm(sft, &ad)?.model;
            let (critic, value_config, value_files) = match config.model.value_model {
                ValueModel::Shared => {
                    let head = normal_linear(d, 1, false, std, &ad);
                    (Critic::Shared(head), reference.config.clone(), sft.clone())
                }
                ValueModel::Separate if reads_like(&reward, &tokenizer) => {
                    let value = load_scalar_model(&config.model.reward, &ad)?;
                    (Critic::Separate(value.model), value.config, config.model.reward.clone())
                }
                ValueModel::Separate => {
                    dist::warn(
                        "ppo: the reward model does not read the policy's tokens (a cross-encoder or another tokenizer), so the value model starts from the SFT model with a fresh head",
                    );
                    let body = load_causal_lm(sft, &ad)?.model.body;
                    let value = ScalarModel::from_decoder(body, d, 1, std, &ad);
                    (Critic::Separate(value), reference.config.clone(), sft.clone())
                }
            };
            (policy, critic, value_config, (sft.clone(), value_files), None)
        };
        let policy = policy.train_top_layers(config.model.train_layers);
        Ok(Self {
            actor_critic: ActorCritic { policy, critic },
            policy_config: reference.config,
            value_config,
            policy_files: files.0,
            value_files: files.1,
            tokenizer,
            template,
            reference: reference.model,
            reward,
            moderator,
            resumed,
            lora: None,
        })
    }

    /// `open` with LoRA: adapters on the SFT policy, whose reference is the same weights with
    /// the adapters off (no second copy), and on the value model, whose head trains in full.
    fn open_lora(
        config: &PpoConfig,
        spec: &LoraSpec,
        resume: bool,
        device: &Device,
    ) -> Result<Self> {
        let ad = device.clone().autodiff();
        let (sft, out) = (&config.model.policy, &config.output.dir);
        let loaded = load_causal_lm(sft, &ad)?;
        let tokenizer = loaded.tokenizer.clone().ok_or_else(|| {
            bad_input!(
                "{}: no tokenizer.json\nhint: model.policy is the SFT checkpoint",
                sft.display()
            )
        })?;
        let policy_config = loaded.config;
        let layout = policy_config.layout();
        let train_layers = config.model.train_layers;
        ad.seed(config.train.seed);
        let policy = with_lora(loaded.model, spec, &policy_config, train_layers)?;
        let policy = match resume {
            true => adapter::restore(policy, out, layout, &ad)?,
            false => policy,
        };
        let reference = without_adapters(&policy, init_causal_lm(&policy_config, device)?);
        let template = ChatTemplate::resolve(None, sft)?;
        let reward = RewardModel::load(&config.model.reward, device)?;
        let moderator = match &config.reward.moderation {
            Some(dir) => Some(Moderator::load(dir, device)?),
            None => None,
        };
        let (d, std) = (policy_config.hidden_size(), policy_config.initializer_range());
        let value_dir = out.join(VALUE_DIR);
        let (critic, value_config, value_files) = match config.model.value_model {
            ValueModel::Shared if resume => {
                let saved = load_scalar_model(&value_dir, &ad)?;
                (Critic::Shared(saved.model.score), saved.config, sft.clone())
            }
            ValueModel::Shared => (
                Critic::Shared(normal_linear(d, 1, false, std, &ad)),
                policy_config.clone(),
                sft.clone(),
            ),
            ValueModel::Separate => {
                let base = match resume {
                    true => Adapter::open(&value_dir).map_err(resume_error)?.base,
                    false if reads_like(&reward, &tokenizer) => config.model.reward.clone(),
                    false => sft.clone(),
                };
                let value = ModelDir::open(&base)?.trainable_classifier(1, &ad)?;
                let Classifier::Decoder(model) = value.model else {
                    unreachable!("the value model's base reads the policy's tokens")
                };
                let mut model = with_lora(model, spec, &value.config, train_layers)?;
                model.score = model.score.set_require_grad(true);
                let model = match resume {
                    true => adapter::restore(model, &value_dir, value.config.layout(), &ad)?,
                    false => model,
                };
                (Critic::Separate(model), value.config, base)
            }
        };
        let resumed = match resume {
            true => {
                let state: PpoState = json_file::read(&out.join(STATE_DIR).join(PPO_STATE_FILE))
                    .map_err(resume_error)?;
                Some((Resumed::read(out)?, state))
            }
            false => None,
        };
        Ok(Self {
            actor_critic: ActorCritic { policy, critic },
            policy_config,
            value_config,
            policy_files: sft.clone(),
            value_files,
            tokenizer,
            template,
            reference,
            reward,
            moderator,
            resumed,
            lora: Some(spec.clone()),
        })
    }
}

/// Whether the reward model is a decoder over the policy's own vocabulary, so a value model
/// initialised from it reads the policy's tokens (InstructGPT's set-up).
fn reads_like(reward: &RewardModel, tokenizer: &Tokenizer) -> bool {
    matches!(reward.net, RewardNet::Decoder(_))
        && reward.tokenizer.get_vocab(true) == tokenizer.get_vocab(true)
}

/// β and the optimizer updates made, saved in `state/` beside the trainer's progress.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct PpoState {
    beta: f64,
    updates: u64,
}

/// Prompts and the PPO-ptx text.
struct Data {
    prompts: Vec<Prompt>,
    ptx: Vec<Example>,
    files: Vec<Source>,
}

impl Data {
    fn read(config: &PpoConfig, models: &Models) -> Result<Self> {
        let window = models.policy_config.context_window();
        let (max_prompt, new) = (config.data.max_prompt_len, config.rollout.max_new_tokens);
        if max_prompt + new > window {
            return Err(bad_input!(
                "keys `data.max_prompt_len` ({max_prompt}) + `rollout.max_new_tokens` ({new}) exceed the policy's context window of {window} tokens"
            ));
        }
        let path = &config.data.prompts;
        let (prompts, truncated) =
            read_prompts(path, &models.tokenizer, &models.template, max_prompt)?;
        if prompts.is_empty() {
            return Err(bad_input!("{}: no prompts", path.display()));
        }
        if truncated > 0 {
            dist::warn(&format!(
                "ppo: {truncated} prompt(s) longer than data.max_prompt_len = {max_prompt} cut from the left"
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
        let mut files = vec![Source::file(path)?];
        let ptx = match &config.data.ptx {
            Some(path) => {
                files.push(Source::file(path)?);
                read_ptx(path, models, max_prompt + new)?
            }
            None => Vec::new(),
        };
        Ok(Self { prompts, ptx, files })
    }
}

/// PPO-ptx text: `{"text"}` rows packed into blocks of `max_len` tokens.
fn read_ptx(path: &Path, models: &Models, max_len: usize) -> Result<Vec<Example>> {
    let encoder = SftEncoder {
        tokenizer: &models.tokenizer,
        template: &models.template,
        max_len,
        truncation: Truncation::Left,
        eos: models.policy_config.eos_id(&models.tokenizer),
        eos_after_answers: false,
    };
    let mut texts = Vec::new();
    for row in read_rows(path)? {
        let at = row.error_at(path);
        let SftRow::Text(text) = SftRow::parse(&row.fields).map_err(&at)? else {
            return Err(at("PPO-ptx rows are `{\"text\": …}` (pre-training text)".into()));
        };
        let example =
            encoder.encode(&SftRow::Text(text), &mut FitReport::default()).map_err(&at)?;
        texts.extend(example);
    }
    let blocks = pack(texts, max_len);
    if blocks.is_empty() {
        return Err(bad_input!("{}: no text", path.display()));
    }
    Ok(blocks)
}

/// A training run in progress.
struct Run {
    config: PpoConfig,
    models: Models,
    data: Data,
    trainer: Trainer,
    kl: KlController,
    /// Optimizer updates made (minibatches), which also place the PPO-ptx batches.
    updates: u64,
    samples: Vec<Value>,
    /// The last iteration's metrics, for the lineage.
    last: Value,
    pad: u32,
    /// Tokens that end a response: the SFT model's eos ids and end of turn.
    eos: Vec<u32>,
    device: Device,
}

impl Run {
    fn new(
        config: PpoConfig,
        mut models: Models,
        data: Data,
        device: Device,
        overrides: &[String],
    ) -> Result<Self> {
        let parent = Some(Source::model_dir(&config.model.policy)?);
        let lineage = run::lineage("ppo", &config, overrides, parent, data.files.clone())?;
        let out = &config.output.dir;
        let resumed = models.resumed.take();
        let state = resumed.as_ref().map(|(_, state)| *state);
        let samples = match resumed {
            Some(_) => read_jsonl(&out.join(SAMPLES_FILE)),
            None => Vec::new(),
        };
        let mut trainer = Trainer::new(
            "ppo",
            &config.train,
            &config.output,
            data.prompts.len(),
            lineage,
            resumed.map(|(resumed, _)| resumed),
            &models.actor_critic,
            models.policy_config.layout(),
            &device,
        )?;
        trainer.drop_last(data.prompts.len());
        let p = &config.ppo;
        let mut kl = KlController {
            beta: p.kl_coef,
            target: p.adaptive_kl.then_some(p.target_kl),
            horizon: p.kl_horizon,
        };
        let mut updates = 0;
        if let Some(state) = state {
            (kl.beta, updates) = (state.beta, state.updates);
            trainer.adam.set_steps(updates);
        }
        if config.reward.normalize && models.reward.stats.is_none() {
            dist::warn(&format!(
                "ppo: {} has no reward_stats.json, so scores are used as they are (reward.normalize needs it)",
                config.model.reward.display()
            ));
        }
        let pad = models.policy_config.pad_id(&models.tokenizer);
        let eos = {
            let generator = Generator::new(
                &models.reference,
                &models.tokenizer,
                &models.policy_config,
                &device,
            )
            .with_generation_config(&config.model.policy);
            generator.eos().to_vec()
        };
        Ok(Self {
            config,
            models,
            data,
            trainer,
            kl,
            updates,
            samples,
            last: Value::Null,
            pad,
            eos,
            device,
        })
    }

    fn train(&mut self) -> Result<()> {
        let t = &self.trainer;
        if t.progress.step == 0 {
            let p = &self.config.ppo;
            t.log.say(&format!(
                "ppo: {} prompts, {} iterations of {} rollouts × {} epochs in minibatches of {}",
                self.data.prompts.len(),
                t.total_steps,
                self.config.train.batch_size,
                p.ppo_epochs,
                p.mini_batch_size
            ));
        }
        run::run(self)?;
        let progress = &self.trainer.progress;
        if dist::is_main() {
            eprintln!(
                "ppo: {} iterations, {} tokens sampled in {:.1} s; saved {}",
                progress.step,
                progress.tokens,
                progress.seconds,
                self.trainer.out.display()
            );
        }
        Ok(())
    }

    /// Samples responses to the prompts `rows` and takes every per-token number PPO needs:
    /// log π_old as the sampler computed it, V and log π_ref in one pass each over the
    /// finished sequences.
    fn roll_out(&self, rows: &[usize]) -> Result<Vec<Rollout>> {
        let models = &self.models;
        let actor_critic = models.actor_critic.valid();
        let prompts: Vec<Vec<u32>> =
            rows.iter().map(|&i| self.data.prompts[i].ids.clone()).collect();
        // LoRA adapters merged into a copy of the weights for sampling (a no-op without them).
        let sampling_policy = actor_critic.policy.clone().materialize();
        let sampler = Sampler {
            policy: &sampling_policy,
            tokenizer: &models.tokenizer,
            config: &models.policy_config,
            eos: &self.eos,
            rollout: &self.config.rollout,
        };
        let step = self.trainer.progress.step;
        let mut rollouts = sampler.roll_out(prompts, self.config.train.seed, step, &self.device)?;
        let temperature = self.config.rollout.temperature;
        for chunk in rollouts.chunks_mut(self.config.ppo.mini_batch_size) {
            let pairs: Vec<(&[u32], &[u32])> = chunk.iter().map(Rollout::pair).collect();
            let batch = ResponseBatch::new(&pairs, self.pad, &self.device);
            let values = actor_critic.values(&batch);
            let ref_log_probs = reference_log_probs(&models.reference, &batch, temperature);
            let [mut ref_log_probs, mut values] = batch.rows_of([ref_log_probs, values]);
            for (i, rollout) in chunk.iter_mut().enumerate() {
                rollout.ref_log_probs = std::mem::take(&mut ref_log_probs[i]);
                rollout.values = std::mem::take(&mut values[i]);
            }
        }
        Ok(rollouts)
    }

    /// Sets each rollout's shaped score: the reward model's score (normalised with its saved
    /// statistics), less the penalties. Returns the raw scores and the response texts.
    fn score(&self, rows: &[usize], rollouts: &mut [Rollout]) -> Result<(Vec<f32>, Vec<String>)> {
        let texts = decode_all(&self.models.tokenizer, rollouts.iter().map(|r| &r.response))?;
        let prompts: Vec<&[Message]> =
            rows.iter().map(|&i| self.data.prompts[i].messages.as_slice()).collect();
        let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let raw = self.models.reward.score(&prompts, &text_refs, &self.device)?;
        let moderation = match &self.models.moderator {
            Some(moderator) => Some(moderator.scores(&text_refs)?),
            None => None,
        };
        let shaping = &self.config.reward;
        let stats = self.models.reward.stats.filter(|_| shaping.normalize);
        for (i, rollout) in rollouts.iter_mut().enumerate() {
            let mut score = raw[i] as f64;
            if let Some(RewardStats { mean, std, .. }) = stats {
                score = (score - mean) / std.max(1e-6);
            }
            if !rollout.ended {
                score -= shaping.missing_eos_penalty;
            }
            if let Some(categories) = &moderation {
                let worst = categories[i].iter().fold(0f32, |a, &b| a.max(b));
                score -= shaping.moderation_penalty * worst as f64;
            }
            rollout.score = score as f32;
        }
        Ok((raw, texts))
    }

    /// Per-token rewards and GAE for every rollout, whitened over every rank's rollouts;
    /// returns the summed KL to the reference of the responses.
    fn estimate_advantages(&self, rollouts: &mut [Rollout]) -> Result<f64> {
        let p = &self.config.ppo;
        let mut kl_sum = 0.0;
        for rollout in rollouts.iter_mut() {
            let kl = token_kl(&rollout.log_probs, &rollout.ref_log_probs);
            kl_sum += kl.iter().map(|&k| k as f64).sum::<f64>();
            let rewards = token_rewards(&kl, self.kl.beta, rollout.score);
            (rollout.advantages, rollout.returns) = gae(&rewards, &rollout.values, p.gamma, p.lam);
        }
        if p.whiten_advantages {
            let mut all: Vec<Vec<f32>> =
                rollouts.iter_mut().map(|r| std::mem::take(&mut r.advantages)).collect();
            let mut batch = moments(&all);
            dist::sum(&mut batch)?;
            whiten(&mut all, batch);
            rollouts.iter_mut().zip(all).for_each(|(r, a)| r.advantages = a);
        }
        Ok(kl_sum)
    }

    /// `ppo_epochs` passes over the rollouts in shuffled minibatches, one optimizer update
    /// each; returns the mean of each update's losses and statistics. With several ranks,
    /// `rollouts` are this rank's share of the iteration's `total`: every rank makes the same
    /// ⌈total / mini_batch_size⌉ updates an epoch, each over its share of a minibatch, with
    /// its loss weighted by that share so the summed gradient is the minibatch's.
    fn update(&mut self, rollouts: &[Rollout], total: usize, lr: f64) -> Result<UpdateStats> {
        let ad = self.device.clone().autodiff();
        let p = self.config.ppo.clone();
        let temperature = self.config.rollout.temperature;
        let seed = self.config.train.seed.wrapping_add(self.trainer.progress.step as u64);
        let mut stats = UpdateStats::default();
        let (mine, minibatches) = (rollouts.len(), total.div_ceil(p.mini_batch_size));
        // Where this rank's k-th minibatch starts in its shuffled rollouts.
        let bound = |k: usize| (k * p.mini_batch_size * mine / total.max(1)).min(mine);
        for epoch in 0..p.ppo_epochs {
            let order = permutation(mine, seed, epoch as u64);
            for k in 0..minibatches {
                let chunk = &order[bound(k)..bound(k + 1)];
                let mut counts = [chunk.len() as f64];
                dist::sum(&mut counts)?;
                let share = chunk.len() as f64 / counts[0];
                if chunk.is_empty() {
                    self.apply(GradientsParams::new(), UpdateParts::default(), lr, &mut stats)?;
                    continue;
                }
                let rows: Vec<&Rollout> = chunk.iter().map(|&i| &rollouts[i]).collect();
                let pairs: Vec<(&[u32], &[u32])> = rows.iter().map(|r| r.pair()).collect();
                let batch = ResponseBatch::new(&pairs, self.pad, &ad);
                let per_token = |field: fn(&Rollout) -> &[f32]| {
                    batch.per_token(&rows.iter().map(|r| field(r)).collect::<Vec<_>>())
                };
                let evaluation = self.models.actor_critic.evaluate(&batch, temperature);
                let logits = evaluation.logits;
                let policy = clipped_policy_loss(
                    batch.chosen(logits.clone()),
                    per_token(|r| &r.log_probs),
                    per_token(|r| &r.advantages),
                    batch.mask.clone(),
                    p.clip_range,
                );
                let value_loss = clipped_value_loss(
                    evaluation.values,
                    per_token(|r| &r.values),
                    per_token(|r| &r.returns),
                    batch.mask.clone(),
                    p.value_clip_range,
                );
                let mut loss = policy.loss.clone() + value_loss.clone() * p.vf_coef;
                let entropy =
                    masked_mean(entropy(logits.detach(), batch.shape()), batch.mask.clone());
                let mut parts =
                    vec![policy.loss, value_loss, policy.clip_fraction, policy.approx_kl, entropy];
                if p.ptx_coef > 0.0 {
                    let ptx = self.ptx_loss(&ad);
                    loss = loss + ptx.clone() * p.ptx_coef;
                    parts.push(ptx);
                }
                let parts = Tensor::cat(parts, 0);
                let loss = loss.mul_scalar(share);
                let grads = GradientsParams::from_grads(loss.backward(), &self.models.actor_critic);
                let values: Vec<f32> =
                    parts.into_data().convert::<f32>().try_to_vec().expect("f32");
                let mut shares = [0.0; 6];
                shares.iter_mut().zip(values).for_each(|(s, v)| *s = v as f64 * share);
                self.apply(grads, UpdateParts::from_array(shares), lr, &mut stats)?;
            }
        }
        Ok(stats.mean())
    }

    /// The rest of an update, on every rank alike (see `train::step::apply`); PPO's loss is
    /// the policy loss plus the weighted value loss.
    fn apply(
        &mut self,
        grads: GradientsParams,
        parts: UpdateParts,
        lr: f64,
        stats: &mut UpdateStats,
    ) -> Result<()> {
        let vf_coef = self.config.ppo.vf_coef;
        let step = step::apply(
            &mut self.trainer,
            &mut self.models.actor_critic,
            grads,
            parts.to_array(),
            lr,
            |parts| parts[0] + vf_coef * parts[1], // policy loss + c₁·value loss
        )?;
        self.updates += 1;
        stats.add(UpdateParts::from_array(step.sums), step.grad_norm);
        Ok(())
    }

    /// PPO-ptx: the mean next-token loss of the policy on the next minibatch of text blocks
    /// (their order is fixed by the seed, so `--resume` reads on where it stopped).
    fn ptx_loss(&self, ad: &Device) -> Tensor<1> {
        let (n, per) = (self.data.ptx.len(), self.config.ppo.mini_batch_size);
        let start = self.updates as usize * per;
        let rows: Vec<&Example> = (start..start + per)
            .map(|k| &self.data.ptx[permutation(n, self.config.train.seed, (k / n) as u64)[k % n]])
            .collect();
        let batch = TokenBatch::new(&rows, self.pad, ad);
        let policy = &self.models.actor_critic.policy;
        let hidden = policy.hidden(batch.input_ids, &PaddedBatch::new(batch.attention_mask), None);
        selected_nll_sum(policy, hidden, batch.predict_at, batch.targets)
            / batch.target_count.max(1) as f64
    }

    /// Writes the whole checkpoint atomically: policy, `value/`, samples, lineage, metrics,
    /// state (with β).
    fn write_checkpoint(&mut self) -> Result<()> {
        let state = PpoState { beta: self.kl.beta, updates: self.updates };
        let (models, trainer, samples) = (&self.models, &mut self.trainer, &self.samples);
        let metrics = self.last.clone();
        save_atomically(&self.config.output.dir, |dir| {
            let policy = &models.actor_critic.policy;
            let lora = |base: &PathBuf| {
                models.lora.clone().map(|spec| LoraRun { spec, base: base.clone() })
            };
            let files = &models.policy_files;
            save_policy(lora(files).as_ref(), policy, &models.policy_config, files, dir)?;
            let value_dir = dir.join(VALUE_DIR);
            std::fs::create_dir(&value_dir)?;
            let value = match &models.actor_critic.critic {
                Critic::Separate(model) => model.clone(),
                Critic::Shared(head) => {
                    ScalarModel { body: policy.body.clone(), score: head.clone() }
                }
            };
            let (config, files) = (&models.value_config, &models.value_files);
            match lora(files) {
                Some(run) => run.save(&value, config, Task::SeqCls, files, &value_dir)?,
                None => save_scalar_model(&value, config, Some(files), &value_dir)?,
            }
            write_jsonl(&dir.join(SAMPLES_FILE), samples)?;
            trainer.write_state(
                metrics,
                &models.actor_critic,
                models.policy_config.layout(),
                dir,
            )?;
            json_file::write(&dir.join(STATE_DIR).join(PPO_STATE_FILE), &state)
        })
    }
}

impl Stage for Run {
    type Model = ActorCritic;

    fn trainer(&mut self) -> &mut Trainer {
        &mut self.trainer
    }

    fn model(&mut self) -> &mut ActorCritic {
        &mut self.models.actor_critic
    }

    fn examples(&self) -> usize {
        self.data.prompts.len()
    }

    /// One PPO iteration: rollout, scoring, advantages, updates, β. With several ranks, each
    /// rolls out and scores its share of the prompts; the statistics are summed over ranks.
    fn step(&mut self, lr: f64) -> Result<(Value, String)> {
        let started = Instant::now();
        let all_rows = self.trainer.next_batch(self.data.prompts.len());
        let rows = dist::shard(&all_rows);
        let mut rollouts = self.roll_out(rows)?;
        let (raw_scores, texts) = self.score(rows, &mut rollouts)?;
        let rollout_seconds = started.elapsed().as_secs_f64();
        let kl_sum = self.estimate_advantages(&mut rollouts)?;
        let beta = self.kl.beta;
        let updated = Instant::now();
        let update = self.update(&rollouts, all_rows.len(), lr)?;
        let update_seconds = updated.elapsed().as_secs_f64();

        let sums = RolloutSums::of(&rollouts, &raw_scores, kl_sum)?;
        let n = sums.rollouts.max(1.0);
        let score = sums.score / n;
        let score_std = (sums.score_squared / n - score * score).max(0.0).sqrt();
        let (length, kl) = (sums.response_tokens / n, sums.kl / n);
        self.kl.update(kl, sums.rollouts as usize);
        self.trainer.progress.tokens += sums.response_tokens as u64;
        let UpdateStats { parts, grad_norm, .. } = update;
        let rate = self.trainer.tokens_per_second();
        let mut record = json!({
            "score": round(score, 4), "score_std": round(score_std, 4),
            "rm_score": round(sums.rm_score / n, 4),
            "kl": round(kl, 4), "beta": round(beta, 5), "non_score_reward": round(-beta * kl, 4),
            "entropy": round(parts.entropy, 4), "clip_fraction": round(parts.clip_fraction, 4),
            "approx_kl": round(parts.approx_kl, 6), "policy_loss": round(parts.policy_loss, 5),
            "value_loss": round(parts.value_loss, 5), "grad_norm": round(grad_norm, 4),
            "explained_variance": round(explained_variance(sums.variance), 4),
            "response_length": round(length, 2),
            "ended": round(sums.ended / n, 3),
            "rollout_s": round(rollout_seconds, 3), "update_s": round(update_seconds, 3),
            "tokens": self.trainer.progress.tokens, "tokens_per_s": round(rate, 1),
        });
        if self.config.ppo.ptx_coef > 0.0 {
            record["ptx_loss"] = round(parts.ptx_loss, 5).into();
        }
        let iteration = self.trainer.progress.step + 1;
        if iteration == 1 || iteration % self.config.ppo.log_samples_every == 0 {
            for (i, rollout) in rollouts.iter().enumerate().take(SAMPLES_PER_LOG) {
                let messages = &self.data.prompts[rows[i]].messages;
                let prompt = messages.last().map_or("", |m| m.content.as_str());
                self.samples.push(json!({
                    "step": iteration, "prompt": prompt, "response": texts[i],
                    "rm_score": raw_scores[i], "score": rollout.score,
                }));
            }
        }
        self.last = record.clone();
        let message =
            format!("score {score:.3}  kl {kl:.2}  β {beta:.4}  len {length:.1}  {rate:.0} tok/s");
        Ok((record, message))
    }

    fn evaluate(&mut self) -> Result<Option<f64>> {
        Ok(None) // `rlhf ppo eval` measures a saved policy on held-out prompts
    }

    fn save(&mut self) -> Result<()> {
        self.write_checkpoint()
    }
}
