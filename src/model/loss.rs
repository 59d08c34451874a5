//! Token-level log-probabilities and the next-token loss, shared by training and evaluation.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use super::fused::cross_entropy;
use super::heads::CausalLm;

/// log p(target) at every position: logits `[B, T, V]`, targets `[B, T]` → `[B, T]`.
pub fn token_log_probs(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<2> {
    let [b, t, _] = logits.dims();
    log_softmax(logits, 2).gather(2, targets.reshape([b, t, 1])).reshape([b, t])
}

/// Mean cross-entropy of predicting `input_ids[:, 1:]` from `logits[:, :-1]`, over the targets
/// whose `loss_mask` is 1 (padding, or prompt tokens in SFT, are 0). Same value as
/// `transformers`' loss with `labels = -100` where the mask is 0.
pub fn next_token_loss(
    logits: Tensor<3>,
    input_ids: Tensor<2, Int>,
    loss_mask: Tensor<2, Int>,
) -> Tensor<1> {
    let [b, t, v] = logits.dims();
    let predictions = logits.slice(s![.., 0..t - 1, ..]); // [B, T-1, V]
    let targets = input_ids.slice(s![.., 1..t]); // [B, T-1]
    let weights = loss_mask.slice(s![.., 1..t]).float();
    debug_assert_eq!(predictions.dims(), [b, t - 1, v]);
    let count = weights.clone().sum().clamp_min(1.0);
    -(token_log_probs(predictions, targets) * weights).sum() / count
}

/// Σ −log p(target) over chosen positions: hidden states `[B, T, D]`, flat positions `at`
/// (into `B·T`) and their `targets`, both `[N]`. Only those N rows go through the LM head,
/// so prompt and padding positions cost nothing there — in SFT, most of a sequence.
pub fn selected_nll_sum(
    lm: &CausalLm,
    hidden: Tensor<3>,
    at: Tensor<1, Int>,
    targets: Tensor<1, Int>,
) -> Tensor<1> {
    let [b, t, d] = hidden.dims();
    let n = at.dims()[0];
    let rows = hidden.reshape([b * t, d]).select(0, at).reshape([1, n, d]);
    let logits = lm.logits(rows);
    let v = logits.dims()[2];
    cross_entropy(logits.reshape([n, v]), targets).sum()
}
