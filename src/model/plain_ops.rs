//! Kernels on plain (non-autodiff) tensors, each one pass where the composed form makes
//! several: the optimizer's (PyTorch's fused AdamW, the squared norm for clipping) and the
//! decoding products whose best orientation depends on the weight's layout.

#![allow(deprecated)] // Burn 0.22 marks the LibTorch backend deprecated; it is the one we run on.

use burn::backend::libtorch::TchTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, LibTorch, backend_extension};
use burn::prelude::*;

use super::fused::check;

// PyTorch's fused AdamW step, in src/model/fused.cpp (tch does not expose it).
unsafe extern "C" {
    fn rlhf_fused_adamw(
        param: *mut torch_sys::C_tensor,
        grad: *mut torch_sys::C_tensor,
        exp_avg: *mut torch_sys::C_tensor,
        exp_avg_sq: *mut torch_sys::C_tensor,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        epsilon: f64,
        step: f64,
        grad_factor: f64,
    ) -> *mut std::ffi::c_char;
}

/// The optimizer's kernels, each one pass over a tensor where the composed form makes several.
#[backend_extension(LibTorch)]
pub trait OptimizerKernels: Backend {
    /// One AdamW update of a parameter and its moments, in place, by PyTorch's fused kernel
    /// (`torch.optim.AdamW(fused=True)`): one pass instead of the nine of the composed form.
    /// `[lr, beta1, beta2, epsilon, weight_decay, step, grad_factor]`, `step` counting from 1,
    /// the gradient read as `grad_factor · grad`.
    fn adamw_update(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        exp_avg: FloatTensor<Self>,
        exp_avg_sq: FloatTensor<Self>,
        hyper: [f64; 7],
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// Σ x², as a one-element tensor.
    fn squared_norm(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl OptimizerKernels for LibTorch {
    fn squared_norm(x: TchTensor) -> TchTensor {
        TchTensor::new(x.tensor.norm().square().reshape([1]))
    }

    fn adamw_update(
        param: TchTensor,
        grad: TchTensor,
        exp_avg: TchTensor,
        exp_avg_sq: TchTensor,
        hyper: [f64; 7],
    ) -> (TchTensor, TchTensor, TchTensor) {
        let [lr, beta1, beta2, epsilon, weight_decay, step, grad_factor] = hyper;
        // The kernel walks the four tensors' memory in step, so each must be contiguous (a
        // weight read transposed from a checkpoint is not), and one still shared (a snapshot
        // of the best weights keeps it) is copied first, so that nothing else sees it change —
        // the gradient too, which the kernel overwrites with its scaled self.
        let writable = |t: TchTensor| match (t.tensor.is_contiguous(), t.can_mut()) {
            (true, true) => t,
            (true, false) => TchTensor::new(t.tensor.copy()),
            (false, _) => TchTensor::new(t.tensor.contiguous()), // a new tensor already
        };
        let (mut p, mut m, mut v) = (writable(param), writable(exp_avg), writable(exp_avg_sq));
        let mut grad = writable(grad);
        // SAFETY: the pointers are live tensors for the call's duration; all four are owned
        // here (not shared), so updating them in place is seen by no one else.
        unsafe {
            check(rlhf_fused_adamw(
                p.tensor.as_mut_ptr(),
                grad.tensor.as_mut_ptr(),
                m.tensor.as_mut_ptr(),
                v.tensor.as_mut_ptr(),
                lr,
                beta1,
                beta2,
                weight_decay,
                epsilon,
                step,
                grad_factor,
            ))
        };
        (p, m, v)
    }
}

/// Products on plain (non-autodiff) tensors whose best orientation depends on the layout.
#[backend_extension(LibTorch)]
pub trait LayoutKernels: Backend {
    /// `x · w`; see `skinny_matmul`.
    fn skinny_matmul(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl LayoutKernels for LibTorch {
    fn skinny_matmul(x: TchTensor, w: TchTensor) -> TchTensor {
        let (x, w) = (&x.tensor, &w.tensor);
        let stored_transposed = !w.is_contiguous() && w.tr().is_contiguous();
        TchTensor::new(if stored_transposed && x.size()[0] <= SKINNY_ROWS as i64 {
            w.tr().matmul(&x.tr()).tr()
        } else {
            x.matmul(w)
        })
    }
}

/// Up to this many rows a product is skinny: MKL packs the whole other operand on each call.
pub const SKINNY_ROWS: usize = 64;

/// `x · w` for plain (non-autodiff) `x` `[N, K]` and `w` `[K, M]`. When `w` is stored as the
/// contiguous transpose of itself (`decode_layout::for_decoding`) and `x` has at most
/// `SKINNY_ROWS` rows, it runs as (wᵀ·xᵀ)ᵀ, which streams `w` where x·w would pack it whole
/// (the result is then a transposed view).
pub fn skinny_matmul(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as LayoutKernels>::skinny_matmul(
        x.into_dispatch(),
        w.into_dispatch(),
    ))
}

/// AdamW on plain (non-autodiff) tensors of any rank; returns the new parameter and moments.
pub fn adamw_update<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    exp_avg: Tensor<D>,
    exp_avg_sq: Tensor<D>,
    hyper: [f64; 7],
) -> [Tensor<D>; 3] {
    let (param, exp_avg, exp_avg_sq) = <Dispatch as OptimizerKernels>::adamw_update(
        param.into_dispatch(),
        grad.into_dispatch(),
        exp_avg.into_dispatch(),
        exp_avg_sq.into_dispatch(),
        hyper,
    );
    [param, exp_avg, exp_avg_sq].map(Tensor::from_dispatch)
}

/// Σ x² over every element of a plain (non-autodiff) tensor, as `[1]`.
pub fn squared_norm<const D: usize>(x: Tensor<D>) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as OptimizerKernels>::squared_norm(x.into_dispatch()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Either layout of w and either side of the skinny limit give x·w; a skinny product with
    /// w stored transposed comes back as the transposed view that (wᵀ·xᵀ)ᵀ leaves.
    #[test]
    fn skinny_matmul_is_x_times_w_in_every_layout() {
        let cpu = (tch::Kind::Float, tch::Device::Cpu);
        let w = tch::Tensor::randn([24, 10], cpu);
        let stored_transposed = w.tr().contiguous().tr();
        assert!(!stored_transposed.is_contiguous());
        for rows in [3, SKINNY_ROWS as i64 + 1] {
            let x = tch::Tensor::randn([rows, 24], cpu);
            for (layout, weight) in [("contiguous", &w), ("transposed", &stored_transposed)] {
                let ours = LibTorch::skinny_matmul(
                    TchTensor::new(x.shallow_clone()),
                    TchTensor::new(weight.shallow_clone()),
                )
                .tensor;
                let err = (&ours - x.matmul(&w)).abs().max().double_value(&[]);
                assert!(err < 1e-5, "{rows} rows, {layout} w: difference {err}");
                let streamed = layout == "transposed" && rows <= SKINNY_ROWS as i64;
                assert_eq!(ours.stride() == [1, rows], streamed, "{rows} rows, {layout} w");
            }
        }
    }
}
