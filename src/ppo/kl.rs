//! The KL penalty's weight β: fixed, or adapted toward a target KL with Ziegler et al.'s
//! (2019) proportional controller.

use serde::{Deserialize, Serialize};

/// What `--resume` needs to carry on with the same β.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KlController {
    pub beta: f64,
    /// `None`: β stays fixed.
    pub target: Option<f64>,
    pub horizon: f64,
}

impl KlController {
    /// After an iteration of `rollouts` responses whose mean KL to the reference was `kl`:
    /// β ← β·(1 + clip(kl/target − 1, ±0.2)·rollouts/horizon).
    pub fn update(&mut self, kl: f64, rollouts: usize) {
        let Some(target) = self.target else { return };
        let error = (kl / target - 1.0).clamp(-0.2, 0.2);
        self.beta *= 1.0 + error * rollouts as f64 / self.horizon;
    }
}

/// The k1 estimate of KL(π‖π_ref) for each sampled token, log π − log π_ref; summed over a
/// response it is an unbiased estimate of the sequence KL.
pub fn token_kl(log_probs: &[f32], ref_log_probs: &[f32]) -> Vec<f32> {
    log_probs.iter().zip(ref_log_probs).map(|(p, r)| p - r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_grows_when_kl_is_above_target_and_shrinks_below() {
        let mut c = KlController { beta: 0.1, target: Some(6.0), horizon: 100.0 };
        c.update(12.0, 10); // error clipped to +0.2: β·(1 + 0.2·0.1)
        assert!((c.beta - 0.102).abs() < 1e-12, "{}", c.beta);
        c.update(3.0, 10); // error −0.5 clipped to −0.2
        assert!((c.beta - 0.102 * 0.98).abs() < 1e-12, "{}", c.beta);
        c.update(6.6, 50); // error +0.1, half the horizon
        assert!((c.beta - 0.102 * 0.98 * 1.05).abs() < 1e-12, "{}", c.beta);
    }

    #[test]
    fn a_fixed_beta_does_not_move() {
        let mut c = KlController { beta: 0.1, target: None, horizon: 100.0 };
        c.update(100.0, 64);
        assert_eq!(c.beta, 0.1);
    }

    #[test]
    fn kl_is_zero_when_the_policy_is_the_reference() {
        let log_probs = [-1.5, -0.2, -3.0];
        assert!(token_kl(&log_probs, &log_probs).iter().all(|&k| k == 0.0));
        assert_eq!(token_kl(&[-1.0], &[-3.0]), vec![2.0]);
    }
}
