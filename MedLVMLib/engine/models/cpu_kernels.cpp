// CPU decode kernels for MedLVM's transformer (loaded by cpu_kernels.py; the PyTorch operators are the fallback).
//
// A decode step at small batch streams every weight once and the whole KV cache once, so its speed is the
// memory bandwidth its matrix-vector products and its attention reach. PyTorch's CPU GEMV (MKL) streams
// weights at a third of the bandwidth on some CPUs, and a step of ~10 small operators per layer costs more in
// Python than the arithmetic. The operators (namespace medlvm, all fp32 activations, fp32 accumulation):
//   gemv(x (..., K), w (N, K) fp32|bf16, add?) -> (..., N)   x w^T (+ add) for 1..4 rows of x
//   linear(x, w, add?)                                           gemv, or the BLAS (in w's dtype) for more rows
//   decode_attention(q (B, H, D), k, v (Bc, H, Tc, D) fp32|bf16, length) -> (B, H, D)
//       softmax(q k^T / sqrt(D)) v over the first `length` cache positions (one query per sentence, no mask)
//   rms_norm(x, w, eps), rope_cache(qkv, cos, sin, k, v, pos) -> q, silu_mul(gate|up)
//   decode_layer(x, ...weights, k, v, cos, sin, pos, eps)         one whole decoder layer for one position
// They run on PyTorch's thread pool (at::parallel_for) and are compiled for the machine they run on
// (-march=native): AVX-512 where the CPU has it, else AVX2 with FMA (the Vec16 type below).

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

// Vec16: 16 fp32 lanes, one AVX-512 register or two AVX2 registers.
#if defined(__AVX512F__)
struct Vec16 {
  __m512 v;
  static Vec16 zero() { return {_mm512_setzero_ps()}; }
  static Vec16 splat(float a) { return {_mm512_set1_ps(a)}; }
  static Vec16 load(const float* p) { return {_mm512_loadu_ps(p)}; }
  static Vec16 load(const c10::BFloat16* p) {  // bf16 is the upper half of an fp32: widen and shift
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return {_mm512_castsi512_ps(_mm512_slli_epi32(wide, 16))};
  }
  // 32 bf16 at p as fp32: the even elements (the low halves of each 32-bit pair, shifted up) and the odd ones
  // (the high halves, masked).
  static void load_bf16_even_odd(const c10::BFloat16* p, Vec16& even, Vec16& odd) {
    const __m512i raw = _mm512_loadu_si512(p);
    even.v = _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16));
    odd.v = _mm512_castsi512_ps(_mm512_and_si512(raw, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
  }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
  // Keep the value in a register: stops the compiler from folding the load into every use (a reload each).
  void pin() { asm volatile("" : "+v"(v)); }
  float sum() const { return _mm512_reduce_add_ps(v); }
};
inline Vec16 fma(Vec16 a, Vec16 b, Vec16 c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline Vec16 operator+(Vec16 a, Vec16 b) { return {_mm512_add_ps(a.v, b.v)}; }
inline Vec16 operator-(Vec16 a, Vec16 b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline Vec16 operator*(Vec16 a, Vec16 b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline Vec16 operator/(Vec16 a, Vec16 b) { return {_mm512_div_ps(a.v, b.v)}; }
inline Vec16 vmax(Vec16 a, Vec16 b) { return {_mm512_max_ps(a.v, b.v)}; }
inline Vec16 vmin(Vec16 a, Vec16 b) { return {_mm512_min_ps(a.v, b.v)}; }
// where(a < 0, if_negative, otherwise)
inline Vec16 select_negative(Vec16 a, Vec16 if_negative, Vec16 otherwise) {
  const __mmask16 neg = _mm512_cmp_ps_mask(a.v, _mm512_setzero_ps(), _CMP_LT_OQ);
  return {_mm512_mask_blend_ps(neg, otherwise.v, if_negative.v)};
}
// 2^n * p for integer-valued n.
inline Vec16 scale_pow2(Vec16 p, Vec16 n) {
  const __m512i bits = _mm512_slli_epi32(_mm512_cvtps_epi32(n.v), 23);
  return {_mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p.v), bits))};
}
inline Vec16 round_nearest(Vec16 a) { return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT)}; }
#elif defined(__AVX2__) && defined(__FMA__)
struct Vec16 {
  __m256 lo, hi;
  static Vec16 zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  static Vec16 splat(float a) { return {_mm256_set1_ps(a), _mm256_set1_ps(a)}; }
  static Vec16 load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
  static Vec16 load(const c10::BFloat16* p) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    const __m256i lo = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(h)), 16);
    const __m256i hi = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(h, 1)), 16);
    return {_mm256_castsi256_ps(lo), _mm256_castsi256_ps(hi)};
  }
  static void load_bf16_even_odd(const c10::BFloat16* p, Vec16& even, Vec16& odd) {
    const __m256i mask = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16));
    even = {_mm256_castsi256_ps(_mm256_slli_epi32(a, 16)), _mm256_castsi256_ps(_mm256_slli_epi32(b, 16))};
    odd = {_mm256_castsi256_ps(_mm256_and_si256(a, mask)), _mm256_castsi256_ps(_mm256_and_si256(b, mask))};
  }
  void store(float* p) const { _mm256_storeu_ps(p, lo); _mm256_storeu_ps(p + 8, hi); }
  void pin() { asm volatile("" : "+x"(lo), "+x"(hi)); }
  float sum() const {
    const __m256 s = _mm256_add_ps(lo, hi);
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
  }
};
inline Vec16 fma(Vec16 a, Vec16 b, Vec16 c) {
  return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
}
inline Vec16 operator+(Vec16 a, Vec16 b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
inline Vec16 operator-(Vec16 a, Vec16 b) { return {_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)}; }
inline Vec16 operator*(Vec16 a, Vec16 b) { return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)}; }
inline Vec16 operator/(Vec16 a, Vec16 b) { return {_mm256_div_ps(a.lo, b.lo), _mm256_div_ps(a.hi, b.hi)}; }
inline Vec16 vmax(Vec16 a, Vec16 b) { return {_mm256_max_ps(a.lo, b.lo), _mm256_max_ps(a.hi, b.hi)}; }
inline Vec16 vmin(Vec16 a, Vec16 b) { return {_mm256_min_ps(a.lo, b.lo), _mm256_min_ps(a.hi, b.hi)}; }
inline __m256 select_negative_8(__m256 a, __m256 if_negative, __m256 otherwise) {
  return _mm256_blendv_ps(otherwise, if_negative, _mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_LT_OQ));
}
inline Vec16 select_negative(Vec16 a, Vec16 if_negative, Vec16 otherwise) {
  return {select_negative_8(a.lo, if_negative.lo, otherwise.lo), select_negative_8(a.hi, if_negative.hi, otherwise.hi)};
}
inline __m256 scale_pow2_8(__m256 p, __m256 n) {
  const __m256i bits = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), bits));
}
inline Vec16 scale_pow2(Vec16 p, Vec16 n) { return {scale_pow2_8(p.lo, n.lo), scale_pow2_8(p.hi, n.hi)}; }
inline Vec16 round_nearest(Vec16 a) {
  constexpr int mode = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  return {_mm256_round_ps(a.lo, mode), _mm256_round_ps(a.hi, mode)};
}
#else
#error "MedLVM CPU kernels need AVX2 with FMA, or AVX-512"
#endif

constexpr int kLanes = 16;

inline float to_float(float a) { return a; }
inline float to_float(c10::BFloat16 a) { return static_cast<float>(a); }

// exp for x <= 0 (softmax after subtracting the maximum): 2^n * p(r), |r| <= ln2/2, relative error < 2e-7.
inline Vec16 vexp(Vec16 x) {
  x = vmax(Vec16::splat(-87.0f), x);  // exp(-87) ~ 1.6e-38 is still a normal float; max(c, NaN) keeps the NaN
  const Vec16 n = round_nearest(x * Vec16::splat(1.44269504088896341f));
  const Vec16 r = x - n * Vec16::splat(0.693145751953125f) - n * Vec16::splat(1.428606765330187e-06f);
  Vec16 p = Vec16::splat(1.9875691500e-4f);
  p = fma(p, r, Vec16::splat(1.3981999507e-3f));
  p = fma(p, r, Vec16::splat(8.3334519073e-3f));
  p = fma(p, r, Vec16::splat(4.1665795894e-2f));
  p = fma(p, r, Vec16::splat(1.6666665459e-1f));
  p = fma(p, r, Vec16::splat(5.0000001201e-1f));
  p = fma(p * r, r, r) + Vec16::splat(1.0f);
  return scale_pow2(p, n);
}

// How a weight row is streamed: fp32 in vectors of 16; bf16 in blocks of 32, each loaded as two fp32 vectors of
// its even and odd elements (a shift and a mask, no cross-lane widening). x is arranged to match, once per call.
template <typename W>
struct Stream;

template <>
struct Stream<float> {
  static constexpr int kParts = 1, kStep = kLanes;
  static void load(const float* p, Vec16* parts) { parts[0] = Vec16::load(p); }
  static const float* arrange(const float* x, int64_t, int64_t, std::vector<float>&) { return x; }
};

template <>
struct Stream<c10::BFloat16> {
  static constexpr int kParts = 2, kStep = 2 * kLanes;
  static void load(const c10::BFloat16* p, Vec16* parts) { Vec16::load_bf16_even_odd(p, parts[0], parts[1]); }
  // Per block of 32: its 16 even elements, then its 16 odd ones (the tail past the last block stays as is).
  static const float* arrange(const float* x, int64_t M, int64_t K, std::vector<float>& buffer) {
    buffer.assign(x, x + M * K);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k + kStep <= K; k += kStep)
        for (int i = 0; i < kLanes; ++i) {
          buffer[m * K + k + i] = x[m * K + k + 2 * i];
          buffer[m * K + k + kLanes + i] = x[m * K + k + 2 * i + 1];
        }
    return buffer.data();
  }
};

// y[m, n] = sum_k x[m, k] w[n, k] (+ add[m, n]) for rows n in [n0, n1); R weight rows at a time share each
// load of x. xa is x arranged for the stream (Stream<W>::arrange); the tail past the last block uses x.
template <typename W, int M, int R>
void gemv_rows(const float* x, const float* xa, const W* w, const float* add, float* y, int64_t K, int64_t N,
               int64_t n0, int64_t n1) {
  using S = Stream<W>;
  constexpr int P = S::kParts;
  const int64_t kv = K / S::kStep * S::kStep;
  auto finish = [&](int m, int64_t row, float s) {
    for (int64_t k = kv; k < K; ++k) s += x[m * K + k] * to_float(w[row * K + k]);
    y[m * N + row] = add ? s + add[m * N + row] : s;
  };
  int64_t n = n0;
  for (; n + R <= n1; n += R) {
    Vec16 acc[M][R];
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m)
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[m][r] = Vec16::zero();
    // The same columns two blocks ahead are prefetched: the hardware prefetcher alone leaves bandwidth unused
    // on rows this short (+10-15 % on the bf16 and multi-row products).
    const W* ahead[R];
    for (int r = 0; r < R; ++r) ahead[r] = w + std::min(n + 2 * R + r, N - 1) * K;
    for (int64_t k = 0; k < kv; k += S::kStep) {
      Vec16 xv[M][P];
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m)
#pragma GCC unroll 2
        for (int j = 0; j < P; ++j) xv[m][j] = Vec16::load(xa + m * K + k + j * kLanes);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        Vec16 wv[P];
        S::load(w + (n + r) * K + k, wv);
        _mm_prefetch(reinterpret_cast<const char*>(ahead[r] + k), _MM_HINT_T0);
#pragma GCC unroll 2
        for (int j = 0; j < P; ++j) {
          if (M > 1) wv[j].pin();  // one load per weight vector, not one per row of x
#pragma GCC unroll 8
          for (int m = 0; m < M; ++m) acc[m][r] = fma(wv[j], xv[m][j], acc[m][r]);
        }
      }
    }
    for (int m = 0; m < M; ++m)
      for (int r = 0; r < R; ++r) finish(m, n + r, acc[m][r].sum());
  }
  for (; n < n1; ++n)
    for (int m = 0; m < M; ++m) {
      Vec16 acc = Vec16::zero();
      for (int64_t k = 0; k < kv; k += S::kStep) {
        Vec16 wv[P];
        S::load(w + n * K + k, wv);
        for (int j = 0; j < P; ++j) acc = fma(wv[j], Vec16::load(xa + m * K + k + j * kLanes), acc);
      }
      finish(m, n, acc.sum());
    }
}

template <typename W, int M>
void gemv_m(const float* x, const W* w, const float* add, float* y, int64_t K, int64_t N) {
  // Weight rows in flight per step: more rows keep more memory streams busy (8 rows stream ~15 % faster than
  // 4 at M = 1); the M * R accumulators must still fit the vector registers with x and a weight vector.
#if defined(__AVX512F__)
  constexpr int R = M <= 2 ? 8 : 4;  // of 32 registers
#else
  constexpr int R = M <= 2 ? 2 : 1;  // of 16 registers, two per Vec16
#endif
  std::vector<float> buffer;
  const float* xa = Stream<W>::arrange(x, M, K, buffer);
  const int64_t blocks = (N + R - 1) / R;
  // Grain: enough rows that a task streams at least ~64 KB of weights.
  const int64_t grain = std::max<int64_t>(1, 65536 / (R * K * static_cast<int64_t>(sizeof(W))));
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    gemv_rows<W, M, R>(x, xa, w, add, y, K, N, b0 * R, std::min(N, b1 * R));
  });
}

constexpr int64_t kMaxGemvRows = 4;

template <typename W>
void gemv_dispatch(const float* x, const W* w, const float* add, float* y, int64_t M, int64_t K, int64_t N) {
  switch (M) {
    case 1: return gemv_m<W, 1>(x, w, add, y, K, N);
    case 2: return gemv_m<W, 2>(x, w, add, y, K, N);
    case 3: return gemv_m<W, 3>(x, w, add, y, K, N);
    default: return gemv_m<W, 4>(x, w, add, y, K, N);
  }
}

// x's shape with the last dimension replaced by `last`: the shape of a product's output.
std::vector<int64_t> with_last(const at::Tensor& x, int64_t last) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = last;
  return shape;
}

void check_linear(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& add, const char* op) {
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu(), "medlvm::", op, ": CPU tensors only");
  TORCH_CHECK(x.dim() >= 1 && w.dim() == 2, "medlvm::", op, ": x must be (..., K) and w (N, K)");
  TORCH_CHECK(x.scalar_type() == at::kFloat, "medlvm::", op, ": x must be float32, got ", x.scalar_type());
  TORCH_CHECK(w.scalar_type() == at::kFloat || w.scalar_type() == at::kBFloat16, "medlvm::", op,
              ": weights must be float32 or bfloat16, got ", w.scalar_type());
  TORCH_CHECK(x.size(-1) == w.size(1), "medlvm::", op, ": x has ", x.size(-1), " columns, w ", w.size(1));
  if (add) {
    const std::vector<int64_t> shape = with_last(x, w.size(0));
    TORCH_CHECK(add->scalar_type() == at::kFloat && add->sizes() == c10::IntArrayRef(shape), "medlvm::", op,
                ": the residual must be float32 of the output's shape ", c10::IntArrayRef(shape), ", got ",
                add->sizes());
  }
}

// y = x w^T (+ add) with x (..., K) holding 1..kMaxGemvRows rows; the output has x's leading dimensions.
at::Tensor gemv(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& add) {
  check_linear(x, w, add, "gemv");
  const int64_t K = x.size(-1), M = x.numel() / std::max<int64_t>(K, 1), N = w.size(0);
  TORCH_CHECK(M >= 1 && M <= kMaxGemvRows, "medlvm::gemv: 1..", kMaxGemvRows, " rows, got ", M);
  const at::Tensor xc = x.contiguous();
  const at::Tensor wc = w.contiguous();
  const at::Tensor ac = add ? add->contiguous() : at::Tensor();
  at::Tensor y = at::empty(with_last(x, N), xc.options());
  const float* ap = add ? ac.data_ptr<float>() : nullptr;
  if (wc.scalar_type() == at::kFloat) {
    gemv_dispatch(xc.data_ptr<float>(), wc.data_ptr<float>(), ap, y.data_ptr<float>(), M, K, N);
  } else {
    gemv_dispatch(xc.data_ptr<float>(), wc.data_ptr<c10::BFloat16>(), ap, y.data_ptr<float>(), M, K, N);
  }
  return y;
}

// x (M, K) w^T (+ add): medlvm::gemv for a few rows, the BLAS beyond (in the weights' dtype, as the Python
// `Linear` does, with the result back in fp32).
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& add) {
  if (x.numel() > 0 && x.numel() <= kMaxGemvRows * x.size(-1)) return gemv(x, w, add);
  check_linear(x, w, add, "linear");
  const at::Tensor x2 = x.reshape({-1, x.size(-1)});
  at::Tensor y = w.scalar_type() == at::kFloat ? at::mm(x2, w.t())
                                               : at::mm(x2.to(w.scalar_type()), w.t()).to(at::kFloat);
  if (add) y.add_(add->reshape_as(y));
  return y.view(with_last(x, w.size(0)));
}

// One (sentence, head): out[D] = softmax(q . k[t] / sqrt(D), t < L) v, with D = DV * 16.
template <typename C, int DV>
void attend_one(const float* q, const C* k, const C* v, float* out, int64_t L, float scale, float* scores) {
  constexpr int64_t D = DV * kLanes;
  Vec16 qv[DV];
#pragma GCC unroll 8
  for (int j = 0; j < DV; ++j) qv[j] = Vec16::load(q + j * kLanes) * Vec16::splat(scale);
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < L; ++t) {
    const C* kt = k + t * D;
    Vec16 acc = Vec16::load(kt) * qv[0];
#pragma GCC unroll 8
    for (int j = 1; j < DV; ++j) acc = fma(Vec16::load(kt + j * kLanes), qv[j], acc);
    const float s = acc.sum();
    scores[t] = s;
    mx = std::max(mx, s);
  }
  // exp(s - max) in place, padded to whole vectors (the pad is -inf and contributes ~0 to the sum).
  const int64_t lp = (L + kLanes - 1) / kLanes * kLanes;
  for (int64_t t = L; t < lp; ++t) scores[t] = -std::numeric_limits<float>::infinity();
  Vec16 sum = Vec16::zero();
  const Vec16 mxv = Vec16::splat(mx);
  for (int64_t t = 0; t < lp; t += kLanes) {
    const Vec16 e = vexp(Vec16::load(scores + t) - mxv);
    e.store(scores + t);
    sum = sum + e;
  }
  Vec16 acc[DV];
#pragma GCC unroll 8
  for (int j = 0; j < DV; ++j) acc[j] = Vec16::zero();
  for (int64_t t = 0; t < L; ++t) {
    const Vec16 p = Vec16::splat(scores[t]);
    const C* vt = v + t * D;
#pragma GCC unroll 8
    for (int j = 0; j < DV; ++j) acc[j] = fma(Vec16::load(vt + j * kLanes), p, acc[j]);
  }
  const Vec16 inv = Vec16::splat(1.0f / sum.sum());
#pragma GCC unroll 8
  for (int j = 0; j < DV; ++j) (acc[j] * inv).store(out + j * kLanes);
}

constexpr int kMaxHeadVectors = 8;  // head_dim up to 128

template <typename C, int DV>
void attention_heads(const float* q, const C* k, const C* v, float* out, int64_t B, int64_t H, int64_t Tc,
                     int64_t length) {
  constexpr int64_t D = DV * kLanes;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t padded = (length + kLanes - 1) / kLanes * kLanes;
  at::parallel_for(0, B * H, 1, [&](int64_t i0, int64_t i1) {
    std::vector<float> scores(padded);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t base = i * Tc * D;  // cache rows of sentence i / H, head i % H
      attend_one<C, DV>(q + i * D, k + base, v + base, out + i * D, length, scale, scores.data());
    }
  });
}

template <typename C>
void attention_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& out,
                    int64_t length) {
  const int64_t B = q.size(0), H = q.size(1), Tc = k.size(2);
  const float* qp = q.data_ptr<float>();
  const C* kp = k.data_ptr<C>();
  const C* vp = v.data_ptr<C>();
  float* op = out.data_ptr<float>();
  switch (q.size(2) / kLanes) {
    case 1: return attention_heads<C, 1>(qp, kp, vp, op, B, H, Tc, length);
    case 2: return attention_heads<C, 2>(qp, kp, vp, op, B, H, Tc, length);
    case 3: return attention_heads<C, 3>(qp, kp, vp, op, B, H, Tc, length);
    case 4: return attention_heads<C, 4>(qp, kp, vp, op, B, H, Tc, length);
    case 5: return attention_heads<C, 5>(qp, kp, vp, op, B, H, Tc, length);
    case 6: return attention_heads<C, 6>(qp, kp, vp, op, B, H, Tc, length);
    case 7: return attention_heads<C, 7>(qp, kp, vp, op, B, H, Tc, length);
    default: return attention_heads<C, 8>(qp, kp, vp, op, B, H, Tc, length);
  }
}

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t length) {
  TORCH_CHECK(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(),
              "medlvm::decode_attention: CPU tensors only");
  TORCH_CHECK(q.dim() == 3 && k.dim() == 4 && v.dim() == 4,
              "medlvm::decode_attention: q must be (B, H, D), k and v (Bc, H, Tc, D)");
  TORCH_CHECK(q.scalar_type() == at::kFloat, "medlvm::decode_attention: q must be float32");
  TORCH_CHECK(k.scalar_type() == v.scalar_type(), "medlvm::decode_attention: k and v dtypes differ");
  TORCH_CHECK(k.sizes() == v.sizes(), "medlvm::decode_attention: k and v shapes differ");
  TORCH_CHECK(k.is_contiguous() && v.is_contiguous(), "medlvm::decode_attention: the cache must be contiguous");
  const int64_t B = q.size(0), H = q.size(1), D = q.size(2);
  TORCH_CHECK(k.size(0) >= B && k.size(1) == H && k.size(3) == D, "medlvm::decode_attention: cache shape ",
              k.sizes(), " does not fit q ", q.sizes());
  TORCH_CHECK(D % kLanes == 0 && D <= kMaxHeadVectors * kLanes,
              "medlvm::decode_attention: head_dim must be a multiple of ", kLanes, " up to ",
              kMaxHeadVectors * kLanes, ", got ", D);
  TORCH_CHECK(length >= 1 && length <= k.size(2), "medlvm::decode_attention: length ", length,
              " outside 1..", k.size(2));
  const at::Tensor qc = q.contiguous();
  at::Tensor out = at::empty({B, H, D}, qc.options());
  if (k.scalar_type() == at::kFloat) {
    attention_impl<float>(qc, k, v, out, length);
  } else if (k.scalar_type() == at::kBFloat16) {
    attention_impl<c10::BFloat16>(qc, k, v, out, length);
  } else {
    TORCH_CHECK(false, "medlvm::decode_attention: the cache must be float32 or bfloat16, got ", k.scalar_type());
  }
  return out;
}

// ---- Elementwise steps of a decode layer, fused so that a step is a few calls instead of dozens. ----

template <typename W>
void rms_norm_rows(const float* x, const W* w, float* out, int64_t M, int64_t C, float eps) {
  const int64_t cv = C / kLanes * kLanes;
  at::parallel_for(0, M, 16, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      const float* xm = x + m * C;
      float* om = out + m * C;
      Vec16 acc = Vec16::zero();
      for (int64_t c = 0; c < cv; c += kLanes) {
        const Vec16 a = Vec16::load(xm + c);
        acc = fma(a, a, acc);
      }
      float ss = acc.sum();
      for (int64_t c = cv; c < C; ++c) ss += xm[c] * xm[c];
      const float r = 1.0f / std::sqrt(ss / static_cast<float>(C) + eps);
      const Vec16 rv = Vec16::splat(r);
      for (int64_t c = 0; c < cv; c += kLanes) (Vec16::load(w + c) * (Vec16::load(xm + c) * rv)).store(om + c);
      for (int64_t c = cv; c < C; ++c) om[c] = to_float(w[c]) * (xm[c] * r);
    }
  });
}

// RMSNorm over the last dimension, as HF LLaMA computes it in fp32: w * (x / sqrt(mean(x^2) + eps)).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu(), "medlvm::rms_norm: CPU tensors only");
  TORCH_CHECK(x.scalar_type() == at::kFloat, "medlvm::rms_norm: x must be float32, got ", x.scalar_type());
  TORCH_CHECK(w.dim() == 1 && x.dim() >= 1 && x.size(-1) == w.size(0) && w.size(0) > 0,
              "medlvm::rms_norm: weight of ", w.size(0), " for a last dimension of ", x.size(-1));
  const at::Tensor xc = x.contiguous();
  const at::Tensor wc = w.contiguous();
  at::Tensor out = at::empty_like(xc);
  const int64_t C = w.size(0), M = xc.numel() / C;
  if (wc.scalar_type() == at::kFloat) {
    rms_norm_rows(xc.data_ptr<float>(), wc.data_ptr<float>(), out.data_ptr<float>(), M, C, static_cast<float>(eps));
  } else if (wc.scalar_type() == at::kBFloat16) {
    rms_norm_rows(xc.data_ptr<float>(), wc.data_ptr<c10::BFloat16>(), out.data_ptr<float>(), M, C,
                  static_cast<float>(eps));
  } else {
    TORCH_CHECK(false, "medlvm::rms_norm: weight must be float32 or bfloat16, got ", wc.scalar_type());
  }
  return out;
}

// HF rotate-half RoPE of one head vector: out[i] = a[i] cos[i] - a[i + D/2] sin[i] (first half),
// a[i] cos[i] + a[i - D/2] sin[i] (second half).
template <typename T>
inline void rope_head(const float* a, const float* cos, const float* sin, T* out, int64_t D) {
  const int64_t half = D / 2;
  for (int64_t i = 0; i < half; ++i) out[i] = static_cast<T>(a[i] * cos[i] - a[i + half] * sin[i]);
  for (int64_t i = half; i < D; ++i) out[i] = static_cast<T>(a[i] * cos[i] + a[i - half] * sin[i]);
}

template <typename C>
void rope_cache_impl(const float* qkv, const float* cos, const float* sin, C* kc, C* vc, float* q, int64_t B,
                     int64_t H, int64_t D, int64_t Tc, int64_t pos) {
  const int64_t width = H * D;
  at::parallel_for(0, B * H, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / H, h = i % H;
      const float* row = qkv + b * 3 * width + h * D;
      const int64_t slot = (i * Tc + pos) * D;
      rope_head(row, cos, sin, q + i * D, D);
      rope_head(row + width, cos, sin, kc + slot, D);
      for (int64_t d = 0; d < D; ++d) vc[slot + d] = static_cast<C>(row[2 * width + d]);
    }
  });
}

// One decode position: split the fused q|k|v projection (B, 3 H D), rotate q and k, write k and v into the
// cache at `pos` (rounded to the cache's dtype) and return the rotated q (B, H, D).
at::Tensor rope_cache(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin, at::Tensor k,
                      at::Tensor v, int64_t pos) {
  TORCH_CHECK(qkv.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(), "medlvm::rope_cache: CPU only");
  TORCH_CHECK(qkv.scalar_type() == at::kFloat && cos.scalar_type() == at::kFloat && sin.scalar_type() == at::kFloat,
              "medlvm::rope_cache: qkv, cos and sin must be float32");
  TORCH_CHECK(k.dim() == 4 && k.sizes() == v.sizes() && k.scalar_type() == v.scalar_type(),
              "medlvm::rope_cache: k and v must be caches of one shape (Bc, H, Tc, D) and dtype");
  TORCH_CHECK(k.is_contiguous() && v.is_contiguous(), "medlvm::rope_cache: the cache must be contiguous");
  const int64_t H = k.size(1), Tc = k.size(2), D = k.size(3), B = qkv.numel() / (3 * H * D);
  TORCH_CHECK(D % 2 == 0 && qkv.numel() == B * 3 * H * D && B >= 1 && B <= k.size(0),
              "medlvm::rope_cache: qkv of ", qkv.numel(), " values does not fit the cache ", k.sizes());
  TORCH_CHECK(cos.numel() == D && sin.numel() == D, "medlvm::rope_cache: cos and sin need ", D, " values");
  TORCH_CHECK(pos >= 0 && pos < Tc, "medlvm::rope_cache: position ", pos, " outside the cache of ", Tc);
  const at::Tensor qc = qkv.contiguous(), cc = cos.contiguous(), sc = sin.contiguous();
  at::Tensor q = at::empty({B, H, D}, qc.options());
  if (k.scalar_type() == at::kFloat) {
    rope_cache_impl(qc.data_ptr<float>(), cc.data_ptr<float>(), sc.data_ptr<float>(), k.data_ptr<float>(),
                    v.data_ptr<float>(), q.data_ptr<float>(), B, H, D, Tc, pos);
  } else if (k.scalar_type() == at::kBFloat16) {
    rope_cache_impl(qc.data_ptr<float>(), cc.data_ptr<float>(), sc.data_ptr<float>(), k.data_ptr<c10::BFloat16>(),
                    v.data_ptr<c10::BFloat16>(), q.data_ptr<float>(), B, H, D, Tc, pos);
  } else {
    TORCH_CHECK(false, "medlvm::rope_cache: the cache must be float32 or bfloat16, got ", k.scalar_type());
  }
  return q;
}

// SwiGLU's gate: silu(g) * u for gu = [g | u] along the last dimension (M, 2 I) -> (M, I).
at::Tensor silu_mul(const at::Tensor& gu) {
  TORCH_CHECK(gu.device().is_cpu() && gu.scalar_type() == at::kFloat, "medlvm::silu_mul: float32 CPU tensor");
  TORCH_CHECK(gu.dim() >= 1 && gu.size(-1) > 0 && gu.size(-1) % 2 == 0,
              "medlvm::silu_mul: the last dimension must be even and positive, got ", gu.sizes());
  const at::Tensor g = gu.contiguous();
  const int64_t I = g.size(-1) / 2, M = g.numel() / (2 * I);
  at::Tensor out = at::empty(with_last(g, I), g.options());
  const float* gp = g.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t iv = I / kLanes * kLanes;
  at::parallel_for(0, M, 4, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      const float* gate = gp + m * 2 * I;
      const float* up = gate + I;
      float* o = op + m * I;
      for (int64_t i = 0; i < iv; i += kLanes) {
        // silu(a) = a / (1 + exp(-a)) = a e / (1 + e) for a < 0, with e = exp(-|a|) <= 1 either way.
        const Vec16 a = Vec16::load(gate + i);
        const Vec16 e = vexp(vmin(a, Vec16::zero() - a));
        const Vec16 num = select_negative(a, a * e, a);
        (num / (Vec16::splat(1.0f) + e) * Vec16::load(up + i)).store(o + i);
      }
      for (int64_t i = iv; i < I; ++i) o[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
    }
  });
  return out;
}

// One decoder layer for one new position of B sentences (HF LLaMA order): x (B, 1, C) -> (B, 1, C).
//   h = rms_norm(x); q|k|v = h Wqkv^T; rotate q, k; cache k, v at pos; x += attention(q, cache) Wo^T
//   h = rms_norm(x); x += (silu(h Wg^T) * h Wu^T) Wdown^T
// The same kernels as above, called from C++ so that a decode step costs one Python call per layer.
at::Tensor decode_layer(const at::Tensor& x, const at::Tensor& norm1, const at::Tensor& w_qkv, const at::Tensor& w_o,
                        const at::Tensor& norm2, const at::Tensor& w_gate_up, const at::Tensor& w_down, at::Tensor k,
                        at::Tensor v, const at::Tensor& cos, const at::Tensor& sin, int64_t pos, double eps) {
  TORCH_CHECK(x.dim() == 3 && x.size(1) == 1, "medlvm::decode_layer: x must be (B, 1, C), got ", x.sizes());
  const int64_t B = x.size(0), C = x.size(2);
  TORCH_CHECK(k.dim() == 4 && k.size(1) * k.size(3) == C, "medlvm::decode_layer: cache ", k.sizes(),
              " does not fit a width of ", C);
  const at::Tensor x2 = x.reshape({B, C});
  const at::Tensor q = rope_cache(linear(rms_norm(x2, norm1, eps), w_qkv, c10::nullopt), cos, sin, k, v, pos);
  const at::Tensor h = linear(decode_attention(q, k, v, pos + 1).view({B, C}), w_o, x2);
  const at::Tensor gate_up = linear(rms_norm(h, norm2, eps), w_gate_up, c10::nullopt);
  return linear(silu_mul(gate_up), w_down, h).view({B, 1, C});
}

}  // namespace

TORCH_LIBRARY(medlvm, m) {
  m.def("gemv(Tensor x, Tensor w, Tensor? add=None) -> Tensor");
  m.def("linear(Tensor x, Tensor w, Tensor? add=None) -> Tensor");
  m.def("decode_attention(Tensor q, Tensor k, Tensor v, int length) -> Tensor");
  m.def("rms_norm(Tensor x, Tensor w, float eps) -> Tensor");
  m.def("rope_cache(Tensor qkv, Tensor cos, Tensor sin, Tensor(a!) k, Tensor(b!) v, int pos) -> Tensor");
  m.def("silu_mul(Tensor gu) -> Tensor");
  m.def(
      "decode_layer(Tensor x, Tensor norm1, Tensor w_qkv, Tensor w_o, Tensor norm2, Tensor w_gate_up, Tensor w_down, "
      "Tensor(a!) k, Tensor(b!) v, Tensor cos, Tensor sin, int pos, float eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(medlvm, CPU, m) {
  m.impl("gemv", gemv);
  m.impl("linear", linear);
  m.impl("decode_attention", decode_attention);
  m.impl("rms_norm", rms_norm);
  m.impl("rope_cache", rope_cache);
  m.impl("silu_mul", silu_mul);
  m.impl("decode_layer", decode_layer);
}
