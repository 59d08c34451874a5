//! Choosing one row's next token on the host, from its own random stream: the rows of a
//! server's batch belong to different requests, each with its own settings and seed, and a
//! request's text must not depend on what else is decoding beside it. The order of the steps
//! is `transformers`' (penalties, temperature, top-k, top-p, then a draw).

use std::collections::HashMap;

/// One request's decoding settings, as the OpenAI API names them.
#[derive(Debug, Clone, PartialEq)]
pub struct RowSampling {
    /// 0: greedy (the most likely token).
    pub temperature: f64,
    /// Keep the smallest set of most likely tokens whose probability reaches p (1: all).
    pub top_p: f64,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Subtracted from the logit of every token already generated.
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per time it was generated.
    pub frequency_penalty: f32,
    pub seed: u64,
}

pub struct RowSampler {
    settings: RowSampling,
    rng: SplitMix64,
    /// How often each token was generated, for the penalties.
    counts: HashMap<u32, u32>,
    /// Candidates, reused from step to step.
    scratch: Vec<(f32, u32)>,
}

impl RowSampler {
    pub fn new(settings: RowSampling) -> Self {
        let rng = SplitMix64(settings.seed);
        Self { settings, rng, counts: HashMap::new(), scratch: Vec::new() }
    }

    /// The next token from one row's logits.
    pub fn choose(&mut self, logits: &[f32]) -> u32 {
        let s = &self.settings;
        let penalised = |id: usize, logit: f32| match self.counts.get(&(id as u32)) {
            Some(&n) => logit - s.presence_penalty - s.frequency_penalty * n as f32,
            None => logit,
        };
        let token = if s.temperature <= 0.0 {
            let mut best = (f32::NEG_INFINITY, 0u32);
            for (id, &logit) in logits.iter().enumerate() {
                let logit = penalised(id, logit);
                if logit > best.0 {
                    best = (logit, id as u32); // the first of equals, as argmax
                }
            }
            best.1
        } else {
            let inv_t = (1.0 / s.temperature) as f32;
            self.scratch.clear();
            self.scratch.extend(
                logits.iter().enumerate().map(|(id, &l)| (penalised(id, l) * inv_t, id as u32)),
            );
            let (top_k, top_p) = (s.top_k, s.top_p);
            let u = self.rng.next_f64();
            draw(&mut self.scratch, top_k, top_p, u)
        };
        if self.settings.presence_penalty != 0.0 || self.settings.frequency_penalty != 0.0 {
            *self.counts.entry(token).or_default() += 1;
        }
        token
    }
}

/// Draws from softmax(`candidates`' logits) cut to the top k and the top-p nucleus, with `u`
/// uniform in [0, 1).
fn draw(candidates: &mut Vec<(f32, u32)>, top_k: usize, top_p: f64, u: f64) -> u32 {
    let by_logit = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0);
    if top_k > 0 && top_k < candidates.len() {
        candidates.select_nth_unstable_by(top_k - 1, by_logit);
        candidates.truncate(top_k);
    }
    let max = candidates.iter().map(|c| c.0).fold(f32::NEG_INFINITY, f32::max);
    let weight = |c: &(f32, u32)| ((c.0 - max) as f64).exp();
    if top_p < 1.0 {
        // The nucleus is usually a few tokens: sort the likeliest few hundred first, and all
        // of them only when those do not reach p.
        let total: f64 = candidates.iter().map(weight).sum();
        let head = 256.min(candidates.len());
        if head < candidates.len() {
            candidates.select_nth_unstable_by(head - 1, by_logit);
        }
        candidates[..head].sort_unstable_by(by_logit);
        let reaches = |c: &[(f32, u32)]| {
            let mut mass = 0.0;
            c.iter().position(|x| {
                mass += weight(x);
                mass >= top_p * total
            })
        };
        let end = match reaches(&candidates[..head]) {
            Some(i) => i + 1,
            None => {
                candidates.sort_unstable_by(by_logit);
                reaches(candidates).map_or(candidates.len(), |i| i + 1)
            }
        };
        candidates.truncate(end);
    }
    let total: f64 = candidates.iter().map(weight).sum();
    let mut target = u * total;
    for c in candidates.iter() {
        target -= weight(c);
        if target < 0.0 {
            return c.1;
        }
    }
    candidates.last().expect("a candidate").1
}

/// A small, fast, seedable generator (Steele et al. 2014): one stream per request.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 53 bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(temperature: f64, top_p: f64, top_k: usize) -> RowSampling {
        RowSampling {
            temperature,
            top_p,
            top_k,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 7,
        }
    }

    #[test]
    fn greedy_takes_the_first_largest_logit() {
        let mut sampler = RowSampler::new(settings(0.0, 1.0, 0));
        assert_eq!(sampler.choose(&[0.1, 2.0, 2.0, -1.0]), 1);
    }

    #[test]
    fn penalties_lower_generated_tokens() {
        let mut s = settings(0.0, 1.0, 0);
        s.frequency_penalty = 1.0;
        let mut sampler = RowSampler::new(s);
        let logits = [1.5, 1.0];
        assert_eq!(sampler.choose(&logits), 0);
        assert_eq!(sampler.choose(&logits), 1); // 1.5 - 1 < 1.0
    }

    #[test]
    fn draws_follow_the_softmax_and_the_cuts() {
        // softmax([ln 6, ln 3, ln 1]) = [0.6, 0.3, 0.1]
        let logits = [6f32.ln(), 3f32.ln(), 1f32.ln()];
        let frequencies = |s: RowSampling| {
            let mut sampler = RowSampler::new(s);
            let mut counts = [0usize; 3];
            for _ in 0..20_000 {
                counts[sampler.choose(&logits) as usize] += 1;
            }
            counts.map(|c| c as f64 / 20_000.0)
        };
        let all = frequencies(settings(1.0, 1.0, 0));
        assert!((all[0] - 0.6).abs() < 0.02 && (all[2] - 0.1).abs() < 0.02, "{all:?}");
        // p = 0.85: the nucleus is {0.6, 0.3}, renormalised to 2/3, 1/3.
        let nucleus = frequencies(settings(1.0, 0.85, 0));
        assert!((nucleus[0] - 2.0 / 3.0).abs() < 0.02 && nucleus[2] == 0.0, "{nucleus:?}");
        let top1 = frequencies(settings(1.0, 1.0, 1));
        assert_eq!(top1, [1.0, 0.0, 0.0]);
    }

    #[test]
    fn the_same_seed_gives_the_same_draws() {
        let logits: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = || {
            let mut sampler = RowSampler::new(settings(0.8, 0.95, 0));
            (0..50).map(|_| sampler.choose(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
