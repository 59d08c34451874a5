//! Binary-classification arithmetic for one category: average precision (area under the
//! precision-recall curve, as scikit-learn's `average_precision_score`), precision, recall
//! and F1 at a threshold, and the choice of threshold on validation data.

use serde_json::{Value, json};

use super::Moderation;
use super::calibration::expected_calibration_error;
pub use crate::config::moderate::ThresholdRule;
use crate::data::moderation::{CATEGORIES, LabeledText, NUM_CATEGORIES};

/// Σₙ (Rₙ − Rₙ₋₁)·Pₙ over the thresholds at each distinct score, highest first. `None`
/// without positives (undefined).
pub fn average_precision(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 {
        return None;
    }
    let mut ap = 0.0;
    let mut previous_recall = 0.0;
    for point in curve(scores, labels) {
        let recall = point.true_positives as f64 / positives as f64;
        ap += (recall - previous_recall) * point.precision();
        previous_recall = recall;
    }
    Some(ap)
}

/// Precision, recall and F1 when `score ≥ threshold` means positive.
pub fn precision_recall_f1(scores: &[f32], labels: &[bool], threshold: f32) -> (f64, f64, f64) {
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    for (&s, &l) in scores.iter().zip(labels) {
        match (s >= threshold, l) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => {}
        }
    }
    let precision = if tp + fp == 0 { 0.0 } else { tp as f64 / (tp + fp) as f64 };
    let recall = if tp + fn_ == 0 { 0.0 } else { tp as f64 / (tp + fn_) as f64 };
    (precision, recall, f1(precision, recall))
}

/// The decision threshold for one category; 0.5 when the validation data has no positives.
/// The chosen cut lies halfway between the lowest score it accepts and the next lower score,
/// not on a validation score itself, so a new text scoring a little under the lowest accepted
/// positive is still flagged.
pub fn choose_threshold(
    scores: &[f32],
    labels: &[bool],
    rule: ThresholdRule,
    target_precision: f64,
) -> f32 {
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 {
        return 0.5;
    }
    let points = curve(scores, labels);
    let f1_at = |p: &CurvePoint| f1(p.precision(), p.true_positives as f64 / positives as f64);
    let best_f1 =
        (0..points.len()).max_by(|&a, &b| f1_at(&points[a]).total_cmp(&f1_at(&points[b])));
    let reaching = (0..points.len()).rev().find(|&i| points[i].precision() >= target_precision);
    let chosen = match rule {
        ThresholdRule::BestF1 => best_f1,
        ThresholdRule::Precision => reaching.or(best_f1),
    };
    let Some(i) = chosen else { return 0.5 };
    match points.get(i + 1) {
        Some(lower) => (points[i].threshold + lower.threshold) / 2.0,
        None => points[i].threshold,
    }
}

fn f1(precision: f64, recall: f64) -> f64 {
    if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) }
}

/// One point of the precision-recall curve: everything scoring ≥ `threshold` is positive.
struct CurvePoint {
    threshold: f32,
    true_positives: usize,
    predicted: usize,
}

impl CurvePoint {
    fn precision(&self) -> f64 {
        self.true_positives as f64 / self.predicted as f64
    }
}

/// The curve's points at each distinct score, highest threshold first.
fn curve(scores: &[f32], labels: &[bool]) -> Vec<CurvePoint> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut points = Vec::new();
    let mut true_positives = 0;
    for (rank, &i) in order.iter().enumerate() {
        true_positives += usize::from(labels[i]);
        let last_of_tie = order.get(rank + 1).is_none_or(|&next| scores[next] != scores[i]);
        if last_of_tie {
            points.push(CurvePoint { threshold: scores[i], true_positives, predicted: rank + 1 });
        }
    }
    points
}

/// "Any category": a text is positive when a known label is, its score the highest category
/// score. Returns (scores, labels).
pub fn any_category<'a>(
    rows: &[LabeledText],
    scores: impl Iterator<Item = &'a [f32; NUM_CATEGORIES]>,
) -> (Vec<f32>, Vec<bool>) {
    rows.iter()
        .zip(scores)
        .map(|(row, s)| (s.iter().copied().fold(0.0, f32::max), row.labels.contains(&Some(true))))
        .unzip()
}

/// Metrics of verdicts against labels, per category and for "any category" (`rlhf moderate
/// eval`).
pub fn evaluate(rows: &[LabeledText], verdicts: &[Moderation]) -> Value {
    let mut categories = Vec::new();
    let (mut all_scores, mut all_labels) = (Vec::new(), Vec::new());
    for (c, (code, name)) in CATEGORIES.iter().enumerate() {
        let (mut scores, mut labels, mut decisions) = (Vec::new(), Vec::new(), Vec::new());
        for (row, verdict) in rows.iter().zip(verdicts) {
            if let Some(label) = row.labels[c] {
                scores.push(verdict.scores[c]);
                labels.push(label);
                decisions.push(if verdict.categories[c] { 1.0f32 } else { 0.0 });
            }
        }
        let (precision, recall, f1) = precision_recall_f1(&decisions, &labels, 0.5);
        let positives = labels.iter().filter(|&&l| l).count();
        let defined = positives > 0;
        categories.push(json!({
            "category": name, "code": code,
            "auprc": average_precision(&scores, &labels),
            "precision": defined.then_some(precision), "recall": defined.then_some(recall), "f1": defined.then_some(f1),
            "ece": expected_calibration_error(&scores, &labels),
            "known": labels.len(), "positives": positives,
        }));
        all_scores.extend(scores);
        all_labels.extend(labels);
    }
    let (any_scores, any_labels) = any_category(rows, verdicts.iter().map(|v| &v.scores));
    let auprcs: Vec<f64> = categories.iter().filter_map(|c| c["auprc"].as_f64()).collect();
    json!({
        "categories": categories,
        "macro_auprc": auprcs.iter().sum::<f64>() / auprcs.len().max(1) as f64,
        "ece": expected_calibration_error(&all_scores, &all_labels),
        "any": {
            "auprc": average_precision(&any_scores, &any_labels),
            "known": rows.len(),
            "positives": any_labels.iter().filter(|&&l| l).count(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_precision_matches_scikit_learn() {
        // sklearn.metrics.average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.8333…
        let ap = average_precision(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap();
        assert!((ap - 0.833_333_333).abs() < 1e-6, "{ap}");
        // Ties are one threshold: ([1, 0, 1], [0.5, 0.5, 0.2]) = 0.5·0.5 + 0.5·(2/3) = 0.5833…
        let ap = average_precision(&[0.5, 0.5, 0.2], &[true, false, true]).unwrap();
        assert!((ap - 0.583_333_333).abs() < 1e-6, "{ap}");
        assert_eq!(average_precision(&[0.3], &[false]), None);
    }

    #[test]
    fn thresholds_by_f1_or_by_precision() {
        let scores = [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2];
        let labels = [true, true, false, true, false, true, false];
        // F1 by threshold: 0.9 → .4, 0.8 → .67, 0.7 → .57, 0.6 → .75, 0.3 → .8 (tp 4, predicted 6);
        // the cut goes halfway to the next lower score.
        assert_eq!(choose_threshold(&scores, &labels, ThresholdRule::BestF1, 0.0), 0.25);
        // Precision ≥ 0.75 holds down to 0.6 (3 of 4); the next score is 0.4.
        assert_eq!(choose_threshold(&scores, &labels, ThresholdRule::Precision, 0.75), 0.5);
        let (p, r, f) = precision_recall_f1(&scores, &labels, 0.6);
        assert_eq!((p, r), (0.75, 0.75));
        assert!((f - 0.75).abs() < 1e-12);
        assert_eq!(choose_threshold(&scores, &[false; 7], ThresholdRule::BestF1, 0.0), 0.5);
    }
}
