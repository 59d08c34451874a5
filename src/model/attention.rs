//! Multi-head scaled dot-product attention, shared by the decoder families.

use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::fused;
use super::precision::{self, full, low};

/// Score of a blocked key in the explicit path: finite, so a fully blocked row could never
/// turn into NaN (`transformers` uses the dtype's minimum for the same reason).
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

/// softmax(q·kᵀ·scale, blocked → −∞)·v for q `[B, H, T, hd]` and k, v `[B, KV, S, hd]` with
/// KV dividing H (grouped-query attention: query head i reads kv head i / (H/KV), as
/// `transformers`' `repeat_kv`), `blocked` `[B, 1, T, S]`.
///
/// Inference runs LibTorch's fused `scaled_dot_product_attention`. Under autodiff Burn would
/// compose it from element-wise operations, so training calls LibTorch's flash-attention kernel
/// and its backward directly (`fused::attention`). Both run in the working precision
/// (`precision`), the softmax accumulating in f32 inside the kernel.
pub fn attend(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    blocked: &Tensor<4, Bool>,
    scale: f64,
) -> Tensor<4> {
    if q.is_autodiff() {
        let n_rep = q.dims()[1] / k.dims()[1];
        if !crate::device::is_cpu(&q.device()) {
            // The flash kernel below is LibTorch's CPU one; elsewhere the composed form.
            return explicit(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), blocked, scale);
        }
        let (q, k, v) = (low(q), low(repeat_kv(k, n_rep)), low(repeat_kv(v, n_rep)));
        full(fused::attention(q, k, v, low(additive(blocked)), scale))
    } else {
        full(sdpa(low(q), low(k), low(v), blocked, scale))
    }
}

/// `attend` over a packed projection qkv `[B, T, 3·H·hd]` (GPT-2's `c_attn`), the queries at
/// `from..T` reading every key; `blocked` `[B, 1, T − from, T]`. Training on the CPU hands qkv
/// to the flash kernel whole, so its gradient is written once rather than assembled from
/// three slices.
pub fn attend_packed(
    qkv: Tensor<3>,
    n_head: usize,
    blocked: &Tensor<4, Bool>,
    scale: f64,
    from: usize,
) -> Tensor<4> {
    if qkv.is_autodiff() && crate::device::is_cpu(&qkv.device()) {
        let layout = fused::Packed { n_head, scale, from };
        return full(fused::packed_attention(low(qkv), low(additive(blocked)), layout));
    }
    let [q, k, v] = unpack(qkv, n_head);
    attend(heads_from(q, from), k, v, blocked, scale)
}

/// q, k, v `[B, H, T, hd]` from a packed projection `[B, T, 3·H·hd]`.
pub fn unpack(qkv: Tensor<3>, n_head: usize) -> [Tensor<4>; 3] {
    let [q, k, v]: [Tensor<3>; 3] = qkv.chunk(3, 2).try_into().expect("3 chunks of 3D");
    [q, k, v].map(|x| split_heads(x, n_head))
}

/// `[B, H, T, hd]` at the positions `from..T` (a view; `x` itself at 0).
pub fn heads_from(x: Tensor<4>, from: usize) -> Tensor<4> {
    if from == 0 { x } else { x.slice(s![.., .., from..]) }
}

/// The mask as an additive score bias: 0 where a key is read, `BLOCKED` where not.
fn additive(blocked: &Tensor<4, Bool>) -> Tensor<4> {
    Tensor::<4>::zeros(blocked.dims(), &blocked.device()).mask_fill(blocked.clone(), BLOCKED)
}

/// The composed form, differentiable and exactly `transformers`' eager attention.
pub fn explicit(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    blocked: &Tensor<4, Bool>,
    scale: f64,
) -> Tensor<4> {
    let [b, h, t, _] = q.dims();
    let s = k.dims()[2];
    let scores = precision::matmul(q, k.transpose()) * scale; // [B, H, T, S]
    let scores = scores.mask_fill(blocked.clone().expand([b, h, t, s]), BLOCKED);
    precision::matmul(softmax(scores, 3), v) // [B, H, T, hd]
}

/// Scaled dot-product attention in LibTorch's fused kernel. Query heads that share a kv head
/// are stacked along the query axis (`[B, KV, n_rep·T, hd]`), so k and v are never copied per
/// query head.
fn sdpa(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    blocked: &Tensor<4, Bool>,
    scale: f64,
) -> Tensor<4> {
    let [b, h, t, hd] = q.dims();
    let [_, kv, s, _] = k.dims();
    let n_rep = h / kv;
    let q = q.reshape([b, kv, n_rep * t, hd]);
    // burn-tch hands the bool mask to torch, where true means "attend" (the opposite of Burn's
    // documented convention); `fused_attention_matches_explicit` pins this.
    let allowed = blocked.clone().bool_not();
    let allowed = if n_rep == 1 {
        allowed
    } else {
        allowed.reshape([b, 1, 1, t, s]).expand([b, 1, n_rep, t, s]).reshape([b, 1, n_rep * t, s])
    };
    let options = AttentionModuleOptions { scale: Some(scale), softcap: None, is_causal: false };
    attention(q, k, v, Some(allowed), None, options).reshape([b, h, t, hd])
}

/// `[B, KV, S, hd]` → `[B, KV·n_rep, S, hd]`, each kv head repeated for its query heads.
pub fn repeat_kv(x: Tensor<4>, n_rep: usize) -> Tensor<4> {
    if n_rep == 1 {
        return x;
    }
    let [b, kv, s, hd] = x.dims();
    x.reshape([b, kv, 1, s, hd]).expand([b, kv, n_rep, s, hd]).reshape([b, kv * n_rep, s, hd])
}

/// Blocks keys `window` or more tokens behind their query (Mistral's sliding window):
/// `blocked` `[B, 1, T, S]`, queries being the last T of S keys.
pub fn with_sliding_window(blocked: &Tensor<4, Bool>, window: usize) -> Tensor<4, Bool> {
    let [b, _, t, s] = blocked.dims();
    if window >= s {
        return blocked.clone();
    }
    let device = blocked.device();
    let offset = (s - t) as i64; // query i sits at key index i + offset
    // tril_mask(o) is true where key > query + o; negated at o = −window it is true where
    // key ≤ query − window.
    let too_far = Tensor::<2, Bool>::tril_mask([t, s], offset - window as i64, &device).bool_not();
    blocked.clone().bool_or(too_far.reshape([1, 1, t, s]).expand([b, 1, t, s]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mask::PaddedBatch;
    use burn::tensor::Distribution;

    #[test]
    fn fused_attention_matches_explicit() {
        let device = Device::default();
        device.seed(3);
        let mask = Tensor::<2, Int>::from_ints([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]], &device);
        let batch = PaddedBatch::new(mask);
        let q = Tensor::<4>::random([2, 4, 5, 8], Distribution::Normal(0.0, 1.0), &device);
        let k = Tensor::<4>::random([2, 2, 5, 8], Distribution::Normal(0.0, 1.0), &device);
        let v = Tensor::<4>::random([2, 2, 5, 8], Distribution::Normal(0.0, 1.0), &device);
        let ours = sdpa(q.clone(), k.clone(), v.clone(), &batch.blocked, 0.3);
        let reference = explicit(q, repeat_kv(k, 2), repeat_kv(v, 2), &batch.blocked, 0.3);
        let diff: f32 = (ours - reference).abs().max().into_scalar();
        assert!(diff < 1e-5, "fused and explicit attention differ by {diff}");
    }

    #[test]
    fn training_attention_and_its_gradients_match_explicit() {
        let device = Device::default().autodiff();
        device.seed(4);
        let mask = Tensor::<2, Int>::from_ints([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]], &device);
        let batch = PaddedBatch::new(mask);
        let normal = |shape: [usize; 4]| {
            Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device).require_grad()
        };
        let (q, k, v) = (normal([2, 4, 5, 8]), normal([2, 2, 5, 8]), normal([2, 2, 5, 8]));
        let weights = Tensor::<4>::random([2, 4, 5, 8], Distribution::Normal(0.0, 1.0), &device);
        let loss = |out: Tensor<4>| (out * weights.clone()).sum();
        let fused_grads =
            loss(attend(q.clone(), k.clone(), v.clone(), &batch.blocked, 0.3)).backward();
        let explicit_grads = loss(explicit(
            q.clone(),
            repeat_kv(k.clone(), 2),
            repeat_kv(v.clone(), 2),
            &batch.blocked,
            0.3,
        ))
        .backward();
        for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
            let (a, b) = (x.grad(&fused_grads).unwrap(), x.grad(&explicit_grads).unwrap());
            let diff: f32 = (a - b).abs().max().into_scalar();
            assert!(diff < 1e-5, "d{name} differs by {diff}");
        }
    }

    #[test]
    fn packed_attention_and_its_gradient_match_explicit() {
        let device = Device::default().autodiff();
        device.seed(5);
        let mask = Tensor::<2, Int>::from_ints([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]], &device);
        let batch = PaddedBatch::new(mask);
        let (n_head, from) = (2, 2);
        let blocked = crate::model::mask::queries_from(&batch.blocked, from);
        let qkv = Tensor::<3>::random([2, 5, 3 * 16], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let weights = Tensor::<4>::random([2, 2, 3, 8], Distribution::Normal(0.0, 1.0), &device);
        let packed = attend_packed(qkv.clone(), n_head, &blocked, 0.3, from);
        let [q, k, v] = unpack(qkv.clone(), n_head);
        let reference = explicit(heads_from(q, from), k, v, &blocked, 0.3);
        let diff: f32 = (packed.clone() - reference.clone()).abs().max().into_scalar();
        assert!(diff < 1e-5, "packed and explicit attention differ by {diff}");
        let grad = |out: Tensor<4>| qkv.grad(&(out * weights.clone()).sum().backward()).unwrap();
        let diff: f32 = (grad(packed) - grad(reference)).abs().max().into_scalar();
        assert!(diff < 1e-5, "d(qkv) differs by {diff}");
    }
}
