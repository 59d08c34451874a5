//! DPO's data and metrics: comparisons encoded as completions, every ranked pair of a prompt
//! weighted so the prompt counts once (as the reward model weighs them), and TRL's logged
//! quantities — `rewards/chosen`, `rewards/rejected`, `rewards/accuracies`, `rewards/margins`,
//! `logps/chosen`, `logps/rejected` — as weighted means over pairs.

use std::path::Path;

use anyhow::Result;
use burn::prelude::*;
use serde_json::{Map, Value, json};

use super::logps::{all_log_probs, floats};
use super::loss::{PairLogps, dpo_loss};
use crate::config::dpo::DpoLoss;
use crate::data::completion::Completion;
use crate::data::preference::{Comparison, encode_comparisons};
use crate::data::sft::{FitReport, SftEncoder};
use crate::model::CausalLm;
use crate::model::prefix_cache::PrefixCache;
use crate::train::run::round;

/// A comparison with each response encoded, best first.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub comparison: Comparison,
    pub completions: Vec<Completion>,
}

/// Reads and encodes every comparison of `path` (errors name `FILE:LINE`); a comparison one
/// of whose responses does not fit is dropped whole (and counted).
pub fn encode_file(path: &Path, encoder: &SftEncoder) -> Result<(Vec<Encoded>, FitReport)> {
    let (encoded, report) = encode_comparisons(path, |prompt, response, fit| {
        encoder.encode_completion(prompt, response, fit)
    })?;
    let encoded = encoded
        .into_iter()
        .map(|(comparison, completions)| Encoded { comparison, completions })
        .collect();
    Ok((encoded, report))
}

/// Every completion of `examples`, in order (the order of the reference log-probabilities).
pub fn flat_completions(examples: &[Encoded]) -> Vec<&Completion> {
    examples.iter().flat_map(|e| &e.completions).collect()
}

/// Example i's completions are flat completions `offsets[i]..offsets[i + 1]`.
pub fn offsets(examples: &[Encoded]) -> Vec<usize> {
    let mut offsets = vec![0];
    for e in examples {
        offsets.push(offsets[offsets.len() - 1] + e.completions.len());
    }
    offsets
}

/// The pairs of some comparisons as indices into their completions (listed in order, see
/// `new`), with their weights, reference log-probabilities and answer lengths.
pub struct Pairs {
    better: Tensor<1, Int>,
    worse: Tensor<1, Int>,
    pub weights: Vec<f64>,
    ref_better: Vec<f32>,
    ref_worse: Vec<f32>,
    better_tokens: Vec<f32>,
    worse_tokens: Vec<f32>,
    device: Device,
}

impl Pairs {
    /// The pairs of `examples`, and their completions in order; `references[i]` holds the
    /// reference log-probabilities of `examples[i]`'s completions.
    pub fn new<'a>(
        examples: &[&'a Encoded],
        references: &[&[f32]],
        device: &Device,
    ) -> (Self, Vec<&'a Completion>) {
        let mut completions = Vec::new();
        let (mut better, mut worse, mut weights) = (Vec::new(), Vec::new(), Vec::new());
        let (mut ref_better, mut ref_worse) = (Vec::new(), Vec::new());
        let (mut better_tokens, mut worse_tokens) = (Vec::new(), Vec::new());
        for (e, reference) in examples.iter().zip(references) {
            let offset = completions.len() as i64;
            completions.extend(&e.completions);
            for pair in e.comparison.pairs() {
                better.push(offset + pair.better as i64);
                worse.push(offset + pair.worse as i64);
                weights.push(pair.weight);
                ref_better.push(reference[pair.better]);
                ref_worse.push(reference[pair.worse]);
                better_tokens.push(e.completions[pair.better].answer.len() as f32);
                worse_tokens.push(e.completions[pair.worse].answer.len() as f32);
            }
        }
        let p = better.len();
        let ints = |v: Vec<i64>| Tensor::from_data(TensorData::new(v, [p]), device);
        let pairs = Self {
            better: ints(better),
            worse: ints(worse),
            weights,
            ref_better,
            ref_worse,
            better_tokens,
            worse_tokens,
            device: device.clone(),
        };
        (pairs, completions)
    }

    /// The pairs' log-probabilities, given those of the batch's completions `[S]`.
    pub fn pair_logps(&self, logps: Tensor<1>) -> PairLogps {
        let floats =
            |v: &Vec<f32>| Tensor::from_data(TensorData::new(v.clone(), [v.len()]), &self.device);
        PairLogps {
            chosen: logps.clone().select(0, self.better.clone()),
            rejected: logps.select(0, self.worse.clone()),
            ref_chosen: floats(&self.ref_better),
            ref_rejected: floats(&self.ref_worse),
            chosen_tokens: floats(&self.better_tokens),
            rejected_tokens: floats(&self.worse_tokens),
        }
    }

    /// Σ weight·loss `[1]` over the pairs, to backpropagate, and the pairs' statistics.
    pub fn loss(&self, config: &DpoLoss, logps: Tensor<1>) -> (Tensor<1>, PairSums) {
        let pairs = self.pair_logps(logps);
        let losses = dpo_loss(config, &pairs);
        let weights = Tensor::from_data(
            TensorData::new(self.weights.iter().map(|&w| w as f32).collect(), [self.weights.len()]),
            &self.device,
        );
        let mut sums = PairSums::default();
        let values = floats(Tensor::cat(
            vec![losses.clone().detach(), pairs.chosen.detach(), pairs.rejected.detach()],
            0,
        ));
        let p = self.weights.len();
        sums.add(
            config.beta,
            &self.weights,
            &values[..p],
            [&values[p..2 * p], &values[2 * p..]],
            [&self.ref_better, &self.ref_worse],
        );
        ((losses * weights).sum(), sums)
    }
}

/// Weighted sums over pairs (each pair weighs 1/(pairs of its prompt)), for TRL's metrics;
/// an array crosses ranks (`to_array`).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct PairSums {
    pub weight: f64,
    pub pairs: f64,
    pub loss: f64,
    pub chosen_reward: f64,
    pub rejected_reward: f64,
    /// Pairs whose chosen answer has the higher implicit reward.
    pub correct: f64,
    pub chosen_logp: f64,
    pub rejected_logp: f64,
}

impl PairSums {
    /// Adds pairs: their weights, losses, policy log-probabilities [chosen, rejected] and
    /// reference log-probabilities [chosen, rejected].
    pub fn add(
        &mut self,
        beta: f64,
        weights: &[f64],
        losses: &[f32],
        [chosen, rejected]: [&[f32]; 2],
        [ref_chosen, ref_rejected]: [&[f32]; 2],
    ) {
        for i in 0..weights.len() {
            let w = weights[i];
            let chosen_reward = beta * (chosen[i] as f64 - ref_chosen[i] as f64);
            let rejected_reward = beta * (rejected[i] as f64 - ref_rejected[i] as f64);
            self.weight += w;
            self.pairs += 1.0;
            self.loss += w * losses[i] as f64;
            self.chosen_reward += w * chosen_reward;
            self.rejected_reward += w * rejected_reward;
            self.correct += w * f64::from(u8::from(chosen_reward > rejected_reward));
            self.chosen_logp += w * chosen[i] as f64;
            self.rejected_logp += w * rejected[i] as f64;
        }
    }

    pub fn to_array(self) -> [f64; 8] {
        let Self {
            weight,
            pairs,
            loss,
            chosen_reward,
            rejected_reward,
            correct,
            chosen_logp,
            rejected_logp,
        } = self;
        [weight, pairs, loss, chosen_reward, rejected_reward, correct, chosen_logp, rejected_logp]
    }

    pub fn from_array(
        [weight, pairs, loss, chosen_reward, rejected_reward, correct, chosen_logp, rejected_logp]: [f64; 8],
    ) -> Self {
        Self {
            weight,
            pairs,
            loss,
            chosen_reward,
            rejected_reward,
            correct,
            chosen_logp,
            rejected_logp,
        }
    }

    pub fn merge(self, other: Self) -> Self {
        let mut a = self.to_array();
        a.iter_mut().zip(other.to_array()).for_each(|(x, y)| *x += y);
        Self::from_array(a)
    }

    pub fn stats(self) -> PairStats {
        let w = self.weight.max(f64::MIN_POSITIVE);
        PairStats {
            loss: self.loss / w,
            rewards_chosen: self.chosen_reward / w,
            rewards_rejected: self.rejected_reward / w,
            accuracy: self.correct / w,
            logps_chosen: self.chosen_logp / w,
            logps_rejected: self.rejected_logp / w,
            pairs: self.pairs as usize,
        }
    }
}

/// Weighted means over pairs, by TRL's names (`json`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairStats {
    /// Σ weight·loss / Σ weight: the mean loss per comparison.
    pub loss: f64,
    pub rewards_chosen: f64,
    pub rewards_rejected: f64,
    pub accuracy: f64,
    pub logps_chosen: f64,
    pub logps_rejected: f64,
    pub pairs: usize,
}

impl PairStats {
    pub fn margin(&self) -> f64 {
        self.rewards_chosen - self.rewards_rejected
    }

    /// `{prefix}loss`, `{prefix}rewards/chosen`, … rounded for the log.
    pub fn json(&self, prefix: &str) -> Map<String, Value> {
        [
            ("loss", self.loss),
            ("rewards/chosen", self.rewards_chosen),
            ("rewards/rejected", self.rewards_rejected),
            ("rewards/accuracies", self.accuracy),
            ("rewards/margins", self.margin()),
            ("logps/chosen", self.logps_chosen),
            ("logps/rejected", self.logps_rejected),
        ]
        .into_iter()
        .map(|(name, value)| (format!("{prefix}{name}"), json!(round(value, 6))))
        .collect()
    }
}

/// The DPO statistics of `model` on `examples` against the reference log-probabilities
/// `reference` (flat, as `flat_completions`), with `model` on a plain device (from the
/// frozen blocks' output with `cache`).
pub fn evaluate(
    model: &CausalLm,
    examples: &[Encoded],
    reference: &[f32],
    cache: Option<&PrefixCache>,
    config: &DpoLoss,
    pad: u32,
    device: &Device,
) -> Result<PairStats> {
    let flat = flat_completions(examples);
    let logps = all_log_probs(model, &flat, cache, pad, device, &|| Ok(()))?;
    Ok(pair_stats(examples, &logps, reference, config, device))
}

/// The statistics of every pair of `examples` from the flat log-probabilities of the policy
/// and the reference.
pub fn pair_stats(
    examples: &[Encoded],
    logps: &[f32],
    reference: &[f32],
    config: &DpoLoss,
    device: &Device,
) -> PairStats {
    let offsets = offsets(examples);
    let mut sums = PairSums::default();
    // In slices of comparisons, to keep the index tensors small.
    for chunk in (0..examples.len()).collect::<Vec<_>>().chunks(256) {
        let batch: Vec<&Encoded> = chunk.iter().map(|&i| &examples[i]).collect();
        let references: Vec<&[f32]> =
            chunk.iter().map(|&i| &reference[offsets[i]..offsets[i + 1]]).collect();
        let (pairs, _) = Pairs::new(&batch, &references, device);
        let (from, to) = (offsets[chunk[0]], offsets[chunk[chunk.len() - 1] + 1]);
        let mine =
            Tensor::from_data(TensorData::new(logps[from..to].to_vec(), [to - from]), device);
        sums = sums.merge(pairs.loss(config, mine).1);
    }
    sums.stats()
}
