//! PPO's statistics by name (TRL logs the same quantities as `policy/clipfrac_avg`,
//! `objective/kl`, …). Each crosses ranks as one array — `dist::sum` adds numbers, not
//! structs — so the array form is written here once, beside the names.

use anyhow::Result;

use super::advantage::variance_sums;
use super::rollout::Rollout;
use crate::dist;

/// One minibatch update's losses and statistics, each rank's weighted by its share of the
/// minibatch (so that the sum over ranks is the minibatch's).
#[derive(Debug, Default, Clone, Copy)]
pub struct UpdateParts {
    pub policy_loss: f64,
    pub value_loss: f64,
    pub clip_fraction: f64,
    pub approx_kl: f64,
    pub entropy: f64,
    /// PPO-ptx's language-model loss (0 without it).
    pub ptx_loss: f64,
}

impl UpdateParts {
    /// In the order the update computes them (see `from_array`).
    pub fn from_array(
        [policy_loss, value_loss, clip_fraction, approx_kl, entropy, ptx_loss]: [f64; 6],
    ) -> Self {
        Self { policy_loss, value_loss, clip_fraction, approx_kl, entropy, ptx_loss }
    }

    pub fn to_array(self) -> [f64; 6] {
        let Self { policy_loss, value_loss, clip_fraction, approx_kl, entropy, ptx_loss } = self;
        [policy_loss, value_loss, clip_fraction, approx_kl, entropy, ptx_loss]
    }
}

/// Means over an iteration's updates.
#[derive(Debug, Default, Clone, Copy)]
pub struct UpdateStats {
    pub parts: UpdateParts,
    /// The gradient norm before clipping.
    pub grad_norm: f64,
    updates: usize,
}

impl UpdateStats {
    pub fn add(&mut self, parts: UpdateParts, grad_norm: f64) {
        let mut sums = self.parts.to_array();
        sums.iter_mut().zip(parts.to_array()).for_each(|(sum, x)| *sum += x);
        self.parts = UpdateParts::from_array(sums);
        self.grad_norm += grad_norm;
        self.updates += 1;
    }

    pub fn mean(self) -> Self {
        let n = self.updates.max(1) as f64;
        let parts = UpdateParts::from_array(self.parts.to_array().map(|s| s / n));
        Self { parts, grad_norm: self.grad_norm / n, updates: self.updates }
    }
}

/// An iteration's rollouts summed over every rank: what the log reports and the KL controller
/// reads.
#[derive(Debug, Default, Clone, Copy)]
pub struct RolloutSums {
    pub rollouts: f64,
    /// The shaped score (normalised, less penalties), and its square.
    pub score: f64,
    pub score_squared: f64,
    /// The reward model's raw score.
    pub rm_score: f64,
    pub response_tokens: f64,
    /// Responses that ended with EOS.
    pub ended: f64,
    /// Σ over responses of KL(π‖π_ref).
    pub kl: f64,
    /// For the value model's explained variance (see `advantage::variance_sums`).
    pub variance: [f64; 5],
}

impl RolloutSums {
    /// This rank's rollouts, then the sum over ranks.
    pub fn of(rollouts: &[Rollout], raw_scores: &[f32], kl: f64) -> Result<Self> {
        let values: Vec<f32> = rollouts.iter().flat_map(|r| r.values.clone()).collect();
        let returns: Vec<f32> = rollouts.iter().flat_map(|r| r.returns.clone()).collect();
        let scores = rollouts.iter().map(|r| r.score as f64);
        let mut sums = vec![
            rollouts.len() as f64,
            scores.clone().sum(),
            scores.map(|s| s * s).sum(),
            raw_scores.iter().map(|&s| s as f64).sum(),
            rollouts.iter().map(|r| r.response.len() as f64).sum(),
            rollouts.iter().filter(|r| r.ended).count() as f64,
            kl,
        ];
        sums.extend(variance_sums(&values, &returns));
        dist::sum(&mut sums)?;
        let &[
            rollouts,
            score,
            score_squared,
            rm_score,
            response_tokens,
            ended,
            kl,
            ref variance @ ..,
        ] = sums.as_slice()
        else {
            unreachable!("12 sums")
        };
        let variance: [f64; 5] = variance.try_into().expect("5 sums");
        Ok(Self { rollouts, score, score_squared, rm_score, response_tokens, ended, kl, variance })
    }
}
