// The C side of `model::llama_step`: one decoding step (one new token per row) through every
// block of a Llama-family decoder, in one call. Called from Rust per op, a step is ~70 LibTorch
// operations a block, each crossing Burn, tch and the dispatcher; here a block is five products
// and a few loops over vectors of a few hundred numbers, then the LM head. f32 activations on
// the CPU (Rust checks); weights f32, or int8 for the smaller-weights path.
//
// Per block, as `llama.rs` computes it:
//   x += o(attention(rope(q), rope(k), v))       q, k, v = qkv(rms_norm(x))
//   x += down(silu(gate) · up)                   gate, up = gate_up(rms_norm(x))

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <ATen/ATen.h>

namespace {

// Up to this many rows a product runs as (W·xᵀ)ᵀ, which streams W, where x·Wᵀ would have MKL
// pack all of W first (`plain_ops::SKINNY_ROWS`).
constexpr int64_t kSkinnyRows = 64;

// A product's weight W [out, in] (`nn.Linear`'s layout), f32 or int8 with one scale per
// output row; its bias may be absent (null), as may the scales (f32).
struct Product {
  const at::Tensor* weight;
  const at::Tensor* scales;
  const at::Tensor* bias;
};

// x·Wᵀ + b for x [B, in]: contiguous [B, out], f32. Int8 weights run LibTorch's weight-only
// int8 kernel, which reads bf16 activations (with f32 ones it takes a path 4× slower).
at::Tensor project(const at::Tensor& x, const Product& p) {
  const at::Tensor& w = *p.weight;
  at::Tensor y;
  if (p.scales != nullptr) {
    y = at::_weight_int8pack_mm(x.to(at::kBFloat16), w, *p.scales).to(at::kFloat);
  } else {
    y = x.size(0) <= kSkinnyRows ? at::matmul(w, x.t()).t() : at::matmul(x, w.t());
  }
  if (p.bias != nullptr) y = y + *p.bias;
  return y.contiguous();
}

// y = x / √(mean(x²) + ε) · w over each row of d numbers.
void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t d, float eps) {
  for (int64_t r = 0; r < rows; ++r, x += d, y += d) {
    float sum = 0.0f;
    for (int64_t i = 0; i < d; ++i) sum += x[i] * x[i];
    const float scale = 1.0f / std::sqrt(sum / d + eps);
    for (int64_t i = 0; i < d; ++i) y[i] = x[i] * scale * w[i];
  }
}

// Rotates one head in place, "rotate half" pairing: x·cos + (−x₂, x₁)·sin.
void rotate(float* x, const float* cos, const float* sin, int64_t hd) {
  const int64_t half = hd / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i], b = x[i + half];
    x[i] = a * cos[i] - b * sin[i];
    x[i + half] = b * cos[i + half] + a * sin[i + half];
  }
}

// y = silu(gate) · up for each row of gu = [gate | up], n numbers each.
void silu_mul(const float* gu, float* y, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r, gu += 2 * n, y += n) {
    for (int64_t i = 0; i < n; ++i) {
      const float g = gu[i];
      y[i] = g / (1.0f + std::exp(-g)) * gu[n + i];
    }
  }
}

at::Tensor normed(const at::Tensor& x, const at::Tensor& w, float eps) {
  at::Tensor y = at::empty_like(x);
  rms_norm(x.const_data_ptr<float>(), w.const_data_ptr<float>(), y.mutable_data_ptr<float>(),
           x.size(0), x.size(1), eps);
  return y;
}

// The weights of one block, in the order Rust lays them out (14 tensors).
struct Block {
  const at::Tensor* input_norm;
  Product qkv;
  Product o;
  const at::Tensor* post_norm;
  Product gate_up;
  Product down;
};
constexpr int64_t kBlockTensors = 14;

Product product(const at::Tensor* const* w) { return Product{w[0], w[1], w[2]}; }

Block block_at(const at::Tensor* const* w) {
  return Block{w[0], product(w + 1), product(w + 4), w[7], product(w + 8), product(w + 11)};
}

struct Shape {
  int64_t n_head, n_kv_head, head_dim;
  float eps;
  double scale;
};

// One block over x [B, D] in place; writes the rows' new keys and values at `at` of
// keys/values [B, KV, capacity, hd] (same strides, hd contiguous), which attention then reads
// up to `at` inclusive.
void block(at::Tensor& x, const Block& w, at::Tensor& keys, at::Tensor& values, int64_t at,
           const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& allowed,
           const Shape& s) {
  const int64_t rows = x.size(0), hd = s.head_dim;
  const int64_t q_width = s.n_head * hd, kv_width = s.n_kv_head * hd;
  at::Tensor qkv = project(normed(x, *w.input_norm, s.eps), w.qkv);
  float* qkv_data = qkv.mutable_data_ptr<float>();
  // Strides, not sizes: a buffer may be a view into a longer one (`KvCache::trim_front`).
  const int64_t row_stride = keys.stride(0), head_stride = keys.stride(1), at_offset = at * keys.stride(2);
  float* key_data = keys.mutable_data_ptr<float>();
  float* value_data = values.mutable_data_ptr<float>();
  for (int64_t b = 0; b < rows; ++b) {
    float* row = qkv_data + b * (q_width + 2 * kv_width);
    const float* c = cos.const_data_ptr<float>() + b * hd;
    const float* sn = sin.const_data_ptr<float>() + b * hd;
    for (int64_t h = 0; h < s.n_head; ++h) rotate(row + h * hd, c, sn, hd);
    for (int64_t h = 0; h < s.n_kv_head; ++h) {
      float* k = row + q_width + h * hd;
      rotate(k, c, sn, hd);
      const int64_t slot = b * row_stride + h * head_stride + at_offset;
      std::memcpy(key_data + slot, k, hd * sizeof(float));
      std::memcpy(value_data + slot, row + q_width + kv_width + h * hd, hd * sizeof(float));
    }
  }
  // Query heads that share a kv head stand as that head's queries: [B, KV, H/KV, hd].
  const at::Tensor q = qkv.narrow(1, 0, q_width).view({rows, s.n_kv_head, s.n_head / s.n_kv_head, hd});
  const at::Tensor k = keys.narrow(2, 0, at + 1), v = values.narrow(2, 0, at + 1);
  const at::Tensor y = at::scaled_dot_product_attention(q, k, v, allowed, 0.0, false, s.scale);
  x.add_(project(y.reshape({rows, q_width}), w.o));

  const at::Tensor gate_up = project(normed(x, *w.post_norm, s.eps), w.gate_up);
  const int64_t inner = gate_up.size(1) / 2;
  at::Tensor act = at::empty({rows, inner}, x.options());
  silu_mul(gate_up.const_data_ptr<float>(), act.mutable_data_ptr<float>(), rows, inner);
  x.add_(project(act, w.down));
}

}  // namespace

extern "C" {

// x [B, D]: the new tokens' embeddings. weights: kBlockTensors per block (see Block), then the
// final norm and the LM head's weight and scales (a Product without bias). keys/values: one
// [B, KV, capacity, hd] buffer each per block, uniquely owned, written in place at `at`.
// cos/sin [B, hd]: the rows' rotary tables. allowed [B, 1, 1, at + 1]: true where a row's query
// may read a key. logits: the next token's logits [B, V].
char* rlhf_llama_step(const at::Tensor* x, const at::Tensor* const* weights, int64_t n_blocks,
                      at::Tensor* const* keys, at::Tensor* const* values, int64_t at,
                      const at::Tensor* cos, const at::Tensor* sin, const at::Tensor* allowed,
                      int64_t n_head, int64_t n_kv_head, double eps, double scale,
                      at::Tensor** logits) {
  try {
    const Shape shape{n_head, n_kv_head, cos->size(1), static_cast<float>(eps), scale};
    at::Tensor hidden = x->contiguous().clone();
    const at::Tensor c = cos->contiguous(), s = sin->contiguous();
    for (int64_t i = 0; i < n_blocks; ++i) {
      TORCH_CHECK(keys[i]->strides() == values[i]->strides() && keys[i]->stride(3) == 1 &&
                  keys[i]->size(2) > at, "KV cache buffers without room at ", at);
      block(hidden, block_at(weights + i * kBlockTensors), *keys[i], *values[i], at, c, s,
            *allowed, shape);
    }
    const at::Tensor* const* tail = weights + n_blocks * kBlockTensors;
    const at::Tensor last = normed(hidden, *tail[0], shape.eps);
    *logits = new at::Tensor(project(last, Product{tail[1], tail[2], nullptr}));
    return nullptr;
  } catch (const std::exception& e) {
    return strdup(e.what());
  }
}

}  // extern "C"
