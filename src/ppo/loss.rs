//! PPO's clipped losses over response tokens (`[B, R]` tensors; `mask` is 1 at real tokens).

use burn::prelude::*;

/// The clipped surrogate objective, as a loss: mean over tokens of
/// max(−A·ρ, −A·clip(ρ, 1 − ε, 1 + ε)) with ρ = π/π_old. Also the fraction of tokens where
/// the clip decided, and the approximate KL ½·mean((log π − log π_old)²) between the policy
/// and the one that sampled.
pub struct PolicyLoss {
    pub loss: Tensor<1>,
    pub clip_fraction: Tensor<1>,
    pub approx_kl: Tensor<1>,
}

pub fn clipped_policy_loss(
    log_probs: Tensor<2>,
    old_log_probs: Tensor<2>,
    advantages: Tensor<2>,
    mask: Tensor<2>,
    clip: f64,
) -> PolicyLoss {
    let surrogate = clipped_surrogate(log_probs, old_log_probs, advantages, (clip, clip));
    PolicyLoss {
        loss: masked_mean(surrogate.loss, mask.clone()),
        clip_fraction: masked_mean(surrogate.clipped, mask.clone()),
        approx_kl: masked_mean(surrogate.log_ratio.powi_scalar(2), mask) * 0.5,
    }
}

/// The clipped surrogate per token, before any averaging (GRPO weighs tokens its own ways).
pub struct ClippedSurrogate {
    /// max(−A·ρ, −A·clip(ρ, 1 − ε_low, 1 + ε_high)).
    pub loss: Tensor<2>,
    /// 1 where the clip decided: ρ beyond the bound on the side the advantage pushes to.
    pub clipped: Tensor<2>,
    /// log ρ.
    pub log_ratio: Tensor<2>,
}

pub fn clipped_surrogate(
    log_probs: Tensor<2>,
    old_log_probs: Tensor<2>,
    advantages: Tensor<2>,
    (low, high): (f64, f64),
) -> ClippedSurrogate {
    let log_ratio = log_probs - old_log_probs;
    let ratio = log_ratio.clone().exp();
    let unclipped = -advantages.clone() * ratio.clone();
    let clipped = -advantages * ratio.clamp(1.0 - low, 1.0 + high);
    let decided = clipped.clone().greater(unclipped.clone()).float();
    ClippedSurrogate { loss: unclipped.max_pair(clipped), clipped: decided, log_ratio }
}

/// ½·mean over tokens of max((V − R)², (V_clipped − R)²), where V_clipped stays within
/// `clip` of the rollout's value: the value model cannot leap on one batch either.
pub fn clipped_value_loss(
    values: Tensor<2>,
    old_values: Tensor<2>,
    returns: Tensor<2>,
    mask: Tensor<2>,
    clip: f64,
) -> Tensor<1> {
    let clipped = old_values.clone() + (values.clone() - old_values).clamp(-clip, clip);
    let unclipped_error = (values - returns.clone()).powi_scalar(2);
    let clipped_error = (clipped - returns).powi_scalar(2);
    masked_mean(unclipped_error.max_pair(clipped_error), mask) * 0.5
}

/// Mean of `x` where `mask` is 1.
pub fn masked_mean(x: Tensor<2>, mask: Tensor<2>) -> Tensor<1> {
    (x * mask.clone()).sum() / mask.sum().clamp_min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rows: [[f32; 2]; 2]) -> Tensor<2> {
        let device = crate::device::DeviceSpec::Cpu.device().unwrap();
        Tensor::from_data(rows, &device)
    }

    fn value(x: Tensor<1>) -> f32 {
        x.into_scalar::<f32>()
    }

    #[test]
    fn the_policy_loss_clips_ratios_that_moved_in_the_advantages_direction() {
        let (ln2, ln_half) = (2f32.ln(), 0.5f32.ln());
        // Tokens: ρ=2 with A=+1 (clipped to 1.2 → −1.2), ρ=0.5 with A=+1 (unclipped −0.5, the
        // pessimistic max), ρ=2 with A=−1 (unclipped +2), and a padding token.
        let log_probs = t([[ln2, ln_half], [ln2, 0.0]]);
        let old = t([[0.0, 0.0], [0.0, 0.0]]);
        let advantages = t([[1.0, 1.0], [-1.0, 5.0]]);
        let mask = t([[1.0, 1.0], [1.0, 0.0]]);
        let out = clipped_policy_loss(log_probs, old, advantages, mask, 0.2);
        let expected = (-1.2 - 0.5 + 2.0) / 3.0;
        assert!((value(out.loss) - expected).abs() < 1e-5);
        assert!((value(out.clip_fraction) - 1.0 / 3.0).abs() < 1e-6);
        let approx_kl = 0.5 * (ln2 * ln2 + ln_half * ln_half + ln2 * ln2) / 3.0;
        assert!((value(out.approx_kl) - approx_kl).abs() < 1e-5);
    }

    #[test]
    fn at_the_old_policy_the_loss_is_minus_the_mean_advantage() {
        let same = t([[-1.0, -2.0], [-0.5, -3.0]]);
        let advantages = t([[1.0, -3.0], [2.0, 4.0]]);
        let mask = t([[1.0, 1.0], [1.0, 1.0]]);
        let out = clipped_policy_loss(same.clone(), same, advantages, mask, 0.2);
        assert!((value(out.loss) + 1.0).abs() < 1e-6);
        assert_eq!((value(out.clip_fraction), value(out.approx_kl)), (0.0, 0.0));
    }

    #[test]
    fn the_value_loss_takes_the_larger_of_the_clipped_and_unclipped_errors() {
        // Value 1.0 from old 0.0 (clipped to 0.2), return 1.0: errors 0 and 0.64 → 0.64.
        // Value 0.1 from old 0.0, return −1: within the clip, error 1.21 both ways.
        let values = t([[1.0, 0.1], [0.0, 9.0]]);
        let old = t([[0.0, 0.0], [0.0, 0.0]]);
        let returns = t([[1.0, -1.0], [0.0, 0.0]]);
        let mask = t([[1.0, 1.0], [0.0, 0.0]]);
        let loss = value(clipped_value_loss(values, old, returns, mask, 0.2));
        assert!((loss - 0.5 * (0.64 + 1.21) / 2.0).abs() < 1e-5, "{loss}");
    }
}
