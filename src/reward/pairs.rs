//! The reward model's data, loss and metrics: comparisons encoded as their responses'
//! sequences; the Bradley–Terry loss `−log σ(r_better − r_worse − margin)` over every ranked
//! pair of a prompt, the pairs of one prompt weighing as much as one comparison (InstructGPT),
//! with optional label smoothing; pairwise accuracy and margin.

use std::path::Path;

use anyhow::Result;
use burn::prelude::*;
use burn::tensor::activation::log_sigmoid;

use crate::data::preference::{Comparison, encode_comparisons};
use crate::data::scoring::{ResponseEncoder, Sequence, SequenceBatch};
use crate::data::sft::FitReport;

/// A comparison encoded: its responses' sequences, best first.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub sequences: Vec<Sequence>,
    pub comparison: Comparison,
}

/// Reads and encodes every comparison of `path`; errors name `FILE:LINE`. A comparison one of
/// whose responses does not fit is dropped whole (and counted).
pub fn encode_file(path: &Path, encoder: &ResponseEncoder) -> Result<(Vec<Encoded>, FitReport)> {
    let (encoded, report) =
        encode_comparisons(path, |prompt, response, fit| encoder.encode(prompt, response, fit))?;
    let encoded = encoded
        .into_iter()
        .map(|(comparison, sequences)| Encoded { sequences, comparison })
        .collect();
    Ok((encoded, report))
}

/// Accuracy, margin and loss over every pair of some comparisons.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairMetrics {
    /// Pairs whose better response scores strictly higher.
    pub accuracy: f64,
    /// Mean r_better − r_worse.
    pub mean_margin: f64,
    /// Mean over comparisons of the weighted pair loss.
    pub loss: f64,
    pub pairs: usize,
}

impl PairMetrics {
    /// `scores` holds each comparison's responses in order.
    pub fn of(encoded: &[Encoded], scores: &[f32], default_margin: f64) -> Self {
        let (mut right, mut pairs, mut margin_sum, mut loss_sum) = (0, 0, 0.0, 0.0);
        let mut at = 0;
        for e in encoded {
            let s = &scores[at..at + e.sequences.len()];
            at += e.sequences.len();
            let margin = e.comparison.margin.unwrap_or(default_margin);
            for pair in e.comparison.pairs() {
                let gap = (s[pair.better] - s[pair.worse]) as f64;
                right += usize::from(gap > 0.0);
                pairs += 1;
                margin_sum += gap;
                loss_sum += pair.weight * softplus(-(gap - margin));
            }
        }
        let n = pairs.max(1) as f64;
        Self {
            accuracy: right as f64 / n,
            mean_margin: margin_sum / n,
            loss: loss_sum / encoded.len().max(1) as f64,
            pairs,
        }
    }
}

/// `−(1 − ε)·log σ(d) − ε·log σ(−d)` per pair.
pub fn smoothed_pair_loss(d: Tensor<1>, smoothing: f64) -> Tensor<1> {
    let loss = -log_sigmoid(d.clone());
    match smoothing > 0.0 {
        true => loss.mul_scalar(1.0 - smoothing) - log_sigmoid(-d).mul_scalar(smoothing),
        false => loss,
    }
}

/// log(1 + eˣ), stable: −log σ(d) = softplus(−d).
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Every response of `examples`, in order.
pub fn flat_sequences(examples: &[Encoded]) -> Vec<&Sequence> {
    examples.iter().flat_map(|e| &e.sequences).collect()
}

/// A micro-batch of comparisons: all their responses in one batch, and the pairs as indices
/// into it with their weights and margins.
pub struct PairBatch {
    pub batch: SequenceBatch,
    pub better: Tensor<1, Int>,
    pub worse: Tensor<1, Int>,
    pub weights: Tensor<1>,
    pub margins: Tensor<1>,
}

impl PairBatch {
    pub fn new(examples: &[&Encoded], default_margin: f64, pad: u32, device: &Device) -> Self {
        let mut sequences = Vec::new();
        let (mut better, mut worse, mut weights, mut margins) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for e in examples {
            let offset = sequences.len() as i64;
            sequences.extend(&e.sequences);
            let margin = e.comparison.margin.unwrap_or(default_margin) as f32;
            for pair in e.comparison.pairs() {
                better.push(offset + pair.better as i64);
                worse.push(offset + pair.worse as i64);
                weights.push(pair.weight as f32);
                margins.push(margin);
            }
        }
        let p = better.len();
        let ints = |v: Vec<i64>| Tensor::from_data(TensorData::new(v, [p]), device);
        let floats = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [p]), device);
        Self {
            batch: SequenceBatch::new(&sequences, pad, device),
            better: ints(better),
            worse: ints(worse),
            weights: floats(weights),
            margins: floats(margins),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn encoded(row: Value) -> Encoded {
        let comparison = Comparison::parse(row.as_object().unwrap()).unwrap();
        let sequences =
            vec![Sequence { ids: vec![1], type_ids: vec![0] }; comparison.responses.len()];
        Encoded { sequences, comparison }
    }

    #[test]
    fn metrics_count_pairs_and_weigh_each_prompt_once() {
        let ranking = encoded(json!({"prompt": "p", "responses": ["a", "b", "c"]}));
        let pair = encoded(json!({"prompt": "p", "chosen": "a", "rejected": "b"}));
        // Ranking scored 3, 1, 2: pairs (0,1) ✓, (0,2) ✓, (1,2) ✗. Pair scored 0, 1: ✗.
        let scores = [3.0, 1.0, 2.0, 0.0, 1.0];
        let m = PairMetrics::of(&[ranking, pair], &scores, 0.0);
        assert_eq!(m.pairs, 4);
        assert!((m.accuracy - 0.5).abs() < 1e-12);
        assert!((m.mean_margin - (2.0 + 1.0 - 1.0 - 1.0) / 4.0).abs() < 1e-9);
        let ranking_loss = (softplus(-2.0) + softplus(-1.0) + softplus(1.0)) / 3.0;
        assert!((m.loss - (ranking_loss + softplus(1.0)) / 2.0).abs() < 1e-9);
    }

    #[test]
    fn smoothed_loss_mixes_both_directions_of_the_pair() {
        let device = crate::device::DeviceSpec::Cpu.device().unwrap();
        let d = [-2.0f32, 0.0, 3.0];
        let loss = |eps: f64| {
            let t = Tensor::<1>::from_floats(d, &device);
            smoothed_pair_loss(t, eps).into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
        };
        for eps in [0.0, 0.1] {
            for (got, &d) in loss(eps).iter().zip(&d) {
                let d = d as f64;
                let want = (1.0 - eps) * softplus(-d) + eps * softplus(d);
                assert!((*got as f64 - want).abs() < 1e-5, "ε {eps}, d {d}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn softplus_is_minus_log_sigmoid_of_minus_x() {
        for x in [-30.0, -1.0, 0.0, 2.0, 40.0] {
            let reference = -(1.0 / (1.0 + f64::exp(x))).ln();
            assert!((softplus(x) - reference).abs() < 1e-9, "{x}");
        }
    }
}
