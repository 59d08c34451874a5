//! Per-token rewards and generalised advantage estimation (Schulman et al., 2016) over one
//! response, on the host: a response is a few hundred numbers, and the recursion runs
//! backwards token by token.

/// Per-token rewards: −β·kl_t at every token, plus the sequence's score at the last one.
pub fn token_rewards(kl: &[f32], beta: f64, score: f32) -> Vec<f32> {
    let mut rewards: Vec<f32> = kl.iter().map(|&k| (-beta * k as f64) as f32).collect();
    if let Some(last) = rewards.last_mut() {
        *last += score;
    }
    rewards
}

/// Advantages and returns of one response: δ_t = r_t + γ·V_{t+1} − V_t and
/// A_t = δ_t + γλ·A_{t+1}, with V = 0 after the last token (the episode ends there);
/// returns are A_t + V_t, the value model's targets.
pub fn gae(rewards: &[f32], values: &[f32], gamma: f64, lam: f64) -> (Vec<f32>, Vec<f32>) {
    let n = rewards.len();
    let mut advantages = vec![0f32; n];
    let (mut next_value, mut next_advantage) = (0f64, 0f64);
    for t in (0..n).rev() {
        let delta = rewards[t] as f64 + gamma * next_value - values[t] as f64;
        next_advantage = delta + gamma * lam * next_advantage;
        advantages[t] = next_advantage as f32;
        next_value = values[t] as f64;
    }
    let returns = advantages.iter().zip(values).map(|(a, v)| a + v).collect();
    (advantages, returns)
}

/// Shifts and scales every advantage of the batch to mean 0 and variance 1.
pub fn whiten(rows: &mut [Vec<f32>]) {
    let count = rows.iter().map(Vec::len).sum::<usize>().max(1) as f64;
    let mean = rows.iter().flatten().map(|&a| a as f64).sum::<f64>() / count;
    let var = rows.iter().flatten().map(|&a| (a as f64 - mean).powi(2)).sum::<f64>() / count;
    let scale = 1.0 / (var.sqrt() + 1e-8);
    for a in rows.iter_mut().flatten() {
        *a = ((*a as f64 - mean) * scale) as f32;
    }
}

/// 1 − Var(returns − values) / Var(returns): how much of the return the value model explains.
pub fn explained_variance(values: &[f32], returns: &[f32]) -> f64 {
    let var = |xs: &mut dyn Iterator<Item = f64>| {
        let xs: Vec<f64> = xs.collect();
        let n = xs.len().max(1) as f64;
        let mean = xs.iter().sum::<f64>() / n;
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n
    };
    let total = var(&mut returns.iter().map(|&r| r as f64));
    let residual = var(&mut returns.iter().zip(values).map(|(&r, &v)| (r - v) as f64));
    if total == 0.0 { f64::NAN } else { 1.0 - residual / total }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn the_score_lands_on_the_last_token_after_the_kl_penalty() {
        close(&token_rewards(&[0.5, -1.0, 2.0], 0.1, 3.0), &[-0.05, 0.1, 2.8]);
    }

    #[test]
    fn gae_matches_a_hand_computed_example() {
        // γ = 0.9, λ = 0.5, rewards (1, 0, 2), values (0.5, 1, 1.5):
        // δ2 = 2 − 1.5 = 0.5;               A2 = 0.5
        // δ1 = 0 + 0.9·1.5 − 1 = 0.35;      A1 = 0.35 + 0.45·0.5 = 0.575
        // δ0 = 1 + 0.9·1 − 0.5 = 1.4;       A0 = 1.4 + 0.45·0.575 = 1.65875
        let (advantages, returns) = gae(&[1.0, 0.0, 2.0], &[0.5, 1.0, 1.5], 0.9, 0.5);
        close(&advantages, &[1.65875, 0.575, 0.5]);
        close(&returns, &[2.15875, 1.575, 2.0]);
    }

    #[test]
    fn with_gamma_and_lambda_one_advantages_are_returns_to_go_minus_values() {
        let (advantages, returns) = gae(&[1.0, 2.0, 3.0], &[0.0, 1.0, 0.0], 1.0, 1.0);
        close(&returns, &[6.0, 5.0, 3.0]);
        close(&advantages, &[6.0, 4.0, 3.0]);
    }

    #[test]
    fn whitening_gives_zero_mean_and_unit_variance_across_rows() {
        let mut rows = vec![vec![1.0, 2.0, 3.0], vec![10.0]];
        whiten(&mut rows);
        let all: Vec<f64> = rows.iter().flatten().map(|&a| a as f64).collect();
        let mean = all.iter().sum::<f64>() / 4.0;
        let var = all.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "mean {mean}, var {var}");
        assert!(rows[1][0] > rows[0][2], "order is kept");
    }

    #[test]
    fn explained_variance_is_one_for_perfect_values_and_zero_for_the_mean() {
        assert!((explained_variance(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]) - 1.0).abs() < 1e-9);
        assert!(explained_variance(&[2.0, 2.0, 2.0], &[1.0, 2.0, 3.0]).abs() < 1e-9);
    }
}
