//! Advantages without a critic: each completion's reward against the other answers to the
//! same prompt. GRPO (Shao et al., 2024) subtracts the group's mean; RLOO (Ahmadian et al.,
//! 2024) the mean of the group's *other* completions, r_i − (Σ_j r_j − r_i)/(G − 1), which is
//! G/(G − 1) times GRPO's. Either is then divided by a standard deviation (TRL's
//! `scale_rewards`): the group's, the whole batch's, or none.
//!
//! A NaN reward (no function scored the completion) is left out of the means and standard
//! deviations, and its advantage is 0, as TRL 1.12's `nanmean`/`nanstd` and `nan_to_num`.

use crate::config::grpo::{AdvantageKind, ScaleRewards};

/// Added to the standard deviation before dividing, as TRL does.
const STD_EPSILON: f64 = 1e-4;

/// The batch statistics that `scale_rewards = "batch"` divides by, summed over ranks.
pub type BatchMoments = [f64; 3];

/// Count, Σr and Σr² of the rewards that are not NaN, to add up across ranks.
pub fn batch_moments(rewards: &[f64]) -> BatchMoments {
    let scored = rewards.iter().filter(|r| !r.is_nan());
    scored.fold([0.0; 3], |[n, s, q], &r| [n + 1.0, s + r, q + r * r])
}

/// The Bessel-corrected standard deviation (torch.std's, TRL's `nanstd`) from
/// [`batch_moments`]: NaN for fewer than two values, as TRL's.
pub fn moments_std([n, sum, squares]: BatchMoments) -> f64 {
    if n < 2.0 {
        return f64::NAN;
    }
    ((squares - sum * sum / n) / (n - 1.0)).max(0.0).sqrt()
}

/// The advantages of `rewards` (groups of `g` consecutive completions), and per completion
/// the standard deviation its advantage is compared with for `frac_reward_zero_std` (the
/// group's, or the batch's with `scale_rewards = "batch"`). `batch` is the whole batch's
/// [`batch_moments`].
pub fn advantages(
    rewards: &[f64],
    g: usize,
    kind: AdvantageKind,
    scale: ScaleRewards,
    batch: BatchMoments,
) -> (Vec<f64>, Vec<f64>) {
    let batch_std = moments_std(batch);
    let mut advantages = Vec::with_capacity(rewards.len());
    let mut group_stds = Vec::with_capacity(rewards.len());
    for group in rewards.chunks(g) {
        let moments = batch_moments(group);
        let [n, sum, _] = moments;
        let mean = sum / n;
        let std = moments_std(moments);
        let divisor = match scale {
            ScaleRewards::Group => std + STD_EPSILON,
            ScaleRewards::Batch => batch_std + STD_EPSILON,
            ScaleRewards::None => 1.0,
        };
        let leave_one_out = n / (n - 1.0).max(1.0);
        for &r in group {
            let centred = match kind {
                AdvantageKind::Grpo => r - mean,
                AdvantageKind::Rloo => (r - mean) * leave_one_out,
            };
            let advantage = centred / divisor;
            advantages.push(if advantage.is_nan() { 0.0 } else { advantage });
            group_stds.push(if scale == ScaleRewards::Batch { batch_std } else { std });
        }
    }
    (advantages, group_stds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    // In PyTorch, for rewards r = [1, 2, 3, 6, 0, 0, 0, 0] and G = 4, as TRL computes them:
    //   mean = r.view(-1, 4).mean(1)            → [3, 0]
    //   std  = r.view(-1, 4).std(1)             → [2.1602469, 0]
    //   (r - mean.repeat_interleave(4)) / (std.repeat_interleave(4) + 1e-4)
    //   → [-0.9258, -0.4629, 0, 1.3887, 0, 0, 0, 0]
    const REWARDS: [f64; 8] = [1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 0.0];

    #[test]
    fn grpo_divides_by_the_groups_standard_deviation() {
        let batch = batch_moments(&REWARDS);
        let (adv, stds) = advantages(&REWARDS, 4, AdvantageKind::Grpo, ScaleRewards::Group, batch);
        let s = 2.160_246_899_469_287 + 1e-4;
        close(&adv, &[-2.0 / s, -1.0 / s, 0.0, 3.0 / s, 0.0, 0.0, 0.0, 0.0]);
        close(
            &stds[..5],
            &[
                2.160_246_899_469_287,
                2.160_246_899_469_287,
                2.160_246_899_469_287,
                2.160_246_899_469_287,
                0.0,
            ],
        );
    }

    #[test]
    fn batch_scaling_uses_one_standard_deviation_for_all_groups() {
        // r.std() over all eight = sqrt(32 / 7) = 2.138089935299395
        let batch = batch_moments(&REWARDS);
        let (adv, _) = advantages(&REWARDS, 4, AdvantageKind::Grpo, ScaleRewards::Batch, batch);
        let s = 2.138_089_935_299_395 + 1e-4;
        close(&adv[..4], &[-2.0 / s, -1.0 / s, 0.0, 3.0 / s]);
        let halves = [batch_moments(&REWARDS[..4]), batch_moments(&REWARDS[4..])];
        let added: Vec<f64> = (0..3).map(|i| halves[0][i] + halves[1][i]).collect();
        assert_eq!(added, batch, "moments add up across ranks");
    }

    // TRL 1.12 on a completion no function scored (its reward NaN):
    //   r = [1, nan, 3, 5, nan, nan, nan, nan].view(-1, 4)
    //   mean = torch.nanmean(r, 1)                → [3, nan]
    //   std = trl.trainer.utils.nanstd(r, dim=1)  → [2, nan]
    //   ((r - mean[:, None]) / (std[:, None] + 1e-4)).nan_to_num(0)
    //   → [[-0.99995, 0, 0, 0.99995], [0, 0, 0, 0]]
    #[test]
    fn a_completion_no_function_scored_is_left_out_and_gets_no_advantage() {
        let nan = f64::NAN;
        let rewards = [1.0, nan, 3.0, 5.0, nan, nan, nan, nan];
        let batch = batch_moments(&rewards);
        assert_eq!(batch, [3.0, 9.0, 35.0]);
        let (adv, stds) = advantages(&rewards, 4, AdvantageKind::Grpo, ScaleRewards::Group, batch);
        let s = 2.0 + 1e-4;
        close(&adv, &[-2.0 / s, 0.0, 0.0, 2.0 / s, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(stds[0], 2.0);
        assert!(stds[4].is_nan(), "an unscored group's std is NaN (never \"zero std\")");
        assert!(moments_std(batch_moments(&[4.0])).is_nan(), "one value: NaN, as nanstd");
    }

    #[test]
    fn rloo_subtracts_the_mean_of_the_other_completions() {
        let (adv, _) = advantages(
            &REWARDS,
            4,
            AdvantageKind::Rloo,
            ScaleRewards::None,
            batch_moments(&REWARDS),
        );
        // 1 − (2 + 3 + 6)/3, 2 − (1 + 3 + 6)/3, 3 − 3, 6 − 2.
        close(&adv[..4], &[1.0 - 11.0 / 3.0, 2.0 - 10.0 / 3.0, 0.0, 4.0]);
        assert!(adv[4..].iter().all(|&a| a == 0.0), "a group of equal rewards teaches nothing");
    }
}
