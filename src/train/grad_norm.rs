//! Clipping by the global gradient norm, as `torch.nn.utils.clip_grad_norm_` does (Burn's
//! built-in clipping works per tensor).

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

use crate::model::plain_ops::squared_norm;

/// The L2 norm over all gradients (NaN if any is one), and the factor
/// `torch.nn.utils.clip_grad_norm_` scales them by: `max_norm / (norm + 1e-6)` when the norm
/// exceeds `max_norm` (> 0), else 1. The optimizer applies the factor as it reads each gradient
/// (`AdamW::step`), which spares a pass over all of them.
pub fn clip_factor<M: Module>(model: &M, grads: &GradientsParams, max_norm: f64) -> (f64, f64) {
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

    let mut squared = SquaredSums { grads, sums: Vec::new() };
    model.visit(&mut squared);
    if squared.sums.is_empty() {
        return (0.0, 1.0);
    }
    let norm = Tensor::cat(squared.sums, 0).sum().sqrt().into_scalar::<f32>() as f64;
    let factor = if max_norm > 0.0 && norm > max_norm { max_norm / (norm + 1e-6) } else { 1.0 };
    (norm, factor)
}
