//! Mixed precision as `torch.autocast(dtype=torch.bfloat16)` runs it: matrix products and
//! attention in bf16, everything else — weights, optimizer state, norms, softmax, losses — in
//! f32. Products take bf16 copies of their f32 operands and hand back f32, so gradients reach
//! the f32 weights through the casts.
//!
//! Process-wide, as autocast's context is: a command sets it once, before the first forward
//! pass (`train.precision`, `--precision`).

use std::sync::Once;
use std::sync::atomic::{AtomicU8, Ordering};

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::FloatDType;
use serde::{Deserialize, Serialize};

use super::{lora, plain_ops};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Matrix products and attention in bf16, the rest in f32.
    Bf16,
    /// Decoding only (generate, chat, serve): a Llama-family model's one-token steps read
    /// int8 weights, one scale per output row (`llama_step`); the rest runs in f32.
    Int8,
}

static PRECISION: AtomicU8 = AtomicU8::new(0);

/// Sets the working precision. bf16 on a CPU without LibTorch's bf16 kernels is allowed but
/// said once, on stderr: LibTorch emulates it there, its products 77× slower than f32 (1.6
/// against 121 GFLOP/s on a 2-core AMD EPYC, Zen 2), which would otherwise look like a hang.
pub fn set(precision: Precision, device: &Device) {
    PRECISION.store(precision as u8, Ordering::Relaxed);
    static SAID: Once = Once::new();
    if precision == Precision::Bf16 && crate::device::is_cpu(device) && !cpu_has_bf16() {
        SAID.call_once(|| eprintln!("{EMULATED_BF16}"));
    }
}

pub const EMULATED_BF16: &str = "warning: LibTorch emulates bf16 on this CPU (its bf16 kernels \
     need AVX-512), so matrix products run tens of times slower than in f32; use f32 here \
     (`train.precision`, `--precision`)";

/// Whether LibTorch runs bf16 products in oneDNN's kernels on this CPU: the test PyTorch makes
/// (`mkldnn_bf16_device_check`): AVX-512 BW, VL and DQ, or Arm's bf16 instructions.
pub fn cpu_has_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512dq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("bf16")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

impl Precision {
    /// As written in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::Int8 => "int8",
        }
    }
}

pub fn get() -> Precision {
    match PRECISION.load(Ordering::Relaxed) {
        1 => Precision::Bf16,
        2 => Precision::Int8,
        _ => Precision::F32,
    }
}

/// `x` in the dtype products run in (a no-op in f32, or when `x` already is).
pub fn low<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    match get() {
        Precision::F32 | Precision::Int8 => x,
        Precision::Bf16 => x.cast(FloatDType::BF16),
    }
}

/// `x` back in f32 (a no-op when it is).
pub fn full<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.cast(FloatDType::F32)
}

/// `a · b` in the working precision, f32 out.
pub fn matmul<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    match get() {
        Precision::F32 | Precision::Int8 => a.matmul(b),
        Precision::Bf16 => full(low(a).matmul(low(b))),
    }
}

/// `x · W + b` for x `[N, D_in]` in the working precision, f32 out; a LoRA-adapted `linear`
/// adds its low-rank update (`lora::forward`).
pub fn linear(linear: &Linear, x: Tensor<2>) -> Tensor<2> {
    if let Some(adapter) = linear.weight.adapter() {
        return lora::forward(linear, adapter, x, product);
    }
    match get() {
        // Inference: the product's orientation follows the weight's layout (decode_layout).
        Precision::F32 | Precision::Int8 if !x.is_autodiff() => {
            let y = plain_ops::skinny_matmul(x, linear.weight.val());
            match &linear.bias {
                Some(bias) => y + bias.val().unsqueeze(),
                None => y,
            }
        }
        Precision::F32 | Precision::Int8 => linear.forward(x),
        Precision::Bf16 => {
            let y = low(x).matmul(low(linear.weight.val()));
            let y = match &linear.bias {
                Some(bias) => y + low(bias.val()).unsqueeze(),
                None => y,
            };
            full(y)
        }
    }
}

/// `x · w` for x `[N, D_in]` and w `[D_in, D_out]` in the working precision, f32 out.
fn product(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    match get() {
        Precision::F32 | Precision::Int8 if !x.is_autodiff() => plain_ops::skinny_matmul(x, w),
        Precision::F32 | Precision::Int8 => x.matmul(w),
        Precision::Bf16 => full(low(x).matmul(low(w))),
    }
}
