//! The reward functions of a run (TRL's `reward_funcs`), each with its weight: reward models,
//! the moderation classifier as a penalty, and reward programs. A function may give NaN ("no
//! score": a program's checker that does not apply); the reward is the weighted sum of the
//! others, as TRL's `nansum`.

use std::time::Duration;

use anyhow::Result;
use burn::prelude::*;
use serde_json::{Value, json};

use super::program::RewardProgram;
use crate::config::grpo::RewardSource;
use crate::data::chat::Message;
use crate::data::prompts::Prompt;
use crate::model::reward::RewardModel;
use crate::moderation::Moderator;

/// What scores a completion.
#[allow(clippy::large_enum_variant)] // a few per run
enum Scorer {
    Model(RewardModel),
    /// Minus the highest category score.
    Moderation(Moderator),
    Program(RewardProgram),
}

pub struct RewardFunction {
    pub name: String,
    pub weight: f64,
    scorer: Scorer,
}

/// Every reward function of a run, loaded and started.
pub struct Rewards {
    pub functions: Vec<RewardFunction>,
}

impl Rewards {
    pub fn open(sources: &[RewardSource], device: &Device) -> Result<Self> {
        let mut functions = Vec::new();
        for source in sources {
            let name = source.name();
            let scorer = match (&source.model, &source.moderation, &source.command) {
                (Some(dir), _, _) => Scorer::Model(RewardModel::load(dir, device)?),
                (_, Some(dir), _) => Scorer::Moderation(Moderator::load(dir, device)?),
                (_, _, Some(command)) => {
                    let timeout = Duration::from_secs_f64(source.timeout_s);
                    Scorer::Program(RewardProgram::start(&name, command, timeout)?)
                }
                (None, None, None) => unreachable!("the config's validation requires one"),
            };
            functions.push(RewardFunction { name, weight: source.weight, scorer });
        }
        Ok(Self { functions })
    }

    /// Each function's score of each (prompt, completion): `[function][completion]`.
    pub fn score(
        &mut self,
        prompts: &[&Prompt],
        completions: &[String],
        device: &Device,
    ) -> Result<Vec<Vec<f64>>> {
        let texts: Vec<&str> = completions.iter().map(String::as_str).collect();
        let mut scores = Vec::with_capacity(self.functions.len());
        for function in &mut self.functions {
            let these: Vec<f64> = match &mut function.scorer {
                Scorer::Model(model) => {
                    let messages: Vec<&[Message]> =
                        prompts.iter().map(|p| p.messages.as_slice()).collect();
                    let raw = model.score(&messages, &texts, device)?;
                    raw.into_iter().map(f64::from).collect()
                }
                Scorer::Moderation(moderator) => {
                    let categories = moderator.scores(&texts)?;
                    categories
                        .iter()
                        .map(|c| -c.iter().fold(0f32, |a, &b| a.max(b)) as f64)
                        .collect()
                }
                Scorer::Program(program) => {
                    let requests: Vec<Value> =
                        prompts.iter().zip(&texts).map(|(p, c)| request(p, c)).collect();
                    program.score(&requests)?.into_iter().map(f64::from).collect()
                }
            };
            scores.push(these);
        }
        Ok(scores)
    }

    /// The reward of each completion (see [`weighted_nansum`]).
    pub fn combine(&self, scores: &[Vec<f64>]) -> Vec<f64> {
        let weights: Vec<f64> = self.functions.iter().map(|f| f.weight).collect();
        weighted_nansum(&weights, scores)
    }
}

/// Σ weight · score over the functions that gave a completion a score (TRL's `nansum`), of
/// `scores` `[function][completion]`; NaN where none did, which TRL 1.12 leaves out of the
/// group statistics and gives no advantage.
pub fn weighted_nansum(weights: &[f64], scores: &[Vec<f64>]) -> Vec<f64> {
    let n = scores.first().map_or(0, Vec::len);
    (0..n)
        .map(|i| {
            let weighted = weights.iter().zip(scores).map(|(w, s)| w * s[i]);
            weighted.filter(|x| !x.is_nan()).fold(f64::NAN, |sum, x| match sum.is_nan() {
                true => x,
                false => sum + x,
            })
        })
        .collect()
}

/// A reward program's request: the prompt as its row wrote it, the completion, and the row's
/// other fields.
fn request(prompt: &Prompt, completion: &str) -> Value {
    let mut request = json!({"prompt": prompt.source, "completion": completion});
    for (key, value) in &prompt.extra {
        if key != "completion" {
            request[key] = value.clone();
        }
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reward_sums_the_scores_given_and_is_nan_where_none_was() {
        let nan = f64::NAN;
        let scores = vec![vec![1.0, nan, nan], vec![2.0, 4.0, nan]];
        let rewards = weighted_nansum(&[1.0, 0.5], &scores);
        assert_eq!(&rewards[..2], &[2.0, 2.0]);
        assert!(rewards[2].is_nan(), "no function scored it: {rewards:?}");
    }
}
