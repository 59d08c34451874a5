//! The decoder families behind one type, so heads, stages and generation need not care which
//! family a checkpoint is.

use burn::prelude::*;

use super::gpt2::Gpt2;
use super::kv_cache::KvCache;
use super::llama::Llama;
use super::mask::PaddedBatch;

#[derive(Module, Debug)]
pub enum Decoder {
    Gpt2(Gpt2),
    Llama(Llama),
}

impl Decoder {
    /// Final hidden states `[B, T, D]`; with a cache, the T tokens follow the cached ones
    /// and are added to it.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        batch: &PaddedBatch,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let t = input_ids.dims()[1];
        let hidden = match self {
            Self::Gpt2(m) => m.forward(input_ids, batch, cache.as_deref_mut()),
            Self::Llama(m) => m.forward(input_ids, batch, cache.as_deref_mut()),
        };
        if let Some(cache) = cache {
            cache.advance(t); // every layer has written its keys and values
        }
        hidden
    }

    /// Final hidden states `[B, T - from, D]` of the positions `from..T` alone (no cache): the
    /// last block computes its queries, attention output and MLP there only, so a caller that
    /// reads the tail of each sequence (PPO's response tokens) skips the rest of that block.
    pub fn forward_from(
        &self,
        input_ids: Tensor<2, Int>,
        batch: &PaddedBatch,
        from: usize,
    ) -> Tensor<3> {
        self.top(self.prefix(input_ids, batch, 0), batch, 0, from)
    }

    /// Hidden states `[B, T, D]` after the embeddings and the first `n` blocks: what
    /// [`rest`](Self::rest) continues from. Frozen blocks' output is the same at every step,
    /// so a run that trains only the top blocks computes it once (`model::prefix_cache`).
    pub fn prefix(&self, input_ids: Tensor<2, Int>, batch: &PaddedBatch, n: usize) -> Tensor<3> {
        match self {
            Self::Gpt2(m) => m.blocks(m.embed(input_ids, batch), batch, 0..n, None, 0),
            Self::Llama(m) => m.blocks(m.embed_tokens.forward(input_ids), batch, 0..n, None, 0),
        }
    }

    /// Final hidden states from [`prefix`](Self::prefix)'s `x`: the blocks from `n` on and the
    /// final norm.
    pub fn rest(&self, x: Tensor<3>, batch: &PaddedBatch, n: usize) -> Tensor<3> {
        self.top(x, batch, n, 0)
    }

    /// The blocks from `n` on and the final norm, the last block at positions `from..T` only.
    pub fn top(&self, x: Tensor<3>, batch: &PaddedBatch, n: usize, from: usize) -> Tensor<3> {
        let depth = self.num_layers();
        match self {
            Self::Gpt2(m) => m.ln_f.forward(m.blocks(x, batch, n..depth, None, from)),
            Self::Llama(m) => m.norm.forward(m.blocks(x, batch, n..depth, None, from)),
        }
    }

    /// Trains only the top `n` blocks and the final norm: the embeddings (and so a tied LM
    /// head) and the blocks below stop requiring gradients, and backward stops where the
    /// trained blocks begin. `n` of 0 or at least the depth trains everything.
    pub fn train_top_layers(self, n: usize) -> Self {
        let depth = self.num_layers();
        if n == 0 || n >= depth {
            return self;
        }
        match self {
            Self::Gpt2(m) => Self::Gpt2(m.freeze_below(depth - n)),
            Self::Llama(m) => Self::Llama(m.freeze_below(depth - n)),
        }
    }

    pub fn num_layers(&self) -> usize {
        match self {
            Self::Gpt2(m) => m.num_layers(),
            Self::Llama(m) => m.num_layers(),
        }
    }

    /// Token embedding matrix `[V, D]` (a tied LM head reads it).
    pub fn token_embedding(&self) -> Tensor<2> {
        match self {
            Self::Gpt2(m) => m.token_embedding(),
            Self::Llama(m) => m.token_embedding(),
        }
    }

    pub fn max_positions(&self) -> usize {
        match self {
            Self::Gpt2(m) => m.max_positions(),
            Self::Llama(m) => m.max_positions(),
        }
    }
}
