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
