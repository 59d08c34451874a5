// The C side of `model::llama_step`: new tokens (one a row when decoding, a prompt's when
// prefilling) through every block of a Llama-family decoder, in one call. Called from Rust per
// op, a step is ~70 LibTorch operations a block, each crossing Burn, tch and the dispatcher;
// here a block is four products, attention and a few loops over vectors of a few hundred
// numbers, then the LM head.
// f32 activations on the CPU (Rust checks); weights f32, or int8 for the smaller-weights path.
//
// Per block, as `llama.rs` computes it:
//   x += o(attention(rope(q), rope(k), v))       q, k, v = qkv(rms_norm(x))
//   x += down(silu(gate) · up)                   gate, up = gate_up(rms_norm(x))

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

namespace {

// Up to this many rows an f32 product streams W once for all rows (`skinny_product`); past it
// MKL's blocked kernel (as `plain_ops::SKINNY_ROWS`).
constexpr int64_t kSkinnyRows = 64;

// A product's weight W [out, in] (`nn.Linear`'s layout), f32 or int8 with one f32 scale per
// output row; its bias may be absent (null), as may the scales (f32).
struct Product {
  const at::Tensor* weight;
  const at::Tensor* scales;
  const at::Tensor* bias;
};

// Σᵢ w[i] · x[b, i] for N batch rows of x (rows `in` apart), two accumulators a row (an
// FMA's latency is four cycles). N is fixed at compile time so that the accumulators live in
// registers: with N a run-time count they went through memory.
template <typename Vec, int N, typename W>
inline void dots(const W* w, const float* x, int64_t in, float* sums) {
  constexpr int64_t kWidth = Vec::kWidth;
  typename Vec::Reg acc[N][2];
  for (int b = 0; b < N; ++b) acc[b][0] = acc[b][1] = Vec::zero();
  int64_t i = 0;
  for (; i + 2 * kWidth <= in; i += 2 * kWidth) {
    const auto w0 = Vec::widen(w + i), w1 = Vec::widen(w + i + kWidth);
    for (int b = 0; b < N; ++b) {
      acc[b][0] = Vec::fma(w0, Vec::load(x + b * in + i), acc[b][0]);
      acc[b][1] = Vec::fma(w1, Vec::load(x + b * in + i + kWidth), acc[b][1]);
    }
  }
  for (int b = 0; b < N; ++b) {
    float sum = Vec::sum(Vec::add(acc[b][0], acc[b][1]));
    for (int64_t j = i; j < in; ++j) sum += w[j] * x[b * in + j];
    sums[b] = sum;
  }
}

// Σᵢ W[o + r, i] · x[b, i] for four weight rows r and N batch rows of x (rows `in` apart),
// one accumulator each: every vector loaded feeds four or N products, so the many rows of a
// prompt are bound by arithmetic rather than by loads. 4 · N accumulators and four weight
// vectors fit AVX-512's 32 registers (not AVX2's 16).
template <typename Vec, int N, typename W>
inline void tile(const W* w, const float* x, int64_t in, float sums[4][4]) {
  constexpr int64_t kWidth = Vec::kWidth;
  typename Vec::Reg acc[4][N];
  for (int r = 0; r < 4; ++r)
    for (int b = 0; b < N; ++b) acc[r][b] = Vec::zero();
  int64_t i = 0;
  for (; i + kWidth <= in; i += kWidth) {
    typename Vec::Reg rows[4];
    for (int r = 0; r < 4; ++r) rows[r] = Vec::widen(w + r * in + i);
    for (int b = 0; b < N; ++b) {
      const auto xb = Vec::load(x + b * in + i);
      for (int r = 0; r < 4; ++r) acc[r][b] = Vec::fma(rows[r], xb, acc[r][b]);
    }
  }
  for (int r = 0; r < 4; ++r) {
    for (int b = 0; b < N; ++b) {
      float sum = Vec::sum(acc[r][b]);
      for (int64_t j = i; j < in; ++j) sum += w[r * in + j] * x[b * in + j];
      sums[r][b] = sum;
    }
  }
}

// From this many rows (a prompt, or a large batch) the skinny product runs in tiles.
constexpr int64_t kTileRows = 16;

// Calls f(std::integral_constant<int, n>) for n from 1 to 4: `dots` and `tile` take their
// count of batch rows at compile time.
template <typename F>
inline void with_rows(int64_t n, F&& f) {
  switch (n) {
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    default: f(std::integral_constant<int, 1>{});
  }
}

// The skinny product y[b, o] = scale[o] · Σᵢ W[o, i] · x[b, i] over the output rows
// [begin, end), W f32 (scale 1) or int8: each weight row is read from memory once and reused
// from L1 by every batch row, four batch rows at a time (and four weight rows at a time from
// kTileRows rows on, with AVX-512). A decoding step is bound by reading the weights, and MKL's
// sgemm at 8 rows runs a step 1.4× slower than this loop (docs/performance.md). The same loop
// at two vector widths; `Vec` says how to load, widen and add up.
template <typename Vec, typename W>
void skinny_rows(const W* weights, const float* scales, const float* x, float* y, int64_t rows,
                 int64_t in, int64_t out, int64_t begin, int64_t end) {
  const auto put = [&](int64_t b, int64_t o, float sum) {
    y[b * out + o] = scales == nullptr ? sum : sum * scales[o];
  };
  if (rows >= kTileRows && Vec::kWidth == 16) {
    for (; begin + 4 <= end; begin += 4) {
      const W* w = weights + begin * in;
      for (int64_t b0 = 0; b0 < rows; b0 += 4) {
        float sums[4][4];
        const float* xb = x + b0 * in;
        const int64_t n = std::min<int64_t>(4, rows - b0);
        with_rows(n, [&](auto N) { tile<Vec, decltype(N)::value>(w, xb, in, sums); });
        for (int64_t r = 0; r < 4; ++r)
          for (int64_t b = 0; b < n; ++b) put(b0 + b, begin + r, sums[r][b]);
      }
    }
  }
  for (int64_t o = begin; o < end; ++o) {
    const W* w = weights + o * in;
    for (int64_t b0 = 0; b0 < rows; b0 += 4) {
      float sums[4];
      const float* xb = x + b0 * in;
      const int64_t n = std::min<int64_t>(4, rows - b0);
      with_rows(n, [&](auto N) { dots<Vec, decltype(N)::value>(w, xb, in, sums); });
      for (int64_t b = 0; b < n; ++b) put(b0 + b, o, sums[b]);
    }
  }
}

// The vector widths this CPU runs (the loops below pick at run time).
const bool kAvx512 = __builtin_cpu_supports("avx512f");
const bool kAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");

#define RLHF_AVX512 __attribute__((target("avx512f")))
#define RLHF_AVX2 __attribute__((target("avx2,fma")))

struct Avx512 {
  using Reg = __m512;
  static constexpr int64_t kWidth = 16;
  RLHF_AVX512 static Reg zero() { return _mm512_setzero_ps(); }
  RLHF_AVX512 static Reg load(const float* x) { return _mm512_loadu_ps(x); }
  RLHF_AVX512 static Reg widen(const float* w) { return _mm512_loadu_ps(w); }
  RLHF_AVX512 static Reg widen(const int8_t* q) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes));
  }
  RLHF_AVX512 static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  RLHF_AVX512 static Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
  RLHF_AVX512 static float sum(Reg a) { return _mm512_reduce_add_ps(a); }
  RLHF_AVX512 static Reg all(float a) { return _mm512_set1_ps(a); }
  RLHF_AVX512 static void store(float* y, Reg a) { _mm512_storeu_ps(y, a); }
};

struct Avx2 {
  using Reg = __m256;
  static constexpr int64_t kWidth = 8;
  RLHF_AVX2 static Reg zero() { return _mm256_setzero_ps(); }
  RLHF_AVX2 static Reg load(const float* x) { return _mm256_loadu_ps(x); }
  RLHF_AVX2 static Reg widen(const float* w) { return _mm256_loadu_ps(w); }
  RLHF_AVX2 static Reg widen(const int8_t* q) {
    const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
  }
  RLHF_AVX2 static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  RLHF_AVX2 static Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
  RLHF_AVX2 static Reg all(float a) { return _mm256_set1_ps(a); }
  RLHF_AVX2 static void store(float* y, Reg a) { _mm256_storeu_ps(y, a); }
  RLHF_AVX2 static float sum(Reg a) {
    const __m128 half = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    const __m128 pairs = _mm_add_ps(half, _mm_movehl_ps(half, half));
    return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)));
  }
};

// flatten: the loop and the vector helpers inlined here, where their instruction set is on.
template <typename W>
RLHF_AVX512 __attribute__((flatten)) void skinny_rows_avx512(const W* w, const float* s,
    const float* x, float* y, int64_t rows, int64_t in, int64_t out, int64_t begin, int64_t end) {
  skinny_rows<Avx512>(w, s, x, y, rows, in, out, begin, end);
}

template <typename W>
RLHF_AVX2 __attribute__((flatten)) void skinny_rows_avx2(const W* w, const float* s,
    const float* x, float* y, int64_t rows, int64_t in, int64_t out, int64_t begin, int64_t end) {
  skinny_rows<Avx2>(w, s, x, y, rows, in, out, begin, end);
}

// One query head's attention over n cached positions of its kv head (`stride` floats apart),
// those where `allowed` is true: y = softmax(q·kᵀ · scale) · v, hd numbers. `scores` holds n.
template <typename Vec>
void attend(const float* q, const float* keys, const float* values, int64_t stride,
            const bool* allowed, int64_t n, int64_t hd, float scale, float* scores, float* y) {
  constexpr int64_t kWidth = Vec::kWidth;
  const int64_t vectors = hd / kWidth * kWidth;
  float max = -INFINITY;
  for (int64_t t = 0; t < n; ++t) {
    if (!allowed[t]) continue;
    const float* k = keys + t * stride;
    auto acc = Vec::zero();
    for (int64_t i = 0; i < vectors; i += kWidth)
      acc = Vec::fma(Vec::load(q + i), Vec::load(k + i), acc);
    float dot = Vec::sum(acc);
    for (int64_t i = vectors; i < hd; ++i) dot += q[i] * k[i];
    scores[t] = dot * scale;
    max = std::max(max, scores[t]);
  }
  float total = 0.0f;
  for (int64_t t = 0; t < n; ++t) {
    scores[t] = allowed[t] ? std::exp(scores[t] - max) : 0.0f;
    total += scores[t];
  }
  std::fill(y, y + hd, 0.0f);
  for (int64_t t = 0; t < n; ++t) {
    if (scores[t] == 0.0f) continue;
    const float p = scores[t] / total;
    const float* v = values + t * stride;
    const auto pv = Vec::all(p);
    for (int64_t i = 0; i < vectors; i += kWidth)
      Vec::store(y + i, Vec::fma(pv, Vec::load(v + i), Vec::load(y + i)));
    for (int64_t i = vectors; i < hd; ++i) y[i] += p * v[i];
  }
}

RLHF_AVX512 __attribute__((flatten)) void attend_avx512(const float* q, const float* k,
    const float* v, int64_t stride, const bool* allowed, int64_t n, int64_t hd, float scale,
    float* scores, float* y) {
  attend<Avx512>(q, k, v, stride, allowed, n, hd, scale, scores, y);
}

RLHF_AVX2 __attribute__((flatten)) void attend_avx2(const float* q, const float* k,
    const float* v, int64_t stride, const bool* allowed, int64_t n, int64_t hd, float scale,
    float* scores, float* y) {
  attend<Avx2>(q, k, v, stride, allowed, n, hd, scale, scores, y);
}

// x [B, in] f32 times W [out, in] (f32, or int8 with f32 scales [out]): y [B, out] f32, the
// weights streamed once for all rows. LibTorch's own weight-only int8 kernel reads bf16
// activations and runs 4× slower with f32 ones. CPUs without AVX2 take LibTorch's products.
at::Tensor skinny_product(const at::Tensor& x, const at::Tensor& w, const at::Tensor* scales) {
  if (!kAvx512 && !kAvx2) {
    const at::Tensor weight = scales ? w.to(at::kFloat) * scales->unsqueeze(1) : w;
    return at::matmul(weight, x.t()).t();
  }
  const at::Tensor input = x.contiguous();
  const int64_t rows = input.size(0), in = input.size(1), out = w.size(0);
  at::Tensor y = at::empty({rows, out}, input.options());
  const float* sp = scales ? scales->const_data_ptr<float>() : nullptr;
  const float* xp = input.const_data_ptr<float>();
  float* yp = y.mutable_data_ptr<float>();
  at::parallel_for(0, out, 64, [&](int64_t begin, int64_t end) {
    if (scales) {
      const int8_t* q = w.const_data_ptr<int8_t>();
      if (kAvx512) skinny_rows_avx512(q, sp, xp, yp, rows, in, out, begin, end);
      else skinny_rows_avx2(q, sp, xp, yp, rows, in, out, begin, end);
    } else {
      const float* f = w.const_data_ptr<float>();
      if (kAvx512) skinny_rows_avx512(f, sp, xp, yp, rows, in, out, begin, end);
      else skinny_rows_avx2(f, sp, xp, yp, rows, in, out, begin, end);
    }
  });
  return y;
}

// x·Wᵀ + b for x [B, in]: contiguous [B, out], f32. Up to a few dozen rows, and for int8,
// `skinny_product` (MKL's matrix-vector product ran a one-row step 2.5× slower on an AMD EPYC);
// past them the product is no longer bound by reading W and MKL's blocked kernel is faster.
at::Tensor project(const at::Tensor& x, const Product& p) {
  const at::Tensor& w = *p.weight;
  const int64_t rows = x.size(0);
  at::Tensor y = p.scales != nullptr || rows <= kSkinnyRows ? skinny_product(x, w, p.scales)
                                                             : at::matmul(x, w.t());
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

// The new tokens' queries (the first n_head · hd numbers of each qkv row; `tokens` a batch
// row, row-major) attending over the keys and values that `allowed` [B · tokens, at + tokens]
// lets them read: [B · tokens, n_head · hd]. Query head h reads kv head h / (n_head /
// n_kv_head). A decoding step's head is a few hundred numbers, where LibTorch's attention spent
// more time dispatching than computing: a loop of our own, the heads split over the threads.
// A prompt's attention is products of matrices, LibTorch's blocked kernel's work.
at::Tensor attention(const at::Tensor& qkv, const at::Tensor& keys, const at::Tensor& values,
                     int64_t at, int64_t tokens, const at::Tensor& allowed, const Shape& s) {
  const int64_t rows = qkv.size(0), hd = s.head_dim, q_width = s.n_head * hd;
  const int64_t seen = at + tokens, group = s.n_head / s.n_kv_head;
  if (tokens > 1 || (!kAvx512 && !kAvx2)) {
    const int64_t batch = rows / tokens;
    const at::Tensor q =
        qkv.narrow(1, 0, q_width).reshape({batch, tokens, s.n_head, hd}).transpose(1, 2);
    const auto heads = [&](const at::Tensor& x) {
      return x.narrow(2, 0, seen).repeat_interleave(group, 1);
    };
    const at::Tensor mask = allowed.view({batch, 1, tokens, seen});
    return at::scaled_dot_product_attention(q, heads(keys), heads(values), mask, 0.0, false,
                                            s.scale)
        .transpose(1, 2)
        .reshape({rows, q_width});
  }
  at::Tensor y = at::empty({rows, q_width}, qkv.options());
  const int64_t qkv_width = qkv.size(1);
  const float* q = qkv.const_data_ptr<float>();
  const float* key_data = keys.const_data_ptr<float>();
  const float* value_data = values.const_data_ptr<float>();
  const bool* allow = allowed.const_data_ptr<bool>();
  float* out = y.mutable_data_ptr<float>();
  const float scale = static_cast<float>(s.scale);
  at::parallel_for(0, rows * s.n_head, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(seen);
    for (int64_t j = begin; j < end; ++j) {
      const int64_t b = j / s.n_head, h = j % s.n_head;
      const int64_t slot = b * keys.stride(0) + h / group * keys.stride(1);
      const float* qh = q + b * qkv_width + h * hd;
      float* yh = out + b * q_width + h * hd;
      if (kAvx512)
        attend_avx512(qh, key_data + slot, value_data + slot, keys.stride(2), allow + b * seen,
                      seen, hd, scale, scores.data(), yh);
      else
        attend_avx2(qh, key_data + slot, value_data + slot, keys.stride(2), allow + b * seen,
                    seen, hd, scale, scores.data(), yh);
    }
  });
  return y;
}

// One block over x [B · tokens, D] in place (`tokens` new ones a batch row); writes their
// keys and values from `at` on in keys/values [B, KV, capacity, hd] (same strides, hd
// contiguous), which attention then reads.
void block(at::Tensor& x, const Block& w, at::Tensor& keys, at::Tensor& values, int64_t at,
           int64_t tokens, const at::Tensor& cos, const at::Tensor& sin,
           const at::Tensor& allowed, const Shape& s) {
  const int64_t rows = x.size(0), hd = s.head_dim;
  const int64_t q_width = s.n_head * hd, kv_width = s.n_kv_head * hd;
  at::Tensor qkv = project(normed(x, *w.input_norm, s.eps), w.qkv);
  float* qkv_data = qkv.mutable_data_ptr<float>();
  // Strides, not sizes: a buffer may be a view into a longer one (`KvCache::trim_front`).
  const int64_t row_stride = keys.stride(0), head_stride = keys.stride(1);
  float* key_data = keys.mutable_data_ptr<float>();
  float* value_data = values.mutable_data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    float* row = qkv_data + r * (q_width + 2 * kv_width);
    const float* c = cos.const_data_ptr<float>() + r * hd;
    const float* sn = sin.const_data_ptr<float>() + r * hd;
    const int64_t b = r / tokens, position = (at + r % tokens) * keys.stride(2);
    for (int64_t h = 0; h < s.n_head; ++h) rotate(row + h * hd, c, sn, hd);
    for (int64_t h = 0; h < s.n_kv_head; ++h) {
      float* k = row + q_width + h * hd;
      rotate(k, c, sn, hd);
      const int64_t slot = b * row_stride + h * head_stride + position;
      std::memcpy(key_data + slot, k, hd * sizeof(float));
      std::memcpy(value_data + slot, row + q_width + kv_width + h * hd, hd * sizeof(float));
    }
  }
  const at::Tensor y = attention(qkv, keys, values, at, tokens, allowed, s);
  x.add_(project(y, w.o));

  const at::Tensor gate_up = project(normed(x, *w.post_norm, s.eps), w.gate_up);
  const int64_t inner = gate_up.size(1) / 2;
  at::Tensor act = at::empty({rows, inner}, x.options());
  silu_mul(gate_up.const_data_ptr<float>(), act.mutable_data_ptr<float>(), rows, inner);
  x.add_(project(act, w.down));
}

}  // namespace

extern "C" {

// x [B · tokens, D]: the embeddings of `tokens` new tokens a batch row (row-major), after
// `at` cached ones. weights: kBlockTensors per block (see Block), then the final norm and the
// LM head's weight and scales (a Product without bias). keys/values: one [B, KV, capacity, hd]
// buffer each per block, uniquely owned, written in place from `at` on. cos/sin
// [B · tokens, hd]: the new tokens' rotary tables. allowed [B, 1, tokens, at + tokens]: true
// where a new token may read a key. logits: each row's next token's logits [B, V].
char* rlhf_llama_step(const at::Tensor* x, const at::Tensor* const* weights, int64_t n_blocks,
                      at::Tensor* const* keys, at::Tensor* const* values, int64_t at,
                      int64_t tokens, const at::Tensor* cos, const at::Tensor* sin,
                      const at::Tensor* allowed, int64_t n_head, int64_t n_kv_head, double eps,
                      double scale, at::Tensor** logits) {
  try {
    const Shape shape{n_head, n_kv_head, cos->size(1), static_cast<float>(eps), scale};
    at::Tensor hidden = x->contiguous().clone();
    const int64_t rows = hidden.size(0), batch = rows / tokens;
    const at::Tensor c = cos->contiguous(), s = sin->contiguous();
    const at::Tensor allowed_keys = allowed->reshape({rows, at + tokens}).contiguous();
    for (int64_t i = 0; i < n_blocks; ++i) {
      TORCH_CHECK(keys[i]->strides() == values[i]->strides() && keys[i]->stride(3) == 1 &&
                  keys[i]->size(2) >= at + tokens, "KV cache buffers without room at ", at);
      block(hidden, block_at(weights + i * kBlockTensors), *keys[i], *values[i], at, tokens, c,
            s, allowed_keys, shape);
    }
    // Only each row's last token goes on to the next token's logits.
    hidden = hidden.view({batch, tokens, hidden.size(1)}).select(1, tokens - 1).contiguous();
    const at::Tensor* const* tail = weights + n_blocks * kBlockTensors;
    const at::Tensor last = normed(hidden, *tail[0], shape.eps);
    *logits = new at::Tensor(project(last, Product{tail[1], tail[2], nullptr}));
    return nullptr;
  } catch (const std::exception& e) {
    return strdup(e.what());
  }
}

}  // extern "C"
