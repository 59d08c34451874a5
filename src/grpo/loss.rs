//! GRPO's objective (Shao et al., 2024, eq. 3, as TRL 1.12 computes it): per completion
//! token, the clipped surrogate with the completion's advantage, plus β times the k3 estimate
//! of KL(π‖π_ref) (times the ratio π/π_old with `use_bias_correction_kl`, DeepSeek-V3.2's
//! unbiased gradient); then averaged over the batch one of TRL's four ways (`loss_type`).

use burn::prelude::*;

use crate::config::grpo::GrpoLossType;
use crate::ppo::loss::clipped_surrogate;

/// The sizes a loss normalisation divides by, every rank's counted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchSize {
    /// Completions in the update (masked ones included, as TRL's mean over rows).
    pub completions: f64,
    /// Completion tokens in the loss, over all ranks, and on this rank.
    pub tokens: f64,
    pub tokens_here: f64,
    pub ranks: f64,
    /// `rollout.max_new_tokens` (Dr. GRPO's constant).
    pub max_completion_length: f64,
}

/// The weight of each token of a completion with `active` tokens in the loss, such that the
/// weighted sum over every token of every rank is TRL's loss of the whole batch (gradients are
/// summed over ranks).
pub fn token_weight(loss_type: GrpoLossType, active: usize, size: &BatchSize) -> f64 {
    match loss_type {
        GrpoLossType::Grpo => 1.0 / (active.max(1) as f64 * size.completions),
        GrpoLossType::Bnpo => 1.0 / (size.tokens_here.max(1.0) * size.ranks),
        GrpoLossType::DrGrpo => 1.0 / (size.completions * size.max_completion_length),
        GrpoLossType::Dapo => 1.0 / size.tokens.max(1.0),
    }
}

/// A micro-batch's share of the loss, and the sums its metrics need.
pub struct GrpoLoss {
    pub loss: Tensor<1>,
    /// Over the tokens in the loss: [tokens clipped below (A < 0), clipped above (A > 0),
    /// Σ k3 KL].
    pub sums: Tensor<1>,
}

/// The KL term of the loss: its weight β and whether it is multiplied by π/π_old.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KlPenalty {
    pub beta: f64,
    pub bias_correction: bool,
}

/// `log_probs`, `old_log_probs`, `advantages` (each completion's, on all its tokens) and
/// `weights` (from [`token_weight`], 0 at padding and at masked completions) are `[B, R]`;
/// `mask` is 1 at the tokens in the loss.
#[allow(clippy::too_many_arguments)]
pub fn grpo_loss(
    log_probs: Tensor<2>,
    old_log_probs: Tensor<2>,
    ref_log_probs: Option<Tensor<2>>,
    advantages: Tensor<2>,
    weights: Tensor<2>,
    mask: Tensor<2>,
    clip: (f64, f64),
    penalty: KlPenalty,
) -> GrpoLoss {
    let surrogate = clipped_surrogate(log_probs.clone(), old_log_probs, advantages.clone(), clip);
    let mut per_token = surrogate.loss;
    let kl = match ref_log_probs {
        Some(reference) => {
            // k3 = π_ref/π − log(π_ref/π) − 1: unbiased and never negative (Schulman, 2020).
            let log_ratio = reference - log_probs;
            let mut kl = log_ratio.clone().exp() - log_ratio - 1.0;
            if penalty.bias_correction {
                // ρ·k3: ρ = 1 in value on policy, but its gradient k3·∇log π is not 0.
                kl = kl * surrogate.log_ratio.exp();
            }
            per_token = per_token + kl.clone() * penalty.beta;
            (kl.detach() * mask.clone()).sum()
        }
        None => Tensor::zeros([1], &mask.device()),
    };
    let clipped = surrogate.clipped * mask;
    let low = (clipped.clone() * advantages.clone().lower_elem(0.0).float()).sum();
    let high = (clipped * advantages.greater_elem(0.0).float()).sum();
    GrpoLoss { loss: (per_token * weights).sum(), sums: Tensor::cat(vec![low, high, kl], 0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rows: [[f32; 2]; 2]) -> Tensor<2> {
        let device = crate::device::DeviceSpec::Cpu.device().unwrap();
        Tensor::from_data(rows, &device)
    }

    fn size(completions: f64, tokens: f64) -> BatchSize {
        BatchSize {
            completions,
            tokens,
            tokens_here: tokens,
            ranks: 1.0,
            max_completion_length: 4.0,
        }
    }

    #[test]
    fn each_loss_type_divides_as_trl_does() {
        // Two completions of 2 and 1 tokens: per-token losses l = [[1, 3], [5, ·]].
        //   grpo:    ((1 + 3)/2 + 5/1) / 2 = 3.5
        //   bnpo, dapo: (1 + 3 + 5) / 3 = 3
        //   dr_grpo: (1 + 3 + 5) / (2 · 4) = 1.125
        let size = size(2.0, 3.0);
        let loss = |loss_type| {
            let w = |active| token_weight(loss_type, active, &size);
            1.0 * w(2) + 3.0 * w(2) + 5.0 * w(1)
        };
        assert!((loss(GrpoLossType::Grpo) - 3.5).abs() < 1e-12);
        assert!((loss(GrpoLossType::Bnpo) - 3.0).abs() < 1e-12);
        assert!((loss(GrpoLossType::Dapo) - 3.0).abs() < 1e-12);
        assert!((loss(GrpoLossType::DrGrpo) - 1.125).abs() < 1e-12);
    }

    #[test]
    fn on_policy_the_loss_is_minus_the_weighted_advantage_and_k3_is_added() {
        // ρ = 1 everywhere (μ = 1 in TRL): the surrogate is −A; with β = 0.5 and
        // log π_ref − log π = ln 2 at one token, k3 = 2 − ln 2 − 1 there.
        let logp = t([[-1.0, -2.0], [-0.5, 0.0]]);
        let reference = t([[-1.0 + 2f32.ln(), -2.0], [-0.5, 0.0]]);
        let advantages = t([[1.0, 1.0], [-2.0, -2.0]]);
        let mask = t([[1.0, 1.0], [1.0, 0.0]]);
        let weights = mask.clone() / 3.0;
        let out = grpo_loss(
            logp.clone(),
            logp,
            Some(reference),
            advantages,
            weights,
            mask,
            (0.2, 0.28),
            KlPenalty { beta: 0.5, bias_correction: true },
        );
        let k3 = 2.0 - 2f64.ln() - 1.0;
        let expected = (-1.0 - 1.0 + 2.0 + 0.5 * k3) / 3.0;
        assert!((out.loss.into_scalar::<f32>() as f64 - expected).abs() < 1e-6);
        let sums: Vec<f32> = out.sums.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(&sums[..2], &[0.0, 0.0]);
        assert!((sums[2] as f64 - k3).abs() < 1e-6);
    }

    #[test]
    fn the_upper_clip_can_be_wider_than_the_lower() {
        // ρ = 1.25 with A = +1: clipped at 1 + 0.2 (counted high) but not at 1 + 0.28.
        // ρ = 0.5 with A = −1: clipped at 1 − 0.2 either way (counted low).
        let logp = t([[1.25f32.ln(), 0.5f32.ln()], [0.0, 0.0]]);
        let old = t([[0.0, 0.0], [0.0, 0.0]]);
        let advantages = t([[1.0, -1.0], [0.0, 0.0]]);
        let mask = t([[1.0, 1.0], [0.0, 0.0]]);
        for (high, loss, high_clipped) in [(0.2, -1.2 + 0.8, 1.0), (0.28, -1.25 + 0.8, 0.0)] {
            let out = grpo_loss(
                logp.clone(),
                old.clone(),
                None,
                advantages.clone(),
                mask.clone(),
                mask.clone(),
                (0.2, high),
                KlPenalty { beta: 0.0, bias_correction: true },
            );
            assert!((out.loss.into_scalar::<f32>() - loss).abs() < 1e-6, "ε_high {high}");
            let sums: Vec<f32> = out.sums.into_data().try_to_vec::<f32>().unwrap();
            assert_eq!(sums, [1.0, high_clipped, 0.0], "ε_high {high}");
        }
    }

    // TRL 1.12's `use_bias_correction_kl` multiplies k3 by ρ = exp(log π − log π_old), which is
    // 1 on policy but not its gradient. In PyTorch, one token with log π_ref − log π = ln 2:
    //   l = torch.tensor(-1.0, requires_grad=True); r = l.detach() + math.log(2)
    //   kl = torch.exp(r - l) - (r - l) - 1
    //   (torch.exp(l - l.detach()) * kl).backward()   → l.grad = −0.6931 (−ln 2)
    //   kl.backward() alone                            → l.grad = −1 (1 − π_ref/π)
    #[test]
    fn the_bias_corrected_kl_has_the_ratios_gradient_on_policy() {
        let device = crate::device::DeviceSpec::Cpu.device().unwrap().autodiff();
        let one = |x: f32| Tensor::<2>::from_data([[x]], &device);
        for (bias_correction, expected) in [(true, -(2f32.ln())), (false, -1.0)] {
            let logp = one(-1.0).require_grad();
            let out = grpo_loss(
                logp.clone(),
                logp.clone().detach(),
                Some(one(-1.0 + 2f32.ln())),
                one(0.0),
                one(1.0),
                one(1.0),
                (0.2, 0.2),
                KlPenalty { beta: 1.0, bias_correction },
            );
            let k3 = 1.0 - 2f32.ln();
            assert!((out.loss.clone().into_scalar::<f32>() - k3).abs() < 1e-6, "ρ = 1 in value");
            let grad = logp.grad(&out.loss.backward()).unwrap().into_scalar::<f32>();
            assert!((grad - expected).abs() < 1e-6, "bias_correction {bias_correction}: {grad}");
        }
    }
}
