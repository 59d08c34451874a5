//! Reward models: one score per (prompt, response). Two kinds of network give it — a decoder
//! with a scalar head read at the last token (InstructGPT's RM, initialised from the SFT
//! model) and a cross-encoder (`BertForSequenceClassification` with one label, as
//! OpenAssistant's reward models) — and [`RewardModel`] loads either for scoring.

use std::path::Path;

use anyhow::Result;
use burn::module::Module;
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use super::auto::{Holds, ModelDir};
use super::config::ModelConfig;
use super::heads::{EncoderClassifier, ScalarModel, check_length};
use super::mask::PaddedBatch;
use super::shared_prefix::{shared_cost, shared_splits, tail_hidden};
use crate::data::chat::Message;
use crate::data::pair::PairEncoder;
use crate::data::scoring::{
    INFERENCE_BATCH_SIZE, ResponseEncoder, Sequence, SequenceBatch, batches_by_length, run_sorted,
};
use crate::data::sft::Truncation;
use crate::data::sft::{FitReport, SftEncoder};
use crate::data::template::ChatTemplate;
use crate::{bad_input, json_file};

/// Mean and spread of the rewards a model gives its training responses, saved beside it so
/// PPO can normalise rewards to zero mean and unit variance.
pub const STATS_FILE: &str = "reward_stats.json";

/// A network that scores token sequences, whole or in two parts so that the output of frozen
/// lower blocks can be computed once (`prefix_cache.rs`): for every `n`, `scores` equals
/// `scores_after(prefix(·, n), n)` (tested there).
pub trait Scorer: Module {
    /// One score per row `[B]`.
    fn scores(&self, batch: &SequenceBatch) -> Tensor<1>;
    /// Hidden states `[B, T, D]` after the embeddings and the first `n` blocks.
    fn prefix(&self, batch: &SequenceBatch, n: usize) -> Tensor<3>;
    /// Scores `[B]` from `prefix(batch, n)`: the blocks from `n` on, then the head.
    fn scores_after(&self, hidden: Tensor<3>, batch: &SequenceBatch, n: usize) -> Tensor<1>;
    /// Longest sequence it reads.
    fn max_len(&self) -> usize;
    /// Blocks (layers) in its body.
    fn depth(&self) -> usize;
}

impl Scorer for ScalarModel {
    fn scores(&self, batch: &SequenceBatch) -> Tensor<1> {
        let padded = PaddedBatch::new(batch.attention_mask.clone());
        self.forward_at(batch.input_ids.clone(), &padded, batch.last_non_pad.clone())
    }

    fn prefix(&self, batch: &SequenceBatch, n: usize) -> Tensor<3> {
        let padded = PaddedBatch::new(batch.attention_mask.clone());
        check_length(&self.body, batch.input_ids.dims()[1]);
        self.body.prefix(batch.input_ids.clone(), &padded, n)
    }

    fn scores_after(&self, hidden: Tensor<3>, batch: &SequenceBatch, n: usize) -> Tensor<1> {
        let padded = PaddedBatch::new(batch.attention_mask.clone());
        let b = hidden.dims()[0];
        self.head_at(self.body.rest(hidden, &padded, n), batch.last_non_pad.clone()).reshape([b])
    }

    fn max_len(&self) -> usize {
        self.body.max_positions()
    }

    fn depth(&self) -> usize {
        self.body.num_layers()
    }
}

impl Scorer for EncoderClassifier {
    fn scores(&self, batch: &SequenceBatch) -> Tensor<1> {
        let logits = self.forward(
            batch.input_ids.clone(),
            batch.token_type_ids.clone(),
            batch.attention_mask.clone(),
        );
        let rows = logits.dims()[0];
        logits.reshape([rows])
    }

    fn prefix(&self, batch: &SequenceBatch, n: usize) -> Tensor<3> {
        self.check_length(batch.input_ids.dims()[1]);
        let (ids, types) = (batch.input_ids.clone(), batch.token_type_ids.clone());
        self.body.prefix(ids, types, batch.attention_mask.clone(), n)
    }

    fn scores_after(&self, hidden: Tensor<3>, batch: &SequenceBatch, n: usize) -> Tensor<1> {
        let mask = batch.attention_mask.clone();
        let logits = self.head(self.body.rest(hidden, mask.clone(), n), mask);
        let rows = logits.dims()[0];
        logits.reshape([rows])
    }

    fn max_len(&self) -> usize {
        self.body.max_positions()
    }

    fn depth(&self) -> usize {
        self.body.num_layers()
    }
}

/// Scores `sequences` in batches of similar length; results in input order.
pub fn score_all<M: Scorer>(
    model: &M,
    sequences: &[&Sequence],
    pad: u32,
    device: &Device,
) -> Vec<f32> {
    let rows = run_sorted(sequences, pad, device, |batch, _| model.scores(batch).unsqueeze_dim(1));
    rows.into_iter().map(|row| row[0]).collect()
}

/// How a backbone's sequences are built: decoders render the conversation with `template`,
/// cross-encoders (no template) pair the prompt with the response.
pub fn response_encoder<'a>(
    config: &ModelConfig,
    tokenizer: &'a Tokenizer,
    template: Option<&'a ChatTemplate>,
    max_len: usize,
    truncation: Truncation,
) -> Result<ResponseEncoder<'a>> {
    Ok(match template {
        Some(template) => ResponseEncoder::Decoder(SftEncoder {
            tokenizer,
            template,
            max_len,
            truncation,
            eos: config.eos_id(tokenizer),
            eos_after_answers: matches!(template, ChatTemplate::Hh),
        }),
        None => ResponseEncoder::CrossEncoder(
            Box::new(PairEncoder::new(tokenizer, max_len)?),
            truncation,
        ),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RewardStats {
    pub mean: f64,
    pub std: f64,
    /// Responses the statistics were taken over.
    pub count: usize,
}

impl RewardStats {
    pub fn of(scores: &[f32]) -> Self {
        let n = scores.len().max(1) as f64;
        let mean = scores.iter().map(|&s| s as f64).sum::<f64>() / n;
        let var = scores.iter().map(|&s| (s as f64 - mean).powi(2)).sum::<f64>() / n;
        Self { mean, std: var.sqrt(), count: scores.len() }
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        json_file::write(&dir.join(STATS_FILE), self)
    }
}

/// Either network.
#[allow(clippy::large_enum_variant)] // one per process
pub enum RewardNet {
    Decoder(ScalarModel),
    CrossEncoder(EncoderClassifier),
}

/// A reward model directory loaded for scoring.
pub struct RewardModel {
    pub net: RewardNet,
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    /// Decoders only: the chat template saved with the model.
    pub template: Option<ChatTemplate>,
    /// `reward_stats.json`, when the directory has one.
    pub stats: Option<RewardStats>,
}

impl RewardModel {
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let model = ModelDir::open(dir)?;
        let no_tokenizer =
            || bad_input!("{}: no tokenizer.json, so text cannot be scored", dir.display());
        let (net, template) = match model.holds() {
            Holds::Encoder => {
                return Err(bad_input!(
                    "{}: a bare encoder has no reward head\nhint: train one with `rlhf reward train` (model.base = this directory)",
                    dir.display()
                ));
            }
            Holds::EncoderClassifier(_) => {
                let loaded = model.encoder_classifier(Some(1), device).map_err(|e| {
                    bad_input!("{e:#}\nhint: a reward model has one output (written by `rlhf reward train`)")
                })?;
                (loaded.map(RewardNet::CrossEncoder), None)
            }
            _ => {
                let loaded = model.scalar_model(device)?;
                (loaded.map(RewardNet::Decoder), Some(ChatTemplate::resolve(None, dir)?))
            }
        };
        let (net, config, tokenizer) =
            (net.model, net.config, net.tokenizer.ok_or_else(no_tokenizer)?);
        let stats_file = dir.join(STATS_FILE);
        let stats = match stats_file.is_file() {
            true => Some(json_file::read(&stats_file).map_err(|e| bad_input!("{e:#}"))?),
            false => None,
        };
        Ok(Self { net, config, tokenizer, template, stats })
    }

    /// The longest sequence the network reads: its context window.
    pub fn window(&self) -> usize {
        match &self.net {
            RewardNet::Decoder(m) => m.max_len(),
            RewardNet::CrossEncoder(m) => m.max_len(),
        }
    }

    /// The encoder for this model's sequences, cutting prompts to fit its window.
    pub fn encoder(&self) -> Result<ResponseEncoder<'_>> {
        self.encoder_at(self.window(), Truncation::Left)
    }

    /// The encoder for sequences of at most `max_len` tokens (at most the window), longer
    /// ones treated as `truncation` says.
    pub fn encoder_at(
        &self,
        max_len: usize,
        truncation: Truncation,
    ) -> Result<ResponseEncoder<'_>> {
        let max_len = max_len.min(self.window());
        response_encoder(&self.config, &self.tokenizer, self.template.as_ref(), max_len, truncation)
    }

    /// One (prompt, response) as this model reads it, the prompt cut from the left to fit.
    pub fn encode(
        encoder: &ResponseEncoder,
        prompt: &[Message],
        response: &str,
    ) -> Result<Sequence, String> {
        encoder.encode(prompt, response, &mut FitReport::default())?.ok_or_else(|| {
            "the response alone is longer than the reward model's context window".into()
        })
    }

    /// The score of each (prompt, response), in order: the reward-scoring service that the
    /// chat, PPO and `rlhf reward score` share.
    pub fn score(
        &self,
        prompts: &[&[Message]],
        responses: &[&str],
        device: &Device,
    ) -> Result<Vec<f32>> {
        let encoder = self.encoder()?;
        let sequences = prompts
            .iter()
            .zip(responses)
            .map(|(prompt, response)| Self::encode(&encoder, prompt, response))
            .collect::<Result<Vec<_>, String>>()
            .map_err(|e| anyhow::anyhow!("reward model: {e}"))?;
        Ok(self.score_sequences(&sequences.iter().collect::<Vec<_>>(), device))
    }

    /// Scores sequences made by `encoder()`, in order.
    pub fn score_sequences(&self, sequences: &[&Sequence], device: &Device) -> Vec<f32> {
        let pad = self.config.pad_id(&self.tokenizer);
        match &self.net {
            RewardNet::Decoder(m) => score_decoder(m, sequences, pad, device),
            RewardNet::CrossEncoder(m) => score_all(m, sequences, pad, device),
        }
    }
}

/// A decoder's scores, in order. Sequences that begin alike (K answers to one prompt, or the
/// two answers of a comparison) run their common start once, when that computes fewer tokens
/// than batches of similar length do.
fn score_decoder(
    model: &ScalarModel,
    sequences: &[&Sequence],
    pad: u32,
    device: &Device,
) -> Vec<f32> {
    let rows: Vec<&[u32]> = sequences.iter().map(|s| s.ids.as_slice()).collect();
    // Where the head reads, as `SequenceBatch::last_non_pad` says; it stays in the tail.
    let read_at: Vec<usize> =
        rows.iter().map(|r| r.iter().rposition(|&id| id != pad).unwrap_or(0)).collect();
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| rows[i]); // rows that begin alike side by side
    let batches: Vec<(Vec<&[u32]>, Vec<usize>)> = order
        .chunks(INFERENCE_BATCH_SIZE)
        .map(|chunk| {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| rows[i]).collect();
            let limits: Vec<usize> = chunk.iter().map(|&i| read_at[i]).collect();
            let splits = shared_splits(&batch, &limits);
            (batch, splits)
        })
        .collect();
    let shared: usize = batches.iter().map(|(batch, splits)| shared_cost(batch, splits)).sum();
    let lengths: Vec<usize> = rows.iter().map(|r| r.len()).collect();
    let padded: usize = batches_by_length(&lengths)
        .iter()
        .map(|chunk| chunk.len() * chunk.iter().map(|&i| rows[i].len()).max().unwrap_or(0))
        .sum();
    if shared >= padded {
        return score_all(model, sequences, pad, device);
    }
    let mut scores = vec![0.0; rows.len()];
    for (chunk, (batch, splits)) in order.chunks(INFERENCE_BATCH_SIZE).zip(batches) {
        let hidden = tail_hidden(&model.body, &batch, &splits, pad, device);
        let last: Vec<i64> =
            chunk.iter().zip(&splits).map(|(&i, split)| (read_at[i] - split) as i64).collect();
        let at = Tensor::<1, Int>::from_data(last.as_slice(), device);
        let values = model.head_at(hidden, at).into_data().convert::<f32>();
        for (&i, value) in chunk.iter().zip(values.try_to_vec::<f32>().expect("f32 scores")) {
            scores[i] = value;
        }
    }
    scores
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::decoder::Decoder;
    use crate::model::llama::LlamaConfig;

    #[test]
    fn answers_to_one_prompt_score_as_they_do_alone() {
        let device = Device::default();
        let llama = LlamaConfig {
            vocab_size: 48,
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            max_position_embeddings: 32,
            initializer_range: 0.3,
            ..Default::default()
        };
        let body = Decoder::Llama(llama.init(&device).unwrap());
        let model = ScalarModel::from_decoder(body, 16, 1, 0.5, &device);
        let prompt = [3, 9, 4, 1, 7, 7, 2, 5];
        // Padding id 0 closing two answers: the head reads before it, as `transformers` does.
        let answers: [&[u32]; 6] =
            [&[11, 12], &[11, 12], &[13, 0], &[11, 14, 15, 16], &[20], &[11, 12, 0]];
        let sequences: Vec<Sequence> = answers
            .iter()
            .map(|a| {
                let ids = [&prompt[..], a].concat();
                Sequence { type_ids: vec![0; ids.len()], ids }
            })
            .collect();
        let sequences: Vec<&Sequence> = sequences.iter().collect();
        let shared = score_decoder(&model, &sequences, 0, &device);
        let alone: Vec<f32> =
            sequences.iter().map(|s| score_all(&model, &[*s], 0, &device)[0]).collect();
        for (a, b) in shared.iter().zip(&alone) {
            assert!((a - b).abs() < 1e-5, "{shared:?} vs {alone:?}");
        }
    }
}
