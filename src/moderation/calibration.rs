//! Calibrated category scores: Platt scaling, `σ(a·z + b)` of a category's logit `z`, fitted
//! on the validation labels, and the expected calibration error that measures it. Training
//! weighs positives up against class imbalance, which inflates raw probabilities; a scale and
//! a shift per category undo that, and make scores of different categories comparable (the
//! "any category" score is their maximum).

use serde::{Deserialize, Serialize};

/// `σ(scale·z + shift)`. `scale` is positive, so the order of scores — and with it AUPRC
/// — is the logits' order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Platt {
    pub scale: f64,
    pub shift: f64,
}

impl Default for Platt {
    fn default() -> Self {
        Self { scale: 1.0, shift: 0.0 }
    }
}

impl Platt {
    pub fn probability(&self, logit: f32) -> f32 {
        sigmoid(self.scale * logit as f64 + self.shift) as f32
    }

    /// The scale and shift of least log loss on `(logit, label)` pairs, by Newton's method
    /// with backtracking (as Platt's own procedure, Lin et al. 2007), with Platt's targets
    /// `(N₊ + 1)/(N₊ + 2)` and `1/(N₋ + 2)` instead of 1 and 0, which keep a category with few
    /// examples (or one class only) from overconfidence.
    pub fn fit(logits: &[f32], labels: &[bool]) -> Self {
        let positives = labels.iter().filter(|&&l| l).count() as f64;
        let negatives = labels.len() as f64 - positives;
        let (high, low) = ((positives + 1.0) / (positives + 2.0), 1.0 / (negatives + 2.0));
        let pairs: Vec<(f64, f64)> = logits
            .iter()
            .zip(labels)
            .map(|(&z, &l)| (z as f64, if l { high } else { low }))
            .collect();
        // Σ −[t·log p + (1 − t)·log(1 − p)] with p = σ(a·z + b).
        let loss = |a: f64, b: f64| -> f64 {
            pairs
                .iter()
                .map(|&(z, t)| t * softplus(-(a * z + b)) + (1.0 - t) * softplus(a * z + b))
                .sum()
        };
        let (mut a, mut b) = (1.0, 0.0);
        let mut current = loss(a, b);
        for _ in 0..100 {
            let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-12, 0.0, 1e-12);
            for &(z, t) in &pairs {
                let p = sigmoid(a * z + b);
                let w = p * (1.0 - p);
                (ga, gb) = (ga + (p - t) * z, gb + (p - t));
                (haa, hab, hbb) = (haa + w * z * z, hab + w * z, hbb + w);
            }
            let det = haa * hbb - hab * hab;
            let (da, db) = ((hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det);
            let mut step = 1.0;
            while step > 1e-10 && loss(a - step * da, b - step * db) > current {
                step /= 2.0;
            }
            let (next_a, next_b) = (a - step * da, b - step * db);
            let next = loss(next_a, next_b);
            if next.is_nan() || next > current {
                break;
            }
            let converged = current - next < 1e-12 * current.max(1.0);
            (a, b, current) = (next_a, next_b, next);
            if converged {
                break;
            }
        }
        if a > 0.0 && a.is_finite() && b.is_finite() {
            return Self { scale: a, shift: b };
        }
        // Logits that rank backwards (or not at all) carry no information: every text gets
        // the category's base rate, with a trace of the logit so the order is kept.
        let rate = pairs.iter().map(|&(_, t)| t).sum::<f64>() / pairs.len().max(1) as f64;
        Self { scale: MIN_SCALE, shift: (rate / (1.0 - rate)).ln() }
    }
}

/// log(1 + eˣ), stable.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// The scale of a category whose logits say nothing (see `fit`).
const MIN_SCALE: f64 = 1e-3;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Bins of equal width over [0, 1] for the expected calibration error.
pub const ECE_BINS: usize = 10;

/// Σ over bins of (share of scores in the bin) · |mean score − share of positives|: how far,
/// on average, a score is from the frequency it claims. `None` without scores.
pub fn expected_calibration_error(scores: &[f32], labels: &[bool]) -> Option<f64> {
    if scores.is_empty() {
        return None;
    }
    let mut bins = [(0usize, 0.0f64, 0usize); ECE_BINS]; // count, Σ score, positives
    for (&s, &l) in scores.iter().zip(labels) {
        let bin = &mut bins[((s as f64 * ECE_BINS as f64) as usize).min(ECE_BINS - 1)];
        bin.0 += 1;
        bin.1 += s as f64;
        bin.2 += usize::from(l);
    }
    let n = scores.len() as f64;
    // count/n · |Σ score/count − positives/count| = |Σ score − positives| / n
    let gaps = bins.iter().map(|&(_, sum, positives)| (sum - positives as f64).abs() / n);
    Some(gaps.sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platt_scaling_recovers_the_scale_and_shift_that_made_the_labels() {
        // Labels drawn with P(positive) = σ(0.5·z − 1) at evenly spread logits.
        let mut state = 12345u64;
        let mut uniform = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let logits: Vec<f32> = (0..20000).map(|i| -8.0 + 16.0 * i as f32 / 20000.0).collect();
        let labels: Vec<bool> =
            logits.iter().map(|&z| uniform() < sigmoid(0.5 * z as f64 - 1.0)).collect();
        let fit = Platt::fit(&logits, &labels);
        assert!((fit.scale - 0.5).abs() < 0.03 && (fit.shift + 1.0).abs() < 0.06, "{fit:?}");
        let raw: Vec<f32> = logits.iter().map(|&z| sigmoid(z as f64) as f32).collect();
        let calibrated: Vec<f32> = logits.iter().map(|&z| fit.probability(z)).collect();
        let (before, after) = (
            expected_calibration_error(&raw, &labels).unwrap(),
            expected_calibration_error(&calibrated, &labels).unwrap(),
        );
        assert!(after < 0.02 && before > 0.1, "ECE {before} → {after}");
    }

    #[test]
    fn a_category_ranked_backwards_or_of_one_class_gets_its_base_rate() {
        let logits = [-2.0, -1.0, 1.0, 2.0];
        let backwards = Platt::fit(&logits, &[true, true, false, false]);
        assert_eq!(backwards.scale, MIN_SCALE);
        assert!((backwards.probability(0.0) - 0.5).abs() < 1e-3, "{backwards:?}");
        let negatives = Platt::fit(&logits, &[false; 4]);
        assert!(negatives.probability(2.0) < 0.2, "{negatives:?}");
    }

    #[test]
    fn ece_of_scores_that_match_their_frequencies_is_zero() {
        let scores = [0.25, 0.25, 0.25, 0.25, 0.95, 0.95];
        let labels = [true, false, false, false, true, true];
        let ece = expected_calibration_error(&scores, &labels).unwrap();
        // Bin 0.2–0.3: mean 0.25, frequency 0.25. Bin 0.9–1: mean 0.95, frequency 1 → 2/6·0.05.
        assert!((ece - 0.05 / 3.0).abs() < 1e-6, "{ece}");
        assert_eq!(expected_calibration_error(&[], &[]), None);
    }
}
