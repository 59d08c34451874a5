//! Building blocks the model families share: `Linear` over flattened tokens, activations,
//! and GPT-style initialisers.

use anyhow::Result;
use burn::module::{Initializer, Param};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation;

use super::{fused, precision};
use crate::bad_input;

/// `linear(x)` for x `[B, T, D_in]`, run as one `[B·T, D_in] × [D_in, D_out]` GEMM in the
/// working precision.
/// LibTorch runs a 3-D input as a broadcast batched matmul whose weight gradient is a batched
/// product plus a reduction; flattening made GPT-2's backward pass 1.6× faster (PERF-NOTES).
pub fn linear_tokens(linear: &Linear, x: Tensor<3>) -> Tensor<3> {
    let [b, t, d] = x.dims();
    let y = precision::linear(linear, x.reshape([b * t, d])); // [B·T, D_out]
    let d_out = y.dims()[1];
    y.reshape([b, t, d_out])
}

/// `x` `[B, T, D]` at the positions `from..T` (a view; `x` itself at 0).
pub fn positions_from(x: Tensor<3>, from: usize) -> Tensor<3> {
    if from == 0 { x } else { x.slice(s![.., from..]) }
}

/// A `Linear` with weights ~ N(0, std) and zero bias, as GPT-2 and Llama initialise them.
pub fn normal_linear(d_in: usize, d_out: usize, bias: bool, std: f64, device: &Device) -> Linear {
    Linear {
        weight: Initializer::Normal { mean: 0.0, std }.init([d_in, d_out], device),
        bias: bias.then(|| Initializer::Zeros.init([d_out], device)),
    }
}

/// LayerNorm over the last dimension with gain and bias (GPT-2, BERT), run as LibTorch's fused
/// kernel in both directions (Burn composes it from element-wise operations).
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub gamma: Param<Tensor<1>>,
    pub beta: Param<Tensor<1>>,
    pub epsilon: f64,
}

impl LayerNorm {
    pub fn new(d: usize, epsilon: f64, device: &Device) -> Self {
        Self {
            gamma: Initializer::Ones.init([d], device),
            beta: Initializer::Zeros.init([d], device),
            epsilon,
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        fused::layer_norm(x, self.gamma.val(), self.beta.val(), self.epsilon)
    }
}

/// The MLP non-linearities `transformers` names in `config.json` (`activation_function`,
/// `hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// tanh approximation: `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`.
    GeluTanh,
    /// exact erf form: `gelu`.
    Gelu,
    Relu,
    /// `silu` / `swish`.
    Silu,
}

impl Activation {
    pub fn from_hf_name(name: &str) -> Result<Self> {
        Ok(match name {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "gelu" => Self::Gelu,
            "relu" => Self::Relu,
            "silu" | "swish" => Self::Silu,
            other => {
                return Err(bad_input!(
                    "unsupported activation `{other}` (supported: gelu_new, gelu_pytorch_tanh, gelu_fast, gelu, relu, silu)"
                ));
            }
        })
    }

    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::GeluTanh => fused::gelu_tanh(x),
            Self::Gelu => activation::gelu(x),
            Self::Relu => activation::relu(x),
            Self::Silu => activation::silu(x),
        }
    }
}

/// `layers` with the first `n` no longer requiring gradients.
pub fn freeze_first<M: Module>(layers: Vec<M>, n: usize) -> Vec<M> {
    layers.into_iter().enumerate().map(|(i, l)| if i < n { l.no_grad() } else { l }).collect()
}
