//! THE optimizer step, written once for every stage (nanoGPT's `train.py` loop): this rank's
//! share of each micro-batch goes forward and backward, the gradients are summed over the
//! micro-batches and then over ranks, clipped by their global norm, checked for divergence,
//! and applied by AdamW. A stage supplies only the loss of a micro-batch and the sums it wants
//! reduced with the gradients (its metrics).

use anyhow::Result;
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;

use super::grad_norm::clip_factor;
use super::run::Trainer;
use crate::dist;

/// What a step reports: the stage's sums over the whole step (every rank's), and the gradient
/// norm before clipping.
#[derive(Debug, Clone, Copy)]
pub struct StepSums<const N: usize> {
    pub sums: [f64; N],
    pub grad_norm: f64,
}

/// One optimizer step at `lr` over `micro_batches` (row indices, each rank runs its share).
/// `micro_batch_loss` returns the loss to backpropagate for some rows and adds the stage's
/// statistics to the sums; `step_loss` reads the step's loss from the summed statistics, for the
/// divergence check.
pub fn optimizer_step<M: Module, const N: usize>(
    trainer: &mut Trainer,
    model: &mut M,
    micro_batches: &[Vec<usize>],
    lr: f64,
    mut micro_batch_loss: impl FnMut(&M, &[usize], &mut [f64; N]) -> Tensor<1>,
    step_loss: impl FnOnce(&[f64; N]) -> f64,
) -> Result<StepSums<N>> {
    let mut sums = [0.0; N];
    let mut accumulator = GradientsAccumulator::<M>::new();
    for rows in micro_batches {
        let rows = dist::shard(rows);
        if rows.is_empty() {
            continue;
        }
        let loss = micro_batch_loss(model, rows, &mut sums);
        accumulator.accumulate(model, GradientsParams::from_grads(loss.backward(), model));
    }
    apply(trainer, model, accumulator.grads(), sums, lr, step_loss)
}

/// The rest of a step, on every rank alike, for gradients a stage computed itself (PPO's
/// minibatches): gradients and `sums` summed over ranks, clipping, the divergence check, AdamW.
pub fn apply<M: Module, const N: usize>(
    trainer: &mut Trainer,
    model: &mut M,
    mut grads: GradientsParams,
    mut sums: [f64; N],
    lr: f64,
    step_loss: impl FnOnce(&[f64; N]) -> f64,
) -> Result<StepSums<N>> {
    dist::all_reduce_gradients(model, &mut grads)?;
    dist::sum(&mut sums)?;
    let (grad_norm, clip) = clip_factor(model, &grads, trainer.train.max_grad_norm);
    let loss = step_loss(&sums);
    if !loss.is_finite() || !grad_norm.is_finite() {
        return Err(trainer.diverged(loss));
    }
    trainer.adam.step(model, grads, lr, clip);
    Ok(StepSums { sums, grad_norm })
}
