// The C side of `model::fused::adamw_update`: PyTorch's fused AdamW kernel (what
// `torch.optim.AdamW(fused=True)` runs), reached from Rust through one C function. One pass
// over a parameter reads it, its gradient and both moments and writes the three back in place;
// the composed form makes nine. Tensors cross as the `at::Tensor*` that tch hands out; the
// kernel pairs their elements in memory order, so all four must be contiguous.

#include <cstdlib>
#include <cstring>

#include <ATen/ATen.h>

extern "C" {

// Updates `param`, `exp_avg` and `exp_avg_sq` in place for update number `step` (from 1).
// Returns null, or a message (free it with rlhf_free_message) when LibTorch throws.
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

void rlhf_free_message(char* message) { std::free(message); }
}
