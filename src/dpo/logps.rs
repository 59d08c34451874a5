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
use crate::dist;
use crate::error::Interrupted;
use crate::metrics::RunLog;
use crate::model::CausalLm;
use crate::model::weights::{self, NamedTensors};
use crate::ppo::rollout::ResponseBatch;
use crate::train::interrupt;

/// Completions per forward pass when nothing is trained.
const INFERENCE_BATCH_SIZE: usize = 16;
/// The reference log-probabilities in `state/`.
pub const REFERENCE_FILE: &str = "reference_logps.safetensors";

/// `completions` right-padded into one batch (see `ResponseBatch`).
pub fn batch_of(completions: &[&Completion], pad: u32, device: &Device) -> ResponseBatch {
    let rows: Vec<(&[u32], &[u32])> = completions.iter().map(|c| c.parts()).collect();
    ResponseBatch::new(&rows, pad, device)
}

/// log π(answer | prompt) of each row `[B]`: the answer tokens' log-probabilities summed (the
/// LM head runs at those positions only).
pub fn sequence_log_probs(model: &CausalLm, batch: &ResponseBatch) -> Tensor<1> {
    let hidden = model.hidden_from(batch.input_ids.clone(), &batch.padded, batch.from);
    let per_token = batch.chosen(batch.logits(model, hidden, 1.0)) * batch.mask.clone(); // [B, R]
    let b = per_token.dims()[0];
    per_token.sum_dim(1).reshape([b])
}

/// log π of every completion, in order, with `model` on a plain device: batches of similar
/// lengths (less padding), shared out among the ranks and summed back. `stop` is asked
/// between batches whether to give up (Ctrl-C).
pub fn all_log_probs(
    model: &CausalLm,
    completions: &[&Completion],
    pad: u32,
    device: &Device,
    stop: &dyn Fn() -> Result<()>,
) -> Result<Vec<f32>> {
    let mut order: Vec<usize> = (0..completions.len()).collect();
    order.sort_by_key(|&i| completions[i].len());
    let mut values = vec![0.0f64; completions.len()];
    let (rank, ranks) = (dist::rank(), dist::world_size());
    for (k, chunk) in order.chunks(INFERENCE_BATCH_SIZE).enumerate() {
        if k % ranks != rank {
            continue;
        }
        stop()?;
        let batch: Vec<&Completion> = chunk.iter().map(|&i| completions[i]).collect();
        let logps = sequence_log_probs(model, &batch_of(&batch, pad, device));
        for (&i, v) in chunk.iter().zip(floats(logps)) {
            values[i] = v as f64;
        }
    }
    dist::sum(&mut values)?;
    Ok(values.into_iter().map(|v| v as f32).collect())
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
    /// Runs the frozen `reference` once over every completion. Ctrl-C stops it (nothing is
    /// saved yet, so a new run starts over).
    pub fn compute(
        stage: &str,
        reference: &CausalLm,
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
        let message = format!(
            "{stage}: stopped while computing the reference log-probabilities; nothing was saved"
        );
        let stop = || match interrupt::requested() {
            Some(signal) => {
                Err(anyhow::Error::new(Interrupted { signal, message: message.clone() }))
            }
            None => Ok(()),
        };
        let train = all_log_probs(reference, train, pad, device, &stop)?;
        let valid = all_log_probs(reference, valid, pad, device, &stop)?;
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
    use crate::model::loss::token_log_probs;
    use crate::model::pretrained::init_causal_lm;
    use crate::model::{PaddedBatch, preset};

    fn tiny() -> (CausalLm, Device) {
        let device = crate::device::DeviceSpec::Cpu.device().unwrap();
        let tok = crate::data::tokenizer::train_bpe(["a b c d e f g"].into_iter(), 300).unwrap();
        let config = preset::resolve("tiny", &[], &tok, Path::new(".")).unwrap();
        device.seed(3);
        (init_causal_lm(&config, &device).unwrap(), device)
    }

    #[test]
    fn sequence_log_probs_sum_the_answer_tokens_of_a_full_forward() {
        let (model, device) = tiny();
        let a = Completion { prompt: vec![5, 6, 7], answer: vec![8, 9] };
        let b = Completion { prompt: vec![10], answer: vec![11, 12, 13, 14] };
        let got = floats(sequence_log_probs(&model, &batch_of(&[&a, &b], 0, &device)));
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
        let all = all_log_probs(&model, &[&b, &a], 0, &device, &|| Ok(())).unwrap();
        let one = floats(sequence_log_probs(&model, &batch_of(&[&a], 0, &device)));
        assert!((all[1] - one[0]).abs() < 1e-4);
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
