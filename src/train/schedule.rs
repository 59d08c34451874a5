//! The learning rate at each optimizer step: linear warm-up, then cosine, linear or constant.

use std::f64::consts::PI;

use crate::config::train::{Schedule, TrainConfig};

/// Learning rate for optimizer step `step` (0-based) of `total`. Warm-up rises linearly to
/// `lr` over `warmup_steps` starting at `lr / warmup_steps` (never 0, so no step is wasted).
pub fn learning_rate(config: &TrainConfig, step: usize, total: usize) -> f64 {
    let warmup = config.warmup_steps.min(total.saturating_sub(1));
    if step < warmup {
        return config.lr * (step + 1) as f64 / warmup as f64;
    }
    let decay_steps = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / decay_steps as f64).min(1.0);
    let floor = config.lr * config.min_lr_ratio;
    match config.schedule {
        Schedule::Constant => config.lr,
        Schedule::Linear => config.lr * (1.0 - progress),
        Schedule::Cosine => floor + (config.lr - floor) * 0.5 * (1.0 + (PI * progress).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(schedule: Schedule) -> TrainConfig {
        TrainConfig { lr: 1.0, warmup_steps: 4, schedule, ..TrainConfig::default() }
    }

    #[test]
    fn warmup_then_cosine_down_to_the_floor() {
        let cosine = TrainConfig { min_lr_ratio: 0.1, ..config(Schedule::Cosine) };
        let lrs: Vec<f64> = (0..14).map(|s| learning_rate(&cosine, s, 14)).collect();
        assert_eq!(&lrs[..5], &[0.25, 0.5, 0.75, 1.0, 1.0]);
        assert!((lrs[9] - 0.55).abs() < 1e-12, "half-way is the midpoint: {}", lrs[9]);
        assert!(lrs[4..].windows(2).all(|w| w[1] <= w[0]));
        assert!(lrs[13] > 0.1);
    }

    #[test]
    fn constant_and_linear() {
        assert_eq!(learning_rate(&config(Schedule::Constant), 9, 10), 1.0);
        assert_eq!(learning_rate(&config(Schedule::Linear), 7, 10), 0.5);
        // Fewer steps than warm-up: still reaches the peak on the last step.
        assert_eq!(learning_rate(&config(Schedule::Linear), 0, 2), 1.0);
    }
}
