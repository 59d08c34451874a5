//! What one rollout holds — a prompt, the sampled response, and the numbers PPO computes for
//! each response token — and the batch tensors that models read them from.

use anyhow::{Result, anyhow};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use crate::config::ppo::RolloutConfig;
use crate::dist;
use crate::generate::{Finish, Generation, Generator, SamplingConfig};
use crate::model::fused::cross_entropy;
use crate::model::shared_prefix::{shared_splits, tail_hidden};
use crate::model::{CausalLm, ModelConfig, PaddedBatch};
use crate::ppo::kl::token_kl;
use tokenizers::Tokenizer;

/// One sampled response and its per-token numbers (all as long as `response`).
#[derive(Debug, Clone, Default)]
pub struct Rollout {
    pub prompt: Vec<u32>,
    pub response: Vec<u32>,
    /// log π_old(token): the policy that sampled, at the rollout temperature.
    pub log_probs: Vec<f32>,
    pub ref_log_probs: Vec<f32>,
    /// V(state before the token).
    pub values: Vec<f32>,
    /// The shaped score of the whole response (reward model, normalised, penalties).
    pub score: f32,
    pub advantages: Vec<f32>,
    pub returns: Vec<f32>,
    /// The response ended with an end-of-turn token (not the length limit).
    pub ended: bool,
}

impl Rollout {
    /// (prompt, response), as `ResponseBatch::new` takes its rows.
    pub fn pair(&self) -> (&[u32], &[u32]) {
        (&self.prompt, &self.response)
    }
}

/// The policy that samples an iteration's responses, and how.
pub struct Sampler<'a> {
    pub policy: &'a CausalLm,
    pub tokenizer: &'a Tokenizer,
    pub config: &'a ModelConfig,
    /// Tokens that end a response.
    pub eos: &'a [u32],
    pub rollout: &'a RolloutConfig,
}

impl Sampler<'_> {
    /// A response to each prompt (identical prompts share one prefill), with log π_old of
    /// each token as the sampler computed it while choosing it — the policy is not run again.
    /// The draw is new every iteration `step` (and rank), and the same again after --resume.
    pub fn roll_out(
        &self,
        prompts: Vec<Vec<u32>>,
        seed: u64,
        step: usize,
        device: &Device,
    ) -> Result<Vec<Rollout>> {
        let seed = seed.wrapping_add(step as u64).wrapping_add((dist::rank() as u64) << 32);
        let generator = Generator::new(self.policy, self.tokenizer, self.config, device)
            .with_eos(self.eos.iter().copied());
        let r = self.rollout;
        let sampling = SamplingConfig {
            max_new_tokens: r.max_new_tokens,
            do_sample: true,
            temperature: r.temperature,
            top_k: r.top_k,
            top_p: r.top_p,
            seed,
            ..SamplingConfig::default()
        };
        let generations = generator.generate(&prompts, &sampling, &mut |_, _| {})?;
        let rollouts = prompts.into_iter().zip(generations).map(|(prompt, g)| Rollout {
            prompt,
            ended: g.finish == Finish::Eos,
            response: g.tokens,
            log_probs: g.log_probs,
            ..Rollout::default()
        });
        Ok(rollouts.collect())
    }
}

/// Prompt + response sequences right-padded to `[B, T]`. Nothing before `from`, the last
/// token of the shortest prompt, predicts a response token, so models hand back hidden states
/// of positions `from..T` only (`CausalLm::hidden_from`); `predict_at` holds the flat
/// positions among those (into `B·(T − from)`) that predict each response token, laid out
/// `[B, R]` (R: the longest response; slots past a response's end point at the first position
/// of their row and are masked).
pub struct ResponseBatch {
    pub input_ids: Tensor<2, Int>,
    pub padded: PaddedBatch,
    pub from: usize,
    pub predict_at: Tensor<1, Int>,
    pub targets: Tensor<2, Int>,
    /// 1 at real response tokens.
    pub mask: Tensor<2>,
    pub lengths: Vec<usize>,
    device: Device,
}

impl ResponseBatch {
    pub fn new(rows: &[(&[u32], &[u32])], pad_id: u32, device: &Device) -> Self {
        let b = rows.len();
        let t = rows.iter().map(|(p, r)| p.len() + r.len()).max().unwrap_or(1);
        let r = rows.iter().map(|(_, r)| r.len()).max().unwrap_or(1).max(1);
        let from = rows.iter().map(|(p, _)| p.len().saturating_sub(1)).min().unwrap_or(0);
        let w = t - from; // positions a model hands back per row
        let mut ids = vec![pad_id as i64; b * t];
        let mut attention = vec![0i64; b * t];
        let mut predict_at = vec![0i64; b * r];
        let mut targets = vec![0i64; b * r];
        let mut mask = vec![0f32; b * r];
        for (row, (prompt, response)) in rows.iter().enumerate() {
            let start = row * t;
            for (i, &id) in prompt.iter().chain(response.iter()).enumerate() {
                ids[start + i] = id as i64;
                attention[start + i] = 1;
            }
            for (j, &id) in response.iter().enumerate() {
                // The token at prompt.len() + j is predicted by the position just before it.
                predict_at[row * r + j] = (row * w + prompt.len() + j - 1 - from) as i64;
                targets[row * r + j] = id as i64;
                mask[row * r + j] = 1.0;
            }
            for j in response.len()..r {
                predict_at[row * r + j] = (row * w) as i64;
            }
        }
        let attention = Tensor::from_data(TensorData::new(attention, [b, t]), device);
        Self {
            input_ids: Tensor::from_data(TensorData::new(ids, [b, t]), device),
            padded: PaddedBatch::new(attention),
            from,
            predict_at: Tensor::from_data(TensorData::new(predict_at, [b * r]), device),
            targets: Tensor::from_data(TensorData::new(targets, [b, r]), device),
            mask: Tensor::from_data(TensorData::new(mask, [b, r]), device),
            lengths: rows.iter().map(|(_, r)| r.len()).collect(),
            device: device.clone(),
        }
    }

    /// `[B, R]`.
    pub fn shape(&self) -> [usize; 2] {
        self.mask.dims()
    }

    /// A per-position quantity `[B, T − from]` read at the positions that predict response
    /// tokens.
    pub fn at_responses(&self, per_position: Tensor<2>) -> Tensor<2> {
        let [b, t] = per_position.dims();
        per_position.reshape([b * t]).select(0, self.predict_at.clone()).reshape(self.shape())
    }

    /// logits / temperature `[B·R, V]` at the positions that predict response tokens; only
    /// those rows of `hidden` (`[B, T − from, D]`) go through the LM head.
    pub fn logits(&self, lm: &CausalLm, hidden: Tensor<3>, temperature: f64) -> Tensor<2> {
        let [b, t, d] = hidden.dims();
        let n = self.predict_at.dims()[0];
        let rows = hidden.reshape([b * t, d]).select(0, self.predict_at.clone());
        let logits = lm.logits(rows.reshape([1, n, d]));
        let v = logits.dims()[2];
        let logits = logits.reshape([n, v]);
        if temperature == 1.0 { logits } else { logits / temperature }
    }

    /// log π of each response token `[B, R]` from `logits` (LibTorch's fused log-softmax and
    /// its backward, as in SFT's loss).
    pub fn chosen(&self, logits: Tensor<2>) -> Tensor<2> {
        let [b, r] = self.shape();
        -cross_entropy(logits, self.targets.clone().reshape([b * r])).reshape([b, r])
    }

    /// Per-token values of `rows` (each as long as its response) as `[B, R]`, zero-padded.
    pub fn per_token(&self, rows: &[&[f32]]) -> Tensor<2> {
        let [b, r] = self.shape();
        let mut values = vec![0f32; b * r];
        for (row, xs) in rows.iter().enumerate() {
            values[row * r..row * r + xs.len()].copy_from_slice(xs);
        }
        Tensor::from_data(TensorData::new(values, [b, r]), &self.device)
    }

    /// `[B, R]` tensors back to per-row vectors, each cut to its response's length, with one
    /// copy from the device for all of them.
    pub fn rows_of<const N: usize>(&self, xs: [Tensor<2>; N]) -> [Vec<Vec<f32>>; N] {
        let [b, r] = self.shape();
        let flat: Vec<f32> =
            Tensor::cat(xs.to_vec(), 0).into_data().convert::<f32>().try_to_vec().expect("f32");
        std::array::from_fn(|k| {
            let rows = (0..b).zip(&self.lengths);
            rows.map(|(i, &n)| flat[(k * b + i) * r..(k * b + i) * r + n].to_vec()).collect()
        })
    }
}

/// Entropy of the distribution of each row of `logits` `[B·R, V]` → `[B, R]`.
pub fn entropy(logits: Tensor<2>, shape: [usize; 2]) -> Tensor<2> {
    let log_p = log_softmax(logits, 1);
    -(log_p.clone().exp() * log_p).sum_dim(1).reshape(shape)
}

/// log π_ref of each response token under a frozen model.
pub fn reference_log_probs(lm: &CausalLm, batch: &ResponseBatch, temperature: f64) -> Tensor<2> {
    let hidden = lm.hidden_from(batch.input_ids.clone(), &batch.padded, batch.from);
    batch.chosen(batch.logits(lm, hidden, temperature))
}

/// (prompt, response) rows whose shared starts (K answers to one prompt) run once: `batch`
/// holds each row's own tail with the `[B, R]` layout of the whole rows' `ResponseBatch`, so
/// its `logits`, `chosen` and `per_token` read the same; `hidden` gives what its `logits` takes.
pub struct SharedPrompts {
    pub batch: ResponseBatch,
    whole: Vec<Vec<u32>>,
    splits: Vec<usize>,
    pad: u32,
}

impl SharedPrompts {
    pub fn new(rows: &[(&[u32], &[u32])], pad: u32, device: &Device) -> Self {
        let whole: Vec<Vec<u32>> = rows.iter().map(|(p, r)| [*p, *r].concat()).collect();
        let slices: Vec<&[u32]> = whole.iter().map(Vec::as_slice).collect();
        // The last prompt token predicts the first response token, so it stays in the tail.
        let limits: Vec<usize> = rows.iter().map(|(p, _)| p.len().saturating_sub(1)).collect();
        let splits = shared_splits(&slices, &limits);
        let tails: Vec<(&[u32], &[u32])> =
            rows.iter().zip(&splits).map(|((p, r), &split)| (&p[split..], *r)).collect();
        Self { batch: ResponseBatch::new(&tails, pad, device), whole, splits, pad }
    }

    /// Final hidden states `[B, T − from, D]` of the tails, as `batch.logits` reads them.
    pub fn hidden(&self, lm: &CausalLm) -> Tensor<3> {
        let rows: Vec<&[u32]> = self.whole.iter().map(Vec::as_slice).collect();
        let hidden = tail_hidden(&lm.body, &rows, &self.splits, self.pad, &self.batch.device);
        hidden.slice(s![.., self.batch.from.., ..])
    }
}

/// log π_ref of each response token under a frozen model, each shared prompt read once.
pub fn shared_log_probs(
    lm: &CausalLm,
    rows: &[(&[u32], &[u32])],
    pad: u32,
    temperature: f64,
    device: &Device,
) -> Vec<Vec<f32>> {
    let shared = SharedPrompts::new(rows, pad, device);
    let batch = &shared.batch;
    let [log_probs] =
        batch.rows_of([batch.chosen(batch.logits(lm, shared.hidden(lm), temperature))]);
    log_probs
}

/// Each sampled response's KL to the reference, Σ over its tokens of log π − log π_ref (the k1
/// estimate of the sequence KL, unbiased for sampled responses). log π is what the sampler
/// recorded, so only the reference reads the responses; with no reference (the policy is its
/// own) every KL is zero.
pub fn sequence_kls(
    prompts: &[Vec<u32>],
    generations: &[Generation],
    reference: Option<&CausalLm>,
    pad: u32,
    temperature: f64,
    device: &Device,
) -> Vec<f64> {
    let Some(reference) = reference else {
        return vec![0.0; generations.len()];
    };
    let rows: Vec<(&[u32], &[u32])> =
        prompts.iter().zip(generations).map(|(p, g)| (p.as_slice(), g.tokens.as_slice())).collect();
    let ref_log_probs = shared_log_probs(reference, &rows, pad, temperature, device);
    let kls = generations.iter().zip(&ref_log_probs).map(|(g, r)| token_kl(&g.log_probs, r));
    kls.map(|kl| kl.iter().map(|&k| k as f64).sum()).collect()
}

/// Texts of token sequences (special tokens left out: the reward model reads the reply).
pub fn decode_all<'a>(
    tokenizer: &Tokenizer,
    sequences: impl IntoIterator<Item = &'a Vec<u32>>,
) -> Result<Vec<String>> {
    sequences
        .into_iter()
        .map(|ids| tokenizer.decode(ids, true).map_err(|e| anyhow!("decoding a response: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::pretrained::tiny_causal_lm;

    #[test]
    fn response_tokens_are_predicted_from_the_position_before_them() {
        let device = crate::device::DeviceSpec::Cpu.device().unwrap();
        let rows: [(&[u32], &[u32]); 2] = [(&[1, 2], &[3, 4, 5]), (&[6], &[7])];
        let batch = ResponseBatch::new(&rows, 0, &device);
        let ints = |t: Tensor<1, Int>| t.into_data().convert::<i64>().try_to_vec::<i64>().unwrap();
        // T = 5: row 0 predicts 3, 4, 5 at 1, 2, 3; row 1 (offset 5) predicts 7 at 5.
        assert_eq!(ints(batch.predict_at.clone()), [1, 2, 3, 5, 5, 5]);
        assert_eq!(ints(batch.targets.clone().reshape([6])), [3, 4, 5, 7, 0, 0]);
        let [mask] = batch.rows_of([batch.mask.clone()]);
        assert_eq!(mask, [vec![1.0; 3], vec![1.0]]);
        let positions = Tensor::<1, Int>::arange(0..10, &device).float().reshape([2, 5]);
        let [read, mask] = batch.rows_of([batch.at_responses(positions), batch.mask.clone()]);
        assert_eq!(read, [vec![1.0, 2.0, 3.0], vec![5.0]]);
        assert_eq!(mask, [vec![1.0; 3], vec![1.0]]);
    }

    #[test]
    fn positions_before_the_shortest_prompts_last_token_are_not_read() {
        let device = crate::device::DeviceSpec::Cpu.device().unwrap();
        let rows: [(&[u32], &[u32]); 2] = [(&[1, 2, 3], &[4, 5]), (&[6, 7], &[8])];
        let batch = ResponseBatch::new(&rows, 0, &device);
        let ints = |t: Tensor<1, Int>| t.into_data().convert::<i64>().try_to_vec::<i64>().unwrap();
        // T = 5, from 1, so 4 positions a row: row 0 predicts 4, 5 at 2, 3 (1, 2 of its
        // four); row 1 predicts 8 at 1 (its first, 4 in all).
        assert_eq!(batch.from, 1);
        assert_eq!(ints(batch.predict_at.clone()), [1, 2, 4, 4]);
    }

    #[test]
    fn shared_prompts_give_the_log_probs_of_a_whole_forward() {
        let device = crate::device::DeviceSpec::Cpu.device().unwrap();
        let lm = tiny_causal_lm("tiny", 5, &device);
        let (p, q): (&[u32], &[u32]) = (&[1, 2, 3, 4], &[1, 2, 9]);
        let rows: [(&[u32], &[u32]); 4] = [(p, &[5, 6]), (p, &[5, 6]), (p, &[7]), (q, &[8, 8, 8])];
        let shared = shared_log_probs(&lm, &rows, 0, 0.7, &device);
        let batch = ResponseBatch::new(&rows, 0, &device);
        let [whole] = batch.rows_of([reference_log_probs(&lm, &batch, 0.7)]);
        for (a, b) in shared.iter().flatten().zip(whole.iter().flatten()) {
            assert!((a - b).abs() < 1e-4, "{shared:?} vs {whole:?}");
        }
        assert_eq!(shared.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1, 3]);
    }

    #[test]
    fn shared_prompts_give_the_gradients_of_a_whole_forward() {
        let device = crate::device::DeviceSpec::Cpu.device().unwrap().autodiff();
        for family in ["tiny", "llama-tiny"] {
            let lm = tiny_causal_lm(family, 6, &device);
            let (p, q): (&[u32], &[u32]) = (&[1, 2, 3, 4], &[1, 2, 9]);
            let rows: [(&[u32], &[u32]); 4] = [(p, &[5, 6]), (p, &[7]), (q, &[8, 8]), (q, &[3])];
            let whole = ResponseBatch::new(&rows, 0, &device);
            let hidden = lm.hidden_from(whole.input_ids.clone(), &whole.padded, whole.from);
            let expected = whole.chosen(whole.logits(&lm, hidden, 0.7)) * whole.mask.clone();
            let shared = SharedPrompts::new(&rows, 0, &device);
            let batch = &shared.batch;
            let got = batch.chosen(batch.logits(&lm, shared.hidden(&lm), 0.7)) * batch.mask.clone();
            let diff: f32 = (got.clone() - expected.clone()).abs().max().into_scalar();
            assert!(diff < 1e-5, "{family}: log-probs differ by {diff}");
            let embedding = |grads| lm.body.token_embedding().grad(&grads).unwrap();
            let (a, b) = (embedding(got.sum().backward()), embedding(expected.sum().backward()));
            let diff: f32 = (a - b).abs().max().into_scalar();
            assert!(diff < 1e-5, "{family}: gradients differ by {diff}");
        }
    }
}
