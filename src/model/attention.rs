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
