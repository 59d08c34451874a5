// The C side of `model::fused`: LibTorch kernels that tch does not expose, reached from Rust
// through plain C functions. Tensors cross as the `at::Tensor*` that tch hands out; results
// come back as new `at::Tensor*` that Rust owns (tch frees them). Each function returns null,
// or a message (free it with rlhf_free_message) when LibTorch throws.

#include <cstdlib>
#include <cstring>

#include <ATen/ATen.h>

extern "C" {

// PyTorch's fused AdamW kernel (what `torch.optim.AdamW(fused=True)` runs): updates `param`,
// `exp_avg` and `exp_avg_sq` in place for update number `step` (from 1). One pass over a
// parameter reads it, its gradient and both moments and writes the three back; the composed
// form makes nine. The kernel pairs elements in memory order, so all four must be contiguous.
char* rlhf_fused_adamw(at::Tensor* param, const at::Tensor* grad, at::Tensor* exp_avg,
                       at::Tensor* exp_avg_sq, double lr, double beta1, double beta2,
                       double weight_decay, double eps, double step) {
  try {
    // The kernel reads the step count from a tensor, as the optimizer's state keeps it.
    at::Tensor steps = at::full({}, step, param->options().dtype(at::kFloat));
    at::_fused_adamw_({*param}, {*grad}, {*exp_avg}, {*exp_avg_sq}, {}, {steps}, lr, beta1, beta2,
                      weight_decay, eps, /*amsgrad=*/false, /*maximize=*/false);
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
