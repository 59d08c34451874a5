//! Multi-head scaled dot-product attention, shared by the decoder families.

use burn::prelude::*;
use burn::tensor::activation::softmax;

/// Softmax of a fully blocked row: finite, so padding rows give no NaN that a masked loss
/// would still multiply into its sum (`transformers` uses the dtype's minimum for the same reason).
const BLOCKED: f32 = f32::MIN;

/// `[B, T, H·hd]` → `[B, H, T, hd]`
pub fn split_heads(x: Tensor<3>, n_head: usize) -> Tensor<4> {
    let [b, t, d] = x.dims();
    x.reshape([b, t, n_head, d / n_head]).swap_dims(1, 2)
}

/// `[B, H, T, hd]` → `[B, T, H·hd]`
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, t, hd] = x.dims();
    x.swap_dims(1, 2).reshape([b, t, h * hd])
}

/// softmax(q·kᵀ·scale, blocked → −∞)·v for q `[B, H, T, hd]`, k and v `[B, H, S, hd]`,
/// `blocked` `[B, 1, T, S]`.
pub fn scaled_dot_product(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    blocked: &Tensor<4, Bool>,
    scale: f64,
) -> Tensor<4> {
    let [b, h, t, _] = q.dims();
    let s = k.dims()[2];
    let scores = q.matmul(k.transpose()) * scale; // [B, H, T, S]
    let scores = scores.mask_fill(blocked.clone().expand([b, h, t, s]), BLOCKED);
    softmax(scores, 3).matmul(v) // [B, H, T, hd]
}

/// Grouped-query attention: each of the `kv` heads `[B, KV, T, hd]` serves `n_rep` consecutive
/// query heads → `[B, KV·n_rep, T, hd]` (query head i reads kv head i / n_rep, as
/// `transformers`' `repeat_kv`).
pub fn repeat_kv(x: Tensor<4>, n_rep: usize) -> Tensor<4> {
    if n_rep == 1 {
        return x;
    }
    let [b, kv, t, hd] = x.dims();
    x.reshape([b, kv, 1, t, hd]).expand([b, kv, n_rep, t, hd]).reshape([b, kv * n_rep, t, hd])
}

/// Blocks keys more than `window` tokens behind their query (Mistral's sliding window):
/// `blocked` `[B, 1, T, T]` gains true where q − k ≥ window.
pub fn with_sliding_window(blocked: &Tensor<4, Bool>, window: usize) -> Tensor<4, Bool> {
    let [b, _, t, _] = blocked.dims();
    if window >= t {
        return blocked.clone();
    }
    let device = blocked.device();
    // tril_mask(offset) is true above the diagonal shifted by offset; its negation at
    // offset −window is true where k ≤ q − window.
    let too_far = Tensor::<2, Bool>::tril_mask([t, t], -(window as i64), &device).bool_not();
    blocked.clone().bool_or(too_far.reshape([1, 1, t, t]).expand([b, 1, t, t]))
}
