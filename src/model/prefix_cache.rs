//! What the frozen lower blocks make of each sequence, computed once. With `model.train_layers
//! = N` the embeddings and the blocks below the top N never change, so a sequence's hidden
//! states after them are the same at every step: training steps, validation and the final
//! statistics pass start from these states and run only the trained blocks. Nothing changes
//! but the time (no dropout anywhere; padding sits on the right, and no real token attends to
//! it); the states cost D floats per token of memory.

use anyhow::Result;
use burn::prelude::*;

use super::reward::Scorer;
use crate::data::scoring::{Sequence, SequenceBatch, batches_by_length, run_sorted};

/// Blocks a run never trains: all but the top `train_layers` (0 trains everything).
pub fn frozen_blocks(depth: usize, train_layers: usize) -> usize {
    match train_layers {
        0 => 0,
        n => depth.saturating_sub(n),
    }
}

/// Each sequence's hidden states `[L, D]` after the embeddings and the first `blocks` blocks.
pub struct PrefixCache {
    pub blocks: usize,
    states: Vec<Tensor<2>>,
}

impl PrefixCache {
    /// Runs the first `blocks` blocks of `model` (no autodiff) over `sequences`, in batches of
    /// similar length: the same batches whichever step a run starts from, so a resumed run
    /// gets the same states. `check` runs before each batch (to stop on Ctrl-C).
    pub fn build<M: Scorer>(
        model: &M,
        sequences: &[&Sequence],
        blocks: usize,
        pad: u32,
        device: &Device,
        check: impl FnMut() -> Result<()>,
    ) -> Result<Self> {
        let lengths: Vec<usize> = sequences.iter().map(|s| s.ids.len()).collect();
        Self::build_with(&lengths, blocks, check, |chunk| {
            let batch: Vec<&Sequence> = chunk.iter().map(|&i| sequences[i]).collect();
            model.prefix(&SequenceBatch::new(&batch, pad, device), blocks)
        })
    }

    /// The states of sequences of `lengths` tokens, from `prefix`, which runs the first
    /// `blocks` blocks over the sequences it is given (indices, right-padded into one batch).
    pub fn build_with(
        lengths: &[usize],
        blocks: usize,
        mut check: impl FnMut() -> Result<()>,
        mut prefix: impl FnMut(&[usize]) -> Tensor<3>,
    ) -> Result<Self> {
        let mut states = vec![None; lengths.len()];
        for chunk in batches_by_length(lengths) {
            check()?;
            let hidden = prefix(&chunk);
            for (row, &i) in chunk.iter().enumerate() {
                let state = hidden.clone().slice(s![row..row + 1, 0..lengths[i], ..]);
                states[i] = Some(state.squeeze_dim(0));
            }
        }
        let states = states.into_iter().map(|s| s.expect("every sequence computed")).collect();
        Ok(Self { blocks, states })
    }

    /// The states of sequences `rows`, padded on the right with zeros to the longest:
    /// `[B, T, D]`, to go with `SequenceBatch::new` of the same rows.
    pub fn batch(&self, rows: &[usize]) -> Tensor<3> {
        let t = rows.iter().map(|&i| self.states[i].dims()[0]).max().unwrap_or(1);
        let padded = rows
            .iter()
            .map(|&i| {
                let state = self.states[i].clone();
                let [l, d] = state.dims();
                match l < t {
                    true => Tensor::cat(
                        vec![state.clone(), Tensor::zeros([t - l, d], &state.device())],
                        0,
                    ),
                    false => state,
                }
            })
            .collect();
        Tensor::stack(padded, 0)
    }

    /// Scores of every sequence, in order (`sequences` are the ones the cache was built from).
    pub fn scores<M: Scorer>(
        &self,
        model: &M,
        sequences: &[&Sequence],
        pad: u32,
        device: &Device,
    ) -> Vec<f32> {
        let rows = run_sorted(sequences, pad, device, |batch, chunk| {
            model.scores_after(self.batch(chunk), batch, self.blocks).unsqueeze_dim(1)
        });
        rows.into_iter().map(|row| row[0]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bert::{BertConfig, Pooling};
    use crate::model::decoder::Decoder;
    use crate::model::gpt2::Gpt2Config;
    use crate::model::heads::{EncoderClassifier, ScalarModel};
    use crate::model::layers::normal_linear;
    use crate::model::llama::LlamaConfig;
    use crate::model::reward::score_all;

    fn sequences() -> Vec<Sequence> {
        [5, 1, 9, 3, 7, 2]
            .iter()
            .map(|&len| Sequence {
                ids: (0..len).map(|i| (i * 7 + len) as u32 % 40 + 1).collect(),
                type_ids: vec![0; len],
            })
            .collect()
    }

    /// From every block, the cached path scores what the whole forward pass scores.
    fn check<M: Scorer>(model: M, device: &Device) {
        let sequences = sequences();
        let sequences: Vec<&Sequence> = sequences.iter().collect();
        let whole = score_all(&model, &sequences, 0, device);
        let spread = whole.iter().fold(0f32, |m, s| m.max((s - whole[0]).abs()));
        assert!(spread > 0.1, "scores should differ: {whole:?}");
        for blocks in 0..=model.depth() {
            let cache =
                PrefixCache::build(&model, &sequences, blocks, 0, device, || Ok(())).unwrap();
            let cached = cache.scores(&model, &sequences, 0, device);
            for (a, b) in cached.iter().zip(&whole) {
                assert!((a - b).abs() < 1e-5, "from block {blocks}: {cached:?} vs {whole:?}");
            }
        }
    }

    #[test]
    fn scores_from_the_cached_blocks_match_the_whole_pass() {
        let device = Device::default();
        let llama = LlamaConfig {
            vocab_size: 48,
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 3,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            max_position_embeddings: 32,
            initializer_range: 0.3,
            ..Default::default()
        };
        let decoder = |body| ScalarModel::from_decoder(body, 16, 1, 0.5, &device);
        check(decoder(Decoder::Llama(llama.init(&device).unwrap())), &device);
        let gpt2 = Gpt2Config {
            vocab_size: 48,
            n_positions: 32,
            n_embd: 16,
            n_layer: 3,
            n_head: 2,
            initializer_range: 0.3,
            ..Default::default()
        };
        check(decoder(Decoder::Gpt2(gpt2.init(&device).unwrap())), &device);
        let bert = BertConfig {
            vocab_size: 48,
            hidden_size: 16,
            num_hidden_layers: 3,
            num_attention_heads: 2,
            intermediate_size: 32,
            max_position_embeddings: 32,
            initializer_range: 0.3,
            ..Default::default()
        };
        for pooling in [Pooling::Cls, Pooling::Mean] {
            let body = bert.init(&device).unwrap();
            let classifier = normal_linear(16, 1, true, 0.5, &device);
            check(EncoderClassifier { body, classifier }.with_pooling(pooling), &device);
        }
    }

    #[test]
    fn frozen_blocks_are_all_but_the_trained_ones() {
        assert_eq!(frozen_blocks(30, 4), 26);
        assert_eq!(frozen_blocks(30, 0), 0);
        assert_eq!(frozen_blocks(3, 5), 0);
    }
}
