//! What padding means for a decoder: which keys each query may see, where each token sits,
//! and which position holds a row's last real token. Built once per batch and shared by every
//! layer (and, with a KV cache, by every decoding step).
//!
//! Rows may be padded on the left (generation, PPO rollouts) or on the right (training): positions
//! count real tokens only, so a left-padded prompt gets the same logits as the same prompt alone.

use burn::prelude::*;

/// Attention mask, position ids and last-token index for a padded batch.
#[derive(Debug, Clone)]
pub struct PaddedBatch {
    /// `[B, 1, T, T]`, true where a query must not see a key (the future, or padding).
    pub blocked: Tensor<4, Bool>,
    /// `[B, T]` position of each token among its row's real tokens (arbitrary on padding).
    pub positions: Tensor<2, Int>,
    /// `[B]` index of each row's last real token (where scalar heads read).
    pub last_index: Tensor<1, Int>,
}

impl PaddedBatch {
    /// `attention_mask` `[B, T]` as `transformers` takes it: 1 for real tokens, 0 for padding.
    pub fn new(attention_mask: Tensor<2, Int>) -> Self {
        let [b, t] = attention_mask.dims();
        let device = attention_mask.device();
        let future = Tensor::<2, Bool>::tril_mask([t, t], 0, &device) // true above the diagonal
            .unsqueeze::<4>()
            .expand([b, 1, t, t]);
        let padding_key =
            attention_mask.clone().equal_elem(0).reshape([b, 1, 1, t]).expand([b, 1, t, t]);
        let positions = (attention_mask.clone().cumsum(1) - 1).clamp_min(0);
        let index = Tensor::<1, Int>::arange(0..t as i64, &device).unsqueeze::<2>();
        let last_index = (index * attention_mask).argmax(1).reshape([b]);
        Self { blocked: future.bool_or(padding_key), positions, last_index }
    }

    /// A batch without padding.
    pub fn unpadded(batch: usize, len: usize, device: &Device) -> Self {
        Self::new(Tensor::ones([batch, len], device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_and_right_padding() {
        let device = Device::default();
        let mask = Tensor::<2, Int>::from_ints([[0, 0, 1, 1], [1, 1, 1, 0]], &device);
        let batch = PaddedBatch::new(mask);
        let positions: Vec<i64> = batch.positions.try_into_vec_as().unwrap();
        assert_eq!(positions, [0, 0, 0, 1, 0, 1, 2, 2]);
        let last: Vec<i64> = batch.last_index.try_into_vec_as().unwrap();
        assert_eq!(last, [3, 2]);
        let blocked: Vec<bool> = batch.blocked.into_data().try_to_vec().unwrap();
        // row 0, query 3 sees keys 2 and 3 only; row 1, query 2 sees keys 0..=2.
        assert_eq!(&blocked[12..16], [true, true, false, false]);
        assert_eq!(&blocked[16 + 8..16 + 12], [false, false, false, true]);
    }
}
