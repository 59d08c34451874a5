//! What an iteration logs, under TRL's GRPO metric names: the rollouts' (summed over ranks
//! before dividing) and the updates'.

use anyhow::Result;
use serde_json::{Map, Value};

use super::advantage::{batch_moments, moments_std};
use crate::dist;
use crate::ppo::rollout::Rollout;
use crate::train::run::round;

/// The sums of an iteration's updates (every rank's, each update's).
#[derive(Debug, Clone, Default)]
pub struct UpdateSums {
    /// Over updates: [loss, tokens clipped below, clipped above, Σ KL, Σ entropy].
    pub sums: [f64; Self::LEN],
    pub grad_norm: f64,
    pub updates: f64,
    /// Completion tokens in the loss (per update).
    pub tokens: f64,
}

impl UpdateSums {
    pub const LEN: usize = 5;

    pub fn add(&mut self, sums: [f64; Self::LEN], grad_norm: f64) {
        self.sums.iter_mut().zip(sums).for_each(|(a, b)| *a += b);
        self.grad_norm += grad_norm;
        self.updates += 1.0;
    }

    /// Mean per update of sum `k`, per token in the loss.
    fn per_token(&self, k: usize) -> f64 {
        self.sums[k] / (self.updates.max(1.0) * self.tokens.max(1.0))
    }
}

/// The rollouts' statistics, over every rank.
#[derive(Debug, Clone, Default)]
pub struct IterationStats {
    /// Mean and standard deviation of the batch's rewards (TRL 1.12's `reward` and
    /// `reward_std`), NaN (unscored) left out.
    pub reward: f64,
    pub reward_std: f64,
    pub frac_reward_zero_std: f64,
    /// Per reward function: mean and standard deviation of the scores it gave (NaN left out).
    pub functions: Vec<(f64, f64)>,
    pub mean_length: f64,
    /// Completions that hit `rollout.max_new_tokens` before their end.
    pub clipped_ratio: f64,
    pub completion_tokens: f64,
}

impl IterationStats {
    /// `rewards` are the completions' (NaN: no function scored it), `scores` each function's,
    /// `group_stds` the standard deviations [`super::advantage::advantages`] returned.
    pub fn of(
        rollouts: &[Rollout],
        rewards: &[f64],
        scores: &[Vec<f64>],
        group_stds: &[f64],
    ) -> Result<Self> {
        let n = rollouts.len() as f64;
        let mut sums = vec![
            n,
            group_stds.iter().filter(|&&s| s.abs() < 1e-8).count() as f64,
            rollouts.iter().map(|r| r.response.len() as f64).sum(),
            rollouts.iter().filter(|r| !r.ended).count() as f64,
        ];
        sums.extend(batch_moments(rewards));
        for function in scores {
            let given = function.iter().filter(|x| !x.is_nan());
            let (k, s, q) =
                given.fold((0.0, 0.0, 0.0), |(k, s, q), &x| (k + 1.0, s + x, q + x * x));
            sums.extend([k, s, q]);
        }
        dist::sum(&mut sums)?;
        let total = sums[0].max(1.0);
        let rewards = [sums[4], sums[5], sums[6]];
        let functions = sums[7..]
            .chunks(3)
            .map(|c| {
                let (k, s, q) = (c[0], c[1], c[2]);
                let mean = s / k.max(1.0);
                let var = (q - k * mean * mean) / (k - 1.0).max(1.0);
                match k {
                    0.0 => (f64::NAN, f64::NAN),
                    _ => (mean, var.max(0.0).sqrt()),
                }
            })
            .collect();
        Ok(Self {
            reward: rewards[1] / rewards[0],
            reward_std: moments_std(rewards),
            frac_reward_zero_std: sums[1] / total,
            functions,
            mean_length: sums[2] / total,
            clipped_ratio: sums[3] / total,
            completion_tokens: sums[2],
        })
    }

    /// The metrics line: TRL's names (`reward`, `rewards/<name>/mean`, `clip_ratio/*`, …).
    pub fn json(&self, names: &[&str], update: &UpdateSums, with_kl: bool) -> Map<String, Value> {
        let mut record = Map::new();
        let mut put = |key: String, value: f64| {
            let value = if value.is_finite() { round(value, 5).into() } else { Value::Null };
            record.insert(key, value);
        };
        put("reward".into(), self.reward);
        put("reward_std".into(), self.reward_std);
        put("frac_reward_zero_std".into(), self.frac_reward_zero_std);
        for (name, (mean, std)) in names.iter().zip(&self.functions) {
            put(format!("rewards/{name}/mean"), *mean);
            put(format!("rewards/{name}/std"), *std);
        }
        put("loss".into(), update.sums[0] / update.updates.max(1.0));
        if with_kl {
            put("kl".into(), update.per_token(3));
        }
        let (low, high) = (update.per_token(1), update.per_token(2));
        put("clip_ratio/low_mean".into(), low);
        put("clip_ratio/high_mean".into(), high);
        put("clip_ratio/region_mean".into(), low + high);
        put("entropy".into(), update.per_token(4));
        put("grad_norm".into(), update.grad_norm / update.updates.max(1.0));
        put("completions/mean_length".into(), self.mean_length);
        put("completions/clipped_ratio".into(), self.clipped_ratio);
        record
    }
}
