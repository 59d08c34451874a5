//! LibTorch's fused kernels as differentiable Burn operations.
//!
//! Burn composes GELU, LayerNorm and log-softmax out of element-wise operations, and under
//! autodiff each one allocates and saves a tensor; PyTorch runs one kernel forward and one
//! backward. These operations call LibTorch's kernels through a Burn backend extension and give
//! the autodiff backend a hand-written backward pass, so training runs what PyTorch runs — or
//! less: tanh-GELU is a loop of our own (src/model/fused.cpp), and GPT-2's attention reads its
//! packed q/k/v projection whole.
//! The parity tests compare losses and gradients with `transformers` through them.
#![allow(deprecated)] // Burn 0.22 marks the LibTorch backend deprecated; it is the one we run on.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::libtorch::TchTensor;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, Dispatch, LibTorch, backend_extension};
use burn::prelude::*;

/// The kernels, forward and backward, on a concrete backend.
pub trait FusedKernels: Backend {
    fn gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self>;
    fn gelu_tanh_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Output, and the row mean and reciprocal standard deviation the backward pass reads.
    fn layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> [FloatTensor<Self>; 3];
    /// Gradients of x, gamma and beta (`beta` is read for its shape only).
    fn layer_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3];
    /// −log softmax(logits)[target] per row, and the log-softmax the backward pass reads.
    fn cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>)
    -> [FloatTensor<Self>; 2];
    fn cross_entropy_backward(
        log_probs: FloatTensor<Self>,
        targets: IntTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// softmax(q·kᵀ·scale + bias)·v for `[B, H, T, hd]` inputs and an additive `bias`
    /// broadcast from `[B, 1, T, S]`; also the row log-sum-exp the backward pass reads.
    fn attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> [FloatTensor<Self>; 2];
    /// Gradients of q, k and v.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
        out: FloatTensor<Self>,
        logsumexp: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3];
    /// `attention` read straight from a packed projection qkv `[B, T, 3·H·hd]` (GPT-2's
    /// `c_attn` output): output `[B, H, T − from, hd]` and the row log-sum-exp.
    fn packed_attention(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        layout: Packed,
    ) -> [FloatTensor<Self>; 2];
    /// The gradient of qkv, written once into one `[B, T, 3·H·hd]` tensor.
    fn packed_attention_backward(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        layout: Packed,
        out: FloatTensor<Self>,
        logsumexp: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// How attention reads a packed q/k/v projection: `n_head` heads, the queries at `from..T`.
#[derive(Debug, Clone, Copy)]
pub struct Packed {
    pub n_head: usize,
    pub scale: f64,
    pub from: usize,
}

/// q `[B, H, T − from, hd]`, k and v `[B, H, T, hd]`: strided views into qkv `[B, T, 3·H·hd]`,
/// which LibTorch's flash kernels read as they are.
fn unpack(qkv: &tch::Tensor, n_head: usize, from: usize) -> [tch::Tensor; 3] {
    let [b, t, d3] = qkv.size3().expect("qkv is [B, T, 3D]").into();
    let heads = qkv.view([b, t, 3, n_head as i64, d3 / 3 / n_head as i64]).permute([2, 0, 3, 1, 4]);
    let from = from as i64;
    [heads.get(0).narrow(2, from, t - from), heads.get(1), heads.get(2)]
}

impl FusedKernels for LibTorch {
    fn gelu_tanh(x: TchTensor) -> TchTensor {
        let mut y = std::ptr::null_mut();
        // SAFETY: `x` is live for the call; on success the shim hands back a new tensor, owned
        // from here on by one `tch::Tensor`.
        TchTensor::new(unsafe {
            check(rlhf_gelu_tanh(x.tensor.as_ptr(), &mut y));
            tch::Tensor::from_ptr(y)
        })
    }

    fn gelu_tanh_backward(x: TchTensor, grad: TchTensor) -> TchTensor {
        let mut dx = std::ptr::null_mut();
        // SAFETY: as in `gelu_tanh`.
        TchTensor::new(unsafe {
            check(rlhf_gelu_tanh_backward(x.tensor.as_ptr(), grad.tensor.as_ptr(), &mut dx));
            tch::Tensor::from_ptr(dx)
        })
    }

    fn layer_norm(x: TchTensor, gamma: TchTensor, beta: TchTensor, epsilon: f64) -> [TchTensor; 3] {
        let d = *x.tensor.size().last().expect("layer norm of a scalar");
        let (y, mean, rstd) =
            x.tensor.native_layer_norm([d], Some(&gamma.tensor), Some(&beta.tensor), epsilon);
        [TchTensor::new(y), TchTensor::new(mean), TchTensor::new(rstd)]
    }

    fn layer_norm_backward(
        x: TchTensor,
        gamma: TchTensor,
        beta: TchTensor,
        mean: TchTensor,
        rstd: TchTensor,
        grad: TchTensor,
    ) -> [TchTensor; 3] {
        let grad = grad.tensor.contiguous();
        let mut out = [std::ptr::null_mut(); 3];
        // SAFETY: the inputs are live tensors for the call's duration; on success the shim
        // hands back three new tensors, each owned from here on by one `tch::Tensor`.
        let [dx, d_gamma, d_beta] = unsafe {
            check(rlhf_layer_norm_backward(
                grad.as_ptr(),
                x.tensor.as_ptr(),
                mean.tensor.as_ptr(),
                rstd.tensor.as_ptr(),
                gamma.tensor.as_ptr(),
                beta.tensor.as_ptr(),
                &mut out[0],
                &mut out[1],
                &mut out[2],
            ));
            out.map(|t| tch::Tensor::from_ptr(t))
        };
        [TchTensor::new(dx), TchTensor::new(d_gamma), TchTensor::new(d_beta)]
    }

    fn cross_entropy(logits: TchTensor, targets: TchTensor) -> [TchTensor; 2] {
        let log_probs = logits.tensor.log_softmax(-1, None);
        let nll = -log_probs.gather(1, &targets.tensor.unsqueeze(1), false).squeeze_dim(1);
        [TchTensor::new(nll), TchTensor::new(log_probs)]
    }

    fn cross_entropy_backward(
        log_probs: TchTensor,
        targets: TchTensor,
        grad: TchTensor,
    ) -> TchTensor {
        // d/dlogits of −log p[t] = softmax − onehot(t), scaled by each row's incoming gradient.
        let grad = grad.tensor.unsqueeze(1);
        let mut d_logits = log_probs.tensor.exp() * &grad;
        let _ = d_logits.scatter_add_(1, &targets.tensor.unsqueeze(1), &-grad);
        TchTensor::new(d_logits)
    }

    fn attention(
        q: TchTensor,
        k: TchTensor,
        v: TchTensor,
        bias: TchTensor,
        scale: f64,
    ) -> [TchTensor; 2] {
        let (out, logsumexp) = tch::Tensor::internal_scaled_dot_product_flash_attention_for_cpu(
            &q.tensor,
            &k.tensor,
            &v.tensor,
            0.0,
            false,
            Some(&bias.tensor),
            scale,
        );
        [TchTensor::new(out), TchTensor::new(logsumexp)]
    }

    fn attention_backward(
        q: TchTensor,
        k: TchTensor,
        v: TchTensor,
        bias: TchTensor,
        scale: f64,
        out: TchTensor,
        logsumexp: TchTensor,
        grad: TchTensor,
    ) -> [TchTensor; 3] {
        let (dq, dk, dv) =
            tch::Tensor::internal_scaled_dot_product_flash_attention_for_cpu_backward(
                &grad.tensor.contiguous(),
                &q.tensor,
                &k.tensor,
                &v.tensor,
                &out.tensor,
                &logsumexp.tensor,
                0.0,
                false,
                Some(&bias.tensor),
                scale,
            );
        [TchTensor::new(dq), TchTensor::new(dk), TchTensor::new(dv)]
    }

    fn packed_attention(qkv: TchTensor, bias: TchTensor, layout: Packed) -> [TchTensor; 2] {
        let [q, k, v] = unpack(&qkv.tensor, layout.n_head, layout.from).map(TchTensor::new);
        Self::attention(q, k, v, bias, layout.scale)
    }

    fn packed_attention_backward(
        qkv: TchTensor,
        bias: TchTensor,
        layout: Packed,
        out: TchTensor,
        logsumexp: TchTensor,
        grad: TchTensor,
    ) -> TchTensor {
        let [q, k, v] = unpack(&qkv.tensor, layout.n_head, layout.from).map(TchTensor::new);
        let [dq, dk, dv] =
            Self::attention_backward(q, k, v, bias, layout.scale, out, logsumexp, grad);
        let qkv = &qkv.tensor;
        let d_qkv = tch::Tensor::empty(qkv.size(), (qkv.kind(), qkv.device()));
        let [d_q, mut d_k, mut d_v] = unpack(&d_qkv, layout.n_head, 0);
        let (from, t) = (layout.from as i64, d_q.size()[2]);
        let _ = d_q.narrow(2, 0, from).zero_(); // the queries before `from` were not asked for
        d_q.narrow(2, from, t - from).copy_(&dq.tensor);
        d_k.copy_(&dk.tensor);
        d_v.copy_(&dv.tensor);
        TchTensor::new(d_qkv)
    }
}

/// The differentiable operations, routed to LibTorch or to the autodiff backend over it.
#[backend_extension(LibTorch, Autodiff)]
pub trait FusedOps: Backend {
    fn fused_gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self>;
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;
    fn fused_cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> FloatTensor<Self>;
    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self>;
    fn fused_packed_attention(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        layout: Packed,
    ) -> FloatTensor<Self>;
}

impl FusedOps for LibTorch {
    fn fused_gelu_tanh(x: TchTensor) -> TchTensor {
        Self::gelu_tanh(x)
    }

    fn fused_layer_norm(
        x: TchTensor,
        gamma: TchTensor,
        beta: TchTensor,
        epsilon: f64,
    ) -> TchTensor {
        let [y, _, _] = <Self as FusedKernels>::layer_norm(x, gamma, beta, epsilon);
        y
    }

    fn fused_cross_entropy(logits: TchTensor, targets: TchTensor) -> TchTensor {
        let [nll, _] = Self::cross_entropy(logits, targets);
        nll
    }

    fn fused_attention(
        q: TchTensor,
        k: TchTensor,
        v: TchTensor,
        bias: TchTensor,
        scale: f64,
    ) -> TchTensor {
        let [out, _] = <Self as FusedKernels>::attention(q, k, v, bias, scale);
        out
    }

    fn fused_packed_attention(qkv: TchTensor, bias: TchTensor, layout: Packed) -> TchTensor {
        let [out, _] = Self::packed_attention(qkv, bias, layout);
        out
    }
}

#[derive(Debug)]
struct GeluTanhBackward;

impl<B: FusedKernels> Backward<B, 1> for GeluTanhBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        if let [Some(parent)] = ops.parents {
            grads.register::<B>(parent.id, B::gelu_tanh_backward(ops.state, grad));
        }
    }
}

#[derive(Debug)]
struct LayerNormBackward;

impl<B: FusedKernels> Backward<B, 3> for LayerNormBackward {
    /// x, γ, β, μ, 1/σ.
    type State = [FloatTensor<B>; 5];

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let [x, gamma, beta, mean, rstd] = ops.state;
        let [dx, d_gamma, d_beta] = B::layer_norm_backward(x, gamma, beta, mean, rstd, grad);
        for (parent, grad) in ops.parents.into_iter().zip([dx, d_gamma, d_beta]) {
            if let Some(parent) = parent {
                grads.register::<B>(parent.id, grad);
            }
        }
    }
}

#[derive(Debug)]
struct CrossEntropyBackward;

impl<B: FusedKernels> Backward<B, 1> for CrossEntropyBackward {
    /// log-softmax of the logits, targets.
    type State = (FloatTensor<B>, IntTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (log_probs, targets) = ops.state;
        if let [Some(parent)] = ops.parents {
            grads.register::<B>(parent.id, B::cross_entropy_backward(log_probs, targets, grad));
        }
    }
}

#[derive(Debug)]
struct AttentionBackward;

impl<B: FusedKernels> Backward<B, 3> for AttentionBackward {
    /// q, k, v, bias, scale, output, log-sum-exp.
    type State = ([FloatTensor<B>; 3], FloatTensor<B>, f64, FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let ([q, k, v], bias, scale, out, logsumexp) = ops.state;
        let d_qkv = B::attention_backward(q, k, v, bias, scale, out, logsumexp, grad);
        for (parent, grad) in ops.parents.into_iter().zip(d_qkv) {
            if let Some(parent) = parent {
                grads.register::<B>(parent.id, grad);
            }
        }
    }
}

#[derive(Debug)]
struct PackedAttentionBackward(Packed);

impl<B: FusedKernels> Backward<B, 1> for PackedAttentionBackward {
    /// qkv, bias, output, log-sum-exp.
    type State = [FloatTensor<B>; 4];

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let [qkv, bias, out, logsumexp] = ops.state;
        if let [Some(parent)] = ops.parents {
            let d_qkv = B::packed_attention_backward(qkv, bias, self.0, out, logsumexp, grad);
            grads.register::<B>(parent.id, d_qkv);
        }
    }
}

impl<B: Backend + FusedKernels, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn fused_gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match GeluTanhBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let input = x.primitive().clone();
                prep.finish(input.clone(), B::gelu_tanh(input))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::gelu_tanh(x.into_primitive())),
        }
    }

    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let parents = [x.node(), gamma.node(), beta.node()];
        match LayerNormBackward.prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let [x, gamma, beta] = [x, gamma, beta].map(|t| t.primitive().clone());
                let [y, mean, rstd] = <B as FusedKernels>::layer_norm(
                    x.clone(),
                    gamma.clone(),
                    beta.clone(),
                    epsilon,
                );
                prep.finish([x, gamma, beta, mean, rstd], y)
            }
            OpsKind::UnTracked(prep) => {
                let [y, _, _] = <B as FusedKernels>::layer_norm(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                prep.finish(y)
            }
        }
    }

    fn fused_cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        match CrossEntropyBackward.prepare::<C>([logits.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let [nll, log_probs] = B::cross_entropy(logits.into_primitive(), targets.clone());
                prep.finish((log_probs, targets), nll)
            }
            OpsKind::UnTracked(prep) => {
                let [nll, _] = B::cross_entropy(logits.into_primitive(), targets);
                prep.finish(nll)
            }
        }
    }

    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        let parents = [q.node(), k.node(), v.node()];
        let [q, k, v, bias] = [q, k, v, bias].map(|t| t.into_primitive());
        match AttentionBackward.prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let [out, logsumexp] = <B as FusedKernels>::attention(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    bias.clone(),
                    scale,
                );
                prep.finish(([q, k, v], bias, scale, out.clone(), logsumexp), out)
            }
            OpsKind::UnTracked(prep) => {
                let [out, _] = <B as FusedKernels>::attention(q, k, v, bias, scale);
                prep.finish(out)
            }
        }
    }

    fn fused_packed_attention(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        layout: Packed,
    ) -> FloatTensor<Self> {
        let parents = [qkv.node()];
        let (qkv, bias) = (qkv.into_primitive(), bias.into_primitive());
        match PackedAttentionBackward(layout).prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let [out, logsumexp] = B::packed_attention(qkv.clone(), bias.clone(), layout);
                prep.finish([qkv, bias, out.clone(), logsumexp], out)
            }
            OpsKind::UnTracked(prep) => {
                let [out, _] = B::packed_attention(qkv, bias, layout);
                prep.finish(out)
            }
        }
    }
}

/// GELU with the tanh approximation (`gelu_new`), one kernel each way.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_gelu_tanh(x.into_dispatch()))
}

/// LayerNorm over the last dimension with gain `gamma` and bias `beta` (`[D]`).
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_layer_norm(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
    ))
}

/// softmax(q·kᵀ·scale + bias)·v with LibTorch's flash-attention kernel (CPU) in both directions:
/// q, k, v `[B, H, T, hd]` (k and v with all H heads), `bias` additive, `[B, 1, T, S]`.
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    bias: Tensor<4>,
    scale: f64,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        bias.into_dispatch(),
        scale,
    ))
}

/// `attention` over a packed projection qkv `[B, T, 3·H·hd]` (q, k, v side by side, as GPT-2's
/// `c_attn` writes them) with the queries at `layout.from..T`: `[B, H, T − from, hd]`. The
/// backward pass writes qkv's gradient once, where slicing q, k and v out of it would make
/// three zero-filled copies and sum them.
pub fn packed_attention(qkv: Tensor<3>, bias: Tensor<4>, layout: Packed) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_packed_attention(
        qkv.into_dispatch(),
        bias.into_dispatch(),
        layout,
    ))
}

/// −log softmax(logits)[target] for each row: logits `[N, V]`, targets `[N]` → `[N]`.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_cross_entropy(
        logits.into_dispatch(),
        targets.into_dispatch(),
    ))
}

// The kernels tch does not expose, in src/model/fused.cpp.
unsafe extern "C" {
    fn rlhf_gelu_tanh(
        x: *const torch_sys::C_tensor,
        y: *mut *mut torch_sys::C_tensor,
    ) -> *mut std::ffi::c_char;
    fn rlhf_gelu_tanh_backward(
        x: *const torch_sys::C_tensor,
        grad: *const torch_sys::C_tensor,
        dx: *mut *mut torch_sys::C_tensor,
    ) -> *mut std::ffi::c_char;
    #[allow(clippy::too_many_arguments)]
    fn rlhf_layer_norm_backward(
        grad: *const torch_sys::C_tensor,
        x: *const torch_sys::C_tensor,
        mean: *const torch_sys::C_tensor,
        rstd: *const torch_sys::C_tensor,
        gamma: *const torch_sys::C_tensor,
        beta: *const torch_sys::C_tensor,
        dx: *mut *mut torch_sys::C_tensor,
        d_gamma: *mut *mut torch_sys::C_tensor,
        d_beta: *mut *mut torch_sys::C_tensor,
    ) -> *mut std::ffi::c_char;
    fn rlhf_free_message(message: *mut std::ffi::c_char);
}

/// Panics with LibTorch's message when a shim function reports an error.
///
/// # Safety
/// `error` is null or a NUL-terminated message from the shim, not yet freed.
pub(super) unsafe fn check(error: *mut std::ffi::c_char) {
    if !error.is_null() {
        // SAFETY: as the caller promises; freed once, here.
        let message = unsafe { std::ffi::CStr::from_ptr(error) }.to_string_lossy().into_owned();
        unsafe { rlhf_free_message(error) };
        panic!("LibTorch failed in a fused kernel: {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our GELU kernels against LibTorch's, over the range activations reach and a length that
    /// leaves a remainder after every vector width.
    #[test]
    fn gelu_matches_libtorch_both_ways() {
        let cpu = (tch::Kind::Float, tch::Device::Cpu);
        let x = tch::Tensor::linspace(-12.0, 12.0, 100_003, cpu);
        let grad = tch::Tensor::randn([100_003], cpu);
        let tolerance = |ours: &tch::Tensor, theirs: &tch::Tensor| {
            let err = ((ours - theirs).abs() / (x.abs() + 1.0)).max().double_value(&[]);
            assert!(err < 2e-6, "relative difference {err}");
        };
        let ours = LibTorch::gelu_tanh(TchTensor::new(x.shallow_clone())).tensor;
        tolerance(&ours, &x.gelu("tanh"));
        let ours = LibTorch::gelu_tanh_backward(
            TchTensor::new(x.shallow_clone()),
            TchTensor::new(grad.shallow_clone()),
        )
        .tensor;
        tolerance(&ours, &x.gelu_backward(&grad, "tanh"));
    }
}
