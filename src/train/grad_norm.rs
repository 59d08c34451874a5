//! Clipping by the global gradient norm, as `torch.nn.utils.clip_grad_norm_` does (Burn's
//! built-in clipping works per tensor).

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

use crate::model::fused::squared_norm;

/// The L2 norm over all gradients; when it exceeds `max_norm` (> 0), every gradient is scaled
/// by `max_norm / norm`. Returns the norm before clipping (NaN if any gradient is).
pub fn clip_global_norm<M: Module>(model: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    struct SquaredSums<'a> {
        grads: &'a GradientsParams,
        sums: Vec<Tensor<1>>,
    }
    impl ModuleVisitor for SquaredSums<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.get::<D>(param.id) {
                self.sums.push(squared_norm(grad));
            }
        }
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.remove::<D>(param.id) {
                self.grads.register::<D>(param.id, grad.mul_scalar(self.factor));
            }
        }
    }

    let mut squared = SquaredSums { grads, sums: Vec::new() };
    model.visit(&mut squared);
    if squared.sums.is_empty() {
        return 0.0;
    }
    let norm = Tensor::cat(squared.sums, 0).sum().sqrt().into_scalar::<f32>() as f64;
    if max_norm > 0.0 && norm > max_norm {
        model.visit(&mut Scale { grads, factor: max_norm / (norm + 1e-6) });
    }
    norm
}
