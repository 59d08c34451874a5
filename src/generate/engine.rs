//! Batched generation with a KV cache: prompts of different lengths are left-padded and
//! prefilled together (identical prompts once: K samples of a question share its prefill), then
//! each step feeds only the newly chosen tokens. Rows that finish (end-of-sequence, a stop
//! string, or the length limit) leave the batch, so they stop costing work. The chosen ids are
//! the only per-step copy from the device; log-probabilities come back once at the end.

use std::cell::OnceCell;
use std::ops::ControlFlow;

use anyhow::Result;
use burn::prelude::*;
use serde::Serialize;
use tokenizers::Tokenizer;

use super::live_batch::Prefilled;
use super::sampling::{SamplingConfig, choose, chosen_log_probs, penalise_repeats, top_k, top_p};
use crate::bad_input;
use crate::device::is_cpu;
use crate::model::config::token_ids;
use crate::model::decode_layout;
use crate::model::kv_cache::KvCache;
use crate::model::llama_step::LlamaStep;
use crate::model::precision::{self, Precision};
use crate::model::shared_prefix::distinct;
use crate::model::{CausalLm, ModelConfig, PaddedBatch};

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// An end-of-sequence token (kept as the last token).
    Eos,
    /// A stop string appeared in the text.
    Stop,
    /// `max_new_tokens` reached.
    #[default]
    Length,
    /// The caller's per-token callback asked to stop (Ctrl-C, a moderation flag).
    Cancelled,
}

/// One row's output: what PPO needs as well as what a user reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generation {
    /// The generated token ids (the response mask is 1 for each of them).
    pub tokens: Vec<u32>,
    /// log π(token) under the sampling policy: softmax(logits / temperature), after the
    /// repetition penalty and before top-k/top-p truncation.
    pub log_probs: Vec<f32>,
    pub finish: Finish,
}

/// A conversation whose KV cache outlives one reply (the chat REPL extends it turn by turn).
#[derive(Debug, Clone)]
pub struct Conversation {
    pub(super) cache: KvCache,
    /// Tokens in the cache, in order.
    pub(super) tokens: Vec<u32>,
    /// Chosen last but not yet fed to the model.
    pub(super) pending: Vec<u32>,
}

impl Conversation {
    /// Every token of the conversation so far.
    pub fn tokens(&self) -> Vec<u32> {
        [self.tokens.as_slice(), self.pending.as_slice()].concat()
    }

    pub fn len(&self) -> usize {
        self.tokens.len() + self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the first `len` tokens and forgets the rest, cache included; later tokens are
    /// written over the forgotten ones.
    pub fn truncate(&mut self, len: usize) {
        if len <= self.tokens.len() {
            self.tokens.truncate(len);
            self.pending.clear();
            self.cache.truncate(len);
        } else {
            self.pending.truncate(len - self.tokens.len());
        }
    }
}

/// How many leading tokens `a` and `b` share.
pub fn common_prefix_len(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Cuts `conversation` back to the longest prefix it shares with `tokens`, the whole sequence
/// to reply to, and returns that prefix's length.
fn rewind(conversation: &mut Conversation, tokens: &[u32]) -> Result<usize> {
    if tokens.is_empty() {
        return Err(bad_input!("nothing to reply to: the prompt encodes to no tokens"));
    }
    // At least the last token is fed again: its logits choose the first reply token.
    let kept = common_prefix_len(&conversation.tokens(), tokens).min(tokens.len() - 1);
    conversation.truncate(kept);
    Ok(kept)
}

pub struct Generator<'a> {
    model: &'a CausalLm,
    /// `model` with its weights laid out for decoding several rows at once, made on first use.
    batched: OnceCell<CausalLm>,
    /// Whether forward steps run through a `LlamaStep` (decided once, the step not made).
    has_step: bool,
    /// `model`'s one-call decoding step, where it has one; made on first use or by
    /// [`Self::prepared`].
    step: OnceCell<Option<LlamaStep>>,
    tokenizer: &'a Tokenizer,
    device: Device,
    /// Tokens that end a row: the config's eos ids and ChatML's end of turn.
    eos: Vec<u32>,
}

/// Decoding state of the rows still running.
struct Running {
    /// Original row index of each batch row.
    rows: Vec<usize>,
    key_mask: Tensor<2, Int>,
    next_positions: Tensor<2, Int>,
    logits: Tensor<2>,
    /// Tokens already in each row, for the repetition penalty.
    seen: Option<Tensor<2, Bool>>,
}

impl<'a> Generator<'a> {
    pub fn new(
        model: &'a CausalLm,
        tokenizer: &'a Tokenizer,
        config: &ModelConfig,
        device: &Device,
    ) -> Self {
        let im_end = tokenizer.token_to_id(crate::data::tokenizer::IM_END);
        let eos = token_ids(config.json.get("eos_token_id")).into_iter().chain(im_end);
        let (batched, step) = (OnceCell::new(), OnceCell::new());
        // bf16 products run op by op, as autocast has them.
        let has_step = precision::get() != Precision::Bf16 && LlamaStep::supports(model);
        if precision::get() == Precision::Int8 && !has_step {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                eprintln!(
                    "warning: --precision int8 applies to Llama-family models decoding on the CPU; this {} model decodes in f32",
                    config.model_type()
                )
            });
        }
        let device = device.clone();
        Self { model, batched, has_step, step, tokenizer, device, eos: Vec::new() }.with_eos(eos)
    }

    /// Adds the eos ids of a model directory's `generation_config.json` (which may list more
    /// than `config.json`, as chat models do).
    pub fn with_generation_config(self, dir: &std::path::Path) -> Self {
        let json = crate::json_file::read_optional(&dir.join("generation_config.json"));
        self.with_eos(token_ids(json.get("eos_token_id")))
    }

    /// Makes the one-call decoding step now, as a model is loaded, for a command that will
    /// decode: otherwise the first step makes it (stacking and, for int8, quantizing the
    /// weights: ~0.2 s for SmolLM2 in f32, ~0.4 s in int8), and the first reply waits for it.
    pub fn prepared(self) -> Self {
        self.llama_step();
        self
    }

    /// Adds tokens that end a row.
    pub fn with_eos(mut self, ids: impl IntoIterator<Item = u32>) -> Self {
        self.eos.extend(ids);
        self.eos.sort_unstable();
        self.eos.dedup();
        self
    }

    /// The tokens that end a row.
    pub fn eos(&self) -> &[u32] {
        &self.eos
    }

    /// Continues every prompt; `on_token(row, id)` sees each token as it is chosen.
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        sampling: &SamplingConfig,
        on_token: &mut dyn FnMut(usize, u32),
    ) -> Result<Vec<Generation>> {
        let model = self.decoding_model(prompts.len());
        // Identical prompts (K samples of one question) share one prefill, then fan out.
        let (unique, source) = distinct(prompts);
        let b = unique.len();
        let (ids, mut mask) = self.left_padded(&unique);
        let t = mask.dims()[1];
        self.check_room(t, sampling)?;
        self.device.seed(sampling.seed);
        let mut cache = KvCache::new(model.body.num_layers(), t + sampling.max_new_tokens);
        let batch = PaddedBatch::new(mask.clone());
        let mut next_positions = batch.positions.clone().slice(s![.., t - 1..t]) + 1;
        let mut logits = self.next_logits(model, ids, &batch, &mut cache);
        if b < prompts.len() {
            let source = Tensor::<1, Int>::from_data(source.as_slice(), &self.device);
            cache.select_rows(&source);
            mask = mask.select(0, source.clone());
            next_positions = next_positions.select(0, source.clone());
            logits = logits.select(0, source);
        }
        let seen = (sampling.repetition_penalty != 1.0).then(|| self.seen(prompts));
        let rows = (0..prompts.len()).collect();
        let running = Running { rows, key_mask: mask, next_positions, logits, seen };
        let mut on_token = |row, token| {
            on_token(row, token);
            ControlFlow::Continue(())
        };
        Ok(self.decode(model, running, &mut cache, sampling, &mut on_token))
    }

    /// Prompts as one left-padded batch: ids and attention mask `[B, T]`, each row's last
    /// token in the last column.
    fn left_padded(&self, prompts: &[impl AsRef<[u32]>]) -> (Tensor<2, Int>, Tensor<2, Int>) {
        let b = prompts.len();
        let t = prompts.iter().map(|p| p.as_ref().len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0i64; b * t];
        let mut mask = vec![0i64; b * t];
        for (row, prompt) in prompts.iter().enumerate() {
            let prompt = prompt.as_ref();
            let start = row * t + t - prompt.len();
            for (i, &token) in prompt.iter().enumerate() {
                ids[start + i] = token as i64;
                mask[start + i] = 1;
            }
        }
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, t]), &self.device);
        (ids, Tensor::<2, Int>::from_data(TensorData::new(mask, [b, t]), &self.device))
    }

    /// Prefills new prompts together in one forward pass (left-padded), for rows that join a
    /// [`super::LiveBatch`] with nothing cached.
    pub fn prefill_batch(&self, prompts: &[Vec<u32>]) -> Prefilled {
        let model = self.decoding_model(prompts.len());
        let (ids, key_mask) = self.left_padded(prompts);
        let mut cache = KvCache::new(model.body.num_layers(), key_mask.dims()[1]);
        let logits = self.next_logits(model, ids, &PaddedBatch::new(key_mask.clone()), &mut cache);
        Prefilled { cache, key_mask, logits, tokens: prompts.to_vec() }
    }

    /// The model to decode `rows` rows at once with. Rows decoded together make skinny
    /// products, which run faster on CPU with the weights stored transposed (SmolLM2 at batch
    /// 4: 39 → 48 tokens/s); a single row is a matrix-vector product either way. A model with
    /// a one-call step decodes through it, which has its own copy laid out that way.
    fn decoding_model(&self, rows: usize) -> &CausalLm {
        match rows > 1 && is_cpu(&self.device) && !self.has_step {
            true => self.batched.get_or_init(|| decode_layout::for_decoding(self.model.clone())),
            false => self.model,
        }
    }

    /// Starts a conversation with an empty cache.
    pub fn conversation(&self) -> Conversation {
        Conversation {
            cache: KvCache::new(self.model.body.num_layers(), 256),
            tokens: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Feeds `new_tokens` after everything the conversation holds and generates a reply; only
    /// the new tokens are computed, the rest comes from the cache.
    pub fn reply(
        &self,
        conversation: &mut Conversation,
        new_tokens: &[u32],
        sampling: &SamplingConfig,
        on_token: &mut dyn FnMut(usize, u32),
    ) -> Result<Generation> {
        let mut on_token = |token| {
            on_token(0, token);
            ControlFlow::Continue(())
        };
        self.extend(conversation, new_tokens, sampling, &mut on_token)
    }

    /// Replies to the whole token sequence `tokens`: the conversation is cut back to the
    /// longest prefix it shares with them (an edited, retried or shortened conversation keeps
    /// what still matches) and only the rest is computed. `on_token` may stop the reply, which
    /// then ends `Cancelled` with the tokens chosen so far. Returns the reply and how many of
    /// `tokens` came from the cache.
    pub fn reply_to(
        &self,
        conversation: &mut Conversation,
        tokens: &[u32],
        sampling: &SamplingConfig,
        on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
    ) -> Result<(Generation, usize)> {
        let kept = rewind(conversation, tokens)?;
        let reply = self.extend(conversation, &tokens[kept..], sampling, on_token)?;
        Ok((reply, kept))
    }

    /// Feeds the whole token sequence `tokens` to `conversation`, cut back first to the
    /// longest prefix it shares with them (as [`Self::reply_to`]), and returns the logits of
    /// the token after them `[1, V]` and how many of `tokens` the cache already held. The reply
    /// is decoded elsewhere: a [`super::LiveBatch`] that rows join and leave.
    pub fn prefill(
        &self,
        conversation: &mut Conversation,
        tokens: &[u32],
    ) -> Result<(Tensor<2>, usize)> {
        let kept = rewind(conversation, tokens)?;
        let cached = conversation.tokens.len(); // a pending token is still to compute
        conversation.pending.extend(&tokens[kept..]);
        Ok((self.feed(conversation), cached))
    }

    /// One decoding step of a live batch: each row is fed its chosen token.
    pub fn step(&self, batch: &mut super::LiveBatch, tokens: &[u32]) {
        let model = self.decoding_model(batch.len());
        batch.step(tokens, |ids, padded, cache| self.next_logits(model, ids, padded, cache));
    }

    /// Runs the conversation's pending tokens through the model into its cache; returns the
    /// logits of the token after them `[1, V]`.
    fn feed(&self, conversation: &mut Conversation) -> Tensor<2> {
        let (start, n) = (conversation.cache.len(), conversation.pending.len());
        let input: Vec<u32> = conversation.pending.drain(..).collect();
        let ids: Vec<i64> = input.iter().map(|&i| i as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &self.device);
        let key_mask = Tensor::<2, Int>::ones([1, start + n], &self.device);
        let positions = Tensor::<1, Int>::arange(start as i64..(start + n) as i64, &self.device)
            .reshape([1, n]);
        let batch = PaddedBatch::with_keys(key_mask, positions);
        let logits = self.next_logits(self.model, ids, &batch, &mut conversation.cache);
        conversation.tokens.extend(&input);
        logits
    }

    fn extend(
        &self,
        conversation: &mut Conversation,
        new_tokens: &[u32],
        sampling: &SamplingConfig,
        on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
    ) -> Result<Generation> {
        let (start, n) = (conversation.cache.len(), conversation.pending.len() + new_tokens.len());
        if n == 0 {
            return Ok(Generation::default());
        }
        self.check_room(start + n, sampling)?;
        conversation.pending.extend(new_tokens);
        self.device.seed(sampling.seed);
        let logits = self.feed(conversation);
        let key_mask = Tensor::<2, Int>::ones([1, start + n], &self.device);
        let next_positions = Tensor::<2, Int>::from_data([[(start + n) as i64]], &self.device);
        let seen = (sampling.repetition_penalty != 1.0)
            .then(|| self.seen(std::slice::from_ref(&conversation.tokens)));
        let running = Running { rows: vec![0], key_mask, next_positions, logits, seen };
        let mut on_token = |_, token| on_token(token);
        let reply = self
            .decode(self.model, running, &mut conversation.cache, sampling, &mut on_token)
            .remove(0);
        // Every reply token but the last went through the model and is cached.
        let fed = reply.tokens.len().saturating_sub(1);
        conversation.tokens.extend(&reply.tokens[..fed]);
        conversation.pending.extend(&reply.tokens[fed..]);
        Ok(reply)
    }

    /// A sequence of `len` tokens must leave room for `max_new_tokens` in the context window
    /// (callers truncate prompts or drop old turns first).
    fn check_room(&self, len: usize, sampling: &SamplingConfig) -> Result<()> {
        let window = self.model.body.max_positions();
        if len + sampling.max_new_tokens > window {
            return Err(bad_input!(
                "{len} tokens + {} new ones exceed the model's context window of {window}",
                sampling.max_new_tokens
            ));
        }
        Ok(())
    }

    fn decode(
        &self,
        model: &CausalLm,
        mut run: Running,
        cache: &mut KvCache,
        sampling: &SamplingConfig,
        on_token: &mut dyn FnMut(usize, u32) -> ControlFlow<()>,
    ) -> Vec<Generation> {
        let n_rows = run.rows.len();
        let mut out = vec![Generation::default(); n_rows];
        let mut log_probs: Vec<(Vec<usize>, Tensor<1>)> = Vec::new();
        for step in 0..sampling.max_new_tokens {
            let mut logits = run.logits.clone();
            if let Some(seen) = &run.seen {
                logits = penalise_repeats(logits, seen.clone(), sampling.repetition_penalty);
            }
            if sampling.do_sample && sampling.temperature != 1.0 {
                logits = logits / sampling.temperature;
            }
            let chosen = if sampling.do_sample {
                choose(top_p(top_k(logits.clone(), sampling.top_k), sampling.top_p), true)
            } else {
                choose(logits.clone(), false)
            };
            log_probs.push((run.rows.clone(), chosen_log_probs(logits, chosen.clone())));
            let host: Vec<i64> =
                chosen.clone().into_data().convert::<i64>().try_to_vec().expect("i64 ids");

            let mut keep = Vec::with_capacity(run.rows.len());
            for (j, (&row, &token)) in run.rows.iter().zip(&host).enumerate() {
                let token = token as u32;
                out[row].tokens.push(token);
                let flow = on_token(row, token);
                if !sampling.ignore_eos && self.eos.contains(&token) {
                    out[row].finish = Finish::Eos;
                } else if self.hit_stop_string(&out[row].tokens, &sampling.stop) {
                    out[row].finish = Finish::Stop;
                } else if flow.is_break() {
                    out[row].finish = Finish::Cancelled;
                } else {
                    keep.push(j);
                }
            }
            if keep.is_empty() || step + 1 == sampling.max_new_tokens {
                break;
            }
            let mut chosen = chosen;
            if keep.len() < run.rows.len() {
                let index = Tensor::<1, Int>::from_data(
                    keep.iter().map(|&j| j as i64).collect::<Vec<_>>().as_slice(),
                    &self.device,
                );
                cache.select_rows(&index);
                run.key_mask = run.key_mask.select(0, index.clone());
                run.next_positions = run.next_positions.select(0, index.clone());
                run.seen = run.seen.map(|s| s.select(0, index.clone()));
                chosen = chosen.select(0, index);
                run.rows = keep.iter().map(|&j| run.rows[j]).collect();
            }
            let b = run.rows.len();
            if let Some(seen) = run.seen.take() {
                let vocab = seen.dims()[1];
                let columns =
                    Tensor::<1, Int>::arange(0..vocab as i64, &self.device).reshape([1, vocab]);
                let now = columns
                    .expand([b, vocab])
                    .equal(chosen.clone().reshape([b, 1]).expand([b, vocab]));
                run.seen = Some(seen.bool_or(now));
            }
            run.key_mask = Tensor::cat(vec![run.key_mask, Tensor::ones([b, 1], &self.device)], 1);
            let batch = PaddedBatch::with_keys(run.key_mask.clone(), run.next_positions.clone());
            run.logits = self.next_logits(model, chosen.reshape([b, 1]), &batch, cache);
            run.next_positions = run.next_positions + 1;
        }
        // One copy of every step's log-probabilities, handed back to their rows.
        let (rows, tensors): (Vec<Vec<usize>>, Vec<Tensor<1>>) = log_probs.into_iter().unzip();
        if !tensors.is_empty() {
            let values: Vec<f32> =
                Tensor::cat(tensors, 0).into_data().convert::<f32>().try_to_vec().expect("f32");
            let mut values = values.into_iter();
            for step_rows in rows {
                for row in step_rows {
                    out[row].log_probs.push(values.next().expect("one value per row and step"));
                }
            }
        }
        out
    }

    /// Logits `[B, V]` of the token after `ids` `[B, T]`, which follow the tokens `cache`
    /// holds and join them: through the model's one-call step where it has one (a prompt in
    /// int8 runs through the f32 model, as prefill did before int8 steps).
    fn next_logits(
        &self,
        model: &CausalLm,
        ids: Tensor<2, Int>,
        batch: &PaddedBatch,
        cache: &mut KvCache,
    ) -> Tensor<2> {
        if std::ptr::eq(model, self.model)
            && let Some(step) = self.llama_step()
            && (ids.dims()[1] == 1 || !step.is_int8())
        {
            return step.forward(ids, batch, cache);
        }
        let hidden = model.hidden(ids, batch, Some(cache));
        self.last_logits(model, hidden)
    }

    fn llama_step(&self) -> Option<&LlamaStep> {
        let int8 = precision::get() == Precision::Int8;
        let step = || self.has_step.then(|| LlamaStep::new(self.model, int8)).flatten();
        self.step.get_or_init(step).as_ref()
    }

    /// Logits of the last position: hidden `[B, T, D]` → `[B, V]`.
    fn last_logits(&self, model: &CausalLm, hidden: Tensor<3>) -> Tensor<2> {
        let [b, t, _] = hidden.dims();
        let logits = model.logits(hidden.slice(s![.., t - 1..t, ..]));
        let v = logits.dims()[2];
        logits.reshape([b, v])
    }

    /// `[B, V]` true for every token of each prompt.
    fn seen(&self, prompts: &[Vec<u32>]) -> Tensor<2, Bool> {
        let vocab = self.model.body.token_embedding().dims()[0];
        let mut seen = vec![false; prompts.len() * vocab];
        for (row, prompt) in prompts.iter().enumerate() {
            for &token in prompt {
                if let Some(cell) = seen.get_mut(row * vocab + token as usize) {
                    *cell = true;
                }
            }
        }
        Tensor::from_data(TensorData::new(seen, [prompts.len(), vocab]), &self.device)
    }

    fn hit_stop_string(&self, tokens: &[u32], stop: &[String]) -> bool {
        if stop.is_empty() {
            return false;
        }
        let text = self.tokenizer.decode(tokens, false).unwrap_or_default();
        stop.iter().any(|s| text.contains(s.as_str()))
    }
}
