// The C side of `model::fused`: LibTorch kernels that tch does not expose, and a GELU of our
// own, reached from Rust through plain C functions. Tensors cross as the `at::Tensor*` that tch
// hands out; results come back as new `at::Tensor*` that Rust owns (tch frees them). Each
// function returns null, or a message (free it with rlhf_free_message) when LibTorch throws.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

namespace {

// GELU's tanh form, 0.5·x·(1 + tanh u) with u = √(2/π)·(x + 0.044715·x³), written as
// x·σ(2u): one exponential per element where LibTorch evaluates a full tanh (and evaluates it
// again in the backward pass). Each helper is plain arithmetic, so the loops below vectorise.
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

// e^x to within 2·10⁻⁷ relative, saturating beyond ±87 (where σ is 0 or 1 in f32 anyway).
inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.0f), 87.0f);
  // x = n·ln 2 + r with |r| ≤ ln 2 / 2; n rounded by the 1.5·2²³ trick, which vectorises.
  const float n = (x * 1.4426950408889634f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  float p = 1.0f / 5040;  // e^r by its Taylor series to r⁷
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t two_to_n = (static_cast<int32_t>(n) + 127) << 23;
  return p * __builtin_bit_cast(float, two_to_n);
}

// σ(2u) = (1 + tanh u) / 2 and 1 − σ(2u), neither of them formed by cancellation.
inline float sigmoid_2u(float x, float* complement) {
  const float e = exp_approx(2.0f * kSqrt2OverPi * (x + kCubic * x * x * x));
  *complement = 1.0f / (1.0f + e);
  return e * *complement;
}

inline void gelu_span(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float complement;
    y[i] = x[i] * sigmoid_2u(x[i], &complement);
  }
}

// d/dx x·σ(2u) = σ + 2x·σ(1 − σ)·du/dx.
inline void gelu_backward_span(const float* x, const float* grad, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    float complement;
    const float s = sigmoid_2u(v, &complement);
    const float du = kSqrt2OverPi * (1.0f + 3.0f * kCubic * v * v);
    dx[i] = grad[i] * (s + 2.0f * v * s * complement * du);
  }
}

// The loops compiled for AVX-512, chosen at run time; elsewhere LibTorch's kernels run.
__attribute__((target("avx512f,avx512dq,fma"))) void gelu_avx512(const float* x, float* y,
                                                                  int64_t n) {
  gelu_span(x, y, n);
}

__attribute__((target("avx512f,avx512dq,fma"))) void gelu_backward_avx512(const float* x,
                                                                           const float* grad,
                                                                           float* dx, int64_t n) {
  gelu_backward_span(x, grad, dx, n);
}

bool runs_own_gelu(const at::Tensor& x) {
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  return avx512 && x.device().is_cpu() && x.scalar_type() == at::kFloat;
}

}  // namespace

extern "C" {

char* rlhf_gelu_tanh(const at::Tensor* x, at::Tensor** y) {
  try {
    if (!runs_own_gelu(*x)) {
      *y = new at::Tensor(at::gelu(*x, "tanh"));
      return nullptr;
    }
    const at::Tensor input = x->contiguous();
    at::Tensor out = at::empty_like(input);
    const float* in = input.const_data_ptr<float>();
    float* o = out.mutable_data_ptr<float>();
    at::parallel_for(0, input.numel(), at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
      gelu_avx512(in + begin, o + begin, end - begin);
    });
    *y = new at::Tensor(std::move(out));
    return nullptr;
  } catch (const std::exception& e) {
    return strdup(e.what());
  }
}

char* rlhf_gelu_tanh_backward(const at::Tensor* x, const at::Tensor* grad, at::Tensor** dx) {
  try {
    if (!runs_own_gelu(*x) || grad->scalar_type() != at::kFloat) {
      *dx = new at::Tensor(at::gelu_backward(*grad, *x, "tanh"));
      return nullptr;
    }
    const at::Tensor input = x->contiguous();
    const at::Tensor g = grad->contiguous();
    at::Tensor out = at::empty_like(input);
    const float* in = input.const_data_ptr<float>();
    const float* gp = g.const_data_ptr<float>();
    float* o = out.mutable_data_ptr<float>();
    at::parallel_for(0, input.numel(), at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
      gelu_backward_avx512(in + begin, gp + begin, o + begin, end - begin);
    });
    *dx = new at::Tensor(std::move(out));
    return nullptr;
  } catch (const std::exception& e) {
    return strdup(e.what());
  }
}

// PyTorch's fused AdamW kernel (what `torch.optim.AdamW(fused=True)` runs): updates `param`,
// `exp_avg` and `exp_avg_sq` in place for update number `step` (from 1), reading the gradient
// as `grad_factor · grad` (through the kernel's `grad_scale`, which divides, as AMP's unscaling
// does, and writes the scaled gradient back into `grad`). One pass over a parameter reads it,
// its gradient and both moments and writes the three back; the composed form makes nine, and
// clipping would add one more. The kernel pairs elements in memory order, so all four must be
// contiguous.
char* rlhf_fused_adamw(at::Tensor* param, at::Tensor* grad, at::Tensor* exp_avg,
                       at::Tensor* exp_avg_sq, double lr, double beta1, double beta2,
                       double weight_decay, double eps, double step, double grad_factor) {
  try {
    const auto scalar = [&](double x) {
      return at::full({}, x, param->options().dtype(at::kFloat));
    };
    std::optional<at::Tensor> grad_scale;
    if (grad_factor != 1.0) grad_scale = scalar(1.0 / grad_factor);
    // The kernel reads the step count from a tensor, as the optimizer's state keeps it.
    at::_fused_adamw_({*param}, {*grad}, {*exp_avg}, {*exp_avg_sq}, {}, {scalar(step)}, lr, beta1,
                      beta2, weight_decay, eps, /*amsgrad=*/false, /*maximize=*/false, grad_scale);
    return nullptr;
  } catch (const std::exception& e) {
    return strdup(e.what());
  }
}

// LayerNorm's backward pass over the last dimension, as autograd runs it for
// `torch.nn.functional.layer_norm`: one kernel for dx and one reduction for dγ and dβ, from
// the row mean and reciprocal standard deviation the forward kernel saved. tch leaves this
// function out (its output mask is a std::array<bool, 3>). β is read for dβ's shape only.
char* rlhf_layer_norm_backward(const at::Tensor* grad, const at::Tensor* x,
                               const at::Tensor* mean, const at::Tensor* rstd,
                               const at::Tensor* gamma, const at::Tensor* beta,
                               at::Tensor** dx, at::Tensor** d_gamma, at::Tensor** d_beta) {
  try {
    auto [gx, ggamma, gbeta] = at::native_layer_norm_backward(
        *grad, *x, {x->size(-1)}, *mean, *rstd, *gamma, *beta, {true, true, true});
    *dx = new at::Tensor(std::move(gx));
    *d_gamma = new at::Tensor(std::move(ggamma));
    *d_beta = new at::Tensor(std::move(gbeta));
    return nullptr;
  } catch (const std::exception& e) {
    return strdup(e.what());
  }
}

void rlhf_free_message(char* message) { std::free(message); }
}
