//! Heads over a decoder's hidden states: the language-model head (`*ForCausalLM`) and the
//! sequence-classification head (`*ForSequenceClassification`): one output for reward and
//! value models, one per label for a classifier (moderation).

use burn::nn::Linear;
use burn::prelude::*;

use super::bert::{Bert, Pooling};
use super::decoder::Decoder;
use super::kv_cache::KvCache;
use super::layers::{linear_tokens, normal_linear};
use super::mask::PaddedBatch;
use super::plain_ops::SKINNY_ROWS;
use super::precision;

/// A causal language model: next-token logits at every position.
#[derive(Module, Debug)]
pub struct CausalLm {
    pub body: Decoder,
    /// `None` when the head is tied to the token embedding (GPT-2, many small Llamas).
    pub lm_head: Option<Linear>,
}

impl CausalLm {
    /// Logits `[B, T, V]` for token ids `[B, T]`.
    pub fn forward(&self, input_ids: Tensor<2, Int>, batch: &PaddedBatch) -> Tensor<3> {
        self.logits(self.hidden(input_ids, batch, None))
    }

    /// Final hidden states `[B, T, D]`; with a cache, the T tokens follow the cached ones.
    pub fn hidden(
        &self,
        input_ids: Tensor<2, Int>,
        batch: &PaddedBatch,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let cached = cache.as_ref().map_or(0, |c| c.len());
        check_length(&self.body, cached + input_ids.dims()[1]);
        self.body.forward(input_ids, batch, cache)
    }

    /// Final hidden states `[B, T - from, D]` of the positions `from..T` only
    /// (`Decoder::forward_from`).
    pub fn hidden_from(
        &self,
        input_ids: Tensor<2, Int>,
        batch: &PaddedBatch,
        from: usize,
    ) -> Tensor<3> {
        check_length(&self.body, input_ids.dims()[1]);
        self.body.forward_from(input_ids, batch, from)
    }

    /// Hidden states `[B, T, D]` after the embeddings and the first `n` blocks
    /// (`Decoder::prefix`): what the frozen blocks of a run that trains the top ones make.
    pub fn prefix(&self, input_ids: Tensor<2, Int>, batch: &PaddedBatch, n: usize) -> Tensor<3> {
        check_length(&self.body, input_ids.dims()[1]);
        self.body.prefix(input_ids, batch, n)
    }

    /// Final hidden states `[B, T - from, D]` from [`prefix`](Self::prefix)'s `x`: the blocks
    /// from `n` on, the last at positions `from..T` only.
    pub fn hidden_after(
        &self,
        x: Tensor<3>,
        batch: &PaddedBatch,
        n: usize,
        from: usize,
    ) -> Tensor<3> {
        self.body.top(x, batch, n, from)
    }

    /// Trains the top `n` blocks, the final norm and an untied head only (0: everything).
    pub fn train_top_layers(self, n: usize) -> Self {
        Self { body: self.body.train_top_layers(n), lm_head: self.lm_head }
    }

    /// The LM head: hidden states `[B, T, D]` → logits `[B, T, V]`.
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        match &self.lm_head {
            Some(head) => linear_tokens(head, hidden),
            None => {
                let [b, t, d] = hidden.dims();
                let wte = self.body.token_embedding(); // [V, D]
                let v = wte.dims()[0];
                let hidden = hidden.reshape([b * t, d]);
                let logits = if b * t <= SKINNY_ROWS {
                    // Decoding: MKL packs the whole [D, V] operand of a skinny x·Wᵀ on every
                    // call; W·xᵀ streams it instead (GPT-2 124M: 26 → 17 ms a step at batch 8).
                    precision::matmul(wte, hidden.transpose()).transpose() // [V, B·T]ᵀ
                } else {
                    precision::matmul(hidden, wte.transpose())
                };
                logits.reshape([b, t, v])
            }
        }
    }
}

/// A decoder with a `score` head read at a sequence's last token: a scalar model (reward or
/// value, one output) or a multi-label classifier (one output per label).
#[derive(Module, Debug)]
pub struct ScalarModel {
    pub body: Decoder,
    /// `score`: D → labels, no bias, as in `GPT2ForSequenceClassification`.
    pub score: Linear,
}

impl ScalarModel {
    /// Scores `[B]`, read at each row's last real token.
    pub fn forward(&self, input_ids: Tensor<2, Int>, batch: &PaddedBatch) -> Tensor<1> {
        self.forward_at(input_ids, batch, batch.last_index.clone())
    }

    /// Scores `[B]` read at position `at` `[B]` of each row.
    pub fn forward_at(
        &self,
        input_ids: Tensor<2, Int>,
        batch: &PaddedBatch,
        at: Tensor<1, Int>,
    ) -> Tensor<1> {
        let b = at.dims()[0];
        self.logits_at(input_ids, batch, at).reshape([b])
    }

    /// Logits `[B, labels]` of the head read at position `at` `[B]` of each row (the head runs
    /// on those B positions only).
    pub fn logits_at(
        &self,
        input_ids: Tensor<2, Int>,
        batch: &PaddedBatch,
        at: Tensor<1, Int>,
    ) -> Tensor<2> {
        check_length(&self.body, input_ids.dims()[1]);
        self.head_at(self.body.forward(input_ids, batch, None), at)
    }

    /// The head on final hidden states `[B, T, D]` at position `at` `[B]`: logits `[B, labels]`.
    pub fn head_at(&self, hidden: Tensor<3>, at: Tensor<1, Int>) -> Tensor<2> {
        let [b, t, d] = hidden.dims();
        let rows = Tensor::<1, Int>::arange(0..b as i64, &at.device()) * t as i64 + at;
        precision::linear(&self.score, hidden.reshape([b * t, d]).select(0, rows))
    }

    /// A score at every position from `from` on `[B, T - from]` (PPO's value model reads
    /// those of the response tokens).
    pub fn forward_tokens(
        &self,
        input_ids: Tensor<2, Int>,
        batch: &PaddedBatch,
        from: usize,
    ) -> Tensor<2> {
        check_length(&self.body, input_ids.dims()[1]);
        let hidden = self.body.forward_from(input_ids, batch, from);
        let [b, t, _] = hidden.dims();
        linear_tokens(&self.score, hidden).reshape([b, t])
    }

    /// A fresh head of `labels` outputs (N(0, std), as `transformers` initialises `score`) on
    /// a decoder, e.g. an SFT policy turned into a reward model.
    pub fn from_decoder(
        body: Decoder,
        d_model: usize,
        labels: usize,
        std: f64,
        device: &Device,
    ) -> Self {
        Self { body, score: normal_linear(d_model, labels, false, std, device) }
    }

    /// Trains the head, the top `n` blocks and the final norm only (0: everything).
    pub fn train_top_layers(self, n: usize) -> Self {
        Self { body: self.body.train_top_layers(n), score: self.score }
    }
}

/// An encoder with a classification head, as `BertForSequenceClassification`: logits
/// `[B, num_labels]` from the pooled `[CLS]` vector (one label: a cross-encoder reward model).
#[derive(Module, Debug)]
pub struct EncoderClassifier {
    pub body: Bert,
    pub classifier: Linear,
}

impl EncoderClassifier {
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
    ) -> Tensor<2> {
        self.check_length(input_ids.dims()[1]);
        let hidden = self.body.forward(input_ids, token_type_ids, attention_mask.clone());
        self.head(hidden, attention_mask)
    }

    /// Panics when `t` tokens exceed the encoder's position table.
    pub(super) fn check_length(&self, t: usize) {
        assert!(
            t <= self.body.max_positions(),
            "{t} tokens exceed the encoder's {} positions",
            self.body.max_positions()
        );
    }

    /// The head on final hidden states `[B, T, D]`: pooled, then logits `[B, num_labels]`.
    pub fn head(&self, hidden: Tensor<3>, attention_mask: Tensor<2, Int>) -> Tensor<2> {
        precision::linear(&self.classifier, self.body.pool(hidden, attention_mask))
    }

    /// Trains the head, the pooler and the top `n` layers only (0: everything).
    pub fn train_top_layers(self, n: usize) -> Self {
        Self { body: self.body.train_top_layers(n), classifier: self.classifier }
    }

    /// The head reads `pooling` (see `Bert::pool`).
    pub fn with_pooling(mut self, pooling: Pooling) -> Self {
        self.body.pooling = pooling;
        self
    }
}

/// The position table is finite; running past it would index out of bounds inside LibTorch.
/// Callers truncate to the context window, so reaching this is a bug, not bad input.
pub(super) fn check_length(body: &Decoder, t: usize) {
    assert!(
        t <= body.max_positions(),
        "sequence of {t} tokens exceeds the model's context window of {}",
        body.max_positions()
    );
}
