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

/// Count, sum and sum of squares of every advantage: what whitening needs, and what the
/// ranks of a distributed run add up to whiten over the whole batch.
pub fn moments(rows: &[Vec<f32>]) -> [f64; 3] {
    let all = rows.iter().flatten().map(|&a| a as f64);
    all.fold([0.0; 3], |[n, sum, squares], a| [n + 1.0, sum + a, squares + a * a])
}

/// Shifts and scales every advantage to mean 0 and variance 1 over the batch whose
/// [`moments`] are given.
pub fn whiten(rows: &mut [Vec<f32>], [n, sum, squares]: [f64; 3]) {
    let n = n.max(1.0);
    let mean = sum / n;
    let var = (squares / n - mean * mean).max(0.0);
    let scale = 1.0 / (var.sqrt() + 1e-8);
    for a in rows.iter_mut().flatten() {
        *a = ((*a as f64 - mean) * scale) as f32;
    }
}

/// The sums [`explained_variance`] reads, which ranks add up: count, Σr, Σr², Σ(r−v), Σ(r−v)².
pub fn variance_sums(values: &[f32], returns: &[f32]) -> [f64; 5] {
    let pairs = returns.iter().zip(values).map(|(&r, &v)| (r as f64, (r - v) as f64));
    pairs
        .fold([0.0; 5], |[n, r, r2, d, d2], (x, y)| [n + 1.0, r + x, r2 + x * x, d + y, d2 + y * y])
}

/// 1 − Var(returns − values) / Var(returns): how much of the return the value model explains.
pub fn explained_variance([n, r, r2, d, d2]: [f64; 5]) -> f64 {
    let n = n.max(1.0);
    let total = r2 / n - (r / n).powi(2);
    let residual = d2 / n - (d / n).powi(2);
    if total <= 0.0 { f64::NAN } else { 1.0 - residual / total }
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
        let whole = moments(&rows);
        let halves = [moments(&rows[..1]), moments(&rows[1..])];
        let added: Vec<f64> = (0..3).map(|i| halves[0][i] + halves[1][i]).collect();
        assert_eq!(added, whole, "moments add up across ranks");
        whiten(&mut rows, whole);
        let all: Vec<f64> = rows.iter().flatten().map(|&a| a as f64).collect();
        let mean = all.iter().sum::<f64>() / 4.0;
        let var = all.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "mean {mean}, var {var}");
        assert!(rows[1][0] > rows[0][2], "order is kept");
    }

    #[test]
    fn explained_variance_is_one_for_perfect_values_and_zero_for_the_mean() {
        let ev = |values, returns| explained_variance(variance_sums(values, returns));
        assert!((ev(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]) - 1.0).abs() < 1e-9);
        assert!(ev(&[2.0, 2.0, 2.0], &[1.0, 2.0, 3.0]).abs() < 1e-9);
    }
}
