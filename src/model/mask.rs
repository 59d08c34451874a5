//! What padding means for a decoder: which keys each query may see, where each token sits,
//! and which position holds a row's last real token. Built once per forward pass and shared by
//! every layer.
//!
//! Rows may be padded on the left (generation, PPO rollouts) or on the right (training): positions
//! count real tokens only, so a left-padded prompt gets the same logits as the same prompt alone.
//! With a KV cache, the queries are the last T of S keys.

use burn::prelude::*;

/// Attention mask, position ids and last-token index for a padded batch.
#[derive(Debug, Clone)]
pub struct PaddedBatch {
    /// `[B, 1, T, S]`, true where a query must not see a key: the future, or padding. A query
    /// always sees itself, so a padding query's row is never empty (an empty row is NaN in
    /// fused attention, and NaN times a zero weight still spreads).
    pub blocked: Tensor<4, Bool>,
    /// `[B, T]` position of each query among its row's real tokens (arbitrary on padding).
    pub positions: Tensor<2, Int>,
    /// `[B]` index, among the T queries, of each row's last real token (scalar heads read there).
    pub last_index: Tensor<1, Int>,
}

impl PaddedBatch {
    /// A whole batch at once. `attention_mask` `[B, T]` as `transformers` takes it: 1 for real
    /// tokens, 0 for padding.
    pub fn new(attention_mask: Tensor<2, Int>) -> Self {
        let positions = (attention_mask.clone().cumsum(1) - 1).clamp_min(0);
        Self::with_keys(attention_mask, positions)
    }

    /// The last T tokens of a sequence whose earlier keys are cached: `key_mask` `[B, S]`
    /// covers cached and new tokens, `positions` `[B, T]` the new ones.
    pub fn with_keys(key_mask: Tensor<2, Int>, positions: Tensor<2, Int>) -> Self {
        let [b, s] = key_mask.dims();
        let t = positions.dims()[1];
        let device = key_mask.device();
        if t == 1 {
            // One decoding step: the query is the newest (real) token and may see every real key.
            let blocked = key_mask.equal_elem(0).reshape([b, 1, 1, s]);
            return Self { blocked, positions, last_index: Tensor::zeros([b], &device) };
        }
        let offset = (s - t) as i64; // query i sits at key index i + offset
        let future = Tensor::<2, Bool>::tril_mask([t, s], offset, &device); // key > query
        let key_index = Tensor::<1, Int>::arange(0..s as i64, &device).reshape([1, s]);
        let query_index = Tensor::<1, Int>::arange(offset..s as i64, &device).reshape([t, 1]);
        let itself = key_index.clone().expand([t, s]).equal(query_index.expand([t, s]));
        let padding = key_mask.clone().equal_elem(0).reshape([b, 1, 1, s]).expand([b, 1, t, s]);
        let blocked = future
            .reshape([1, 1, t, s])
            .expand([b, 1, t, s])
            .bool_or(padding)
            .bool_and(itself.bool_not().reshape([1, 1, t, s]).expand([b, 1, t, s]));
        let query_mask = key_mask.slice(s![.., s - t..s]);
        let last_index = (key_index.slice(s![.., 0..t]) * query_mask).argmax(1).reshape([b]);
        Self { blocked, positions, last_index }
    }
}

/// `blocked` `[B, 1, T, S]` for the queries `from..T` only.
pub fn queries_from(blocked: &Tensor<4, Bool>, from: usize) -> Tensor<4, Bool> {
    if from == 0 { blocked.clone() } else { blocked.clone().slice(s![.., .., from..]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bools(t: Tensor<4, Bool>) -> Vec<bool> {
        t.into_data().try_to_vec().unwrap()
    }

    #[test]
    fn left_and_right_padding() {
        let device = Device::default();
        let mask = Tensor::<2, Int>::from_ints([[0, 0, 1, 1], [1, 1, 1, 0]], &device);
        let batch = PaddedBatch::new(mask);
        let positions: Vec<i64> = batch.positions.try_into_vec_as().unwrap();
        assert_eq!(positions, [0, 0, 0, 1, 0, 1, 2, 2]);
        let last: Vec<i64> = batch.last_index.try_into_vec_as().unwrap();
        assert_eq!(last, [3, 2]);
        let blocked = bools(batch.blocked);
        // row 0: padding query 0 sees only itself; query 3 sees keys 2 and 3.
        assert_eq!(&blocked[0..4], [false, true, true, true]);
        assert_eq!(&blocked[12..16], [true, true, false, false]);
        // row 1: query 2 sees keys 0..=2; the padding query 3 sees the real keys and itself.
        assert_eq!(&blocked[16 + 8..16 + 12], [false, false, false, true]);
        assert_eq!(&blocked[16 + 12..16 + 16], [false, false, false, false]);
    }

    #[test]
    fn one_new_token_over_cached_keys() {
        let device = Device::default();
        let keys = Tensor::<2, Int>::from_ints([[0, 1, 1, 1], [1, 1, 1, 1]], &device);
        let positions = Tensor::<2, Int>::from_ints([[2], [3]], &device);
        let batch = PaddedBatch::with_keys(keys, positions);
        assert_eq!(batch.blocked.dims(), [2, 1, 1, 4]);
        assert_eq!(bools(batch.blocked), [true, false, false, false, false, false, false, false]);
    }
}
