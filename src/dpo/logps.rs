//! Sequence log-probabilities log π(answer | prompt) — the sum over the answer's tokens, as
//! TRL's `DPOTrainer` and `KTOTrainer` take them — and the reference model's, computed once
//! before training (TRL's `precompute_ref_log_probs`) and kept in the run's `state/`, so that
//! no second model is held while training and a resumed run does not compute them again.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, anyhow};
use burn::prelude::*;
use burn::tensor::TensorData;

use crate::data::completion::Completion;
use crate::data::scoring::batches_by_length;
use crate::dist;
use crate::metrics::RunLog;
use crate::model::CausalLm;
use crate::model::prefix_cache::{PrefixCache, frozen_blocks};
use crate::model::weights::{self, NamedTensors};
use crate::ppo::rollout::ResponseBatch;
use crate::train::interrupt;

/// The reference log-probabilities in `state/`.
pub const REFERENCE_FILE: &str = "reference_logps.safetensors";

/// `completions` right-padded into one batch (see `ResponseBatch`).
pub fn batch_of(completions: &[&Completion], pad: u32, device: &Device) -> ResponseBatch {
    let rows: Vec<(&[u32], &[u32])> = completions.iter().map(|c| c.parts()).collect();
    ResponseBatch::new(&rows, pad, device)
}

/// log π(answer | prompt) of each row `[B]`: the answer tokens' log-probabilities summed (the
/// LM head runs at those positions only). With `cached`, the pass starts from the frozen
/// blocks' output instead of the tokens.
pub fn sequence_log_probs(
    model: &CausalLm,
    batch: &ResponseBatch,
    cached: Option<Cached>,
) -> Tensor<1> {
    let hidden = match cached {
        None => model.hidden_from(batch.input_ids.clone(), &batch.padded, batch.from),
        Some(Cached { cache, rows }) => {
            let states = cache.batch(rows);
            let states = if batch.mask.is_autodiff() { states.autodiff() } else { states };
            model.hidden_after(states, &batch.padded, cache.blocks, batch.from)
        }
    };
    let per_token = batch.chosen(batch.logits(model, hidden, 1.0)) * batch.mask.clone(); // [B, R]
    let b = per_token.dims()[0];
    per_token.sum_dim(1).reshape([b])
}

/// A batch's rows in a frozen-block cache (`FrozenStates`).
#[derive(Clone, Copy)]
pub struct Cached<'a> {
    pub cache: &'a PrefixCache,
    pub rows: &'a [usize],
}

/// log π of every completion, in order, with `model` on a plain device: batches of similar
/// lengths (less padding), shared out among the ranks and summed back; with `cache` (built
/// over `completions`), from the frozen blocks' output. `stop` is asked between batches
/// whether to give up (Ctrl-C).
pub fn all_log_probs(
    model: &CausalLm,
    completions: &[&Completion],
    cache: Option<&PrefixCache>,
    pad: u32,
    device: &Device,
    stop: &dyn Fn() -> Result<()>,
) -> Result<Vec<f32>> {
    let lengths: Vec<usize> = completions.iter().map(|c| c.len()).collect();
    let mut values = vec![0.0f64; completions.len()];
    let (rank, ranks) = (dist::rank(), dist::world_size());
    for (k, chunk) in batches_by_length(&lengths).into_iter().enumerate() {
        if k % ranks != rank {
            continue;
        }
        stop()?;
        let batch: Vec<&Completion> = chunk.iter().map(|&i| completions[i]).collect();
        let cached = cache.map(|cache| Cached { cache, rows: &chunk });
        let logps = sequence_log_probs(model, &batch_of(&batch, pad, device), cached);
        for (&i, v) in chunk.iter().zip(floats(logps)) {
            values[i] = v as f64;
        }
    }
    dist::sum(&mut values)?;
    Ok(values.into_iter().map(|v| v as f32).collect())
}

/// With `model.train_layers`, what the frozen blocks make of every training and validation
/// completion, computed once (see `model::prefix_cache`): the steps, validation and a
/// reference that is the starting policy then run the trained blocks alone.
pub struct FrozenStates {
    pub train: PrefixCache,
    pub valid: PrefixCache,
}

impl FrozenStates {
    /// `None` when every block trains.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        stage: &str,
        policy: &CausalLm,
        train_layers: usize,
        train: &[&Completion],
        valid: &[&Completion],
        pad: u32,
        device: &Device,
        log: &RunLog,
    ) -> Result<Option<Self>> {
        let blocks = frozen_blocks(policy.body.num_layers(), train_layers);
        if blocks == 0 {
            return Ok(None);
        }
        let started = Instant::now();
        log.say(&format!(
            "{stage}: the frozen blocks ({blocks} of {}) run once over {} completions",
            policy.body.num_layers(),
            train.len() + valid.len()
        ));
        let stop = interrupt::check_with(format!(
            "{stage}: stopped while running the frozen blocks; nothing was saved"
        ));
        let cache = |completions: &[&Completion]| {
            let lengths: Vec<usize> = completions.iter().map(|c| c.len()).collect();
            PrefixCache::build_with(&lengths, blocks, &stop, |chunk| {
                let batch: Vec<&Completion> = chunk.iter().map(|&i| completions[i]).collect();
                let batch = batch_of(&batch, pad, device);
                policy.prefix(batch.input_ids, &batch.padded, blocks)
            })
        };
        let frozen = Self { train: cache(train)?, valid: cache(valid)? };
        log.say(&format!(
            "{stage}: frozen blocks done in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        Ok(Some(frozen))
    }
}

/// A `[N]` float tensor's values.
pub fn floats(t: Tensor<1>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 values")
}

/// log π_ref of each training and validation completion, in the order the stage lists them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReferenceLogps {
    pub train: Vec<f32>,
    pub valid: Vec<f32>,
}

impl ReferenceLogps {
    /// Runs the frozen `reference` once over every completion; with `frozen`, the
    /// reference is the starting policy and starts from its frozen blocks' output. Ctrl-C
    /// stops it (nothing is saved yet, so a new run starts over).
    #[allow(clippy::too_many_arguments)]
    pub fn compute(
        stage: &str,
        reference: &CausalLm,
        frozen: Option<&FrozenStates>,
        train: &[&Completion],
        valid: &[&Completion],
        pad: u32,
        device: &Device,
        log: &RunLog,
    ) -> Result<Self> {
        let started = Instant::now();
        log.say(&format!(
            "{stage}: reference log-probabilities of {} completions (once, kept in state/)",
            train.len() + valid.len()
        ));
        let stop = interrupt::check_with(format!(
            "{stage}: stopped while computing the reference log-probabilities; nothing was saved"
        ));
        let train = all_log_probs(reference, train, frozen.map(|f| &f.train), pad, device, &stop)?;
        let valid = all_log_probs(reference, valid, frozen.map(|f| &f.valid), pad, device, &stop)?;
        log.say(&format!("{stage}: reference done in {:.1} s", started.elapsed().as_secs_f64()));
        Ok(Self { train, valid })
    }

    /// Writes `REFERENCE_FILE` into a checkpoint's `state/` (when the checkpoint keeps one).
    pub fn write(&self, state_dir: &Path) -> Result<()> {
        if !state_dir.is_dir() {
            return Ok(());
        }
        let tensor = |v: &Vec<f32>| TensorData::new(v.clone(), [v.len()]);
        let tensors: NamedTensors = [("train", &self.train), ("valid", &self.valid)]
            .into_iter()
            .map(|(name, v)| (name.to_string(), tensor(v)))
            .collect();
        weights::write_file(&state_dir.join(REFERENCE_FILE), &tensors)
    }

    /// Reads what `write` wrote, checking it covers `train` and `valid` completions.
    pub fn read(state_dir: &Path, train: usize, valid: usize) -> Result<Self> {
        let path = state_dir.join(REFERENCE_FILE);
        let mut tensors = weights::read_file(&path)?;
        let mut take = |name: &str, n: usize| -> Result<Vec<f32>> {
            let data = tensors
                .remove(name)
                .ok_or_else(|| anyhow!("{}: no tensor `{name}`", path.display()))?;
            let values: Vec<f32> = data.convert::<f32>().try_to_vec::<f32>().expect("f32");
            if values.len() != n {
                return Err(anyhow!(
                    "{}: {} {name} log-probabilities for {n} completions (the data or its encoding changed)",
                    path.display(),
                    values.len()
                ));
            }
            Ok(values)
        };
        Ok(Self { train: take("train", train)?, valid: take("valid", valid)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PaddedBatch;
    use crate::model::loss::token_log_probs;
    use crate::model::pretrained::tiny_causal_lm;

    fn tiny() -> (CausalLm, Device) {
        let device = crate::device::DeviceSpec::Cpu.device().unwrap();
        (tiny_causal_lm("tiny", 3, &device), device)
    }

    #[test]
    fn sequence_log_probs_sum_the_answer_tokens_of_a_full_forward() {
        let (model, device) = tiny();
        let a = Completion { prompt: vec![5, 6, 7], answer: vec![8, 9] };
        let b = Completion { prompt: vec![10], answer: vec![11, 12, 13, 14] };
        let got = floats(sequence_log_probs(&model, &batch_of(&[&a, &b], 0, &device), None));
        for (c, got) in [&a, &b].iter().zip(got) {
            let ids: Vec<i64> = c.prompt.iter().chain(&c.answer).map(|&i| i as i64).collect();
            let t = ids.len();
            let input = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, t]), &device);
            let mask = Tensor::<2, Int>::ones([1, t], &device);
            let logits = model.forward(input.clone(), &PaddedBatch::new(mask));
            let targets = input.slice(s![.., 1..t]);
            let lp = floats(
                token_log_probs(logits.slice(s![.., 0..t - 1, ..]), targets).reshape([t - 1]),
            );
            let want: f32 = lp[c.prompt.len() - 1..].iter().sum();
            assert!((got - want).abs() < 1e-4, "{got} vs {want}");
        }
        // Sorted, batched and put back in order: the same numbers.
        let all = all_log_probs(&model, &[&b, &a], None, 0, &device, &|| Ok(())).unwrap();
        let one = floats(sequence_log_probs(&model, &batch_of(&[&a], 0, &device), None));
        assert!((all[1] - one[0]).abs() < 1e-4);
    }

    #[test]
    fn log_probs_from_the_frozen_blocks_output_match_the_whole_pass() {
        let (model, device) = tiny();
        let completions = [
            Completion { prompt: vec![5, 6, 7], answer: vec![8, 9] },
            Completion { prompt: vec![10], answer: vec![11, 12, 13, 14] },
            Completion { prompt: vec![15, 16, 17, 18, 19], answer: vec![20] },
        ];
        let completions: Vec<&Completion> = completions.iter().collect();
        let whole = all_log_probs(&model, &completions, None, 0, &device, &|| Ok(())).unwrap();
        let log = RunLog::new(0, 1, Vec::new());
        for trained in 1..model.body.num_layers() {
            let frozen =
                FrozenStates::build("test", &model, trained, &completions, &[], 0, &device, &log)
                    .unwrap()
                    .expect("some blocks frozen");
            let reference = ReferenceLogps::compute(
                "test",
                &model,
                Some(&frozen),
                &completions,
                &[],
                0,
                &device,
                &log,
            )
            .unwrap();
            for (a, b) in reference.train.iter().zip(&whole) {
                assert!(
                    (a - b).abs() < 1e-4,
                    "{trained} trained: {:?} vs {whole:?}",
                    reference.train
                );
            }
        }
    }

    #[test]
    fn reference_log_probs_round_trip_through_state() {
        let dir = tempfile::tempdir().unwrap();
        let reference = ReferenceLogps { train: vec![-1.5, -2.0], valid: vec![] };
        reference.write(dir.path()).unwrap();
        assert_eq!(ReferenceLogps::read(dir.path(), 2, 0).unwrap(), reference);
        let err = ReferenceLogps::read(dir.path(), 3, 0).unwrap_err();
        assert!(format!("{err:#}").contains("the data or its encoding changed"), "{err:#}");
    }
}
