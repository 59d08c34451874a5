//! AdamW as PyTorch defines it (decoupled weight decay, bias-corrected moments), with its
//! state keyed by checkpoint tensor names so `--resume` restores it into a freshly loaded model.
//!
//! Burn's own optimizer keys state by `ParamId`, which a model read back from safetensors does
//! not keep; naming the moments like the weights makes `state/` independent of that.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Result, bail};
use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;

use crate::model::naming::{HfLayout, param_names};
use crate::model::plain_ops::adamw_update;
use crate::model::weights::{self, NamedTensors};

#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    /// Applied to matrices (rank ≥ 2) only: biases and norm gains are not decayed, as in
    /// `transformers`' `Trainer`.
    pub weight_decay: f64,
}

pub struct AdamW {
    config: AdamWConfig,
    /// Updates made so far (for bias correction).
    steps: u64,
    /// First and second moments, flattened, per parameter.
    moments: HashMap<ParamId, (Tensor<1>, Tensor<1>)>,
    /// Learning rate multipliers of the parameters that do not train at the step's rate.
    lr_scales: HashMap<ParamId, f64>,
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        Self { config, steps: 0, moments: HashMap::new(), lr_scales: HashMap::new() }
    }

    /// Parameters that train at a multiple of the step's learning rate (see `lr_groups`).
    pub fn set_lr_scales(&mut self, lr_scales: HashMap<ParamId, f64>) {
        self.lr_scales = lr_scales;
    }

    /// One update of every parameter that has a gradient in `grads` (consumed), in place, each
    /// gradient scaled by `grad_factor` as it is read (the clip's, `grad_norm::clip_factor`).
    /// The model is moved out and back rather than cloned: a clone would share every tensor,
    /// and a shared tensor is copied before it is updated (a whole copy of the weights a step).
    pub fn step<M: Module>(
        &mut self,
        model: &mut M,
        grads: GradientsParams,
        lr: f64,
        grad_factor: f64,
    ) {
        self.steps += 1;
        let mut update = Update { adam: self, grads, lr, grad_factor };
        replace_with::replace_with_or_abort(model, |model| model.map(&mut update));
    }

    /// Sets the update count (bias correction) where a stage makes several updates a step.
    pub fn set_steps(&mut self, steps: u64) {
        self.steps = steps;
    }

    /// Writes the moments (named `exp_avg.<tensor>` / `exp_avg_sq.<tensor>`) to a safetensors
    /// file.
    pub fn save<M: Module>(&self, model: &M, layout: HfLayout, path: &Path) -> Result<()> {
        let mut tensors = NamedTensors::new();
        for (id, name) in param_names(model, layout) {
            if let Some((m, v)) = self.moments.get(&id) {
                tensors.insert(format!("exp_avg.{name}"), m.to_data());
                tensors.insert(format!("exp_avg_sq.{name}"), v.to_data());
            }
        }
        weights::write_file(path, &tensors)
    }

    /// Restores what `save` wrote, `steps` updates in, for a freshly loaded `model`; `device`
    /// is the plain (not autodiff) device.
    pub fn restore<M: Module>(
        &mut self,
        steps: u64,
        model: &M,
        layout: HfLayout,
        path: &Path,
        device: &Device,
    ) -> Result<()> {
        let mut tensors = weights::read_file(path)?;
        self.steps = steps;
        for (id, name) in param_names(model, layout) {
            let (m, v) = (
                tensors.remove(&format!("exp_avg.{name}")),
                tensors.remove(&format!("exp_avg_sq.{name}")),
            );
            match (m, v) {
                (Some(m), Some(v)) => {
                    self.moments
                        .insert(id, (Tensor::from_data(m, device), Tensor::from_data(v, device)));
                }
                (None, None) => {} // a parameter without gradients so far
                _ => bail!("{}: optimizer state for `{name}` is incomplete", path.display()),
            }
        }
        if let Some(name) = tensors.keys().next() {
            bail!(
                "{}: optimizer state for `{name}`, which the model does not have",
                path.display()
            );
        }
        Ok(())
    }
}

struct Update<'a> {
    adam: &'a mut AdamW,
    grads: GradientsParams,
    lr: f64,
    grad_factor: f64,
}

impl ModuleMapper for Update<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let AdamWConfig { beta1, beta2, epsilon, weight_decay } = self.adam.config;
        let dims = tensor.dims();
        let (m, v) = match self.adam.moments.remove(&id) {
            Some((m, v)) => (m.reshape(dims), v.reshape(dims)),
            None => (Tensor::zeros(dims, &grad.device()), Tensor::zeros(dims, &grad.device())),
        };
        let decay = if D >= 2 { weight_decay } else { 0.0 };
        let lr = self.lr * self.adam.lr_scales.get(&id).copied().unwrap_or(1.0);
        let hyper = [lr, beta1, beta2, epsilon, decay, self.adam.steps as f64, self.grad_factor];
        let [value, m, v] = adamw_update(tensor.inner(), grad, m, v, hyper);
        let n = dims.iter().product::<usize>();
        let (m, v) = (m.reshape([n]), v.reshape([n]));
        let value = Tensor::from_inner(value).require_grad();
        self.adam.moments.insert(id, (m, v));
        Param::from_mapped_value(id, value, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceSpec;

    #[derive(Module, Debug)]
    struct Pair {
        w: Param<Tensor<2>>,
        b: Param<Tensor<1>>,
    }

    /// PyTorch's `torch.optim.AdamW` update, written out in f64.
    fn reference(p: f64, g: f64, steps: i32, config: AdamWConfig, lr: f64) -> f64 {
        let (mut p, mut m, mut v) = (p, 0.0, 0.0);
        for t in 1..=steps {
            p *= 1.0 - lr * config.weight_decay;
            m = config.beta1 * m + (1.0 - config.beta1) * g;
            v = config.beta2 * v + (1.0 - config.beta2) * g * g;
            let (bias1, bias2) = (1.0 - config.beta1.powi(t), 1.0 - config.beta2.powi(t));
            p -= lr / bias1 * m / ((v / bias2).sqrt() + config.epsilon);
        }
        p
    }

    #[test]
    fn updates_as_pytorch_does_and_decays_matrices_only_also_a_transposed_one() {
        let device = DeviceSpec::Cpu.device().unwrap().autodiff();
        let config = AdamWConfig { beta1: 0.9, beta2: 0.95, epsilon: 1e-8, weight_decay: 0.1 };
        let (w0, b0) = ([1.0, -2.0, 3.0, 0.5], [0.25, -0.75]);
        let (gw, gb) = ([0.1, -0.4, 2.0, 0.0], [1.5, -0.01]);
        // w is a transposed view, as a weight read from a checkpoint in the other layout is.
        let w0_transposed = [w0[0], w0[2], w0[1], w0[3]];
        let mut model = Pair {
            w: Param::from_tensor(
                Tensor::<1>::from_floats(w0_transposed, &device).reshape([2, 2]).transpose(),
            ),
            b: Param::from_tensor(Tensor::from_floats(b0, &device)),
        };
        let mut adam = AdamW::new(config);
        let lr = 0.01;
        for _ in 0..3 {
            // loss = Σ w·gw + Σ b·gb, so the gradients are gw and gb.
            let loss = (model.w.val().reshape([4]) * Tensor::from_floats(gw, &device)).sum()
                + (model.b.val() * Tensor::from_floats(gb, &device)).sum();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            adam.step(&mut model, grads, lr, 1.0);
        }
        let values = |t: Tensor<1>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let w = values(model.w.val().reshape([4]));
        let b = values(model.b.val());
        for i in 0..4 {
            let expected = reference(w0[i], gw[i], 3, config, lr);
            assert!((w[i] as f64 - expected).abs() < 1e-6, "w[{i}]: {} vs {expected}", w[i]);
        }
        let no_decay = AdamWConfig { weight_decay: 0.0, ..config };
        for i in 0..2 {
            let expected = reference(b0[i], gb[i], 3, no_decay, lr);
            assert!((b[i] as f64 - expected).abs() < 1e-6, "b[{i}]: {} vs {expected}", b[i]);
        }
    }

    /// The clip factor scales each gradient as the kernel reads it. A large epsilon makes the
    /// update depend on the gradient's size (Adam is otherwise nearly scale-free).
    #[test]
    fn reads_each_gradient_scaled_by_the_clip_factor() {
        let device = DeviceSpec::Cpu.device().unwrap().autodiff();
        let config = AdamWConfig { beta1: 0.9, beta2: 0.95, epsilon: 1.0, weight_decay: 0.0 };
        let (b0, gb, factor, lr) = ([0.25, -0.75], [1.5, -0.2], 0.3, 0.1);
        let mut model = Pair {
            w: Param::from_tensor(Tensor::zeros([2, 2], &device)),
            b: Param::from_tensor(Tensor::from_floats(b0, &device)),
        };
        let mut adam = AdamW::new(config);
        for _ in 0..2 {
            let loss = (model.b.val() * Tensor::from_floats(gb, &device)).sum();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            adam.step(&mut model, grads, lr, factor);
        }
        let b = model.b.val().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        for i in 0..2 {
            let expected = reference(b0[i], gb[i] * factor, 2, config, lr);
            let unscaled = reference(b0[i], gb[i], 2, config, lr);
            assert!((b[i] as f64 - expected).abs() < 1e-6, "b[{i}]: {} vs {expected}", b[i]);
            assert!((expected - unscaled).abs() > 1e-3, "the test cannot tell the factor");
        }
    }
}
