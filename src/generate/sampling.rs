//! Choosing the next token from logits, on the device: repetition penalty, temperature,
//! top-k, top-p (nucleus), then greedy argmax or a sample. The order is `transformers`'.
//! Sampling uses the Gumbel-max trick (argmax of logits + Gumbel noise draws from the softmax),
//! so only the chosen ids ever leave the device.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How to pick each next token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    pub max_new_tokens: usize,
    /// false: greedy (argmax); true: sample.
    pub do_sample: bool,
    pub temperature: f64,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1.0: all).
    pub top_p: f64,
    /// > 1 discourages tokens already in the prompt or the output (CTRL's penalty).
    pub repetition_penalty: f64,
    pub seed: u64,
    /// Strings that end a row's generation (cut from the returned text).
    pub stop: Vec<String>,
    /// Keep going past end-of-sequence tokens (benchmarks).
    pub ignore_eos: bool,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            do_sample: false,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

impl SamplingConfig {
    /// Defaults from a model directory's `generation_config.json`, where it sets them.
    pub fn from_model_dir(dir: &Path) -> Self {
        let mut config = Self::default();
        let json = crate::json_file::read_optional(&dir.join("generation_config.json"));
        let number = |key: &str| json.get(key).and_then(Value::as_f64);
        if let Some(v) = json.get("do_sample").and_then(Value::as_bool) {
            config.do_sample = v;
        }
        if let Some(v) = number("temperature") {
            config.temperature = v;
        }
        if let Some(v) = number("top_k") {
            config.top_k = v as usize;
        }
        if let Some(v) = number("top_p") {
            config.top_p = v;
        }
        if let Some(v) = number("repetition_penalty") {
            config.repetition_penalty = v;
        }
        if let Some(v) = number("max_new_tokens") {
            config.max_new_tokens = v as usize;
        }
        config
    }

    /// One rule for every way of choosing how to decode (llama.cpp's and ollama's): a
    /// temperature above 0, a top-p or a top-k means sampling; a temperature of 0 means greedy
    /// (the temperature to sample at stays, for `/retry` and the like).
    pub fn apply_choice(&mut self, choice: Choice) -> Result<(), String> {
        match choice {
            Choice::Temperature(t) if !(t >= 0.0 && t.is_finite()) => {
                return Err(format!("temperature must be ≥ 0 (got {t})"));
            }
            Choice::Temperature(0.0) => self.do_sample = false,
            Choice::Temperature(t) => (self.do_sample, self.temperature) = (true, t),
            Choice::TopK(k) => (self.do_sample, self.top_k) = (true, k),
            Choice::TopP(p) => (self.do_sample, self.top_p) = (true, p),
        }
        Ok(())
    }

    /// The temperature decoding uses: 0 when greedy.
    pub fn effective_temperature(&self) -> f64 {
        if self.do_sample { self.temperature } else { 0.0 }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.temperature <= 0.0 && self.do_sample {
            return Err(format!(
                "temperature must be > 0 when sampling (got {})",
                self.temperature
            ));
        }
        if !(0.0..=1.0).contains(&self.top_p) || self.top_p == 0.0 {
            return Err(format!("top_p must be in (0, 1] (got {})", self.top_p));
        }
        if self.repetition_penalty <= 0.0 {
            return Err(format!(
                "repetition_penalty must be > 0 (got {})",
                self.repetition_penalty
            ));
        }
        Ok(())
    }
}

/// A decoding choice that switches sampling on or off (see [`SamplingConfig::apply_choice`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Choice {
    Temperature(f64),
    TopK(usize),
    TopP(f64),
}

/// CTRL's repetition penalty: logits of `seen` tokens are divided by `penalty` when positive
/// and multiplied when negative. `seen` `[B, V]`.
pub fn penalise_repeats(logits: Tensor<2>, seen: Tensor<2, Bool>, penalty: f64) -> Tensor<2> {
    let negative = logits.clone().lower_elem(0.0);
    let penalised = (logits.clone() / penalty).mask_where(negative, logits.clone() * penalty);
    logits.mask_where(seen, penalised)
}

/// Keeps the `k` largest logits of each row; the rest become −∞.
pub fn top_k(logits: Tensor<2>, k: usize) -> Tensor<2> {
    let [_, v] = logits.dims();
    if k == 0 || k >= v {
        return logits;
    }
    let kth = logits.clone().topk(k, 1).slice(s![.., k - 1..k]); // [B, 1]
    let below = logits.clone().lower(kth.expand(logits.dims()));
    logits.mask_fill(below, f32::NEG_INFINITY)
}

/// Keeps the most likely tokens of each row until their probability reaches `p` (the token that
/// crosses `p` stays, so at least one always does); the rest become −∞.
pub fn top_p(logits: Tensor<2>, p: f64) -> Tensor<2> {
    if p >= 1.0 {
        return logits;
    }
    let probs = burn::tensor::activation::softmax(logits.clone(), 1);
    let sorted = probs.clone().sort_descending(1); // [B, V]
    let before = sorted.clone().cumsum(1) - sorted.clone(); // mass of the more likely tokens
    let dropped = before.greater_equal_elem(p);
    let smallest_kept = sorted.mask_fill(dropped, f32::INFINITY).min_dim(1); // [B, 1]
    let below = probs.clone().lower(smallest_kept.expand(probs.dims()));
    logits.mask_fill(below, f32::NEG_INFINITY)
}

/// Argmax (greedy) or a draw from softmax(logits) by the Gumbel-max trick. `[B, V]` → `[B]`.
pub fn choose(logits: Tensor<2>, sample: bool) -> Tensor<1, Int> {
    let [b, v] = logits.dims();
    let scores = if sample {
        let uniform =
            Tensor::<2>::random([b, v], Distribution::Uniform(1e-20, 1.0), &logits.device());
        logits - uniform.log().neg().log() // + Gumbel(0, 1)
    } else {
        logits
    };
    scores.argmax(1).reshape([b])
}

/// log p(chosen) under softmax(logits): `[B, V]`, `[B]` → `[B]`.
pub fn chosen_log_probs(logits: Tensor<2>, chosen: Tensor<1, Int>) -> Tensor<1> {
    let [b, _] = logits.dims();
    log_softmax(logits, 1).gather(1, chosen.reshape([b, 1])).reshape([b])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// LibTorch's random generator is global: tests that seed and draw take turns.
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn device() -> Device {
        Device::default()
    }

    /// A crafted distribution: probabilities 0.5, 0.2, 0.15, 0.1, 0.05.
    fn crafted() -> Tensor<2> {
        let probs = [0.5f32, 0.2, 0.15, 0.1, 0.05];
        let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        Tensor::<1>::from_data(logits.as_slice(), &device()).reshape([1, 5])
    }

    fn allowed(logits: Tensor<2>) -> Vec<bool> {
        logits.into_data().try_to_vec::<f32>().unwrap().iter().map(|x| x.is_finite()).collect()
    }

    #[test]
    fn top_k_keeps_the_k_largest() {
        assert_eq!(allowed(top_k(crafted(), 2)), [true, true, false, false, false]);
        assert_eq!(allowed(top_k(crafted(), 0)), [true; 5]);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // 0.5 < 0.6 → 0.5 + 0.2 = 0.7 reaches it: two tokens.
        assert_eq!(allowed(top_p(crafted(), 0.6)), [true, true, false, false, false]);
        assert_eq!(allowed(top_p(crafted(), 0.5)), [true, false, false, false, false]);
        assert_eq!(allowed(top_p(crafted(), 0.01)), [true, false, false, false, false]);
        assert_eq!(allowed(top_p(crafted(), 0.9)), [true, true, true, true, false]);
    }

    #[test]
    fn samples_never_leave_the_allowed_set_and_follow_the_distribution() {
        let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
        let device = device();
        device.seed(7);
        let logits = top_p(top_k(crafted(), 3), 0.6).expand([4000, 5]);
        let ids: Vec<i64> = choose(logits, true).try_into_vec_as().unwrap();
        assert!(ids.iter().all(|&i| i == 0 || i == 1), "a filtered token was drawn");
        let share = ids.iter().filter(|&&i| i == 0).count() as f64 / ids.len() as f64;
        assert!((share - 0.5 / 0.7).abs() < 0.03, "token 0 drawn {share} of the time");
    }

    #[test]
    fn same_seed_same_draws() {
        let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
        let draw = |seed| {
            device().seed(seed);
            choose(crafted().expand([64, 5]), true).try_into_vec_as::<i64>().unwrap()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn repetition_penalty_matches_transformers() {
        // RepetitionPenaltyLogitsProcessor(1.5) on [2.0, -1.0, 0.5] with token ids 0 and 1 seen
        // → [1.3333, -1.5, 0.5]
        let logits = Tensor::<2>::from_data([[2.0f32, -1.0, 0.5]], &device());
        let seen = Tensor::<2, Bool>::from_data([[true, true, false]], &device());
        let out: Vec<f32> = penalise_repeats(logits, seen, 1.5).into_data().try_to_vec().unwrap();
        for (a, b) in out.iter().zip([2.0 / 1.5, -1.5, 0.5]) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
    }
}
