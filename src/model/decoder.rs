//! The decoder families behind one type, so heads, stages and generation need not care which
//! family a checkpoint is.

use burn::prelude::*;

use super::gpt2::Gpt2;
use super::llama::Llama;
use super::mask::PaddedBatch;

#[derive(Module, Debug)]
pub enum Decoder {
    Gpt2(Gpt2),
    Llama(Llama),
}

impl Decoder {
    /// Final hidden states `[B, T, D]`.
    pub fn forward(&self, input_ids: Tensor<2, Int>, batch: &PaddedBatch) -> Tensor<3> {
        match self {
            Self::Gpt2(m) => m.forward(input_ids, batch),
            Self::Llama(m) => m.forward(input_ids, batch),
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
