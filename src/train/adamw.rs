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
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        Self { config, steps: 0, moments: HashMap::new() }
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// One update of every parameter that has a gradient in `grads` (consumed).
    pub fn step<M: Module>(&mut self, model: M, grads: GradientsParams, lr: f64) -> M {
        self.steps += 1;
        let t = self.steps as i32;
        let bias1 = 1.0 - self.config.beta1.powi(t);
        let bias2 = 1.0 - self.config.beta2.powi(t);
        let mut update = Update { adam: self, grads, lr, bias1, bias2 };
        model.map(&mut update)
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

    /// Restores what `save` wrote into the optimizer of a freshly loaded `model`.
    pub fn load<M: Module>(
        config: AdamWConfig,
        steps: u64,
        model: &M,
        layout: HfLayout,
        path: &Path,
        device: &Device,
    ) -> Result<Self> {
        let mut tensors = weights::read_file(path)?;
        let mut adam = Self { config, steps, moments: HashMap::new() };
        for (id, name) in param_names(model, layout) {
            let (m, v) = (
                tensors.remove(&format!("exp_avg.{name}")),
                tensors.remove(&format!("exp_avg_sq.{name}")),
            );
            match (m, v) {
                (Some(m), Some(v)) => {
                    adam.moments
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
        Ok(adam)
    }
}

struct Update<'a> {
    adam: &'a mut AdamW,
    grads: GradientsParams,
    lr: f64,
    bias1: f64,
    bias2: f64,
}

impl ModuleMapper for Update<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let AdamWConfig { beta1, beta2, epsilon, weight_decay } = self.adam.config;
        let dims = tensor.dims();
        let n = dims.iter().product::<usize>();
        let g = grad.reshape([n]);
        let (m, v) = self.adam.moments.remove(&id).unwrap_or_else(|| {
            let zeros = Tensor::<1>::zeros([n], &g.device());
            (zeros.clone(), zeros)
        });
        let m = m.mul_scalar(beta1) + g.clone().mul_scalar(1.0 - beta1);
        let v = v.mul_scalar(beta2) + g.square().mul_scalar(1.0 - beta2);
        let denominator = v.clone().sqrt().div_scalar(self.bias2.sqrt()).add_scalar(epsilon);
        let step = (m.clone() / denominator).mul_scalar(self.lr / self.bias1).reshape(dims);
        let mut value = tensor.inner();
        if D >= 2 && weight_decay > 0.0 {
            value = value.mul_scalar(1.0 - self.lr * weight_decay);
        }
        let value = Tensor::from_inner(value - step).require_grad();
        self.adam.moments.insert(id, (m, v));
        Param::from_mapped_value(id, value, mapper)
    }
}
